//! Deterministic random streams and the few distributions the world model samples.
//!
//! Every component draws from its own stream derived from the world seed, so changing one
//! parameter (say the dark-count rate) does not reshuffle the photons of an otherwise identical run.

use rand::{Rng, RngExt, SeedableRng};
use rand_distr::{Distribution, Exp1, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

pub use qkd_units::mix::mix64;

/// Derives the seed of one named stream from the world seed.
pub fn stream_seed(world_seed: u64, stream: u64) -> u64 {
    mix64(mix64(world_seed) ^ mix64(stream.wrapping_mul(0xD6E8_FEB8_6659_FD93)))
}

/// A seeded random stream (xoshiro256++: fast, portable, reproducible across platforms).
#[derive(Debug, Clone)]
pub struct SimRng(Xoshiro256PlusPlus);

impl SimRng {
    /// The stream numbered `stream` of the world seeded with `world_seed`.
    pub fn new(world_seed: u64, stream: u64) -> Self {
        SimRng(Xoshiro256PlusPlus::seed_from_u64(stream_seed(
            world_seed, stream,
        )))
    }

    /// 64 uniform random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `(0, 1]`: safe to take the logarithm of.
    #[inline]
    pub fn uniform_open_low(&mut self) -> f64 {
        ((self.0.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A fair coin.
    #[inline]
    pub fn coin(&mut self) -> bool {
        self.0.next_u64() >> 63 == 1
    }

    /// `true` with probability `p`.
    #[inline]
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard exponential variate (mean 1).
    #[inline]
    pub fn exponential(&mut self) -> f64 {
        Exp1.sample(&mut self.0)
    }

    /// Standard normal variate.
    #[inline]
    pub fn normal(&mut self) -> f64 {
        StandardNormal.sample(&mut self.0)
    }

    /// A uniformly random integer below `n` (`n > 0`).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.random_range(0..n)
    }

    /// Number of failures before the first success of Bernoulli trials, given `skip`.
    #[inline]
    pub fn geometric(&mut self, skip: &GeometricSkip) -> u64 {
        match skip.ln_fail {
            None => 0,
            Some(ln_fail) if ln_fail < 0.0 => {
                let gap = (self.uniform_open_low().ln() / ln_fail).floor();
                if gap >= u64::MAX as f64 {
                    u64::MAX
                } else {
                    gap as u64
                }
            }
            Some(_) => u64::MAX,
        }
    }
}

/// Precomputed parameters for skipping over runs of Bernoulli failures.
///
/// Sampling the gap to the next success costs one logarithm however rare successes are: this is
/// what makes the emulator's cost grow with detection events rather than with pulses.
#[derive(Debug, Clone, Copy)]
pub struct GeometricSkip {
    /// `ln(1 - p)`; `None` when `p == 1` (every trial succeeds).
    ln_fail: Option<f64>,
}

impl GeometricSkip {
    /// Trials succeeding with probability `p` in `[0, 1]`; `p == 0` never succeeds.
    pub fn new(p: f64) -> Self {
        if p >= 1.0 {
            GeometricSkip { ln_fail: None }
        } else {
            GeometricSkip {
                ln_fail: Some((-p).ln_1p()),
            }
        }
    }

    /// `true` when no trial can succeed.
    pub fn never(&self) -> bool {
        self.ln_fail.is_some_and(|l| l >= 0.0)
    }
}

/// Poisson distribution conditioned on at least one event, for small to moderate means.
///
/// Used for the number of photons in a pulse already known to carry at least one photon that
/// could be detected.
#[derive(Debug, Clone, Copy)]
pub struct ZeroTruncatedPoisson {
    mean: f64,
    /// `P(K = 1)` before truncation: `mean · e^-mean`.
    first_term: f64,
    /// `P(K ≥ 1) = 1 - e^-mean`.
    at_least_one: f64,
}

impl ZeroTruncatedPoisson {
    /// Mean of the untruncated Poisson distribution (`mean > 0`).
    pub fn new(mean: f64) -> Self {
        ZeroTruncatedPoisson {
            mean,
            first_term: mean * (-mean).exp(),
            at_least_one: -(-mean).exp_m1(),
        }
    }

    /// Probability of at least one event before truncation.
    pub fn at_least_one(&self) -> f64 {
        self.at_least_one
    }

    /// Draws `K ≥ 1` by inversion of the cumulative distribution.
    #[inline]
    pub fn sample(&self, rng: &mut SimRng) -> u32 {
        let mut target = rng.uniform() * self.at_least_one;
        let mut k = 1u32;
        let mut term = self.first_term;
        // The loop ends once the remaining mass is used up or terms underflow to zero.
        while target > term && term > 0.0 {
            target -= term;
            k += 1;
            term *= self.mean / f64::from(k);
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let mut a = SimRng::new(7, 1);
        let mut b = SimRng::new(7, 1);
        let mut c = SimRng::new(7, 2);
        let xa: Vec<f64> = (0..4).map(|_| a.uniform()).collect();
        let xb: Vec<f64> = (0..4).map(|_| b.uniform()).collect();
        let xc: Vec<f64> = (0..4).map(|_| c.uniform()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
    }

    #[test]
    fn geometric_gap_has_the_closed_form_mean() {
        // Mean of failures before success: (1-p)/p; variance (1-p)/p^2.
        let p = 0.01;
        let skip = GeometricSkip::new(p);
        let mut rng = SimRng::new(1, 0);
        let n = 200_000;
        let mean = (0..n).map(|_| rng.geometric(&skip) as f64).sum::<f64>() / f64::from(n);
        let expected = (1.0 - p) / p;
        let sigma = ((1.0 - p) / (p * p) / f64::from(n)).sqrt();
        assert!(
            (mean - expected).abs() < 5.0 * sigma,
            "{mean} vs {expected}"
        );
    }

    #[test]
    fn geometric_edge_probabilities() {
        let mut rng = SimRng::new(1, 0);
        assert_eq!(rng.geometric(&GeometricSkip::new(1.0)), 0);
        assert_eq!(rng.geometric(&GeometricSkip::new(0.0)), u64::MAX);
        assert!(GeometricSkip::new(0.0).never());
    }

    #[test]
    fn truncated_poisson_matches_closed_form_mean() {
        // E[K | K ≥ 1] = λ / (1 - e^-λ); Var = E[K^2|K≥1] - mean^2 with E[K^2] = λ + λ^2.
        for lambda in [0.01, 0.5, 3.0] {
            let dist = ZeroTruncatedPoisson::new(lambda);
            let mut rng = SimRng::new(3, 0);
            let n = 200_000;
            let mean = (0..n)
                .map(|_| f64::from(dist.sample(&mut rng)))
                .sum::<f64>()
                / f64::from(n);
            let p1 = -(-lambda).exp_m1();
            let expected = lambda / p1;
            let second = (lambda + lambda * lambda) / p1;
            let sigma = ((second - expected * expected) / f64::from(n)).sqrt();
            assert!(
                (mean - expected).abs() < 5.0 * sigma.max(1e-12),
                "λ={lambda}: {mean} vs {expected}"
            );
        }
    }
}
