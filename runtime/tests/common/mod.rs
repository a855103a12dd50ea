//! Two nodes' sessions over a real channel, on synthetic detections with a known error rate.
// Test helpers may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::time::Duration;

use qkd_firmware_sim::world::rng::SimRng;
use qkd_postprocess::auth::Role;
use qkd_postprocess::bits::Bits;
use qkd_postprocess::hybrid::{HybridSigner, SEED_BYTES, SigningIdentity};
use qkd_postprocess::sift::{Announcement, Basis, Measurements, Preparations};
use qkd_runtime::block::{BlockReport, BlockSettings};
use qkd_runtime::channel::{Deadlines, Peer, Transport};
use qkd_runtime::error::{DataError, SessionError};
use qkd_runtime::events::Events;
use qkd_runtime::keys::MemorySink;
use qkd_runtime::messages::{BlockId, Message};
use qkd_runtime::reconcile::Reconciliation;
use qkd_runtime::session::{
    MeasurementSource, Measurer, MeasurerProgress, PreparationSource, Preparer,
};

/// Entangled-style detections: both sides pick Z with probability 0.8, and where the bases
/// match Bob's bit differs from Alice's with probability `QBER`.
pub const QBER: f64 = 0.01;
/// Probability of the Z basis on each side.
pub const Z_BIAS: f64 = 0.8;

/// Both sides' results of a synthetic run.
#[derive(Clone)]
pub struct Synthetic {
    pub alice: Preparations,
    pub bob: Measurements,
    /// Detections per batch Bob reads.
    pub batch: usize,
}

/// `detections` detections in batches of `batch`, fixed by `seed`.
pub fn synthetic(seed: u64, detections: usize, batch: usize) -> Synthetic {
    let mut r = SimRng::new(seed, 0);
    let mut alice = Preparations::default();
    let mut bob = Measurements::default();
    let basis = |r: &mut SimRng| {
        if r.bernoulli(Z_BIAS) {
            Basis::Z
        } else {
            Basis::X
        }
    };
    for slot in 0..detections as u64 {
        let (a_basis, b_basis) = (basis(&mut r), basis(&mut r));
        let a_bit = u8::from(r.bernoulli(0.5));
        let b_bit = if a_basis == b_basis {
            a_bit ^ u8::from(r.bernoulli(QBER))
        } else {
            u8::from(r.bernoulli(0.5))
        };
        alice.basis.push(a_basis);
        alice.bit.push(a_bit);
        alice.class.push(0);
        alice.reference.push(false);
        bob.slot.push(slot);
        bob.basis.push(b_basis);
        bob.bit.push(b_bit);
    }
    Synthetic { alice, bob, batch }
}

/// Alice's records, looked up by slot.
pub struct Table(pub Preparations);

impl PreparationSource for Table {
    async fn preparations(
        &mut self,
        announcement: &Announcement,
    ) -> Result<Preparations, DataError> {
        let mut out = Preparations::default();
        for &slot in &announcement.slot {
            let i = usize::try_from(slot)
                .ok()
                .filter(|&i| i < self.0.basis.len())
                .ok_or(DataError::TagNotHeld(slot))?;
            out.basis.push(self.0.basis[i]);
            out.bit.push(self.0.bit[i]);
            out.class.push(self.0.class[i]);
            out.reference.push(self.0.reference[i]);
        }
        Ok(out)
    }
}

/// Bob's results, batch by batch.
pub struct Batches {
    all: Measurements,
    batch: usize,
    next: usize,
}

impl MeasurementSource for Batches {
    async fn next_batch<T: Transport>(
        &mut self,
        _peer: &mut Peer<T, Message>,
    ) -> Result<Option<Measurements>, SessionError> {
        if self.next >= self.all.slot.len() {
            return Ok(None);
        }
        let end = (self.next + self.batch).min(self.all.slot.len());
        let batch = Measurements {
            slot: self.all.slot[self.next..end].to_vec(),
            basis: self.all.basis[self.next..end].to_vec(),
            bit: self.all.bit[self.next..end].to_vec(),
        };
        self.next = end;
        Ok(Some(batch))
    }
}

/// Entangled-style blocks (the BBM92 bound) of `block_bits` key bits.
pub fn settings(block_bits: usize) -> BlockSettings {
    BlockSettings {
        block_bits,
        decoy: None,
        eps_sec: 1e-10,
        eps_cor: 1e-15,
        reconciliation: Reconciliation::Cascade,
    }
}

pub const SECRET: [u8; 4096] = {
    let mut s = [0u8; 4096];
    let mut i = 0;
    while i < s.len() {
        s[i] = (i * 131 % 251) as u8;
        i += 1;
    }
    s
};

/// How the two nodes use ML-DSA signatures on top of the Wegman-Carter seals.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Signing {
    /// Neither signs.
    Off,
    /// Both sign and hold each other's public keys.
    Hybrid,
    /// Both sign, but Alice holds someone else's key for Bob (an impostor who knows the
    /// pre-shared secret but not Bob's signing key).
    AliceTrustsAnotherKey,
    /// Only Bob signs: Alice must not accept signed seals she cannot check, and Bob must not
    /// accept unsigned ones.
    OnlyBob,
}

fn identity(byte: u8) -> SigningIdentity {
    SigningIdentity::from_seed(&[byte; SEED_BYTES])
}

/// Deadlines of the test sessions: with paused tokio time they cost nothing, and on a real
/// clock they are far beyond what a loaded machine needs for one message.
pub const DEADLINES: Deadlines = Deadlines {
    receive: Duration::from_secs(20),
    send: Duration::from_secs(20),
};

