//! `qkd emulate`: run the emulated bench for a stretch of emulated time and report counts,
//! gain, error rates and how fast the emulation ran.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use qkd_drivers::ptu::RecordingInfo;
use qkd_firmware_sim::world::{Basis, LinkStats, NodeOutput, PrepareMeasureWorld};
use serde::Serialize;

use crate::flags::{Bench, BenchFlags, in_range};
use crate::limits;
use crate::progress::Progress;
use crate::recording::PtuRecording;

/// Emulated time per step: keeps memory flat however long the run.
const STEP_PS: i64 = 10_000_000_000;

/// Flags of `qkd emulate`.
#[derive(Debug, clap::Args)]
pub struct EmulateArgs {
    #[command(flatten)]
    bench: BenchFlags,
    /// Emulated time in seconds.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    seconds: f64,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Also record the receiver's time tags to this PicoQuant PTU (T2) file.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

/// Clicks per detector.
#[derive(Debug, Serialize)]
struct Detections {
    #[serde(rename = "H")]
    h: u64,
    #[serde(rename = "V")]
    v: u64,
    #[serde(rename = "D")]
    d: u64,
    #[serde(rename = "A")]
    a: u64,
}

/// What `qkd emulate --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    preset: &'static str,
    distance_km: f64,
    seconds: f64,
    seed: u64,
    rep_rate_hz: u64,
    mu: f64,
    eve_fraction: f64,
    /// Pulses whose light reached the receiver within the emulated time.
    pulses: u64,
    /// Clicks per detector.
    detections: Detections,
    /// Slots in which two or more detectors clicked.
    double_clicks: u64,
    /// Signal-intensity key slots with at least one click, per signal pulse sent.
    gain: f64,
    /// Basis-matched error rate of signal-intensity key slots in Z (null without any).
    qber_z: Option<f64>,
    /// The same in X.
    qber_x: Option<f64>,
    /// Basis-matched signal slots in Z.
    sifted_z: u64,
    /// Basis-matched signal slots in X.
    sifted_x: u64,
    /// Clicks caused by dark counts.
    dark_clicks: u64,
    /// Clicks caused by afterpulses.
    afterpulse_clicks: u64,
    /// Clicks caused by Raman noise photons from classical channels in the fiber.
    raman_clicks: u64,
    /// Raman noise photons per second at the receiver's input inside its filter (the model's
    /// value, as `qkd plan` reports it).
    raman_photons_per_s: f64,
    /// Total loss of the fiber in dB (per-km loss plus extra loss).
    fiber_loss_db: f64,
    /// Differential group delay of the fiber at the end of the run, ps (0 without PMD).
    dgd_ps: f64,
    /// Timestamps the tagger delivered (detectors and sync).
    tags: u64,
    /// Events the tagger lost to its throughput limit.
    missed_tags: u64,
    /// Tags stamped before the tagger's time 0, left out of a `--record`ing (which cannot
    /// hold them): jitter at the start of a 0 km link.
    tags_before_start: u64,
    /// Wall-clock time of the emulation.
    wall_s: f64,
    /// Detection events emulated per wall-clock second (one core).
    events_per_s: f64,
}

