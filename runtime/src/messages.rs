//! Messages between the two nodes. Everything here is public by design: bases, test-basis bits,
//! parities, hash seeds. Key bits never travel. Seals, aborts and resynchronisation are the
//! channel's own frames (see [`crate::channel`]).

use qkd_postprocess::bits::Bits;
use qkd_postprocess::sift::{Announcement, SiftReply};
use serde::{Deserialize, Serialize};

use crate::reconcile::ReconcileMessage;

/// A block's number: both nodes' name for the block and for the key it yields. Numbers only
/// grow, across restarts too, so a key's number is never given to another key.
pub type BlockId = u64;

/// A public bit string (test bits, hash seeds) on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedBits {
    /// Packed words.
    pub words: Vec<u64>,
    /// Number of bits.
    pub len: u64,
}

impl From<&Bits> for PackedBits {
    fn from(bits: &Bits) -> Self {
        PackedBits {
            words: bits.words().to_vec(),
            len: bits.len() as u64,
        }
    }
}

impl PackedBits {
    /// The bits, if the word count fits the length.
    pub fn to_bits(&self) -> Option<Bits> {
        let len = usize::try_from(self.len).ok()?;
        (self.words.len() == len.div_ceil(64)).then(|| Bits::from_words(self.words.clone(), len))
    }
}

/// One message of the post-processing protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Measurer → preparer, first on every (re)synchronised channel: the blocks whose keys the
    /// measurer holds without knowing whether the preparer kept them, and the last block
    /// number the measurer has used.
    Resume {
        /// Blocks held, awaiting the preparer's word.
        held: Vec<BlockId>,
        /// Highest block number used so far (none before the first block).
        last_block: Option<BlockId>,
    },
    /// Preparer → measurer: which of the held blocks she committed (sealed when any were
    /// asked about), and her own last block number.
    Resumed {
        /// The held blocks whose keys the preparer keeps.
        committed: Vec<BlockId>,
        /// Highest block number the preparer has seen.
        last_block: Option<BlockId>,
    },
    /// Measurer → preparer: where and in which basis detections happened.
    Announce(Announcement),
    /// Measurer → preparer: detections made while Bob's polarization tracking had paused key
    /// generation. Sifted like any other (their reference states still feed the tracker), but
    /// both nodes set their key and test bits aside.
    AnnounceHeld(Announcement),
    /// Preparer → measurer: which announcements to keep, with intensity classes.
    Sift(SiftReply),
    /// Measurer → preparer: start block `block`, disclosing the test-basis bits.
    OpenBlock {
        /// Block number.
        block: BlockId,
        /// The measurer's test-basis bits.
        test_bits: PackedBits,
    },
    /// Preparer → measurer: test-basis errors per intensity class.
    TestErrors(Vec<u64>),
    /// Either way: error correction.
    Reconcile(ReconcileMessage),
    /// Preparer → measurer: verification hash seed and the preparer's tag.
    Verify {
        /// Toeplitz seed.
        seed: PackedBits,
        /// The preparer's hash of her key.
        tag: PackedBits,
    },
    /// Measurer → preparer: whether the tags matched.
    Verified(bool),
    /// Preparer → measurer: privacy amplification seed and output length.
    Amplify {
        /// Toeplitz seed.
        seed: PackedBits,
        /// Final key length in bits.
        length: u64,
    },
    /// Measurer → preparer: the block's key is held (not yet usable).
    Confirmed,
    /// Preparer → measurer: the preparer keeps the block's key; it is usable on both sides.
    Committed,
    /// Measurer → preparer (entangled links): send the timestamps of your next batch.
    RequestTags,
    /// Preparer → measurer: timestamps of the preparer's next batch (its channels stay secret).
    Tags(Vec<i64>),
    /// Measurer → preparer: no more detections; the session ends.
    Finish,
    /// Preparer → measurer, answering `RequestTags`: her tags have ended (a replayed recording
    /// is at its end), so the run is over.
    TagsEnded,
}

impl Message {
    /// A short name for protocol-violation messages.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Resume { .. } => "Resume",
            Message::Resumed { .. } => "Resumed",
            Message::Announce(_) => "Announce",
            Message::AnnounceHeld(_) => "AnnounceHeld",
            Message::Sift(_) => "Sift",
            Message::OpenBlock { .. } => "OpenBlock",
            Message::TestErrors(_) => "TestErrors",
            Message::Reconcile(_) => "Reconcile",
            Message::Verify { .. } => "Verify",
            Message::Verified(_) => "Verified",
            Message::Amplify { .. } => "Amplify",
            Message::Confirmed => "Confirmed",
            Message::Committed => "Committed",
            Message::RequestTags => "RequestTags",
            Message::Tags(_) => "Tags",
            Message::Finish => "Finish",
            Message::TagsEnded => "TagsEnded",
        }
    }
}
