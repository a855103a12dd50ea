//! Detector characterisation: dark counts with the source dark, the efficiencies of the detectors
//! that share a basis relative to each other, and the afterpulse probability from the intervals
//! between clicks; channels outside their limits are flagged.
//!
//! Relative efficiencies need no aligned channel: the BB84 states averaged over bits are the
//! maximally mixed state in either basis, which every rotation leaves alone, so with the source
//! on each detector of a basis pair receives the same flux and the ratio of their (dark- and
//! dead-time-corrected) rates is the ratio of their efficiencies. A mismatch inside a basis pair
//! is what an eavesdropper exploits (efficiency-mismatch attacks), hence the flag.
//!
//! Afterpulses show in the intervals between consecutive dark counts of a channel: past the dead
//! time, uncorrelated clicks leave intervals distributed as `Exp(r)`, and afterpulses add short
//! ones. Where the afterpulses have died out — the slowest half of the intervals, for release
//! times well below `1/r` — the tail is `(1 − p)·exp(−r·x)`; its slope gives `r` and its
//! intercept `1 − p`. Dark counts, not signal clicks, because their rate is constant (the
//! signal's follows the fiber's polarization drift, and a mixture of rates bends the tail) and
//! low enough that a released carrier almost never loses the race to the next click: what comes
//! out is the device's own afterpulse probability.

use std::time::Duration;

use qkd_drivers::{DarkCounts, SinglePhotonDetectors, TagBatch, TimeTagger, WcpSource};
use qkd_units::Hertz;

use crate::error::CalibrationError;
use crate::stream::{detector_inputs, reads_covering};
use serde::Serialize;

/// Limits beyond which a channel is flagged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorLimits {
    /// Largest dark-count rate as a multiple of the nominal one.
    pub dark_factor: f64,
    /// Largest relative efficiency mismatch inside a basis pair.
    pub efficiency_mismatch: f64,
    /// Largest afterpulse probability.
    pub afterpulse: f64,
}

impl Default for DetectorLimits {
    fn default() -> Self {
        Self {
            dark_factor: 2.0,
            efficiency_mismatch: 0.1,
            afterpulse: 0.05,
        }
    }
}

/// How long to measure, and against what.
#[derive(Debug, Clone, Copy)]
pub struct CharacterisationSettings {
    /// Integration with the source dark.
    pub dark_integration: Duration,
    /// Link time of tags read with the source on.
    pub light_duration: Duration,
    /// Link time one tagger read covers.
    pub batch: Duration,
    /// Gate rate of gated detectors (their dark counts are specified per gate).
    pub gate_rate: Option<Hertz>,
    /// Flagging limits.
    pub limits: DetectorLimits,
}

/// One detector channel's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelFigures {
    /// Detector number (0 = H, 1 = V, 2 = D, 3 = A).
    pub detector: usize,
    /// The device's name for it.
    pub name: String,
    /// Dark counts per second, and their Poisson standard error.
    pub dark_rate_hz: f64,
    /// Standard error of the dark rate.
    pub dark_rate_error_hz: f64,
    /// What the device specifies (`null` when a gated detector's gate rate is unknown).
    pub nominal_dark_rate_hz: Option<f64>,
    /// Click rate with the source on, dark-count and dead-time corrected, per second.
    pub signal_rate_hz: f64,
    /// Efficiency relative to the mean of its basis pair (1 = matched).
    pub relative_efficiency: f64,
    /// Standard error of the relative efficiency.
    pub relative_efficiency_error: f64,
    /// Probability that a click is followed by an afterpulse (`null` with fewer than
    /// [`MIN_INTERVALS`] dark counts: integrate longer).
    pub afterpulse_probability: Option<f64>,
    /// Standard error of the afterpulse probability.
    pub afterpulse_error: Option<f64>,
    /// Intervals between dark counts the afterpulse estimate had.
    pub dark_intervals: usize,
    /// Why the channel is out of its limits (empty when it is within them).
    pub flags: Vec<String>,
}

/// Fewest intervals an afterpulse estimate is made from.
pub const MIN_INTERVALS: usize = 1000;
/// Fewest clicks with the source on that an efficiency is compared from.
const MIN_CLICKS: usize = 1000;

