//! Wegman-Carter authentication of the classical channel, by transcript.
//!
//! Every frame a node sends or receives is folded, with its position in the sender's stream and
//! its length, into a running polynomial hash over `p = 2^127 − 1` evaluated at a secret point
//! `k` (ε-almost-XOR-universal, `ε = L/p` for a transcript of `L` 15-byte blocks). At the end of
//! a block each node seals its sent transcript: tag = hash + a fresh one-time pad (mod p). The
//! peer checks the seal against what it received, and no key leaves the block unless both seals
//! check: a tampered, dropped, replayed or reordered message anywhere in the block makes it fail.
//! Sealing once per block instead of once per message spends a few 128-bit pads per block where
//! Cascade's hundreds of round trips would otherwise cost more key than a block yields. The hash
//! key is reused (every tag is encrypted by its own pad); pads never are. Keys come from a
//! pre-shared secret first and from the node's own output afterwards; every bit is counted.
//!
//! Pads are numbered per direction, in the order both nodes deal them, and a seal names the pad
//! it used: a seal lost on the way costs the receiver that pad (it skips it), not the channel's
//! synchronisation, and a seal naming a pad already used is refused without spending anything.
//! The pad state can be exported and restored, so a node that journals it before every use
//! never uses a pad twice across restarts.
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
/// Pads a received seal may skip ahead: seals lost in transit (each costs its pad), not more, so
/// a forged seal cannot make the receiver throw away more than this many pads.
pub const MAX_PAD_SKIP: u64 = 8;
/// The Mersenne prime `2^127 − 1`.
const P: u128 = (1 << 127) - 1;
/// Message bytes per polynomial coefficient (120 bits, below `p`).
const BLOCK_BYTES: usize = 15;

/// What a node must do about an authentication failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthErrorKind {
    /// The messages cannot be trusted: the block they belong to yields no key.
    Untrusted,
    /// No key left to authenticate with: the node needs key from its pool or a new secret.
    Exhausted,
    /// The two nodes are not set up alike (keys, modes): nothing will check until fixed.
    Configuration,
}

