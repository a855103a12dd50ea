//! The tag stream: a time tagger's tags over a byte stream (TCP, a Unix socket), as the emulated
//! bench serves its receivers' taggers and any tool can read them.
//!
//! Layout, all integers little-endian:
//!
//! ```text
//! hello  = "QKDTAGS1" (8 bytes) | resolution_ps: u32 | channels: u8 | roles: [u8; channels]
//! frame  = tags: u32 | covered_to_ps: i64 | missed: u32 | flags: u8 | times: [i64; tags] | channels: [u8; tags]
//! ```
//!
//! Each frame holds the tags of one stretch of tagger time, in time order; `covered_to_ps` says
//! up to which tagger time every tag has been sent, so a receiver learns that time passed even
//! when no tag came. `missed` counts events the tagger saw but could not deliver since the last
//! frame, and flag bit 0 says its buffer overflowed (the stream has a gap). Channel roles: 0 sync,
//! 1–4 detectors H, V, D, A (role `1 + n`), 5 the pattern marker, 255 anything else.

/// The stream's first bytes.
pub const MAGIC: [u8; 8] = *b"QKDTAGS1";
/// Bytes of a hello before the channel roles.
pub const HELLO_BYTES: usize = 13;
/// Bytes of a frame's header.
pub const FRAME_HEADER_BYTES: usize = 17;
/// Most tags one frame may carry: a bound a reader enforces before it allocates.
pub const MAX_FRAME_TAGS: u32 = 1 << 22;
/// Most channels a tagger may declare.
pub const MAX_CHANNELS: u8 = 64;
/// Role byte of the sync input.
pub const ROLE_SYNC: u8 = 0;
/// Role byte of detector `n` is `ROLE_DETECTOR + n`.
pub const ROLE_DETECTOR: u8 = 1;
/// Role byte of the pattern marker input.
pub const ROLE_MARKER: u8 = 5;
/// Role byte of any other input.
pub const ROLE_OTHER: u8 = 255;
/// Flag bit: the tagger's buffer overflowed since the last frame.
pub const FLAG_OVERFLOW: u8 = 1;

/// Why bytes are not a tag stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    /// The stream does not start with [`MAGIC`].
    NotATagStream,
    /// A hello declaring no channels or more than [`MAX_CHANNELS`].
    Channels(u8),
    /// A channel role that is none of the defined ones.
    Role {
        /// Channel.
        channel: u8,
        /// Role byte.
        role: u8,
    },
    /// A frame announcing more than [`MAX_FRAME_TAGS`] tags.
    TooManyTags(u32),
    /// A frame with flag bits not defined.
    Flags(u8),
}

impl core::fmt::Display for StreamError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StreamError::NotATagStream => f.write_str("not a tag stream (no QKDTAGS1 hello)"),
            StreamError::Channels(n) => {
                write!(f, "a hello with {n} channels (1 to {MAX_CHANNELS})")
            }
            StreamError::Role { channel, role } => {
                write!(f, "channel {channel} has the unknown role {role}")
            }
            StreamError::TooManyTags(n) => {
                write!(f, "a frame of {n} tags (at most {MAX_FRAME_TAGS})")
            }
            StreamError::Flags(flags) => write!(f, "a frame with unknown flags {flags:#04x}"),
        }
    }
}

impl core::error::Error for StreamError {}

/// What a hello says before the roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Timestamp resolution, ps.
    pub resolution_ps: u32,
    /// Number of channels (the roles follow).
    pub channels: u8,
}

impl Hello {
    /// The hello's fixed part.
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut out = [0u8; HELLO_BYTES];
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&self.resolution_ps.to_le_bytes());
        out[12] = self.channels;
        out
    }

    /// Reads the fixed part.
    pub fn decode(bytes: &[u8; HELLO_BYTES]) -> Result<Self, StreamError> {
        if bytes[..8] != MAGIC {
            return Err(StreamError::NotATagStream);
        }
        let channels = bytes[12];
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(StreamError::Channels(channels));
        }
        Ok(Hello {
            resolution_ps: u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            channels,
        })
    }
}

