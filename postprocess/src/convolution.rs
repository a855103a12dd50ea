//! Cyclic convolution of two long 0/1 signals, reduced to parities: the engine behind Toeplitz
//! privacy amplification.
//!
//! A real signal of even length `N` is packed two samples to a complex one
//! (`z_j = x_2j + i·x_2j+1`), so every transform has length `M = N/2`. Each transform is computed by
//! the four-step method: `M = M1·M2` seen as `M1` rows of `M2`; transforms down the columns
//! (gathered a few columns at a time, so they run in cache), a twiddle, transforms along the rows.
//! The spectrum is left in the transposed order the method produces — a convolution multiplies
//! spectra point by point, so the order never matters — and the inverse runs the steps backwards.
//! Against one library transform over the whole length this sweeps memory twice per transform
//! instead of once per radix pass, which is what bounds a transform of 10^7 points.
//!
//! The two forward transforms run on two threads; the inverse splits its rows and columns between
//! two threads.

use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::bits::Bits;
use crate::numeric::nearest_with_parity;

type C = Complex<f64>;

/// Working memory that holds values derived from the key: wiped when dropped (and the kept
/// spectrum after every use), so no transform leaves key material in freed or idle memory.
#[derive(Default)]
struct Buffer(Vec<C>);

impl Buffer {
    fn zeroed(len: usize) -> Self {
        Buffer(vec![C::default(); len])
    }

    /// Overwrites every value; `black_box` keeps the compiler from dropping stores to memory
    /// it sees no later read of.
    fn wipe(&mut self) {
        self.0.fill(C::default());
        std::hint::black_box(&mut self.0);
    }
}

impl std::ops::Deref for Buffer {
    type Target = [C];
    fn deref(&self) -> &[C] {
        &self.0
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [C] {
        &mut self.0
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// Columns gathered at once: 256-byte runs per row; measured best among 8, 16 and 32.
const GROUP: usize = 16;

/// Convolution sums taken modulo 2, for a window of output positions.
#[derive(Debug)]
pub struct Parities {
    /// Parity of sum `start + i` at bit `i`.
    pub bits: Bits,
    /// Largest distance of a computed sum from the nearest integer.
    pub worst_rounding: f64,
}

/// Plans, twiddle tables and the two spectra for one transform length.
pub struct ParityConvolver {
    len: usize,
    rows: usize,
    rows_log2: u32,
    cols: usize,
    column_forward: Arc<dyn Fft<f64>>,
    column_inverse: Arc<dyn Fft<f64>>,
    row_forward: Arc<dyn Fft<f64>>,
    row_inverse: Arc<dyn Fft<f64>>,
    /// `exp(−2πi·a/M)` for `a = q·M1 + r` is `coarse[q]·fine[r]`.
    twiddle_coarse: Vec<C>,
    twiddle_fine: Vec<C>,
    /// `exp(−2πi·k/N)` for the frequency `k = k1 + M1·k2` of position `(k1, k2)`.
    unpack_row: Vec<C>,
    unpack_col: Vec<C>,
    scratch_len: usize,
    /// The key's spectrum, then the product's: wiped after each use.
    first: Buffer,
    /// The seed's spectrum (public).
    second: Buffer,
}

impl std::fmt::Debug for ParityConvolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ParityConvolver(len {} = 2·{}·{})",
            self.len, self.rows, self.cols
        )
    }
}

/// `exp(−2πi·num/den)`.
fn unit(num: usize, den: usize) -> C {
    let (sin, cos) = (-std::f64::consts::TAU * num as f64 / den as f64).sin_cos();
    C::new(cos, sin)
}

/// Parity of the integer nearest to `v` and the distance to it.
fn nearest_integer_parity(v: f64) -> (bool, f64) {
    let (nearest, odd) = nearest_with_parity(v);
    (odd, (v - nearest).abs())
}

/// A group of columns gathered for their transforms. Consecutive columns are placed a little
/// more than a power of two apart: at exactly `rows` apart, the same row of all columns would
/// fall into one cache set and evict itself on every access of the gather and the scatter.
struct ColumnBlock {
    data: Buffer,
    stride: usize,
    rows: usize,
}

