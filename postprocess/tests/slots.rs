//! Slot recovery against the emulator's ground truth: clock offset and drift, channel delays,
//! jitter, gating, missing and spurious syncs.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use qkd_firmware_sim::world::{
    ClickOrigin, LinkPreset, LinkSpec, MARKER_CHANNEL, NodeOutput, PrepareMeasureWorld,
};
use qkd_postprocess::slots::{Detections, SlotConfig, SlotRecovery};
use qkd_units::pattern::PatternKey;

/// Tagger channel delays: sync first, then H, V, D, A.
const DELAYS: [i64; 5] = [400, 1_600, -400, 700, 2_900];

fn bench(drift_ppm: f64) -> LinkSpec {
    let mut spec = LinkPreset::Snspd.spec(20.0);
    spec.tagger.offset_ps = 7_777_777;
    spec.tagger.drift_ppm = drift_ppm;
    spec.tagger.channel_delays_ps = DELAYS;
    spec
}

fn config(gate_ps: i64) -> SlotConfig {
    SlotConfig {
        delays_ps: std::array::from_fn(|d| DELAYS[d + 1] - DELAYS[0]),
        gate_ps,
        ..SlotConfig::standard(100e6, 1000)
    }
}

/// Runs the bench, feeding tags to slot recovery batch by batch.
fn recover(
    spec: &LinkSpec,
    slots: &mut SlotRecovery,
    seconds: f64,
    edit: impl Fn(&mut NodeOutput),
) -> (Detections, NodeOutput) {
    let mut world = PrepareMeasureWorld::new(spec, 5).unwrap();
    let mut detections = Detections::default();
    let mut truth = NodeOutput::default();
    let mut out = NodeOutput::default();
    let step = 1_000_000_000; // 1 ms batches
    let end = (seconds * 1e12) as i64;
    while world.now_ps() < end {
        out.clear();
        world.run_until(world.now_ps() + step, &mut out);
        edit(&mut out);
        slots.process(&out.tag_times_ps, &out.tag_channels, &mut detections);
        truth.clicks.slot.extend_from_slice(&out.clicks.slot);
        truth
            .clicks
            .detector
            .extend_from_slice(&out.clicks.detector);
        truth.clicks.origin.extend_from_slice(&out.clicks.origin);
    }
    slots.finish(&mut detections);
    (detections, truth)
}

fn photon_clicks(truth: &NodeOutput) -> HashSet<(u64, u8)> {
    (0..truth.clicks.len())
        .filter(|&i| truth.clicks.origin[i] == ClickOrigin::Photon)
        .map(|i| (truth.clicks.slot[i], truth.clicks.detector[i]))
        .collect()
}

#[test]
fn recovers_every_photon_slot_despite_offset_drift_and_delays() {
    let mut slots = SlotRecovery::new(config(1_000)).unwrap();
    let (detections, truth) = recover(&bench(35.0), &mut slots, 0.03, |_| {});
    let photons = photon_clicks(&truth);
    let recovered: HashSet<(u64, u8)> = detections
        .slot
        .iter()
        .zip(&detections.mask)
        .flat_map(|(&s, &m)| {
            (0..4)
                .filter(move |d| m & (1 << d) != 0)
                .map(move |d| (s, d))
        })
        .collect();
    assert!(photons.len() > 100_000);
    let missing = photons.difference(&recovered).count();
    assert_eq!(missing, 0, "every photon click lands in its own slot");
    // Everything recovered beyond the photons is a dark count that fell inside a gate.
    assert!(recovered.len() - photons.len() <= 5);
    assert!(
        detections.slot.windows(2).all(|w| w[0] < w[1]),
        "one entry per slot, in order"
    );
    let ppm = slots.clock_error_ppm().unwrap();
    assert!((ppm - 35.0).abs() < 0.05, "tracked clock error {ppm} ppm");
    let stats = slots.stats();
    assert_eq!(
        (stats.missed_syncs, stats.rejected_syncs, stats.before_lock),
        (0, 0, 0)
    );
    // Double clicks are flagged.
    let doubles = (0..detections.len())
        .filter(|&i| detections.is_double_click(i))
        .count();
    assert!(doubles > 0);
}

#[test]
fn missing_and_spurious_syncs_are_counted_and_do_not_derail_the_clock() {
    let mut slots = SlotRecovery::new(config(1_000)).unwrap();
    let drop_and_inject = |out: &mut NodeOutput| {
        let mut times = Vec::new();
        let mut channels = Vec::new();
        let mut syncs = 0;
        for (&t, &c) in out.tag_times_ps.iter().zip(&out.tag_channels) {
            if c == 0 {
                syncs += 1;
                if syncs % 10 == 3 {
                    continue; // lose one sync in ten
                }
                if syncs % 25 == 0 {
                    times.push(t - 3_333_333); // a spurious sync a third of a period early
                    channels.push(0);
                }
            }
            times.push(t);
            channels.push(c);
        }
        out.tag_times_ps = times;
        out.tag_channels = channels;
    };
    let (detections, truth) = recover(&bench(-20.0), &mut slots, 0.02, drop_and_inject);
    let photons = photon_clicks(&truth);
    let recovered: HashSet<u64> = detections.slot.iter().copied().collect();
    assert!(photons.iter().all(|(s, _)| recovered.contains(s)));
    let stats = slots.stats();
    assert!(stats.missed_syncs >= 150, "{stats:?}");
    assert!(stats.rejected_syncs >= 70, "{stats:?}");
}

