//! Simulated peripherals: what the board firmware cores drive, wired to the shared world. Each
//! speaks the register protocol its core's module documents.

use std::convert::Infallible;

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{ErrorType as PinErrorType, OutputPin};
use embedded_hal::spi::{ErrorType as SpiErrorType, Operation, SpiDevice};
use std::sync::{Arc, Mutex, PoisonError};

use super::bench::{LightPath, SharedBench};
use crate::boards::detector::{CMD_READ, CMD_START, CMD_STOP};
use crate::boards::polarization::DAC_WRITE_INPUT;
use crate::boards::source::{
    MONITOR_FULL_SCALE_FW, PPM, REG_BASIS_Z, REG_CLASS_MU, REG_CLASS_PPM, REG_COMMIT, REG_KEY,
    REG_KEY_START, REG_REFERENCE,
};
use crate::world::IntensitySpec;
use qkd_protocol::squeezer_dac;
use qkd_units::pattern::PatternKey;

/// Photon energy at 1550 nm, joules.
const PHOTON_ENERGY_J: f64 = 1.2816e-19;

/// Waiting advances the world: firmware that sleeps lets emulated time pass.
#[derive(Debug, Clone)]
pub struct WorldDelay(pub SharedBench);

impl DelayNs for WorldDelay {
    fn delay_ns(&mut self, ns: u32) {
        self.0.lock().advance_ps(i64::from(ns) * 1000);
    }
}

/// An output pin wired to the world: each level it is driven to is handed to `wire`.
pub struct WiredPin<F>(F);

impl<F> std::fmt::Debug for WiredPin<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WiredPin")
    }
}

impl<F: FnMut(bool)> PinErrorType for WiredPin<F> {
    type Error = Infallible;
}

impl<F: FnMut(bool)> OutputPin for WiredPin<F> {
    fn set_low(&mut self) -> Result<(), Infallible> {
        (self.0)(false);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        (self.0)(true);
        Ok(())
    }
}

/// A pin whose level nothing in the world reads (the amplifier enable).
pub fn loose_pin() -> WiredPin<impl FnMut(bool) + Send> {
    WiredPin(|_| {})
}

/// The four arm pins of the detector board: the world's detector is biased while its pin is
/// high.
pub fn arm_pins(bench: &SharedBench) -> [WiredPin<impl FnMut(bool) + Send + use<>>; 4] {
    [0, 1, 2, 3].map(|channel| {
        let bench = bench.clone();
        WiredPin(move |on| {
            bench.with_world(|world| {
                let now = world.now_ps();
                world.node_mut().set_detector_enabled(channel, on, now);
            });
        })
    })
}

/// The laser's enable pin.
pub fn laser_pin(bench: SharedBench) -> WiredPin<impl FnMut(bool) + Send> {
    WiredPin(move |on| {
        bench.with_world(|world| world.set_source_enabled(on));
    })
}

/// The payloads an SPI transaction writes, in order.
fn writes<'a>(operations: &'a [Operation<'_, u8>]) -> impl Iterator<Item = &'a [u8]> {
    operations.iter().filter_map(|op| match op {
        Operation::Write(bytes) => Some(*bytes),
        _ => None,
    })
}

/// Input registers of the polarization board's quad DAC, shared by its SPI side and LDAC pin.
type Registers = Arc<Mutex<[u16; 4]>>;

/// The polarization board's quad DAC (SPI side).
#[derive(Debug)]
pub struct SqueezerDac {
    input: Registers,
}

/// The polarization board's DAC and its LDAC pin on `bench`: a falling LDAC edge moves the
/// input registers to the outputs, i.e. the squeezer voltages, together.
pub fn squeezer_dac(bench: SharedBench) -> (SqueezerDac, WiredPin<impl FnMut(bool) + Send>) {
    let input = Registers::default();
    let outputs = input.clone();
    let ldac = WiredPin(move |high| {
        if high {
            return;
        }
        let codes = *outputs.lock().unwrap_or_else(PoisonError::into_inner);
        let volts: Vec<f64> = codes
            .iter()
            .map(|&c| squeezer_dac::millivolts(c) / 1000.0)
            .collect();
        // The DAC span equals the squeezers' range, so the world accepts every code.
        let _ = bench.set_controller(LightPath::Epc, &volts);
    });
    (SqueezerDac { input }, ldac)
}

impl SpiErrorType for SqueezerDac {
    type Error = Infallible;
}

impl SpiDevice for SqueezerDac {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        for bytes in writes(operations) {
            if let [command, hi, lo] = *bytes
                && command & 0xF0 == DAC_WRITE_INPUT
            {
                let mut input = self.input.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(register) = input.get_mut(usize::from(command & 0x0F)) {
                    *register = u16::from_be_bytes([hi, lo]);
                }
            }
        }
        Ok(())
    }
}

/// An SPI peripheral driving what the world does not model (the detectors' bias and
/// threshold DAC): it takes every transaction and changes nothing.
#[derive(Debug, Default)]
pub struct Unmodelled;

impl SpiErrorType for Unmodelled {
    type Error = Infallible;
}

