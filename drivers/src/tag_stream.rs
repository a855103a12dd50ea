//! Time taggers over the network: a reader of the tag stream ([`qkd_protocol::tag_stream`]) that
//! is a [`TimeTagger`] like any other, and a server that streams any tagger's batches to one
//! reader at a time (how `qkd sim serve` hands a node its emulated receiver's tags).

use std::time::Duration;

use qkd_protocol::tag_stream::{
    FLAG_OVERFLOW, FRAME_HEADER_BYTES, FrameHeader, HELLO_BYTES, Hello, MAX_CHANNELS,
    MAX_FRAME_TAGS, ROLE_DETECTOR, ROLE_MARKER, ROLE_OTHER, ROLE_SYNC, StreamError, check_role,
};
use qkd_units::{Picoseconds, Volts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::DeviceIdentity;
use crate::error::{TaggerError, TransportError};
use crate::tagger::{ChannelRole, TagBatch, TaggerChannel, TimeTagger};

/// How long a reader waits for the next frame: streams send one per batch, even empty.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

fn role_byte(role: ChannelRole) -> u8 {
    match role {
        ChannelRole::Sync => ROLE_SYNC,
        ChannelRole::Detector(n) if n < 4 => ROLE_DETECTOR + n,
        ChannelRole::Marker => ROLE_MARKER,
        ChannelRole::Detector(_) | ChannelRole::Other => ROLE_OTHER,
    }
}

fn role_of(byte: u8) -> ChannelRole {
    match byte {
        ROLE_SYNC => ChannelRole::Sync,
        ROLE_MARKER => ChannelRole::Marker,
        b if (ROLE_DETECTOR..ROLE_DETECTOR + 4).contains(&b) => {
            ChannelRole::Detector(b - ROLE_DETECTOR)
        }
        _ => ChannelRole::Other,
    }
}

fn malformed(error: StreamError) -> TaggerError {
    TransportError::Malformed(error.to_string()).into()
}

fn gone(address: &str, error: &std::io::Error) -> TaggerError {
    TransportError::Disconnected(format!("tag stream {address}: {error}")).into()
}

/// A tagger read over a tag stream.
#[derive(Debug)]
pub struct StreamTagger {
    stream: TcpStream,
    address: String,
    identity: DeviceIdentity,
    channels: Vec<TaggerChannel>,
    resolution: Picoseconds,
    /// Scratch for a frame's body.
    body: Vec<u8>,
}

impl StreamTagger {
    /// Connects to the stream at `address` (host:port) and reads its hello.
    pub async fn connect(address: &str) -> Result<Self, TaggerError> {
        let mut stream = connect_bounded(address)
            .await
            .map_err(|e| gone(address, &e))?;
        let _ = stream.set_nodelay(true);
        let mut hello = [0u8; HELLO_BYTES];
        read_within(&mut stream, &mut hello, address).await?;
        let hello = Hello::decode(&hello).map_err(malformed)?;
        let mut roles = vec![0u8; usize::from(hello.channels)];
        read_within(&mut stream, &mut roles, address).await?;
        let channels = roles
            .iter()
            .enumerate()
            .map(|(i, &role)| {
                check_role(i as u8, role).map_err(malformed)?;
                Ok(TaggerChannel {
                    index: i as u8,
                    role: role_of(role),
                })
            })
            .collect::<Result<Vec<_>, TaggerError>>()?;
        Ok(StreamTagger {
            stream,
            identity: DeviceIdentity {
                vendor: "qkd-node".into(),
                model: "tag stream".into(),
                serial: address.to_owned(),
                firmware: "QKDTAGS1".into(),
            },
            address: address.to_owned(),
            channels,
            resolution: Picoseconds(i64::from(hello.resolution_ps)),
            body: Vec::new(),
        })
    }
}

/// Fills `buffer` from `stream`, within [`FRAME_TIMEOUT`].
async fn read_within(
    stream: &mut TcpStream,
    buffer: &mut [u8],
    address: &str,
) -> Result<(), TaggerError> {
    match tokio::time::timeout(FRAME_TIMEOUT, stream.read_exact(buffer)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(gone(address, &e)),
        Err(_) => Err(TransportError::Timeout(FRAME_TIMEOUT).into()),
    }
}

impl TimeTagger for StreamTagger {
    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn channels(&self) -> &[TaggerChannel] {
        &self.channels
    }

    fn resolution(&self) -> Picoseconds {
        self.resolution
    }

    async fn set_delay(&mut self, _: u8, _: Picoseconds) -> Result<(), TaggerError> {
        Err(TaggerError::Unsupported(
            "settings over a tag stream (it is read-only)",
        ))
    }

    async fn set_trigger_level(&mut self, _: u8, _: Volts) -> Result<(), TaggerError> {
        Err(TaggerError::Unsupported(
            "settings over a tag stream (it is read-only)",
        ))
    }

    /// The stream runs whether read or not.
    async fn start(&mut self) -> Result<(), TaggerError> {
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), TaggerError> {
        Ok(())
    }

    async fn read(&mut self, batch: &mut TagBatch) -> Result<(), TaggerError> {
        batch.clear();
        let mut header = [0u8; FRAME_HEADER_BYTES];
        read_within(&mut self.stream, &mut header, &self.address).await?;
        let header = FrameHeader::decode(&header).map_err(malformed)?;
        self.body.resize(header.body_bytes(), 0);
        read_within(&mut self.stream, &mut self.body, &self.address).await?;
        let n = header.tags as usize;
        let (times, channels) = self.body.split_at(8 * n);
        batch.time_ps.extend(
            times
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
        );
        let count = self.channels.len();
        if let Some(&bad) = channels.iter().find(|&&c| usize::from(c) >= count) {
            return Err(TaggerError::NoSuchChannel {
                channel: usize::from(bad),
                count,
            });
        }
        batch.channel.extend_from_slice(channels);
        if !batch.time_ps.is_sorted() {
            return Err(TransportError::Malformed("tags out of time order".into()).into());
        }
        batch.missed_events = u64::from(header.missed);
        batch.overflow = header.flags & FLAG_OVERFLOW != 0;
        Ok(())
    }
}

/// A reader's socket receive buffer, and a shallow stream's send buffer: the kernel's least, so
/// that a frame (one batch of the bench's sync tags alone is kilobytes) barely fits.
const SOCKET_BUFFER_BYTES: usize = 4096;

/// How far a stream may run ahead of a reader that falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamDepth {
    /// Many frames queued and the kernel's own send buffer: the tagger keeps running while its
    /// reader is busy elsewhere (reconciling a block), for throughput.
    Deep,
    /// One frame queued and the least send buffer: few frames in flight, for a reader whose
    /// actions change what is measured (a tracker moving a controller).
    Shallow,
}

