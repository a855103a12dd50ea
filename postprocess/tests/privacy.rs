//! Privacy amplification at sizes where FFT rounding could matter, checked row by row against
//! the direct computation.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use qkd_firmware_sim::world::rng::SimRng;
use qkd_postprocess::bits::Bits;
use qkd_postprocess::toeplitz::{PlanCache, hash_rows};

fn random_bits(n: usize, seed: u64) -> Bits {
    let mut rng = SimRng::new(seed, 0);
    Bits::from_word_fn(n, || rng.next_u64())
}

#[test]
fn a_two_million_bit_block_agrees_with_the_direct_hash_on_sampled_rows() {
    let (n, m) = (1 << 21, 1_300_000);
    let x = random_bits(n, 5);
    let seed = random_bits(n + m - 1, 6);
    let fast = PlanCache::default()
        .hasher(n, m)
        .hash(&x, &seed, m)
        .unwrap();
    // Rows at both ends (where the circular wrap would show) and spread between.
    let mut rows: Vec<usize> = (0..32).chain(m - 32..m).collect();
    rows.extend((0..64).map(|k| k * (m / 64) + 17));
    let slow = hash_rows(&x, &seed, m, &rows).unwrap();
    for (&i, &bit) in rows.iter().zip(&slow) {
        assert_eq!(fast.get(i), bit, "row {i}");
    }
    // A hash of random input is balanced: a test that cannot pass by an all-zero output.
    let ones = fast.count_ones() as f64;
    assert!((ones - m as f64 / 2.0).abs() < 5.0 * (m as f64 / 4.0).sqrt());
}
