//! Coincidence finding between two free-running taggers on emulated entangled pairs: an unknown
//! offset found without prior knowledge, drift followed, pairs matched against ground truth.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use qkd_firmware_sim::world::{
    DetectorPreset, EntangledLinkSpec, EntangledWorld, FiberSpec, NodeOutput, ReceiverSpec,
    SpdcSourceSpec,
};
use qkd_postprocess::coincidence::{
    CoincidenceTracker, OffsetError, OffsetSearch, Pairs, find_offset,
};

fn link(offset_a: i64, offset_b: i64, drift_b_ppm: f64) -> EntangledLinkSpec {
    let mut spec = EntangledLinkSpec::new(
        SpdcSourceSpec {
            pair_rate_hz: 1e6,
            coupling_efficiency: 0.4,
            ..SpdcSourceSpec::with_rate(1e6)
        },
        [FiberSpec::standard(3.0), FiberSpec::standard(11.0)],
        ReceiverSpec::uniform(DetectorPreset::Snspd.spec()),
    );
    spec.tagger_a.offset_ps = offset_a;
    spec.tagger_b.offset_ps = offset_b;
    spec.tagger_b.drift_ppm = drift_b_ppm;
    spec
}

/// Standard deviation of a pair's time difference: two SNSPDs of 30 ps FWHM jitter each
/// (σ = FWHM/2.3548), the tagger's 1 ps resolution negligible.
const PAIR_SIGMA_PS: f64 = std::f64::consts::SQRT_2 * 30.0 / 2.3548;

/// Largest bias of a centroid of bins `w` wide over a Gaussian of σ (Poisson summation: the
/// first harmonic, (w/π)·exp(−2π²σ²/w²); the rest are smaller by e^{-6π²σ²/w²}).
fn binned_centroid_bias(w: f64, sigma: f64) -> f64 {
    w / std::f64::consts::PI * (-2.0 * std::f64::consts::PI.powi(2) * (sigma / w).powi(2)).exp()
}

fn streams(spec: &EntangledLinkSpec, seconds: f64) -> ([NodeOutput; 2], EntangledWorld) {
    let mut world = EntangledWorld::new(spec, 77).unwrap();
    let mut out = [NodeOutput::default(), NodeOutput::default()];
    world.run_until((seconds * 1e12) as i64, &mut out);
    (out, world)
}

#[test]
fn finds_an_unknown_offset_of_either_sign_and_the_drift() {
    for (offset_a, offset_b, drift) in [(0, 830_000_000, 7.0), (912_000_000, 0, -4.0)] {
        let spec = link(offset_a, offset_b, drift);
        let ([a, b], world) = streams(&spec, 1.0);
        let search = OffsetSearch::default();
        let estimate = find_offset(&a.tag_times_ps, &b.tag_times_ps, &search).unwrap();
        let m = estimate.model;
        let truth = world.partner_offset_ps(m.reference_ps);
        let error = m.offset_ps - truth;
        // The offset at the reference comes from the first segment's centroid of fine bins:
        // statistically σ/√pairs, plus at most the binned centroid's bias.
        let segment_sigma = PAIR_SIGMA_PS / (estimate.peak_counts as f64).sqrt();
        let bias = binned_centroid_bias(search.fine_bin_ps as f64, PAIR_SIGMA_PS);
        let allowed = 5.0 * segment_sigma + bias;
        assert!(
            error.abs() < allowed,
            "offset off by {error} ps (true {truth}), allowed {allowed}"
        );
        // The drift is the slope of a line through segments spread over the whole run: two
        // ends each off by at most `allowed`, half the run apart.
        let span = (a.tag_times_ps.last().unwrap() - a.tag_times_ps[0]) as f64;
        let drift_allowed = 2.0 * allowed / (span / 2.0) * 1e6;
        assert!(
            (m.drift * 1e6 - drift).abs() < drift_allowed,
            "drift {} ppm vs {drift} ± {drift_allowed}",
            m.drift * 1e6
        );
        assert!(estimate.significance > 8.0);
    }
}

#[test]
fn a_stream_that_starts_before_the_other_is_searched_from_where_both_run() {
    // As a node gathers them: B's tagger started 60 ms late, and A keeps its tags from one
    // maximum offset before B's first. Those have no partner; the search must not take its
    // first stretch (some 16 ms here) from them, and must still measure to the pair jitter.
    let spec = link(0, 0, 3.0);
    let ([a, b], world) = streams(&spec, 0.3);
    let search = OffsetSearch {
        max_offset_ps: 30_000_000_000,
        ..OffsetSearch::default()
    };
    let b = &b.tag_times_ps[b.tag_times_ps.partition_point(|&t| t < 60_000_000_000)..];
    let a = &a.tag_times_ps;
    let a = &a[a.partition_point(|&t| t < b[0] - search.max_offset_ps)..];
    let estimate = find_offset(a, b, &search).unwrap();
    let m = estimate.model;
    let error = m.offset_ps - world.partner_offset_ps(m.reference_ps);
    let allowed = 5.0 * PAIR_SIGMA_PS / (estimate.peak_counts as f64).sqrt()
        + binned_centroid_bias(search.fine_bin_ps as f64, PAIR_SIGMA_PS);
    assert!(
        error.abs() < allowed,
        "offset off by {error} ps, allowed {allowed}"
    );
    assert!(m.reference_ps > b[0], "measured before B ran: {m:?}");
}