impl SpiDevice for Unmodelled {
    fn transaction(&mut self, _: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        Ok(())
    }
}

/// The detector board's counter FPGA: counts the world's clicks between start and stop. Its
/// dead-time registers take writes, but the world's detectors keep the dead time of their
/// preset: the emulated dead time is not settable.
#[derive(Debug)]
pub struct CounterFpga {
    bench: SharedBench,
    started: [u64; 4],
    frozen: [u32; 4],
}

impl CounterFpga {
    /// The counter on `bench`.
    pub fn new(bench: SharedBench) -> Self {
        CounterFpga {
            bench,
            started: [0; 4],
            frozen: [0; 4],
        }
    }
}

impl SpiErrorType for CounterFpga {
    type Error = Infallible;
}

impl SpiDevice for CounterFpga {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        let mut reading = false;
        for op in operations.iter_mut() {
            match op {
                Operation::Write(bytes) => match **bytes {
                    [CMD_START] => self.started = self.bench.lock().clicks(),
                    [CMD_STOP] => {
                        let now = self.bench.lock().clicks();
                        for ((frozen, &n), &s) in
                            self.frozen.iter_mut().zip(&now).zip(&self.started)
                        {
                            *frozen = u32::try_from(n - s).unwrap_or(u32::MAX);
                        }
                    }
                    [CMD_READ] => reading = true,
                    _ => {}
                },
                Operation::Read(buffer) if reading => {
                    for (chunk, count) in buffer.chunks_mut(4).zip(self.frozen) {
                        chunk.copy_from_slice(&count.to_be_bytes()[..chunk.len()]);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The source board's pattern generator: a committed configuration sets the world's intensity
/// classes, basis bias and reference share; a started key takes over the world's pattern.
#[derive(Debug)]
pub struct PatternFpga {
    bench: SharedBench,
    registers: [u32; 0x40],
}

impl PatternFpga {
    /// The pattern generator on `bench`.
    pub fn new(bench: SharedBench) -> Self {
        PatternFpga {
            bench,
            registers: [0; 0x40],
        }
    }

    fn start_pattern(&mut self) {
        let mut bytes = [0u8; 32];
        for (n, chunk) in bytes.chunks_exact_mut(4).enumerate() {
            let register = &mut self.registers[usize::from(REG_KEY) + n];
            chunk.copy_from_slice(&register.to_le_bytes());
            *register = 0;
        }
        let key = PatternKey::from_bytes(bytes);
        bytes.fill(0);
        self.bench.with_world(|world| {
            world.start_pattern(&key);
        });
    }

    fn commit(&mut self, count: usize) {
        let classes: Vec<IntensitySpec> = (0..count.min(4))
            .map(|n| IntensitySpec {
                mean_photon_number: f64::from(self.registers[usize::from(REG_CLASS_MU) + n]) / 1e6,
                probability: f64::from(self.registers[usize::from(REG_CLASS_PPM) + n])
                    / f64::from(PPM),
            })
            .collect();
        let z = f64::from(self.registers[usize::from(REG_BASIS_Z)]) / f64::from(PPM);
        let reference = f64::from(self.registers[usize::from(REG_REFERENCE)]) / f64::from(PPM);
        // The firmware validated the configuration; a world refusal leaves the old one.
        let _ = self
            .bench
            .with_world(|world| world.set_shares(&classes, z, reference));
    }
}

impl SpiErrorType for PatternFpga {
    type Error = Infallible;
}

impl SpiDevice for PatternFpga {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        for bytes in writes(operations) {
            if let [register, a, b, c, d] = *bytes {
                let value = u32::from_be_bytes([a, b, c, d]);
                if register == REG_COMMIT {
                    self.commit(value as usize);
                } else if register == REG_KEY_START {
                    self.start_pattern();
                } else if let Some(slot) = self.registers.get_mut(usize::from(register)) {
                    *slot = value;
                }
            }
        }
        Ok(())
    }
}

/// The source's power monitor: mean optical power of the pulse train, 16-bit, saturating at
/// full scale like a real ADC.
#[derive(Debug)]
pub struct MonitorAdc(pub SharedBench);

impl SpiErrorType for MonitorAdc {
    type Error = Infallible;
}

impl SpiDevice for MonitorAdc {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        let watts = self
            .0
            .with_world(|world| {
                let source = world.source();
                let mean_mu: f64 = source
                    .mean_photon_numbers
                    .iter()
                    .zip(&source.probabilities)
                    .map(|(mu, p)| mu * p)
                    .sum();
                if world.source_enabled() {
                    mean_mu * source.clock.rate_hz() as f64 * PHOTON_ENERGY_J
                } else {
                    0.0
                }
            })
            .unwrap_or(0.0);
        let code = (watts * 1e15 / MONITOR_FULL_SCALE_FW as f64 * 65535.0)
            .round()
            .clamp(0.0, 65535.0) as u16;
        for op in operations.iter_mut() {
            if let Operation::Read(buffer) = op {
                for (byte, value) in buffer.iter_mut().zip(code.to_be_bytes()) {
                    *byte = value;
                }
            }
        }
        Ok(())
    }
}
