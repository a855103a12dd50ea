//! Toeplitz hashing over GF(2): verification tags (a few dozen output bits) and privacy
//! amplification (millions), from one definition.
//!
//! An `m × n` Toeplitz matrix is fixed by a seed of `n + m − 1` bits: `T[i][j] = seed[i − j + n − 1]`.
//! The family is 2-universal when the seed is uniform, which is what the leftover hash lemma
//! (privacy amplification) and the correctness bound of verification need. Output bit
//! `y_i = ⊕_j T[i][j] x_j` is entry `i + n − 1` of the integer convolution `seed ∗ x`, reduced
//! mod 2.
//!
//! Two ways to compute it: [`hash_direct`], word-parallel and exact, costs `m·n/64` word
//! operations (verification tags, and the reference the fast path is checked against);
//! [`ToeplitzHasher`] computes the convolution with FFTs (the `convolution` module) in
//! `O((n+m) log(n+m))`. The convolution's integer sums must come out exact before the parity is taken: with 0/1 inputs
//! the f64 FFT's error is bounded by `‖seed‖·‖x‖·c·ε·log2 N` (Percival), about 10^-6 for
//! `n = 10^8`, far below the 0.5 that rounding tolerates; every output is still checked to lie
//! within 0.25 of an integer, and a block that does not is refused rather than trusted.

use rustfft::FftPlanner;

use crate::bits::Bits;
use crate::convolution::ParityConvolver;

/// Why a hash could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToeplitzError {
    /// Seed length does not match `n + m − 1`.
    #[error("Toeplitz seed of {got} bits, {needed} needed for {inputs} → {outputs} bits")]
    SeedLength {
        /// Bits given.
        got: usize,
        /// Bits needed.
        needed: usize,
        /// Input length.
        inputs: usize,
        /// Output length.
        outputs: usize,
    },
    /// The output must not be longer than the input, nor empty.
    #[error("cannot hash {inputs} bits to {outputs} bits")]
    Shape {
        /// Input length.
        inputs: usize,
        /// Output length.
        outputs: usize,
    },
    /// The hasher was planned for another transform length (get one from [`PlanCache::hasher`]).
    #[error("hasher planned for transforms of {planned} points, this hash needs {needed}")]
    OtherLength {
        /// Transform length planned.
        planned: usize,
        /// Transform length needed.
        needed: usize,
    },
    /// A convolution sum came out too far from an integer to trust.
    #[error("FFT rounding exceeded the safe margin (worst {worst:.3})")]
    Precision {
        /// Largest distance from an integer seen.
        worst: f64,
    },
}

fn check_shape(input: usize, output: usize, seed: usize) -> Result<(), ToeplitzError> {
    if output == 0 || output > input {
        return Err(ToeplitzError::Shape {
            inputs: input,
            outputs: output,
        });
    }
    if seed != input + output - 1 {
        return Err(ToeplitzError::SeedLength {
            got: seed,
            needed: input + output - 1,
            inputs: input,
            outputs: output,
        });
    }
    Ok(())
}

/// The input reversed: `y_i = ⊕_j seed[i + n − 1 − j] x_j = ⊕_k seed[i + k] r_k`.
fn reversed(input: &Bits) -> Bits {
    let n = input.len();
    let mut r = Bits::zeros(n);
    for j in 0..n {
        if input.get(j) {
            r.set(n - 1 - j, true);
        }
    }
    r
}

/// Output bit `i` from the reversed input, word-parallel.
fn row(reversed: &Bits, seed: &Bits, i: usize) -> bool {
    let acc = reversed
        .words()
        .iter()
        .enumerate()
        .fold(0u64, |acc, (w, &r)| acc ^ (seed.word_at(i + 64 * w) & r));
    acc.count_ones() % 2 == 1
}

/// Toeplitz hash of `input` to `output` bits, computed directly (word-parallel, exact).
pub fn hash_direct(input: &Bits, seed: &Bits, output: usize) -> Result<Bits, ToeplitzError> {
    check_shape(input.len(), output, seed.len())?;
    let r = reversed(input);
    let mut out = Bits::zeros(output);
    for i in 0..output {
        out.set(i, row(&r, seed, i));
    }
    Ok(out)
}

/// Selected output bits of the hash, computed directly: the slow reference that large FFT
/// hashes are checked against on a sample of rows.
pub fn hash_rows(
    input: &Bits,
    seed: &Bits,
    output: usize,
    rows: &[usize],
) -> Result<Vec<bool>, ToeplitzError> {
    check_shape(input.len(), output, seed.len())?;
    let r = reversed(input);
    rows.iter()
        .map(|&i| {
            if i < output {
                Ok(row(&r, seed, i))
            } else {
                Err(ToeplitzError::Shape {
                    inputs: input.len(),
                    outputs: i + 1,
                })
            }
        })
        .collect()
}

/// Largest distance from an integer accepted in the FFT's output.
const SAFE_MARGIN: f64 = 0.25;

/// Privacy amplification by FFT convolution. The hasher owns its plans and its working buffers:
/// at 10^7 bits those are hundreds of megabytes, and allocating them per block costs more in page
/// faults than the transforms themselves.
#[derive(Debug)]
pub struct ToeplitzHasher {
    convolver: ParityConvolver,
}

