//! Detection statistics against closed forms: click probability versus mean photon number,
//! efficiency and loss; dark counts; dead-time saturation; afterpulsing; timing jitter.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_within_5_sigma, ideal_gated, run, simple_link};
use qkd_firmware_sim::world::detector::DarkCountSpec;
use qkd_firmware_sim::world::{ClickOrigin, NodeOutput, PrepareMeasureWorld, ReceiverSpec};

#[test]
fn click_probability_follows_one_minus_exp_of_mu_eta_t() {
    // With no dead time, a pulse of mean photon number μ clicks at least one detector with
    // probability 1 - exp(-μ·η·t), t = 10^(-α L / 10), η = optics × detector efficiency.
    for (mu, distance_km, efficiency) in [
        (0.1, 0.0, 0.5),
        (0.5, 25.0, 0.5),
        (2.0, 50.0, 0.3),
        (0.5, 10.0, 1.0),
    ] {
        let mut spec = simple_link(100_000_000, mu, distance_km, efficiency);
        spec.receiver.optics_transmission = 0.8;
        let (world, stats) = run(&spec, 11, 0.02);
        let n = world.pulses() as f64;
        let transmission = 10f64.powf(-0.2 * distance_km / 10.0);
        let p = 1.0 - (-mu * transmission * 0.8 * efficiency).exp();
        let measured = stats.clicked_slots[0] as f64 / n;
        let sigma = (p * (1.0 - p) / n).sqrt();
        assert_within_5_sigma(
            &format!("μ={mu} L={distance_km} η={efficiency}"),
            measured,
            p,
            sigma,
        );
    }
}

#[test]
fn efficiency_mismatch_is_thinned_per_detector() {
    // Detector i counts Poisson photons with mean μ·t·p_arm·p_pol·η_i: click probability of one
    // detector is 1 - exp(-that mean), averaged over Alice's four states.
    let mut spec = simple_link(100_000_000, 1.0, 0.0, 1.0);
    let efficiencies = [0.9, 0.6, 0.3, 0.15];
    for (d, e) in spec.receiver.detectors.iter_mut().zip(efficiencies) {
        d.efficiency = e;
    }
    let (world, stats) = run(&spec, 12, 0.01);
    let n = world.pulses() as f64;
    for (i, eta) in efficiencies.into_iter().enumerate() {
        // Same basis: half the states are aligned (p_pol = 1), half orthogonal (0);
        // other basis: p_pol = 1/2 for all. Arm probability 1/2.
        let aligned = 1.0 - (-0.5 * eta).exp();
        let diagonal = 1.0 - (-0.25 * eta).exp();
        let p = 0.25 * aligned + 0.5 * diagonal;
        let measured = stats.clicks[i] as f64 / n;
        assert_within_5_sigma(
            &format!("detector {i}"),
            measured,
            p,
            (p * (1.0 - p) / n).sqrt(),
        );
    }
}

/// Runs a dark-only bench (source off) with one free-running detector configuration.
fn dark_only(
    rate_hz: f64,
    dead_ps: i64,
    afterpulse: f64,
    decay_ps: i64,
    seconds: f64,
) -> NodeOutput {
    let mut spec = simple_link(1_000_000, 0.1, 0.0, 0.5);
    let detector = qkd_firmware_sim::world::DetectorSpec {
        dark: DarkCountSpec::FreeRunning { rate_hz },
        dead_time_ps: dead_ps,
        afterpulse_probability: afterpulse,
        afterpulse_decay_ps: decay_ps,
        ..ideal_gated(0.5)
    };
    spec.receiver = ReceiverSpec::uniform(detector);
    let mut world = PrepareMeasureWorld::new(&spec, 21).unwrap();
    world.set_source_enabled(false);
    let mut out = NodeOutput::default();
    world.run_until((seconds * 1e12) as i64, &mut out);
    out
}

/// Mean and variance (in s, s²) of the interval between clicks of a renewal process, turned
/// into the expected count and its standard deviation over `seconds`.
fn renewal_count(mean_s: f64, var_s2: f64, seconds: f64) -> (f64, f64) {
    (seconds / mean_s, (seconds * var_s2 / mean_s.powi(3)).sqrt())
}

#[test]
fn dark_counts_of_a_free_running_detector_saturate_as_non_paralysable_dead_time() {
    // Poisson dark events at rate d and dead time τ: intervals τ + Exp(d), so m = d / (1 + d τ).
    let (d, tau) = (2e5, 1e-6);
    let seconds = 2.0;
    let out = dark_only(d, 1_000_000, 0.0, 1_000, seconds);
    let per_detector = out.clicks.detector.iter().filter(|&&x| x == 0).count() as f64;
    let (expected, sigma) = renewal_count(tau + 1.0 / d, 1.0 / (d * d), seconds);
    assert_within_5_sigma(
        "dead-time-limited dark count",
        per_detector,
        expected,
        sigma,
    );
    // Without dead-time losses the count would be d·T: make sure the test can tell.
    assert!((d * seconds - expected) > 20.0 * sigma);
    assert!(out.clicks.origin.iter().all(|&o| o == ClickOrigin::Dark));
}

#[test]
fn gated_dark_counts_occur_per_gate() {
    let mut spec = simple_link(100_000_000, 0.1, 0.0, 0.5);
    let p = 1e-4;
    spec.receiver = ReceiverSpec::uniform(qkd_firmware_sim::world::DetectorSpec {
        dark: DarkCountSpec::gated(p),
        ..ideal_gated(0.5)
    });
    let mut world = PrepareMeasureWorld::new(&spec, 22).unwrap();
    world.set_source_enabled(false);
    let mut out = NodeOutput::default();
    world.run_until(10_000_000_000, &mut out); // 10 ms = 1e6 gates
    let gates = 1e6 * 4.0;
    assert_within_5_sigma(
        "gated dark counts",
        out.clicks.len() as f64,
        gates * p,
        (gates * p * (1.0 - p)).sqrt(),
    );
    // Gated dark counts fall on gate times exactly.
    assert!(out.clicks.time_ps.iter().all(|t| t % 10_000 == 0));
}

