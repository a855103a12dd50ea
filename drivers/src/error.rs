//! Errors of the driver families, each able to tell its caller what to do next.

use std::time::Duration;

/// What the caller should do about an error (the embedded-hal `ErrorKind` idea, for recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Transient: the same command may succeed if sent again.
    Retry,
    /// The link to the device is gone: reopen the port (or wait for it to return), then retry.
    Reconnect,
    /// Retrying cannot help: the command or the device state is wrong.
    Abort,
}

/// Failures of the link to a device, shared by every driver family.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransportError {
    /// No (complete) reply arrived in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The port vanished or the device stopped answering at the link level.
    #[error("device disconnected: {0}")]
    Disconnected(String),
    /// A reply arrived damaged or out of protocol.
    #[error("malformed reply: {0}")]
    Malformed(String),
    /// The device understood the command and refused it.
    #[error("device reported: {0}")]
    DeviceReported(String),
}

impl TransportError {
    /// Whether to retry, reconnect or give up.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TransportError::Timeout(_) | TransportError::Malformed(_) => ErrorKind::Retry,
            TransportError::Disconnected(_) => ErrorKind::Reconnect,
            TransportError::DeviceReported(_) => ErrorKind::Abort,
        }
    }
}

/// A setting the driver refuses before it reaches the device (never silently clamped).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{parameter}: {reason}")]
pub struct InvalidSetting {
    /// The setting, e.g. `intensities[1].mean_photon_number` or `channel 3 delay`.
    pub parameter: String,
    /// What is wrong and what would be accepted.
    pub reason: String,
}

impl InvalidSetting {
    /// A refused `parameter` with the reason.
    pub fn new(parameter: impl Into<String>, reason: &impl ToString) -> Self {
        InvalidSetting {
            parameter: parameter.into(),
            reason: reason.to_string(),
        }
    }
}

/// Declares a driver family's error type: the shared variants plus the family's own, and a
/// `kind()` where only transport failures are worth retrying.
macro_rules! family_error {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident $fields:tt => $msg:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, thiserror::Error)]
        pub enum $name {
            /// The link to the device failed.
            #[error(transparent)]
            Transport(#[from] TransportError),
            /// The driver refused a setting.
            #[error(transparent)]
            Invalid(#[from] InvalidSetting),
            /// The device does not have this capability.
            #[error("not supported by this device: {0}")]
            Unsupported(&'static str),
            $($(#[$vdoc])* #[error($msg)] $variant $fields,)*
        }

        impl $name {
            /// Whether to retry, reconnect or give up.
            pub fn kind(&self) -> ErrorKind {
                match self {
                    $name::Transport(t) => t.kind(),
                    _ => ErrorKind::Abort,
                }
            }
        }
    };
}

family_error!(
    /// Errors of photon sources.
    SourceError {
        /// Records asked for a slot the source has not emitted yet.
        NotEmitted { slot: u64, emitted: u64 } => "slot {slot} has not been emitted yet (the source is at slot {emitted})",
    }
);

family_error!(
    /// Errors of single-photon detectors.
    DetectorError {
        /// No such detector channel.
        NoSuchChannel { channel: usize, count: usize } => "detector channel {channel} does not exist (the device has {count})",
    }
);

family_error!(
    /// Errors of polarization controllers.
    PolarizationError {
        /// The number of values does not match the number of actuators.
        WrongCount { expected: usize, got: usize } => "expected {expected} actuator values, got {got}",
        /// A value outside an actuator's range.
        OutOfRange { actuator: usize, value: f64, min: f64, max: f64 } => "actuator {actuator}: {value} is outside [{min}, {max}]",
    }
);

family_error!(
    /// Errors of time taggers.
    TaggerError {
        /// No such input channel.
        NoSuchChannel { channel: usize, count: usize } => "tagger channel {channel} does not exist (the device has {count})",
        /// Reading while the tagger is stopped.
        NotRunning {} => "the tagger is not running: start it first",
        /// A replayed recording has no more tags.
        EndOfRecording {} => "the recording has no more tags",
        /// A replayed recording cannot be decoded further.
        Recording(String) => "the recording is unreadable: {0}",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transport_failures_are_retried_or_reconnected() {
        let timeout = TaggerError::from(TransportError::Timeout(Duration::from_millis(5)));
        assert_eq!(timeout.kind(), ErrorKind::Retry);
        let gone = SourceError::from(TransportError::Disconnected("/dev/ttyUSB0".into()));
        assert_eq!(gone.kind(), ErrorKind::Reconnect);
        let refused = DetectorError::from(TransportError::DeviceReported("Error!".into()));
        assert_eq!(refused.kind(), ErrorKind::Abort);
        let range = PolarizationError::OutOfRange {
            actuator: 2,
            value: 6.0,
            min: -5.0,
            max: 5.0,
        };
        assert_eq!(range.kind(), ErrorKind::Abort);
        assert_eq!(range.to_string(), "actuator 2: 6 is outside [-5, 5]");
        assert_eq!(TaggerError::NotRunning {}.kind(), ErrorKind::Abort);
    }
}
