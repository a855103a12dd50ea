//! Photon sources: a weak-coherent-pulse source with decoy intensities, and an SPDC pair source.
//!
//! The weak-coherent source's choices for each slot (basis, bit, intensity class, reference or
//! not) are a keyed hash of the slot index: Alice can report the choices of any slot Bob detected
//! without storing one record per pulse, and the emulator never touches the slots where nothing
//! was detected. Photon numbers are Poisson with the slot's mean photon number.

use serde::{Deserialize, Serialize};

use super::clock::SlotClock;
use super::param::{ConfigError, Section};
use super::rng::mix64;

/// Highest repetition rate accepted, in Hz.
pub const MAX_REP_RATE_HZ: u64 = 10_000_000_000;
/// Most intensity classes (signal plus decoys).
pub const MAX_INTENSITIES: usize = 4;

pub use qkd_units::bb84::Basis;

/// One intensity class of the weak-coherent source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntensitySpec {
    /// Mean photon number per pulse.
    pub mean_photon_number: f64,
    /// Probability that a pulse uses this class.
    pub probability: f64,
}

fn default_sync_divider() -> u32 {
    1000
}

/// Parameters of the weak-coherent (decoy-state BB84) source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WcpSourceSpec {
    /// Pulse repetition rate in Hz.
    pub rep_rate_hz: u64,
    /// Intensity classes; the first is the signal.
    pub intensities: Vec<IntensitySpec>,
    /// Probability that Alice prepares in the Z basis.
    pub basis_z_probability: f64,
    /// Share of slots carrying publicly known reference states (signal intensity, both bases
    /// equally likely), for tracking.
    #[serde(default)]
    pub reference_share: f64,
    /// One sync pulse every this many slots.
    #[serde(default = "default_sync_divider")]
    pub sync_divider: u32,
}

impl WcpSourceSpec {
    /// Signal `mu` with the two standard decoys (`mu/5` and vacuum), biased towards the signal.
    pub fn decoy_bb84(rep_rate_hz: u64, mu: f64) -> Self {
        WcpSourceSpec {
            rep_rate_hz,
            intensities: vec![
                IntensitySpec {
                    mean_photon_number: mu,
                    probability: 0.8,
                },
                IntensitySpec {
                    mean_photon_number: mu / 5.0,
                    probability: 0.15,
                },
                IntensitySpec {
                    mean_photon_number: 0.0,
                    probability: 0.05,
                },
            ],
            basis_z_probability: 0.5,
            reference_share: 0.0,
            sync_divider: default_sync_divider(),
        }
    }
}

/// What Alice chose for one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotChoice {
    /// Preparation basis.
    pub basis: Basis,
    /// Encoded bit.
    pub bit: u8,
    /// Intensity class (index into the intensity list; 0 is the signal).
    pub intensity: u8,
    /// `true` when the slot carries a publicly known reference state.
    pub reference: bool,
}

impl SlotChoice {
    /// Index of the BB84 state: 0 = H, 1 = V, 2 = D, 3 = A (the detector order too).
    #[inline]
    pub fn state_index(&self) -> usize {
        qkd_units::bb84::state_index(self.basis, self.bit)
    }
}

/// Converts a probability to a threshold on 32 uniform bits.
fn threshold(p: f64) -> u64 {
    (p * 4_294_967_296.0).round() as u64
}

/// Alice's per-slot choices, a pure function of the pattern key and the slot index.
#[derive(Debug, Clone)]
pub struct SlotPattern {
    key: u64,
    key_a: u64,
    key_b: u64,
    z_threshold: u64,
    reference_threshold: u64,
    /// Cumulative thresholds of the intensity classes on 32 bits.
    intensity_thresholds: [u64; MAX_INTENSITIES],
    intensity_count: usize,
}

