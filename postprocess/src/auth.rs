//! Wegman-Carter authentication of the classical channel, by transcript.
//!
//! Every message a node sends or receives is folded, with its sequence number and length, into a
//! running polynomial hash over `p = 2^127 − 1` evaluated at a secret point `k`
//! (ε-almost-XOR-universal, `ε = L/p` for a transcript of `L` 15-byte blocks). At the end of a
//! block each node seals its sent transcript: tag = hash + a fresh one-time pad (mod p). The peer
//! checks the seal against what it received, and no key leaves the block unless both seals
//! check: a tampered, dropped, replayed or reordered message anywhere in the block makes it fail.
//! Sealing once per block instead of once per message spends 2 × 128 pad bits per block where
//! Cascade's hundreds of round trips would otherwise cost more key than a block yields. The hash
//! key is reused (every tag is encrypted by its own pad); pads never are. Keys come from a
//! pre-shared secret first and from the node's own output afterwards; every bit is counted.
//!
//! In hybrid mode ([`Authenticator::set_signer`]) every seal also carries an ML-DSA signature
//! over the same messages ([`crate::hybrid`]), and a seal checks only when both do.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::hybrid::HybridSigner;

/// Bytes of a tag.
pub const TAG_BYTES: usize = 16;
/// Bytes of secret a tag consumes (one pad).
pub const PAD_BYTES: usize = 16;
/// Bytes of the reusable hash key.
pub const HASH_KEY_BYTES: usize = 16;
/// The Mersenne prime `2^127 − 1`.
const P: u128 = (1 << 127) - 1;
/// Message bytes per polynomial coefficient (120 bits, below `p`).
const BLOCK_BYTES: usize = 15;

