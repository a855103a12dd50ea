//! What a node reports as it runs, for anyone who subscribes (the command line, a dashboard,
//! metrics): batch counts, blocks, resynchronisations, alarms. Emitting costs nothing when
//! nobody listens; a slow subscriber misses events rather than slowing the node.

use tokio::sync::broadcast;

use crate::block::BlockReport;
use crate::messages::BlockId;

/// Events a subscriber may fall behind by before it misses some.
const CAPACITY: usize = 1024;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// A tagger batch was measured and sifted (measurer).
    Batch {
        /// Detections announced.
        detections: u64,
        /// Key-basis bits it added to the pool (0 when held).
        sifted_key_bits: u64,
        /// Measured while tracking had paused key generation.
        held: bool,
    },
    /// A block ended, with or without key.
    Block {
        /// Its number, once both nodes agreed on one.
        id: Option<BlockId>,
        /// What it did.
        report: Box<BlockReport>,
    },
    /// The channel was started over after a failure; the block in progress gave no key.
    Resynchronised {
        /// What went wrong.
        reason: String,
    },
    /// Polarization tracking changed what it is doing (measurer).
    Tracking(TrackingState),
    /// Something an operator must look at.
    Alarm(Alarm),
}

/// What polarization tracking is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackingState {
    /// Checking a saved calibration against the link.
    Calibrating,
    /// Aligning from scratch (no saved calibration, or it no longer held).
    Aligning,
    /// Following the drift at its floor: key generation on.
    Tracking,
    /// Far from the floor: key generation paused, batches held.
    Paused,
}

/// Alarms a node raises.
#[derive(Debug, Clone, PartialEq)]
pub enum Alarm {
    /// The classical channel was tampered with, or authentication failed.
    Authentication(String),
    /// Fewer than this many pads are left for seals or checks.
    PadsLow {
        /// Seals left.
        seals: u64,
        /// Checks left.
        checks: u64,
    },
}

/// Where a node's events go.
#[derive(Debug, Clone)]
pub struct Events(broadcast::Sender<NodeEvent>);

impl Default for Events {
    fn default() -> Self {
        Events(broadcast::channel(CAPACITY).0)
    }
}

impl Events {
    /// Reports `event` to whoever listens.
    pub fn emit(&self, event: NodeEvent) {
        // No subscriber is not an error: nobody is watching.
        let _ = self.0.send(event);
    }

    /// A new subscription, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.0.subscribe()
    }
}