impl StreamDepth {
    fn queued_frames(self) -> usize {
        match self {
            StreamDepth::Deep => 64,
            StreamDepth::Shallow => 1,
        }
    }

    /// Most frames a reader can receive that were cut before a given moment: for a shallow
    /// stream the one being cut, the queued one, the one being written, and what the two
    /// sockets hold; a deep stream gives no useful bound. A tracker skips this many batches
    /// after each move (their light may predate it).
    pub fn frames_in_flight(self) -> Option<u32> {
        match self {
            StreamDepth::Deep => None,
            StreamDepth::Shallow => Some(5),
        }
    }
}

/// Connects to `address` with a receive buffer of [`SOCKET_BUFFER_BYTES`], set before the
/// connection opens (a window shrunk later stalls the stream).
async fn connect_bounded(address: &str) -> std::io::Result<TcpStream> {
    let mut last = None;
    for peer in tokio::net::lookup_host(address).await? {
        let socket = if peer.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // Only a bound on latency: a kernel that refuses keeps its own size.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES as u32);
        match socket.connect(peer).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the address resolves to nothing")))
}

/// A batch as frames of at most [`MAX_FRAME_TAGS`] tags each (a reader that fell behind a
/// shared world gets a batch of everything since its last): the losses go with the first; each
/// frame but the last says its own last tag as the time it covers, the last `covered_to_ps`.
fn frames(batch: &TagBatch, covered_to_ps: i64) -> impl Iterator<Item = Vec<u8>> + '_ {
    let chunk = MAX_FRAME_TAGS as usize;
    let count = batch.len().div_ceil(chunk).max(1);
    (0..count).map(move |i| {
        let range = i * chunk..((i + 1) * chunk).min(batch.len());
        let last = i + 1 == count;
        let missed = if i == 0 { batch.missed_events } else { 0 };
        let header = FrameHeader {
            tags: range.len() as u32,
            covered_to_ps: match batch.time_ps[range.clone()].last() {
                Some(&t) if !last => t,
                _ => covered_to_ps,
            },
            missed: u32::try_from(missed).unwrap_or(u32::MAX),
            flags: if i == 0 && (batch.overflow || missed > 0) {
                FLAG_OVERFLOW
            } else {
                0
            },
        };
        let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + header.body_bytes());
        frame.extend_from_slice(&header.encode());
        for t in &batch.time_ps[range.clone()] {
            frame.extend_from_slice(&t.to_le_bytes());
        }
        frame.extend_from_slice(&batch.channel[range]);
        frame
    })
}

