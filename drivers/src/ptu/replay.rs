//! Replaying a PTU recording through the time-tagger trait, as fast as possible or in real time,
//! in batches of so many records or of so much recording time.

use std::io::Read;
use std::time::{Duration, Instant};

use qkd_units::{Picoseconds, Volts};

use super::reader::PtuReader;
use super::records::{Mode, RecordFormat};
use crate::DeviceIdentity;
use crate::error::TaggerError;
use crate::tagger::{ChannelRole, Pacing, TagBatch, TaggerChannel, TimeTagger};

/// How a replay cuts the recording into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// So many records per batch.
    Records(usize),
    /// The tags of each span of recording time, spans aligned to multiples of the span (as a
    /// live stream's frames are): two recordings of one run, each replayed at its node, stay in
    /// step batch for batch whatever their count rates, and a span without tags is an empty
    /// batch.
    Span(Picoseconds),
}

/// Records decoded at a time when batching by span.
const SPAN_CHUNK_RECORDS: usize = 1 << 16;

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
    batching: Batching,
    pacing: Pacing,
    running: bool,
    /// Wall-clock start and the file time it corresponds to (real-time pacing).
    clock: Option<(Instant, i64)>,
    /// Span batching: tags decoded but not yet handed out, and where the next span ends.
    pending: TagBatch,
    span_end: Option<i64>,
    decoded_all: bool,
}

impl<R: Read + Send> PtuReplay<R> {
    /// Replays `reader` in batches cut by `batching`.
    pub fn new(reader: PtuReader<R>, batching: Batching, pacing: Pacing) -> Self {
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
            batching: match batching {
                Batching::Records(n) => Batching::Records(n.max(1)),
                Batching::Span(span) => Batching::Span(Picoseconds(span.0.max(1))),
            },
            pacing,
            running: true,
            clock: None,
            pending: TagBatch::default(),
            span_end: None,
            decoded_all: false,
        }
    }

    /// The underlying reader (header, statistics so far).
    pub fn reader(&self) -> &PtuReader<R> {
        &self.reader
    }

    /// Fills `batch` with the next `records` records; `false` at the end of the file.
    fn next_records(&mut self, records: usize, batch: &mut TagBatch) -> Result<bool, TaggerError> {
        let decoded = self
            .reader
            .decode_next(records, batch)
            .map_err(|e| TaggerError::Recording(e.to_string()))?;
        Ok(decoded > 0)
    }

    /// Fills `batch` with the tags of the next span; `false` once every tag has been handed
    /// out. Returns the span's end (file time).
    fn next_span(&mut self, span: i64, batch: &mut TagBatch) -> Result<Option<i64>, TaggerError> {
        loop {
            // The first span is the one holding the first tag.
            let first_end = |&first: &i64| (first.div_euclid(span) + 1).saturating_mul(span);
            let end = self
                .span_end
                .or_else(|| self.pending.time_ps.first().map(first_end));
            if let Some(end) = end {
                let cut = self.pending.time_ps.partition_point(|&t| t < end);
                // Complete once a later tag is decoded, or the file holds no more.
                let complete = cut < self.pending.len() || self.decoded_all;
                if complete && !(self.decoded_all && self.pending.is_empty()) {
                    batch.time_ps.extend(self.pending.time_ps.drain(..cut));
                    batch.channel.extend(self.pending.channel.drain(..cut));
                    self.span_end = Some(end.saturating_add(span));
                    return Ok(Some(end));
                }
            }
            if self.decoded_all {
                return Ok(None);
            }
            // Decoded into the pending tags in place: an error keeps what came before.
            let mut more = std::mem::take(&mut self.pending);
            let decoded = self.next_records(SPAN_CHUNK_RECORDS, &mut more);
            self.pending = more;
            self.decoded_all = !decoded?;
        }
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
        // The file time the batch reaches (a batch of records may hold none with a time).
        let reached = match self.batching {
            Batching::Records(records) => self
                .next_records(records, batch)?
                .then(|| batch.time_ps.last().copied()),
            Batching::Span(span) => self.next_span(span.0, batch)?.map(Some),
        };
        let Some(reached) = reached else {
            return Err(TaggerError::EndOfRecording {});
        };
        let wait = self.pacing_wait(reached);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}
