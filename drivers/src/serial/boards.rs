//! The driver traits for our three boards.

use std::time::Duration;

use qkd_protocol::detector_limits::{
    BIAS_FULL_SCALE_MV, MAX_DEAD_TIME_NS, MAX_INTEGRATION_MS, THRESHOLD_FULL_SCALE_MV,
};
use qkd_protocol::{
    BoardKind, DetectorCommand, ErrorCode, IntensityCode, PolarizationCommand, Reply, Request,
    SourceCommand, SourceConfig, source_limits, squeezer_dac,
};
use qkd_units::pattern::PatternKey;
use qkd_units::{Hertz, MeanPhotonNumber, Picoseconds, Volts};

use crate::error::{DetectorError, InvalidSetting, PolarizationError, SourceError, TransportError};
use crate::{
    ActuatorSpec, DarkCounts, DetectorChannel, DeviceIdentity, EmissionRecords, IntensityClass,
    PolarizationController, SinglePhotonDetectors, WcpSettings, WcpSource,
};

use super::board::BoardClient;
use super::exchange::RetryPolicy;
use super::link::SerialLink;
use super::{SQUEEZER_SETTLE, squeezers};

/// A reply the command does not call for.
fn unexpected(reply: &Reply) -> TransportError {
    TransportError::Malformed(format!("unexpected reply {reply:?}"))
}

/// A refusal in the words of the protocol.
fn refused(code: ErrorCode) -> TransportError {
    TransportError::DeviceReported(format!("board refused the command: {code:?}"))
}

/// Our polarization board: four squeezers in millivolts over ±5 V.
#[derive(Debug)]
pub struct BoardPolarizationController {
    client: BoardClient,
    identity: DeviceIdentity,
    actuators: Vec<ActuatorSpec>,
}

impl BoardPolarizationController {
    /// Connects; `period_mv` is the squeezers' 2π voltage if known (2·Vπ).
    pub async fn connect(
        link: SerialLink,
        policy: RetryPolicy,
        period_mv: Option<f64>,
    ) -> Result<Self, PolarizationError> {
        let client = BoardClient::connect(link, policy, BoardKind::Polarization).await?;
        let actuators = squeezers(
            squeezer_dac::min_millivolts(),
            squeezer_dac::max_millivolts(),
            period_mv,
        );
        Ok(BoardPolarizationController {
            identity: client.device_identity(),
            client,
            actuators,
        })
    }

    /// The board client (restart and reconnect counters).
    pub fn client(&self) -> &BoardClient {
        &self.client
    }
}

impl PolarizationController for BoardPolarizationController {
    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn actuators(&self) -> &[ActuatorSpec] {
        &self.actuators
    }

    fn settle_time(&self) -> Duration {
        SQUEEZER_SETTLE
    }

    async fn set(&mut self, values: &[f64]) -> Result<(), PolarizationError> {
        ActuatorSpec::check_setting(&self.actuators, values)?;
        let mut codes = [0u16; 4];
        for (actuator, (code, &mv)) in codes.iter_mut().zip(values).enumerate() {
            *code = squeezer_dac::code(mv).ok_or(PolarizationError::OutOfRange {
                actuator,
                value: mv,
                min: self.actuators[actuator].min,
                max: self.actuators[actuator].max,
            })?;
        }
        let request = Request::Polarization(PolarizationCommand::SetDac(codes));
        match self.client.request(request, Duration::ZERO).await? {
            Reply::Dac(latched) if latched == codes => Ok(()),
            Reply::Dac(latched) => Err(TransportError::DeviceReported(format!(
                "board latched {latched:?} instead of {codes:?}"
            ))
            .into()),
            Reply::Error(code) => Err(refused(code).into()),
            other => Err(unexpected(&other).into()),
        }
    }

    async fn get(&mut self) -> Result<Vec<f64>, PolarizationError> {
        let request = Request::Polarization(PolarizationCommand::GetDac);
        match self.client.request(request, Duration::ZERO).await? {
            Reply::Dac(codes) => Ok(codes.iter().map(|&c| squeezer_dac::millivolts(c)).collect()),
            Reply::Error(code) => Err(refused(code).into()),
            other => Err(unexpected(&other).into()),
        }
    }
}

