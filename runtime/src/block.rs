//! One block of post-processing, as each side runs it.
//!
//! The measurer (Bob) drives: he opens a block when enough key-basis bits are sifted and
//! discloses his test-basis bits; both sides then compute the same statistics and finite-key
//! bound, and end the block at once if no key can come of it. Error correction follows
//! ([`crate::reconcile`]), then verification with a 2-universal hash. A key leaves the block
//! only after every message it depends on is sealed and checked, in two phases:
//!
//! 1. Bob seals everything he sent; Alice checks it.
//! 2. Alice computes the length from her own count of disclosed bits, sends the privacy
//!    amplification seed and seals; Bob checks, recomputes the same length, and *holds* the
//!    key (durably, not yet usable).
//! 3. Bob confirms and seals; Alice checks and *commits* the key: it is usable on her side.
//! 4. Alice says so and seals; Bob checks and commits. If that word is lost, Bob asks for it
//!    when the channel resumes ([`crate::keys`]).
//!
//! A block that ends without key at a point both sides reach together (the bound, a failed
//! verification) forgets its transcripts and the bits waiting in the pool on both sides, so no
//! bit ever enters a key whose seals did not cover the messages it was sifted with. The first
//! [`AUTH_REFILL_BITS`] of every key replace the four seals' pads, so authentication never
//! drains the pre-shared secret while keys are produced.

use std::collections::VecDeque;

use qkd_postprocess::auth::Role;
use qkd_postprocess::bits::{Bits, binary_entropy};
use qkd_postprocess::estimate::{
    BasisCounts, DecoySettings, KeyBound, finite_key, finite_key_entangled,
};
use qkd_postprocess::sift::{Sifted, class_counts, test_errors};
use qkd_postprocess::toeplitz::{PlanCache, hash_direct};
use serde::Serialize;

use crate::channel::{Peer, Transport};
use crate::error::{SessionError, Violation};
use crate::keys::KeySink;
use crate::messages::{BlockId, Message, PackedBits};
use crate::randomness::ProtocolRng;
use crate::reconcile::{ReconcileCache, ReconcileReport, Reconciler, Reconciliation};

/// Key bits each successful block returns to authentication: four seals' pads.
pub const AUTH_REFILL_BITS: u64 = 4 * 128;
/// Reconciliation inefficiency assumed when deciding whether a block is worth correcting.
const EXPECTED_EC_INEFFICIENCY: f64 = 1.2;
/// Error rate assumed for the correction plan when the test bits show fewer errors.
const MIN_QBER_ESTIMATE: f64 = 0.002;

/// What every block is run with.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSettings {
    /// Key-basis bits per block.
    pub block_bits: usize,
    /// Decoy intensities (prepare-and-measure) or `None` (entangled pairs).
    pub decoy: Option<DecoySettings>,
    /// Secrecy parameter.
    pub eps_sec: f64,
    /// Correctness parameter.
    pub eps_cor: f64,
    /// Error correction.
    pub reconciliation: Reconciliation,
}

impl BlockSettings {
    /// Verification tag length: `ceil(log2(1/ε_cor))` bits make the collision chance ≤ ε_cor.
    pub fn verification_bits(&self) -> usize {
        (1.0 / self.eps_cor).log2().ceil().max(1.0) as usize
    }

    fn intensity_classes(&self) -> usize {
        if self.decoy.is_some() { 3 } else { 1 }
    }
}

/// Why a block gave no key, at a point both nodes reach together from the same public data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoKey {
    /// The finite-key bound leaves nothing beyond the refill at the expected correction cost.
    Bound,
    /// The verification hashes differ: error correction left errors.
    Verification,
    /// What error correction disclosed leaves nothing beyond the refill.
    AfterCorrection,
}

impl std::fmt::Display for NoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoKey::Bound => "the bound leaves no key",
            NoKey::Verification => "verification failed",
            NoKey::AfterCorrection => "no key after error correction",
        })
    }
}

/// One intensity class's counts in a block.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IntensityCounts {
    /// Mean photon number.
    pub mu: f64,
    /// Probability of the class.
    pub probability: f64,
    /// Key-basis detections.
    pub key_detections: u64,
    /// Test-basis detections.
    pub test_detections: u64,
    /// Test-basis errors.
    pub test_errors: u64,
}

