//! Emulated single-photon detectors of one node.

use std::time::Duration;

use qkd_firmware_sim::world::{DETECTOR_NAMES, DarkCountSpec, node::ReceiverNode};
use qkd_units::{Hertz, Picoseconds, Probability, Volts};

use super::Shared;
use crate::DeviceIdentity;
use crate::detector::{DarkCounts, DetectorChannel, SinglePhotonDetectors};
use crate::error::{DetectorError, InvalidSetting};

/// Longest dead time the emulated detectors accept (1 ms).
const MAX_DEAD_TIME: Picoseconds = Picoseconds(1_000_000_000);

/// The four detectors (H, V, D, A) of one emulated node.
#[derive(Debug)]
pub struct EmulatedDetectors {
    shared: Shared,
    node: usize,
    identity: DeviceIdentity,
    channels: Vec<DetectorChannel>,
}

fn describe(node: &ReceiverNode) -> Vec<DetectorChannel> {
    node.receiver
        .detectors
        .iter()
        .zip(DETECTOR_NAMES)
        .map(|(d, name)| {
            let spec = d.spec();
            DetectorChannel {
                name: name.to_owned(),
                efficiency: Probability::new(spec.efficiency).unwrap_or_default(),
                dark_counts: match spec.dark {
                    DarkCountSpec::FreeRunning { rate_hz } => {
                        DarkCounts::Rate(Hertz::new(rate_hz).unwrap_or_default())
                    }
                    DarkCountSpec::Gated {
                        probability_per_gate,
                        ..
                    } => DarkCounts::PerGate(
                        Probability::new(probability_per_gate).unwrap_or_default(),
                    ),
                },
                dead_time: Picoseconds(d.dead_time_ps()),
                dead_time_range: Some((Picoseconds::ZERO, MAX_DEAD_TIME)),
                bias_range: None,
                threshold_range: None,
            }
        })
        .collect()
}

impl EmulatedDetectors {
    pub(super) fn new(shared: Shared, node: usize, identity: DeviceIdentity) -> Self {
        let channels = shared
            .lock()
            .world
            .node(node)
            .map(describe)
            .unwrap_or_default();
        EmulatedDetectors {
            shared,
            node,
            identity,
            channels,
        }
    }

    fn check_channel(&self, channel: usize) -> Result<(), DetectorError> {
        if channel < self.channels.len() {
            Ok(())
        } else {
            Err(DetectorError::NoSuchChannel {
                channel,
                count: self.channels.len(),
            })
        }
    }
}

impl SinglePhotonDetectors for EmulatedDetectors {
    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn channels(&self) -> &[DetectorChannel] {
        &self.channels
    }

    async fn set_enabled(&mut self, channel: usize, enabled: bool) -> Result<(), DetectorError> {
        self.check_channel(channel)?;
        let mut state = self.shared.lock();
        let now = state.world.now_ps();
        if let Some(node) = state.world.node_mut(self.node) {
            node.set_detector_enabled(channel, enabled, now);
        }
        Ok(())
    }

    async fn set_dead_time(
        &mut self,
        channel: usize,
        dead_time: Picoseconds,
    ) -> Result<(), DetectorError> {
        self.check_channel(channel)?;
        if dead_time < Picoseconds::ZERO || dead_time > MAX_DEAD_TIME {
            return Err(InvalidSetting::new(
                format!("channel {channel} dead time"),
                &format!("{dead_time} is outside [0, {MAX_DEAD_TIME}]"),
            )
            .into());
        }
        if let Some(node) = self.shared.lock().world.node_mut(self.node) {
            node.receiver.detectors[channel].set_dead_time(dead_time.get());
        }
        self.channels[channel].dead_time = dead_time;
        Ok(())
    }

    async fn set_bias(&mut self, channel: usize, _bias: Volts) -> Result<(), DetectorError> {
        self.check_channel(channel)?;
        Err(DetectorError::Unsupported(
            "bias (the emulated detectors have a fixed operating point)",
        ))
    }

    async fn set_threshold(
        &mut self,
        channel: usize,
        _threshold: Volts,
    ) -> Result<(), DetectorError> {
        self.check_channel(channel)?;
        Err(DetectorError::Unsupported(
            "discriminator threshold (set trigger levels on the tagger instead)",
        ))
    }

    async fn counts(&mut self, integration: Duration) -> Result<Vec<u64>, DetectorError> {
        let mut state = self.shared.lock();
        let before = state.buffers[self.node].clicks;
        let _ = state.advance_by(integration);
        let after = state.buffers[self.node].clicks;
        Ok(after.iter().zip(before).map(|(a, b)| a - b).collect())
    }
}
