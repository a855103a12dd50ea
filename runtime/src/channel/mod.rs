//! The classical channel between two nodes: a transport that moves frames, and a peer that
//! encodes messages, numbers them and authenticates the transcript.

pub mod memory;
pub mod tcp;

use std::future::Future;
use std::time::Duration;

use qkd_postprocess::auth::{AuthError, Authenticator, Role};
use qkd_postprocess::hybrid::HybridSigner;
use serde::{Deserialize, Serialize};

use crate::messages::Message;

/// Largest frame accepted from the network (64 MiB): a bound against hostile length fields.
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// How long a node waits for the peer's next message by default: far beyond any block's
/// computation, short enough that a lost message ends the session instead of hanging it.
pub const DEFAULT_RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// A transport failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The other end went away.
    #[error("the channel is closed")]
    Closed,
    /// The operating system reported an error.
    #[error("channel I/O: {0}")]
    Io(String),
    /// A frame longer than the limit was announced.
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// Nothing arrived in time: a lost message or a stalled peer.
    #[error("no message from the peer within {0:?}")]
    Timeout(Duration),
}

/// Moves frames between two nodes, in order.
pub trait Transport: Send {
    /// Sends one frame.
    fn send(&mut self, frame: Vec<u8>) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Receives the next frame.
    fn recv(&mut self) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

/// Why a conversation with the peer failed: any of these ends the block without a key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChannelError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A frame that does not decode.
    #[error("undecodable message: {0}")]
    Decode(String),
    /// Authentication failed: the channel cannot be trusted.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A message that does not fit the protocol at this point.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer abandoned the block.
    #[error("the peer aborted: {0}")]
    PeerAborted(String),
}

impl ChannelError {
    /// A protocol violation reported by a post-processing stage (its error, as text).
    pub fn protocol(error: impl std::fmt::Display) -> Self {
        ChannelError::Protocol(error.to_string())
    }

    /// `got` arrived where the protocol expects a `wanted` message.
    pub fn unexpected(got: &Message, wanted: &str) -> Self {
        ChannelError::Protocol(format!("{} instead of {wanted}", got.name()))
    }
}

/// One frame: a sequence number and the encoded message.
#[derive(Serialize, Deserialize)]
struct Envelope {
    seq: u64,
    payload: Vec<u8>,
}

/// Traffic figures of one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages sent.
    pub messages_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Messages received.
    pub messages_received: u64,
}

/// One node's end of the authenticated classical channel.
#[derive(Debug)]
pub struct Peer<T> {
    transport: T,
    auth: Authenticator,
    role: Role,
    traffic: Traffic,
    receive_timeout: Duration,
}

impl<T: Transport> Peer<T> {
    /// Wraps a transport with authentication keyed by a pre-shared `secret`.
    pub fn new(transport: T, secret: &[u8], role: Role) -> Result<Self, ChannelError> {
        Ok(Peer {
            transport,
            auth: Authenticator::new(secret, role)?,
            role,
            traffic: Traffic::default(),
            receive_timeout: DEFAULT_RECEIVE_TIMEOUT,
        })
    }

    /// Sets how long to wait for each message.
    #[must_use]
    pub fn with_receive_timeout(mut self, timeout: Duration) -> Self {
        self.receive_timeout = timeout;
        self
    }

    /// Hybrid mode: every seal also carries an ML-DSA signature over the same messages, and
    /// every seal received must carry a valid one.
    #[must_use]
    pub fn with_hybrid(mut self, signer: HybridSigner) -> Self {
        self.auth.set_signer(signer);
        self
    }

    /// Which side this node is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Traffic so far.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Authentication key spent so far, in bits.
    pub fn auth_spent_bits(&self) -> u64 {
        self.auth.spent_bits()
    }

    /// Sends a message (recorded in the transcript).
    pub async fn send(&mut self, message: &Message) -> Result<(), ChannelError> {
        let payload =
            postcard::to_allocvec(message).map_err(|e| ChannelError::Decode(e.to_string()))?;
        let seq = self.auth.record_sent(&payload);
        let frame = postcard::to_allocvec(&Envelope { seq, payload })
            .map_err(|e| ChannelError::Decode(e.to_string()))?;
        self.traffic.messages_sent += 1;
        self.traffic.bytes_sent += frame.len() as u64;
        self.transport.send(frame).await?;
        Ok(())
    }

    /// Receives the next message (recorded in the transcript). A seal is checked against the
    /// transcript as it stood before the seal arrived (the sender sealed before sending it);
    /// a failing seal comes back as [`ChannelError::Auth`], a peer's abort as
    /// [`ChannelError::PeerAborted`].
    pub async fn recv(&mut self) -> Result<Message, ChannelError> {
        let frame = tokio::time::timeout(self.receive_timeout, self.transport.recv())
            .await
            .map_err(|_| TransportError::Timeout(self.receive_timeout))??;
        let envelope: Envelope =
            postcard::from_bytes(&frame).map_err(|e| ChannelError::Decode(e.to_string()))?;
        let message: Result<Message, _> = postcard::from_bytes(&envelope.payload);
        let verdict = match &message {
            Ok(Message::Seal(seal)) => {
                // A misnumbered seal is not checked (it would spend a pad on a replay).
                let expected = self.auth.expected_receive();
                if envelope.seq != expected {
                    return Err(AuthError::Sequence {
                        expected,
                        got: envelope.seq,
                    }
                    .into());
                }
                self.auth.check(seal)
            }
            _ => Ok(()),
        };
        // A seal is recorded whatever its verdict: both sides' numbering stays in step, so a
        // block that fails its seal yields no key and the session goes on with the next one.
        self.auth.record_received(envelope.seq, &envelope.payload)?;
        verdict?;
        self.traffic.messages_received += 1;
        match message.map_err(|e| ChannelError::Decode(e.to_string()))? {
            Message::Abort(reason) => Err(ChannelError::PeerAborted(reason)),
            other => Ok(other),
        }
    }

    /// Tells the peer this block is abandoned (best effort: the link may already be broken).
    pub async fn abort(&mut self, reason: &str) {
        let _ = self.send(&Message::Abort(reason.to_owned())).await;
    }

    /// Seals the transcript and sends the seal.
    pub async fn send_seal(&mut self) -> Result<(), ChannelError> {
        let seal = self.auth.seal()?;
        self.send(&Message::Seal(seal)).await
    }

    /// Receives the peer's seal; [`Self::recv`] has checked it against the transcript.
    pub async fn expect_seal(&mut self) -> Result<(), ChannelError> {
        match self.recv().await? {
            Message::Seal(_) => Ok(()),
            other => Err(ChannelError::Protocol(format!(
                "expected a seal, got {}",
                other.name()
            ))),
        }
    }

    /// Forgets both transcripts for a block abandoned before any key could come of it.
    pub fn discard_transcripts(&mut self) {
        self.auth.discard_transcripts();
    }

    /// Adds fresh secret to the authentication keys (both nodes, the same bytes).
    pub fn refill_auth(&mut self, secret: &[u8]) -> u64 {
        self.auth.refill(secret, self.role)
    }
}
