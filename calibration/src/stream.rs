//! Reading a tagger for a stretch of link time: what every calibration step shares.

use std::time::Duration;

use qkd_drivers::{ChannelRole, TaggerChannel};

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
