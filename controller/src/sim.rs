//! `qkd sim serve`: the emulated bench's devices on pseudo-terminals, for drivers, tests and
//! people with a terminal program; with `--config`, one optical bench for two node processes,
//! run in real time: the devices on pseudo-terminals, each receiver's time tagger as a tag
//! stream, and a `bench.json` that tells the nodes where everything is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use qkd_drivers::TimeTagger;
use qkd_drivers::emulator::{EmulatedBench, Pacing};
use qkd_drivers::serial::DeviceKind;
use qkd_drivers::tag_stream::{self, StreamDepth};
use qkd_firmware_sim::host::{Host, LightPath, SharedBench};
use qkd_firmware_sim::world::{InitialRotation, LinkPreset};
use serde::{Deserialize, Serialize};

use crate::flags::{BenchFlags, in_range, key_in_range};
use crate::node::config::NodeProtocol;

/// Emulated time per tagger batch a bench streams.
pub const STREAM_BATCH: Duration = Duration::from_millis(10);
/// File a bench writes in its directory, for the nodes.
pub const BENCH_FILE: &str = "bench.json";

/// The emulator's commands.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve the boards (source, detectors, epc) and vendor devices (mpc320, oz-epc) on
    /// pseudo-terminals, one symlink per device in --pty-dir, until interrupted.
    Serve(ServeArgs),
}

/// Which served polarization controller is spliced into the fiber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LightPathArg {
    /// Our polarization board.
    Epc,
    /// The OZ Optics EPC driver.
    OzEpc,
    /// The Thorlabs MPC320.
    Mpc320,
}

impl LightPathArg {
    fn light_path(self) -> LightPath {
        match self {
            LightPathArg::Epc => LightPath::Epc,
            LightPathArg::OzEpc => LightPath::OzEpc,
            LightPathArg::Mpc320 => LightPath::Mpc320,
        }
    }

    /// The served device: its kind and the name of its pseudo-terminal.
    fn device(self) -> (DeviceKind, &'static str) {
        match self {
            LightPathArg::Epc => (DeviceKind::PolarizationBoard, "epc"),
            LightPathArg::OzEpc => (DeviceKind::OzEpc, "oz-epc"),
            LightPathArg::Mpc320 => (DeviceKind::Mpc320, "mpc320"),
        }
    }
}

/// A served serial device, as `bench.json` names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchDevice {
    /// What it is.
    pub kind: DeviceKind,
    /// Its pseudo-terminal.
    pub port: PathBuf,
}

/// Flags of `qkd sim serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// A bench file (TOML) for two node processes; the other flags then do not apply.
    #[arg(long, conflicts_with = "pty_dir")]
    pub config: Option<PathBuf>,
    /// Directory for the device links (created if missing).
    #[arg(long, required_unless_present = "config")]
    pub pty_dir: Option<PathBuf>,
    #[command(flatten)]
    pub bench: BenchFlags,
    /// The polarization controller in the light path; the others move nothing optical.
    #[arg(long, value_enum, default_value_t = LightPathArg::Epc)]
    pub light_path: LightPathArg,
    /// Stop after this many seconds instead of waiting for Ctrl-C.
    #[arg(long, allow_negative_numbers = true)]
    pub for_seconds: Option<f64>,
}

pub fn run(command: &SimCommand) -> Result<()> {
    match command {
        SimCommand::Serve(args) => serve(args),
    }
}

/// Waits for Ctrl-C or SIGTERM, or `for_seconds`.
async fn until_stopped(for_seconds: Option<f64>) -> Result<()> {
    match for_seconds {
        Some(seconds) => tokio::time::sleep(Duration::from_secs_f64(seconds)).await,
        None => crate::node::shutdown_signal().await?,
    }
    Ok(())
}

