//! The wire protocol of qkd-node's own device boards (source, detector, polarization).
//!
//! A frame is a postcard body `(sequence, message)` followed by its CRC-32C (little-endian),
//! COBS-encoded and ended by a single `0x00`. COBS keeps `0x00` out of the body, so a receiver
//! that joins mid-stream or loses bytes resynchronises at the next delimiter; the CRC rejects
//! what line noise corrupts; the sequence number pairs each reply with its request, so a late
//! reply to an abandoned request is recognised and dropped.
//!
//! The vendor protocols that both the emulator and the drivers speak (Thorlabs APT, OZ Optics
//! EPC) live here too, so each frame has one definition. Everything here is `no_std` and
//! allocation-free: the same code runs on the boards and in the host.
#![no_std]

pub mod apt;
pub mod cobs;
pub mod epc;
pub mod frame;
pub mod message;
pub mod tag_stream;

pub use frame::{FrameDecoder, FrameError, MAX_FRAME, encode_frame};
pub use message::{
    BoardKind, DetectorCommand, ErrorCode, Identity, IntensityCode, PROTOCOL_VERSION,
    PolarizationCommand, PolarizationStatus, Reply, Request, SourceCommand, SourceConfig,
    detector_limits, source_limits, squeezer_dac,
};
