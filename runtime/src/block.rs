//! One block of post-processing, as each side runs it.
//!
//! The measurer (Bob) drives: he opens a block when enough key-basis bits are sifted and
//! discloses his test-basis bits; both sides then compute the same statistics and finite-key
//! bound, and abandon the block at once if no key can come of it. Cascade follows (Bob asks,
//! Alice answers and counts what she discloses), then verification with a 2-universal hash.
//! Keys leave the block only after both transcripts check:
//!
//! 1. Bob seals everything he sent; Alice checks it.
//! 2. Alice computes the length from her own count of disclosed parities, sends the privacy
//!    amplification seed and seals; Bob checks, and recomputes the same length.
//! 3. Bob confirms and seals again; Alice checks before keeping her key.
//!
//! The first [`AUTH_REFILL_BITS`] of every key replace the three seals' pads, so authentication
//! never drains the pre-shared secret while keys are produced.

use std::collections::HashMap;
use std::sync::Arc;

use qkd_postprocess::bits::{Bits, binary_entropy};
use qkd_postprocess::cascade::{CascadePlan, CascadeReport, Corrector, ParityResponder, Shuffles};
use qkd_postprocess::estimate::{
    BasisCounts, DecoySettings, KeyBound, finite_key, finite_key_entangled,
};
use qkd_postprocess::sift::{Sifted, class_counts, test_errors};
use qkd_postprocess::toeplitz::{PlanCache, hash_direct};
use rand::Rng;

use crate::channel::{ChannelError, Peer, Transport};
use crate::messages::{Message, PackedBits};

/// Key bits each successful block returns to authentication: three seals' pads.
pub const AUTH_REFILL_BITS: u64 = 3 * 128;
/// Public seed of the Cascade shuffles (they need not be secret, only fixed in advance).
const SHUFFLE_SEED: u64 = 0x5EED_CA5C_ADE0_0001;
/// Reconciliation inefficiency assumed when deciding whether a block is worth correcting.
const EXPECTED_EC_INEFFICIENCY: f64 = 1.2;

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

/// What one block did, from one side's view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockReport {
    /// Key-basis bits in the block.
    pub key_bits: usize,
    /// Test-basis bits disclosed.
    pub test_bits: usize,
    /// Test-basis errors.
    pub test_errors: u64,
    /// Parities Cascade disclosed.
    pub disclosed_bits: u64,
    /// Cascade round trips.
    pub round_trips: u32,
    /// Bits Cascade corrected (measurer only).
    pub corrected_bits: u64,
    /// Secret bits delivered (after the authentication refill).
    pub secret_bits: u64,
    /// Why the block gave no key, if it did not.
    pub aborted: Option<String>,
}

/// A block's key (if any) and its report.
#[derive(Debug, Default)]
pub struct BlockOutcome {
    /// The secret key, if the block produced one.
    pub key: Option<Bits>,
    /// What happened.
    pub report: BlockReport,
}

impl BlockOutcome {
    /// A block that gave no key, and why.
    pub(crate) fn abandoned(mut report: BlockReport, reason: impl Into<String>) -> Self {
        report.aborted = Some(reason.into());
        BlockOutcome { key: None, report }
    }
}

/// Sifted bits waiting to form blocks.
#[derive(Debug, Default)]
pub struct Pool(Sifted);

impl Pool {
    /// Adds newly sifted bits.
    pub fn add(&mut self, sifted: &Sifted) {
        self.0.key.extend(&sifted.key);
        self.0.key_class.extend_from_slice(&sifted.key_class);
        self.0.test.extend(&sifted.test);
        self.0.test_class.extend_from_slice(&sifted.test_class);
    }

    /// Key-basis bits waiting.
    pub fn key_bits(&self) -> usize {
        self.0.key.len()
    }

    /// Takes the first `n` key bits and every test bit; the rest of the key bits stay.
    pub fn take_block(&mut self, n: usize) -> Sifted {
        let key = self.0.key.truncated(n);
        let rest = self.0.key.range(n, self.0.key.len());
        let key_class = self
            .0
            .key_class
            .drain(..n.min(self.0.key_class.len()))
            .collect();
        let block = Sifted {
            key,
            key_class,
            test: std::mem::take(&mut self.0.test),
            test_class: std::mem::take(&mut self.0.test_class),
        };
        self.0.key = rest;
        block
    }
}

/// What blocks of a session share: Cascade shuffles (permutations drawn once per key length,
/// the latest plan kept so the next block's reuses what it can) and FFT plans.
#[derive(Debug, Default)]
pub struct BlockCache {
    shuffles: HashMap<usize, Arc<Shuffles>>,
    fft: PlanCache,
}

impl BlockCache {
    fn shuffles(&mut self, n: usize, plan: &CascadePlan) -> Result<Arc<Shuffles>, ChannelError> {
        let shuffles = match self.shuffles.get(&n) {
            Some(s) if s.block_sizes() == plan.block_sizes.as_slice() => return Ok(Arc::clone(s)),
            Some(s) => s.replan(plan).map_err(ChannelError::protocol)?,
            None => Shuffles::new(n, plan, SHUFFLE_SEED).map_err(ChannelError::protocol)?,
        };
        let shuffles = Arc::new(shuffles);
        self.shuffles.insert(n, Arc::clone(&shuffles));
        Ok(shuffles)
    }

