//! Post-processing of a QKD node: from time tags to keys.
//!
//! Pure computation on blocks of data: no I/O, no clocks, and no dependency on the rest of
//! qkd-node, so every stage can be tested and benchmarked alone.
//!
//! - [`slots`]: slot recovery for prepare-and-measure links (sync tracking, delays, gating).
//! - [`coincidence`]: offset search and coincidence finding for entanglement-based links.
//! - [`sift`]: sifting with decoy classes, double-click squashing, test-basis errors.
//! - [`estimate`]: finite-key decoy-state bounds (Lim et al. 2014) and asymptotic rates.
//! - [`cascade`]: Cascade error correction as batched parity questions.
//! - [`toeplitz`]: 2-universal Toeplitz hashing for verification and privacy amplification (its
//!   long hashes by a cache-blocked FFT convolution reduced mod 2, in `convolution`).
//! - [`auth`]: Wegman-Carter authentication of channel messages with accounted key use.
//! - [`hybrid`]: ML-DSA signatures over the same transcripts, for post-quantum hybrid mode.

pub mod auth;
pub mod bits;
pub mod cascade;
pub mod coincidence;
mod convolution;
pub mod estimate;
pub mod hybrid;
mod numeric;
pub mod sift;
pub mod slots;
pub mod toeplitz;
mod xcorr;
