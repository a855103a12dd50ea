//! The emulated bench: every device trait implemented on the firmware-sim world model.
//!
//! All devices of a bench share one world, so moving the emulated polarization controller
//! changes what the emulated detectors and tagger see. Emulated time advances when a device needs
//! data (a tagger read, a detector count); tags produced meanwhile wait in a bounded per-node
//! buffer, and overflow is reported like a real tagger's buffer overflow. Emulated time runs as
//! fast as the machine allows unless the bench is paced to real time.

mod detectors;
mod polarization;
mod source;
mod tagger;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

// Tokio's clock, so that pacing agrees with the tagger's tokio sleeps, paused clocks included.
use tokio::time::Instant;

use qkd_firmware_sim::world::{
    ConfigError, EntangledLinkSpec, EntangledWorld, LinkSpec, NodeOutput, PrepareMeasureWorld,
    node::ReceiverNode,
};

pub use detectors::EmulatedDetectors;
pub use polarization::EmulatedPolarizationController;
pub use source::{EmulatedPairSource, EmulatedWcpSource};
pub use tagger::EmulatedTagger;

use qkd_units::Picoseconds;

use crate::DeviceIdentity;
use crate::error::InvalidSetting;
pub use crate::tagger::Pacing;

/// Tags a node's buffer holds by default before it overflows (about 16 M, 144 MiB).
pub const NODE_BUFFER_TAGS: usize = 1 << 24;
/// World time advanced per internal step, bounding the scratch memory of one step.
const STEP_PS: i64 = 10_000_000_000;

/// The link the bench emulates.
#[derive(Debug)]
pub enum World {
    /// Decoy-state BB84: Alice's source, one receiving node (index 0).
    PrepareMeasure(Box<PrepareMeasureWorld>),
    /// BBM92: pair source in the middle, nodes A (0) and B (1).
    Entangled(Box<EntangledWorld>),
}

impl World {
    /// Emulated time reached, in ps.
    pub fn now_ps(&self) -> i64 {
        match self {
            World::PrepareMeasure(w) => w.now_ps(),
            World::Entangled(w) => w.now_ps(),
        }
    }

    /// Number of receiving nodes.
    pub fn node_count(&self) -> usize {
        match self {
            World::PrepareMeasure(_) => 1,
            World::Entangled(_) => 2,
        }
    }

    /// Receiving node `index`.
    pub fn node(&self, index: usize) -> Option<&ReceiverNode> {
        match (self, index) {
            (World::PrepareMeasure(w), 0) => Some(w.node()),
            (World::Entangled(w), 0 | 1) => Some(w.node(index)),
            _ => None,
        }
    }

    fn node_mut(&mut self, index: usize) -> Option<&mut ReceiverNode> {
        match (self, index) {
            (World::PrepareMeasure(w), 0) => Some(w.node_mut()),
            (World::Entangled(w), 0 | 1) => Some(w.node_mut(index)),
            _ => None,
        }
    }

    fn run_until(&mut self, t_ps: i64, scratch: &mut [NodeOutput; 2]) {
        match self {
            World::PrepareMeasure(w) => w.run_until(t_ps, &mut scratch[0]),
            World::Entangled(w) => w.run_until(t_ps, scratch),
        }
    }
}

/// Tags and counters of one node waiting for their readers.
#[derive(Debug, Default)]
struct NodeBuffer {
    times: Vec<i64>,
    channels: Vec<u8>,
    missed: u64,
    overflow: bool,
    /// Clicks per detector since the bench started.
    clicks: [u64; 4],
}

impl NodeBuffer {
    fn take(&mut self, out: &mut NodeOutput, limit: usize) {
        for &d in &out.clicks.detector {
            self.clicks[usize::from(d)] += 1;
        }
        self.missed += out.missed_tags;
        let room = limit.saturating_sub(self.times.len());
        let fits = out.tag_times_ps.len().min(room);
        if fits < out.tag_times_ps.len() {
            self.overflow = true;
            self.missed += (out.tag_times_ps.len() - fits) as u64;
        }
        self.times.extend_from_slice(&out.tag_times_ps[..fits]);
        self.channels.extend_from_slice(&out.tag_channels[..fits]);
        out.clear();
    }
}

