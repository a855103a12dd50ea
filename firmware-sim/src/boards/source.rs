//! Source board: the laser's enable pin, the pattern generator (an FPGA on SPI that draws each
//! pulse's basis, bit and intensity class and drives the modulators), and the power-monitor ADC.

use embedded_hal::digital::OutputPin;
use embedded_hal::spi::SpiDevice;

use qkd_protocol::{
    BoardKind, ErrorCode, IntensityCode, Reply, Request, SourceCommand, SourceConfig,
};

use super::{BoardCore, reply, write_register};
pub use qkd_protocol::source_limits::{MAX_MICRO_PHOTONS, PPM};

/// Pattern register: mean photon number of class n (`+ n`), micro-photons.
pub const REG_CLASS_MU: u8 = 0x10;
/// Pattern register: probability of class n (`+ n`), ppm.
pub const REG_CLASS_PPM: u8 = 0x18;
/// Pattern register: Z-basis probability, ppm.
pub const REG_BASIS_Z: u8 = 0x20;
/// Pattern register: share of reference slots, ppm.
pub const REG_REFERENCE: u8 = 0x21;
/// Pattern registers: the node's pattern key, word n (`+ n`, little-endian words).
pub const REG_KEY: u8 = 0x30;
/// Pattern register: writing it starts the loaded key's pattern at the next sync (and clears
/// the key registers).
pub const REG_KEY_START: u8 = 0x38;
/// Pattern register: number of classes; writing it commits the whole configuration.
pub const REG_COMMIT: u8 = 0x2F;
/// Power at the monitor ADC's full scale, femtowatts.
pub const MONITOR_FULL_SCALE_FW: u64 = 10_000_000;

/// The source board's firmware core.
#[derive(Debug)]
pub struct SourceBoard<Pattern, Monitor, Laser> {
    pattern: Pattern,
    monitor: Monitor,
    laser: Laser,
    config: SourceConfig,
}

impl<Pattern, Monitor, Laser> SourceBoard<Pattern, Monitor, Laser>
where
    Pattern: SpiDevice,
    Monitor: SpiDevice,
    Laser: OutputPin,
{
    /// Takes the peripherals; the laser stays as it is until commanded.
    pub fn new(pattern: Pattern, monitor: Monitor, laser: Laser) -> Self {
        SourceBoard {
            pattern,
            monitor,
            laser,
            config: SourceConfig::default(),
        }
    }

    /// Gives the peripherals back.
    pub fn release(self) -> (Pattern, Monitor, Laser) {
        (self.pattern, self.monitor, self.laser)
    }

    fn configure(&mut self, config: &SourceConfig) -> Result<Reply, ErrorCode> {
        let count = usize::from(config.class_count);
        if !(1..=4).contains(&count) {
            return Err(ErrorCode::OutOfRange(0));
        }
        let used = &config.classes[..count];
        let total: u64 = used.iter().map(|c| u64::from(c.ppm)).sum();
        if total != u64::from(PPM) {
            return Err(ErrorCode::OutOfRange(1));
        }
        if used.iter().any(|c| c.micro_photons > MAX_MICRO_PHOTONS) {
            return Err(ErrorCode::OutOfRange(1));
        }
        if config.basis_z_ppm > PPM {
            return Err(ErrorCode::OutOfRange(2));
        }
        // References are at most half the slots (the rest carry key).
        if config.reference_ppm > PPM / 2 {
            return Err(ErrorCode::OutOfRange(3));
        }
        for (n, class) in (0u8..).zip(used) {
            write_register(&mut self.pattern, REG_CLASS_MU + n, class.micro_photons)?;
            write_register(&mut self.pattern, REG_CLASS_PPM + n, class.ppm)?;
        }
        write_register(&mut self.pattern, REG_BASIS_Z, config.basis_z_ppm)?;
        write_register(&mut self.pattern, REG_REFERENCE, config.reference_ppm)?;
        write_register(&mut self.pattern, REG_COMMIT, u32::from(config.class_count))?;
        self.config = *config;
        self.config.classes[count..].fill(IntensityCode::default());
        Ok(Reply::Ack)
    }

    /// Loads the node's key into the pattern generator and starts it (the key never stays in the
    /// core: it goes to the FPGA's registers, which the start clears).
    fn load_pattern(&mut self, key: &[u8; 32]) -> Result<Reply, ErrorCode> {
        for (n, word) in (0u8..).zip(key.chunks_exact(4)) {
            let value = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            write_register(&mut self.pattern, REG_KEY + n, value)?;
        }
        write_register(&mut self.pattern, REG_KEY_START, 1)?;
        Ok(Reply::Ack)
    }

    fn read_monitor(&mut self) -> Result<Reply, ErrorCode> {
        let mut raw = [0u8; 2];
        self.monitor
            .read(&mut raw)
            .map_err(|_| ErrorCode::Peripheral)?;
        let code = u16::from_be_bytes(raw);
        let femtowatts = (u64::from(code) * MONITOR_FULL_SCALE_FW + 0x7FFF) / 0xFFFF;
        Ok(Reply::Power {
            code,
            femtowatts: femtowatts as u32,
        })
    }
}

