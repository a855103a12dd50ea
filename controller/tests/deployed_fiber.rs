//! Deployed-fiber flags on `qkd plan`, `qkd emulate` and `qkd link`: Raman noise from classical
//! channels, PMD, extra loss, and the coexistence answer, checked against closed forms computed
//! here independently of the crate.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/cli.rs"]
mod cli;
use cli::{field as f, json, qkd, refused};

/// Raman noise photons per second at the receiver, Eraerds et al. 2010 (equal attenuation).
fn raman_photons(power_dbm: f64, km: f64, counter: bool, rho: f64, filter_nm: f64) -> f64 {
    let alpha = 0.2 * 10f64.ln() / 10.0;
    let p = 1e-3 * 10f64.powf(power_dbm / 10.0) * rho * filter_nm;
    let watts = if counter {
        p * (1.0 - (-2.0 * alpha * km).exp()) / (2.0 * alpha)
    } else {
        p * km * (-alpha * km).exp()
    };
    watts * 1550e-9 / (6.626_070_15e-34 * 299_792_458.0)
}

#[test]
fn plan_reports_raman_noise_as_the_closed_form_and_loses_key_to_it() {
    let base = [
        "plan",
        "--preset",
        "snspd",
        "--distance-km",
        "40",
        "--raman-coefficient",
        "3e-9",
        "--filter-nm",
        "0.2",
        "--json",
    ];
    let dark = json(&["plan", "--preset", "snspd", "--distance-km", "40", "--json"]);
    assert!(f(&dark, "raman_photons_per_s").abs() < 1e-30);
    for (direction, counter) in [("co", false), ("counter", true)] {
        let mut args = base.to_vec();
        args.extend([
            "--classical-power-dbm",
            "-20",
            "--classical-direction",
            direction,
        ]);
        let p = json(&args);
        let expected = raman_photons(-20.0, 40.0, counter, 3e-9, 0.2);
        let photons = f(&p, "raman_photons_per_s");
        assert!(
            (photons / expected - 1.0).abs() < 1e-9,
            "{direction}: {photons} vs {expected}"
        );
        // Clicks per 1 ns window: optics 0.8 × SNSPD 0.9 × photons/s × window.
        let clicks = f(&p, "raman_clicks_per_window");
        assert!((clicks / (0.72 * expected * 1e-9) - 1.0).abs() < 1e-9);
        assert!((f(&p, "detection_window_s") - 1e-9).abs() < 1e-21);
        assert!(f(&p, "background") > clicks && f(&p, "qber") > f(&dark, "qber"));
        assert!(
            f(&p["finite_key"], "secret_key_rate_bps")
                < f(&dark["finite_key"], "secret_key_rate_bps")
        );
    }
    // Extra loss is total loss in dB.
    let lossy = json(&[
        "plan",
        "--preset",
        "snspd",
        "--distance-km",
        "40",
        "--extra-loss-db",
        "3",
        "--json",
    ]);
    assert!((f(&lossy, "fiber_loss_db") - 11.0).abs() < 1e-9);
    assert!(
        (f(&lossy, "transmittance") / f(&dark, "transmittance") - 10f64.powf(-0.3)).abs() < 1e-12
    );
}