/// Everything the devices of one bench share.
#[derive(Debug)]
pub(crate) struct BenchState {
    world: World,
    buffers: Vec<NodeBuffer>,
    scratch: [NodeOutput; 2],
    buffer_limit: usize,
    pacing: Pacing,
    started: Instant,
}

impl BenchState {
    /// Emulates up to world time `t_ps`, filing each node's output into its buffer.
    fn advance_to(&mut self, t_ps: i64) {
        while self.world.now_ps() < t_ps {
            let step_end = (self.world.now_ps() + STEP_PS).min(t_ps);
            self.world.run_until(step_end, &mut self.scratch);
            for (buffer, out) in self.buffers.iter_mut().zip(self.scratch.iter_mut()) {
                buffer.take(out, self.buffer_limit);
            }
        }
    }

    /// Advances by `duration` beyond now and returns how long to wait to stay paced.
    fn advance_by(&mut self, duration: Duration) -> Duration {
        self.advance_to(
            self.world
                .now_ps()
                .saturating_add(Picoseconds::from_duration(duration).get()),
        );
        self.pacing_wait()
    }

    /// How long to wait so that emulated time does not run ahead of the wall clock.
    fn pacing_wait(&self) -> Duration {
        match self.pacing {
            Pacing::AsFastAsPossible => Duration::ZERO,
            Pacing::RealTime => {
                let emulated = Picoseconds(self.world.now_ps()).to_duration();
                emulated.saturating_sub(self.started.elapsed())
            }
        }
    }
}

/// What serial devices served on pseudo-terminals act on, when they share this bench's world:
/// their waits advance the world and file its tags for the emulated tagger as usual.
impl qkd_firmware_sim::world::BenchWorld for BenchState {
    fn world(&self) -> Option<&PrepareMeasureWorld> {
        match &self.world {
            World::PrepareMeasure(w) => Some(w),
            World::Entangled(_) => None,
        }
    }

    fn world_mut(&mut self) -> Option<&mut PrepareMeasureWorld> {
        match &mut self.world {
            World::PrepareMeasure(w) => Some(w),
            World::Entangled(_) => None,
        }
    }

    fn advance_ps(&mut self, ps: i64) {
        self.advance_to(self.world.now_ps().saturating_add(ps));
    }

    fn clicks(&self) -> [u64; 4] {
        self.buffers.first().map_or([0; 4], |b| b.clicks)
    }
}

/// Shared handle to a bench's state.
#[derive(Debug, Clone)]
pub(crate) struct Shared(Arc<Mutex<BenchState>>);

impl Shared {
    /// Locks the bench. A panic in another holder leaves emulated state that is still usable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, BenchState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An emulated bench: hands out devices that share one world.
#[derive(Debug, Clone)]
pub struct EmulatedBench {
    shared: Shared,
    seed: u64,
}

impl EmulatedBench {
    fn new(world: World, seed: u64) -> Self {
        let buffers = (0..world.node_count())
            .map(|_| NodeBuffer::default())
            .collect();
        EmulatedBench {
            shared: Shared(Arc::new(Mutex::new(BenchState {
                world,
                buffers,
                scratch: [NodeOutput::default(), NodeOutput::default()],
                buffer_limit: NODE_BUFFER_TAGS,
                pacing: Pacing::AsFastAsPossible,
                started: Instant::now(),
            }))),
            seed,
        }
    }

    /// A decoy-state BB84 bench.
    pub fn prepare_measure(spec: &LinkSpec, seed: u64) -> Result<Self, ConfigError> {
        Ok(Self::new(
            World::PrepareMeasure(Box::new(PrepareMeasureWorld::new(spec, seed)?)),
            seed,
        ))
    }

