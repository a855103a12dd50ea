//! The two sides of a post-processing session: the measurer sifts detections as they come and
//! opens blocks; the preparer answers until the measurer finishes.
//!
//! A block that fails (a message lost, altered, replayed or out of place, a failed seal, a
//! peer's abort) yields no key, and neither does any bit sifted since the last seals: both
//! sides forget their pools, the measurer resynchronises the channel, and the session goes on.
//! Every resumption starts with the measurer asking about keys he holds undecided, so a lost
//! word costs no key on one side only. A broken connection, a failed device or a failed store
//! ends the run with an error whose kind says what to do; the session structs keep what must
//! outlive a connection, so [`Measurer::run`] and [`Preparer::run`] can be called again on a
//! new one.

use std::collections::BTreeMap;
use std::future::Future;

use qkd_postprocess::sift::{
    Announcement, Measurements, Preparations, SiftReply, sift_as_measurer, sift_as_preparer,
};

use crate::block::{
    BlockCache, BlockEnd, BlockReport, BlockSettings, Pool, PreparerBlock, SlotSpan, commit,
    measure_block, prepare_block,
};
use crate::channel::{ChannelError, Peer, Transport};
use crate::error::{DataError, ErrorKind, SessionError, Violation};
use crate::events::{Events, NodeEvent};
use crate::keys::KeySink;
use crate::messages::{BlockId, Message};
use crate::randomness::{ProtocolRng, RandomnessError};

/// Resynchronisations tried in a row before the connection is given up.
pub const MAX_RESYNC_ATTEMPTS: u32 = 3;

/// Where the preparer finds what she sent (or measured) in the announced slots.
pub trait PreparationSource: Send {
    /// Her preparations of `announcement`'s slots, in order.
    fn preparations(
        &mut self,
        announcement: &Announcement,
    ) -> impl Future<Output = Result<Preparations, DataError>> + Send;

    /// The timestamps of her next batch (entangled links, where the measurer pairs tags), or
    /// `None` once her tags have ended.
    fn tags(&mut self) -> impl Future<Output = Result<Option<Vec<i64>>, DataError>> + Send {
        async { Err(DataError::NoTimestamps) }
    }
}

/// Where the measurer's results come from, batch by batch.
pub trait MeasurementSource: Send {
    /// The next batch of results, or `None` when the run is over. Entangled links ask the
    /// peer for its timestamps through `peer`.
    fn next_batch<T: Transport>(
        &mut self,
        peer: &mut Peer<T, Message>,
    ) -> impl Future<Output = Result<Option<Measurements>, SessionError>> + Send;

    /// Whether the last batch was measured while key generation was paused (polarization
    /// tracking far from its floor): its bits are then held back from every block.
    fn held(&self) -> bool {
        false
    }

