//! BBM92 with a free-running tagger at each node. Node A pairs its tags with node B's
//! timestamps, which B sends over the authenticated channel (its channels, which carry its bits,
//! never leave it): the offset between the two clocks is found from the first batches without
//! prior knowledge, then followed as the clocks drift. A announces pairs by B's tag index with its
//! own bases; B answers from its tags.
//!
//! Either tagger may end (a replayed recording at its end): A then flushes what it holds and
//! finishes the session; B tells A that her tags have ended, which ends it the same way.

use qkd_drivers::{TagBatch, TaggerError, TimeTagger};
use qkd_postprocess::coincidence::{CoincidenceTracker, OffsetSearch, Pairs, find_offset};
use qkd_postprocess::sift::{Announcement, Basis, Measurements, Preparations};

use super::{BatchBudget, Turn};
use crate::channel::{Peer, Transport};
use crate::error::{DataError, SessionError, Violation};
use crate::messages::Message;
use crate::session::{MeasurementSource, PreparationSource};

/// Coincidence window, full width.
const WINDOW_PS: i64 = 400;
/// Batches in which both streams have tags, gathered before the offset search.
const SEARCH_BATCHES: usize = 10;
/// Most tags gathered while waiting for the streams to overlap in time.
const MAX_GATHERED_TAGS: usize = 1 << 23;
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

    /// The tagger back, to go on reading it in the next session.
    pub fn into_tagger(self) -> T {
        self.tagger
    }
}

/// The tags of the next batch; `None` once the tagger has ended.
async fn read_until_end<T: TimeTagger>(
    tagger: &mut T,
    batch: &mut TagBatch,
) -> Result<bool, DataError> {
    match tagger.read(batch).await {
        Ok(()) => Ok(true),
        Err(TaggerError::EndOfRecording {}) => Ok(false),
        Err(e) => Err(e.into()),
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

    async fn tags(&mut self) -> Result<Option<Vec<i64>>, DataError> {
        if !read_until_end(&mut self.tagger, &mut self.batch).await? {
            return Ok(None);
        }
        self.channels.extend_from_slice(&self.batch.channel);
        Ok(Some(self.batch.time_ps.clone()))
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
    /// Tags of each stream dropped before the search for want of a partner.
    dropped: [u64; 2],
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
            dropped: [0; 2],
            tracker: None,
            pairs: Pairs::default(),
        }
    }

    /// The tagger back, to go on reading it in the next session.
    pub fn into_tagger(self) -> T {
        self.tagger
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
        let search = OffsetSearch::default();
        self.gathered[0].extend_from_slice(a_times);
        self.gathered_channels.extend_from_slice(a_channels);
        self.gathered[1].extend_from_slice(b_times);
        self.drop_unpartnered(search.max_offset_ps);
        let [a, b] = &self.gathered;
        if !a.is_empty() && !b.is_empty() {
            self.gathered_batches += 1;
        }
        if a.len() + b.len() > MAX_GATHERED_TAGS {
            return Err(DataError::NoOverlap {
                tags: MAX_GATHERED_TAGS,
            });
        }
        if self.gathered_batches < SEARCH_BATCHES && self.budget.has_more() {
            return Ok(());
        }
        let [a, b] = std::mem::take(&mut self.gathered);
        let estimate = find_offset(&a, &b, &search)?;
        let mut tracker = CoincidenceTracker::new(estimate.model, WINDOW_PS)
            .numbered_from(self.dropped[0], self.dropped[1]);
        let channels = std::mem::take(&mut self.gathered_channels);
        tracker.process(&a, &channels, &b, &vec![0; b.len()], &mut self.pairs);
        self.tracker = Some(tracker);
        Ok(())
    }

    /// Drops the gathered tags of each stream that come before the other stream's first by
    /// more than any offset: the two taggers (or recordings) started at different times, and
    /// those tags have no partner. The stream that started later is kept whole.
    fn drop_unpartnered(&mut self, max_offset_ps: i64) {
        let [a, b] = &mut self.gathered;
        let (Some(&a_first), Some(&b_first)) = (a.first(), b.first()) else {
            return;
        };
        let early_b = b.partition_point(|&t| t < a_first.saturating_sub(max_offset_ps));
        let early_a = a.partition_point(|&t| t < b_first.saturating_sub(max_offset_ps));
        b.drain(..early_b);
        a.drain(..early_a);
        self.gathered_channels.drain(..early_a);
        self.dropped[0] += early_a as u64;
        self.dropped[1] += early_b as u64;
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
        if !read_until_end(&mut self.tagger, &mut self.batch).await? {
            self.budget.end();
            return Ok(Some(self.measurements()));
        }
        peer.send(&Message::RequestTags).await?;
        let b_times = match peer.recv().await? {
            Message::Tags(times) => times,
            Message::TagsEnded => {
                // This batch has nothing left to pair with.
                self.budget.end();
                return Ok(Some(self.measurements()));
            }
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
