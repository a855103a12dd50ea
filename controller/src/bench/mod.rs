//! `qkd bench …`: throughput figures printed as JSON, each with the machine it ran on and a
//! baseline measured in the same run (these machines are shared and noisy).

mod ec;
mod emulate;
mod ingest;
mod kme;
mod machine;
mod pa;
mod serial;
pub mod tracking;

use anyhow::Result;
use clap::Subcommand;

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Emulated detection events per second, per preset.
    Emulate(emulate::EmulateBenchArgs),
    /// Cascade error correction: efficiency, round trips, frame errors, throughput.
    Ec(ec::EcArgs),
    /// Privacy amplification throughput.
    Pa(pa::PaArgs),
    /// Tag ingest: slot recovery, PTU decoding and the coincidence offset search.
    Ingest(ingest::IngestArgs),
    /// Polarization tracking on the emulated bench, scored against the true rotation.
    Tracking(tracking::TrackingArgs),
    /// Command round trips to the emulated devices through pseudo-terminals.
    Serial(serial::SerialArgs),
    /// ETSI GS QKD 014 requests against two KMEs on loopback (mutual TLS, stores on disk).
    Kme(kme::KmeArgs),
}

pub fn run(command: &BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Emulate(args) => emulate::run(args),
        BenchCommand::Ec(args) => ec::run(args),
        BenchCommand::Pa(args) => pa::run(args),
        BenchCommand::Ingest(args) => ingest::run(args),
        BenchCommand::Tracking(args) => tracking::run(args),
        BenchCommand::Serial(args) => serial::run(args),
        BenchCommand::Kme(args) => kme::run(args),
    }
}

/// Runs `work` `repeat` times and returns the median wall time in seconds.
pub fn median_seconds(repeat: usize, mut work: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..repeat.max(1))
        .map(|_| {
            let start = std::time::Instant::now();
            work();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The `q` quantile (0 to 1) of `sorted`, which must not be empty: the nearest rank.
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
