//! Decoy-state BB84: Alice answers for her slots from the pattern she had her source follow (or,
//! for a source that draws its own choices, from its records); Bob's tagger batches go through
//! slot recovery, and his double clicks are squashed.

use std::time::{Duration, Instant};

use qkd_drivers::{EmissionRecords, SourceError, TagBatch, TimeTagger, WcpSource};
use qkd_postprocess::sift::{Announcement, Measurements, Preparations, SiftReply, squash};
use qkd_postprocess::slots::{Detections, SlotRecovery, SlotStats};
use qkd_units::Picoseconds;
use qkd_units::pattern::{KEY_BYTES, PatternKey, SlotPattern};
use rand::TryRng;
use rand::rngs::SysRng;
use zeroize::Zeroize;

use super::{BatchBudget, Turn};
use crate::channel::{Peer, Transport};
use crate::error::{DataError, SessionError};
use crate::messages::Message;
use crate::randomness::{ProtocolRng, RandomnessError};
use crate::session::{MeasurementSource, PreparationSource};
use crate::tracking::{LinkTracking, TrackingFailure};

/// Alice's choices from a pattern key she drew and handed to her source: she evaluates the same
/// function the source follows, for the announced slots only.
#[derive(Debug)]
pub struct PatternRecords {
    pattern: SlotPattern,
    /// With a source paced by the wall clock: when its pattern started, and its rate, to refuse
    /// slots it cannot have emitted yet.
    horizon: Option<(Instant, f64)>,
}

impl PatternRecords {
    /// Draws a key from the operating system, hands it to `source` and answers from it.
    pub async fn start(source: &mut impl WcpSource) -> Result<Self, PatternError> {
        let mut bytes = [0u8; KEY_BYTES];
        SysRng.try_fill_bytes(&mut bytes).map_err(RandomnessError)?;
        let key = PatternKey::from_bytes(bytes);
        bytes.zeroize();
        source.start_pattern(&key).await?;
        Ok(PatternRecords {
            pattern: SlotPattern::keyed(&key, source.settings().pattern_shares()),
            horizon: None,
        })
    }

    /// Refuses slots beyond what a source at `rate_hz` can have emitted since now (for sources
    /// that run in real time; an emulation run as fast as possible would outrun the clock).
    #[must_use]
    pub fn paced(mut self, rate_hz: f64) -> Self {
        self.horizon = Some((Instant::now(), rate_hz));
        self
    }
}

