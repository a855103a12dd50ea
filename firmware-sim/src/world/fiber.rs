//! Optical fiber: loss, propagation delay, a fixed misalignment, polarization that drifts,
//! polarization mode dispersion ([`super::pmd`]) and Raman noise from classical channels sharing
//! it ([`super::raman`]).
//!
//! Drift follows the random-walk channel model of Czegledi et al. (2016): the fiber's rotation of
//! the Poincaré sphere is multiplied, step after step, by independent small rotations whose
//! rotation vectors are Gaussian with variance proportional to the elapsed time. The drift rate
//! `D` (rad/√s) is defined by `E[θ²] = D²·t` for the accumulated rotation angle `θ` at small
//! angles, i.e. each Cartesian component of the rotation vector has variance `D²·t/3`. A state's
//! overlap with where it started then decays as `E[s(t)·s(0)] = exp(-D²·t/3)`.

use serde::{Deserialize, Serialize};

use super::param::{ConfigError, Section};
use super::pmd::{Pmd, mean_dgd_ps};
use super::polarization::{Rotation, Stokes, dot};
use super::raman::ClassicalSpec;
use super::rng::SimRng;

/// Group delay of standard single-mode fiber at 1550 nm (group index ≈ 1.468), in ps per km.
pub const SMF_DELAY_PS_PER_KM: f64 = 4_897_000.0;

/// Largest rotation-angle RMS per drift update: small steps keep the walk close to continuous.
const MAX_RMS_ANGLE_PER_UPDATE: f64 = 1e-3;
/// Drift updates are at least this far apart in emulated time (1 µs) ...
const MIN_DRIFT_UPDATE_PS: i64 = 1_000_000;
/// ... and at most this far (1 ms).
const MAX_DRIFT_UPDATE_PS: i64 = 1_000_000_000;

fn default_loss() -> f64 {
    0.2
}

fn default_delay() -> f64 {
    SMF_DELAY_PS_PER_KM
}

fn default_pmd_correlation() -> f64 {
    3600.0
}

/// The fiber's polarization rotation when the run starts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum InitialRotation {
    /// No rotation: the link starts aligned.
    #[default]
    Identity,
    /// A rotation drawn uniformly from all rotations (seeded).
    Random,
    /// A rotation by `angle_rad` about `axis` (normalised on load).
    Fixed {
        /// Rotation axis on the Poincaré sphere.
        axis: [f64; 3],
        /// Rotation angle.
        angle_rad: f64,
    },
}

/// A sudden polarization change at a scheduled time (a fiber being touched, a lightning strike).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Emulated time of the step, in seconds from the start.
    pub at_s: f64,
    /// Rotation angle of the step.
    pub angle_rad: f64,
    /// Rotation axis; a seeded random axis when absent.
    #[serde(default)]
    pub axis: Option<[f64; 3]>,
}

/// Parameters of a fiber span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiberSpec {
    /// Length in km.
    pub length_km: f64,
    /// Attenuation in dB/km.
    #[serde(default = "default_loss")]
    pub loss_db_per_km: f64,
    /// Propagation delay in ps per km.
    #[serde(default = "default_delay")]
    pub delay_ps_per_km: f64,
    /// Probability that a photon ends in the orthogonal state even with perfect compensation
    /// (optical misalignment, finite polarization visibility): the `e_d` of the literature.
    #[serde(default)]
    pub misalignment: f64,
    /// Polarization drift rate in rad/√s (see the module documentation).
    #[serde(default)]
    pub drift_rad_per_sqrt_s: f64,
    /// Rotation at the start of the run.
    #[serde(default)]
    pub initial_rotation: InitialRotation,
    /// Scheduled polarization steps.
    #[serde(default)]
    pub steps: Vec<StepSpec>,
    /// Loss of splices, connectors and patch panels in dB, on top of the per-km loss; taken as
    /// lumped at the receiver's end, so it attenuates Raman noise as much as the photons.
    #[serde(default)]
    pub extra_loss_db: f64,
    /// PMD coefficient in ps/√km (modern fiber 0.04–0.1, old installed fiber up to ~1).
    #[serde(default)]
    pub pmd_ps_per_sqrt_km: f64,
    /// Correlation time of the PMD vector's drift, in seconds.
    #[serde(default = "default_pmd_correlation")]
    pub pmd_correlation_s: f64,
    /// Classical channels sharing the fiber (none by default).
    #[serde(default)]
    pub classical: Option<ClassicalSpec>,
}

