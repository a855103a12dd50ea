//! Alice's per-slot choices — basis, bit, intensity class, reference or not — as a keyed
//! pseudo-random function of the slot index.
//!
//! A node that drives a source's pattern generator picks a fresh 256-bit [`PatternKey`] from the
//! operating system and hands it to the source; both then know the choice of any slot without
//! storing one record per pulse, and nobody without the key can predict a choice from the ones
//! made public in sifting (the bases, the test bits, the references). The function is ChaCha12
//! (Bernstein's ChaCha with 12 rounds, as in the standard library generators of many systems):
//! block `slot` of the key stream under a fixed nonce gives the slot's 128 bits. The emulator's
//! own reproducible pattern ([`SlotPattern::seeded`], for `qkd emulate`) uses SplitMix64 on a
//! 64-bit seed instead: fast, and predictable, which is what an emulated world is for.

use crate::bb84::Basis;
use crate::mix::mix64;

/// Most intensity classes (signal plus decoys).
pub const MAX_INTENSITIES: usize = 4;
/// Bytes of a pattern key.
pub const KEY_BYTES: usize = 32;

/// "qkd pattern v1": the nonce of every pattern key stream.
const NONCE: [u32; 2] = [0x6470_6b71, 0x3176_7461];

/// The secret key of a source's pattern (wiped when dropped, never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct PatternKey([u8; KEY_BYTES]);

impl PatternKey {
    /// A key from its bytes (the caller draws them from the operating system, and wipes its
    /// copy).
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        PatternKey(bytes)
    }

    /// The key's bytes, to hand to a source.
    pub fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

impl Drop for PatternKey {
    fn drop(&mut self) {
        // Through `black_box`, so the optimiser does not drop the writes as dead.
        for byte in &mut self.0 {
            *core::hint::black_box(byte) = 0;
        }
    }
}

impl core::fmt::Debug for PatternKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PatternKey(secret)")
    }
}

/// What Alice chose for one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotChoice {
    /// Preparation basis.
    pub basis: Basis,
    /// Encoded bit.
    pub bit: u8,
    /// Intensity class (index into the intensity list; 0 is the signal).
    pub intensity: u8,
    /// `true` when the slot carries a publicly known reference state.
    pub reference: bool,
}

impl SlotChoice {
    /// Index of the BB84 state: 0 = H, 1 = V, 2 = D, 3 = A (the detector order too).
    #[inline]
    pub fn state_index(&self) -> usize {
        crate::bb84::state_index(self.basis, self.bit)
    }
}

/// The probabilities a pattern draws with, as thresholds on 32 uniform bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternShares {
    z_threshold: u64,
    reference_threshold: u64,
    /// Cumulative thresholds of the intensity classes.
    intensity_thresholds: [u64; MAX_INTENSITIES],
    intensity_count: usize,
}

/// Converts a probability to a threshold on 32 uniform bits, rounded to the nearest (adding one
/// half and truncating, since `f64::round` needs `std` and this crate builds for firmware).
fn threshold(p: f64) -> u64 {
    (p * 4_294_967_296.0 + 0.5) as u64
}

impl PatternShares {
    /// Shares from the class probabilities (at most [`MAX_INTENSITIES`], signal first, summing to
    /// one: the caller validates them), the Z-basis probability and the reference share.
    pub fn new(class_probabilities: &[f64], basis_z: f64, reference_share: f64) -> Self {
        let mut intensity_thresholds = [0u64; MAX_INTENSITIES];
        let mut cumulative = 0.0;
        for (slot, p) in intensity_thresholds.iter_mut().zip(class_probabilities) {
            cumulative += p;
            *slot = threshold(cumulative);
        }
        PatternShares {
            z_threshold: threshold(basis_z),
            reference_threshold: threshold(reference_share),
            intensity_thresholds,
            intensity_count: class_probabilities.len().clamp(1, MAX_INTENSITIES),
        }
    }

