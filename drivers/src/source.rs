//! Photon sources: the weak-coherent transmitter of decoy-state BB84, and entangled-pair sources.

use std::future::Future;

use qkd_units::pattern::{PatternKey, PatternShares};
use qkd_units::{Hertz, MeanPhotonNumber, Probability};

use crate::DeviceIdentity;
use crate::error::{InvalidSetting, SourceError};

/// Most intensity classes a source is asked for (signal plus decoys).
pub const MAX_INTENSITY_CLASSES: usize = 4;

pub use qkd_units::bb84::Basis;

/// One intensity class of a weak-coherent source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntensityClass {
    /// Mean photon number per pulse.
    pub mean_photon_number: MeanPhotonNumber,
    /// Probability that a pulse uses this class.
    pub probability: Probability,
}

/// What a weak-coherent source sends: its intensity classes (signal first), basis bias and
/// share of reference slots.
#[derive(Debug, Clone, PartialEq)]
pub struct WcpSettings {
    /// Intensity classes, the signal first.
    pub intensities: Vec<IntensityClass>,
    /// Probability of preparing in the Z basis.
    pub basis_z_probability: Probability,
    /// Share of slots carrying publicly known reference states (at most one half).
    pub reference_share: Probability,
}

impl WcpSettings {
    /// Checks what the units cannot: the number of classes and that probabilities sum to one.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let count = self.intensities.len();
        if count == 0 || count > MAX_INTENSITY_CLASSES {
            return Err(InvalidSetting::new(
                "intensities",
                &format!("give 1 to {MAX_INTENSITY_CLASSES} classes, signal first; got {count}"),
            ));
        }
        let total: f64 = self.intensities.iter().map(|c| c.probability.get()).sum();
        if (total - 1.0).abs() > 1e-9 {
            return Err(InvalidSetting::new(
                "intensities",
                &format!("class probabilities must sum to 1, they sum to {total}"),
            ));
        }
        if self.reference_share.get() > 0.5 {
            return Err(InvalidSetting::new(
                "reference_share",
                &format!("at most 0.5, got {}", self.reference_share.get()),
            ));
        }
        Ok(())
    }

    /// The shares a pattern draws with under these settings.
    pub fn pattern_shares(&self) -> PatternShares {
        let probabilities: Vec<f64> = self
            .intensities
            .iter()
            .map(|c| c.probability.get())
            .collect();
        PatternShares::new(
            &probabilities,
            self.basis_z_probability.get(),
            self.reference_share.get(),
        )
    }
}

/// Alice's records of what she sent in a set of slots, as parallel arrays.
#[derive(Clone, Default, PartialEq)]
pub struct EmissionRecords {
    /// Slot indices, in the order requested.
    pub slot: Vec<u64>,
    /// Preparation basis of each slot.
    pub basis: Vec<Basis>,
    /// Encoded bit of each slot.
    pub bit: Vec<u8>,
    /// Intensity class of each slot (index into the settings' classes).
    pub intensity: Vec<u8>,
    /// Whether the slot carried a publicly known reference state.
    pub reference: Vec<bool>,
}

/// The number of slots only: bases and bits are Alice's secrets until sifting.
impl std::fmt::Debug for EmissionRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EmissionRecords({} slots)", self.slot.len())
    }
}

impl Drop for EmissionRecords {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.bit);
    }
}

impl EmissionRecords {
    /// Forgets all records, keeping the allocations.
    pub fn clear(&mut self) {
        self.slot.clear();
        self.basis.clear();
        self.bit.clear();
        self.intensity.clear();
        self.reference.clear();
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.slot.len()
    }

    /// `true` without records.
    pub fn is_empty(&self) -> bool {
        self.slot.is_empty()
    }
}

/// A weak-coherent-pulse transmitter with decoy intensities and random basis and bit choices.
pub trait WcpSource: Send {
    /// The device's identity.
    fn identity(&self) -> &DeviceIdentity;

    /// Pulse repetition rate (fixed by the hardware).
    fn repetition_rate(&self) -> Hertz;

    /// The settings in effect.
    fn settings(&self) -> &WcpSettings;

    /// Sets the intensity classes and basis bias.
    fn configure(
        &mut self,
        settings: &WcpSettings,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Switches the optical output on or off (the clock and sync keep running).
    fn set_enabled(
        &mut self,
        enabled: bool,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Hands the source's pattern generator the node's secret key: from the next sync pulse
    /// (marked on the tagger's marker input) every slot's choices follow it, counting slots from
    /// that sync (see [`qkd_units::pattern`]). The node evaluates the same function.
    fn start_pattern(
        &mut self,
        key: &PatternKey,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Appends the records of `slots` to `out`.
    fn emissions(
        &mut self,
        slots: &[u64],
        out: &mut EmissionRecords,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// A source of polarization-entangled photon pairs.
pub trait PairSource: Send {
    /// The device's identity.
    fn identity(&self) -> &DeviceIdentity;

    /// Nominal rate of pairs leaving the source.
    fn pair_rate(&self) -> Hertz;

    /// Switches pair emission on or off.
    fn set_enabled(
        &mut self,
        enabled: bool,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emission_records_debug_shows_no_basis_or_bit() {
        let records = EmissionRecords {
            slot: vec![7, 8],
            basis: vec![Basis::Z, Basis::X],
            bit: vec![1, 0],
            intensity: vec![0, 0],
            reference: vec![false, false],
        };
        assert_eq!(format!("{records:?}"), "EmissionRecords(2 slots)");
    }

    fn class(mu: f64, p: f64) -> IntensityClass {
        IntensityClass {
            mean_photon_number: MeanPhotonNumber::new(mu).unwrap(),
            probability: Probability::new(p).unwrap(),
        }
    }

    #[test]
    fn settings_need_one_to_four_classes_summing_to_one() {
        let half = Probability::new(0.5).unwrap();
        let ok = WcpSettings {
            intensities: vec![class(0.5, 0.7), class(0.1, 0.3)],
            basis_z_probability: half,
            reference_share: Probability::default(),
        };
        assert!(ok.validate().is_ok());
        let bad = WcpSettings {
            intensities: vec![class(0.5, 0.7)],
            basis_z_probability: half,
            reference_share: Probability::default(),
        };
        assert!(bad.validate().unwrap_err().reason.contains("sum to 0.7"));
        let empty = WcpSettings {
            intensities: vec![],
            basis_z_probability: half,
            reference_share: Probability::default(),
        };
        assert!(empty.validate().is_err());
    }
}
