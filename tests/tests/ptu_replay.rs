//! Recording the emulated bench to PTU and replaying it through the tagger trait: the replay
//! must be indistinguishable from the live stream, down to the detections slot recovery makes.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Cursor;

use qkd_drivers::ptu::{Batching, PtuReader, PtuReplay, PtuWriter, RecordingInfo};
use qkd_drivers::{ChannelRole, Pacing, TagBatch, TaggerError, TimeTagger};
use qkd_firmware_sim::world::{LinkPreset, NodeOutput, PrepareMeasureWorld};
use qkd_postprocess::slots::{Detections, SlotConfig, SlotRecovery};

fn live_stream() -> NodeOutput {
    let mut spec = LinkPreset::Snspd.spec(30.0);
    spec.tagger.drift_ppm = 12.0;
    spec.tagger.offset_ps = 123_456;
    let mut world = PrepareMeasureWorld::new(&spec, 21).unwrap();
    let mut out = NodeOutput::default();
    world.run_until(20_000_000_000, &mut out);
    out
}

fn recovered(times: &[i64], channels: &[u8]) -> Detections {
    let mut slots = SlotRecovery::new(SlotConfig::standard(100e6, 1000)).unwrap();
    let mut out = Detections::default();
    slots.process(times, channels, &mut out);
    slots.finish(&mut out);
    out
}

#[tokio::test]
async fn a_recorded_run_replays_exactly_through_the_tagger_trait() {
    let live = live_stream();
    let info = RecordingInfo {
        resolution_ps: 1,
        input_channels: 4,
        sync_rate_hz: 100_000,
        hardware: "qkd-node emulator".into(),
        comment: "replay test".into(),
    };
    let mut writer = PtuWriter::new(Cursor::new(Vec::new()), &info).unwrap();
    writer
        .write(&live.tag_times_ps, &live.tag_channels)
        .unwrap();
    let file = writer.finish().unwrap().into_inner();

    let reader = PtuReader::new(Cursor::new(file)).unwrap();
    let mut replay = PtuReplay::new(reader, Batching::Records(10_000), Pacing::AsFastAsPossible);
    assert_eq!(replay.channels()[0].role, ChannelRole::Sync);
    assert_eq!(replay.channels().len(), 5);
    assert_eq!(replay.identity().model, "qkd-node emulator");
    let mut all = TagBatch::default();
    let mut batch = TagBatch::default();
    loop {
        match replay.read(&mut batch).await {
            Ok(()) => {
                all.time_ps.extend_from_slice(&batch.time_ps);
                all.channel.extend_from_slice(&batch.channel);
            }
            Err(TaggerError::EndOfRecording {}) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(all.time_ps, live.tag_times_ps);
    assert_eq!(all.channel, live.tag_channels);
    assert_eq!(
        recovered(&all.time_ps, &all.channel),
        recovered(&live.tag_times_ps, &live.tag_channels)
    );
    assert!(matches!(
        replay.set_delay(1, qkd_units::Picoseconds(5)).await,
        Err(TaggerError::Unsupported(_))
    ));
}

/// The batches of `file` replayed by spans of `span_ps`: (span end, times) of each.
async fn spans(file: Vec<u8>, span_ps: i64) -> Vec<(i64, Vec<i64>)> {
    let reader = PtuReader::new(Cursor::new(file)).unwrap();
    let span = qkd_units::Picoseconds(span_ps);
    let mut replay = PtuReplay::new(reader, Batching::Span(span), Pacing::AsFastAsPossible);
    let mut batches = Vec::new();
    let mut batch = TagBatch::default();
    let mut end = None;
    loop {
        match replay.read(&mut batch).await {
            Ok(()) => {
                let first = batch.time_ps.first().copied();
                let this_end = end.map_or_else(
                    || (first.unwrap().div_euclid(span_ps) + 1) * span_ps,
                    |e: i64| e + span_ps,
                );
                end = Some(this_end);
                batches.push((this_end, batch.time_ps.clone()));
            }
            Err(TaggerError::EndOfRecording {}) => return batches,
            Err(e) => panic!("{e}"),
        }
    }
}

fn recording(times: &[i64], channels: &[u8]) -> Vec<u8> {
    let info = RecordingInfo {
        resolution_ps: 1,
        input_channels: 4,
        sync_rate_hz: 0,
        hardware: "span test".into(),
        comment: String::new(),
    };
    let mut writer = PtuWriter::new(Cursor::new(Vec::new()), &info).unwrap();
    writer.write(times, channels).unwrap();
    writer.finish().unwrap().into_inner()
}

#[tokio::test]
async fn recordings_of_two_rates_replayed_by_span_stay_in_step() {
    // Two ends of one run: the same stretch of time, one with every tag, one with a thinned
    // stream (a lossier arm) and a gap of several empty spans.
    let live = live_stream();
    let (times, channels) = (&live.tag_times_ps, &live.tag_channels);
    let full = recording(times, channels);
    let (mut thin_t, mut thin_c) = (Vec::new(), Vec::new());
    for (i, (&t, &c)) in times.iter().zip(channels).enumerate() {
        let in_gap = (5_000_000_000..5_400_000_000).contains(&t);
        if i % 3 == 0 && !in_gap {
            thin_t.push(t);
            thin_c.push(c);
        }
    }
    let thin = recording(&thin_t, &thin_c);
    let span = 100_000_000; // 100 µs
    let (a, b) = (spans(full, span).await, spans(thin, span).await);
    for batches in [&a, &b] {
        for (end, tags) in batches {
            assert!(tags.iter().all(|&t| t < *end && t >= end - span), "{end}");
        }
    }
    // Every tag once, in order.
    let all: Vec<i64> = a.iter().flat_map(|(_, t)| t.iter().copied()).collect();
    assert_eq!(&all, times);
    let all: Vec<i64> = b.iter().flat_map(|(_, t)| t.iter().copied()).collect();
    assert_eq!(all, thin_t);
    // One batch per span from the first tag's to the last's, empty ones included.
    let spans_over = |t: &[i64]| t[t.len() - 1].div_euclid(span) - t[0].div_euclid(span) + 1;
    assert_eq!(a.len() as i64, spans_over(times));
    assert_eq!(b.len() as i64, spans_over(&thin_t));
    // Batch k of one covers the same span as batch k of the other, gap included.
    assert_eq!(a[0].0, b[0].0);
    assert!(a.iter().zip(&b).all(|(x, y)| x.0 == y.0));
    assert!(
        b.iter().any(|(_, t)| t.is_empty()),
        "the gap gives empty spans"
    );
}
