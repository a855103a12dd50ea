//! `qkd link`: two nodes in one process against the emulated bench, through slot recovery (or
//! coincidences) and the whole post-processing pipeline over the authenticated in-memory
//! channel, emulating the link as fast as the machine allows.

mod bb84;
mod bbm92;
mod report;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use qkd_firmware_sim::world::LinkPreset;
use qkd_postprocess::estimate::DecoySettings;
use rand::{SeedableRng, TryRng};

use crate::channel::Peer;
use crate::channel::memory::MemoryTransport;
use crate::flags::in_range;
use crate::node::block::{BlockOutcome, BlockSettings};
use crate::node::session::{
    MeasurementSource, MeasurerProgress, PreparationSource, run_measurer, run_preparer,
};
use crate::progress::Progress;

pub use report::LinkReport;
use report::RunFigures;

/// Bytes of pre-shared authentication secret both nodes start with.
pub const PRE_SHARED_SECRET_BYTES: usize = 4096;
/// Emulated time per tagger batch.
pub const BATCH: Duration = Duration::from_millis(10);

/// Which protocol the link runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Decoy-state BB84 with a weak-coherent source at Alice.
    Bb84,
    /// Entanglement-based BBM92 with a pair source in the middle.
    Bbm92,
}

/// Flags of `qkd link`.
#[derive(Debug, Clone, clap::Args)]
pub struct LinkArgs {
    /// Bench preset: gys, snspd, ingaas-free or ingaas-gated (detectors for BBM92 too).
    #[arg(long, default_value = "snspd")]
    pub preset: String,
    /// Fiber length in km (BBM92: total, source in the middle).
    #[arg(long, default_value_t = 50.0, allow_negative_numbers = true)]
    pub distance_km: f64,
    /// Emulated link time in seconds.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub seconds: f64,
    /// Signal mean photon number (BB84).
    #[arg(long, allow_negative_numbers = true)]
    pub mu: Option<f64>,
    /// Share of pulses an intercept-resend eavesdropper handles.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub eve_fraction: f64,
    /// Seed of every emulated choice: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Key-basis bits per post-processing block.
    #[arg(long, default_value_t = 1_000_000)]
    pub block_bits: usize,
    /// Secrecy parameter ε_sec.
    #[arg(long, default_value_t = 1e-10)]
    pub eps_sec: f64,
    /// Correctness parameter ε_cor.
    #[arg(long, default_value_t = 1e-15)]
    pub eps_cor: f64,
    /// Protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Bb84)]
    pub protocol: Protocol,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The validated run parameters.
#[derive(Debug, Clone)]
struct Run {
    preset: LinkPreset,
    distance_km: f64,
    seconds: f64,
    eve_fraction: f64,
    seed: u64,
    settings: BlockSettings,
}

fn validate(args: &LinkArgs) -> Result<Run> {
    let preset = LinkPreset::from_name(&args.preset)?;
    let distance_km = in_range("distance-km", args.distance_km, 0.0, 20_000.0, "km")?;
    let seconds = in_range("seconds", args.seconds, 1e-3, 1e5, "s")?;
    let eve_fraction = in_range("eve-fraction", args.eve_fraction, 0.0, 1.0, "")?;
    let eps_sec = in_range("eps-sec", args.eps_sec, 1e-30, 0.1, "")?;
    let eps_cor = in_range("eps-cor", args.eps_cor, 1e-30, 0.1, "")?;
    if !(10_000..=100_000_000).contains(&args.block_bits) {
        bail!(
            "--block-bits: {} is outside the allowed range [10000, 100000000]",
            args.block_bits
        );
    }
    if let Some(mu) = args.mu {
        in_range("mu", mu, 0.0, 100.0, "")?;
    }
    Ok(Run {
        preset,
        distance_km,
        seconds,
        eve_fraction,
        seed: args.seed,
        settings: BlockSettings {
            block_bits: args.block_bits,
            decoy: None,
            eps_sec,
            eps_cor,
        },
    })
}

/// Decoy settings from the source's intensity classes (signal, decoy, weak decoy or vacuum).
fn decoy_settings(mu: &[f64], p: &[f64], run: &Run) -> Result<DecoySettings> {
    if mu.len() != 3 || p.len() != 3 {
        bail!(
            "the decoy analysis needs exactly three intensity classes, the source has {}",
            mu.len()
        );
    }
    let settings = DecoySettings {
        mu: [mu[0], mu[1], mu[2]],
        p: [p[0], p[1], p[2]],
        eps_sec: run.settings.eps_sec,
        eps_cor: run.settings.eps_cor,
    };
    settings
        .validate()
        .context("the source's intensities do not fit the decoy analysis")?;
    Ok(settings)
}

/// Fresh pre-shared secret from the operating system (never from the run's seed).
fn pre_shared_secret() -> Result<Vec<u8>> {
    let mut secret = vec![0u8; PRE_SHARED_SECRET_BYTES];
    rand::rngs::SysRng
        .try_fill_bytes(&mut secret)
        .map_err(|e| anyhow::anyhow!("no system randomness for the pre-shared secret: {e}"))?;
    Ok(secret)
}

/// Public randomness for the protocol (hash seeds), reproducible by the run's seed.
fn protocol_rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed ^ 0x9E37_79B9_7F4A_7C15)
}