/// Authentication failures: each means the message must not be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The seal does not match the transcript: a message was altered, dropped, replayed or
    /// injected since the last check (or the keys differ).
    #[error("the transcript of {messages} messages fails authentication")]
    BadTag {
        /// Messages in the transcript that failed.
        messages: u64,
    },
    /// A seal naming a pad already used or skipped: a replayed seal.
    #[error("the seal names pad {pad}, but pads before {next} are spent (a replayed seal)")]
    PadSpent {
        /// Pad the seal names.
        pad: u64,
        /// First pad still unused.
        next: u64,
    },
    /// A seal naming a pad too far ahead of the next unused one, or not dealt yet.
    #[error("the seal names pad {pad}, beyond the pads {next}..{limit} it may use")]
    PadAhead {
        /// Pad the seal names.
        pad: u64,
        /// First pad still unused.
        next: u64,
        /// First pad it may not use.
        limit: u64,
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

impl AuthError {
    /// What the node must do about it.
    pub fn kind(&self) -> AuthErrorKind {
        match self {
            // A seal of the wrong mode may be an attacker stripping or adding signatures.
            AuthError::BadTag { .. }
            | AuthError::PadSpent { .. }
            | AuthError::PadAhead { .. }
            | AuthError::BadSignature { .. }
            | AuthError::SignatureMode(_) => AuthErrorKind::Untrusted,
            AuthError::Exhausted => AuthErrorKind::Exhausted,
            AuthError::Signing
            | AuthError::PublicKeyLength { .. }
            | AuthError::SecretTooShort { .. } => AuthErrorKind::Configuration,
        }
    }
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

/// Secret material for one direction: the hash key and the pads still unused, numbered.
#[derive(Clone, Serialize, Deserialize)]
struct DirectionKeys {
    hash_key: [u8; HASH_KEY_BYTES],
    /// Unused pads, back to back; the first is pad number `first`.
    pads: Vec<u8>,
    first: u64,
    spent_bits: u64,
}

impl Drop for DirectionKeys {
    fn drop(&mut self) {
        self.hash_key.zeroize();
        self.pads.zeroize();
    }
}

impl DirectionKeys {
    fn new(hash_key: [u8; HASH_KEY_BYTES]) -> Self {
        DirectionKeys {
            hash_key,
            pads: Vec::new(),
            first: 0,
            spent_bits: 8 * HASH_KEY_BYTES as u64,
        }
    }

    fn hash_key(&self) -> u128 {
        field_element(self.hash_key)
    }

    fn available(&self) -> u64 {
        (self.pads.len() / PAD_BYTES) as u64
    }

    fn add(&mut self, pad: &[u8]) {
        self.pads.extend_from_slice(pad);
    }

    /// Wipes and forgets the pads before number `pad`, then uses `pad`.
    fn take(&mut self, pad: u64) -> u128 {
        let skipped = (pad - self.first) as usize;
        let used = (skipped + 1) * PAD_BYTES;
        let mut bytes = [0u8; PAD_BYTES];
        bytes.copy_from_slice(&self.pads[used - PAD_BYTES..used]);
        self.pads[..used].zeroize();
        self.pads.drain(..used);
        self.first = pad + 1;
        self.spent_bits += 8 * used as u64;
        let value = field_element(bytes);
        bytes.zeroize();
        value
    }

    /// The next pad, for a seal: its number and value.
    fn take_next(&mut self) -> Result<(u64, u128), AuthError> {
        if self.available() == 0 {
            return Err(AuthError::Exhausted);
        }
        let pad = self.first;
        Ok((pad, self.take(pad)))
    }

    /// Pad number `pad`, for checking a seal that names it.
    fn take_named(&mut self, pad: u64) -> Result<u128, AuthError> {
        let next = self.first;
        if pad < next {
            return Err(AuthError::PadSpent { pad, next });
        }
        if self.available() == 0 {
            return Err(AuthError::Exhausted);
        }
        let limit = next + self.available().min(MAX_PAD_SKIP + 1);
        if pad >= limit {
            return Err(AuthError::PadAhead { pad, next, limit });
        }
        Ok(self.take(pad))
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// Where a frame sits in its sender's stream: the channel's epoch (a new one after every
/// resynchronisation) and the frame's number in it. Both are hashed with the frame, so a frame
/// moved to another place no longer checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Position {
    /// Epoch of the channel.
    pub epoch: u64,
    /// Frame number within the epoch.
    pub seq: u64,
}

/// What closes a segment of a node's transcript: the Wegman-Carter tag, the number of the pad
/// that encrypts it, and in hybrid mode an ML-DSA signature over the same messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// Number of the pad used (public: pads are numbered in the order both nodes deal them).
    pub pad: u64,
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

    fn absorb(&mut self, key: u128, at: Position, message: &[u8]) {
        let mut step = |chunk: &[u8]| {
            let mut bytes = [0u8; 16];
            bytes[..chunk.len()].copy_from_slice(chunk);
            // A marker bit above the data keeps trailing zero bytes from colliding.
            let coefficient = u128::from_le_bytes(bytes) | (1u128 << (8 * chunk.len()));
            self.acc = mul_mod(reduce(self.acc + coefficient), key);
        };
        step(&at.epoch.to_le_bytes());
        step(&at.seq.to_le_bytes());
        step(&(message.len() as u64).to_le_bytes());
        for chunk in message.chunks(BLOCK_BYTES) {
            step(chunk);
        }
        self.messages += 1;
    }
}

/// The secret state of an [`Authenticator`]: hash keys and unused pads of both directions. A
/// node journals it before every use of a pad, and starts again from it after a restart.
#[derive(Clone, Serialize, Deserialize)]
pub struct AuthState {
    send: DirectionKeys,
    receive: DirectionKeys,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AuthState(next seal pad {}, {} left; next check pad {}, {} left)",
            self.send.first,
            self.send.available(),
            self.receive.first,
            self.receive.available()
        )
    }
}

impl AuthState {
    /// From a pre-shared secret: two hash keys, then pads alternating between the directions.
    /// Both nodes call this with the same secret and opposite roles.
    pub fn from_secret(secret: &[u8], role: Role) -> Result<Self, AuthError> {
        let needed = 2 * HASH_KEY_BYTES + 2 * PAD_BYTES;
        if secret.len() < needed {
            return Err(AuthError::SecretTooShort {
                needed,
                got: secret.len(),
            });
        }
        let key = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; HASH_KEY_BYTES];
            bytes.copy_from_slice(&secret[range]);
            bytes
        };
        let mut forward = DirectionKeys::new(key(0..16));
        let mut backward = DirectionKeys::new(key(16..32));
        deal(&secret[32..], &mut forward, &mut backward);
        let (send, receive) = match role {
            Role::Initiator => (forward, backward),
            Role::Responder => (backward, forward),
        };
        Ok(AuthState { send, receive })
    }

    /// Number of the next pad a seal will use.
    pub fn next_seal_pad(&self) -> u64 {
        self.send.first
    }

    /// Number of the first pad a received seal may use.
    pub fn next_check_pad(&self) -> u64 {
        self.receive.first
    }

    /// Seals that can still be made before a refill.
    pub fn seals_left(&self) -> u64 {
        self.send.available()
    }

    /// Checks that can still be made before a refill.
    pub fn checks_left(&self) -> u64 {
        self.receive.available()
    }

    /// Secret bits consumed so far in both directions (hash keys, pads used or skipped).
    pub fn spent_bits(&self) -> u64 {
        self.send.spent_bits + self.receive.spent_bits
    }

    /// Secret bits left in both directions' pads.
    pub fn pad_bits_left(&self) -> u64 {
        8 * PAD_BYTES as u64 * (self.send.available() + self.receive.available())
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
}

