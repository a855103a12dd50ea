//! Streaming a PTU file: the header once, then records in chunks.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::PtuError;
use super::header::{Layout, PtuHeader};
use super::records::{EventSink, RecordDecoder, RecordStats};

/// A PTU file being decoded from front to back.
#[derive(Debug)]
pub struct PtuReader<R> {
    input: R,
    header: PtuHeader,
    layout: Layout,
    decoder: RecordDecoder,
    buffer: Vec<u8>,
    finished: bool,
}

impl PtuReader<BufReader<File>> {
    /// Opens a file and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, PtuError> {
        Self::new(BufReader::with_capacity(1 << 20, File::open(path)?))
    }
}

impl<R: Read> PtuReader<R> {
    /// Reads the header from `input`, which must be at the start of a file.
    pub fn new(mut input: R) -> Result<Self, PtuError> {
        let header = PtuHeader::read(&mut input)?;
        let layout = header.layout()?;
        let decoder = RecordDecoder::new(&layout, header.records_offset);
        Ok(PtuReader {
            input,
            header,
            layout,
            decoder,
            buffer: Vec::new(),
            finished: false,
        })
    }

    /// The header.
    pub fn header(&self) -> &PtuHeader {
        &self.header
    }

    /// How the records are laid out and timed.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Counts over the records decoded so far.
    pub fn stats(&self) -> &RecordStats {
        self.decoder.stats()
    }

    /// Decodes up to `max_records` further records into `sink`; returns how many (0 at the end).
    pub fn decode_next(
        &mut self,
        max_records: usize,
        sink: &mut impl EventSink,
    ) -> Result<usize, PtuError> {
        if self.finished {
            return Ok(0);
        }
        self.buffer.resize(max_records.max(1) * 4, 0);
        let mut filled = 0;
        while filled < self.buffer.len() {
            match self.input.read(&mut self.buffer[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PtuError::Io(e)),
            }
        }
        if filled < self.buffer.len() {
            self.finished = true;
        }
        let whole = filled / 4 * 4;
        self.decoder.decode(&self.buffer[..whole], sink)?;
        if whole < filled {
            return Err(PtuError::Truncated {
                what: "record",
                offset: self.decoder.next_offset(),
                needed: 4,
                available: (filled - whole) as u64,
            });
        }
        Ok(whole / 4)
    }

    /// Decodes every remaining record into `sink`.
    pub fn decode_all(&mut self, sink: &mut impl EventSink) -> Result<(), PtuError> {
        while self.decode_next(1 << 18, sink)? > 0 {}
        Ok(())
    }
}
