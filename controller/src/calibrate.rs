//! `qkd calibrate`: the receiver's calibration sequence on the emulated bench, through the
//! driver traits as on hardware: detector delays, detector characterisation, source
//! intensities at the known channel transmission, then polarization alignment.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use qkd_calibration::delay::{
    DelayCalibration, DelayCalibrationSettings, Timing, calibrate_timing,
};
use qkd_calibration::detectors::{
    ChannelFigures, CharacterisationSettings, DetectorLimits, characterise_detectors,
};
use qkd_calibration::intensity::{IntensityCalibration, IntensitySettings, calibrate_intensities};
use qkd_calibration::monitor::{ErrorMonitor, Feedback, TaggedMonitor};
use qkd_calibration::state::PolarizationCalibration;
use qkd_calibration::tracker::Tracker;
use qkd_drivers::emulator::{EmulatedBench, EmulatedTagger, EmulatedWcpSource};
use qkd_drivers::{PolarizationController, SinglePhotonDetectors};
use qkd_firmware_sim::world::{InitialRotation, LinkSpec};
use qkd_postprocess::slots::SlotConfig;
use qkd_units::{Hertz, Probability};
use serde::Serialize;

use crate::bench::tracking::ControllerKind;
use crate::flags::{Bench, BenchFlags, in_range};

/// Link time per tagger read.
const BATCH: Duration = Duration::from_millis(10);

/// Flags of `qkd calibrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub bench: BenchFlags,
    /// Cable delays of the emulated tagger's inputs, ps: sync, then H, V, D, A (unknown to the
    /// calibration, which has to find them).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true,
          default_values_t = [0i64, 1_900, -800, 3_100, 450])]
    pub cable_delays_ps: Vec<i64>,
    /// The receiver's polarization controller.
    #[arg(long, value_enum, default_value_t = ControllerKind::Squeezers)]
    pub controller: ControllerKind,
    /// Integration with the source dark, seconds of link time.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub dark_seconds: f64,
    /// Link time of each measurement with the source on, seconds.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub light_seconds: f64,
    /// Write the polarization calibration here (versioned, tied to the controller's identity).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Start polarization from this saved calibration (refused if it belongs to another
    /// controller); a full alignment runs only if the link has moved since.
    #[arg(long)]
    pub load: Option<PathBuf>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// How the polarization alignment started.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "kebab-case")]
enum AlignmentStart {
    /// Scanned from scratch.
    Aligned,
    /// A loaded calibration still held.
    Loaded,
    /// A loaded calibration no longer held: scanned from scratch.
    Realigned,
}

/// Polarization alignment as found.
#[derive(Debug, Serialize)]
struct Alignment {
    /// How it started.
    start: AlignmentStart,
    /// Actuator setting, device units.
    setting: Vec<f64>,
    /// Cost per unit² of each actuator.
    curvatures: Vec<f64>,
    /// Basis-matched error rate at alignment.
    qber_floor: Option<f64>,
    /// Link time the alignment took, s.
    link_s: f64,
}

/// What `qkd calibrate --json` prints.
#[derive(Debug, Serialize)]
struct CalibrationReport {
    preset: &'static str,
    distance_km: f64,
    seed: u64,
    delays: DelayCalibration,
    /// Whole slots each detector's delay adds to its phase (H, V, D, A).
    whole_slots: [i64; 4],
    /// Delays as slot recovery uses them, ps.
    slot_delays_ps: [i64; 4],
    detectors: Vec<ChannelFigures>,
    intensities: IntensityCalibration,
    polarization: Alignment,
    /// Channels or classes out of their limits.
    flags: Vec<String>,
    wall_s: f64,
}

/// The emulated bench: the preset with the given cables, a random initial fiber rotation and
/// the chosen polarization controller.
fn bench_spec(args: &CalibrateArgs) -> Result<(Bench, LinkSpec)> {
    let bench = args.bench.validate()?;
    if args.cable_delays_ps.len() != 5 {
        bail!(
            "--cable-delays-ps: give 5 delays (sync, H, V, D, A), got {}",
            args.cable_delays_ps.len()
        );
    }
    let mut spec = bench.spec.clone();
    for (slot, &delay) in spec
        .tagger
        .channel_delays_ps
        .iter_mut()
        .zip(&args.cable_delays_ps)
    {
        *slot = in_range("cable-delays-ps", delay as f64, -1e6, 1e6, "ps")? as i64;
    }
    spec.fiber.initial_rotation = InitialRotation::Random;
    spec.receiver.controller = args.controller.spec();
    Ok((bench, spec))
}

