//! Polarization board: a quad 16-bit bipolar DAC (±5 V after the amplifier, scaled as
//! [`qkd_protocol::squeezer_dac`] says) drives four fiber
//! squeezers. Codes are written to the DAC's input registers, then one LDAC pulse updates all
//! four outputs together, so the state never passes through a half-applied setting.

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use embedded_hal::spi::SpiDevice;

use qkd_protocol::{BoardKind, ErrorCode, PolarizationCommand, PolarizationStatus, Reply, Request};

use super::BoardCore;

/// DAC command: write input register (low nibble: channel).
pub const DAC_WRITE_INPUT: u8 = 0x10;
pub use qkd_protocol::squeezer_dac::MID_SCALE;
/// Minimum LDAC low time.
const LDAC_PULSE_NS: u32 = 100;

/// The polarization board's firmware core.
#[derive(Debug)]
pub struct PolarizationBoard<Dac, Ldac, Amplifier, Delay> {
    dac: Dac,
    ldac: Ldac,
    amplifier: Amplifier,
    delay: Delay,
    codes: [u16; 4],
    amplifier_enabled: bool,
}

impl<Dac, Ldac, Amplifier, Delay> PolarizationBoard<Dac, Ldac, Amplifier, Delay>
where
    Dac: SpiDevice,
    Ldac: OutputPin,
    Amplifier: OutputPin,
    Delay: DelayNs,
{
    /// Takes the peripherals; nothing is driven until [`start`](Self::start).
    pub fn new(dac: Dac, ldac: Ldac, amplifier: Amplifier, delay: Delay) -> Self {
        PolarizationBoard {
            dac,
            ldac,
            amplifier,
            delay,
            codes: [MID_SCALE; 4],
            amplifier_enabled: false,
        }
    }

    /// Power-on: all outputs to 0 V, then the amplifier on.
    pub fn start(&mut self) -> Result<(), ErrorCode> {
        self.load([MID_SCALE; 4])?;
        self.amplifier
            .set_high()
            .map_err(|_| ErrorCode::Peripheral)?;
        self.amplifier_enabled = true;
        Ok(())
    }

    /// Gives the peripherals back.
    pub fn release(self) -> (Dac, Ldac, Amplifier, Delay) {
        (self.dac, self.ldac, self.amplifier, self.delay)
    }

    fn load(&mut self, codes: [u16; 4]) -> Result<(), ErrorCode> {
        for (channel, code) in (0u8..).zip(codes) {
            let [hi, lo] = code.to_be_bytes();
            self.dac
                .write(&[DAC_WRITE_INPUT | channel, hi, lo])
                .map_err(|_| ErrorCode::Peripheral)?;
        }
        self.ldac.set_low().map_err(|_| ErrorCode::Peripheral)?;
        self.delay.delay_ns(LDAC_PULSE_NS);
        self.ldac.set_high().map_err(|_| ErrorCode::Peripheral)?;
        self.codes = codes;
        Ok(())
    }
}

impl<Dac, Ldac, Amplifier, Delay> BoardCore for PolarizationBoard<Dac, Ldac, Amplifier, Delay>
where
    Dac: SpiDevice,
    Ldac: OutputPin,
    Amplifier: OutputPin,
    Delay: DelayNs,
{
    fn kind(&self) -> BoardKind {
        BoardKind::Polarization
    }

    fn handle(&mut self, request: &Request) -> Reply {
        let Request::Polarization(command) = request else {
            return Reply::Error(ErrorCode::Unsupported);
        };
        match *command {
            PolarizationCommand::SetDac(codes) => match self.load(codes) {
                Ok(()) => Reply::Dac(self.codes),
                Err(e) => Reply::Error(e),
            },
            PolarizationCommand::GetDac => Reply::Dac(self.codes),
            PolarizationCommand::Status => Reply::PolarizationStatus(PolarizationStatus {
                codes: self.codes,
                amplifier_enabled: self.amplifier_enabled,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::digital::{Mock as Pin, State, Transaction as PinT};
    use embedded_hal_mock::eh1::spi::{Mock as Spi, Transaction as SpiT};
    use std::vec::Vec;

    fn dac_writes(codes: [u16; 4]) -> Vec<SpiT<u8>> {
        (0u8..)
            .zip(codes)
            .flat_map(|(ch, code)| {
                let [hi, lo] = code.to_be_bytes();
                [
                    SpiT::transaction_start(),
                    SpiT::write_vec(std::vec![DAC_WRITE_INPUT | ch, hi, lo]),
                    SpiT::transaction_end(),
                ]
            })
            .collect()
    }

    fn pulse() -> [PinT; 2] {
        [PinT::set(State::Low), PinT::set(State::High)]
    }

    #[test]
    fn start_zeroes_the_outputs_then_enables_the_amplifier() {
        let mut board = PolarizationBoard::new(
            Spi::new(&dac_writes([MID_SCALE; 4])),
            Pin::new(&pulse()),
            Pin::new(&[PinT::set(State::High)]),
            NoopDelay,
        );
        board.start().unwrap();
        assert_eq!(
            board.handle(&Request::Polarization(PolarizationCommand::Status)),
            Reply::PolarizationStatus(PolarizationStatus {
                codes: [MID_SCALE; 4],
                amplifier_enabled: true
            })
        );
        let (mut dac, mut ldac, mut amp, _) = board.release();
        dac.done();
        ldac.done();
        amp.done();
    }

    #[test]
    fn set_dac_writes_four_registers_then_one_ldac_pulse() {
        let codes = [1, 0x1234, 0xFFFF, 0x8001];
        let mut board = PolarizationBoard::new(
            Spi::new(&dac_writes(codes)),
            Pin::new(&pulse()),
            Pin::new(&[]),
            NoopDelay,
        );
        let reply = board.handle(&Request::Polarization(PolarizationCommand::SetDac(codes)));
        assert_eq!(reply, Reply::Dac(codes));
        assert_eq!(
            board.handle(&Request::Polarization(PolarizationCommand::GetDac)),
            Reply::Dac(codes)
        );
        let (mut dac, mut ldac, mut amp, _) = board.release();
        dac.done();
        ldac.done();
        amp.done();
    }

    #[test]
    fn a_failing_update_pin_is_reported_and_the_old_codes_stay() {
        use embedded_hal_mock::eh1::MockError;
        let failing =
            PinT::set(State::Low).with_error(MockError::Io(std::io::ErrorKind::NotConnected));
        let mut board = PolarizationBoard::new(
            Spi::new(&dac_writes([7; 4])),
            Pin::new(&[failing]),
            Pin::new(&[]),
            NoopDelay,
        );
        assert_eq!(
            board.handle(&Request::Polarization(PolarizationCommand::SetDac([7; 4]))),
            Reply::Error(ErrorCode::Peripheral)
        );
        assert_eq!(
            board.handle(&Request::Polarization(PolarizationCommand::GetDac)),
            Reply::Dac([MID_SCALE; 4])
        );
        let (mut dac, mut ldac, mut amp, _) = board.release();
        dac.done();
        ldac.done();
        amp.done();
    }

    #[test]
    fn refuses_other_boards_commands() {
        let mut board =
            PolarizationBoard::new(Spi::new(&[]), Pin::new(&[]), Pin::new(&[]), NoopDelay);
        assert_eq!(
            board.handle(&Request::Source(
                qkd_protocol::SourceCommand::ReadPowerMonitor
            )),
            Reply::Error(ErrorCode::Unsupported)
        );
        let (mut dac, mut ldac, mut amp, _) = board.release();
        dac.done();
        ldac.done();
        amp.done();
    }
}