/// Authenticates one node's side of the channel.
pub struct Authenticator {
    state: AuthState,
    sent: Transcript,
    received: Transcript,
    signer: Option<HybridSigner>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Authenticator({:?}, {})",
            self.state,
            if self.signer.is_some() {
                "hybrid"
            } else {
                "Wegman-Carter only"
            }
        )
    }
}

impl Authenticator {
    /// Starts from a pre-shared secret (see [`AuthState::from_secret`]).
    pub fn new(secret: &[u8], role: Role) -> Result<Self, AuthError> {
        Ok(Self::from_state(AuthState::from_secret(secret, role)?))
    }

    /// Starts from a journalled state.
    pub fn from_state(state: AuthState) -> Self {
        Authenticator {
            state,
            sent: Transcript::default(),
            received: Transcript::default(),
            signer: None,
        }
    }

    /// The secret state now, to journal.
    pub fn state(&self) -> &AuthState {
        &self.state
    }

    /// Hybrid mode from now on: every seal also carries an ML-DSA signature over the same
    /// messages, and every seal checked must carry a valid one.
    pub fn set_signer(&mut self, signer: HybridSigner) {
        self.signer = Some(signer);
    }

    /// Adds fresh secret (see [`AuthState::refill`]).
    pub fn refill(&mut self, secret: &[u8], role: Role) -> u64 {
        self.state.refill(secret, role)
    }

    /// Records an outgoing frame at its position in this node's stream.
    pub fn record_sent(&mut self, at: Position, message: &[u8]) {
        self.sent.absorb(self.state.send.hash_key(), at, message);
        if let Some(signer) = &mut self.signer {
            signer.record_sent(at, message);
        }
    }

    /// Records an incoming frame at the position its sender gave it (the channel has checked
    /// that the position follows the last one; a forged content fails at the next check).
    pub fn record_received(&mut self, at: Position, message: &[u8]) {
        self.received
            .absorb(self.state.receive.hash_key(), at, message);
        if let Some(signer) = &mut self.signer {
            signer.record_received(at, message);
        }
    }

    /// Seals everything sent since the last seal: what to send to the peer. The pad is spent
    /// here; journal [`Self::state`] before the seal leaves the node.
    pub fn seal(&mut self) -> Result<Seal, AuthError> {
        let (pad_number, pad) = self.state.send.take_next()?;
        let tag = reduce(self.sent.acc + pad).to_le_bytes();
        self.sent.reset();
        let signature = self
            .signer
            .as_mut()
            .map(|signer| signer.sign(pad_number))
            .transpose()?;
        Ok(Seal {
            pad: pad_number,
            tag,
            signature,
        })
    }

    /// Forgets both transcripts without spending key: for a block both sides abandoned at the
    /// same point, or a channel both sides resynchronised, so that the next seal covers only
    /// what follows.
    pub fn discard_transcripts(&mut self) {
        self.sent.reset();
        self.received.reset();
        if let Some(signer) = &mut self.signer {
            signer.discard_transcripts();
        }
    }