impl ColumnBlock {
    fn new(rows: usize) -> Self {
        let stride = rows + 8;
        Self {
            data: Buffer::zeroed(GROUP * stride),
            stride,
            rows,
        }
    }

    fn at(&self, column: usize, row: usize) -> C {
        self.data[column * self.stride + row]
    }

    fn at_mut(&mut self, column: usize, row: usize) -> &mut C {
        &mut self.data[column * self.stride + row]
    }

    fn column_mut(&mut self, column: usize) -> &mut [C] {
        &mut self.data[column * self.stride..][..self.rows]
    }
}

/// A thread's buffers for the row work.
struct RowWork {
    scratch: Buffer,
    second_row: Buffer,
    second_mirror: Buffer,
}

impl RowWork {
    fn new(convolver: &ParityConvolver) -> Self {
        Self {
            scratch: Buffer::zeroed(convolver.scratch_len),
            second_row: Buffer::zeroed(convolver.cols),
            second_mirror: Buffer::zeroed(convolver.cols),
        }
    }
}

/// The packed product spectrum at frequencies `k` and `M − k`, from the packed spectra of the
/// two signals there: unpack both real spectra at `k` and `k + M`, multiply, and pack the
/// product again for the half-length inverse. `w = exp(−2πi·k/N)`. The unpacked values at
/// `M − k` are the conjugates of those at `k` with the twiddle `−w̄`, so one evaluation gives both
/// outputs: `(A + B, conj(A − B))`. For `k = 0` only the first is meaningful.
fn packed_products(first: C, first_mirror: C, second: C, second_mirror: C, w: C) -> (C, C) {
    let half = 0.5;
    let minus_half_i = C::new(0.0, -0.5);
    let (even_a, odd_a) = (
        (first + first_mirror.conj()) * half,
        (first - first_mirror.conj()) * minus_half_i,
    );
    let (even_b, odd_b) = (
        (second + second_mirror.conj()) * half,
        (second - second_mirror.conj()) * minus_half_i,
    );
    let (turned_a, turned_b) = (w * odd_a, w * odd_b);
    let low = (even_a + turned_a) * (even_b + turned_b);
    let high = (even_a - turned_a) * (even_b - turned_b);
    let sum = (low + high) * half;
    let difference = C::new(0.0, 0.5) * w.conj() * (low - high);
    (sum + difference, (sum - difference).conj())
}

impl ParityConvolver {
    /// Plans for cyclic convolutions of even length `len` (at least 2).
    pub fn new(planner: &mut FftPlanner<f64>, len: usize) -> Self {
        let half = (len / 2).max(1);
        // Rows: the largest power of two up to half the square root, so that the row transforms
        // (the longer ones) still fit in a core's cache.
        let mut rows = 1;
        while half.is_multiple_of(rows * 2) && (rows * 2) * (rows * 2) * 4 <= half {
            rows *= 2;
        }
        let cols = half / rows;
        let column_forward = planner.plan_fft_forward(rows);
        let column_inverse = planner.plan_fft_inverse(rows);
        let row_forward = planner.plan_fft_forward(cols);
        let row_inverse = planner.plan_fft_inverse(cols);
        let scratch_len = [&column_forward, &column_inverse, &row_forward, &row_inverse]
            .iter()
            .map(|plan| plan.get_inplace_scratch_len())
            .max()
            .unwrap_or(0);
        Self {
            len: 2 * half,
            rows,
            rows_log2: rows.trailing_zeros(),
            cols,
            twiddle_coarse: (0..cols).map(|q| unit(q, cols)).collect(),
            twiddle_fine: (0..rows).map(|r| unit(r, half)).collect(),
            unpack_row: (0..rows).map(|k1| unit(k1, 2 * half)).collect(),
            unpack_col: (0..cols).map(|k2| unit(rows * k2, 2 * half)).collect(),
            column_forward,
            column_inverse,
            row_forward,
            row_inverse,
            scratch_len,
            first: Buffer::zeroed(half),
            second: Buffer::zeroed(half),
        }
    }

