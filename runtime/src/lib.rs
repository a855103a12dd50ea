//! The runtime of a qkd-node: everything one node does once its devices are open, as a library
//! with no command line and no emulator.
//!
//! - [`channel`]: the authenticated classical channel, generic over the transport (in-memory,
//!   TCP) and the message type, resynchronised after failures.
//! - [`messages`]: what the two nodes say to each other.
//! - [`session`] and [`block`]: sifting as detections arrive, then block by block estimation,
//!   error correction ([`reconcile`]), verification and privacy amplification.
//! - [`keys`]: where keys go, in two phases so both nodes keep exactly the same ones.
//! - [`sources`]: where a session's data comes from, written against the driver traits.
//! - [`tracking`]: Bob's polarization tracking fed from the session's reference slots.
//! - [`events`]: what a running node reports to whoever subscribes.
//! - [`randomness`]: the protocol's randomness, from the operating system.

pub mod block;
pub mod channel;
pub mod error;
pub mod events;
pub mod keys;
pub mod messages;
pub mod randomness;
pub mod reconcile;
pub mod session;
pub mod sources;
pub mod tracking;

/// State could not be made durable (the node's store failed): nothing more can be kept safely.
#[derive(Debug, thiserror::Error)]
#[error("the node's state could not be made durable: {0}")]
pub struct StoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);
