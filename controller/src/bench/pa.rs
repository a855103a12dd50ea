//! `qkd bench pa`: privacy amplification throughput, checked row by row against the direct hash.

use std::time::Instant;

use anyhow::{Result, bail, ensure};
use qkd_firmware_sim::world::rng::SimRng;
use qkd_postprocess::bits::Bits;
use qkd_postprocess::toeplitz::{PlanCache, hash_rows};
use serde::Serialize;

use super::machine::Machine;
use super::median_seconds;
use crate::flags::in_range;
use crate::limits;

/// Rows compared with the direct computation.
const CHECKED_ROWS: usize = 64;

/// Flags of `qkd bench pa`.
#[derive(Debug, clap::Args)]
pub struct PaArgs {
    /// Input bits.
    #[arg(long, default_value_t = 10_000_000)]
    bits: usize,
    /// Output length as a share of the input.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    output_ratio: f64,
    /// Timed repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    bits: usize,
    output_bits: usize,
    /// Input throughput with plans cached (steady state of a running node).
    mbit_per_s: f64,
    /// One-time planning for this length, seconds.
    planning_s: f64,
    /// Output rows checked against the direct hash (all agreed).
    rows_checked: usize,
}

/// Peak resident memory per input bit: input, seed, the FFT buffers and the output (measured
/// with `/usr/bin/time -f %M` on release builds at 10^6 and 10^7 bits: 32 and 26 bytes, the
/// first dominated by the process's own footprint).
const PEAK_BYTES_PER_BIT: u64 = 30;

pub fn run(args: &PaArgs) -> Result<()> {
    if !(1000..=200_000_000).contains(&args.bits) {
        bail!(
            "--bits: {} is outside the allowed range [1000, 200000000]",
            args.bits
        );
    }
    let ratio = in_range("output-ratio", args.output_ratio, 1e-6, 1.0, "")?;
    limits::ensure_memory(
        &format!("--bits {}", args.bits),
        args.bits as u64 * PEAK_BYTES_PER_BIT,
    )?;
    let n = args.bits;
    let m = ((n as f64 * ratio) as usize).max(1);
    let mut rng = SimRng::new(0x1234_5678_9ABC_DEF1, 0);
    let input = Bits::from_word_fn(n, || rng.next_u64());
    let seed = Bits::from_word_fn(n + m - 1, || rng.next_u64());
    let mut plans = PlanCache::default();
    let started = Instant::now();
    let hasher = plans.hasher(n, m);
    // The first call faults the buffers in; a running node pays that once per block length.
    hasher.hash(&input, &seed, m)?;
    let planning_s = started.elapsed().as_secs_f64();
    let mut output = Bits::default();
    let mut failure = None;
    let seconds = median_seconds(args.repeat, || match hasher.hash(&input, &seed, m) {
        Ok(out) => output = out,
        Err(e) => failure = Some(e),
    });
    if let Some(e) = failure {
        bail!("privacy amplification failed: {e}");
    }
    // Both ends, where a wrong offset or wrap-around would show, and rows spread across the
    // middle, which pass through every part of the blocked transform.
    let quarter = CHECKED_ROWS / 4;
    let mut rows: Vec<usize> = (0..quarter)
        .chain((0..2 * quarter).map(|i| (2 * i + 1) * m / (4 * quarter)))
        .chain(m.saturating_sub(quarter)..m)
        .collect();
    rows.sort_unstable();
    rows.dedup();
    let direct = hash_rows(&input, &seed, m, &rows)?;
    for (&row, &bit) in rows.iter().zip(&direct) {
        ensure!(
            output.get(row) == bit,
            "row {row} differs from the direct hash"
        );
    }
    let report = Report {
        machine: Machine::current(),
        bits: n,
        output_bits: m,
        mbit_per_s: n as f64 / seconds / 1e6,
        planning_s,
        rows_checked: rows.len(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "Toeplitz PA {} → {} bits: {:.1} Mbit/s of input ({:.3} s planning once), {} rows checked",
            report.bits,
            report.output_bits,
            report.mbit_per_s,
            report.planning_s,
            report.rows_checked
        );
        println!(
            "  machine {} ({} cores)",
            report.machine.cpu, report.machine.cores
        );
    }
    Ok(())
}
