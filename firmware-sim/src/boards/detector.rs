//! Detector board: four detector channels, each armed by an enable pin, biased and thresholded by
//! an eight-channel 16-bit DAC (channels 0–3 bias, 4–7 threshold), counted by a counter FPGA on
//! SPI that also holds each channel's dead time.

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use embedded_hal::spi::{Operation, SpiDevice};

use qkd_protocol::detector_limits::{
    BIAS_FULL_SCALE_MV, MAX_DEAD_TIME_NS, MAX_INTEGRATION_MS, THRESHOLD_FULL_SCALE_MV,
};
use qkd_protocol::{BoardKind, DetectorCommand, ErrorCode, Reply, Request};

use super::{BoardCore, reply, write_register};

/// DAC command: write and update channel (low nibble: channel).
pub const DAC_WRITE_UPDATE: u8 = 0x30;
/// Counter FPGA register of channel 0's dead time in ns (channel n at `+ n`).
pub const REG_DEAD_TIME: u8 = 0x40;
/// Counter FPGA command: clear and start counting.
pub const CMD_START: u8 = 0x01;
/// Counter FPGA command: stop counting (counts freeze).
pub const CMD_STOP: u8 = 0x02;
/// Counter FPGA command: read the four frozen counts (16 bytes, big-endian).
pub const CMD_READ: u8 = 0x03;

/// The detector board's firmware core.
#[derive(Debug)]
pub struct DetectorBoard<Dac, Counter, Arm, Delay> {
    dac: Dac,
    counter: Counter,
    arm: [Arm; 4],
    delay: Delay,
}

