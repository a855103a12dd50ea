//! The world all served devices share: one prepare-and-measure link, advanced on demand.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::world::{ActuatorError, ConfigError, LinkSpec, NodeOutput, PrepareMeasureWorld};

/// Which served polarization controller sits in the light path in front of the receiver; the
/// others are on the bench but move nothing the detectors see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LightPath {
    /// Our polarization board (four squeezers).
    Epc,
    /// The OZ Optics EPC driver (four squeezers).
    OzEpc,
    /// The Thorlabs MPC320 (three paddles).
    Mpc320,
}

/// The shared world and the detector clicks counted so far.
#[derive(Debug)]
pub struct SimBench {
    world: PrepareMeasureWorld,
    scratch: NodeOutput,
    clicks: [u64; 4],
    light_path: LightPath,
}

/// World time advanced per step, bounding the scratch memory of one step.
const STEP_PS: i64 = 10_000_000_000;

impl SimBench {
    /// Builds the world; `spec`'s receiver controller must match `light_path` (squeezers for the
    /// EPCs, paddles for the MPC320).
    pub fn new(spec: &LinkSpec, seed: u64, light_path: LightPath) -> Result<Self, ConfigError> {
        Ok(SimBench {
            world: PrepareMeasureWorld::new(spec, seed)?,
            scratch: NodeOutput::default(),
            clicks: [0; 4],
            light_path,
        })
    }

    /// Emulated time, ps.
    pub fn now_ps(&self) -> i64 {
        self.world.now_ps()
    }

    /// Runs the world `ps` further, counting clicks.
    pub fn advance_ps(&mut self, ps: i64) {
        let end = self.world.now_ps().saturating_add(ps);
        while self.world.now_ps() < end {
            let step = (self.world.now_ps() + STEP_PS).min(end);
            self.world.run_until(step, &mut self.scratch);
            for &d in &self.scratch.clicks.detector {
                if let Some(count) = self.clicks.get_mut(usize::from(d)) {
                    *count += 1;
                }
            }
            self.scratch.clear();
        }
    }

    /// Clicks of each detector since the start.
    pub fn clicks(&self) -> [u64; 4] {
        self.clicks
    }

    /// Sets the receiver's controller, in world units (volts or radians), if `device` is the one
    /// in the light path; otherwise the move changes nothing optical.
    pub fn set_controller(
        &mut self,
        device: LightPath,
        setting: &[f64],
    ) -> Result<(), ActuatorError> {
        if device == self.light_path {
            self.world.set_controller(setting).map(|_| ())
        } else {
            Ok(())
        }
    }

    /// The world, for settings of the source and detectors.
    pub fn world_mut(&mut self) -> &mut PrepareMeasureWorld {
        &mut self.world
    }

    /// The world, for inspection.
    pub fn world(&self) -> &PrepareMeasureWorld {
        &self.world
    }
}

/// The bench shared by the served devices.
#[derive(Debug, Clone)]
pub struct SharedBench(Arc<Mutex<SimBench>>);

impl SharedBench {
    /// Shares `bench`.
    pub fn new(bench: SimBench) -> Self {
        SharedBench(Arc::new(Mutex::new(bench)))
    }

    /// Locks the bench; a panicked holder leaves a world that is still usable.
    pub fn lock(&self) -> MutexGuard<'_, SimBench> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
