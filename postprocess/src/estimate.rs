//! Parameter estimation: how much secret key a block of detections holds.
//!
//! Finite-key decoy-state bounds follow Lim, Curty, Walenta, Xu and Zbinden, PRA 89, 022307
//! (2014): three intensities μ1 > μ2 + μ3, μ2 > μ3 ≥ 0 used with probabilities p_k; Hoeffding
//! deviations on the observed counts; lower bounds on the vacuum and single-photon detections
//! of the key basis, an upper bound on the single-photon errors of the test basis, and the
//! phase error of the key basis from the random-sampling term γ. The key length is
//!
//! ```text
//! ℓ = s_key,0 + s_key,1 (1 − h(φ)) − λ_EC − 6 log2(21/ε_sec) − log2(2/ε_cor)
//! ```
//!
//! with λ_EC the bits error correction actually disclosed. The asymptotic rate with infinitely
//! many decoys (Lo, Ma, Chen 2005) serves planning.

use crate::bits::binary_entropy;

/// Intensities, their probabilities, and the security parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoySettings {
    /// Mean photon numbers: signal μ1, decoy μ2, weak decoy μ3.
    pub mu: [f64; 3],
    /// Probability of each intensity.
    pub p: [f64; 3],
    /// Secrecy parameter ε_sec.
    pub eps_sec: f64,
    /// Correctness parameter ε_cor.
    pub eps_cor: f64,
}

/// Settings the bounds do not hold for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("decoy settings: {0}")]
pub struct SettingsError(String);

impl DecoySettings {
    /// Checks the conditions the bounds rely on.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let [m1, m2, m3] = self.mu;
        if !(m3 >= 0.0 && m2 > m3 && m1 > m2 + m3 && m1.is_finite()) {
            return Err(SettingsError(format!(
                "intensities must satisfy μ1 > μ2 + μ3 and μ2 > μ3 ≥ 0, got {:?}",
                self.mu
            )));
        }
        if self.p.iter().any(|&p| !(p > 0.0 && p <= 1.0))
            || (self.p.iter().sum::<f64>() - 1.0).abs() > 1e-9
        {
            return Err(SettingsError(format!(
                "intensity probabilities must be positive and sum to 1, got {:?}",
                self.p
            )));
        }
        for (name, eps) in [("ε_sec", self.eps_sec), ("ε_cor", self.eps_cor)] {
            if !(eps > 0.0 && eps < 1.0) {
                return Err(SettingsError(format!("{name} = {eps} is outside (0, 1)")));
            }
        }
        Ok(())
    }

    /// `τ_n = Σ_k p_k e^{-μ_k} μ_k^n / n!`: probability that a pulse carries `n` photons.
    pub fn tau(&self, n: u32) -> f64 {
        let factorial: f64 = (1..=n).map(f64::from).product();
        self.mu
            .iter()
            .zip(&self.p)
            .map(|(&mu, &p)| p * (-mu).exp() * mu.powi(n as i32) / factorial)
            .sum()
    }
}

/// Detections (and, for the test basis, errors) of one basis per intensity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BasisCounts {
    /// Detections per intensity.
    pub n: [u64; 3],
    /// Bit errors per intensity.
    pub m: [u64; 3],
}

impl BasisCounts {
    fn total(&self) -> f64 {
        self.n.iter().sum::<u64>() as f64
    }

    fn errors(&self) -> f64 {
        self.m.iter().sum::<u64>() as f64
    }
}

/// Hoeffding deviation `sqrt(n/2 · ln(1/ε))`.
fn hoeffding(n: f64, eps: f64) -> f64 {
    (n / 2.0 * (1.0 / eps).ln()).sqrt()
}

/// The finite-size corrected counts `n^-_k` and `n^+_k` of one basis.
fn corrected(counts: &[u64; 3], total: f64, s: &DecoySettings) -> ([f64; 3], [f64; 3]) {
    let delta = hoeffding(total, s.eps_sec / 21.0);
    let lower = std::array::from_fn(|k| {
        s.mu[k].exp() / s.p[k] * (counts[k] as f64 - delta).clamp(0.0, total)
    });
    let upper = std::array::from_fn(|k| {
        s.mu[k].exp() / s.p[k] * (counts[k] as f64 + delta).clamp(0.0, total)
    });
    (lower, upper)
}