impl<Pattern, Monitor, Laser> BoardCore for SourceBoard<Pattern, Monitor, Laser>
where
    Pattern: SpiDevice,
    Monitor: SpiDevice,
    Laser: OutputPin,
{
    fn kind(&self) -> BoardKind {
        BoardKind::Source
    }

    fn handle(&mut self, request: &Request) -> Reply {
        let Request::Source(command) = request else {
            return Reply::Error(ErrorCode::Unsupported);
        };
        reply(match command {
            SourceCommand::SetEnabled(on) => {
                let done = if *on {
                    self.laser.set_high()
                } else {
                    self.laser.set_low()
                };
                done.map(|()| Reply::Ack).map_err(|_| ErrorCode::Peripheral)
            }
            SourceCommand::Configure(config) => self.configure(config),
            SourceCommand::GetConfig => Ok(Reply::SourceConfig(self.config)),
            SourceCommand::ReadPowerMonitor => self.read_monitor(),
            SourceCommand::LoadPattern(key) => self.load_pattern(key),
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock as Pin, State, Transaction as PinT};
    use embedded_hal_mock::eh1::spi::{Mock as Spi, Transaction as SpiT};
    use std::vec;
    use std::vec::Vec;

    type Board = SourceBoard<Spi<u8>, Spi<u8>, Pin>;

    fn done(board: Board) {
        let (mut pattern, mut monitor, mut laser) = board.release();
        pattern.done();
        monitor.done();
        laser.done();
    }

    fn register(address: u8, value: u32) -> [SpiT<u8>; 3] {
        let mut bytes = vec![address];
        bytes.extend(value.to_be_bytes());
        [
            SpiT::transaction_start(),
            SpiT::write_vec(bytes),
            SpiT::transaction_end(),
        ]
    }

    fn config() -> SourceConfig {
        let class = |micro_photons, ppm| IntensityCode { micro_photons, ppm };
        SourceConfig {
            class_count: 2,
            classes: [
                class(500_000, 700_000),
                class(100_000, 300_000),
                class(9, 9),
                class(9, 9),
            ],
            basis_z_ppm: 900_000,
            reference_ppm: 100_000,
        }
    }

    #[test]
    fn configure_loads_the_pattern_generator_and_commits() {
        let mut writes: Vec<SpiT<u8>> = vec![];
        writes.extend(register(REG_CLASS_MU, 500_000));
        writes.extend(register(REG_CLASS_PPM, 700_000));
        writes.extend(register(REG_CLASS_MU + 1, 100_000));
        writes.extend(register(REG_CLASS_PPM + 1, 300_000));
        writes.extend(register(REG_BASIS_Z, 900_000));
        writes.extend(register(REG_REFERENCE, 100_000));
        writes.extend(register(REG_COMMIT, 2));
        let mut board = SourceBoard::new(Spi::new(&writes), Spi::new(&[]), Pin::new(&[]));
        let request = Request::Source(SourceCommand::Configure(config()));
        assert_eq!(board.handle(&request), Reply::Ack);
        let Reply::SourceConfig(stored) = board.handle(&Request::Source(SourceCommand::GetConfig))
        else {
            panic!("no config")
        };
        assert_eq!(stored.classes[..2], config().classes[..2]);
        assert_eq!(stored.classes[2], IntensityCode::default());
        done(board);
    }

    #[test]
    fn inconsistent_configurations_never_reach_the_fpga() {
        let mut board = SourceBoard::new(Spi::new(&[]), Spi::new(&[]), Pin::new(&[]));
        let mut bad = config();
        bad.classes[1].ppm = 299_999;
        let refuse =
            |board: &mut Board, c| board.handle(&Request::Source(SourceCommand::Configure(c)));
        assert_eq!(
            refuse(&mut board, bad),
            Reply::Error(ErrorCode::OutOfRange(1))
        );
        let mut bad = config();
        bad.class_count = 0;
        assert_eq!(
            refuse(&mut board, bad),
            Reply::Error(ErrorCode::OutOfRange(0))
        );
        let mut bad = config();
        bad.basis_z_ppm = PPM + 1;
        assert_eq!(
            refuse(&mut board, bad),
            Reply::Error(ErrorCode::OutOfRange(2))
        );
        let mut bad = config();
        bad.reference_ppm = PPM / 2 + 1;
        assert_eq!(
            refuse(&mut board, bad),
            Reply::Error(ErrorCode::OutOfRange(3))
        );
        done(board);
    }

    #[test]
    fn a_pattern_key_goes_to_the_fpga_word_by_word_and_starts() {
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let mut writes: Vec<SpiT<u8>> = vec![];
        for n in 0..8u8 {
            let b = 4 * n;
            writes.extend(register(
                REG_KEY + n,
                u32::from_le_bytes([b, b + 1, b + 2, b + 3]),
            ));
        }
        writes.extend(register(REG_KEY_START, 1));
        let mut board = SourceBoard::new(Spi::new(&writes), Spi::new(&[]), Pin::new(&[]));
        let request = Request::Source(SourceCommand::LoadPattern(key));
        assert_eq!(board.handle(&request), Reply::Ack);
        done(board);
    }

    #[test]
    fn laser_pin_and_power_monitor() {
        let monitor = [
            SpiT::transaction_start(),
            SpiT::read_vec(vec![0x80, 0x00]),
            SpiT::transaction_end(),
        ];
        let laser = [PinT::set(State::High), PinT::set(State::Low)];
        let mut board = SourceBoard::new(Spi::new(&[]), Spi::new(&monitor), Pin::new(&laser));
        let on = Request::Source(SourceCommand::SetEnabled(true));
        let off = Request::Source(SourceCommand::SetEnabled(false));
        assert_eq!(board.handle(&on), Reply::Ack);
        assert_eq!(
            board.handle(&Request::Source(SourceCommand::ReadPowerMonitor)),
            Reply::Power {
                code: 0x8000,
                femtowatts: 5_000_076
            }
        );
        assert_eq!(board.handle(&off), Reply::Ack);
        done(board);
    }
}
