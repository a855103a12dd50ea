//! The emulated time tagger of one node.

use std::time::Duration;

use qkd_firmware_sim::world::tagger::TaggerSettingError;
use qkd_units::{Picoseconds, Volts};

use super::{Shared, World};
use crate::DeviceIdentity;
use crate::error::{InvalidSetting, TaggerError};
use crate::tagger::{ChannelRole, TagBatch, TaggerChannel, TimeTagger};

/// The tagger of one emulated node: input 0 is the sync (on prepare-and-measure benches),
/// inputs 1 to 4 are detectors H, V, D, A.
#[derive(Debug)]
pub struct EmulatedTagger {
    shared: Shared,
    node: usize,
    identity: DeviceIdentity,
    channels: Vec<TaggerChannel>,
    resolution: Picoseconds,
    batch: Duration,
    /// Emulated time this tagger has delivered up to: the world advances to the furthest cursor
    /// of all its readers, so two taggers read in turn see the same stretch of time.
    cursor_ps: i64,
}

impl EmulatedTagger {
    pub(super) fn new(
        shared: Shared,
        node: usize,
        batch: Duration,
        identity: DeviceIdentity,
    ) -> Self {
        let (count, resolution, has_sync) = {
            let state = shared.lock();
            let has_sync = matches!(state.world, World::PrepareMeasure(_));
            state.world.node(node).map_or((0, 1, false), |n| {
                (n.tagger.channel_count(), n.tagger.resolution_ps(), has_sync)
            })
        };
        let mut channels: Vec<TaggerChannel> = (0..count)
            .map(|i| TaggerChannel {
                index: i as u8,
                role: match i {
                    0 if has_sync => ChannelRole::Sync, // world::SYNC_CHANNEL
                    1..=4 => ChannelRole::Detector(i as u8 - 1),
                    _ => ChannelRole::Other,
                },
            })
            .collect();
        if has_sync {
            // The marker is a digital input beside the sync, with no settings of its own.
            channels.push(TaggerChannel {
                index: qkd_firmware_sim::world::MARKER_CHANNEL,
                role: ChannelRole::Marker,
            });
        }
        EmulatedTagger {
            shared,
            node,
            identity,
            channels,
            resolution: Picoseconds(resolution),
            batch,
            cursor_ps: 0,
        }
    }

    fn configure(
        &mut self,
        apply: impl FnOnce(
            &mut qkd_firmware_sim::world::tagger::Tagger,
        ) -> Result<(), TaggerSettingError>,
    ) -> Result<(), TaggerError> {
        let mut state = self.shared.lock();
        let node = state
            .world
            .node_mut(self.node)
            .ok_or(TaggerError::Unsupported("a tagger on this node"))?;
        apply(&mut node.tagger).map_err(|e| match e {
            TaggerSettingError::NoSuchChannel { channel, count } => {
                TaggerError::NoSuchChannel { channel, count }
            }
            other => TaggerError::Invalid(InvalidSetting::new("tagger", &other)),
        })
    }
}

impl TimeTagger for EmulatedTagger {
    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn channels(&self) -> &[TaggerChannel] {
        &self.channels
    }

    fn resolution(&self) -> Picoseconds {
        self.resolution
    }

    async fn set_delay(&mut self, channel: u8, delay: Picoseconds) -> Result<(), TaggerError> {
        self.configure(|t| t.set_delay(usize::from(channel), delay.get()))
    }

    async fn set_trigger_level(&mut self, channel: u8, level: Volts) -> Result<(), TaggerError> {
        self.configure(|t| t.set_trigger_level(usize::from(channel), level.get()))
    }

    async fn start(&mut self) -> Result<(), TaggerError> {
        self.configure(|t| {
            t.set_running(true);
            Ok(())
        })
    }

    async fn stop(&mut self) -> Result<(), TaggerError> {
        self.configure(|t| {
            t.set_running(false);
            Ok(())
        })
    }

    async fn read(&mut self, batch: &mut TagBatch) -> Result<(), TaggerError> {
        batch.clear();
        let wait = {
            let mut state = self.shared.lock();
            let running = state
                .world
                .node(self.node)
                .is_some_and(|n| n.tagger.is_running());
            if !running {
                return Err(TaggerError::NotRunning {});
            }
            let target = self
                .cursor_ps
                .saturating_add(Picoseconds::from_duration(self.batch).get());
            state.advance_to(target);
            self.cursor_ps = target.max(state.world.now_ps());
            let wait = state.pacing_wait();
            let buffer = &mut state.buffers[self.node];
            // Hand over the buffered tags without copying; the buffer keeps the batch's storage.
            std::mem::swap(&mut batch.time_ps, &mut buffer.times);
            std::mem::swap(&mut batch.channel, &mut buffer.channels);
            batch.missed_events = std::mem::take(&mut buffer.missed);
            batch.overflow = std::mem::take(&mut buffer.overflow);
            wait
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}
