//! The Poincaré sphere: Stokes vectors and the rotations that fiber, wave plates and fiber
//! squeezers apply to them, shared by the emulated optics and the tracking loop's model of a
//! polarization controller.
//!
//! A lossless polarization transformation (an SU(2) Jones matrix up to phase) acts on the
//! normalised Stokes vector `(S1, S2, S3)` as a rotation in SO(3); working with 3×3 rotations keeps
//! the maths real and cheap. Conventions: `H = +S1`, `V = -S1`, `D = +S2`, `A = -S2`, `R = +S3`.

/// A normalised Stokes vector (a fully polarized state), or a shrunk one for partial polarization.
pub type Stokes = [f64; 3];

/// Horizontal polarization.
pub const H: Stokes = [1.0, 0.0, 0.0];
/// Vertical polarization.
pub const V: Stokes = [-1.0, 0.0, 0.0];
/// Diagonal polarization.
pub const D: Stokes = [0.0, 1.0, 0.0];
/// Anti-diagonal polarization.
pub const A: Stokes = [0.0, -1.0, 0.0];

/// Dot product of two Stokes vectors.
#[inline]
pub fn dot(a: Stokes, b: Stokes) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// How far a retarder of `retardance` radians can turn its axis and leave its action unchanged,
/// in radians: half a turn, or a quarter for a half-wave retarder (a half turn about an axis is
/// the same as one about the opposite axis).
pub fn retarder_axis_period(retardance: f64) -> f64 {
    let half_wave = ((retardance / core::f64::consts::PI).rem_euclid(2.0) - 1.0).abs() < 1e-9;
    if half_wave {
        core::f64::consts::FRAC_PI_2
    } else {
        core::f64::consts::PI
    }
}

/// A rotation of the Poincaré sphere, stored as a row-major 3×3 orthogonal matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rotation(pub [[f64; 3]; 3]);

impl Default for Rotation {
    fn default() -> Self {
        Self::IDENTITY
    }
}

