//! `qkd bench serial`: command round trips through real pseudo-terminals to the emulated
//! devices, with the same commands handled in-process (no serial layer) as the baseline.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use qkd_drivers::PolarizationController;
use qkd_drivers::serial::{DeviceConfig, DeviceKind};
use qkd_firmware_sim::host::{Host, LightPath, SharedBench, polarization_board};
use qkd_firmware_sim::world::LinkPreset;
use qkd_protocol::{FrameDecoder, MAX_FRAME, PolarizationCommand, Reply, Request, encode_frame};
use serde::Serialize;

use super::machine::Machine;
use super::percentile;

/// Flags of `qkd bench serial`.
#[derive(Debug, Clone, clap::Args)]
pub struct SerialArgs {
    /// Commands sent to the polarization board (the other devices get a tenth of this).
    #[arg(long, default_value_t = 2000)]
    commands: usize,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Latency figures of one kind of command.
#[derive(Debug, Serialize)]
struct RoundTrips {
    commands: usize,
    median_us: f64,
    p99_us: f64,
    max_us: f64,
    commands_per_s: f64,
}

impl RoundTrips {
    fn from(mut times: Vec<Duration>, total: Duration) -> Self {
        times.sort();
        let us = |q: f64| percentile(&times, q).as_secs_f64() * 1e6;
        RoundTrips {
            commands: times.len(),
            median_us: us(0.5),
            p99_us: us(0.99),
            max_us: us(1.0),
            commands_per_s: times.len() as f64 / total.as_secs_f64(),
        }
    }
}

/// What `qkd bench serial --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    /// Polarization board: `set` of all four squeezers (SetDac, latched codes checked).
    polarization_board: RoundTrips,
    /// The same frames through the same firmware in-process: codec and firmware cost alone.
    baseline_in_process: RoundTrips,
    /// OZ EPC: one `V<ch>,<mV>` command and its echo (the device's 9600 baud is not emulated).
    oz_epc_set_channel: RoundTrips,
    /// MPC320: a confirmed position read (two status requests per paddle, three paddles).
    mpc320_read_positions: RoundTrips,
}

/// Times `commands` runs of `one`, each to completion.
async fn time_each(
    commands: usize,
    mut one: impl AsyncFnMut(usize) -> Result<()>,
) -> Result<RoundTrips> {
    let mut times = Vec::with_capacity(commands);
    let started = Instant::now();
    for i in 0..commands {
        let t = Instant::now();
        one(i).await?;
        times.push(t.elapsed());
    }
    Ok(RoundTrips::from(times, started.elapsed()))
}

/// A setting that differs from the previous one, so every command changes the DAC.
fn setting(i: usize) -> [f64; 4] {
    let v = (i % 200) as f64 * 10.0 - 1000.0;
    [v, -v, v / 2.0, 0.0]
}

fn in_process_baseline(commands: usize) -> Result<RoundTrips> {
    let bench = SharedBench::simulated(&LinkPreset::Snspd.spec(10.0), 1, LightPath::Epc)?;
    let mut board = polarization_board(&bench, 1);
    let mut frame = [0u8; MAX_FRAME];
    let mut decoder = FrameDecoder::new();
    let mut replies = 0usize;
    let mut times = Vec::with_capacity(commands);
    let started = Instant::now();
    for i in 0..=commands {
        let t = Instant::now();
        let request = if i == 0 {
            Request::Identify
        } else {
            let codes = setting(i).map(|mv| qkd_protocol::squeezer_dac::code(mv).unwrap_or(0));
            Request::Polarization(PolarizationCommand::SetDac(codes))
        };
        let len = encode_frame(i as u16, &request, &mut frame)?;
        board.receive(&frame[..len], Instant::now(), &mut |bytes| {
            for &b in bytes {
                if let Some(Ok((_, reply))) = decoder.push::<Reply>(b)
                    && !matches!(reply, Reply::Error(_))
                {
                    replies += 1;
                }
            }
        });
        if i > 0 {
            times.push(t.elapsed());
        }
    }
    if replies != commands + 1 {
        bail!(
            "in-process board answered {replies} of {} commands",
            commands + 1
        );
    }
    Ok(RoundTrips::from(times, started.elapsed()))
}

pub fn run(args: &SerialArgs) -> Result<()> {
    if !(10..=1_000_000).contains(&args.commands) {
        bail!("--commands: give 10 to 1000000, got {}", args.commands);
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("qkd-bench-serial-{}", std::process::id()));
    let host = Host::serve(&dir, &LinkPreset::Snspd.spec(10.0), 1, LightPath::Epc)
        .with_context(|| format!("serving devices in {}", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let few = (args.commands / 10).max(10);
    let report = runtime.block_on(async {
        let open = async |kind, name: &str| {
            DeviceConfig::new(kind, dir.join(name))
                .open_polarization()
                .await
        };
        let mut epc = open(DeviceKind::PolarizationBoard, "epc").await?;
        let polarization_board = time_each(args.commands, async |i| {
            Ok(epc.set(&setting(i + 1)).await?)
        })
        .await?;
        let mut oz = open(DeviceKind::OzEpc, "oz-epc").await?;
        let oz_epc_set_channel = time_each(few, async |i| {
            Ok(oz.set(&[setting(i + 1)[0], 0.0, 0.0, 0.0]).await?)
        })
        .await?;
        let mut mpc = open(DeviceKind::Mpc320, "mpc320").await?;
        let mpc320_read_positions =
            time_each(few, async |_| Ok(mpc.get().await.map(|_| ())?)).await?;
        anyhow::Ok(Report {
            machine: Machine::current(),
            polarization_board,
            baseline_in_process: in_process_baseline(args.commands)?,
            oz_epc_set_channel,
            mpc320_read_positions,
        })
    })?;
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let line = |name: &str, r: &RoundTrips| {
            println!(
                "{name:<28} median {:>8.1} µs  p99 {:>8.1} µs  {:>8.0} commands/s ({} commands)",
                r.median_us, r.p99_us, r.commands_per_s, r.commands
            );
        };
        line("polarization board (PTY)", &report.polarization_board);
        line("  baseline in-process", &report.baseline_in_process);
        line("OZ EPC set channel (PTY)", &report.oz_epc_set_channel);
        line("MPC320 read positions (PTY)", &report.mpc320_read_positions);
    }
    Ok(())
}
