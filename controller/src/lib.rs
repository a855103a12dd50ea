//! The qkd-node controller: node runtime, classical channel, and the commands of the `qkd`
//! binary.

pub mod bench;
pub mod calibrate;
pub mod channel;
pub mod devices;
pub mod emulate;
pub mod flags;
pub mod link;
pub mod node;
pub mod plan;
pub mod progress;
pub mod sim;
pub mod tags;