/// Measures every channel: dark counts and their intervals with the source off, then click
/// rates with the source on. The source is left on.
pub async fn characterise_detectors<D, S, T>(
    detectors: &D,
    source: &mut S,
    tagger: &mut T,
    settings: &CharacterisationSettings,
) -> Result<Vec<ChannelFigures>, CalibrationError>
where
    D: SinglePhotonDetectors,
    S: WcpSource,
    T: TimeTagger,
{
    let channels = detectors.channels().to_vec();
    let inputs = detector_wiring(tagger, channels.len())?;

    source.set_enabled(false).await?;
    let dark = read_clicks(tagger, &inputs, settings.dark_integration, settings.batch).await;
    source.set_enabled(true).await?;
    let dark = dark?;
    let dark_seconds = settings.dark_integration.as_secs_f64();
    let light = read_clicks(tagger, &inputs, settings.light_duration, settings.batch).await?;
    let light_seconds = settings.light_duration.as_secs_f64();

    let mut figures = Vec::with_capacity(channels.len());
    for (detector, channel) in channels.iter().enumerate() {
        let clicks = light[detector].len();
        if clicks < MIN_CLICKS {
            return Err(CalibrationError::TooFew {
                detector,
                what: "clicks with the source on",
                found: clicks,
                needed: MIN_CLICKS,
            });
        }
        let dark_times = &dark[detector];
        let dark_counts = dark_times.len() as f64;
        let dead_s = channel.dead_time.get() as f64 * 1e-12;
        let measured = clicks as f64 / light_seconds;
        // Non-paralysable dead time: the detector was blind for measured·dead of the time.
        let live = (1.0 - measured * dead_s).max(f64::MIN_POSITIVE);
        let dark_rate = dark_counts / dark_seconds;
        let afterpulses = afterpulse_estimate(dark_times, channel.dead_time.get());
        figures.push(ChannelFigures {
            detector,
            name: channel.name.clone(),
            dark_rate_hz: dark_rate,
            dark_rate_error_hz: dark_counts.max(1.0).sqrt() / dark_seconds,
            nominal_dark_rate_hz: nominal_dark_rate(channel.dark_counts, settings.gate_rate),
            signal_rate_hz: measured / live - dark_rate,
            relative_efficiency: 1.0,
            relative_efficiency_error: 0.0,
            afterpulse_probability: afterpulses.map(|a| a.0),
            afterpulse_error: afterpulses.map(|a| a.1),
            dark_intervals: dark_times.len().saturating_sub(1),
            flags: Vec::new(),
        });
    }
    relate_basis_pairs(&mut figures, light_seconds);
    for f in &mut figures {
        f.flags = flags(f, &settings.limits);
    }
    Ok(figures)
}

/// Tagger input of each detector channel, in detector order.
fn detector_wiring<T: TimeTagger>(
    tagger: &T,
    detectors: usize,
) -> Result<Vec<u8>, CalibrationError> {
    let inputs = detector_inputs(tagger.channels());
    let in_order = inputs
        .iter()
        .enumerate()
        .all(|(i, &(d, _))| usize::from(d) == i);
    if inputs.len() != detectors || !in_order {
        return Err(CalibrationError::ChannelCount {
            detectors,
            tagged: inputs.len(),
        });
    }
    Ok(inputs.into_iter().map(|(_, index)| index).collect())
}

/// Click times of each detector over `duration` of link time.
async fn read_clicks<T: TimeTagger>(
    tagger: &mut T,
    inputs: &[u8],
    duration: Duration,
    batch_duration: Duration,
) -> Result<Vec<Vec<i64>>, CalibrationError> {
    let mut detector_of = [None; 256];
    for (d, &index) in inputs.iter().enumerate() {
        detector_of[usize::from(index)] = Some(d);
    }
    let mut clicks = vec![Vec::new(); inputs.len()];
    let mut batch = TagBatch::default();
    for _ in 0..reads_covering(duration, batch_duration) {
        tagger.read(&mut batch).await?;
        for (&t, &channel) in batch.time_ps.iter().zip(&batch.channel) {
            if let Some(d) = detector_of[usize::from(channel)] {
                clicks[d].push(t);
            }
        }
    }
    Ok(clicks)
}

/// The nominal dark rate in Hz, if it can be known.
fn nominal_dark_rate(dark: DarkCounts, gate_rate: Option<Hertz>) -> Option<f64> {
    match dark {
        DarkCounts::Rate(rate) => Some(rate.get()),
        DarkCounts::PerGate(p) => gate_rate.map(|g| p.get() * g.get()),
    }
}

/// Afterpulse probability and its standard error from a channel's click times (sorted), with
/// `dead_ps` the dead time; `None` with too few intervals or a degenerate tail.
fn afterpulse_estimate(times: &[i64], dead_ps: i64) -> Option<(f64, f64)> {
    let mut gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0] - dead_ps).max(0) as f64)
        .collect();
    if gaps.len() < MIN_INTERVALS {
        return None;
    }
    gaps.sort_unstable_by(f64::total_cmp);
    let n = gaps.len() as f64;
    // Tail fractions 1/2 and 1/10: x1 and x2 are the matching quantiles.
    let (tail_1, tail_2) = (0.5, 0.1);
    let x1 = gaps[(n * (1.0 - tail_1)) as usize];
    let x2 = gaps[(n * (1.0 - tail_2)) as usize];
    if x2 <= x1 {
        return None;
    }
    let rate = (tail_1 / tail_2).ln() / (x2 - x1);
    let p = 1.0 - tail_1 * (rate * x1).exp();
    // The short intervals are a binomial count: its spread dominates the estimate's.
    let error = (tail_1 * (1.0 - tail_1) / n).sqrt() * (rate * x1).exp();
    Some((p, error))
}

