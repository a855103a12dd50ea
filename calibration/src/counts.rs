//! Detections sorted by prepared and measured BB84 state: what a window says about the channel.
//!
//! The cost the tracking loops minimise is the mean of the two bases' error rates. A rotation of
//! the Poincaré sphere by a small vector `ω` raises it by `(ω1² + ω2² + 2ω3²)/8`: every axis shows,
//! but only quadratically, because a receiver that measures in Z and X never sees circular light.
//! That is why, near alignment, the loops dither and fit parabolas rather than read a rotation
//! off the counts; far from it, the correlations across prepared and measured components
//! ([`StateCounts::correlations`]) change linearly with the actuators and steer the way back.

use serde::{Deserialize, Serialize};

/// Counts of detections by prepared state (rows) and measured state (columns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts(pub [[u64; 4]; 4]);

/// Error rate of one basis, with the detections behind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BasisErrors {
    /// Basis-matched detections.
    pub detections: u64,
    /// Of those, the ones with the wrong bit.
    pub errors: u64,
}

impl BasisErrors {
    /// Error rate, `None` without detections.
    pub fn rate(&self) -> Option<f64> {
        (self.detections > 0).then(|| self.errors as f64 / self.detections as f64)
    }

    /// Binomial variance of the rate estimate.
    fn variance(&self) -> Option<f64> {
        self.rate()
            .map(|q| q.max(1.0 / self.detections as f64) * (1.0 - q) / self.detections as f64)
    }
}

impl StateCounts {
    /// Records one detection.
    pub fn add(&mut self, prepared: usize, measured: usize) {
        self.0[prepared & 3][measured & 3] += 1;
    }

    /// Adds another window's counts.
    pub fn merge(&mut self, other: &StateCounts) {
        for (row, other_row) in self.0.iter_mut().zip(&other.0) {
            for (cell, &o) in row.iter_mut().zip(other_row) {
                *cell += o;
            }
        }
    }

    /// All detections counted.
    pub fn total(&self) -> u64 {
        self.0.iter().flatten().sum()
    }

    /// Errors of the basis whose states are `first` and `first + 1`.
    fn basis(&self, first: usize) -> BasisErrors {
        let c = &self.0;
        let (a, b) = (first, first + 1);
        BasisErrors {
            detections: c[a][a] + c[a][b] + c[b][a] + c[b][b],
            errors: c[a][b] + c[b][a],
        }
    }

    /// Key-basis (Z) errors.
    pub fn z(&self) -> BasisErrors {
        self.basis(0)
    }

    /// Test-basis (X) errors.
    pub fn x(&self) -> BasisErrors {
        self.basis(2)
    }

    /// The tracking cost: the mean of the two bases' error rates (`None` unless both have data).
    pub fn cost(&self) -> Option<f64> {
        Some(0.5 * (self.z().rate()? + self.x().rate()?))
    }

    /// Standard error of [`Self::cost`].
    pub fn cost_sigma(&self) -> Option<f64> {
        Some(0.5 * (self.z().variance()? + self.x().variance()?).sqrt())
    }

    /// The correlations between prepared and measured Stokes components that the counts show:
    /// `[R11, R22, R12, R21]` of the rotation `R` from prepared to measured state (1 = S1 of the
    /// Z basis, 2 = S2 of the X basis), each with the detections behind it, `None` without any.
    /// Far from alignment they pin the rotation down (up to one sign) where the cost alone only
    /// shows how far it is; disclosed key bits never cross bases, so they give only R11 and R22.
    pub fn correlations(&self) -> [Option<(f64, u64)>; 4] {
        let c = &self.0;
        let correlation = |a: usize, b: usize| {
            let agree = c[a][b] + c[a + 1][b + 1];
            let disagree = c[a][b + 1] + c[a + 1][b];
            let n = agree + disagree;
            (n > 0).then(|| ((agree as f64 - disagree as f64) / n as f64, n))
        };
        [
            correlation(0, 0),
            correlation(2, 2),
            correlation(2, 0),
            correlation(0, 2),
        ]
    }

    /// Detections in the basis with fewer of them: what limits the precision of the cost.
    pub fn scarcer_basis(&self) -> u64 {
        self.z().detections.min(self.x().detections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rates_and_cost_follow_the_counts() {
        let mut c = StateCounts::default();
        // Z: 90 right, 10 wrong; X: 45 right, 5 wrong; cross-basis clicks do not count.
        for _ in 0..45 {
            c.add(0, 0);
            c.add(1, 1);
            c.add(2, 2);
            c.add(0, 2);
        }
        for _ in 0..5 {
            c.add(0, 1);
            c.add(1, 0);
            c.add(3, 2);
        }
        assert_eq!(
            c.z(),
            BasisErrors {
                detections: 100,
                errors: 10
            }
        );
        assert_eq!(
            c.x(),
            BasisErrors {
                detections: 50,
                errors: 5
            }
        );
        assert!((c.cost().unwrap() - 0.1).abs() < 1e-15);
        let sigma = 0.5 * (0.1 * 0.9 / 100.0 + 0.1 * 0.9 / 50.0f64).sqrt();
        assert!((c.cost_sigma().unwrap() - sigma).abs() < 1e-15);
        assert_eq!(c.scarcer_basis(), 50);
        assert_eq!(c.total(), 195);
        let mut twice = c;
        twice.merge(&c);
        assert_eq!(twice.total(), 390);
        assert_eq!(twice.cost(), c.cost());
    }

    #[test]
    fn correlations_read_the_rotation_block() {
        let mut c = StateCounts::default();
        // H sent: 80 H, 20 V in Z; 70 D, 30 A in X. D sent: 40 H, 60 V; 90 D, 10 A. V and A
        // sent mirror them, as a rotation does.
        for (sent, measured, n) in [
            (0, 0, 80),
            (0, 1, 20),
            (0, 2, 70),
            (0, 3, 30),
            (1, 1, 80),
            (1, 0, 20),
            (1, 3, 70),
            (1, 2, 30),
            (2, 0, 40),
            (2, 1, 60),
            (2, 2, 90),
            (2, 3, 10),
            (3, 1, 40),
            (3, 0, 60),
            (3, 3, 90),
            (3, 2, 10),
        ] {
            for _ in 0..n {
                c.add(sent, measured);
            }
        }
        let r = c.correlations().map(|v| v.unwrap());
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(r[0].0, 0.6) && close(r[1].0, 0.8), "{r:?}");
        assert!(close(r[2].0, -0.2) && close(r[3].0, 0.4), "{r:?}");
        assert!(r.iter().all(|&(_, n)| n == 200));
        // Disclosed key bits: basis-matched only.
        let mut sifted = StateCounts::default();
        sifted.add(0, 0);
        sifted.add(2, 3);
        let s = sifted.correlations();
        assert_eq!(
            (s[0], s[1], s[2], s[3]),
            (Some((1.0, 1)), Some((-1.0, 1)), None, None)
        );
    }

    #[test]
    fn no_cost_without_both_bases() {
        let mut c = StateCounts::default();
        c.add(0, 0);
        assert_eq!(c.cost(), None);
        assert_eq!(StateCounts::default().z().rate(), None);
    }
}