    /// An entanglement-based bench with nodes A (0) and B (1).
    pub fn entangled(spec: &EntangledLinkSpec, seed: u64) -> Result<Self, ConfigError> {
        Ok(Self::new(
            World::Entangled(Box::new(EntangledWorld::new(spec, seed)?)),
            seed,
        ))
    }

    /// Sets how emulated time relates to the wall clock.
    pub fn set_pacing(&self, pacing: Pacing) {
        let mut state = self.shared.lock();
        state.pacing = pacing;
        state.started = Instant::now()
            .checked_sub(Picoseconds(state.world.now_ps()).to_duration())
            .unwrap_or_else(Instant::now);
    }

    /// Sets how many tags each node's buffer holds before it overflows.
    pub fn set_buffer_limit(&self, tags: usize) {
        self.shared.lock().buffer_limit = tags;
    }

    /// The world for devices served on pseudo-terminals to share (prepare-and-measure benches
    /// only), so that what moves over a serial line is what the emulated tagger sees.
    pub fn device_world(&self) -> Option<Arc<Mutex<dyn qkd_firmware_sim::world::BenchWorld>>> {
        let prepare_measure = matches!(self.shared.lock().world, World::PrepareMeasure(_));
        prepare_measure
            .then(|| self.shared.0.clone() as Arc<Mutex<dyn qkd_firmware_sim::world::BenchWorld>>)
    }

    /// Runs `inspect` on the world: ground truth for tests, never for code above the traits.
    pub fn inspect<R>(&self, inspect: impl FnOnce(&World) -> R) -> R {
        inspect(&self.shared.lock().world)
    }

    /// Alice's weak-coherent source (prepare-and-measure benches only).
    pub fn wcp_source(&self) -> Option<EmulatedWcpSource> {
        EmulatedWcpSource::new(self.shared.clone(), self.identity("WCP source"))
    }

    /// The pair source (entangled benches only).
    pub fn pair_source(&self) -> Option<EmulatedPairSource> {
        let is_entangled = matches!(self.shared.lock().world, World::Entangled(_));
        is_entangled
            .then(|| EmulatedPairSource::new(self.shared.clone(), self.identity("SPDC source")))
    }

    /// The detectors of node `node`.
    pub fn detectors(&self, node: usize) -> Option<EmulatedDetectors> {
        let exists = self.shared.lock().world.node(node).is_some();
        exists
            .then(|| EmulatedDetectors::new(self.shared.clone(), node, self.identity("detectors")))
    }

    /// The polarization controller of node `node`, if that node has one.
    pub fn polarization_controller(&self, node: usize) -> Option<EmulatedPolarizationController> {
        EmulatedPolarizationController::new(
            self.shared.clone(),
            node,
            self.identity("polarization controller"),
        )
    }

    /// The time tagger of node `node`, delivering `batch` of emulated time per read.
    pub fn tagger(&self, node: usize, batch: Duration) -> Option<EmulatedTagger> {
        let exists = self.shared.lock().world.node(node).is_some();
        exists.then(|| {
            EmulatedTagger::new(
                self.shared.clone(),
                node,
                batch,
                self.identity("time tagger"),
            )
        })
    }

    fn identity(&self, model: &str) -> DeviceIdentity {
        DeviceIdentity {
            vendor: "qkd-node emulator".into(),
            model: format!("emulated {model}"),
            serial: format!("EMU-{:016X}", self.seed),
            firmware: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

impl From<ConfigError> for InvalidSetting {
    fn from(err: ConfigError) -> Self {
        match err {
            ConfigError::OutOfRange { parameter, source } => {
                InvalidSetting::new(parameter, &source)
            }
            ConfigError::Inconsistent { parameter, reason } => {
                InvalidSetting::new(parameter, &reason)
            }
            other @ ConfigError::UnknownPreset { .. } => InvalidSetting::new("preset", &other),
        }
    }
}