/// Writes queued frames to one reader until it goes away.
fn writer(
    mut stream: TcpStream,
    hello: Vec<u8>,
    depth: StreamDepth,
) -> tokio::sync::mpsc::Sender<Vec<u8>> {
    let (frames, mut queue) = tokio::sync::mpsc::channel::<Vec<u8>>(depth.queued_frames());
    tokio::spawn(async move {
        let _ = stream.set_nodelay(true);
        if depth == StreamDepth::Shallow {
            // A send buffer may shrink at any time, unlike a receive window.
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SOCKET_BUFFER_BYTES);
        }
        if stream.write_all(&hello).await.is_err() {
            return;
        }
        while let Some(frame) = queue.recv().await {
            if stream.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    frames
}

/// Streams `tagger`'s batches to one reader at a time on `listener` (a new one replaces the
/// last): each gets the hello, then every batch read while it is connected. The tagger is read
/// continuously, connected or not, so a paced emulation runs on; a reader that falls behind
/// slows it (streaming is pull-based, like the tagger trait: an emulated world simply runs
/// slower than real time then, as far ahead of its reader as `depth` allows). Returns when the
/// tagger fails.
pub async fn serve(
    listener: TcpListener,
    mut tagger: impl TimeTagger,
    depth: StreamDepth,
) -> Result<(), TaggerError> {
    // Tags name their channel by its index, so the roles go by index too (an index the tagger
    // does not list is `Other`), up to the channels a reader accepts.
    let count = tagger
        .channels()
        .iter()
        .map(|c| usize::from(c.index) + 1)
        .max()
        .unwrap_or(0)
        .min(usize::from(MAX_CHANNELS));
    let mut roles = vec![ROLE_OTHER; count];
    for channel in tagger.channels() {
        if let Some(role) = roles.get_mut(usize::from(channel.index)) {
            *role = role_byte(channel.role);
        }
    }
    let mut hello = Hello {
        resolution_ps: u32::try_from(tagger.resolution().get()).unwrap_or(u32::MAX),
        channels: count as u8,
    }
    .encode()
    .to_vec();
    hello.extend(roles);
    let (readers, mut arrived) = tokio::sync::mpsc::channel::<TcpStream>(4);
    let acceptor = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if readers.send(stream).await.is_err() {
                return;
            }
        }
    });
    let mut reader: Option<tokio::sync::mpsc::Sender<Vec<u8>>> = None;
    let mut batch = TagBatch::default();
    let mut covered = 0i64;
    let result = loop {
        while let Ok(stream) = arrived.try_recv() {
            reader = Some(writer(stream, hello.clone(), depth));
        }
        if let Err(e) = tagger.read(&mut batch).await {
            break Err(e);
        }
        // An emulation behind real time never waits inside `read`: let the acceptor and the
        // writer run.
        tokio::task::yield_now().await;
        covered = batch.time_ps.last().map_or(covered, |&t| t.max(covered));
        let Some(queue) = &reader else {
            continue;
        };
        for frame in frames(&batch, covered) {
            if queue.send(frame).await.is_err() {
                reader = None;
                break;
            }
        }
    };
    acceptor.abort();
    result
}