    /// The choice that 128 uniform bits `(a, b)` make.
    #[inline]
    fn choose(&self, a: u64, b: u64) -> SlotChoice {
        let reference = (b >> 32) < self.reference_threshold;
        // References are split evenly between the bases: the receiver needs both to see the
        // whole rotation, whatever bias the key slots use.
        let z_threshold = if reference { 1 << 31 } else { self.z_threshold };
        let basis = if (a >> 32) < z_threshold {
            Basis::Z
        } else {
            Basis::X
        };
        let low = a & 0xFFFF_FFFF;
        let intensity = if reference {
            0
        } else {
            self.intensity_thresholds[..self.intensity_count]
                .iter()
                .position(|&t| low < t)
                .unwrap_or(self.intensity_count - 1) as u8
        };
        SlotChoice {
            basis,
            bit: (b & 1) as u8,
            intensity,
            reference,
        }
    }
}

/// Where a pattern's uniform bits come from.
#[derive(Clone, PartialEq, Eq)]
enum Source {
    /// ChaCha12 key stream under a node's key, as eight little-endian words.
    Keyed([u32; 8]),
    /// SplitMix64 of a seed (the emulator's own reproducible pattern).
    Seeded { a: u64, b: u64 },
}

/// Alice's per-slot choices: a pure function of the key and the slot index.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotPattern {
    source: Source,
    shares: PatternShares,
}

impl core::fmt::Debug for SlotPattern {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let kind = match self.source {
            Source::Keyed(_) => "keyed (secret)",
            Source::Seeded { .. } => "seeded",
        };
        write!(f, "SlotPattern({kind}, {:?})", self.shares)
    }
}

impl Drop for SlotPattern {
    fn drop(&mut self) {
        if let Source::Keyed(words) = &mut self.source {
            for w in words.iter_mut() {
                *core::hint::black_box(w) = 0;
            }
        }
    }
}

impl SlotPattern {
    /// The pattern of a node's secret key.
    pub fn keyed(key: &PatternKey, shares: PatternShares) -> Self {
        let words = core::array::from_fn(|i| {
            let b = &key.0[4 * i..4 * i + 4];
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        });
        SlotPattern {
            source: Source::Keyed(words),
            shares,
        }
    }

    /// The emulator's reproducible pattern of a 64-bit seed (predictable: never for a node).
    pub fn seeded(seed: u64, shares: PatternShares) -> Self {
        SlotPattern {
            source: Source::Seeded {
                a: mix64(seed ^ 0xA11C_E000),
                b: mix64(seed ^ 0xB0B0_0000),
            },
            shares,
        }
    }

    /// The shares the pattern draws with.
    pub fn shares(&self) -> &PatternShares {
        &self.shares
    }

    /// The same key drawing with other shares.
    #[must_use]
    pub fn with_shares(&self, shares: PatternShares) -> Self {
        SlotPattern {
            source: self.source.clone(),
            shares,
        }
    }

    /// Alice's choices for `slot`.
    #[inline]
    pub fn choice(&self, slot: u64) -> SlotChoice {
        let (a, b) = match &self.source {
            Source::Keyed(key) => {
                let block = chacha_block(key, slot, 12);
                (
                    u64::from(block[0]) | (u64::from(block[1]) << 32),
                    u64::from(block[2]) | (u64::from(block[3]) << 32),
                )
            }
            Source::Seeded { a, b } => (mix64(a ^ slot), mix64(b ^ slot)),
        };
        self.shares.choose(a, b)
    }
}

