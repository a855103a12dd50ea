//! Post-processing sessions between two nodes over a real channel, on synthetic detections with a
//! known error rate: keys match when the channel is honest; any tampering, replay or reordering
//! leaves both nodes without a key; TCP carries the same protocol.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use qkd_firmware_sim::world::rng::SimRng;
use qkd_postprocess::auth::Role;
use qkd_postprocess::hybrid::{HybridSigner, SEED_BYTES, SigningIdentity};
use qkd_postprocess::sift::{Announcement, Basis, Measurements, Preparations};
use qkd_runtime::block::{BlockOutcome, BlockSettings};
use qkd_runtime::channel::memory::{MemoryTransport, Tamper};
use qkd_runtime::channel::tcp::TcpTransport;
use qkd_runtime::channel::{Peer, Transport};
use qkd_runtime::session::{MeasurementSource, PreparationSource, run_measurer, run_preparer};
use rand::SeedableRng;

const DETECTIONS: usize = 700_000;
const BATCH: usize = 100_000;

/// Both sides' results of `DETECTIONS` entangled-style detections: bias 0.8 towards Z on each
/// side, 1 % errors where the bases match.
struct Synthetic {
    alice: Preparations,
    bob: Measurements,
}

fn synthetic(seed: u64) -> Synthetic {
    let mut r = SimRng::new(seed, 0);
    let mut alice = Preparations::default();
    let mut bob = Measurements::default();
    for slot in 0..DETECTIONS as u64 {
        let a_basis = if r.bernoulli(0.8) { Basis::Z } else { Basis::X };
        let b_basis = if r.bernoulli(0.8) { Basis::Z } else { Basis::X };
        let a_bit = u8::from(r.bernoulli(0.5));
        let b_bit = if a_basis == b_basis {
            a_bit ^ u8::from(r.bernoulli(0.01))
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
    Synthetic { alice, bob }
}

struct Table(Preparations);

impl PreparationSource for Table {
    async fn preparations(&mut self, announcement: &Announcement) -> Result<Preparations, String> {
        let mut out = Preparations::default();
        for &slot in &announcement.slot {
            let i = usize::try_from(slot).map_err(|e| e.to_string())?;
            out.basis.push(self.0.basis[i]);
            out.bit.push(self.0.bit[i]);
            out.class.push(self.0.class[i]);
            out.reference.push(self.0.reference[i]);
        }
        Ok(out)
    }
}

struct Batches {
    all: Measurements,
    next: usize,
}

impl MeasurementSource for Batches {
    async fn next_batch<T: Transport>(
        &mut self,
        _peer: &mut Peer<T>,
    ) -> Result<Option<Measurements>, qkd_runtime::channel::ChannelError> {
        if self.next >= self.all.slot.len() {
            return Ok(None);
        }
        let end = (self.next + BATCH).min(self.all.slot.len());
        let batch = Measurements {
            slot: self.all.slot[self.next..end].to_vec(),
            basis: self.all.basis[self.next..end].to_vec(),
            bit: self.all.bit[self.next..end].to_vec(),
        };
        self.next = end;
        Ok(Some(batch))
    }
}

fn settings() -> BlockSettings {
    BlockSettings {
        block_bits: 200_000,
        decoy: None,
        eps_sec: 1e-10,
        eps_cor: 1e-15,
    }
}

const SECRET: [u8; 1024] = {
    let mut s = [0u8; 1024];
    let mut i = 0;
    while i < 1024 {
        s[i] = (i * 131 % 251) as u8;
        i += 1;
    }
    s
};

/// How the two nodes use ML-DSA signatures on top of the Wegman-Carter seals.
#[derive(Clone, Copy, PartialEq)]
enum Signing {
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

/// Both peers over the given ends, with authentication as `signing` says.
fn peers<A: Transport, B: Transport>(
    alice_end: A,
    bob_end: B,
    signing: Signing,
) -> (Peer<A>, Peer<B>) {
    // A lost message must end the session quickly, not hang it.
    let timeout = std::time::Duration::from_millis(500);
    let mut alice = Peer::new(alice_end, &SECRET, Role::Responder)
        .unwrap()
        .with_receive_timeout(timeout);
    let mut bob = Peer::new(bob_end, &SECRET, Role::Initiator)
        .unwrap()
        .with_receive_timeout(timeout);
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

/// Runs both sessions; returns (Alice's outcomes, Bob's outcomes).
async fn run<A, B>(alice_end: A, bob_end: B, seed: u64) -> (Vec<BlockOutcome>, Vec<BlockOutcome>)
where
    A: Transport + 'static,
    B: Transport + 'static,
{
    run_signed(alice_end, bob_end, seed, Signing::Off).await
}

/// [`run`] with the given use of signatures.
async fn run_signed<A, B>(
    alice_end: A,
    bob_end: B,
    seed: u64,
    signing: Signing,
) -> (Vec<BlockOutcome>, Vec<BlockOutcome>)
where
    A: Transport + 'static,
    B: Transport + 'static,
{
    let Synthetic { alice, bob } = synthetic(seed);
    let (mut alice_peer, mut bob_peer) = peers(alice_end, bob_end, signing);
    let alice_task = tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        run_preparer(&mut alice_peer, &mut Table(alice), &settings(), &mut rng).await
    });
    let mut source = Batches { all: bob, next: 0 };
    let bob_result = run_measurer(&mut bob_peer, &mut source, &settings(), |_| {}).await;
    let alice_result = alice_task.await.unwrap();
    (
        alice_result.unwrap_or_default(),
        bob_result.map(|(outcomes, _)| outcomes).unwrap_or_default(),
    )
}

fn keys(outcomes: &[BlockOutcome]) -> Vec<Option<qkd_postprocess::bits::Bits>> {
    outcomes.iter().map(|o| o.key.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_channel_gives_matching_keys_with_every_disclosure_counted() {
    let (a, b) = MemoryTransport::pair();
    let (alice, bob) = run(b, a, 1).await;
    assert_eq!(alice.len(), 2, "two blocks of 200 000 key bits");
    assert_eq!(keys(&alice), keys(&bob));
    for (a, b) in alice.iter().zip(&bob) {
        let key = a.key.as_ref().expect("a key");
        assert!(key.len() > 100_000, "{} bits", key.len());
        // Both sides count the same disclosure; the measurer corrected ~1 % of the bits.
        assert_eq!(a.report.disclosed_bits, b.report.disclosed_bits);
        // Each key bit is wrong with probability 1 %, independently: binomial spread.
        let n = b.report.key_bits as f64;
        let q = b.report.corrected_bits as f64 / n;
        let sigma = (0.01 * 0.99 / n).sqrt();
        assert!((q - 0.01).abs() < 5.0 * sigma, "{q} ± {sigma}");
        // The key is shorter than the sifted block by at least everything disclosed.
        assert!((key.len() as u64) < a.report.key_bits as u64 - a.report.disclosed_bits);
    }
}

/// Runs a session where the measurer's frame number `target` is altered by `attack`.
async fn attacked(
    target: u64,
    attack: fn(Vec<u8>) -> Vec<Vec<u8>>,
    from_bob: bool,
) -> (Vec<BlockOutcome>, Vec<BlockOutcome>) {
    let (bob_end, alice_end) = MemoryTransport::pair();
    let tamper: Tamper = Box::new(move |n, frame| {
        if n == target {
            attack(frame)
        } else {
            vec![frame]
        }
    });
    if from_bob {
        run(alice_end, bob_end.with_tamper(tamper), 7).await
    } else {
        run(alice_end.with_tamper(tamper), bob_end, 7).await
    }
}

fn flip_last_byte(mut frame: Vec<u8>) -> Vec<Vec<u8>> {
    if let Some(b) = frame.last_mut() {
        *b ^= 0x01;
    }
    vec![frame]
}

fn duplicate(frame: Vec<u8>) -> Vec<Vec<u8>> {
    vec![frame.clone(), frame]
}

fn drop(_: Vec<u8>) -> Vec<Vec<u8>> {
    Vec::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_replay_or_loss_in_either_direction_yields_no_key() {
    // Frame numbers inside the first block: sifting (0-3), the block opening, Cascade traffic.
    for (target, from_bob) in [(1, true), (4, true), (20, true), (3, false), (15, false)] {
        for (name, attack) in [
            ("flip", flip_last_byte as fn(_) -> _),
            ("replay", duplicate),
            ("drop", drop),
        ] {
            let (alice, bob) = attacked(target, attack, from_bob).await;
            let first_keys = (
                alice.first().and_then(|o| o.key.as_ref()),
                bob.first().and_then(|o| o.key.as_ref()),
            );
            assert_eq!(
                first_keys,
                (None, None),
                "{name} frame {target} from {}",
                if from_bob { "Bob" } else { "Alice" }
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_block_gives_no_key_and_the_next_block_still_does() {
    // A parity answer altered in flight decodes; verification or the seals catch it.
    let (alice, bob) = attacked(20, flip_last_byte, true).await;
    assert_eq!(alice.len(), 2, "{alice:?}");
    assert_eq!(bob.len(), 2, "{bob:?}");
    assert!(alice[0].key.is_none() && bob[0].key.is_none());
    assert!(alice[0].report.aborted.is_some());
    assert!(alice[1].key.is_some());
    assert_eq!(keys(&alice)[1], keys(&bob)[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_mode_keys_only_when_signatures_and_seals_both_check() {
    let (a, b) = MemoryTransport::pair();
    let (alice, bob) = run_signed(b, a, 1, Signing::Hybrid).await;
    assert_eq!(alice.len(), 2);
    assert!(alice.iter().all(|o| o.key.is_some()));
    assert_eq!(keys(&alice), keys(&bob));
    // The same run without signatures gives the same keys: signing discloses nothing.
    let (a, b) = MemoryTransport::pair();
    let (plain, _) = run(b, a, 1).await;
    assert_eq!(keys(&plain), keys(&alice));

    for signing in [Signing::AliceTrustsAnotherKey, Signing::OnlyBob] {
        let (a, b) = MemoryTransport::pair();
        let (alice, bob) = run_signed(b, a, 1, signing).await;
        // Both blocks ran and were refused at a seal; the session went on after the first.
        assert_eq!((alice.len(), bob.len()), (2, 2));
        assert!(
            alice.iter().chain(&bob).all(|o| o.key.is_none()),
            "a key despite a failed signature check"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_runs_over_tcp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
    let bob_stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let alice_stream = accept.await.unwrap();
    let (alice, bob) = run(
        TcpTransport::new(alice_stream),
        TcpTransport::new(bob_stream),
        3,
    )
    .await;
    assert!(alice.iter().all(|o| o.key.is_some()));
    assert_eq!(keys(&alice), keys(&bob));
}