impl FiberSpec {
    /// A straight, non-drifting span of standard fiber.
    pub fn standard(length_km: f64) -> Self {
        FiberSpec {
            length_km,
            loss_db_per_km: default_loss(),
            delay_ps_per_km: default_delay(),
            misalignment: 0.0,
            drift_rad_per_sqrt_s: 0.0,
            initial_rotation: InitialRotation::Identity,
            steps: Vec::new(),
            extra_loss_db: 0.0,
            pmd_ps_per_sqrt_km: 0.0,
            pmd_correlation_s: default_pmd_correlation(),
            classical: None,
        }
    }

    /// Total loss of the span in dB.
    pub fn loss_db(&self) -> f64 {
        self.loss_db_per_km * self.length_km + self.extra_loss_db
    }

    /// Power transmission of the span, `10^(−loss/10)`.
    pub fn transmission(&self) -> f64 {
        10f64.powf(-self.loss_db() / 10.0)
    }

    /// Raman noise photons per second inside the quantum filter at the receiver's input.
    pub fn raman_photons_per_s(&self) -> f64 {
        self.classical.as_ref().map_or(0.0, |c| {
            c.noise_photons_per_s(self.length_km, self.loss_db_per_km)
                * 10f64.powf(-self.extra_loss_db / 10.0)
        })
    }

    /// Polarization visibility `1 − 2e_d` times the PMD visibility expected for light of
    /// spectral FWHM `spectral_width_ghz`, averaged over the Maxwell-distributed DGD.
    pub fn mean_visibility(&self, spectral_width_ghz: f64) -> f64 {
        let dgd = mean_dgd_ps(self.pmd_ps_per_sqrt_km, self.length_km);
        (1.0 - 2.0 * self.misalignment) * super::pmd::mean_visibility(dgd, spectral_width_ghz)
    }
}

#[derive(Debug, Clone, Copy)]
struct Step {
    at_ps: i64,
    rotation: Rotation,
}

/// A fiber span while the world runs: fixed loss and delay, evolving polarization rotation.
#[derive(Debug, Clone)]
pub struct Fiber {
    transmission: f64,
    delay_ps: i64,
    /// Visibility without PMD, `1 − 2e_d`.
    visibility: f64,
    pmd: Option<Pmd>,
    raman_photons_per_s: f64,
    rotation: Rotation,
    /// Per-component standard deviation of one drift update's rotation vector.
    drift_sigma_per_update: f64,
    drift_update_ps: i64,
    next_drift_ps: i64,
    updates_since_cleanup: u32,
    steps: Vec<Step>,
    next_step: usize,
    rng: SimRng,
}

fn unit_axis(section: Section<'_>, field: &str, axis: [f64; 3]) -> Result<Stokes, ConfigError> {
    let norm = dot(axis, axis).sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(section.inconsistent(field, "the axis must be a finite, non-zero 3-vector"));
    }
    Ok(axis.map(|c| c / norm))
}

fn random_axis(rng: &mut SimRng) -> Stokes {
    loop {
        let v = [rng.normal(), rng.normal(), rng.normal()];
        let n = dot(v, v).sqrt();
        if n > 1e-9 {
            return v.map(|c| c / n);
        }
    }
}

