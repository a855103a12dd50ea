//! A QKD node's post-processing over the classical channel: sifting as detections arrive, then
//! block by block estimation, error correction, verification and privacy amplification.

pub mod block;
pub mod messages;
pub mod session;