/// Both peers over the given ends, with authentication as `signing` says.
pub fn peers<A: Transport, B: Transport>(
    alice_end: A,
    bob_end: B,
    signing: Signing,
) -> (Peer<A, Message>, Peer<B, Message>) {
    let mut alice = Peer::new(alice_end, &SECRET, Role::Responder)
        .unwrap()
        .with_deadlines(DEADLINES);
    let mut bob = Peer::new(bob_end, &SECRET, Role::Initiator)
        .unwrap()
        .with_deadlines(DEADLINES);
    let (alice_id, bob_id, impostor) = (identity(1), identity(2), identity(3));
    let bob_key_at_alice = if signing == Signing::AliceTrustsAnotherKey {
        impostor.public_key()
    } else {
        bob_id.public_key()
    };
    let alice_public = alice_id.public_key();
    if matches!(signing, Signing::Hybrid | Signing::AliceTrustsAnotherKey) {
        let signer = HybridSigner::new(alice_id, &bob_key_at_alice, Role::Responder).unwrap();
        alice = alice.with_hybrid(signer);
    }
    if signing != Signing::Off {
        bob = bob.with_hybrid(HybridSigner::new(bob_id, &alice_public, Role::Initiator).unwrap());
    }
    (alice, bob)
}

/// What both sides of a session did.
pub struct Outcome {
    pub alice: Result<(), SessionError>,
    pub bob: Result<(), SessionError>,
    pub alice_reports: Vec<BlockReport>,
    pub bob_reports: Vec<BlockReport>,
    pub alice_keys: MemorySink,
    pub bob_keys: MemorySink,
    pub progress: MeasurerProgress,
}

impl Outcome {
    /// Both nodes' committed keys are the same, block by block.
    pub fn keys_agree(&self) -> bool {
        self.alice_keys.committed() == self.bob_keys.committed()
    }

    /// The blocks whose keys both nodes committed.
    pub fn keyed_blocks(&self) -> Vec<BlockId> {
        self.bob_keys.committed().keys().copied().collect()
    }

    /// Every committed key, in block order.
    pub fn keys(&self) -> Vec<Bits> {
        self.bob_keys.committed().values().cloned().collect()
    }

    /// Both sides ended without error.
    pub fn assert_clean(&self) {
        assert!(self.bob.is_ok(), "Bob: {:?}", self.bob);
        assert!(self.alice.is_ok(), "Alice: {:?}", self.alice);
    }
}

/// Runs both sessions on `data`; Alice on her own task.
pub async fn session<A, B>(
    alice_end: A,
    bob_end: B,
    data: &Synthetic,
    settings: &BlockSettings,
    signing: Signing,
) -> Outcome
where
    A: Transport + 'static,
    B: Transport + 'static,
{
    let (mut alice_peer, mut bob_peer) = peers(alice_end, bob_end, signing);
    let mut preparer = Preparer::new(settings.clone(), Events::default()).unwrap();
    let mut table = Table(data.alice.clone());
    let alice_task = tokio::spawn(async move {
        let mut keys = MemorySink::default();
        let ended = preparer.run(&mut alice_peer, &mut table, &mut keys).await;
        (ended, preparer.take_reports(), keys)
    });
    let mut measurer = Measurer::new(settings.clone(), Events::default());
    let mut source = Batches {
        all: data.bob.clone(),
        batch: data.batch,
        next: 0,
    };
    let mut bob_keys = MemorySink::default();
    let bob = measurer
        .run(&mut bob_peer, &mut source, &mut bob_keys)
        .await;
    // Bob is done: whatever Alice still waits for will not come.
    drop(bob_peer);
    let (alice, alice_reports, alice_keys) = alice_task.await.unwrap();
    Outcome {
        alice,
        bob,
        alice_reports,
        bob_reports: measurer.take_reports(),
        alice_keys,
        bob_keys,
        progress: measurer.progress(),
    }
}

/// Binary entropy.
pub fn h(p: f64) -> f64 {
    if p <= 0.0 || p >= 1.0 {
        0.0
    } else {
        -p * p.log2() - (1.0 - p) * (1.0 - p).log2()
    }
}

/// The random-sampling term of Lim et al. (2014), Eq. (2), written out from the paper:
/// `γ(a,b,c,d) = sqrt((c+d)(1−b)b/(c d ln 2) · log2((c+d)/(c d (1−b) b) · 21²/a²))`.
pub fn gamma_reference(a: f64, b: f64, c: f64, d: f64) -> f64 {
    let factor = (c + d) * (1.0 - b) * b / (c * d * std::f64::consts::LN_2);
    let log = ((c + d) / (c * d * (1.0 - b) * b) * 441.0 / (a * a)).log2();
    (factor * log).sqrt()
}

/// The entanglement-based (BBM92) finite-key length, written separately from the node's code:
/// `ℓ = ⌊n (1 − h(e + γ)) − leak − 6 log2(21/ε_sec) − log2(2/ε_cor)⌋`, every key-basis
/// coincidence a single pair, the phase error the test basis's error rate plus γ.
pub fn entangled_length(
    n: u64,
    k: u64,
    errors: u64,
    leak: u64,
    eps_sec: f64,
    eps_cor: f64,
) -> Option<u64> {
    let (n, k) = (n as f64, k as f64);
    let e = (errors as f64 / k).min(0.5);
    let phase = (e + gamma_reference(eps_sec, e, n, k)).min(0.5);
    let l =
        n * (1.0 - h(phase)) - leak as f64 - 6.0 * (21.0 / eps_sec).log2() - (2.0 / eps_cor).log2();
    (l >= 1.0).then(|| l.floor() as u64)
}
