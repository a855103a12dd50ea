//! Single-photon detectors: efficiency, dark counts, non-paralysable dead time, afterpulsing and
//! timing jitter.
//!
//! Model, stated once so tests can check it in closed form:
//! - An *excitation* (a photon that the efficiency lets through, a dark event, an afterpulse)
//!   starts an avalanche unless the detector is dead; a click makes it dead for `dead_time`
//!   (non-paralysable: excitations during dead time are lost and do not extend it).
//! - Free-running dark events form a Poisson process of rate `rate_hz`; gated detectors have a dark
//!   event in each gate with probability `probability_per_gate`.
//! - Background light (Raman noise from classical channels, [`super::raman`]) is a Poisson stream
//!   of photons at the detector; thinned by the efficiency it excites a free-running detector at
//!   `flux·η`, and a gated one in a gate of effective width `w` with probability `1 − e^{−flux·η·w}`.
//! - After each click, with probability `afterpulse_probability` a trapped carrier is released
//!   `Exp(afterpulse_decay)` after the dead time ends (a gated detector fires at the next gate). Any
//!   click re-arms the trap, replacing a pending release: the avalanche flushes the trap.
//! - Jitter is Gaussian with the given FWHM, truncated at ±6σ, and moves only the reported time
//!   (the avalanche itself, and so the dead time, follows the true arrival).

use serde::{Deserialize, Serialize};

use super::clock::Gates;
use super::param::{ConfigError, Section};
use super::rng::{GeometricSkip, SimRng};

/// FWHM of a Gaussian divided by its standard deviation: `2·sqrt(2 ln 2)`.
pub const FWHM_PER_SIGMA: f64 = 2.354_820_045_030_949;

/// Jitter beyond this many standard deviations is cut off, so that time order can be restored
/// with a bounded look-ahead.
pub const JITTER_TRUNCATION_SIGMAS: f64 = 6.0;

/// How a detector produces dark counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DarkCountSpec {
    /// Always armed; dark events arrive as a Poisson process.
    FreeRunning {
        /// Dark-count rate in counts per second.
        rate_hz: f64,
    },
    /// Armed only in a gate around each expected photon arrival (one gate per pulse slot).
    Gated {
        /// Probability of a dark count in one gate.
        probability_per_gate: f64,
        /// Effective width of a gate in ps: the time in which an arriving photon can click.
        #[serde(default = "default_gate_width")]
        gate_width_ps: f64,
    },
}

/// A nanosecond gate (assumed for gated detectors that state no width).
fn default_gate_width() -> f64 {
    1_000.0
}

impl DarkCountSpec {
    /// Gated with dark-count probability `probability_per_gate` and a nanosecond gate.
    pub fn gated(probability_per_gate: f64) -> Self {
        DarkCountSpec::Gated {
            probability_per_gate,
            gate_width_ps: default_gate_width(),
        }
    }

    /// Detection window in seconds: a gated detector's gate, else `free_running_window_s` (the
    /// window a node's slot recovery keeps around each expected arrival).
    pub fn window_s(&self, free_running_window_s: f64) -> f64 {
        match *self {
            DarkCountSpec::FreeRunning { .. } => free_running_window_s,
            DarkCountSpec::Gated { gate_width_ps, .. } => gate_width_ps * 1e-12,
        }
    }

    /// Probability of a dark count within a gate (or detection window) of `gate_s` seconds.
    pub fn per_gate(&self, gate_s: f64) -> f64 {
        match *self {
            DarkCountSpec::FreeRunning { rate_hz } => rate_hz * gate_s,
            DarkCountSpec::Gated {
                probability_per_gate,
                ..
            } => probability_per_gate,
        }
    }
}

/// Parameters of one single-photon detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// Probability that a photon reaching the detector starts an avalanche.
    pub efficiency: f64,
    /// Dark-count behaviour (and whether the detector is gated).
    pub dark: DarkCountSpec,
    /// Non-paralysable dead time after each click, in ps.
    pub dead_time_ps: i64,
    /// Probability that a click is followed by an afterpulse.
    pub afterpulse_probability: f64,
    /// Mean release delay of trapped carriers after the dead time, in ps.
    pub afterpulse_decay_ps: i64,
    /// Timing jitter, full width at half maximum, in ps.
    pub jitter_fwhm_ps: f64,
}

/// Detector families with typical figures (mid-range of the table in `reference/numbers.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorPreset {
    /// Superconducting nanowire detector.
    Snspd,
    /// Free-running InGaAs avalanche photodiode.
    IngaasFree,
    /// GHz-gated InGaAs avalanche photodiode.
    IngaasGated,
}

