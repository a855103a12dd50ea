//! TCP transport: frames as a 4-byte little-endian length and the bytes.
//!
//! A task of its own reads the frames, so a receive that times out loses no bytes of a frame
//! half read (the stream stays in step), and so a latency can be added to what arrives, as a
//! long fiber's classical channel would.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{MAX_FRAME_BYTES, Transport, TransportError};

/// Frames read ahead of the node before the reader waits.
const READ_AHEAD: usize = 64;

/// One end of a TCP channel.
#[derive(Debug)]
pub struct TcpTransport {
    writer: OwnedWriteHalf,
    frames: mpsc::Receiver<Result<(Instant, Vec<u8>), TransportError>>,
    reader: JoinHandle<()>,
    latency: Duration,
    /// A frame taken from the reader, waiting out the latency (kept if a receive is cancelled).
    arrived: Option<(Instant, Vec<u8>)>,
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Reads frames until the stream fails, stamping each with its arrival.
async fn read_frames(
    mut stream: OwnedReadHalf,
    frames: mpsc::Sender<Result<(Instant, Vec<u8>), TransportError>>,
) {
    loop {
        let frame = read_frame(&mut stream).await;
        let failed = frame.is_err();
        if frames
            .send(frame.map(|f| (Instant::now(), f)))
            .await
            .is_err()
            || failed
        {
            return;
        }
    }
}

async fn read_frame(stream: &mut OwnedReadHalf) -> Result<Vec<u8>, TransportError> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| TransportError::io(&e))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(TransportError::TooLarge(len));
    }
    let mut frame = vec![0u8; len];
    stream
        .read_exact(&mut frame)
        .await
        .map_err(|e| TransportError::io(&e))?;
    Ok(frame)
}

impl TcpTransport {
    /// Wraps a connected stream (must be called within a tokio runtime).
    pub fn new(stream: TcpStream) -> Self {
        // Many small messages go back and forth: do not wait to coalesce them.
        let _ = stream.set_nodelay(true);
        let (read, writer) = stream.into_split();
        let (tx, frames) = mpsc::channel(READ_AHEAD);
        TcpTransport {
            writer,
            frames,
            reader: tokio::spawn(read_frames(read, tx)),
            latency: Duration::ZERO,
            arrived: None,
        }
    }

    /// Frames are handed over `latency` after they arrived (half the round trip to emulate when
    /// both ends add it).
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
}

impl Transport for TcpTransport {
    async fn send(&mut self, frame: Vec<u8>) -> Result<(), TransportError> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&l| l as usize <= MAX_FRAME_BYTES)
            .ok_or(TransportError::TooLarge(frame.len()))?;
        let mut bytes = Vec::with_capacity(4 + frame.len());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&frame);
        self.writer
            .write_all(&bytes)
            .await
            .map_err(|e| TransportError::io(&e))
    }

    async fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        let arrived = match self.arrived.take() {
            Some(waiting) => waiting,
            None => self.frames.recv().await.ok_or(TransportError::Closed)??,
        };
        let due = arrived.0 + self.latency;
        self.arrived = Some(arrived);
        // A timer, even one already due, waits for the driver's next tick: skip it when due.
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        self.arrived
            .take()
            .map(|(_, frame)| frame)
            .ok_or(TransportError::Closed)
    }
}
