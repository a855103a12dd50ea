//! Replaying a PTU recording through the time-tagger trait, as fast as possible or in real time.

use std::io::Read;
use std::time::{Duration, Instant};

use qkd_units::{Picoseconds, Volts};

use super::reader::PtuReader;
use super::records::{Mode, RecordFormat};
use crate::DeviceIdentity;
use crate::error::TaggerError;
use crate::tagger::{ChannelRole, Pacing, TagBatch, TaggerChannel, TimeTagger};

/// A recorded stream behaving like a tagger: same batches, same trait.
///
/// Delays and trigger levels belong to the instrument that made the recording; here they are
/// refused, and per-channel delays are applied downstream (slot recovery).
#[derive(Debug)]
pub struct PtuReplay<R> {
    reader: PtuReader<R>,
    identity: DeviceIdentity,
    channels: Vec<TaggerChannel>,
    resolution: Picoseconds,
    records_per_batch: usize,
    pacing: Pacing,
    running: bool,
    /// Wall-clock start and the file time it corresponds to (real-time pacing).
    clock: Option<(Instant, i64)>,
}

impl<R: Read + Send> PtuReplay<R> {
    /// Replays `reader` in batches of `records_per_batch` records.
    pub fn new(reader: PtuReader<R>, records_per_batch: usize, pacing: Pacing) -> Self {
        let header = reader.header();
        let text = |name| header.text(name).unwrap_or("unknown").to_owned();
        let identity = DeviceIdentity {
            vendor: "PicoQuant (recording)".into(),
            model: text("HW_Type"),
            serial: text("HW_SerialNo"),
            firmware: text("HW_Version"),
        };
        let layout = *reader.layout();
        let inputs = header
            .int("HW_InpChannels")
            .and_then(|n| u8::try_from(n).ok())
            .unwrap_or(4)
            .min(63);
        let has_sync = layout.format.mode() == Mode::T2;
        // PicoHarp 300 T2 counts the sync among its inputs (channel 0); the others do not.
        let detectors = match layout.format {
            RecordFormat::PicoHarpT2 => inputs.saturating_sub(1).max(1),
            _ => inputs.max(1),
        };
        let mut channels = Vec::new();
        if has_sync {
            channels.push(TaggerChannel {
                index: 0,
                role: ChannelRole::Sync,
            });
        }
        channels.extend((0..detectors).map(|d| TaggerChannel {
            index: d + 1,
            role: ChannelRole::Detector(d),
        }));
        let resolution_s = match layout.format.mode() {
            Mode::T2 => layout.global_resolution_s,
            Mode::T3 => layout.resolution_s,
        };
        PtuReplay {
            reader,
            identity,
            channels,
            resolution: Picoseconds((resolution_s * 1e12).round().max(1.0) as i64),
            records_per_batch: records_per_batch.max(1),
            pacing,
            running: true,
            clock: None,
        }
    }

    /// The underlying reader (header, statistics so far).
    pub fn reader(&self) -> &PtuReader<R> {
        &self.reader
    }

    /// How long to wait so that file time does not run ahead of the wall clock.
    fn pacing_wait(&mut self, last_ps: Option<i64>) -> Duration {
        let (Pacing::RealTime, Some(last)) = (self.pacing, last_ps) else {
            return Duration::ZERO;
        };
        let (start, first) = *self.clock.get_or_insert((Instant::now(), last));
        let ahead = Picoseconds(last - first).to_duration();
        ahead.saturating_sub(start.elapsed())
    }
}

impl<R: Read + Send> TimeTagger for PtuReplay<R> {
    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn channels(&self) -> &[TaggerChannel] {
        &self.channels
    }

    fn resolution(&self) -> Picoseconds {
        self.resolution
    }

    async fn set_delay(&mut self, _channel: u8, _delay: Picoseconds) -> Result<(), TaggerError> {
        Err(TaggerError::Unsupported(
            "delays on a recording (apply them in slot recovery)",
        ))
    }

    async fn set_trigger_level(&mut self, _channel: u8, _level: Volts) -> Result<(), TaggerError> {
        Err(TaggerError::Unsupported("trigger levels on a recording"))
    }

    async fn start(&mut self) -> Result<(), TaggerError> {
        self.running = true;
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), TaggerError> {
        self.running = false;
        self.clock = None;
        Ok(())
    }

    async fn read(&mut self, batch: &mut TagBatch) -> Result<(), TaggerError> {
        batch.clear();
        if !self.running {
            return Err(TaggerError::NotRunning {});
        }
        let decoded = self
            .reader
            .decode_next(self.records_per_batch, batch)
            .map_err(|e| TaggerError::Recording(e.to_string()))?;
        if decoded == 0 {
            return Err(TaggerError::EndOfRecording {});
        }
        let wait = self.pacing_wait(batch.time_ps.last().copied());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}
