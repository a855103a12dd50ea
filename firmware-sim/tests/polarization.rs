//! Polarization drift against the random-walk law, and entangled-pair correlations.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_within_5_sigma, ideal_gated};
use qkd_firmware_sim::world::detector::DarkCountSpec;
use qkd_firmware_sim::world::fiber::Fiber;
use qkd_firmware_sim::world::param::Section;
use qkd_firmware_sim::world::polarization::{H, dot};
use qkd_firmware_sim::world::rng::SimRng;
use qkd_firmware_sim::world::{
    ClickOrigin, DetectorSpec, EntangledLinkSpec, EntangledWorld, FiberSpec, InitialRotation,
    NodeOutput, ReceiverSpec, SpdcSourceSpec,
};

#[test]
fn drift_decays_the_overlap_as_the_random_walk_predicts() {
    // Each update multiplies E[s·s0] by (1 + 2(1-σ²) e^{-σ²/2}) / 3 for per-component step
    // σ; for small steps this is exp(-D² t / 3).
    let drift = 100.0; // rad/√s: fast enough that a few hundred updates span the decay
    let mut spec = FiberSpec::standard(1.0);
    spec.drift_rad_per_sqrt_s = drift;
    let seconds = 1e-4;
    let runs = 20_000;
    let mut overlaps = Vec::with_capacity(runs);
    let mut per_update = (0.0, 0);
    for seed in 0..runs as u64 {
        let mut fiber = Fiber::new(&spec, Section("f"), SimRng::new(seed, 0), 10.0).unwrap();
        let end = (seconds * 1e12) as i64;
        let mut updates = 0;
        while fiber.next_change_ps() <= end {
            fiber.change();
            updates += 1;
        }
        per_update = (fiber.drift_sigma_per_update(), updates);
        overlaps.push(dot(fiber.rotation().apply(H), H));
    }
    let n = overlaps.len() as f64;
    let mean = overlaps.iter().sum::<f64>() / n;
    let sd = (overlaps.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let (sigma, updates) = per_update;
    let s2 = sigma * sigma;
    let factor = (1.0 + 2.0 * (1.0 - s2) * (-s2 / 2.0).exp()) / 3.0;
    let exact = factor.powi(updates);
    assert_within_5_sigma("overlap after drift", mean, exact, sd / n.sqrt());
    // The continuum law, which the discretisation approximates.
    let continuum = (-drift * drift * seconds / 3.0).exp();
    assert!((exact - continuum).abs() < 0.01, "{exact} vs {continuum}");
}

fn snspd_without_noise() -> DetectorSpec {
    DetectorSpec {
        efficiency: 0.9,
        dark: DarkCountSpec::FreeRunning { rate_hz: 0.0 },
        dead_time_ps: 1_000,
        ..ideal_gated(0.9)
    }
}

fn entangled(rotation_a: InitialRotation, rotation_b: InitialRotation) -> EntangledLinkSpec {
    let fiber = |km: f64, rotation| FiberSpec {
        initial_rotation: rotation,
        ..FiberSpec::standard(km)
    };
    EntangledLinkSpec::new(
        SpdcSourceSpec {
            pair_rate_hz: 1e6,
            coupling_efficiency: 0.5,
            ..SpdcSourceSpec::with_rate(1e6)
        },
        [fiber(5.0, rotation_a), fiber(12.0, rotation_b)],
        ReceiverSpec::uniform(snspd_without_noise()),
    )
}

/// Coincidences of photons from the same pair: (count, basis-matched, errors) per basis.
fn pair_statistics(spec: &EntangledLinkSpec, seconds: f64) -> (u64, [u64; 2], [u64; 2]) {
    let mut world = EntangledWorld::new(spec, 41).unwrap();
    let mut out = [NodeOutput::default(), NodeOutput::default()];
    world.run_until((seconds * 1e12) as i64, &mut out);
    // Photon clicks carry their pair index; both sides list pairs in increasing order.
    let photons = |o: &NodeOutput| -> Vec<(u64, u8)> {
        (0..o.clicks.len())
            .filter(|&i| o.clicks.origin[i] == ClickOrigin::Photon)
            .map(|i| (o.clicks.slot[i], o.clicks.detector[i]))
            .collect()
    };
    let (a, b) = (photons(&out[0]), photons(&out[1]));
    let (mut i, mut j) = (0, 0);
    let (mut coincidences, mut matched, mut errors) = (0, [0; 2], [0; 2]);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                coincidences += 1;
                let (da, db) = (a[i].1, b[j].1);
                if da / 2 == db / 2 {
                    let basis = usize::from(da / 2);
                    matched[basis] += 1;
                    errors[basis] += u64::from(da != db);
                }
                i += 1;
                j += 1;
            }
        }
    }
    (coincidences, matched, errors)
}