impl DetectorPreset {
    /// All presets with their command-line names.
    pub const ALL: [(&'static str, DetectorPreset); 3] = [
        ("snspd", DetectorPreset::Snspd),
        ("ingaas-free", DetectorPreset::IngaasFree),
        ("ingaas-gated", DetectorPreset::IngaasGated),
    ];

    /// The preset's detector.
    pub fn spec(self) -> DetectorSpec {
        match self {
            // 0.85-0.98 efficiency, 1-100 /s dark, 20-50 ns dead, 15-60 ps jitter, no afterpulsing.
            DetectorPreset::Snspd => DetectorSpec {
                efficiency: 0.90,
                dark: DarkCountSpec::FreeRunning { rate_hz: 10.0 },
                dead_time_ps: 30_000,
                afterpulse_probability: 0.0,
                afterpulse_decay_ps: 1_000,
                jitter_fwhm_ps: 30.0,
            },
            // 0.10-0.25, 100-2000 /s, 2-100 µs settable, 200-250 ps, 1-5 % decaying in 1-2 µs.
            DetectorPreset::IngaasFree => DetectorSpec {
                efficiency: 0.20,
                dark: DarkCountSpec::FreeRunning { rate_hz: 500.0 },
                dead_time_ps: 10_000_000,
                afterpulse_probability: 0.03,
                afterpulse_decay_ps: 1_500_000,
                jitter_fwhm_ps: 225.0,
            },
            // 0.08-0.30, 1e-6..1e-5 per gate, gate-based dead time, 50-100 ps, 1-6 %.
            DetectorPreset::IngaasGated => DetectorSpec {
                efficiency: 0.20,
                // A GHz gate's effective width: ~100–200 ps for self-differencing detectors.
                dark: DarkCountSpec::Gated {
                    probability_per_gate: 4e-6,
                    gate_width_ps: 150.0,
                },
                dead_time_ps: 10_000,
                afterpulse_probability: 0.03,
                afterpulse_decay_ps: 200_000,
                jitter_fwhm_ps: 75.0,
            },
        }
    }
}

/// Where a click came from (known to the emulator only: ground truth for tests and statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ClickOrigin {
    /// A photon from the source.
    Photon = 0,
    /// A thermal or tunnelling dark event.
    Dark = 1,
    /// Release of a carrier trapped in an earlier avalanche.
    Afterpulse = 2,
    /// A background photon: Raman noise from classical channels in the fiber.
    Raman = 3,
}

/// No event scheduled.
pub const NEVER: i64 = i64::MAX;

#[derive(Debug, Clone, Copy)]
enum DarkProcess {
    None,
    FreeRunning { mean_gap_ps: f64 },
    Gated { skip: GeometricSkip },
}

/// A detector's state while the world runs.
#[derive(Debug, Clone)]
pub struct Detector {
    spec: DetectorSpec,
    efficiency: f64,
    dead_time_ps: i64,
    afterpulse_probability: f64,
    afterpulse_decay_ps: f64,
    jitter_sigma_ps: f64,
    dark: DarkProcess,
    /// Background photons (Raman noise), none until [`Detector::set_background`].
    background: DarkProcess,
    gate_width_ps: f64,
    gated: bool,
    enabled: bool,
    dead_until: i64,
    next_dark: i64,
    next_background: i64,
    next_afterpulse: i64,
    rng: SimRng,
}

impl Detector {
    /// Validates `spec` (named `section` in errors) and builds a detector with its own stream.
    pub fn new(
        spec: &DetectorSpec,
        section: Section<'_>,
        rng: SimRng,
    ) -> Result<Self, ConfigError> {
        let efficiency = section.probability("efficiency", spec.efficiency, 1.0)?;
        let mut gate_width_ps = 0.0;
        let (dark, gated) = match spec.dark {
            DarkCountSpec::FreeRunning { rate_hz } => {
                let rate = section.check("dark.rate_hz", rate_hz, 0.0, 1e9, "Hz")?;
                let process = if rate > 0.0 {
                    DarkProcess::FreeRunning {
                        mean_gap_ps: 1e12 / rate,
                    }
                } else {
                    DarkProcess::None
                };
                (process, false)
            }
            DarkCountSpec::Gated {
                probability_per_gate,
                gate_width_ps: width,
            } => {
                gate_width_ps = section.check("dark.gate_width_ps", width, 1.0, 1e9, "ps")?;
                let p =
                    section.probability("dark.probability_per_gate", probability_per_gate, 1.0)?;
                let process = if p > 0.0 {
                    DarkProcess::Gated {
                        skip: GeometricSkip::new(p),
                    }
                } else {
                    DarkProcess::None
                };
                (process, true)
            }
        };
        let dead_time_ps =
            section.check("dead_time_ps", spec.dead_time_ps as f64, 0.0, 1e9, "ps")? as i64;
        let afterpulse_probability =
            section.probability("afterpulse_probability", spec.afterpulse_probability, 0.99)?;
        let afterpulse_decay_ps = section.check(
            "afterpulse_decay_ps",
            spec.afterpulse_decay_ps as f64,
            1.0,
            1e10,
            "ps",
        )?;
        let jitter_fwhm = section.check("jitter_fwhm_ps", spec.jitter_fwhm_ps, 0.0, 1e6, "ps")?;
        Ok(Detector {
            spec: *spec,
            efficiency,
            dead_time_ps,
            afterpulse_probability,
            afterpulse_decay_ps,
            jitter_sigma_ps: jitter_fwhm / FWHM_PER_SIGMA,
            dark,
            background: DarkProcess::None,
            gate_width_ps,
            gated,
            enabled: true,
            dead_until: i64::MIN,
            next_dark: NEVER,
            next_background: NEVER,
            next_afterpulse: NEVER,
            rng,
        })
    }