/// A block's estimation inputs and outputs, from which the key length can be recomputed to the
/// bit: `secret_bits = ⌊s0_key + s1_key (1 − h(phase_error)) − disclosed_bits − 6 log2(21/eps_sec)
/// − log2(2/eps_cor)⌋`, or 0 when the block gave no key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockDetails {
    /// The block's number.
    pub block: BlockId,
    /// Basis the key comes from.
    pub key_basis: &'static str,
    /// Key-basis bits.
    pub key_bits: u64,
    /// Test-basis bits disclosed.
    pub test_bits: u64,
    /// Test-basis errors, all classes.
    pub test_errors: u64,
    /// Per intensity class (decoy-state links; empty for entangled ones).
    pub intensities: Vec<IntensityCounts>,
    /// Vacuum detections in the key basis (lower bound; 0 for entangled links).
    pub s0_key: f64,
    /// Single-photon detections in the key basis (lower bound; every pair for entangled links).
    pub s1_key: f64,
    /// Single-photon detections in the test basis (lower bound).
    pub s1_test: f64,
    /// Single-photon errors in the test basis (upper bound).
    pub v1_test: f64,
    /// Phase error rate of the key basis's single photons (upper bound).
    pub phase_error: f64,
    /// Bits error correction disclosed.
    pub disclosed_bits: u64,
    /// Secrecy parameter.
    pub eps_sec: f64,
    /// Correctness parameter.
    pub eps_cor: f64,
    /// Length of the privacy-amplified key, refill included; 0 if the block gave no key.
    pub secret_bits: u64,
    /// Of those, bits returned to authentication.
    pub auth_refill_bits: u64,
    /// Why the block gave no key, if it did not.
    pub aborted: Option<String>,
}

/// What one block did, from one side's view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockReport {
    /// The block's number, once opened.
    pub id: Option<BlockId>,
    /// The slots of the batches whose bits entered it.
    pub slots: Option<SlotSpan>,
    /// Key-basis bits in the block.
    pub key_bits: usize,
    /// Test-basis bits disclosed.
    pub test_bits: usize,
    /// Test-basis errors.
    pub test_errors: u64,
    /// Bits error correction disclosed.
    pub disclosed_bits: u64,
    /// Error-correction round trips.
    pub round_trips: u32,
    /// Bits error correction corrected (measurer only).
    pub corrected_bits: u64,
    /// Secret bits delivered (after the authentication refill).
    pub secret_bits: u64,
    /// Why the block gave no key, if it did not.
    pub aborted: Option<String>,
    /// The estimation's inputs and outputs, once the test bits were compared.
    pub details: Option<BlockDetails>,
}

impl BlockReport {
    /// Marks the block as giving no key.
    pub fn abandon(&mut self, reason: impl std::fmt::Display) {
        let reason = reason.to_string();
        if let Some(details) = &mut self.details {
            details.secret_bits = 0;
            details.aborted = Some(reason.clone());
        }
        self.secret_bits = 0;
        self.aborted = Some(reason);
    }

    fn reconciled(&mut self, cost: ReconcileReport) {
        self.disclosed_bits = cost.disclosed_bits;
        self.round_trips = cost.round_trips;
        self.corrected_bits = cost.corrected_bits;
        if let Some(details) = &mut self.details {
            details.disclosed_bits = cost.disclosed_bits;
        }
    }
}

/// The first and last slot (or pair index) of the batches whose bits entered a block: where its
/// key came from, and which announcements its seals had to cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SlotSpan {
    /// First slot.
    pub first: u64,
    /// Last slot.
    pub last: u64,
}

/// A sifted batch in the pool: its slots and the key bits of it not yet in a block.
#[derive(Debug, Clone, Copy)]
struct Batch {
    span: SlotSpan,
    key_bits: usize,
}

/// Sifted bits waiting to form blocks, with the batches they came from.
#[derive(Debug, Default)]
pub struct Pool {
    bits: Sifted,
    batches: VecDeque<Batch>,
}

impl Pool {
    /// Adds the bits sifted from the batch of slots `span`.
    pub fn add(&mut self, sifted: &Sifted, span: SlotSpan) {
        self.bits.key.extend(&sifted.key);
        self.bits.key_class.extend_from_slice(&sifted.key_class);
        self.bits.test.extend(&sifted.test);
        self.bits.test_class.extend_from_slice(&sifted.test_class);
        self.batches.push_back(Batch {
            span,
            key_bits: sifted.key.len(),
        });
    }

    /// Key-basis bits waiting.
    pub fn key_bits(&self) -> usize {
        self.bits.key.len()
    }

    /// Forgets every bit waiting: their messages will never be sealed.
    pub fn clear(&mut self) {
        *self = Pool::default();
    }

