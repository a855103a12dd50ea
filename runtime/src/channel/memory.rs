//! An in-memory transport for two nodes in one process (tests, `qkd link`), with an optional
//! hook that alters frames in flight to prove that tampering is caught, and an optional latency.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Transport, TransportError};

/// Frames in flight per direction before the sender waits (back-pressure).
const DEPTH: usize = 64;

/// Changes a frame in flight: frame number, frame → frame(s) delivered instead.
pub type Tamper = Box<dyn FnMut(u64, Vec<u8>) -> Vec<Vec<u8>> + Send>;

/// One end of an in-memory channel.
pub struct MemoryTransport {
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    tamper: Option<Tamper>,
    /// Time each frame takes to reach this end.
    latency: Duration,
    /// A frame taken from the queue, waiting out the latency (kept if a receive is cancelled).
    arrived: Option<(Instant, Vec<u8>)>,
    sent: u64,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryTransport(sent {})", self.sent)
    }
}

impl MemoryTransport {
    /// Two connected ends.
    pub fn pair() -> (MemoryTransport, MemoryTransport) {
        let (a_tx, b_rx) = mpsc::channel(DEPTH);
        let (b_tx, a_rx) = mpsc::channel(DEPTH);
        (
            MemoryTransport {
                tx: a_tx,
                rx: a_rx,
                tamper: None,
                latency: Duration::ZERO,
                arrived: None,
                sent: 0,
            },
            MemoryTransport {
                tx: b_tx,
                rx: b_rx,
                tamper: None,
                latency: Duration::ZERO,
                arrived: None,
                sent: 0,
            },
        )
    }

    /// Alters every frame this end sends through `tamper` (an active attacker on the line).
    #[must_use]
    pub fn with_tamper(mut self, tamper: Tamper) -> Self {
        self.tamper = Some(tamper);
        self
    }

    /// Frames reach this end `latency` after they were sent (half a round trip; frames sent
    /// back to back still arrive back to back).
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
}

impl Transport for MemoryTransport {
    async fn send(&mut self, frame: Vec<u8>) -> Result<(), TransportError> {
        let number = self.sent;
        self.sent += 1;
        let frames = match &mut self.tamper {
            Some(tamper) => tamper(number, frame),
            None => vec![frame],
        };
        let now = Instant::now();
        for frame in frames {
            self.tx
                .send((now, frame))
                .await
                .map_err(|_| TransportError::Closed)?;
        }
        Ok(())
    }

    async fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        let sent = match self.arrived.take() {
            Some(waiting) => waiting,
            None => self.rx.recv().await.ok_or(TransportError::Closed)?,
        };
        let due = sent.0 + self.latency;
        self.arrived = Some(sent);
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
