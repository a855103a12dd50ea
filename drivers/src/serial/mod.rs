//! Serial devices: the port layer (reconnecting link, bounded retries) and the drivers of our
//! boards, the Thorlabs MPC320 and the OZ Optics EPC, each implementing the driver traits.

mod board;
mod boards;
mod config;
mod exchange;
mod link;
mod mpc320;
mod open;
mod oz_epc;

/// Time fiber squeezers' piezo stacks take to follow a new voltage (our board, the OZ EPC).
pub const SQUEEZER_SETTLE: std::time::Duration = std::time::Duration::from_micros(100);

pub use board::BoardClient;
pub use boards::{BoardDetectors, BoardPolarizationController, BoardSource, DetectorNominals};
pub use config::{DeviceConfig, DeviceKind, MAX_RETRIES};
pub use exchange::RetryPolicy;
pub use link::{PortSettings, SerialLink};
pub use mpc320::Mpc320;
pub use open::SerialPolarizationController;
pub use oz_epc::OzEpc;
