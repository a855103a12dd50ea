//! Recording the emulated bench to PTU and replaying it through the tagger trait: the replay
//! must be indistinguishable from the live stream, down to the detections slot recovery makes.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Cursor;

use qkd_drivers::ptu::{PtuReader, PtuReplay, PtuWriter, RecordingInfo};
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
    let mut replay = PtuReplay::new(reader, 10_000, Pacing::AsFastAsPossible);
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
