//! What a running node says about itself: a status kept up to date from its events, served as
//! JSON on a Unix socket in its state directory (`control.sock`), and the same figures read from
//! the store when the node is not running.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, Result};
use qkd_calibration::state::PolarizationCalibration;
use qkd_postprocess::auth::AuthState;
use qkd_runtime::events::{NodeEvent, TrackingState};
use qkd_store::Store;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;

use super::config::NodeRole;

/// File name of the control socket in the state directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// Store key of Bob's polarization calibration.
pub const CALIBRATION_KEY: &str = "polarization_calibration";

/// What the node is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Waiting for the peer (or the devices).
    Connecting,
    /// Checking a saved polarization calibration against the link.
    Calibrating,
    /// Aligning the polarization from scratch; batches held.
    Aligning,
    /// Making keys.
    Generating,
    /// Key generation paused (tracking far from its floor).
    Paused,
    /// Not running.
    Stopped,
}

/// Authentication figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AuthFigures {
    /// Pad bits used (or skipped) since the secret was provisioned: only ever grows.
    pub pad_bits_used: u64,
    /// Pad bits left for seals and checks.
    pub pad_bits_left: u64,
}

impl AuthFigures {
    fn of(state: &AuthState) -> Self {
        // The two 128-bit hash keys are counted as spent from the start; they are not pads.
        AuthFigures {
            pad_bits_used: state.spent_bits().saturating_sub(256),
            pad_bits_left: state.pad_bits_left(),
        }
    }
}

/// Bob's saved polarization calibration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolarizationFigures {
    /// The aligned controller setting, device units.
    pub setting: Vec<f64>,
    /// The tracker's cost floor at the last save.
    pub floor: Option<f64>,
    /// When it was saved, seconds since the Unix epoch.
    pub saved_unix_s: u64,
}

/// The status `qkd node status --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    /// alice or bob.
    pub role: &'static str,
    /// The node's name.
    pub node_id: String,
    /// What it is doing.
    pub state: NodeState,
    /// Connected to its peer.
    pub peer_connected: bool,
    /// Blocks ended since start.
    pub blocks: u64,
    /// Of those, without key.
    pub aborted_blocks: u64,
    /// Secret bits committed since start.
    pub secret_bits: u64,
    /// Key-basis error rate of the blocks corrected since start (the measurer's).
    pub qber_z: Option<f64>,
    /// Test-basis error rate of the blocks since start.
    pub qber_x: Option<f64>,
    /// Secret bits committed per second since start.
    pub secret_key_rate_bps: f64,
    /// Keys in the store, committed.
    pub keys_stored: u64,
    /// Keys held, awaiting the peer's word.
    pub keys_held: u64,
    /// Authentication pads.
    pub auth: AuthFigures,
    /// Channel resynchronisations since start.
    pub resyncs: u64,
    /// Tagger batches measured since start (the measurer's).
    pub batches: u64,
    /// Detections announced since start (the measurer's).
    pub detections: u64,
    /// The polarization calibration Bob saved last (tracking), from the store.
    pub polarization: Option<PolarizationFigures>,
    /// Key-basis bits sifted into the pool since start (the measurer's).
    pub sifted_key_bits: u64,
    /// Seconds since start.
    pub uptime_s: f64,
}

/// Running counts, fed by the node's events.
#[derive(Debug)]
struct Counts {
    /// Connecting, generating (connected) or stopped; tracking refines generating.
    state: NodeState,
    tracking: Option<TrackingState>,
    /// The last batch was held (tracking had paused key generation).
    held: bool,
    peer_connected: bool,
    blocks: u64,
    aborted: u64,
    secret_bits: u64,
    corrected: (u64, u64),
    tested: (u64, u64),
    resyncs: u64,
    batches: u64,
    detections: u64,
    sifted_key_bits: u64,
}

impl Counts {
    fn state(&self) -> NodeState {
        if self.state != NodeState::Generating {
            return self.state;
        }
        match self.tracking {
            Some(TrackingState::Calibrating) => NodeState::Calibrating,
            Some(TrackingState::Aligning) => NodeState::Aligning,
            _ if self.held => NodeState::Paused,
            _ => NodeState::Generating,
        }
    }
}

/// The live status of a node.
#[derive(Debug, Clone)]
pub struct StatusBoard {
    role: NodeRole,
    node_id: String,
    started: Instant,
    counts: Arc<Mutex<Counts>>,
}

