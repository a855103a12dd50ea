//! Cascade error correction, as a two-party protocol of batched parity questions.
//!
//! Bob (the [`Corrector`], holding the noisy key) asks; Alice (the [`ParityResponder`], holding
//! the reference key) answers with parities of ranges of her key in a pass's public shuffle
//! order. Every parity Alice discloses is counted. To disclose as few as possible:
//! - top-level block parities of every pass are asked in the first message (they would all be
//!   disclosed anyway), one round trip instead of one per pass;
//! - the last block of every pass after the first is inferred from the key's total parity;
//! - a binary search asks only for left halves; right halves are inferred, and every parity
//!   learned is remembered, so a block searched again after a cascade costs only what is new;
//! - block sizes follow the estimated QBER: small blocks first, then a pass of blocks four
//!   times larger, then passes of two half-key blocks (BICONF style) that catch the rare
//!   remaining error pairs.
//!
//! Passes are corrected in order; a bit flipped in a later pass reopens the blocks it belongs to
//! in earlier passes (the cascade effect). All searches of a round go into one message.
//!
//! With true answers every flip corrects an error, so no bit is flipped twice. Answers that
//! contradict each other (altered in flight, or a lying peer) could make the cascade flip a bit
//! back and forth for ever; the corrector stops at the first bit it would flip twice, reports
//! the contradiction, and leaves the key for verification to refuse.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use qkd_units::mix::{GOLDEN_GAMMA, mix64};

use zeroize::Zeroize;

use crate::bits::Bits;

/// Largest key length (ranges pack into 28-bit fields).
pub const MAX_BITS: usize = (1 << 28) - 1;

/// A range of one pass's shuffle order, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Range {
    /// Pass index.
    pub pass: u8,
    /// First position in the pass's order.
    pub start: u32,
    /// One past the last position.
    pub end: u32,
}

/// Bob's questions of one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParityQuery {
    /// Ranges whose parity of Alice's key Bob needs.
    pub ranges: Vec<Range>,
}

/// Alice's answers, one parity bit per range, packed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParityAnswer {
    /// Parities, bit `i` answering range `i`.
    pub parities: Vec<u64>,
    /// Number of parities.
    pub count: u32,
}

/// A protocol violation: the other side sent something that cannot belong to this run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cascade: {0}")]
pub struct CascadeError(String);

/// Public randomness for shuffles (SplitMix64). Never used for secrets.
struct PublicRng(u64);

impl PublicRng {
    fn next(&mut self) -> u64 {
        let z = mix64(self.0);
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        z
    }

    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// Block sizes per pass, chosen for a key length and an estimated QBER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CascadePlan {
    /// Block size of each pass.
    pub block_sizes: Vec<usize>,
}

/// Passes of two half-key blocks at the end.
const HALF_KEY_PASSES: usize = 11;

impl CascadePlan {
    /// The plan for `n` bits at estimated QBER `qber`.
    ///
    /// Measured on 10^5-bit frames (`qkd bench ec`): first blocks of about 1.2 expected errors
    /// (1.5 at 5 % QBER) and second blocks eight times larger minimise disclosure (smaller
    /// blocks cut round trips but cost efficiency); a third pass of eighth-key blocks catches
    /// the remaining errors in parallel before the half-key passes confirm.
    pub fn for_qber(n: usize, qber: f64) -> Self {
        let q = qber.clamp(1e-4, 0.25);
        let half = (n / 2).max(1);
        let errors_per_block = (1.2 + 15.0 * (q - 0.03)).clamp(1.2, 1.5);
        // At least 4 bits, but never beyond half the key (which wins for keys under 8 bits).
        let first = ((errors_per_block / q).round() as usize).max(4).min(half);
        let second = (8 * first).min(half);
        let eighth = (n / 8).max(second).min(half);
        let mut block_sizes = vec![first, second, eighth];
        block_sizes.extend(std::iter::repeat_n(half, HALF_KEY_PASSES));
        CascadePlan { block_sizes }
    }
}

/// A key laid out in one pass's shuffle order, packed 64 bits to a word: the parity of any
/// range costs one XOR per 64 bits, and correcting a bit costs one bit flip.
#[derive(Clone)]
struct Permuted(Vec<u64>);

