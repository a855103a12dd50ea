//! The `qkd` command line as users and scripts see it.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn qkd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qkd"))
        .args(args)
        .output()
        .expect("the qkd binary runs")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = qkd(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

#[test]
fn emulate_json_has_the_contracted_fields() {
    let report = json(&[
        "emulate",
        "--preset",
        "snspd",
        "--distance-km",
        "50",
        "--seconds",
        "0.01",
        "--seed",
        "3",
        "--json",
    ]);
    for field in [
        "pulses",
        "detections",
        "double_clicks",
        "gain",
        "qber_z",
        "qber_x",
        "wall_s",
        "events_per_s",
    ] {
        assert!(report.get(field).is_some(), "missing {field}");
    }
    for detector in ["H", "V", "D", "A"] {
        assert!(report["detections"][detector].as_u64().unwrap() > 0);
    }
    // 100 MHz for 10 ms, less the pulses still in 50 km of fiber (245 µs).
    assert_eq!(report["pulses"].as_u64().unwrap(), 1_000_000 - 24_485);
    // 1 − exp(−μ η t), μ = 0.6, η t = 0.8 · 0.9 · 0.1, less a few % to the 30 ns dead time.
    let gain = report["gain"].as_f64().unwrap();
    assert!(gain > 0.038 && gain < 0.0432, "gain {gain}");
}

#[test]
fn emulate_is_deterministic_by_seed() {
    let run = |seed: &str| {
        let mut r = json(&["emulate", "--seconds", "0.005", "--seed", seed, "--json"]);
        let obj = r.as_object_mut().unwrap();
        obj.remove("wall_s");
        obj.remove("events_per_s");
        r
    };
    assert_eq!(run("9"), run("9"));
    assert_ne!(run("9"), run("10"));
}

#[test]
fn full_intercept_resend_shows_a_quarter_qber() {
    let report = json(&[
        "emulate",
        "--distance-km",
        "10",
        "--seconds",
        "0.01",
        "--eve-fraction",
        "1",
        "--json",
    ]);
    let qber = report["qber_z"].as_f64().unwrap();
    assert!((qber - 0.255).abs() < 0.01, "{qber}");
}

#[test]
fn bad_input_is_refused_naming_the_flag_and_range() {
    for (args, message) in [
        (
            vec!["--distance-km", "-5"],
            "--distance-km: -5 km is outside the allowed range [0, 20000] km",
        ),
        (vec!["--mu", "NaN"], "--mu: NaN is not a value"),
        (
            vec!["--eve-fraction", "1.5"],
            "--eve-fraction: 1.5 is outside the allowed range [0, 1]",
        ),
        (vec!["--seconds", "0"], "--seconds: 0 s is outside"),
        (
            vec!["--preset", "nope"],
            "unknown preset `nope`; known presets: gys, snspd, ingaas-free, ingaas-gated",
        ),
    ] {
        let mut full = vec!["emulate"];
        full.extend(args);
        let out = qkd(&full);
        assert_eq!(out.status.code(), Some(2), "{full:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{full:?}: {stderr}");
        assert!(out.stdout.is_empty(), "nothing on stdout on error");
    }
}

#[test]
fn tags_inspect_reads_an_emulated_recording_with_the_contracted_fields() {
    let dir = std::env::temp_dir().join(format!("qkd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("run.ptu");
    let path = file.to_str().unwrap();
    let run = json(&[
        "emulate",
        "--seconds",
        "0.002",
        "--distance-km",
        "10",
        "--record",
        path,
        "--json",
    ]);
    let summary = json(&["tags", "inspect", path, "--json"]);
    assert_eq!(summary["record_type"], "0x00010207");
    assert_eq!(summary["mode"], "T2");
    assert_eq!(summary["resolution_ps"], 1.0);
    let photons: u64 = summary["channels"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let syncs = summary["sync_events"].as_u64().unwrap();
    assert_eq!(photons + syncs, run["tags"].as_u64().unwrap());
    for field in [
        "records",
        "markers",
        "overflow_records",
        "first_ps",
        "last_ps",
    ] {
        assert!(summary.get(field).is_some(), "missing {field}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tags_inspect_refuses_a_damaged_file_with_the_offset() {
    let dir = std::env::temp_dir().join(format!("qkd-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cut.ptu");
    let path = file.to_str().unwrap();
    json(&["emulate", "--seconds", "0.001", "--record", path, "--json"]);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
    let out = qkd(&["tags", "inspect", path]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("truncated") && stderr.contains("byte offset"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn link_gives_matching_keys_at_50_km_with_the_contracted_fields() {
    let report = json(&["link", "--seconds", "0.7", "--json"]);
    for field in [
        "distance_km",
        "seconds",
        "pulses",
        "detections",
        "sifted_bits",
        "qber_z",
        "qber_x",
        "ec_efficiency",
        "disclosed_bits",
        "secret_bits",
        "secret_key_rate_bps",
        "blocks",
        "aborted_blocks",
        "keys_match",
        "wall_s",
    ] {
        assert!(report.get(field).is_some(), "missing {field}");
    }
    assert_eq!(report["keys_match"], true);
    assert!(report["secret_bits"].as_u64().unwrap() > 50_000);
    let f = report["ec_efficiency"].as_f64().unwrap();
    assert!(f > 1.0 && f < 1.1, "efficiency {f}");
    let qber = report["qber_z"].as_f64().unwrap();
    assert!((qber - 0.01).abs() < 0.002, "qber {qber}");
}

#[test]
fn link_with_a_full_intercept_resend_eavesdropper_yields_no_key() {
    let report = json(&["link", "--seconds", "0.7", "--eve-fraction", "1", "--json"]);
    assert_eq!(report["secret_bits"], 0);
    assert!(report["blocks"].as_u64().unwrap() >= 1);
    assert_eq!(report["blocks"], report["aborted_blocks"]);
    assert!(report["qber_x"].as_f64().unwrap() > 0.2);
}

#[test]
fn link_is_deterministic_by_seed() {
    let run = || {
        let mut r = json(&["link", "--seconds", "0.7", "--seed", "4", "--json"]);
        r.as_object_mut().unwrap().remove("wall_s");
        r
    };
    assert_eq!(run(), run());
}
