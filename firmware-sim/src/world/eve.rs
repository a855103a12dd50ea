//! An intercept-resend eavesdropper sitting at Alice's output.
//!
//! On each intercepted pulse Eve measures in a random basis (ideally, all photons together) and
//! resends a pulse with the same photon number in the state she found. Pulses she leaves alone
//! pass untouched. With every pulse intercepted, Bob's basis-matched error rate is
//! `1/4 + e_d/2` before dark counts.

use serde::{Deserialize, Serialize};

use super::param::{ConfigError, Section};
use super::rng::SimRng;
use super::source::{Basis, SlotChoice};

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
        if self.fraction == 0.0 || !self.rng.bernoulli(self.fraction) {
            return choice.state_index();
        }
        let eve_basis = if self.rng.coin() { Basis::Z } else { Basis::X };
        let bit = if eve_basis == choice.basis {
            choice.bit
        } else {
            u8::from(self.rng.coin())
        };
        SlotChoice {
            basis: eve_basis,
            bit,
            ..*choice
        }
        .state_index()
    }
}
