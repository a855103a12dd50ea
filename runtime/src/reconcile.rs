//! Error correction behind one seam: each side of a block runs a [`Reconciler`], a state machine
//! without I/O that says what to send and takes what arrives, until both are done. The session
//! drives any of them with the same loop, and reads from each the bits it disclosed (the leakage
//! ledger the key length is computed from).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use qkd_postprocess::bits::Bits;
use qkd_postprocess::cascade::{
    CascadeError, CascadePlan, Corrector, ParityAnswer, ParityQuery, ParityResponder, Shuffles,
};
use serde::{Deserialize, Serialize};

/// Public seed of the Cascade shuffles (they need not be secret, only fixed in advance).
const SHUFFLE_SEED: u64 = 0x5EED_CA5C_ADE0_0001;

/// How a link reconciles its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reconciliation {
    /// Interactive Cascade: the measurer asks for parities, the preparer answers.
    #[default]
    Cascade,
}

/// Error-correction traffic, either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReconcileMessage {
    /// Cascade: the measurer's parity questions.
    CascadeQuery(ParityQuery),
    /// Cascade: the preparer's answers.
    CascadeAnswer(ParityAnswer),
    /// The measurer has finished correcting.
    Done,
}

impl ReconcileMessage {
    fn name(&self) -> &'static str {
        match self {
            ReconcileMessage::CascadeQuery(_) => "CascadeQuery",
            ReconcileMessage::CascadeAnswer(_) => "CascadeAnswer",
            ReconcileMessage::Done => "Done",
        }
    }
}

/// A reconciliation that cannot go on: the peer sent something that does not belong to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// Cascade refused the message.
    #[error(transparent)]
    Cascade(#[from] CascadeError),
    /// A message this side does not expect now.
    #[error("reconciliation: {got} arrived where this side expects none")]
    Unexpected {
        /// What arrived.
        got: &'static str,
    },
}

/// What one side's reconciliation of a block cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Bits of information about the key disclosed (both sides count the same).
    pub disclosed_bits: u64,
    /// Round trips.
    pub round_trips: u32,
    /// Bits the measurer corrected (0 on the preparer's side).
    pub corrected_bits: u64,
}

/// One side's reconciliation of one block, as a state machine without I/O.
pub trait Reconciler: Send {
    /// The next message this side sends now, if any.
    fn outgoing(&mut self) -> Option<ReconcileMessage>;
    /// Takes a message from the peer.
    fn incoming(&mut self, message: ReconcileMessage) -> Result<(), ReconcileError>;
    /// This side has nothing more to send or wait for.
    fn is_done(&self) -> bool;
    /// What it cost so far.
    fn report(&self) -> ReconcileReport;
    /// The measurer's corrected key (`None` on the preparer's side, whose key is the
    /// reference), and the cost.
    fn finish(self: Box<Self>) -> (Option<Bits>, ReconcileReport);
}

/// What reconciliations of a session share: Cascade shuffles, drawn once per key length, the
/// latest plan kept so the next block's reuses what it can.
#[derive(Debug, Default)]
pub struct ReconcileCache {
    shuffles: HashMap<usize, Shuffles>,
}

impl ReconcileCache {
    fn shuffles(&mut self, n: usize, plan: &CascadePlan) -> Result<&Shuffles, CascadeError> {
        match self.shuffles.entry(n) {
            Entry::Occupied(mut held) => {
                if held.get().block_sizes() != plan.block_sizes.as_slice() {
                    let replanned = held.get().replan(plan)?;
                    held.insert(replanned);
                }
                Ok(held.into_mut())
            }
            Entry::Vacant(free) => Ok(free.insert(Shuffles::new(n, plan, SHUFFLE_SEED)?)),
        }
    }
}

