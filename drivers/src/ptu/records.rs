//! Decoding of PTU records (one little-endian u32 each) into timed events.
//!
//! Record layouts and overflow ("wrap") rules per record type, from PicoQuant's public format
//! description. Tag channels follow this project's convention: 0 is the sync, detectors from 1.
//! PicoHarp 300 files keep their own channel field (in T2 its channel 0 *is* the sync input);
//! the HydraHarp family's photon channel `c` becomes tag channel `c + 1` and its sync records
//! become channel 0.

use std::fmt;

use super::PtuError;
use super::header::Layout;

/// T2 (every event timed absolutely) or T3 (photons timed relative to the sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Absolute timestamps of every input.
    T2,
    /// Sync index plus a time within the sync period.
    T3,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::T2 => "T2",
            Mode::T3 => "T3",
        })
    }
}

/// The record layouts this decoder knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// PicoHarp 300 T2: chan 4 · time 28.
    PicoHarpT2,
    /// PicoHarp 300 T3: chan 4 · dtime 12 · nsync 16.
    PicoHarpT3,
    /// HydraHarp V1 T2: special 1 · chan 6 · time 25, one fixed wrap per overflow.
    HydraHarpV1T2,
    /// HydraHarp V1 T3: special 1 · chan 6 · dtime 15 · nsync 10, one wrap per overflow.
    HydraHarpV1T3,
    /// HydraHarp V2, TimeHarp 260, MultiHarp and PicoHarp 330 T2: overflow records count wraps.
    GenericT2,
    /// The same families in T3.
    GenericT3,
}

impl RecordFormat {
    /// The format of a header's `TTResultFormat_TTTRRecType`.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0x0001_0203 => RecordFormat::PicoHarpT2,
            0x0001_0303 => RecordFormat::PicoHarpT3,
            0x0001_0204 => RecordFormat::HydraHarpV1T2,
            0x0001_0304 => RecordFormat::HydraHarpV1T3,
            0x0101_0204 | 0x0001_0205 | 0x0001_0206 | 0x0001_0207 => RecordFormat::GenericT2,
            0x0101_0304 | 0x0001_0305 | 0x0001_0306 | 0x0001_0307 => RecordFormat::GenericT3,
            _ => return None,
        })
    }

    /// T2 or T3.
    pub fn mode(self) -> Mode {
        match self {
            RecordFormat::PicoHarpT2 | RecordFormat::HydraHarpV1T2 | RecordFormat::GenericT2 => {
                Mode::T2
            }
            _ => Mode::T3,
        }
    }

    /// Tag channel of a photon record's channel field.
    fn tag_channel(self, field: u8) -> u8 {
        match self {
            RecordFormat::PicoHarpT2 | RecordFormat::PicoHarpT3 => field,
            _ => field + 1,
        }
    }
}

/// Receives the events of decoded records.
pub trait EventSink {
    /// A photon (or, in PicoHarp T2, sync-input) event on tag channel `channel`.
    fn photon(&mut self, time_ps: i64, channel: u8);
    /// A sync event (HydraHarp-family T2 files).
    fn sync(&mut self, time_ps: i64);
}

/// Counts over all records decoded so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordStats {
    /// Records decoded.
    pub records: u64,
    /// Photon records by their own channel field.
    pub photons_by_channel: [u64; 64],
    /// Sync records.
    pub sync_events: u64,
    /// Marker records.
    pub markers: u64,
    /// Overflow records.
    pub overflow_records: u64,
    /// Special records of no known kind (kept count of, not interpreted).
    pub unknown_special: u64,
    /// Arrival time of the first photon record, ps.
    pub first_photon_ps: Option<i64>,
    /// Arrival time of the last photon record, ps.
    pub last_photon_ps: Option<i64>,
}

impl Default for RecordStats {
    fn default() -> Self {
        RecordStats {
            records: 0,
            photons_by_channel: [0; 64],
            sync_events: 0,
            markers: 0,
            overflow_records: 0,
            unknown_special: 0,
            first_photon_ps: None,
            last_photon_ps: None,
        }
    }
}

/// One record, interpreted.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// `time` is T2 units, or the sync index within the wrap in T3 with `dtime`.
    Photon {
        field: u8,
        time: u64,
        dtime: u64,
    },
    Sync {
        time: u64,
    },
    Marker,
    /// Add `wraps` times the wrap to the overflow accumulator.
    Overflow {
        wraps: u64,
    },
    Unknown,
}