impl std::fmt::Debug for Permuted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Permuted({} words)", self.0.len())
    }
}

impl Drop for Permuted {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Permuted {
    fn new(key: &Bits, order: &[u32]) -> Self {
        let mut words = vec![0u64; order.len().div_ceil(64)];
        for (word, chunk) in words.iter_mut().zip(order.chunks(64)) {
            for (i, &b) in chunk.iter().enumerate() {
                *word |= u64::from(key.get(b as usize)) << i;
            }
        }
        Permuted(words)
    }

    #[inline]
    fn range(&self, r: Range) -> bool {
        let (s, e) = (r.start as usize, r.end as usize);
        let (first, last) = (s / 64, (e - 1) / 64);
        let low = !0u64 << (s % 64);
        let high = !0u64 >> (63 - (e - 1) % 64);
        let acc = if first == last {
            self.0[first] & low & high
        } else {
            self.0[first + 1..last]
                .iter()
                .fold((self.0[first] & low) ^ (self.0[last] & high), |acc, w| {
                    acc ^ w
                })
        };
        acc.count_ones() % 2 == 1
    }

    #[inline]
    fn flip(&mut self, position: usize) {
        self.0[position / 64] ^= 1 << (position % 64);
    }
}

/// The public permutations of every pass for one key length: independent of block sizes, so
/// one set serves every block of that length whatever its QBER.
#[derive(Debug)]
pub struct Permutations {
    n: usize,
    /// `order[p][i]`: key index at position `i` of pass `p`.
    order: Vec<Vec<u32>>,
    /// `position[p][b]`: position of key index `b` in pass `p`.
    position: Vec<Vec<u32>>,
}

impl Permutations {
    /// `passes` permutations of `n` indices drawn from the public `seed`.
    pub fn new(n: usize, passes: usize, seed: u64) -> Result<Self, CascadeError> {
        if n == 0 || n > MAX_BITS {
            return Err(CascadeError(format!(
                "key length {n} outside 1..={MAX_BITS}"
            )));
        }
        if passes == 0 || passes > 64 {
            return Err(CascadeError(format!("{passes} passes: give 1 to 64")));
        }
        let mut rng = PublicRng(seed);
        let mut order = Vec::with_capacity(passes);
        let mut position = Vec::with_capacity(passes);
        for _ in 0..passes {
            let mut o: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                o.swap(i, rng.below(i + 1));
            }
            let mut p = vec![0u32; n];
            for (i, &b) in o.iter().enumerate() {
                p[b as usize] = i as u32;
            }
            order.push(o);
            position.push(p);
        }
        Ok(Permutations { n, order, position })
    }

    /// Number of passes these permutations serve.
    pub fn passes(&self) -> usize {
        self.order.len()
    }
}

/// The public shuffles of every pass with the block sizes of one plan.
#[derive(Debug, Clone)]
pub struct Shuffles {
    n: usize,
    block_sizes: Vec<usize>,
    permutations: Arc<Permutations>,
    /// For passes of at most two blocks: the key indices of the first block, as a mask.
    first_block_mask: Vec<Option<Arc<Bits>>>,
}

impl Shuffles {
    /// Shuffles for `n` bits following `plan`, drawn from the public `seed`.
    pub fn new(n: usize, plan: &CascadePlan, seed: u64) -> Result<Self, CascadeError> {
        let permutations = Arc::new(Permutations::new(n, plan.block_sizes.len(), seed)?);
        Self::with_permutations(permutations, plan)
    }

    /// Shuffles reusing `permutations` (which must cover the plan's passes).
    pub fn with_permutations(
        permutations: Arc<Permutations>,
        plan: &CascadePlan,
    ) -> Result<Self, CascadeError> {
        Self::build(permutations, plan, None)
    }

    /// The same permutations with another plan, reusing the masks of passes whose block size
    /// is unchanged (the half-key passes, whatever the QBER).
    pub fn replan(&self, plan: &CascadePlan) -> Result<Self, CascadeError> {
        Self::build(Arc::clone(&self.permutations), plan, Some(self))
    }

