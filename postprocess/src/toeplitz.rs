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
//! [`ToeplitzHasher`] computes the convolution with real FFTs in `O((n+m) log(n+m))`. The
//! convolution's integer sums must come out exact before the parity is taken: with 0/1 inputs
//! the f64 FFT's error is bounded by `‖seed‖·‖x‖·c·ε·log2 N` (Percival), about 10^-6 for
//! `n = 10^8`, far below the 0.5 that rounding tolerates; every output is still checked to lie
//! within 0.25 of an integer, and a block that does not is refused rather than trusted.

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use std::sync::Arc;

use crate::bits::Bits;

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
    /// The FFT library refused the buffers it was given.
    #[error("FFT failed: {0}")]
    Transform(String),
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
pub struct ToeplitzHasher {
    len: usize,
    forward: Arc<dyn RealToComplex<f64>>,
    inverse: Arc<dyn ComplexToReal<f64>>,
    seed_work: Workspace,
    input_work: Workspace,
}

/// One forward transform's buffers.
struct Workspace {
    signal: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

impl Workspace {
    /// Buffers for `forward`, with scratch enough for `inverse` too (the seed's workspace
    /// also hosts the inverse transform).
    fn new(forward: &dyn RealToComplex<f64>, inverse: &dyn ComplexToReal<f64>) -> Self {
        let scratch = forward.get_scratch_len().max(inverse.get_scratch_len());
        Self {
            signal: forward.make_input_vec(),
            spectrum: forward.make_output_vec(),
            scratch: vec![Complex::default(); scratch],
        }
    }

    /// The spectrum of `bits` as a 0/1 signal, left in `self.spectrum`.
    fn transform(
        &mut self,
        forward: &dyn RealToComplex<f64>,
        bits: &Bits,
    ) -> Result<(), ToeplitzError> {
        self.signal.fill(0.0);
        for (w, &word) in bits.words().iter().enumerate() {
            let mut rest = word;
            while rest != 0 {
                let bit = rest.trailing_zeros() as usize;
                self.signal[64 * w + bit] = 1.0;
                rest &= rest - 1;
            }
        }
        forward
            .process_with_scratch(&mut self.signal, &mut self.spectrum, &mut self.scratch)
            .map_err(|e| ToeplitzError::Transform(e.to_string()))
    }
}

impl std::fmt::Debug for ToeplitzHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ToeplitzHasher(len {})", self.len)
    }
}

/// Smallest even `2^a · 3^b` (`b ≤ 2`) that is at least `n`: fast FFT sizes, up to a third
/// smaller than the next power of two. Even, so the spectrum's last bin is the real Nyquist term.
fn transform_length(n: usize) -> usize {
    [1usize, 3, 9]
        .iter()
        .map(|&three| three * n.div_ceil(three).next_power_of_two().max(2))
        .min()
        .unwrap_or(2)
}

/// FFT plans and the buffers of the latest transform length, kept across blocks: planning
/// computes twiddle factors, which costs as much as a transform, and consecutive blocks of a
/// session almost always share a length.
#[derive(Default)]
pub struct PlanCache {
    planner: RealFftPlanner<f64>,
    latest: Option<ToeplitzHasher>,
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
        let reusable = self.latest.as_ref().is_some_and(|h| h.len == len);
        if !reusable {
            // Free the old buffers before allocating the new ones.
            self.latest = None;
        }
        self.latest.get_or_insert_with(|| {
            let forward = planner.plan_fft_forward(len);
            let inverse = planner.plan_fft_inverse(len);
            ToeplitzHasher {
                len,
                seed_work: Workspace::new(forward.as_ref(), inverse.as_ref()),
                input_work: Workspace::new(forward.as_ref(), inverse.as_ref()),
                forward,
                inverse,
            }
        })
    }
}

impl ToeplitzHasher {
    /// Hashes `input` to `output` bits with `seed` (`input + output − 1` bits), with the two
    /// forward transforms on two threads.
    pub fn hash(
        &mut self,
        input: &Bits,
        seed: &Bits,
        output: usize,
    ) -> Result<Bits, ToeplitzError> {
        let n = input.len();
        check_shape(n, output, seed.len())?;
        if transform_length(n + output - 1) != self.len {
            return Err(ToeplitzError::Shape {
                inputs: n,
                outputs: output,
            });
        }
        let forward = self.forward.as_ref();
        let (seed_work, input_work) = (&mut self.seed_work, &mut self.input_work);
        std::thread::scope(|scope| {
            let seed_done = scope.spawn(|| seed_work.transform(forward, seed));
            let input_done = input_work.transform(forward, input);
            let seed_done = seed_done.join().unwrap_or_else(|_| {
                Err(ToeplitzError::Transform("transform thread failed".into()))
            });
            seed_done.and(input_done)
        })?;
        let product = &mut self.seed_work.spectrum;
        for (p, q) in product.iter_mut().zip(&self.input_work.spectrum) {
            *p *= q;
        }
        if let Some(first) = product.first_mut() {
            first.im = 0.0;
        }
        if let Some(last) = product.last_mut() {
            last.im = 0.0;
        }
        let sums = &mut self.seed_work.signal;
        self.inverse
            .process_with_scratch(product, sums, &mut self.seed_work.scratch)
            .map_err(|e| ToeplitzError::Transform(e.to_string()))?;
        let scale = 1.0 / self.len as f64;
        let mut out = Bits::zeros(output);
        let mut worst: f64 = 0.0;
        for (i, &v) in sums[n - 1..n - 1 + output].iter().enumerate() {
            let v = v * scale;
            let rounded = v.round();
            worst = worst.max((v - rounded).abs());
            if (rounded as i64) & 1 == 1 {
                out.set(i, true);
            }
        }
        if worst > SAFE_MARGIN {
            return Err(ToeplitzError::Precision { worst });
        }
        Ok(out)
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
            assert_eq!(r, 1, "{l} is not 2^a 3^b");
            assert!(l.is_multiple_of(2));
        }
        assert_eq!(transform_length(15_000_000), 1 << 24);
        assert_eq!(transform_length(12_000_000), 3 << 22);
        assert_eq!(transform_length(9), 12);
    }
}
