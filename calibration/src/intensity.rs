//! Source intensity calibration from counts at a known transmission.
//!
//! A pulse of class `i` (mean photon number `μ_i`) is detected with probability
//! `Q_i = 1 − (1 − Y0)·exp(−η·μ_i)` where `η` is the whole transmission (channel, receiver
//! optics, detector efficiency) and `Y0` the background per slot. Counting detected slots per
//! class, against the slots of that class sent (the slots in the run times the class
//! probability), inverts that for `μ_i`. Detectors are blind for their dead time after each
//! click; the share of photons that arrive at a dead detector is corrected for to first order,
//! which leaves an error of order `(R·τ_dead)²` (and of the multi-photon pulses whose other
//! photons find a live detector, `η·μ` times smaller again).
//!
//! This checks the source's intensity settings (signal and decoys, the vacuum class included)
//! without a power meter at the source, which a deployed link seldom has.

use std::time::Duration;

use qkd_drivers::{EmissionRecords, TimeTagger, WcpSource};
use qkd_postprocess::slots::{SlotConfig, SlotRecovery};
use qkd_units::Probability;
use serde::Serialize;

use crate::error::CalibrationError;
use crate::stream::recover_slots;

/// What the calibration needs to know.
#[derive(Debug, Clone)]
pub struct IntensitySettings {
    /// Slot recovery, with calibrated delays.
    pub slots: SlotConfig,
    /// Whole transmission from the source's output to a click: channel, receiver optics and
    /// detector efficiency.
    pub transmission: Probability,
    /// Background clicks per slot inside the gate (dark counts, stray light), any detector; used
    /// when the source has no vacuum class to measure it on.
    pub background_per_slot: f64,
    /// Dead time of each detector (H, V, D, A), ps.
    pub dead_time_ps: [i64; 4],
    /// Link time to count.
    pub duration: Duration,
    /// Link time one tagger read covers.
    pub batch: Duration,
    /// Largest relative deviation from the configured intensity before a class is flagged.
    pub tolerance: f64,
}

/// One intensity class as measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntensityFigures {
    /// Class index (0 = signal).
    pub class: usize,
    /// Mean photon number the source is configured with.
    pub configured_mu: f64,
    /// Mean photon number the counts imply.
    pub measured_mu: f64,
    /// Standard error of the measured value.
    pub measured_mu_error: f64,
    /// Detected slots of this class.
    pub detected_slots: u64,
    /// Slots of this class sent (expected from the class probability).
    pub sent_slots: f64,
    /// Why the class is out of tolerance (`null` when within it).
    pub flag: Option<String>,
}

/// What the intensity calibration found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntensityCalibration {
    /// Background clicks per slot used: measured on the vacuum class when the source has one
    /// (which then reads μ = 0 by construction), else the one given.
    pub background_per_slot: f64,
    /// Whether the background came from the vacuum class.
    pub background_from_vacuum: bool,
    /// Each intensity class, signal first.
    pub classes: Vec<IntensityFigures>,
}