/// A connected pair of peers: Bob opens the channel (initiator), Alice accepts.
fn peers() -> Result<(Peer<MemoryTransport>, Peer<MemoryTransport>)> {
    let secret = pre_shared_secret()?;
    let (bob_end, alice_end) = MemoryTransport::pair();
    let bob = Peer::new(bob_end, &secret, qkd_postprocess::auth::Role::Initiator)?;
    let alice = Peer::new(alice_end, &secret, qkd_postprocess::auth::Role::Responder)?;
    Ok((alice, bob))
}

/// Reports progress of long runs on stderr.
fn progress_reporter(seconds: f64) -> impl FnMut(&MeasurerProgress) + Send {
    let mut progress = Progress::new("link: emulated");
    move |p: &MeasurerProgress| {
        progress.update(p.batches as f64 * BATCH.as_secs_f64(), seconds);
    }
}

/// What both sessions returned.
struct Sessions {
    preparer: Vec<BlockOutcome>,
    measurer: Vec<BlockOutcome>,
    progress: MeasurerProgress,
    /// Authentication key the preparer spent on seals.
    auth_bits_spent: u64,
}

impl Sessions {
    /// The run's report; `pulses` and `detections` come from the bench.
    fn report(self, protocol: &'static str, run: &Run, pulses: u64, detections: u64) -> LinkReport {
        let figures = RunFigures {
            protocol,
            preset: run.preset.name(),
            distance_km: run.distance_km,
            seconds: run.seconds,
            seed: run.seed,
            eve_fraction: run.eve_fraction,
            block_bits: run.settings.block_bits,
            pulses,
            detections,
            sifted_bits: self.preparer.iter().map(|o| o.report.key_bits as u64).sum(),
            auth_bits_spent: self.auth_bits_spent,
        };
        LinkReport::new(figures, &self.preparer, &self.measurer)
    }
}

/// Runs the preparing node on its own task and the measuring node on this one, over a fresh
/// authenticated in-memory channel; `names` (preparer, measurer) label their errors. The
/// measurer drives the protocol, so its failure is the cause reported when both fail.
async fn run_sessions(
    mut preparer: impl PreparationSource + 'static,
    measurer: &mut impl MeasurementSource,
    settings: &BlockSettings,
    run: &Run,
    names: [&'static str; 2],
) -> Result<Sessions> {
    let (mut preparer_peer, mut measurer_peer) = peers()?;
    let preparer_settings = settings.clone();
    let seed = run.seed;
    let preparer_task = tokio::spawn(async move {
        let mut rng = protocol_rng(seed);
        let outcomes = run_preparer(
            &mut preparer_peer,
            &mut preparer,
            &preparer_settings,
            &mut rng,
        )
        .await;
        (outcomes, preparer_peer.auth_spent_bits())
    });
    let measured = run_measurer(
        &mut measurer_peer,
        measurer,
        settings,
        progress_reporter(run.seconds),
    )
    .await;
    let (prepared, auth_bits_spent) = preparer_task
        .await
        .with_context(|| format!("{} failed", names[0]))?;
    let (measurer, progress) = measured.with_context(|| format!("{}'s session", names[1]))?;
    let preparer = prepared.with_context(|| format!("{}'s session", names[0]))?;
    Ok(Sessions {
        preparer,
        measurer,
        progress,
        auth_bits_spent,
    })
}

pub fn run(args: &LinkArgs) -> Result<()> {
    let run = validate(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut report = match args.protocol {
        Protocol::Bb84 => runtime.block_on(bb84::run(args, &run))?,
        Protocol::Bbm92 => runtime.block_on(bbm92::run(args, &run))?,
    };
    report.wall_s = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print();
    }
    Ok(())
}
