//! Detections sorted by prepared and measured BB84 state: what a window says about the channel.
//!
//! The cost the tracking loops minimise is the mean of the two bases' error rates. A rotation of
//! the Poincaré sphere by a small vector `ω` raises it by `(ω1² + ω2² + 2ω3²)/8`: every axis shows,
//! but only quadratically, because a receiver that measures in Z and X never sees circular light.
//! That is why the loops dither and fit parabolas rather than read a rotation off the counts.

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
    fn no_cost_without_both_bases() {
        let mut c = StateCounts::default();
        c.add(0, 0);
        assert_eq!(c.cost(), None);
        assert_eq!(StateCounts::default().z().rate(), None);
    }
}
