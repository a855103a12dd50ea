//! Polarization tracking on the emulated bench, both strategies and both actuator kinds, scored
//! by `qkd bench tracking` against the emulator's true rotations. Seeds are fixed; the bounds are
//! the targets the tracking issue sets.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/cli.rs"]
mod cli;
use cli::{field, json, qkd};

/// `qkd bench tracking --json ARGS…`.
fn tracking(args: &[&str]) -> serde_json::Value {
    json(&[&["bench", "tracking", "--json"], args].concat())
}

/// Mean added QBER under 0.5 % and full uptime; returns the report.
fn holds_against_drift(
    strategy: &str,
    controller: &str,
    drift: &str,
    seconds: &str,
) -> serde_json::Value {
    let report = tracking(&[
        "--seed",
        "3",
        "--strategy",
        strategy,
        "--controller",
        controller,
        "--drift-rate",
        drift,
        "--seconds",
        seconds,
    ]);
    for name in [
        "untracked_mean_qber",
        "mean_added_qber",
        "p99_added_qber",
        "uptime_fraction",
        "actuator_moves",
    ] {
        field(&report, name);
    }
    assert!(report["recovery_time_s"].is_null());
    let added = field(&report, "mean_added_qber");
    assert!(added < 0.005, "{strategy}/{controller}: added {added}");
    assert!(field(&report, "p99_added_qber") >= added);
    assert!(field(&report, "uptime_fraction") >= 0.99, "{report}");
    assert!(field(&report, "actuator_moves") > 0.0);
    report
}

/// Squeezers hold the target where the untracked link passes 10 % QBER.
fn squeezers_hold(strategy: &str) {
    let report = holds_against_drift(strategy, "squeezers", "0.3", "15");
    let untracked = field(&report, "untracked_max_qber");
    assert!(untracked > 0.10, "the drift never hurt: {report}");
}

#[test]
fn squeezers_follow_fast_drift_with_references() {
    squeezers_hold("reference");
}

#[test]
fn squeezers_follow_fast_drift_from_disclosed_bits_alone() {
    squeezers_hold("qber");
}

/// Paddles settle in 20 ms and travel at 200°/s: they hold the target at a third of the drift
/// (which takes minutes, not seconds, to pass 10 % untracked).
#[test]
fn paddles_follow_slower_drift_with_references() {
    holds_against_drift("reference", "paddles", "0.1", "12");
}

#[test]
fn paddles_follow_slower_drift_from_disclosed_bits_alone() {
    holds_against_drift("qber", "paddles", "0.1", "12");
}

fn recovery(strategy: &str, controller: &str, seed: &str) -> f64 {
    let report = tracking(&[
        "--strategy",
        strategy,
        "--controller",
        controller,
        "--seed",
        seed,
        "--drift-rate",
        "0.05",
        "--seconds",
        "3",
        "--step-rad",
        "1",
        "--step-at",
        "1",
    ]);
    field(&report, "recovery_time_s")
}

/// Recovery (added QBER back under 1 %) within `bound` of link time after a 1-radian step
/// (random axis), on three seeds. The tracking issue's target is 1 s; where the tracker does
/// much better, the bound is what it claims, so that losing it fails here.
fn recovers_within(strategy: &str, controller: &str, bound: f64) {
    for seed in ["1", "2", "3"] {
        let seconds = recovery(strategy, controller, seed);
        assert!(
            seconds < bound,
            "{strategy}/{controller}, seed {seed}: {seconds} s, claimed under {bound} s"
        );
    }
}

/// With reference states the tracker steers the measured correlations straight back (about
/// 0.05 s); from disclosed bits alone it probes its way back, still within a tenth of a second.
#[test]
fn squeezers_recover_from_a_one_radian_step_with_references() {
    recovers_within("reference", "squeezers", 0.1);
}

#[test]
fn squeezers_recover_from_a_one_radian_step_from_disclosed_bits() {
    recovers_within("qber", "squeezers", 0.1);
}

/// Paddles declare their optics: the tracker fits the fiber to a reading or two and moves
/// straight to the compensating angles (0.1–0.7 s, most of it travel at 200°/s).
#[test]
fn paddles_recover_from_a_one_radian_step_with_references() {
    recovers_within("reference", "paddles", 1.0);
}

#[test]
fn paddles_recover_from_a_one_radian_step_from_disclosed_bits() {
    recovers_within("qber", "paddles", 1.0);
}

#[test]
fn bad_tracking_flags_are_refused() {
    let out = qkd(&["bench", "tracking", "--step-at", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--step-at needs --step-rad"));
}

/// Through the polarization board's serial driver and a PTY the loop sees the same world and
/// the same detections as through the emulated controller: the figures agree closely.
#[test]
fn tracking_through_the_serial_board_matches_the_emulated_controller() {
    let args = ["--seed", "5", "--drift-rate", "0.3", "--seconds", "2"];
    let emulated = tracking(&args);
    let serial = tracking(&[&args[..], &["--serial"]].concat());
    assert_eq!(serial["serial"], true);
    let (a, b) = (
        field(&emulated, "mean_added_qber"),
        field(&serial, "mean_added_qber"),
    );
    assert!(b < 0.005, "through the serial board: {b}");
    // The board's DAC rounds each setting to 0.15 mV: the runs differ only by that.
    assert!((a - b).abs() < 0.001, "emulated {a} vs serial {b}");
}

/// `qkd link --distance-km 25 --json ARGS…`.
fn link(args: &[&str]) -> serde_json::Value {
    json(&[&["link", "--distance-km", "25", "--json"], args].concat())
}

/// `qkd link --track`: the fiber starts at a random rotation and drifts (0.1 rad/√s, an aerial
/// span's pace); Bob's tracker aligns on the reference slots his sift replies name, and every
/// batch measured before it is aligned is flagged to Alice and held out of the blocks. The key
/// that follows matches, and tracking adds less than the 1 % the recovery target counts as
/// recovered to the static link's mean QBER over both bases, the cost the tracker minimises
/// (both measured on millions of bits, so to better than 0.1 %; no basis can be below the static
/// floor by more than that, so the bound also keeps each basis under 2 %). Pattern and coins come
/// from the OS, so runs differ: over 24 runs the mean added 0.15 to 0.7 %, one basis at most
/// 1.04 %.
#[test]
fn the_link_holds_batches_until_tracking_has_aligned_then_makes_key() {
    let seconds = 6.0;
    let report = link(&[
        "--track",
        "--drift-rate",
        "0.1",
        "--seconds",
        &seconds.to_string(),
    ]);
    let alignment_s = field(&report["tracking"], "alignment_s");
    // One batch is 10 ms of link time: every batch of the alignment is held.
    let batches = seconds / 0.01;
    let held = field(&report, "held_batches");
    assert!(held >= (alignment_s / 0.01).floor(), "{report}");
    assert!(field(&report, "held_key_bits") > 0.0);
    assert!(held < batches, "tracking never resumed: {report}");
    assert_eq!(report["keys_match"], true);
    assert!(field(&report, "secret_bits") > 0.0, "{report}");
    let aligned = link(&["--seconds", "2"]);
    let added = ["qber_z", "qber_x"].map(|basis| field(&report, basis) - field(&aligned, basis));
    assert!(
        0.5 * (added[0] + added[1]) < 0.01,
        "QBER added by tracking (Z, X): {added:?}; tracked {report}, static {aligned}"
    );
}

#[test]
fn tracking_is_refused_on_the_entangled_link() {
    let out = qkd(&["link", "--protocol", "bbm92", "--track"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("BB84 link only"));
}