impl SlotPattern {
    /// The key the pattern was drawn from.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Alice's choices for `slot`.
    pub fn choice(&self, slot: u64) -> SlotChoice {
        let a = mix64(self.key_a ^ slot);
        let b = mix64(self.key_b ^ slot);
        let reference = (b >> 32) < self.reference_threshold;
        // References are split evenly between the bases: the receiver needs both to see the
        // whole rotation, whatever bias the key slots use.
        let z_threshold = if reference { 1 << 31 } else { self.z_threshold };
        let basis = if (a >> 32) < z_threshold {
            Basis::Z
        } else {
            Basis::X
        };
        let low = a & 0xFFFF_FFFF;
        let intensity = if reference {
            0
        } else {
            self.intensity_thresholds[..self.intensity_count]
                .iter()
                .position(|&t| low < t)
                .unwrap_or(self.intensity_count - 1) as u8
        };
        SlotChoice {
            basis,
            bit: (b & 1) as u8,
            intensity,
            reference,
        }
    }
}

/// A validated weak-coherent source.
#[derive(Debug, Clone)]
pub struct WcpSource {
    /// The source's pulse clock.
    pub clock: SlotClock,
    /// Mean photon number of each class.
    pub mean_photon_numbers: Vec<f64>,
    /// Probability of each class.
    pub probabilities: Vec<f64>,
    /// Probability of the Z basis.
    pub basis_z_probability: f64,
    /// Share of reference slots.
    pub reference_share: f64,
    /// Slots per sync pulse.
    pub sync_divider: u64,
    /// Per-slot choices.
    pub pattern: SlotPattern,
}

impl WcpSource {
    /// Validates `spec`; `pattern_key` seeds Alice's choices.
    pub fn new(
        spec: &WcpSourceSpec,
        section: Section<'_>,
        pattern_key: u64,
    ) -> Result<Self, ConfigError> {
        let rate = section.count("rep_rate_hz", spec.rep_rate_hz, 1, MAX_REP_RATE_HZ)?;
        let count = spec.intensities.len();
        if count == 0 || count > MAX_INTENSITIES {
            return Err(section.inconsistent(
                "intensities",
                format!(
                    "give 1 to {MAX_INTENSITIES} intensity classes (signal first), got {count}"
                ),
            ));
        }
        let mut mean_photon_numbers = Vec::with_capacity(count);
        let mut probabilities = Vec::with_capacity(count);
        for (i, class) in spec.intensities.iter().enumerate() {
            let name = section.nested(&format!("intensities[{i}]"));
            let sec = Section(&name);
            mean_photon_numbers.push(sec.check(
                "mean_photon_number",
                class.mean_photon_number,
                0.0,
                100.0,
                "photons",
            )?);
            probabilities.push(sec.probability("probability", class.probability, 1.0)?);
        }
        let total: f64 = probabilities.iter().sum();
        if (total - 1.0).abs() > 1e-9 {
            return Err(section.inconsistent(
                "intensities",
                format!("class probabilities must sum to 1, they sum to {total}"),
            ));
        }
        let basis_z_probability =
            section.probability("basis_z_probability", spec.basis_z_probability, 1.0)?;
        let reference_share =
            section.check("reference_share", spec.reference_share, 0.0, 0.5, "")?;
        let sync_divider =
            section.count("sync_divider", u64::from(spec.sync_divider), 1, 1 << 30)?;
        let mut intensity_thresholds = [0u64; MAX_INTENSITIES];
        let mut cumulative = 0.0;
        for (slot, p) in intensity_thresholds.iter_mut().zip(&probabilities) {
            cumulative += p;
            *slot = threshold(cumulative);
        }
        Ok(WcpSource {
            clock: SlotClock::new(rate),
            mean_photon_numbers,
            probabilities,
            basis_z_probability,
            reference_share,
            sync_divider,
            pattern: SlotPattern {
                key: pattern_key,
                key_a: mix64(pattern_key ^ 0xA11C_E000),
                key_b: mix64(pattern_key ^ 0xB0B0_0000),
                z_threshold: threshold(basis_z_probability),
                reference_threshold: threshold(reference_share),
                intensity_thresholds,
                intensity_count: count,
            },
        })
    }

