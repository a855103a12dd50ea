//! An emulated Thorlabs MPC320: three paddles (λ/4, λ/2, λ/4) moved by APT commands. Only one
//! paddle channel is enabled at a time; a move answers MOVE_COMPLETED when the paddle arrives,
//! after the travel time its velocity setting gives. Requests the reference does not define a
//! reply for (identify, enable, disconnect, status acknowledge) get none, as on the device.

use std::time::{Duration, Instant};

use qkd_protocol::apt::{
    self, DEVICE, HOST, HardwareInfo, Message, PADDLE_BITS, PaddleParams, Parsed, STATUS_ENABLED,
    STATUS_HOMED, STATUS_MOVING_BACKWARD, STATUS_MOVING_FORWARD, STEPS_PER_TRAVEL, Status, id,
};

use super::bench::{LightPath, SharedBench};
use super::device::SerialDevice;

/// Serial number the emulated device reports.
pub const SERIAL: u32 = 38_000_320;

/// Error code of a refused move (our choice: the reference gives none).
pub const ERROR_OUT_OF_RANGE: u16 = 1;
/// Error code of a move on a disabled channel.
pub const ERROR_DISABLED: u16 = 2;

#[derive(Debug, Clone, Copy)]
struct Move {
    paddle: usize,
    from: i32,
    target: i32,
    started: Instant,
    arrives: Instant,
    homing: bool,
}

/// The emulated MPC320.
#[derive(Debug)]
pub struct Mpc320 {
    bench: SharedBench,
    input: Vec<u8>,
    position: [i32; 3],
    homed: [bool; 3],
    enabled: Option<usize>,
    params: PaddleParams,
    moving: Option<Move>,
}

impl Mpc320 {
    /// The device on `bench`, paddles at home.
    pub fn new(bench: &SharedBench) -> Self {
        let device = Mpc320 {
            bench: bench.clone(),
            input: Vec::new(),
            position: [0; 3],
            homed: [false; 3],
            enabled: None,
            params: PaddleParams {
                velocity_percent: 100,
                home: 0,
                jog_steps: [10; 3],
            },
            moving: None,
        };
        device.apply_to_world();
        device
    }

    fn apply_to_world(&self) {
        let radians: Vec<f64> = self
            .position
            .iter()
            .map(|&p| apt::degrees(p).to_radians())
            .collect();
        // Positions stay inside the travel, which is the world paddles' range.
        let _ = self.bench.set_controller(LightPath::Mpc320, &radians);
    }

    fn paddle_of(bits: u16) -> Option<usize> {
        PADDLE_BITS.iter().position(|&b| u16::from(b) == bits)
    }

    fn status(&self, paddle: usize) -> Status {
        let mut bits = 0;
        if self.enabled == Some(paddle) {
            bits |= STATUS_ENABLED;
        }
        if self.homed[paddle] {
            bits |= STATUS_HOMED;
        }
        if let Some(m) = self.moving.filter(|m| m.paddle == paddle) {
            bits |= if m.target >= self.position[paddle] {
                STATUS_MOVING_FORWARD
            } else {
                STATUS_MOVING_BACKWARD
            };
        }
        Status {
            channel: u16::from(PADDLE_BITS[paddle]),
            position: self.position[paddle],
            bits,
        }
    }

    fn send_long(reply: &mut dyn FnMut(&[u8]), message: u16, data: &[u8]) {
        let mut out = [0u8; apt::HEADER + apt::MAX_DATA];
        if let Some(n) = apt::long(message, data, HOST, DEVICE, &mut out) {
            reply(&out[..n]);
        }
    }

    fn refuse(reply: &mut dyn FnMut(&[u8]), message: u16, code: u16, text: &str) {
        let mut data = [0u8; 68];
        data[..2].copy_from_slice(&message.to_le_bytes());
        data[2..4].copy_from_slice(&code.to_le_bytes());
        let text = text.as_bytes();
        let n = text.len().min(63);
        data[4..4 + n].copy_from_slice(&text[..n]);
        Self::send_long(reply, id::HW_RICHRESPONSE, &data);
    }

