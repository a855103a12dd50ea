//! Checks of command-line values, reported under the flag's own name.

use anyhow::{Result, anyhow};
use qkd_units::RangeError;

/// Accepts `value` for `--flag` when it is a number in `[min, max]`.
pub fn in_range(flag: &str, value: f64, min: f64, max: f64, unit: &'static str) -> Result<f64> {
    RangeError::check(value, min, max, unit).map_err(|e| anyhow!("--{flag}: {e}"))
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