    /// Takes the first `n` key bits and every test bit; the rest of the key bits stay. Returns
    /// them with the slots of the batches they came from.
    pub fn take_block(&mut self, n: usize) -> (Sifted, Option<SlotSpan>) {
        let pool = &mut self.bits;
        let key = pool.key.truncated(n);
        let rest = pool.key.range(n, pool.key.len());
        let key_class = pool
            .key_class
            .drain(..n.min(pool.key_class.len()))
            .collect();
        let block = Sifted {
            key,
            key_class,
            test: std::mem::take(&mut pool.test),
            test_class: std::mem::take(&mut pool.test_class),
        };
        pool.key = rest;
        // Every waiting batch gave the block its test bits; those whose key bits are all taken
        // leave the pool, the last one may stay with what is left of its key bits.
        let first = self.batches.front().map(|b| b.span.first);
        let last = self.batches.back().map(|b| b.span.last);
        let mut taken = n;
        while let Some(batch) = self.batches.front_mut() {
            if batch.key_bits > taken {
                batch.key_bits -= taken;
                break;
            }
            taken -= batch.key_bits;
            self.batches.pop_front();
        }
        let span = first
            .zip(last)
            .map(|(first, last)| SlotSpan { first, last });
        (block, span)
    }
}

/// What blocks of a session share: reconciliation plans and FFT plans.
#[derive(Debug, Default)]
pub struct BlockCache {
    reconcile: ReconcileCache,
    fft: PlanCache,
}

impl BlockCache {
    fn amplify(&mut self, key: &Bits, seed: &Bits, length: u64) -> Result<Bits, SessionError> {
        Ok(self
            .fft
            .hasher(key.len(), length as usize)
            .hash(key, seed, length as usize)?)
    }
}

/// The numbers both sides derive, identically, from a block's public data.
#[derive(Debug, Clone)]
struct Statistics {
    bound: KeyBound,
    qber_estimate: f64,
}

/// The error counts, checked against the block's test bits before anything is summed.
fn checked_errors(
    settings: &BlockSettings,
    block: &Sifted,
    errors: &[u64],
) -> Result<Vec<u64>, Violation> {
    let classes = settings.intensity_classes();
    if errors.len() != classes {
        return Err(Violation::ErrorClasses {
            classes,
            got: errors.len(),
        });
    }
    let bits = class_counts(&block.test_class, classes);
    for (class, (&errors, &bits)) in errors.iter().zip(&bits).enumerate() {
        if errors > bits {
            return Err(Violation::TooManyErrors {
                class,
                errors,
                bits,
            });
        }
    }
    Ok(bits)
}

/// The bound and the block's details from its counts and the test errors.
fn statistics(
    settings: &BlockSettings,
    id: BlockId,
    block: &Sifted,
    errors: &[u64],
) -> Result<(Statistics, BlockDetails), Violation> {
    let test_bits_per_class = checked_errors(settings, block, errors)?;
    // Each count is at most the block's test bits: the sum cannot overflow.
    let total_errors: u64 = errors.iter().sum();
    let test_bits = block.test.len() as u64;
    let key_bits = block.key.len() as u64;
    let (bound, intensities) = match &settings.decoy {
        Some(decoy) => {
            let as_array =
                |v: &[u64]| -> [u64; 3] { std::array::from_fn(|k| v.get(k).copied().unwrap_or(0)) };
            let key = BasisCounts {
                n: as_array(&class_counts(&block.key_class, 3)),
                m: [0; 3],
            };
            let test = BasisCounts {
                n: as_array(&test_bits_per_class),
                m: as_array(errors),
            };
            let intensities = (0..3)
                .map(|k| IntensityCounts {
                    mu: decoy.mu[k],
                    probability: decoy.p[k],
                    key_detections: key.n[k],
                    test_detections: test.n[k],
                    test_errors: test.m[k],
                })
                .collect();
            (finite_key(&key, &test, decoy)?, intensities)
        }
        None => (
            finite_key_entangled(
                key_bits,
                test_bits,
                total_errors,
                settings.eps_sec,
                settings.eps_cor,
            ),
            Vec::new(),
        ),
    };
    let qber_estimate = if test_bits > 0 {
        (total_errors as f64 / test_bits as f64).max(MIN_QBER_ESTIMATE)
    } else {
        0.5
    };
    let details = BlockDetails {
        block: id,
        key_basis: "Z",
        key_bits,
        test_bits,
        test_errors: total_errors,
        intensities,
        s0_key: bound.s0,
        s1_key: bound.s1,
        s1_test: bound.s1_test,
        v1_test: bound.v1_test,
        phase_error: bound.phase_error,
        disclosed_bits: 0,
        eps_sec: settings.eps_sec,
        eps_cor: settings.eps_cor,
        secret_bits: 0,
        auth_refill_bits: AUTH_REFILL_BITS,
        aborted: None,
    };
    Ok((
        Statistics {
            bound,
            qber_estimate,
        },
        details,
    ))
}

