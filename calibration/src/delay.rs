//! Delay calibration: where in the slot each detector's clicks arrive, from their timing against
//! the sync channel.
//!
//! Cables, detector electronics and tagger inputs each add a fixed delay, different per channel;
//! slot recovery needs them to within a fraction of its gate. The sync period is measured from
//! the syncs themselves (the tagger's clock runs at its own rate), each detection's phase within
//! the slot is taken modulo that, and each channel's phases form a peak on a flat background of
//! dark counts. The peak's centroid is the channel's delay; its width is the timing jitter.
//!
//! That gives each delay modulo one slot. The whole slots (a cable a few metres longer than its
//! neighbour at GHz rates) come from the source's own pattern: [`resolve_whole_slots`] shifts
//! each detector's detections by candidate numbers of slots and keeps the shift under which the
//! detected slots carried the brightest pulses, since the click probability grows with the
//! intensity class and a wrong shift pairs clicks with unrelated classes.

use std::time::Duration;

use qkd_drivers::{ChannelRole, EmissionRecords, TagBatch, TimeTagger, WcpSource};
use qkd_postprocess::slots::{SlotConfig, SlotRecovery, SyncEpoch};
use qkd_units::Hertz;

use crate::error::CalibrationError;
use crate::stream::{detector_inputs, reads_covering, recover_slots};
use serde::Serialize;

/// Histogram bins per slot.
const BINS: usize = 1000;
/// Phases kept per channel: enough for a centroid far below a picosecond, bounded in memory.
const MAX_PHASES: usize = 1 << 20;
/// Peak counts needed over the background, in background standard deviations.
const MIN_SIGNIFICANCE: f64 = 10.0;
/// Fewest peak counts a delay is quoted from.
const MIN_PEAK_COUNTS: f64 = 100.0;

/// What the calibration needs to know about the link.
#[derive(Debug, Clone, Copy)]
pub struct DelayCalibrationSettings {
    /// The source's nominal slot rate.
    pub slot_rate: Hertz,
    /// Slots per sync pulse.
    pub sync_divider: u64,
    /// Link time to read.
    pub duration: Duration,
    /// Link time one tagger read covers.
    pub batch: Duration,
}

/// One detector channel's arrival phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChannelDelay {
    /// Detector number (0 = H, 1 = V, 2 = D, 3 = A).
    pub detector: u8,
    /// Tagger input.
    pub tagger_channel: u8,
    /// Delay after the sync, modulo the slot, in `[−slot/2, slot/2)`, ps.
    pub delay_ps: f64,
    /// Standard error of the delay, ps.
    pub delay_error_ps: f64,
    /// Full width at half maximum of the arrival peak, ps (detector and sync jitter together).
    pub fwhm_ps: f64,
    /// Counts in the peak above the background.
    pub peak_counts: f64,
    /// Background counts per picosecond of phase (dark counts, afterpulses).
    pub background_per_ps: f64,
}

/// What the calibration found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DelayCalibration {
    /// Sync period measured on the tagger's clock, ps.
    pub sync_period_ps: f64,
    /// Slot period on the tagger's clock, ps.
    pub slot_period_ps: f64,
    /// Tagger clock against the source's nominal rate, ppm.
    pub clock_error_ppm: f64,
    /// Tagger time of the first sync read, ps.
    pub first_sync_ps: i64,
    /// The detector channels, in detector order.
    pub channels: Vec<ChannelDelay>,
}

impl DelayCalibration {
    /// The first sync read and the measured sync period, for numbering slots anywhere later in
    /// the stream. It starts slot 0 only if the calibration read the stream from its start,
    /// which is the caller's to know.
    pub fn epoch(&self) -> SyncEpoch {
        SyncEpoch {
            time_ps: self.first_sync_ps,
            period_ps: self.sync_period_ps,
        }
    }

    /// `config` with these delays (rounded to whole picoseconds) for the detectors found.
    pub fn apply_to(&self, config: &mut SlotConfig) {
        for channel in &self.channels {
            if let Some(slot) = config.delays_ps.get_mut(usize::from(channel.detector)) {
                *slot = channel.delay_ps.round() as i64;
            }
        }
    }
}

/// Widest whole-slot correction searched, either way.
pub const MAX_WHOLE_SLOTS: i64 = 32;
/// Fewest detections per detector the whole-slot search compares shifts on.
const MIN_DETECTIONS: usize = 100;

