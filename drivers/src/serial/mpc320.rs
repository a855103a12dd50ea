//! Thorlabs MPC320 over APT: three paddles set in degrees. The device moves one enabled paddle
//! at a time, so a setting is applied paddle by paddle: enable, move, wait for MOVE_COMPLETED,
//! and check that the paddle stopped where it was sent.

use std::time::Duration;

use qkd_protocol::apt::{
    self, DEGREES_PER_TRAVEL, DEVICE, HOST, HardwareInfo, PADDLE_BITS, PaddleParams, Parsed,
    STEPS_PER_TRAVEL, Status, id,
};

use crate::error::{InvalidSetting, PolarizationError, TransportError};
use crate::{ActuatorOptics, ActuatorSpec, ActuatorUnit, DeviceIdentity, PolarizationController};

use super::exchange::{Progress, RetryPolicy, exchange};
use super::link::SerialLink;

/// Time to accelerate, stop and report, on top of the travel.
pub const MOVE_OVERHEAD: Duration = Duration::from_millis(20);

/// Encoder steps of a paddle angle, nearest.
pub fn steps(degrees: f64) -> i32 {
    (degrees * f64::from(STEPS_PER_TRAVEL) / DEGREES_PER_TRAVEL).round() as i32
}

/// A paddle's reported encoder position, refused outside its travel: a wild reading would
/// otherwise become a setting and a settle wait of days.
fn checked_position(paddle: usize, position: i32) -> Result<i32, TransportError> {
    if (0..=STEPS_PER_TRAVEL).contains(&position) {
        Ok(position)
    } else {
        Err(TransportError::Malformed(format!(
            "paddle {} reports position {position} steps, outside its travel 0..={STEPS_PER_TRAVEL}",
            paddle + 1
        )))
    }
}

/// What a reply reader accepts.
enum Expect {
    /// A long message with this id.
    Long(u16),
    /// MOVE_COMPLETED for this channel.
    Completed(u16),
}

/// The MPC320 driver.
#[derive(Debug)]
pub struct Mpc320 {
    link: SerialLink,
    policy: RetryPolicy,
    identity: DeviceIdentity,
    actuators: Vec<ActuatorSpec>,
    velocity_percent: u16,
    positions: [i32; 3],
}

impl Mpc320 {
    /// Connects: reads the hardware information and sets the paddle velocity.
    pub async fn connect(
        link: SerialLink,
        policy: RetryPolicy,
        velocity_percent: u16,
    ) -> Result<Self, PolarizationError> {
        if !(1..=100).contains(&velocity_percent) {
            return Err(InvalidSetting::new(
                "velocity_percent",
                &format!("{velocity_percent}: give 1 to 100"),
            )
            .into());
        }
        let quarter = std::f64::consts::FRAC_PI_2;
        let paddles = [
            ("paddle 1 (λ/4)", quarter),
            ("paddle 2 (λ/2)", 2.0 * quarter),
            ("paddle 3 (λ/4)", quarter),
        ];
        let actuators = paddles
            .iter()
            .map(|&(name, retardance_rad)| {
                let optics = ActuatorOptics::RotatingRetarder {
                    retardance_rad,
                    rad_per_unit: 1f64.to_radians(),
                };
                ActuatorSpec {
                    name: name.into(),
                    unit: ActuatorUnit::Degrees,
                    min: 0.0,
                    max: DEGREES_PER_TRAVEL,
                    period: Some(optics.period()),
                    optics: Some(optics),
                }
            })
            .collect();
        let mut device = Mpc320 {
            link,
            policy,
            identity: DeviceIdentity {
                vendor: "Thorlabs".into(),
                model: "MPC320".into(),
                serial: String::new(),
                firmware: String::new(),
            },
            actuators,
            velocity_percent,
            positions: [0; 3],
        };
        let info = device
            .ask(
                &apt::short(id::HW_REQ_INFO, [0, 0], DEVICE, HOST),
                Expect::Long(id::HW_GET_INFO),
                Duration::ZERO,
            )
            .await?;
        let info = HardwareInfo::decode(&info).ok_or_else(|| {
            TransportError::Malformed("hardware information of the wrong length".into())
        })?;
        device.identity.model = apt::text(&info.model).to_owned();
        device.identity.serial = info.serial.to_string();
        device.identity.firmware = format!(
            "{}.{}.{}",
            info.firmware[2], info.firmware[1], info.firmware[0]
        );
        let params = PaddleParams {
            velocity_percent: device.velocity_percent,
            home: 0,
            jog_steps: [10; 3],
        };
        let mut frame = [0u8; apt::HEADER + PaddleParams::LEN];
        let n = apt::long(
            id::POL_SET_PARAMS,
            &params.encode(),
            DEVICE,
            HOST,
            &mut frame,
        )
        .ok_or_else(|| TransportError::Malformed("paddle parameters do not fit".into()))?;
        device.link.send(&frame[..n]).await?;
        let confirmed = device
            .ask(
                &apt::short(id::POL_REQ_PARAMS, [0, 0], DEVICE, HOST),
                Expect::Long(id::POL_GET_PARAMS),
                Duration::ZERO,
            )
            .await?;
        if PaddleParams::decode(&confirmed) != Some(params) {
            return Err(TransportError::DeviceReported(
                "the paddle parameters did not take".into(),
            )
            .into());
        }
        for paddle in 0..3 {
            device.positions[paddle] = device.confirmed_position(paddle).await?;
        }
        Ok(device)
    }