#[test]
fn pulsed_light_saturates_with_dead_time_in_whole_slots() {
    // One detector sees light (Alice sends Z only, Bob measures Z only, H detector). A click at
    // slot j blocks slots until j + m, m = ceil(τ/T); then each slot clicks with probability p̄.
    // Mean interval: (m - 1 + 1/p̄) slots; variance (1-p̄)/p̄² slots².
    let mut spec = simple_link(100_000_000, 1.0, 0.0, 0.5);
    spec.source.basis_z_probability = 1.0;
    spec.receiver.basis_z_probability = 1.0;
    for d in &mut spec.receiver.detectors {
        d.dead_time_ps = 45_000; // 4.5 periods: m = 5
    }
    let (_, stats) = run(&spec, 23, 0.01);
    let p = 0.5 * (1.0 - (-0.5f64).exp()); // bit 0 half the time, λ = μ η = 0.5
    let slot = 1e-8;
    let (expected, sigma) = renewal_count(
        (4.0 + 1.0 / p) * slot,
        (1.0 - p) / (p * p) * slot * slot,
        0.01,
    );
    assert_within_5_sigma("saturated H count", stats.clicks[0] as f64, expected, sigma);
}

#[test]
fn afterpulses_add_the_renewal_excess_and_decay_exponentially() {
    // After each click: dead τ, then the first of a dark event (rate d) and, with probability p,
    // an afterpulse (rate λ = 1/decay). Mean interval τ + (1-p)/d + p/(d+λ); the share of clicks
    // that are afterpulses is p·λ/(d+λ).
    let (d, tau, p, decay) = (1e4, 1e-5, 0.05, 2e-6);
    let lambda = 1.0 / decay;
    let seconds = 50.0;
    let out = dark_only(d, 10_000_000, p, 2_000_000, seconds);
    let clicks: Vec<usize> = (0..out.clicks.len())
        .filter(|&i| out.clicks.detector[i] == 0)
        .collect();
    let count = clicks.len() as f64;
    let mean = tau + (1.0 - p) / d + p / (d + lambda);
    // Interval = τ + min(D, A): second moment of the minimum, mixed over the afterpulse draw.
    let second = (1.0 - p) * 2.0 / (d * d) + p * 2.0 / ((d + lambda) * (d + lambda));
    let min_mean = mean - tau;
    let (expected, sigma) = renewal_count(mean, second - min_mean * min_mean, seconds);
    assert_within_5_sigma("count with afterpulses", count, expected, sigma);
    let without = seconds / (tau + 1.0 / d);
    assert!(
        expected - without > 10.0 * sigma,
        "the test must see the excess"
    );

    let afterpulses = clicks
        .iter()
        .filter(|&&i| out.clicks.origin[i] == ClickOrigin::Afterpulse)
        .count() as f64;
    let share = p * lambda / (d + lambda);
    assert_within_5_sigma(
        "afterpulse share",
        afterpulses / count,
        share,
        (share * (1.0 - share) / count).sqrt(),
    );

    // Delay from the end of the dead time to an afterpulse: Exp(λ + d) (it had to beat the dark).
    let delays: Vec<f64> = clicks
        .windows(2)
        .filter(|w| out.clicks.origin[w[1]] == ClickOrigin::Afterpulse)
        .map(|w| (out.clicks.time_ps[w[1]] - out.clicks.time_ps[w[0]]) as f64 * 1e-12 - tau)
        .collect();
    let n = delays.len() as f64;
    let mean_delay = delays.iter().sum::<f64>() / n;
    let rate = lambda + d;
    assert_within_5_sigma(
        "afterpulse delay",
        mean_delay,
        1.0 / rate,
        1.0 / rate / n.sqrt(),
    );
}

#[test]
fn timing_jitter_is_gaussian_with_the_configured_fwhm() {
    let mut spec = simple_link(10_000_000, 0.2, 0.0, 0.5);
    let fwhm = 225.0;
    for d in &mut spec.receiver.detectors {
        d.jitter_fwhm_ps = fwhm;
    }
    spec.tagger.sync_jitter_fwhm_ps = 0.0;
    let mut world = PrepareMeasureWorld::new(&spec, 24).unwrap();
    let mut out = NodeOutput::default();
    world.run_until(20_000_000_000, &mut out);
    // Compare detector 0's tags with its true avalanche times, in order (clicks of one detector
    // are 100 ns apart, far beyond the jitter).
    let tags = out
        .tag_times_ps
        .iter()
        .zip(&out.tag_channels)
        .filter(|(_, c)| **c == 1)
        .map(|(t, _)| *t);
    let truth = (0..out.clicks.len())
        .filter(|&i| out.clicks.detector[i] == 0)
        .map(|i| out.clicks.time_ps[i]);
    let diffs: Vec<f64> = tags.zip(truth).map(|(a, b)| (a - b) as f64).collect();
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let var = diffs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let sigma = fwhm / 2.354_820_045;
    // Rounding the jitter to whole picoseconds adds 1/12 ps² of variance.
    let expected = sigma * sigma + 1.0 / 12.0;
    assert_within_5_sigma(
        "jitter variance",
        var,
        expected,
        expected * (2.0 / (n - 1.0)).sqrt(),
    );
    assert_within_5_sigma("jitter mean", mean, 0.0, sigma / n.sqrt());
}
