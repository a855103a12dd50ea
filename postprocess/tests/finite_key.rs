//! The node's finite-key bounds against a separate implementation written from the paper, their
//! parts against closed forms, and the bound in Lim et al.'s own setting against the figures the
//! paper states.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/bounds/lim2014.rs"]
mod lim2014;

use qkd_firmware_sim::world::rng::SimRng;
use qkd_postprocess::estimate::{
    BasisCounts, DecoySettings, finite_key, finite_key_entangled, gamma, single_photon_errors,
};

/// Agreement of two floating-point evaluations of the same formula in another order: a few
/// ulps of the largest term (counts up to 10^9 weighted by e^μ/p ≤ 10^3 make terms of 10^12).
fn close(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= 1e-12 * scale.max(1.0)
}

#[test]
fn gamma_matches_the_papers_formula_and_vanishes_where_it_has_no_meaning() {
    let mut r = SimRng::new(3, 0);
    for _ in 0..1000 {
        let a = 10f64.powf(-3.0 - 12.0 * r.uniform());
        let b = 0.5 * r.uniform_open_low();
        let c = 10f64.powf(2.0 + 7.0 * r.uniform());
        let d = 10f64.powf(2.0 + 7.0 * r.uniform());
        let (ours, paper) = (gamma(a, b, c, d), lim2014::gamma(a, b, c, d));
        assert!(
            close(ours, paper, 1.0),
            "γ({a}, {b}, {c}, {d}) = {ours}, {paper}"
        );
    }
    // A hand evaluation: γ(1e-10, 0.01, 1e6, 1e5) = sqrt(1.1e6·0.0099/(1e11·ln 2) ·
    // log2(1.1e6/(1e11·0.0099) · 441e20)) = sqrt(1.57109e-7 · log2(4.9e19) = 65.409) = 3.2057e-3.
    assert!((gamma(1e-10, 0.01, 1e6, 1e5) - 3.2057e-3).abs() < 1e-7);
    for (b, c, d) in [
        (0.0, 1e6, 1e5),
        (1.0, 1e6, 1e5),
        (0.01, 0.0, 1e5),
        (0.01, 1e6, 0.0),
    ] {
        assert!(
            gamma(1e-10, b, c, d).abs() < f64::MIN_POSITIVE,
            "γ where undefined"
        );
    }
    // The correction shrinks as the samples grow and grows as ε_sec shrinks.
    assert!(gamma(1e-10, 0.02, 1e7, 1e6) < gamma(1e-10, 0.02, 1e6, 1e5));
    assert!(gamma(1e-15, 0.02, 1e6, 1e5) > gamma(1e-10, 0.02, 1e6, 1e5));
}

fn decoys() -> (DecoySettings, lim2014::Decoys) {
    let mu = [0.6, 0.2, 0.0005];
    let p = [0.7, 0.2, 0.1];
    (
        DecoySettings {
            mu,
            p,
            eps_sec: 1e-10,
            eps_cor: 1e-15,
        },
        lim2014::Decoys {
            mu,
            p,
            eps_sec: 1e-10,
            eps_cor: 1e-15,
        },
    )
}