pub fn run(args: &EmulateArgs) -> Result<()> {
    let Bench {
        preset,
        distance_km,
        eve_fraction,
        spec,
    } = args.bench.validate()?;
    let seconds = in_range("seconds", args.seconds, 1e-9, 1e6, "s")?;
    let seed = args.bench.seed;
    let mut world = PrepareMeasureWorld::new(&spec, seed).context("the bench cannot be built")?;

    let mut recorder = match &args.record {
        Some(path) => {
            limits::ensure_disk(
                path,
                &format!("--record over --seconds {seconds}"),
                recording_bytes(&spec, seed, seconds)?,
            )?;
            let info = RecordingInfo {
                resolution_ps: spec.tagger.resolution_ps,
                input_channels: 4,
                sync_rate_hz: (spec.source.rep_rate_hz / u64::from(spec.source.sync_divider.max(1)))
                    as u32,
                hardware: "qkd-node emulator".into(),
                comment: format!(
                    "qkd emulate --preset {} --distance-km {distance_km} --seed {}",
                    preset.name(),
                    seed
                ),
            };
            Some(PtuRecording::create(path, &info)?)
        }
        None => None,
    };
    let started = Instant::now();
    let mut progress = Progress::new("emulated");
    let mut stats = LinkStats::new(spec.source.intensities.len(), seed);
    let mut out = NodeOutput::default();
    let (mut tags, mut missed) = (0u64, 0u64);
    let end_ps = (seconds * 1e12).round() as i64;
    while world.now_ps() < end_ps {
        out.clear();
        world.run_until((world.now_ps() + STEP_PS).min(end_ps), &mut out);
        stats.add(&out.clicks, world.source());
        tags += out.tag_times_ps.len() as u64;
        if let Some(writer) = &mut recorder {
            writer.write(&out.tag_times_ps, &out.tag_channels)?;
        }
        missed += out.missed_tags;
        progress.update(world.now_ps() as f64 * 1e-12, seconds);
    }
    stats.finish(world.source());
    progress.finish();
    let tags_before_start = recorder.as_ref().map_or(0, PtuRecording::before_start);
    if let Some(writer) = recorder {
        writer.finish()?;
    }
    let wall_s = started.elapsed().as_secs_f64();

    let signal_pulses = world.pulses() as f64 * world.source().key_share(0);
    let report = Report {
        preset: preset.name(),
        distance_km,
        seconds,
        seed,
        rep_rate_hz: world.source().clock.rate_hz(),
        mu: world.source().mean_photon_numbers[0],
        eve_fraction,
        pulses: world.pulses(),
        detections: Detections {
            h: stats.clicks[0],
            v: stats.clicks[1],
            d: stats.clicks[2],
            a: stats.clicks[3],
        },
        double_clicks: stats.double_clicks,
        gain: if signal_pulses > 0.0 {
            stats.clicked_slots[0] as f64 / signal_pulses
        } else {
            0.0
        },
        qber_z: stats.qber(0, Basis::Z),
        qber_x: stats.qber(0, Basis::X),
        sifted_z: stats.sifted[0][0],
        sifted_x: stats.sifted[0][1],
        dark_clicks: stats.by_origin[1],
        afterpulse_clicks: stats.by_origin[2],
        raman_clicks: stats.by_origin[3],
        raman_photons_per_s: spec.fiber.raman_photons_per_s(),
        fiber_loss_db: spec.fiber.loss_db(),
        dgd_ps: world.node().fiber.dgd_ps(),
        tags,
        missed_tags: missed,
        tags_before_start,
        wall_s,
        events_per_s: stats.total_clicks() as f64 / wall_s.max(1e-9),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// A generous estimate of a recording's size: the tag rate of a first step of the same world,
/// three standard deviations up, at 4 bytes a record, plus an overflow record per wrap of the
/// 2^25 ps time field (never more than one per tag) and the header.
fn recording_bytes(
    spec: &qkd_firmware_sim::world::LinkSpec,
    seed: u64,
    seconds: f64,
) -> Result<u64> {
    const RECORD_BYTES: f64 = 4.0;
    const WRAP_S: f64 = (1u64 << 25) as f64 * 1e-12;
    const HEADER_BYTES: f64 = 65_536.0;
    let mut pilot = PrepareMeasureWorld::new(spec, seed).context("the bench cannot be built")?;
    let pilot_ps = STEP_PS.min((seconds * 1e12).round() as i64).max(1);
    let mut out = NodeOutput::default();
    pilot.run_until(pilot_ps, &mut out);
    let tags = out.tag_times_ps.len() as f64;
    let tags_per_s = (tags + 3.0 * tags.sqrt() + 1.0) / (pilot_ps as f64 * 1e-12);
    let records = tags_per_s * seconds;
    let overflows = records.min(seconds / WRAP_S);
    // `as` saturates: an absurd estimate becomes u64::MAX, which no disk has.
    Ok(((records + overflows) * RECORD_BYTES + HEADER_BYTES) as u64)
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "n/a".to_owned(), |r| format!("{:.3} %", 100.0 * r))
}

fn print_table(r: &Report) {
    println!(
        "emulated bench `{}`: {} km, {} s at {} MHz, μ = {}, eve {} (seed {})",
        r.preset,
        r.distance_km,
        r.seconds,
        r.rep_rate_hz as f64 / 1e6,
        r.mu,
        r.eve_fraction,
        r.seed
    );
    let d = &r.detections;
    println!("  pulses          {}", r.pulses);
    println!(
        "  detections      H {}  V {}  D {}  A {}   double clicks {}",
        d.h, d.v, d.d, d.a, r.double_clicks
    );
    println!("  gain (signal)   {:.4e} per pulse", r.gain);
    println!(
        "  QBER (signal)   Z {}  X {}   (sifted Z {}, X {})",
        percent(r.qber_z),
        percent(r.qber_x),
        r.sifted_z,
        r.sifted_x
    );
    println!(
        "  noise           {} dark, {} afterpulse, {} Raman clicks; {} tags, {} missed",
        r.dark_clicks, r.afterpulse_clicks, r.raman_clicks, r.tags, r.missed_tags
    );
    if r.tags_before_start > 0 {
        println!(
            "  recording       {} tags before the tagger's time 0 left out",
            r.tags_before_start
        );
    }
    println!(
        "  speed           {:.2} M events/s ({:.3} s wall)",
        r.events_per_s / 1e6,
        r.wall_s
    );
}
