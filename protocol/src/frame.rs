//! Frames: postcard body `(sequence, message)` + CRC-32C, COBS-stuffed, `0x00`-terminated.

use crc::{CRC_32_ISCSI, Crc};
use serde::{Deserialize, Serialize};

use crate::cobs::{self, max_encoded_len};

/// Longest body (sequence, message and CRC) a frame carries.
pub const MAX_BODY: usize = 96;
/// Longest frame on the wire, delimiter included.
pub const MAX_FRAME: usize = max_encoded_len(MAX_BODY) + 1;

const CRC: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);
const CRC_LEN: usize = 4;

/// Why bytes did not make a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// More than [`MAX_FRAME`] bytes arrived without a delimiter; they were discarded up to the
    /// next delimiter.
    Overflow,
    /// The COBS stuffing is broken (bytes lost or inserted).
    Stuffing,
    /// The body is shorter than a CRC.
    Short,
    /// The CRC does not match: the frame was corrupted.
    Crc,
    /// The body is not a valid message.
    Body,
    /// The message does not fit in [`MAX_BODY`] bytes (an encoder-side error).
    TooLong,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FrameError::Overflow => "frame longer than the protocol allows",
            FrameError::Stuffing => "broken COBS stuffing",
            FrameError::Short => "frame shorter than its checksum",
            FrameError::Crc => "checksum mismatch",
            FrameError::Body => "undecodable message",
            FrameError::TooLong => "message too long for a frame",
        })
    }
}

impl core::error::Error for FrameError {}

/// Encodes `message` with `sequence` into `out` as one frame, delimiter included; returns its
/// length.
pub fn encode_frame<M: Serialize>(
    sequence: u16,
    message: &M,
    out: &mut [u8; MAX_FRAME],
) -> Result<usize, FrameError> {
    let mut body = [0u8; MAX_BODY];
    let used = postcard::to_slice(&(sequence, message), &mut body[..MAX_BODY - CRC_LEN])
        .map_err(|_| FrameError::TooLong)?
        .len();
    let crc = CRC.checksum(&body[..used]);
    body[used..used + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
    let stuffed = cobs::encode(&body[..used + CRC_LEN], &mut out[..MAX_FRAME - 1])
        .map_err(|_| FrameError::TooLong)?;
    out[stuffed] = 0;
    Ok(stuffed + 1)
}

/// Collects bytes into frames and decodes them; never panics, whatever arrives.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    buffer: [u8; MAX_FRAME],
    len: usize,
    /// Discarding an over-long frame until the next delimiter.
    skipping: bool,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// An empty decoder.
    pub const fn new() -> Self {
        FrameDecoder {
            buffer: [0; MAX_FRAME],
            len: 0,
            skipping: false,
        }
    }

    /// Forgets a partly received frame.
    pub fn reset(&mut self) {
        self.len = 0;
        self.skipping = false;
    }

    /// Takes one byte; at a delimiter returns the frame it ends, decoded, or why it was bad.
    /// Empty frames (two delimiters in a row, or a delimiter sent to flush a line) are skipped.
    pub fn push<M: for<'de> Deserialize<'de>>(
        &mut self,
        byte: u8,
    ) -> Option<Result<(u16, M), FrameError>> {
        if byte != 0 {
            if self.skipping {
                return None;
            }
            if self.len == MAX_FRAME - 1 {
                self.len = 0;
                self.skipping = true;
                return Some(Err(FrameError::Overflow));
            }
            self.buffer[self.len] = byte;
            self.len += 1;
            return None;
        }
        let len = core::mem::take(&mut self.len);
        if core::mem::take(&mut self.skipping) || len == 0 {
            return None;
        }
        Some(decode_body(&self.buffer[..len]))
    }
}