    /// Sends `request` and returns the data of the expected reply.
    async fn ask(
        &mut self,
        request: &[u8],
        expect: Expect,
        extra_wait: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        exchange(
            &mut self.link,
            &self.policy,
            request,
            extra_wait,
            |received| {
                loop {
                    let (outcome, used) = match apt::parse(received, HOST, DEVICE) {
                        Parsed::Incomplete => return Progress::More,
                        Parsed::Garbage => (None, 1),
                        Parsed::Message(message, used) => {
                            let outcome = match (&expect, message.id) {
                                (_, id::HW_RICHRESPONSE) => {
                                    Some(Err(TransportError::DeviceReported(format!(
                                        "MPC320: {}",
                                        apt::text(message.data.get(4..).unwrap_or_default())
                                    ))))
                                }
                                (Expect::Long(want), got) if *want == got => {
                                    Some(Ok(message.data.to_vec()))
                                }
                                (Expect::Completed(channel), id::MOVE_COMPLETED) => {
                                    Status::decode(message.data)
                                        .filter(|s| s.channel == *channel)
                                        .map(|_| Ok(message.data.to_vec()))
                                }
                                // Unsolicited or stale messages (status updates, old completions).
                                _ => None,
                            };
                            (outcome, used)
                        }
                    };
                    received.drain(..used);
                    match outcome {
                        Some(Ok(data)) => return Progress::Done(data),
                        Some(Err(e)) => return Progress::Failed(e),
                        None => {}
                    }
                }
            },
        )
        .await
    }

    async fn status(&mut self, paddle: usize) -> Result<Status, TransportError> {
        let request = apt::short(id::REQ_STATUSUPDATE, [PADDLE_BITS[paddle], 0], DEVICE, HOST);
        let data = self
            .ask(&request, Expect::Long(id::GET_STATUSUPDATE), Duration::ZERO)
            .await?;
        let status = Status::decode(&data)
            .filter(|s| s.channel == u16::from(PADDLE_BITS[paddle]))
            .ok_or_else(|| {
                TransportError::Malformed("status of another paddle or length".into())
            })?;
        checked_position(paddle, status.position)?;
        Ok(status)
    }

