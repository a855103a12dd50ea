//! The classical channel between two nodes: a transport that moves frames, and a peer that
//! numbers, encodes and authenticates the messages of one protocol.
//!
//! Every frame carries its position in the sender's stream (epoch, number). A frame out of place
//! (lost, replayed, reordered, injected) is refused at once; a forged content fails at the next
//! seal. Neither ends the conversation: the driving side resynchronises the channel (a new
//! epoch both sides enter, transcripts started over), and frames of older epochs still in flight
//! are dropped on arrival. Seals name the pad they use, so a seal lost on the way costs a pad,
//! not the channel. Before a pad is used the authentication state goes to the journal, so a
//! node that crashes never uses a pad twice.

pub mod memory;
pub mod tcp;

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use qkd_postprocess::auth::{
    AuthError, AuthErrorKind, AuthState, Authenticator, Position, Role, Seal,
};
use qkd_postprocess::hybrid::HybridSigner;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::error::ErrorKind;

/// Largest frame accepted from the network (64 MiB): a bound against hostile length fields.
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// Longest abort reason kept from the peer, in bytes (longer ones are cut at a character).
pub const MAX_ABORT_REASON_BYTES: usize = 256;
/// Furthest a resynchronisation may move the epoch at once: one forged frame cannot push the
/// channel to an epoch the honest peer never reaches.
pub const MAX_EPOCH_STEP: u64 = 1024;

/// How long a node waits on the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// For the peer's next frame: far beyond any block's computation, short enough that a lost
    /// message ends the block instead of hanging the node.
    pub receive: Duration,
    /// For a frame to leave (a peer that stopped reading fills the transport's buffers).
    pub send: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            receive: Duration::from_secs(30),
            send: Duration::from_secs(10),
        }
    }
}

/// A transport failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The other end went away.
    #[error("the channel is closed")]
    Closed,
    /// The operating system reported an error.
    #[error("channel I/O ({kind:?}): {message}")]
    Io {
        /// The error's kind.
        kind: std::io::ErrorKind,
        /// What the system said.
        message: String,
    },
    /// A frame longer than the limit was announced.
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// Nothing arrived in time: a lost message or a stalled peer.
    #[error("no frame from the peer within {0:?}")]
    ReceiveTimeout(Duration),
    /// A frame could not leave in time: the peer stopped reading.
    #[error("a frame could not be sent within {0:?}")]
    SendTimeout(Duration),
}

impl TransportError {
    /// A system error.
    pub fn io(error: &std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            TransportError::Closed
        } else {
            TransportError::Io {
                kind: error.kind(),
                message: error.to_string(),
            }
        }
    }

    /// What to do about it: a late frame is a lost message; the rest mean the connection.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TransportError::ReceiveTimeout(_) => ErrorKind::Block,
            TransportError::Closed
            | TransportError::Io { .. }
            | TransportError::TooLarge(_)
            | TransportError::SendTimeout(_) => ErrorKind::Reconnect,
        }
    }
}

