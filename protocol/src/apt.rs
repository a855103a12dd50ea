//! Thorlabs APT framing, as the MPC320 motorised polarization controller speaks it over its FTDI
//! serial port (115200 8N1, RTS/CTS). Shared by the emulated device and the host driver.
//!
//! Every message starts with a 6-byte header: message id (u16 LE), then two parameter bytes or,
//! when a data packet follows, its length (u16 LE); destination (with 0x80 set when data
//! follows); source. The host is 0x01, the controller 0x50. APT has no delimiter or checksum: a
//! reader that meets a header it cannot accept drops one byte and tries again.

/// Address of the host.
pub const HOST: u8 = 0x01;
/// Address of a generic USB device (the MPC320).
pub const DEVICE: u8 = 0x50;
/// Set in the destination byte when a data packet follows the header.
pub const DATA_FOLLOWS: u8 = 0x80;
/// Longest data packet either side accepts.
pub const MAX_DATA: usize = 128;
/// Header length.
pub const HEADER: usize = 6;

/// Message ids used with the MPC320.
pub mod id {
    /// The host is going away.
    pub const HW_DISCONNECT: u16 = 0x0002;
    /// Ask for the hardware information.
    pub const HW_REQ_INFO: u16 = 0x0005;
    /// Hardware information (84 data bytes).
    pub const HW_GET_INFO: u16 = 0x0006;
    /// An error report with a text (68 data bytes: message id, code, 64 characters).
    pub const HW_RICHRESPONSE: u16 = 0x0081;
    /// Enable or disable paddle channels (param 1: channel bits, param 2: 1 on / 2 off).
    pub const MOD_SET_CHANENABLESTATE: u16 = 0x0210;
    /// Ask which channels are enabled.
    pub const MOD_REQ_CHANENABLESTATE: u16 = 0x0211;
    /// Enabled state of a channel.
    pub const MOD_GET_CHANENABLESTATE: u16 = 0x0212;
    /// Flash the front-panel LED.
    pub const MOD_IDENTIFY: u16 = 0x0223;
    /// Home a paddle (param 1: channel bits).
    pub const MOVE_HOME: u16 = 0x0443;
    /// A paddle reached home.
    pub const MOVE_HOMED: u16 = 0x0444;
    /// Move a paddle to an absolute position (data: channel u16, position i32).
    pub const MOVE_ABSOLUTE: u16 = 0x0453;
    /// A move finished (data: 14-byte status).
    pub const MOVE_COMPLETED: u16 = 0x0464;
    /// Stop a paddle.
    pub const MOVE_STOP: u16 = 0x0465;
    /// A paddle stopped.
    pub const MOVE_STOPPED: u16 = 0x0466;
    /// Jog a paddle one jog step (param 2: 1 forward, 2 backward).
    pub const MOVE_JOG: u16 = 0x046A;
    /// Set the paddle parameters (12 data bytes).
    pub const POL_SET_PARAMS: u16 = 0x0530;
    /// Ask for the paddle parameters.
    pub const POL_REQ_PARAMS: u16 = 0x0531;
    /// The paddle parameters (12 data bytes).
    pub const POL_GET_PARAMS: u16 = 0x0532;
    /// Ask for a status update.
    pub const REQ_STATUSUPDATE: u16 = 0x0490;
    /// A status update (data: 14-byte status).
    pub const GET_STATUSUPDATE: u16 = 0x0491;
    /// Acknowledge status updates (keeps the device sending them).
    pub const ACK_STATUSUPDATE: u16 = 0x0492;
}

/// Channel bits of the three paddles.
pub const PADDLE_BITS: [u8; 3] = [0x01, 0x02, 0x04];
/// Encoder steps over the paddle's travel.
pub const STEPS_PER_TRAVEL: i32 = 1370;
/// Degrees of paddle rotation over the travel.
pub const DEGREES_PER_TRAVEL: f64 = 170.0;
/// Paddle speed at 100 % velocity, degrees per second (Thorlabs specification).
pub const MAX_SPEED_DEG_PER_S: f64 = 200.0;

/// Paddle angle of an encoder position, degrees.
pub fn degrees(steps: i32) -> f64 {
    steps_to_degrees(f64::from(steps))
}