/// Lower bounds on vacuum and single-photon detections in one basis.
pub fn vacuum_and_single_photon(counts: &BasisCounts, s: &DecoySettings) -> (f64, f64) {
    let [m1, m2, m3] = s.mu;
    let total = counts.total();
    let (lo, hi) = corrected(&counts.n, total, s);
    let tau0 = s.tau(0);
    let tau1 = s.tau(1);
    let s0 = (tau0 * (m2 * lo[2] - m3 * hi[1]) / (m2 - m3)).max(0.0);
    let s1 = tau1 * m1 * (lo[1] - hi[2] - (m2 * m2 - m3 * m3) / (m1 * m1) * (hi[0] - s0 / tau0))
        / (m1 * (m2 - m3) - m2 * m2 + m3 * m3);
    (s0, s1.max(0.0))
}

/// Upper bound on single-photon bit errors in one basis.
pub fn single_photon_errors(counts: &BasisCounts, s: &DecoySettings) -> f64 {
    let total = counts.errors();
    let (lo, hi) = corrected(&counts.m, total, s);
    (s.tau(1) * (hi[1] - lo[2]) / (s.mu[1] - s.mu[2])).max(0.0)
}

/// `γ(a, b, c, d)`: the random-sampling correction of the phase error.
pub fn gamma(a: f64, b: f64, c: f64, d: f64) -> f64 {
    if b <= 0.0 || b >= 1.0 || c <= 0.0 || d <= 0.0 {
        return 0.0;
    }
    let inner = (c + d) / (c * d * (1.0 - b) * b) * (21.0 * 21.0) / (a * a);
    ((c + d) * (1.0 - b) * b / (c * d * std::f64::consts::LN_2) * inner.log2())
        .max(0.0)
        .sqrt()
}

/// What a block's statistics allow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyBound {
    /// Vacuum detections in the key basis (lower bound).
    pub s0: f64,
    /// Single-photon detections in the key basis (lower bound).
    pub s1: f64,
    /// Single-photon detections in the test basis (lower bound).
    pub s1_test: f64,
    /// Single-photon errors in the test basis (upper bound).
    pub v1_test: f64,
    /// Phase-error rate of the key basis's single photons (upper bound).
    pub phase_error: f64,
    /// Secure key length in bits before error-correction leakage is subtracted.
    pub length_before_ec: f64,
}

impl KeyBound {
    /// The key length once error correction disclosed `leaked` bits; `None` when no key.
    pub fn length(&self, leaked: f64) -> Option<u64> {
        let l = (self.length_before_ec - leaked).floor();
        (l >= 1.0).then_some(l as u64)
    }
}

/// The finite-key bound (Lim et al. 2014) for a block with these key- and test-basis counts.
pub fn finite_key(
    key: &BasisCounts,
    test: &BasisCounts,
    s: &DecoySettings,
) -> Result<KeyBound, SettingsError> {
    s.validate()?;
    let (s0, s1) = vacuum_and_single_photon(key, s);
    let (_, s1_test) = vacuum_and_single_photon(test, s);
    let v1_test = single_photon_errors(test, s);
    let phase_error = if s1_test > 0.0 && s1 > 0.0 {
        let ratio = (v1_test / s1_test).min(0.5);
        (ratio + gamma(s.eps_sec, ratio, s1, s1_test)).min(0.5)
    } else {
        0.5
    };
    let length_before_ec = s0 + s1 * (1.0 - binary_entropy(phase_error))
        - 6.0 * (21.0 / s.eps_sec).log2()
        - (2.0 / s.eps_cor).log2();
    Ok(KeyBound {
        s0,
        s1,
        s1_test,
        v1_test,
        phase_error,
        length_before_ec,
    })
}

/// The finite-key bound of an entanglement-based (BBM92) block: every coincidence is a single
/// photon pair, and the key basis's phase error is the test basis's bit error rate plus γ.
pub fn finite_key_entangled(
    key_bits: u64,
    test_bits: u64,
    test_errors: u64,
    eps_sec: f64,
    eps_cor: f64,
) -> KeyBound {
    let (n, k) = (key_bits as f64, test_bits as f64);
    let phase_error = if k > 0.0 && n > 0.0 {
        let e = (test_errors as f64 / k).min(0.5);
        (e + gamma(eps_sec, e, n, k)).min(0.5)
    } else {
        0.5
    };
    KeyBound {
        s0: 0.0,
        s1: n,
        s1_test: k,
        v1_test: test_errors as f64,
        phase_error,
        length_before_ec: n * (1.0 - binary_entropy(phase_error))
            - 6.0 * (21.0 / eps_sec).log2()
            - (2.0 / eps_cor).log2(),
    }
}

