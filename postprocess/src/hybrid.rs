//! Hybrid authentication: an ML-DSA-65 signature (FIPS 204) over every sealed transcript, on
//! top of the Wegman-Carter seals of [`crate::auth`].
//!
//! Wegman-Carter is information-theoretically secure but needs a pre-shared secret; signatures
//! need only each node's public key in the other's hands, and ML-DSA resists quantum attacks.
//! A site that wants post-quantum assurance from the first message runs both: each seal carries
//! the Wegman-Carter tag and a signature, and a block releases a key only when both check.
//!
//! A signature covers the same messages as the seal it travels with: each direction keeps a
//! SHAKE256 digest of `(epoch, seq, length, message)` since its last seal, closed by the number
//! of the seal's pad, and the digest is signed deterministically with a context string naming the
//! signer's role, so a signature can be neither reflected back to its signer nor replayed on
//! another segment (pads are never used twice).

use ml_dsa::{EncodedVerifyingKey, Keypair, MlDsa65, Signature, SigningKey, VerifyingKey};
use shake::{ExtendableOutput, Shake256, Update, XofReader};

use crate::auth::{AuthError, Position, Role};

/// Bytes of a node's signing seed (its private key).
pub const SEED_BYTES: usize = 32;
/// Bytes of an encoded ML-DSA-65 public key.
pub const PUBLIC_KEY_BYTES: usize = 1952;
/// Bytes of an encoded ML-DSA-65 signature.
pub const SIGNATURE_BYTES: usize = 3309;

/// Bytes of a transcript digest: SHAKE256 at 512 bits, so collisions cost 2^256.
const DIGEST_BYTES: usize = 64;

/// A node's signing key, made from a 32-byte seed.
pub struct SigningIdentity {
    key: SigningKey<MlDsa65>,
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningIdentity(ML-DSA-65, secret)")
    }
}

impl SigningIdentity {
    /// The key pair of `seed` (ML-DSA.KeyGen_internal); the caller wipes its copy of the seed.
    pub fn from_seed(seed: &[u8; SEED_BYTES]) -> Self {
        Self {
            key: SigningKey::from_seed(&(*seed).into()),
        }
    }

    /// The encoded public key, to hand to the peer.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.verifying_key().encode().to_vec()
    }
}

/// A running digest of one direction's messages since its last seal.
struct SegmentDigest {
    hash: Shake256,
    messages: u64,
}

impl SegmentDigest {
    fn new() -> Self {
        let mut hash = Shake256::default();
        hash.update(b"qkd-node transcript segment v2");
        Self { hash, messages: 0 }
    }

    fn absorb(&mut self, at: Position, message: &[u8]) {
        self.hash.update(&at.epoch.to_le_bytes());
        self.hash.update(&at.seq.to_le_bytes());
        self.hash.update(&(message.len() as u64).to_le_bytes());
        self.hash.update(message);
        self.messages += 1;
    }

    /// The digest of this segment, closed by the number of the pad its seal uses; the next
    /// segment starts.
    fn finish(&mut self, pad: u64) -> [u8; DIGEST_BYTES] {
        let mut finished = std::mem::replace(self, Self::new());
        finished.hash.update(&pad.to_le_bytes());
        let mut digest = [0u8; DIGEST_BYTES];
        finished.hash.finalize_xof().read(&mut digest);
        digest
    }
}

/// The ML-DSA context string of transcripts signed by `role`.
fn context(role: Role) -> &'static [u8] {
    match role {
        Role::Initiator => b"qkd-node transcript v1: initiator",
        Role::Responder => b"qkd-node transcript v1: responder",
    }
}

/// Signs this node's transcript segments and verifies the peer's.
pub struct HybridSigner {
    own: SigningIdentity,
    peer: VerifyingKey<MlDsa65>,
    role: Role,
    sent: SegmentDigest,
    received: SegmentDigest,
}

impl std::fmt::Debug for HybridSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HybridSigner({:?}, {} messages sent and {} received since the last seals)",
            self.role, self.sent.messages, self.received.messages
        )
    }
}

impl HybridSigner {
    /// Signs with `own` and verifies against the peer's encoded public key.
    pub fn new(
        own: SigningIdentity,
        peer_public_key: &[u8],
        role: Role,
    ) -> Result<Self, AuthError> {
        let encoded = EncodedVerifyingKey::<MlDsa65>::try_from(peer_public_key).map_err(|_| {
            AuthError::PublicKeyLength {
                needed: PUBLIC_KEY_BYTES,
                got: peer_public_key.len(),
            }
        })?;
        Ok(Self {
            own,
            peer: VerifyingKey::decode(&encoded),
            role,
            sent: SegmentDigest::new(),
            received: SegmentDigest::new(),
        })
    }

    /// Records an outgoing message at its position.
    pub fn record_sent(&mut self, at: Position, message: &[u8]) {
        self.sent.absorb(at, message);
    }

