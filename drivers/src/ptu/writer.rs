//! Writing tag streams as PTU T2 files that PicoQuant's and third-party tools read.
//!
//! Records use the MultiHarp/PicoHarp 330 T2 layout (type 0x00010207): tag channel 0 becomes a
//! sync record, tag channel `c ≥ 1` a photon record on channel `c - 1`, and gaps longer than the
//! 2^25-unit time field become overflow records carrying their wrap count.

use std::io::{Seek, SeekFrom, Write};

use super::PtuError;
use super::header::{MAGIC, code};

/// Record type written.
pub const WRITTEN_RECORD_TYPE: u32 = 0x0001_0207;
const WRAP: u64 = 1 << 25;
const MAX_WRAPS_PER_RECORD: u64 = (1 << 25) - 1;
/// Highest photon channel field of the layout (63 is reserved for overflows).
const MAX_PHOTON_FIELD: u8 = 62;

/// What the header says about the recording.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingInfo {
    /// Timestamp resolution in ps (the time unit of the file).
    pub resolution_ps: u32,
    /// Number of detector inputs.
    pub input_channels: u32,
    /// Sync rate in Hz (0 if unknown).
    pub sync_rate_hz: u32,
    /// Name written as the hardware type.
    pub hardware: String,
    /// Free-text comment.
    pub comment: String,
}

/// Writes a T2 PTU file: header first, then tags in time order, then [`PtuWriter::finish`].
#[derive(Debug)]
pub struct PtuWriter<W: Write + Seek> {
    out: W,
    resolution_ps: i64,
    /// Overflow base of the next record, in time units.
    base: u64,
    last_units: u64,
    records: u64,
    /// Where the values of `TTResult_NumberOfRecords` and `MeasDesc_AcquisitionTime` sit.
    records_value_at: u64,
    acquisition_value_at: u64,
    buffer: Vec<u8>,
}

fn tag(out: &mut Vec<u8>, name: &str, type_code: u32, value: [u8; 8]) {
    let mut ident = [0u8; 32];
    ident[..name.len()].copy_from_slice(name.as_bytes());
    out.extend_from_slice(&ident);
    out.extend_from_slice(&(-1i32).to_le_bytes());
    out.extend_from_slice(&type_code.to_le_bytes());
    out.extend_from_slice(&value);
}

fn int_tag(out: &mut Vec<u8>, name: &str, value: i64) {
    tag(out, name, code::INT8, value.to_le_bytes());
}

fn float_tag(out: &mut Vec<u8>, name: &str, value: f64) {
    tag(out, name, code::FLOAT8, value.to_le_bytes());
}

fn text_tag(out: &mut Vec<u8>, name: &str, text: &str) {
    // NUL-terminated and padded to a multiple of 8 bytes, as PicoQuant software writes them.
    let len = (text.len() + 1).div_ceil(8) * 8;
    tag(out, name, code::ANSI_STRING, (len as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.resize(out.len() + len - text.len(), 0);
}

impl<W: Write + Seek> PtuWriter<W> {
    /// Writes the header. Tags must then come in non-decreasing time order, at times ≥ 0.
    pub fn new(mut out: W, info: &RecordingInfo) -> Result<Self, PtuError> {
        if info.resolution_ps == 0 {
            return Err(PtuError::Write(
                "the resolution must be at least 1 ps".into(),
            ));
        }
        let seconds = f64::from(info.resolution_ps) * 1e-12;
        let mut h = Vec::with_capacity(2048);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(b"1.0.00\0\0");
        text_tag(&mut h, "File_Comment", &info.comment);
        text_tag(&mut h, "CreatorSW_Name", "qkd-node");
        text_tag(&mut h, "CreatorSW_Version", env!("CARGO_PKG_VERSION"));
        text_tag(&mut h, "HW_Type", &info.hardware);
        int_tag(&mut h, "HW_InpChannels", i64::from(info.input_channels));
        int_tag(&mut h, "Measurement_Mode", 2);
        int_tag(&mut h, "Measurement_SubMode", 0);
        int_tag(
            &mut h,
            "TTResultFormat_TTTRRecType",
            i64::from(WRITTEN_RECORD_TYPE),
        );
        int_tag(&mut h, "TTResultFormat_BitsPerRecord", 32);
        float_tag(&mut h, "MeasDesc_GlobalResolution", seconds);
        float_tag(&mut h, "MeasDesc_Resolution", seconds);
        int_tag(&mut h, "TTResult_SyncRate", i64::from(info.sync_rate_hz));
        let acquisition_value_at = h.len() as u64 + 40;
        int_tag(&mut h, "MeasDesc_AcquisitionTime", 0);
        let records_value_at = h.len() as u64 + 40;
        int_tag(&mut h, "TTResult_NumberOfRecords", 0);
        int_tag(&mut h, "TTResult_StopReason", 1);
        tag(&mut h, "Header_End", code::EMPTY8, [0; 8]);
        out.write_all(&h)?;
        Ok(PtuWriter {
            out,
            resolution_ps: i64::from(info.resolution_ps),
            base: 0,
            last_units: 0,
            records: 0,
            records_value_at,
            acquisition_value_at,
            buffer: Vec::with_capacity(1 << 16),
        })
    }

    fn push(&mut self, record: u32) {
        self.buffer.extend_from_slice(&record.to_le_bytes());
        self.records += 1;
    }

    /// Appends tags (parallel arrays as in a tag batch).
    pub fn write(&mut self, time_ps: &[i64], channel: &[u8]) -> Result<(), PtuError> {
        if time_ps.len() != channel.len() {
            return Err(PtuError::Write(
                "times and channels differ in length".into(),
            ));
        }
        for (&t, &c) in time_ps.iter().zip(channel) {
            let units = u64::try_from(t.div_euclid(self.resolution_ps))
                .map_err(|_| PtuError::Write(format!("negative timestamp {t} ps")))?;
            if units < self.last_units {
                return Err(PtuError::Write(format!(
                    "timestamps must not decrease: {t} ps after {} ps",
                    self.last_units as i64 * self.resolution_ps
                )));
            }
            if c > MAX_PHOTON_FIELD + 1 {
                return Err(PtuError::Write(format!(
                    "channel {c} does not fit the record (at most {})",
                    MAX_PHOTON_FIELD + 1
                )));
            }
            self.last_units = units;
            let mut wraps = (units - self.base) / WRAP;
            while wraps > 0 {
                let n = wraps.min(MAX_WRAPS_PER_RECORD);
                self.push(0x8000_0000 | (63 << 25) | n as u32);
                self.base += n * WRAP;
                wraps -= n;
            }
            let time = (units - self.base) as u32;
            let record = if c == 0 {
                0x8000_0000 | time
            } else {
                (u32::from(c - 1) << 25) | time
            };
            self.push(record);
        }
        if self.buffer.len() >= 1 << 16 {
            self.out.write_all(&self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Writes the remaining records and the final record count; returns the output.
    pub fn finish(mut self) -> Result<W, PtuError> {
        self.out.write_all(&self.buffer)?;
        let acquisition_ms =
            (self.last_units as f64 * self.resolution_ps as f64 * 1e-9).ceil() as i64;
        self.out.seek(SeekFrom::Start(self.acquisition_value_at))?;
        self.out.write_all(&acquisition_ms.to_le_bytes())?;
        self.out.seek(SeekFrom::Start(self.records_value_at))?;
        self.out.write_all(&(self.records as i64).to_le_bytes())?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}
