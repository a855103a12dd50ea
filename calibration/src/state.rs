//! Calibration saved between runs: a versioned JSON file naming the devices it was measured on.
//!
//! A calibration measured on one controller is wrong for another, so loading checks the
//! identity and refuses a mismatch with both identities in the message rather than starting
//! from settings that would misalign the link.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use qkd_drivers::DeviceIdentity;
use serde::{Deserialize, Serialize};

use crate::tracker::Tracker;

/// File format version written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// A device identity as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredIdentity {
    /// Manufacturer.
    pub vendor: String,
    /// Model name.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Firmware version.
    pub firmware: String,
}

impl From<&DeviceIdentity> for StoredIdentity {
    fn from(id: &DeviceIdentity) -> Self {
        StoredIdentity {
            vendor: id.vendor.clone(),
            model: id.model.clone(),
            serial: id.serial.clone(),
            firmware: id.firmware.clone(),
        }
    }
}

impl StoredIdentity {
    /// Same device: vendor, model and serial agree (firmware may have been updated).
    fn same_device(&self, other: &StoredIdentity) -> bool {
        self.vendor == other.vendor && self.model == other.model && self.serial == other.serial
    }
}

impl std::fmt::Display for StoredIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} (serial {})", self.vendor, self.model, self.serial)
    }
}

/// What the polarization calibration of one receiver holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolarizationCalibration {
    /// Format version.
    pub version: u32,
    /// When it was measured, seconds since the Unix epoch.
    pub saved_unix_s: u64,
    /// The polarization controller it belongs to.
    pub controller: StoredIdentity,
    /// Aligned actuator setting, device units.
    pub setting: Vec<f64>,
    /// Cost per unit² of each actuator.
    pub curvatures: Vec<f64>,
    /// Cost floor at alignment.
    pub floor: Option<f64>,
}

/// Why a calibration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("calibration file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a calibration file of this format.
    #[error("calibration file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Written by another format version.
    #[error(
        "calibration file {path} has format version {found}; this build reads version {FORMAT_VERSION}"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// Version found.
        found: u32,
    },
    /// Measured on another device.
    #[error(
        "calibration file {path} belongs to {stored}, but the connected controller is {connected}; recalibrate"
    )]
    OtherDevice {
        /// The file.
        path: PathBuf,
        /// Device in the file.
        stored: Box<StoredIdentity>,
        /// Device connected.
        connected: Box<StoredIdentity>,
    },
}

impl PolarizationCalibration {
    /// The calibration a tracker holds now, for `controller`.
    pub fn from_tracker(tracker: &Tracker, controller: &DeviceIdentity) -> Self {
        PolarizationCalibration {
            version: FORMAT_VERSION,
            saved_unix_s: unix_now_s(),
            controller: controller.into(),
            setting: tracker.setting().to_vec(),
            curvatures: tracker.curvatures().to_vec(),
            floor: tracker.floor(),
        }
    }

