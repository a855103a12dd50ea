//! Polarization-controller optics after the fiber: a stack of fiber squeezers, or three rotatable
//! paddles (λ/4, λ/2, λ/4). Settings really rotate the state: the right ones undo the fiber, wrong
//! ones add error.
//!
//! A fiber squeezer is a linear retarder at a fixed axis whose retardance grows linearly with the
//! drive voltage (`bias + π·V/Vπ`); a paddle is a retarder of fixed retardance whose axis turns
//! with the paddle angle. Light meets actuator 0 first.

use serde::{Deserialize, Serialize};

use super::param::{ConfigError, Section};
use super::polarization::Rotation;

/// One fiber squeezer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqueezerSpec {
    /// Angle of the squeezing axis from horizontal, in radians.
    pub axis_rad: f64,
    /// Voltage that adds π of retardance.
    pub v_pi_volts: f64,
    /// Retardance at 0 V (residual birefringence), in radians.
    pub bias_rad: f64,
    /// Lowest drive voltage the driver accepts.
    pub min_volts: f64,
    /// Highest drive voltage the driver accepts.
    pub max_volts: f64,
}

/// One rotatable wave-plate paddle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaddleSpec {
    /// Retardance of the fiber loop in radians (π/2 for a quarter-wave paddle, π for half-wave).
    pub retardance_rad: f64,
    /// Lowest paddle angle, in radians.
    pub min_rad: f64,
    /// Highest paddle angle, in radians.
    pub max_rad: f64,
}

/// The polarization controller in front of the receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ControllerSpec {
    /// No controller: the fiber output goes straight to the receiver.
    #[default]
    None,
    /// Fiber squeezers at fixed axes, driven by voltage.
    Squeezers {
        /// The squeezers in the order light meets them.
        squeezers: Vec<SqueezerSpec>,
        /// Time for a new voltage to take effect, in ps.
        settle_time_ps: i64,
    },
    /// Motorised paddles, set by angle.
    Paddles {
        /// The paddles in the order light meets them.
        paddles: Vec<PaddleSpec>,
        /// Time to start and stop a move, in ps.
        settle_time_ps: i64,
        /// Paddle rotation speed, in radians per second.
        speed_rad_per_s: f64,
    },
}

impl ControllerSpec {
    /// One unbiased squeezer at `axis_rad` (Vπ = 2 V, ±5 V): the smallest controller that can
    /// undo a known rotation about one axis.
    pub fn one_squeezer(axis_rad: f64, settle_time_ps: i64) -> Self {
        ControllerSpec::Squeezers {
            squeezers: vec![SqueezerSpec {
                axis_rad,
                v_pi_volts: 2.0,
                bias_rad: 0.0,
                min_volts: -5.0,
                max_volts: 5.0,
            }],
            settle_time_ps,
        }
    }

    /// Four squeezers at 0°, 45°, 0°, 45° driven over ±5 V, like the OZ Optics EPC driver.
    pub fn four_squeezers() -> Self {
        let axis = [0.0, std::f64::consts::FRAC_PI_4];
        let bias = [0.31, -0.52, 0.17, 0.44];
        ControllerSpec::Squeezers {
            squeezers: (0..4)
                .map(|i| SqueezerSpec {
                    axis_rad: axis[i % 2],
                    v_pi_volts: 2.0,
                    bias_rad: bias[i],
                    min_volts: -5.0,
                    max_volts: 5.0,
                })
                .collect(),
            settle_time_ps: 100_000_000, // 100 µs: piezo squeezers respond in tens of µs
        }
    }

    /// Three paddles λ/4, λ/2, λ/4 turning over 0..170°, like the Thorlabs MPC320.
    pub fn three_paddles() -> Self {
        let quarter = std::f64::consts::FRAC_PI_2;
        let max = 170f64.to_radians();
        ControllerSpec::Paddles {
            paddles: [quarter, 2.0 * quarter, quarter]
                .into_iter()
                .map(|retardance_rad| PaddleSpec {
                    retardance_rad,
                    min_rad: 0.0,
                    max_rad: max,
                })
                .collect(),
            settle_time_ps: 20_000_000_000, // 20 ms to accelerate and stop
            speed_rad_per_s: 200f64.to_radians(),
        }
    }
}