impl Rotation {
    /// No change of polarization.
    pub const IDENTITY: Rotation = Rotation([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);

    /// Right-handed rotation by `angle` radians about the unit vector `axis` (Rodrigues' formula).
    pub fn about(axis: Stokes, angle: f64) -> Rotation {
        let [x, y, z] = axis;
        let (s, c) = angle.sin_cos();
        let t = 1.0 - c;
        Rotation([
            [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
            [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
            [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
        ])
    }

    /// Rotation by `|v|` radians about `v / |v|`; the identity for the zero vector.
    pub fn from_rotation_vector(v: Stokes) -> Rotation {
        let angle = dot(v, v).sqrt();
        if angle == 0.0 {
            Rotation::IDENTITY
        } else {
            Rotation::about([v[0] / angle, v[1] / angle, v[2] / angle], angle)
        }
    }

    /// The rotation of the unit quaternion `[w, x, y, z]` (normalised here; the zero quaternion
    /// gives the identity).
    pub fn from_quaternion(q: [f64; 4]) -> Rotation {
        let norm = q.iter().map(|c| c * c).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Rotation::IDENTITY;
        }
        let [w, x, y, z] = q.map(|c| c / norm);
        Rotation([
            [
                1.0 - 2.0 * (y * y + z * z),
                2.0 * (x * y - w * z),
                2.0 * (x * z + w * y),
            ],
            [
                2.0 * (x * y + w * z),
                1.0 - 2.0 * (x * x + z * z),
                2.0 * (y * z - w * x),
            ],
            [
                2.0 * (x * z - w * y),
                2.0 * (y * z + w * x),
                1.0 - 2.0 * (x * x + y * y),
            ],
        ])
    }

    /// A linear retarder with its fast axis at `axis_angle` radians from horizontal in the lab and
    /// a retardance of `retardance` radians: a rotation about `(cos 2θ, sin 2θ, 0)`.
    pub fn retarder(axis_angle: f64, retardance: f64) -> Rotation {
        let (s, c) = (2.0 * axis_angle).sin_cos();
        Rotation::about([c, s, 0.0], retardance)
    }

    /// Applies the rotation to a Stokes vector.
    #[inline]
    pub fn apply(&self, s: Stokes) -> Stokes {
        let m = &self.0;
        [
            m[0][0] * s[0] + m[0][1] * s[1] + m[0][2] * s[2],
            m[1][0] * s[0] + m[1][1] * s[1] + m[1][2] * s[2],
            m[2][0] * s[0] + m[2][1] * s[1] + m[2][2] * s[2],
        ]
    }

    #[must_use]
    /// `self` after `first`: light meets `first`, then `self`.
    pub fn after(&self, first: &Rotation) -> Rotation {
        let a = &self.0;
        let b = &first.0;
        let mut out = [[0.0; 3]; 3];
        for (i, row) in out.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                *cell = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
            }
        }
        Rotation(out)
    }

    #[must_use]
    /// The inverse rotation (the transpose).
    pub fn inverse(&self) -> Rotation {
        let m = &self.0;
        Rotation([
            [m[0][0], m[1][0], m[2][0]],
            [m[0][1], m[1][1], m[2][1]],
            [m[0][2], m[1][2], m[2][2]],
        ])
    }

    /// The mean of the Z and X error rates of BB84 states rotated by `self` on their way to the
    /// analysers, on a link of `visibility` (1 when the rotation is the only error): a Z state
    /// keeps `R11` of its S1 component, an X state `R22` of its S2, and each basis errs on
    /// `(1 − v·Rkk)/2` of its detections.
    pub fn bb84_error(&self, visibility: f64) -> f64 {
        0.25 * (2.0 - visibility * (self.0[0][0] + self.0[1][1]))
    }

    /// Rotation angle in `[0, π]`.
    pub fn angle(&self) -> f64 {
        let trace = self.0[0][0] + self.0[1][1] + self.0[2][2];
        ((trace - 1.0) / 2.0).clamp(-1.0, 1.0).acos()
    }

    /// Removes the rounding drift accumulated over many products (Gram-Schmidt on the rows).
    pub fn reorthonormalize(&mut self) {
        let norm = |v: Stokes| {
            let n = dot(v, v).sqrt();
            [v[0] / n, v[1] / n, v[2] / n]
        };
        let r0 = norm(self.0[0]);
        let d = dot(self.0[1], r0);
        let r1 = norm([
            self.0[1][0] - d * r0[0],
            self.0[1][1] - d * r0[1],
            self.0[1][2] - d * r0[2],
        ]);
        let r2 = [
            r0[1] * r1[2] - r0[2] * r1[1],
            r0[2] * r1[0] - r0[0] * r1[2],
            r0[0] * r1[1] - r0[1] * r1[0],
        ];
        self.0 = [r0, r1, r2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Stokes, b: Stokes) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn half_wave_plate_at_22_5_degrees_turns_h_into_d() {
        let hwp = Rotation::retarder(core::f64::consts::PI / 8.0, core::f64::consts::PI);
        assert!(close(hwp.apply(H), D));
        assert!(close(hwp.apply(D), H));
    }

    #[test]
    fn quarter_wave_plate_at_45_degrees_turns_h_into_circular() {
        let qwp = Rotation::retarder(core::f64::consts::FRAC_PI_4, core::f64::consts::FRAC_PI_2);
        let out = qwp.apply(H);
        assert!(out[2].abs() > 1.0 - 1e-12, "{out:?}");
    }

    #[test]
    fn the_bb84_error_of_a_rotation_follows_the_overlaps() {
        assert!((Rotation::IDENTITY.bb84_error(0.98) - 0.01).abs() < 1e-15);
        // A quarter turn about S3 swaps the bases: every basis is guessed.
        let swap = Rotation::about([0.0, 0.0, 1.0], core::f64::consts::FRAC_PI_2);
        assert!((swap.bb84_error(1.0) - 0.5).abs() < 1e-15);
        // A half turn about S1 keeps Z and flips X.
        let flip = Rotation::about([1.0, 0.0, 0.0], core::f64::consts::PI);
        assert!((flip.bb84_error(1.0) - 0.5).abs() < 1e-15);
        let small = Rotation::about([0.0, 0.6, 0.8], 0.1);
        let [h, d] = [small.apply(H), small.apply(D)];
        let by_overlap = 0.25 * (2.0 - dot(h, H) - dot(d, D));
        assert!((small.bb84_error(1.0) - by_overlap).abs() < 1e-15);
    }

    #[test]
    fn a_retarder_repeats_every_half_turn_of_its_axis_and_a_half_wave_one_every_quarter() {
        use core::f64::consts::{FRAC_PI_2, PI};
        for retardance in [FRAC_PI_2, PI, 3.0 * PI, 0.3] {
            let period = retarder_axis_period(retardance);
            let (a, b) = (
                Rotation::retarder(0.2, retardance),
                Rotation::retarder(0.2 + period, retardance),
            );
            // Near the identity `angle` (an arccosine) resolves only √(2ε) ≈ 2e-8 rad.
            assert!(a.inverse().after(&b).angle() < 1e-7, "{retardance}");
        }
        assert!((retarder_axis_period(PI) - FRAC_PI_2).abs() < 1e-15);
        assert!((retarder_axis_period(FRAC_PI_2) - PI).abs() < 1e-15);
    }

    #[test]
    fn inverse_undoes_and_angle_is_recovered() {
        let r = Rotation::about([0.0, 0.6, 0.8], 1.1);
        assert!(close(r.inverse().after(&r).apply(D), D));
        assert!((r.angle() - 1.1).abs() < 1e-12);
    }

    #[test]
    fn reorthonormalize_repairs_drift() {
        let mut r = Rotation::about([1.0, 0.0, 0.0], 0.3);
        r.0[0][0] *= 1.001;
        r.reorthonormalize();
        let s = r.apply([0.0, 0.6, 0.8]);
        assert!((dot(s, s) - 1.0).abs() < 1e-12);
    }
}