    fn build(
        permutations: Arc<Permutations>,
        plan: &CascadePlan,
        previous: Option<&Shuffles>,
    ) -> Result<Self, CascadeError> {
        let n = permutations.n;
        if plan.block_sizes.is_empty()
            || plan.block_sizes.len() > permutations.passes()
            || plan.block_sizes.contains(&0)
        {
            return Err(CascadeError(format!(
                "a plan needs 1 to {} passes of non-empty blocks",
                permutations.passes()
            )));
        }
        let first_block_mask = plan
            .block_sizes
            .iter()
            .enumerate()
            .map(|(p, &k)| {
                let reusable = previous
                    .filter(|old| old.block_sizes.get(p) == Some(&k))
                    .and_then(|old| old.first_block_mask[p].clone());
                if reusable.is_some() {
                    return reusable;
                }
                (n.div_ceil(k) <= 2).then(|| {
                    let mut mask = Bits::zeros(n);
                    for &b in &permutations.order[p][..k.min(n)] {
                        mask.set(b as usize, true);
                    }
                    Arc::new(mask)
                })
            })
            .collect();
        Ok(Shuffles {
            n,
            block_sizes: plan.block_sizes.clone(),
            permutations,
            first_block_mask,
        })
    }

    /// Key length the shuffles are for.
    pub fn len(&self) -> usize {
        self.n
    }

    /// `true` never: shuffles exist for non-empty keys only.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Number of passes.
    pub fn passes(&self) -> usize {
        self.block_sizes.len()
    }

    /// Block size of each pass.
    pub fn block_sizes(&self) -> &[usize] {
        &self.block_sizes
    }

    fn blocks(&self, pass: usize) -> usize {
        self.n.div_ceil(self.block_sizes[pass])
    }

    /// Block of pass `pass` holding position `pos` (32-bit division: positions and block sizes
    /// fit, and it is several times cheaper than 64-bit division on this path).
    #[inline]
    fn block_of(&self, pass: usize, pos: u32) -> usize {
        (pos / self.block_sizes[pass] as u32) as usize
    }

    fn block_range(&self, pass: usize, block: usize) -> Range {
        let k = self.block_sizes[pass];
        Range {
            pass: pass as u8,
            start: (block * k) as u32,
            end: ((block + 1) * k).min(self.n) as u32,
        }
    }

    /// Parities of every block of a pass: from the first-block mask for half-key passes,
    /// else from the key laid out in the pass's order (built here if not given).
    fn block_parities(&self, key: &Bits, pass: usize, laid_out: Option<&Permuted>) -> Vec<bool> {
        if let Some(mask) = &self.first_block_mask[pass] {
            let first = key
                .words()
                .iter()
                .zip(mask.words())
                .fold(0, |acc, (a, b)| acc ^ (a & b))
                .count_ones()
                % 2
                == 1;
            return if self.blocks(pass) == 1 {
                vec![first]
            } else {
                vec![first, first ^ key.parity()]
            };
        }
        let built;
        let permuted = if let Some(p) = laid_out {
            p
        } else {
            built = Permuted::new(key, &self.permutations.order[pass]);
            &built
        };
        (0..self.blocks(pass))
            .map(|b| permuted.range(self.block_range(pass, b)))
            .collect()
    }

    /// Parity of `key` over a range of a pass's order, gathered bit by bit: cheaper than laying
    /// the key out when a pass sees a single search (the half-key passes).
    fn gathered_parity(&self, key: &Bits, r: Range) -> bool {
        self.permutations.order[usize::from(r.pass)][r.start as usize..r.end as usize]
            .iter()
            .fold(false, |acc, &b| acc ^ key.get(b as usize))
    }

    /// Whether a pass is handled without laying the key out (half-key passes).
    fn gathers(&self, pass: usize) -> bool {
        self.first_block_mask[pass].is_some()
    }

    fn check_key(&self, key: &Bits) -> Result<(), CascadeError> {
        if key.len() == self.n {
            Ok(())
        } else {
            Err(CascadeError(format!(
                "key of {} bits, shuffles for {}",
                key.len(),
                self.n
            )))
        }
    }

    fn check(&self, r: Range) -> Result<(), CascadeError> {
        if usize::from(r.pass) < self.passes() && r.start < r.end && r.end as usize <= self.n {
            Ok(())
        } else {
            Err(CascadeError(format!(
                "range {r:?} is outside the key of {} bits",
                self.n
            )))
        }
    }
}