/// An actuator setting the controller cannot take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActuatorError {
    /// The number of values does not match the number of actuators.
    #[error("expected {expected} actuator values, got {got}")]
    WrongCount {
        /// Actuators the controller has.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A value outside the actuator's range (never clamped).
    #[error("actuator {index}: {value} is outside [{min}, {max}]")]
    OutOfRange {
        /// Which actuator.
        index: usize,
        /// Requested value.
        value: f64,
        /// Lowest allowed value.
        min: f64,
        /// Highest allowed value.
        max: f64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Actuator {
    /// Fixed axis (squeezer) or fixed retardance (paddle).
    fixed: f64,
    /// Retardance per unit (squeezer: π/Vπ) or 0 for paddles.
    per_unit: f64,
    /// Retardance at zero drive (squeezers only).
    bias: f64,
    min: f64,
    max: f64,
}

/// Validated controller optics with its current setting.
#[derive(Debug, Clone)]
pub struct ControllerOptics {
    kind: OpticsKind,
    actuators: Vec<Actuator>,
    settle_time_ps: i64,
    speed_rad_per_ps: f64,
    setting: Vec<f64>,
    rotation: Rotation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpticsKind {
    None,
    Squeezers,
    Paddles,
}

impl ControllerOptics {
    /// Validates `spec`; every actuator starts at zero drive (or its lowest angle).
    pub fn new(spec: &ControllerSpec, section: Section<'_>) -> Result<Self, ConfigError> {
        let (kind, actuators, settle_time_ps, speed) = match spec {
            ControllerSpec::None => (OpticsKind::None, Vec::new(), 0, 0.0),
            ControllerSpec::Squeezers {
                squeezers,
                settle_time_ps,
            } => {
                let actuators = squeezers
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let name = section.nested(&format!("squeezers[{i}]"));
                        let sec = Section(&name);
                        let axis = sec.check("axis_rad", s.axis_rad, -10.0, 10.0, "rad")?;
                        let v_pi = sec.check("v_pi_volts", s.v_pi_volts, 1e-3, 1e4, "V")?;
                        let bias = sec.check("bias_rad", s.bias_rad, -100.0, 100.0, "rad")?;
                        let min = sec.check("min_volts", s.min_volts, -1e4, 1e4, "V")?;
                        let max = sec.check("max_volts", s.max_volts, min, 1e4, "V")?;
                        Ok(Actuator {
                            fixed: axis,
                            per_unit: std::f64::consts::PI / v_pi,
                            bias,
                            min,
                            max,
                        })
                    })
                    .collect::<Result<Vec<_>, ConfigError>>()?;
                (OpticsKind::Squeezers, actuators, *settle_time_ps, 0.0)
            }
            ControllerSpec::Paddles {
                paddles,
                settle_time_ps,
                speed_rad_per_s,
            } => {
                let actuators = paddles
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let name = section.nested(&format!("paddles[{i}]"));
                        let sec = Section(&name);
                        let retardance =
                            sec.check("retardance_rad", p.retardance_rad, 0.0, 10.0, "rad")?;
                        let min = sec.check("min_rad", p.min_rad, -10.0, 10.0, "rad")?;
                        let max = sec.check("max_rad", p.max_rad, min, 10.0, "rad")?;
                        Ok(Actuator {
                            fixed: retardance,
                            per_unit: 0.0,
                            bias: 0.0,
                            min,
                            max,
                        })
                    })
                    .collect::<Result<Vec<_>, ConfigError>>()?;
                let speed =
                    section.check("speed_rad_per_s", *speed_rad_per_s, 1e-6, 1e6, "rad/s")?;
                (
                    OpticsKind::Paddles,
                    actuators,
                    *settle_time_ps,
                    speed / 1e12,
                )
            }
        };
        if kind != OpticsKind::None && actuators.is_empty() {
            return Err(section.inconsistent("kind", "a controller needs at least one actuator"));
        }
        let settle_time_ps =
            section.check("settle_time_ps", settle_time_ps as f64, 0.0, 1e13, "ps")? as i64;
        let setting = actuators.iter().map(|a| 0f64.clamp(a.min, a.max)).collect();
        let mut optics = ControllerOptics {
            kind,
            actuators,
            settle_time_ps,
            speed_rad_per_ps: speed,
            setting,
            rotation: Rotation::IDENTITY,
        };
        optics.rotation = optics.rotation_for(&optics.setting);
        Ok(optics)
    }

    /// Number of actuators.
    pub fn actuator_count(&self) -> usize {
        self.actuators.len()
    }

    /// `(min, max)` of actuator `index` in volts (squeezers) or radians (paddles).
    pub fn limits(&self, index: usize) -> Option<(f64, f64)> {
        self.actuators.get(index).map(|a| (a.min, a.max))
    }

    /// A shift of actuator `index` that leaves the optics unchanged, in volts or radians: 2π of
    /// retardance for a squeezer; half a turn for a paddle, a quarter for a half-wave paddle
    /// (a rotation by π about an axis equals one about the opposite axis).
    pub fn period(&self, index: usize) -> Option<f64> {
        let a = self.actuators.get(index)?;
        match self.kind {
            OpticsKind::None => None,
            OpticsKind::Squeezers => Some(2.0 * std::f64::consts::PI / a.per_unit),
            OpticsKind::Paddles => Some(super::polarization::retarder_axis_period(a.fixed)),
        }
    }

    /// Retardance of paddle `index` in radians; `None` for squeezers.
    pub fn paddle_retardance(&self, index: usize) -> Option<f64> {
        let a = self.actuators.get(index)?;
        (self.kind == OpticsKind::Paddles).then_some(a.fixed)
    }

    /// `true` for squeezers (volts), `false` for paddles (radians).
    pub fn is_voltage_driven(&self) -> bool {
        self.kind == OpticsKind::Squeezers
    }

    /// Fixed part of the time before a command takes effect, in ps.
    pub fn settle_time_ps(&self) -> i64 {
        self.settle_time_ps
    }

    /// The setting in effect.
    pub fn setting(&self) -> &[f64] {
        &self.setting
    }

    /// The rotation the current setting applies.
    pub fn rotation(&self) -> Rotation {
        self.rotation
    }

    /// Checks a new setting and returns how long after the command it takes effect, in ps.
    pub fn check(&self, setting: &[f64]) -> Result<i64, ActuatorError> {
        if setting.len() != self.actuators.len() {
            return Err(ActuatorError::WrongCount {
                expected: self.actuators.len(),
                got: setting.len(),
            });
        }
        for (index, (&value, a)) in setting.iter().zip(&self.actuators).enumerate() {
            if !(value >= a.min && value <= a.max) {
                return Err(ActuatorError::OutOfRange {
                    index,
                    value,
                    min: a.min,
                    max: a.max,
                });
            }
        }
        let travel = match self.kind {
            OpticsKind::Paddles => {
                let largest_move = setting
                    .iter()
                    .zip(&self.setting)
                    .map(|(new, old)| (new - old).abs())
                    .fold(0.0, f64::max);
                (largest_move / self.speed_rad_per_ps) as i64
            }
            _ => 0,
        };
        Ok(self.settle_time_ps + travel)
    }

    /// Puts a setting already accepted by [`Self::check`] into effect.
    pub fn apply(&mut self, setting: &[f64]) {
        self.setting.clear();
        self.setting.extend_from_slice(setting);
        self.rotation = self.rotation_for(setting);
    }

    /// The rotation a setting would apply (no range check).
    pub fn rotation_for(&self, setting: &[f64]) -> Rotation {
        let mut total = Rotation::IDENTITY;
        for (a, &value) in self.actuators.iter().zip(setting) {
            let element = match self.kind {
                OpticsKind::None => Rotation::IDENTITY,
                OpticsKind::Squeezers => Rotation::retarder(a.fixed, a.bias + a.per_unit * value),
                OpticsKind::Paddles => Rotation::retarder(value, a.fixed),
            };
            total = element.after(&total);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::polarization::{D, H};

    #[test]
    fn squeezer_voltage_sets_retardance_linearly() {
        // One squeezer at 45°: a π/2 retardance turns H into circular, π turns it into V.
        let spec = ControllerSpec::one_squeezer(std::f64::consts::FRAC_PI_4, 0);
        let optics = ControllerOptics::new(&spec, Section("c")).unwrap();
        let s = optics.rotation_for(&[2.0]).apply(H);
        assert!((s[0] + 1.0).abs() < 1e-12, "{s:?}");
        let s = optics.rotation_for(&[1.0]).apply(H);
        assert!(s[2].abs() > 1.0 - 1e-12, "{s:?}");
    }

    #[test]
    fn paddles_can_turn_h_into_d() {
        // λ/4 at 0 leaves H alone; λ/2 at 22.5° turns H into D; λ/4 at 45° leaves D alone.
        let optics = ControllerOptics::new(&ControllerSpec::three_paddles(), Section("c")).unwrap();
        let pi = std::f64::consts::PI;
        let s = optics.rotation_for(&[0.0, pi / 8.0, pi / 4.0]).apply(H);
        assert!(s.iter().zip(D).all(|(a, b)| (a - b).abs() < 1e-12), "{s:?}");
    }

    #[test]
    fn out_of_range_settings_are_refused_not_clamped() {
        let optics =
            ControllerOptics::new(&ControllerSpec::four_squeezers(), Section("c")).unwrap();
        assert!(matches!(
            optics.check(&[0.0, 6.0, 0.0, 0.0]),
            Err(ActuatorError::OutOfRange { index: 1, .. })
        ));
        assert!(matches!(
            optics.check(&[0.0; 3]),
            Err(ActuatorError::WrongCount {
                expected: 4,
                got: 3
            })
        ));
        assert!(matches!(
            optics.check(&[0.0, f64::NAN, 0.0, 0.0]),
            Err(ActuatorError::OutOfRange { index: 1, .. })
        ));
    }

    #[test]
    fn paddle_moves_take_time_proportional_to_travel() {
        let optics = ControllerOptics::new(&ControllerSpec::three_paddles(), Section("c")).unwrap();
        let short = optics.check(&[0.1, 0.0, 0.0]).unwrap();
        let long = optics.check(&[1.0, 0.0, 0.0]).unwrap();
        assert!(long > short);
    }

    #[test]
    fn rejects_inverted_limits() {
        let spec = ControllerSpec::Squeezers {
            squeezers: vec![SqueezerSpec {
                axis_rad: 0.0,
                v_pi_volts: 2.0,
                bias_rad: 0.0,
                min_volts: 5.0,
                max_volts: -5.0,
            }],
            settle_time_ps: 0,
        };
        let err = ControllerOptics::new(&spec, Section("receiver.controller")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("receiver.controller.squeezers[0].max_volts"),
            "{err}"
        );
    }
}