/// Resolves each detector's whole-slot offset against the source's records: reads `duration`
/// of tags through slot recovery configured with `config` (delays modulo a slot, and an epoch
/// so that slots are numbered as the source numbers them), and for each detector keeps the shift
/// of at most [`MAX_WHOLE_SLOTS`] under which its detected slots have the highest mean configured
/// intensity. Returns the shifts, in slots, and folds them into `config`'s delays.
pub async fn resolve_whole_slots<T: TimeTagger, S: WcpSource>(
    tagger: &mut T,
    source: &mut S,
    config: &mut SlotConfig,
    duration: Duration,
    batch_duration: Duration,
) -> Result<[i64; 4], CalibrationError> {
    let mut recovery = SlotRecovery::new(config.clone())?;
    let detections = recover_slots(tagger, &mut recovery, duration, batch_duration, |_| {}).await?;
    let brightness: Vec<f64> = source
        .settings()
        .intensities
        .iter()
        .map(|c| c.mean_photon_number.get())
        .collect();
    let slot_ps = 1e12 / config.nominal_rate_hz;
    let mut shifts = [0i64; 4];
    let mut records = EmissionRecords::default();
    for (detector, shift) in shifts.iter_mut().enumerate() {
        let own: Vec<u64> = detections
            .slot
            .iter()
            .zip(&detections.mask)
            .filter(|&(_, &mask)| mask >> detector & 1 == 1)
            .map(|(&slot, _)| slot)
            .collect();
        if own.len() < MIN_DETECTIONS {
            return Err(CalibrationError::TooFew {
                detector,
                what: "detections to find its whole-slot delay from",
                found: own.len(),
                needed: MIN_DETECTIONS,
            });
        }
        let mut best = (f64::NEG_INFINITY, 0);
        for k in -MAX_WHOLE_SLOTS..=MAX_WHOLE_SLOTS {
            // A click assigned to slot s came from slot s − k when the delay is k slots longer.
            let shifted: Vec<u64> = own
                .iter()
                .filter_map(|&s| s.checked_add_signed(-k))
                .collect();
            records.clear();
            source.emissions(&shifted, &mut records).await?;
            let mean = records
                .intensity
                .iter()
                .map(|&c| brightness.get(usize::from(c)).copied().unwrap_or(0.0))
                .sum::<f64>()
                / records.len().max(1) as f64;
            if mean > best.0 {
                best = (mean, k);
            }
        }
        *shift = best.1;
        config.delays_ps[detector] += (best.1 as f64 * slot_ps).round() as i64;
    }
    Ok(shifts)
}

/// The timing of a link as slot recovery needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Each detector's delay within the slot, and the sync period.
    pub delays: DelayCalibration,
    /// Whole slots each detector's delay adds to its phase (H, V, D, A).
    pub whole_slots: [i64; 4],
    /// Slot recovery with the full delays and an epoch numbering slots as the source does.
    pub slots: SlotConfig,
}

/// Calibrates the timing from the start of the stream: delays within the slot, then whole
/// slots against the source's pattern, each over `settings.duration`. Because the stream is read
/// from its start, its first sync starts slot 0, which gives the epoch every later step numbers
/// slots from.
pub async fn calibrate_timing<T: TimeTagger, S: WcpSource>(
    tagger: &mut T,
    source: &mut S,
    settings: &DelayCalibrationSettings,
) -> Result<Timing, CalibrationError> {
    let delays = calibrate_delays(tagger, settings).await?;
    let mut slots = SlotConfig::standard(settings.slot_rate.get(), settings.sync_divider);
    delays.apply_to(&mut slots);
    slots.epoch = Some(delays.epoch());
    let whole_slots = resolve_whole_slots(
        tagger,
        source,
        &mut slots,
        settings.duration,
        settings.batch,
    )
    .await?;
    Ok(Timing {
        delays,
        whole_slots,
        slots,
    })
}

