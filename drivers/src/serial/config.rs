//! Which serial device sits on which port: chosen by configuration, nothing hard-coded.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::exchange::RetryPolicy;
use super::link::PortSettings;

/// The kinds of serial device the controller drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// Our source board.
    SourceBoard,
    /// Our detector board.
    DetectorBoard,
    /// Our polarization board (four squeezers).
    PolarizationBoard,
    /// Thorlabs MPC320 motorised paddles (APT).
    Mpc320,
    /// OZ Optics EPC driver (ASCII).
    OzEpc,
}

impl DeviceKind {
    /// The name a configuration file gives the kind.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::SourceBoard => "source-board",
            DeviceKind::DetectorBoard => "detector-board",
            DeviceKind::PolarizationBoard => "polarization-board",
            DeviceKind::Mpc320 => "mpc320",
            DeviceKind::OzEpc => "oz-epc",
        }
    }

    /// The baud rate the device ships with.
    pub fn default_baud(self) -> u32 {
        match self {
            DeviceKind::OzEpc => 9_600,
            DeviceKind::Mpc320 => 115_200,
            DeviceKind::SourceBoard | DeviceKind::DetectorBoard | DeviceKind::PolarizationBoard => {
                921_600
            }
        }
    }

    /// A reply timeout that suits the device: long enough for its slowest ordinary reply at its
    /// baud rate, short enough to notice a lost frame quickly.
    pub fn default_timeout(self) -> Duration {
        match self {
            DeviceKind::OzEpc => Duration::from_millis(300),
            DeviceKind::Mpc320 => Duration::from_millis(200),
            DeviceKind::SourceBoard | DeviceKind::DetectorBoard | DeviceKind::PolarizationBoard => {
                Duration::from_millis(50)
            }
        }
    }

    /// RTS/CTS flow control, which the MPC320's FTDI link uses.
    pub fn hardware_flow_control(self) -> bool {
        self == DeviceKind::Mpc320
    }
}

/// One device entry of the configuration, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// What the device is.
    pub kind: DeviceKind,
    /// Serial port path.
    pub port: PathBuf,
    /// Baud rate (default: the device's own).
    #[serde(default)]
    pub baud: Option<u32>,
    /// Reply timeout in ms (default: per device kind).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Retries after a failed attempt (default 3).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Squeezer controllers: the voltage that adds 2π of retardance (2·Vπ), mV, if known; lets
    /// tracking unwind at a range end.
    #[serde(default)]
    pub period_mv: Option<f64>,
    /// MPC320: paddle velocity, percent of the maximum (default 100).
    #[serde(default)]
    pub velocity_percent: Option<u16>,
    /// OZ EPC: the unit's serial number, which its protocol cannot report.
    #[serde(default)]
    pub serial: Option<String>,
    /// Source board: pulse repetition rate, Hz (fixed by its clock).
    #[serde(default)]
    pub repetition_rate_hz: Option<f64>,
}

/// Most retries accepted: beyond this a dead device holds the controller for too long.
pub const MAX_RETRIES: u32 = 20;

impl DeviceConfig {
    /// A device on `port` with the defaults of its kind.
    pub fn new(kind: DeviceKind, port: impl Into<PathBuf>) -> Self {
        DeviceConfig {
            kind,
            port: port.into(),
            baud: None,
            timeout_ms: None,
            retries: None,
            period_mv: None,
            velocity_percent: None,
            serial: None,
            repetition_rate_hz: None,
        }
    }

    /// The port settings and retry policy, checked.
    pub fn resolve(&self) -> Result<(PortSettings, RetryPolicy), crate::InvalidSetting> {
        let baud = self.baud.unwrap_or(self.kind.default_baud());
        if baud == 0 {
            return Err(crate::InvalidSetting::new("baud", &"must be positive"));
        }
        let timeout = self
            .timeout_ms
            .map_or(self.kind.default_timeout(), Duration::from_millis);
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(crate::InvalidSetting::new(
                "timeout_ms",
                &format!("{} ms: give 1 ms to 60 s", timeout.as_millis()),
            ));
        }
        let retries = self.retries.unwrap_or(3);
        if retries > MAX_RETRIES {
            return Err(crate::InvalidSetting::new(
                "retries",
                &format!("{retries}: at most {MAX_RETRIES}"),
            ));
        }
        Ok((
            PortSettings {
                path: self.port.clone(),
                baud,
                hardware_flow_control: self.kind.hardware_flow_control(),
            },
            RetryPolicy {
                timeout,
                retries,
                reconnect_backoff: Duration::from_millis(50),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names `DeviceKind::name` gives are the names a configuration file uses.
    #[test]
    fn kind_names_are_the_configuration_names() {
        use serde::Deserialize;
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error, StrDeserializer};
        for kind in [
            DeviceKind::SourceBoard,
            DeviceKind::DetectorBoard,
            DeviceKind::PolarizationBoard,
            DeviceKind::Mpc320,
            DeviceKind::OzEpc,
        ] {
            let name: StrDeserializer<'_, Error> = kind.name().into_deserializer();
            assert_eq!(DeviceKind::deserialize(name), Ok(kind));
        }
    }

    #[test]
    fn defaults_per_kind_and_refusals() {
        let epc = DeviceConfig::new(DeviceKind::OzEpc, "/dev/ttyUSB1");
        let (port, policy) = epc.resolve().unwrap();
        assert_eq!((port.baud, port.hardware_flow_control), (9_600, false));
        assert_eq!(policy.timeout, Duration::from_millis(300));
        let mpc = DeviceConfig::new(DeviceKind::Mpc320, "/dev/ttyUSB0");
        assert!(mpc.resolve().unwrap().0.hardware_flow_control);
        let mut bad = epc.clone();
        bad.retries = Some(MAX_RETRIES + 1);
        assert!(bad.resolve().unwrap_err().to_string().contains("retries"));
        bad.retries = None;
        bad.timeout_ms = Some(0);
        assert!(
            bad.resolve()
                .unwrap_err()
                .to_string()
                .contains("timeout_ms")
        );
    }
}