#[test]
fn the_decoy_bound_matches_the_papers_formulas_on_random_blocks() {
    let (ours, paper) = decoys();
    let mut r = SimRng::new(7, 0);
    let mut keyed = 0;
    for _ in 0..2000 {
        // Blocks from 10^4 to 10^8 detections, error rates 0–15 %, any split of the classes.
        let total = 10f64.powf(4.0 + 4.0 * r.uniform());
        let split = |r: &mut SimRng| {
            let w = [
                0.6 + 0.3 * r.uniform(),
                0.1 + 0.2 * r.uniform(),
                0.01 * r.uniform(),
            ];
            let sum: f64 = w.iter().sum();
            w.map(|x| (total * x / sum).round() as u64)
        };
        let key_n = split(&mut r);
        let test_n = split(&mut r).map(|n| n / 8);
        let e = 0.15 * r.uniform();
        let test_m = test_n.map(|n| (n as f64 * e * (0.5 + r.uniform())).round() as u64);
        let leak = 1.1 * total * lim2014::h(e);
        let key = BasisCounts {
            n: key_n,
            m: [0; 3],
        };
        let test = BasisCounts {
            n: test_n,
            m: test_m,
        };
        let bound = finite_key(&key, &test, &ours).unwrap();
        let f = |v: [u64; 3]| v.map(|x| x as f64);
        let reference = paper.bound(
            &lim2014::Counts {
                n: f(key_n),
                m: [0.0; 3],
            },
            &lim2014::Counts {
                n: f(test_n),
                m: f(test_m),
            },
            leak,
        );
        let scale = 1e3 * total;
        assert!(
            close(bound.s0, reference.s0_key, scale),
            "s0 {bound:?} {reference:?}"
        );
        assert!(close(bound.s1, reference.s1_key, scale), "s1");
        assert!(close(bound.s1_test, reference.s1_test, scale), "s1 test");
        assert!(close(bound.v1_test, reference.v1_test, scale), "v1 test");
        assert!(close(bound.phase_error, reference.phase_error, 1.0), "φ");
        assert_eq!(bound.length(leak), lim2014::bits(reference.length), "ℓ");
        keyed += usize::from(bound.length(leak).is_some());
    }
    assert!(
        keyed > 100,
        "only {keyed} blocks with key: the comparison saw too few"
    );
}

#[test]
fn the_entangled_bound_matches_the_papers_formula() {
    let mut r = SimRng::new(9, 0);
    for _ in 0..2000 {
        let n = 10f64.powf(3.0 + 6.0 * r.uniform()).round();
        let k = (n * (0.01 + 0.2 * r.uniform())).round();
        let errors = (k * 0.2 * r.uniform()).round();
        let leak = (n * 0.1 * r.uniform()).round();
        let bound = finite_key_entangled(n as u64, k as u64, errors as u64, 1e-10, 1e-15);
        let reference = lim2014::entangled(n, k, errors, leak, 1e-10, 1e-15);
        assert_eq!(
            bound.length(leak),
            lim2014::bits(reference),
            "{n} {k} {errors}"
        );
    }
}

#[test]
fn single_photon_errors_bound_the_true_ones_within_the_hoeffding_shift() {
    // With counts at their expectations, `m_k e^{μ_k}/p_k = N Σ_j μ_k^j/j! Y_j e_j`, so the bound
    // τ1 (m2⁺ − m3⁻)/(μ2 − μ3) is the true single-photon errors τ1 N Y1 e1 plus the multi-photon
    // terms τ1 N Σ_{j≥2} (μ2^j − μ3^j)/(j! (μ2 − μ3)) Y_j e_j, plus τ1 δ (e^{μ2}/p2 + e^{μ3}/p3)
    // /(μ2 − μ3) from the deviations.
    let (ours, _) = decoys();
    let [_, m2, m3] = ours.mu;
    let (eta, y0, e_mis) = (0.01, 1e-6, 0.02);
    let pulses = 1e12;
    let yield_of = |j: i32| 1.0 - (1.0 - y0) * (1.0f64 - eta).powi(j);
    let error_of = |j: i32| (0.5 * y0 + e_mis * (yield_of(j) - y0)) / yield_of(j);
    let mut errors = [0u64; 3];
    for (k, slot) in errors.iter_mut().enumerate() {
        let mu = ours.mu[k];
        let mut sum = 0.0;
        let mut term = (-mu).exp();
        for j in 0..40 {
            if j > 0 {
                term *= mu / f64::from(j);
            }
            sum += term * yield_of(j) * error_of(j);
        }
        *slot = (pulses * ours.p[k] * sum).round() as u64;
    }
    let counts = BasisCounts {
        n: [0; 3],
        m: errors,
    };
    let bound = single_photon_errors(&counts, &ours);
    let tau1 = ours.tau(1);
    let truth = tau1 * pulses * yield_of(1) * error_of(1);
    let mut multi = 0.0;
    let mut factorial = 1.0;
    for j in 2..40 {
        factorial *= f64::from(j);
        multi += (m2.powi(j) - m3.powi(j)) / (factorial * (m2 - m3)) * yield_of(j) * error_of(j);
    }
    let closed_form = truth + tau1 * pulses * multi;
    let total: u64 = errors.iter().sum();
    let delta = (total as f64 / 2.0 * (21.0 / ours.eps_sec).ln()).sqrt();
    let weights = ours.mu[1].exp() / ours.p[1] + ours.mu[2].exp() / ours.p[2];
    let shift = tau1 * delta * weights / (m2 - m3);
    // Rounding each count moved it by at most ½ before weighting.
    let rounding = tau1 * 0.5 * weights / (m2 - m3);
    assert!(bound >= truth, "{bound} below the true {truth}");
    assert!(
        (bound - closed_form - shift).abs() <= rounding,
        "{bound} vs {closed_form} + {shift}"
    );
}

