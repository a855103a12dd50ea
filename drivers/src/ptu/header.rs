//! The PTU header: magic, version, then typed tags until `Header_End`.

use std::io::Read;

use super::PtuError;
use super::records::{Mode, RecordFormat};

/// File magic of PicoQuant time-tagged files.
pub const MAGIC: &[u8; 8] = b"PQTTTR\0\0";
/// Size of one header tag before its optional payload.
const TAG_SIZE: usize = 48;
/// Longest payload (string, array, blob) accepted in a header.
const MAX_PAYLOAD: u64 = 16 << 20;
/// Longest header accepted.
const MAX_HEADER: u64 = 64 << 20;

/// Tag type codes.
pub mod code {
    pub const EMPTY8: u32 = 0xFFFF_0008;
    pub const BOOL8: u32 = 0x0000_0008;
    pub const INT8: u32 = 0x1000_0008;
    pub const BITSET64: u32 = 0x1100_0008;
    pub const COLOR8: u32 = 0x1200_0008;
    pub const FLOAT8: u32 = 0x2000_0008;
    pub const DATETIME: u32 = 0x2100_0008;
    pub const FLOAT8_ARRAY: u32 = 0x2001_FFFF;
    pub const ANSI_STRING: u32 = 0x4001_FFFF;
    pub const WIDE_STRING: u32 = 0x4002_FFFF;
    pub const BINARY_BLOB: u32 = 0xFFFF_FFFF;
}

/// The value of a header tag.
#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    /// No value (also `Header_End`).
    Empty,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A bit set or a colour, kept raw.
    Bits(u64),
    /// A float.
    Float(f64),
    /// Days since 1899-12-30.
    DateTime(f64),
    /// An array of floats.
    FloatArray(Vec<f64>),
    /// Text (ANSI or UTF-16 on disk).
    Text(String),
    /// A binary payload (or a payload of an unknown variable-length type), kept by length only.
    Blob(u64),
}

/// One header tag.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderTag {
    /// Tag name, e.g. `MeasDesc_GlobalResolution`.
    pub name: String,
    /// Array index, -1 for scalar tags.
    pub index: i32,
    /// Its value.
    pub value: TagValue,
}

/// A parsed PTU header.
#[derive(Debug, Clone, PartialEq)]
pub struct PtuHeader {
    /// Format version string, e.g. `1.0.00`.
    pub version: String,
    /// Every tag in file order, known or not.
    pub tags: Vec<HeaderTag>,
    /// Byte offset of the first record.
    pub records_offset: u64,
}

/// Reads exactly `n` bytes, turning an early end of file into a [`PtuError::Truncated`].
struct Cursor<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Cursor<R> {
    fn take(&mut self, what: &'static str, buf: &mut [u8]) -> Result<(), PtuError> {
        let offset = self.offset;
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(PtuError::Truncated {
                        what,
                        offset,
                        needed: buf.len() as u64,
                        available: filled as u64,
                    });
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PtuError::Io(e)),
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn payload(
        &mut self,
        what: &'static str,
        len: u64,
        tag_offset: u64,
    ) -> Result<Vec<u8>, PtuError> {
        if len > MAX_PAYLOAD {
            return Err(PtuError::CorruptHeader {
                offset: tag_offset,
                reason: format!("payload of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit"),
            });
        }
        let mut buf = vec![0; len as usize];
        self.take(what, &mut buf)?;
        Ok(buf)
    }
}

