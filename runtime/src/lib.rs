//! The runtime of a qkd-node: everything one node does once its devices are open, as a library
//! with no command line and no emulator.
//!
//! - [`channel`]: the authenticated classical channel, generic over the transport (in-memory, TCP).
//! - [`messages`]: what the two nodes say to each other.
//! - [`session`] and [`block`]: sifting as detections arrive, then block by block estimation,
//!   error correction, verification and privacy amplification.
//! - [`sources`]: where a session's data comes from, written against the driver traits.
//! - [`tracking`]: Bob's polarization tracking fed from the session's reference slots.

pub mod block;
pub mod channel;
pub mod messages;
pub mod session;
pub mod sources;
pub mod tracking;