impl<Dac, Counter, Arm, Delay> DetectorBoard<Dac, Counter, Arm, Delay>
where
    Dac: SpiDevice,
    Counter: SpiDevice,
    Arm: OutputPin,
    Delay: DelayNs,
{
    /// Takes the peripherals.
    pub fn new(dac: Dac, counter: Counter, arm: [Arm; 4], delay: Delay) -> Self {
        DetectorBoard {
            dac,
            counter,
            arm,
            delay,
        }
    }

    /// Power-on: every channel disarmed until the host arms it.
    pub fn start(&mut self) -> Result<(), ErrorCode> {
        for pin in &mut self.arm {
            pin.set_low().map_err(|_| ErrorCode::Peripheral)?;
        }
        Ok(())
    }

    /// Gives the peripherals back.
    pub fn release(self) -> (Dac, Counter, [Arm; 4], Delay) {
        (self.dac, self.counter, self.arm, self.delay)
    }

    fn write_dac(
        &mut self,
        channel: u8,
        millivolts: u32,
        full_scale: u32,
    ) -> Result<(), ErrorCode> {
        if millivolts > full_scale {
            return Err(ErrorCode::OutOfRange(1));
        }
        let (mv, full) = (u64::from(millivolts), u64::from(full_scale));
        let code = (mv * 0xFFFF + full / 2) / full;
        let [hi, lo] = (code as u16).to_be_bytes();
        self.dac
            .write(&[DAC_WRITE_UPDATE | channel, hi, lo])
            .map_err(|_| ErrorCode::Peripheral)
    }

    fn count(&mut self, milliseconds: u16) -> Result<Reply, ErrorCode> {
        if milliseconds == 0 || milliseconds > MAX_INTEGRATION_MS {
            return Err(ErrorCode::OutOfRange(0));
        }
        let fault = |_| ErrorCode::Peripheral;
        self.counter.write(&[CMD_START]).map_err(fault)?;
        self.delay.delay_ms(u32::from(milliseconds));
        self.counter.write(&[CMD_STOP]).map_err(fault)?;
        let mut raw = [0u8; 16];
        self.counter
            .transaction(&mut [Operation::Write(&[CMD_READ]), Operation::Read(&mut raw)])
            .map_err(fault)?;
        let mut counts = [0u32; 4];
        for (count, bytes) in counts.iter_mut().zip(raw.chunks_exact(4)) {
            *count = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        Ok(Reply::Counters(counts))
    }

    fn execute(&mut self, command: DetectorCommand) -> Result<Reply, ErrorCode> {
        let channel = match command {
            DetectorCommand::SetEnabled { channel, .. }
            | DetectorCommand::SetBias { channel, .. }
            | DetectorCommand::SetThreshold { channel, .. }
            | DetectorCommand::SetDeadTime { channel, .. } => channel,
            DetectorCommand::ReadCounters { milliseconds } => return self.count(milliseconds),
        };
        if channel >= 4 {
            return Err(ErrorCode::NoSuchChannel(channel));
        }
        match command {
            DetectorCommand::SetEnabled { enabled, .. } => {
                let pin = &mut self.arm[usize::from(channel)];
                let done = if enabled {
                    pin.set_high()
                } else {
                    pin.set_low()
                };
                done.map_err(|_| ErrorCode::Peripheral)?;
            }
            DetectorCommand::SetBias { millivolts, .. } => {
                self.write_dac(channel, millivolts, BIAS_FULL_SCALE_MV)?;
            }
            DetectorCommand::SetThreshold { millivolts, .. } => {
                self.write_dac(channel + 4, millivolts, THRESHOLD_FULL_SCALE_MV)?;
            }
            DetectorCommand::SetDeadTime { nanoseconds, .. } => {
                if nanoseconds > MAX_DEAD_TIME_NS {
                    return Err(ErrorCode::OutOfRange(1));
                }
                write_register(&mut self.counter, REG_DEAD_TIME + channel, nanoseconds)?;
            }
            DetectorCommand::ReadCounters { .. } => {}
        }
        Ok(Reply::Ack)
    }
}

impl<Dac, Counter, Arm, Delay> BoardCore for DetectorBoard<Dac, Counter, Arm, Delay>
where
    Dac: SpiDevice,
    Counter: SpiDevice,
    Arm: OutputPin,
    Delay: DelayNs,
{
    fn kind(&self) -> BoardKind {
        BoardKind::Detector
    }

    fn handle(&mut self, request: &Request) -> Reply {
        match request {
            Request::Detector(command) => reply(self.execute(*command)),
            _ => Reply::Error(ErrorCode::Unsupported),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use embedded_hal_mock::eh1::delay::CheckedDelay;
    use embedded_hal_mock::eh1::delay::Transaction as DelayT;
    use embedded_hal_mock::eh1::digital::{Mock as Pin, State, Transaction as PinT};
    use embedded_hal_mock::eh1::spi::{Mock as Spi, Transaction as SpiT};
    use std::vec;

    type Board = DetectorBoard<Spi<u8>, Spi<u8>, Pin, CheckedDelay>;

    fn board(dac: &[SpiT<u8>], counter: &[SpiT<u8>], arm1: &[PinT], delay: &[DelayT]) -> Board {
        DetectorBoard::new(
            Spi::new(dac),
            Spi::new(counter),
            [Pin::new(&[]), Pin::new(arm1), Pin::new(&[]), Pin::new(&[])],
            CheckedDelay::new(delay),
        )
    }

    fn done(board: Board) {
        let (mut dac, mut counter, arm, mut delay) = board.release();
        dac.done();
        counter.done();
        for mut pin in arm {
            pin.done();
        }
        delay.done();
    }

    fn run(board: &mut Board, command: DetectorCommand) -> Reply {
        board.handle(&Request::Detector(command))
    }

    fn spi_write(bytes: &[u8]) -> [SpiT<u8>; 3] {
        [
            SpiT::transaction_start(),
            SpiT::write_vec(bytes.to_vec()),
            SpiT::transaction_end(),
        ]
    }

    #[test]
    fn counting_starts_waits_stops_and_reads_four_counters() {
        let mut raw = vec![];
        for count in [5u32, 0, 70_000, u32::MAX] {
            raw.extend(count.to_be_bytes());
        }
        let mut counter = vec![];
        counter.extend(spi_write(&[CMD_START]));
        counter.extend(spi_write(&[CMD_STOP]));
        counter.extend([
            SpiT::transaction_start(),
            SpiT::write_vec(vec![CMD_READ]),
            SpiT::read_vec(raw),
            SpiT::transaction_end(),
        ]);
        let mut b = board(&[], &counter, &[], &[DelayT::delay_ms(250)]);
        assert_eq!(
            run(&mut b, DetectorCommand::ReadCounters { milliseconds: 250 }),
            Reply::Counters([5, 0, 70_000, u32::MAX])
        );
        done(b);
    }

    #[test]
    fn settings_reach_the_dac_pins_and_fpga_in_their_units() {
        let mut dac = vec![];
        // 40 V of 80 V full scale is half scale, rounded: 32768.
        dac.extend(spi_write(&[DAC_WRITE_UPDATE | 1, 0x80, 0x00]));
        // 70 V, beyond 16 bits of millivolts: 70/80 of full scale, 57343.
        dac.extend(spi_write(&[DAC_WRITE_UPDATE | 2, 0xDF, 0xFF]));
        // Threshold 2.5 V is full scale on DAC channel 4 + 1.
        dac.extend(spi_write(&[DAC_WRITE_UPDATE | 5, 0xFF, 0xFF]));
        let counter = spi_write(&[REG_DEAD_TIME + 1, 0, 0, 0x27, 0x10]);
        let arm = [PinT::set(State::High), PinT::set(State::Low)];
        let mut b = board(&dac, &counter, &arm, &[]);
        for command in [
            DetectorCommand::SetBias {
                channel: 1,
                millivolts: 40_000,
            },
            DetectorCommand::SetBias {
                channel: 2,
                millivolts: 70_000,
            },
            DetectorCommand::SetThreshold {
                channel: 1,
                millivolts: 2_500,
            },
            DetectorCommand::SetDeadTime {
                channel: 1,
                nanoseconds: 10_000,
            },
            DetectorCommand::SetEnabled {
                channel: 1,
                enabled: true,
            },
            DetectorCommand::SetEnabled {
                channel: 1,
                enabled: false,
            },
        ] {
            assert_eq!(run(&mut b, command), Reply::Ack, "{command:?}");
        }
        done(b);
    }

    #[test]
    fn bad_channels_and_ranges_are_refused_before_any_bus_traffic() {
        let mut b = board(&[], &[], &[], &[]);
        assert_eq!(
            run(
                &mut b,
                DetectorCommand::SetBias {
                    channel: 4,
                    millivolts: 1
                }
            ),
            Reply::Error(ErrorCode::NoSuchChannel(4))
        );
        assert_eq!(
            run(
                &mut b,
                DetectorCommand::SetThreshold {
                    channel: 0,
                    millivolts: 2_501
                }
            ),
            Reply::Error(ErrorCode::OutOfRange(1))
        );
        assert_eq!(
            run(
                &mut b,
                DetectorCommand::SetDeadTime {
                    channel: 0,
                    nanoseconds: MAX_DEAD_TIME_NS + 1
                }
            ),
            Reply::Error(ErrorCode::OutOfRange(1))
        );
        assert_eq!(
            run(&mut b, DetectorCommand::ReadCounters { milliseconds: 0 }),
            Reply::Error(ErrorCode::OutOfRange(0))
        );
        done(b);
    }
}