    /// The parameters the detector was built from (dead time as configured at start).
    pub fn spec(&self) -> &DetectorSpec {
        &self.spec
    }

    /// Detection efficiency.
    pub fn efficiency(&self) -> f64 {
        self.efficiency
    }

    /// Standard deviation of the timing jitter in ps.
    pub fn jitter_sigma_ps(&self) -> f64 {
        self.jitter_sigma_ps
    }

    /// Dead time in ps.
    pub fn dead_time_ps(&self) -> i64 {
        self.dead_time_ps
    }

    /// `true` for detectors armed only in gates.
    pub fn is_gated(&self) -> bool {
        self.gated
    }

    /// Biases (or unbiases) the detector from time `now`.
    pub fn set_enabled(&mut self, enabled: bool, now: i64, gates: &Gates) {
        if enabled && !self.enabled {
            self.enabled = true;
            self.schedule_first_dark(now, gates);
        } else if !enabled {
            self.enabled = false;
            self.next_dark = NEVER;
            self.next_background = NEVER;
            self.next_afterpulse = NEVER;
        }
    }

    /// Background photons reaching the detector at `photons_per_s` (before its efficiency),
    /// from the next [`Detector::schedule_first_dark`] on.
    pub fn set_background(&mut self, photons_per_s: f64) {
        let rate = photons_per_s * self.efficiency;
        self.background = if rate.is_nan() || rate <= 0.0 {
            DarkProcess::None
        } else if self.gated {
            DarkProcess::Gated {
                skip: GeometricSkip::new(-(-rate * self.gate_width_ps * 1e-12).exp_m1()),
            }
        } else {
            DarkProcess::FreeRunning {
                mean_gap_ps: 1e12 / rate,
            }
        };
    }

    /// Sets the dead time from now on.
    pub fn set_dead_time(&mut self, dead_time_ps: i64) {
        self.dead_time_ps = dead_time_ps;
    }

    /// Schedules the first dark event and background photon at or after `now`; call once
    /// before running.
    pub fn schedule_first_dark(&mut self, now: i64, gates: &Gates) {
        self.next_dark = self.first_event(self.dark, now, gates);
        self.next_background = self.first_event(self.background, now, gates);
    }

    fn first_event(&mut self, process: DarkProcess, now: i64, gates: &Gates) -> i64 {
        match process {
            DarkProcess::None => NEVER,
            DarkProcess::FreeRunning { mean_gap_ps } => {
                now.saturating_add((self.rng.exponential() * mean_gap_ps) as i64)
            }
            DarkProcess::Gated { skip } => {
                let first = gates.first_at_or_after(now);
                self.gate_after_skip(first, &skip, gates)
            }
        }
    }

    /// The event of `process` after the one at `t`.
    fn next_event(&mut self, process: DarkProcess, t: i64, gates: &Gates) -> i64 {
        match process {
            DarkProcess::None => NEVER,
            DarkProcess::FreeRunning { mean_gap_ps } => {
                t.saturating_add((self.rng.exponential() * mean_gap_ps).max(1.0) as i64)
            }
            DarkProcess::Gated { skip } => {
                let next_gate = gates.nearest(t) + 1;
                self.gate_after_skip(next_gate, &skip, gates)
            }
        }
    }

    fn gate_after_skip(&mut self, from_gate: u64, skip: &GeometricSkip, gates: &Gates) -> i64 {
        let gap = self.rng.geometric(skip);
        match from_gate.checked_add(gap) {
            Some(gate) if gate < u64::MAX / 2 => gates.time_of(gate),
            _ => NEVER,
        }
    }

