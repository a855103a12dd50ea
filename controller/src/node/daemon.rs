//! `qkd node`: one node of a link, running until it is told to stop.
//!
//! Alice listens and answers; Bob connects and drives. Both keep their state in the store of
//! their state directory, so a node restarted after a crash goes on where its journal says: no
//! pad twice, no key lost, held keys settled on reconnection. A peer that goes away is waited for
//! (Bob reconnects with backoff, Alice accepts again); every connection starts a fresh pattern
//! (BB84), which Bob's slot recovery finds by its marker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use qkd_calibration::state::PolarizationCalibration;
use qkd_drivers::serial::{DetectorNominals, DeviceConfig, DeviceKind};
use qkd_drivers::{
    ChannelRole, IntensityClass, PolarizationController, SinglePhotonDetectors, TaggerChannel,
    TimeTagger, WcpSettings, WcpSource,
};
use qkd_kme::Kme;
use qkd_kme::link::Side;
use qkd_postprocess::auth::{AuthState, Role};
use qkd_postprocess::hybrid::HybridSigner;
use qkd_postprocess::slots::{SlotConfig, SlotRecovery};
use qkd_runtime::channel::tcp::TcpTransport;
use qkd_runtime::channel::{Deadlines, Peer};
use qkd_runtime::error::{ErrorKind, SessionError};
use qkd_runtime::events::{Events, NodeEvent};
use qkd_runtime::messages::Message;
use qkd_runtime::randomness::ProtocolRng;
use qkd_runtime::session::{Measurer, Preparer};
use qkd_runtime::sources::BatchBudget;
use qkd_runtime::sources::bb84::{PatternRecords, TaggedDetections};
use qkd_runtime::sources::bbm92::{NodeA, NodeB};
use qkd_runtime::tracking::{LinkTracking, TrackingStart};
use qkd_store::Store;
use qkd_units::{MeanPhotonNumber, Probability};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::config::{
    Devices, Endpoint, ListedDevices, NodeConfig, NodeProtocol, NodeRole, SourceSettings,
    TaggerSource,
};
use super::secrets;
use super::status::{CALIBRATION_KEY, CONTROL_SOCKET, NodeState, StatusBoard, serve_control};
use super::tagger::Taggers;
use crate::sim::BenchDescription;

/// First wait before trying the peer again; doubled up to the configured most.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long a stopping node gives the session in progress to end cleanly.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A node's devices one by one (a bench's read from its description), and the source's pulse
/// rate and slots per sync when known.
fn device_set(config: &NodeConfig) -> Result<(ListedDevices, Option<(f64, u64)>)> {
    Ok(match &config.devices {
        Devices::Emulated(dir) => {
            let bench = BenchDescription::read(dir)?;
            if bench.protocol != config.protocol {
                bail!(
                    "devices.emulated: the bench runs {:?}, the node {:?}",
                    bench.protocol,
                    config.protocol
                );
            }
            let source = bench.source.map(|port| {
                let mut source = DeviceConfig::new(DeviceKind::SourceBoard, port);
                source.repetition_rate_hz = bench.repetition_rate_hz;
                source
            });
            let devices = ListedDevices {
                source,
                detectors: bench
                    .detectors
                    .map(|port| DeviceConfig::new(DeviceKind::DetectorBoard, port)),
                tagger: bench.tag_streams.get(config.role.name()).map(|address| {
                    TaggerSource::Stream {
                        address: address.clone(),
                        frames_in_flight: bench.frames_in_flight,
                    }
                }),
                polarization_controller: bench
                    .polarization_controller
                    .map(|device| DeviceConfig::new(device.kind, device.port)),
            };
            (devices, bench.repetition_rate_hz.zip(bench.sync_divider))
        }
        Devices::Listed(listed) => (
            ListedDevices::clone(listed),
            config.source.as_ref().and_then(|s| s.clock),
        ),
    })
}

/// The source's settings in the drivers' terms.
fn wcp_settings(source: &SourceSettings) -> Result<WcpSettings> {
    let intensities = source
        .classes
        .iter()
        .map(|&(mu, p)| {
            Ok(IntensityClass {
                mean_photon_number: MeanPhotonNumber::new(mu)?,
                probability: Probability::new(p)?,
            })
        })
        .collect::<Result<Vec<_>, qkd_units::RangeError>>()
        .map_err(|e| anyhow::anyhow!("source.intensities: {e}"))?;
    Ok(WcpSettings {
        intensities,
        basis_z_probability: Probability::new(source.basis_z_probability)
            .map_err(|e| anyhow::anyhow!("source.basis_z_probability: {e}"))?,
        reference_share: Probability::new(source.reference_share)
            .map_err(|e| anyhow::anyhow!("source.reference_share: {e}"))?,
    })
}

