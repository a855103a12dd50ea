//! What `qkd link` reports, computed from both nodes' block outcomes.

use std::collections::BTreeMap;

use qkd_postprocess::bits::binary_entropy;
use serde::Serialize;

use qkd_runtime::block::{BlockDetails, BlockReport};
use qkd_runtime::keys::MemorySink;
use qkd_runtime::session::MeasurerProgress;
use qkd_runtime::tracking::TrackingFigures;

/// Figures of the run that do not come from the blocks.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RunFigures {
    /// "bb84" or "bbm92".
    pub protocol: &'static str,
    /// Bench preset.
    pub preset: &'static str,
    /// Fiber length in km.
    pub distance_km: f64,
    /// Emulated link time.
    pub seconds: f64,
    /// Seed of the run.
    pub seed: u64,
    /// Seals also carried ML-DSA signatures.
    pub hybrid_auth: bool,
    /// Eavesdropper's share of pulses.
    pub eve_fraction: f64,
    /// Key bits per block.
    pub block_bits: usize,
    /// Pulses sent (BB84) or pairs with a photon towards a detector (BBM92).
    pub pulses: u64,
    /// Detections (BB84) or coincidences (BBM92) announced.
    pub detections: u64,
    /// Key-basis bits after sifting.
    pub sifted_bits: u64,
    /// Authentication key spent by each node, bits (refilled from the keys).
    pub auth_bits_spent: u64,
}

/// The run as the JSON on stdout shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    #[serde(flatten)]
    pub run: RunFigures,
    /// Key-basis error rate corrected by Cascade (null without a corrected block).
    pub qber_z: Option<f64>,
    /// Test-basis error rate.
    pub qber_x: Option<f64>,
    /// Disclosed parities over `n·h(QBER)` of the corrected blocks.
    pub ec_efficiency: Option<f64>,
    /// Parities disclosed by error correction.
    pub disclosed_bits: u64,
    /// Cascade round trips, all blocks.
    pub round_trips: u64,
    /// Secret key delivered (after the authentication refill).
    pub secret_bits: u64,
    /// Secret bits per second of link time.
    pub secret_key_rate_bps: f64,
    /// Blocks opened.
    pub blocks: u64,
    /// Blocks that produced no key.
    pub aborted_blocks: u64,
    /// Why blocks produced no key, with counts.
    pub abort_reasons: BTreeMap<String, u64>,
    /// Both nodes committed the same, non-empty, list of keys, compared in process (no
    /// key-derived value is printed); false when there is no key to compare.
    pub keys_match: bool,
    /// Keys the two nodes committed (the measurer's count; `keys_match` says they agree).
    pub keys_compared: u64,
    /// Channel resynchronisations after failures (each cost the block in progress).
    pub resyncs: u64,
    /// Key-basis bits forgotten with a block that gave no key (their messages unsealed).
    pub discarded_key_bits: u64,
    /// Each block's estimation inputs and outputs, in order: its key length can be recomputed
    /// from them to the bit.
    pub block_details: Vec<BlockDetails>,
    /// Tagger batches measured while polarization tracking had paused key generation
    /// (aligning, or far from its floor): flagged to Alice, and their bits kept out of blocks.
    pub held_batches: u64,
    /// Key-basis bits those batches carried, held back.
    pub held_key_bits: u64,
    /// What polarization tracking did (`--track`), null without it.
    pub tracking: Option<TrackingFigures>,
    /// Wall-clock time of the run.
    pub wall_s: f64,
}

