//! A node's configuration file (TOML): what it is, where its peer and devices are, where it keeps
//! its state. Unknown keys are refused, and every error names the file and the key; paths are
//! relative to the file's directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use qkd_drivers::Pacing;
use qkd_drivers::serial::DeviceConfig;
use qkd_kme::KmeSettings;
use qkd_postprocess::estimate::DecoySettings;
use qkd_runtime::block::BlockSettings;
use qkd_runtime::reconcile::Reconciliation;
use qkd_units::Picoseconds;
use serde::{Deserialize, Serialize};

use crate::flags::key_in_range as in_range;

/// Which side of the link a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Prepares (BB84: drives the source) and answers; listens for the peer.
    Alice,
    /// Measures (BB84: reads the tagger) and drives the protocol; connects to the peer.
    Bob,
}

impl NodeRole {
    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Alice => "alice",
            NodeRole::Bob => "bob",
        }
    }
}

/// The link's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeProtocol {
    /// Decoy-state BB84.
    #[default]
    Bb84,
    /// Entanglement-based BBM92.
    Bbm92,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    role: NodeRole,
    node_id: String,
    state_dir: PathBuf,
    #[serde(default)]
    protocol: NodeProtocol,
    network: RawNetwork,
    auth: RawAuth,
    #[serde(default)]
    blocks: RawBlocks,
    #[serde(default)]
    source: Option<RawSource>,
    #[serde(default)]
    devices: RawDevices,
    #[serde(default)]
    tracking: RawTracking,
    /// Key delivery (ETSI GS QKD 014), when the node serves encryptors.
    #[serde(default)]
    kme: Option<KmeSettings>,
}

/// Polarization tracking (Bob, BB84).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTracking {
    #[serde(default)]
    enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    listen: Option<String>,
    peer: Option<String>,
    #[serde(default)]
    channel_rtt_ms: f64,
    #[serde(default = "default_receive_timeout")]
    receive_timeout_s: f64,
    #[serde(default = "default_reconnect_max")]
    reconnect_max_s: f64,
}

fn default_receive_timeout() -> f64 {
    30.0
}

fn default_reconnect_max() -> f64 {
    10.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    secret: PathBuf,
    #[serde(default)]
    hybrid: bool,
    identity: Option<PathBuf>,
    peer_public_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlocks {
    #[serde(default = "default_block_bits")]
    block_bits: usize,
    #[serde(default = "default_eps_sec")]
    eps_sec: f64,
    #[serde(default = "default_eps_cor")]
    eps_cor: f64,
}

impl Default for RawBlocks {
    fn default() -> Self {
        RawBlocks {
            block_bits: default_block_bits(),
            eps_sec: default_eps_sec(),
            eps_cor: default_eps_cor(),
        }
    }
}

fn default_block_bits() -> usize {
    1_000_000
}

fn default_eps_sec() -> f64 {
    1e-10
}

fn default_eps_cor() -> f64 {
    1e-15
}

/// One intensity class.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    mu: f64,
    probability: f64,
}

/// The weak-coherent source's settings (BB84): Alice configures her source with them, and both
/// nodes estimate with them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    intensities: Vec<RawClass>,
    basis_z_probability: f64,
    #[serde(default)]
    reference_share: f64,
    /// Pulse rate and slots per sync, for devices given one by one (a bench says them itself).
    repetition_rate_hz: Option<f64>,
    sync_divider: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevices {
    /// The directory of a `qkd sim serve` bench: its devices, unless given one by one.
    emulated: Option<PathBuf>,
    source: Option<DeviceConfig>,
    detectors: Option<DeviceConfig>,
    tagger: Option<RawTagger>,
    polarization_controller: Option<DeviceConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
enum RawTagger {
    /// A tag stream (`host:port`), and the most frames it holds in flight, if it is shallow
    /// (what tracking needs to know).
    TagStream {
        address: String,
        frames_in_flight: Option<u32>,
    },
    /// A PicoQuant PTU recording, replayed in batches of `batch_ms` of recording time.
    Ptu {
        path: PathBuf,
        #[serde(default = "real_time")]
        pacing: Pacing,
        #[serde(default = "default_batch_ms")]
        batch_ms: f64,
    },
}

/// A node replays a recording as it was made unless told otherwise.
fn real_time() -> Pacing {
    Pacing::RealTime
}

/// A live stream's frame length, which a replay's batches follow by default.
fn default_batch_ms() -> f64 {
    10.0
}

/// Where a node's time tags come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TaggerSource {
    /// A tag stream (`host:port`).
    Stream {
        /// Its address.
        address: String,
        /// The most frames it holds in flight, when it says.
        frames_in_flight: Option<u32>,
    },
    /// A PTU recording: its detections go into key once, so a node replays it once (BBM92).
    Recording {
        /// The file.
        path: PathBuf,
        /// How its time relates to the wall clock.
        pacing: Pacing,
        /// Recording time per batch: the same at both nodes keeps two recordings in step.
        batch: Picoseconds,
    },
}

