//! Reading a tagger for a stretch of link time: what every calibration step shares.

use std::time::Duration;

use qkd_drivers::{ChannelRole, TagBatch, TaggerChannel, TaggerError, TimeTagger};
use qkd_postprocess::slots::{Detections, SlotRecovery};

/// Tagger reads that cover at least `duration` when each covers `batch` (at least one).
pub fn reads_covering(duration: Duration, batch: Duration) -> u128 {
    duration.as_nanos().div_ceil(batch.as_nanos().max(1)).max(1)
}

/// The inputs wired to detectors, as (detector number, tagger input), sorted by detector.
pub fn detector_inputs(channels: &[TaggerChannel]) -> Vec<(u8, u8)> {
    let mut inputs: Vec<(u8, u8)> = channels
        .iter()
        .filter_map(|c| match c.role {
            ChannelRole::Detector(d) => Some((d, c.index)),
            _ => None,
        })
        .collect();
    inputs.sort_unstable();
    inputs
}

/// Reads `duration` of tags through `recovery` and returns every detection, the last ones
/// included; `inspect` sees each raw batch first (for what slot recovery does not keep).
pub async fn recover_slots<T: TimeTagger>(
    tagger: &mut T,
    recovery: &mut SlotRecovery,
    duration: Duration,
    batch_duration: Duration,
    mut inspect: impl FnMut(&TagBatch),
) -> Result<Detections, TaggerError> {
    let mut detections = Detections::default();
    let mut batch = TagBatch::default();
    for _ in 0..reads_covering(duration, batch_duration) {
        tagger.read(&mut batch).await?;
        inspect(&batch);
        recovery.process(&batch.time_ps, &batch.channel, &mut detections);
    }
    recovery.finish(&mut detections);
    Ok(detections)
}