#[test]
fn tracked_pairs_are_the_true_pairs() {
    let spec = link(0, 400_000_000, 12.0);
    let ([a, b], _) = streams(&spec, 0.5);
    let estimate = find_offset(&a.tag_times_ps, &b.tag_times_ps, &OffsetSearch::default()).unwrap();
    let mut tracker = CoincidenceTracker::new(estimate.model, 400);
    let mut pairs = Pairs::default();
    // Feed in interleaved batches of 10 ms, as two taggers would deliver them.
    let chunk = |times: &[i64], from: i64, to: i64| {
        let lo = times.partition_point(|&t| t < from);
        let hi = times.partition_point(|&t| t < to);
        lo..hi
    };
    let step = 10_000_000_000;
    let mut from = 0;
    while from < 600_000_000_000 {
        let ra = chunk(&a.tag_times_ps, from, from + step);
        let rb = chunk(&b.tag_times_ps, from, from + step);
        tracker.process(
            &a.tag_times_ps[ra.clone()],
            &a.tag_channels[ra],
            &b.tag_times_ps[rb.clone()],
            &b.tag_channels[rb],
            &mut pairs,
        );
        from += step;
    }
    tracker.finish(&mut pairs);
    // Ground truth: photons of the same pair clicked on both sides.
    let clicked = |o: &NodeOutput| -> std::collections::HashSet<u64> {
        (0..o.clicks.len())
            .filter(|&i| o.clicks.origin[i] == qkd_firmware_sim::world::ClickOrigin::Photon)
            .map(|i| o.clicks.slot[i])
            .collect()
    };
    let true_pairs = clicked(&a).intersection(&clicked(&b)).count();
    assert!(true_pairs > 10_000);
    let found = pairs.len();
    assert!(
        (found as f64 - true_pairs as f64).abs() < 0.005 * true_pairs as f64,
        "{found} vs {true_pairs}"
    );
    // Aligned fibers and |Φ+⟩: pairs measured in the same basis agree, so matched pairs are real.
    let (mut same_basis, mut disagree) = (0, 0);
    for (&ca, &cb) in pairs.a_channel.iter().zip(&pairs.b_channel) {
        if (ca - 1) / 2 == (cb - 1) / 2 {
            same_basis += 1;
            disagree += u32::from(ca != cb);
        }
    }
    assert!(
        f64::from(disagree) < 0.005 * f64::from(same_basis),
        "{disagree} of {same_basis}"
    );
    // Residuals stay centred: the tracker followed the 12 ppm drift over the run. Their spread
    // is the pairs' jitter, so their mean is known to within σ/√n.
    let tail = &pairs.residual_ps[pairs.len() - 1000..];
    let n = tail.len() as f64;
    let mean = tail.iter().sum::<i64>() as f64 / n;
    let sd = (tail.iter().map(|&r| (r as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(
        (sd / PAIR_SIGMA_PS - 1.0).abs() < 5.0 / (2.0 * n).sqrt(),
        "residual spread {sd} ps, the jitter gives {PAIR_SIGMA_PS}"
    );
    assert!(
        mean.abs() < 5.0 * PAIR_SIGMA_PS / n.sqrt(),
        "residual mean {mean} ps at the end"
    );
}

#[test]
fn unrelated_streams_have_no_peak() {
    let ([a, _], _) = streams(&link(0, 0, 0.0), 0.2);
    let mut other = link(0, 0, 0.0);
    other.source.pair_rate_hz = 0.9e6;
    let mut world = EntangledWorld::new(&other, 12345).unwrap();
    let mut out = [NodeOutput::default(), NodeOutput::default()];
    world.run_until(200_000_000_000, &mut out);
    let err = find_offset(
        &a.tag_times_ps,
        &out[1].tag_times_ps,
        &OffsetSearch::default(),
    )
    .unwrap_err();
    assert!(matches!(err, OffsetError::NoPeak { .. }), "{err}");
    assert!(matches!(
        find_offset(&[], &[1], &OffsetSearch::default()),
        Err(OffsetError::NoData { .. })
    ));
}

#[test]
fn a_fine_bin_close_to_the_coarse_one_is_searched_not_refused_or_panicked_on() {
    // 50 fine bins (5 µs) exceed the 1 µs coarse bin: the coarse bin wins.
    let search = OffsetSearch {
        fine_bin_ps: 100_000,
        coarse_bin_ps: 1_000_000,
        ..OffsetSearch::default()
    };
    let mut rng = qkd_firmware_sim::world::rng::SimRng::new(5, 0);
    let mut t = 0i64;
    let a: Vec<i64> = (0..20_000)
        .map(|_| {
            t += 1 + (rng.exponential() * 10_000_000.0) as i64;
            t
        })
        .collect();
    let b: Vec<i64> = a.iter().map(|t| t + 3_000_000).collect();
    let estimate = find_offset(&a, &b, &search).unwrap();
    assert!((estimate.model.offset_ps - 3_000_000.0).abs() <= 100_000.0);
}