/// What the detector board cannot tell about its detectors: their datasheet values (zero when
/// not given; calibration measures them).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DetectorNominals {
    /// Detection efficiency.
    pub efficiency: qkd_units::Probability,
    /// Dark-count rate.
    pub dark_rate: Hertz,
    /// Dead time at power-on.
    pub dead_time: Picoseconds,
}

/// Our detector board: four channels with bias, threshold, dead time and counters.
#[derive(Debug)]
pub struct BoardDetectors {
    client: BoardClient,
    identity: DeviceIdentity,
    channels: Vec<DetectorChannel>,
}

impl BoardDetectors {
    /// Connects.
    pub async fn connect(
        link: SerialLink,
        policy: RetryPolicy,
        nominals: DetectorNominals,
    ) -> Result<Self, DetectorError> {
        let client = BoardClient::connect(link, policy, BoardKind::Detector).await?;
        let volts = |mv: u32| Volts::new(f64::from(mv) / 1000.0).unwrap_or_default();
        let channels = ["H", "V", "D", "A"]
            .iter()
            .map(|name| DetectorChannel {
                name: (*name).into(),
                efficiency: nominals.efficiency,
                dark_counts: DarkCounts::Rate(nominals.dark_rate),
                dead_time: nominals.dead_time,
                dead_time_range: Some((
                    Picoseconds(0),
                    Picoseconds(i64::from(MAX_DEAD_TIME_NS) * 1000),
                )),
                bias_range: Some((volts(0), volts(BIAS_FULL_SCALE_MV))),
                threshold_range: Some((volts(0), volts(THRESHOLD_FULL_SCALE_MV))),
            })
            .collect();
        Ok(BoardDetectors {
            identity: client.device_identity(),
            client,
            channels,
        })
    }

    fn channel(&self, channel: usize) -> Result<u8, DetectorError> {
        if channel < self.channels.len() {
            Ok(channel as u8)
        } else {
            Err(DetectorError::NoSuchChannel {
                channel,
                count: self.channels.len(),
            })
        }
    }

    async fn command(
        &mut self,
        command: DetectorCommand,
        extra_wait: Duration,
    ) -> Result<Reply, DetectorError> {
        match self
            .client
            .request(Request::Detector(command), extra_wait)
            .await?
        {
            Reply::Error(ErrorCode::NoSuchChannel(channel)) => Err(DetectorError::NoSuchChannel {
                channel: usize::from(channel),
                count: self.channels.len(),
            }),
            Reply::Error(code) => Err(refused(code).into()),
            reply => Ok(reply),
        }
    }

    async fn acknowledged(&mut self, command: DetectorCommand) -> Result<(), DetectorError> {
        match self.command(command, Duration::ZERO).await? {
            Reply::Ack => Ok(()),
            other => Err(unexpected(&other).into()),
        }
    }

    fn millivolts(
        value: Volts,
        range: Option<(Volts, Volts)>,
        what: &str,
    ) -> Result<u32, DetectorError> {
        let mv = value.get() * 1000.0;
        match range {
            Some((min, max)) if value.get() >= min.get() && value.get() <= max.get() => {
                Ok(mv.round() as u32)
            }
            _ => Err(InvalidSetting::new(
                what,
                &format!("{} V is outside the board's range", value.get()),
            )
            .into()),
        }
    }
}

impl SinglePhotonDetectors for BoardDetectors {
    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn channels(&self) -> &[DetectorChannel] {
        &self.channels
    }

    async fn set_enabled(&mut self, channel: usize, enabled: bool) -> Result<(), DetectorError> {
        let channel = self.channel(channel)?;
        self.acknowledged(DetectorCommand::SetEnabled { channel, enabled })
            .await
    }

