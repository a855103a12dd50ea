//! Post-processing of a QKD node: from time tags to keys.
//!
//! Pure computation on blocks of data: no I/O, no clocks, no threads of its own, and no
//! dependency on the rest of qkd-node, so every stage can be tested and benchmarked alone.
//!
//! - [`slots`]: slot recovery for prepare-and-measure links (sync tracking, delays, gating).
//! - [`coincidence`]: offset search and coincidence finding for entanglement-based links.

pub mod coincidence;
pub mod slots;
mod xcorr;
