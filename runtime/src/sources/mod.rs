//! Where a node's sessions get their data, written against the driver traits: Alice's
//! preparations from her source's records, Bob's measurements from his time tagger (BB84), and
//! the two taggers of an entangled link (BBM92). The same code drives lab hardware and the
//! emulated bench.

pub mod bb84;
pub mod bbm92;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a measuring node does with its next turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Read the next tagger batch.
    Read,
    /// The run is over: flush what is held back, once.
    Finish,
    /// Nothing more to report.
    Done,
}

/// How long a measuring node reads: a fixed number of batches (a run of given length), or until
/// a stop flag is raised (a node stopping on a signal); then one flush.
#[derive(Debug, Clone)]
pub struct BatchBudget {
    left: Option<u64>,
    stop: Arc<AtomicBool>,
    finished: bool,
}

impl BatchBudget {
    /// `batches` batches, then the flush.
    pub fn batches(batches: u64) -> Self {
        BatchBudget {
            left: Some(batches),
            stop: Arc::default(),
            finished: false,
        }
    }

    /// Batches until `stop` is raised, then the flush.
    pub fn until(stop: Arc<AtomicBool>) -> Self {
        BatchBudget {
            left: None,
            stop,
            finished: false,
        }
    }

    /// The next turn.
    pub fn take_turn(&mut self) -> Turn {
        if self.has_more() {
            if let Some(left) = &mut self.left {
                *left -= 1;
            }
            Turn::Read
        } else if self.finished {
            Turn::Done
        } else {
            self.finished = true;
            Turn::Finish
        }
    }

    /// No more batches (the data ran out): the flush comes next.
    pub fn end(&mut self) {
        self.left = Some(0);
    }

    /// Whether batches remain to be read.
    pub fn has_more(&self) -> bool {
        !self.stop.load(Ordering::SeqCst) && self.left != Some(0)
    }
}
