//! `qkd bench tracking`: polarization tracking on the emulated bench, scored against the
//! emulator's ground truth.
//!
//! The fiber starts at a random rotation and drifts as a random walk of `--drift-rate` rad/√s
//! (the rotation angle's variance grows as rate²·t). The tracker first aligns (not scored), then
//! runs for `--seconds` of link time. Every window is scored by the polarization error the loop
//! left — the QBER the rotation adds on top of the misalignment floor, from the true fiber and
//! controller rotations — and against the same drift with the controller frozen after alignment.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use qkd_calibration::counts::StateCounts;
use qkd_calibration::monitor::{ErrorMonitor, Feedback, MonitorError, TaggedMonitor};
use qkd_calibration::tracker::Tracker;
use qkd_drivers::emulator::{EmulatedBench, World};
use qkd_drivers::serial::{DetectorNominals, DeviceConfig, DeviceKind};
use qkd_drivers::{PolarizationController, SinglePhotonDetectors, WcpSource};
use qkd_firmware_sim::host::{Host, LightPath, SharedBench};
use qkd_firmware_sim::world::polarization::Rotation;
use qkd_firmware_sim::world::{ControllerSpec, InitialRotation, LinkPreset, LinkSpec, StepSpec};
use qkd_postprocess::slots::SlotConfig;
use serde::Serialize;

use super::machine::Machine;
use crate::flags::in_range;
use crate::progress::Progress;

/// Link time covered by one tagger read.
const TAGGER_BATCH: Duration = Duration::from_micros(500);

/// Which feedback the tracker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Reference states interleaved by the source.
    Reference,
    /// Bits already disclosed for parameter estimation.
    Qber,
}

/// Which polarization controller the receiver has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ControllerKind {
    /// Four fiber squeezers (OZ Optics EPC style), millivolts.
    #[default]
    Squeezers,
    /// Three motorised paddles (Thorlabs MPC320 style), degrees.
    Paddles,
}

impl ControllerKind {
    /// The emulated controller of this kind.
    pub fn spec(self) -> ControllerSpec {
        match self {
            ControllerKind::Squeezers => ControllerSpec::four_squeezers(),
            ControllerKind::Paddles => ControllerSpec::three_paddles(),
        }
    }

    /// Link time the tracker has to align before scoring starts: motorised paddles travel at
    /// 200°/s, so scanning them takes seconds.
    fn alignment_budget_s(self) -> f64 {
        match self {
            ControllerKind::Squeezers => 3.0,
            ControllerKind::Paddles => 10.0,
        }
    }
}

