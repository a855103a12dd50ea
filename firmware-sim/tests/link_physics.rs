//! Link-level physics against closed forms: error rates from a known polarization rotation and
//! from the polarization controller, intercept-resend, and the decoy-state gains and error rates
//! of the GYS parameter set (Ma, Qi, Zhao, Lo 2005).
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_within_5_sigma, qber_both_bases, run, simple_link};
use qkd_firmware_sim::world::presets::{GYS_E_D, GYS_ETA_BOB, GYS_LOSS_DB_PER_KM, GYS_Y0};
use qkd_firmware_sim::world::{
    Basis, ControllerSpec, InitialRotation, LinkPreset, LinkSpec, LinkStats, NodeOutput,
    PrepareMeasureWorld,
};

/// A weak link (λ ≈ 0.01) so that multi-photon detections, whose squashed error rate differs
/// slightly from the single-photon one, are negligible.
fn weak_link() -> LinkSpec {
    simple_link(100_000_000, 0.1, 10.0, 0.2)
}

fn qber(stats: &LinkStats, basis: Basis) -> (f64, f64) {
    let b = usize::from(basis == Basis::X);
    let n = stats.sifted[0][b] as f64;
    let e = stats.qber(0, basis).unwrap();
    (e, (e * (1.0 - e) / n).sqrt())
}

#[test]
fn qber_follows_a_known_fiber_rotation() {
    // A rotation by θ about S3 moves H towards D: both bases err with (1 - v cos θ)/2.
    // A rotation about S1 leaves H/V alone and rotates D/A: only X errs.
    let theta: f64 = 0.3;
    let e_d = 0.02;
    let v = 1.0 - 2.0 * e_d;
    for (axis, expected_z, expected_x) in [
        (
            [0.0, 0.0, 1.0],
            (1.0 - v * theta.cos()) / 2.0,
            (1.0 - v * theta.cos()) / 2.0,
        ),
        ([1.0, 0.0, 0.0], e_d, (1.0 - v * theta.cos()) / 2.0),
    ] {
        let mut spec = weak_link();
        spec.fiber.misalignment = e_d;
        spec.fiber.initial_rotation = InitialRotation::Fixed {
            axis,
            angle_rad: theta,
        };
        let (_, stats) = run(&spec, 31, 0.05);
        let (ez, sz) = qber(&stats, Basis::Z);
        let (ex, sx) = qber(&stats, Basis::X);
        assert_within_5_sigma(&format!("QBER Z, axis {axis:?}"), ez, expected_z, sz);
        assert_within_5_sigma(&format!("QBER X, axis {axis:?}"), ex, expected_x, sx);
    }
}

#[test]
fn the_polarization_controller_really_rotates_the_state() {
    // The fiber turns H into circular (π/2 about S2). A squeezer at 45° (axis S2) driven to add
    // -π/2 undoes it; driven to add +π/2 it doubles it (H → V, every Z bit flipped).
    let mut spec = weak_link();
    spec.fiber.initial_rotation = InitialRotation::Fixed {
        axis: [0.0, 1.0, 0.0],
        angle_rad: std::f64::consts::FRAC_PI_2,
    };
    spec.receiver.controller = ControllerSpec::one_squeezer(std::f64::consts::FRAC_PI_4, 0);
    let measure = |volts: f64| {
        let mut world = PrepareMeasureWorld::new(&spec, 32).unwrap();
        world.set_controller(&[volts]).unwrap();
        let mut stats = LinkStats::new(1, 32);
        let mut out = NodeOutput::default();
        world.run_until(20_000_000_000, &mut out);
        stats.add(&out.clicks, world.source());
        stats.finish(world.source());
        qber(&stats, Basis::Z)
    };
    let (untouched, s0) = measure(0.0);
    assert_within_5_sigma("uncompensated", untouched, 0.5, s0);
    let (compensated, s1) = measure(-1.0);
    assert!(
        compensated < 5.0 * s1.max(1e-3),
        "compensated QBER {compensated}"
    );
    let (doubled, s2) = measure(1.0);
    assert!(doubled > 1.0 - 5.0 * s2.max(1e-3), "doubled QBER {doubled}");
}