#[test]
fn coexistence_finds_the_largest_launch_power_that_still_keys() {
    let c = json(&[
        "plan",
        "--coexistence",
        "--preset",
        "snspd",
        "--distance-km",
        "50",
        "--json",
    ]);
    let directions = c["directions"].as_array().unwrap();
    assert_eq!(directions.len(), 2);
    assert!(f(&c, "dark_fiber_secret_key_rate_bps") > 0.0);
    for (d, name) in directions.iter().zip(["co", "counter"]) {
        assert_eq!(d["direction"], name);
        let max = f(d, "max_power_dbm");
        assert!(f(d, "secret_key_rate_bps") > 0.0);
        // 0.05 dB more and the same plan has no finite key any more; 0.05 dB less, it has.
        let plan_at = |power: f64| {
            let power = format!("{power:.2}");
            let plan = json(&[
                "plan",
                "--preset",
                "snspd",
                "--distance-km",
                "50",
                "--classical-power-dbm",
                &power,
                "--classical-direction",
                name,
                "--json",
            ]);
            (power, plan)
        };
        let (above, p) = plan_at(max + 0.05);
        assert!(
            p["finite_key"].is_null(),
            "{name} at {above} dBm still keys"
        );
        let (below, p) = plan_at(max - 0.05);
        assert!(
            !p["finite_key"].is_null(),
            "{name} at {below} dBm gives no key"
        );
    }
    // At 50 km the counter-propagating noise (summed over the whole span) is worse.
    assert!(f(&directions[1], "max_power_dbm") < f(&directions[0], "max_power_dbm"));
    // O-band quantum under C-band data: far quieter, far more power allowed.
    let o_band = json(&[
        "plan",
        "--coexistence",
        "--preset",
        "snspd",
        "--distance-km",
        "50",
        "--quantum-wavelength-nm",
        "1310",
        "--classical-wavelength-nm",
        "1550",
        "--json",
    ]);
    for (o, c) in o_band["directions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(directions)
    {
        assert!(f(o, "max_power_dbm") > f(c, "max_power_dbm") + 20.0, "{o}");
    }
}

#[test]
fn plot_draws_one_curve_per_launch_power() {
    let dir = std::env::temp_dir().join(format!("qkd-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rate.svg");
    let out = qkd(&[
        "plan",
        "--preset",
        "snspd",
        "--distance-km",
        "50",
        "--plot",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // No classical light, then -20, -10, 0 and +10 dBm.
    assert_eq!(svg.matches("<polyline").count(), 5);
    assert!(svg.contains("no classical light") && svg.contains("+10 dBm co"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fiber_flags_are_refused_with_their_name_and_reason() {
    for (args, expected) in [
        (
            &["plan", "--raman-coefficient", "3e-9"][..],
            "--raman-coefficient",
        ),
        (&["emulate", "--filter-nm", "0.1"][..], "--filter-nm"),
        (
            &["plan", "--classical-power-dbm", "50"][..],
            "--classical-power-dbm: 50 dBm",
        ),
        (
            &[
                "plan",
                "--classical-power-dbm",
                "0",
                "--classical-direction",
                "up",
            ][..],
            "--classical-direction: `up`",
        ),
        (
            &["plan", "--pmd-ps-per-sqrt-km", "-1"][..],
            "--pmd-ps-per-sqrt-km: -1",
        ),
        (
            &["link", "--extra-loss-db", "nan"][..],
            "--extra-loss-db: NaN",
        ),
        (
            &[
                "plan",
                "--classical-power-dbm",
                "0",
                "--classical-wavelength-nm",
                "1550",
            ][..],
            "--classical-wavelength-nm: 1550 nm is the quantum channel's wavelength",
        ),
        (
            &["emulate", "--quantum-wavelength-nm", "800"][..],
            "--quantum-wavelength-nm: 800 nm",
        ),
    ] {
        refused(args, expected);
    }
}

#[test]
fn emulate_counts_raman_clicks_and_the_link_keys_through_moderate_noise() {
    let e = json(&[
        "emulate",
        "--preset",
        "snspd",
        "--distance-km",
        "100",
        "--seconds",
        "0.05",
        "--classical-power-dbm",
        "-20",
        "--classical-direction",
        "counter",
        "--json",
    ]);
    let photons = f(&e, "raman_photons_per_s");
    assert!(photons > 0.0);
    // Raman clicks: η_Bob·η_det·photons/s over the run, Poisson, less those arriving while
    // their detector is dead: at most the busiest detector's dead fraction, its click rate
    // times the SNSPD preset's 30 ns dead time.
    let expected = 0.72 * photons * 0.05;
    let busiest = ["H", "V", "D", "A"]
        .iter()
        .map(|d| f(&e["detections"], d))
        .fold(0.0, f64::max);
    let dead_fraction = busiest / 0.05 * 30e-9;
    let clicks = f(&e, "raman_clicks");
    let sigma = expected.sqrt();
    assert!(
        clicks < expected + 5.0 * sigma && clicks > expected * (1.0 - dead_fraction) - 5.0 * sigma,
        "{clicks} vs {expected} (dead fraction up to {dead_fraction})"
    );

    let quiet = json(&[
        "link",
        "--preset",
        "snspd",
        "--distance-km",
        "25",
        "--seconds",
        "0.3",
        "--json",
    ]);
    let noisy = json(&[
        "link",
        "--preset",
        "snspd",
        "--distance-km",
        "25",
        "--seconds",
        "0.3",
        "--classical-power-dbm",
        "-20",
        "--json",
    ]);
    assert_eq!(noisy["keys_match"], true);
    assert!(f(&noisy, "qber_z") > f(&quiet, "qber_z"));
}