/// Whether a block can yield more than its authentication refill at the expected EC cost.
fn worth_correcting(stats: &Statistics, n: usize) -> bool {
    let expected_leak = EXPECTED_EC_INEFFICIENCY * n as f64 * binary_entropy(stats.qber_estimate);
    stats.qber_estimate < 0.25
        && stats
            .bound
            .length(expected_leak)
            .is_some_and(|l| l > AUTH_REFILL_BITS)
}

/// Final key length once error correction disclosed `disclosed` bits; `None` if no key beyond
/// the authentication refill.
fn final_length(stats: &Statistics, disclosed: u64) -> Option<u64> {
    stats
        .bound
        .length(disclosed as f64)
        .filter(|&l| l > AUTH_REFILL_BITS)
}

fn packed_to_bits(packed: &PackedBits, what: &'static str) -> Result<Bits, Violation> {
    packed.to_bits().ok_or(Violation::Malformed(what))
}

/// A block's report as far as its statistics, and the block's first outcome.
fn opened(
    settings: &BlockSettings,
    id: BlockId,
    block: &Sifted,
    errors: &[u64],
) -> Result<(Statistics, BlockReport), Violation> {
    let (stats, details) = statistics(settings, id, block, errors)?;
    let report = BlockReport {
        id: Some(id),
        key_bits: block.key.len(),
        test_bits: block.test.len(),
        test_errors: details.test_errors,
        details: Some(details),
        ..BlockReport::default()
    };
    Ok((stats, report))
}

/// Ends a block without key at a point both sides reach together: nothing more was sent, so
/// both forget the transcripts (and the session its pool) without a seal.
fn no_key<T: Transport>(
    peer: &mut Peer<T, Message>,
    mut report: BlockReport,
    why: NoKey,
) -> BlockEnd {
    peer.discard_transcripts();
    report.abandon(why);
    BlockEnd::NoKey(report)
}

/// How a block ended, short of a failure.
#[derive(Debug)]
pub enum BlockEnd {
    /// Both nodes reached the same conclusion without a key.
    NoKey(BlockReport),
    /// The key is committed on this side (the preparer; the measurer once she said so).
    Committed(BlockReport),
    /// The measurer holds the key; the preparer's commitment did not arrive (it is asked for
    /// when the channel resumes).
    Held {
        /// What the block did.
        report: BlockReport,
        /// Why the commitment did not arrive.
        error: SessionError,
    },
}

impl BlockEnd {
    /// The same end, its report naming the slots the block's bits came from.
    #[must_use]
    pub fn with_slots(mut self, slots: Option<SlotSpan>) -> Self {
        match &mut self {
            BlockEnd::NoKey(report)
            | BlockEnd::Committed(report)
            | BlockEnd::Held { report, .. } => {
                report.slots = slots;
            }
        }
        self
    }
}

/// Runs a reconciler against the peer's until both are done.
async fn reconcile<T: Transport>(
    peer: &mut Peer<T, Message>,
    reconciler: &mut dyn Reconciler,
) -> Result<(), SessionError> {
    loop {
        while let Some(message) = reconciler.outgoing() {
            peer.send(&Message::Reconcile(message)).await?;
        }
        if reconciler.is_done() {
            return Ok(());
        }
        match peer.recv().await? {
            Message::Reconcile(message) => reconciler.incoming(message)?,
            other => return Err(Violation::unexpected(&other, "Reconcile").into()),
        }
    }
}

/// Key bytes for the authentication refill, and the rest as the delivered key.
fn split_refill(key: &Bits) -> (Vec<u8>, Bits) {
    let refill_bits = AUTH_REFILL_BITS as usize;
    let refill: Vec<u8> = key.words()[..refill_bits / 64]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    (refill, key.range(refill_bits, key.len()))
}