/// Flags of `qkd bench tracking`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrackingArgs {
    /// Feedback the tracker uses.
    #[arg(long, value_enum, default_value_t = Strategy::Reference)]
    pub strategy: Strategy,
    /// Polarization drift rate in rad/√s: the fiber's rotation angle performs a random walk with
    /// variance rate²·t.
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    pub drift_rate: f64,
    /// Scored link time in seconds (after alignment).
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
    pub seconds: f64,
    /// A sudden rotation of this many radians (random axis) during the scored time.
    #[arg(long, allow_negative_numbers = true)]
    pub step_rad: Option<f64>,
    /// When the step happens, seconds into the scored time (default: half way).
    #[arg(long, allow_negative_numbers = true)]
    pub step_at: Option<f64>,
    /// Polarization controller of the receiver.
    #[arg(long, value_enum, default_value_t = ControllerKind::Squeezers)]
    pub controller: ControllerKind,
    /// Bench preset (detectors and source).
    #[arg(long, default_value = "snspd")]
    pub preset: String,
    /// Fiber length in km.
    #[arg(long, default_value_t = 25.0, allow_negative_numbers = true)]
    pub distance_km: f64,
    /// Share of slots carrying reference states (reference strategy).
    #[arg(long, default_value_t = 0.25, allow_negative_numbers = true)]
    pub reference_share: f64,
    /// Seed of the emulated bench.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Drive the controller through its serial driver and an emulated device on a pseudo-
    /// terminal sharing the bench's world (squeezers: our polarization board; paddles: the
    /// MPC320, whose moves then take their real travel time on the wall clock).
    #[arg(long)]
    pub serial: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `qkd bench tracking --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct TrackingReport {
    pub machine: Machine,
    pub strategy: Strategy,
    pub controller: ControllerKind,
    /// Drift rate, rad/√s.
    pub drift_rate: f64,
    pub seconds: f64,
    pub step_rad: Option<f64>,
    pub step_at_s: Option<f64>,
    /// Mean QBER (both bases) with the controller frozen after alignment, same drift.
    pub untracked_mean_qber: f64,
    /// Highest QBER of the untracked link.
    pub untracked_max_qber: f64,
    /// QBER the fiber's misalignment alone gives (what tracking cannot remove).
    pub floor_qber: f64,
    /// Mean QBER added by the polarization error the tracker leaves (dithers included).
    pub mean_added_qber: f64,
    /// 99th percentile over time of the added QBER.
    pub p99_added_qber: f64,
    /// Link time from the step until the added QBER is below 1 %.
    pub recovery_time_s: Option<f64>,
    /// Share of the scored time with key generation running (not paused).
    pub uptime_fraction: f64,
    /// Commands sent to the controller during the scored time.
    pub actuator_moves: u64,
    /// Commands per second of link time.
    pub actuator_moves_per_s: f64,
    /// Link time the initial alignment took.
    pub alignment_s: f64,
    /// Tracking sweeps in the scored time.
    pub sweeps: u64,
    /// Actuators moved by their period at a range end (endless tracking).
    pub unwinds: u64,
    /// Moves to settings the controller model proposed (controllers that declare their
    /// optics: paddles), alignment included.
    pub model_leaps: u64,
    /// Actuator setting at the end, device units (mV or degrees).
    pub final_setting: Vec<f64>,
    /// The controller was driven through its serial driver and a pseudo-terminal.
    pub serial: bool,
    pub wall_s: f64,
}

/// One stretch of link time, scored.
#[derive(Debug, Clone, Copy)]
struct Sample {
    end_s: f64,
    duration_s: f64,
    added: f64,
    untracked: f64,
}

/// A monitor that scores every stretch it reads against the world's true rotations.
struct Scored<M> {
    inner: M,
    bench: EmulatedBench,
    /// Controller rotation frozen at the end of alignment (the untracked comparison).
    frozen: Option<Rotation>,
    samples: Vec<Sample>,
    last_s: f64,
}

impl<M: ErrorMonitor> Scored<M> {
    fn score(&mut self) {
        let frozen = self.frozen;
        let (now_s, added, untracked) = self.bench.inspect(|w| {
            let World::PrepareMeasure(pm) = w else {
                return (0.0, 0.0, 0.0);
            };
            let node = pm.node();
            let fiber = node.fiber.rotation();
            let v = node.fiber.visibility();
            let tracked = node.receiver.controller().rotation().after(&fiber);
            let untracked = frozen.map_or(tracked, |c| c.after(&fiber));
            (
                pm.now_ps() as f64 * 1e-12,
                tracked.bb84_error(1.0),
                untracked.bb84_error(v),
            )
        });
        self.samples.push(Sample {
            end_s: now_s,
            duration_s: now_s - self.last_s,
            added,
            untracked,
        });
        self.last_s = now_s;
    }
}

impl<M: ErrorMonitor> ErrorMonitor for Scored<M> {
    async fn measure(&mut self, duration: Duration) -> Result<StateCounts, MonitorError> {
        let counts = self.inner.measure(duration).await?;
        self.score();
        Ok(counts)
    }

    async fn discard(&mut self, duration: Duration) -> Result<(), MonitorError> {
        self.inner.discard(duration).await?;
        self.score();
        Ok(())
    }

    fn elapsed(&self) -> Duration {
        self.inner.elapsed()
    }
}

/// Time-weighted quantile of `values` (value, weight).
fn weighted_quantile(mut values: Vec<(f64, f64)>, q: f64) -> f64 {
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = values.iter().map(|v| v.1).sum();
    let mut seen = 0.0;
    for (value, weight) in &values {
        seen += weight;
        if seen >= q * total {
            return *value;
        }
    }
    values.last().map_or(0.0, |v| v.0)
}

fn validate(args: &TrackingArgs) -> Result<()> {
    in_range("drift-rate", args.drift_rate, 0.0, 100.0, "rad/√s")?;
    in_range("seconds", args.seconds, 0.01, 3600.0, "s")?;
    in_range("distance-km", args.distance_km, 0.0, 300.0, "km")?;
    in_range("reference-share", args.reference_share, 0.0, 0.5, "")?;
    if let Some(step) = args.step_rad {
        in_range("step-rad", step, 0.0, std::f64::consts::PI, "rad")?;
    }
    if let Some(at) = args.step_at {
        in_range("step-at", at, 0.0, args.seconds, "s")?;
    }
    if args.step_at.is_some() && args.step_rad.is_none() {
        bail!("--step-at needs --step-rad");
    }
    Ok(())
}

/// The emulated link of the run: drifting fiber from a random rotation, the step scheduled at
/// `step_at` seconds into the scored time, the controller, and references for that strategy.
fn link_spec(args: &TrackingArgs, step_at: Option<f64>) -> Result<(LinkSpec, Feedback)> {
    let mut spec = LinkPreset::from_name(&args.preset)?.spec(args.distance_km);
    spec.fiber.drift_rad_per_sqrt_s = args.drift_rate;
    spec.fiber.initial_rotation = InitialRotation::Random;
    if let (Some(angle_rad), Some(at)) = (args.step_rad, step_at) {
        spec.fiber.steps.push(StepSpec {
            at_s: args.controller.alignment_budget_s() + at,
            angle_rad,
            axis: None,
        });
    }
    spec.receiver.controller = args.controller.spec();
    let feedback = match args.strategy {
        Strategy::Reference => {
            spec.source.reference_share = args.reference_share;
            Feedback::References
        }
        Strategy::Qber => Feedback::DisclosedBits,
    };
    Ok((spec, feedback))
}

/// Runs the benchmark and returns its report.
pub async fn measure(args: &TrackingArgs) -> Result<TrackingReport> {
    validate(args)?;
    let started = Instant::now();
    let budget_s = args.controller.alignment_budget_s();
    let step_at = args
        .step_rad
        .map(|_| args.step_at.unwrap_or(0.5 * args.seconds));
    let (spec, feedback) = link_spec(args, step_at)?;
    let bench = EmulatedBench::prepare_measure(&spec, args.seed).context("the bench")?;
    let source = bench.wcp_source().context("no source")?;
    let rate = source.repetition_rate().get();
    let slots = SlotConfig::standard(rate, u64::from(spec.source.sync_divider));
    let tagger = bench.tagger(0, TAGGER_BATCH).context("no tagger")?;
    let monitor = Scored {
        inner: TaggedMonitor::new(tagger, source, TAGGER_BATCH, slots, feedback)?,
        bench: bench.clone(),
        frozen: None,
        samples: Vec::new(),
        last_s: 0.0,
    };
    let run = Run {
        args,
        spec: &spec,
        bench: &bench,
        step_at,
        budget_s,
        started,
    };
    if !args.serial {
        let mut controller = bench
            .polarization_controller(0)
            .context("no polarization controller")?;
        return run.track(&mut controller, monitor).await;
    }
    let dir = std::env::temp_dir().join(format!("qkd-bench-tracking-{}", std::process::id()));
    let (light_path, kind, name) = match args.controller {
        ControllerKind::Squeezers => (LightPath::Epc, DeviceKind::PolarizationBoard, "epc"),
        ControllerKind::Paddles => (LightPath::Mpc320, DeviceKind::Mpc320, "mpc320"),
    };
    let world = bench.device_world().context("no world to share")?;
    let host = Host::serve_bench(&dir, SharedBench::from_shared(world, light_path), args.seed)?;
    // The detector board holds the detectors disarmed from power-on.
    // The emulated devices answer as fast as the machine lets their threads run: generous
    // timeouts keep a busy machine from turning into failed commands.
    let patient = |kind, name: &str| {
        let mut config = DeviceConfig::new(kind, dir.join(name));
        config.timeout_ms = Some(2_000);
        config
    };
    let mut detectors = patient(DeviceKind::DetectorBoard, "detectors")
        .open_detectors(DetectorNominals::default())
        .await?;
    for channel in 0..4 {
        detectors.set_enabled(channel, true).await?;
    }
    let mut config = patient(kind, name);
    // Squeezers of the emulated controller: Vπ = 2 V, so 4 V turn the retardance by 2π.
    config.period_mv = Some(4000.0);
    let mut controller = config.open_polarization().await?;
    let report = run.track(&mut controller, monitor).await;
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
    report
}

/// One run's fixed parts.
struct Run<'a> {
    args: &'a TrackingArgs,
    spec: &'a LinkSpec,
    bench: &'a EmulatedBench,
    step_at: Option<f64>,
    budget_s: f64,
    started: Instant,
}

impl Run<'_> {
    /// Aligns, tracks until the scored time starts, then tracks and scores.
    async fn track<C: PolarizationController, M: ErrorMonitor>(
        &self,
        controller: &mut C,
        mut monitor: Scored<M>,
    ) -> Result<TrackingReport> {
        let Run {
            args,
            spec,
            bench,
            step_at,
            budget_s,
            started,
        } = *self;
        let mut tracker = Tracker::for_controller(controller).await?;
        tracker.align(controller, &mut monitor).await?;
        let alignment_s = monitor.elapsed().as_secs_f64();
        if alignment_s > budget_s {
            bail!(
                "alignment took {alignment_s:.2} s of link time, over its budget of {budget_s} s"
            );
        }
        // Keep tracking until the scored time starts, then freeze the comparison there.
        while monitor.elapsed().as_secs_f64() < budget_s {
            tracker.sweep(controller, &mut monitor).await?;
        }
        let start_s = monitor.elapsed().as_secs_f64();
        let start_moves = tracker.moves();
        monitor.frozen = Some(bench.inspect(|w| match w {
            World::PrepareMeasure(pm) => pm.node().receiver.controller().rotation(),
            World::Entangled(_) => Rotation::IDENTITY,
        }));
        monitor.samples.clear();
        let end_s = start_s + args.seconds;
        let mut progress = Progress::new("tracking: emulated");
        let (mut paused_s, mut sweeps, mut last_s) = (0.0, 0u64, start_s);
        while monitor.elapsed().as_secs_f64() < end_s {
            let report = tracker.sweep(controller, &mut monitor).await?;
            let now_s = monitor.elapsed().as_secs_f64();
            if report.paused {
                paused_s += now_s - last_s;
            }
            last_s = now_s;
            sweeps += 1;
            progress.update(now_s - start_s, args.seconds);
        }
        let scored_s = last_s - start_s;
        let samples = &monitor.samples;
        let weight: f64 = samples.iter().map(|s| s.duration_s).sum::<f64>().max(1e-12);
        let mean = |f: fn(&Sample) -> f64| {
            samples.iter().map(|s| f(s) * s.duration_s).sum::<f64>() / weight
        };
        let step_time = step_at.map(|at| budget_s + at);
        let recovery_time_s = step_time.and_then(|t| {
            samples
                .iter()
                .find(|s| s.end_s > t && s.added < 0.01)
                .map(|s| s.end_s - t)
        });
        Ok(TrackingReport {
            machine: Machine::current(),
            strategy: args.strategy,
            controller: args.controller,
            drift_rate: args.drift_rate,
            seconds: args.seconds,
            step_rad: args.step_rad,
            step_at_s: step_at,
            untracked_mean_qber: mean(|s| s.untracked),
            untracked_max_qber: samples.iter().map(|s| s.untracked).fold(0.0, f64::max),
            // A perfectly compensated rotation leaves the misalignment e_d.
            floor_qber: spec.fiber.misalignment,
            mean_added_qber: mean(|s| s.added),
            p99_added_qber: weighted_quantile(
                samples.iter().map(|s| (s.added, s.duration_s)).collect(),
                0.99,
            ),
            recovery_time_s,
            uptime_fraction: 1.0 - paused_s / scored_s.max(1e-12),
            actuator_moves: tracker.moves() - start_moves,
            actuator_moves_per_s: (tracker.moves() - start_moves) as f64 / scored_s.max(1e-12),
            alignment_s,
            sweeps,
            unwinds: tracker.unwinds(),
            model_leaps: tracker.leaps(),
            final_setting: tracker.setting().to_vec(),
            serial: args.serial,
            wall_s: started.elapsed().as_secs_f64(),
        })
    }
}

pub fn run(args: &TrackingArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(measure(args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let pct = |q: f64| format!("{:.3} %", 100.0 * q);
    println!(
        "tracking ({:?}, {:?}) at {} rad/√s for {} s",
        report.strategy, report.controller, report.drift_rate, report.seconds
    );
    println!(
        "  untracked QBER         mean {}, max {}",
        pct(report.untracked_mean_qber),
        pct(report.untracked_max_qber)
    );
    println!(
        "  added QBER             mean {}, p99 {} (floor {})",
        pct(report.mean_added_qber),
        pct(report.p99_added_qber),
        pct(report.floor_qber)
    );
    if let Some(r) = report.recovery_time_s {
        println!("  recovery after step    {r:.3} s");
    }
    println!(
        "  uptime                 {:.2} %",
        100.0 * report.uptime_fraction
    );
    println!(
        "  actuator moves         {} ({:.0}/s), {} sweeps, alignment {:.2} s",
        report.actuator_moves, report.actuator_moves_per_s, report.sweeps, report.alignment_s
    );
    println!("  wall time              {:.2} s", report.wall_s);
    Ok(())
}
