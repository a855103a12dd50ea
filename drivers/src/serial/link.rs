//! One serial port, opened lazily and reopened after it vanishes. Blocking port I/O runs on
//! tokio's blocking pool, so the async callers never stall the runtime.

use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serialport::{ClearBuffer, FlowControl, SerialPort, TTYPort};

use crate::error::TransportError;

/// Longest single wait inside a read, so a deadline is honoured within this much.
const READ_SLICE: Duration = Duration::from_millis(20);

/// How to reach a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSettings {
    /// Device path (`/dev/ttyUSB0`, or a PTY link of the emulator).
    pub path: PathBuf,
    /// Baud rate.
    pub baud: u32,
    /// RTS/CTS hardware flow control.
    pub hardware_flow_control: bool,
}

/// A serial port that reconnects.
#[derive(Debug)]
pub struct SerialLink {
    settings: PortSettings,
    port: Option<TTYPort>,
    opens: u64,
}

impl SerialLink {
    /// A link to `settings.path`; nothing is opened until first use.
    pub fn new(settings: PortSettings) -> Self {
        SerialLink {
            settings,
            port: None,
            opens: 0,
        }
    }

    /// The port's settings.
    pub fn settings(&self) -> &PortSettings {
        &self.settings
    }

    /// How many times the port was (re)opened.
    pub fn opens(&self) -> u64 {
        self.opens
    }

    /// Forgets the open port (after the device vanished, or to resynchronise).
    pub fn close(&mut self) {
        self.port = None;
    }

    fn disconnected(&self, what: &str, error: &impl std::fmt::Display) -> TransportError {
        TransportError::Disconnected(format!("{}: {what}: {error}", self.settings.path.display()))
    }

    /// Opens the port if it is not open; stale input is discarded.
    pub async fn ensure_open(&mut self) -> Result<(), TransportError> {
        if self.port.is_some() {
            return Ok(());
        }
        let settings = self.settings.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let flow = if settings.hardware_flow_control {
                FlowControl::Hardware
            } else {
                FlowControl::None
            };
            let port = serialport::new(settings.path.to_string_lossy(), settings.baud)
                .flow_control(flow)
                .timeout(READ_SLICE)
                .open_native()?;
            port.clear(ClearBuffer::All)?;
            Ok::<_, serialport::Error>(port)
        })
        .await
        .map_err(|e| self.disconnected("open", &e))?
        .map_err(|e| self.disconnected("open", &e))?;
        self.port = Some(opened);
        self.opens += 1;
        Ok(())
    }

    /// Runs blocking `io` on the open port; an I/O failure closes the port.
    async fn with_port<R: Send + 'static>(
        &mut self,
        what: &str,
        io: impl FnOnce(&mut TTYPort) -> std::io::Result<R> + Send + 'static,
    ) -> Result<R, TransportError> {
        self.ensure_open().await?;
        let Some(mut port) = self.port.take() else {
            return Err(self.disconnected(what, &"not open"));
        };
        let (port, result) = tokio::task::spawn_blocking(move || {
            let result = io(&mut port);
            (port, result)
        })
        .await
        .map_err(|e| self.disconnected(what, &e))?;
        match result {
            Ok(value) => {
                self.port = Some(port);
                Ok(value)
            }
            Err(e) => Err(self.disconnected(what, &e)),
        }
    }

    /// Discards whatever arrived and was not read (late replies of abandoned requests).
    pub async fn discard_input(&mut self) -> Result<(), TransportError> {
        self.with_port("clear", |port| {
            port.clear(ClearBuffer::Input).map_err(std::io::Error::from)
        })
        .await
    }

    /// Writes all of `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        let bytes = bytes.to_vec();
        self.with_port("write", move |port| {
            port.write_all(&bytes)?;
            port.flush()
        })
        .await
    }

    /// Appends to `out` what arrives within a short wait (20 ms at most, and never past
    /// `deadline`); returns how many bytes arrived, possibly none.
    pub async fn receive(
        &mut self,
        out: &mut Vec<u8>,
        deadline: Instant,
    ) -> Result<usize, TransportError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let wait = remaining.min(READ_SLICE).max(Duration::from_millis(1));
        let bytes = self
            .with_port("read", move |port| {
                port.set_timeout(wait).map_err(std::io::Error::from)?;
                let mut buffer = [0u8; 256];
                match port.read(&mut buffer) {
                    // A PTY or USB adapter that went away reads as end of file.
                    Ok(0) => Err(std::io::Error::new(IoErrorKind::BrokenPipe, "end of file")),
                    Ok(n) => Ok(buffer[..n].to_vec()),
                    Err(e) if e.kind() == IoErrorKind::TimedOut => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            })
            .await?;
        out.extend_from_slice(&bytes);
        Ok(bytes.len())
    }
}