    /// Sees how the last batch was sifted (`None` when it had no detections or its sifting
    /// failed): reference slots feed polarization tracking.
    fn sifted(
        &mut self,
        _measured: &Measurements,
        _reply: Option<&SiftReply>,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Progress of the measurer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeasurerProgress {
    /// Batches processed.
    pub batches: u64,
    /// Blocks ended (with or without key).
    pub blocks: u64,
    /// Detections announced.
    pub detections: u64,
    /// Key-basis bits sifted.
    pub sifted_key_bits: u64,
    /// Secret bits committed.
    pub secret_bits: u64,
    /// Batches measured while key generation was paused.
    pub held_batches: u64,
    /// Key-basis bits those batches would have added, held back from every block.
    pub held_key_bits: u64,
    /// Key-basis bits forgotten because their messages could not be sealed.
    pub discarded_key_bits: u64,
    /// Resynchronisations of the channel after failures.
    pub resyncs: u64,
}

/// Reports of blocks that ended, kept until taken.
#[derive(Debug, Default)]
struct Reports(Vec<BlockReport>);

impl Reports {
    fn record(&mut self, events: &Events, report: BlockReport) {
        events.emit(NodeEvent::Block {
            id: report.id,
            report: Box::new(report.clone()),
        });
        self.0.push(report);
    }

    fn failed(
        &mut self,
        events: &Events,
        id: BlockId,
        slots: Option<SlotSpan>,
        error: &SessionError,
    ) {
        let mut report = BlockReport {
            id: Some(id),
            slots,
            ..BlockReport::default()
        };
        report.abandon(error);
        self.record(events, report);
    }
}

/// The slots of an announced batch (slots are announced in order).
fn span(slots: &[u64]) -> SlotSpan {
    SlotSpan {
        first: slots.first().copied().unwrap_or_default(),
        last: slots.last().copied().unwrap_or_default(),
    }
}

/// The highest of two block numbers.
fn latest(a: Option<BlockId>, b: Option<BlockId>) -> Option<BlockId> {
    a.max(b)
}

/// Bob's side of the link: sifts each batch, runs a block whenever enough key bits wait.
#[derive(Debug)]
pub struct Measurer {
    settings: BlockSettings,
    events: Events,
    pool: Pool,
    cache: BlockCache,
    /// Number of the next block to open, once the preparer has been heard.
    next_block: Option<BlockId>,
    /// Reports of held blocks, until the preparer's word settles them.
    held: BTreeMap<BlockId, BlockReport>,
    reports: Reports,
    progress: MeasurerProgress,
}

impl Measurer {
    /// A measurer running blocks with `settings`, reporting to `events`.
    pub fn new(settings: BlockSettings, events: Events) -> Self {
        Measurer {
            settings,
            events,
            pool: Pool::default(),
            cache: BlockCache::default(),
            next_block: None,
            held: BTreeMap::new(),
            reports: Reports::default(),
            progress: MeasurerProgress::default(),
        }
    }

    /// Progress so far.
    pub fn progress(&self) -> MeasurerProgress {
        self.progress
    }

    /// Reports of the blocks ended since the last call.
    pub fn take_reports(&mut self) -> Vec<BlockReport> {
        std::mem::take(&mut self.reports.0)
    }

    /// Runs until `source` has no more batches, then tells the peer the session is over.
    pub async fn run<T: Transport>(
        &mut self,
        peer: &mut Peer<T, Message>,
        source: &mut impl MeasurementSource,
        sink: &mut impl KeySink,
    ) -> Result<(), SessionError> {
        self.resume(peer, sink).await?;
        loop {
            let measured = match source.next_batch(peer).await {
                Ok(Some(measured)) => measured,
                Ok(None) => break,
                Err(e) => {
                    self.recover(peer, sink, e).await?;
                    continue;
                }
            };
            if let Err(e) = self.batch(peer, source, &measured).await {
                self.recover(peer, sink, e).await?;
                continue;
            }
            self.blocks(peer, sink).await?;
        }
        if !sink.held()?.is_empty() {
            self.resume(peer, sink).await?;
        }
        peer.send(&Message::Finish).await?;
        Ok(())
    }

    /// Announces a batch and sifts it with the preparer's reply.
    async fn batch<T: Transport>(
        &mut self,
        peer: &mut Peer<T, Message>,
        source: &mut impl MeasurementSource,
        measured: &Measurements,
    ) -> Result<(), SessionError> {
        self.progress.batches += 1;
        let held = source.held();
        self.progress.held_batches += u64::from(held);
        if measured.slot.is_empty() {
            source.sifted(measured, None).await;
            self.events.emit(NodeEvent::Batch {
                detections: 0,
                sifted_key_bits: 0,
                held,
            });
            return Ok(());
        }
        self.progress.detections += measured.slot.len() as u64;
        let sifted = async {
            let announcement = measured.announcement();
            peer.send(&if held {
                Message::AnnounceHeld(announcement)
            } else {
                Message::Announce(announcement)
            })
            .await?;
            match peer.recv().await? {
                Message::Sift(reply) => {
                    let sifted = sift_as_measurer(measured, &reply)?;
                    Ok((reply, sifted))
                }
                other => Err(SessionError::from(Violation::unexpected(&other, "Sift"))),
            }
        }
        .await;
        let (reply, sifted) = match sifted {
            Ok(ok) => ok,
            Err(e) => {
                // The tracker is owed this batch's references, even without any.
                source.sifted(measured, None).await;
                return Err(e);
            }
        };
        source.sifted(measured, Some(&reply)).await;
        let bits = sifted.key.len() as u64;
        if held {
            self.progress.held_key_bits += bits;
        } else {
            self.progress.sifted_key_bits += bits;
            self.pool.add(&sifted, span(&measured.slot));
        }
        self.events.emit(NodeEvent::Batch {
            detections: measured.slot.len() as u64,
            sifted_key_bits: if held { 0 } else { bits },
            held,
        });
        Ok(())
    }

    /// Runs blocks while enough key bits wait.
    async fn blocks<T: Transport>(
        &mut self,
        peer: &mut Peer<T, Message>,
        sink: &mut impl KeySink,
    ) -> Result<(), SessionError> {
        while self.pool.key_bits() >= self.settings.block_bits {
            let id = self.next_block.unwrap_or_default();
            self.next_block = Some(id + 1);
            let (block, slots) = self.pool.take_block(self.settings.block_bits);
            let ended = measure_block(peer, &self.settings, &mut self.cache, sink, id, block).await;
            self.progress.blocks += 1;
            match ended.map(|end| end.with_slots(slots)) {
                Ok(BlockEnd::NoKey(report)) => {
                    self.discard_pool();
                    self.reports.record(&self.events, report);
                }
                Ok(BlockEnd::Committed(report)) => {
                    self.progress.secret_bits += report.secret_bits;
                    self.reports.record(&self.events, report);
                }
                Ok(BlockEnd::Held { report, error }) => {
                    self.held.insert(id, report);
                    self.recover(peer, sink, error).await?;
                }
                Err(e) => {
                    self.reports.failed(&self.events, id, slots, &e);
                    self.recover(peer, sink, e).await?;
                }
            }
        }
        Ok(())
    }

    fn discard_pool(&mut self) {
        self.progress.discarded_key_bits += self.pool.key_bits() as u64;
        self.pool.clear();
    }

    /// After a failure of kind [`ErrorKind::Block`]: forget the pool, start the channel over
    /// and resume. Other failures are returned.
    async fn recover<T: Transport>(
        &mut self,
        peer: &mut Peer<T, Message>,
        sink: &mut impl KeySink,
        error: SessionError,
    ) -> Result<(), SessionError> {
        if error.kind() != ErrorKind::Block {
            return Err(error);
        }
        self.discard_pool();
        self.progress.resyncs += 1;
        if !matches!(
            error,
            SessionError::Channel(ChannelError::PeerAborted(_) | ChannelError::Resynchronised(_))
        ) {
            peer.abort(&error.to_string()).await;
        }
        self.events.emit(NodeEvent::Resynchronised {
            reason: error.to_string(),
        });
        self.resume(peer, sink).await
    }

    /// Resynchronises the channel and settles the held keys with the preparer, trying again
    /// a few times before the connection is given up.
    async fn resume<T: Transport>(
        &mut self,
        peer: &mut Peer<T, Message>,
        sink: &mut impl KeySink,
    ) -> Result<(), SessionError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let resumed = async {
                peer.resync().await?;
                self.handshake(peer, sink).await
            }
            .await;
            match resumed {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Block && attempts < MAX_RESYNC_ATTEMPTS => {
                    self.events.emit(NodeEvent::Resynchronised {
                        reason: e.to_string(),
                    });
                }
                Err(e) if e.kind() == ErrorKind::Block => {
                    return Err(ChannelError::Unresponsive { attempts }.into());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Tells the preparer which keys are held and settles them by her sealed answer.
    async fn handshake<T: Transport>(
        &mut self,
        peer: &mut Peer<T, Message>,
        sink: &mut impl KeySink,
    ) -> Result<(), SessionError> {
        let held = sink.held()?;
        let ours = latest(
            sink.last_block()?,
            self.next_block.and_then(|b| b.checked_sub(1)),
        );
        peer.send(&Message::Resume {
            held: held.clone(),
            last_block: ours,
        })
        .await?;
        let (committed, theirs) = match peer.recv().await? {
            Message::Resumed {
                committed,
                last_block,
            } => (committed, last_block),
            other => return Err(Violation::unexpected(&other, "Resumed").into()),
        };
        if !held.is_empty() {
            peer.expect_seal().await?;
        }
        if let Some(&stranger) = committed.iter().find(|b| !held.contains(b)) {
            return Err(Violation::NotHeld(stranger).into());
        }
        for id in held {
            let mut report = self.held.remove(&id).unwrap_or(BlockReport {
                id: Some(id),
                ..BlockReport::default()
            });
            if committed.contains(&id) {
                let key = sink.held_key(id)?.ok_or(Violation::NotHeld(id))?;
                report.secret_bits = commit(peer, sink, id, &key)?;
                self.progress.secret_bits += report.secret_bits;
            } else {
                sink.forget(id)?;
                report.abandon("the preparer did not keep the key");
            }
            self.reports.record(&self.events, report);
        }
        self.next_block = Some(latest(ours, theirs).map_or(0, |b| b + 1));
        Ok(())
    }
}

/// What the handling of one message led to.
enum Step {
    /// Go on.
    Continue,
    /// The measurer finished the session.
    Finished,
}

/// Alice's side of the link: sifts and serves blocks until the measurer finishes.
#[derive(Debug)]
pub struct Preparer {
    settings: BlockSettings,
    events: Events,
    rng: ProtocolRng,
    pool: Pool,
    cache: BlockCache,
    /// The last slot announced: every slot may be announced once, in order.
    last_slot: Option<u64>,
    /// The last block number opened in this process.
    last_block: Option<BlockId>,
    reports: Reports,
}

impl Preparer {
    /// A preparer running blocks with `settings`, reporting to `events`; its hash seeds come
    /// from the operating system.
    pub fn new(settings: BlockSettings, events: Events) -> Result<Self, RandomnessError> {
        Ok(Preparer {
            settings,
            events,
            rng: ProtocolRng::from_os()?,
            pool: Pool::default(),
            cache: BlockCache::default(),
            last_slot: None,
            last_block: None,
            reports: Reports::default(),
        })
    }

    /// Reports of the blocks ended since the last call.
    pub fn take_reports(&mut self) -> Vec<BlockReport> {
        std::mem::take(&mut self.reports.0)
    }

    /// The source follows a new pattern (a new connection): slots count from zero again.
    pub fn new_pattern(&mut self) {
        self.last_slot = None;
    }

    /// Answers until the measurer finishes.
    pub async fn run<T: Transport>(
        &mut self,
        peer: &mut Peer<T, Message>,
        source: &mut impl PreparationSource,
        sink: &mut impl KeySink,
    ) -> Result<(), SessionError> {
        loop {
            let step = match peer.recv().await {
                Ok(message) => self.handle(peer, source, sink, message).await,
                Err(e) => Err(e.into()),
            };
            match step {
                Ok(Step::Continue) => {}
                Ok(Step::Finished) => return Ok(()),
                Err(e) => self.recover(peer, e).await?,
            }
        }
    }

    async fn handle<T: Transport>(
        &mut self,
        peer: &mut Peer<T, Message>,
        source: &mut impl PreparationSource,
        sink: &mut impl KeySink,
        message: Message,
    ) -> Result<Step, SessionError> {
        match message {
            Message::Resume { held, last_block } => {
                let committed = sink.committed_among(&held)?;
                let ours = latest(self.last_block, sink.last_block()?);
                self.last_block = latest(ours, last_block);
                peer.send(&Message::Resumed {
                    committed,
                    last_block: ours,
                })
                .await?;
                if !held.is_empty() {
                    peer.send_seal().await?;
                }
            }
            Message::Announce(ref announcement) | Message::AnnounceHeld(ref announcement) => {
                self.check_order(announcement)?;
                let prepared = source.preparations(announcement).await?;
                let (reply, sifted) = sift_as_preparer(announcement, &prepared)?;
                if matches!(message, Message::Announce(_)) {
                    self.pool.add(&sifted, span(&announcement.slot));
                }
                peer.send(&Message::Sift(reply)).await?;
            }
            Message::OpenBlock { block, test_bits } => {
                if let Some(last) = latest(self.last_block, sink.last_block()?)
                    && block <= last
                {
                    return Err(Violation::BlockNumber { got: block, last }.into());
                }
                self.last_block = Some(block);
                let n = self.settings.block_bits;
                if self.pool.key_bits() < n {
                    return Err(Violation::Unexpected {
                        got: "OpenBlock",
                        wanted: "more key bits before a block",
                    }
                    .into());
                }
                let (sifted, slots) = self.pool.take_block(n);
                let run = PreparerBlock {
                    settings: &self.settings,
                    cache: &mut self.cache,
                    rng: &mut self.rng,
                };
                let ended = prepare_block(peer, run, sink, block, &sifted, &test_bits).await;
                match ended.map(|end| end.with_slots(slots)) {
                    Ok(BlockEnd::NoKey(report)) => {
                        self.pool.clear();
                        self.reports.record(&self.events, report);
                    }
                    Ok(BlockEnd::Committed(report) | BlockEnd::Held { report, .. }) => {
                        self.reports.record(&self.events, report);
                    }
                    Err(e) => {
                        self.reports.failed(&self.events, block, slots, &e);
                        return Err(e);
                    }
                }
            }
            Message::RequestTags => {
                let reply = match source.tags().await? {
                    Some(times) => Message::Tags(times),
                    None => Message::TagsEnded,
                };
                peer.send(&reply).await?;
            }
            Message::Finish => return Ok(Step::Finished),
            other => return Err(Violation::unexpected(&other, "a measurer's message").into()),
        }
        Ok(Step::Continue)
    }

    /// Refuses a slot announced twice or out of order.
    fn check_order(&mut self, announcement: &Announcement) -> Result<(), Violation> {
        for &slot in &announcement.slot {
            if let Some(after) = self.last_slot
                && slot <= after
            {
                return Err(Violation::SlotOrder { slot, after });
            }
            self.last_slot = Some(slot);
        }
        Ok(())
    }

    /// After a failure of kind [`ErrorKind::Block`]: forget the pool, tell the measurer (unless
    /// it was his doing) and wait for him to start the channel over. Other failures are
    /// returned.
    async fn recover<T: Transport>(
        &mut self,
        peer: &mut Peer<T, Message>,
        error: SessionError,
    ) -> Result<(), SessionError> {
        if error.kind() != ErrorKind::Block {
            return Err(error);
        }
        self.pool.clear();
        self.events.emit(NodeEvent::Resynchronised {
            reason: error.to_string(),
        });
        match error {
            SessionError::Channel(ChannelError::Resynchronised(_)) => Ok(()),
            SessionError::Channel(ChannelError::PeerAborted(_)) => Ok(peer.await_resync().await?),
            other => {
                peer.abort(&other.to_string()).await;
                Ok(peer.await_resync().await?)
            }
        }
    }
}