/// Alice's side: answers parity questions about her key and counts what she discloses.
pub struct ParityResponder<'a> {
    key: &'a Bits,
    shuffles: &'a Shuffles,
    /// Block parities of each pass, computed when first asked.
    blocks: Vec<Option<Vec<bool>>>,
    /// The key in each pass's order, built when that pass is first asked about.
    laid_out: Vec<Option<Permuted>>,
    disclosed: u64,
}

/// Sizes and counts only: the key, its layouts and its parities stay out of logs.
impl std::fmt::Debug for ParityResponder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParityResponder")
            .field("bits", &self.key.len())
            .field("disclosed", &self.disclosed)
            .finish_non_exhaustive()
    }
}

impl Drop for ParityResponder<'_> {
    fn drop(&mut self) {
        for parities in self.blocks.iter_mut().flatten() {
            parities.zeroize();
        }
    }
}

impl<'a> ParityResponder<'a> {
    /// A responder for `key`, which must have the shuffles' length.
    pub fn new(key: &'a Bits, shuffles: &'a Shuffles) -> Result<Self, CascadeError> {
        shuffles.check_key(key)?;
        Ok(ParityResponder {
            key,
            shuffles,
            blocks: vec![None; shuffles.passes()],
            laid_out: vec![None; shuffles.passes()],
            disclosed: 0,
        })
    }

    /// Parities disclosed so far.
    pub fn disclosed(&self) -> u64 {
        self.disclosed
    }

    /// Answers one round of questions.
    pub fn answer(&mut self, query: &ParityQuery) -> Result<ParityAnswer, CascadeError> {
        let mut answer = ParityAnswer {
            parities: vec![0; query.ranges.len().div_ceil(64)],
            count: query.ranges.len() as u32,
        };
        for (i, &r) in query.ranges.iter().enumerate() {
            self.shuffles.check(r)?;
            let pass = usize::from(r.pass);
            let k = self.shuffles.block_sizes[pass] as u32;
            let whole_block =
                r.start % k == 0 && (r.end - r.start == k || r.end as usize == self.shuffles.n);
            let parity = if whole_block && self.shuffles.gathers(pass) {
                let (key, shuffles) = (self.key, self.shuffles);
                self.blocks[pass].get_or_insert_with(|| shuffles.block_parities(key, pass, None))
                    [self.shuffles.block_of(pass, r.start)]
            } else if self.shuffles.gathers(pass) {
                self.shuffles.gathered_parity(self.key, r)
            } else {
                let (key, order) = (self.key, &self.shuffles.permutations.order[pass]);
                self.laid_out[pass]
                    .get_or_insert_with(|| Permuted::new(key, order))
                    .range(r)
            };
            if parity {
                answer.parities[i / 64] |= 1 << (i % 64);
            }
        }
        self.disclosed += query.ranges.len() as u64;
        Ok(answer)
    }
}

/// An interval of a block still holding an odd number of errors.
#[derive(Debug, Clone, Copy)]
struct Search {
    start: u32,
    end: u32,
    /// Node of the block's search tree this interval is.
    node: u32,
    alice: bool,
    bob: bool,
}

/// Per-pass state on Bob's side.
#[derive(Clone)]
struct PassState {
    alice: Vec<Option<bool>>,
    bob: Vec<bool>,
    /// Bob's key in this pass's order, built when the pass first needs it.
    laid_out: Option<Permuted>,
    /// Alice's parities learned inside blocks, allocated with the first search.
    known: Option<KnownParities>,
    search: Vec<Option<Search>>,
    /// Whether the block is on the work list (at most once).
    queued: Vec<bool>,
}

impl Drop for PassState {
    fn drop(&mut self) {
        self.bob.zeroize();
    }
}

/// Alice's parities Bob has learned in one pass, by block and node of the block's implicit
/// binary search tree (heap numbering: the block is node 1, node `i` splits into `2i`, `2i+1`).
/// Small trees live in an array; the few nodes touched in half-key blocks live in a map.
#[derive(Debug, Clone)]
enum KnownParities {
    /// 0 unknown, 1 even, 2 odd, at `block · nodes_per_block + node`.
    Dense {
        cells: Vec<u8>,
        nodes_per_block: usize,
    },
    Sparse(HashMap<(usize, usize), bool>),
}

