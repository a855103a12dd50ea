//! Typed physical quantities shared by the qkd-node crates, the BB84 vocabulary ([`bb84`]), the
//! SplitMix64 hash ([`mix`]) behind both nodes' public shuffles and the emulator's streams, the
//! source's per-slot choices as a keyed function ([`pattern`]) that a node and the source it
//! drives both evaluate, and (feature `std`) the Poincaré-sphere rotations of polarization
//! ([`poincare`]).
//!
//! Where confusing two numbers costs a key (picoseconds with nanoseconds, a probability with a
//! percentage, dB with a linear factor), the value travels in a type. Constructors reject NaN and
//! out-of-range values with a [`RangeError`]; callers add the name of the parameter they were
//! validating, so the user reads which setting was wrong and what the allowed range is.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

pub mod bb84;
pub mod mix;
pub mod pattern;
#[cfg(feature = "std")]
pub mod poincare;

use core::fmt;
use core::ops::{Add, Sub};

/// A value outside the range its quantity allows (or NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RangeError {
    /// The rejected value.
    pub value: f64,
    /// Smallest allowed value (inclusive).
    pub min: f64,
    /// Largest allowed value (inclusive).
    pub max: f64,
    /// Unit symbol for messages, empty for dimensionless values.
    pub unit: &'static str,
}

impl RangeError {
    /// Accepts `value` when it is a number within `[min, max]`.
    pub fn check(value: f64, min: f64, max: f64, unit: &'static str) -> Result<f64, RangeError> {
        if value >= min && value <= max {
            Ok(value)
        } else {
            Err(RangeError {
                value,
                min,
                max,
                unit,
            })
        }
    }
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if self.unit.is_empty() { "" } else { " " };
        if self.value.is_nan() {
            write!(f, "NaN is not a number; the allowed range is")?;
        } else {
            write!(
                f,
                "{}{sep}{} is outside the allowed range",
                self.value, self.unit
            )?;
        }
        write!(f, " [{}, {}]{sep}{}", self.min, self.max, self.unit)
    }
}

impl core::error::Error for RangeError {}

macro_rules! bounded_quantity {
    ($(#[$doc:meta])* $name:ident, unit = $unit:literal, min = $min:expr, max = $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
        pub struct $name(f64);

        impl $name {
            /// Smallest value the quantity admits.
            pub const MIN: f64 = $min;
            /// Largest value the quantity admits.
            pub const MAX: f64 = $max;
            /// Unit symbol used in messages.
            pub const UNIT: &'static str = $unit;

            /// Validates `value` against the quantity's physical range.
            pub fn new(value: f64) -> Result<Self, RangeError> {
                RangeError::check(value, Self::MIN, Self::MAX, Self::UNIT).map(Self)
            }

            /// Validates `value` against a narrower range that a particular setting allows.
            pub fn within(value: f64, min: f64, max: f64) -> Result<Self, RangeError> {
                RangeError::check(value, min.max(Self::MIN), max.min(Self::MAX), Self::UNIT)
                    .map(Self)
            }

            /// The value in the quantity's unit.
            pub const fn get(self) -> f64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if Self::UNIT.is_empty() {
                    write!(f, "{}", self.0)
                } else {
                    write!(f, "{} {}", self.0, Self::UNIT)
                }
            }
        }

        impl TryFrom<f64> for $name {
            type Error = RangeError;
            fn try_from(value: f64) -> Result<Self, RangeError> {
                Self::new(value)
            }
        }
    };
}

bounded_quantity!(
    /// A probability or efficiency, dimensionless in `[0, 1]`.
    Probability, unit = "", min = 0.0, max = 1.0
);
bounded_quantity!(
    /// A frequency or event rate in hertz (non-negative, finite).
    Hertz, unit = "Hz", min = 0.0, max = f64::MAX
);
bounded_quantity!(
    /// A ratio in decibels (finite; positive values are loss where the context says so).
    Decibels, unit = "dB", min = f64::MIN, max = f64::MAX
);
bounded_quantity!(
    /// An angle in radians (finite).
    Radians, unit = "rad", min = f64::MIN, max = f64::MAX
);
bounded_quantity!(
    /// An electric potential in volts (finite).
    Volts, unit = "V", min = f64::MIN, max = f64::MAX
);
bounded_quantity!(
    /// A length in kilometres (non-negative, finite).
    Kilometers, unit = "km", min = 0.0, max = f64::MAX
);
bounded_quantity!(
    /// Mean photon number per pulse of a weak coherent source (non-negative, finite).
    MeanPhotonNumber, unit = "photons", min = 0.0, max = f64::MAX
);