#[test]
fn full_intercept_resend_gives_a_quarter_plus_half_the_misalignment() {
    for (fraction, e_d) in [(1.0, 0.0), (1.0, 0.02), (0.5, 0.0)] {
        let mut spec = weak_link();
        spec.fiber.misalignment = e_d;
        spec.eve.intercept_fraction = fraction;
        let (_, stats) = run(&spec, 33, 0.05);
        let expected = (1.0 - fraction) * e_d + fraction * (0.25 + e_d / 2.0);
        for basis in [Basis::Z, Basis::X] {
            let (e, s) = qber(&stats, basis);
            assert_within_5_sigma(&format!("f={fraction} e_d={e_d} {basis:?}"), e, expected, s);
        }
    }
}

/// Gain `Q = Y0 + 1 - e^{-ημ}` and error rate `E = (e0 Y0 + e_d (1 - e^{-ημ})) / Q` of the GYS set.
fn gys_expected(mu: f64, distance_km: f64) -> (f64, f64) {
    let eta = GYS_ETA_BOB * 10f64.powf(-GYS_LOSS_DB_PER_KM * distance_km / 10.0);
    let signal = 1.0 - (-eta * mu).exp();
    let q = GYS_Y0 + signal;
    (q, (0.5 * GYS_Y0 + GYS_E_D * signal) / q)
}

#[test]
fn gys_gains_and_error_rates_match_the_decoy_state_formulas() {
    // Emulated seconds chosen so each distance collects about 10^6 signal detections: σ(E) ≈ 0.02 %.
    for (distance_km, seconds) in [(0.0, 32.0), (50.0, 480.0), (100.0, 5600.0)] {
        let spec = LinkPreset::Gys.spec(distance_km);
        let (world, stats) = run(&spec, 34, seconds);
        let pulses = world.pulses() as f64;
        let mut checked = 0;
        for (class, intensity) in spec.source.intensities.iter().enumerate() {
            let mu = intensity.mean_photon_number;
            let (q, e) = gys_expected(mu, distance_km);
            // The class's pulse count is binomial around its expectation: include that spread.
            let share = world.source().key_share(class);
            let sent = pulses * share;
            if sent * q < 100.0 {
                continue; // too few expected clicks for a Gaussian tolerance (the vacuum, near)
            }
            let gain = stats.clicked_slots[class] as f64 / sent;
            let sigma = (q * (1.0 - q) / sent + q * q * (1.0 - share) / sent).sqrt();
            assert_within_5_sigma(&format!("Q(μ={mu}) at {distance_km} km"), gain, q, sigma);
            let (measured_e, sigma_e, _) = qber_both_bases(&stats, class);
            assert_within_5_sigma(
                &format!("E(μ={mu}) at {distance_km} km"),
                measured_e,
                e,
                sigma_e,
            );
            checked += 1;
        }
        assert!(
            checked >= 2,
            "signal and decoy must be checked at {distance_km} km"
        );
    }
}

#[test]
fn runs_are_reproducible_by_seed() {
    let spec = LinkPreset::Snspd.spec(20.0);
    let output = |seed| {
        let mut world = PrepareMeasureWorld::new(&spec, seed).unwrap();
        let mut out = NodeOutput::default();
        world.run_until(1_000_000_000, &mut out);
        out
    };
    assert_eq!(output(5), output(5));
    assert_ne!(output(5).tag_times_ps, output(6).tag_times_ps);
}

#[test]
fn link_specs_load_from_json_and_refuse_unknown_keys() {
    let spec = LinkPreset::IngaasGated.spec(30.0);
    let text = serde_json::to_string(&spec).unwrap();
    let back: LinkSpec = serde_json::from_str(&text).unwrap();
    assert_eq!(back, spec);
    let typo = text.replacen("\"length_km\"", "\"lenght_km\"", 1);
    let err = serde_json::from_str::<LinkSpec>(&typo)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `lenght_km`"), "{err}");
}