/// Counts detected slots per intensity class over `settings.duration` and infers each class's
/// mean photon number.
pub async fn calibrate_intensities<T: TimeTagger, S: WcpSource>(
    tagger: &mut T,
    source: &mut S,
    settings: &IntensitySettings,
) -> Result<IntensityCalibration, CalibrationError> {
    let eta = settings.transmission.get();
    if eta <= 0.0 || !(0.0..1.0).contains(&settings.background_per_slot) {
        return Err(CalibrationError::Settings(
            "intensity calibration: the transmission must be positive and the background in [0, 1)"
                .into(),
        ));
    }
    let mut slots = SlotRecovery::new(settings.slots.clone())?;
    // Every click blinds its detector, in the gate or not (afterpulses and dark counts mostly
    // fall between gates): count them all for the dead time.
    let mut clicks = [0u64; 4];
    let channels = settings.slots.detector_channels;
    let detections = recover_slots(
        tagger,
        &mut slots,
        settings.duration,
        settings.batch,
        |batch| {
            for &channel in &batch.channel {
                if let Some(d) = channels.iter().position(|&c| c == channel) {
                    clicks[d] += 1;
                }
            }
        },
    )
    .await?;
    let stats = slots.stats();
    if stats.syncs == 0 {
        return Err(CalibrationError::NoLock);
    }
    let slots_run = stats.syncs as f64 * settings.slots.sync_divider as f64;
    let seconds = slots_run / settings.slots.nominal_rate_hz;
    let slot_ps = 1e12 / settings.slots.nominal_rate_hz;
    let live = live_share(&clicks, &settings.dead_time_ps, slot_ps, seconds);

    let mut records = EmissionRecords::default();
    source.emissions(&detections.slot, &mut records).await?;
    let classes = source.settings().intensities.clone();
    let mut detected = vec![0u64; classes.len()];
    for &class in &records.intensity {
        if let Some(count) = detected.get_mut(usize::from(class)) {
            *count += 1;
        }
    }
    let sent = |p: f64| slots_run * p;
    let detection_probability =
        |detected: u64, p: f64| (detected as f64 / sent(p) / live).min(1.0 - 1e-12);
    // A vacuum class measures the background in operation (dark counts, and the afterpulses
    // the signal's own clicks leave in later gates), which dark counts alone understate.
    let vacuum = classes
        .iter()
        .position(|c| c.mean_photon_number.get() == 0.0);
    let background_per_slot = vacuum.map_or(settings.background_per_slot, |v| {
        detection_probability(detected[v], classes[v].probability.get())
    });
    let survive_background = 1.0 - background_per_slot;
    let figures = classes
        .iter()
        .zip(detected)
        .enumerate()
        .map(|(class, (spec, detected_slots))| {
            let p = spec.probability.get();
            let q = detection_probability(detected_slots, p);
            let measured = -((1.0 - q) / survive_background).ln() / eta;
            // Binomial spread of the detections (at least one count's worth, so that a class
            // with no detections is not reported as exact) and multinomial spread of the slots
            // sent.
            let counted = (detected_slots as f64).max(1.0);
            let q_error =
                (counted * (1.0 - q) / (sent(p) * sent(p)) + q * q * (1.0 - p) / sent(p)).sqrt();
            let error = q_error / ((1.0 - q) * eta);
            let configured = spec.mean_photon_number.get();
            IntensityFigures {
                class,
                configured_mu: configured,
                measured_mu: measured,
                measured_mu_error: error,
                detected_slots,
                sent_slots: sent(p),
                flag: flag(configured, measured, error, settings.tolerance),
            }
        })
        .collect();
    Ok(IntensityCalibration {
        background_per_slot,
        background_from_vacuum: vacuum.is_some(),
        classes: figures,
    })
}

/// Share of arriving photons that find their detector alive: each detector's dead fraction
/// weighted by its share of the clicks. Photons arrive only in slots, so a click blinds its
/// detector for the slots that start strictly inside its dead time, `⌈τ/δ⌉ − 1` of them, not for
/// `τ/δ`: a 30 ns dead time at 10 ns slots costs two slots.
fn live_share(clicks: &[u64; 4], dead_time_ps: &[i64; 4], slot_ps: f64, seconds: f64) -> f64 {
    let total: u64 = clicks.iter().sum();
    if total == 0 || seconds <= 0.0 {
        return 1.0;
    }
    let dead: f64 = clicks
        .iter()
        .zip(dead_time_ps)
        .map(|(&c, &dead)| {
            let dead_slots = ((dead as f64 / slot_ps).ceil() - 1.0).max(0.0);
            let dead_fraction = (c as f64 / seconds * dead_slots * slot_ps * 1e-12).min(1.0);
            c as f64 / total as f64 * dead_fraction
        })
        .sum();
    (1.0 - dead).max(f64::MIN_POSITIVE)
}

/// A flag when the measured intensity is off by more than `tolerance` (relative, or absolute
/// for a vacuum class) beyond three standard errors.
fn flag(configured: f64, measured: f64, error: f64, tolerance: f64) -> Option<String> {
    let allowed = tolerance * configured.max(0.01);
    ((measured - configured).abs() - 3.0 * error > allowed).then(|| {
        format!(
            "measured μ = {measured:.4} ± {error:.4} where {configured:.4} is configured (tolerance {:.0} %)",
            100.0 * tolerance
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_need_a_deviation_beyond_tolerance_and_noise() {
        assert!(flag(0.5, 0.52, 0.01, 0.1).is_none());
        assert!(flag(0.5, 0.6, 0.001, 0.1).is_some());
        assert!(flag(0.5, 0.6, 0.05, 0.1).is_none());
        // A vacuum class is judged on an absolute scale.
        assert!(flag(0.0, 0.0005, 0.0002, 0.1).is_none());
        assert!(flag(0.0, 0.05, 0.001, 0.1).is_some());
    }

    #[test]
    fn the_live_share_weights_each_detector_by_its_clicks() {
        // H clicks 3/s, dead for 0.1 s = 100 slots of 1 ms less the one its dead time ends
        // on (29.7 % dead); V clicks 1/s with nothing dead.
        let share = live_share(&[3, 1, 0, 0], &[100_000_000_000, 0, 0, 0], 1e9, 1.0);
        assert!((share - (1.0 - 0.75 * 0.297)).abs() < 1e-12, "{share}");
    }
}
