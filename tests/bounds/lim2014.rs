//! The finite-key bounds of decoy-state BB84 (Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307
//! (2014), Eqs. 1–5 and Appendix) and of entanglement-based BBM92, written out from the paper for
//! tests, apart from the node's own implementation, so each can check the other. The paper takes
//! the key from its X basis; here, as in the node, the key basis is Z and the test basis X.
#![allow(dead_code)]

use std::f64::consts::LN_2;

/// Binary entropy.
pub fn h(p: f64) -> f64 {
    if p <= 0.0 || p >= 1.0 {
        0.0
    } else {
        -p * p.log2() - (1.0 - p) * (1.0 - p).log2()
    }
}

/// γ(a, b, c, d) of Eq. (2): the random-sampling correction of the phase error, 0 where the
/// formula has no meaning (b outside (0, 1), empty samples).
pub fn gamma(a: f64, b: f64, c: f64, d: f64) -> f64 {
    if !(b > 0.0 && b < 1.0 && c > 0.0 && d > 0.0) {
        return 0.0;
    }
    let weight = (c + d) * (1.0 - b) * b / (c * d * LN_2);
    let argument = (c + d) / (c * d * (1.0 - b) * b) * 21.0_f64.powi(2) / a.powi(2);
    (weight * argument.log2()).max(0.0).sqrt()
}

/// One basis's counts per intensity: detections `n` and errors `m`.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub n: [f64; 3],
    pub m: [f64; 3],
}

/// Intensities `mu` (μ1 > μ2 + μ3, μ2 > μ3 ≥ 0), their probabilities `p`, and ε_sec, ε_cor.
#[derive(Debug, Clone, Copy)]
pub struct Decoys {
    pub mu: [f64; 3],
    pub p: [f64; 3],
    pub eps_sec: f64,
    pub eps_cor: f64,
}

/// The bound's intermediate values and the key length.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub s0_key: f64,
    pub s1_key: f64,
    pub s1_test: f64,
    pub v1_test: f64,
    pub phase_error: f64,
    /// ℓ before the floor, λ_EC subtracted.
    pub length: f64,
}

impl Decoys {
    /// τ_n: the probability that a pulse holds n photons, over the intensities.
    fn tau(&self, n: i32) -> f64 {
        let factorial: f64 = (1..=n).map(f64::from).product();
        (0..3)
            .map(|k| self.p[k] * (-self.mu[k]).exp() * self.mu[k].powi(n) / factorial)
            .sum()
    }

    /// n^±_k = e^{μ_k}/p_k (n_k ± δ(n_total, ε_sec/21)), with δ(n, ε) = sqrt(n/2 · ln(1/ε)),
    /// each count kept in [0, n_total] before it is weighted.
    fn deviated(&self, counts: [f64; 3], sign: f64) -> [f64; 3] {
        let total: f64 = counts.iter().sum();
        let delta = (total / 2.0 * (21.0 / self.eps_sec).ln()).sqrt();
        std::array::from_fn(|k| {
            self.mu[k].exp() / self.p[k] * (counts[k] + sign * delta).clamp(0.0, total)
        })
    }

    /// Eq. (3) and (4): lower bounds on the vacuum and single-photon detections of a basis.
    fn vacuum_and_single(&self, n: [f64; 3]) -> (f64, f64) {
        let [m1, m2, m3] = self.mu;
        let minus = self.deviated(n, -1.0);
        let plus = self.deviated(n, 1.0);
        let (tau0, tau1) = (self.tau(0), self.tau(1));
        let s0 = (tau0 * (m2 * minus[2] - m3 * plus[1]) / (m2 - m3)).max(0.0);
        let s1 = tau1
            * m1
            * (minus[1] - plus[2] - (m2 * m2 - m3 * m3) / (m1 * m1) * (plus[0] - s0 / tau0))
            / (m1 * (m2 - m3) - m2 * m2 + m3 * m3);
        (s0, s1.max(0.0))
    }

    /// The bound for a block with these key- and test-basis counts, `leak` bits disclosed.
    pub fn bound(&self, key: &Counts, test: &Counts, leak: f64) -> Bound {
        let (s0_key, s1_key) = self.vacuum_and_single(key.n);
        let (_, s1_test) = self.vacuum_and_single(test.n);
        // Eq. (5): single-photon errors of the test basis, upper bound.
        let plus = self.deviated(test.m, 1.0);
        let minus = self.deviated(test.m, -1.0);
        let v1_test = (self.tau(1) * (plus[1] - minus[2]) / (self.mu[1] - self.mu[2])).max(0.0);
        let phase_error = if s1_key > 0.0 && s1_test > 0.0 {
            let ratio = (v1_test / s1_test).min(0.5);
            (ratio + gamma(self.eps_sec, ratio, s1_key, s1_test)).min(0.5)
        } else {
            0.5
        };
        // Eq. (1).
        let length = s0_key + s1_key * (1.0 - h(phase_error))
            - leak
            - 6.0 * (21.0 / self.eps_sec).log2()
            - (2.0 / self.eps_cor).log2();
        Bound {
            s0_key,
            s1_key,
            s1_test,
            v1_test,
            phase_error,
            length,
        }
    }
}

/// The BBM92 length: every key-basis coincidence a single pair, the phase error the test
/// basis's error rate plus γ: ℓ = n (1 − h(e + γ)) − leak − 6 log2(21/ε_sec) − log2(2/ε_cor).
pub fn entangled(n: f64, k: f64, errors: f64, leak: f64, eps_sec: f64, eps_cor: f64) -> f64 {
    let e = (errors / k).min(0.5);
    let phase = (e + gamma(eps_sec, e, n, k)).min(0.5);
    n * (1.0 - h(phase)) - leak - 6.0 * (21.0 / eps_sec).log2() - (2.0 / eps_cor).log2()
}

/// A key length from ℓ before the floor: the floor, if at least one bit.
pub fn bits(length: f64) -> Option<u64> {
    (length >= 1.0).then(|| length.floor() as u64)
}
