//! The `qkd` command line as users and scripts see it.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[path = "common/cli.rs"]
mod cli;
use cli::{field, json, qkd, refused};

#[path = "../../tests/bounds/lim2014.rs"]
mod lim2014;

/// Bits of every key returned to authentication (the node's four seals' pads).
const AUTH_REFILL_BITS: u64 = 512;
/// Reconciliation inefficiency the node assumes when it decides whether a block is worth
/// correcting, and the least error rate it plans for.
const EXPECTED_EC_INEFFICIENCY: f64 = 1.2;
const MIN_QBER_ESTIMATE: f64 = 0.002;

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
    // 1 − exp(−μ η t), μ = 0.6, η t = 0.8 · 0.9 · 0.1, times the chance the detector a photon
    // reaches is live. A click blocks the next 2 slots (30 ns dead time, 10 ns slots; the detector
    // is live again when the third arrives), so detector d is dead in a share m_d · 2 slots of
    // the slots, m_d its clicks per slot; photons reach it in proportion to its clicks.
    let pulses = report["pulses"].as_f64().unwrap();
    let clicks: Vec<f64> = ["H", "V", "D", "A"]
        .iter()
        .map(|d| report["detections"][d].as_f64().unwrap() / pulses)
        .collect();
    let total: f64 = clicks.iter().sum();
    let live: f64 = clicks.iter().map(|m| m / total * (1.0 - 2.0 * m)).sum();
    let expected = (1.0 - (-0.6f64 * 0.8 * 0.9 * 0.1).exp()) * live;
    // Binomial over the signal pulses (60 % of all).
    let sigma = (expected * (1.0 - expected) / (0.6 * pulses)).sqrt();
    let gain = report["gain"].as_f64().unwrap();
    assert!(
        (gain - expected).abs() < 5.0 * sigma,
        "gain {gain}, expected {expected} ± {sigma}"
    );
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
        (
            vec!["--mu", "NaN"],
            "--mu: NaN is not a number; the allowed range is [0, 100]",
        ),
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
        refused(&full, message);
    }
}

#[test]
fn link_flags_are_refused_naming_what_is_wrong() {
    for (args, message) in [
        (
            vec!["--drift-rate", "-1"],
            "--drift-rate: -1 rad/√s is outside the allowed range [0, 100] rad/√s",
        ),
        (
            vec!["--reference-share", "2"],
            "--reference-share sets up polarization tracking: give --track too",
        ),
        (
            vec!["--controller", "paddles"],
            "--controller sets up polarization tracking: give --track too",
        ),
        (
            vec!["--track", "--reference-share", "2"],
            "--reference-share: 2 is outside the allowed range [0.001, 0.5]",
        ),
    ] {
        let mut full = vec!["link"];
        full.extend(args);
        refused(&full, message);
    }
}

