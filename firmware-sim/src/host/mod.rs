//! Serves our boards and the vendor devices on pseudo-terminals around one shared world, so
//! that drivers, tests and people with a terminal program reach the emulator through the same
//! kernel serial layer as real hardware.

mod bench;
mod boards;
mod device;
pub mod mpc320;
pub mod oz_epc;
mod peripherals;
mod pty;

use std::path::{Path, PathBuf};

pub use bench::{LightPath, SharedBench};
pub use boards::{detector_board, polarization_board, source_board};
pub use device::SerialDevice;
pub use pty::{DeviceHandle, ServedDevice};

use crate::world::{ConfigError, LinkSpec};

/// Names of the served devices, which are also their symlinks' names.
pub const DEVICE_NAMES: [&str; 5] = ["source", "detectors", "epc", "mpc320", "oz-epc"];

/// Failures of the PTY host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A pseudo-terminal could not be created.
    #[error("cannot create a pseudo-terminal: {0}")]
    Pty(String),
    /// A device's symlink could not be made.
    #[error("cannot link {path}: {error}")]
    Link {
        /// The link.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// The directory for the links is unusable.
    #[error("cannot use {path} for the device links: {error}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// A serving thread could not start.
    #[error("cannot start a serving thread: {0}")]
    Thread(String),
    /// The world's configuration is invalid.
    #[error(transparent)]
    World(#[from] ConfigError),
}

/// Every device of one emulated bench, served until dropped.
#[derive(Debug)]
pub struct Host {
    bench: SharedBench,
    devices: Vec<ServedDevice>,
}

impl Host {
    /// Builds the world from `spec`, with the optics of the controller in `light_path` in front
    /// of the receiver, and serves [`DEVICE_NAMES`] in `dir`.
    pub fn serve(
        dir: &Path,
        spec: &LinkSpec,
        seed: u64,
        light_path: LightPath,
    ) -> Result<Host, HostError> {
        Host::serve_bench(dir, SharedBench::simulated(spec, seed, light_path)?, seed)
    }

    /// Serves [`DEVICE_NAMES`] in `dir` on a world shared with others; `seed` numbers the
    /// boards' serials.
    pub fn serve_bench(dir: &Path, bench: SharedBench, seed: u64) -> Result<Host, HostError> {
        std::fs::create_dir_all(dir).map_err(|e| HostError::Directory {
            path: dir.to_owned(),
            error: e.to_string(),
        })?;
        let serial = (seed as u32) & 0x00FF_FFFF;
        let devices: [Box<dyn SerialDevice>; 5] = [
            source_board(&bench, 0x0100_0000 | serial),
            detector_board(&bench, 0x0200_0000 | serial),
            polarization_board(&bench, 0x0300_0000 | serial),
            Box::new(mpc320::Mpc320::new(&bench)),
            Box::new(oz_epc::OzEpc::new(&bench)),
        ];
        let devices = DEVICE_NAMES
            .into_iter()
            .zip(devices)
            .map(|(name, device)| ServedDevice::start(dir, name, device))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Host { bench, devices })
    }

    /// The served devices' remote controls.
    pub fn devices(&self) -> impl Iterator<Item = &DeviceHandle> {
        self.devices.iter().map(ServedDevice::handle)
    }

    /// The device called `name`.
    pub fn device(&self, name: &str) -> Option<&DeviceHandle> {
        self.devices().find(|d| d.name() == name)
    }

    /// The shared world: ground truth for tests.
    pub fn bench(&self) -> &SharedBench {
        &self.bench
    }
}