/// The source's classes and shares, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    /// Mean photon number and probability of each class, the signal first.
    pub classes: Vec<(f64, f64)>,
    /// Probability of the Z basis.
    pub basis_z_probability: f64,
    /// Share of reference slots.
    pub reference_share: f64,
    /// Pulse rate (Hz) and slots per sync pulse, when the configuration gives them.
    pub clock: Option<(f64, u64)>,
}

/// Where a node's devices are.
#[derive(Debug, Clone, PartialEq)]
pub enum Devices {
    /// A `qkd sim serve` bench's devices, described by its `bench.json`.
    Emulated(PathBuf),
    /// Given one by one.
    Listed(Box<ListedDevices>),
}

/// Devices given one by one.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedDevices {
    /// Alice's source board.
    pub source: Option<DeviceConfig>,
    /// Bob's detector board, armed at start.
    pub detectors: Option<DeviceConfig>,
    /// The node's time tags (Bob's; both nodes' on an entangled link).
    pub tagger: Option<TaggerSource>,
    /// Bob's polarization controller (tracking).
    pub polarization_controller: Option<DeviceConfig>,
}

/// How to reach the peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// Alice listens here.
    Listen(String),
    /// Bob connects here.
    Connect(String),
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Alice or Bob.
    pub role: NodeRole,
    /// The node's name.
    pub node_id: String,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The protocol.
    pub protocol: NodeProtocol,
    /// The peer.
    pub endpoint: Endpoint,
    /// Latency added to the classical channel, both ways: half the configured round trip each.
    pub one_way_delay: Duration,
    /// How long to wait for the peer's next message.
    pub receive_timeout: Duration,
    /// Longest wait between reconnection attempts.
    pub reconnect_max: Duration,
    /// The pre-shared secret's file.
    pub secret: PathBuf,
    /// Hybrid authentication: this node's ML-DSA seed file and the peer's public key file.
    pub hybrid: Option<(PathBuf, PathBuf)>,
    /// What every block is run with.
    pub blocks: BlockSettings,
    /// The source's settings (BB84).
    pub source: Option<SourceSettings>,
    /// The devices.
    pub devices: Devices,
    /// Bob tracks the polarization with the controller in his light path.
    pub tracking: bool,
    /// The KME serving the node's keys, paths resolved.
    pub kme: Option<KmeSettings>,
}

impl NodeConfig {
    /// Reads and validates `file`.
    pub fn load(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the node configuration {}", file.display()))?;
        let raw: RawConfig = toml::from_str(&text)
            .with_context(|| format!("{}: invalid configuration", file.display()))?;
        validate(raw, file).with_context(|| format!("{}", file.display()))
    }
}

