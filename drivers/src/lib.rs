//! Device traits of a QKD node and their backends.
//!
//! Code above these traits (calibration, tracking, the node runtime) never names a concrete
//! device: the same loops drive lab hardware and, with the `emulator` feature, the emulated bench.
//! Methods that talk to a device are async and return a family error whose `kind()` says whether
//! to retry, reconnect or abort. Values travel in the unit types of `qkd-units`.

pub mod detector;
pub mod error;
pub mod polarization;
pub mod ptu;
pub mod serial;
pub mod source;
pub mod tag_stream;
pub mod tagger;

#[cfg(feature = "emulator")]
pub mod emulator;

pub use detector::{DarkCounts, DetectorChannel, SinglePhotonDetectors};
pub use error::{
    DetectorError, ErrorKind, InvalidSetting, PolarizationError, SourceError, TaggerError,
    TransportError,
};
pub use polarization::{ActuatorOptics, ActuatorSpec, ActuatorUnit, PolarizationController};
pub use source::{Basis, EmissionRecords, IntensityClass, PairSource, WcpSettings, WcpSource};
pub use tagger::{ChannelRole, Pacing, TagBatch, TaggerChannel, TimeTagger};

/// Who a device says it is: checked against calibration files and shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceIdentity {
    /// Manufacturer.
    pub vendor: String,
    /// Model name.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Firmware version.
    pub firmware: String,
}

impl std::fmt::Display for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} (serial {}, firmware {})",
            self.vendor, self.model, self.serial, self.firmware
        )
    }
}
