//! The BBM92 link on the emulated bench: a continuous-wave pair source in the middle, a receiver
//! and a free-running tagger at each node, with node B's clock offset and drifting.

use anyhow::{Context, Result};
use qkd_drivers::emulator::{EmulatedBench, World};
use qkd_firmware_sim::world::{
    EntangledLinkSpec, FiberSpec, InitialRotation, LinkPreset, LinkSpec, ReceiverSpec,
    SpdcSourceSpec,
};
use qkd_runtime::sources::bbm92::{NodeA, NodeB};

use super::report::LinkReport;
use super::{BATCH, Run, run_sessions};

/// Pairs leaving the source per second.
const PAIR_RATE_HZ: f64 = 2e7;
/// Probability that each photon of a pair enters its fiber.
const COUPLING: f64 = 0.6;
/// Node B's clock: offset and rate error against node A's, unknown to the nodes.
const B_CLOCK_OFFSET_PS: i64 = 400_000_000;
const B_CLOCK_DRIFT_PPM: f64 = 3.0;

/// The entangled link of `preset`'s detectors over `distance_km` in all, the pair source in the
/// middle, node B's clock offset and drifting.
pub(crate) fn spec(preset: LinkPreset, distance_km: f64) -> EntangledLinkSpec {
    spec_of(&preset.spec(distance_km))
}

/// The entangled link with the receivers of a prepare-and-measure bench and its deployed-fiber
/// properties (loss, PMD, classical light): each arm takes half of the fiber's length and of
/// its extra loss. Polarization drift stays off, as the BBM92 nodes do not track.
pub(crate) fn spec_of(detector_link: &LinkSpec) -> EntangledLinkSpec {
    let fiber = &detector_link.fiber;
    let arm = FiberSpec {
        length_km: fiber.length_km / 2.0,
        extra_loss_db: fiber.extra_loss_db / 2.0,
        drift_rad_per_sqrt_s: 0.0,
        initial_rotation: InitialRotation::Identity,
        steps: Vec::new(),
        ..fiber.clone()
    };
    let receiver = ReceiverSpec {
        controller: qkd_firmware_sim::world::ControllerSpec::None,
        ..detector_link.receiver.clone()
    };
    let mut spec = EntangledLinkSpec::new(
        SpdcSourceSpec {
            pair_rate_hz: PAIR_RATE_HZ,
            coupling_efficiency: COUPLING,
            ..SpdcSourceSpec::with_rate(PAIR_RATE_HZ)
        },
        [arm.clone(), arm],
        receiver,
    );
    spec.tagger_b.offset_ps = B_CLOCK_OFFSET_PS;
    spec.tagger_b.drift_ppm = B_CLOCK_DRIFT_PPM;
    spec
}

pub(super) async fn run(run: &Run) -> Result<LinkReport> {
    let mut spec = spec_of(&run.bench.spec);
    spec.eve.intercept_fraction = run.bench.eve_fraction;
    let bench =
        EmulatedBench::entangled(&spec, run.seed).context("the entangled bench cannot be built")?;
    let mut node_a = NodeA::new(
        bench.tagger(0, BATCH).context("node A has no tagger")?,
        run.budget(),
    );
    let node_b = NodeB::new(bench.tagger(1, BATCH).context("node B has no tagger")?);
    let settings = run.settings.clone();
    let sessions = run_sessions(node_b, &mut node_a, &settings, run, ["node B", "node A"]).await?;
    let pairs = bench.inspect(|w| match w {
        World::Entangled(e) => e.candidate_pairs(),
        World::PrepareMeasure(_) => 0,
    });
    let detections = sessions.progress.detections;
    Ok(sessions.report("bbm92", run, pairs, detections))
}