/// Largest dense store, in cells.
const DENSE_LIMIT: usize = 1 << 20;

impl KnownParities {
    fn new(blocks: usize, block_size: usize) -> Self {
        let nodes_per_block = 2 * block_size.next_power_of_two();
        if blocks * nodes_per_block <= DENSE_LIMIT && blocks > 2 {
            KnownParities::Dense {
                cells: vec![0; blocks * nodes_per_block],
                nodes_per_block,
            }
        } else {
            KnownParities::Sparse(HashMap::new())
        }
    }

    #[inline]
    fn get(&self, block: usize, node: usize) -> Option<bool> {
        match self {
            KnownParities::Dense {
                cells,
                nodes_per_block,
            } => match cells[block * nodes_per_block + node] {
                0 => None,
                v => Some(v == 2),
            },
            KnownParities::Sparse(map) => map.get(&(block, node)).copied(),
        }
    }

    #[inline]
    fn set(&mut self, block: usize, node: usize, parity: bool) {
        match self {
            KnownParities::Dense {
                cells,
                nodes_per_block,
            } => cells[block * *nodes_per_block + node] = 1 + u8::from(parity),
            KnownParities::Sparse(map) => {
                map.insert((block, node), parity);
            }
        }
    }
}

/// What one run of Cascade did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CascadeReport {
    /// Parities Alice disclosed.
    pub disclosed_bits: u64,
    /// Question-answer exchanges.
    pub round_trips: u32,
    /// Bits Bob flipped.
    pub corrected: u64,
    /// The answers contradicted each other: correction stopped early, the key is not to be
    /// trusted (verification will refuse it).
    pub contradicted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Start,
    AwaitingTop,
    Correcting,
    Done,
}

/// Bob's side: drives the questions and corrects his key.
pub struct Corrector<'a> {
    key: Bits,
    shuffles: &'a Shuffles,
    passes: Vec<PassState>,
    active: usize,
    /// Blocks with a live search, as (pass, block).
    work: Vec<(u8, u32)>,
    /// The questions in flight: range, pass, block and tree node of each.
    asked: Vec<(Range, u32, u32)>,
    stage: Stage,
    total_parity: Option<bool>,
    /// Bits flipped so far: with true answers none is flipped twice.
    flipped: Bits,
    report: CascadeReport,
}

