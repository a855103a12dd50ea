//! Our three boards as served devices: each firmware core on simulated peripherals.

use std::time::Instant;

use super::bench::SharedBench;
use super::device::SerialDevice;
use super::peripherals::{
    CounterFpga, MonitorAdc, PatternFpga, Unmodelled, WorldDelay, arm_pins, laser_pin, loose_pin,
    squeezer_dac,
};
use crate::boards::{BoardCore, DetectorBoard, Firmware, PolarizationBoard, SourceBoard};

/// A board: its firmware, rebuilt from the peripherals at every power-on.
struct Board<B> {
    power_on: Box<dyn FnMut(u16) -> Firmware<B> + Send>,
    firmware: Firmware<B>,
    boot: u16,
}

impl<B: BoardCore + Send> SerialDevice for Board<B> {
    fn receive(&mut self, bytes: &[u8], _: Instant, reply: &mut dyn FnMut(&[u8])) {
        self.firmware.receive(bytes, |frame| reply(frame));
    }

    fn reset(&mut self) {
        self.boot = self.boot.wrapping_add(1);
        self.firmware = (self.power_on)(self.boot);
    }
}

fn board<B: BoardCore + Send + 'static>(
    mut power_on: impl FnMut(u16) -> Firmware<B> + Send + 'static,
) -> Box<dyn SerialDevice> {
    let firmware = power_on(1);
    Box::new(Board {
        power_on: Box::new(power_on),
        firmware,
        boot: 1,
    })
}

/// The polarization board; at power-on its outputs go to 0 V.
pub fn polarization_board(bench: &SharedBench, serial: u32) -> Box<dyn SerialDevice> {
    let bench = bench.clone();
    board(move |boot| {
        let (dac, ldac) = squeezer_dac(bench.clone());
        let mut core = PolarizationBoard::new(dac, ldac, loose_pin(), WorldDelay(bench.clone()));
        // The simulated peripherals cannot fail.
        let _ = core.start();
        Firmware::new(core, serial, boot)
    })
}

/// The detector board.
pub fn detector_board(bench: &SharedBench, serial: u32) -> Box<dyn SerialDevice> {
    let bench = bench.clone();
    board(move |boot| {
        let mut core = DetectorBoard::new(
            Unmodelled,
            CounterFpga::new(bench.clone()),
            arm_pins(&bench),
            WorldDelay(bench.clone()),
        );
        let _ = core.start();
        Firmware::new(core, serial, boot)
    })
}

/// The source board.
pub fn source_board(bench: &SharedBench, serial: u32) -> Box<dyn SerialDevice> {
    let bench = bench.clone();
    board(move |boot| {
        let core = SourceBoard::new(
            PatternFpga::new(bench.clone()),
            MonitorAdc(bench.clone()),
            laser_pin(bench.clone()),
        );
        Firmware::new(core, serial, boot)
    })
}