    fn start_move(
        &mut self,
        paddle: usize,
        target: i32,
        homing: bool,
        now: Instant,
        reply: &mut dyn FnMut(&[u8]),
        request: u16,
    ) {
        if !(0..=STEPS_PER_TRAVEL).contains(&target) {
            Self::refuse(
                reply,
                request,
                ERROR_OUT_OF_RANGE,
                "position outside 0..1370",
            );
            return;
        }
        if self.enabled != Some(paddle) {
            Self::refuse(reply, request, ERROR_DISABLED, "channel not enabled");
            return;
        }
        let from = self.position[paddle];
        // The device moves at least at 1 % of full speed, whatever it was set to.
        let velocity = self.params.velocity_percent.clamp(1, 100);
        self.moving = Some(Move {
            paddle,
            from,
            target,
            started: now,
            arrives: now + Duration::from_secs_f64(apt::travel_seconds(from, target, velocity)),
            homing,
        });
    }

    fn handle(&mut self, message: &Message<'_>, now: Instant, reply: &mut dyn FnMut(&[u8])) {
        match message.id {
            id::HW_REQ_INFO => {
                let mut model = [0u8; 8];
                model[..6].copy_from_slice(b"MPC320");
                let mut notes = [0u8; 48];
                let text = b"Polarization controller (qkd-node emulator)";
                notes[..text.len()].copy_from_slice(text);
                let info = HardwareInfo {
                    serial: SERIAL,
                    model,
                    kind: 16,
                    firmware: [0, 1, 1, 0],
                    notes,
                    hardware_version: 1,
                    module_state: 0,
                    channels: 3,
                };
                Self::send_long(reply, id::HW_GET_INFO, &info.encode());
            }
            id::MOD_SET_CHANENABLESTATE => {
                if let Some(paddle) = Self::paddle_of(u16::from(message.params[0])) {
                    match message.params[1] {
                        1 => self.enabled = Some(paddle),
                        2 if self.enabled == Some(paddle) => self.enabled = None,
                        _ => {}
                    }
                }
            }
            id::MOD_REQ_CHANENABLESTATE => {
                if let Some(paddle) = Self::paddle_of(u16::from(message.params[0])) {
                    let state = if self.enabled == Some(paddle) { 1 } else { 2 };
                    reply(&apt::short(
                        id::MOD_GET_CHANENABLESTATE,
                        [message.params[0], state],
                        HOST,
                        DEVICE,
                    ));
                }
            }
            id::MOVE_HOME => {
                if let Some(paddle) = Self::paddle_of(u16::from(message.params[0])) {
                    let home = i32::from(self.params.home);
                    self.start_move(paddle, home, true, now, reply, message.id);
                }
            }
            id::MOVE_ABSOLUTE => {
                let data = message.data;
                if data.len() == 6
                    && let Some(paddle) = Self::paddle_of(u16::from_le_bytes([data[0], data[1]]))
                {
                    let target = i32::from_le_bytes([data[2], data[3], data[4], data[5]]);
                    self.start_move(paddle, target, false, now, reply, message.id);
                }
            }
            id::MOVE_JOG => {
                if let Some(paddle) = Self::paddle_of(u16::from(message.params[0])) {
                    let step = i32::from(self.params.jog_steps[paddle]);
                    let target = match message.params[1] {
                        1 => self.position[paddle] + step,
                        _ => self.position[paddle] - step,
                    };
                    self.start_move(paddle, target, false, now, reply, message.id);
                }
            }
            id::MOVE_STOP => {
                if let Some(m) = self.moving.take() {
                    self.finish_partway(m, now);
                    reply(&apt::short(
                        id::MOVE_STOPPED,
                        [PADDLE_BITS[m.paddle], 0],
                        HOST,
                        DEVICE,
                    ));
                }
            }
            id::POL_SET_PARAMS => {
                if let Some(params) = PaddleParams::decode(message.data) {
                    self.params = params;
                }
            }
            id::POL_REQ_PARAMS => {
                Self::send_long(reply, id::POL_GET_PARAMS, &self.params.encode());
            }
            id::REQ_STATUSUPDATE => {
                let paddle = Self::paddle_of(u16::from(message.params[0])).unwrap_or(0);
                Self::send_long(reply, id::GET_STATUSUPDATE, &self.status(paddle).encode());
            }
            // Identify flashes the LED; disconnect and status acknowledgements need no answer.
            _ => {}
        }
    }

    /// A move stopped before its end leaves the paddle where it got to.
    fn finish_partway(&mut self, m: Move, now: Instant) {
        let planned = m.arrives.saturating_duration_since(m.started).as_secs_f64();
        let done = if planned > 0.0 {
            (now.saturating_duration_since(m.started).as_secs_f64() / planned).min(1.0)
        } else {
            1.0
        };
        let reached = f64::from(m.from) + f64::from(m.target - m.from) * done;
        self.position[m.paddle] = reached.round() as i32;
        self.apply_to_world();
    }
}