#[inline]
fn picoharp_t2(r: u32) -> Event {
    let chan = (r >> 28) as u8;
    let time = u64::from(r & 0x0FFF_FFFF);
    if chan != 15 {
        Event::Photon {
            field: chan,
            time,
            dtime: 0,
        }
    } else if r & 0xF == 0 {
        Event::Overflow { wraps: 1 }
    } else {
        Event::Marker
    }
}

#[inline]
fn picoharp_t3(r: u32) -> Event {
    let chan = (r >> 28) as u8;
    let dtime = u64::from((r >> 16) & 0xFFF);
    if chan != 15 {
        Event::Photon {
            field: chan,
            time: u64::from(r & 0xFFFF),
            dtime,
        }
    } else if dtime == 0 {
        Event::Overflow { wraps: 1 }
    } else {
        Event::Marker
    }
}

/// HydraHarp-family records; `counted` says whether overflow records carry a wrap count.
#[inline]
fn hydraharp(r: u32, t3: bool, counted: bool) -> Event {
    let special = r >> 31 == 1;
    let chan = ((r >> 25) & 0x3F) as u8;
    let (time, dtime) = if t3 {
        (u64::from(r & 0x3FF), u64::from((r >> 10) & 0x7FFF))
    } else {
        (u64::from(r & 0x1FF_FFFF), 0)
    };
    if !special {
        return Event::Photon {
            field: chan,
            time,
            dtime,
        };
    }
    match chan {
        63 => Event::Overflow {
            wraps: if counted && time != 0 { time } else { 1 },
        },
        0 if !t3 => Event::Sync { time },
        1..=15 => Event::Marker,
        _ => Event::Unknown,
    }
}

/// Turns time units into picoseconds, exactly when the unit is a whole number of picoseconds.
#[derive(Debug, Clone, Copy)]
enum Scale {
    Whole(i64),
    Fraction(f64),
}

impl Scale {
    fn new(seconds: f64) -> Self {
        let ps = seconds * 1e12;
        if (ps - ps.round()).abs() <= 1e-6 * ps && ps.round() >= 1.0 {
            Scale::Whole(ps.round() as i64)
        } else {
            Scale::Fraction(ps)
        }
    }

    #[inline]
    fn ps(self, units: u64) -> Option<i64> {
        match self {
            Scale::Whole(ps) => i64::try_from(units).ok()?.checked_mul(ps),
            Scale::Fraction(ps) => {
                let t = (units as f64 * ps).round();
                (t < i64::MAX as f64).then_some(t as i64)
            }
        }
    }
}

/// Decodes a file's records in order, in chunks of any size.
#[derive(Debug, Clone)]
pub struct RecordDecoder {
    format: RecordFormat,
    /// Units added per wrap: T2 time units, or T3 sync periods.
    wrap: u64,
    /// Accumulated overflow in the same units.
    overflow: u64,
    global: Scale,
    dtime: Scale,
    next_offset: u64,
    stats: RecordStats,
}

