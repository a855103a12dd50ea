//! `qkd sim serve`: the emulated bench's devices on pseudo-terminals, for drivers, tests and
//! people with a terminal program.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use qkd_firmware_sim::host::{Host, LightPath};

use crate::flags::{BenchFlags, in_range};

/// The emulator's commands.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve the boards (source, detectors, epc) and vendor devices (mpc320, oz-epc) on
    /// pseudo-terminals, one symlink per device in --pty-dir, until interrupted.
    Serve(ServeArgs),
}

/// Which served polarization controller is spliced into the fiber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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
}

/// Flags of `qkd sim serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Directory for the device links (created if missing).
    #[arg(long)]
    pub pty_dir: PathBuf,
    #[command(flatten)]
    pub bench: BenchFlags,
    /// The polarization controller in the light path; the others move nothing optical.
    #[arg(long, value_enum, default_value_t = LightPathArg::Epc)]
    pub light_path: LightPathArg,
    /// Stop after this many seconds instead of waiting for Ctrl-C.
    #[arg(long)]
    pub for_seconds: Option<f64>,
}

pub fn run(command: &SimCommand) -> Result<()> {
    match command {
        SimCommand::Serve(args) => serve(args),
    }
}

fn serve(args: &ServeArgs) -> Result<()> {
    let bench = args.bench.validate()?;
    let stop_after = args
        .for_seconds
        .map(|s| in_range("for-seconds", s, 0.0, 1e7, "s"))
        .transpose()?;
    let host = Host::serve(
        &args.pty_dir,
        &bench.spec,
        args.bench.seed,
        args.light_path.light_path(),
    )
    .with_context(|| format!("serving devices in {}", args.pty_dir.display()))?;
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
    runtime.block_on(async {
        match stop_after {
            Some(seconds) => tokio::time::sleep(Duration::from_secs_f64(seconds)).await,
            None => tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?,
        }
        anyhow::Ok(())
    })?;
    drop(host);
    Ok(())
}