    /// A paddle's position, read until two reads agree: APT carries no checksum, so one
    /// damaged reply must not become a silently wrong reading.
    async fn confirmed_position(&mut self, paddle: usize) -> Result<i32, TransportError> {
        let mut last = self.status(paddle).await?.position;
        for _ in 0..=self.policy.retries {
            let now = self.status(paddle).await?.position;
            if now == last {
                return Ok(now);
            }
            last = now;
        }
        Err(TransportError::Malformed(format!(
            "paddle {} positions disagree between reads",
            paddle + 1
        )))
    }

    fn travel_time(&self, from: i32, to: i32) -> Duration {
        Duration::from_secs_f64(apt::travel_seconds(from, to, self.velocity_percent))
            + MOVE_OVERHEAD
    }

    /// Enables `paddle`, moves it to `target` and waits for the completion; the position is then
    /// confirmed by reading it back, and the move is sent again while it is not there.
    async fn move_paddle(&mut self, paddle: usize, target: i32) -> Result<(), PolarizationError> {
        let bit = PADDLE_BITS[paddle];
        let mut data = [0u8; 6];
        data[..2].copy_from_slice(&u16::from(bit).to_le_bytes());
        data[2..].copy_from_slice(&target.to_le_bytes());
        let mut frame = [0u8; apt::HEADER + 6];
        let n = apt::long(id::MOVE_ABSOLUTE, &data, DEVICE, HOST, &mut frame)
            .ok_or_else(|| TransportError::Malformed("move does not fit".into()))?;
        for _ in 0..=self.policy.retries {
            // Enabling has no reply; a move that finds its paddle disabled is refused.
            self.link
                .send(&apt::short(
                    id::MOD_SET_CHANENABLESTATE,
                    [bit, 1],
                    DEVICE,
                    HOST,
                ))
                .await?;
            let travel = self.travel_time(self.positions[paddle], target);
            self.ask(&frame[..n], Expect::Completed(u16::from(bit)), travel)
                .await?;
            self.positions[paddle] = self.confirmed_position(paddle).await?;
            if self.positions[paddle] == target {
                return Ok(());
            }
        }
        Err(TransportError::DeviceReported(format!(
            "paddle {} stays at step {} instead of {target}",
            paddle + 1,
            self.positions[paddle]
        ))
        .into())
    }
}

impl PolarizationController for Mpc320 {
    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn actuators(&self) -> &[ActuatorSpec] {
        &self.actuators
    }

    fn settle_time(&self) -> Duration {
        MOVE_OVERHEAD
    }

    fn settle_time_for(&self, target: &[f64]) -> Duration {
        // Paddles move one after another; `set` leaves those already in place alone.
        target
            .iter()
            .zip(self.positions)
            .filter(|&(&deg, from)| steps(deg) != from)
            .map(|(&deg, from)| self.travel_time(from, steps(deg)))
            .sum()
    }

    async fn set(&mut self, values: &[f64]) -> Result<(), PolarizationError> {
        ActuatorSpec::check_setting(&self.actuators, values)?;
        for (paddle, &deg) in values.iter().enumerate() {
            let target = steps(deg);
            if target != self.positions[paddle] {
                self.move_paddle(paddle, target).await?;
            }
        }
        Ok(())
    }

    async fn get(&mut self) -> Result<Vec<f64>, PolarizationError> {
        let mut out = Vec::with_capacity(3);
        for paddle in 0..3 {
            let position = self.confirmed_position(paddle).await?;
            self.positions[paddle] = position;
            out.push(apt::degrees(position));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_outside_the_travel_are_refused_with_the_paddle_and_value() {
        assert_eq!(checked_position(0, 0).ok(), Some(0));
        assert_eq!(
            checked_position(2, STEPS_PER_TRAVEL).ok(),
            Some(STEPS_PER_TRAVEL)
        );
        for wild in [i32::MIN, -1, STEPS_PER_TRAVEL + 1, i32::MAX] {
            let error = checked_position(1, wild).unwrap_err().to_string();
            assert!(
                error.contains("paddle 2") && error.contains(&wild.to_string()),
                "{error}"
            );
        }
    }
}
