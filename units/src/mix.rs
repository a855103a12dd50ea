//! The SplitMix64 finaliser: a fast, well-mixed 64-bit hash. Both nodes derive their public
//! shuffles from it (so the algorithm is part of the protocol), and the emulator its seeds and
//! per-slot choices.

/// SplitMix64's output for state `x` (the state advances by the golden-ratio increment).
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(GOLDEN_GAMMA);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// SplitMix64's state increment, `2^64 / φ`.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