fn serve(args: &ServeArgs) -> Result<()> {
    let stop_after = args
        .for_seconds
        .map(|s| in_range("for-seconds", s, 0.0, 1e7, "s"))
        .transpose()?;
    if let Some(config) = &args.config {
        return serve_bench(config, stop_after);
    }
    let bench = args.bench.validate()?;
    let pty_dir = args.pty_dir.as_deref().unwrap_or(Path::new("."));
    let host = Host::serve(
        pty_dir,
        &bench.spec,
        args.bench.seed,
        args.light_path.light_path(),
    )
    .with_context(|| format!("serving devices in {}", pty_dir.display()))?;
    for device in host.devices() {
        println!(
            "{:<10} {} -> {}",
            device.name(),
            device.link().display(),
            device.pty().unwrap_or_default()
        );
    }
    println!(
        "serving {} km {} bench (seed {}), {:?} in the light path; Ctrl-C stops",
        bench.distance_km,
        bench.preset.name(),
        args.bench.seed,
        args.light_path
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(until_stopped(stop_after))?;
    drop(host);
    Ok(())
}

/// A bench file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBench {
    #[serde(default)]
    protocol: NodeProtocol,
    #[serde(default = "default_preset")]
    preset: String,
    distance_km: f64,
    #[serde(default = "default_seed")]
    seed: u64,
    /// Where the pseudo-terminals and `bench.json` go.
    dir: PathBuf,
    /// Tag stream address of each receiving node: `bob` (BB84), `alice` and `bob` (BBM92).
    tag_streams: BTreeMap<String, String>,
    #[serde(default)]
    drift_rate: f64,
    /// The polarization controller in Bob's light path (BB84): `epc`, `oz-epc`, `mpc320`, or
    /// none (the default: the served controllers move nothing optical). With one, the fiber
    /// starts at a random rotation for Bob to align.
    #[serde(default)]
    light_path: Option<LightPathArg>,
}

fn default_preset() -> String {
    "snspd".into()
}

fn default_seed() -> u64 {
    1
}

/// What a bench tells its nodes (`bench.json` in its directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchDescription {
    /// The link's protocol.
    pub protocol: NodeProtocol,
    /// The source's pulse rate (BB84).
    pub repetition_rate_hz: Option<f64>,
    /// Slots per sync pulse (BB84).
    pub sync_divider: Option<u64>,
    /// The source board's pseudo-terminal (BB84).
    pub source: Option<PathBuf>,
    /// The detector board's pseudo-terminal (BB84): its detectors start disarmed.
    pub detectors: Option<PathBuf>,
    /// Tag stream address of each receiving node.
    pub tag_streams: BTreeMap<String, String>,
    /// Most frames the streams hold in flight (null: deep streams, no useful bound).
    #[serde(default)]
    pub frames_in_flight: Option<u32>,
    /// The polarization controller in Bob's light path (BB84, when the bench has one).
    #[serde(default)]
    pub polarization_controller: Option<BenchDevice>,
}

impl BenchDescription {
    /// Reads the description a bench left in `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let file = dir.join(BENCH_FILE);
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "reading {} (is `qkd sim serve --config` running?)",
                file.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a bench description", file.display()))
    }
}