    /// Probability that a slot is a key slot (not a reference) of intensity class `class`.
    pub fn key_share(&self, class: usize) -> f64 {
        (1.0 - self.reference_share) * self.probabilities.get(class).copied().unwrap_or(0.0)
    }
}

/// Parameters of a continuous-wave SPDC source of polarization-entangled pairs `(|HH⟩+|VV⟩)/√2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpdcSourceSpec {
    /// Mean rate of pairs leaving the source, in pairs per second. Pairs are emitted as a Poisson
    /// process, so several pairs inside one coincidence window (multi-pair emission) occur at the
    /// rate the statistics dictate.
    pub pair_rate_hz: f64,
    /// Probability that a photon leaves the source into its fiber (heralding / coupling efficiency).
    #[serde(default = "one")]
    pub coupling_efficiency: f64,
}

fn one() -> f64 {
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(spec: &WcpSourceSpec) -> Result<WcpSource, ConfigError> {
        WcpSource::new(spec, Section("source"), 42)
    }

    #[test]
    fn pattern_frequencies_follow_configured_probabilities() {
        let mut spec = WcpSourceSpec::decoy_bb84(1_000_000, 0.5);
        spec.basis_z_probability = 0.9;
        spec.reference_share = 0.1;
        let src = source(&spec).unwrap();
        let n = 400_000u64;
        let mut z = 0u64;
        let mut ones = 0u64;
        let mut refs = 0u64;
        let mut ref_z = 0u64;
        let mut classes = [0u64; 3];
        for slot in 0..n {
            let c = src.pattern.choice(slot);
            if c.reference {
                ref_z += u64::from(c.basis == Basis::Z);
            } else {
                z += u64::from(c.basis == Basis::Z);
            }
            ones += u64::from(c.bit);
            refs += u64::from(c.reference);
            if c.reference {
                assert_eq!(c.intensity, 0, "references use the signal intensity");
            } else {
                classes[usize::from(c.intensity)] += 1;
            }
        }
        let within_of = |count: u64, total: u64, p: f64| {
            let sigma = (total as f64 * p * (1.0 - p)).sqrt();
            (count as f64 - total as f64 * p).abs() < 5.0 * sigma
        };
        let within = |count: u64, p: f64| within_of(count, n, p);
        assert!(within_of(z, n - refs, 0.9));
        assert!(
            within_of(ref_z, refs, 0.5),
            "references use both bases evenly"
        );
        assert!(within(ones, 0.5));
        assert!(within(refs, 0.1));
        for (class, &count) in classes.iter().enumerate() {
            assert!(
                within(count, src.key_share(class)),
                "class {class}: {count}"
            );
        }
    }

    #[test]
    fn pattern_is_a_pure_function_of_key_and_slot() {
        let spec = WcpSourceSpec::decoy_bb84(1_000_000, 0.5);
        let a = WcpSource::new(&spec, Section(""), 1).unwrap();
        let b = WcpSource::new(&spec, Section(""), 1).unwrap();
        let c = WcpSource::new(&spec, Section(""), 2).unwrap();
        let same = (0..1000).all(|s| a.pattern.choice(s) == b.pattern.choice(s));
        let differ = (0..1000).any(|s| a.pattern.choice(s) != c.pattern.choice(s));
        assert!(same && differ);
    }

    #[test]
    fn rejects_probabilities_not_summing_to_one_and_bad_rates() {
        let mut spec = WcpSourceSpec::decoy_bb84(1_000_000, 0.5);
        spec.intensities[0].probability = 0.5;
        let err = source(&spec).unwrap_err().to_string();
        assert!(
            err.starts_with("source.intensities: class probabilities must sum to 1"),
            "{err}"
        );
        let mut spec = WcpSourceSpec::decoy_bb84(0, 0.5);
        assert!(source(&spec).is_err());
        spec.rep_rate_hz = 1_000;
        spec.intensities[1].mean_photon_number = -0.1;
        let err = source(&spec).unwrap_err().to_string();
        assert!(
            err.starts_with("source.intensities[1].mean_photon_number"),
            "{err}"
        );
    }
}
