//! What a lab operator looks at first, computed from the emulator's ground truth: counts per
//! detector, double clicks, gains and basis-matched error rates per intensity class.
//!
//! Double clicks are squashed as a real receiver must: clicks in both detectors of one basis give
//! a random bit; clicks in both bases give a random basis, then a bit from that basis.

use super::node::{Clicks, NO_SLOT};
use super::rng::SimRng;
use super::source::{Basis, WcpSource};
use qkd_units::bb84::squash;

/// Accumulated statistics of a prepare-and-measure run.
#[derive(Debug, Clone)]
pub struct LinkStats {
    /// Clicks per detector H, V, D, A.
    pub clicks: [u64; 4],
    /// Clicks by origin: photon, dark, afterpulse, Raman.
    pub by_origin: [u64; 4],
    /// Slots in which two or more detectors clicked.
    pub double_clicks: u64,
    /// Per intensity class: key slots (not references) with at least one click.
    pub clicked_slots: Vec<u64>,
    /// Per intensity class and basis (Z, X): key slots where Bob's basis matched Alice's.
    pub sifted: Vec<[u64; 2]>,
    /// Per intensity class and basis: of those, the ones with Bob's bit wrong.
    pub errors: Vec<[u64; 2]>,
    /// Reference slots with a basis-matched result, per basis.
    pub reference_sifted: [u64; 2],
    /// Of those, the wrong ones.
    pub reference_errors: [u64; 2],
    open: Option<(u64, u8)>,
    rng: SimRng,
}

fn basis_index(basis: Basis) -> usize {
    match basis {
        Basis::Z => 0,
        Basis::X => 1,
    }
}

impl LinkStats {
    /// Empty statistics for `classes` intensity classes; `seed` drives double-click squashing.
    pub fn new(classes: usize, seed: u64) -> Self {
        LinkStats {
            clicks: [0; 4],
            by_origin: [0; 4],
            double_clicks: 0,
            clicked_slots: vec![0; classes],
            sifted: vec![[0; 2]; classes],
            errors: vec![[0; 2]; classes],
            reference_sifted: [0; 2],
            reference_errors: [0; 2],
            open: None,
            rng: SimRng::new(seed, 0x57A7),
        }
    }

    /// Adds clicks (in time order, as the world emits them); the source gives Alice's choices.
    pub fn add(&mut self, clicks: &Clicks, pattern: &WcpSource) {
        for i in 0..clicks.len() {
            let detector = usize::from(clicks.detector[i]);
            self.clicks[detector] += 1;
            self.by_origin[clicks.origin[i] as usize] += 1;
            let slot = clicks.slot[i];
            if slot == NO_SLOT {
                continue;
            }
            match self.open {
                Some((open, ref mut mask)) if open == slot => *mask |= 1 << detector,
                _ => {
                    self.close(pattern);
                    self.open = Some((slot, 1 << detector));
                }
            }
        }
    }

    /// Closes the last slot; call once all clicks are in.
    pub fn finish(&mut self, pattern: &WcpSource) {
        self.close(pattern);
    }

    fn close(&mut self, pattern: &WcpSource) {
        let Some((slot, mask)) = self.open.take() else {
            return;
        };
        if mask.count_ones() >= 2 {
            self.double_clicks += 1;
        }
        let choice = pattern.choice(slot);
        let class = usize::from(choice.intensity);
        if !choice.reference {
            self.clicked_slots[class] += 1;
        }
        let rng = &mut self.rng;
        let Some((basis, bit)) = squash(mask, || rng.coin()) else {
            return;
        };
        if basis != choice.basis {
            return;
        }
        let b = basis_index(basis);
        let wrong = u64::from(bit != choice.bit);
        if choice.reference {
            self.reference_sifted[b] += 1;
            self.reference_errors[b] += wrong;
        } else {
            self.sifted[class][b] += 1;
            self.errors[class][b] += wrong;
        }
    }

    /// Basis-matched error rate of `class` in `basis`, `None` without sifted slots.
    pub fn qber(&self, class: usize, basis: Basis) -> Option<f64> {
        let b = basis_index(basis);
        let n = self.sifted.get(class)?[b];
        (n > 0).then(|| self.errors[class][b] as f64 / n as f64)
    }

    /// Total clicks.
    pub fn total_clicks(&self) -> u64 {
        self.clicks.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squashed_double_clicks_are_unbiased() {
        let mut rng = SimRng::new(0, 0);
        let n = 100_000;
        let ones = (0..n)
            .filter(|_| squash(0b0011, || rng.coin()) == Some((Basis::Z, 1)))
            .count();
        let sigma = (f64::from(n) * 0.25).sqrt();
        assert!((ones as f64 - f64::from(n) / 2.0).abs() < 5.0 * sigma);
        let z = (0..n)
            .filter(|_| matches!(squash(0b0101, || rng.coin()), Some((Basis::Z, 0))))
            .count();
        assert!((z as f64 - f64::from(n) / 2.0).abs() < 5.0 * sigma);
    }
}
