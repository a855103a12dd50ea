//! TCP transport: frames as a 4-byte little-endian length and the bytes.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{MAX_FRAME_BYTES, Transport, TransportError};

/// One end of a TCP channel.
#[derive(Debug)]
pub struct TcpTransport {
    stream: TcpStream,
}

impl TcpTransport {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Self {
        // Many small messages go back and forth: do not wait to coalesce them.
        let _ = stream.set_nodelay(true);
        TcpTransport { stream }
    }
}

fn io(e: &std::io::Error) -> TransportError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        TransportError::Closed
    } else {
        TransportError::Io(e.to_string())
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
        self.stream.write_all(&bytes).await.map_err(|e| io(&e))
    }

    async fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.map_err(|e| io(&e))?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(TransportError::TooLarge(len));
        }
        let mut frame = vec![0u8; len];
        self.stream
            .read_exact(&mut frame)
            .await
            .map_err(|e| io(&e))?;
        Ok(frame)
    }
}
