//! `qkd bench ec`: Cascade's efficiency, round trips, frame errors and throughput.

use std::time::Instant;

use anyhow::{Result, bail};
use qkd_firmware_sim::world::rng::SimRng;
use qkd_postprocess::bits::{Bits, binary_entropy};
use qkd_postprocess::cascade::{CascadePlan, Corrector, ParityResponder, Shuffles};
use serde::Serialize;

use super::machine::Machine;
use crate::flags::in_range;
use crate::limits;

/// Peak resident memory of the benchmark per frame bit: both frames, Cascade's permutations
/// and parities (measured with `/usr/bin/time -f %M` on release builds at 10^6 and 10^7 bits:
/// 125 and 128 bytes, rounded up).
const PEAK_BYTES_PER_BIT: u64 = 140;

/// Most frames one run reconciles.
const MAX_FRAMES: u64 = 1_000_000;

/// Most bits one run reconciles, all frames together.
const MAX_TOTAL_BITS: u64 = 10_000_000_000;

/// Flags of `qkd bench ec`.
#[derive(Debug, clap::Args)]
pub struct EcArgs {
    /// Bit error rate of the frames.
    #[arg(long, default_value_t = 0.02, allow_negative_numbers = true)]
    qber: f64,
    /// Bits per frame.
    #[arg(long, default_value_t = 100_000)]
    bits: usize,
    /// Frames to reconcile.
    #[arg(long, default_value_t = 50)]
    frames: u64,
    /// Seed of the frames.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    qber: f64,
    bits: usize,
    frames: u64,
    /// Disclosed parities over `n·h(QBER)`, all frames together.
    efficiency: f64,
    /// Mean question-answer exchanges per frame.
    round_trips: f64,
    /// Share of frames still differing after Cascade (verification would discard them).
    frame_error_rate: f64,
    /// Sifted-key throughput with both sides on one core.
    mbit_per_s: f64,
    /// Throughput of Bob's side alone (corrector), the busier of the two.
    mbit_per_s_corrector: f64,
    /// Throughput of Alice's side alone (responder).
    mbit_per_s_responder: f64,
    /// Baseline of the same run: comparing the two keys word by word.
    baseline_compare_mbit_per_s: f64,
    /// One-time cost of the public shuffles for this frame length, seconds.
    setup_s: f64,
}

/// A random key and a copy with a binomial number of errors at rate `qber`.
fn frame(n: usize, qber: f64, rng: &mut SimRng) -> (Bits, Bits) {
    let alice = Bits::from_word_fn(n, || rng.next_u64());
    let mut bob = alice.clone();
    for i in 0..n {
        if rng.bernoulli(qber) {
            bob.flip(i);
        }
    }
    (alice, bob)
}

pub fn run(args: &EcArgs) -> Result<()> {
    let qber = in_range("qber", args.qber, 1e-4, 0.2, "")?;
    if !(1000..=100_000_000).contains(&args.bits) {
        bail!(
            "--bits: {} is outside the allowed range [1000, 100000000]",
            args.bits
        );
    }
    if !(1..=MAX_FRAMES).contains(&args.frames) {
        bail!(
            "--frames: {} is outside the allowed range [1, {MAX_FRAMES}]",
            args.frames
        );
    }
    let total_bits = args.bits as u64 * args.frames;
    if total_bits > MAX_TOTAL_BITS {
        bail!(
            "--bits {} --frames {}: {total_bits} bits in all, over the {MAX_TOTAL_BITS} a run may reconcile (about 3 minutes here)",
            args.bits,
            args.frames
        );
    }
    limits::ensure_memory(
        &format!("--bits {}", args.bits),
        args.bits as u64 * PEAK_BYTES_PER_BIT,
    )?;
    let setup = Instant::now();
    let shuffles = Shuffles::new(args.bits, &CascadePlan::for_qber(args.bits, qber), 0x5EED)?;
    let setup_s = setup.elapsed().as_secs_f64();
    let mut rng = SimRng::new(args.seed, 0);
    let (mut disclosed, mut shannon, mut trips, mut failures) = (0u64, 0.0, 0u64, 0u64);
    let (mut corrector_s, mut responder_s, mut compare_s) = (0.0, 0.0, 0.0);
    for _ in 0..args.frames {
        let (alice, bob) = frame(args.bits, qber, &mut rng);
        let started = Instant::now();
        let errors = alice.hamming_distance(&bob);
        compare_s += started.elapsed().as_secs_f64();
        shannon += args.bits as f64 * binary_entropy(errors as f64 / args.bits as f64);
        let mut responder = ParityResponder::new(&alice, &shuffles)?;
        let mut corrector = Corrector::new(bob, &shuffles)?;
        loop {
            let t = Instant::now();
            let query = corrector.next_query();
            corrector_s += t.elapsed().as_secs_f64();
            let Some(query) = query else { break };
            let t = Instant::now();
            let answer = responder.answer(&query)?;
            responder_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            corrector.absorb(&answer)?;
            corrector_s += t.elapsed().as_secs_f64();
        }
        let (corrected, report) = corrector.finish();
        disclosed += report.disclosed_bits;
        trips += u64::from(report.round_trips);
        failures += u64::from(corrected != alice);
    }
    let total_bits = total_bits as f64;
    let report = Report {
        machine: Machine::current(),
        qber,
        bits: args.bits,
        frames: args.frames,
        efficiency: disclosed as f64 / shannon,
        round_trips: trips as f64 / args.frames as f64,
        frame_error_rate: failures as f64 / args.frames as f64,
        mbit_per_s: total_bits / (corrector_s + responder_s) / 1e6,
        mbit_per_s_corrector: total_bits / corrector_s / 1e6,
        mbit_per_s_responder: total_bits / responder_s / 1e6,
        baseline_compare_mbit_per_s: total_bits / compare_s.max(1e-9) / 1e6,
        setup_s,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "Cascade, {} frames of {} bits at QBER {}: f = {:.4}, {:.1} round trips, frame errors {}",
            report.frames,
            report.bits,
            report.qber,
            report.efficiency,
            report.round_trips,
            report.frame_error_rate
        );
        println!(
            "  {:.1} Mbit/s both sides on one core (corrector {:.1}, responder {:.1}); compare baseline {:.0} Mbit/s",
            report.mbit_per_s,
            report.mbit_per_s_corrector,
            report.mbit_per_s_responder,
            report.baseline_compare_mbit_per_s
        );
        println!(
            "  machine {} ({} cores)",
            report.machine.cpu, report.machine.cores
        );
    }
    Ok(())
}