impl LinkReport {
    /// Builds the report from both sides' block reports and keys (the measurer's reports carry
    /// the corrected error counts; both count the same disclosure).
    pub fn new(
        run: RunFigures,
        alice: &[BlockReport],
        bob: &[BlockReport],
        alice_keys: &MemorySink,
        bob_keys: &MemorySink,
        progress: &MeasurerProgress,
    ) -> Self {
        let keys_compared = bob_keys.committed().len() as u64;
        let keys_match = keys_compared > 0 && alice_keys.committed() == bob_keys.committed();
        let mut abort_reasons = BTreeMap::new();
        for r in bob {
            if let Some(reason) = &r.aborted {
                *abort_reasons.entry(reason.clone()).or_insert(0) += 1;
            }
        }
        let corrected: Vec<_> = bob.iter().filter(|r| r.disclosed_bits > 0).collect();
        let (errors, bits): (u64, u64) = corrected.iter().fold((0, 0), |(e, n), r| {
            (e + r.corrected_bits, n + r.key_bits as u64)
        });
        let shannon: f64 = corrected
            .iter()
            .map(|r| {
                let n = r.key_bits as f64;
                n * binary_entropy(r.corrected_bits as f64 / n)
            })
            .sum();
        let disclosed: u64 = alice.iter().map(|r| r.disclosed_bits).sum();
        let (test_errors, test_bits) = bob.iter().fold((0, 0), |(e, n), r| {
            (e + r.test_errors, n + r.test_bits as u64)
        });
        let secret_bits = progress.secret_bits;
        LinkReport {
            run,
            qber_z: (bits > 0).then(|| errors as f64 / bits as f64),
            qber_x: (test_bits > 0).then(|| test_errors as f64 / test_bits as f64),
            ec_efficiency: (shannon > 0.0)
                .then(|| corrected.iter().map(|r| r.disclosed_bits).sum::<u64>() as f64 / shannon),
            disclosed_bits: disclosed,
            round_trips: bob.iter().map(|r| u64::from(r.round_trips)).sum(),
            secret_bits,
            secret_key_rate_bps: secret_bits as f64 / run.seconds,
            blocks: bob.len() as u64,
            aborted_blocks: bob.iter().filter(|r| r.aborted.is_some()).count() as u64,
            abort_reasons,
            keys_match,
            keys_compared,
            resyncs: progress.resyncs,
            discarded_key_bits: progress.discarded_key_bits,
            block_details: bob.iter().filter_map(|r| r.details.clone()).collect(),
            held_batches: progress.held_batches,
            held_key_bits: progress.held_key_bits,
            tracking: None,
            wall_s: 0.0,
        }
    }

    /// The operator's table.
    pub fn print(&self) {
        let pct =
            |r: Option<f64>| r.map_or_else(|| "n/a".to_owned(), |r| format!("{:.3} %", 100.0 * r));
        println!(
            "{} link `{}`: {} km, {} s emulated, eve {} (seed {})",
            self.run.protocol,
            self.run.preset,
            self.run.distance_km,
            self.run.seconds,
            self.run.eve_fraction,
            self.run.seed
        );
        println!(
            "  pulses / detections    {} / {}",
            self.run.pulses, self.run.detections
        );
        println!("  sifted key bits        {}", self.run.sifted_bits);
        println!(
            "  QBER                   Z {}  X {}",
            pct(self.qber_z),
            pct(self.qber_x)
        );
        println!(
            "  error correction       {} parities, f = {}, {} round trips",
            self.disclosed_bits,
            self.ec_efficiency
                .map_or_else(|| "n/a".to_owned(), |f| format!("{f:.3}")),
            self.round_trips
        );
        println!(
            "  blocks                 {} ({} without key{})",
            self.blocks,
            self.aborted_blocks,
            if self.abort_reasons.is_empty() {
                String::new()
            } else {
                format!(": {:?}", self.abort_reasons)
            }
        );
        println!(
            "  secret key             {} bits, {:.1} bit/s, keys match: {}",
            self.secret_bits, self.secret_key_rate_bps, self.keys_match
        );
        if let Some(t) = &self.tracking {
            println!(
                "  tracking               aligned in {}, {} sweeps, {} moves; {} batches held ({} key bits)",
                t.alignment_s
                    .map_or_else(|| "(not done)".to_owned(), |s| format!("{s:.2} s")),
                t.sweeps,
                t.actuator_moves,
                self.held_batches,
                self.held_key_bits
            );
        }
        println!("  wall time              {:.2} s", self.wall_s);
    }
}