pub fn run(args: &CalibrateArgs) -> Result<()> {
    let dark = in_range("dark-seconds", args.dark_seconds, 0.01, 3600.0, "s")?;
    let light = in_range("light-seconds", args.light_seconds, 0.01, 3600.0, "s")?;
    let (bench, spec) = bench_spec(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let emulated = EmulatedBench::prepare_measure(&spec, args.bench.seed)
        .context("the emulated bench cannot be built")?;
    let durations = Durations {
        dark: Duration::from_secs_f64(dark),
        light: Duration::from_secs_f64(light),
    };
    let report = runtime.block_on(calibrate(&emulated, &bench, &spec, durations, args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

/// How long the steps measure.
#[derive(Debug, Clone, Copy)]
struct Durations {
    dark: Duration,
    light: Duration,
}

/// Polarization alignment from the basis-matched error rates, saved if asked.
async fn align(
    emulated: &EmulatedBench,
    tagger: EmulatedTagger,
    source: EmulatedWcpSource,
    slots: SlotConfig,
    files: (Option<&Path>, Option<&Path>),
) -> Result<Alignment> {
    let (load, save) = files;
    let mut controller = emulated
        .polarization_controller(0)
        .context("the bench has no polarization controller")?;
    let mut monitor = TaggedMonitor::new(tagger, source, BATCH, slots, Feedback::DisclosedBits)?;
    let mut tracker = Tracker::for_controller(&mut controller).await?;
    let before = monitor.elapsed();
    let start = match load {
        Some(path) => {
            let saved = PolarizationCalibration::load(
                path,
                controller.identity(),
                controller.actuators().len(),
            )?;
            if tracker
                .resume(&mut controller, &mut monitor, &saved)
                .await
                .context("checking the loaded polarization calibration")?
            {
                AlignmentStart::Loaded
            } else {
                AlignmentStart::Realigned
            }
        }
        None => AlignmentStart::Aligned,
    };
    if !matches!(start, AlignmentStart::Loaded) {
        tracker
            .align(&mut controller, &mut monitor)
            .await
            .context("polarization alignment")?;
    }
    if let Some(path) = save {
        PolarizationCalibration::from_tracker(&tracker, controller.identity()).save(path)?;
    }
    Ok(Alignment {
        start,
        setting: tracker.setting().to_vec(),
        curvatures: tracker.curvatures().to_vec(),
        qber_floor: tracker.floor(),
        link_s: monitor.elapsed().saturating_sub(before).as_secs_f64(),
    })
}

/// The whole sequence, each step on what the previous ones found.
async fn calibrate(
    emulated: &EmulatedBench,
    bench: &Bench,
    spec: &LinkSpec,
    durations: Durations,
    args: &CalibrateArgs,
) -> Result<CalibrationReport> {
    let started = Instant::now();
    let rate = spec.source.rep_rate_hz as f64;
    let mut tagger = emulated
        .tagger(0, BATCH)
        .context("the bench has no tagger")?;
    let mut source = emulated.wcp_source().context("the bench has no source")?;
    let detectors = emulated
        .detectors(0)
        .context("the bench has no detectors")?;
    let Timing {
        delays,
        whole_slots,
        slots,
    } = calibrate_timing(
        &mut tagger,
        &mut source,
        &DelayCalibrationSettings {
            slot_rate: Hertz::new(rate)?,
            sync_divider: u64::from(spec.source.sync_divider),
            duration: durations.light,
            batch: BATCH,
        },
    )
    .await
    .context("timing calibration")?;

    let figures = characterise_detectors(
        &detectors,
        &mut source,
        &mut tagger,
        &CharacterisationSettings {
            dark_integration: durations.dark,
            light_duration: durations.light,
            batch: BATCH,
            gate_rate: Some(Hertz::new(rate)?),
            limits: DetectorLimits::default(),
        },
    )
    .await
    .context("detector characterisation")?;

    let intensities = calibrate_intensities(
        &mut tagger,
        &mut source,
        &IntensitySettings {
            slots: slots.clone(),
            transmission: known_transmission(spec, detectors.channels())?,
            background_per_slot: figures
                .iter()
                .map(|f| f.dark_rate_hz * slots.gate_ps as f64 * 1e-12)
                .sum(),
            dead_time_ps: dead_times(detectors.channels()),
            duration: durations.light,
            batch: BATCH,
            tolerance: 0.1,
        },
    )
    .await
    .context("intensity calibration")?;

    let slot_delays_ps = slots.delays_ps;
    let files = (args.load.as_deref(), args.save.as_deref());
    let polarization = align(emulated, tagger, source, slots, files).await?;
    let mut flags = Vec::new();
    for f in &figures {
        flags.extend(f.flags.iter().map(|m| format!("detector {}: {m}", f.name)));
    }
    for f in &intensities.classes {
        flags.extend(
            f.flag
                .iter()
                .map(|m| format!("intensity class {}: {m}", f.class)),
        );
    }
    Ok(CalibrationReport {
        preset: bench.preset.name(),
        distance_km: bench.distance_km,
        seed: args.bench.seed,
        delays,
        whole_slots,
        slot_delays_ps,
        detectors: figures,
        intensities,
        polarization,
        flags,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// The transmission the link was built with (known to an operator from the fiber's loss and
/// the receiver's data sheets), times the detectors' nominal efficiency.
fn known_transmission(
    spec: &LinkSpec,
    channels: &[qkd_drivers::DetectorChannel],
) -> Result<Probability> {
    let fiber = spec.fiber.transmission();
    let efficiency =
        channels.iter().map(|c| c.efficiency.get()).sum::<f64>() / channels.len().max(1) as f64;
    if efficiency <= 0.0 {
        bail!("the detectors report no efficiency to compute the transmission from");
    }
    Ok(Probability::new(
        fiber * spec.receiver.optics_transmission * efficiency,
    )?)
}

fn dead_times(channels: &[qkd_drivers::DetectorChannel]) -> [i64; 4] {
    let mut out = [0; 4];
    for (slot, channel) in out.iter_mut().zip(channels) {
        *slot = channel.dead_time.get();
    }
    out
}

fn print(r: &CalibrationReport) {
    println!(
        "calibration of the {} bench at {} km (seed {}), {:.2} s wall",
        r.preset, r.distance_km, r.seed, r.wall_s
    );
    println!(
        "  clock: slot period {:.3} ps ({:+.2} ppm)",
        r.delays.slot_period_ps, r.delays.clock_error_ppm
    );
    for ((d, f), total) in r
        .delays
        .channels
        .iter()
        .zip(&r.detectors)
        .zip(r.slot_delays_ps)
    {
        println!(
            "  {:>2}: delay {total:7} ps ({:+.1} ± {:.2} in the slot), FWHM {:5.0} ps, dark {:8.1}/s, efficiency {:.3} of its pair, afterpulse {}",
            f.name,
            d.delay_ps,
            d.delay_error_ps,
            d.fwhm_ps,
            f.dark_rate_hz,
            f.relative_efficiency,
            f.afterpulse_probability
                .map_or("n/a (too few dark counts)".to_owned(), |p| format!(
                    "{p:.3}"
                ))
        );
    }
    for f in &r.intensities.classes {
        println!(
            "  intensity class {}: μ = {:.4} ± {:.4} (configured {:.4})",
            f.class, f.measured_mu, f.measured_mu_error, f.configured_mu
        );
    }
    println!(
        "  polarization: {} in {:.2} s of link time, QBER floor {}",
        match r.polarization.start {
            AlignmentStart::Aligned => "aligned",
            AlignmentStart::Loaded => "loaded from the calibration file and checked",
            AlignmentStart::Realigned => "the loaded calibration no longer held; realigned",
        },
        r.polarization.link_s,
        r.polarization
            .qber_floor
            .map_or("n/a".to_owned(), |q| format!("{:.2} %", 100.0 * q))
    );
    for flag in &r.flags {
        println!("  OUT OF SPEC: {flag}");
    }
}
