//! Client of our boards' framed protocol: sequence numbers, the identity handshake, and a
//! journal of settings replayed when the board reports it restarted, so a power cycle never
//! leaves a setting silently lost.

use std::time::Duration;

use qkd_protocol::{
    BoardKind, DetectorCommand, ErrorCode, FrameDecoder, Identity, MAX_FRAME, PROTOCOL_VERSION,
    PolarizationCommand, Reply, Request, SourceCommand, encode_frame,
};

use crate::DeviceIdentity;
use crate::error::TransportError;

use super::exchange::{Progress, RetryPolicy, exchange};
use super::link::SerialLink;

/// Which state a request sets, for the journal; `None` for reads.
fn setting_key(request: &Request) -> Option<(u8, u8)> {
    match request {
        Request::Source(SourceCommand::SetEnabled(_)) => Some((0, 0)),
        Request::Source(SourceCommand::Configure(_)) => Some((1, 0)),
        Request::Detector(DetectorCommand::SetEnabled { channel, .. }) => Some((2, *channel)),
        Request::Detector(DetectorCommand::SetBias { channel, .. }) => Some((3, *channel)),
        Request::Detector(DetectorCommand::SetThreshold { channel, .. }) => Some((4, *channel)),
        Request::Detector(DetectorCommand::SetDeadTime { channel, .. }) => Some((5, *channel)),
        Request::Polarization(PolarizationCommand::SetDac(_)) => Some((6, 0)),
        _ => None,
    }
}

/// A connection to one of our boards.
#[derive(Debug)]
pub struct BoardClient {
    link: SerialLink,
    policy: RetryPolicy,
    expected: BoardKind,
    sequence: u16,
    /// As the board last identified itself.
    identity: Identity,
    journal: Vec<((u8, u8), Request)>,
    restarts: u32,
}

impl BoardClient {
    /// Connects and checks that the board is an `expected` board speaking our protocol version.
    pub async fn connect(
        link: SerialLink,
        policy: RetryPolicy,
        expected: BoardKind,
    ) -> Result<Self, TransportError> {
        let mut client = BoardClient {
            link,
            policy,
            expected,
            sequence: 0,
            // Replaced by the handshake below before the client is handed out.
            identity: Identity {
                board: expected,
                serial: 0,
                firmware: [0; 3],
                protocol: PROTOCOL_VERSION,
                boot: 0,
            },
            journal: Vec::new(),
            restarts: 0,
        };
        client.identify().await?;
        Ok(client)
    }

    /// The board's identity as an operator sees it.
    pub fn device_identity(&self) -> DeviceIdentity {
        let id = &self.identity;
        DeviceIdentity {
            vendor: "qkd-node".into(),
            model: format!("{:?} board", id.board),
            serial: format!("{:08X}", id.serial),
            firmware: format!("{}.{}.{}", id.firmware[0], id.firmware[1], id.firmware[2]),
        }
    }

    /// Restarts of the board seen (and repaired) since connecting.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// How many times the port was opened.
    pub fn port_opens(&self) -> u64 {
        self.link.opens()
    }

    async fn identify(&mut self) -> Result<(), TransportError> {
        let Reply::Identity(identity) = self.call_once(Request::Identify, Duration::ZERO).await?
        else {
            return Err(TransportError::Malformed(
                "no identity in the handshake reply".into(),
            ));
        };
        if identity.board != self.expected {
            return Err(TransportError::DeviceReported(format!(
                "{} is a {:?} board, not a {:?} board",
                self.link.settings().path.display(),
                identity.board,
                self.expected
            )));
        }
        if identity.protocol != PROTOCOL_VERSION {
            return Err(TransportError::DeviceReported(format!(
                "board speaks protocol version {}, this driver {PROTOCOL_VERSION}",
                identity.protocol
            )));
        }
        self.identity = identity;
        Ok(())
    }

    /// One request, retried per the policy; `extra_wait` is time the command itself takes.
    async fn call_once(
        &mut self,
        request: Request,
        extra_wait: Duration,
    ) -> Result<Reply, TransportError> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut frame = [0u8; MAX_FRAME];
        let len = encode_frame(sequence, &request, &mut frame)
            .map_err(|e| TransportError::Malformed(format!("cannot encode request: {e}")))?;
        let mut decoder = FrameDecoder::new();
        exchange(
            &mut self.link,
            &self.policy,
            &frame[..len],
            extra_wait,
            |received| {
                let mut progress = Progress::More;
                for byte in received.drain(..) {
                    match decoder.push::<Reply>(byte) {
                        Some(Ok((seq, reply))) if seq == sequence => {
                            progress = Progress::Done(reply);
                        }
                        // A late reply to an abandoned request.
                        Some(Ok(_)) | None => {}
                        Some(Err(e)) => {
                            progress = Progress::Failed(TransportError::Malformed(e.to_string()));
                        }
                    }
                    if !matches!(progress, Progress::More) {
                        break;
                    }
                }
                progress
            },
        )
        .await
    }

    /// Sends `request`; if the board restarted meanwhile, re-identifies, replays the settings
    /// journal, and sends it again. Error replies are returned for the caller to type.
    pub async fn request(
        &mut self,
        request: Request,
        extra_wait: Duration,
    ) -> Result<Reply, TransportError> {
        let mut reply = self.call_once(request, extra_wait).await?;
        if reply == Reply::Error(ErrorCode::Restarted) {
            self.restarts += 1;
            tracing::warn!(port = %self.link.settings().path.display(), "board restarted; restoring its settings");
            self.identify().await?;
            for (_, setting) in self.journal.clone() {
                if let Reply::Error(code) = self.call_once(setting, Duration::ZERO).await? {
                    return Err(TransportError::DeviceReported(format!(
                        "restoring {setting:?} after a restart: {code:?}"
                    )));
                }
            }
            reply = self.call_once(request, extra_wait).await?;
            if reply == Reply::Error(ErrorCode::Restarted) {
                return Err(TransportError::Disconnected(
                    "the board keeps restarting".into(),
                ));
            }
        }
        if let Some(key) = setting_key(&request)
            && !matches!(reply, Reply::Error(_))
        {
            self.journal.retain(|(k, _)| *k != key);
            self.journal.push((key, request));
        }
        Ok(reply)
    }
}
