//! Single-photon detectors.

use std::future::Future;
use std::time::Duration;

use qkd_units::{Hertz, Picoseconds, Probability, Volts};

use crate::DeviceIdentity;
use crate::error::DetectorError;

/// How a detector's dark counts are specified.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DarkCounts {
    /// Free-running: counts per second.
    Rate(Hertz),
    /// Gated: probability per gate.
    PerGate(Probability),
}

/// What one detector channel is and which settings it exposes.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorChannel {
    /// Channel name, e.g. `H`.
    pub name: String,
    /// Detection efficiency (nominal).
    pub efficiency: Probability,
    /// Dark counts (nominal).
    pub dark_counts: DarkCounts,
    /// Dead time in effect.
    pub dead_time: Picoseconds,
    /// Settable dead-time range, if the dead time can be set.
    pub dead_time_range: Option<(Picoseconds, Picoseconds)>,
    /// Settable bias range, if the bias can be set.
    pub bias_range: Option<(Volts, Volts)>,
    /// Settable discriminator threshold range, if it can be set.
    pub threshold_range: Option<(Volts, Volts)>,
}

/// A set of single-photon detector channels in one instrument.
pub trait SinglePhotonDetectors: Send {
    /// The device's identity.
    fn identity(&self) -> &DeviceIdentity;

    /// The channels, in index order.
    fn channels(&self) -> &[DetectorChannel];

    /// Biases (arms) or disarms a channel.
    fn set_enabled(
        &mut self,
        channel: usize,
        enabled: bool,
    ) -> impl Future<Output = Result<(), DetectorError>> + Send;

    /// Sets a channel's dead time.
    fn set_dead_time(
        &mut self,
        channel: usize,
        dead_time: Picoseconds,
    ) -> impl Future<Output = Result<(), DetectorError>> + Send;

    /// Sets a channel's bias, where the device exposes it.
    fn set_bias(
        &mut self,
        channel: usize,
        bias: Volts,
    ) -> impl Future<Output = Result<(), DetectorError>> + Send;

    /// Sets a channel's discriminator threshold, where the device exposes it.
    fn set_threshold(
        &mut self,
        channel: usize,
        threshold: Volts,
    ) -> impl Future<Output = Result<(), DetectorError>> + Send;

    /// Counts every channel's clicks over `integration` (device time) and returns them in order.
    fn counts(
        &mut self,
        integration: Duration,
    ) -> impl Future<Output = Result<Vec<u64>, DetectorError>> + Send;
}
