//! Firmware cores of our device boards, written against `embedded-hal` 1.0 so that the same code
//! builds for a microcontroller (`thumbv7em-none-eabihf`) and runs in the simulator on simulated
//! peripherals. `no_std`, no allocation.
//!
//! A core turns a [`Request`] into a [`Reply`] by driving its peripherals; [`Firmware`] is the
//! serial side around any core: it decodes frames, drops damaged ones (the host times out and
//! retries) and answers each request under the request's sequence number. After power-on it
//! refuses every command with [`ErrorCode::Restarted`] until the host has identified it, so a
//! host never drives a board whose settings a reset has silently cleared.

pub mod detector;
pub mod polarization;
pub mod source;

use qkd_protocol::{
    ErrorCode, FrameDecoder, Identity, MAX_FRAME, PROTOCOL_VERSION, Reply, Request, encode_frame,
};

pub use detector::DetectorBoard;
pub use polarization::PolarizationBoard;
pub use source::SourceBoard;

/// Firmware version reported in the handshake.
pub const FIRMWARE_VERSION: [u8; 3] = [0, 1, 0];

/// A board's command handler.
pub trait BoardCore {
    /// Which board this is.
    fn kind(&self) -> qkd_protocol::BoardKind;

    /// Carries out one request (never [`Request::Identify`], which the runner answers).
    fn handle(&mut self, request: &Request) -> Reply;
}

/// The serial side of a board: frames in, replies out.
#[derive(Debug)]
pub struct Firmware<B> {
    core: B,
    decoder: FrameDecoder,
    serial: u32,
    boot: u16,
    damaged_frames: u32,
    identified: bool,
}

impl<B: BoardCore> Firmware<B> {
    /// Runs `core`; `boot` is the board's start count (kept in its non-volatile memory).
    pub fn new(core: B, serial: u32, boot: u16) -> Self {
        Firmware {
            core,
            decoder: FrameDecoder::new(),
            serial,
            boot,
            damaged_frames: 0,
            identified: false,
        }
    }

    /// The handshake answer.
    pub fn identity(&self) -> Identity {
        Identity {
            board: self.core.kind(),
            serial: self.serial,
            firmware: FIRMWARE_VERSION,
            protocol: PROTOCOL_VERSION,
            boot: self.boot,
        }
    }

    /// Frames that arrived damaged and were dropped since start.
    pub fn damaged_frames(&self) -> u32 {
        self.damaged_frames
    }

    /// Takes received bytes and hands each reply frame to `send`.
    pub fn receive(&mut self, bytes: &[u8], mut send: impl FnMut(&[u8])) {
        for &byte in bytes {
            match self.decoder.push::<Request>(byte) {
                None => {}
                Some(Err(_)) => self.damaged_frames = self.damaged_frames.wrapping_add(1),
                Some(Ok((sequence, request))) => {
                    let reply = match request {
                        Request::Identify => {
                            self.identified = true;
                            Reply::Identity(self.identity())
                        }
                        _ if !self.identified => Reply::Error(ErrorCode::Restarted),
                        other => self.core.handle(&other),
                    };
                    let mut frame = [0u8; MAX_FRAME];
                    // Every reply is far below the frame limit; an encoder refusal would be a
                    // protocol bug, answered as a peripheral fault rather than silence.
                    let len = encode_frame(sequence, &reply, &mut frame)
                        .or_else(|_| {
                            encode_frame(sequence, &Reply::Error(ErrorCode::Peripheral), &mut frame)
                        })
                        .unwrap_or(0);
                    send(&frame[..len]);
                }
            }
        }
    }
}

/// Writes a register of an SPI peripheral: address byte, then a big-endian value.
pub(crate) fn write_register<S: embedded_hal::spi::SpiDevice>(
    spi: &mut S,
    address: u8,
    value: u32,
) -> Result<(), ErrorCode> {
    let [a, b, c, d] = value.to_be_bytes();
    spi.write(&[address, a, b, c, d])
        .map_err(|_| ErrorCode::Peripheral)
}

/// Turns a handler's outcome into the reply.
pub(crate) fn reply(result: Result<Reply, ErrorCode>) -> Reply {
    result.unwrap_or_else(Reply::Error)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use qkd_protocol::{BoardKind, PolarizationCommand};
    use std::vec::Vec;

    struct Echo;
    impl BoardCore for Echo {
        fn kind(&self) -> BoardKind {
            BoardKind::Polarization
        }
        fn handle(&mut self, _: &Request) -> Reply {
            Reply::Ack
        }
    }

    fn frame(seq: u16, request: &Request) -> Vec<u8> {
        let mut out = [0u8; MAX_FRAME];
        let n = encode_frame(seq, request, &mut out).unwrap();
        out[..n].to_vec()
    }

    fn replies(firmware: &mut Firmware<Echo>, bytes: &[u8]) -> Vec<(u16, Reply)> {
        let mut sent = Vec::new();
        firmware.receive(bytes, |f| sent.extend_from_slice(f));
        let mut decoder = FrameDecoder::new();
        sent.iter()
            .filter_map(|&b| decoder.push::<Reply>(b))
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn answers_under_the_request_sequence_and_drops_damaged_frames() {
        let mut firmware = Firmware::new(Echo, 42, 3);
        let get = Request::Polarization(PolarizationCommand::GetDac);
        assert_eq!(
            replies(&mut firmware, &frame(4, &get)),
            [(4, Reply::Error(ErrorCode::Restarted))]
        );
        let mut bytes = frame(5, &Request::Identify);
        let mut damaged = frame(6, &Request::Polarization(PolarizationCommand::GetDac));
        damaged[2] ^= 0x40;
        bytes.extend(damaged);
        bytes.extend(frame(
            7,
            &Request::Polarization(PolarizationCommand::GetDac),
        ));
        let got = replies(&mut firmware, &bytes);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 5);
        let Reply::Identity(identity) = got[0].1 else {
            panic!("{got:?}")
        };
        assert_eq!(
            (identity.serial, identity.boot, identity.protocol),
            (42, 3, PROTOCOL_VERSION)
        );
        assert_eq!(got[1], (7, Reply::Ack));
        assert_eq!(firmware.damaged_frames(), 1);
    }
}
