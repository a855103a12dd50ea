//! The simulated optical bench: source, fiber, polarization, eavesdropper, receivers, detectors
//! and time taggers, seedable and deterministic.
//!
//! Two link shapes are built from the same parts: [`PrepareMeasureWorld`] (decoy-state BB84 with
//! a weak-coherent source at Alice) and [`EntangledWorld`] (BBM92 with an SPDC pair source in the
//! middle). Both advance in emulated time when asked, and return each receiving node's tag stream
//! together with the ground truth behind every click.

pub mod bench;
pub mod clock;
pub mod controller_optics;
pub mod detector;
pub mod entangled;
pub mod eve;
pub mod fiber;
pub mod node;
pub mod param;
pub mod pmd;
pub mod polarization;
pub mod prepare_measure;
pub mod presets;
pub mod raman;
pub mod receiver;
pub mod rng;
pub mod source;
pub mod stats;
pub mod tagger;

pub use bench::BenchWorld;
pub use controller_optics::{ActuatorError, ControllerSpec};
pub use detector::{ClickOrigin, DarkCountSpec, DetectorPreset, DetectorSpec};
pub use entangled::{EntangledLinkSpec, EntangledWorld};
pub use eve::EveSpec;
pub use fiber::{FiberSpec, InitialRotation, StepSpec};
pub use node::{Clicks, NO_SLOT, NodeOutput};
pub use param::ConfigError;
pub use prepare_measure::{LinkSpec, PrepareMeasureWorld};
pub use presets::LinkPreset;
pub use raman::{ClassicalSpec, Direction};
pub use receiver::{DETECTOR_NAMES, ReceiverSpec};
pub use source::{Basis, IntensitySpec, SlotChoice, SpdcSourceSpec, WcpSourceSpec};
pub use stats::LinkStats;
pub use tagger::{MARKER_CHANNEL, SYNC_CHANNEL, TaggerSpec};

/// Numbers of the independent random streams drawn from the world seed.
pub(crate) mod stream {
    pub const PATTERN: u64 = 1;
    pub const PHOTONS: u64 = 2;
    pub const EVE: u64 = 3;
    pub const FIBER: u64 = 4;
    pub const TAGGER: u64 = 5;
    pub const PAIRS: u64 = 6;
    pub const DETECTOR: u64 = 16;
    /// Offset of node B's streams in an entangled link.
    pub const NODE_B: u64 = 1 << 16;

    /// A 64-bit key derived from the world seed for stream `stream`.
    pub fn seed(world_seed: u64, stream: u64) -> u64 {
        super::rng::stream_seed(world_seed, stream)
    }
}
