//! BBM92 with a free-running tagger at each node. Node A pairs its tags with node B's
//! timestamps, which B sends over the authenticated channel (its channels, which carry its bits,
//! never leave it): the offset between the two clocks is found from the first batches without
//! prior knowledge, then followed as the clocks drift. A announces pairs by B's tag index with its
//! own bases; B answers from its tags.

use qkd_drivers::{TagBatch, TimeTagger};
use qkd_postprocess::coincidence::{CoincidenceTracker, OffsetSearch, Pairs, find_offset};
use qkd_postprocess::sift::{Announcement, Basis, Measurements, Preparations};

use super::{BatchBudget, Turn};
use crate::channel::{Peer, Transport};
use crate::error::{DataError, SessionError, Violation};
use crate::messages::Message;
use crate::session::{MeasurementSource, PreparationSource};

/// Coincidence window, full width.
const WINDOW_PS: i64 = 400;
/// Batches gathered before the offset search.
const SEARCH_BATCHES: usize = 10;
/// Node B keeps its tags this far behind the latest announcement.
const B_RETAIN_TAGS: u64 = 1 << 20;

/// Basis and bit of a detector channel (1 = H, 2 = V, 3 = D, 4 = A).
fn outcome(channel: u8) -> Option<(Basis, u8)> {
    qkd_units::bb84::state(usize::from(channel).checked_sub(1)?)
}

/// Node B: its tagger, and its tags kept by stream index until announced.
#[derive(Debug)]
pub struct NodeB<T> {
    tagger: T,
    batch: TagBatch,
    channels: Vec<u8>,
    first_index: u64,
}

impl<T: TimeTagger> NodeB<T> {
    /// Node B reading `tagger`.
    pub fn new(tagger: T) -> Self {
        NodeB {
            tagger,
            batch: TagBatch::default(),
            channels: Vec::new(),
            first_index: 0,
        }
    }
}

impl<T: TimeTagger> PreparationSource for NodeB<T> {
    async fn preparations(
        &mut self,
        announcement: &Announcement,
    ) -> Result<Preparations, DataError> {
        let mut out = Preparations::default();
        for &index in &announcement.slot {
            let channel = index
                .checked_sub(self.first_index)
                .and_then(|i| self.channels.get(usize::try_from(i).ok()?))
                .copied()
                .ok_or(DataError::TagNotHeld(index))?;
            let (basis, bit) =
                outcome(channel).ok_or(DataError::NotADetector { index, channel })?;
            out.basis.push(basis);
            out.bit.push(bit);
            out.class.push(0);
            out.reference.push(false);
        }
        if let Some(&first) = announcement.slot.first() {
            let keep_from = first.saturating_sub(B_RETAIN_TAGS).max(self.first_index);
            let drop = (keep_from - self.first_index) as usize;
            self.channels.drain(..drop.min(self.channels.len()));
            self.first_index = keep_from;
        }
        Ok(out)
    }

    async fn tags(&mut self) -> Result<Vec<i64>, DataError> {
        self.tagger.read(&mut self.batch).await?;
        self.channels.extend_from_slice(&self.batch.channel);
        Ok(self.batch.time_ps.clone())
    }
}

/// Node A: its tagger, B's timestamps from the channel, and the coincidence search.
#[derive(Debug)]
pub struct NodeA<T> {
    tagger: T,
    batch: TagBatch,
    budget: BatchBudget,
    /// Both streams until the offset is known.
    gathered: [Vec<i64>; 2],
    gathered_channels: Vec<u8>,
    gathered_batches: usize,
    tracker: Option<CoincidenceTracker>,
    pairs: Pairs,
}

impl<T: TimeTagger> NodeA<T> {
    /// Node A reading `tagger` for as long as `budget` allows.
    pub fn new(tagger: T, budget: BatchBudget) -> Self {
        NodeA {
            tagger,
            batch: TagBatch::default(),
            budget,
            gathered: [Vec::new(), Vec::new()],
            gathered_channels: Vec::new(),
            gathered_batches: 0,
            tracker: None,
            pairs: Pairs::default(),
        }
    }

    fn measurements(&mut self) -> Measurements {
        let mut out = Measurements::default();
        for (&b_index, &channel) in self.pairs.b_index.iter().zip(&self.pairs.a_channel) {
            if let Some((basis, bit)) = outcome(channel) {
                out.slot.push(b_index);
                out.basis.push(basis);
                out.bit.push(bit);
            }
        }
        self.pairs.clear();
        out
    }

    fn pair(
        &mut self,
        a_times: &[i64],
        a_channels: &[u8],
        b_times: &[i64],
    ) -> Result<(), DataError> {
        if let Some(tracker) = &mut self.tracker {
            tracker.process(
                a_times,
                a_channels,
                b_times,
                &vec![0; b_times.len()],
                &mut self.pairs,
            );
            return Ok(());
        }
        self.gathered[0].extend_from_slice(a_times);
        self.gathered_channels.extend_from_slice(a_channels);
        self.gathered[1].extend_from_slice(b_times);
        self.gathered_batches += 1;
        if self.gathered_batches < SEARCH_BATCHES && self.budget.has_more() {
            return Ok(());
        }
        let [a, b] = std::mem::take(&mut self.gathered);
        let estimate = find_offset(&a, &b, &OffsetSearch::default())?;
        let mut tracker = CoincidenceTracker::new(estimate.model, WINDOW_PS);
        let channels = std::mem::take(&mut self.gathered_channels);
        tracker.process(&a, &channels, &b, &vec![0; b.len()], &mut self.pairs);
        self.tracker = Some(tracker);
        Ok(())
    }
}

impl<T: TimeTagger> MeasurementSource for NodeA<T> {
    async fn next_batch<P: Transport>(
        &mut self,
        peer: &mut Peer<P, Message>,
    ) -> Result<Option<Measurements>, SessionError> {
        match self.budget.take_turn() {
            Turn::Done => return Ok(None),
            Turn::Finish => {
                if let Some(tracker) = &mut self.tracker {
                    tracker.finish(&mut self.pairs);
                }
                return Ok(Some(self.measurements()));
            }
            Turn::Read => {}
        }
        self.tagger
            .read(&mut self.batch)
            .await
            .map_err(DataError::from)?;
        peer.send(&Message::RequestTags).await?;
        let b_times = match peer.recv().await? {
            Message::Tags(times) => times,
            other => return Err(Violation::unexpected(&other, "Tags").into()),
        };
        // Lend the batch out instead of copying it while `pair` borrows the rest of the node.
        let batch = std::mem::take(&mut self.batch);
        let paired = self.pair(&batch.time_ps, &batch.channel, &b_times);
        self.batch = batch;
        paired?;
        Ok(Some(self.measurements()))
    }
}