/// Relative efficiencies inside the basis pairs (H, V) and (D, A): `2a/(a + b)` for signal
/// counts `a`, `b`, with the Poisson error `2·√(a·b/(a + b)³)` of that ratio.
fn relate_basis_pairs(figures: &mut [ChannelFigures], seconds: f64) {
    for pair in figures.chunks_exact_mut(2) {
        let a = (pair[0].signal_rate_hz * seconds).max(0.0);
        let b = (pair[1].signal_rate_hz * seconds).max(0.0);
        let total = a + b;
        if total <= 0.0 {
            continue;
        }
        let error = 2.0 * (a * b / total.powi(3)).sqrt();
        pair[0].relative_efficiency = 2.0 * a / total;
        pair[1].relative_efficiency = 2.0 * b / total;
        pair[0].relative_efficiency_error = error;
        pair[1].relative_efficiency_error = error;
    }
}

/// What is out of limits on one channel; a figure counts as out only beyond its noise.
fn flags(f: &ChannelFigures, limits: &DetectorLimits) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(nominal) = f.nominal_dark_rate_hz
        && f.dark_rate_hz - 3.0 * f.dark_rate_error_hz > limits.dark_factor * nominal
    {
        out.push(format!(
            "dark counts {:.0}/s exceed {}× the nominal {nominal:.0}/s",
            f.dark_rate_hz, limits.dark_factor
        ));
    }
    if (f.relative_efficiency - 1.0).abs() - 3.0 * f.relative_efficiency_error
        > limits.efficiency_mismatch
    {
        out.push(format!(
            "efficiency {:.3} of its basis pair's mean, beyond ±{}",
            f.relative_efficiency, limits.efficiency_mismatch
        ));
    }
    if let (Some(p), Some(error)) = (f.afterpulse_probability, f.afterpulse_error)
        && p - 3.0 * error > limits.afterpulse
    {
        out.push(format!(
            "afterpulse probability {p:.3} above {}",
            limits.afterpulse
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Clicks of a Poisson process of rate `rate` (per ps) with dead time `dead`, each followed
    /// with probability `p` by an afterpulse after `dead + Exp(decay)`.
    fn clicks(rate: f64, dead: f64, p: f64, decay: f64, n: usize) -> Vec<i64> {
        let mut state = 0x9E37_79B9_u64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let mut t = 0.0;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let poisson = -uniform().ln() / rate;
            let gap = if uniform() < p {
                poisson.min(-uniform().ln() * decay)
            } else {
                poisson
            };
            t += dead + gap;
            out.push(t as i64);
        }
        out
    }

    #[test]
    fn the_afterpulse_estimate_finds_the_probability_it_was_built_with() {
        let n = 400_000;
        for p in [0.0, 0.03, 0.1] {
            let times = clicks(1e-8, 10_000.0, p, 2_000.0, n);
            let (found, error) = afterpulse_estimate(&times, 10_000).unwrap();
            // The simulated afterpulse competes with the next photon: it is the next click
            // with probability p·(1/decay)/(1/decay + rate).
            let effective = p * (1.0 / 2_000.0) / (1.0 / 2_000.0 + 1e-8);
            assert!(
                (found - effective).abs() < 5.0 * error,
                "{p}: {found} ± {error}"
            );
        }
    }

    #[test]
    fn channels_are_flagged_only_beyond_their_noise() {
        let within = ChannelFigures {
            detector: 0,
            name: "H".into(),
            dark_rate_hz: 110.0,
            dark_rate_error_hz: 10.0,
            nominal_dark_rate_hz: Some(100.0),
            signal_rate_hz: 1e5,
            relative_efficiency: 1.05,
            relative_efficiency_error: 0.01,
            afterpulse_probability: Some(0.01),
            afterpulse_error: Some(0.01),
            dark_intervals: 1000,
            flags: Vec::new(),
        };
        let limits = DetectorLimits::default();
        assert!(flags(&within, &limits).is_empty());
        let out = ChannelFigures {
            dark_rate_hz: 400.0,
            relative_efficiency: 0.8,
            afterpulse_probability: Some(0.2),
            ..within
        };
        assert_eq!(flags(&out, &limits).len(), 3, "{:?}", flags(&out, &limits));
    }
}