    async fn set_dead_time(
        &mut self,
        channel: usize,
        dead_time: Picoseconds,
    ) -> Result<(), DetectorError> {
        let index = self.channel(channel)?;
        let ns = dead_time.get() / 1000;
        if dead_time.get() % 1000 != 0 || !(0..=i64::from(MAX_DEAD_TIME_NS)).contains(&ns) {
            return Err(InvalidSetting::new(
                format!("channel {channel} dead time"),
                &format!(
                    "{} ps: the board sets whole nanoseconds up to 1 ms",
                    dead_time.get()
                ),
            )
            .into());
        }
        self.acknowledged(DetectorCommand::SetDeadTime {
            channel: index,
            nanoseconds: ns as u32,
        })
        .await?;
        self.channels[channel].dead_time = dead_time;
        Ok(())
    }

    async fn set_bias(&mut self, channel: usize, bias: Volts) -> Result<(), DetectorError> {
        let index = self.channel(channel)?;
        let millivolts = Self::millivolts(bias, self.channels[channel].bias_range, "bias")?;
        self.acknowledged(DetectorCommand::SetBias {
            channel: index,
            millivolts,
        })
        .await
    }

    async fn set_threshold(
        &mut self,
        channel: usize,
        threshold: Volts,
    ) -> Result<(), DetectorError> {
        let index = self.channel(channel)?;
        let millivolts = Self::millivolts(
            threshold,
            self.channels[channel].threshold_range,
            "threshold",
        )?;
        self.acknowledged(DetectorCommand::SetThreshold {
            channel: index,
            millivolts,
        })
        .await
    }

    async fn counts(&mut self, integration: Duration) -> Result<Vec<u64>, DetectorError> {
        let total_ms = integration.as_millis();
        if total_ms == 0 || !integration.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(InvalidSetting::new(
                "integration",
                &format!("{integration:?}: the board counts whole milliseconds, at least one"),
            )
            .into());
        }
        let mut totals = vec![0u64; self.channels.len()];
        let mut left = total_ms as u64;
        while left > 0 {
            let chunk = left.min(u64::from(MAX_INTEGRATION_MS));
            left -= chunk;
            let command = DetectorCommand::ReadCounters {
                milliseconds: chunk as u16,
            };
            match self.command(command, Duration::from_millis(chunk)).await? {
                Reply::Counters(counts) => {
                    for (total, count) in totals.iter_mut().zip(counts) {
                        *total += u64::from(count);
                    }
                }
                other => return Err(unexpected(&other).into()),
            }
        }
        Ok(totals)
    }
}

/// Our source board: laser enable, intensity classes and basis bias, power monitor.
#[derive(Debug)]
pub struct BoardSource {
    client: BoardClient,
    identity: DeviceIdentity,
    rate: Hertz,
    settings: WcpSettings,
}

impl BoardSource {
    /// Connects and reads the settings in effect; the repetition rate is fixed by the board's
    /// clock and given by configuration.
    pub async fn connect(
        link: SerialLink,
        policy: RetryPolicy,
        rate: Hertz,
    ) -> Result<Self, SourceError> {
        let client = BoardClient::connect(link, policy, BoardKind::Source).await?;
        let mut source = BoardSource {
            identity: client.device_identity(),
            client,
            rate,
            settings: WcpSettings {
                intensities: Vec::new(),
                basis_z_probability: qkd_units::Probability::default(),
                reference_share: qkd_units::Probability::default(),
            },
        };
        match source.command(SourceCommand::GetConfig).await? {
            Reply::SourceConfig(config) => source.settings = wcp_settings(&config)?,
            other => return Err(unexpected(&other).into()),
        }
        Ok(source)
    }

    async fn command(&mut self, command: SourceCommand) -> Result<Reply, SourceError> {
        match self
            .client
            .request(Request::Source(command), Duration::ZERO)
            .await?
        {
            Reply::Error(ErrorCode::OutOfRange(argument)) => Err(InvalidSetting::new(
                "source settings",
                &format!("the board refused argument {argument} as out of range"),
            )
            .into()),
            Reply::Error(code) => Err(refused(code).into()),
            reply => Ok(reply),
        }
    }

    /// Optical power at the monitor, in femtowatts.
    pub async fn monitor_power_fw(&mut self) -> Result<u32, SourceError> {
        match self.command(SourceCommand::ReadPowerMonitor).await? {
            Reply::Power { femtowatts, .. } => Ok(femtowatts),
            other => Err(unexpected(&other).into()),
        }
    }
}

