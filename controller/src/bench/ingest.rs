//! `qkd bench ingest`: how fast tags become detections, PTU files become tags, and two
//! free-running taggers find their offset.

use std::hint::black_box;
use std::io::Cursor;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use qkd_drivers::TagBatch;
use qkd_drivers::ptu::{PtuReader, PtuWriter, RecordingInfo};
use qkd_firmware_sim::world::{
    DetectorPreset, EntangledLinkSpec, EntangledWorld, FiberSpec, LinkPreset, NodeOutput,
    PrepareMeasureWorld, ReceiverSpec, SpdcSourceSpec,
};
use qkd_postprocess::coincidence::{OffsetSearch, find_offset};
use qkd_postprocess::slots::{Detections, SlotConfig, SlotRecovery};
use serde::Serialize;

use super::machine::Machine;
use super::median_seconds;
use crate::flags::in_range;

/// Tags handed to slot recovery per call, as a tagger batch would be.
const BATCH: usize = 1 << 20;

/// Flags of `qkd bench ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Emulated seconds of the 100 MHz prepare-and-measure stream to ingest.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    seconds: f64,
    /// Seconds of the two entangled streams for the offset search.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    offset_stream_seconds: f64,
    /// Timed repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Seed of the emulated streams.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    /// Tags in the prepare-and-measure stream (detectors and sync).
    tags: usize,
    /// Slot recovery throughput on one core.
    tags_per_s: f64,
    /// Baseline of the same run: one pass that only reads every tag.
    baseline_read_tags_per_s: f64,
    /// Detections slot recovery produced.
    detections: usize,
    /// Records in the PTU rendering of the stream.
    ptu_records: u64,
    /// PTU decoding throughput into tag batches, one core.
    ptu_records_per_s: f64,
    /// Tags per side in the offset search.
    offset_stream_tags: [usize; 2],
    /// True offset between the entangled streams, ps.
    offset_true_ps: f64,
    /// Offset found, ps.
    offset_found_ps: f64,
    /// Wall time of the search, s.
    offset_search_s: f64,
}

fn prepare_measure_stream(seconds: f64, seed: u64) -> Result<(Vec<i64>, Vec<u8>)> {
    let spec = LinkPreset::Snspd.spec(5.0);
    let mut world = PrepareMeasureWorld::new(&spec, seed)?;
    let mut out = NodeOutput::default();
    world.run_until((seconds * 1e12) as i64, &mut out);
    Ok((out.tag_times_ps, out.tag_channels))
}

fn slot_config() -> SlotConfig {
    SlotConfig::standard(100e6, 1000)
}

/// Two taggers 0.8 ms apart whose clocks differ by 5 ppm.
fn entangled_streams(seconds: f64, seed: u64) -> Result<([NodeOutput; 2], EntangledWorld)> {
    let mut spec = EntangledLinkSpec::new(
        SpdcSourceSpec {
            pair_rate_hz: 1e6,
            coupling_efficiency: 0.4,
            ..SpdcSourceSpec::with_rate(1e6)
        },
        [FiberSpec::standard(3.0), FiberSpec::standard(11.0)],
        ReceiverSpec::uniform(DetectorPreset::Snspd.spec()),
    );
    spec.tagger_b.offset_ps = 800_000_000;
    spec.tagger_b.drift_ppm = 5.0;
    let mut world = EntangledWorld::new(&spec, seed)?;
    let mut out = [NodeOutput::default(), NodeOutput::default()];
    world.run_until((seconds * 1e12) as i64, &mut out);
    Ok((out, world))
}

/// Median slot-recovery time over the stream, and the detections it made.
fn time_slot_recovery(times: &[i64], channels: &[u8], repeat: usize) -> Result<(f64, usize)> {
    let mut detections = Detections::default();
    let seconds = median_seconds(repeat, || {
        detections.clear();
        if let Ok(mut recovery) = SlotRecovery::new(slot_config()) {
            for (t, c) in times.chunks(BATCH).zip(channels.chunks(BATCH)) {
                recovery.process(t, c, &mut detections);
            }
            recovery.finish(&mut detections);
        }
    });
    ensure!(!detections.is_empty(), "slot recovery produced nothing");
    Ok((seconds, detections.len()))
}

