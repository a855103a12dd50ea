//! `qkd tags …`: working with recorded time tags.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use qkd_drivers::ptu::{Discard, Mode, PtuReader};
use serde::Serialize;

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
    }
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
