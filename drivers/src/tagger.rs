//! Time taggers: timestamps of detector and sync pulses, streamed in batches.

use std::future::Future;

use qkd_units::{Picoseconds, Volts};

use crate::DeviceIdentity;
use crate::error::TaggerError;

/// What is wired to a tagger input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelRole {
    /// The source's clock or sync signal.
    Sync,
    /// Detector number `n` of the receiver (0 = H, 1 = V, 2 = D, 3 = A).
    Detector(u8),
    /// The source's pattern marker: a tag where a node's pattern starts (beside that sync).
    Marker,
    /// Anything else.
    Other,
}

/// One tagger input.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggerChannel {
    /// Channel number as it appears in tags.
    pub index: u8,
    /// What the input is connected to.
    pub role: ChannelRole,
}

/// How a tagger that is not bound to real time (an emulator, a replayed recording) relates its
/// stream time to the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pacing {
    /// As fast as the machine allows (CI, benchmarks, offline studies).
    #[default]
    AsFastAsPossible,
    /// Never run ahead of the wall clock (live displays, rehearsing a run).
    RealTime,
}

/// A batch of tags in arrival order, as parallel arrays, with the losses real taggers report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagBatch {
    /// Timestamps in ps on the tagger's clock, non-decreasing.
    pub time_ps: Vec<i64>,
    /// Input channel of each timestamp.
    pub channel: Vec<u8>,
    /// Events the tagger saw but could not deliver since the previous batch.
    pub missed_events: u64,
    /// The tagger's buffer overflowed since the previous batch (the stream has a gap).
    pub overflow: bool,
}

impl TagBatch {
    /// Forgets the tags and flags, keeping the allocations.
    pub fn clear(&mut self) {
        self.time_ps.clear();
        self.channel.clear();
        self.missed_events = 0;
        self.overflow = false;
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.time_ps.len()
    }

    /// `true` without tags.
    pub fn is_empty(&self) -> bool {
        self.time_ps.is_empty()
    }
}

/// A multi-channel time tagger.
///
/// Streaming is pull-based: the consumer asks for the next batch, so a slow consumer slows the
/// stream (or, on hardware, makes the device report missed events) instead of growing a buffer
/// without bound.
pub trait TimeTagger: Send {
    /// The device's identity.
    fn identity(&self) -> &DeviceIdentity;

    /// The inputs.
    fn channels(&self) -> &[TaggerChannel];

    /// Timestamp resolution.
    fn resolution(&self) -> Picoseconds;

    /// Sets an input's delay (added to its timestamps).
    fn set_delay(
        &mut self,
        channel: u8,
        delay: Picoseconds,
    ) -> impl Future<Output = Result<(), TaggerError>> + Send;

    /// Sets an input's trigger level.
    fn set_trigger_level(
        &mut self,
        channel: u8,
        level: Volts,
    ) -> impl Future<Output = Result<(), TaggerError>> + Send;

    /// Starts recording.
    fn start(&mut self) -> impl Future<Output = Result<(), TaggerError>> + Send;

    /// Stops recording.
    fn stop(&mut self) -> impl Future<Output = Result<(), TaggerError>> + Send;

    /// Replaces `batch` with the next batch of tags.
    fn read(
        &mut self,
        batch: &mut TagBatch,
    ) -> impl Future<Output = Result<(), TaggerError>> + Send;
}