/// Moves frames between two nodes, in order.
pub trait Transport: Send {
    /// Sends one frame.
    fn send(&mut self, frame: Vec<u8>) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Receives the next frame.
    fn recv(&mut self) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

/// Keeps the authentication state durable: called before a pad leaves the node in a seal and
/// before the verdict of a checked seal is acted on, with the state after that pad's use.
pub trait AuthJournal: Send {
    /// Makes `state` durable before returning.
    fn save(&mut self, state: &AuthState) -> Result<(), StoreError>;
}

/// Why a conversation with the peer failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A frame that does not decode.
    #[error("undecodable frame: {0}")]
    Decode(#[source] postcard::Error),
    /// A message that does not encode (a bug, not the peer's doing).
    #[error("a message could not be encoded: {0}")]
    Encode(#[source] postcard::Error),
    /// Authentication failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A frame not at the position due: replayed, reordered, injected, or one before it lost.
    #[error("a frame at {got:?} arrived where {expected:?} was due (replayed, reordered or lost)")]
    OutOfPlace {
        /// Position due.
        expected: Position,
        /// Position received.
        got: Position,
    },
    /// A seal arrived where a message was due, or a message where a seal was.
    #[error("a {got} arrived where a {wanted} was due")]
    WrongFrame {
        /// What arrived.
        got: &'static str,
        /// What was due.
        wanted: &'static str,
    },
    /// The peer abandoned the block.
    #[error("the peer aborted: {0}")]
    PeerAborted(String),
    /// The peer started the channel over (it saw a failure this node may not have).
    #[error("the peer resynchronised the channel (epoch {0})")]
    Resynchronised(u64),
    /// The authentication state could not be journalled.
    #[error(transparent)]
    Journal(#[from] StoreError),
    /// Resynchronisation failed again and again: the peer is not there.
    #[error("the peer did not answer {attempts} resynchronisations")]
    Unresponsive {
        /// Attempts made.
        attempts: u32,
    },
}

impl ChannelError {
    /// What to do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ChannelError::Transport(e) => e.kind(),
            ChannelError::Auth(e) => match e.kind() {
                AuthErrorKind::Untrusted => ErrorKind::Block,
                AuthErrorKind::Exhausted | AuthErrorKind::Configuration => ErrorKind::Stop,
            },
            ChannelError::Decode(_)
            | ChannelError::OutOfPlace { .. }
            | ChannelError::WrongFrame { .. }
            | ChannelError::PeerAborted(_)
            | ChannelError::Resynchronised(_) => ErrorKind::Block,
            ChannelError::Unresponsive { .. } => ErrorKind::Reconnect,
            ChannelError::Encode(_) | ChannelError::Journal(_) => ErrorKind::Stop,
        }
    }
}

/// What one frame carries.
#[derive(Debug, Serialize, Deserialize)]
enum Frame {
    /// A message of the protocol, encoded.
    Message(Vec<u8>),
    /// The seal over the sender's messages since its last seal.
    Seal(Seal),
    /// The sender abandoned the block, with the reason.
    Abort(String),
    /// The driving side starts the channel over in the frame's epoch.
    Resync,
    /// The other side has entered the epoch.
    Resynced,
}

impl Frame {
    fn name(&self) -> &'static str {
        match self {
            Frame::Message(_) => "message",
            Frame::Seal(_) => "seal",
            Frame::Abort(_) => "abort",
            Frame::Resync => "resync",
            Frame::Resynced => "resync reply",
        }
    }
}

/// One frame on the wire: where it sits in the sender's stream, and what it carries.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    at: Position,
    frame: Frame,
}

/// What a frame carries, decoded: for tools and tests that look at traffic (or forge it).
#[derive(Debug, Clone, PartialEq)]
pub enum WireBody<M> {
    /// A protocol message.
    Message(M),
    /// A seal.
    Seal(Seal),
    /// An abort, with its reason.
    Abort(String),
    /// The driving side starts the channel over.
    Resync,
    /// The other side has entered the new epoch.
    Resynced,
}

/// A frame as it travels: its position in the sender's stream and what it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct WireFrame<M> {
    /// Position in the sender's stream.
    pub at: Position,
    /// What it carries.
    pub body: WireBody<M>,
}

/// Decodes a frame's bytes.
pub fn decode_frame<M: DeserializeOwned>(bytes: &[u8]) -> Result<WireFrame<M>, ChannelError> {
    let Envelope { at, frame } = postcard::from_bytes(bytes).map_err(ChannelError::Decode)?;
    let body = match frame {
        Frame::Message(payload) => {
            WireBody::Message(postcard::from_bytes(&payload).map_err(ChannelError::Decode)?)
        }
        Frame::Seal(seal) => WireBody::Seal(seal),
        Frame::Abort(reason) => WireBody::Abort(reason),
        Frame::Resync => WireBody::Resync,
        Frame::Resynced => WireBody::Resynced,
    };
    Ok(WireFrame { at, body })
}