impl Reconciliation {
    /// The measurer's side for `key`, at the block's estimated error rate.
    pub fn measurer<'a>(
        self,
        key: Bits,
        qber: f64,
        cache: &'a mut ReconcileCache,
    ) -> Result<Box<dyn Reconciler + 'a>, ReconcileError> {
        match self {
            Reconciliation::Cascade => {
                let plan = CascadePlan::for_qber(key.len(), qber);
                let shuffles = cache.shuffles(key.len(), &plan)?;
                Ok(Box::new(CascadeMeasurer {
                    corrector: Corrector::new(key, shuffles)?,
                    awaiting: false,
                    done_sent: false,
                }))
            }
        }
    }

    /// The preparer's side for her `key`, at the same estimated error rate.
    pub fn preparer<'a>(
        self,
        key: &'a Bits,
        qber: f64,
        cache: &'a mut ReconcileCache,
    ) -> Result<Box<dyn Reconciler + 'a>, ReconcileError> {
        match self {
            Reconciliation::Cascade => {
                let plan = CascadePlan::for_qber(key.len(), qber);
                let shuffles = cache.shuffles(key.len(), &plan)?;
                Ok(Box::new(CascadePreparer {
                    responder: ParityResponder::new(key, shuffles)?,
                    answer: None,
                    round_trips: 0,
                    done: false,
                }))
            }
        }
    }
}

/// Cascade at the measurer: one round of questions in flight at a time, then `Done`.
struct CascadeMeasurer<'a> {
    corrector: Corrector<'a>,
    awaiting: bool,
    done_sent: bool,
}

impl Reconciler for CascadeMeasurer<'_> {
    fn outgoing(&mut self) -> Option<ReconcileMessage> {
        if self.awaiting || self.done_sent {
            return None;
        }
        if let Some(query) = self.corrector.next_query() {
            self.awaiting = true;
            Some(ReconcileMessage::CascadeQuery(query))
        } else {
            self.done_sent = true;
            Some(ReconcileMessage::Done)
        }
    }

    fn incoming(&mut self, message: ReconcileMessage) -> Result<(), ReconcileError> {
        match message {
            ReconcileMessage::CascadeAnswer(answer) if self.awaiting => {
                self.awaiting = false;
                Ok(self.corrector.absorb(&answer)?)
            }
            other => Err(ReconcileError::Unexpected { got: other.name() }),
        }
    }

    fn is_done(&self) -> bool {
        self.done_sent
    }

    fn report(&self) -> ReconcileReport {
        let cascade = self.corrector.report();
        ReconcileReport {
            disclosed_bits: cascade.disclosed_bits,
            round_trips: cascade.round_trips,
            corrected_bits: cascade.corrected,
        }
    }

    fn finish(self: Box<Self>) -> (Option<Bits>, ReconcileReport) {
        let report = self.report();
        (Some(self.corrector.finish().0), report)
    }
}

/// Cascade at the preparer: answers each round until the measurer is done.
struct CascadePreparer<'a> {
    responder: ParityResponder<'a>,
    answer: Option<ParityAnswer>,
    round_trips: u32,
    done: bool,
}

impl Reconciler for CascadePreparer<'_> {
    fn outgoing(&mut self) -> Option<ReconcileMessage> {
        self.answer.take().map(ReconcileMessage::CascadeAnswer)
    }

    fn incoming(&mut self, message: ReconcileMessage) -> Result<(), ReconcileError> {
        match message {
            ReconcileMessage::CascadeQuery(query) if !self.done && self.answer.is_none() => {
                self.answer = Some(self.responder.answer(&query)?);
                self.round_trips += 1;
                Ok(())
            }
            ReconcileMessage::Done if !self.done && self.answer.is_none() => {
                self.done = true;
                Ok(())
            }
            other => Err(ReconcileError::Unexpected { got: other.name() }),
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn report(&self) -> ReconcileReport {
        ReconcileReport {
            disclosed_bits: self.responder.disclosed(),
            round_trips: self.round_trips,
            corrected_bits: 0,
        }
    }

    fn finish(self: Box<Self>) -> (Option<Bits>, ReconcileReport) {
        (None, self.report())
    }
}