/// Slot recovery for a tagger whose channels say where the sync, detectors and marker are.
fn slot_recovery(channels: &[TaggerChannel], rate: (f64, u64)) -> Result<SlotRecovery> {
    let mut config = SlotConfig::standard(rate.0, rate.1);
    for channel in channels {
        match channel.role {
            ChannelRole::Sync => config.sync_channel = channel.index,
            ChannelRole::Detector(d) if d < 4 => {
                config.detector_channels[usize::from(d)] = channel.index;
            }
            ChannelRole::Marker => config.marker_channel = Some(channel.index),
            ChannelRole::Detector(_) | ChannelRole::Other => {}
        }
    }
    if config.marker_channel.is_none() {
        bail!(
            "devices.tagger: no marker input, so slots cannot be numbered as the source's pattern"
        );
    }
    Ok(SlotRecovery::new(config)?)
}

/// The running node's shared parts.
struct Node {
    config: NodeConfig,
    store: Store,
    events: Events,
    board: StatusBoard,
    stop: watch::Receiver<bool>,
}

impl Node {
    /// A peer over `transport`, from the journalled authentication state.
    fn peer(&self, transport: TcpTransport) -> Result<Peer<TcpTransport, Message>> {
        let role = auth_role(self.config.role);
        let state = self
            .store
            .auth_state()?
            .context("the store has no authentication state")?;
        let mut peer = Peer::with_state(
            transport.with_latency(self.config.one_way_delay),
            state,
            role,
        )
        .with_journal(self.store.journal())
        .with_deadlines(Deadlines {
            receive: self.config.receive_timeout,
            send: self.config.receive_timeout,
        });
        if let Some((identity, peer_key)) = &self.config.hybrid {
            let own = secrets::identity(identity)?;
            let public = std::fs::read(peer_key)
                .with_context(|| format!("reading {}", peer_key.display()))?;
            peer = peer.with_hybrid(HybridSigner::new(own, &public, role)?);
        }
        Ok(peer)
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits until told to stop.
    async fn stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// Bob connects (the channel's initiator); Alice accepts.
fn auth_role(role: NodeRole) -> Role {
    match role {
        NodeRole::Alice => Role::Responder,
        NodeRole::Bob => Role::Initiator,
    }
}

/// What to do after a session ended with `result`.
fn after_session(result: Result<(), SessionError>) -> Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) => match e.kind() {
            ErrorKind::Reconnect | ErrorKind::Device | ErrorKind::Block => {
                eprintln!("node: session ended: {e}; trying again");
                Ok(false)
            }
            ErrorKind::Stop => Err(anyhow::Error::from(e).context("the node cannot go on")),
        },
    }
}

/// Runs the node of `config` until `stop` says so.
pub async fn run(config: NodeConfig, stop: watch::Receiver<bool>) -> Result<()> {
    let store = Store::open(&config.state_dir)?;
    check_identity(&config, &store)?;
    if store.auth_state()?.is_none() {
        let secret = secrets::read_secret(&config.secret, 64, true)?;
        store.init_auth(&AuthState::from_secret(&secret, auth_role(config.role))?)?;
    }
    let events = Events::default();
    let board = StatusBoard::new(config.role, &config.node_id);
    tokio::spawn(board.clone().follow(events.subscribe()));
    tokio::spawn(log_events(events.subscribe()));
    let control = config.state_dir.join(CONTROL_SOCKET);
    let control_task = {
        let (board, store, control) = (board.clone(), store.clone(), control.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_control(&control, board, store).await {
                eprintln!("node: control socket: {e:#}");
            }
        })
    };
    // Key delivery runs beside the link for as long as the node does.
    let _kme = match &config.kme {
        Some(settings) => {
            let side = match config.role {
                NodeRole::Alice => Side::Sequencer,
                NodeRole::Bob => Side::Follower,
            };
            let kme = Kme::start(settings, side, store.clone()).await?;
            eprintln!(
                "node: KME {} serving ETSI GS QKD 014 on https://{}",
                kme.name, kme.address
            );
            Some(kme)
        }
        None => None,
    };
    let node = Node {
        config,
        store,
        events,
        board,
        stop,
    };
    let result = match node.config.role {
        NodeRole::Alice => run_alice(&node).await,
        NodeRole::Bob => run_bob(&node).await,
    };
    node.board.set(NodeState::Stopped, false);
    control_task.abort();
    let _ = std::fs::remove_file(&control);
    result
}