    /// Checks the peer's seal over everything received since the last check: the tag, and in
    /// hybrid mode the signature. A seal of the other mode is refused, so that nobody can
    /// downgrade a hybrid channel by stripping signatures. The pad the seal names is spent (with
    /// any it skips) and both checks run before either verdict counts; a seal naming a spent pad
    /// is refused without spending one.
    pub fn check(&mut self, seal: &Seal) -> Result<(), AuthError> {
        let pad = self.state.receive.take_named(seal.pad)?;
        let expected = reduce(self.received.acc + pad).to_le_bytes();
        let messages = self.received.messages;
        self.received.reset();
        let signed = match (&mut self.signer, &seal.signature) {
            (Some(signer), Some(signature)) => signer.verify(seal.pad, signature),
            (None, None) => Ok(()),
            (Some(signer), None) => {
                signer.discard_received();
                Err(AuthError::SignatureMode(
                    "carries no signature in hybrid mode",
                ))
            }
            (None, Some(_)) => Err(AuthError::SignatureMode("is signed but hybrid mode is off")),
        };
        if expected != seal.tag {
            return Err(AuthError::BadTag { messages });
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

    fn at(seq: u64) -> Position {
        Position { epoch: 0, seq }
    }

    /// Sends `messages` from `a` to `b` through `channel` (which may alter them), then seals.
    fn exchange(
        messages: &[&[u8]],
        channel: impl Fn(usize, u64, &[u8]) -> Vec<(u64, Vec<u8>)>,
    ) -> Result<(), AuthError> {
        let (mut a, mut b) = pair();
        for (i, m) in messages.iter().enumerate() {
            let seq = i as u64;
            a.record_sent(at(seq), m);
            for (seq, delivered) in channel(i, seq, m) {
                b.record_received(at(seq), &delivered);
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
        let bad_tag = Err(AuthError::BadTag { messages: 3 });
        assert_eq!(exchange(&messages, tampered), bad_tag);
        let replayed = |i: usize, seq: u64, m: &[u8]| {
            if i == 1 {
                vec![(0, messages[0].to_vec())]
            } else {
                vec![(seq, m.to_vec())]
            }
        };
        assert_eq!(exchange(&messages, replayed), bad_tag);
        let dropped = |i: usize, seq: u64, m: &[u8]| {
            if i == 1 {
                vec![]
            } else {
                vec![(seq, m.to_vec())]
            }
        };
        assert_eq!(
            exchange(&messages, dropped),
            Err(AuthError::BadTag { messages: 2 })
        );
        // Same content, numbers rewritten to hide the drop: the transcript still differs.
        let renumbered = |i: usize, _: u64, m: &[u8]| match i {
            1 => vec![],
            2 => vec![(1, m.to_vec())],
            _ => vec![(0, m.to_vec())],
        };
        assert_eq!(
            exchange(&messages, renumbered),
            Err(AuthError::BadTag { messages: 2 })
        );
        let reordered = |i: usize, seq: u64, _: &[u8]| match i {
            1 => vec![(seq, messages[2].to_vec())],
            2 => vec![(seq, messages[1].to_vec())],
            _ => vec![(seq, messages[0].to_vec())],
        };
        assert_eq!(exchange(&messages, reordered), bad_tag);
    }

    #[test]
    fn the_tag_is_the_polynomial_hash_plus_the_pad_evaluated_independently() {
        // tag = Σ_i c_i k^(L+1−i) + pad mod p over the coefficients c_1 … c_L of the frames
        // (position, length, 15-byte chunks each with a marker bit above its data), evaluated
        // here as a sum of powers computed by doubling and adding, not by Horner's rule with
        // the limb multiplication the authenticator uses.
        let s = secret(32 + 16 * 8);
        let mut a = Authenticator::new(&s, Role::Initiator).unwrap();
        let frames: [(Position, &[u8]); 2] = [
            (
                Position { epoch: 3, seq: 0 },
                b"OpenBlock 17, test bits 0110 1001",
            ),
            (Position { epoch: 3, seq: 1 }, b""),
        ];
        for (position, message) in frames {
            a.record_sent(position, message);
        }
        let seal = a.seal().unwrap();
        let coefficient = |chunk: &[u8]| {
            let mut bytes = [0u8; 16];
            bytes[..chunk.len()].copy_from_slice(chunk);
            u128::from_le_bytes(bytes) + (1u128 << (8 * chunk.len()))
        };
        let mut coefficients = Vec::new();
        for (position, message) in frames {
            coefficients.push(coefficient(&position.epoch.to_le_bytes()));
            coefficients.push(coefficient(&position.seq.to_le_bytes()));
            coefficients.push(coefficient(&(message.len() as u64).to_le_bytes()));
            coefficients.extend(message.chunks(15).map(coefficient));
        }
        let le = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&s[range]);
            u128::from_le_bytes(bytes) & P
        };
        // The initiator sends with the first hash key; its first pad is the first after both keys.
        let (k, pad) = (le(0..16), le(32..48));
        let power = |e: usize| (0..e).fold(1u128, |acc, _| mul_reference(acc, k));
        let l = coefficients.len();
        let hash = coefficients.iter().enumerate().fold(0u128, |acc, (i, &c)| {
            reduce(acc + mul_reference(c % P, power(l - i)))
        });
        assert_eq!(seal.pad, 0);
        assert_eq!(u128::from_le_bytes(seal.tag), reduce(hash + pad));
        // The same tag as a known answer, from an arbitrary-precision evaluation outside Rust
        // (Python integers, the formula above): it pins the byte layout, not just the algebra.
        assert_eq!(
            u128::from_le_bytes(seal.tag),
            0x3464_2e4a_bb93_ddbf_33b3_3c16_de09_8988,
            "known answer"
        );
    }

    #[test]
    fn a_seal_reflected_back_to_its_sender_fails() {
        // Each direction has its own hash key and pads: a node's own seal is not the peer's.
        let (mut a, _) = pair();
        a.record_sent(at(0), b"same");
        a.record_received(at(0), b"same");
        let own = a.seal().unwrap();
        assert!(matches!(a.check(&own), Err(AuthError::BadTag { .. })));
    }

    #[test]
    fn trailing_zeros_and_splits_do_not_collide() {
        let (mut a, mut b) = pair();
        a.record_sent(at(0), &[1, 2, 3]);
        b.record_received(at(0), &[1, 2, 3, 0]);
        assert!(b.check(&a.seal().unwrap()).is_err());
        let (mut a, mut b) = pair();
        a.record_sent(at(0), b"abcdef");
        b.record_received(at(0), b"abc");
        b.record_received(at(1), b"def");
        assert!(b.check(&a.seal().unwrap()).is_err());
    }

    #[test]
    fn both_directions_seal_independently_and_reset() {
        let (mut a, mut b) = pair();
        for round in 0..3 {
            b.record_sent(at(round), b"reply");
            a.record_received(at(round), b"reply");
            a.check(&b.seal().unwrap()).unwrap();
            a.record_sent(at(round), b"question");
            b.record_received(at(round), b"question");
            b.check(&a.seal().unwrap())
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
    }

    #[test]
    fn a_lost_seal_costs_its_pad_and_a_replayed_one_is_refused_for_free() {
        let (mut a, mut b) = pair();
        let lost = a.seal().unwrap();
        assert_eq!(lost.pad, 0);
        let next = a.seal().unwrap();
        // The receiver skips the lost seal's pad and checks the next one.
        assert_eq!(b.check(&next), Ok(()));
        assert_eq!(b.state().next_check_pad(), 2);
        let left = b.state().checks_left();
        // Both seals again: their pads are spent, nothing more is.
        for replayed in [&lost, &next] {
            assert_eq!(
                b.check(replayed),
                Err(AuthError::PadSpent {
                    pad: replayed.pad,
                    next: 2
                })
            );
        }
        assert_eq!(b.state().checks_left(), left);
        // A forged seal far ahead is refused without throwing the pads in between away.
        let far = Seal {
            pad: 2 + MAX_PAD_SKIP + 1,
            ..next.clone()
        };
        assert!(matches!(b.check(&far), Err(AuthError::PadAhead { .. })));
        assert_eq!(b.state().checks_left(), left);
    }

    #[test]
    fn keys_run_out_and_refill_symmetrically() {
        let s = secret(32 + 16 * 2);
        let mut a = Authenticator::new(&s, Role::Initiator).unwrap();
        let mut b = Authenticator::new(&s, Role::Responder).unwrap();
        a.record_sent(at(0), b"x");
        b.record_received(at(0), b"x");
        b.check(&a.seal().unwrap()).unwrap();
        assert_eq!(a.seal(), Err(AuthError::Exhausted));
        assert_eq!(AuthError::Exhausted.kind(), AuthErrorKind::Exhausted);
        let fresh = secret(64);
        assert_eq!(a.refill(&fresh, Role::Initiator), 512);
        b.refill(&fresh, Role::Responder);
        assert_eq!(a.state().seals_left(), 2);
        assert_eq!(b.state().checks_left(), 2);
        b.check(&a.seal().unwrap()).unwrap();
        assert_eq!(a.state().spent_bits(), 2 * 128 + 2 * 128);
        assert!(!format!("{a:?}").contains("hash_key"));
    }

    #[test]
    fn a_restored_state_never_uses_a_pad_twice() {
        let (mut a, mut b) = pair();
        a.record_sent(at(0), b"one");
        b.record_received(at(0), b"one");
        b.check(&a.seal().unwrap()).unwrap();
        // Both nodes restart from their journalled states.
        let mut a = Authenticator::from_state(a.state().clone());
        let mut b = Authenticator::from_state(b.state().clone());
        a.record_sent(at(0), b"two");
        b.record_received(at(0), b"two");
        let seal = a.seal().unwrap();
        assert_eq!(seal.pad, 1, "the pad after the one used before the restart");
        b.check(&seal).unwrap();
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
