//! A node's time tagger: a live tag stream, connected afresh for every session, or a PTU
//! recording, opened once and read on across sessions until it ends.
//!
//! A recording's detections may go into key once only: replayed again, both nodes would make
//! the keys they made before. So a node claims a recording in its store (by the SHA-256 of its
//! contents, wherever the file lies) before it reads a tag, and refuses one it has claimed.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use qkd_drivers::ptu::{Batching, PtuReader, PtuReplay};
use qkd_drivers::tag_stream::StreamTagger;
use qkd_drivers::{DeviceIdentity, TagBatch, TaggerChannel, TaggerError, TimeTagger};
use qkd_store::Store;
use qkd_units::{Picoseconds, Volts};
use sha2::{Digest, Sha256};

use super::config::TaggerSource;

/// Bytes hashed per read.
const HASH_CHUNK: usize = 1 << 20;

/// One of the taggers a node reads.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per node, moved once a session
pub enum NodeTagger {
    /// A live tag stream.
    Stream(StreamTagger),
    /// A recording being replayed.
    Recording(Box<Recording>),
}

/// A replayed recording, and whether it has ended.
#[derive(Debug)]
pub struct Recording {
    replay: PtuReplay<BufReader<File>>,
    ended: bool,
}

/// Where a node gets its tagger for each session.
#[derive(Debug)]
pub struct Taggers {
    source: TaggerSource,
    /// A recording between sessions.
    kept: Option<NodeTagger>,
}

impl Taggers {
    /// The taggers of `source`. A recording is claimed in `store` and opened now: a claimed
    /// or unreadable one is an error the node cannot retry its way out of.
    pub fn open(source: TaggerSource, store: &Store) -> Result<Self> {
        let kept = match &source {
            TaggerSource::Stream { .. } => None,
            TaggerSource::Recording {
                path,
                pacing,
                batch,
            } => {
                claim(path, store)?;
                let reader = PtuReader::new(BufReader::new(
                    File::open(path).with_context(|| format!("opening {}", path.display()))?,
                ))
                .with_context(|| format!("devices.tagger: reading {}", path.display()))?;
                Some(NodeTagger::Recording(Box::new(Recording {
                    replay: PtuReplay::new(reader, Batching::Span(*batch), *pacing),
                    ended: false,
                })))
            }
        };
        Ok(Taggers { source, kept })
    }

    /// A new connection to the stream; `None` for a recording, which is not connected to.
    pub async fn connect(&self) -> Result<Option<NodeTagger>> {
        match &self.source {
            TaggerSource::Stream { address, .. } => Ok(Some(NodeTagger::Stream(
                StreamTagger::connect(address)
                    .await
                    .with_context(|| format!("connecting to the tag stream {address}"))?,
            ))),
            TaggerSource::Recording { .. } => Ok(None),
        }
    }

    /// The tagger for the next session: a new connection to the stream, or the recording where
    /// the last session left it.
    pub async fn next(&mut self) -> Result<NodeTagger> {
        match self.connect().await? {
            Some(stream) => Ok(stream),
            None => self.recording(),
        }
    }

    /// The recording where the last session left it.
    pub fn recording(&mut self) -> Result<NodeTagger> {
        self.kept
            .take()
            .context("devices.tagger: the recording was not given back by the last session")
    }

    /// Takes back the tagger a session ended with: a recording is read on in the next one.
    pub fn put_back(&mut self, tagger: NodeTagger) {
        if let NodeTagger::Recording(_) = tagger {
            self.kept = Some(tagger);
        }
    }

    /// The recording has no more tags: no session can make key any more.
    pub fn ended(&self) -> bool {
        matches!(&self.kept, Some(NodeTagger::Recording(r)) if r.ended)
    }

    /// Whether the tags come from a recording (which ends) rather than a live stream.
    pub fn is_recording(&self) -> bool {
        matches!(self.source, TaggerSource::Recording { .. })
    }
}

/// Marks the recording at `path` as replayed by this node, unless it was already.
fn claim(path: &Path, store: &Store) -> Result<()> {
    let digest = sha256_of(path)?;
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = format!("recording.sha256.{digest}");
    let value = format!("{} (first replayed at unix time {since})", path.display());
    if let Some(before) = store.claim_meta(&name, &value)? {
        bail!(
            "devices.tagger: {} (sha256 {digest}) was replayed by this node already: {before}; \
             a recording's detections go into key once, so record anew",
            path.display()
        );
    }
    Ok(())
}

/// SHA-256 of the file at `path`, hex.
fn sha256_of(path: &Path) -> Result<String> {
    let reading = || format!("devices.tagger: reading {}", path.display());
    let mut file = File::open(path).with_context(reading)?;
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; HASH_CHUNK];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => hasher.update(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(reading),
        }
    }
    Ok(qkd_store::hex(&hasher.finalize()))
}

impl TimeTagger for NodeTagger {
    fn identity(&self) -> &DeviceIdentity {
        match self {
            NodeTagger::Stream(t) => t.identity(),
            NodeTagger::Recording(r) => r.replay.identity(),
        }
    }

    fn channels(&self) -> &[TaggerChannel] {
        match self {
            NodeTagger::Stream(t) => t.channels(),
            NodeTagger::Recording(r) => r.replay.channels(),
        }
    }

    fn resolution(&self) -> Picoseconds {
        match self {
            NodeTagger::Stream(t) => t.resolution(),
            NodeTagger::Recording(r) => r.replay.resolution(),
        }
    }

    async fn set_delay(&mut self, channel: u8, delay: Picoseconds) -> Result<(), TaggerError> {
        match self {
            NodeTagger::Stream(t) => t.set_delay(channel, delay).await,
            NodeTagger::Recording(r) => r.replay.set_delay(channel, delay).await,
        }
    }

    async fn set_trigger_level(&mut self, channel: u8, level: Volts) -> Result<(), TaggerError> {
        match self {
            NodeTagger::Stream(t) => t.set_trigger_level(channel, level).await,
            NodeTagger::Recording(r) => r.replay.set_trigger_level(channel, level).await,
        }
    }

    async fn start(&mut self) -> Result<(), TaggerError> {
        match self {
            NodeTagger::Stream(t) => t.start().await,
            NodeTagger::Recording(r) => r.replay.start().await,
        }
    }

    async fn stop(&mut self) -> Result<(), TaggerError> {
        match self {
            NodeTagger::Stream(t) => t.stop().await,
            NodeTagger::Recording(r) => r.replay.stop().await,
        }
    }

    async fn read(&mut self, batch: &mut TagBatch) -> Result<(), TaggerError> {
        match self {
            NodeTagger::Stream(t) => t.read(batch).await,
            NodeTagger::Recording(r) => {
                let read = r.replay.read(batch).await;
                if let Err(TaggerError::EndOfRecording {}) = read {
                    r.ended = true;
                }
                read
            }
        }
    }
}