fn validate(raw: RawConfig, file: &Path) -> Result<NodeConfig> {
    let base = file.parent().unwrap_or_else(|| Path::new("."));
    let resolve = |p: &Path| base.join(p);
    if raw.node_id.trim().is_empty() || raw.node_id.len() > 64 {
        bail!("node_id: give a name of 1 to 64 characters");
    }
    let endpoint = match (raw.role, raw.network.listen, raw.network.peer) {
        (NodeRole::Alice, Some(listen), None) => Endpoint::Listen(listen),
        (NodeRole::Bob, None, Some(peer)) => Endpoint::Connect(peer),
        (NodeRole::Alice, _, _) => {
            bail!("network: Alice listens: give network.listen (and no network.peer)")
        }
        (NodeRole::Bob, _, _) => {
            bail!("network: Bob connects: give network.peer (and no network.listen)")
        }
    };
    let rtt = in_range(
        "network.channel_rtt_ms",
        raw.network.channel_rtt_ms,
        0.0,
        10_000.0,
        "ms",
    )?;
    let receive = in_range(
        "network.receive_timeout_s",
        raw.network.receive_timeout_s,
        0.1,
        3600.0,
        "s",
    )?;
    let reconnect = in_range(
        "network.reconnect_max_s",
        raw.network.reconnect_max_s,
        0.1,
        3600.0,
        "s",
    )?;
    let hybrid = match (raw.auth.hybrid, raw.auth.identity, raw.auth.peer_public_key) {
        (false, _, _) => None,
        (true, Some(identity), Some(peer)) => Some((resolve(&identity), resolve(&peer))),
        (true, _, _) => {
            bail!("auth: hybrid authentication needs auth.identity and auth.peer_public_key")
        }
    };
    if !(10_000..=100_000_000).contains(&raw.blocks.block_bits) {
        bail!(
            "blocks.block_bits: {} is outside the allowed range [10000, 100000000]",
            raw.blocks.block_bits
        );
    }
    let eps_sec = in_range("blocks.eps_sec", raw.blocks.eps_sec, 1e-30, 0.1, "")?;
    let eps_cor = in_range("blocks.eps_cor", raw.blocks.eps_cor, 1e-30, 0.1, "")?;
    let source = raw.source.as_ref().map(source_settings).transpose()?;
    let decoy = match (raw.protocol, &source) {
        (NodeProtocol::Bb84, Some(s)) => Some(decoys(s, eps_sec, eps_cor)?),
        (NodeProtocol::Bb84, None) => {
            bail!("source: BB84 nodes need the source's settings (both estimate with them)")
        }
        (NodeProtocol::Bbm92, Some(_)) => bail!("source: BBM92 has no weak-coherent source"),
        (NodeProtocol::Bbm92, None) => None,
    };
    let devices = devices(raw.devices, raw.protocol, &resolve)?;
    if raw.tracking.enabled {
        if raw.role != NodeRole::Bob || raw.protocol != NodeProtocol::Bb84 {
            bail!("tracking.enabled: Bob tracks the polarization, on the BB84 link");
        }
        if source.as_ref().is_none_or(|s| s.reference_share <= 0.0) {
            bail!("tracking.enabled: tracking follows reference slots: set source.reference_share");
        }
        if let Devices::Listed(listed) = &devices
            && listed.polarization_controller.is_none()
        {
            bail!("tracking.enabled: give devices.polarization_controller");
        }
    }
    let kme = raw.kme.map(|k| kme(k, base)).transpose()?;
    Ok(NodeConfig {
        role: raw.role,
        node_id: raw.node_id,
        state_dir: resolve(&raw.state_dir),
        protocol: raw.protocol,
        endpoint,
        one_way_delay: Duration::from_secs_f64(rtt / 2e3),
        receive_timeout: Duration::from_secs_f64(receive),
        reconnect_max: Duration::from_secs_f64(reconnect),
        secret: resolve(&raw.auth.secret),
        hybrid,
        blocks: BlockSettings {
            block_bits: raw.blocks.block_bits,
            decoy,
            eps_sec,
            eps_cor,
            reconciliation: Reconciliation::Cascade,
        },
        source,
        devices,
        tracking: raw.tracking.enabled,
        kme,
    })
}

/// The `[kme]` section with its paths resolved, its limits and SAE names checked.
fn kme(raw: KmeSettings, base: &Path) -> Result<KmeSettings> {
    let kme = raw.resolved(base);
    kme.limits()?;
    kme.sae_names()?;
    Ok(kme)
}

fn devices(
    raw: RawDevices,
    protocol: NodeProtocol,
    resolve: &impl Fn(&Path) -> PathBuf,
) -> Result<Devices> {
    Ok(match raw {
        RawDevices {
            emulated: Some(dir),
            source: None,
            detectors: None,
            tagger: None,
            polarization_controller: None,
        } => Devices::Emulated(resolve(&dir)),
        RawDevices {
            emulated: Some(_), ..
        } => bail!("devices: give devices.emulated or the devices one by one, not both"),
        RawDevices {
            emulated: None,
            source,
            detectors,
            tagger,
            polarization_controller,
        } => {
            let tagger = match tagger {
                Some(RawTagger::TagStream {
                    address,
                    frames_in_flight,
                }) => Some(TaggerSource::Stream {
                    address,
                    frames_in_flight,
                }),
                Some(RawTagger::Ptu { .. }) if protocol != NodeProtocol::Bbm92 => bail!(
                    "devices.tagger: a recording is replayed on the entangled link \
                     (protocol = \"bbm92\"); BB84 detections pair with the pattern Alice's \
                     source sends in this run"
                ),
                Some(RawTagger::Ptu {
                    path,
                    pacing,
                    batch_ms,
                }) => Some(TaggerSource::Recording {
                    path: resolve(&path),
                    pacing,
                    batch: Picoseconds(
                        (in_range("devices.tagger.batch_ms", batch_ms, 0.001, 10_000.0, "ms")?
                            * 1e9)
                            .round() as i64,
                    ),
                }),
                None => None,
            };
            Devices::Listed(Box::new(ListedDevices {
                source,
                detectors,
                tagger,
                polarization_controller,
            }))
        }
    })
}