impl Fiber {
    /// Validates `spec` and prepares the span for light of spectral FWHM `spectral_width_ghz`;
    /// `rng` drives its drift, random axes, rotation and PMD.
    pub fn new(
        spec: &FiberSpec,
        section: Section<'_>,
        mut rng: SimRng,
        spectral_width_ghz: f64,
    ) -> Result<Self, ConfigError> {
        let length = section.check("length_km", spec.length_km, 0.0, 20_000.0, "km")?;
        section.check("loss_db_per_km", spec.loss_db_per_km, 0.0, 100.0, "dB/km")?;
        let delay = section.check("delay_ps_per_km", spec.delay_ps_per_km, 0.0, 1e8, "ps/km")?;
        let misalignment = section.probability("misalignment", spec.misalignment, 0.5)?;
        let drift = section.check(
            "drift_rad_per_sqrt_s",
            spec.drift_rad_per_sqrt_s,
            0.0,
            1e4,
            "rad/√s",
        )?;
        section.check("extra_loss_db", spec.extra_loss_db, 0.0, 1000.0, "dB")?;
        let pmd = section.check(
            "pmd_ps_per_sqrt_km",
            spec.pmd_ps_per_sqrt_km,
            0.0,
            100.0,
            "ps/√km",
        )?;
        let pmd_correlation =
            section.check("pmd_correlation_s", spec.pmd_correlation_s, 1e-3, 1e9, "s")?;
        if let Some(classical) = &spec.classical {
            classical.validate(Section(&section.nested("classical")))?;
        }
        let rotation = match spec.initial_rotation {
            InitialRotation::Identity => Rotation::IDENTITY,
            InitialRotation::Random => super::polarization::random_rotation(&mut rng),
            InitialRotation::Fixed { axis, angle_rad } => {
                let axis = unit_axis(section, "initial_rotation.axis", axis)?;
                let angle =
                    section.check("initial_rotation.angle_rad", angle_rad, -1e3, 1e3, "rad")?;
                Rotation::about(axis, angle)
            }
        };
        let mut steps = Vec::with_capacity(spec.steps.len());
        for (i, step) in spec.steps.iter().enumerate() {
            let name = section.nested(&format!("steps[{i}]"));
            let sec = Section(&name);
            let at_s = sec.check("at_s", step.at_s, 0.0, 1e7, "s")?;
            let angle = sec.check("angle_rad", step.angle_rad, -1e3, 1e3, "rad")?;
            let axis = match step.axis {
                Some(axis) => unit_axis(sec, "axis", axis)?,
                None => random_axis(&mut rng),
            };
            steps.push(Step {
                at_ps: (at_s * 1e12).round() as i64,
                rotation: Rotation::about(axis, angle),
            });
        }
        steps.sort_by_key(|s| s.at_ps);
        let (drift_update_ps, drift_sigma_per_update, next_drift_ps) = if drift > 0.0 {
            let ideal_s = (MAX_RMS_ANGLE_PER_UPDATE / drift).powi(2);
            let update_ps =
                ((ideal_s * 1e12) as i64).clamp(MIN_DRIFT_UPDATE_PS, MAX_DRIFT_UPDATE_PS);
            let sigma = drift * (update_ps as f64 * 1e-12 / 3.0).sqrt();
            (update_ps, sigma, update_ps)
        } else {
            (0, 0.0, i64::MAX)
        };
        let pmd = (pmd > 0.0).then(|| {
            Pmd::new(
                mean_dgd_ps(pmd, length),
                pmd_correlation,
                spectral_width_ghz,
                &mut rng,
            )
        });
        Ok(Fiber {
            transmission: spec.transmission(),
            delay_ps: (delay * length).round() as i64,
            visibility: 1.0 - 2.0 * misalignment,
            pmd,
            raman_photons_per_s: spec.raman_photons_per_s(),
            rotation,
            drift_sigma_per_update,
            drift_update_ps,
            next_drift_ps,
            updates_since_cleanup: 0,
            steps,
            next_step: 0,
            rng,
        })
    }

    /// Power transmission of the span.
    pub fn transmission(&self) -> f64 {
        self.transmission
    }

    /// Propagation delay in ps.
    pub fn delay_ps(&self) -> i64 {
        self.delay_ps
    }

    /// Polarization visibility now: `1 − 2e_d` times the PMD visibility at the current DGD.
    pub fn visibility(&self) -> f64 {
        self.visibility * self.pmd.as_ref().map_or(1.0, Pmd::visibility)
    }

    /// The current differential group delay in ps (0 without PMD).
    pub fn dgd_ps(&self) -> f64 {
        self.pmd.as_ref().map_or(0.0, Pmd::dgd_ps)
    }

