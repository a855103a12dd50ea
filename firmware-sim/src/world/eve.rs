//! An intercept-resend eavesdropper sitting at Alice's output (prepare-and-measure) or at the
//! entangled source's output towards node B.
//!
//! On each intercepted pulse Eve measures in a random basis (ideally, all photons together) and
//! resends a pulse with the same photon number in the state she found. Pulses she leaves alone
//! pass untouched. With every pulse intercepted, Bob's basis-matched error rate is
//! `1/4 + e_d/2` before dark counts; on the entangled link, where her outcome is a fair coin
//! that also projects A's photon, the same quarter.

use serde::{Deserialize, Serialize};

use super::param::{ConfigError, Section};
use super::rng::SimRng;
use super::source::{Basis, SlotChoice};
use qkd_units::bb84::state_index;

/// Parameters of the eavesdropper.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EveSpec {
    /// Share of pulses Eve intercepts and resends.
    #[serde(default)]
    pub intercept_fraction: f64,
}

/// The eavesdropper while the world runs.
#[derive(Debug, Clone)]
pub struct Eve {
    fraction: f64,
    rng: SimRng,
}

impl Eve {
    /// Validates `spec`.
    pub fn new(spec: &EveSpec, section: Section<'_>, rng: SimRng) -> Result<Self, ConfigError> {
        let fraction = section.probability("intercept_fraction", spec.intercept_fraction, 1.0)?;
        Ok(Eve { fraction, rng })
    }

    /// The BB84 state index (H, V, D, A) that travels on towards Bob for Alice's `choice`.
    #[inline]
    pub fn forward(&mut self, choice: &SlotChoice) -> usize {
        let Some(eve_basis) = self.intercepts() else {
            return choice.state_index();
        };
        let bit = if eve_basis == choice.basis {
            choice.bit
        } else {
            u8::from(self.rng.coin())
        };
        state_index(eve_basis, bit)
    }

    /// For one photon of an entangled pair, before either is measured: the BB84 state index
    /// (H, V, D, A) Eve found and resends, or `None` if she let it pass. Her outcome is a fair
    /// coin (the photon alone is unpolarized).
    #[inline]
    pub fn intercept_unpolarized(&mut self) -> Option<usize> {
        let basis = self.intercepts()?;
        Some(state_index(basis, u8::from(self.rng.coin())))
    }

    /// Whether Eve takes this pulse, and in which basis she measures it.
    fn intercepts(&mut self) -> Option<Basis> {
        if self.fraction == 0.0 || !self.rng.bernoulli(self.fraction) {
            return None;
        }
        Some(if self.rng.coin() { Basis::Z } else { Basis::X })
    }
}