    /// Records an incoming message at its (already checked) position.
    pub fn record_received(&mut self, at: Position, message: &[u8]) {
        self.received.absorb(at, message);
    }

    /// Signs everything sent since the last signature, for the seal using pad `pad`. (ML-DSA
    /// refuses only context strings over 255 bytes, and ours are constants.)
    pub fn sign(&mut self, pad: u64) -> Result<Vec<u8>, AuthError> {
        let digest = self.sent.finish(pad);
        self.own
            .key
            .expanded_key()
            .sign_deterministic(&digest, context(self.role))
            .map(|signature| signature.encode().to_vec())
            .map_err(|_| AuthError::Signing)
    }

    /// Verifies the peer's signature over everything received since the last one, for the seal
    /// using pad `pad`.
    pub fn verify(&mut self, pad: u64, signature: &[u8]) -> Result<(), AuthError> {
        let messages = self.received.messages;
        let digest = self.received.finish(pad);
        let valid = Signature::<MlDsa65>::try_from(signature).is_ok_and(|signature| {
            self.peer
                .verify_with_context(&digest, context(self.role.peer()), &signature)
        });
        if valid {
            Ok(())
        } else {
            Err(AuthError::BadSignature { messages })
        }
    }

    /// Forgets both segments without signing (a block abandoned on both sides).
    pub fn discard_transcripts(&mut self) {
        self.sent = SegmentDigest::new();
        self.discard_received();
    }

    /// Forgets the received segment (its seal was refused before its signature was checked).
    pub fn discard_received(&mut self) {
        self.received = SegmentDigest::new();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn pair() -> (HybridSigner, HybridSigner) {
        let (a, b) = (
            SigningIdentity::from_seed(&[1; SEED_BYTES]),
            SigningIdentity::from_seed(&[2; SEED_BYTES]),
        );
        let (a_public, b_public) = (a.public_key(), b.public_key());
        assert_eq!(a_public.len(), PUBLIC_KEY_BYTES);
        (
            HybridSigner::new(a, &b_public, Role::Initiator).unwrap(),
            HybridSigner::new(b, &a_public, Role::Responder).unwrap(),
        )
    }

    #[test]
    fn signed_segments_verify_in_both_directions_and_in_sequence() {
        let (mut a, mut b) = pair();
        for segment in 0..3u64 {
            for seq in 0..4 {
                let message = [segment as u8, seq as u8, 7];
                let at = Position { epoch: 0, seq };
                a.record_sent(at, &message);
                b.record_received(at, &message);
                b.record_sent(at, &message[..2]);
                a.record_received(at, &message[..2]);
            }
            let signature = a.sign(segment).unwrap();
            assert_eq!(signature.len(), SIGNATURE_BYTES);
            b.verify(segment, &signature).unwrap();
            a.verify(segment, &b.sign(segment).unwrap()).unwrap();
        }
    }

    #[test]
    fn an_altered_message_a_replayed_signature_or_a_reflected_one_fails() {
        let at = Position::default();
        let (mut a, mut b) = pair();
        a.record_sent(at, b"parities");
        b.record_received(at, b"paritieS");
        assert_eq!(
            b.verify(0, &a.sign(0).unwrap()),
            Err(AuthError::BadSignature { messages: 1 })
        );

        let (mut a, mut b) = pair();
        a.record_sent(at, b"same");
        b.record_received(at, b"same");
        let first = a.sign(0).unwrap();
        b.verify(0, &first).unwrap();
        // The next segment holds the same bytes, but the old signature does not carry over.
        a.record_sent(at, b"same");
        b.record_received(at, b"same");
        assert!(b.verify(1, &first).is_err());

        // The same messages at another position are other messages.
        let (mut a, mut b) = pair();
        a.record_sent(at, b"same");
        b.record_received(Position { epoch: 1, seq: 0 }, b"same");
        assert!(b.verify(0, &a.sign(0).unwrap()).is_err());

        // A's own signature sent back to A is not B's.
        let (mut a, _) = pair();
        a.record_sent(at, b"x");
        a.record_received(at, b"x");
        let own = a.sign(0).unwrap();
        assert!(a.verify(0, &own).is_err());
    }

    #[test]
    fn garbage_signatures_and_keys_are_refused_not_trusted() {
        let (mut a, _) = pair();
        a.record_received(Position::default(), b"x");
        assert!(a.verify(0, &[0u8; 10]).is_err());
        a.record_received(Position::default(), b"x");
        assert!(a.verify(1, &[0xFF; SIGNATURE_BYTES]).is_err());
        let identity = SigningIdentity::from_seed(&[3; SEED_BYTES]);
        assert!(matches!(
            HybridSigner::new(identity, &[0; 31], Role::Initiator),
            Err(AuthError::PublicKeyLength { got: 31, .. })
        ));
    }
}