impl Probability {
    /// Certainty.
    pub const ONE: Probability = Probability(1.0);
    /// Impossibility.
    pub const ZERO: Probability = Probability(0.0);
}

/// A time or duration in integer picoseconds: the resolution of time taggers, and exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Picoseconds(pub i64);

impl Picoseconds {
    /// Zero duration.
    pub const ZERO: Picoseconds = Picoseconds(0);
    /// Picoseconds per second.
    pub const PER_SECOND: i64 = 1_000_000_000_000;

    /// Converts seconds to picoseconds, rounding to the nearest picosecond.
    ///
    /// Rejects NaN and values that do not fit in `i64` picoseconds (about ±106 days).
    pub fn from_seconds(seconds: f64) -> Result<Self, RangeError> {
        let limit = i64::MAX as f64 / Self::PER_SECOND as f64;
        RangeError::check(seconds, -limit, limit, "s").map(|s| {
            // `f64::round` needs std; casting truncates towards zero, so offset by half first.
            let ps = s * Self::PER_SECOND as f64;
            Picoseconds(if ps >= 0.0 { ps + 0.5 } else { ps - 0.5 } as i64)
        })
    }

    /// Nanoseconds to picoseconds.
    pub const fn from_nanos(ns: i64) -> Self {
        Picoseconds(ns * 1000)
    }

    /// Microseconds to picoseconds.
    pub const fn from_micros(us: i64) -> Self {
        Picoseconds(us * 1_000_000)
    }

    /// The value in picoseconds.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The value in seconds (lossy for very long times).
    pub fn as_seconds(self) -> f64 {
        self.0 as f64 / Self::PER_SECOND as f64
    }

    /// As a `Duration` (whole nanoseconds; negative values give zero).
    pub fn to_duration(self) -> core::time::Duration {
        core::time::Duration::from_nanos(u64::try_from(self.0 / 1000).unwrap_or(0))
    }

    /// From a `Duration`, saturating at `i64::MAX` picoseconds (about 106 days).
    pub fn from_duration(duration: core::time::Duration) -> Self {
        Picoseconds(i64::try_from(duration.as_nanos().saturating_mul(1000)).unwrap_or(i64::MAX))
    }
}

impl fmt::Display for Picoseconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ps", self.0)
    }
}

impl Add for Picoseconds {
    type Output = Picoseconds;
    fn add(self, rhs: Picoseconds) -> Picoseconds {
        Picoseconds(self.0 + rhs.0)
    }
}

impl Sub for Picoseconds {
    type Output = Picoseconds;
    fn sub(self, rhs: Picoseconds) -> Picoseconds {
        Picoseconds(self.0 - rhs.0)
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // exact values are intended here
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn probability_rejects_values_outside_unit_interval_and_nan() {
        assert!(Probability::new(0.0).is_ok());
        assert!(Probability::new(1.0).is_ok());
        assert!(Probability::new(1.0 + 1e-12).is_err());
        assert!(Probability::new(-0.1).is_err());
        assert!(Probability::new(f64::NAN).is_err());
    }

    #[test]
    fn within_narrows_but_never_widens_the_physical_range() {
        assert!(Probability::within(0.5, -3.0, 0.4).is_err());
        let err = Probability::within(-0.5, -3.0, 0.9).unwrap_err();
        assert_eq!(err.min, 0.0);
        assert_eq!(err.max, 0.9);
    }

    #[test]
    fn range_error_message_names_value_unit_and_range() {
        let err = Kilometers::new(-5.0).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("-5 km"), "{text}");
        assert!(text.contains("[0,"), "{text}");
        let nan = Hertz::new(f64::NAN).unwrap_err().to_string();
        assert!(nan.starts_with("NaN"), "{nan}");
    }

    #[test]
    fn infinities_are_rejected() {
        assert!(Hertz::new(f64::INFINITY).is_err());
        assert!(Radians::new(f64::NEG_INFINITY).is_err());
    }

    #[test]
    fn picoseconds_from_seconds_rounds_and_rejects_overflow() {
        assert_eq!(
            Picoseconds::from_seconds(1.5e-9).unwrap(),
            Picoseconds(1500)
        );
        assert!(Picoseconds::from_seconds(1e9).is_err());
        assert!(Picoseconds::from_seconds(f64::NAN).is_err());
        assert_eq!(Picoseconds::from_micros(2).as_seconds(), 2e-6);
    }
}