/// Authentication failures: each means the message must not be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The seal does not match the transcript: a message was altered, dropped, replayed or
    /// injected since the last check (or the keys differ).
    #[error("the transcript of {seq} messages fails authentication")]
    BadTag {
        /// Messages in the transcript that failed.
        seq: u64,
    },
    /// A message out of order: replayed, reordered or dropped in between.
    #[error(
        "message numbered {got} arrived where {expected} was due (replayed, reordered or lost)"
    )]
    Sequence {
        /// Number expected next.
        expected: u64,
        /// Number received.
        got: u64,
    },
    /// No key left to authenticate with.
    #[error("authentication key exhausted: refill from the key pool or a new pre-shared secret")]
    Exhausted,
    /// A signed seal whose ML-DSA signature does not verify over the received transcript.
    #[error("the ML-DSA signature over the transcript of {messages} messages does not verify")]
    BadSignature {
        /// Messages in the transcript that failed.
        messages: u64,
    },
    /// The peer sealed without a signature where hybrid authentication is on, or signed where it
    /// is off: the two nodes are not configured alike (or someone is downgrading the channel).
    #[error("the peer's seal {0}")]
    SignatureMode(&'static str),
    /// The ML-DSA signer refused to sign.
    #[error("the transcript could not be signed with ML-DSA")]
    Signing,
    /// A public key that does not decode.
    #[error("ML-DSA public key of {got} bytes, {needed} expected")]
    PublicKeyLength {
        /// Bytes expected.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// A secret too short to start from.
    #[error("the pre-shared secret needs at least {needed} bytes, got {got}")]
    SecretTooShort {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
}

#[inline]
fn reduce(x: u128) -> u128 {
    let r = (x & P) + (x >> 127);
    if r >= P { r - P } else { r }
}

/// `a · b mod p` for `a, b < p`, from 64-bit limbs (`2^128 ≡ 2 mod p`).
#[inline]
fn mul_mod(a: u128, b: u128) -> u128 {
    let (a1, a0) = (a >> 64, a & u128::from(u64::MAX));
    let (b1, b0) = (b >> 64, b & u128::from(u64::MAX));
    let low = a0 * b0;
    let mid = a0 * b1 + a1 * b0;
    let high = a1 * b1;
    // a·b = high·2^128 + mid·2^64 + low ≡ 2·high + 2·(mid >> 64) + (mid mod 2^64)·2^64 + low.
    let mid_high = mid >> 64;
    let mid_low = (mid & u128::from(u64::MAX)) << 64;
    let mut acc = reduce(low);
    acc = reduce(acc + reduce(mid_low));
    acc = reduce(acc + 2 * high);
    reduce(acc + 2 * mid_high)
}

fn field_element(bytes: [u8; 16]) -> u128 {
    u128::from_le_bytes(bytes) & P
}

/// Secret material for one direction: the hash key and the pads still unused.
struct DirectionKeys {
    hash_key: u128,
    /// Pads; bytes before `next` are spent (and already wiped).
    pads: Vec<u8>,
    next: usize,
    spent_bits: u64,
}

impl Drop for DirectionKeys {
    fn drop(&mut self) {
        self.hash_key.zeroize();
        self.pads.zeroize();
    }
}

impl DirectionKeys {
    fn new(hash_key: u128) -> Self {
        DirectionKeys {
            hash_key,
            pads: Vec::new(),
            next: 0,
            spent_bits: 8 * HASH_KEY_BYTES as u64,
        }
    }

    fn available(&self) -> usize {
        self.pads.len() - self.next
    }

    fn add(&mut self, pad: &[u8]) {
        if self.next > self.pads.len() / 2 {
            self.pads.drain(..self.next);
            self.next = 0;
        }
        self.pads.extend_from_slice(pad);
    }

    fn take_pad(&mut self) -> Result<u128, AuthError> {
        if self.available() < PAD_BYTES {
            return Err(AuthError::Exhausted);
        }
        let used = &mut self.pads[self.next..self.next + PAD_BYTES];
        let mut pad = [0u8; PAD_BYTES];
        pad.copy_from_slice(used);
        used.zeroize();
        self.next += PAD_BYTES;
        self.spent_bits += 8 * PAD_BYTES as u64;
        let value = field_element(pad);
        pad.zeroize();
        Ok(value)
    }
}

/// Deals `secret` out as pads, alternating between the directions as both nodes do; a partial
/// pad at the end is left unused.
fn deal(secret: &[u8], forward: &mut DirectionKeys, backward: &mut DirectionKeys) {
    for (i, pad) in secret.chunks_exact(PAD_BYTES).enumerate() {
        if i % 2 == 0 {
            forward.add(pad);
        } else {
            backward.add(pad);
        }
    }
}

/// Which side of the link a node is (decides which half of the shared secret sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node that opened the channel.
    Initiator,
    /// The node that accepted it.
    Responder,
}

impl Role {
    /// The other side's role.
    #[must_use]
    pub fn peer(self) -> Role {
        match self {
            Role::Initiator => Role::Responder,
            Role::Responder => Role::Initiator,
        }
    }
}

/// What closes a segment of a node's transcript: the Wegman-Carter tag, and in hybrid mode an
/// ML-DSA signature over the same messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// Wegman-Carter tag.
    pub tag: [u8; TAG_BYTES],
    /// ML-DSA-65 signature (hybrid mode only).
    pub signature: Option<Vec<u8>>,
}

/// A running hash of one direction's messages since the last seal.
#[derive(Debug, Clone, Copy, Default)]
struct Transcript {
    acc: u128,
    messages: u64,
}

impl Transcript {
    fn reset(&mut self) {
        self.acc.zeroize();
        self.messages = 0;
    }

    fn absorb(&mut self, key: u128, seq: u64, message: &[u8]) {
        let mut step = |chunk: &[u8]| {
            let mut bytes = [0u8; 16];
            bytes[..chunk.len()].copy_from_slice(chunk);
            // A marker bit above the data keeps trailing zero bytes from colliding.
            let coefficient = u128::from_le_bytes(bytes) | (1u128 << (8 * chunk.len()));
            self.acc = mul_mod(reduce(self.acc + coefficient), key);
        };
        step(&seq.to_le_bytes());
        step(&(message.len() as u64).to_le_bytes());
        for chunk in message.chunks(BLOCK_BYTES) {
            step(chunk);
        }
        self.messages += 1;
    }
}

