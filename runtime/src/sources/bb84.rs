//! Decoy-state BB84: Alice answers for her slots from her source's records; Bob's tagger batches
//! go through slot recovery, and his double clicks are squashed.

use qkd_drivers::{EmissionRecords, TagBatch, TimeTagger, WcpSource};
use qkd_postprocess::sift::{Announcement, Measurements, Preparations, SiftReply, squash};
use qkd_postprocess::slots::{Detections, SlotRecovery, SlotStats};

use super::{BatchBudget, Turn};
use crate::channel::{Peer, Transport};
use crate::error::{DataError, SessionError};
use crate::messages::Message;
use crate::randomness::ProtocolRng;
use crate::session::{MeasurementSource, PreparationSource};
use crate::tracking::LinkTracking;

/// Alice's records of the announced slots, from her source.
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
            // A tracker that has stopped holds every later batch; `finish` says why it stopped.
            self.held = !tracking.ready().await || tracking.paused();
        }
        self.tagger
            .read(&mut self.batch)
            .await
            .map_err(DataError::from)?;
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
            tracking.feed(measured, reply).await;
        }
    }
}
