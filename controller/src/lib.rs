//! The commands of the `qkd` binary: thin command-line modules over the node runtime
//! (`qkd-runtime`), the emulated bench and the drivers, and the benchmarks.

pub mod bench;
pub mod calibrate;
pub mod devices;
pub mod emulate;
pub mod flags;
pub mod kme;
pub mod limits;
pub mod link;
pub mod node;
pub mod plan;
pub mod plot;
pub mod progress;
pub mod recording;
pub mod sim;
pub mod tags;