/// Channel description for the asymptotic decoy formula.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Channel {
    /// Overall transmittance including Bob's efficiency, η.
    pub transmittance: f64,
    /// Background (dark) yield per pulse, Y0.
    pub background: f64,
    /// Misalignment error, e_d.
    pub misalignment: f64,
    /// Error-correction inefficiency f (1 is the Shannon limit).
    pub ec_inefficiency: f64,
    /// Sifting factor q (share of detections in matched bases used for key).
    pub sifting: f64,
}

/// Gain and error rate of a pulse with mean photon number `mu`: `Q = Y0 + 1 − e^{−ημ}` and
/// `E·Q = Y0/2 + e_d (1 − e^{−ημ})`.
pub fn gain_and_error(mu: f64, c: &Channel) -> (f64, f64) {
    let signal = -(-c.transmittance * mu).exp_m1();
    let q = c.background + signal;
    (q, (0.5 * c.background + c.misalignment * signal) / q)
}

/// Asymptotic key rate per pulse with infinitely many decoys (GLLP with decoy states):
/// `R = q [Q1 (1 − h(e1)) − f Qμ h(Eμ)]`, clipped at 0.
pub fn asymptotic_rate(mu: f64, c: &Channel) -> f64 {
    let (q_mu, e_mu) = gain_and_error(mu, c);
    let y1 = c.background + c.transmittance;
    let e1 = ((0.5 * c.background + c.misalignment * c.transmittance) / y1).min(0.5);
    let q1 = y1 * mu * (-mu).exp();
    (c.sifting
        * (q1 * (1.0 - binary_entropy(e1)) - c.ec_inefficiency * q_mu * binary_entropy(e_mu)))
    .max(0.0)
}