/// Lim et al.'s simulation setting (Sec. IV): η_Bob = 0.1, p_dc = 6·10⁻⁷, afterpulses 4·10⁻²,
/// e_mis = 5·10⁻³, f_EC = 1.16, 0.2 dB/km, μ3 = 2·10⁻⁴, ε_cor = 10⁻¹⁵, ε_sec = κℓ with
/// κ = 10⁻¹⁵; the key from the basis both choose with probability q; λ_EC = f_EC n h(e_obs).
/// Returns the key rate per pulse for `key_detections` in the key basis at `km`, parameters
/// x = (q, p1, p2, μ1, μ2), by the node's bound.
fn lim_rate(key_detections: f64, km: f64, x: [f64; 5]) -> Option<f64> {
    const P_DC: f64 = 6e-7;
    const AFTERPULSES: f64 = 0.04;
    let [q, p1, p2, mu1, mu2] = x;
    let (mu3, p3) = (2e-4, 1.0 - p1 - p2);
    let eta = 0.1 * 10f64.powf(-0.02 * km);
    let mu = [mu1, mu2, mu3];
    let p = [p1, p2, p3];
    // Detection and error probabilities per pulse of each intensity.
    let detection = mu.map(|m| 1.0 - (1.0 - 2.0 * P_DC) * (-eta * m).exp());
    let click: [f64; 3] = std::array::from_fn(|k| detection[k] * (1.0 + AFTERPULSES));
    let error: [f64; 3] = std::array::from_fn(|k| {
        P_DC + 5e-3 * (1.0 - (-eta * mu[k]).exp()) + AFTERPULSES * detection[k] / 2.0
    });
    let pulses = key_detections / (q * q * (0..3).map(|k| p[k] * click[k]).sum::<f64>());
    let counts = |basis: f64, of: &[f64; 3]| -> [u64; 3] {
        std::array::from_fn(|k| (pulses * basis * p[k] * of[k]).round() as u64)
    };
    let key = BasisCounts {
        n: counts(q * q, &click),
        m: counts(q * q, &error),
    };
    let test = BasisCounts {
        n: counts((1.0 - q) * (1.0 - q), &click),
        m: counts((1.0 - q) * (1.0 - q), &error),
    };
    let observed = key.m.iter().sum::<u64>() as f64 / key.n.iter().sum::<u64>() as f64;
    let leak = 1.16 * key_detections * lim2014::h(observed);
    // ε_sec = κℓ: iterate to the fixed point from ℓ = n/100.
    let mut length = key_detections / 100.0;
    for _ in 0..50 {
        let settings = DecoySettings {
            mu,
            p,
            eps_sec: 1e-15 * length.max(1.0),
            eps_cor: 1e-15,
        };
        settings.validate().ok()?;
        let next = finite_key(&key, &test, &settings).ok()?.length_before_ec - leak;
        if next <= 0.0 {
            return None;
        }
        if (next - length).abs() < 1e-9 * length {
            break;
        }
        length = next;
    }
    Some(length / pulses)
}

