//! What a served device is to the PTY host: bytes in, bytes out, and a power switch.

use std::time::Instant;

/// A device behind a serial port.
pub trait SerialDevice: Send {
    /// Takes bytes from the line; appends each reply (one message per call to `reply`).
    fn receive(&mut self, bytes: &[u8], now: Instant, reply: &mut dyn FnMut(&[u8]));

    /// Lets time-driven behaviour happen (a move completing, a scrambler turning).
    fn poll(&mut self, now: Instant, reply: &mut dyn FnMut(&[u8])) {
        let _ = (now, reply);
    }

    /// Power cycle: the firmware restarts and volatile state is lost.
    fn reset(&mut self);
}
