//! Bit strings packed 64 to a word: sifted keys, corrected keys, hashes.

use zeroize::Zeroize;

/// A string of bits, least significant bit of word 0 first.
///
/// Bit strings are key material more often than not (sifted, corrected and final keys), so
/// they are wiped when dropped and never print their content.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Drop for Bits {
    fn drop(&mut self) {
        self.words.zeroize();
    }
}

impl std::fmt::Debug for Bits {
    // Bit strings here are key material more often than not: show the length only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bits({} bits)", self.len)
    }
}

impl Bits {
    /// `len` zero bits.
    pub fn zeros(len: usize) -> Self {
        Bits {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    /// Bits from bytes holding 0 or 1 each (anything non-zero counts as 1).
    pub fn from_bools(bits: &[u8]) -> Self {
        let mut out = Bits::zeros(bits.len());
        for (i, &b) in bits.iter().enumerate() {
            if b != 0 {
                out.words[i / 64] |= 1 << (i % 64);
            }
        }
        out
    }

    /// Bits from packed words; bits beyond `len` are cleared.
    pub fn from_words(mut words: Vec<u64>, len: usize) -> Self {
        words.resize(len.div_ceil(64), 0);
        let mut bits = Bits { words, len };
        bits.clear_tail();
        bits
    }

    /// `len` bits filled 64 at a time from `next_word` (a random source, typically).
    pub fn from_word_fn(len: usize, mut next_word: impl FnMut() -> u64) -> Self {
        Self::from_words((0..len.div_ceil(64)).map(|_| next_word()).collect(), len)
    }

    fn clear_tail(&mut self) {
        if !self.len.is_multiple_of(64)
            && let Some(last) = self.words.last_mut()
        {
            *last &= (1u64 << (self.len % 64)) - 1;
        }
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` for the empty string.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packed words (bits beyond the length are zero).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Bit `i`.
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        (self.words[i / 64] >> (i % 64)) & 1 == 1
    }

    /// Sets bit `i`.
    #[inline]
    pub fn set(&mut self, i: usize, value: bool) {
        let mask = 1u64 << (i % 64);
        if value {
            self.words[i / 64] |= mask;
        } else {
            self.words[i / 64] &= !mask;
        }
    }

    /// Flips bit `i`.
    #[inline]
    pub fn flip(&mut self, i: usize) {
        self.words[i / 64] ^= 1 << (i % 64);
    }

    /// Appends one bit.
    pub fn push(&mut self, value: bool) {
        if self.len.is_multiple_of(64) {
            self.words.push(0);
        }
        self.len += 1;
        self.set(self.len - 1, value);
    }

    /// Number of one bits.
    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Parity of all bits.
    pub fn parity(&self) -> bool {
        self.words.iter().fold(0, |acc, w| acc ^ w).count_ones() % 2 == 1
    }

    /// Number of positions where `self` and `other` differ (same length).
    pub fn hamming_distance(&self, other: &Bits) -> usize {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| (a ^ b).count_ones() as usize)
            .sum()
    }

    /// 64 bits starting at bit `start` (zeros past the end): a word-parallel view at any offset.
    #[inline]
    pub fn word_at(&self, start: usize) -> u64 {
        let (w, shift) = (start / 64, start % 64);
        let low = self.words.get(w).copied().unwrap_or(0) >> shift;
        if shift == 0 {
            low
        } else {
            low | (self.words.get(w + 1).copied().unwrap_or(0) << (64 - shift))
        }
    }

    /// Bits `start..end` (clamped to the length) as a new string.
    #[must_use]
    pub fn range(&self, start: usize, end: usize) -> Bits {
        let end = end.min(self.len);
        let start = start.min(end);
        let len = end - start;
        Bits::from_words(
            (0..len.div_ceil(64))
                .map(|w| self.word_at(start + 64 * w))
                .collect(),
            len,
        )
    }

    /// The first `len` bits.
    #[must_use]
    pub fn truncated(&self, len: usize) -> Bits {
        self.range(0, len)
    }

    /// Adds `other` bit by bit modulo 2; `other` must be no longer than this string.
    pub fn xor_assign(&mut self, other: &Bits) {
        debug_assert!(other.len <= self.len);
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a ^= b;
        }
    }

    /// Appends `other`, a word at a time.
    pub fn extend(&mut self, other: &Bits) {
        let shift = self.len % 64;
        for (w, &word) in other.words.iter().enumerate() {
            let count = (other.len - 64 * w).min(64);
            if shift == 0 {
                self.words.push(word);
            } else {
                if let Some(last) = self.words.last_mut() {
                    *last |= word << shift;
                }
                if count > 64 - shift {
                    self.words.push(word >> (64 - shift));
                }
            }
            self.len += count;
        }
    }
}

/// Binary entropy `h(p) = -p log2 p - (1-p) log2 (1-p)`, with `h(0) = h(1) = 0`.
pub fn binary_entropy(p: f64) -> f64 {
    if p <= 0.0 || p >= 1.0 {
        0.0
    } else {
        -p * p.log2() - (1.0 - p) * (1.0 - p).log2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_flip_push_and_counts() {
        let mut b = Bits::zeros(130);
        b.set(0, true);
        b.set(129, true);
        b.flip(64);
        assert!(b.get(0) && b.get(64) && b.get(129) && !b.get(1));
        assert_eq!(b.count_ones(), 3);
        assert!(b.parity());
        b.push(true);
        assert_eq!((b.len(), b.count_ones()), (131, 4));
        let c = Bits::from_bools(&[1, 0, 1]);
        assert_eq!(c.words(), &[0b101]);
        assert_eq!(b.truncated(65).count_ones(), 2);
    }

    /// Bit by bit, the way `range` and `extend` must agree with.
    fn pushed(bits: impl Iterator<Item = bool>) -> Bits {
        let mut out = Bits::default();
        bits.for_each(|b| out.push(b));
        out
    }

    #[test]
    fn range_and_extend_agree_with_bit_by_bit_copies() {
        let a = Bits::from_words(
            vec![0x0123_4567_89AB_CDEF, 0xF0E1_D2C3_B4A5_9687, 0x55],
            135,
        );
        for (start, end) in [
            (0, 135),
            (1, 64),
            (63, 129),
            (64, 128),
            (70, 71),
            (5, 5),
            (100, 500),
        ] {
            let expected = pushed((start.min(135)..end.min(135)).map(|i| a.get(i)));
            assert_eq!(a.range(start, end), expected, "{start}..{end}");
        }
        for head in [0, 1, 63, 64, 65, 130] {
            let mut joined = a.truncated(head);
            joined.extend(&a);
            let expected = pushed((0..head).chain(0..135).map(|i| a.get(i)));
            assert_eq!(joined, expected, "head {head}");
        }
    }

    #[test]
    fn tail_bits_are_cleared_and_debug_hides_content() {
        let b = Bits::from_words(vec![u64::MAX], 3);
        assert_eq!(b.count_ones(), 3);
        assert_eq!(format!("{b:?}"), "Bits(3 bits)");
    }

    #[test]
    fn entropy_has_known_values() {
        assert!((binary_entropy(0.5) - 1.0).abs() < 1e-15);
        assert!((binary_entropy(0.11) - 0.4999).abs() < 1e-4);
        assert!(binary_entropy(0.0).abs() < f64::MIN_POSITIVE);
    }
}
