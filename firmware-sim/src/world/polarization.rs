//! Polarization on the Poincaré sphere (see [`qkd_units::poincare`]), with the random rotations
//! the emulated fiber starts from.

pub use qkd_units::poincare::*;

use super::rng::SimRng;

/// A rotation drawn uniformly from SO(3) (Haar measure), from a uniform random unit quaternion.
pub fn random_rotation(rng: &mut SimRng) -> Rotation {
    Rotation::from_quaternion([rng.normal(), rng.normal(), rng.normal(), rng.normal()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_rotations_are_orthonormal() {
        let mut rng = SimRng::new(5, 0);
        for _ in 0..100 {
            let r = random_rotation(&mut rng);
            let p = r.after(&r.inverse());
            for (i, row) in p.0.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((v - want).abs() < 1e-12);
                }
            }
        }
    }
}