/// Checks a role byte.
pub fn check_role(channel: u8, role: u8) -> Result<(), StreamError> {
    match role {
        ROLE_SYNC | ROLE_OTHER => Ok(()),
        r if (ROLE_DETECTOR..ROLE_DETECTOR + 4).contains(&r) || r == ROLE_MARKER => Ok(()),
        _ => Err(StreamError::Role { channel, role }),
    }
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Tags in the frame.
    pub tags: u32,
    /// Tagger time up to which every tag has been sent.
    pub covered_to_ps: i64,
    /// Events lost since the last frame.
    pub missed: u32,
    /// Flags ([`FLAG_OVERFLOW`]).
    pub flags: u8,
}

impl FrameHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut out = [0u8; FRAME_HEADER_BYTES];
        out[..4].copy_from_slice(&self.tags.to_le_bytes());
        out[4..12].copy_from_slice(&self.covered_to_ps.to_le_bytes());
        out[12..16].copy_from_slice(&self.missed.to_le_bytes());
        out[16] = self.flags;
        out
    }

    /// Reads a header, refusing what a reader must not act on.
    pub fn decode(bytes: &[u8; FRAME_HEADER_BYTES]) -> Result<Self, StreamError> {
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let tags = word(0);
        if tags > MAX_FRAME_TAGS {
            return Err(StreamError::TooManyTags(tags));
        }
        let flags = bytes[16];
        if flags & !FLAG_OVERFLOW != 0 {
            return Err(StreamError::Flags(flags));
        }
        let mut time = [0u8; 8];
        time.copy_from_slice(&bytes[4..12]);
        Ok(FrameHeader {
            tags,
            covered_to_ps: i64::from_le_bytes(time),
            missed: word(12),
            flags,
        })
    }

    /// Bytes of the frame's body (times, then channels).
    pub fn body_bytes(&self) -> usize {
        self.tags as usize * 9
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hello_and_header_have_their_documented_bytes() {
        let hello = Hello {
            resolution_ps: 1,
            channels: 6,
        };
        assert_eq!(
            hello.encode(),
            [
                b'Q', b'K', b'D', b'T', b'A', b'G', b'S', b'1', 1, 0, 0, 0, 6
            ]
        );
        let header = FrameHeader {
            tags: 2,
            covered_to_ps: 10_000_000_000,
            missed: 3,
            flags: FLAG_OVERFLOW,
        };
        assert_eq!(
            header.encode(),
            [
                2, 0, 0, 0, 0x00, 0xE4, 0x0B, 0x54, 0x02, 0, 0, 0, 3, 0, 0, 0, 1
            ]
        );
        assert_eq!(FrameHeader::decode(&header.encode()), Ok(header));
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
    }

    #[test]
    fn what_a_reader_must_not_act_on_is_refused() {
        let mut hello = Hello {
            resolution_ps: 1,
            channels: 6,
        }
        .encode();
        hello[0] = b'X';
        assert_eq!(Hello::decode(&hello), Err(StreamError::NotATagStream));
        let none = Hello {
            resolution_ps: 1,
            channels: 0,
        };
        assert_eq!(Hello::decode(&none.encode()), Err(StreamError::Channels(0)));
        let huge = FrameHeader {
            tags: MAX_FRAME_TAGS + 1,
            covered_to_ps: 0,
            missed: 0,
            flags: 0,
        };
        assert_eq!(
            FrameHeader::decode(&huge.encode()),
            Err(StreamError::TooManyTags(MAX_FRAME_TAGS + 1))
        );
        assert!(check_role(3, 9).is_err() && check_role(3, ROLE_MARKER).is_ok());
    }

    proptest! {
        #[test]
        fn any_header_bytes_decode_or_are_refused_without_panic(bytes in any::<[u8; FRAME_HEADER_BYTES]>()) {
            if let Ok(header) = FrameHeader::decode(&bytes) {
                prop_assert_eq!(header.encode(), bytes);
                prop_assert!(header.tags <= MAX_FRAME_TAGS);
            }
        }

        #[test]
        fn any_hello_bytes_decode_or_are_refused_without_panic(bytes in any::<[u8; HELLO_BYTES]>()) {
            if let Ok(hello) = Hello::decode(&bytes) {
                prop_assert_eq!(hello.encode(), bytes);
            }
        }
    }
}