    fn amplify(&mut self, key: &Bits, seed: &Bits, length: u64) -> Result<Bits, ChannelError> {
        self.fft
            .hasher(key.len(), length as usize)
            .hash(key, seed, length as usize)
            .map_err(ChannelError::protocol)
    }
}

/// The numbers both sides derive, identically, from a block's public data.
#[derive(Debug, Clone, Copy)]
struct Statistics {
    bound: KeyBound,
    qber_estimate: f64,
}

fn statistics(
    settings: &BlockSettings,
    block: &Sifted,
    errors: &[u64],
) -> Result<Statistics, ChannelError> {
    let classes = settings.intensity_classes();
    if errors.len() != classes {
        return Err(ChannelError::Protocol(format!(
            "{} error counts for {classes} classes",
            errors.len()
        )));
    }
    let total_errors: u64 = errors.iter().sum();
    let test_bits = block.test.len() as u64;
    let bound = match &settings.decoy {
        Some(decoy) => {
            let as_array = |v: Vec<u64>| -> [u64; 3] {
                std::array::from_fn(|k| v.get(k).copied().unwrap_or(0))
            };
            let key = BasisCounts {
                n: as_array(class_counts(&block.key_class, 3)),
                m: [0; 3],
            };
            let test = BasisCounts {
                n: as_array(class_counts(&block.test_class, 3)),
                m: as_array(errors.to_vec()),
            };
            finite_key(&key, &test, decoy).map_err(ChannelError::protocol)?
        }
        None => finite_key_entangled(
            block.key.len() as u64,
            test_bits,
            total_errors,
            settings.eps_sec,
            settings.eps_cor,
        ),
    };
    let qber_estimate = if test_bits > 0 {
        (total_errors as f64 / test_bits as f64).max(0.002)
    } else {
        0.5
    };
    Ok(Statistics {
        bound,
        qber_estimate,
    })
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

/// Final key length once Cascade disclosed `disclosed` parities; `None` if no key beyond the
/// authentication refill.
fn final_length(stats: &Statistics, disclosed: u64) -> Option<u64> {
    stats
        .bound
        .length(disclosed as f64)
        .filter(|&l| l > AUTH_REFILL_BITS)
}

fn packed_to_bits(packed: &PackedBits, what: &str) -> Result<Bits, ChannelError> {
    packed
        .to_bits()
        .ok_or_else(|| ChannelError::Protocol(format!("malformed {what}")))
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

/// Alice's side of one block: answer, verify, amplify.
pub async fn prepare_block<T: Transport>(
    peer: &mut Peer<T>,
    settings: &BlockSettings,
    block: &Sifted,
    disclosed_test: &PackedBits,
    cache: &mut BlockCache,
    rng: &mut impl Rng,
) -> Result<BlockOutcome, ChannelError> {
    let n = block.key.len();
    let disclosed = packed_to_bits(disclosed_test, "test bits")?;
    let errors = test_errors(block, &disclosed, settings.intensity_classes())
        .map_err(ChannelError::protocol)?;
    peer.send(&Message::TestErrors(errors.clone())).await?;
    let mut report = BlockReport {
        key_bits: n,
        test_bits: block.test.len(),
        test_errors: errors.iter().sum(),
        ..BlockReport::default()
    };
    let stats = statistics(settings, block, &errors)?;
    if !worth_correcting(&stats, n) {
        peer.discard_transcripts();
        return Ok(BlockOutcome::abandoned(report, "the bound leaves no key"));
    }
    let plan = CascadePlan::for_qber(n, stats.qber_estimate);
    let shuffles = cache.shuffles(n, &plan)?;
    let mut responder =
        ParityResponder::new(&block.key, &shuffles).map_err(ChannelError::protocol)?;
    loop {
        match peer.recv().await? {
            Message::Parities(query) => {
                let answer = responder.answer(&query).map_err(ChannelError::protocol)?;
                report.round_trips += 1;
                peer.send(&Message::Answer(answer)).await?;
            }
            Message::Corrected => break,
            other => {
                return Err(ChannelError::Protocol(format!(
                    "{} during Cascade",
                    other.name()
                )));
            }
        }
    }
    report.disclosed_bits = responder.disclosed();
    let t = settings.verification_bits();
    let seed = Bits::from_word_fn(n + t - 1, || rng.next_u64());
    let tag = hash_direct(&block.key, &seed, t).map_err(ChannelError::protocol)?;
    peer.send(&Message::Verify {
        seed: PackedBits::from(&seed),
        tag: PackedBits::from(&tag),
    })
    .await?;
    match peer.recv().await? {
        Message::Verified(true) => {}
        Message::Verified(false) => {
            peer.discard_transcripts();
            return Ok(BlockOutcome::abandoned(report, "verification failed"));
        }
        other => {
            return Err(ChannelError::unexpected(&other, "Verified"));
        }
    }
    peer.expect_seal().await?;
    let Some(length) = final_length(&stats, report.disclosed_bits) else {
        peer.abort("no key after error correction").await;
        peer.discard_transcripts();
        return Ok(BlockOutcome::abandoned(
            report,
            "no key after error correction",
        ));
    };
    let seed = Bits::from_word_fn(n + length as usize - 1, || rng.next_u64());
    let key = cache.amplify(&block.key, &seed, length)?;
    peer.send(&Message::Amplify {
        seed: PackedBits::from(&seed),
        length,
    })
    .await?;
    peer.send_seal().await?;
    match peer.recv().await? {
        Message::Confirmed => {}
        other => {
            return Err(ChannelError::unexpected(&other, "Confirmed"));
        }
    }
    peer.expect_seal().await?;
    Ok(deliver(peer, &key, report))
}

/// Refills the authentication pads from the head of an amplified key and hands out the rest.
fn deliver<T: Transport>(peer: &mut Peer<T>, key: &Bits, mut report: BlockReport) -> BlockOutcome {
    let (refill, delivered) = split_refill(key);
    peer.refill_auth(&refill);
    report.secret_bits = delivered.len() as u64;
    BlockOutcome {
        key: Some(delivered),
        report,
    }
}

/// Bob's side of one block: correct, verify, amplify.
pub async fn measure_block<T: Transport>(
    peer: &mut Peer<T>,
    settings: &BlockSettings,
    number: u64,
    block: Sifted,
    cache: &mut BlockCache,
) -> Result<BlockOutcome, ChannelError> {
    let n = block.key.len();
    peer.send(&Message::OpenBlock {
        block: number,
        test_bits: PackedBits::from(&block.test),
    })
    .await?;
    let errors = match peer.recv().await? {
        Message::TestErrors(errors) => errors,
        other => {
            return Err(ChannelError::unexpected(&other, "TestErrors"));
        }
    };
    let mut report = BlockReport {
        key_bits: n,
        test_bits: block.test.len(),
        test_errors: errors.iter().sum(),
        ..BlockReport::default()
    };
    let stats = statistics(settings, &block, &errors)?;
    if !worth_correcting(&stats, n) {
        peer.discard_transcripts();
        return Ok(BlockOutcome::abandoned(report, "the bound leaves no key"));
    }
    let plan = CascadePlan::for_qber(n, stats.qber_estimate);
    let shuffles = cache.shuffles(n, &plan)?;
    // The block's remaining use is its key, which Cascade corrects in place.
    let (corrected, cascade) = correct(peer, block.key, &shuffles).await?;
    report.disclosed_bits = cascade.disclosed_bits;
    report.round_trips = cascade.round_trips;
    report.corrected_bits = cascade.corrected;
    let (seed, tag) = match peer.recv().await? {
        Message::Verify { seed, tag } => {
            (packed_to_bits(&seed, "seed")?, packed_to_bits(&tag, "tag")?)
        }
        other => {
            return Err(ChannelError::unexpected(&other, "Verify"));
        }
    };
    let t = settings.verification_bits();
    let matches =
        seed.len() == n + t - 1 && hash_direct(&corrected, &seed, t).is_ok_and(|mine| mine == tag);
    peer.send(&Message::Verified(matches)).await?;
    if !matches {
        peer.discard_transcripts();
        return Ok(BlockOutcome::abandoned(report, "verification failed"));
    }
    peer.send_seal().await?;
    let (seed, length) = match peer.recv().await {
        Ok(Message::Amplify { seed, length }) => (packed_to_bits(&seed, "seed")?, length),
        Err(ChannelError::PeerAborted(reason)) => {
            peer.discard_transcripts();
            return Ok(BlockOutcome::abandoned(report, reason));
        }
        Ok(other) => {
            return Err(ChannelError::unexpected(&other, "Amplify"));
        }
        Err(e) => return Err(e),
    };
    if Some(length) != final_length(&stats, report.disclosed_bits)
        || seed.len() as u64 != n as u64 + length - 1
    {
        peer.abort("amplification length disagrees").await;
        return Err(ChannelError::Protocol(
            "the peer's key length disagrees with ours".into(),
        ));
    }
    peer.expect_seal().await?;
    let key = cache.amplify(&corrected, &seed, length)?;
    peer.send(&Message::Confirmed).await?;
    peer.send_seal().await?;
    Ok(deliver(peer, &key, report))
}

/// Runs Cascade from Bob's side over the channel.
async fn correct<T: Transport>(
    peer: &mut Peer<T>,
    key: Bits,
    shuffles: &Shuffles,
) -> Result<(Bits, CascadeReport), ChannelError> {
    let mut corrector = Corrector::new(key, shuffles).map_err(ChannelError::protocol)?;
    while let Some(query) = corrector.next_query() {
        peer.send(&Message::Parities(query)).await?;
        match peer.recv().await? {
            Message::Answer(answer) => corrector.absorb(&answer).map_err(ChannelError::protocol)?,
            other => {
                return Err(ChannelError::unexpected(&other, "Answer"));
            }
        }
    }
    peer.send(&Message::Corrected).await?;
    Ok(corrector.finish())
}