/// Encodes a frame as a node would send it.
pub fn encode_frame<M: Serialize>(frame: &WireFrame<M>) -> Result<Vec<u8>, ChannelError> {
    let body = match &frame.body {
        WireBody::Message(message) => {
            Frame::Message(postcard::to_allocvec(message).map_err(ChannelError::Encode)?)
        }
        WireBody::Seal(seal) => Frame::Seal(seal.clone()),
        WireBody::Abort(reason) => Frame::Abort(reason.clone()),
        WireBody::Resync => Frame::Resync,
        WireBody::Resynced => Frame::Resynced,
    };
    postcard::to_allocvec(&Envelope {
        at: frame.at,
        frame: body,
    })
    .map_err(ChannelError::Encode)
}

/// Traffic figures of one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Frames sent.
    pub frames_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Frames of earlier epochs dropped on arrival.
    pub stale_frames: u64,
    /// Resynchronisations.
    pub resyncs: u64,
}

/// `reason`, cut to at most [`MAX_ABORT_REASON_BYTES`] at a character boundary.
fn bounded(mut reason: String) -> String {
    if reason.len() > MAX_ABORT_REASON_BYTES {
        let mut end = MAX_ABORT_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// One node's end of the authenticated classical channel, speaking messages of type `M`.
pub struct Peer<T, M> {
    transport: T,
    auth: Authenticator,
    role: Role,
    journal: Option<Box<dyn AuthJournal>>,
    deadlines: Deadlines,
    /// Where this node's next frame goes.
    send_at: Position,
    /// Where the peer's next frame is due.
    receive_at: Position,
    traffic: Traffic,
    _message: PhantomData<fn() -> M>,
}

impl<T, M> std::fmt::Debug for Peer<T, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("role", &self.role)
            .field("auth", &self.auth)
            .field("send_at", &self.send_at)
            .field("receive_at", &self.receive_at)
            .field("traffic", &self.traffic)
            .finish_non_exhaustive()
    }
}

impl<T: Transport, M: Serialize + DeserializeOwned> Peer<T, M> {
    /// Wraps a transport with authentication keyed by a pre-shared `secret`.
    pub fn new(transport: T, secret: &[u8], role: Role) -> Result<Self, ChannelError> {
        Ok(Self::with_state(
            transport,
            AuthState::from_secret(secret, role)?,
            role,
        ))
    }

    /// Wraps a transport with authentication resumed from a journalled state.
    pub fn with_state(transport: T, state: AuthState, role: Role) -> Self {
        Peer {
            transport,
            auth: Authenticator::from_state(state),
            role,
            journal: None,
            deadlines: Deadlines::default(),
            send_at: Position::default(),
            receive_at: Position::default(),
            traffic: Traffic::default(),
            _message: PhantomData,
        }
    }

