//! Helpers shared by the physics tests: run a world, gather statistics, compare with tolerance.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use qkd_firmware_sim::world::detector::DarkCountSpec;
use qkd_firmware_sim::world::{
    DetectorSpec, EveSpec, FiberSpec, IntensitySpec, LinkSpec, LinkStats, NodeOutput,
    PrepareMeasureWorld, ReceiverSpec, TaggerSpec, WcpSourceSpec,
};

/// Emulated time per run step: bounds memory without affecting results.
pub const STEP_PS: i64 = 10_000_000_000; // 10 ms

/// Runs `spec` for `seconds` of emulated time and returns the world and its statistics.
pub fn run(spec: &LinkSpec, seed: u64, seconds: f64) -> (PrepareMeasureWorld, LinkStats) {
    let mut world = PrepareMeasureWorld::new(spec, seed).expect("valid spec");
    let mut stats = LinkStats::new(spec.source.intensities.len(), seed);
    let mut out = NodeOutput::default();
    let end = (seconds * 1e12) as i64;
    let mut t = 0;
    while t < end {
        t = (t + STEP_PS).min(end);
        out.clear();
        world.run_until(t, &mut out);
        stats.add(&out.clicks, world.source());
    }
    stats.finish(world.source());
    (world, stats)
}

/// An ideal gated detector: no dark counts, no dead time, no afterpulses, no jitter.
pub fn ideal_gated(efficiency: f64) -> DetectorSpec {
    DetectorSpec {
        efficiency,
        dark: DarkCountSpec::gated(0.0),
        dead_time_ps: 0,
        afterpulse_probability: 0.0,
        afterpulse_decay_ps: 1_000,
        jitter_fwhm_ps: 0.0,
    }
}

/// A single-intensity BB84 link with ideal gated detectors.
pub fn simple_link(rep_rate_hz: u64, mu: f64, distance_km: f64, efficiency: f64) -> LinkSpec {
    LinkSpec {
        source: WcpSourceSpec {
            rep_rate_hz,
            intensities: vec![IntensitySpec {
                mean_photon_number: mu,
                probability: 1.0,
            }],
            basis_z_probability: 0.5,
            reference_share: 0.0,
            sync_divider: 1000,
            spectral_width_ghz: 10.0,
        },
        fiber: FiberSpec::standard(distance_km),
        eve: EveSpec::default(),
        receiver: ReceiverSpec::uniform(ideal_gated(efficiency)),
        tagger: TaggerSpec::default(),
    }
}

/// Asserts `|measured - expected| ≤ 5σ`, printing both and the pull.
pub fn assert_within_5_sigma(what: &str, measured: f64, expected: f64, sigma: f64) {
    let pull = (measured - expected) / sigma;
    assert!(
        pull.abs() <= 5.0,
        "{what}: measured {measured:.6e}, expected {expected:.6e}, σ {sigma:.3e}, pull {pull:.2}"
    );
}

/// Basis-matched error rate over both bases of intensity class `class`, with its binomial σ.
pub fn qber_both_bases(stats: &LinkStats, class: usize) -> (f64, f64, u64) {
    let n = stats.sifted[class][0] + stats.sifted[class][1];
    let e = (stats.errors[class][0] + stats.errors[class][1]) as f64 / n as f64;
    (e, (e * (1.0 - e) / n as f64).sqrt(), n)
}
