//! The messages: one request enum for all boards (a board answers [`ErrorCode::Unsupported`] to
//! another board's commands) and one reply enum. Quantities travel as integers in the units their
//! names give, the units the boards' converters work in.

use serde::{Deserialize, Serialize};

/// Version of this protocol, exchanged in the identity handshake; a host refuses other versions.
pub const PROTOCOL_VERSION: u16 = 2;

/// Which board a firmware image drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BoardKind {
    /// Weak-coherent source: laser enable, intensity modulator, power monitor.
    Source,
    /// Four single-photon detector channels: bias, threshold, dead time, counters.
    Detector,
    /// Four fiber squeezers driven by a bipolar DAC.
    Polarization,
}

/// What a board says about itself in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The board.
    pub board: BoardKind,
    /// Serial number.
    pub serial: u32,
    /// Firmware version (major, minor, patch).
    pub firmware: [u8; 3],
    /// [`PROTOCOL_VERSION`] of the firmware.
    pub protocol: u16,
    /// Incremented at every start of the firmware: a host that sees it change knows the board
    /// reset and lost its settings.
    pub boot: u16,
}

/// One intensity class, as the source board stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IntensityCode {
    /// Mean photon number per pulse, in millionths of a photon.
    pub micro_photons: u32,
    /// Probability of the class, in parts per million.
    pub ppm: u32,
}

/// The source board's pulse settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SourceConfig {
    /// Number of classes in use (1 to 4), signal first.
    pub class_count: u8,
    /// The classes; those past `class_count` are ignored.
    pub classes: [IntensityCode; 4],
    /// Probability of preparing in the Z basis, in parts per million.
    pub basis_z_ppm: u32,
    /// Share of slots carrying public reference states (for tracking), in parts per million.
    pub reference_ppm: u32,
}

/// Commands of the source board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceCommand {
    /// Switches the laser's optical output.
    SetEnabled(bool),
    /// Loads intensity classes and basis bias into the pattern generator.
    Configure(SourceConfig),
    /// Reads the configuration in effect.
    GetConfig,
    /// Reads the optical power monitor.
    ReadPowerMonitor,
    /// Hands the pattern generator the node's secret key: from the next sync pulse, which the
    /// board marks on its marker output, every slot's basis, bit, intensity class and reference
    /// flag follow the key (see `qkd_units::pattern`), counting slots from that sync.
    LoadPattern([u8; 32]),
}

/// Commands of the detector board (channels 0 to 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DetectorCommand {
    /// Arms or disarms a channel.
    SetEnabled {
        /// Channel.
        channel: u8,
        /// Armed.
        enabled: bool,
    },
    /// Sets a channel's bias, in millivolts.
    SetBias {
        /// Channel.
        channel: u8,
        /// Bias.
        millivolts: u32,
    },
    /// Sets a channel's discriminator threshold, in millivolts.
    SetThreshold {
        /// Channel.
        channel: u8,
        /// Threshold.
        millivolts: u32,
    },
    /// Sets a channel's dead time, in nanoseconds.
    SetDeadTime {
        /// Channel.
        channel: u8,
        /// Dead time.
        nanoseconds: u32,
    },
    /// Counts every channel's clicks for `milliseconds` and returns the counts.
    ReadCounters {
        /// Integration time.
        milliseconds: u16,
    },
}

/// Commands of the polarization board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolarizationCommand {
    /// Loads four DAC codes and updates all outputs at once; answered with the codes latched.
    SetDac([u16; 4]),
    /// Reads the latched DAC codes.
    GetDac,
    /// Reads the board status.
    Status,
}

/// A request from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Identity and version handshake.
    Identify,
    /// A source-board command.
    Source(SourceCommand),
    /// A detector-board command.
    Detector(DetectorCommand),
    /// A polarization-board command.
    Polarization(PolarizationCommand),
}

