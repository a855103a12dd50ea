//! The BBM92 link: a continuous-wave pair source in the middle, a receiver and a free-running
//! tagger at each node. Node A pairs its tags with node B's timestamps, which B sends over the
//! authenticated channel (its channels, which carry its bits, never leave it): the offset between
//! the two clocks is found from the first batches without prior knowledge, then followed as the
//! clocks drift. A announces pairs by B's tag index with its own bases; B answers from its tags.

use anyhow::{Context, Result};
use qkd_drivers::emulator::{EmulatedBench, EmulatedTagger, World};
use qkd_drivers::{TagBatch, TimeTagger};
use qkd_firmware_sim::world::{EntangledLinkSpec, FiberSpec, ReceiverSpec, SpdcSourceSpec};
use qkd_postprocess::coincidence::{CoincidenceTracker, OffsetSearch, Pairs, find_offset};
use qkd_postprocess::sift::{Announcement, Basis, Measurements, Preparations};

use super::report::LinkReport;
use super::{BATCH, BatchBudget, Run, Turn, run_sessions};
use crate::channel::{ChannelError, Peer, Transport};
use crate::node::messages::Message;
use crate::node::session::{MeasurementSource, PreparationSource};

/// Pairs leaving the source per second.
const PAIR_RATE_HZ: f64 = 2e7;
/// Probability that each photon of a pair enters its fiber.
const COUPLING: f64 = 0.6;
/// Coincidence window, full width.
const WINDOW_PS: i64 = 400;
/// Emulated time gathered before the offset search.
const SEARCH_BATCHES: usize = 10;
/// Node B's clock: offset and rate error against node A's, unknown to the nodes.
const B_CLOCK_OFFSET_PS: i64 = 400_000_000;
const B_CLOCK_DRIFT_PPM: f64 = 3.0;
/// Node B keeps its tags this far behind the latest announcement.
const B_RETAIN_TAGS: u64 = 1 << 20;

/// Basis and bit of a detector channel (1 = H, 2 = V, 3 = D, 4 = A).
fn outcome(channel: u8) -> Option<(Basis, u8)> {
    qkd_units::bb84::state(usize::from(channel).checked_sub(1)?)
}

/// Node B: its tagger, and its tags kept by stream index until announced.
struct NodeB {
    tagger: EmulatedTagger,
    batch: TagBatch,
    channels: Vec<u8>,
    first_index: u64,
}

impl PreparationSource for NodeB {
    async fn preparations(&mut self, announcement: &Announcement) -> Result<Preparations, String> {
        let mut out = Preparations::default();
        for &index in &announcement.slot {
            let channel = index
                .checked_sub(self.first_index)
                .and_then(|i| self.channels.get(usize::try_from(i).ok()?))
                .copied()
                .ok_or_else(|| format!("tag {index} is not held"))?;
            let (basis, bit) =
                outcome(channel).ok_or_else(|| format!("tag {index} is on channel {channel}"))?;
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

    async fn tags(&mut self) -> Result<Vec<i64>, String> {
        self.tagger
            .read(&mut self.batch)
            .await
            .map_err(|e| e.to_string())?;
        self.channels.extend_from_slice(&self.batch.channel);
        Ok(self.batch.time_ps.clone())
    }
}

/// Node A: its tagger, B's timestamps from the channel, and the coincidence search.
struct NodeA {
    tagger: EmulatedTagger,
    batch: TagBatch,
    budget: BatchBudget,
    /// Both streams until the offset is known.
    gathered: [Vec<i64>; 2],
    gathered_channels: Vec<u8>,
    gathered_batches: usize,
    tracker: Option<CoincidenceTracker>,
    pairs: Pairs,
}

impl NodeA {
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
    ) -> Result<(), ChannelError> {
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
        let estimate = find_offset(&a, &b, &OffsetSearch::default()).map_err(|e| {
            ChannelError::Protocol(format!("no coincidences between the nodes: {e}"))
        })?;
        let mut tracker = CoincidenceTracker::new(estimate.model, WINDOW_PS);
        let channels = std::mem::take(&mut self.gathered_channels);
        tracker.process(&a, &channels, &b, &vec![0; b.len()], &mut self.pairs);
        self.tracker = Some(tracker);
        Ok(())
    }
}

impl MeasurementSource for NodeA {
    async fn next_batch<T: Transport>(
        &mut self,
        peer: &mut Peer<T>,
    ) -> Result<Option<Measurements>, ChannelError> {
        match self.budget.next() {
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
            .map_err(|e| ChannelError::Protocol(format!("node A's tagger: {e}")))?;
        peer.send(&Message::RequestTags).await?;
        let b_times = match peer.recv().await? {
            Message::Tags(times) => times,
            other => {
                return Err(ChannelError::unexpected(&other, "Tags"));
            }
        };
        // Lend the batch out instead of copying it while `pair` borrows the rest of the node.
        let batch = std::mem::take(&mut self.batch);
        let paired = self.pair(&batch.time_ps, &batch.channel, &b_times);
        self.batch = batch;
        paired?;
        Ok(Some(self.measurements()))
    }
}

fn spec(run: &Run) -> EntangledLinkSpec {
    let detector_link = run.bench.preset.spec(run.bench.distance_km / 2.0);
    let arm = FiberSpec {
        length_km: run.bench.distance_km / 2.0,
        ..detector_link.fiber.clone()
    };
    let receiver = ReceiverSpec {
        controller: qkd_firmware_sim::world::ControllerSpec::None,
        ..detector_link.receiver
    };
    let mut spec = EntangledLinkSpec::new(
        SpdcSourceSpec {
            pair_rate_hz: PAIR_RATE_HZ,
            coupling_efficiency: COUPLING,
        },
        [arm.clone(), arm],
        receiver,
    );
    spec.tagger_b.offset_ps = B_CLOCK_OFFSET_PS;
    spec.tagger_b.drift_ppm = B_CLOCK_DRIFT_PPM;
    spec
}

pub async fn run(run: &Run) -> Result<LinkReport> {
    let bench = EmulatedBench::entangled(&spec(run), run.seed)
        .context("the entangled bench cannot be built")?;
    let mut node_a = NodeA {
        tagger: bench.tagger(0, BATCH).context("node A has no tagger")?,
        batch: TagBatch::default(),
        budget: BatchBudget::for_seconds(run.seconds),
        gathered: [Vec::new(), Vec::new()],
        gathered_channels: Vec::new(),
        gathered_batches: 0,
        tracker: None,
        pairs: Pairs::default(),
    };
    let node_b = NodeB {
        tagger: bench.tagger(1, BATCH).context("node B has no tagger")?,
        batch: TagBatch::default(),
        channels: Vec::new(),
        first_index: 0,
    };
    let settings = run.settings.clone();
    let sessions = run_sessions(node_b, &mut node_a, &settings, run, ["node B", "node A"]).await?;
    let pairs = bench.inspect(|w| match w {
        World::Entangled(e) => e.candidate_pairs(),
        World::PrepareMeasure(_) => 0,
    });
    let detections = sessions.progress.detections;
    Ok(sessions.report("bbm92", run, pairs, detections))
}