/// The repeaterless bound (Pirandola et al. 2017): at most `−log2(1 − η)` secret bits per use.
pub fn plob_bound(transmittance: f64) -> f64 {
    -(1.0 - transmittance).log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gys() -> Channel {
        Channel {
            transmittance: 0.045,
            background: 1.7e-6,
            misalignment: 0.033,
            ec_inefficiency: 1.22,
            sifting: 0.5,
        }
    }

    fn settings() -> DecoySettings {
        DecoySettings {
            mu: [0.5, 0.1, 0.0002],
            p: [0.8, 0.15, 0.05],
            eps_sec: 1e-10,
            eps_cor: 1e-15,
        }
    }

    /// Yield of an `j`-photon pulse: `1 − (1 − Y0)(1 − η)^j`.
    fn yield_of(j: i32, c: &Channel) -> f64 {
        1.0 - (1.0 - c.background) * (1.0 - c.transmittance).powi(j)
    }

    /// Expected counts of one basis for `n` pulses in it over channel `c` (exact Poisson sums:
    /// `Q = 1 − (1 − Y0) e^{−ημ}`).
    fn expected(n: f64, s: &DecoySettings, c: &Channel) -> BasisCounts {
        let mut counts = BasisCounts::default();
        for k in 0..3 {
            let q = 1.0 - (1.0 - c.background) * (-c.transmittance * s.mu[k]).exp();
            let signal = q - c.background;
            let e = (0.5 * c.background + c.misalignment * signal) / q;
            counts.n[k] = (n * s.p[k] * q).round() as u64;
            counts.m[k] = (n * s.p[k] * q * e).round() as u64;
        }
        counts
    }

    #[test]
    fn gys_asymptotic_rate_peaks_near_the_published_mu() {
        let c = gys();
        let best = (1..100)
            .map(|i| f64::from(i) / 100.0)
            .max_by(|a, b| asymptotic_rate(*a, &c).total_cmp(&asymptotic_rate(*b, &c)))
            .unwrap();
        assert!((0.4..=0.6).contains(&best), "optimal μ {best}");
    }

    #[test]
    fn rates_never_exceed_the_repeaterless_bound() {
        for km in [0.0, 25.0, 50.0, 100.0, 150.0] {
            let mut c = gys();
            c.transmittance *= 10f64.powf(-0.021 * km);
            for mu in [0.1, 0.48, 1.0] {
                assert!(asymptotic_rate(mu, &c) <= plob_bound(c.transmittance));
            }
        }
    }

    #[test]
    fn finite_key_rate_approaches_the_asymptote_from_below() {
        // Per detection in the key basis, the finite-key length grows with the block and stays
        // under the asymptotic single-photon term for the same counts.
        let c = Channel {
            transmittance: 0.045 * 0.1,
            ..gys()
        };
        let s = settings();
        let mut last = f64::NEG_INFINITY;
        for pulses in [1e8, 1e9, 1e10, 1e11, 1e12] {
            let key = expected(pulses * 0.9, &s, &c);
            let test = expected(pulses * 0.1, &s, &c);
            let bound = finite_key(&key, &test, &s).unwrap();
            let per_pulse = bound.length_before_ec / pulses;
            assert!(per_pulse > last, "rate must grow with block size");
            last = per_pulse;
            // Asymptotic single-photon contribution with the true single-photon numbers.
            let y1 = c.background + c.transmittance;
            let ideal = 0.9 * (s.tau(0) * c.background + s.tau(1) * y1);
            assert!(per_pulse < ideal, "{per_pulse} ≥ {ideal}");
        }
        assert!(last > 0.0);
    }

    #[test]
    fn decoy_bound_equals_its_closed_form_with_large_blocks() {
        // With counts equal to their expectations, the s1 bound expands (Poisson sums) to
        //   n τ1 [Y1 + μ1/D Σ_{j≥3} Y_j/j! ((μ2^j − μ3^j) − (μ2² − μ3²) μ1^{j−2})],
        // D = μ1(μ2 − μ3) − μ2² + μ3²: the true single photons less the 3+-photon terms the two
        // decoys cannot separate. The Hoeffding corrections shift it by the propagated δ.
        let c = Channel {
            transmittance: 0.01,
            ..gys()
        };
        let s = settings();
        let [m1, m2, m3] = s.mu;
        let pulses = 1e13;
        let counts = expected(pulses, &s, &c);
        let (_, s1) = vacuum_and_single_photon(&counts, &s);
        let d = m1 * (m2 - m3) - m2 * m2 + m3 * m3;
        let mut series = yield_of(1, &c);
        // The vacuum bound itself expands to Y0 − Σ_{j≥2} Y_j μ2 μ3 (μ2^{j−1} − μ3^{j−1}) /
        // (j! (μ2 − μ3)), and enters s1 with weight (μ2² − μ3²)/μ1².
        let mut vacuum_deficit = 0.0;
        let mut factorial = 1.0;
        for j in 2..40 {
            factorial *= f64::from(j);
            let y = yield_of(j, &c) / factorial;
            vacuum_deficit += y * m2 * m3 * (m2.powi(j - 1) - m3.powi(j - 1)) / (m2 - m3);
            if j >= 3 {
                let bracket = (m2.powi(j) - m3.powi(j)) - (m2 * m2 - m3 * m3) * m1.powi(j - 2);
                series += m1 / d * y * bracket;
            }
        }
        series -= m1 / d * (m2 * m2 - m3 * m3) / (m1 * m1) * vacuum_deficit;
        let closed_form = pulses * s.tau(1) * series;
        let delta = hoeffding(counts.total(), s.eps_sec / 21.0);
        let weight = |k: usize| s.mu[k].exp() / s.p[k];
        // δ enters through n2⁻, n3⁺, n1⁺ directly and through the vacuum bound s0 (n3⁻, n2⁺).
        let vacuum = (m2 * weight(2) + m3 * weight(1)) / (m2 - m3);
        let shift = s.tau(1) * m1 / d
            * (weight(1) + weight(2) + (m2 * m2 - m3 * m3) / (m1 * m1) * (weight(0) + vacuum))
            * delta;
        // Rounding the counts to integers moves the bound by at most the same weights.
        let rounding = s.tau(1) * m1 / d * (weight(0) + weight(1) + weight(2));
        assert!(s1 <= closed_form);
        assert!(
            closed_form - s1 <= shift + rounding,
            "{s1} vs {closed_form} (allowed {shift})"
        );
        assert!(
            s1 < pulses * s.tau(1) * yield_of(1, &c),
            "never above the truth"
        );
    }

    #[test]
    fn too_much_error_leaves_no_key() {
        // e_d = 12 %: the single-photon phase error and the reconciliation cost (f = 1.16)
        // together exceed what the single photons carry.
        let c = Channel {
            misalignment: 0.12,
            ..gys()
        };
        let s = settings();
        let key = expected(1e10, &s, &c);
        let bound = finite_key(&key, &expected(1e9, &s, &c), &s).unwrap();
        let n = key.n.iter().sum::<u64>() as f64;
        let e = key.m.iter().sum::<u64>() as f64 / n;
        assert_eq!(bound.length(1.16 * n * binary_entropy(e)), None);
    }

    #[test]
    fn settings_outside_the_conditions_are_refused() {
        let mut s = settings();
        s.mu = [0.5, 0.45, 0.1];
        assert!(s.validate().is_err());
        let mut s = settings();
        s.p = [0.9, 0.2, 0.05];
        assert!(s.validate().is_err());
        let mut s = settings();
        s.eps_cor = 0.0;
        assert!(s.validate().is_err());
    }
}
