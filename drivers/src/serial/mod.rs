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

/// Four fiber squeezers driven in millivolts over `[min, max]`; `period_mv` is their 2π
/// voltage (2·Vπ) if known.
fn squeezers(min: f64, max: f64, period_mv: Option<f64>) -> Vec<crate::ActuatorSpec> {
    (1..=4)
        .map(|n| crate::ActuatorSpec {
            name: format!("squeezer {n}"),
            unit: crate::ActuatorUnit::Millivolts,
            min,
            max,
            period: period_mv,
            optics: None,
        })
        .collect()
}

pub use board::BoardClient;
pub use boards::{BoardDetectors, BoardPolarizationController, BoardSource, DetectorNominals};
pub use config::{DeviceConfig, DeviceKind, MAX_RETRIES};
pub use exchange::RetryPolicy;
pub use link::{PortSettings, SerialLink};
pub use mpc320::Mpc320;
pub use open::SerialPolarizationController;
pub use oz_epc::OzEpc;
