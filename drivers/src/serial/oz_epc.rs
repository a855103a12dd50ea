//! OZ Optics EPC driver over its ASCII protocol: four squeezers set in millivolts, one `V<ch>,<mV>`
//! command per changed channel, each answered with a content line and `Done`.

use std::time::Duration;

use qkd_protocol::epc::{
    CHANNELS, DONE, EOL, ERROR_SUFFIX, MAX_MV, MIN_MV, UNKNOWN_COMMAND, parse_voltages,
};

use crate::error::{PolarizationError, TransportError};
use crate::{ActuatorSpec, DeviceIdentity, PolarizationController};

use super::exchange::{Progress, RetryPolicy, exchange};
use super::link::SerialLink;
use super::{SQUEEZER_SETTLE, squeezers};

/// The EPC driver.
#[derive(Debug)]
pub struct OzEpc {
    link: SerialLink,
    policy: RetryPolicy,
    identity: DeviceIdentity,
    actuators: Vec<ActuatorSpec>,
    millivolts: [i32; CHANNELS],
}

/// Splits complete lines off `received`; once `Done` follows a content line, returns what
/// `parse` reads from it. A line `parse` refuses was damaged on the line: the attempt fails
/// and is retried.
fn read_reply<R>(
    received: &mut Vec<u8>,
    content: &mut Option<String>,
    parse: &(dyn Fn(&str) -> Option<R> + Sync),
) -> Progress<R> {
    while let Some(end) = received.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = received.drain(..=end).collect();
        let line = String::from_utf8_lossy(&line).trim().to_owned();
        if line.is_empty() {
            continue;
        }
        // The driver sends only commands the device knows: one it does not know reached it
        // damaged, or behind stray bytes left in its line buffer, and is sent again.
        if line.starts_with(UNKNOWN_COMMAND) {
            return Progress::Failed(TransportError::Malformed(format!(
                "EPC did not receive the command intact: {line}"
            )));
        }
        if line.ends_with(ERROR_SUFFIX) {
            return Progress::Failed(TransportError::DeviceReported(format!("EPC: {line}")));
        }
        if line == DONE {
            return match content.take() {
                Some(text) => parse(&text).map_or_else(
                    || {
                        Progress::Failed(TransportError::Malformed(format!(
                            "unexpected reply line `{text}`"
                        )))
                    },
                    Progress::Done,
                ),
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
        let actuators = squeezers(f64::from(MIN_MV), f64::from(MAX_MV), period_mv);
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
        epc.command("MDC", &|line| (line == "Work Mode: DC").then_some(()))
            .await?;
        epc.read_voltages().await?;
        Ok(epc)
    }

    /// Sends `command` and returns what `parse` reads from the reply line.
    async fn command<R>(
        &mut self,
        command: &str,
        parse: &(dyn Fn(&str) -> Option<R> + Sync),
    ) -> Result<R, TransportError> {
        let request = format!("{command}{EOL}");
        let mut content = None;
        exchange(
            &mut self.link,
            &self.policy,
            request.as_bytes(),
            Duration::ZERO,
            |received| read_reply(received, &mut content, parse),
        )
        .await
    }

    async fn read_voltages(&mut self) -> Result<[i32; CHANNELS], TransportError> {
        let voltages = self.command("V?", &parse_voltages).await?;
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
        SQUEEZER_SETTLE
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
            self.command(&format!("V{},{mv}", channel + 1), &|line| {
                (line == echo).then_some(())
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn failure(reply: &str) -> TransportError {
        let mut received = reply.as_bytes().to_vec();
        match read_reply(&mut received, &mut None, &|_| Some(())) {
            Progress::Failed(e) => e,
            _ => panic!("{reply:?} did not fail"),
        }
    }

    #[test]
    fn an_unknown_command_is_sent_again_and_a_refused_one_is_not() {
        // Stray bytes in the device's line buffer prefix the first command.
        let stray = failure("Unknown command Error!\r\n");
        assert_eq!(stray.kind(), ErrorKind::Retry, "{stray}");
        let refused = failure("Voltage out of range Error!\r\n");
        assert_eq!(refused.kind(), ErrorKind::Abort, "{refused}");
    }
}