fn steps_to_degrees(steps: f64) -> f64 {
    steps * DEGREES_PER_TRAVEL / f64::from(STEPS_PER_TRAVEL)
}

/// Seconds a paddle takes between two positions at `velocity_percent` of full speed. Any two
/// `i32` positions give a finite time (their difference is taken in 64 bits, so a wild
/// reading cannot wrap it negative).
pub fn travel_seconds(from: i32, to: i32, velocity_percent: u16) -> f64 {
    let distance = (i64::from(to) - i64::from(from)).unsigned_abs() as f64;
    steps_to_degrees(distance) / (MAX_SPEED_DEG_PER_S * f64::from(velocity_percent) / 100.0)
}

/// Status bit: moving forward.
pub const STATUS_MOVING_FORWARD: u32 = 0x10;
/// Status bit: moving backward.
pub const STATUS_MOVING_BACKWARD: u32 = 0x20;
/// Status bit: homed.
pub const STATUS_HOMED: u32 = 0x400;
/// Status bit: channel enabled.
pub const STATUS_ENABLED: u32 = 0x8000_0000;

/// One APT message: the header's fields and, for long messages, the data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// Message id.
    pub id: u16,
    /// The two parameter bytes of a short message (zero for a long one).
    pub params: [u8; 2],
    /// The data packet of a long message (empty for a short one).
    pub data: &'a [u8],
    /// Destination address (without the data flag).
    pub destination: u8,
    /// Source address.
    pub source: u8,
}

/// What the start of a byte buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Too few bytes yet.
    Incomplete,
    /// A message, and how many bytes it took.
    Message(Message<'a>, usize),
    /// Not a header this reader accepts: drop one byte and look again.
    Garbage,
}

/// Encodes a short (header-only) message.
pub fn short(id: u16, params: [u8; 2], destination: u8, source: u8) -> [u8; HEADER] {
    let [a, b] = id.to_le_bytes();
    [a, b, params[0], params[1], destination, source]
}

/// Encodes a long message into `out`; returns its length, or `None` if it does not fit.
pub fn long(id: u16, data: &[u8], destination: u8, source: u8, out: &mut [u8]) -> Option<usize> {
    let total = HEADER + data.len();
    if data.len() > MAX_DATA || out.len() < total {
        return None;
    }
    let [a, b] = id.to_le_bytes();
    let [l0, l1] = (data.len() as u16).to_le_bytes();
    out[..HEADER].copy_from_slice(&[a, b, l0, l1, destination | DATA_FOLLOWS, source]);
    out[HEADER..total].copy_from_slice(data);
    Some(total)
}

/// Reads the message at the start of `bytes`, accepting only `destination` from `source`.
pub fn parse(bytes: &[u8], destination: u8, source: u8) -> Parsed<'_> {
    let Some(header) = bytes.get(..HEADER) else {
        return Parsed::Incomplete;
    };
    let id = u16::from_le_bytes([header[0], header[1]]);
    let has_data = header[4] & DATA_FOLLOWS != 0;
    if header[4] & !DATA_FOLLOWS != destination || header[5] != source {
        return Parsed::Garbage;
    }
    if !has_data {
        let message = Message {
            id,
            params: [header[2], header[3]],
            data: &[],
            destination,
            source,
        };
        return Parsed::Message(message, HEADER);
    }
    let len = usize::from(u16::from_le_bytes([header[2], header[3]]));
    if len > MAX_DATA {
        return Parsed::Garbage;
    }
    match bytes.get(HEADER..HEADER + len) {
        None => Parsed::Incomplete,
        Some(data) => Parsed::Message(
            Message {
                id,
                params: [0, 0],
                data,
                destination,
                source,
            },
            HEADER + len,
        ),
    }
}

/// A paddle's status: the data of MOVE_COMPLETED and GET_STATUSUPDATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Channel bits.
    pub channel: u16,
    /// Position, encoder steps.
    pub position: i32,
    /// Status bits.
    pub bits: u32,
}

impl Status {
    /// Data length.
    pub const LEN: usize = 14;