/// Median time to decode the stream rendered as a PTU file, and its record count.
fn time_ptu_decoding(times: &[i64], channels: &[u8], repeat: usize) -> Result<(f64, u64)> {
    let info = RecordingInfo {
        resolution_ps: 1,
        input_channels: 4,
        sync_rate_hz: 100_000,
        hardware: "qkd-node emulator".into(),
        comment: "qkd bench ingest".into(),
    };
    let mut writer = PtuWriter::new(Cursor::new(Vec::new()), &info)?;
    writer.write(times, channels)?;
    let ptu = writer.finish()?.into_inner();
    let mut decoded = TagBatch::default();
    let mut records = 0;
    let seconds = median_seconds(repeat, || {
        decoded.clear();
        if let Ok(mut reader) = PtuReader::new(Cursor::new(&ptu)) {
            let mut batch = TagBatch::default();
            while let Ok(n) = reader.decode_next(BATCH, &mut batch) {
                if n == 0 {
                    break;
                }
                decoded.time_ps.extend_from_slice(&batch.time_ps);
                batch.clear();
            }
            records = reader.stats().records;
        }
    });
    ensure!(
        decoded.time_ps == times,
        "the PTU round trip changed the stream"
    );
    Ok((seconds, records))
}

pub fn run(args: &IngestArgs) -> Result<()> {
    let seconds = in_range("seconds", args.seconds, 1e-3, 100.0, "s")?;
    let offset_seconds = in_range(
        "offset-stream-seconds",
        args.offset_stream_seconds,
        0.1,
        100.0,
        "s",
    )?;
    eprintln!("generating {seconds} s of emulated tags …");
    let (times, channels) = prepare_measure_stream(seconds, args.seed)?;
    let baseline = median_seconds(args.repeat, || {
        let mut sum = 0i64;
        for (&t, &c) in times.iter().zip(&channels) {
            sum = sum.wrapping_add(t ^ i64::from(c));
        }
        black_box(sum);
    });
    let (slots, detections) = time_slot_recovery(&times, &channels, args.repeat)?;
    let (decode, records) = time_ptu_decoding(&times, &channels, args.repeat)?;

    eprintln!("generating {offset_seconds} s of two entangled streams …");
    let ([a, b], world) = entangled_streams(offset_seconds, args.seed)?;
    let started = Instant::now();
    let estimate = find_offset(&a.tag_times_ps, &b.tag_times_ps, &OffsetSearch::default())
        .context("the offset search failed")?;
    let offset_search_s = started.elapsed().as_secs_f64();
    let report = Report {
        machine: Machine::current(),
        tags: times.len(),
        tags_per_s: times.len() as f64 / slots,
        baseline_read_tags_per_s: times.len() as f64 / baseline,
        detections,
        ptu_records: records,
        ptu_records_per_s: records as f64 / decode,
        offset_stream_tags: [a.tag_times_ps.len(), b.tag_times_ps.len()],
        offset_true_ps: world.partner_offset_ps(estimate.model.reference_ps),
        offset_found_ps: estimate.model.offset_ps,
        offset_search_s,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report, offset_seconds);
    }
    Ok(())
}

fn print_table(report: &Report, offset_seconds: f64) {
    println!(
        "slot recovery   {:.1} M tags/s (read-only baseline {:.1} M/s), {} tags → {} detections",
        report.tags_per_s / 1e6,
        report.baseline_read_tags_per_s / 1e6,
        report.tags,
        report.detections
    );
    println!(
        "PTU decoding    {:.1} M records/s ({} records)",
        report.ptu_records_per_s / 1e6,
        report.ptu_records
    );
    println!(
        "offset search   {:.3} s over 2 × {offset_seconds} s streams: found {:.1} ps, true {:.1} ps",
        report.offset_search_s, report.offset_found_ps, report.offset_true_ps
    );
    println!(
        "machine         {} ({} cores)",
        report.machine.cpu, report.machine.cores
    );
}