    /// Time of the next dark event or afterpulse, [`NEVER`] if none.
    #[inline]
    pub fn next_internal_event(&self) -> i64 {
        self.next_dark
            .min(self.next_background)
            .min(self.next_afterpulse)
    }

    /// Handles the detector's next internal event (dark count, background photon or
    /// afterpulse) and returns the click it caused, if any.
    pub fn fire_internal(&mut self, gates: &Gates) -> Option<(i64, ClickOrigin)> {
        let (t, origin) = if self.next_afterpulse <= self.next_dark.min(self.next_background) {
            let t = self.next_afterpulse;
            self.next_afterpulse = NEVER;
            (t, ClickOrigin::Afterpulse)
        } else if self.next_dark <= self.next_background {
            let t = self.next_dark;
            self.next_dark = self.next_event(self.dark, t, gates);
            (t, ClickOrigin::Dark)
        } else {
            let t = self.next_background;
            self.next_background = self.next_event(self.background, t, gates);
            (t, ClickOrigin::Raman)
        };
        self.avalanche(t, gates).then_some((t, origin))
    }

    /// One or more photons reach the detector at `t` (already thinned by efficiency).
    #[inline]
    pub fn photon(&mut self, t: i64, gates: &Gates) -> bool {
        self.enabled && self.avalanche(t, gates)
    }

    #[inline]
    fn avalanche(&mut self, t: i64, gates: &Gates) -> bool {
        if t < self.dead_until {
            return false;
        }
        self.dead_until = t + self.dead_time_ps;
        self.next_afterpulse = if self.afterpulse_probability > 0.0
            && self.rng.bernoulli(self.afterpulse_probability)
        {
            let release =
                self.dead_until + (self.rng.exponential() * self.afterpulse_decay_ps) as i64;
            if self.gated {
                gates.time_of(gates.first_at_or_after(release))
            } else {
                release
            }
        } else {
            NEVER
        };
        true
    }

    /// A jittered report time for a click at `t`.
    #[inline]
    pub fn jitter(&mut self, t: i64) -> i64 {
        if self.jitter_sigma_ps == 0.0 {
            return t;
        }
        let z = self
            .rng
            .normal()
            .clamp(-JITTER_TRUNCATION_SIGMAS, JITTER_TRUNCATION_SIGMAS);
        t + (z * self.jitter_sigma_ps).round() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::clock::SlotClock;

    fn gates() -> Gates {
        Gates {
            clock: SlotClock::new(1_000_000_000),
            arrival_delay_ps: 0,
        }
    }

    #[test]
    fn presets_are_valid_and_within_reference_ranges() {
        for (name, preset) in DetectorPreset::ALL {
            let spec = preset.spec();
            assert!(
                Detector::new(&spec, Section(name), SimRng::new(0, 0)).is_ok(),
                "{name}"
            );
        }
        let snspd = DetectorPreset::Snspd.spec();
        assert!((0.85..=0.98).contains(&snspd.efficiency));
        assert!((15.0..=60.0).contains(&snspd.jitter_fwhm_ps));
    }

    #[test]
    fn rejects_bad_parameters_with_their_names() {
        let mut spec = DetectorPreset::Snspd.spec();
        spec.efficiency = 1.2;
        let err = Detector::new(&spec, Section("receiver.detectors[1]"), SimRng::new(0, 0))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("receiver.detectors[1].efficiency: 1.2"),
            "{err}"
        );
        let mut spec = DetectorPreset::Snspd.spec();
        spec.dead_time_ps = -3;
        assert!(Detector::new(&spec, Section("d"), SimRng::new(0, 0)).is_err());
        let mut spec = DetectorPreset::Snspd.spec();
        spec.dark = DarkCountSpec::FreeRunning { rate_hz: f64::NAN };
        assert!(Detector::new(&spec, Section("d"), SimRng::new(0, 0)).is_err());
    }

    #[test]
    fn dead_time_blocks_excitations_until_it_ends() {
        let mut spec = DetectorPreset::Snspd.spec();
        spec.dead_time_ps = 1_000;
        let mut det = Detector::new(&spec, Section("d"), SimRng::new(0, 0)).unwrap();
        let g = gates();
        assert!(det.photon(0, &g));
        assert!(!det.photon(999, &g));
        assert!(det.photon(1_000, &g));
    }

    #[test]
    fn disabled_detector_never_clicks() {
        let spec = DetectorPreset::Snspd.spec();
        let g = gates();
        let mut det = Detector::new(&spec, Section("d"), SimRng::new(0, 0)).unwrap();
        det.set_enabled(false, 0, &g);
        assert!(!det.photon(10, &g));
        assert_eq!(det.next_internal_event(), NEVER);
    }
}
