//! The BB84 link: Alice's emulated source answers for her slots; Bob's emulated tagger feeds
//! slot recovery.

use anyhow::{Context, Result};
use qkd_drivers::emulator::{EmulatedBench, EmulatedTagger, EmulatedWcpSource, World};
use qkd_drivers::{EmissionRecords, TagBatch, TimeTagger, WcpSource};
use qkd_postprocess::sift::{
    Announcement, Measurements, Preparations, SiftReply, SquashCoin, squash,
};
use qkd_postprocess::slots::{Detections, SlotConfig, SlotRecovery};

use super::report::LinkReport;
use super::tracking::LinkTracking;
use super::{BATCH, BatchBudget, Run, Turn, decoy_settings, run_sessions};
use crate::channel::{ChannelError, Peer, Transport};
use crate::node::session::{MeasurementSource, PreparationSource};

/// Alice's records of the announced slots, from her source.
struct SourceRecords {
    source: EmulatedWcpSource,
    records: EmissionRecords,
}

impl PreparationSource for SourceRecords {
    async fn preparations(&mut self, announcement: &Announcement) -> Result<Preparations, String> {
        self.records.clear();
        self.source
            .emissions(&announcement.slot, &mut self.records)
            .await
            .map_err(|e| e.to_string())?;
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
struct TaggedDetections {
    tagger: EmulatedTagger,
    slots: SlotRecovery,
    batch: TagBatch,
    detections: Detections,
    budget: BatchBudget,
    coin: SquashCoin,
    /// Bob's polarization tracking, when the link runs it.
    tracking: Option<LinkTracking>,
    /// The last batch was read while tracking had paused key generation.
    held: bool,
}

impl TaggedDetections {
    fn squash(&mut self) -> Measurements {
        let coin = &mut self.coin;
        let measured = squash(&self.detections, || coin.flip());
        self.detections.clear();
        measured
    }
}

impl MeasurementSource for TaggedDetections {
    async fn next_batch<T: Transport>(
        &mut self,
        _peer: &mut Peer<T>,
    ) -> Result<Option<Measurements>, ChannelError> {
        match self.budget.next() {
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
            .map_err(|e| ChannelError::Protocol(format!("Bob's tagger: {e}")))?;
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

pub async fn run(run: &Run) -> Result<LinkReport> {
    let spec = &run.bench.spec;
    let mut settings = run.settings.clone();
    settings.decoy = Some(decoy_settings(
        &spec.source.intensities,
        settings.eps_sec,
        settings.eps_cor,
    )?);

    let bench =
        EmulatedBench::prepare_measure(spec, run.seed).context("the bench cannot be built")?;
    let source = bench
        .wcp_source()
        .context("the bench has no weak-coherent source")?;
    let tagger = bench.tagger(0, BATCH).context("the bench has no tagger")?;
    let rate = spec.source.rep_rate_hz as f64;
    let slots = SlotRecovery::new(SlotConfig::standard(
        rate,
        u64::from(spec.source.sync_divider),
    ))?;
    let mut results = TaggedDetections {
        tagger,
        slots,
        batch: TagBatch::default(),
        detections: Detections::default(),
        budget: BatchBudget::for_seconds(run.seconds),
        coin: SquashCoin::new(run.seed),
        tracking: None,
        held: false,
    };
    if run.track {
        let controller = bench
            .polarization_controller(0)
            .context("the bench has no polarization controller at Bob")?;
        results.tracking = Some(LinkTracking::start(controller, BATCH));
    }
    let records = SourceRecords {
        source,
        records: EmissionRecords::default(),
    };

    let sessions = run_sessions(records, &mut results, &settings, run, ["Alice", "Bob"]).await?;
    let pulses = bench.inspect(|w| match w {
        World::PrepareMeasure(pm) => pm.pulses(),
        World::Entangled(_) => 0,
    });
    let stats = results.slots.stats().clone();
    let (held_batches, held_key_bits) = (
        sessions.progress.held_batches,
        sessions.progress.held_key_bits,
    );
    let mut report = sessions.report("bb84", run, pulses, stats.in_gate);
    report.held_batches = held_batches;
    report.held_key_bits = held_key_bits;
    if let Some(tracking) = results.tracking.take() {
        report.tracking = Some(tracking.finish().await.context("polarization tracking")?);
    }
    Ok(report)
}