impl RecordDecoder {
    /// A decoder for a file whose records start at byte `records_offset`.
    pub fn new(layout: &Layout, records_offset: u64) -> Self {
        let wrap = match layout.format {
            RecordFormat::PicoHarpT2 => 210_698_240,
            RecordFormat::PicoHarpT3 => 65_536,
            RecordFormat::HydraHarpV1T2 => 33_552_000,
            RecordFormat::GenericT2 => 33_554_432,
            RecordFormat::HydraHarpV1T3 | RecordFormat::GenericT3 => 1024,
        };
        RecordDecoder {
            format: layout.format,
            wrap,
            overflow: 0,
            global: Scale::new(layout.global_resolution_s),
            dtime: Scale::new(layout.resolution_s),
            next_offset: records_offset,
            stats: RecordStats::default(),
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> &RecordStats {
        &self.stats
    }

    /// Byte offset of the next record to decode.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Decodes whole records from `bytes` (a multiple of 4 bytes), reporting events to `sink`.
    pub fn decode(&mut self, bytes: &[u8], sink: &mut impl EventSink) -> Result<(), PtuError> {
        if !bytes.len().is_multiple_of(4) {
            return Err(PtuError::Truncated {
                what: "record",
                offset: self.next_offset + (bytes.len() / 4 * 4) as u64,
                needed: 4,
                available: (bytes.len() % 4) as u64,
            });
        }
        match self.format {
            RecordFormat::PicoHarpT2 => self.run(bytes, sink, picoharp_t2),
            RecordFormat::PicoHarpT3 => self.run(bytes, sink, picoharp_t3),
            RecordFormat::HydraHarpV1T2 => self.run(bytes, sink, |r| hydraharp(r, false, false)),
            RecordFormat::HydraHarpV1T3 => self.run(bytes, sink, |r| hydraharp(r, true, false)),
            RecordFormat::GenericT2 => self.run(bytes, sink, |r| hydraharp(r, false, true)),
            RecordFormat::GenericT3 => self.run(bytes, sink, |r| hydraharp(r, true, true)),
        }
    }

    #[inline]
    fn run(
        &mut self,
        bytes: &[u8],
        sink: &mut impl EventSink,
        interpret: impl Fn(u32) -> Event,
    ) -> Result<(), PtuError> {
        let t3 = self.format.mode() == Mode::T3;
        for (i, chunk) in bytes.chunks_exact(4).enumerate() {
            let record = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let corrupt = |reason: &str| PtuError::CorruptRecord {
                offset: self.next_offset + 4 * i as u64,
                reason: reason.to_owned(),
            };
            match interpret(record) {
                Event::Photon { field, time, dtime } => {
                    let units = self
                        .overflow
                        .checked_add(time)
                        .ok_or_else(|| corrupt("time overflows 64 bits"))?;
                    let t = if t3 {
                        self.global
                            .ps(units)
                            .zip(self.dtime.ps(dtime))
                            .and_then(|(sync, within)| sync.checked_add(within))
                    } else {
                        self.global.ps(units)
                    }
                    .ok_or_else(|| corrupt("arrival time overflows i64 picoseconds"))?;
                    self.stats.photons_by_channel[usize::from(field)] += 1;
                    self.stats.first_photon_ps.get_or_insert(t);
                    self.stats.last_photon_ps = Some(t);
                    sink.photon(t, self.format.tag_channel(field));
                }
                Event::Sync { time } => {
                    let t = self
                        .overflow
                        .checked_add(time)
                        .and_then(|u| self.global.ps(u))
                        .ok_or_else(|| corrupt("sync time overflows"))?;
                    self.stats.sync_events += 1;
                    sink.sync(t);
                }
                Event::Marker => self.stats.markers += 1,
                Event::Overflow { wraps } => {
                    self.stats.overflow_records += 1;
                    self.overflow = wraps
                        .checked_mul(self.wrap)
                        .and_then(|add| self.overflow.checked_add(add))
                        .ok_or_else(|| corrupt("overflow count exceeds 64 bits"))?;
                }
                Event::Unknown => self.stats.unknown_special += 1,
            }
        }
        self.stats.records += (bytes.len() / 4) as u64;
        self.next_offset += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_record_type_is_known_with_its_mode() {
        for (code, mode) in [
            (0x0001_0203, Mode::T2),
            (0x0001_0303, Mode::T3),
            (0x0001_0204, Mode::T2),
            (0x0101_0204, Mode::T2),
            (0x0001_0205, Mode::T2),
            (0x0001_0206, Mode::T2),
            (0x0001_0207, Mode::T2),
            (0x0001_0304, Mode::T3),
            (0x0101_0304, Mode::T3),
            (0x0001_0305, Mode::T3),
            (0x0001_0306, Mode::T3),
            (0x0001_0307, Mode::T3),
        ] {
            assert_eq!(
                RecordFormat::from_code(code).map(RecordFormat::mode),
                Some(mode)
            );
        }
        assert_eq!(RecordFormat::from_code(0x0001_0208), None);
    }

    #[test]
    fn whole_picosecond_resolutions_scale_exactly() {
        assert!(matches!(Scale::new(4e-12), Scale::Whole(4)));
        assert!(matches!(
            Scale::new(4.000_000_000_000_001e-12),
            Scale::Whole(4)
        ));
        assert!(matches!(Scale::new(1.0 / 78e6), Scale::Fraction(_)));
        assert_eq!(Scale::Whole(4).ps(u64::MAX), None);
    }
}