impl SerialDevice for Mpc320 {
    fn receive(&mut self, bytes: &[u8], now: Instant, reply: &mut dyn FnMut(&[u8])) {
        self.input.extend_from_slice(bytes);
        let mut data = [0u8; apt::MAX_DATA];
        loop {
            // Copy the message out of the input buffer, which handling it must not borrow.
            let (message, used) = match apt::parse(&self.input, DEVICE, HOST) {
                Parsed::Incomplete => return,
                Parsed::Garbage => {
                    self.input.remove(0);
                    continue;
                }
                Parsed::Message(message, used) => {
                    let len = message.data.len();
                    data[..len].copy_from_slice(message.data);
                    ((message.id, message.params, len), used)
                }
            };
            self.input.drain(..used);
            let (id, params, len) = message;
            let message = Message {
                id,
                params,
                data: &data[..len],
                destination: DEVICE,
                source: HOST,
            };
            self.handle(&message, now, reply);
        }
    }

    fn poll(&mut self, now: Instant, reply: &mut dyn FnMut(&[u8])) {
        if let Some(m) = self.moving.filter(|m| m.arrives <= now) {
            self.moving = None;
            self.position[m.paddle] = m.target;
            self.apply_to_world();
            if m.homing {
                self.homed[m.paddle] = true;
                reply(&apt::short(
                    id::MOVE_HOMED,
                    [PADDLE_BITS[m.paddle], 0],
                    HOST,
                    DEVICE,
                ));
            } else {
                Self::send_long(reply, id::MOVE_COMPLETED, &self.status(m.paddle).encode());
            }
        }
    }

    fn reset(&mut self) {
        // The encoders are absolute: positions survive a power cycle, nothing else does.
        let position = self.position;
        *self = Mpc320::new(&self.bench);
        self.position = position;
        self.apply_to_world();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::float_cmp)]
    use super::*;
    use crate::host::bench::SharedBench;
    use crate::world::LinkPreset;

    fn device() -> Mpc320 {
        let spec = LinkPreset::Snspd.spec(1.0);
        Mpc320::new(&SharedBench::simulated(&spec, 1, LightPath::Mpc320).unwrap())
    }

    /// Feeds `request` at `now` and returns everything the device sent back.
    fn send(device: &mut Mpc320, request: &[u8], now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        device.receive(request, now, &mut |r| out.extend_from_slice(r));
        out
    }

    #[test]
    fn a_stopped_move_ends_where_the_set_velocity_brought_it() {
        let mut mpc = device();
        let t0 = Instant::now();
        let params = PaddleParams {
            velocity_percent: 50,
            home: 0,
            jog_steps: [10; 3],
        };
        let mut frame = [0u8; 32];
        let n = apt::long(
            id::POL_SET_PARAMS,
            &params.encode(),
            DEVICE,
            HOST,
            &mut frame,
        )
        .unwrap();
        assert!(send(&mut mpc, &frame[..n], t0).is_empty());
        send(
            &mut mpc,
            &apt::short(id::MOD_SET_CHANENABLESTATE, [2, 1], DEVICE, HOST),
            t0,
        );
        let mut data = [0u8; 6];
        data[..2].copy_from_slice(&2u16.to_le_bytes());
        data[2..].copy_from_slice(&1370i32.to_le_bytes());
        let n = apt::long(id::MOVE_ABSOLUTE, &data, DEVICE, HOST, &mut frame).unwrap();
        assert!(send(&mut mpc, &frame[..n], t0).is_empty());
        // The whole travel at 50 % takes 170° / 100 °/s = 1.7 s; stop after a quarter of it.
        assert_eq!(apt::travel_seconds(0, 1370, 50), 1.7);
        let stopped_at = t0 + Duration::from_secs_f64(0.425);
        let reply = send(
            &mut mpc,
            &apt::short(id::MOVE_STOP, [2, 0], DEVICE, HOST),
            stopped_at,
        );
        assert_eq!(reply, apt::short(id::MOVE_STOPPED, [2, 0], HOST, DEVICE));
        let mut polled = Vec::new();
        mpc.poll(t0 + Duration::from_secs(2), &mut |r| {
            polled.extend_from_slice(r);
        });
        assert!(polled.is_empty(), "a stopped move does not complete");
        let status = send(
            &mut mpc,
            &apt::short(id::REQ_STATUSUPDATE, [2, 0], DEVICE, HOST),
            t0,
        );
        let status = Status::decode(&status[apt::HEADER..]).unwrap();
        // A quarter of 1370 steps, to the nearest step.
        assert_eq!(status.position, 343);
    }
}
