//! PicoQuant time-tagged files (PTU): reading every T2/T3 record type of the PicoHarp 300,
//! HydraHarp, TimeHarp 260, MultiHarp and PicoHarp 330, writing T2, and replaying a recording
//! through the [`TimeTagger`](crate::TimeTagger) trait.
//!
//! Files are read as a stream, so recordings larger than memory decode in constant space.
//! Damaged files end in a [`PtuError`] naming the byte offset, never a panic; header tags this
//! reader does not know are kept and skipped.

mod header;
mod reader;
mod records;
mod replay;
mod writer;

pub use header::{HeaderTag, Layout, PtuHeader, TagValue};
pub use reader::PtuReader;
pub use records::{EventSink, Mode, RecordDecoder, RecordFormat, RecordStats};
pub use replay::{Batching, PtuReplay};
pub use writer::{PtuWriter, RecordingInfo, WRITTEN_RECORD_TYPE};

use crate::tagger::TagBatch;

/// Why a PTU file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PtuError {
    /// The operating system refused a read or write.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with the PTU magic.
    #[error(
        "not a PicoQuant PTU file: the first 8 bytes are {found:02X?}, expected \"PQTTTR\\0\\0\""
    )]
    BadMagic {
        /// The bytes found.
        found: [u8; 8],
    },
    /// The file ends inside a structure.
    #[error(
        "file truncated: the {what} at byte offset {offset} needs {needed} bytes, only {available} remain"
    )]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
        /// Bytes the file still had.
        available: u64,
    },
    /// A header tag that cannot be right.
    #[error("corrupt header at byte offset {offset}: {reason}")]
    CorruptHeader {
        /// Where the tag starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A required header tag is absent.
    #[error("the header has no `{0}` tag")]
    MissingTag(&'static str),
    /// Header tags contradict each other or hold impossible values.
    #[error("inconsistent header: {0}")]
    Inconsistent(String),
    /// The record type is not one this reader knows.
    #[error("unsupported record type 0x{0:08X}")]
    UnsupportedRecordType(u32),
    /// A record that cannot be decoded.
    #[error("corrupt record at byte offset {offset}: {reason}")]
    CorruptRecord {
        /// Where the record starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Tags that cannot be written.
    #[error("cannot write the recording: {0}")]
    Write(String),
}

impl EventSink for TagBatch {
    #[inline]
    fn photon(&mut self, time_ps: i64, channel: u8) {
        self.time_ps.push(time_ps);
        self.channel.push(channel);
    }

    #[inline]
    fn sync(&mut self, time_ps: i64) {
        self.time_ps.push(time_ps);
        self.channel.push(0);
    }
}

/// Ignores events: for statistics only.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl EventSink for Discard {
    #[inline]
    fn photon(&mut self, _: i64, _: u8) {}
    #[inline]
    fn sync(&mut self, _: i64) {}
}
