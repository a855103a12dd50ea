//! Validation of world parameters: every rejected value names its parameter and the allowed range.

use qkd_units::RangeError;

/// A world configuration that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A number outside the range its parameter allows, or NaN.
    #[error("{parameter}: {source}")]
    OutOfRange {
        /// Dotted path of the parameter, e.g. `receiver.detectors[2].efficiency`.
        parameter: String,
        /// The value and the allowed range.
        source: RangeError,
    },
    /// A value that is a number in range but inconsistent with the rest of the configuration.
    #[error("{parameter}: {reason}")]
    Inconsistent {
        /// Dotted path of the parameter.
        parameter: String,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// A preset name that does not exist.
    #[error("unknown preset `{name}`; known presets: {known}")]
    UnknownPreset {
        /// The name given.
        name: String,
        /// The names that exist, comma separated.
        known: String,
    },
}

/// Names parameters below one dotted prefix while validating a section of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Section<'a>(pub &'a str);

impl Section<'_> {
    fn path(&self, field: &str) -> String {
        if self.0.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.0)
        }
    }

    /// Accepts `value` for `field` when it is a number in `[min, max]`.
    pub fn check(
        &self,
        field: &str,
        value: f64,
        min: f64,
        max: f64,
        unit: &'static str,
    ) -> Result<f64, ConfigError> {
        RangeError::check(value, min, max, unit).map_err(|source| ConfigError::OutOfRange {
            parameter: self.path(field),
            source,
        })
    }

    /// Accepts a probability (or efficiency) in `[0, max]`.
    pub fn probability(&self, field: &str, value: f64, max: f64) -> Result<f64, ConfigError> {
        self.check(field, value, 0.0, max, "")
    }

    /// Accepts an integer count in `[min, max]`.
    pub fn count(&self, field: &str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        self.check(field, value as f64, min as f64, max as f64, "")
            .map(|_| value)
    }

    /// Rejects a configuration that is inconsistent at `field`.
    pub fn inconsistent(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Inconsistent {
            parameter: self.path(field),
            reason: reason.into(),
        }
    }

    /// The section of `field` below this one.
    pub fn nested(&self, field: &str) -> String {
        self.path(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_full_parameter_path_and_range() {
        let err = Section("fiber")
            .check("length_km", -5.0, 0.0, 20_000.0, "km")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "fiber.length_km: -5 km is outside the allowed range [0, 20000] km"
        );
        let nan = Section("")
            .probability("efficiency", f64::NAN, 1.0)
            .unwrap_err();
        assert!(nan.to_string().starts_with("efficiency: NaN"), "{nan}");
    }
}
