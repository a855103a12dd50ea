//! Photon sources: a weak-coherent-pulse source with decoy intensities, and an SPDC pair source.
//!
//! The weak-coherent source's choices for each slot (basis, bit, intensity class, reference or
//! not) are a keyed function of the slot index ([`qkd_units::pattern`]): Alice can report the
//! choices of any slot Bob detected without storing one record per pulse, and the emulator never
//! touches the slots where nothing was detected. The world starts with its own reproducible
//! pattern (seeded); a node that drives the source loads a pattern key of its own, which takes
//! over from the next sync pulse, counting slots from there. Photon numbers are Poisson with the
//! slot's mean photon number.

use serde::{Deserialize, Serialize};

use qkd_units::pattern::{PatternKey, PatternShares, SlotPattern};

use super::clock::SlotClock;
use super::param::{ConfigError, Section};

/// Highest repetition rate accepted, in Hz.
pub const MAX_REP_RATE_HZ: u64 = 10_000_000_000;
pub use qkd_units::bb84::Basis;
pub use qkd_units::pattern::{MAX_INTENSITIES, SlotChoice};

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
    /// Spectral width (FWHM) of the pulses in GHz, which sets what PMD does to them.
    #[serde(default = "default_laser_width")]
    pub spectral_width_ghz: f64,
}

/// A gain-switched telecom laser's pulses are a few tens of ps long and chirped: ~10 GHz wide
/// (assumed; PMD barely touches them either way).
pub fn default_laser_width() -> f64 {
    10.0
}

/// Type-II SPDC photons in the C band after a ~0.8 nm filter: ~100 GHz wide (assumed).
pub fn default_pair_width() -> f64 {
    100.0
}

/// Widest spectrum accepted, in GHz (a 0.1 µm band around 1550 nm is ~12 THz).
pub const MAX_SPECTRAL_WIDTH_GHZ: f64 = 1e5;

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
            spectral_width_ghz: default_laser_width(),
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
    /// The patterns in force, from the slot each starts at (the first at 0), in order.
    patterns: Vec<(u64, SlotPattern)>,
}

impl WcpSource {
    /// Validates `spec`; `pattern_seed` seeds Alice's choices until a node loads a key.
    pub fn new(
        spec: &WcpSourceSpec,
        section: Section<'_>,
        pattern_seed: u64,
    ) -> Result<Self, ConfigError> {
        let rate = section.count("rep_rate_hz", spec.rep_rate_hz, 1, MAX_REP_RATE_HZ)?;
        section.check(
            "spectral_width_ghz",
            spec.spectral_width_ghz,
            0.0,
            MAX_SPECTRAL_WIDTH_GHZ,
            "GHz",
        )?;
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
        let shares = PatternShares::new(&probabilities, basis_z_probability, reference_share);
        Ok(WcpSource {
            clock: SlotClock::new(rate),
            mean_photon_numbers,
            probabilities,
            basis_z_probability,
            reference_share,
            sync_divider,
            patterns: vec![(0, SlotPattern::seeded(pattern_seed, shares))],
        })
    }

    /// The same source with `spec`'s classes and shares (the rate is fixed) and its patterns
    /// kept: a node configures the source, its pattern goes on.
    pub fn reconfigured(
        &self,
        spec: &WcpSourceSpec,
        section: Section<'_>,
    ) -> Result<Self, ConfigError> {
        let mut source = Self::new(spec, section, 0)?;
        let shares = *source.patterns[0].1.shares();
        source.patterns = self
            .patterns
            .iter()
            .map(|(start, p)| (*start, p.with_shares(shares)))
            .collect();
        Ok(source)
    }

    /// Alice's choices for world slot `slot`: the pattern in force there, counting from its
    /// start.
    #[inline]
    pub fn choice(&self, slot: u64) -> SlotChoice {
        let i = self.patterns.partition_point(|(start, _)| *start <= slot);
        let (start, pattern) = &self.patterns[i.saturating_sub(1)];
        pattern.choice(slot - start)
    }

    /// World slot the pattern in force last starts at (0 for the world's own).
    pub fn latest_pattern_start(&self) -> u64 {
        self.patterns.last().map_or(0, |(start, _)| *start)
    }

    /// A node's pattern key takes over from world slot `start` (a sync slot not yet emitted).
    pub fn start_pattern(&mut self, start: u64, key: &PatternKey) {
        let shares = *self.patterns[0].1.shares();
        // Patterns that had not begun by then never will.
        self.patterns.retain(|(s, _)| *s < start);
        self.patterns.push((start, SlotPattern::keyed(key, shares)));
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
    /// Spectral width (FWHM) of each photon in GHz, which sets what PMD does to it.
    #[serde(default = "default_pair_width")]
    pub spectral_width_ghz: f64,
}

impl SpdcSourceSpec {
    /// A source of `pair_rate_hz` pairs per second with the default coupling and spectrum.
    pub fn with_rate(pair_rate_hz: f64) -> Self {
        SpdcSourceSpec {
            pair_rate_hz,
            coupling_efficiency: 1.0,
            spectral_width_ghz: default_pair_width(),
        }
    }
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
            let c = src.choice(slot);
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
        let same = (0..1000).all(|s| a.choice(s) == b.choice(s));
        let differ = (0..1000).any(|s| a.choice(s) != c.choice(s));
        assert!(same && differ);
    }

    #[test]
    fn a_loaded_key_takes_over_from_its_slot_counting_from_there() {
        let spec = WcpSourceSpec::decoy_bb84(1_000_000, 0.5);
        let mut src = WcpSource::new(&spec, Section(""), 1).unwrap();
        let before: Vec<SlotChoice> = (0..3000).map(|s| src.choice(s)).collect();
        let key = PatternKey::from_bytes([9; 32]);
        src.start_pattern(2000, &key);
        let node = SlotPattern::keyed(&key, PatternShares::new(&[0.8, 0.15, 0.05], 0.5, 0.0));
        for slot in 0..3000 {
            let expected = if slot < 2000 {
                before[slot as usize]
            } else {
                node.choice(slot - 2000)
            };
            assert_eq!(src.choice(slot), expected, "slot {slot}");
        }
        // Reconfiguring keeps the node's pattern, with the new shares.
        let mut biased = spec.clone();
        biased.basis_z_probability = 0.9;
        let src = src.reconfigured(&biased, Section("")).unwrap();
        let node = SlotPattern::keyed(&key, PatternShares::new(&[0.8, 0.15, 0.05], 0.9, 0.0));
        assert!((2000..3000).all(|s| src.choice(s) == node.choice(s - 2000)));
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
