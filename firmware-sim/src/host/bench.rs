//! The world all served devices share: one prepare-and-measure link, advanced on demand. It is
//! either the host's own ([`SimBench`]) or one the emulated drivers run on too, so that a tagger
//! read through the driver traits sees what devices moved over their serial lines.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::world::{
    ActuatorError, BenchWorld, ConfigError, ControllerSpec, LinkSpec, NodeOutput,
    PrepareMeasureWorld,
};

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

impl LightPath {
    /// The optics of the controller in the light path: four squeezers for the EPCs, three
    /// paddles for the MPC320.
    pub fn controller(self) -> ControllerSpec {
        match self {
            LightPath::Epc | LightPath::OzEpc => ControllerSpec::four_squeezers(),
            LightPath::Mpc320 => ControllerSpec::three_paddles(),
        }
    }
}

/// The host's own world and the detector clicks counted so far.
#[derive(Debug)]
pub struct SimBench {
    world: PrepareMeasureWorld,
    scratch: NodeOutput,
    clicks: [u64; 4],
}

/// World time advanced per step, bounding the scratch memory of one step.
const STEP_PS: i64 = 10_000_000_000;

impl SimBench {
    /// Builds the world from `spec`.
    pub fn new(spec: &LinkSpec, seed: u64) -> Result<Self, ConfigError> {
        Ok(SimBench {
            world: PrepareMeasureWorld::new(spec, seed)?,
            scratch: NodeOutput::default(),
            clicks: [0; 4],
        })
    }
}

impl BenchWorld for SimBench {
    fn world(&self) -> Option<&PrepareMeasureWorld> {
        Some(&self.world)
    }

    fn world_mut(&mut self) -> Option<&mut PrepareMeasureWorld> {
        Some(&mut self.world)
    }

    fn advance_ps(&mut self, ps: i64) {
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

    fn clicks(&self) -> [u64; 4] {
        self.clicks
    }
}

/// The world shared by the served devices, and which controller is in its light path.
#[derive(Clone)]
pub struct SharedBench {
    world: Arc<Mutex<dyn BenchWorld>>,
    light_path: LightPath,
}

impl std::fmt::Debug for SharedBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBench")
            .field("light_path", &self.light_path)
            .finish_non_exhaustive()
    }
}

impl SharedBench {
    /// The host's own world: `spec` with the optics of the controller in `light_path`.
    pub fn simulated(
        spec: &LinkSpec,
        seed: u64,
        light_path: LightPath,
    ) -> Result<Self, ConfigError> {
        let mut spec = spec.clone();
        spec.receiver.controller = light_path.controller();
        Ok(SharedBench {
            world: Arc::new(Mutex::new(SimBench::new(&spec, seed)?)),
            light_path,
        })
    }

    /// Shares a world others act on too (the emulated drivers' bench).
    pub fn from_shared(world: Arc<Mutex<dyn BenchWorld>>, light_path: LightPath) -> Self {
        SharedBench { world, light_path }
    }

    /// Locks the world; a panicked holder leaves a world that is still usable.
    pub fn lock(&self) -> MutexGuard<'_, dyn BenchWorld + 'static> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the receiver's controller, in world units (volts or radians), if `device` is the one
    /// in the light path; otherwise the move changes nothing optical.
    pub fn set_controller(&self, device: LightPath, setting: &[f64]) -> Result<(), ActuatorError> {
        if device != self.light_path {
            return Ok(());
        }
        match self.lock().world_mut() {
            Some(world) => world.set_controller(setting).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Runs `f` on the prepare-and-measure world, if there is one.
    pub fn with_world<R>(&self, f: impl FnOnce(&mut PrepareMeasureWorld) -> R) -> Option<R> {
        self.lock().world_mut().map(f)
    }
}