fn source_settings(raw: &RawSource) -> Result<SourceSettings> {
    if raw.intensities.is_empty() || raw.intensities.len() > 4 {
        bail!("source.intensities: give 1 to 4 classes, the signal first");
    }
    let mut classes = Vec::with_capacity(raw.intensities.len());
    for (i, class) in raw.intensities.iter().enumerate() {
        let mu = in_range(
            &format!("source.intensities[{i}].mu"),
            class.mu,
            0.0,
            10.0,
            "photons",
        )?;
        let p = in_range(
            &format!("source.intensities[{i}].probability"),
            class.probability,
            0.0,
            1.0,
            "",
        )?;
        classes.push((mu, p));
    }
    let total: f64 = classes.iter().map(|c| c.1).sum();
    if (total - 1.0).abs() > 1e-9 {
        bail!("source.intensities: the class probabilities sum to {total}, not 1");
    }
    Ok(SourceSettings {
        classes,
        basis_z_probability: in_range(
            "source.basis_z_probability",
            raw.basis_z_probability,
            0.0,
            1.0,
            "",
        )?,
        reference_share: in_range("source.reference_share", raw.reference_share, 0.0, 0.5, "")?,
        clock: match (raw.repetition_rate_hz, raw.sync_divider) {
            (Some(rate), Some(divider)) if (1..=1 << 30).contains(&divider) => Some((
                in_range("source.repetition_rate_hz", rate, 1.0, 1e11, "Hz")?,
                divider,
            )),
            (None, None) => None,
            _ => bail!("source: give repetition_rate_hz and sync_divider (1 to 2^30) together"),
        },
    })
}

fn decoys(source: &SourceSettings, eps_sec: f64, eps_cor: f64) -> Result<DecoySettings> {
    let [signal, decoy, weak] = source.classes[..] else {
        bail!("source.intensities: the decoy analysis needs exactly three classes");
    };
    let settings = DecoySettings {
        mu: [signal.0, decoy.0, weak.0],
        p: [signal.1, decoy.1, weak.1],
        eps_sec,
        eps_cor,
    };
    settings
        .validate()
        .context("source.intensities: the classes do not fit the decoy analysis")?;
    Ok(settings)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A BBM92 Bob replaying `ptu.ptu`, with `extra` appended.
    const BOB: &str = "role = \"bob\"\nnode_id = \"bob\"\nstate_dir = \"state\"\n\
        protocol = \"bbm92\"\n[network]\npeer = \"127.0.0.1:1\"\n[auth]\nsecret = \"s\"\n\
        [devices]\ntagger = { kind = \"ptu\", path = \"ptu.ptu\"";

    fn load(text: &str) -> Result<NodeConfig> {
        let file = Path::new("site/bob.toml");
        let raw: RawConfig = toml::from_str(text)?;
        validate(raw, file)
    }

    #[test]
    fn a_recording_is_a_tagger_for_the_entangled_link_paced_in_real_time_by_default() {
        let config = load(&format!("{BOB} }}\n")).unwrap();
        let Devices::Listed(listed) = config.devices else {
            panic!("devices one by one");
        };
        assert_eq!(
            listed.tagger,
            Some(TaggerSource::Recording {
                path: Path::new("site").join("ptu.ptu"),
                pacing: Pacing::RealTime,
                batch: Picoseconds(10_000_000_000),
            })
        );
        let fast = load(&format!(
            "{BOB}, pacing = \"as-fast-as-possible\", batch_ms = 2.5 }}\n"
        ))
        .unwrap();
        let Devices::Listed(listed) = fast.devices else {
            panic!("devices one by one");
        };
        assert!(matches!(
            listed.tagger,
            Some(TaggerSource::Recording {
                pacing: Pacing::AsFastAsPossible,
                batch: Picoseconds(2_500_000_000),
                ..
            })
        ));
    }

    #[test]
    fn recording_errors_name_the_key() {
        for (text, expected) in [
            (
                format!("{BOB} }}\n").replace("bbm92", "bb84")
                    + "[source]\nintensities = [{ mu = 0.6, probability = 0.6 }, \
                       { mu = 0.2, probability = 0.3 }, { mu = 0.0, probability = 0.1 }]\n\
                       basis_z_probability = 0.8\n",
                "devices.tagger: a recording is replayed on the entangled link",
            ),
            (
                format!("{BOB}, batch_ms = 0 }}\n"),
                "devices.tagger.batch_ms",
            ),
            (
                format!("{BOB}, pacing = \"slow\" }}\n"),
                "unknown variant `slow`",
            ),
            (format!("{BOB}, speed = 1 }}\n"), "unknown field `speed`"),
        ] {
            let error = format!("{:#}", load(&text).unwrap_err());
            assert!(error.contains(expected), "{error}");
        }
    }
}
