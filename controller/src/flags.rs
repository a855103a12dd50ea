//! Checks of command-line values, reported under the flag's own name.

use anyhow::{Result, anyhow, bail};
use qkd_firmware_sim::world::raman::{MIN_SPACING_NM, WAVELENGTH_RANGE_NM, attenuation_db_per_km};
use qkd_firmware_sim::world::{ClassicalSpec, Direction, FiberSpec, LinkPreset, LinkSpec};
use qkd_units::RangeError;

/// Accepts `value` for `--flag` when it is a number in `[min, max]`.
pub fn in_range(flag: &str, value: f64, min: f64, max: f64, unit: &'static str) -> Result<f64> {
    key_in_range(&format!("--{flag}"), value, min, max, unit)
}

/// `value` if within `[min, max]`, else an error naming the configuration key (or flag) and
/// the allowed range.
pub fn key_in_range(key: &str, value: f64, min: f64, max: f64, unit: &'static str) -> Result<f64> {
    RangeError::check(value, min, max, unit).map_err(|e| anyhow!("{key}: {e}"))
}

/// The first of `flags` the user gave, for refusing flags that mean nothing without another.
pub fn first_given<'a>(flags: &[(&'a str, bool)]) -> Option<&'a str> {
    flags
        .iter()
        .find(|(_, given)| *given)
        .map(|(flag, _)| *flag)
}

/// The flags that choose an emulated bench, shared by every command that emulates one.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchFlags {
    /// Bench preset: gys, snspd, ingaas-free or ingaas-gated.
    #[arg(long, default_value = "snspd")]
    pub preset: String,
    /// Fiber length in km.
    #[arg(long, default_value_t = 50.0, allow_negative_numbers = true)]
    pub distance_km: f64,
    /// Signal mean photon number per pulse (decoys keep the preset's values).
    #[arg(long, allow_negative_numbers = true)]
    pub mu: Option<f64>,
    /// Share of pulses an intercept-resend eavesdropper measures and resends.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub eve_fraction: f64,
    /// Seed of every random choice: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub fiber: FiberFlags,
}

/// What a deployed fiber adds to a bench: classical traffic in the same fiber (Raman noise),
/// PMD and the loss of splices and connectors. Shared by `qkd plan` and the emulating commands.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FiberFlags {
    /// Total launch power of classical channels sharing the fiber, dBm (none when absent).
    #[arg(long, allow_negative_numbers = true)]
    pub classical_power_dbm: Option<f64>,
    /// Where the classical light is launched: co (with the photons, default) or counter.
    #[arg(long, value_name = "co|counter")]
    pub classical_direction: Option<String>,
    /// Wavelength of the classical channels in nm (default 1570).
    #[arg(long, allow_negative_numbers = true)]
    pub classical_wavelength_nm: Option<f64>,
    /// Wavelength of the quantum channel in nm (default 1550); sets the fiber's loss per km
    /// from the G.652.D table.
    #[arg(long, allow_negative_numbers = true)]
    pub quantum_wavelength_nm: Option<f64>,
    /// Effective Raman coefficient in 1/(km·nm) (default: from the wavelength spacing).
    #[arg(long, allow_negative_numbers = true)]
    pub raman_coefficient: Option<f64>,
    /// Bandwidth of the quantum channel's spectral filter in nm (default 0.16, 20 GHz).
    #[arg(long, allow_negative_numbers = true)]
    pub filter_nm: Option<f64>,
    /// PMD coefficient of the fiber in ps/√km (default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub pmd_ps_per_sqrt_km: Option<f64>,
    /// Loss of splices, connectors and patch panels in dB, on top of the per-km loss.
    #[arg(long, allow_negative_numbers = true)]
    pub extra_loss_db: Option<f64>,
}

impl FiberFlags {
    /// Checks the flags and applies them to `fiber`.
    pub fn apply(&self, fiber: &mut FiberSpec) -> Result<()> {
        self.apply_with_power(fiber, self.classical_power_dbm)
    }

    /// The same for a search over the launch power: the classical settings apply without
    /// `--classical-power-dbm` (at `power_dbm` until the search sets its own).
    pub fn apply_searching_power(&self, fiber: &mut FiberSpec, power_dbm: f64) -> Result<()> {
        self.apply_with_power(fiber, self.classical_power_dbm.or(Some(power_dbm)))
    }