/// Smallest even `2^a · 3^b · 5^c` (`b, c ≤ 2`) that is at least `n`: fast FFT sizes, up to a
/// third smaller than the next power of two. Even, so the signal packs two samples to a complex
/// one.
fn transform_length(n: usize) -> usize {
    [1usize, 3, 5, 9, 15, 25, 45, 75, 225]
        .iter()
        .map(|&three| three * n.div_ceil(three).next_power_of_two().max(2))
        .min()
        .unwrap_or(2)
}

/// FFT plans and the buffers of the latest transform length, kept across blocks: planning
/// computes twiddle factors, which costs as much as a transform, and consecutive blocks of a
/// session almost always share a length.
pub struct PlanCache {
    planner: FftPlanner<f64>,
    latest: Option<ToeplitzHasher>,
}

impl Default for PlanCache {
    fn default() -> Self {
        Self {
            planner: FftPlanner::new(),
            latest: None,
        }
    }
}

impl std::fmt::Debug for PlanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlanCache(latest {:?})", self.latest)
    }
}

impl PlanCache {
    /// A hasher for `input` bits to `output` bits, reusing the latest one when the transform
    /// length agrees.
    pub fn hasher(&mut self, input: usize, output: usize) -> &mut ToeplitzHasher {
        // A circular convolution of this length wraps only into entries below n − 1, which the
        // hash does not use.
        let len = transform_length(input + output.max(1) - 1);
        let planner = &mut self.planner;
        let reusable = self
            .latest
            .as_ref()
            .is_some_and(|h| h.convolver.cyclic_len() == len);
        if !reusable {
            // Free the old buffers before allocating the new ones.
            self.latest = None;
        }
        self.latest.get_or_insert_with(|| ToeplitzHasher {
            convolver: ParityConvolver::new(planner, len),
        })
    }
}

impl ToeplitzHasher {
    /// Hashes `input` to `output` bits with `seed` (`input + output − 1` bits).
    pub fn hash(
        &mut self,
        input: &Bits,
        seed: &Bits,
        output: usize,
    ) -> Result<Bits, ToeplitzError> {
        let n = input.len();
        check_shape(n, output, seed.len())?;
        let needed = transform_length(n + output - 1);
        if needed != self.convolver.cyclic_len() {
            return Err(ToeplitzError::OtherLength {
                planned: self.convolver.cyclic_len(),
                needed,
            });
        }
        let sums = self.convolver.parities(seed, input, n - 1, output);
        if sums.worst_rounding > SAFE_MARGIN {
            return Err(ToeplitzError::Precision {
                worst: sums.worst_rounding,
            });
        }
        Ok(sums.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qkd_firmware_sim::world::rng::SimRng;

    fn random_bits(n: usize, seed: u64) -> Bits {
        let mut rng = SimRng::new(seed, 0);
        Bits::from_word_fn(n, || rng.next_u64())
    }

    /// The definition, bit by bit.
    fn by_definition(x: &Bits, seed: &Bits, m: usize) -> Bits {
        let n = x.len();
        let mut out = Bits::zeros(m);
        for i in 0..m {
            let mut acc = false;
            for j in 0..n {
                acc ^= seed.get(i + n - 1 - j) & x.get(j);
            }
            out.set(i, acc);
        }
        out
    }

    #[test]
    fn direct_and_fft_hashes_match_the_definition() {
        for (n, m) in [(1, 1), (7, 3), (64, 64), (65, 1), (300, 129), (1000, 999)] {
            let x = random_bits(n, n as u64);
            let seed = random_bits(n + m - 1, 77 + m as u64);
            let truth = by_definition(&x, &seed, m);
            assert_eq!(hash_direct(&x, &seed, m).unwrap(), truth, "direct {n}→{m}");
            assert_eq!(
                PlanCache::default()
                    .hasher(n, m)
                    .hash(&x, &seed, m)
                    .unwrap(),
                truth,
                "fft {n}→{m}"
            );
        }
    }

    #[test]
    fn shapes_and_seed_lengths_are_checked() {
        let x = random_bits(10, 1);
        assert!(matches!(
            hash_direct(&x, &random_bits(12, 2), 4),
            Err(ToeplitzError::SeedLength { needed: 13, .. })
        ));
        assert!(matches!(
            hash_direct(&x, &random_bits(20, 2), 11),
            Err(ToeplitzError::Shape { .. })
        ));
    }

    #[test]
    fn transform_lengths_are_smooth_and_sufficient() {
        for n in [1, 2, 3, 5, 100, 1_000_000, 15_000_000] {
            let l = transform_length(n);
            assert!(l >= n);
            let mut r = l;
            while r.is_multiple_of(2) {
                r /= 2;
            }
            while r.is_multiple_of(3) {
                r /= 3;
            }
            while r.is_multiple_of(5) {
                r /= 5;
            }
            assert_eq!(r, 1, "{l} is not 2^a 3^b 5^c");
            assert!(l.is_multiple_of(2));
        }
        assert_eq!(transform_length(15_000_000), 15 << 20);
        assert_eq!(transform_length(16_000_000), 1 << 24);
        assert_eq!(transform_length(12_000_000), 3 << 22);
        assert_eq!(transform_length(9), 10);
    }
}
