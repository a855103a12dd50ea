//! OZ Optics EPC driver over its ASCII protocol: four squeezers set in millivolts, one `V<ch>,<mV>`
//! command per changed channel, each answered with a content line and `Done`.

use std::time::Duration;

use qkd_protocol::epc::{CHANNELS, DONE, EOL, ERROR_SUFFIX, MAX_MV, MIN_MV, parse_voltages};

use crate::error::{PolarizationError, TransportError};
use crate::{ActuatorSpec, ActuatorUnit, DeviceIdentity, PolarizationController};

use super::exchange::{Progress, RetryPolicy, exchange};
use super::link::SerialLink;

/// Time the squeezers take to follow a new voltage.
pub const SETTLE: Duration = Duration::from_micros(100);

/// The EPC driver.
#[derive(Debug)]
pub struct OzEpc {
    link: SerialLink,
    policy: RetryPolicy,
    identity: DeviceIdentity,
    actuators: Vec<ActuatorSpec>,
    millivolts: [i32; CHANNELS],
}

/// Splits complete lines off `received`; returns the content line once `Done` follows it. A
/// content line `valid` refuses was damaged on the line: the attempt fails and is retried.
fn read_reply(
    received: &mut Vec<u8>,
    content: &mut Option<String>,
    valid: &(dyn Fn(&str) -> bool + Sync),
) -> Progress<String> {
    while let Some(end) = received.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = received.drain(..=end).collect();
        let line = String::from_utf8_lossy(&line).trim().to_owned();
        if line.is_empty() {
            continue;
        }
        if line.ends_with(ERROR_SUFFIX) {
            return Progress::Failed(TransportError::DeviceReported(format!("EPC: {line}")));
        }
        if line == DONE {
            return match content.take() {
                Some(text) if valid(&text) => Progress::Done(text),
                Some(text) => Progress::Failed(TransportError::Malformed(format!(
                    "unexpected reply line `{text}`"
                ))),
                None => Progress::Failed(TransportError::Malformed(
                    "`Done` without a reply line".into(),
                )),
            };
        }
        *content = Some(line);
    }
    Progress::More
}

impl OzEpc {
    /// Connects, switches to DC mode and reads the voltages; `period_mv` is the squeezers' 2π
    /// voltage (2·Vπ) if known; `serial` names the unit (the protocol has no identity query).
    pub async fn connect(
        link: SerialLink,
        policy: RetryPolicy,
        period_mv: Option<f64>,
        serial: &str,
    ) -> Result<Self, PolarizationError> {
        let actuators = (1..=CHANNELS)
            .map(|n| ActuatorSpec {
                name: format!("squeezer {n}"),
                unit: ActuatorUnit::Millivolts,
                min: f64::from(MIN_MV),
                max: f64::from(MAX_MV),
                period: period_mv,
            })
            .collect();
        let mut epc = OzEpc {
            link,
            policy,
            identity: DeviceIdentity {
                vendor: "OZ Optics".into(),
                model: "EPC driver".into(),
                serial: serial.to_owned(),
                firmware: "unknown".into(),
            },
            actuators,
            millivolts: [0; CHANNELS],
        };
        epc.command("MDC", &|line| line == "Work Mode: DC").await?;
        epc.read_voltages().await?;
        Ok(epc)
    }

    /// Sends `command` and returns the reply line, which `valid` must accept.
    async fn command(
        &mut self,
        command: &str,
        valid: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<String, TransportError> {
        let request = format!("{command}{EOL}");
        let mut content = None;
        exchange(
            &mut self.link,
            &self.policy,
            request.as_bytes(),
            Duration::ZERO,
            |received| read_reply(received, &mut content, valid),
        )
        .await
    }

    async fn read_voltages(&mut self) -> Result<[i32; CHANNELS], TransportError> {
        let line = self
            .command("V?", &|line| parse_voltages(line).is_some())
            .await?;
        let voltages = parse_voltages(&line)
            .ok_or_else(|| TransportError::Malformed(format!("unreadable voltages: {line}")))?;
        self.millivolts = voltages;
        Ok(voltages)
    }
}

impl PolarizationController for OzEpc {
    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn actuators(&self) -> &[ActuatorSpec] {
        &self.actuators
    }

    fn settle_time(&self) -> Duration {
        SETTLE
    }

    async fn set(&mut self, values: &[f64]) -> Result<(), PolarizationError> {
        ActuatorSpec::check_setting(&self.actuators, values)?;
        for (channel, &value) in values.iter().enumerate() {
            let mv = value.round() as i32;
            if mv == self.millivolts[channel] {
                continue;
            }
            // The echo confirms the value the driver latched; any other line is a damaged
            // reply (or a damaged command) and the command is sent again.
            let echo = format!("CH{} {mv:+}", channel + 1);
            self.command(&format!("V{},{mv}", channel + 1), &|line| line == echo)
                .await?;
            self.millivolts[channel] = mv;
        }
        Ok(())
    }

    async fn get(&mut self) -> Result<Vec<f64>, PolarizationError> {
        Ok(self
            .read_voltages()
            .await?
            .iter()
            .map(|&mv| f64::from(mv))
            .collect())
    }
}