/// Nelder-Mead on −rate from `start` (a rate found positive there), with the standard
/// coefficients: reflection 1, expansion 2, contraction ½, shrink ½.
fn optimise(key_detections: f64, km: f64, start: [f64; 5]) -> ([f64; 5], f64) {
    let cost =
        |x: &[f64; 5]| -> f64 { lim_rate(key_detections, km, *x).map_or(f64::INFINITY, |r| -r) };
    let steps = [0.03, 0.01, 0.05, 0.05, 0.02];
    let mut simplex: Vec<([f64; 5], f64)> = (0..6)
        .map(|i| {
            let mut x = start;
            if i > 0 {
                x[i - 1] += steps[i - 1];
            }
            (x, cost(&x))
        })
        .collect();
    for _ in 0..1500 {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let centroid: [f64; 5] =
            std::array::from_fn(|j| simplex[..5].iter().map(|s| s.0[j]).sum::<f64>() / 5.0);
        let worst = simplex[5];
        let toward = |t: f64| -> [f64; 5] {
            std::array::from_fn(|j| centroid[j] + t * (worst.0[j] - centroid[j]))
        };
        let reflected = toward(-1.0);
        let r = cost(&reflected);
        if r < simplex[0].1 {
            let expanded = toward(-2.0);
            let e = cost(&expanded);
            simplex[5] = if e < r { (expanded, e) } else { (reflected, r) };
        } else if r < simplex[4].1 {
            simplex[5] = (reflected, r);
        } else {
            let contracted = toward(0.5);
            let c = cost(&contracted);
            if c < worst.1 {
                simplex[5] = (contracted, c);
            } else {
                let best = simplex[0].0;
                for s in &mut simplex[1..] {
                    s.0 = std::array::from_fn(|j| best[j] + 0.5 * (s.0[j] - best[j]));
                    s.1 = cost(&s.0);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    (simplex[0].0, -simplex[0].1)
}

#[test]
fn the_bound_in_lim_et_als_setting_gives_the_figures_the_paper_states() {
    // The paper states (Sec. IV, Fig. 1) that at 100 km the rate with n = 10^9 key-basis
    // detections is "about 1.75 times" the one with 10^7, and that blocks of 10^4 still give
    // keys up to 135 km. It gives no table, and its afterpulse term is ambiguous as printed: in
    // its model as written this bound gives 1.71 and 127 km (146 km without afterpulses), so the
    // test holds the ratio to "about 1.75" (±0.1) and the reach of 10^4-detection blocks to
    // 120–150 km. The bound without γ gives a ratio of 1.62, and with the Hoeffding term in
    // log2 no key at 120 km: both fail here.
    let start = [0.8, 0.5, 0.4, 0.45, 0.18];
    let (x7, r7) = optimise(1e7, 100.0, start);
    let (_, r9) = optimise(1e9, 100.0, x7);
    let ratio = r9 / r7;
    assert!((1.65..=1.85).contains(&ratio), "R(1e9)/R(1e7) = {ratio}");
    // Follow the optimum of 10^4-detection blocks out from 100 km.
    let (mut x, rate) = optimise(1e4, 100.0, [0.45, 0.04, 0.54, 0.5, 0.1]);
    assert!(rate > 0.0);
    for km in [105.0, 110.0, 115.0, 120.0] {
        let (next, rate) = optimise(1e4, km, x);
        assert!(rate > 0.0, "no key at {km} km");
        x = next;
    }
    // At 150 km no setting on a grid over the whole ranges gives a key.
    let grid = [0.1, 0.3, 0.5, 0.7, 0.9];
    for q in grid {
        for p1 in grid {
            for p2 in grid.map(|p| p * (1.0 - p1)) {
                for mu1 in [0.2, 0.35, 0.5, 0.7, 1.0] {
                    for mu2 in [0.02, 0.05, 0.1, 0.15, 0.2].map(|m| m * mu1 / 0.2) {
                        assert!(
                            lim_rate(1e4, 150.0, [q, p1, p2, mu1, mu2]).is_none(),
                            "a key from 10^4 detections at 150 km: {:?}",
                            [q, p1, p2, mu1, mu2]
                        );
                    }
                }
            }
        }
    }
}