#[inline]
fn quarter_round(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

/// The ChaCha block function (64-bit block counter, 64-bit nonce: Bernstein's original layout)
/// with `rounds` rounds, for block `counter` of `key`'s stream.
fn chacha_block(key: &[u32; 8], counter: u64, rounds: u32) -> [u32; 16] {
    chacha_block_with_nonce(key, counter, NONCE, rounds)
}

fn chacha_block_with_nonce(
    key: &[u32; 8],
    counter: u64,
    nonce: [u32; 2],
    rounds: u32,
) -> [u32; 16] {
    let mut input = [0u32; 16];
    // "expand 32-byte k".
    input[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    input[4..12].copy_from_slice(key);
    input[12] = counter as u32;
    input[13] = (counter >> 32) as u32;
    input[14] = nonce[0];
    input[15] = nonce[1];
    let mut s = input;
    for _ in 0..rounds / 2 {
        quarter_round(&mut s, 0, 4, 8, 12);
        quarter_round(&mut s, 1, 5, 9, 13);
        quarter_round(&mut s, 2, 6, 10, 14);
        quarter_round(&mut s, 3, 7, 11, 15);
        quarter_round(&mut s, 0, 5, 10, 15);
        quarter_round(&mut s, 1, 6, 11, 12);
        quarter_round(&mut s, 2, 7, 8, 13);
        quarter_round(&mut s, 3, 4, 9, 14);
    }
    for (word, input) in s.iter_mut().zip(input) {
        *word = word.wrapping_add(input);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_function_gives_the_rfc_8439_test_vector() {
        // RFC 8439, 2.3.2: key 00 01 … 1f, block counter 1, nonce 00:00:00:09:00:00:00:4a:00:00:00:00
        // (its 32-bit counter and 96-bit nonce, as little-endian words 1, 0x09000000, 0x4a000000,
        // 0, are our 64-bit counter 0x09000000_00000001 and nonce words 0x4a000000, 0), 20 rounds.
        let key: [u32; 8] = core::array::from_fn(|i| {
            u32::from_le_bytes(core::array::from_fn(|j| (4 * i + j) as u8))
        });
        let block = chacha_block_with_nonce(&key, 0x0900_0000_0000_0001, [0x4a00_0000, 0], 20);
        assert_eq!(
            block,
            [
                0xe4e7_f110,
                0x1559_3bd1,
                0x1fdd_0f50,
                0xc471_20a3,
                0xc7f4_d1c7,
                0x0368_c033,
                0x9aaa_2204,
                0x4e6c_d4c3,
                0x4664_82d2,
                0x09aa_9f07,
                0x05d7_c214,
                0xa202_8bd9,
                0xd19c_12b5,
                0xb94e_16de,
                0xe883_d0cb,
                0x4e3c_50a2,
            ]
        );
    }

    fn shares() -> PatternShares {
        PatternShares::new(&[0.8, 0.15, 0.05], 0.9, 0.1)
    }

    #[test]
    fn choices_follow_the_shares_for_keyed_and_seeded_patterns() {
        let key = PatternKey::from_bytes(core::array::from_fn(|i| (i * 7 + 3) as u8));
        for pattern in [
            SlotPattern::keyed(&key, shares()),
            SlotPattern::seeded(42, shares()),
        ] {
            let n = 200_000u64;
            let (mut z, mut keyed, mut ones, mut refs, mut ref_z) = (0u64, 0u64, 0u64, 0u64, 0u64);
            let mut classes = [0u64; 3];
            for slot in 0..n {
                let c = pattern.choice(slot);
                ones += u64::from(c.bit);
                if c.reference {
                    refs += 1;
                    ref_z += u64::from(c.basis == Basis::Z);
                    assert_eq!(c.intensity, 0, "references use the signal intensity");
                } else {
                    keyed += 1;
                    z += u64::from(c.basis == Basis::Z);
                    classes[usize::from(c.intensity)] += 1;
                }
            }
            // Binomial counts, five standard deviations.
            let within = |count: u64, total: u64, p: f64| {
                let sigma = (total as f64 * p * (1.0 - p)).sqrt();
                (count as f64 - total as f64 * p).abs() < 5.0 * sigma
            };
            assert!(within(z, keyed, 0.9));
            assert!(within(ref_z, refs, 0.5));
            assert!(within(ones, n, 0.5));
            assert!(within(refs, n, 0.1));
            for (class, p) in [0.8, 0.15, 0.05].into_iter().enumerate() {
                assert!(within(classes[class], keyed, p), "class {class}");
            }
        }
    }

    #[test]
    fn keyed_choices_depend_on_every_byte_of_the_key() {
        let bytes: [u8; 32] = core::array::from_fn(|i| i as u8);
        let base = SlotPattern::keyed(&PatternKey::from_bytes(bytes), shares());
        for i in [0, 13, 31] {
            let mut other = bytes;
            other[i] ^= 0x80;
            let other = SlotPattern::keyed(&PatternKey::from_bytes(other), shares());
            let differ = (0..256)
                .filter(|&s| base.choice(s) != other.choice(s))
                .count();
            // Each choice is a fresh draw: about half of the bits (and so of the choices) differ.
            assert!(differ > 100, "byte {i}: {differ} of 256 choices differ");
        }
        let again = SlotPattern::keyed(&PatternKey::from_bytes(bytes), shares());
        assert!((0..256).all(|s| base.choice(s) == again.choice(s)));
    }
}