/// Commits an amplified key on this side: its head refills authentication, the rest goes to
/// the sink with the refilled authentication state, in one durable step. Returns the bits
/// delivered.
pub(crate) fn commit<T: Transport>(
    peer: &mut Peer<T, Message>,
    sink: &mut impl KeySink,
    id: BlockId,
    key: &Bits,
) -> Result<u64, SessionError> {
    let (mut refill, delivered) = split_refill(key);
    peer.refill_auth(&refill);
    zeroize::Zeroize::zeroize(&mut refill);
    sink.commit(id, &delivered, peer.auth_state())?;
    Ok(delivered.len() as u64)
}

/// A uniformly random Toeplitz seed of `len` bits.
fn seed(rng: &mut ProtocolRng, len: usize) -> Bits {
    Bits::from_word_fn(len, || rng.next_u64())
}

/// What the preparer runs a block with.
#[derive(Debug)]
pub struct PreparerBlock<'a> {
    /// Settings of the link.
    pub settings: &'a BlockSettings,
    /// Plans shared by the session's blocks.
    pub cache: &'a mut BlockCache,
    /// Protocol randomness (hash seeds).
    pub rng: &'a mut ProtocolRng,
}

/// Alice's side of block `id`: answer, verify, amplify, commit.
pub async fn prepare_block<T: Transport>(
    peer: &mut Peer<T, Message>,
    run: PreparerBlock<'_>,
    sink: &mut impl KeySink,
    id: BlockId,
    block: &Sifted,
    disclosed_test: &PackedBits,
) -> Result<BlockEnd, SessionError> {
    debug_assert_eq!(peer.role(), Role::Responder);
    let PreparerBlock {
        settings,
        cache,
        rng,
    } = run;
    let n = block.key.len();
    let disclosed = packed_to_bits(disclosed_test, "test bits")?;
    let errors = test_errors(block, &disclosed, settings.intensity_classes())?;
    peer.send(&Message::TestErrors(errors.clone())).await?;
    let (stats, mut report) = opened(settings, id, block, &errors)?;
    if !worth_correcting(&stats, n) {
        return Ok(no_key(peer, report, NoKey::Bound));
    }
    let mut reconciler =
        settings
            .reconciliation
            .preparer(&block.key, stats.qber_estimate, &mut cache.reconcile)?;
    reconcile(peer, reconciler.as_mut()).await?;
    report.reconciled(reconciler.finish().1);
    let t = settings.verification_bits();
    let verification = seed(rng, n + t - 1);
    let tag = hash_direct(&block.key, &verification, t)?;
    peer.send(&Message::Verify {
        seed: PackedBits::from(&verification),
        tag: PackedBits::from(&tag),
    })
    .await?;
    match peer.recv().await? {
        Message::Verified(true) => {}
        Message::Verified(false) => return Ok(no_key(peer, report, NoKey::Verification)),
        other => return Err(Violation::unexpected(&other, "Verified").into()),
    }
    peer.expect_seal().await?;
    let Some(length) = final_length(&stats, report.disclosed_bits) else {
        return Ok(no_key(peer, report, NoKey::AfterCorrection));
    };
    let amplification = seed(rng, n + length as usize - 1);
    let key = cache.amplify(&block.key, &amplification, length)?;
    peer.send(&Message::Amplify {
        seed: PackedBits::from(&amplification),
        length,
    })
    .await?;
    peer.send_seal().await?;
    match peer.recv().await? {
        Message::Confirmed => {}
        other => return Err(Violation::unexpected(&other, "Confirmed").into()),
    }
    peer.expect_seal().await?;
    report.secret_bits = commit(peer, sink, id, &key)?;
    if let Some(details) = &mut report.details {
        details.secret_bits = length;
    }
    peer.send(&Message::Committed).await?;
    peer.send_seal().await?;
    Ok(BlockEnd::Committed(report))
}