#[test]
fn an_os_error_is_printed_once() {
    let out = qkd(&["calibrate", "--load", "/nonexistent/calibration.json"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
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
fn recordings_are_reproducible_and_read_as_an_independent_reader_reads_them() {
    // tests/data/ptu holds three recordings and, in expected.json, what the Python package
    // ptufile (cross-checked by plain struct decoding) read from them (see its README).
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/ptu");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("expected.json")).unwrap()).unwrap();
    let dir = std::env::temp_dir().join(format!("qkd-cli-ptu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, args) in [
        ("snspd-10km-seed7.ptu", ["snspd", "10", "0.002", "7"]),
        (
            "ingaas-gated-25km-seed3.ptu",
            ["ingaas-gated", "25", "0.002", "3"],
        ),
        ("gys-5km-seed11.ptu", ["gys", "5", "0.01", "11"]),
    ] {
        let stored = data.join(name);
        let again = dir.join(name);
        let [preset, km, seconds, seed] = args;
        json(&[
            "emulate",
            "--preset",
            preset,
            "--distance-km",
            km,
            "--seconds",
            seconds,
            "--seed",
            seed,
            "--record",
            again.to_str().unwrap(),
            "--json",
        ]);
        assert!(
            std::fs::read(&again).unwrap() == std::fs::read(&stored).unwrap(),
            "{name}: the same seed recorded other bytes"
        );
        let ours = json(&["tags", "inspect", stored.to_str().unwrap(), "--json"]);
        let theirs = &expected[name];
        for field in [
            "record_type",
            "mode",
            "records",
            "resolution_ps",
            "channels",
            "sync_events",
            "markers",
            "overflow_records",
            "first_ps",
            "last_ps",
        ] {
            assert_eq!(ours[field], theirs[field], "{name}: {field}");
        }
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
    let f = report["ec_efficiency"].as_f64().unwrap();
    assert!(f > 1.0 && f < 1.1, "efficiency {f}");
    let qber = report["qber_z"].as_f64().unwrap();
    // 10^6 key bits at the preset's 1 % misalignment: binomial σ = 10^-4.
    assert!((qber - 0.01).abs() < 5e-4, "qber {qber}");
    let details = report["block_details"].as_array().unwrap();
    assert_eq!(details.len() as u64, report["blocks"].as_u64().unwrap());
    let lengths = check_block_details(&report, Protocol::Bb84);
    // The delivered key is every block's length less its refill.
    let delivered: u64 = lengths.iter().map(|l| l - AUTH_REFILL_BITS).sum();
    assert!(delivered > 0);
    assert_eq!(report["secret_bits"].as_u64().unwrap(), delivered);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Bb84,
    Bbm92,
}

/// Recomputes every block's bound from its reported inputs with the separate implementation of
/// `lim2014.rs` and requires the reported outputs, and the key length to the bit. Returns the
/// lengths of the blocks that gave a key.
fn check_block_details(report: &serde_json::Value, protocol: Protocol) -> Vec<u64> {
    let mut lengths = Vec::new();
    for d in report["block_details"].as_array().unwrap() {
        let (eps_sec, eps_cor) = (field(d, "eps_sec"), field(d, "eps_cor"));
        let n = field(d, "key_bits");
        let (k, errors) = (field(d, "test_bits"), field(d, "test_errors"));
        let bound_with = |leak: f64| match protocol {
            Protocol::Bb84 => {
                let classes = d["intensities"].as_array().unwrap();
                assert_eq!(classes.len(), 3);
                let per =
                    |name: &str| -> [f64; 3] { std::array::from_fn(|i| field(&classes[i], name)) };
                let decoys = lim2014::Decoys {
                    mu: per("mu"),
                    p: per("probability"),
                    eps_sec,
                    eps_cor,
                };
                let key = lim2014::Counts {
                    n: per("key_detections"),
                    m: [0.0; 3],
                };
                let test = lim2014::Counts {
                    n: per("test_detections"),
                    m: per("test_errors"),
                };
                // Integer counts, exact in f64: the classes add up to the block's totals.
                assert!((per("key_detections").iter().sum::<f64>() - n).abs() < 0.5);
                assert!((per("test_errors").iter().sum::<f64>() - errors).abs() < 0.5);
                let b = decoys.bound(&key, &test, leak);
                // Float evaluations in another order agree to a few ulps of counts ≤ 10^9
                // weighted by e^μ/p ≤ 10^3.
                for (name, ours) in [
                    ("s0_key", b.s0_key),
                    ("s1_key", b.s1_key),
                    ("s1_test", b.s1_test),
                    ("v1_test", b.v1_test),
                ] {
                    assert!((field(d, name) - ours).abs() < 1e-3, "{name}: {d}");
                }
                assert!((field(d, "phase_error") - b.phase_error).abs() < 1e-12);
                b.length
            }
            Protocol::Bbm92 => lim2014::entangled(n, k, errors, leak, eps_sec, eps_cor),
        };
        let disclosed = field(d, "disclosed_bits");
        let secret = d["secret_bits"].as_u64().unwrap();
        match d["aborted"].as_str() {
            None => {
                let length = lim2014::bits(bound_with(disclosed)).unwrap();
                assert!(length > AUTH_REFILL_BITS);
                assert_eq!(secret, length, "{d}");
                lengths.push(length);
            }
            Some("the bound leaves no key") => {
                // Refused before correction: at the expected correction cost nothing would
                // remain beyond the refill (or the error rate is past any key).
                assert_eq!((secret, disclosed), (0, 0.0), "{d}");
                let e = (errors / k).max(MIN_QBER_ESTIMATE);
                let expected = bound_with(EXPECTED_EC_INEFFICIENCY * n * lim2014::h(e));
                assert!(
                    e >= 0.25 || lim2014::bits(expected).is_none_or(|l| l <= AUTH_REFILL_BITS),
                    "refused though the bound allows {expected}: {d}"
                );
            }
            Some("no key after error correction") => {
                assert_eq!(secret, 0);
                assert!(lim2014::bits(bound_with(disclosed)).is_none_or(|l| l <= AUTH_REFILL_BITS));
            }
            Some(other) => unreachable!("block aborted for {other}: {d}"),
        }
    }
    lengths
}

/// Runs `link` with each eavesdropper share and whether it should key: the key per block follows
/// the bound to the bit (`check_block_details`) and falls with the share; the denied ones are
/// denied by the bound at error rates below 11 %, not by a QBER cut.
fn eavesdropper_sweep(link: &[&str], protocol: Protocol, shares: &[(&str, bool)]) {
    let mut last = u64::MAX;
    for &(share, keyed) in shares {
        let mut args = link.to_vec();
        args.extend(["--eve-fraction", share, "--json"]);
        let report = json(&args);
        let lengths = check_block_details(&report, protocol);
        let per_block = lengths.iter().sum::<u64>() / lengths.len().max(1) as u64;
        assert_eq!(!lengths.is_empty(), keyed, "eve {share}: {lengths:?}");
        assert!(
            per_block < last || per_block == 0,
            "eve {share}: key did not fall"
        );
        last = per_block;
        assert_eq!(report["keys_match"], keyed);
        let blocks = report["blocks"].as_u64().unwrap();
        assert!(blocks >= 1);
        if keyed {
            assert_eq!(report["aborted_blocks"], 0, "eve {share}: {report}");
        } else {
            assert_eq!(report["secret_bits"], 0);
            assert_eq!(report["abort_reasons"]["the bound leaves no key"], blocks);
            let qber = report["qber_x"].as_f64().unwrap();
            assert!(qber < 0.11, "eve {share}: QBER {qber}");
        }
    }
}

#[test]
fn partial_eavesdroppers_are_denied_by_the_bound_and_key_falls_with_their_share() {
    // Intercept-resend on a share of the pulses raises the test-basis errors by a quarter of it
    // and disturbs the decoy statistics; the bound's phase error grows faster still. The shares
    // keyed are 0.02 apart: a block's key spreads by some 10 kbit with the test-bit sample (the
    // protocol's randomness, not the seed), and 0.01 apart the expected fall is only ~3 σ of it,
    // 0.02 apart ~6 σ.
    eavesdropper_sweep(
        &["link", "--seconds", "0.7"],
        Protocol::Bb84,
        &[
            ("0", true),
            ("0.02", true),
            ("0.1", false),
            ("0.2", false),
            ("0.35", false),
        ],
    );
}

#[test]
fn bbm92_eavesdroppers_cost_key_by_the_bound_until_none_is_left() {
    // Without decoys to unmask her, Eve on B's photons only adds f/4 errors to a baseline of
    // some 2.4 %: the entangled bound keys through f = 0.2 (7 %) and not at 0.35 (10.5 %).
    eavesdropper_sweep(
        &[
            "link",
            "--protocol",
            "bbm92",
            "--seconds",
            "1",
            "--block-bits",
            "100000",
        ],
        Protocol::Bbm92,
        &[("0", true), ("0.1", true), ("0.2", true), ("0.35", false)],
    );
}

#[test]
fn bbm92_link_gives_matching_keys_of_its_bounds_length() {
    let report = json(&[
        "link",
        "--protocol",
        "bbm92",
        "--seconds",
        "1",
        "--block-bits",
        "100000",
        "--json",
    ]);
    assert_eq!(report["protocol"], "bbm92");
    assert_eq!(report["keys_match"], true);
    let lengths = check_block_details(&report, Protocol::Bbm92);
    assert_eq!(
        lengths.len() as u64,
        report["keys_compared"].as_u64().unwrap()
    );
    assert!(lengths.len() >= 2);
    // The two arms' misalignment and multi-pair coincidences: a few per cent, and Z and X alike.
    let (z, x) = (
        report["qber_z"].as_f64().unwrap(),
        report["qber_x"].as_f64().unwrap(),
    );
    assert!(z > 0.005 && z < 0.05 && x > 0.005 && x < 0.05, "{z} {x}");
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
fn link_world_is_deterministic_by_seed_and_its_protocol_randomness_is_not() {
    // The seed drives the emulated world; Alice's pattern and the protocol's randomness (hash
    // seeds, the squash coin on double clicks) come from the operating system in every run. The
    // pulses are the world's alone; the detections depend on the pattern's intensity draws, so
    // they agree only within their Poisson spread (σ = √n for each run).
    let run = || json(&["link", "--seconds", "0.7", "--seed", "4", "--json"]);
    let (a, b) = (run(), run());
    for field in ["pulses", "distance_km", "seed"] {
        assert_eq!(a[field], b[field], "{field}");
    }
    let (da, db) = (
        a["detections"].as_f64().unwrap(),
        b["detections"].as_f64().unwrap(),
    );
    assert!((da - db).abs() < 5.0 * (da + db).sqrt(), "{da} vs {db}");
    for r in [&a, &b] {
        assert_eq!(r["keys_match"], true);
        assert!(r["keys_compared"].as_u64().unwrap() >= 1);
    }
}

fn plan(preset: &str, km: f64) -> serde_json::Value {
    json(&[
        "plan",
        "--preset",
        preset,
        "--distance-km",
        &km.to_string(),
        "--json",
    ])
}

fn entropy(p: f64) -> f64 {
    if p <= 0.0 || p >= 1.0 {
        0.0
    } else {
        -p * p.log2() - (1.0 - p) * (1.0 - p).log2()
    }
}

/// Lo-Ma-Chen's asymptotic decoy rate for the GYS set (reference/numbers.md), q = 1/2, f = 1.22.
fn gys_rate(eta: f64, mu: f64) -> f64 {
    let (y0, e_d, e0, f) = (1.7e-6, 0.033, 0.5, 1.22);
    let q_mu = y0 + 1.0 - (-eta * mu).exp();
    let e_mu = (e0 * y0 + e_d * (1.0 - (-eta * mu).exp())) / q_mu;
    let y1 = y0 + eta;
    let e1 = (e0 * y0 + e_d * eta) / y1;
    let q1 = y1 * mu * (-mu).exp();
    (0.5 * (q1 * (1.0 - entropy(e1)) - f * q_mu * entropy(e_mu))).max(0.0)
}

#[test]
fn plan_reproduces_the_gys_closed_form_and_its_optimal_mean_photon_number() {
    for km in [0.0, 50.0, 100.0] {
        let p = plan("gys", km);
        for field in [
            "distance_km",
            "mu",
            "gain",
            "qber",
            "secret_key_rate_per_pulse",
            "secret_key_rate_bps",
            "plob_bound_per_pulse",
        ] {
            assert!(p[field].is_number(), "{km} km: missing {field}");
        }
        let eta = 0.045 * 10f64.powf(-0.021 * km);
        assert!((p["transmittance"].as_f64().unwrap() / eta - 1.0).abs() < 1e-12);
        let mu = p["mu"].as_f64().unwrap();
        let rate = p["secret_key_rate_per_pulse"].as_f64().unwrap();
        let expected = gys_rate(eta, mu);
        assert!(
            (rate / expected - 1.0).abs() < 1e-9,
            "{km} km: {rate} vs {expected}"
        );
        // The optimiser's μ is a maximum of the closed form, to its scan resolution.
        for other in [0.8 * mu, 0.9 * mu, 1.1 * mu, 1.25 * mu] {
            assert!(
                gys_rate(eta, other) <= rate * (1.0 + 1e-6),
                "{km} km: μ {other} beats {mu}"
            );
        }
        assert!((0.4..0.6).contains(&mu), "{km} km: μ {mu}");
        assert!((p["secret_key_rate_bps"].as_f64().unwrap() / (rate * 2e6) - 1.0).abs() < 1e-9);
    }
    // Lo-Ma-Chen's curve for this set ends near 140 km.
    assert!(
        plan("gys", 130.0)["secret_key_rate_per_pulse"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        plan("gys", 160.0)["secret_key_rate_per_pulse"]
            .as_f64()
            .unwrap()
            <= 0.0
    );
}

#[test]
fn no_planned_rate_exceeds_the_repeaterless_bound() {
    let mut finite_rates = 0;
    for preset in ["gys", "snspd", "ingaas-free", "ingaas-gated"] {
        for km in [0.0, 1.0, 10.0, 50.0, 100.0, 200.0, 300.0] {
            let p = plan(preset, km);
            let bound = p["plob_bound_per_pulse"].as_f64().unwrap();
            let eta = p["transmittance"].as_f64().unwrap();
            assert!((bound + (1.0 - eta).log2()).abs() < 1e-12 * bound.max(1e-300));
            let asymptotic = p["secret_key_rate_per_pulse"].as_f64().unwrap();
            assert!(asymptotic >= 0.0 && asymptotic <= bound, "{preset} {km} km");
            // `finite_key` is always there: null when finite blocks give no key.
            let finite = p.get("finite_key").expect("finite_key field");
            if !finite.is_null() {
                let rate = finite["secret_key_rate_per_pulse"].as_f64().unwrap();
                assert!(
                    rate > 0.0 && rate <= asymptotic,
                    "{preset} {km} km: finite {rate}"
                );
                finite_rates += 1;
            }
        }
    }
    // Most of the 28 presets and distances have a finite-key rate: the check above ran.
    assert!(finite_rates >= 14, "only {finite_rates} finite-key rates");
}

#[test]
fn plan_refuses_an_unknown_preset_and_a_negative_distance() {
    for args in [
        &["plan", "--preset", "laser-pointer"][..],
        &["plan", "--distance-km", "-5"][..],
    ] {
        let out = qkd(args);
        assert!(!out.status.success());
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
}

#[test]
fn bench_ec_and_pa_report_the_contracted_fields() {
    let ec = json(&[
        "bench", "ec", "--qber", "0.03", "--bits", "20000", "--frames", "4", "--json",
    ]);
    for field in [
        "efficiency",
        "round_trips",
        "frame_error_rate",
        "mbit_per_s",
    ] {
        assert!(ec[field].is_number(), "bench ec: missing {field}");
    }
    // Cascade cannot beat the Shannon limit, and its frames must all be corrected here.
    let f = ec["efficiency"].as_f64().unwrap();
    assert!(f > 1.0 && f < 1.3, "efficiency {f}");
    assert!(ec["frame_error_rate"].as_f64().unwrap() <= 0.0);
    let pa = json(&["bench", "pa", "--bits", "200000", "--repeat", "1", "--json"]);
    assert!(pa["mbit_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(pa["output_bits"].as_u64().unwrap(), 100_000);
    assert_eq!(pa["rows_checked"].as_u64().unwrap(), 64);
}

#[test]
fn bbm92_refuses_flags_its_bench_cannot_honour() {
    for (flag, value) in [("--mu", "0.5"), ("--drift-rate", "1")] {
        let out = qkd(&[
            "link",
            "--protocol",
            "bbm92",
            flag,
            value,
            "--seconds",
            "0.01",
        ]);
        assert!(!out.status.success(), "{flag} was accepted");
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains(flag));
    }
}

#[test]
fn calibrate_finds_the_emulated_cables_intensities_and_alignment() {
    let dir = std::env::temp_dir().join(format!("qkd-calibrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("polarization.json");
    let saved_path = saved.to_str().unwrap();
    let bench = [
        "calibrate",
        "--preset",
        "ingaas-gated",
        "--distance-km",
        "25",
        "--light-seconds",
        "0.2",
    ];
    let report = json(
        &[
            &bench[..],
            &[
                "--dark-seconds",
                "2",
                "--cable-delays-ps",
                "0,1900,-800,3100,450",
                "--save",
                saved_path,
                "--json",
            ],
        ]
        .concat(),
    );
    // 1 GHz slots: the delays are found in the slot and whole slots from the source's pattern.
    assert_eq!(report["whole_slots"], serde_json::json!([2, -1, 3, 0]));
    let delays: Vec<i64> = report["slot_delays_ps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    for (found, cable) in delays.iter().zip([1900, -800, 3100, 450]) {
        assert!((found - cable).abs() <= 1, "{delays:?}");
    }
    assert_eq!(report["detectors"].as_array().unwrap().len(), 4);
    for class in report["intensities"]["classes"].as_array().unwrap() {
        assert!(class["flag"].is_null(), "{class}");
    }
    let floor = report["polarization"]["qber_floor"].as_f64().unwrap();
    assert!(floor < 0.05, "aligned QBER {floor}");
    assert_eq!(report["flags"], serde_json::json!([]));
    assert_eq!(report["polarization"]["start"], "aligned");
    assert!(saved.exists());

    // The same bench again, started from the saved calibration: no scan, a fraction of the time.
    let again = |seed: &str| {
        let load = [
            "--dark-seconds",
            "0.2",
            "--seed",
            seed,
            "--load",
            saved_path,
            "--json",
        ];
        qkd(&[&bench[..], &load[..]].concat())
    };
    let out = again("1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(resumed["polarization"]["start"], "loaded");
    let aligned_s = report["polarization"]["link_s"].as_f64().unwrap();
    let loaded_s = resumed["polarization"]["link_s"].as_f64().unwrap();
    assert!(
        loaded_s < aligned_s / 10.0,
        "loaded in {loaded_s} s, aligned in {aligned_s} s"
    );
    // Another seed is another emulated controller (its serial carries the seed): refused.
    let other = again("2");
    assert_eq!(other.status.code(), Some(2));
    let message = String::from_utf8_lossy(&other.stderr);
    assert!(
        message.contains("belongs to") && message.contains("recalibrate"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).ok();

    let out = qkd(&["calibrate", "--dark-seconds", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dark-seconds"));
}

#[test]
fn sim_serve_links_every_device_and_cleans_up() {
    let dir = std::env::temp_dir().join(format!("qkd-cli-sim-{}", std::process::id()));
    let dir_text = dir.to_string_lossy().into_owned();
    let out = qkd(&[
        "sim",
        "serve",
        "--pty-dir",
        &dir_text,
        "--for-seconds",
        "0.2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in ["source", "detectors", "epc", "mpc320", "oz-epc"] {
        let link = format!("{dir_text}/{name} -> /dev/pts/");
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(name) && l.contains(&link)),
            "no link for {name} in:\n{stdout}"
        );
        assert!(!dir.join(name).exists(), "{name}'s link outlived the host");
    }
    let refused = qkd(&[
        "sim",
        "serve",
        "--pty-dir",
        &dir_text,
        "--distance-km",
        "-1",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--distance-km"));
}

#[test]
fn devices_probe_reports_each_configured_device() {
    let dir = std::env::temp_dir().join(format!("qkd-cli-probe-{}", std::process::id()));
    let dir_text = dir.to_string_lossy().into_owned();
    let mut host = Command::new(env!("CARGO_BIN_EXE_qkd"))
        .args([
            "sim",
            "serve",
            "--pty-dir",
            &dir_text,
            "--distance-km",
            "10",
            "--for-seconds",
            "20",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !dir.join("oz-epc").exists() {
        assert!(
            started.elapsed().as_secs() < 10,
            "the host never linked its devices"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let config = dir.with_extension("json");
    let link = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let devices = serde_json::json!({ "devices": {
        "source": { "kind": "source-board", "port": link("source"), "repetition_rate_hz": 1e8,
                    "retries": 8 },
        "detectors": { "kind": "detector-board", "port": link("detectors"), "timeout_ms": 5000 },
        "squeezers": { "kind": "polarization-board", "port": link("epc"), "period_mv": 4000.0,
                       "retries": 8 },
        "paddles": { "kind": "mpc320", "port": link("mpc320"), "retries": 8 },
        "epc": { "kind": "oz-epc", "port": link("oz-epc"), "serial": "EPC-7", "retries": 8 },
        "missing": { "kind": "oz-epc", "port": "/dev/qkd-no-such-port", "retries": 0 }
    }});
    std::fs::write(&config, devices.to_string()).unwrap();
    let out = qkd(&[
        "devices",
        "probe",
        "--config",
        &config.to_string_lossy(),
        "--json",
    ]);
    host.kill().unwrap();
    host.wait().unwrap();
    assert!(
        !out.status.success(),
        "a missing device must fail the probe"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 of 6 devices did not answer: missing")
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let probes = report["devices"].as_array().unwrap();
    let probe = |name: &str| probes.iter().find(|p| p["name"] == name).unwrap().clone();
    for name in ["source", "detectors", "squeezers", "paddles", "epc"] {
        assert_eq!(probe(name)["ok"], true, "{}", probe(name));
    }
    assert!(
        probe("paddles")["identity"]
            .as_str()
            .unwrap()
            .contains("MPC320")
    );
    assert!(probe("epc")["identity"].as_str().unwrap().contains("EPC-7"));
    assert_eq!(
        probe("squeezers")["readings"],
        serde_json::json!([0.0, 0.0, 0.0, 0.0])
    );
    let missing = probe("missing");
    assert_eq!(missing["ok"], false);
    assert!(
        missing["error"]
            .as_str()
            .unwrap()
            .contains("/dev/qkd-no-such-port")
    );
    // A malformed file is refused by name.
    std::fs::write(
        &config,
        r#"{"devices": {"x": {"kind": "mpc320", "port": "/dev/x", "bauds": 1}}}"#,
    )
    .unwrap();
    let bad = qkd(&["devices", "probe", "--config", &config.to_string_lossy()]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bauds"));
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_devices_file_without_devices_or_with_a_name_twice_is_refused() {
    let dir = std::env::temp_dir().join(format!("qkd-devices-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("devices.json");
    // No devices, or one name twice (JSON allows it; the first would go unused).
    for (text, message) in [
        (r#"{"devices": {}}"#, "no devices: name at least one"),
        (
            r#"{"devices": {"x": {"kind": "mpc320", "port": "/dev/a"},
                            "x": {"kind": "mpc320", "port": "/dev/b"}}}"#,
            "device `x` is named twice",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let bad = qkd(&["devices", "probe", "--config", &config.to_string_lossy()]);
        assert_eq!(bad.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(stderr.contains(message), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_recording_at_zero_km_holds_no_tag_before_its_start() {
    // Jitter puts the first photons of a 0 km link a few ps before the tagger's time 0: PTU
    // cannot hold them, so they are left out and counted.
    let dir = std::env::temp_dir().join(format!("qkd-zero-km-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("run.ptu");
    let path = file.to_str().unwrap();
    let run = json(&[
        "emulate",
        "--distance-km",
        "0",
        "--seconds",
        "0.01",
        "--record",
        path,
        "--json",
    ]);
    let summary = json(&["tags", "inspect", path, "--json"]);
    let photons: u64 = summary["channels"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let syncs = summary["sync_events"].as_u64().unwrap();
    assert!(photons > 0);
    let before_start = run["tags_before_start"].as_u64().unwrap();
    assert_eq!(
        photons + syncs + before_start,
        run["tags"].as_u64().unwrap(),
        "{summary}"
    );
    assert!(summary["first_ps"].as_i64().unwrap() >= 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_recording_larger_than_the_free_disk_is_refused_before_it_starts() {
    let dir = std::env::temp_dir().join(format!("qkd-big-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("run.ptu");
    // About 11 TB of tags at 50 km.
    let out = qkd(&[
        "emulate",
        "--seconds",
        "1e6",
        "--record",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("--record over --seconds 1000000: needs about")
            && error.contains("of disk at")
            && error.contains("free space of the file system"),
        "{error}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_benchmark_larger_than_the_memory_limit_is_refused_before_it_starts() {
    // Under a 2 GB address-space limit; Cascade needs ~14 GB for 10^8 bits, the PA ~6 GB for 2·10^8.
    for args in [
        "bench ec --bits 100000000 --frames 1",
        "bench pa --bits 200000000",
    ] {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v 2000000 && exec {} {args}",
                env!("CARGO_BIN_EXE_qkd")
            ))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args}");
        let error = String::from_utf8_lossy(&out.stderr);
        assert!(
            error.contains("needs about") && error.contains("ulimit -v"),
            "{args}: {error}"
        );
    }
    let out = qkd(&["bench", "ec", "--bits", "100000", "--frames", "1000000000"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--frames: 1000000000 is outside"));
}
