//! Checks of command-line values, reported under the flag's own name.

use anyhow::{Result, anyhow};
use qkd_firmware_sim::world::{LinkPreset, LinkSpec};
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