/// Why a pattern could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// No randomness from the operating system for the pattern key.
    #[error("the pattern key: {0}")]
    Randomness(#[from] RandomnessError),
    /// The source refused.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// Slots a paced source may be ahead of the node's clock by (its clock, the tagger's buffer).
const HORIZON_SLACK_S: f64 = 1.0;

impl PreparationSource for PatternRecords {
    async fn preparations(
        &mut self,
        announcement: &Announcement,
    ) -> Result<Preparations, DataError> {
        if let (Some((started, rate)), Some(&last)) = (self.horizon, announcement.slot.last()) {
            let emitted = ((started.elapsed().as_secs_f64() + HORIZON_SLACK_S) * rate) as u64;
            if last >= emitted {
                return Err(SourceError::NotEmitted {
                    slot: last,
                    emitted,
                }
                .into());
            }
        }
        let n = announcement.slot.len();
        let mut out = Preparations {
            basis: Vec::with_capacity(n),
            bit: Vec::with_capacity(n),
            class: Vec::with_capacity(n),
            reference: Vec::with_capacity(n),
        };
        for &slot in &announcement.slot {
            let choice = self.pattern.choice(slot);
            out.basis.push(choice.basis);
            out.bit.push(choice.bit);
            out.class.push(choice.intensity);
            out.reference.push(choice.reference);
        }
        Ok(out)
    }
}

/// Alice's records of the announced slots, from a source that draws its own choices and keeps
/// them.
#[derive(Debug)]
pub struct SourceRecords<S> {
    source: S,
    records: EmissionRecords,
}

impl<S: WcpSource> SourceRecords<S> {
    /// Answers from `source`'s records.
    pub fn new(source: S) -> Self {
        SourceRecords {
            source,
            records: EmissionRecords::default(),
        }
    }
}

impl<S: WcpSource> PreparationSource for SourceRecords<S> {
    async fn preparations(
        &mut self,
        announcement: &Announcement,
    ) -> Result<Preparations, DataError> {
        self.records.clear();
        self.source
            .emissions(&announcement.slot, &mut self.records)
            .await?;
        let r = &self.records;
        Ok(Preparations {
            basis: r.basis.clone(),
            bit: r.bit.clone(),
            class: r.intensity.clone(),
            reference: r.reference.clone(),
        })
    }
}

/// Bob's results: tagger batches through slot recovery, double clicks squashed.
#[derive(Debug)]
pub struct TaggedDetections<T> {
    tagger: T,
    slots: SlotRecovery,
    batch: TagBatch,
    detections: Detections,
    budget: BatchBudget,
    /// Decides Bob's bit on double clicks in the key basis: unpredictable, from the system.
    coin: ProtocolRng,
    /// Bob's polarization tracking, when the node runs it.
    tracking: Option<LinkTracking>,
    /// The last batch was read while tracking had paused key generation.
    held: bool,
    /// The latest tag time read, and the link time the last batch covered (from the tags).
    last_tag_ps: Option<i64>,
    covered: Duration,
}

impl<T: TimeTagger> TaggedDetections<T> {
    /// Reads `tagger` through `slots` for as long as `budget` allows; `coin` squashes double
    /// clicks.
    pub fn new(tagger: T, slots: SlotRecovery, budget: BatchBudget, coin: ProtocolRng) -> Self {
        TaggedDetections {
            tagger,
            slots,
            batch: TagBatch::default(),
            detections: Detections::default(),
            budget,
            coin,
            tracking: None,
            held: false,
            last_tag_ps: None,
            covered: Duration::ZERO,
        }
    }

    /// Runs polarization tracking beside the batches, in lock step with them.
    #[must_use]
    pub fn with_tracking(mut self, tracking: LinkTracking) -> Self {
        self.tracking = Some(tracking);
        self
    }

    /// What slot recovery counted.
    pub fn slot_stats(&self) -> &SlotStats {
        self.slots.stats()
    }

    /// Takes the tracking back (to finish it) once the session is over.
    pub fn take_tracking(&mut self) -> Option<LinkTracking> {
        self.tracking.take()
    }

    /// Tagger time from the previous batch's last tag to this one's (from its first tag, for
    /// the first batch).
    fn covered_by_batch(&mut self) -> Duration {
        let (Some(&first), Some(&last)) = (self.batch.time_ps.first(), self.batch.time_ps.last())
        else {
            return Duration::ZERO;
        };
        let from = self.last_tag_ps.unwrap_or(first);
        self.last_tag_ps = Some(last);
        Picoseconds(last.saturating_sub(from)).to_duration()
    }

    fn squash(&mut self) -> Measurements {
        let coin = &mut self.coin;
        let measured = squash(&self.detections, || coin.coin());
        self.detections.clear();
        measured
    }
}

impl<T: TimeTagger> MeasurementSource for TaggedDetections<T> {
    async fn next_batch<P: Transport>(
        &mut self,
        _peer: &mut Peer<P, Message>,
    ) -> Result<Option<Measurements>, SessionError> {
        match self.budget.take_turn() {
            Turn::Done => return Ok(None),
            Turn::Finish => {
                self.slots.finish(&mut self.detections);
                return Ok(Some(self.squash()));
            }
            Turn::Read => {}
        }
        if let Some(tracking) = self.tracking.as_mut() {
            if !tracking.ready().await {
                // Without a tracker every later batch would be held: end the session with why
                // it stopped, for the node to start tracking again.
                let failure = match self.tracking.take() {
                    Some(stopped) => stopped.finish().await.err(),
                    None => None,
                };
                return Err(failure.unwrap_or(TrackingFailure::Stopped).into());
            }
            self.held = tracking.paused();
        }
        self.tagger
            .read(&mut self.batch)
            .await
            .map_err(DataError::from)?;
        self.covered = self.covered_by_batch();
        self.slots.process(
            &self.batch.time_ps,
            &self.batch.channel,
            &mut self.detections,
        );
        Ok(Some(self.squash()))
    }

    fn held(&self) -> bool {
        self.held
    }

    async fn sifted(&mut self, measured: &Measurements, reply: Option<&SiftReply>) {
        if let Some(tracking) = self.tracking.as_mut() {
            tracking.feed(measured, reply, self.covered).await;
        }
    }
}
