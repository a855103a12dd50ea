//! Emulated photon sources.

use qkd_firmware_sim::world::{self, IntensitySpec};
use qkd_units::pattern::PatternKey;
use qkd_units::{Hertz, MeanPhotonNumber, Probability};

use super::{Shared, World};
use crate::DeviceIdentity;
use crate::error::{InvalidSetting, SourceError};
use crate::source::{EmissionRecords, IntensityClass, PairSource, WcpSettings, WcpSource};

/// Alice's emulated weak-coherent source.
#[derive(Debug)]
pub struct EmulatedWcpSource {
    shared: Shared,
    identity: DeviceIdentity,
    rate: Hertz,
    settings: WcpSettings,
}

impl EmulatedWcpSource {
    /// The source of a prepare-and-measure bench; `None` for other links.
    pub(super) fn new(shared: Shared, identity: DeviceIdentity) -> Option<Self> {
        let (rate, settings) = {
            let state = shared.lock();
            let World::PrepareMeasure(w) = &state.world else {
                return None;
            };
            let src = w.source();
            let settings = WcpSettings {
                intensities: src
                    .mean_photon_numbers
                    .iter()
                    .zip(&src.probabilities)
                    .map(|(&mu, &p)| IntensityClass {
                        mean_photon_number: MeanPhotonNumber::new(mu).unwrap_or_default(),
                        probability: Probability::new(p).unwrap_or_default(),
                    })
                    .collect(),
                basis_z_probability: Probability::new(src.basis_z_probability).unwrap_or_default(),
                reference_share: Probability::new(src.reference_share).unwrap_or_default(),
            };
            (
                Hertz::new(src.clock.rate_hz() as f64).unwrap_or_default(),
                settings,
            )
        };
        Some(EmulatedWcpSource {
            shared,
            identity,
            rate,
            settings,
        })
    }

    fn with_world<R>(
        &self,
        f: impl FnOnce(&mut world::PrepareMeasureWorld) -> R,
    ) -> Result<R, SourceError> {
        match &mut self.shared.lock().world {
            World::PrepareMeasure(w) => Ok(f(w)),
            World::Entangled(_) => Err(SourceError::Unsupported(
                "a weak-coherent source on an entangled bench",
            )),
        }
    }
}

impl WcpSource for EmulatedWcpSource {
    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn repetition_rate(&self) -> Hertz {
        self.rate
    }

    fn settings(&self) -> &WcpSettings {
        &self.settings
    }

    async fn configure(&mut self, settings: &WcpSettings) -> Result<(), SourceError> {
        settings.validate()?;
        let classes: Vec<IntensitySpec> = settings
            .intensities
            .iter()
            .map(|c| IntensitySpec {
                mean_photon_number: c.mean_photon_number.get(),
                probability: c.probability.get(),
            })
            .collect();
        let (z, reference) = (
            settings.basis_z_probability.get(),
            settings.reference_share.get(),
        );
        self.with_world(|w| w.set_shares(&classes, z, reference))?
            .map_err(InvalidSetting::from)?;
        self.settings = settings.clone();
        Ok(())
    }

    async fn set_enabled(&mut self, enabled: bool) -> Result<(), SourceError> {
        self.with_world(|w| w.set_source_enabled(enabled))
    }

    async fn start_pattern(&mut self, key: &PatternKey) -> Result<(), SourceError> {
        self.with_world(|w| {
            w.start_pattern(key);
        })
    }

    async fn emissions(
        &mut self,
        slots: &[u64],
        out: &mut EmissionRecords,
    ) -> Result<(), SourceError> {
        self.with_world(|w| {
            let emitted = w.slots_emitted();
            if let Some(&slot) = slots.iter().find(|&&s| s >= emitted) {
                return Err(SourceError::NotEmitted { slot, emitted });
            }
            for &slot in slots {
                let choice = w.slot_choice(slot);
                out.slot.push(slot);
                out.basis.push(choice.basis);
                out.bit.push(choice.bit);
                out.intensity.push(choice.intensity);
                out.reference.push(choice.reference);
            }
            Ok(())
        })?
    }
}

/// The emulated SPDC pair source of an entangled bench.
#[derive(Debug)]
pub struct EmulatedPairSource {
    shared: Shared,
    identity: DeviceIdentity,
    rate: Hertz,
}

impl EmulatedPairSource {
    pub(super) fn new(shared: Shared, identity: DeviceIdentity) -> Self {
        let rate = match &shared.lock().world {
            World::Entangled(w) => w.pair_rate_hz(),
            World::PrepareMeasure(_) => 0.0,
        };
        EmulatedPairSource {
            shared,
            identity,
            rate: Hertz::new(rate).unwrap_or_default(),
        }
    }
}

impl PairSource for EmulatedPairSource {
    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn pair_rate(&self) -> Hertz {
        self.rate
    }

    async fn set_enabled(&mut self, enabled: bool) -> Result<(), SourceError> {
        if let World::Entangled(w) = &mut self.shared.lock().world {
            w.set_source_enabled(enabled);
        }
        Ok(())
    }
}
