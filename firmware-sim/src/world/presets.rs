//! Ready-made benches: the literature's GYS parameter set, and one link per detector family.

use super::controller_optics::ControllerSpec;
use super::detector::{DarkCountSpec, DetectorPreset, DetectorSpec};
use super::eve::EveSpec;
use super::fiber::FiberSpec;
use super::param::ConfigError;
use super::prepare_measure::LinkSpec;
use super::receiver::ReceiverSpec;
use super::source::{IntensitySpec, WcpSourceSpec};
use super::tagger::TaggerSpec;

/// A named prepare-and-measure bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPreset {
    /// Gobby-Yuan-Shields 2004 as used by Ma, Qi, Zhao and Lo (PRA 72, 012326, Table I):
    /// α = 0.21 dB/km, η_Bob = 0.045, Y0 = 1.7e-6 per pulse, e_d = 3.3 %, 2 MHz, q = 1/2.
    Gys,
    /// 100 MHz source, superconducting nanowire detectors.
    Snspd,
    /// 10 MHz source, free-running InGaAs detectors.
    IngaasFree,
    /// 1 GHz source, GHz-gated InGaAs detectors.
    IngaasGated,
}

/// Background yield per pulse of the GYS set (all of Bob's detectors together).
pub const GYS_Y0: f64 = 1.7e-6;
/// Bob's overall efficiency in the GYS set.
pub const GYS_ETA_BOB: f64 = 0.045;
/// Misalignment error of the GYS set.
pub const GYS_E_D: f64 = 0.033;
/// Fiber attenuation of the GYS set, dB/km.
pub const GYS_LOSS_DB_PER_KM: f64 = 0.21;
/// Signal mean photon number near the optimum for the GYS set.
pub const GYS_MU: f64 = 0.48;

/// Signal, decoy and vacuum classes with the given probabilities.
fn intensities(signal: f64, decoy: f64, p: [f64; 3]) -> Vec<IntensitySpec> {
    [signal, decoy, 0.0]
        .into_iter()
        .zip(p)
        .map(|(mean_photon_number, probability)| IntensitySpec {
            mean_photon_number,
            probability,
        })
        .collect()
}

/// A link with one detector family. The source's intensities, their probabilities and the
/// basis bias (0.8 on both sides) maximise the finite-key rate of 10^6–10^7-bit blocks at
/// tens of km (expected counts through the Lim et al. bound, `qkd plan`); a stronger bias
/// starves the test basis at these block sizes.
fn detector_link(preset: DetectorPreset, rep_rate_hz: u64, distance_km: f64) -> LinkSpec {
    LinkSpec {
        source: WcpSourceSpec {
            rep_rate_hz,
            intensities: intensities(0.6, 0.2, [0.6, 0.3, 0.1]),
            basis_z_probability: 0.8,
            reference_share: 0.0,
            sync_divider: 1000,
            spectral_width_ghz: 10.0,
        },
        fiber: FiberSpec {
            misalignment: 0.01,
            ..FiberSpec::standard(distance_km)
        },
        eve: EveSpec::default(),
        receiver: ReceiverSpec {
            optics_transmission: 0.8,
            basis_z_probability: 0.8,
            controller: ControllerSpec::None,
            detectors: [preset.spec(); 4],
        },
        tagger: TaggerSpec::default(),
    }
}

impl LinkPreset {
    /// All presets with their command-line names.
    pub const ALL: [(&'static str, LinkPreset); 4] = [
        ("gys", LinkPreset::Gys),
        ("snspd", LinkPreset::Snspd),
        ("ingaas-free", LinkPreset::IngaasFree),
        ("ingaas-gated", LinkPreset::IngaasGated),
    ];

    /// The preset called `name`.
    pub fn from_name(name: &str) -> Result<Self, ConfigError> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .ok_or_else(|| ConfigError::UnknownPreset {
                name: name.to_owned(),
                known: Self::ALL.map(|(n, _)| n).join(", "),
            })
    }

    /// The preset's command-line name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(n, _)| n)
    }

    /// The bench with a fiber of `distance_km` (validated when the world is built).
    pub fn spec(self, distance_km: f64) -> LinkSpec {
        match self {
            LinkPreset::Gys => {
                // Bob's efficiency sits in the detectors, the background is split evenly over
                // the four of them, and nothing else (dead time, afterpulses) is added.
                let detector = DetectorSpec {
                    efficiency: GYS_ETA_BOB,
                    dark: DarkCountSpec::gated(GYS_Y0 / 4.0),
                    dead_time_ps: 0,
                    afterpulse_probability: 0.0,
                    afterpulse_decay_ps: 1_000,
                    jitter_fwhm_ps: 0.0,
                };
                LinkSpec {
                    source: WcpSourceSpec {
                        basis_z_probability: 0.5,
                        intensities: intensities(GYS_MU, 0.1, [0.8, 0.15, 0.05]),
                        ..WcpSourceSpec::decoy_bb84(2_000_000, GYS_MU)
                    },
                    fiber: FiberSpec {
                        loss_db_per_km: GYS_LOSS_DB_PER_KM,
                        misalignment: GYS_E_D,
                        ..FiberSpec::standard(distance_km)
                    },
                    eve: EveSpec::default(),
                    receiver: ReceiverSpec::uniform(detector),
                    tagger: TaggerSpec::default(),
                }
            }
            LinkPreset::Snspd => detector_link(DetectorPreset::Snspd, 100_000_000, distance_km),
            LinkPreset::IngaasFree => {
                detector_link(DetectorPreset::IngaasFree, 10_000_000, distance_km)
            }
            LinkPreset::IngaasGated => {
                detector_link(DetectorPreset::IngaasGated, 1_000_000_000, distance_km)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::PrepareMeasureWorld;

    #[test]
    fn every_preset_builds_a_world() {
        for (name, preset) in LinkPreset::ALL {
            assert_eq!(LinkPreset::from_name(name).unwrap(), preset);
            assert_eq!(preset.name(), name);
            assert!(
                PrepareMeasureWorld::new(&preset.spec(25.0), 1).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_preset_lists_the_known_ones() {
        let err = LinkPreset::from_name("sspd").unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown preset `sspd`; known presets: gys, snspd, ingaas-free, ingaas-gated"
        );
    }
}