    /// Sets how long to wait on the channel.
    #[must_use]
    pub fn with_deadlines(mut self, deadlines: Deadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Journals the authentication state before every use of a pad.
    #[must_use]
    pub fn with_journal(mut self, journal: Box<dyn AuthJournal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Hybrid mode: every seal also carries an ML-DSA signature over the same messages, and
    /// every seal received must carry a valid one.
    #[must_use]
    pub fn with_hybrid(mut self, signer: HybridSigner) -> Self {
        self.auth.set_signer(signer);
        self
    }

    /// Continues over a new connection: both sides start it at epoch 0, and the driving side
    /// resynchronises before anything else.
    pub fn reconnected(&mut self, transport: T) {
        self.transport = transport;
        self.send_at = Position::default();
        self.receive_at = Position::default();
        self.auth.discard_transcripts();
    }

    /// Which side this node is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Traffic so far.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// The authentication state (pads left, spent).
    pub fn auth_state(&self) -> &AuthState {
        self.auth.state()
    }

    /// The deadlines in force.
    pub fn deadlines(&self) -> Deadlines {
        self.deadlines
    }

    async fn send_frame(&mut self, frame: Frame) -> Result<(), ChannelError> {
        let at = self.send_at;
        if let Frame::Message(payload) = &frame {
            self.auth.record_sent(at, payload);
        }
        let bytes = postcard::to_allocvec(&Envelope { at, frame }).map_err(ChannelError::Encode)?;
        self.send_at.seq += 1;
        self.traffic.frames_sent += 1;
        self.traffic.bytes_sent += bytes.len() as u64;
        tokio::time::timeout(self.deadlines.send, self.transport.send(bytes))
            .await
            .map_err(|_| TransportError::SendTimeout(self.deadlines.send))??;
        Ok(())
    }

    /// Sends a message (recorded in the transcript).
    pub async fn send(&mut self, message: &M) -> Result<(), ChannelError> {
        let payload = postcard::to_allocvec(message).map_err(ChannelError::Encode)?;
        self.send_frame(Frame::Message(payload)).await
    }

    /// The next frame of the current epoch, within the receive deadline. Frames of earlier
    /// epochs are dropped; a resynchronisation by the peer is entered and reported.
    async fn next_frame(&mut self) -> Result<(Position, Frame), ChannelError> {
        let deadline = tokio::time::Instant::now() + self.deadlines.receive;
        loop {
            let bytes = tokio::time::timeout_at(deadline, self.transport.recv())
                .await
                .map_err(|_| TransportError::ReceiveTimeout(self.deadlines.receive))??;
            let Envelope { at, frame } =
                postcard::from_bytes(&bytes).map_err(ChannelError::Decode)?;
            self.traffic.frames_received += 1;
            let current = self.receive_at.epoch;
            if at.epoch < current {
                self.traffic.stale_frames += 1;
                continue;
            }
            if at.epoch > current {
                if matches!(frame, Frame::Resync)
                    && at.seq == 0
                    && at.epoch - current <= MAX_EPOCH_STEP
                {
                    return Err(self.enter(at.epoch).await);
                }
                return Err(ChannelError::OutOfPlace {
                    expected: self.receive_at,
                    got: at,
                });
            }
            if at.seq != self.receive_at.seq {
                return Err(ChannelError::OutOfPlace {
                    expected: self.receive_at,
                    got: at,
                });
            }
            self.receive_at.seq += 1;
            return Ok((at, frame));
        }
    }

    /// Enters the epoch the peer started: transcripts over, numbering over, and the reply.
    async fn enter(&mut self, epoch: u64) -> ChannelError {
        self.auth.discard_transcripts();
        self.receive_at = Position { epoch, seq: 1 };
        self.send_at = Position { epoch, seq: 0 };
        self.traffic.resyncs += 1;
        match self.send_frame(Frame::Resynced).await {
            Ok(()) => ChannelError::Resynchronised(epoch),
            Err(e) => e,
        }
    }

    /// Receives the next message (recorded in the transcript); a peer's abort comes back as
    /// [`ChannelError::PeerAborted`], a seal as [`ChannelError::WrongFrame`].
    pub async fn recv(&mut self) -> Result<M, ChannelError> {
        match self.next_frame().await? {
            (at, Frame::Message(payload)) => {
                self.auth.record_received(at, &payload);
                postcard::from_bytes(&payload).map_err(ChannelError::Decode)
            }
            (_, Frame::Abort(reason)) => Err(ChannelError::PeerAborted(bounded(reason))),
            (_, other) => Err(ChannelError::WrongFrame {
                got: other.name(),
                wanted: "message",
            }),
        }
    }

    fn journal(&mut self) -> Result<(), ChannelError> {
        if let Some(journal) = &mut self.journal {
            journal.save(self.auth.state())?;
        }
        Ok(())
    }

    /// Seals the transcript and sends the seal, once its pad is journalled as used.
    pub async fn send_seal(&mut self) -> Result<(), ChannelError> {
        let seal = self.auth.seal()?;
        self.journal()?;
        self.send_frame(Frame::Seal(seal)).await
    }

    /// Receives the peer's seal and checks it against everything received since the last one.
    pub async fn expect_seal(&mut self) -> Result<(), ChannelError> {
        match self.next_frame().await?.1 {
            Frame::Seal(seal) => {
                let verdict = self.auth.check(&seal);
                // A refused seal that named a spent pad spent nothing; any other used one.
                if !matches!(verdict, Err(AuthError::PadSpent { .. })) {
                    self.journal()?;
                }
                Ok(verdict?)
            }
            Frame::Abort(reason) => Err(ChannelError::PeerAborted(bounded(reason))),
            other => Err(ChannelError::WrongFrame {
                got: other.name(),
                wanted: "seal",
            }),
        }
    }

    /// Tells the peer this block is abandoned (best effort: the link may already be broken).
    pub async fn abort(&mut self, reason: &str) {
        let _ = self
            .send_frame(Frame::Abort(bounded(reason.to_owned())))
            .await;
    }

    /// Starts the channel over from this side (the driving side, after a failure): a new epoch
    /// above any seen, both transcripts discarded, and the peer's reply awaited; frames still in
    /// flight from before are dropped.
    pub async fn resync(&mut self) -> Result<(), ChannelError> {
        let epoch = self.send_at.epoch.max(self.receive_at.epoch) + 1;
        self.auth.discard_transcripts();
        self.send_at = Position { epoch, seq: 0 };
        self.receive_at = Position { epoch, seq: 0 };
        self.traffic.resyncs += 1;
        self.send_frame(Frame::Resync).await?;
        let deadline = tokio::time::Instant::now() + self.deadlines.receive;
        loop {
            let bytes = tokio::time::timeout_at(deadline, self.transport.recv())
                .await
                .map_err(|_| TransportError::ReceiveTimeout(self.deadlines.receive))??;
            self.traffic.frames_received += 1;
            // Anything but the reply is the tail of the abandoned conversation, or noise.
            if let Ok(Envelope {
                at,
                frame: Frame::Resynced,
            }) = postcard::from_bytes(&bytes)
                && at == (Position { epoch, seq: 0 })
            {
                self.receive_at.seq = 1;
                return Ok(());
            }
            self.traffic.stale_frames += 1;
        }
    }

    /// Waits for the peer to start the channel over (the answering side, after it reported a
    /// failure): everything before the peer's resynchronisation is dropped.
    pub async fn await_resync(&mut self) -> Result<(), ChannelError> {
        loop {
            match self.next_frame().await {
                Err(ChannelError::Resynchronised(_)) => return Ok(()),
                // A silent peer is a connection problem here, not a block's.
                Err(e @ ChannelError::Transport(_)) => return Err(e),
                Err(e) if e.kind() != ErrorKind::Block => return Err(e),
                _ => self.traffic.stale_frames += 1,
            }
        }
    }

    /// Forgets both transcripts for a block both sides abandoned at the same point, before any
    /// key could come of it.
    pub fn discard_transcripts(&mut self) {
        self.auth.discard_transcripts();
    }

    /// Adds fresh secret to the authentication pads (both nodes, the same bytes, in the same
    /// order). The caller journals the new state with the key it came from.
    pub fn refill_auth(&mut self, secret: &[u8]) -> u64 {
        self.auth.refill(secret, self.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer's abort text of any size enters reports at most `MAX_ABORT_REASON_BYTES` long,
    /// cut on a character boundary.
    #[test]
    fn an_abort_reason_is_bounded_on_a_character_boundary() {
        let huge = "é".repeat(32 << 20);
        let cut = bounded(huge);
        assert!(cut.len() <= MAX_ABORT_REASON_BYTES && cut.len() >= MAX_ABORT_REASON_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(bounded("short".into()), "short");
    }
}