/// Authenticates one node's side of the channel.
pub struct Authenticator {
    send: DirectionKeys,
    receive: DirectionKeys,
    sent: Transcript,
    received: Transcript,
    next_send: u64,
    next_receive: u64,
    signer: Option<HybridSigner>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Authenticator(sent {}, received {}, {} + {} pad bytes left, {})",
            self.next_send,
            self.next_receive,
            self.send.available(),
            self.receive.available(),
            if self.signer.is_some() {
                "hybrid"
            } else {
                "Wegman-Carter only"
            }
        )
    }
}

impl Authenticator {
    /// Starts from a pre-shared secret: two hash keys, then pads alternating between the
    /// directions. Both nodes call this with the same secret and opposite roles.
    pub fn new(secret: &[u8], role: Role) -> Result<Self, AuthError> {
        let needed = 2 * HASH_KEY_BYTES + 2 * PAD_BYTES;
        if secret.len() < needed {
            return Err(AuthError::SecretTooShort {
                needed,
                got: secret.len(),
            });
        }
        let key = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&secret[range]);
            field_element(bytes)
        };
        let mut forward = DirectionKeys::new(key(0..16));
        let mut backward = DirectionKeys::new(key(16..32));
        deal(&secret[32..], &mut forward, &mut backward);
        let (send, receive) = match role {
            Role::Initiator => (forward, backward),
            Role::Responder => (backward, forward),
        };
        Ok(Authenticator {
            send,
            receive,
            sent: Transcript::default(),
            received: Transcript::default(),
            next_send: 0,
            next_receive: 0,
            signer: None,
        })
    }

    /// Hybrid mode from now on: every seal also carries an ML-DSA signature over the same
    /// messages, and every seal checked must carry a valid one.
    pub fn set_signer(&mut self, signer: HybridSigner) {
        self.signer = Some(signer);
    }

    /// Adds fresh secret (from the node's key pool), split between the directions exactly as
    /// the other node splits it. Returns the bits added.
    pub fn refill(&mut self, secret: &[u8], role: Role) -> u64 {
        let (forward, backward) = match role {
            Role::Initiator => (&mut self.send, &mut self.receive),
            Role::Responder => (&mut self.receive, &mut self.send),
        };
        deal(secret, forward, backward);
        8 * (secret.len() / PAD_BYTES * PAD_BYTES) as u64
    }

    /// Seals that can still be made before a refill.
    pub fn seals_left(&self) -> usize {
        self.send.available() / PAD_BYTES
    }

    /// Checks that can still be made before a refill.
    pub fn checks_left(&self) -> usize {
        self.receive.available() / PAD_BYTES
    }

    /// Secret bits consumed so far in both directions (hash keys and pads).
    pub fn spent_bits(&self) -> u64 {
        self.send.spent_bits + self.receive.spent_bits
    }

    /// Records an outgoing message; returns the sequence number to send with it.
    pub fn record_sent(&mut self, message: &[u8]) -> u64 {
        let seq = self.next_send;
        self.next_send += 1;
        self.sent.absorb(self.send.hash_key, seq, message);
        if let Some(signer) = &mut self.signer {
            signer.record_sent(seq, message);
        }
        seq
    }

    /// The sequence number the next incoming message must carry.
    pub fn expected_receive(&self) -> u64 {
        self.next_receive
    }

    /// Records an incoming message. A number out of order fails at once; a forged content
    /// fails at the next [`Self::check`].
    pub fn record_received(&mut self, seq: u64, message: &[u8]) -> Result<(), AuthError> {
        if seq != self.next_receive {
            return Err(AuthError::Sequence {
                expected: self.next_receive,
                got: seq,
            });
        }
        self.next_receive += 1;
        self.received.absorb(self.receive.hash_key, seq, message);
        if let Some(signer) = &mut self.signer {
            signer.record_received(seq, message);
        }
        Ok(())
    }

    /// Seals everything sent since the last seal: what to send to the peer.
    pub fn seal(&mut self) -> Result<Seal, AuthError> {
        let pad = self.send.take_pad()?;
        let tag = reduce(self.sent.acc + pad).to_le_bytes();
        self.sent.reset();
        let signature = self.signer.as_mut().map(HybridSigner::sign).transpose()?;
        Ok(Seal { tag, signature })
    }

    /// Forgets both transcripts without spending key: for a block both sides abandoned before
    /// any key could come of it, so that the next seal covers only what follows.
    pub fn discard_transcripts(&mut self) {
        self.sent.reset();
        self.received.reset();
        if let Some(signer) = &mut self.signer {
            signer.discard_transcripts();
        }
    }

    /// Checks the peer's seal over everything received since the last check: the tag, and in
    /// hybrid mode the signature. A seal of the other mode is refused, so that nobody can
    /// downgrade a hybrid channel by stripping signatures. Both checks run (and the tag spends its
    /// pad) before either verdict counts.
    pub fn check(&mut self, seal: &Seal) -> Result<(), AuthError> {
        let pad = self.receive.take_pad()?;
        let expected = reduce(self.received.acc + pad).to_le_bytes();
        let messages = self.received.messages;
        self.received.reset();
        let signed = match (&mut self.signer, &seal.signature) {
            (Some(signer), Some(signature)) => signer.verify(signature),
            (None, None) => Ok(()),
            (Some(_), None) => Err(AuthError::SignatureMode(
                "carries no signature in hybrid mode",
            )),
            (None, Some(_)) => Err(AuthError::SignatureMode("is signed but hybrid mode is off")),
        };
        if expected != seal.tag {
            return Err(AuthError::BadTag { seq: messages });
        }
        signed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a · b mod p` by doubling and adding: slow, obviously right.
    fn mul_reference(a: u128, mut b: u128) -> u128 {
        let mut acc = 0;
        let mut x = a;
        while b > 0 {
            if b & 1 == 1 {
                acc = reduce(acc + x);
            }
            x = reduce(x + x);
            b >>= 1;
        }
        acc
    }

    #[test]
    fn field_multiplication_matches_the_reference() {
        let mut s = 0x1234_5678_9ABC_DEF1u128;
        for _ in 0..2000 {
            s = s
                .wrapping_mul(0x2545_F491_4F6C_DD1D_4F6C_DD1D_2545_F491)
                .wrapping_add(7);
            let a = s & P;
            let b = s.rotate_right(3) & P;
            assert_eq!(mul_mod(a, b), mul_reference(a, b));
        }
        assert_eq!(mul_mod(P - 1, P - 1), 1);
        assert_eq!(mul_mod(2, 1 << 126), 1);
    }

    fn secret(bytes: usize) -> Vec<u8> {
        (0..bytes).map(|i| (i * 37 % 251) as u8).collect()
    }

    fn pair() -> (Authenticator, Authenticator) {
        let s = secret(32 + 16 * 8);
        (
            Authenticator::new(&s, Role::Initiator).unwrap(),
            Authenticator::new(&s, Role::Responder).unwrap(),
        )
    }

    /// Sends `messages` from `a` to `b` through `channel` (which may alter them), then seals.
    fn exchange(
        messages: &[&[u8]],
        channel: impl Fn(usize, u64, &[u8]) -> Vec<(u64, Vec<u8>)>,
    ) -> Result<(), AuthError> {
        let (mut a, mut b) = pair();
        for (i, m) in messages.iter().enumerate() {
            let seq = a.record_sent(m);
            for (seq, delivered) in channel(i, seq, m) {
                b.record_received(seq, &delivered)?;
            }
        }
        let tag = a.seal()?;
        b.check(&tag)
    }

    #[test]
    fn an_honest_transcript_checks_and_every_alteration_fails() {
        let messages: [&[u8]; 3] = [b"announce", b"parities 0110", b"amplify seed"];
        let honest = |_: usize, seq: u64, m: &[u8]| vec![(seq, m.to_vec())];
        assert_eq!(exchange(&messages, honest), Ok(()));
        let tampered = |i: usize, seq: u64, m: &[u8]| {
            let mut m = m.to_vec();
            if i == 1 {
                m[9] ^= 1;
            }
            vec![(seq, m)]
        };
        assert!(matches!(
            exchange(&messages, tampered),
            Err(AuthError::BadTag { .. })
        ));
        let replayed = |i: usize, seq: u64, m: &[u8]| {
            if i == 1 {
                vec![(0, messages[0].to_vec())]
            } else {
                vec![(seq, m.to_vec())]
            }
        };
        assert!(exchange(&messages, replayed).is_err());
        let dropped = |i: usize, seq: u64, m: &[u8]| {
            if i == 1 {
                vec![]
            } else {
                vec![(seq, m.to_vec())]
            }
        };
        assert!(matches!(
            exchange(&messages, dropped),
            Err(AuthError::Sequence { .. })
        ));
        // Same content, numbers rewritten to hide the drop: the transcript still differs.
        let renumbered = |i: usize, _: u64, m: &[u8]| match i {
            1 => vec![],
            2 => vec![(1, m.to_vec())],
            _ => vec![(0, m.to_vec())],
        };
        assert!(matches!(
            exchange(&messages, renumbered),
            Err(AuthError::BadTag { .. })
        ));
    }

    #[test]
    fn trailing_zeros_and_splits_do_not_collide() {
        let (mut a, mut b) = pair();
        a.record_sent(&[1, 2, 3]);
        b.record_received(0, &[1, 2, 3, 0]).unwrap();
        assert!(b.check(&a.seal().unwrap()).is_err());
        let (mut a, mut b) = pair();
        a.record_sent(b"abcdef");
        b.record_received(0, b"abc").unwrap();
        b.record_received(1, b"def").unwrap();
        assert!(b.check(&a.seal().unwrap()).is_err());
    }

    #[test]
    fn both_directions_seal_independently_and_reset() {
        let (mut a, mut b) = pair();
        for round in 0..3 {
            let seq = b.record_sent(b"reply");
            a.record_received(seq, b"reply").unwrap();
            a.check(&b.seal().unwrap()).unwrap();
            let seq = a.record_sent(b"question");
            b.record_received(seq, b"question").unwrap();
            b.check(&a.seal().unwrap())
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
    }

    #[test]
    fn keys_run_out_and_refill_symmetrically() {
        let s = secret(32 + 16 * 2);
        let mut a = Authenticator::new(&s, Role::Initiator).unwrap();
        let mut b = Authenticator::new(&s, Role::Responder).unwrap();
        a.record_sent(b"x");
        b.record_received(0, b"x").unwrap();
        b.check(&a.seal().unwrap()).unwrap();
        assert_eq!(a.seal(), Err(AuthError::Exhausted));
        let fresh = secret(64);
        assert_eq!(a.refill(&fresh, Role::Initiator), 512);
        b.refill(&fresh, Role::Responder);
        assert_eq!(a.seals_left(), 2);
        assert_eq!(b.checks_left(), 2);
        b.check(&a.seal().unwrap()).unwrap();
        assert!(a.spent_bits() >= 2 * 128 + 2 * 128);
        assert!(!format!("{a:?}").contains("hash_key"));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            Authenticator::new(&[0; 40], Role::Initiator),
            Err(AuthError::SecretTooShort {
                needed: 64,
                got: 40
            })
        ));
    }
}
