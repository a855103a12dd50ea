//! `qkd tags …`: working with recorded time tags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use qkd_drivers::ptu::{Discard, Mode, PtuReader, RecordingInfo};
use qkd_drivers::tag_stream::StreamTagger;
use qkd_drivers::{ChannelRole, TagBatch, TimeTagger};
use serde::Serialize;

use crate::flags::in_range;
use crate::progress::Progress;
use crate::recording::PtuRecording;

/// Subcommands of `qkd tags`.
#[derive(Debug, Subcommand)]
pub enum TagsCommand {
    /// Decode a PicoQuant PTU file and summarise it.
    Inspect {
        /// The file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Record a tag stream (a `qkd sim serve` bench's, or any tagger served as one) to a PTU
    /// (T2) file; Ctrl-C ends the recording early and keeps it.
    Record {
        /// The stream's address, host:port.
        #[arg(long)]
        stream: String,
        /// The PTU file to write (written beside it as FILE.partial until complete).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Stream time to record, from its first tag, in seconds.
        #[arg(long, allow_negative_numbers = true)]
        seconds: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `qkd tags record --json` prints.
#[derive(Debug, Serialize)]
struct Recorded {
    file: String,
    /// Tags written.
    tags: u64,
    /// Stream time recorded, s.
    seconds: f64,
    /// The recording was ended early (Ctrl-C or SIGTERM).
    interrupted: bool,
    /// Events the stream reported lost while recording.
    missed_events: u64,
}

/// What `qkd tags inspect --json` prints.
#[derive(Debug, Serialize)]
struct Summary {
    file: String,
    /// The header's record type code, e.g. "0x00010203".
    record_type: String,
    /// "T2" or "T3".
    mode: String,
    /// Instrument named in the header.
    hardware: Option<String>,
    /// Records in the file.
    records: u64,
    /// Records the header claims (aborted files may say 0).
    declared_records: Option<u64>,
    /// T2: time unit; T3: dtime bin; ps.
    resolution_ps: f64,
    /// Photon records per channel field (decimal string keys).
    channels: BTreeMap<String, u64>,
    /// Sync records.
    sync_events: u64,
    /// Marker records.
    markers: u64,
    /// Overflow records.
    overflow_records: u64,
    /// Special records of no known kind.
    unknown_special_records: u64,
    /// Arrival time of the first photon record, ps.
    first_ps: Option<i64>,
    /// Arrival time of the last photon record, ps.
    last_ps: Option<i64>,
}

pub fn run(command: &TagsCommand) -> Result<()> {
    match command {
        TagsCommand::Inspect { file, json } => inspect(file, *json),
        TagsCommand::Record {
            stream,
            out,
            seconds,
            json,
        } => {
            let seconds = in_range("seconds", *seconds, 1e-6, 1e7, "s")?;
            let recorded = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(record(stream, out, seconds))?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&recorded)?);
            } else {
                println!(
                    "{}: {} tags over {:.3} s{}",
                    recorded.file,
                    recorded.tags,
                    recorded.seconds,
                    if recorded.interrupted {
                        " (ended early)"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
    }
}

/// Records `seconds` of the stream at `address` into `out`.
async fn record(address: &str, out: &Path, seconds: f64) -> Result<Recorded> {
    let mut tagger = StreamTagger::connect(address)
        .await
        .with_context(|| format!("connecting to the tag stream {address}"))?;
    let info = RecordingInfo {
        resolution_ps: u32::try_from(tagger.resolution().0)
            .ok()
            .filter(|&r| r > 0)
            .with_context(|| {
                format!(
                    "the stream's resolution of {} ps cannot be recorded",
                    tagger.resolution().0
                )
            })?,
        input_channels: tagger
            .channels()
            .iter()
            .filter(|c| matches!(c.role, ChannelRole::Detector(_)))
            .count() as u32,
        sync_rate_hz: 0,
        hardware: tagger.identity().model.clone(),
        comment: format!("qkd tags record --stream {address} --seconds {seconds}"),
    };
    let mut recording = PtuRecording::create(out, &info)?;
    let span_ps = (seconds * 1e12).round() as i64;
    let mut progress = Progress::new("recorded");
    let (mut batch, mut tags, mut missed) = (TagBatch::default(), 0u64, 0u64);
    // The first tag and the last one recorded.
    let (mut start, mut last) = (None, None);
    let stop = crate::node::shutdown_signal();
    tokio::pin!(stop);
    // Ended early (a signal, or the stream failing: what came before is kept either way).
    let (interrupted, failed) = loop {
        tokio::select! {
            read = tagger.read(&mut batch) => if let Err(e) = read {
                break (true, Some(e));
            },
            stopped = &mut stop => {
                stopped?;
                break (true, None);
            }
        }
        missed += batch.missed_events;
        let Some(&first) = batch.time_ps.first() else {
            continue;
        };
        let from = *start.get_or_insert(first);
        let cut = batch
            .time_ps
            .partition_point(|&t| t < from.saturating_add(span_ps));
        recording.write(&batch.time_ps[..cut], &batch.channel[..cut])?;
        tags += cut as u64;
        last = batch.time_ps[..cut].last().copied().or(last);
        progress.update(last.map_or(0, |l| l - from) as f64 * 1e-12, seconds);
        if cut < batch.len() {
            break (false, None);
        }
    };
    progress.finish();
    recording.finish()?;
    if let Some(e) = failed {
        bail!(
            "reading the tag stream {address}: {e}; the {tags} tags recorded until then are in {}",
            out.display()
        );
    }
    Ok(Recorded {
        file: out.display().to_string(),
        tags,
        seconds: start
            .zip(last)
            .map_or(0.0, |(first, last)| (last - first) as f64 * 1e-12),
        interrupted,
        missed_events: missed,
    })
}

fn inspect(file: &PathBuf, json: bool) -> Result<()> {
    let mut reader =
        PtuReader::open(file).with_context(|| format!("reading {}", file.display()))?;
    reader
        .decode_all(&mut Discard)
        .with_context(|| format!("decoding {}", file.display()))?;
    let layout = *reader.layout();
    let stats = reader.stats();
    let resolution_s = match layout.format.mode() {
        Mode::T2 => layout.global_resolution_s,
        Mode::T3 => layout.resolution_s,
    };
    let summary = Summary {
        file: file.display().to_string(),
        record_type: format!("0x{:08X}", layout.code),
        mode: layout.format.mode().to_string(),
        hardware: reader.header().text("HW_Type").map(str::to_owned),
        records: stats.records,
        declared_records: layout.declared_records,
        // Header floats carry rounding noise (4.000000000000001e-12): keep a femtosecond.
        resolution_ps: (resolution_s * 1e15).round() / 1e3,
        channels: stats
            .photons_by_channel
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| (c.to_string(), *n))
            .collect(),
        sync_events: stats.sync_events,
        markers: stats.markers,
        overflow_records: stats.overflow_records,
        unknown_special_records: stats.unknown_special,
        first_ps: stats.first_photon_ps,
        last_ps: stats.last_photon_ps,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!("{}", summary.file);
    println!(
        "  record type {} ({}), {}, resolution {} ps",
        summary.record_type,
        summary.mode,
        summary.hardware.as_deref().unwrap_or("unknown instrument"),
        summary.resolution_ps
    );
    println!(
        "  {} records (header says {}), {} overflow, {} sync, {} markers",
        summary.records,
        summary
            .declared_records
            .map_or_else(|| "nothing".to_owned(), |n| n.to_string()),
        summary.overflow_records,
        summary.sync_events,
        summary.markers
    );
    for (channel, count) in &summary.channels {
        println!("  channel {channel:>2}: {count} photons");
    }
    if let (Some(first), Some(last)) = (summary.first_ps, summary.last_ps) {
        println!(
            "  photons from {first} ps to {last} ps ({:.6} s)",
            (last - first) as f64 * 1e-12
        );
    }
    Ok(())
}