fn text_until_nul(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn wide_text(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

impl PtuHeader {
    /// Reads the header from the start of a file, leaving `reader` at the first record.
    pub fn read(reader: impl Read) -> Result<Self, PtuError> {
        let mut cur = Cursor {
            inner: reader,
            offset: 0,
        };
        let mut magic = [0u8; 8];
        cur.take("file magic", &mut magic)?;
        if &magic != MAGIC {
            return Err(PtuError::BadMagic { found: magic });
        }
        let mut version = [0u8; 8];
        cur.take("format version", &mut version)?;
        let mut tags = Vec::new();
        loop {
            let tag_offset = cur.offset;
            if tag_offset > MAX_HEADER {
                return Err(PtuError::CorruptHeader {
                    offset: tag_offset,
                    reason: format!("no Header_End within {MAX_HEADER} bytes"),
                });
            }
            let mut raw = [0u8; TAG_SIZE];
            cur.take("header tag", &mut raw)?;
            let name = text_until_nul(&raw[..32]);
            let index = i32::from_le_bytes([raw[32], raw[33], raw[34], raw[35]]);
            let type_code = u32::from_le_bytes([raw[36], raw[37], raw[38], raw[39]]);
            let mut eight = [0u8; 8];
            eight.copy_from_slice(&raw[40..48]);
            let value = Self::value(&mut cur, type_code, eight, tag_offset)?;
            let end = name == "Header_End";
            tags.push(HeaderTag { name, index, value });
            if end {
                break;
            }
        }
        Ok(PtuHeader {
            version: text_until_nul(&version),
            tags,
            records_offset: cur.offset,
        })
    }

    fn value<R: Read>(
        cur: &mut Cursor<R>,
        type_code: u32,
        eight: [u8; 8],
        tag_offset: u64,
    ) -> Result<TagValue, PtuError> {
        let as_u64 = u64::from_le_bytes(eight);
        Ok(match type_code {
            code::EMPTY8 => TagValue::Empty,
            code::BOOL8 => TagValue::Bool(as_u64 != 0),
            code::INT8 => TagValue::Int(i64::from_le_bytes(eight)),
            code::BITSET64 | code::COLOR8 => TagValue::Bits(as_u64),
            code::FLOAT8 => TagValue::Float(f64::from_le_bytes(eight)),
            code::DATETIME => TagValue::DateTime(f64::from_le_bytes(eight)),
            code::FLOAT8_ARRAY => {
                let bytes = cur.payload("float array", as_u64, tag_offset)?;
                TagValue::FloatArray(
                    bytes
                        .chunks_exact(8)
                        .map(|c| {
                            f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                        })
                        .collect(),
                )
            }
            code::ANSI_STRING => {
                TagValue::Text(text_until_nul(&cur.payload("string", as_u64, tag_offset)?))
            }
            code::WIDE_STRING => TagValue::Text(wide_text(&cur.payload(
                "wide string",
                as_u64,
                tag_offset,
            )?)),
            // Unknown variable-length types follow the same rule as the known ones: skip them.
            other if other == code::BINARY_BLOB || other & 0xFFFF == 0xFFFF => {
                cur.payload("binary payload", as_u64, tag_offset)?;
                TagValue::Blob(as_u64)
            }
            // Unknown fixed-size types: keep the raw bits.
            other if other & 0xFFFF == 0x0008 => TagValue::Bits(as_u64),
            other => {
                return Err(PtuError::CorruptHeader {
                    offset: tag_offset,
                    reason: format!("unknown tag type code 0x{other:08X}"),
                });
            }
        })
    }

    /// The first tag called `name`.
    pub fn get(&self, name: &str) -> Option<&TagValue> {
        self.tags.iter().find(|t| t.name == name).map(|t| &t.value)
    }

    /// An integer tag.
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            TagValue::Int(v) => Some(*v),
            TagValue::Bits(v) => i64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// A float tag.
    pub fn float(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            TagValue::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// A text tag.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            TagValue::Text(v) => Some(v),
            _ => None,
        }
    }

    /// How the records of this file are laid out and timed.
    pub fn layout(&self) -> Result<Layout, PtuError> {
        let code = self
            .int("TTResultFormat_TTTRRecType")
            .ok_or(PtuError::MissingTag("TTResultFormat_TTTRRecType"))?;
        let code = u32::try_from(code).map_err(|_| PtuError::UnsupportedRecordType(code as u32))?;
        let format = RecordFormat::from_code(code).ok_or(PtuError::UnsupportedRecordType(code))?;
        if let Some(declared) = self.int("Measurement_Mode") {
            let expected = match format.mode() {
                Mode::T2 => 2,
                Mode::T3 => 3,
            };
            if declared != expected {
                return Err(PtuError::Inconsistent(format!(
                    "Measurement_Mode {declared} contradicts record type 0x{code:08X} ({})",
                    format.mode()
                )));
            }
        }
        let positive = |name: &'static str| -> Result<f64, PtuError> {
            let v = self.float(name).ok_or(PtuError::MissingTag(name))?;
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(PtuError::Inconsistent(format!(
                    "{name} = {v} is not a positive time"
                )))
            }
        };
        let global_resolution_s = positive("MeasDesc_GlobalResolution")?;
        let resolution_s = match format.mode() {
            Mode::T2 => global_resolution_s,
            Mode::T3 => positive("MeasDesc_Resolution")?,
        };
        Ok(Layout {
            code,
            format,
            global_resolution_s,
            resolution_s,
            declared_records: self
                .int("TTResult_NumberOfRecords")
                .and_then(|n| u64::try_from(n).ok()),
        })
    }
}

/// How a file's records are to be decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// The record type code from the header.
    pub code: u32,
    /// The decoding rules of that type.
    pub format: RecordFormat,
    /// T2: seconds per time unit; T3: the sync period.
    pub global_resolution_s: f64,
    /// T3: seconds per dtime bin (T2: equal to the global resolution).
    pub resolution_s: f64,
    /// Number of records the header claims (may be 0 or wrong in aborted files).
    pub declared_records: Option<u64>,
}
