//! Messages between the two nodes. Everything here is public by design: bases, test-basis bits,
//! parities, hash seeds and tags. Key bits never travel.

use qkd_postprocess::auth::Seal;
use qkd_postprocess::bits::Bits;
use qkd_postprocess::cascade::{ParityAnswer, ParityQuery};
use qkd_postprocess::sift::{Announcement, SiftReply};
use serde::{Deserialize, Serialize};

/// A public bit string (test bits, hash seeds, tags) on the wire.
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
        block: u64,
        /// The measurer's test-basis bits.
        test_bits: PackedBits,
    },
    /// Preparer → measurer: test-basis errors per intensity class.
    TestErrors(Vec<u64>),
    /// Measurer → preparer: Cascade questions.
    Parities(ParityQuery),
    /// Preparer → measurer: Cascade answers.
    Answer(ParityAnswer),
    /// Measurer → preparer: Cascade is done.
    Corrected,
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
    /// Measurer → preparer: the block's key is in place.
    Confirmed,
    /// Either way: the seal over everything sent since the last seal.
    Seal(Seal),
    /// Measurer → preparer (entangled links): send the timestamps of your next batch.
    RequestTags,
    /// Preparer → measurer: timestamps of the preparer's next batch (its channels stay secret).
    Tags(Vec<i64>),
    /// Measurer → preparer: no more detections; the session ends.
    Finish,
    /// Either way: the block is abandoned, with the reason.
    Abort(String),
}

impl Message {
    /// A short name for protocol-violation messages.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Announce(_) => "Announce",
            Message::AnnounceHeld(_) => "AnnounceHeld",
            Message::Sift(_) => "Sift",
            Message::OpenBlock { .. } => "OpenBlock",
            Message::TestErrors(_) => "TestErrors",
            Message::Parities(_) => "Parities",
            Message::Answer(_) => "Answer",
            Message::Corrected => "Corrected",
            Message::Verify { .. } => "Verify",
            Message::Verified(_) => "Verified",
            Message::Amplify { .. } => "Amplify",
            Message::Confirmed => "Confirmed",
            Message::Seal(_) => "Seal",
            Message::RequestTags => "RequestTags",
            Message::Tags(_) => "Tags",
            Message::Finish => "Finish",
            Message::Abort(_) => "Abort",
        }
    }
}