    /// Writes the file (to a temporary name first, so a crash never leaves half a file).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let text = self.to_json();
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text).map_err(io)?;
        std::fs::rename(&temporary, path).map_err(io)
    }

    /// The calibration as the file holds it (a node's store keeps the same text).
    pub fn to_json(&self) -> String {
        // Plain numbers, strings and options: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads the file and checks it belongs to `controller` and has one value per actuator.
    pub fn load(
        path: &Path,
        controller: &DeviceIdentity,
        actuators: usize,
    ) -> Result<Self, StateError> {
        let text = std::fs::read_to_string(path).map_err(|source| StateError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, controller, actuators)
    }

    /// Reads calibration `text` from `path` (named in errors), with the checks of
    /// [`Self::load`].
    pub fn parse(
        text: &str,
        path: &Path,
        controller: &DeviceIdentity,
        actuators: usize,
    ) -> Result<Self, StateError> {
        let malformed = |reason: String| StateError::Malformed {
            path: path.to_owned(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        let found = value.get("version").and_then(serde_json::Value::as_u64);
        match found {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(StateError::Version {
                    path: path.to_owned(),
                    found: u32::try_from(v).unwrap_or(u32::MAX),
                });
            }
            None => return Err(malformed("no format version".into())),
        }
        let calibration: Self =
            serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
        let connected = StoredIdentity::from(controller);
        if !calibration.controller.same_device(&connected) {
            return Err(StateError::OtherDevice {
                path: path.to_owned(),
                stored: Box::new(calibration.controller),
                connected: Box::new(connected),
            });
        }
        if calibration.setting.len() != actuators || calibration.curvatures.len() != actuators {
            return Err(malformed(format!(
                "{} settings and {} curvatures for a controller with {actuators} actuators",
                calibration.setting.len(),
                calibration.curvatures.len()
            )));
        }
        if let Some(v) = calibration.setting.iter().find(|v| !v.is_finite()) {
            return Err(malformed(format!(
                "setting {v} is not a finite actuator value"
            )));
        }
        let (low, high) = CURVATURE_RANGE;
        if let Some(c) = calibration
            .curvatures
            .iter()
            .find(|&&c| !(c > low && c <= high))
        {
            return Err(malformed(format!(
                "curvature {c} is outside ({low}, {high}]: the cost must rise away from alignment"
            )));
        }
        if let Some(floor) = calibration.floor.filter(|f| !(0.0..=1.0).contains(f)) {
            return Err(malformed(format!(
                "floor {floor} is outside [0, 1] (a cost is an error rate)"
            )));
        }
        let now = unix_now_s();
        if calibration.saved_unix_s > now.saturating_add(CLOCK_SLACK_S) {
            return Err(malformed(format!(
                "saved_unix_s {} is in the future (now {now})",
                calibration.saved_unix_s
            )));
        }
        Ok(calibration)
    }
}

/// Curvatures a calibration may hold, per unit² of an actuator: positive (the cost has a
/// minimum at alignment) and far above any real controller's (μV or millidegree units
/// included), so a corrupted file cannot pass for one.
const CURVATURE_RANGE: (f64, f64) = (0.0, 1e6);

/// How far ahead of this machine's clock a save time may be (another machine's clock).
const CLOCK_SLACK_S: u64 = 86_400;

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(serial: &str) -> DeviceIdentity {
        DeviceIdentity {
            vendor: "OZ Optics".into(),
            model: "EPC-400".into(),
            serial: serial.into(),
            firmware: "1.0".into(),
        }
    }

    fn calibration() -> PolarizationCalibration {
        PolarizationCalibration {
            version: FORMAT_VERSION,
            saved_unix_s: 1_790_000_000,
            controller: (&identity("A1")).into(),
            setting: vec![100.0, -250.0, 0.0, 1200.0],
            curvatures: vec![1e-7, 2e-7, 1.5e-7, 1e-7],
            floor: Some(0.011),
        }
    }

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "qkd-calibration-{}-{name}.json",
            std::process::id()
        ))
    }

    #[test]
    fn a_saved_calibration_loads_back_for_the_same_device_only() {
        let path = temp("roundtrip");
        calibration().save(&path).unwrap();
        let loaded = PolarizationCalibration::load(&path, &identity("A1"), 4).unwrap();
        assert_eq!(loaded, calibration());
        let err = PolarizationCalibration::load(&path, &identity("B7"), 4).unwrap_err();
        assert!(matches!(err, StateError::OtherDevice { .. }));
        assert!(err.to_string().contains("serial A1") && err.to_string().contains("serial B7"));
        let err = PolarizationCalibration::load(&path, &identity("A1"), 3).unwrap_err();
        assert!(matches!(err, StateError::Malformed { .. }), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn other_versions_and_damaged_files_are_refused() {
        let path = temp("version");
        let mut text = serde_json::to_value(calibration()).unwrap();
        text["version"] = 2.into();
        std::fs::write(&path, text.to_string()).unwrap();
        assert!(matches!(
            PolarizationCalibration::load(&path, &identity("A1"), 4),
            Err(StateError::Version { found: 2, .. })
        ));
        std::fs::write(&path, "{\"version\": 1, \"setting\": [").unwrap();
        assert!(matches!(
            PolarizationCalibration::load(&path, &identity("A1"), 4),
            Err(StateError::Malformed { .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            PolarizationCalibration::load(&path, &identity("A1"), 4),
            Err(StateError::Io { .. })
        ));
    }

    #[test]
    fn implausible_values_are_refused_naming_the_field() {
        let path = temp("values");
        let cases: [(&str, serde_json::Value, &str); 6] = [
            (
                "curvatures",
                serde_json::json!([0.0, 1e-7, 1e-7, 1e-7]),
                "curvature 0",
            ),
            (
                "curvatures",
                serde_json::json!([-1e-7, 1e-7, 1e-7, 1e-7]),
                "curvature -0.0000001",
            ),
            (
                "curvatures",
                serde_json::json!([1e308, 1e-7, 1e-7, 1e-7]),
                "is outside (0, 1000000]",
            ),
            ("floor", serde_json::json!(-0.01), "floor -0.01"),
            ("saved_unix_s", serde_json::json!(u64::MAX), "in the future"),
            ("setting", serde_json::json!([1.0, 2.0, 3.0]), "3 settings"),
        ];
        for (field, value, message) in cases {
            let mut text = serde_json::to_value(calibration()).unwrap();
            text[field] = value;
            std::fs::write(&path, text.to_string()).unwrap();
            let err = PolarizationCalibration::load(&path, &identity("A1"), 4).unwrap_err();
            assert!(
                matches!(err, StateError::Malformed { .. }),
                "{field}: {err}"
            );
            assert!(err.to_string().contains(message), "{field}: {err}");
        }
        std::fs::remove_file(&path).unwrap();
    }
}