    /// Encodes: channel, position, encoder count (equal to the position), status bits.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..2].copy_from_slice(&self.channel.to_le_bytes());
        out[2..6].copy_from_slice(&self.position.to_le_bytes());
        out[6..10].copy_from_slice(&self.position.to_le_bytes());
        out[10..].copy_from_slice(&self.bits.to_le_bytes());
        out
    }

    /// Decodes, if `data` has the right length.
    pub fn decode(data: &[u8]) -> Option<Status> {
        let data: &[u8; Self::LEN] = data.try_into().ok()?;
        Some(Status {
            channel: u16::from_le_bytes([data[0], data[1]]),
            position: i32::from_le_bytes([data[2], data[3], data[4], data[5]]),
            bits: u32::from_le_bytes([data[10], data[11], data[12], data[13]]),
        })
    }
}

/// The paddle parameters of POL_SET_PARAMS / POL_GET_PARAMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaddleParams {
    /// Velocity, percent of the maximum.
    pub velocity_percent: u16,
    /// Home position, steps.
    pub home: u16,
    /// Jog steps of paddles 1, 2, 3.
    pub jog_steps: [u16; 3],
}

impl PaddleParams {
    /// Data length.
    pub const LEN: usize = 12;

    /// Encodes: unused word, velocity, home, three jog steps.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let words = [
            0,
            self.velocity_percent,
            self.home,
            self.jog_steps[0],
            self.jog_steps[1],
            self.jog_steps[2],
        ];
        let mut out = [0u8; Self::LEN];
        for (chunk, word) in out.chunks_exact_mut(2).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// Decodes, if `data` has the right length.
    pub fn decode(data: &[u8]) -> Option<PaddleParams> {
        if data.len() != Self::LEN {
            return None;
        }
        let word = |i: usize| u16::from_le_bytes([data[2 * i], data[2 * i + 1]]);
        Some(PaddleParams {
            velocity_percent: word(1),
            home: word(2),
            jog_steps: [word(3), word(4), word(5)],
        })
    }
}

/// The HW_GET_INFO data: serial u32, model 8 chars, type u16, firmware 4 bytes, notes 48 chars,
/// 12 empty bytes, hardware version u16, module state u16, channel count u16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardwareInfo {
    /// Serial number.
    pub serial: u32,
    /// Model, NUL-padded.
    pub model: [u8; 8],
    /// Hardware type.
    pub kind: u16,
    /// Firmware version bytes (minor, interim, major, unused).
    pub firmware: [u8; 4],
    /// Notes, NUL-padded.
    pub notes: [u8; 48],
    /// Hardware version.
    pub hardware_version: u16,
    /// Module state.
    pub module_state: u16,
    /// Number of channels.
    pub channels: u16,
}

impl HardwareInfo {
    /// Data length.
    pub const LEN: usize = 84;

    /// Encodes the 84 bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..4].copy_from_slice(&self.serial.to_le_bytes());
        out[4..12].copy_from_slice(&self.model);
        out[12..14].copy_from_slice(&self.kind.to_le_bytes());
        out[14..18].copy_from_slice(&self.firmware);
        out[18..66].copy_from_slice(&self.notes);
        out[78..80].copy_from_slice(&self.hardware_version.to_le_bytes());
        out[80..82].copy_from_slice(&self.module_state.to_le_bytes());
        out[82..84].copy_from_slice(&self.channels.to_le_bytes());
        out
    }

    /// Decodes, if `data` has the right length.
    pub fn decode(data: &[u8]) -> Option<HardwareInfo> {
        if data.len() != Self::LEN {
            return None;
        }
        let word = |at: usize| u16::from_le_bytes([data[at], data[at + 1]]);
        let mut model = [0u8; 8];
        model.copy_from_slice(&data[4..12]);
        let mut firmware = [0u8; 4];
        firmware.copy_from_slice(&data[14..18]);
        let mut notes = [0u8; 48];
        notes.copy_from_slice(&data[18..66]);
        Some(HardwareInfo {
            serial: u32::from_le_bytes([data[0], data[1], data[2], data[3]]),
            model,
            kind: word(12),
            firmware,
            notes,
            hardware_version: word(78),
            module_state: word(80),
            channels: word(82),
        })
    }
}