/// Bob's side of block `id`: correct, verify, amplify, hold, and commit on Alice's word.
pub async fn measure_block<T: Transport>(
    peer: &mut Peer<T, Message>,
    settings: &BlockSettings,
    cache: &mut BlockCache,
    sink: &mut impl KeySink,
    id: BlockId,
    block: Sifted,
) -> Result<BlockEnd, SessionError> {
    debug_assert_eq!(peer.role(), Role::Initiator);
    let n = block.key.len();
    peer.send(&Message::OpenBlock {
        block: id,
        test_bits: PackedBits::from(&block.test),
    })
    .await?;
    let errors = match peer.recv().await? {
        Message::TestErrors(errors) => errors,
        other => return Err(Violation::unexpected(&other, "TestErrors").into()),
    };
    let (stats, mut report) = opened(settings, id, &block, &errors)?;
    if !worth_correcting(&stats, n) {
        return Ok(no_key(peer, report, NoKey::Bound));
    }
    let mut reconciler =
        settings
            .reconciliation
            .measurer(block.key, stats.qber_estimate, &mut cache.reconcile)?;
    reconcile(peer, reconciler.as_mut()).await?;
    let (corrected, cost) = reconciler.finish();
    let corrected = corrected.ok_or(Violation::Malformed("reconciled key"))?;
    report.reconciled(cost);
    let (verification, tag) = match peer.recv().await? {
        Message::Verify { seed, tag } => (
            packed_to_bits(&seed, "verification seed")?,
            packed_to_bits(&tag, "verification tag")?,
        ),
        other => return Err(Violation::unexpected(&other, "Verify").into()),
    };
    let t = settings.verification_bits();
    let matches = verification.len() == n + t - 1
        && hash_direct(&corrected, &verification, t).is_ok_and(|mine| mine == tag);
    peer.send(&Message::Verified(matches)).await?;
    if !matches {
        return Ok(no_key(peer, report, NoKey::Verification));
    }
    peer.send_seal().await?;
    let Some(length) = final_length(&stats, report.disclosed_bits) else {
        return Ok(no_key(peer, report, NoKey::AfterCorrection));
    };
    let amplification = match peer.recv().await? {
        Message::Amplify {
            seed,
            length: theirs,
        } if theirs == length => packed_to_bits(&seed, "amplification seed")?,
        Message::Amplify { length: theirs, .. } => {
            return Err(Violation::LengthDisagrees {
                ours: Some(length),
                theirs,
            }
            .into());
        }
        other => return Err(Violation::unexpected(&other, "Amplify").into()),
    };
    let needed = n as u64 + length - 1;
    if amplification.len() as u64 != needed {
        return Err(Violation::SeedLength {
            what: "amplification",
            got: amplification.len() as u64,
            needed,
        }
        .into());
    }
    peer.expect_seal().await?;
    let key = cache.amplify(&corrected, &amplification, length)?;
    sink.hold(id, &key)?;
    if let Some(details) = &mut report.details {
        details.secret_bits = length;
    }
    report.secret_bits = length - AUTH_REFILL_BITS;
    peer.send(&Message::Confirmed).await?;
    peer.send_seal().await?;
    // From here the key is held: a failure leaves it to be settled when the channel resumes.
    let settled = async {
        match peer.recv().await? {
            Message::Committed => {}
            other => return Err(Violation::unexpected(&other, "Committed").into()),
        }
        peer.expect_seal().await?;
        commit(peer, sink, id, &key)
    };
    match settled.await {
        Ok(_) => Ok(BlockEnd::Committed(report)),
        Err(error) => Ok(BlockEnd::Held { report, error }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoy_block() -> (BlockSettings, Sifted) {
        let settings = BlockSettings {
            block_bits: 16,
            decoy: Some(DecoySettings {
                mu: [0.5, 0.1, 0.0002],
                p: [0.8, 0.15, 0.05],
                eps_sec: 1e-10,
                eps_cor: 1e-15,
            }),
            eps_sec: 1e-10,
            eps_cor: 1e-15,
            reconciliation: Reconciliation::Cascade,
        };
        let block = Sifted {
            key: Bits::zeros(16),
            key_class: vec![0; 16],
            test: Bits::zeros(6),
            test_class: vec![0, 0, 0, 1, 1, 2],
        };
        (settings, block)
    }

    /// A peer's counts that would wrap when summed are refused class by class first.
    #[test]
    fn test_errors_beyond_a_class_bits_are_refused_before_any_sum() {
        let (settings, block) = decoy_block();
        let id: BlockId = 1;
        let err = statistics(&settings, id, &block, &[u64::MAX, u64::MAX, 1]).unwrap_err();
        assert!(
            matches!(
                err,
                Violation::TooManyErrors {
                    class: 0,
                    bits: 3,
                    ..
                }
            ),
            "{err}"
        );
        let err = statistics(&settings, id, &block, &[0, 3, 0]).unwrap_err();
        assert!(
            matches!(err, Violation::TooManyErrors { class: 1, .. }),
            "{err}"
        );
        let err = statistics(&settings, id, &block, &[0, 0]).unwrap_err();
        assert!(
            matches!(err, Violation::ErrorClasses { classes: 3, got: 2 }),
            "{err}"
        );
        statistics(&settings, id, &block, &[3, 2, 1]).unwrap();
    }
}
