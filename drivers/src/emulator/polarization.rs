//! The emulated polarization controller of one node: fiber squeezers driven in millivolts, or
//! paddles set in degrees.

use std::time::Duration;

use qkd_firmware_sim::world::ActuatorError;
use qkd_firmware_sim::world::controller_optics::ControllerOptics;

use qkd_units::Picoseconds;

use super::{Shared, World};
use crate::DeviceIdentity;
use crate::error::PolarizationError;
use crate::polarization::{ActuatorOptics, ActuatorSpec, ActuatorUnit, PolarizationController};

/// Device units per world unit: millivolts per volt, or degrees per radian.
fn scale(optics: &ControllerOptics) -> f64 {
    if optics.is_voltage_driven() {
        1000.0
    } else {
        180.0 / std::f64::consts::PI
    }
}

/// A world-level refusal (which unit conversion at a range edge can still cause) in device units.
fn in_device_units(err: &ActuatorError, scale: f64) -> PolarizationError {
    match *err {
        ActuatorError::WrongCount { expected, got } => {
            PolarizationError::WrongCount { expected, got }
        }
        ActuatorError::OutOfRange {
            index,
            value,
            min,
            max,
        } => PolarizationError::OutOfRange {
            actuator: index,
            value: value * scale,
            min: min * scale,
            max: max * scale,
        },
    }
}

/// The emulated controller in front of one node's receiver.
#[derive(Debug)]
pub struct EmulatedPolarizationController {
    shared: Shared,
    node: usize,
    identity: DeviceIdentity,
    actuators: Vec<ActuatorSpec>,
    scale: f64,
    settle: Duration,
}

impl EmulatedPolarizationController {
    /// The controller of `node`; `None` without a node or without a controller there.
    pub(super) fn new(shared: Shared, node: usize, identity: DeviceIdentity) -> Option<Self> {
        let (actuators, scale, settle) = {
            let state = shared.lock();
            let optics = state.world.node(node)?.receiver.controller();
            if optics.actuator_count() == 0 {
                return None;
            }
            let scale = scale(optics);
            let (unit, kind) = if optics.is_voltage_driven() {
                (ActuatorUnit::Millivolts, "squeezer")
            } else {
                (ActuatorUnit::Degrees, "paddle")
            };
            let actuators = (0..optics.actuator_count())
                .filter_map(|i| {
                    optics.limits(i).map(|(min, max)| ActuatorSpec {
                        name: format!("{kind} {}", i + 1),
                        unit,
                        min: min * scale,
                        max: max * scale,
                        period: optics.period(i).map(|p| p * scale),
                        optics: optics.paddle_retardance(i).map(|retardance_rad| {
                            ActuatorOptics::RotatingRetarder {
                                retardance_rad,
                                rad_per_unit: 1.0 / scale,
                            }
                        }),
                    })
                })
                .collect();
            let settle = Picoseconds(optics.settle_time_ps()).to_duration();
            (actuators, scale, settle)
        };
        Some(EmulatedPolarizationController {
            shared,
            node,
            identity,
            actuators,
            scale,
            settle,
        })
    }
}

impl PolarizationController for EmulatedPolarizationController {
    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn actuators(&self) -> &[ActuatorSpec] {
        &self.actuators
    }

    fn settle_time(&self) -> Duration {
        self.settle
    }

    fn settle_time_for(&self, target: &[f64]) -> Duration {
        let setting: Vec<f64> = target.iter().map(|v| v / self.scale).collect();
        let state = self.shared.lock();
        state
            .world
            .node(self.node)
            .and_then(|node| node.receiver.controller().check(&setting).ok())
            .map_or(self.settle, |ps| Picoseconds(ps).to_duration())
    }

    async fn set(&mut self, values: &[f64]) -> Result<(), PolarizationError> {
        ActuatorSpec::check_setting(&self.actuators, values)?;
        let setting: Vec<f64> = values.iter().map(|v| v / self.scale).collect();
        let mut state = self.shared.lock();
        let result = match &mut state.world {
            World::PrepareMeasure(w) => w.set_controller(&setting),
            World::Entangled(w) => w.set_controller(self.node, &setting),
        };
        result
            .map(|_| ())
            .map_err(|e| in_device_units(&e, self.scale))
    }

    async fn get(&mut self) -> Result<Vec<f64>, PolarizationError> {
        let state = self.shared.lock();
        let node = state
            .world
            .node(self.node)
            .ok_or(PolarizationError::Unsupported("a controller on this node"))?;
        Ok(node
            .receiver
            .target_setting()
            .iter()
            .map(|v| v * self.scale)
            .collect())
    }
}
