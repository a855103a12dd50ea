//! `qkd link`: two nodes in one process against the emulated bench, through slot recovery (or
//! coincidences) and the whole post-processing pipeline over the authenticated in-memory
//! channel, emulating the link as fast as the machine allows.

mod bb84;
pub(crate) mod bbm92;
mod report;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use qkd_firmware_sim::world::{InitialRotation, IntensitySpec};
use qkd_postprocess::auth::Role;
use qkd_postprocess::estimate::DecoySettings;
use qkd_postprocess::hybrid::{HybridSigner, SEED_BYTES, SigningIdentity};
use rand::TryRng;
use zeroize::Zeroize;

use qkd_runtime::block::{BlockReport, BlockSettings};
use qkd_runtime::channel::Peer;
use qkd_runtime::channel::memory::MemoryTransport;
use qkd_runtime::events::{Events, NodeEvent};
use qkd_runtime::keys::MemorySink;
use qkd_runtime::messages::Message;
use qkd_runtime::reconcile::Reconciliation;
use qkd_runtime::session::{
    MeasurementSource, Measurer, MeasurerProgress, PreparationSource, Preparer,
};
use qkd_runtime::sources::BatchBudget;
use tokio::sync::broadcast;

use crate::bench::tracking::ControllerKind;
use crate::flags::{Bench, BenchFlags, first_given, in_range};
use crate::progress::Progress;

pub use report::LinkReport;
use report::RunFigures;

/// Bytes of pre-shared authentication secret both nodes start with: two hash keys and 254 pads
/// of 128 bits, enough for some 60 blocks before the first key refills them.
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

