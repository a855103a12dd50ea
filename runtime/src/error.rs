//! Why a session step failed, and what the node does about it.

use qkd_drivers::{SourceError, TaggerError};
use qkd_postprocess::coincidence::OffsetError;
use qkd_postprocess::estimate::SettingsError;
use qkd_postprocess::sift::SiftError;
use qkd_postprocess::toeplitz::ToeplitzError;

use crate::StoreError;
use crate::channel::ChannelError;
use crate::messages::{BlockId, Message};
use crate::reconcile::ReconcileError;
use crate::tracking::TrackingFailure;

/// What a node must do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The conversation went wrong, the connection did not: the block in progress yields no
    /// key, the channel is resynchronised and the session goes on.
    Block,
    /// The connection is gone or silent: connect again (the session resumes on the new one).
    Reconnect,
    /// A device failed: the node's supervisor decides (its error says whether to retry,
    /// reconnect the device or give up).
    Device,
    /// Nothing more can be authenticated or kept (no pads left, the store fails, the two nodes
    /// are set up differently): stop making keys and tell the operator.
    Stop,
}

/// A message from the peer that does not fit the protocol at this point.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Violation {
    /// A message of the wrong type.
    #[error("{got} arrived where {wanted} was due")]
    Unexpected {
        /// What arrived.
        got: &'static str,
        /// What was due.
        wanted: &'static str,
    },
    /// Sifting refused the data.
    #[error(transparent)]
    Sift(#[from] SiftError),
    /// Reconciliation refused a message.
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    /// A hash could not be computed from the peer's seed.
    #[error(transparent)]
    Hash(#[from] ToeplitzError),
    /// The estimation refused the block's settings.
    #[error(transparent)]
    Estimate(#[from] SettingsError),
    /// A bit string whose word count does not fit its length.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Error counts for another number of intensity classes.
    #[error("{got} error counts for {classes} intensity classes")]
    ErrorClasses {
        /// Classes of the link.
        classes: usize,
        /// Counts received.
        got: usize,
    },
    /// More test errors reported for a class than it has test bits.
    #[error("{errors} test errors reported for class {class}, which has {bits} test bits")]
    TooManyErrors {
        /// Intensity class.
        class: usize,
        /// Errors reported.
        errors: u64,
        /// Test bits of the class.
        bits: u64,
    },
    /// The preparer's final key length differs from the measurer's.
    #[error("the peer's key length {theirs} disagrees with ours ({ours:?})")]
    LengthDisagrees {
        /// Ours (`None`: no key).
        ours: Option<u64>,
        /// Theirs.
        theirs: u64,
    },
    /// A hash seed of the wrong length.
    #[error("a {what} seed of {got} bits, {needed} expected")]
    SeedLength {
        /// Which seed.
        what: &'static str,
        /// Bits received.
        got: u64,
        /// Bits expected.
        needed: u64,
    },
    /// A slot announced twice, or out of order: every detection may enter sifting once.
    #[error("slot {slot} announced after slot {after}: slots must be announced once, in order")]
    SlotOrder {
        /// The slot.
        slot: u64,
        /// The last slot announced before it.
        after: u64,
    },
    /// A block number already used (a key's number is never given to another key).
    #[error("block {got} opened, but block numbers up to {last} are used")]
    BlockNumber {
        /// Number opened.
        got: BlockId,
        /// Highest number used.
        last: BlockId,
    },
    /// The preparer's word on held blocks names one the measurer did not ask about.
    #[error("block {0} reported committed, but it was not held")]
    NotHeld(BlockId),
}

impl Violation {
    /// `got` arrived where the protocol expects a `wanted` message.
    pub fn unexpected(got: &Message, wanted: &'static str) -> Self {
        Violation::Unexpected {
            got: got.name(),
            wanted,
        }
    }
}

/// A node's data source failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DataError {
    /// The photon source.
    #[error("the source: {0}")]
    Source(#[from] SourceError),
    /// The time tagger.
    #[error("the tagger: {0}")]
    Tagger(#[from] TaggerError),
    /// A tag index announced that this node no longer (or never) held.
    #[error("tag {0} is not held")]
    TagNotHeld(u64),
    /// A tag on a channel that carries no basis and bit.
    #[error("tag {index} is on channel {channel}, which is no detector")]
    NotADetector {
        /// Tag index.
        index: u64,
        /// Its channel.
        channel: u8,
    },
    /// No coincidences between the two nodes' tags.
    #[error("no coincidences between the nodes: {0}")]
    NoCoincidences(#[from] OffsetError),
    /// The two nodes' tags never overlapped in time.
    #[error(
        "the nodes' tags do not overlap in time within {tags} tags: their taggers (or \
         recordings) cover different stretches of time"
    )]
    NoOverlap {
        /// Tags gathered before giving up.
        tags: usize,
    },
    /// The link has no timestamps to share (a prepare-and-measure link asked for them).
    #[error("this link has no timestamps to share")]
    NoTimestamps,
}

/// Why a session step failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The channel failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Violation(#[from] Violation),
    /// A device failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A key or the authentication state could not be made durable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Polarization tracking stopped: later batches could only be held.
    #[error("polarization tracking: {0}")]
    Tracking(#[from] TrackingFailure),
}

impl SessionError {
    /// What to do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SessionError::Channel(e) => e.kind(),
            SessionError::Violation(_) => ErrorKind::Block,
            SessionError::Data(_) | SessionError::Tracking(_) => ErrorKind::Device,
            SessionError::Store(_) => ErrorKind::Stop,
        }
    }
}

impl From<ReconcileError> for SessionError {
    fn from(e: ReconcileError) -> Self {
        SessionError::Violation(e.into())
    }
}

impl From<SiftError> for SessionError {
    fn from(e: SiftError) -> Self {
        SessionError::Violation(e.into())
    }
}

impl From<ToeplitzError> for SessionError {
    fn from(e: ToeplitzError) -> Self {
        SessionError::Violation(e.into())
    }
}