    /// Raman noise photons per second reaching the receiver inside its filter.
    pub fn raman_photons_per_s(&self) -> f64 {
        self.raman_photons_per_s
    }

    /// The rotation the fiber applies now.
    pub fn rotation(&self) -> Rotation {
        self.rotation
    }

    /// Emulated time of the next change of the rotation or the PMD, `i64::MAX` if none.
    #[inline]
    pub fn next_change_ps(&self) -> i64 {
        self.next_step_ps()
            .min(self.next_drift_ps)
            .min(self.next_pmd_ps())
    }

    fn next_pmd_ps(&self) -> i64 {
        self.pmd.as_ref().map_or(i64::MAX, Pmd::next_update_ps)
    }

    /// Applies the drift update, step or PMD update due at [`Self::next_change_ps`].
    pub fn change(&mut self) {
        let rotation_due = self.next_step_ps().min(self.next_drift_ps);
        if let Some(pmd) = self
            .pmd
            .as_mut()
            .filter(|p| p.next_update_ps() < rotation_due)
        {
            pmd.update(&mut self.rng);
            return;
        }
        let step_due = self
            .steps
            .get(self.next_step)
            .is_some_and(|s| s.at_ps <= self.next_drift_ps);
        if step_due {
            let step = self.steps[self.next_step];
            self.rotation = step.rotation.after(&self.rotation);
            self.next_step += 1;
        } else {
            let sigma = self.drift_sigma_per_update;
            let kick = [
                sigma * self.rng.normal(),
                sigma * self.rng.normal(),
                sigma * self.rng.normal(),
            ];
            self.rotation = Rotation::from_rotation_vector(kick).after(&self.rotation);
            self.next_drift_ps += self.drift_update_ps;
            self.updates_since_cleanup += 1;
            if self.updates_since_cleanup >= 1024 {
                self.rotation.reorthonormalize();
                self.updates_since_cleanup = 0;
            }
        }
    }

    fn next_step_ps(&self) -> i64 {
        self.steps.get(self.next_step).map_or(i64::MAX, |s| s.at_ps)
    }

    /// Time between drift updates in ps (0 without drift).
    pub fn drift_update_ps(&self) -> i64 {
        self.drift_update_ps
    }

    /// Per-component standard deviation of one drift update's rotation vector, in radians.
    pub fn drift_sigma_per_update(&self) -> f64 {
        self.drift_sigma_per_update
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::polarization::H;

    #[test]
    fn loss_and_delay_follow_length() {
        let fiber = Fiber::new(
            &FiberSpec::standard(50.0),
            Section("f"),
            SimRng::new(0, 0),
            10.0,
        )
        .unwrap();
        assert!((fiber.transmission() - 0.1).abs() < 1e-12);
        assert_eq!(fiber.delay_ps(), 244_850_000);
    }

    #[test]
    fn rejects_negative_length_and_bad_axis() {
        let err = Fiber::new(
            &FiberSpec::standard(-1.0),
            Section("fiber"),
            SimRng::new(0, 0),
            10.0,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("fiber.length_km: -1 km"),
            "{err}"
        );
        let mut spec = FiberSpec::standard(1.0);
        spec.initial_rotation = InitialRotation::Fixed {
            axis: [0.0; 3],
            angle_rad: 1.0,
        };
        assert!(Fiber::new(&spec, Section("fiber"), SimRng::new(0, 0), 10.0).is_err());
    }

    #[test]
    fn scheduled_step_rotates_at_its_time() {
        let mut spec = FiberSpec::standard(1.0);
        spec.steps.push(StepSpec {
            at_s: 0.5,
            angle_rad: std::f64::consts::PI,
            axis: Some([0.0, 0.0, 1.0]),
        });
        let mut fiber = Fiber::new(&spec, Section("f"), SimRng::new(0, 0), 10.0).unwrap();
        assert_eq!(fiber.next_change_ps(), 500_000_000_000);
        fiber.change();
        let s = fiber.rotation().apply(H);
        assert!((s[0] + 1.0).abs() < 1e-12);
        assert_eq!(fiber.next_change_ps(), i64::MAX);
    }
}