/// One line on stderr per block and per resynchronisation, for the operator's log.
async fn log_events(mut events: tokio::sync::broadcast::Receiver<NodeEvent>) {
    loop {
        match events.recv().await {
            Ok(NodeEvent::Block { id, report }) => match &report.aborted {
                None => eprintln!(
                    "node: block {} committed: {} secret bits ({} key bits, {} disclosed)",
                    id.unwrap_or_default(),
                    report.secret_bits,
                    report.key_bits,
                    report.disclosed_bits
                ),
                Some(reason) => eprintln!(
                    "node: block {} gave no key: {reason}",
                    id.unwrap_or_default()
                ),
            },
            Ok(NodeEvent::Resynchronised { reason }) => {
                eprintln!("node: channel resynchronised after: {reason}");
            }
            Ok(NodeEvent::Alarm(alarm)) => eprintln!("node: ALARM {alarm:?}"),
            Ok(NodeEvent::Tracking(state)) => eprintln!("node: polarization tracking: {state:?}"),
            Ok(NodeEvent::Batch { .. })
            | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Least wall time between two saves of the calibration.
const CALIBRATION_SAVE_EVERY: Duration = Duration::from_secs(5);

/// Runs `prepare` until it succeeds, waiting longer after each failure: a device or peer that
/// is not up yet, or busy, comes back, and the operator reads why meanwhile. `None` once the
/// node is told to stop.
async fn until_ready<T, F: Future<Output = Result<T>>>(
    node: &Node,
    what: &str,
    mut prepare: impl FnMut() -> F,
) -> Option<T> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match prepare().await {
            Ok(ready) => return Some(ready),
            Err(e) => eprintln!("node: {what}: {e:#}; retrying in {backoff:?}"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = node.stopped() => return None,
        }
        backoff = (backoff * 2).min(node.config.reconnect_max);
    }
}

/// Opens Bob's detectors and arms every channel (detector boards keep them disarmed from
/// power-on).
async fn arm_detectors(config: &DeviceConfig) -> Result<()> {
    let mut detectors = config
        .open_detectors(DetectorNominals::default())
        .await
        .context("opening the detectors")?;
    for channel in 0..detectors.channels().len() {
        detectors
            .set_enabled(channel, true)
            .await
            .with_context(|| format!("arming detector channel {channel}"))?;
    }
    Ok(())
}

/// Bob's polarization tracking of the controller in his light path, starting from the
/// calibration the store holds for it; the calibration is saved as it changes.
async fn start_tracking(
    node: &Node,
    device: &DeviceConfig,
    in_flight: u32,
) -> Result<LinkTracking> {
    let controller = device
        .open_polarization()
        .await
        .context("opening the polarization controller")?;
    let origin = node.config.state_dir.join(CALIBRATION_KEY);
    let saved = match node.store.meta(CALIBRATION_KEY)? {
        Some(text) => match PolarizationCalibration::parse(
            &text,
            &origin,
            controller.identity(),
            controller.actuators().len(),
        ) {
            Ok(saved) => Some(saved),
            Err(e) => {
                eprintln!("node: {e}; aligning from scratch");
                None
            }
        },
        None => None,
    };
    let tracking = LinkTracking::start(
        controller,
        TrackingStart {
            saved,
            events: node.events.clone(),
            in_flight,
        },
    );
    let mut calibration = tracking.calibration();
    let store = node.store.clone();
    tokio::spawn(async move {
        while calibration.changed().await.is_ok() {
            save_calibration(&store, &mut calibration);
            tokio::time::sleep(CALIBRATION_SAVE_EVERY).await;
        }
        // The tracker has stopped: what it published last.
        save_calibration(&store, &mut calibration);
    });
    Ok(tracking)
}

/// Saves the latest calibration `published`, if any.
fn save_calibration(
    store: &Store,
    published: &mut watch::Receiver<Option<PolarizationCalibration>>,
) {
    let text = published
        .borrow_and_update()
        .as_ref()
        .map(PolarizationCalibration::to_json);
    if let Some(text) = text
        && let Err(e) = store.set_meta(CALIBRATION_KEY, &text)
    {
        eprintln!("node: saving the polarization calibration: {e:#}");
    }
}

/// A store belongs to one node: refuse to run another role or protocol on it.
fn check_identity(config: &NodeConfig, store: &Store) -> Result<()> {
    for (name, value) in [
        ("role", config.role.name()),
        (
            "protocol",
            match config.protocol {
                NodeProtocol::Bb84 => "bb84",
                NodeProtocol::Bbm92 => "bbm92",
            },
        ),
    ] {
        match store.meta(name)? {
            Some(stored) if stored != value => bail!(
                "{}: this state belongs to a node with {name} {stored}, not {value}",
                config.state_dir.display()
            ),
            Some(_) => {}
            None => store.set_meta(name, value)?,
        }
    }
    store.set_meta("node_id", &config.node_id)?;
    Ok(())
}

async fn run_alice(node: &Node) -> Result<()> {
    let Endpoint::Listen(address) = &node.config.endpoint else {
        bail!("network.listen: Alice listens");
    };
    let (devices, _) = device_set(&node.config)?;
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("network.listen: {address}"))?;
    let mut preparer = Preparer::new(node.config.blocks.clone(), node.events.clone())?;
    // BB84: Alice's source, configured once; BBM92: her tagger (node B of the pair link).
    let mut source = match node.config.protocol {
        NodeProtocol::Bb84 => {
            let config = devices
                .source
                .as_ref()
                .context("devices: Alice needs a source")?;
            let settings = wcp_settings(
                node.config
                    .source
                    .as_ref()
                    .context("source: settings needed")?,
            )?;
            let prepared = until_ready(node, "preparing the source", || async {
                let mut source = config.open_source().await.context("opening the source")?;
                source
                    .configure(&settings)
                    .await
                    .context("configuring the source")?;
                source
                    .set_enabled(true)
                    .await
                    .context("enabling the source")?;
                Ok(source)
            });
            let Some(source) = prepared.await else {
                return Ok(());
            };
            Some(source)
        }
        NodeProtocol::Bbm92 => None,
    };
    let mut taggers = match (&source, devices.tagger) {
        (None, Some(tagger)) => Some(Taggers::open(tagger, &node.store)?),
        (None, None) => bail!("devices: Alice's tagger"),
        (Some(_), _) => None,
    };
    let mut sink = node.store.clone();
    loop {
        node.board.set(NodeState::Connecting, false);
        let stream = tokio::select! {
            accepted = listener.accept() => accepted?.0,
            () = node.stopped() => return Ok(()),
        };
        let mut peer = node.peer(TcpTransport::new(stream))?;
        node.board.set(NodeState::Generating, true);
        let session = async {
            preparer.new_pattern();
            if let Some(source) = &mut source {
                // A fresh pattern for every connection: Bob numbers slots from its marker.
                let rate = source.repetition_rate().get();
                let mut records = PatternRecords::start(source).await?.paced(rate);
                Ok::<_, anyhow::Error>(preparer.run(&mut peer, &mut records, &mut sink).await)
            } else if let Some(taggers) = &mut taggers {
                let mut node_b = NodeB::new(taggers.next().await?);
                let ended = preparer.run(&mut peer, &mut node_b, &mut sink).await;
                taggers.put_back(node_b.into_tagger());
                Ok(ended)
            } else {
                bail!("devices: Alice has neither a source nor a tagger")
            }
        };
        let ended = tokio::select! {
            ended = session => ended?,
            () = node.stopped() => return Ok(()),
        };
        let finished = after_session(ended)?;
        if let Some(taggers) = &taggers
            && taggers.is_recording()
            && (finished || taggers.ended())
        {
            // Bob cannot replay his recording of this run again, nor she hers.
            eprintln!("node: the recorded link is over: stopping");
            return Ok(());
        }
    }
}

/// The controller Bob tracks with and the frames his tag stream holds in flight, if he tracks.
fn tracked_controller(
    config: &NodeConfig,
    devices: &ListedDevices,
    tagger: &TaggerSource,
) -> Result<Option<(DeviceConfig, u32)>> {
    if !config.tracking {
        return Ok(None);
    }
    let controller = devices.polarization_controller.clone().context(
        "tracking.enabled: the bench has no polarization controller in the light path \
         (light_path)",
    )?;
    let in_flight = match tagger {
        TaggerSource::Stream {
            frames_in_flight, ..
        } => *frames_in_flight,
        TaggerSource::Recording { .. } => None,
    }
    .context(
        "tracking.enabled: Bob's tag stream does not bound the frames in flight \
         (devices.tagger.frames_in_flight)",
    )?;
    Ok(Some((controller, in_flight)))
}

async fn run_bob(node: &Node) -> Result<()> {
    let Endpoint::Connect(address) = &node.config.endpoint else {
        bail!("network.peer: Bob connects");
    };
    let (devices, rate) = device_set(&node.config)?;
    let tagger = devices.tagger.clone().context("devices: Bob's tagger")?;
    let tracked = tracked_controller(&node.config, &devices, &tagger)?;
    let mut taggers = Taggers::open(tagger, &node.store)?;
    if let Some(config) = &devices.detectors
        && until_ready(node, "arming the detectors", || arm_detectors(config))
            .await
            .is_none()
    {
        return Ok(());
    }
    let mut tracking = None;
    let stop_flag = Arc::new(AtomicBool::new(false));
    let mut measurer = Measurer::new(node.config.blocks.clone(), node.events.clone());
    let mut sink = node.store.clone();
    while !node.stopping() {
        node.board.set(NodeState::Connecting, false);
        if let Some((controller, in_flight)) = &tracked
            && tracking.is_none()
        {
            // At start, and after tracking failed: from the calibration saved last.
            let started = until_ready(node, "starting polarization tracking", || {
                start_tracking(node, controller, *in_flight)
            });
            let Some(started) = started.await else { break };
            tracking = Some(started);
        }
        // The tagger first: the marker of the pattern Alice starts on connection must not pass
        // before Bob reads.
        let connected = until_ready(node, "connecting", || async {
            let fresh = taggers.connect().await?;
            let stream = TcpStream::connect(address)
                .await
                .with_context(|| format!("connecting to the peer at {address}"))?;
            anyhow::Ok((fresh, stream))
        });
        let Some((fresh, stream)) = connected.await else {
            break;
        };
        let tagger = match fresh {
            Some(stream) => stream,
            None => taggers.recording()?,
        };
        let mut peer = node.peer(TcpTransport::new(stream))?;
        node.board.set(NodeState::Generating, true);
        let budget = BatchBudget::until(Arc::clone(&stop_flag));
        // The session ends here, giving the tagger back.
        let ended = {
            let session = async {
                match node.config.protocol {
                    NodeProtocol::Bb84 => {
                        let rate = rate.context("devices: the source's rate is unknown")?;
                        let slots = slot_recovery(tagger.channels(), rate)?;
                        let mut detections =
                            TaggedDetections::new(tagger, slots, budget, ProtocolRng::from_os()?);
                        if let Some(tracking) = tracking.take() {
                            detections = detections.with_tracking(tracking);
                        }
                        let ended = measurer.run(&mut peer, &mut detections, &mut sink).await;
                        // The tracker stays aligned across connections.
                        tracking = detections.take_tracking();
                        Ok::<_, anyhow::Error>(ended)
                    }
                    NodeProtocol::Bbm92 => {
                        let mut node_a = NodeA::new(tagger, budget);
                        let ended = measurer.run(&mut peer, &mut node_a, &mut sink).await;
                        taggers.put_back(node_a.into_tagger());
                        Ok(ended)
                    }
                }
            };
            tokio::pin!(session);
            tokio::select! {
                ended = &mut session => ended?,
                () = node.stopped() => {
                    // Finish the batch (and any block it completes), tell Alice, then stop.
                    stop_flag.store(true, Ordering::SeqCst);
                    match tokio::time::timeout(STOP_GRACE, &mut session).await {
                        Ok(ended) => ended?,
                        Err(_) => return Ok(()),
                    }
                }
            }
        };
        let finished = after_session(ended)?;
        if taggers.ended() {
            eprintln!("node: the recording is at its end: stopping");
            break;
        }
        if finished {
            break;
        }
    }
    if let Some(tracking) = &tracking {
        // The periodic save may be a few seconds behind.
        save_calibration(&node.store, &mut tracking.calibration());
    }
    Ok(())
}
