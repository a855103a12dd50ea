//! The two sides of a post-processing session: the measurer sifts detections as they come and
//! opens blocks; the preparer answers until the measurer finishes. A block that fails (a
//! protocol violation, a failed seal, a peer's abort) yields no key and the session goes on;
//! only a broken transport ends it.

use std::future::Future;

use qkd_postprocess::sift::{
    Announcement, Measurements, Preparations, SiftReply, sift_as_measurer, sift_as_preparer,
};
use rand::Rng;

use crate::block::{
    BlockCache, BlockOutcome, BlockReport, BlockSettings, Pool, measure_block, prepare_block,
};
use crate::channel::{ChannelError, Peer, Transport};
use crate::messages::Message;

/// Where the preparer finds what she sent (or measured) in the announced slots.
pub trait PreparationSource: Send {
    /// Her preparations of `announcement`'s slots, in order.
    fn preparations(
        &mut self,
        announcement: &Announcement,
    ) -> impl Future<Output = Result<Preparations, String>> + Send;

    /// The timestamps of her next batch (entangled links, where the measurer pairs tags).
    fn tags(&mut self) -> impl Future<Output = Result<Vec<i64>, String>> + Send {
        async { Err("this link has no timestamps to share".to_owned()) }
    }
}

/// Where the measurer's results come from, batch by batch.
pub trait MeasurementSource: Send {
    /// The next batch of results, or `None` when the run is over. Entangled links ask the
    /// peer for its timestamps through `peer`.
    fn next_batch<T: Transport>(
        &mut self,
        peer: &mut Peer<T>,
    ) -> impl Future<Output = Result<Option<Measurements>, ChannelError>> + Send;

    /// Whether the last batch was measured while key generation was paused (polarization
    /// tracking far from its floor): its bits are then held back from every block.
    fn held(&self) -> bool {
        false
    }

    /// Sees how the last batch was sifted (`None` when it had no detections): reference slots
    /// feed polarization tracking.
    fn sifted(
        &mut self,
        _measured: &Measurements,
        _reply: Option<&SiftReply>,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Records a failed block and tells the peer (best effort).
async fn abandon<T: Transport>(
    peer: &mut Peer<T>,
    error: &ChannelError,
    outcomes: &mut Vec<BlockOutcome>,
) {
    if !matches!(error, ChannelError::PeerAborted(_)) {
        peer.abort(&error.to_string()).await;
    }
    peer.discard_transcripts();
    outcomes.push(BlockOutcome::abandoned(
        BlockReport::default(),
        error.to_string(),
    ));
}

/// Alice's session: sift and serve blocks until the measurer finishes.
pub async fn run_preparer<T: Transport>(
    peer: &mut Peer<T>,
    records: &mut impl PreparationSource,
    settings: &BlockSettings,
    rng: &mut (impl Rng + Send),
) -> Result<Vec<BlockOutcome>, ChannelError> {
    let mut pool = Pool::default();
    let mut cache = BlockCache::default();
    let mut outcomes = Vec::new();
    loop {
        let message = match peer.recv().await {
            Ok(m) => m,
            Err(e @ ChannelError::Transport(_)) => return Err(e),
            Err(e) => {
                abandon(peer, &e, &mut outcomes).await;
                continue;
            }
        };
        match message {
            Message::Announce(ref announcement) | Message::AnnounceHeld(ref announcement) => {
                let held = matches!(message, Message::AnnounceHeld(_));
                let prepared = records
                    .preparations(announcement)
                    .await
                    .map_err(ChannelError::Protocol)?;
                let (reply, sifted) =
                    sift_as_preparer(announcement, &prepared).map_err(ChannelError::protocol)?;
                if !held {
                    pool.add(&sifted);
                }
                peer.send(&Message::Sift(reply)).await?;
            }
            Message::OpenBlock { test_bits, .. } => {
                let block = pool.take_block(settings.block_bits);
                match prepare_block(peer, settings, &block, &test_bits, &mut cache, rng).await {
                    Ok(outcome) => outcomes.push(outcome),
                    Err(e @ ChannelError::Transport(_)) => return Err(e),
                    Err(e) => abandon(peer, &e, &mut outcomes).await,
                }
            }
            Message::RequestTags => {
                let times = records.tags().await.map_err(ChannelError::Protocol)?;
                peer.send(&Message::Tags(times)).await?;
            }
            Message::Finish => return Ok(outcomes),
            other => {
                let e =
                    ChannelError::Protocol(format!("unexpected {} between blocks", other.name()));
                abandon(peer, &e, &mut outcomes).await;
            }
        }
    }
}

/// Progress of the measurer, reported after every batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeasurerProgress {
    /// Batches processed.
    pub batches: u64,
    /// Blocks finished (with or without key).
    pub blocks: u64,
    /// Detections announced.
    pub detections: u64,
    /// Key-basis bits sifted.
    pub sifted_key_bits: u64,
    /// Secret bits delivered.
    pub secret_bits: u64,
    /// Batches measured while key generation was paused.
    pub held_batches: u64,
    /// Key-basis bits those batches would have added, held back from every block.
    pub held_key_bits: u64,
}

/// Bob's session: sift each batch, run a block whenever enough key bits wait. Returns the
/// blocks' outcomes and the final progress figures.
pub async fn run_measurer<T: Transport>(
    peer: &mut Peer<T>,
    results: &mut impl MeasurementSource,
    settings: &BlockSettings,
    mut on_progress: impl FnMut(&MeasurerProgress) + Send,
) -> Result<(Vec<BlockOutcome>, MeasurerProgress), ChannelError> {
    let mut pool = Pool::default();
    let mut cache = BlockCache::default();
    let mut outcomes = Vec::new();
    let mut progress = MeasurerProgress::default();
    while let Some(measured) = results.next_batch(peer).await? {
        progress.batches += 1;
        let held = results.held();
        progress.held_batches += u64::from(held);
        if measured.slot.is_empty() {
            results.sifted(&measured, None).await;
        } else {
            progress.detections += measured.slot.len() as u64;
            let announcement = measured.announcement();
            peer.send(&if held {
                Message::AnnounceHeld(announcement)
            } else {
                Message::Announce(announcement)
            })
            .await?;
            let reply = match peer.recv().await? {
                Message::Sift(reply) => reply,
                other => {
                    return Err(ChannelError::unexpected(&other, "Sift"));
                }
            };
            let sifted = sift_as_measurer(&measured, &reply).map_err(ChannelError::protocol)?;
            results.sifted(&measured, Some(&reply)).await;
            if held {
                progress.held_key_bits += sifted.key.len() as u64;
            } else {
                progress.sifted_key_bits += sifted.key.len() as u64;
                pool.add(&sifted);
            }
        }
        while pool.key_bits() >= settings.block_bits {
            let block = pool.take_block(settings.block_bits);
            match measure_block(peer, settings, progress.blocks, block, &mut cache).await {
                Ok(outcome) => {
                    progress.secret_bits += outcome.report.secret_bits;
                    outcomes.push(outcome);
                }
                Err(e @ ChannelError::Transport(_)) => return Err(e),
                Err(e) => abandon(peer, &e, &mut outcomes).await,
            }
            progress.blocks += 1;
        }
        on_progress(&progress);
    }
    peer.send(&Message::Finish).await?;
    Ok((outcomes, progress))
}
