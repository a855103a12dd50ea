//! Polarization controllers: N actuators in device units, with limits and a settle time.

use std::future::Future;
use std::time::Duration;

use crate::DeviceIdentity;
use crate::error::PolarizationError;

/// The unit an actuator is driven in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActuatorUnit {
    /// Drive voltage in millivolts (fiber squeezers).
    Millivolts,
    /// Paddle angle in degrees.
    Degrees,
    /// Motor encoder steps.
    Steps,
    /// Raw DAC code.
    DacCode,
}

/// One actuator of a polarization controller.
#[derive(Debug, Clone, PartialEq)]
pub struct ActuatorSpec {
    /// Name, e.g. `squeezer 1` or `paddle 2 (λ/2)`.
    pub name: String,
    /// Unit of its values.
    pub unit: ActuatorUnit,
    /// Lowest accepted value.
    pub min: f64,
    /// Highest accepted value.
    pub max: f64,
    /// A shift of the value that leaves the optics unchanged (2π of retardance, a wave plate
    /// turned half a turn), when the device knows it: lets tracking unwind at a range end.
    pub period: Option<f64>,
    /// What the actuator does to the light, when the device knows it.
    pub optics: Option<ActuatorOptics>,
}

/// What an actuator does to the light: lets tracking model the controller and reach a far-away
/// setting in one move instead of walking there by probes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActuatorOptics {
    /// A retarder of fixed retardance whose fast axis turns with the value (a fiber paddle):
    /// the axis sits at `value × rad_per_unit` from the controller's horizontal.
    RotatingRetarder {
        /// Retardance in radians (π/2 for a quarter-wave paddle).
        retardance_rad: f64,
        /// Axis turn per unit of the value.
        rad_per_unit: f64,
    },
}

impl ActuatorOptics {
    /// A shift of the value that leaves the optics unchanged, in its units (see
    /// [`qkd_units::poincare::retarder_axis_period`]).
    pub fn period(&self) -> f64 {
        match *self {
            ActuatorOptics::RotatingRetarder {
                retardance_rad,
                rad_per_unit,
            } => qkd_units::poincare::retarder_axis_period(retardance_rad) / rad_per_unit,
        }
    }
}

impl ActuatorSpec {
    /// Checks a full setting against the actuators: count and ranges (never clamped).
    pub fn check_setting(
        actuators: &[ActuatorSpec],
        values: &[f64],
    ) -> Result<(), PolarizationError> {
        if values.len() != actuators.len() {
            return Err(PolarizationError::WrongCount {
                expected: actuators.len(),
                got: values.len(),
            });
        }
        for (actuator, (spec, &value)) in actuators.iter().zip(values).enumerate() {
            if !(value >= spec.min && value <= spec.max) {
                return Err(PolarizationError::OutOfRange {
                    actuator,
                    value,
                    min: spec.min,
                    max: spec.max,
                });
            }
        }
        Ok(())
    }
}

/// A device that rotates polarization with a set of actuators.
pub trait PolarizationController: Send {
    /// The device's identity.
    fn identity(&self) -> &DeviceIdentity;

    /// The actuators, in the order light meets them.
    fn actuators(&self) -> &[ActuatorSpec];

    /// Time after an accepted command before the new state can be trusted (for motorised
    /// controllers, plus travel time proportional to the move).
    fn settle_time(&self) -> Duration;

    /// Time from a command to `target` until the new state can be trusted: the settle time,
    /// plus the travel for motorised devices that know their speed.
    fn settle_time_for(&self, target: &[f64]) -> Duration {
        let _ = target;
        self.settle_time()
    }

    /// Commands every actuator at once; returns when the device has accepted the command.
    fn set(&mut self, values: &[f64])
    -> impl Future<Output = Result<(), PolarizationError>> + Send;

    /// Reads the actuator values back from the device.
    fn get(&mut self) -> impl Future<Output = Result<Vec<f64>, PolarizationError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paddle_repeats_every_half_turn_and_a_half_wave_one_every_quarter() {
        let paddle = |retardance_rad| ActuatorOptics::RotatingRetarder {
            retardance_rad,
            rad_per_unit: 1f64.to_radians(),
        };
        let period = |r| paddle(r).period();
        assert!((period(std::f64::consts::FRAC_PI_2) - 180.0).abs() < 1e-9);
        assert!((period(std::f64::consts::PI) - 90.0).abs() < 1e-9);
        assert!((period(3.0 * std::f64::consts::PI) - 90.0).abs() < 1e-9);
    }

    #[test]
    fn settings_are_checked_for_count_range_and_nan() {
        let spec = |min, max| ActuatorSpec {
            name: "a".into(),
            unit: ActuatorUnit::Millivolts,
            min,
            max,
            period: None,
            optics: None,
        };
        let actuators = [spec(-5000.0, 5000.0), spec(0.0, 10.0)];
        assert!(ActuatorSpec::check_setting(&actuators, &[0.0, 10.0]).is_ok());
        assert!(matches!(
            ActuatorSpec::check_setting(&actuators, &[0.0]),
            Err(PolarizationError::WrongCount {
                expected: 2,
                got: 1
            })
        ));
        assert!(matches!(
            ActuatorSpec::check_setting(&actuators, &[0.0, f64::NAN]),
            Err(PolarizationError::OutOfRange { actuator: 1, .. })
        ));
        assert!(matches!(
            ActuatorSpec::check_setting(&actuators, &[-5001.0, 1.0]),
            Err(PolarizationError::OutOfRange { actuator: 0, .. })
        ));
    }
}