/// Flags of `qkd link`. With `--protocol bbm92` the preset gives the detectors, the distance is
/// the total with the pair source in the middle, there is no `--mu`, and an eavesdropper
/// (`--eve-fraction`) measures and resends B's photons.
#[derive(Debug, Clone, clap::Args)]
pub struct LinkArgs {
    #[command(flatten)]
    pub bench: BenchFlags,
    /// Emulated link time in seconds.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub seconds: f64,
    /// Key-basis bits per post-processing block.
    #[arg(long, default_value_t = 1_000_000)]
    pub block_bits: usize,
    /// Secrecy parameter ε_sec.
    #[arg(long, default_value_t = 1e-10, allow_negative_numbers = true)]
    pub eps_sec: f64,
    /// Correctness parameter ε_cor.
    #[arg(long, default_value_t = 1e-15, allow_negative_numbers = true)]
    pub eps_cor: f64,
    /// Protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Bb84)]
    pub protocol: Protocol,
    /// Hybrid authentication: every seal also carries an ML-DSA-65 signature (FIPS 204), and
    /// a block keeps its key only if both the Wegman-Carter tags and the signatures check.
    #[arg(long)]
    pub hybrid_auth: bool,
    /// Polarization drift of the fiber in rad/√s: its rotation angle performs a random walk
    /// with variance rate²·t. Without `--track` the fiber starts aligned and nothing corrects it.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub drift_rate: f64,
    /// Track polarization at Bob with reference states: the fiber starts at a random rotation,
    /// the tracker aligns before any key is made, and batches measured while it is paused are
    /// held out of every block.
    #[arg(long)]
    pub track: bool,
    /// Bob's polarization controller when tracking (default squeezers).
    #[arg(long, value_enum)]
    pub controller: Option<ControllerKind>,
    /// Share of slots carrying reference states when tracking, they never enter a key
    /// (default 0.1).
    #[arg(long, allow_negative_numbers = true)]
    pub reference_share: Option<f64>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Share of slots carrying reference states when tracking without `--reference-share`.
const DEFAULT_REFERENCE_SHARE: f64 = 0.1;

/// The validated run parameters.
#[derive(Debug, Clone)]
struct Run {
    bench: Bench,
    seconds: f64,
    seed: u64,
    hybrid_auth: bool,
    settings: BlockSettings,
    /// Bob tracks polarization.
    track: bool,
}

impl Run {
    /// The tagger batches a measuring node reads for `--seconds` of link time.
    fn budget(&self) -> BatchBudget {
        BatchBudget::batches((self.seconds / BATCH.as_secs_f64()).ceil() as u64)
    }
}

fn validate(args: &LinkArgs) -> Result<Run> {
    let mut bench = args.bench.validate()?;
    let fiber = &mut bench.spec.fiber;
    fiber.drift_rad_per_sqrt_s = in_range("drift-rate", args.drift_rate, 0.0, 100.0, "rad/√s")?;
    if args.track {
        fiber.initial_rotation = InitialRotation::Random;
        bench.spec.receiver.controller = args.controller.unwrap_or_default().spec();
        bench.spec.source.reference_share = in_range(
            "reference-share",
            args.reference_share.unwrap_or(DEFAULT_REFERENCE_SHARE),
            0.001,
            0.5,
            "",
        )?;
    } else if let Some(flag) = first_given(&[
        ("--controller", args.controller.is_some()),
        ("--reference-share", args.reference_share.is_some()),
    ]) {
        bail!("{flag} sets up polarization tracking: give --track too");
    }
    if args.protocol == Protocol::Bbm92 {
        if args.track || args.drift_rate > 0.0 {
            bail!("--track and --drift-rate: polarization tracking runs on the BB84 link only");
        }
        // The entangled bench has neither: refuse rather than run without what was asked for.
        if args.bench.mu.is_some() {
            bail!("--mu: BBM92 has no weak-coherent source (the pair rate is fixed)");
        }
    }
    let seconds = in_range("seconds", args.seconds, 1e-3, 1e5, "s")?;
    let eps_sec = in_range("eps-sec", args.eps_sec, 1e-30, 0.1, "")?;
    let eps_cor = in_range("eps-cor", args.eps_cor, 1e-30, 0.1, "")?;
    if !(10_000..=100_000_000).contains(&args.block_bits) {
        bail!(
            "--block-bits: {} is outside the allowed range [10000, 100000000]",
            args.block_bits
        );
    }
    Ok(Run {
        bench,
        seconds,
        seed: args.bench.seed,
        hybrid_auth: args.hybrid_auth,
        track: args.track,
        settings: BlockSettings {
            block_bits: args.block_bits,
            decoy: None,
            eps_sec,
            eps_cor,
            reconciliation: Reconciliation::Cascade,
        },
    })
}

/// Decoy settings from the source's intensity classes (signal, decoy, weak decoy or vacuum).
pub(crate) fn decoy_settings(
    classes: &[IntensitySpec],
    eps_sec: f64,
    eps_cor: f64,
) -> Result<DecoySettings> {
    let [signal, decoy, weak] = classes else {
        bail!(
            "the decoy analysis needs exactly three intensity classes, the source has {}",
            classes.len()
        );
    };
    let settings = DecoySettings {
        mu: [signal, decoy, weak].map(|c| c.mean_photon_number),
        p: [signal, decoy, weak].map(|c| c.probability),
        eps_sec,
        eps_cor,
    };
    settings
        .validate()
        .context("the source's intensities do not fit the decoy analysis")?;
    Ok(settings)
}

/// Fills `secret` from the operating system (never from the run's seed).
pub(crate) fn fill_from_system(secret: &mut [u8], what: &str) -> Result<()> {
    rand::rngs::SysRng
        .try_fill_bytes(secret)
        .map_err(|e| anyhow::anyhow!("no system randomness for the {what}: {e}"))
}

/// A fresh ML-DSA identity for one node.
fn signing_identity() -> Result<SigningIdentity> {
    let mut seed = [0u8; SEED_BYTES];
    fill_from_system(&mut seed, "ML-DSA seed")?;
    let identity = SigningIdentity::from_seed(&seed);
    seed.zeroize();
    Ok(identity)
}

/// A connected pair of peers: Bob opens the channel (initiator), Alice accepts. In hybrid mode
/// each node gets its own ML-DSA key and the other's public key, as an installation would
/// distribute them.
fn peers(hybrid_auth: bool) -> Result<(LinkPeer, LinkPeer)> {
    let mut secret = vec![0u8; PRE_SHARED_SECRET_BYTES];
    fill_from_system(&mut secret, "pre-shared secret")?;
    let (bob_end, alice_end) = MemoryTransport::pair();
    let mut bob = Peer::new(bob_end, &secret, Role::Initiator)?;
    let mut alice = Peer::new(alice_end, &secret, Role::Responder)?;
    secret.zeroize();
    if hybrid_auth {
        let (bob_id, alice_id) = (signing_identity()?, signing_identity()?);
        let (bob_public, alice_public) = (bob_id.public_key(), alice_id.public_key());
        bob = bob.with_hybrid(HybridSigner::new(bob_id, &alice_public, Role::Initiator)?);
        alice = alice.with_hybrid(HybridSigner::new(alice_id, &bob_public, Role::Responder)?);
    }
    Ok((alice, bob))
}

/// One end of the link's in-memory channel.
type LinkPeer = Peer<MemoryTransport, Message>;

/// Reports progress of long runs on stderr, from the measurer's batch events.
fn progress_reporter(events: &Events, seconds: f64) -> tokio::task::JoinHandle<()> {
    let mut batches = events.subscribe();
    tokio::spawn(async move {
        let mut progress = Progress::new("link: emulated");
        let mut read = 0u64;
        loop {
            match batches.recv().await {
                Ok(NodeEvent::Batch { .. }) => {
                    read += 1;
                    progress.update(read as f64 * BATCH.as_secs_f64(), seconds);
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

/// What both sessions did.
struct Sessions {
    preparer: Vec<BlockReport>,
    measurer: Vec<BlockReport>,
    progress: MeasurerProgress,
    /// Keys each node committed.
    keys: [MemorySink; 2],
    /// Authentication key the preparer spent on seals.
    auth_bits_spent: u64,
}

impl Sessions {
    /// The run's report; `pulses` and `detections` come from the bench.
    fn report(self, protocol: &'static str, run: &Run, pulses: u64, detections: u64) -> LinkReport {
        let figures = RunFigures {
            protocol,
            preset: run.bench.preset.name(),
            distance_km: run.bench.distance_km,
            seconds: run.seconds,
            seed: run.seed,
            hybrid_auth: run.hybrid_auth,
            eve_fraction: run.bench.eve_fraction,
            block_bits: run.settings.block_bits,
            pulses,
            detections,
            sifted_bits: self.progress.sifted_key_bits,
            auth_bits_spent: self.auth_bits_spent,
        };
        let [alice, bob] = &self.keys;
        LinkReport::new(
            figures,
            &self.preparer,
            &self.measurer,
            alice,
            bob,
            &self.progress,
        )
    }
}

/// Runs the preparing node on its own task and the measuring node on this one, over a fresh
/// authenticated in-memory channel; `names` (preparer, measurer) label their errors. The
/// measurer drives the protocol, so its failure is the cause reported when both fail.
async fn run_sessions(
    mut preparations: impl PreparationSource + 'static,
    measurements: &mut impl MeasurementSource,
    settings: &BlockSettings,
    run: &Run,
    names: [&'static str; 2],
) -> Result<Sessions> {
    let (mut preparer_peer, mut measurer_peer) = peers(run.hybrid_auth)?;
    let mut preparer = Preparer::new(settings.clone(), Events::default())?;
    let preparer_task = tokio::spawn(async move {
        let mut keys = MemorySink::default();
        let ended = preparer
            .run(&mut preparer_peer, &mut preparations, &mut keys)
            .await;
        let spent = preparer_peer.auth_state().spent_bits();
        (ended, preparer.take_reports(), keys, spent)
    });
    let events = Events::default();
    let progress = progress_reporter(&events, run.seconds);
    let mut measurer = Measurer::new(settings.clone(), events);
    let mut bob_keys = MemorySink::default();
    let measured = measurer
        .run(&mut measurer_peer, measurements, &mut bob_keys)
        .await;
    progress.abort();
    let (prepared, preparer_reports, alice_keys, auth_bits_spent) = preparer_task
        .await
        .with_context(|| format!("{} failed", names[0]))?;
    measured.with_context(|| format!("{}'s session", names[1]))?;
    prepared.with_context(|| format!("{}'s session", names[0]))?;
    Ok(Sessions {
        preparer: preparer_reports,
        measurer: measurer.take_reports(),
        progress: measurer.progress(),
        keys: [alice_keys, bob_keys],
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
        Protocol::Bb84 => runtime.block_on(bb84::run(&run))?,
        Protocol::Bbm92 => runtime.block_on(bbm92::run(&run))?,
    };
    report.wall_s = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print();
    }
    Ok(())
}