/// Reads `settings.duration` of tags and finds each detector's delay.
pub async fn calibrate_delays<T: TimeTagger>(
    tagger: &mut T,
    settings: &DelayCalibrationSettings,
) -> Result<DelayCalibration, CalibrationError> {
    let nominal_slot_ps = 1e12 / settings.slot_rate.get();
    if settings.sync_divider == 0 || !nominal_slot_ps.is_finite() || settings.batch.is_zero() {
        return Err(CalibrationError::Settings(
            "delay calibration: the sync divider, slot rate and batch must be positive".into(),
        ));
    }
    let sync_channel = tagger
        .channels()
        .iter()
        .find(|c| c.role == ChannelRole::Sync)
        .map(|c| c.index)
        .ok_or(CalibrationError::MissingInput("sync"))?;
    let detectors = detector_inputs(tagger.channels());
    if detectors.is_empty() {
        return Err(CalibrationError::MissingInput("detector"));
    }
    let nominal_sync_ps = nominal_slot_ps * settings.sync_divider as f64;
    let mut reading = Reading::new(sync_channel, &detectors, nominal_sync_ps);
    let mut batch = TagBatch::default();
    for _ in 0..reads_covering(settings.duration, settings.batch) {
        tagger.read(&mut batch).await?;
        reading.add(&batch);
    }
    let (Some(sync_period_ps), Some(first_sync_ps)) = (reading.sync_period(), reading.first_sync)
    else {
        return Err(CalibrationError::NoSyncs {
            found: reading.syncs,
        });
    };
    let slot_period_ps = sync_period_ps / settings.sync_divider as f64;
    let channels = detectors
        .iter()
        .zip(&reading.since_sync)
        .map(|(&(detector, tagger_channel), since)| {
            peak(since, slot_period_ps).map_or_else(
                |significance| {
                    Err(CalibrationError::NoPeak {
                        detector,
                        tagger_channel,
                        counts: since.len(),
                        significance,
                    })
                },
                |found| {
                    Ok(ChannelDelay {
                        detector,
                        tagger_channel,
                        ..found
                    })
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut channels = channels;
    channels.sort_by_key(|c| c.detector);
    Ok(DelayCalibration {
        sync_period_ps,
        slot_period_ps,
        clock_error_ppm: (slot_period_ps / nominal_slot_ps - 1.0) * 1e6,
        first_sync_ps,
        channels,
    })
}

/// Tags sorted for the calibration as they stream in.
struct Reading {
    sync_channel: u8,
    /// Tagger input → position in `since_sync`.
    detector_of: [Option<usize>; 256],
    nominal_sync_ps: f64,
    last_sync: Option<i64>,
    first_sync: Option<i64>,
    syncs: u64,
    /// Sum and number of sync intervals within 1 % of nominal.
    interval_sum: f64,
    intervals: u64,
    /// Per detector: time since the latest sync of each click, ps.
    since_sync: Vec<Vec<i64>>,
}

impl Reading {
    fn new(sync_channel: u8, detectors: &[(u8, u8)], nominal_sync_ps: f64) -> Self {
        let mut detector_of = [None; 256];
        for (i, &(_, index)) in detectors.iter().enumerate() {
            detector_of[usize::from(index)] = Some(i);
        }
        Reading {
            sync_channel,
            detector_of,
            nominal_sync_ps,
            last_sync: None,
            first_sync: None,
            syncs: 0,
            interval_sum: 0.0,
            intervals: 0,
            since_sync: vec![Vec::new(); detectors.len()],
        }
    }

    fn add(&mut self, batch: &TagBatch) {
        if batch.overflow {
            // The stream has a gap: the next interval would span it.
            self.last_sync = None;
        }
        for (&t, &channel) in batch.time_ps.iter().zip(&batch.channel) {
            if channel == self.sync_channel {
                if let Some(previous) = self.last_sync {
                    let interval = (t - previous) as f64;
                    if (interval / self.nominal_sync_ps - 1.0).abs() < 0.01 {
                        self.interval_sum += interval;
                        self.intervals += 1;
                    }
                }
                self.last_sync = Some(t);
                self.first_sync.get_or_insert(t);
                self.syncs += 1;
            } else if let (Some(i), Some(sync)) =
                (self.detector_of[usize::from(channel)], self.last_sync)
            {
                let phases = &mut self.since_sync[i];
                if phases.len() < MAX_PHASES {
                    phases.push(t - sync);
                }
            }
        }
    }

    fn sync_period(&self) -> Option<f64> {
        (self.intervals > 0).then(|| self.interval_sum / self.intervals as f64)
    }
}

/// The arrival peak of one channel's clicks (times since sync), or the significance of the
/// best candidate when it is not a peak. Fields other than the measured ones are left zero.
fn peak(since_sync: &[i64], slot_ps: f64) -> Result<ChannelDelay, f64> {
    let bin_ps = slot_ps / BINS as f64;
    let phase = |t: i64| (t as f64).rem_euclid(slot_ps);
    let mut histogram = vec![0u64; BINS];
    for &t in since_sync {
        histogram[((phase(t) / bin_ps) as usize).min(BINS - 1)] += 1;
    }
    let (peak_bin, &peak_height) = histogram
        .iter()
        .enumerate()
        .max_by_key(|&(_, &h)| h)
        .unwrap_or((0, &0));
    let mut sorted = histogram.clone();
    sorted.sort_unstable();
    let background = sorted[BINS / 2] as f64;
    // Half width at half maximum above the background, walking out from the peak (circular).
    let half = background + (peak_height as f64 - background) / 2.0;
    let above_half = |step: isize| {
        (1..BINS / 2)
            .take_while(|&k| {
                let i = (peak_bin as isize + step * k as isize).rem_euclid(BINS as isize) as usize;
                histogram[i] as f64 >= half
            })
            .count()
    };
    let fwhm_bins = (1 + above_half(1) + above_half(-1)) as f64;
    // Centroid over ±2 FWHM (at least ±3 bins), background subtracted.
    let reach = (2.0 * fwhm_bins).max(3.0) * bin_ps;
    let centre = (peak_bin as f64 + 0.5) * bin_ps;
    let offset = |t: i64| {
        let d = phase(t) - centre;
        d - slot_ps * (d / slot_ps).round()
    };
    let (mut sum, mut sum_sq, mut n) = (0.0, 0.0, 0.0);
    for &t in since_sync {
        let d = offset(t);
        if d.abs() <= reach {
            sum += d;
            sum_sq += d * d;
            n += 1.0;
        }
    }
    let expected_background = background * (2.0 * reach / bin_ps);
    let peak_counts = n - expected_background;
    let significance = peak_counts / expected_background.max(1.0).sqrt();
    if peak_counts < MIN_PEAK_COUNTS || significance < MIN_SIGNIFICANCE {
        return Err(significance);
    }
    // The flat background inside the window has zero mean offset: it dilutes the sum only.
    let mean = sum / peak_counts;
    let spread = (sum_sq / n - (sum / n).powi(2)).max(0.0).sqrt();
    let delay = centre + mean;
    Ok(ChannelDelay {
        detector: 0,
        tagger_channel: 0,
        delay_ps: delay - slot_ps * (delay / slot_ps).round(),
        delay_error_ps: spread / peak_counts.sqrt(),
        fwhm_ps: fwhm_bins * bin_ps,
        peak_counts,
        background_per_ps: background / bin_ps,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Gaussian phases around `delay` in a 10 ns slot plus a flat background.
    fn synthetic(delay: f64, sigma: f64, clicks: usize, background: usize) -> Vec<i64> {
        let mut state = 0x1234_5678_u64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut times = Vec::new();
        for _ in 0..clicks {
            let (u, v) = (uniform().max(1e-300), uniform());
            let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
            // Some syncs earlier: phases are taken modulo the slot.
            times.push((30_000.0 + delay + sigma * normal).round() as i64);
        }
        for _ in 0..background {
            times.push((uniform() * 10_000.0) as i64);
        }
        times
    }

    #[test]
    fn a_peak_across_the_slot_edge_is_found_at_its_centroid() {
        for delay in [1234.0, -4990.0, 4990.0, 0.0] {
            let sigma = 40.0;
            let clicks = 20_000;
            let found = peak(&synthetic(delay, sigma, clicks, 5_000), 10_000.0).unwrap();
            let error = sigma / (clicks as f64).sqrt();
            let wrapped = {
                let d = found.delay_ps - delay;
                d - 10_000.0 * (d / 10_000.0).round()
            };
            // Centroid within 5 standard errors, plus the 1-ps rounding of the synthetic times.
            assert!(wrapped.abs() < 5.0 * error + 0.5, "{delay}: {found:?}");
            assert!(
                (found.fwhm_ps - 2.355 * sigma).abs() < 0.3 * 2.355 * sigma,
                "{found:?}"
            );
        }
    }

    #[test]
    fn background_alone_is_not_a_peak() {
        let flat = synthetic(0.0, 1.0, 0, 100_000);
        let significance = peak(&flat, 10_000.0).unwrap_err();
        assert!(significance < MIN_SIGNIFICANCE, "{significance}");
    }
}