    /// Cyclic length `N`.
    pub fn cyclic_len(&self) -> usize {
        self.len
    }

    /// `exp(−2πi·a/M)`, `a < M`.
    fn twiddle(&self, a: usize) -> C {
        self.twiddle_coarse[a >> self.rows_log2] * self.twiddle_fine[a & (self.rows - 1)]
    }

    /// `exp(−2πi·k/N)` for the frequency at `(k1, k2)`.
    fn unpack_twiddle(&self, k1: usize, k2: usize) -> C {
        self.unpack_row[k1] * self.unpack_col[k2]
    }

    /// Parities of the cyclic convolution `a ⊛ b` at positions `start .. start + count`. The
    /// signals are the bits, zero beyond their length; both must fit in the cyclic length.
    pub fn parities(&mut self, a: &Bits, b: &Bits, start: usize, count: usize) -> Parities {
        debug_assert!(a.len() <= self.len && b.len() <= self.len);
        debug_assert!(start + count <= self.len);
        let mut first = std::mem::take(&mut self.first);
        let mut second = std::mem::take(&mut self.second);
        std::thread::scope(|scope| {
            scope.spawn(|| self.columns_forward(a, &mut first));
            self.columns_forward(b, &mut second);
        });
        self.rows(&mut first, &second);
        let result = self.inverse_columns(&first, start, count);
        first.wipe();
        self.first = first;
        self.second = second;
        result
    }

    /// First half of the forward transform of `bits`: column transforms and twiddles. The row
    /// transforms that complete it are left to [`Self::rows`], which needs each row once anyway;
    /// the finished spectrum is in transposed order, position `(k1, k2)` holding frequency
    /// `k1 + M1·k2`.
    fn columns_forward(&self, bits: &Bits, spectrum: &mut [C]) {
        /// The complex sample of two consecutive bits.
        const PAIRS: [C; 4] = [
            C::new(0.0, 0.0),
            C::new(1.0, 0.0),
            C::new(0.0, 1.0),
            C::new(1.0, 1.0),
        ];
        let (rows, cols) = (self.rows, self.cols);
        let mut block = ColumnBlock::new(rows);
        let mut scratch = Buffer::zeroed(self.scratch_len);
        for first_col in (0..cols).step_by(GROUP) {
            let width = GROUP.min(cols - first_col);
            for n1 in 0..rows {
                let word = bits.word_at(2 * (n1 * cols + first_col));
                for c in 0..width {
                    *block.at_mut(c, n1) = PAIRS[((word >> (2 * c)) & 3) as usize];
                }
            }
            for c in 0..width {
                self.column_forward
                    .process_with_scratch(block.column_mut(c), &mut scratch);
            }
            for k1 in 0..rows {
                let run = &mut spectrum[k1 * cols + first_col..][..width];
                for (c, v) in run.iter_mut().enumerate() {
                    *v = block.at(c, k1) * self.twiddle((first_col + c) * k1);
                }
            }
        }
    }