/// Millionths, rounded; `None` if the value does not fit.
fn millionths(value: f64) -> Option<u32> {
    let scaled = (value * 1e6).round();
    (0.0..=f64::from(u32::MAX))
        .contains(&scaled)
        .then_some(scaled as u32)
}

/// The board's form of `settings`; probabilities are rounded to ppm and the last class absorbs
/// the rounding so that they sum to exactly one million, as the board demands.
fn source_config(settings: &WcpSettings) -> Result<SourceConfig, InvalidSetting> {
    settings.validate()?;
    let mut config = SourceConfig {
        class_count: settings.intensities.len() as u8,
        basis_z_ppm: millionths(settings.basis_z_probability.get())
            .ok_or_else(|| InvalidSetting::new("basis_z_probability", &"not representable"))?,
        reference_ppm: millionths(settings.reference_share.get())
            .ok_or_else(|| InvalidSetting::new("reference_share", &"not representable"))?,
        ..SourceConfig::default()
    };
    let mut assigned = 0u32;
    for (n, class) in settings.intensities.iter().enumerate() {
        let micro_photons = millionths(class.mean_photon_number.get()).ok_or_else(|| {
            InvalidSetting::new(format!("intensities[{n}].mean_photon_number"), &"too large")
        })?;
        let ppm = if n + 1 == settings.intensities.len() {
            source_limits::PPM.saturating_sub(assigned)
        } else {
            millionths(class.probability.get()).unwrap_or(0)
        };
        assigned += ppm;
        config.classes[n] = IntensityCode { micro_photons, ppm };
    }
    Ok(config)
}

/// The settings a board configuration stands for (no classes before the first `configure`).
fn wcp_settings(config: &SourceConfig) -> Result<WcpSettings, TransportError> {
    let bad = |what: &str| TransportError::Malformed(format!("board configuration: {what}"));
    let count = usize::from(config.class_count).min(config.classes.len());
    let intensities = config.classes[..count]
        .iter()
        .map(|class| {
            Ok(IntensityClass {
                mean_photon_number: MeanPhotonNumber::new(f64::from(class.micro_photons) / 1e6)
                    .map_err(|_| bad("mean photon number"))?,
                probability: qkd_units::Probability::new(f64::from(class.ppm) / 1e6)
                    .map_err(|_| bad("class probability"))?,
            })
        })
        .collect::<Result<Vec<_>, TransportError>>()?;
    Ok(WcpSettings {
        intensities,
        basis_z_probability: qkd_units::Probability::new(f64::from(config.basis_z_ppm) / 1e6)
            .map_err(|_| bad("basis probability"))?,
        reference_share: qkd_units::Probability::new(f64::from(config.reference_ppm) / 1e6)
            .map_err(|_| bad("reference share"))?,
    })
}

impl WcpSource for BoardSource {
    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn repetition_rate(&self) -> Hertz {
        self.rate
    }

    fn settings(&self) -> &WcpSettings {
        &self.settings
    }

    async fn configure(&mut self, settings: &WcpSettings) -> Result<(), SourceError> {
        let config = source_config(settings)?;
        match self.command(SourceCommand::Configure(config)).await? {
            Reply::Ack => {
                self.settings = settings.clone();
                Ok(())
            }
            other => Err(unexpected(&other).into()),
        }
    }

    async fn set_enabled(&mut self, enabled: bool) -> Result<(), SourceError> {
        match self.command(SourceCommand::SetEnabled(enabled)).await? {
            Reply::Ack => Ok(()),
            other => Err(unexpected(&other).into()),
        }
    }

    async fn start_pattern(&mut self, key: &PatternKey) -> Result<(), SourceError> {
        match self
            .command(SourceCommand::LoadPattern(*key.bytes()))
            .await?
        {
            Reply::Ack => Ok(()),
            other => Err(unexpected(&other).into()),
        }
    }

    async fn emissions(&mut self, _: &[u64], _: &mut EmissionRecords) -> Result<(), SourceError> {
        Err(SourceError::Unsupported(
            "per-pulse emission records over the control port (they come from the source's record stream)",
        ))
    }
}
