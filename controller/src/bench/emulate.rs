//! `qkd bench emulate`: emulated detection events per second on one core, per preset.

use anyhow::Result;
use qkd_firmware_sim::world::{LinkPreset, NodeOutput, PrepareMeasureWorld};
use serde::Serialize;

use super::machine::Machine;
use super::median_seconds;
use crate::flags::in_range;

/// Emulated time per step, as `qkd emulate` streams it.
const STEP_PS: i64 = 10_000_000_000;

/// Flags of `qkd bench emulate`.
#[derive(Debug, clap::Args)]
pub struct EmulateBenchArgs {
    /// Fiber length in km.
    #[arg(long, default_value_t = 50.0, allow_negative_numbers = true)]
    distance_km: f64,
    /// Emulated seconds per timed run.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    seconds: f64,
    /// Timed repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct PresetFigure {
    preset: &'static str,
    events: usize,
    events_per_s: f64,
    /// Emulated seconds per wall-clock second: above 1, the link emulates faster than real time.
    realtime_factor: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    distance_km: f64,
    presets: Vec<PresetFigure>,
}

pub fn run(args: &EmulateBenchArgs) -> Result<()> {
    let distance = in_range("distance-km", args.distance_km, 0.0, 20_000.0, "km")?;
    let seconds = in_range("seconds", args.seconds, 1e-4, 100.0, "s")?;
    let mut presets = Vec::new();
    for (name, preset) in LinkPreset::ALL {
        let spec = preset.spec(distance);
        let mut events = 0;
        let wall = median_seconds(args.repeat, || {
            if let Ok(mut world) = PrepareMeasureWorld::new(&spec, 1) {
                // Streamed as the node consumes it: 10 ms steps, output cleared after each.
                let mut out = NodeOutput::default();
                let end = (seconds * 1e12) as i64;
                events = 0;
                while world.now_ps() < end {
                    out.clear();
                    world.run_until((world.now_ps() + STEP_PS).min(end), &mut out);
                    events += out.clicks.len();
                }
            }
        });
        presets.push(PresetFigure {
            preset: name,
            events,
            events_per_s: events as f64 / wall,
            realtime_factor: seconds / wall,
        });
    }
    let report = Report {
        machine: Machine::current(),
        distance_km: distance,
        presets,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.presets {
            println!(
                "{:<13} {:>6.2} M events/s  ({} events, {:.1}× real time)",
                p.preset,
                p.events_per_s / 1e6,
                p.events,
                p.realtime_factor
            );
        }
        println!(
            "machine       {} ({} cores)",
            report.machine.cpu, report.machine.cores
        );
    }
    Ok(())
}
