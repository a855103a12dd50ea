//! The BB84 link on the emulated bench: Alice draws a pattern key from the operating system and
//! hands it to her emulated source, as a node drives a real source, and answers for her slots
//! from it; Bob's emulated tagger feeds slot recovery, counting slots from the marked sync where
//! the pattern starts.

use anyhow::{Context, Result};
use qkd_drivers::emulator::{EmulatedBench, World};
use qkd_firmware_sim::world::MARKER_CHANNEL;
use qkd_postprocess::slots::{SlotConfig, SlotRecovery};
use qkd_runtime::randomness::ProtocolRng;
use qkd_runtime::sources::bb84::{PatternRecords, TaggedDetections};
use qkd_runtime::tracking::{LinkTracking, TrackingStart};

use super::report::LinkReport;
use super::{BATCH, Run, decoy_settings, run_sessions};

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
    let mut source = bench
        .wcp_source()
        .context("the bench has no weak-coherent source")?;
    let records = PatternRecords::start(&mut source)
        .await
        .context("Alice's pattern")?;
    let tagger = bench.tagger(0, BATCH).context("the bench has no tagger")?;
    let rate = spec.source.rep_rate_hz as f64;
    let slots = SlotRecovery::new(
        SlotConfig::standard(rate, u64::from(spec.source.sync_divider)).marked(MARKER_CHANNEL),
    )?;
    let mut results = TaggedDetections::new(tagger, slots, run.budget(), ProtocolRng::from_os()?);
    if run.track {
        let controller = bench
            .polarization_controller(0)
            .context("the bench has no polarization controller at Bob")?;
        results = results.with_tracking(LinkTracking::start(controller, TrackingStart::default()));
    }

    let sessions = run_sessions(records, &mut results, &settings, run, ["Alice", "Bob"]).await?;
    let pulses = bench.inspect(|w| match w {
        World::PrepareMeasure(pm) => pm.pulses(),
        World::Entangled(_) => 0,
    });
    let stats = results.slot_stats().clone();
    let mut report = sessions.report("bb84", run, pulses, stats.in_gate);
    if let Some(tracking) = results.take_tracking() {
        report.tracking = Some(tracking.finish().await.context("polarization tracking")?);
    }
    Ok(report)
}