fn decode_body<M: for<'de> Deserialize<'de>>(stuffed: &[u8]) -> Result<(u16, M), FrameError> {
    let mut body = [0u8; MAX_FRAME];
    let len = cobs::decode(stuffed, &mut body).map_err(|_| FrameError::Stuffing)?;
    if len < CRC_LEN {
        return Err(FrameError::Short);
    }
    let (payload, crc) = body[..len].split_at(len - CRC_LEN);
    let mut received = [0u8; CRC_LEN];
    received.copy_from_slice(crc);
    if CRC.checksum(payload) != u32::from_le_bytes(received) {
        return Err(FrameError::Crc);
    }
    match postcard::take_from_bytes::<(u16, M)>(payload) {
        Ok((decoded, [])) => Ok(decoded),
        _ => Err(FrameError::Body),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::message::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn frame<M: Serialize>(seq: u16, message: &M) -> Vec<u8> {
        let mut out = [0u8; MAX_FRAME];
        let n = encode_frame(seq, message, &mut out).unwrap();
        out[..n].to_vec()
    }

    fn decode_all<M: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Vec<Result<(u16, M), FrameError>> {
        let mut decoder = FrameDecoder::new();
        bytes.iter().filter_map(|&b| decoder.push(b)).collect()
    }

    fn request() -> impl Strategy<Value = Request> {
        let code = (any::<u32>(), any::<u32>())
            .prop_map(|(micro_photons, ppm)| IntensityCode { micro_photons, ppm });
        let config = (
            0u8..=4,
            proptest::array::uniform4(code),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(
                |(class_count, classes, basis_z_ppm, reference_ppm)| SourceConfig {
                    class_count,
                    classes,
                    basis_z_ppm,
                    reference_ppm,
                },
            );
        prop_oneof![
            Just(Request::Identify),
            any::<bool>().prop_map(|on| Request::Source(SourceCommand::SetEnabled(on))),
            config.prop_map(|c| Request::Source(SourceCommand::Configure(c))),
            Just(Request::Source(SourceCommand::ReadPowerMonitor)),
            any::<[u8; 32]>().prop_map(|key| Request::Source(SourceCommand::LoadPattern(key))),
            (any::<u8>(), any::<u32>()).prop_map(|(channel, millivolts)| Request::Detector(
                DetectorCommand::SetBias {
                    channel,
                    millivolts
                }
            )),
            (any::<u8>(), any::<u32>()).prop_map(|(channel, nanoseconds)| Request::Detector(
                DetectorCommand::SetDeadTime {
                    channel,
                    nanoseconds
                }
            )),
            any::<u16>().prop_map(|milliseconds| Request::Detector(
                DetectorCommand::ReadCounters { milliseconds }
            )),
            any::<[u16; 4]>().prop_map(|c| Request::Polarization(PolarizationCommand::SetDac(c))),
            Just(Request::Polarization(PolarizationCommand::Status)),
        ]
    }

    fn reply() -> impl Strategy<Value = Reply> {
        prop_oneof![
            (any::<u32>(), any::<[u8; 3]>(), any::<u16>(), any::<u16>()).prop_map(
                |(serial, firmware, protocol, boot)| Reply::Identity(Identity {
                    board: BoardKind::Detector,
                    serial,
                    firmware,
                    protocol,
                    boot,
                })
            ),
            Just(Reply::Ack),
            any::<[u32; 4]>().prop_map(Reply::Counters),
            any::<[u16; 4]>().prop_map(Reply::Dac),
            (any::<u16>(), any::<u32>())
                .prop_map(|(code, femtowatts)| Reply::Power { code, femtowatts }),
            any::<u8>().prop_map(|a| Reply::Error(ErrorCode::OutOfRange(a))),
        ]
    }

    #[test]
    fn the_largest_message_fits() {
        let config = SourceConfig {
            class_count: 4,
            classes: [IntensityCode {
                micro_photons: u32::MAX,
                ppm: u32::MAX,
            }; 4],
            basis_z_ppm: u32::MAX,
            reference_ppm: u32::MAX,
        };
        let bytes = frame(u16::MAX, &Request::Source(SourceCommand::Configure(config)));
        assert!(bytes.len() <= MAX_FRAME);
        assert_eq!(bytes.last(), Some(&0));
    }

    #[test]
    fn the_checksum_is_crc32c_with_its_published_check_value() {
        // CRC-32C (Castagnoli, iSCSI: reflected polynomial 0x82F63B78, initial and final XOR
        // 0xFFFFFFFF) of the ASCII digits 1–9 is 0xE3069283, the check value the CRC catalogue
        // lists for CRC-32/ISCSI.
        assert_eq!(CRC.checksum(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn frames_have_their_documented_bytes() {
        // Worked out by hand from the layout (and checked with a bit-by-bit CRC-32C and COBS
        // written separately in Python): postcard varints of the sequence, the variant indices
        // (Request::Polarization = 3, PolarizationCommand::SetDac = 0) and the four codes; the
        // CRC-32C of that body little-endian; COBS; the 0x00 delimiter.
        assert_eq!(
            frame(
                7,
                &Request::Polarization(PolarizationCommand::SetDac([1, 2, 3, 4]))
            ),
            [
                0x03, 0x07, 0x03, 0x09, 0x01, 0x02, 0x03, 0x04, 0x0D, 0xD6, 0x30, 0xF3, 0x00
            ]
        );
        // Multi-byte varints (300, 4095, 65535, 128) and zeros stuffed by COBS.
        assert_eq!(
            frame(
                300,
                &Request::Polarization(PolarizationCommand::SetDac([0, 4095, 65535, 128]))
            ),
            [
                0x04, 0xAC, 0x02, 0x03, 0x01, 0x0C, 0xFF, 0x1F, 0xFF, 0xFF, 0x03, 0x80, 0x01, 0x94,
                0xF7, 0x7E, 0xD8, 0x00
            ]
        );
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let clean = frame(
            7,
            &Request::Polarization(PolarizationCommand::SetDac([1, 2, 3, 4])),
        );
        // Every data byte (not a COBS code byte, not the delimiter), every bit: the CRC
        // catches it, and nothing else goes wrong first.
        for i in [1, 2, 4, 5, 6, 7, 8, 9, 10, 11] {
            for bit in 0..8 {
                let mut bytes = clean.clone();
                bytes[i] ^= 1 << bit;
                if bytes[i] == 0 {
                    continue; // a new delimiter: two frames, checked below
                }
                assert_eq!(
                    decode_all::<Request>(&bytes),
                    [Err(FrameError::Crc)],
                    "byte {i} bit {bit}"
                );
            }
        }
        // A code byte pointing elsewhere breaks the stuffing or the checksum, never decodes.
        let mut bytes = clean.clone();
        bytes[0] = 0x02;
        let decoded = decode_all::<Request>(&bytes);
        assert!(
            matches!(decoded[..], [Err(FrameError::Crc | FrameError::Stuffing)]),
            "{decoded:?}"
        );
    }

    #[test]
    fn over_long_garbage_is_skipped_to_the_next_delimiter() {
        let mut bytes = std::vec![0x55u8; 3 * MAX_FRAME];
        bytes.push(0);
        bytes.extend(frame(9, &Request::Identify));
        let decoded = decode_all::<Request>(&bytes);
        assert_eq!(
            decoded,
            [Err(FrameError::Overflow), Ok((9, Request::Identify))]
        );
    }

    proptest! {
        #[test]
        fn requests_round_trip(seq in any::<u16>(), message in request()) {
            let bytes = frame(seq, &message);
            prop_assert!(bytes.len() <= MAX_FRAME);
            prop_assert!(!bytes[..bytes.len() - 1].contains(&0));
            prop_assert_eq!(decode_all::<Request>(&bytes), std::vec![Ok((seq, message))]);
        }

        #[test]
        fn replies_round_trip(seq in any::<u16>(), message in reply()) {
            prop_assert_eq!(decode_all::<Reply>(&frame(seq, &message)), std::vec![Ok((seq, message))]);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1000)) {
            let _ = decode_all::<Request>(&bytes);
            let _ = decode_all::<Reply>(&bytes);
        }

        /// Whatever garbage precedes it, a frame after a delimiter decodes.
        #[test]
        fn resynchronises_after_garbage(
            garbage in proptest::collection::vec(any::<u8>(), 0..400),
            seq in any::<u16>(),
            message in request(),
        ) {
            let mut bytes = garbage;
            bytes.push(0);
            bytes.extend(frame(seq, &message));
            let decoded = decode_all::<Request>(&bytes);
            prop_assert_eq!(decoded.last(), Some(&Ok((seq, message))));
        }

        /// Losing or corrupting bytes of one frame costs that frame only, never the next.
        #[test]
        fn damage_stays_inside_its_frame(
            first in request(),
            second in request(),
            cut in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut damaged = frame(1, &first);
            let at = cut.index(damaged.len() - 1);
            damaged[at] ^= flip;
            damaged.extend(frame(2, &second));
            let decoded = decode_all::<Request>(&damaged);
            prop_assert_eq!(decoded.last(), Some(&Ok((2, second))));
            // The checksum refuses the damaged frame rather than deliver another message.
            prop_assert!(!decoded.iter().any(|d| matches!(d, Ok((1, m)) if *m != first)));
        }
    }
}