impl StatusBoard {
    /// A board for a node just started.
    pub fn new(role: NodeRole, node_id: &str) -> Self {
        StatusBoard {
            role,
            node_id: node_id.to_owned(),
            started: Instant::now(),
            counts: Arc::new(Mutex::new(Counts {
                state: NodeState::Connecting,
                tracking: None,
                held: false,
                peer_connected: false,
                blocks: 0,
                aborted: 0,
                secret_bits: 0,
                corrected: (0, 0),
                tested: (0, 0),
                resyncs: 0,
                batches: 0,
                detections: 0,
                sifted_key_bits: 0,
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Counts) -> R) -> R {
        f(&mut self.counts.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sets what the node is doing and whether its peer is there.
    pub fn set(&self, state: NodeState, peer_connected: bool) {
        self.with(|c| {
            c.state = state;
            c.peer_connected = peer_connected;
        });
    }

    /// Follows `events` until the node stops emitting them.
    pub async fn follow(self, mut events: broadcast::Receiver<NodeEvent>) {
        loop {
            match events.recv().await {
                Ok(event) => self.absorb(&event),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn absorb(&self, event: &NodeEvent) {
        self.with(|c| match event {
            NodeEvent::Block { report, .. } => {
                c.blocks += 1;
                if report.aborted.is_some() {
                    c.aborted += 1;
                }
                c.secret_bits += report.secret_bits;
                if report.disclosed_bits > 0 && report.corrected_bits > 0 {
                    c.corrected.0 += report.corrected_bits;
                    c.corrected.1 += report.key_bits as u64;
                }
                c.tested.0 += report.test_errors;
                c.tested.1 += report.test_bits as u64;
            }
            NodeEvent::Resynchronised { .. } => c.resyncs += 1,
            NodeEvent::Batch {
                detections,
                sifted_key_bits,
                held,
            } => {
                c.batches += 1;
                c.detections += detections;
                c.sifted_key_bits += sifted_key_bits;
                c.held = *held;
            }
            NodeEvent::Tracking(state) => c.tracking = Some(*state),
            NodeEvent::Alarm(_) => {}
        });
    }

    /// The status now, with the store's figures.
    pub fn snapshot(&self, store: &Store) -> Result<NodeStatus> {
        let mut status = offline(self.role, &self.node_id, store)?;
        let uptime = self.started.elapsed().as_secs_f64();
        self.with(|c| {
            let rate = |(errors, bits): (u64, u64)| (bits > 0).then(|| errors as f64 / bits as f64);
            status.state = c.state();
            status.peer_connected = c.peer_connected;
            status.blocks = c.blocks;
            status.aborted_blocks = c.aborted;
            status.secret_bits = c.secret_bits;
            status.qber_z = rate(c.corrected);
            status.qber_x = rate(c.tested);
            status.secret_key_rate_bps = c.secret_bits as f64 / uptime.max(1e-9);
            status.resyncs = c.resyncs;
            status.batches = c.batches;
            status.detections = c.detections;
            status.sifted_key_bits = c.sifted_key_bits;
            status.uptime_s = uptime;
        });
        Ok(status)
    }
}

/// The status of a node that is not running, from its store.
pub fn offline(role: NodeRole, node_id: &str, store: &Store) -> Result<NodeStatus> {
    let keys = store.keys()?;
    let auth = store.auth_state()?.map_or(
        AuthFigures {
            pad_bits_used: 0,
            pad_bits_left: 0,
        },
        |s| AuthFigures::of(&s),
    );
    Ok(NodeStatus {
        role: role.name(),
        node_id: node_id.to_owned(),
        state: NodeState::Stopped,
        peer_connected: false,
        blocks: 0,
        aborted_blocks: 0,
        secret_bits: 0,
        qber_z: None,
        qber_x: None,
        secret_key_rate_bps: 0.0,
        keys_stored: keys.iter().filter(|k| k.committed).count() as u64,
        keys_held: keys.iter().filter(|k| !k.committed).count() as u64,
        auth,
        polarization: saved_polarization(store)?,
        resyncs: 0,
        batches: 0,
        detections: 0,
        sifted_key_bits: 0,
        uptime_s: 0.0,
    })
}

/// The saved calibration's figures; none for one the node cannot read either (it aligns from
/// scratch then, and says so in its log), so that status still answers.
fn saved_polarization(store: &Store) -> Result<Option<PolarizationFigures>> {
    let Some(text) = store.meta(CALIBRATION_KEY)? else {
        return Ok(None);
    };
    let Ok(saved) = serde_json::from_str::<PolarizationCalibration>(&text) else {
        return Ok(None);
    };
    Ok(Some(PolarizationFigures {
        setting: saved.setting,
        floor: saved.floor,
        saved_unix_s: saved.saved_unix_s,
    }))
}

/// Answers `status` requests on the control socket at `path` until the task is dropped.
pub async fn serve_control(path: &Path, board: StatusBoard, store: Store) -> Result<()> {
    // A socket left by a node that was killed: nobody answers on it any more.
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("control socket {}", path.display()))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let (board, store) = (board.clone(), store.clone());
        tokio::spawn(async move {
            let _ = answer(stream, &board, &store).await;
        });
    }
}

async fn answer(stream: UnixStream, board: &StatusBoard, store: &Store) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match line.trim() {
            "status" => serde_json::to_string(&board.snapshot(store)?)?,
            other => {
                serde_json::json!({ "error": format!("unknown request {other:?}; try status") })
                    .to_string()
            }
        };
        write.write_all(reply.as_bytes()).await?;
        write.write_all(b"\n").await?;
    }
    Ok(())
}

/// Asks the node whose state directory is `dir` for its status; `None` if it is not running.
pub async fn query(dir: &Path) -> Result<Option<serde_json::Value>> {
    let Ok(stream) = UnixStream::connect(dir.join(CONTROL_SOCKET)).await else {
        return Ok(None);
    };
    let (read, mut write) = stream.into_split();
    write.write_all(b"status\n").await?;
    let mut lines = BufReader::new(read).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .context("the node did not answer its control socket")??
        .context("the node closed its control socket")?;
    Ok(Some(serde_json::from_str(&line)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_answers_over_a_calibration_the_node_would_skip() {
        let dir = std::env::temp_dir().join(format!("qkd-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        store
            .set_meta(CALIBRATION_KEY, "{\"setting\": [1.0,")
            .unwrap();
        let status = offline(NodeRole::Bob, "bob", &store).unwrap();
        assert_eq!(status.polarization, None);
        assert_eq!(status.state, NodeState::Stopped);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
