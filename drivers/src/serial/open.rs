//! From a device entry of the configuration to a driver.

use std::time::Duration;

use qkd_units::Hertz;

use crate::error::{DetectorError, InvalidSetting, PolarizationError, SourceError};
use crate::{ActuatorSpec, DeviceIdentity, PolarizationController};

use super::boards::{BoardDetectors, BoardPolarizationController, BoardSource, DetectorNominals};
use super::config::{DeviceConfig, DeviceKind};
use super::link::SerialLink;
use super::mpc320::Mpc320;
use super::oz_epc::OzEpc;

/// Any serial polarization controller, chosen by configuration.
#[derive(Debug)]
pub enum SerialPolarizationController {
    /// Our polarization board.
    Board(BoardPolarizationController),
    /// A Thorlabs MPC320.
    Mpc320(Mpc320),
    /// An OZ Optics EPC driver.
    OzEpc(OzEpc),
}

/// Calls `$call` on whichever controller is inside.
macro_rules! each {
    ($self:expr, $c:ident => $call:expr) => {
        match $self {
            SerialPolarizationController::Board($c) => $call,
            SerialPolarizationController::Mpc320($c) => $call,
            SerialPolarizationController::OzEpc($c) => $call,
        }
    };
}

impl PolarizationController for SerialPolarizationController {
    fn identity(&self) -> &DeviceIdentity {
        each!(self, c => c.identity())
    }

    fn actuators(&self) -> &[ActuatorSpec] {
        each!(self, c => c.actuators())
    }

    fn settle_time(&self) -> Duration {
        each!(self, c => c.settle_time())
    }

    fn settle_time_for(&self, target: &[f64]) -> Duration {
        each!(self, c => c.settle_time_for(target))
    }

    async fn set(&mut self, values: &[f64]) -> Result<(), PolarizationError> {
        each!(self, c => c.set(values).await)
    }

    async fn get(&mut self) -> Result<Vec<f64>, PolarizationError> {
        each!(self, c => c.get().await)
    }
}

fn wrong_kind(config: &DeviceConfig, wanted: &str) -> InvalidSetting {
    InvalidSetting::new(
        "kind",
        &format!(
            "{} at {} is not {wanted}",
            config.kind.name(),
            config.port.display()
        ),
    )
}

impl DeviceConfig {
    /// Connects to the polarization controller this entry describes.
    pub async fn open_polarization(
        &self,
    ) -> Result<SerialPolarizationController, PolarizationError> {
        let (port, policy) = self.resolve()?;
        let link = SerialLink::new(port);
        Ok(match self.kind {
            DeviceKind::PolarizationBoard => SerialPolarizationController::Board(
                BoardPolarizationController::connect(link, policy, self.period_mv).await?,
            ),
            DeviceKind::Mpc320 => SerialPolarizationController::Mpc320(
                Mpc320::connect(link, policy, self.velocity_percent.unwrap_or(100)).await?,
            ),
            DeviceKind::OzEpc => SerialPolarizationController::OzEpc(
                OzEpc::connect(
                    link,
                    policy,
                    self.period_mv,
                    self.serial.as_deref().unwrap_or("unknown"),
                )
                .await?,
            ),
            DeviceKind::SourceBoard | DeviceKind::DetectorBoard => {
                return Err(wrong_kind(self, "a polarization controller").into());
            }
        })
    }

    /// Connects to the detector board this entry describes.
    pub async fn open_detectors(
        &self,
        nominals: DetectorNominals,
    ) -> Result<BoardDetectors, DetectorError> {
        if self.kind != DeviceKind::DetectorBoard {
            return Err(wrong_kind(self, "a detector board").into());
        }
        let (port, policy) = self.resolve()?;
        BoardDetectors::connect(SerialLink::new(port), policy, nominals).await
    }

    /// Connects to the source board this entry describes.
    pub async fn open_source(&self) -> Result<BoardSource, SourceError> {
        if self.kind != DeviceKind::SourceBoard {
            return Err(wrong_kind(self, "a source board").into());
        }
        let rate = self
            .repetition_rate_hz
            .ok_or_else(|| {
                InvalidSetting::new("repetition_rate_hz", &"required for a source board")
            })
            .and_then(|hz| {
                Hertz::new(hz).map_err(|e| InvalidSetting::new("repetition_rate_hz", &e))
            })?;
        let (port, policy) = self.resolve()?;
        BoardSource::connect(SerialLink::new(port), policy, rate).await
    }
}