    fn apply_with_power(&self, fiber: &mut FiberSpec, power_dbm: Option<f64>) -> Result<()> {
        let (low, high) = WAVELENGTH_RANGE_NM;
        let quantum = self
            .quantum_wavelength_nm
            .map(|nm| in_range("quantum-wavelength-nm", nm, low, high, "nm"))
            .transpose()?;
        if let Some(nm) = quantum {
            fiber.loss_db_per_km = attenuation_db_per_km(nm);
        }
        if let Some(pmd) = self.pmd_ps_per_sqrt_km {
            fiber.pmd_ps_per_sqrt_km = in_range("pmd-ps-per-sqrt-km", pmd, 0.0, 100.0, "ps/√km")?;
        }
        if let Some(db) = self.extra_loss_db {
            fiber.extra_loss_db = in_range("extra-loss-db", db, 0.0, 1000.0, "dB")?;
        }
        let Some(power) = power_dbm else {
            if let Some(flag) = first_given(&[
                ("--classical-direction", self.classical_direction.is_some()),
                (
                    "--classical-wavelength-nm",
                    self.classical_wavelength_nm.is_some(),
                ),
                ("--raman-coefficient", self.raman_coefficient.is_some()),
                ("--filter-nm", self.filter_nm.is_some()),
            ]) {
                bail!(
                    "{flag} describes classical light in the fiber: give --classical-power-dbm too"
                );
            }
            return Ok(());
        };
        let mut classical =
            ClassicalSpec::with_power(in_range("classical-power-dbm", power, -100.0, 40.0, "dBm")?);
        if let Some(name) = &self.classical_direction {
            classical.direction = Direction::ALL
                .into_iter()
                .find(|d| d.name() == name)
                .ok_or_else(|| {
                    anyhow!("--classical-direction: `{name}` is neither `co` nor `counter`")
                })?;
        }
        if let Some(nm) = self.classical_wavelength_nm {
            classical.wavelength_nm = in_range("classical-wavelength-nm", nm, low, high, "nm")?;
        }
        if let Some(nm) = quantum {
            classical.quantum_wavelength_nm = nm;
        }
        if (classical.wavelength_nm - classical.quantum_wavelength_nm).abs() < MIN_SPACING_NM {
            bail!(
                "--classical-wavelength-nm: {} nm is the quantum channel's wavelength ({} nm); keep them at least {MIN_SPACING_NM} nm apart",
                classical.wavelength_nm,
                classical.quantum_wavelength_nm
            );
        }
        if let Some(rho) = self.raman_coefficient {
            classical.raman_coefficient =
                Some(in_range("raman-coefficient", rho, 0.0, 1e-6, "/(km·nm)")?);
        }
        if let Some(nm) = self.filter_nm {
            classical.filter_nm = in_range("filter-nm", nm, 1e-4, 100.0, "nm")?;
        }
        fiber.classical = Some(classical);
        Ok(())
    }
}

/// A validated bench choice.
#[derive(Debug, Clone)]
pub struct Bench {
    /// The preset.
    pub preset: LinkPreset,
    /// Fiber length in km.
    pub distance_km: f64,
    /// The eavesdropper's share of pulses.
    pub eve_fraction: f64,
    /// The prepare-and-measure link: the preset at that length, with `--mu` and the
    /// eavesdropper applied.
    pub spec: LinkSpec,
}

impl BenchFlags {
    /// Checks every flag against its range and builds the link.
    pub fn validate(&self) -> Result<Bench> {
        let preset = LinkPreset::from_name(&self.preset)?;
        let distance_km = in_range("distance-km", self.distance_km, 0.0, 20_000.0, "km")?;
        let eve_fraction = in_range("eve-fraction", self.eve_fraction, 0.0, 1.0, "")?;
        let mut spec = preset.spec(distance_km);
        if let Some(mu) = self.mu {
            spec.source.intensities[0].mean_photon_number = in_range("mu", mu, 0.0, 100.0, "")?;
        }
        spec.eve.intercept_fraction = eve_fraction;
        self.fiber.apply(&mut spec.fiber)?;
        Ok(Bench {
            preset,
            distance_km,
            eve_fraction,
            spec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_flag_and_range() {
        let err = in_range("distance-km", -5.0, 0.0, 20_000.0, "km").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--distance-km: -5 km is outside the allowed range [0, 20000] km"
        );
        assert!(in_range("mu", f64::NAN, 0.0, 1.0, "").is_err());
    }
}