/// A served bench: the emulation, its devices on pseudo-terminals (BB84), which tagger each node
/// reads, and the source's rate and sync divider (BB84).
type ServedBench = (
    EmulatedBench,
    Option<Host>,
    Vec<(&'static str, usize)>,
    Option<(f64, u64)>,
);

fn build_bench(
    raw: &RawBench,
    preset: LinkPreset,
    distance_km: f64,
    drift: f64,
    dir: &Path,
) -> Result<ServedBench> {
    Ok(match raw.protocol {
        NodeProtocol::Bb84 => {
            let mut spec = preset.spec(distance_km);
            spec.fiber.drift_rad_per_sqrt_s = drift;
            let light_path = raw
                .light_path
                .map_or(LightPath::Epc, LightPathArg::light_path);
            if raw.light_path.is_some() {
                // A controller in the light path has a fiber of unknown rotation to undo.
                spec.receiver.controller = light_path.controller();
                spec.fiber.initial_rotation = InitialRotation::Random;
            }
            let bench = EmulatedBench::prepare_measure(&spec, raw.seed)?;
            let world = bench
                .device_world()
                .context("a prepare-and-measure bench shares its world")?;
            let host = Host::serve_bench(
                &dir.join("ptys"),
                SharedBench::from_shared(world, light_path),
                raw.seed,
            )?;
            let rate = (
                spec.source.rep_rate_hz as f64,
                u64::from(spec.source.sync_divider),
            );
            (bench, Some(host), vec![("bob", 0)], Some(rate))
        }
        NodeProtocol::Bbm92 => {
            let spec = crate::link::bbm92::spec(preset, distance_km);
            let bench = EmulatedBench::entangled(&spec, raw.seed)?;
            (bench, None, vec![("bob", 0), ("alice", 1)], None)
        }
    })
}

/// What `bench.json` tells the nodes of the bench served from `dir` (with its devices on
/// pseudo-terminals when `devices`).
fn describe(
    raw: &RawBench,
    dir: &Path,
    devices: bool,
    rate: Option<(f64, u64)>,
    depth: StreamDepth,
) -> BenchDescription {
    let pty = |name: &str| dir.join("ptys").join(name);
    BenchDescription {
        protocol: raw.protocol,
        repetition_rate_hz: rate.map(|r| r.0),
        sync_divider: rate.map(|r| r.1),
        source: devices.then(|| pty("source")),
        detectors: devices.then(|| pty("detectors")),
        tag_streams: raw.tag_streams.clone(),
        frames_in_flight: depth.frames_in_flight(),
        polarization_controller: raw.light_path.filter(|_| devices).map(|path| {
            let (kind, name) = path.device();
            BenchDevice {
                kind,
                port: pty(name),
            }
        }),
    }
}

/// Serves one bench for two node processes until stopped.
fn serve_bench(file: &Path, stop_after: Option<f64>) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let raw: RawBench =
        toml::from_str(&text).with_context(|| format!("{}: invalid bench file", file.display()))?;
    let dir = file.parent().unwrap_or(Path::new(".")).join(&raw.dir);
    let preset = LinkPreset::from_name(&raw.preset)
        .with_context(|| format!("{}: preset", file.display()))?;
    let distance_km = key_in_range("distance_km", raw.distance_km, 0.0, 20_000.0, "km")
        .with_context(|| file.display().to_string())?;
    let drift = key_in_range("drift_rate", raw.drift_rate, 0.0, 100.0, "rad/√s")
        .with_context(|| file.display().to_string())?;
    let wanted: &[&str] = match raw.protocol {
        NodeProtocol::Bb84 => &["bob"],
        NodeProtocol::Bbm92 => &["alice", "bob"],
    };
    if raw
        .tag_streams
        .keys()
        .map(String::as_str)
        .ne(wanted.iter().copied())
    {
        bail!(
            "{}: tag_streams: give exactly {wanted:?} for {:?}",
            file.display(),
            raw.protocol
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // The nodes find the devices from wherever they run.
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (bench, host, taggers, rate) = build_bench(&raw, preset, distance_km, drift, &dir)?;
        bench.set_pacing(Pacing::RealTime);
        // A controller in the light path is tracked from the stream: keep what is in flight
        // short. Without one, let the world run ahead while a node reconciles.
        let depth = if raw.light_path.is_some() {
            StreamDepth::Shallow
        } else {
            StreamDepth::Deep
        };
        let mut servers = tokio::task::JoinSet::new();
        for (name, node) in taggers {
            let address = &raw.tag_streams[name];
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("tag stream for {name} on {address}"))?;
            let tagger = bench
                .tagger(node, STREAM_BATCH)
                .with_context(|| format!("the bench has no tagger for {name}"))?;
            println!(
                "tag stream {name:<6} {address} ({} channels)",
                tagger.channels().len()
            );
            servers.spawn(tag_stream::serve(listener, tagger, depth));
        }
        if let Some(host) = &host {
            for device in host.devices() {
                println!("{:<10} {}", device.name(), device.link().display());
            }
        }
        let description = describe(&raw, &dir, host.is_some(), rate, depth);
        let bench_file = dir.join(BENCH_FILE);
        std::fs::write(&bench_file, serde_json::to_string_pretty(&description)?)
            .with_context(|| format!("writing {}", bench_file.display()))?;
        println!(
            "serving a {distance_km} km {} {:?} bench (seed {}) in real time; Ctrl-C stops",
            preset.name(),
            raw.protocol,
            raw.seed
        );
        let stopped = tokio::select! {
            stopped = until_stopped(stop_after) => stopped,
            // A stream serves until its tagger fails: whichever ends first ends the bench.
            Some(ended) = servers.join_next() => match ended {
                Ok(Err(e)) => Err(anyhow::Error::from(e).context("a tag stream failed")),
                Err(e) => Err(anyhow::Error::from(e)),
                Ok(Ok(())) => Err(anyhow::anyhow!("a tag stream ended")),
            },
        };
        let _ = std::fs::remove_file(&bench_file);
        drop(host);
        stopped
    })
}