/// Coincidences expected in `seconds` of the bench of [`entangled`]: 10^6 pairs/s, each photon
/// coupled with probability 0.5, through its arm (5 and 12 km at 0.2 dB/km) and detected with
/// efficiency 0.9. Dead time (1 ns) against ~10^5 clicks/s costs ~1e-4 of them, inside 5σ.
fn expected_coincidences(seconds: f64) -> f64 {
    let t = |km: f64| 10f64.powf(-0.2 * km / 10.0);
    let per_pair = (0.5 * t(5.0) * 0.9) * (0.5 * t(12.0) * 0.9);
    1e6 * seconds * per_pair
}

#[test]
fn pair_coincidences_follow_the_two_arm_transmissions() {
    let spec = entangled(InitialRotation::Identity, InitialRotation::Identity);
    let seconds = 0.2;
    let (coincidences, matched, errors) = pair_statistics(&spec, seconds);
    let expected = expected_coincidences(seconds);
    assert_within_5_sigma(
        "coincidences",
        coincidences as f64,
        expected,
        expected.sqrt(),
    );
    // Aligned fibers and |Φ+⟩: perfectly correlated in both bases.
    assert_eq!(errors, [0, 0]);
    assert!(matched[0] > 1000 && matched[1] > 1000);
}

#[test]
fn an_eavesdropper_on_bs_photons_costs_a_quarter_of_the_matched_pairs() {
    // Eve measures B's photon in a random basis: in the measured basis (half the time) both
    // photons carry her outcome and agree; in the other, the two outcomes are independent
    // coins. So the basis-matched error rate is f/4 on perfectly aligned fibers, and the pair
    // count is unchanged (she resends what she found).
    let seconds = 0.2;
    let expected_pairs = expected_coincidences(seconds);
    for fraction in [1.0, 0.5] {
        let mut spec = entangled(InitialRotation::Identity, InitialRotation::Identity);
        spec.eve.intercept_fraction = fraction;
        let (coincidences, matched, errors) = pair_statistics(&spec, seconds);
        for basis in 0..2 {
            let n = matched[basis] as f64;
            let expected = fraction / 4.0;
            let sigma = (expected * (1.0 - expected) / n).sqrt();
            assert_within_5_sigma(
                &format!("f={fraction} basis {basis}"),
                errors[basis] as f64 / n,
                expected,
                sigma,
            );
        }
        // She resends every photon, so the pair count keeps its expectation (Poisson).
        assert_within_5_sigma(
            &format!("f={fraction} coincidences"),
            coincidences as f64,
            expected_pairs,
            expected_pairs.sqrt(),
        );
    }
}

#[test]
fn entangled_correlations_follow_the_conjugate_rule() {
    // With the same rotation R in both arms, |Φ+⟩ sees R·M·Rᵀ·M (M flips S3): rotations about S3
    // cancel, rotations about S2 double. A rotation in one arm only acts once.
    let theta: f64 = 0.4;
    let about = |axis| InitialRotation::Fixed {
        axis,
        angle_rad: theta,
    };
    let cases = [
        (about([0.0, 0.0, 1.0]), about([0.0, 0.0, 1.0]), 0.0),
        (
            about([0.0, 1.0, 0.0]),
            about([0.0, 1.0, 0.0]),
            (1.0 - (2.0 * theta).cos()) / 2.0,
        ),
        (
            InitialRotation::Identity,
            about([0.0, 0.0, 1.0]),
            (1.0 - theta.cos()) / 2.0,
        ),
    ];
    for (a, b, expected_z) in cases {
        let spec = entangled(a, b);
        let (_, matched, errors) = pair_statistics(&spec, 0.2);
        let n = matched[0] as f64;
        let e = errors[0] as f64 / n;
        let sigma = (expected_z * (1.0 - expected_z) / n).sqrt().max(1.0 / n);
        assert_within_5_sigma(
            &format!("Z error, arms {a:?} / {b:?}"),
            e,
            expected_z,
            sigma,
        );
    }
}