/// Sizes and counts only: the key, its layouts and its parities stay out of logs.
impl std::fmt::Debug for Corrector<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Corrector")
            .field("bits", &self.key.len())
            .field("passes", &self.passes.len())
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl<'a> Corrector<'a> {
    /// A corrector for Bob's `key`, which must have the shuffles' length.
    pub fn new(key: Bits, shuffles: &'a Shuffles) -> Result<Self, CascadeError> {
        shuffles.check_key(&key)?;
        let passes = (0..shuffles.passes())
            .map(|p| PassState {
                alice: vec![None; shuffles.blocks(p)],
                bob: Vec::new(),
                laid_out: None,
                known: None,
                search: vec![None; shuffles.blocks(p)],
                queued: vec![false; shuffles.blocks(p)],
            })
            .collect();
        Ok(Corrector {
            key,
            shuffles,
            passes,
            active: 0,
            work: Vec::new(),
            asked: Vec::new(),
            stage: Stage::Start,
            total_parity: None,
            flipped: Bits::zeros(shuffles.len()),
            report: CascadeReport::default(),
        })
    }

    /// The next round of questions, or `None` when correction is complete.
    pub fn next_query(&mut self) -> Option<ParityQuery> {
        match self.stage {
            Stage::Start => {
                let mut ranges = Vec::new();
                for p in 0..self.shuffles.passes() {
                    let blocks = self.shuffles.blocks(p);
                    // After the first pass, the last block follows from the total parity.
                    let asked = if p == 0 { blocks } else { blocks - 1 };
                    ranges.extend((0..asked).map(|b| self.shuffles.block_range(p, b)));
                }
                self.stage = Stage::AwaitingTop;
                Some(self.ask(ranges.into_iter().map(|r| (r, 0, 1)).collect()))
            }
            Stage::AwaitingTop | Stage::Done => None,
            Stage::Correcting => loop {
                let questions = self.advance();
                if !questions.is_empty() {
                    return Some(self.ask(questions));
                }
                if self.active + 1 >= self.shuffles.passes() {
                    self.stage = Stage::Done;
                    return None;
                }
                self.active += 1;
                self.open_pass(self.active);
            },
        }
    }

    fn ask(&mut self, questions: Vec<(Range, u32, u32)>) -> ParityQuery {
        self.report.round_trips += 1;
        self.report.disclosed_bits += questions.len() as u64;
        let query = ParityQuery {
            ranges: questions.iter().map(|q| q.0).collect(),
        };
        self.asked = questions;
        query
    }

    /// Takes Alice's answers to the last question.
    pub fn absorb(&mut self, answer: &ParityAnswer) -> Result<(), CascadeError> {
        if answer.count as usize != self.asked.len()
            || answer.parities.len() != self.asked.len().div_ceil(64)
        {
            return Err(CascadeError(format!(
                "{} answers to {} questions",
                answer.count,
                self.asked.len()
            )));
        }
        let asked = std::mem::take(&mut self.asked);
        let parity = |i: usize| (answer.parities[i / 64] >> (i % 64)) & 1 == 1;
        if self.stage == Stage::AwaitingTop {
            self.learn_top_level(&asked, parity);
            self.open_pass(0);
            self.stage = Stage::Correcting;
            return Ok(());
        }
        for (i, &(range, block, node)) in asked.iter().enumerate() {
            let p = usize::from(range.pass);
            if let Some(known) = &mut self.passes[p].known {
                known.set(block as usize, node as usize, parity(i));
            }
        }
        Ok(())
    }

    fn learn_top_level(&mut self, asked: &[(Range, u32, u32)], parity: impl Fn(usize) -> bool) {
        for (i, &(range, _, _)) in asked.iter().enumerate() {
            let p = usize::from(range.pass);
            let b = self.shuffles.block_of(p, range.start);
            self.passes[p].alice[b] = Some(parity(i));
        }
        let total = self.passes[0]
            .alice
            .iter()
            .fold(false, |acc, a| acc ^ a.unwrap_or(false));
        self.total_parity = Some(total);
        for p in 1..self.shuffles.passes() {
            let state = &mut self.passes[p];
            let last = state.alice.len() - 1;
            let others = state.alice[..last]
                .iter()
                .fold(false, |acc, a| acc ^ a.unwrap_or(false));
            state.alice[last] = Some(total ^ others);
        }
    }

    /// Starts correcting pass `p`: Bob's block parities and a search in every odd block.
    fn open_pass(&mut self, p: usize) {
        if !self.shuffles.gathers(p) {
            self.passes[p].laid_out = Some(Permuted::new(
                &self.key,
                &self.shuffles.permutations.order[p],
            ));
        }
        let bob = self
            .shuffles
            .block_parities(&self.key, p, self.passes[p].laid_out.as_ref());
        for (b, &parity) in bob.iter().enumerate() {
            let alice = self.passes[p].alice[b].unwrap_or(parity);
            if alice != parity {
                self.start_search(p, b, alice, parity);
            }
        }
        self.passes[p].bob = bob;
    }

    fn start_search(&mut self, p: usize, b: usize, alice: bool, bob: bool) {
        let r = self.shuffles.block_range(p, b);
        // Searches start from `open_pass` or from `flip` in a pass already opened, so a pass
        // that needs its key laid out has it by now.
        let state = &mut self.passes[p];
        if state.known.is_none() {
            state.known = Some(KnownParities::new(
                state.alice.len(),
                self.shuffles.block_sizes[p],
            ));
        }
        if !self.passes[p].queued[b] {
            self.passes[p].queued[b] = true;
            self.work.push((p as u8, b as u32));
        }
        self.passes[p].search[b] = Some(Search {
            start: r.start,
            end: r.end,
            node: 1,
            alice,
            bob,
        });
    }

    /// Moves every live search as far as known parities allow; returns the questions left.
    fn advance(&mut self) -> Vec<(Range, u32, u32)> {
        let mut questions = Vec::new();
        let mut i = 0;
        while i < self.work.len() {
            let (p, b) = self.work[i];
            let (pu, bu) = (usize::from(p), b as usize);
            let Some(mut s) = self.passes[pu].search[bu] else {
                self.passes[pu].queued[bu] = false;
                self.work.swap_remove(i);
                continue;
            };
            loop {
                if s.end - s.start == 1 {
                    self.passes[pu].search[bu] = None;
                    self.passes[pu].queued[bu] = false;
                    self.work.swap_remove(i);
                    let bit = self.shuffles.permutations.order[pu][s.start as usize] as usize;
                    if self.flipped.get(bit) {
                        self.contradicted();
                        return Vec::new();
                    }
                    self.flip(bit);
                    break;
                }
                let mid = s.start + (s.end - s.start) / 2;
                let left = Range {
                    pass: p,
                    start: s.start,
                    end: mid,
                };
                let (left_node, right_node) = (2 * s.node, 2 * s.node + 1);
                let state = &mut self.passes[pu];
                let Some(known) = state.known.as_mut() else {
                    break;
                };
                let Some(alice_left) = known.get(bu, left_node as usize) else {
                    state.search[bu] = Some(s);
                    questions.push((left, b, left_node));
                    i += 1;
                    break;
                };
                // The right half's parity follows from the interval's and the left half's.
                known.set(bu, right_node as usize, s.alice ^ alice_left);
                let bob_left = match &state.laid_out {
                    Some(laid_out) => laid_out.range(left),
                    None => self.shuffles.gathered_parity(&self.key, left),
                };
                s = if alice_left == bob_left {
                    Search {
                        start: mid,
                        end: s.end,
                        node: right_node,
                        alice: s.alice ^ alice_left,
                        bob: s.bob ^ bob_left,
                    }
                } else {
                    Search {
                        start: s.start,
                        end: mid,
                        node: left_node,
                        alice: alice_left,
                        bob: bob_left,
                    }
                };
            }
        }
        questions
    }

    /// Stops correcting: the answers cannot all be true.
    fn contradicted(&mut self) {
        self.report.contradicted = true;
        self.work.clear();
        self.active = self.shuffles.passes() - 1;
        self.stage = Stage::Done;
    }

    /// Corrects one bit and reopens every block it belongs to in the passes begun so far.
    fn flip(&mut self, bit: usize) {
        self.flipped.set(bit, true);
        self.key.flip(bit);
        self.report.corrected += 1;
        for p in 0..=self.active {
            let pos = self.shuffles.permutations.position[p][bit];
            let b = self.shuffles.block_of(p, pos);
            let state = &mut self.passes[p];
            state.bob[b] ^= true;
            if let Some(laid_out) = &mut state.laid_out {
                laid_out.flip(pos as usize);
            }
            if let Some(mut s) = state.search[b]
                && s.start <= pos
                && pos < s.end
            {
                s.bob ^= true;
                state.search[b] = (s.alice != s.bob).then_some(s);
            }
            // A block without a live search (or whose search just became even) that is now odd
            // hides an error elsewhere: search the whole block again.
            if state.search[b].is_none() {
                let alice = state.alice[b].unwrap_or(state.bob[b]);
                let bob = state.bob[b];
                if alice != bob {
                    self.start_search(p, b, alice, bob);
                }
            }
        }
    }

    /// Bob's corrected key and what the run cost.
    pub fn finish(self) -> (Bits, CascadeReport) {
        (self.key, self.report)
    }

    /// The run's cost so far.
    pub fn report(&self) -> CascadeReport {
        self.report
    }
}

/// Runs both sides in one place (benchmarks, tests): Bob's key corrected against Alice's.
pub fn reconcile(
    alice: &Bits,
    bob: Bits,
    shuffles: &Shuffles,
) -> Result<(Bits, CascadeReport), CascadeError> {
    let mut responder = ParityResponder::new(alice, shuffles)?;
    let mut corrector = Corrector::new(bob, shuffles)?;
    while let Some(query) = corrector.next_query() {
        let answer = responder.answer(&query)?;
        corrector.absorb(&answer)?;
    }
    let (key, report) = corrector.finish();
    debug_assert_eq!(report.disclosed_bits, responder.disclosed());
    Ok((key, report))
}