    /// All the row work, one row pair at a time while it is in cache: the forward row transforms
    /// of both signals, the packed product, and the inverse row transforms, left in `first` (the
    /// inverse's twiddles are applied as the columns are gathered). Row `k1` pairs with row
    /// `M1 − k1` (frequencies `k` and `M − k`); the rows are split so that each thread owns both
    /// rows of its pairs.
    fn rows(&self, first: &mut [C], second: &[C]) {
        let (rows, cols) = (self.rows, self.cols);
        let outer = (rows / 4).max(1);
        let tail_start = rows - outer + 1;
        let (head, rest) = first.split_at_mut(outer * cols);
        let (middle, tail) = rest.split_at_mut((tail_start - outer) * cols);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut work = RowWork::new(self);
                for k1 in 0..outer {
                    if k1 == 0 {
                        self.combine_self(0, &mut head[..cols], second, &mut work);
                    } else {
                        let partner = rows - k1;
                        let row = &mut head[k1 * cols..][..cols];
                        let mirror = &mut tail[(partner - tail_start) * cols..][..cols];
                        self.combine_pair(k1, row, mirror, second, &mut work);
                    }
                }
            });
            let mut work = RowWork::new(self);
            for k1 in outer..=rows / 2 {
                let partner = rows - k1;
                if partner == k1 {
                    let row = &mut middle[(k1 - outer) * cols..][..cols];
                    self.combine_self(k1, row, second, &mut work);
                } else {
                    let (low, high) = middle.split_at_mut((partner - outer) * cols);
                    let row = &mut low[(k1 - outer) * cols..][..cols];
                    self.combine_pair(k1, row, &mut high[..cols], second, &mut work);
                }
            }
        });
    }

    /// Rows `k1` and `M1 − k1` (distinct, `k1 > 0`): position `(k1, k2)` pairs with
    /// `(M1 − k1, M2 − 1 − k2)`.
    fn combine_pair(
        &self,
        k1: usize,
        row: &mut [C],
        mirror: &mut [C],
        second: &[C],
        work: &mut RowWork,
    ) {
        let cols = self.cols;
        let partner = self.rows - k1;
        let RowWork {
            scratch,
            second_row,
            second_mirror,
        } = work;
        self.row_forward.process_with_scratch(row, scratch);
        self.row_forward.process_with_scratch(mirror, scratch);
        self.second_row(second, k1, second_row, scratch);
        self.second_row(second, partner, second_mirror, scratch);
        for k2 in 0..cols {
            let m2 = cols - 1 - k2;
            let (a, a_mirror) = (row[k2], mirror[m2]);
            let (b, b_mirror) = (second_row[k2], second_mirror[m2]);
            (row[k2], mirror[m2]) =
                packed_products(a, a_mirror, b, b_mirror, self.unpack_twiddle(k1, k2));
        }
        self.row_inverse.process_with_scratch(row, scratch);
        self.row_inverse.process_with_scratch(mirror, scratch);
    }

    /// Row `k1` of the second signal's spectrum, completed by its row transform.
    fn second_row(&self, second: &[C], k1: usize, into: &mut [C], scratch: &mut [C]) {
        into.copy_from_slice(&second[k1 * self.cols..][..self.cols]);
        self.row_forward.process_with_scratch(into, scratch);
    }
    /// A row paired with itself: row 0, where `(0, k2)` pairs with `(0, −k2 mod M2)`, or row
    /// `M1/2`, where `(k1, k2)` pairs with `(k1, M2 − 1 − k2)`.
    fn combine_self(&self, k1: usize, row: &mut [C], second: &[C], work: &mut RowWork) {
        let cols = self.cols;
        let RowWork {
            scratch,
            second_row,
            ..
        } = work;
        self.row_forward.process_with_scratch(row, scratch);
        self.second_row(second, k1, second_row, scratch);
        for k2 in 0..cols {
            let m2 = if k1 == 0 {
                (cols - k2) % cols
            } else {
                cols - 1 - k2
            };
            if m2 < k2 {
                continue;
            }
            let (a, a_mirror) = (row[k2], row[m2]);
            let (b, b_mirror) = (second_row[k2], second_row[m2]);
            let (at_k, at_mirror) =
                packed_products(a, a_mirror, b, b_mirror, self.unpack_twiddle(k1, k2));
            // Row 0 column 0 is frequency 0, its own mirror: only the first value applies.
            row[m2] = at_mirror;
            row[k2] = at_k;
        }
        self.row_inverse.process_with_scratch(row, scratch);
    }

    /// Column transforms of the inverse, on two threads, each rounding its sums and keeping the
    /// parities that fall in the window.
    fn inverse_columns(&self, rows_done: &[C], start: usize, count: usize) -> Parities {
        let groups = self.cols.div_ceil(GROUP);
        let halves = std::thread::scope(|scope| {
            let upper =
                scope.spawn(|| self.column_range(rows_done, groups / 2..groups, start, count));
            let lower = self.column_range(rows_done, 0..groups / 2, start, count);
            (lower, upper.join())
        });
        let (mut result, upper) = halves;
        match upper {
            Ok(upper) => {
                result.bits.xor_assign(&upper.bits);
                result.worst_rounding = result.worst_rounding.max(upper.worst_rounding);
            }
            // A panicking thread has computed nothing: report the sums as untrustworthy.
            Err(_) => result.worst_rounding = f64::INFINITY,
        }
        result
    }

    fn column_range(
        &self,
        rows_done: &[C],
        groups: std::ops::Range<usize>,
        start: usize,
        count: usize,
    ) -> Parities {
        let (rows, cols) = (self.rows, self.cols);
        let scale = 1.0 / (self.len / 2) as f64;
        let mut block = ColumnBlock::new(rows);
        let mut scratch = Buffer::zeroed(self.scratch_len);
        let mut bits = Bits::zeros(count);
        let mut worst: f64 = 0.0;
        let window = start..start + count;
        let mut staging = Buffer::zeroed(GROUP * rows);
        for group in groups {
            let first_col = group * GROUP;
            let width = GROUP.min(cols - first_col);
            // Copy first, twiddle after: a bare copy keeps many rows' loads in flight, which
            // is what a gather across pages is bound by.
            for (k1, staged) in staging.chunks_exact_mut(GROUP).enumerate() {
                staged[..width].copy_from_slice(&rows_done[k1 * cols + first_col..][..width]);
            }
            for (k1, staged) in staging.chunks_exact(GROUP).enumerate() {
                for (c, &v) in staged[..width].iter().enumerate() {
                    *block.at_mut(c, k1) = v * self.twiddle((first_col + c) * k1).conj();
                }
            }
            for c in 0..width {
                let column = block.column_mut(c);
                self.column_inverse
                    .process_with_scratch(column, &mut scratch);
                for (n1, &z) in column.iter().enumerate() {
                    let j = n1 * cols + first_col + c;
                    for (t, v) in [(2 * j, z.re), (2 * j + 1, z.im)] {
                        if window.contains(&t) {
                            let (parity, distance) = nearest_integer_parity(v * scale);
                            worst = worst.max(distance);
                            if parity {
                                bits.set(t - start, true);
                            }
                        }
                    }
                }
            }
        }
        Parities {
            bits,
            worst_rounding: worst,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qkd_firmware_sim::world::rng::SimRng;

    /// Cyclic convolution mod 2 by its definition, bit by bit.
    fn by_definition(a: &Bits, b: &Bits, len: usize) -> Bits {
        let mut out = Bits::zeros(len);
        for t in 0..len {
            let mut sum = false;
            for j in 0..b.len() {
                if b.get(j) {
                    let i = (t + len - j) % len;
                    sum ^= i < a.len() && a.get(i);
                }
            }
            out.set(t, sum);
        }
        out
    }

    #[test]
    fn parities_match_the_definition_for_every_shape_of_the_four_steps() {
        let mut planner = FftPlanner::new();
        let mut rng = SimRng::new(5, 0);
        // One row, two, four, many; column counts below, at and past a group; factors 3 and 5.
        for len in [2, 4, 6, 10, 30, 64, 90, 256, 1000, 2048, 6144, 12_000] {
            let mut convolver = ParityConvolver::new(&mut planner, len);
            assert_eq!(convolver.cyclic_len(), len);
            let a = Bits::from_word_fn(len, || rng.next_u64());
            let b = Bits::from_word_fn(len - len / 3, || rng.next_u64());
            let truth = by_definition(&a, &b, len);
            let all = convolver.parities(&a, &b, 0, len);
            assert_eq!(all.bits, truth, "length {len}");
            // Rounding error of an FFT convolution: at most c·ε·log2(N)·‖a‖·‖b‖ in 2-norm
            // (Percival), with ‖·‖ of a 0/1 signal the root of its count of ones; c = 4 covers the
            // two-level twiddle tables.
            let norms = ((a.count_ones() * b.count_ones()) as f64).sqrt();
            let bound = 4.0 * f64::EPSILON * (len as f64).log2() * norms;
            assert!(
                all.worst_rounding <= bound,
                "length {len}: {} over {bound}",
                all.worst_rounding
            );
            let (start, count) = (len / 3, len / 2);
            let window = convolver.parities(&a, &b, start, count);
            assert_eq!(
                window.bits,
                truth.range(start, start + count),
                "length {len} window"
            );
        }
    }
}