/// Text of a NUL-padded field, up to its first NUL (non-UTF-8 bytes give `?`).
pub fn text(field: &[u8]) -> &str {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    core::str::from_utf8(&field[..end]).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two frames given in the reference notes (devices.md).
    #[test]
    fn travel_between_any_two_positions_is_finite_and_grows_with_distance() {
        let full = travel_seconds(0, STEPS_PER_TRAVEL, 100);
        assert!((full - DEGREES_PER_TRAVEL / MAX_SPEED_DEG_PER_S).abs() < 1e-12);
        assert!((travel_seconds(STEPS_PER_TRAVEL, 0, 100) - full).abs() < 1e-12);
        assert!((travel_seconds(0, STEPS_PER_TRAVEL, 50) - 2.0 * full).abs() < 1e-12);
        // The difference of these wraps in 32 bits.
        for (from, to) in [
            (i32::MIN, 0),
            (0, i32::MIN),
            (i32::MIN, i32::MAX),
            (i32::MAX, i32::MIN),
        ] {
            let t = travel_seconds(from, to, 1);
            assert!(t.is_finite() && t > full, "{from} → {to}: {t}");
        }
    }

    #[test]
    fn documented_frames() {
        assert_eq!(
            short(id::HW_DISCONNECT, [0, 0], DEVICE, HOST),
            [0x02, 0x00, 0x00, 0x00, 0x50, 0x01]
        );
        let mut data = [0u8; 6];
        data[..2].copy_from_slice(&1u16.to_le_bytes());
        data[2..].copy_from_slice(&200_000i32.to_le_bytes());
        let mut out = [0u8; 16];
        let n = long(id::MOVE_ABSOLUTE, &data, 0x22, HOST, &mut out).unwrap();
        assert_eq!(
            out[..n],
            [
                0x53, 0x04, 0x06, 0x00, 0xA2, 0x01, 0x01, 0x00, 0x40, 0x0D, 0x03, 0x00
            ]
        );
        assert_eq!(
            parse(&out[..n], 0x22, HOST),
            Parsed::Message(
                Message {
                    id: id::MOVE_ABSOLUTE,
                    params: [0, 0],
                    data: &data,
                    destination: 0x22,
                    source: HOST
                },
                12
            )
        );
    }

    #[test]
    fn partial_foreign_and_oversized_headers() {
        let frame = short(id::MOVE_HOME, [1, 0], DEVICE, HOST);
        assert_eq!(parse(&frame[..5], DEVICE, HOST), Parsed::Incomplete);
        assert_eq!(parse(&frame, HOST, DEVICE), Parsed::Garbage);
        let oversized = [0x53, 0x04, 0xFF, 0x00, 0xD0, 0x01];
        assert_eq!(parse(&oversized, DEVICE, HOST), Parsed::Garbage);
        let mut out = [0u8; 20];
        let n = long(
            id::MOVE_ABSOLUTE,
            &[1, 0, 5, 0, 0, 0],
            DEVICE,
            HOST,
            &mut out,
        )
        .unwrap();
        assert_eq!(parse(&out[..n - 1], DEVICE, HOST), Parsed::Incomplete);
    }

    #[test]
    fn records_round_trip() {
        let status = Status {
            channel: 4,
            position: -17,
            bits: STATUS_ENABLED | STATUS_HOMED,
        };
        assert_eq!(Status::decode(&status.encode()), Some(status));
        let params = PaddleParams {
            velocity_percent: 50,
            home: 685,
            jog_steps: [10, 20, 30],
        };
        assert_eq!(PaddleParams::decode(&params.encode()), Some(params));
        let mut model = [0u8; 8];
        model[..6].copy_from_slice(b"MPC320");
        let info = HardwareInfo {
            serial: 38_000_001,
            model,
            kind: 16,
            firmware: [1, 0, 2, 0],
            notes: [b'n'; 48],
            hardware_version: 3,
            module_state: 0,
            channels: 3,
        };
        assert_eq!(HardwareInfo::decode(&info.encode()), Some(info));
        assert_eq!(text(&info.model), "MPC320");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse(&bytes, DEVICE, HOST);
            let _ = parse(&bytes, HOST, DEVICE);
        }
    }
}
