//! A deployed fiber in the emulator against closed forms: Raman noise clicks from classical
//! channels (free-running and gated detectors, source dark), extra loss, and PMD's loss of
//! polarization visibility.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_within_5_sigma, run};
use qkd_firmware_sim::world::pmd;
use qkd_firmware_sim::world::{
    Basis, ClassicalSpec, ClickOrigin, Direction, LinkPreset, NodeOutput, PrepareMeasureWorld,
};

/// Raman-origin clicks of `preset` at `km` with classical light of `power_dbm`, source dark.
fn raman_clicks(
    preset: LinkPreset,
    km: f64,
    direction: Direction,
    power_dbm: f64,
    seconds: f64,
) -> (f64, qkd_firmware_sim::world::LinkSpec) {
    let mut spec = preset.spec(km);
    spec.fiber.classical = Some(ClassicalSpec {
        direction,
        ..ClassicalSpec::with_power(power_dbm)
    });
    let mut world = PrepareMeasureWorld::new(&spec, 5).unwrap();
    world.set_source_enabled(false);
    let mut out = NodeOutput::default();
    let mut count = 0usize;
    let end = (seconds * 1e12) as i64;
    let mut t = 0;
    while t < end {
        t = (t + 10_000_000_000).min(end);
        out.clear();
        world.run_until(t, &mut out);
        count += out
            .clicks
            .origin
            .iter()
            .filter(|&&o| o == ClickOrigin::Raman)
            .count();
    }
    (count as f64, spec)
}

#[test]
fn raman_photons_click_free_running_detectors_at_the_model_rate() {
    for direction in [Direction::Co, Direction::Counter] {
        let seconds = 0.2;
        let (count, spec) = raman_clicks(LinkPreset::Snspd, 40.0, direction, -10.0, seconds);
        // Total click rate η_Bob·η_det·photons/s; the 30 ns dead time at ~5e4 clicks/s per
        // detector loses 0.15 % (a renewal process: m = r/(1 + rτ)), which is allowed for.
        let photons = spec.fiber.raman_photons_per_s();
        let detector = spec.receiver.detectors[0];
        let total = photons * spec.receiver.optics_transmission * detector.efficiency;
        let arms = [0.4, 0.4, 0.1, 0.1];
        let tau = detector.dead_time_ps as f64 * 1e-12;
        let expected: f64 = arms
            .iter()
            .map(|a| {
                let r = total * a;
                r / (1.0 + r * tau) * seconds
            })
            .sum();
        assert!(expected > 1e4, "{expected}");
        assert_within_5_sigma("Raman clicks", count, expected, expected.sqrt());
    }
}

#[test]
fn raman_photons_click_gated_detectors_once_per_gate_at_most() {
    let seconds = 0.05;
    let (count, spec) = raman_clicks(LinkPreset::IngaasGated, 25.0, Direction::Co, 0.0, seconds);
    let photons = spec.fiber.raman_photons_per_s();
    let detector = spec.receiver.detectors[0];
    let window = detector.dark.window_s(1e-9);
    assert!((window - 150e-12).abs() < 1e-18, "gate width {window}");
    let gates = spec.source.rep_rate_hz as f64 * seconds;
    // Per detector and gate: 1 − exp(−flux·η·w). Dead time (10 ns) blocks the next 10 gates
    // after a click; at ~1e-4 per gate that removes ~0.1 % of gates, allowed for.
    let expected: f64 = [0.4, 0.4, 0.1, 0.1]
        .iter()
        .map(|arm| {
            let flux = photons * spec.receiver.optics_transmission * arm;
            let p = -(-flux * detector.efficiency * window).exp_m1();
            let dead_gates =
                (detector.dead_time_ps as f64 * 1e-12 * spec.source.rep_rate_hz as f64).ceil();
            gates * p / (1.0 + p * (dead_gates - 1.0))
        })
        .sum();
    assert!(expected > 1e4, "{expected}");
    assert_within_5_sigma("gated Raman clicks", count, expected, expected.sqrt());
}

#[test]
fn without_classical_light_there_is_no_raman_click() {
    let mut spec = LinkPreset::Snspd.spec(25.0);
    spec.fiber.classical = None;
    let (_, stats) = run(&spec, 3, 0.01);
    assert_eq!(stats.by_origin[ClickOrigin::Raman as usize], 0);
    assert!(stats.by_origin[ClickOrigin::Photon as usize] > 0);
}

#[test]
fn extra_loss_attenuates_the_photons_like_that_many_km() {
    // 25 km plus 5 dB against 50 km: the same transmission, so the same gain.
    let mut lossy = LinkPreset::Snspd.spec(25.0);
    lossy.fiber.extra_loss_db = 5.0;
    let long = LinkPreset::Snspd.spec(50.0);
    assert!((lossy.fiber.transmission() - long.fiber.transmission()).abs() < 1e-15);
    let (world, stats) = run(&lossy, 4, 0.02);
    let n = world.pulses() as f64 * world.source().key_share(0);
    let gain = stats.clicked_slots[0] as f64 / n;
    let (world, stats) = run(&long, 4, 0.02);
    let m = world.pulses() as f64 * world.source().key_share(0);
    let gain_long = stats.clicked_slots[0] as f64 / m;
    let sigma = (gain * (1.0 - gain) / n + gain_long * (1.0 - gain_long) / m).sqrt();
    assert_within_5_sigma("gain with extra loss", gain, gain_long, sigma);
}

#[test]
fn pmd_raises_the_error_rate_of_broadband_light_as_its_visibility_says() {
    // 25 km of old fiber (1 ps/√km, mean DGD 5 ps) carrying 100 GHz wide pulses: the
    // visibility falls well below one, and the error rate is (1 − V)/2 with V the product of
    // the misalignment's and PMD's at the DGD the fiber drew.
    let mut spec = LinkPreset::Snspd.spec(25.0);
    spec.fiber.pmd_ps_per_sqrt_km = 1.0;
    spec.source.spectral_width_ghz = 100.0;
    for seed in [1, 2] {
        let (world, stats) = run(&spec, seed, 0.01);
        let dgd = world.node().fiber.dgd_ps();
        assert!(dgd > 0.0);
        let v = (1.0 - 2.0 * spec.fiber.misalignment) * pmd::visibility(dgd, 100.0);
        let expected = (1.0 - v) / 2.0;
        for basis in [Basis::Z, Basis::X] {
            let b = basis as usize;
            let n = stats.sifted[0][b] as f64;
            let measured = stats.qber(0, basis).unwrap();
            // Dark counts add ~1e-7 per slot against a gain of ~0.1: negligible here.
            let sigma = (expected * (1.0 - expected) / n).sqrt();
            assert_within_5_sigma("PMD error rate", measured, expected, sigma);
        }
    }
    // A narrow laser over the same fiber barely notices.
    assert!(1.0 - pmd::visibility(5.0, 1.0) < 1e-4);
}