/// Why a board refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The command belongs to another board.
    Unsupported,
    /// A channel number beyond the board's channels.
    NoSuchChannel(u8),
    /// A value outside what the hardware accepts (the argument's position in the command).
    OutOfRange(u8),
    /// A peripheral (DAC, ADC, counter) failed to answer.
    Peripheral,
    /// The board has restarted since the host last identified it, so its settings are the
    /// power-on ones: it carries out no command until the host has identified it again.
    Restarted,
}

/// The polarization board's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolarizationStatus {
    /// Latched DAC codes.
    pub codes: [u16; 4],
    /// Whether the high-voltage amplifier is enabled.
    pub amplifier_enabled: bool,
}

/// A board's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The handshake answer.
    Identity(Identity),
    /// The command was carried out.
    Ack,
    /// The source configuration in effect.
    SourceConfig(SourceConfig),
    /// A power-monitor reading: the raw ADC code and the power it stands for, in femtowatts.
    Power {
        /// Raw 16-bit ADC code.
        code: u16,
        /// Optical power.
        femtowatts: u32,
    },
    /// Clicks of each detector channel over the integration time.
    Counters([u32; 4]),
    /// DAC codes latched on the polarization board.
    Dac([u16; 4]),
    /// Polarization-board status.
    PolarizationStatus(PolarizationStatus),
    /// The request was refused.
    Error(ErrorCode),
}

/// The polarization board's output scale: an offset-binary bipolar DAC, code 0 drives −5 V,
/// code 32768 drives 0 V and each step is 10 V / 65536.
pub mod squeezer_dac {
    /// Code of 0 V.
    pub const MID_SCALE: u16 = 0x8000;
    /// Millivolts per code step.
    pub const MV_PER_STEP: f64 = 10_000.0 / 65_536.0;

    /// Output of `code`, millivolts.
    pub fn millivolts(code: u16) -> f64 {
        (f64::from(code) - f64::from(MID_SCALE)) * MV_PER_STEP
    }

    /// Lowest output, mV.
    pub fn min_millivolts() -> f64 {
        millivolts(0)
    }

    /// Highest output, mV (one step below +5 V).
    pub fn max_millivolts() -> f64 {
        millivolts(u16::MAX)
    }

    /// The code nearest to `millivolts`, or `None` outside the span (or NaN).
    pub fn code(millivolts: f64) -> Option<u16> {
        let steps = millivolts / MV_PER_STEP + f64::from(MID_SCALE) + 0.5;
        (0.0..65536.0).contains(&steps).then_some(steps as u16)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn ends_middle_and_round_trip() {
            assert_eq!(code(-5000.0), Some(0));
            assert_eq!(code(max_millivolts()), Some(65535));
            assert_eq!(code(0.0), Some(MID_SCALE));
            assert!(millivolts(MID_SCALE).abs() < f64::EPSILON);
            assert_eq!(code(5000.0), None);
            assert_eq!(code(f64::NAN), None);
            for c in [0u16, 1, 32767, 40000, 65535] {
                assert_eq!(code(millivolts(c)), Some(c));
            }
            // Half a step (0.076 mV) at most between a value and its code's output.
            assert!((millivolts(code(1234.5).unwrap()) - 1234.5).abs() <= MV_PER_STEP / 2.0);
        }
    }
}

/// The detector board's limits: part of its contract with the host.
pub mod detector_limits {
    /// Bias at DAC full scale, mV.
    pub const BIAS_FULL_SCALE_MV: u32 = 80_000;
    /// Threshold at DAC full scale, mV.
    pub const THRESHOLD_FULL_SCALE_MV: u32 = 2_500;
    /// Longest dead time the counter FPGA holds, ns.
    pub const MAX_DEAD_TIME_NS: u32 = 1_000_000;
    /// Longest integration of one counter read, ms.
    pub const MAX_INTEGRATION_MS: u16 = 10_000;
}

/// The source board's limits.
pub mod source_limits {
    /// One, in parts per million: what class probabilities must sum to.
    pub const PPM: u32 = 1_000_000;
    /// Highest mean photon number the intensity modulator reaches, micro-photons.
    pub const MAX_MICRO_PHOTONS: u32 = 100_000_000;
}