#[test]
fn the_gate_rejects_dark_counts_between_slots_in_proportion() {
    // Source off, dark counts only: a gate of g in a period T keeps a share g/T of them.
    let mut spec = bench(10.0);
    for d in &mut spec.receiver.detectors {
        d.dark = qkd_firmware_sim::world::DarkCountSpec::FreeRunning { rate_hz: 2e5 };
        d.dead_time_ps = 0;
    }
    let mut world_spec = spec.clone();
    world_spec.source.intensities[0].mean_photon_number = 0.0;
    world_spec.source.intensities[1].mean_photon_number = 0.0;
    let gate = 2_000;
    let mut slots = SlotRecovery::new(config(gate)).unwrap();
    let (_, _) = recover(&world_spec, &mut slots, 0.2, |_| {});
    let stats = slots.stats();
    let total = (stats.in_gate + stats.outside_gate) as f64;
    let share = stats.in_gate as f64 / total;
    let expected = gate as f64 / 10_000.0;
    let sigma = (expected * (1.0 - expected) / total).sqrt();
    assert!(
        (share - expected).abs() < 5.0 * sigma,
        "{share} vs {expected}"
    );
}

#[test]
fn bad_configurations_are_refused_with_a_reason() {
    let mut c = config(1_000);
    c.gate_ps = 20_000;
    assert!(
        SlotRecovery::new(c)
            .unwrap_err()
            .to_string()
            .contains("gate")
    );
    let mut c = config(1_000);
    c.nominal_rate_hz = f64::NAN;
    assert!(SlotRecovery::new(c).is_err());
    let mut c = config(1_000);
    c.detector_channels[2] = 0;
    assert!(SlotRecovery::new(c).is_err());
    let mut c = config(1_000);
    c.sync_divider = 0;
    assert!(SlotRecovery::new(c).is_err());
}

#[test]
fn slots_count_from_the_sync_a_node_pattern_starts_at() {
    // A node loads its pattern 12.3 ms in; the source marks the sync it starts at, and slot
    // recovery with the marker input numbers slots from there: every photon click after the
    // start lands in its slot counted from the start, and nothing before it is numbered.
    let spec = bench(35.0);
    let mut world = PrepareMeasureWorld::new(&spec, 5).unwrap();
    let mut slots = SlotRecovery::new(config(1_000).marked(MARKER_CHANNEL)).unwrap();
    let mut detections = Detections::default();
    let mut clicks = Vec::new();
    let mut out = NodeOutput::default();
    let step = 1_000_000_000;
    let mut start = None;
    while world.now_ps() < 30 * step {
        if start.is_none() && world.now_ps() >= 12 * step {
            world.run_until(world.now_ps() + 300_000_000, &mut out);
            start = Some(world.start_pattern(&PatternKey::from_bytes([7; 32])));
        }
        world.run_until(world.now_ps() + step, &mut out);
        slots.process(&out.tag_times_ps, &out.tag_channels, &mut detections);
        for i in 0..out.clicks.len() {
            if out.clicks.origin[i] == ClickOrigin::Photon {
                clicks.push((out.clicks.slot[i], out.clicks.detector[i]));
            }
        }
        out.clear();
    }
    slots.finish(&mut detections);
    let start = start.unwrap();
    assert_eq!(start % 1000, 0, "patterns start at a sync");
    let expected: HashSet<(u64, u8)> = clicks
        .iter()
        .filter(|&&(slot, _)| slot >= start)
        .map(|&(slot, d)| (slot - start, d))
        .collect();
    let recovered: HashSet<(u64, u8)> = detections
        .slot
        .iter()
        .zip(&detections.mask)
        .flat_map(|(&s, &m)| {
            (0..4)
                .filter(move |d| m & (1 << d) != 0)
                .map(move |d| (s, d))
        })
        .collect();
    assert!(expected.len() > 50_000);
    assert_eq!(expected.difference(&recovered).count(), 0);
    // Beyond the photons only dark counts inside a gate (a handful in 18 ms).
    assert!(recovered.len() - expected.len() <= 5);
    assert_eq!(slots.stats().markers, 1);
    assert!(
        slots.stats().before_lock > 0,
        "the clicks before the start were dropped"
    );
}
