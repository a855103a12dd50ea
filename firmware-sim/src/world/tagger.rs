//! The receiver's time tagger: its own free-running clock, finite resolution, per-channel delays,
//! trigger levels, a throughput limit that loses events when exceeded, and time-ordered output.

use serde::{Deserialize, Serialize};

use super::detector::FWHM_PER_SIGMA;
use super::detector::JITTER_TRUNCATION_SIGMAS;
use super::param::{ConfigError, Section};
use super::rng::SimRng;

/// Channel of the sync (clock) input.
pub const SYNC_CHANNEL: u8 = 0;
/// Channel of the marker input: the source marks the sync pulse where a node's pattern starts.
pub const MARKER_CHANNEL: u8 = 5;
/// Inputs of the emulated tagger: sync plus four detectors.
pub const TAGGER_CHANNELS: usize = 5;

fn default_resolution() -> u32 {
    1
}
fn default_sync_jitter() -> f64 {
    10.0
}
fn default_buffer() -> u32 {
    1 << 20
}
fn default_amplitude() -> f64 {
    0.5
}

/// Parameters of the emulated time tagger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaggerSpec {
    /// Timestamp resolution (bin width) in ps.
    #[serde(default = "default_resolution")]
    pub resolution_ps: u32,
    /// Tagger clock reading when the source emits slot 0, in ps.
    #[serde(default)]
    pub offset_ps: i64,
    /// Rate error of the tagger clock against the source clock, in parts per million.
    #[serde(default)]
    pub drift_ppm: f64,
    /// Cable and electronics delay of each input (sync first), in ps.
    #[serde(default)]
    pub channel_delays_ps: [i64; TAGGER_CHANNELS],
    /// Jitter of the sync input, FWHM in ps.
    #[serde(default = "default_sync_jitter")]
    pub sync_jitter_fwhm_ps: f64,
    /// Sustained throughput limit in tags per second; 0 means unlimited.
    #[serde(default)]
    pub max_tags_per_s: f64,
    /// Tags the on-board buffer absorbs in a burst above the throughput limit.
    #[serde(default = "default_buffer")]
    pub buffer_tags: u32,
    /// Amplitude of the detector output pulses, in volts: inputs fire when the trigger level lies
    /// between 0 and this.
    #[serde(default = "default_amplitude")]
    pub input_amplitude_volts: f64,
}

impl Default for TaggerSpec {
    fn default() -> Self {
        TaggerSpec {
            resolution_ps: default_resolution(),
            offset_ps: 0,
            drift_ppm: 0.0,
            channel_delays_ps: [0; TAGGER_CHANNELS],
            sync_jitter_fwhm_ps: default_sync_jitter(),
            max_tags_per_s: 0.0,
            buffer_tags: default_buffer(),
            input_amplitude_volts: default_amplitude(),
        }
    }
}

/// Why a tagger setting was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaggerSettingError {
    /// No such input.
    #[error("channel {channel} does not exist (the tagger has {count})")]
    NoSuchChannel {
        /// Requested channel.
        channel: usize,
        /// Number of inputs.
        count: usize,
    },
    /// A trigger level outside the input's range.
    #[error("trigger level {volts} V is outside [-{limit}, {limit}] V")]
    TriggerLevel {
        /// Requested level.
        volts: f64,
        /// Largest magnitude accepted.
        limit: f64,
    },
    /// A delay outside the range the tagger can apply.
    #[error("delay {ps} ps is outside ±{limit} ps")]
    Delay {
        /// Requested delay.
        ps: i64,
        /// Largest magnitude accepted.
        limit: i64,
    },
}

/// Largest trigger level magnitude accepted, in volts.
pub const TRIGGER_LIMIT_VOLTS: f64 = 2.5;
/// Largest per-channel delay magnitude accepted, in ps (±1 µs).
pub const DELAY_LIMIT_PS: i64 = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    per_ps: f64,
    capacity: f64,
    tokens: f64,
    last_ps: i64,
}

impl TokenBucket {
    fn take(&mut self, t: i64) -> bool {
        let elapsed = (t - self.last_ps).max(0) as f64;
        self.tokens = (self.tokens + elapsed * self.per_ps).min(self.capacity);
        self.last_ps = self.last_ps.max(t);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The per-input setting of `channel`, or the error naming the inputs that exist.
fn input<T>(settings: &mut [T], channel: usize) -> Result<&mut T, TaggerSettingError> {
    let count = settings.len();
    settings
        .get_mut(channel)
        .ok_or(TaggerSettingError::NoSuchChannel { channel, count })
}

/// The tagger while the world runs.
#[derive(Debug, Clone)]
pub struct Tagger {
    resolution_ps: i64,
    offset_ps: i64,
    drift: f64,
    delays_ps: Vec<i64>,
    levels_volts: Vec<f64>,
    amplitude_volts: f64,
    sync_jitter_sigma_ps: f64,
    /// Largest detector jitter, for the reordering look-ahead.
    max_jitter_sigma_ps: f64,
    bucket: Option<TokenBucket>,
    running: bool,
    /// Recorded tags not yet released, kept sorted by (time, channel).
    pending: Vec<(i64, u8)>,
    missed: u64,
    rng: SimRng,
}

impl Tagger {
    /// Validates `spec` for a tagger with `channels` inputs.
    pub fn new(
        spec: &TaggerSpec,
        section: Section<'_>,
        channels: usize,
        rng: SimRng,
    ) -> Result<Self, ConfigError> {
        let resolution =
            section.count("resolution_ps", u64::from(spec.resolution_ps), 1, 1_000_000)?;
        let offset = section.check("offset_ps", spec.offset_ps as f64, 0.0, 1e18, "ps")?;
        let drift_ppm = section.check("drift_ppm", spec.drift_ppm, -1000.0, 1000.0, "ppm")?;
        for (i, &d) in spec.channel_delays_ps.iter().enumerate() {
            section.check(
                &format!("channel_delays_ps[{i}]"),
                d as f64,
                -DELAY_LIMIT_PS as f64,
                DELAY_LIMIT_PS as f64,
                "ps",
            )?;
        }
        let sync_jitter = section.check(
            "sync_jitter_fwhm_ps",
            spec.sync_jitter_fwhm_ps,
            0.0,
            1e6,
            "ps",
        )?;
        let max_rate = section.check("max_tags_per_s", spec.max_tags_per_s, 0.0, 1e12, "Hz")?;
        let buffer = section.count("buffer_tags", u64::from(spec.buffer_tags), 1, 1 << 32)?;
        let amplitude = section.check(
            "input_amplitude_volts",
            spec.input_amplitude_volts,
            0.01,
            TRIGGER_LIMIT_VOLTS,
            "V",
        )?;
        let mut delays_ps = spec.channel_delays_ps.to_vec();
        delays_ps.resize(channels, 0);
        Ok(Tagger {
            resolution_ps: resolution as i64,
            offset_ps: offset as i64,
            drift: drift_ppm * 1e-6,
            delays_ps,
            levels_volts: vec![amplitude / 2.0; channels],
            amplitude_volts: amplitude,
            sync_jitter_sigma_ps: sync_jitter / FWHM_PER_SIGMA,
            max_jitter_sigma_ps: sync_jitter / FWHM_PER_SIGMA,
            bucket: (max_rate > 0.0).then_some(TokenBucket {
                per_ps: max_rate * 1e-12,
                capacity: buffer as f64,
                tokens: buffer as f64,
                last_ps: 0,
            }),
            running: true,
            pending: Vec::new(),
            missed: 0,
            rng,
        })
    }

    /// Number of inputs.
    pub fn channel_count(&self) -> usize {
        self.delays_ps.len()
    }

    /// Resolution in ps.
    pub fn resolution_ps(&self) -> i64 {
        self.resolution_ps
    }

    /// Widens the reordering look-ahead to cover a detector with this jitter.
    pub fn cover_jitter(&mut self, sigma_ps: f64) {
        self.max_jitter_sigma_ps = self.max_jitter_sigma_ps.max(sigma_ps);
    }

    /// Starts or stops recording; tags are discarded while stopped.
    pub fn set_running(&mut self, running: bool) {
        self.running = running;
    }

    /// Whether the tagger records.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Sets an input's trigger level.
    pub fn set_trigger_level(
        &mut self,
        channel: usize,
        volts: f64,
    ) -> Result<(), TaggerSettingError> {
        let level = input(&mut self.levels_volts, channel)?;
        if volts.is_nan() || volts.abs() > TRIGGER_LIMIT_VOLTS {
            return Err(TaggerSettingError::TriggerLevel {
                volts,
                limit: TRIGGER_LIMIT_VOLTS,
            });
        }
        *level = volts;
        Ok(())
    }

    /// Sets an input's delay.
    pub fn set_delay(&mut self, channel: usize, ps: i64) -> Result<(), TaggerSettingError> {
        let delay = input(&mut self.delays_ps, channel)?;
        if ps.abs() > DELAY_LIMIT_PS {
            return Err(TaggerSettingError::Delay {
                ps,
                limit: DELAY_LIMIT_PS,
            });
        }
        *delay = ps;
        Ok(())
    }

    /// An input's delay in ps.
    pub fn delay(&self, channel: usize) -> Option<i64> {
        self.delays_ps.get(channel).copied()
    }

    /// The tagger clock's reading at world time `t` (before quantisation and delays).
    #[inline]
    pub fn local_time(&self, t: i64) -> i64 {
        t + self.offset_ps + (t as f64 * self.drift).round() as i64
    }

    /// The world time at which the tagger clock reads `local` (inverse of [`Self::local_time`]).
    pub fn world_time(&self, local: i64) -> f64 {
        (local - self.offset_ps) as f64 / (1.0 + self.drift)
    }

    #[inline]
    fn quantise(&self, t: i64) -> i64 {
        t.div_euclid(self.resolution_ps) * self.resolution_ps
    }

    /// A sync pulse reaches the sync input at world time `t`; a `marked` one also the marker
    /// input, stamped with it (a digital line beside the sync: no threshold, no own delay).
    pub fn record_sync(&mut self, t: i64, marked: bool) {
        let z = self
            .rng
            .normal()
            .clamp(-JITTER_TRUNCATION_SIGMAS, JITTER_TRUNCATION_SIGMAS);
        let jittered = t + (z * self.sync_jitter_sigma_ps).round() as i64;
        let before = self.pending.len();
        self.record(t, jittered, SYNC_CHANNEL);
        if marked && self.pending.len() > before {
            let stamp = self.quantise(self.local_time(jittered) + self.delays_ps[0]);
            self.insert((stamp, MARKER_CHANNEL));
        }
    }

    /// A pulse reaches input `channel` at world time `t`, to be stamped as if at `jittered`.
    #[inline]
    pub fn record(&mut self, t: i64, jittered: i64, channel: u8) {
        if !self.running {
            return;
        }
        let index = usize::from(channel);
        let level = self.levels_volts[index];
        if !(level > 0.0 && level < self.amplitude_volts) {
            return;
        }
        if let Some(bucket) = &mut self.bucket
            && !bucket.take(t)
        {
            self.missed += 1;
            return;
        }
        let stamp = self.quantise(self.local_time(jittered) + self.delays_ps[index]);
        self.insert((stamp, channel));
    }

    /// Files a tag in time order (jitter only disorders neighbours: it moves back to its place).
    fn insert(&mut self, entry: (i64, u8)) {
        self.pending.push(entry);
        let mut i = self.pending.len() - 1;
        while i > 0 && self.pending[i - 1] > entry {
            self.pending[i] = self.pending[i - 1];
            i -= 1;
        }
        self.pending[i] = entry;
    }

    /// Releases, in time order, every tag no later event can precede, given that all events
    /// before world time `t_end` have been recorded. Returns the events lost since the last call.
    pub fn flush(&mut self, t_end: i64, times: &mut Vec<i64>, channels: &mut Vec<u8>) -> u64 {
        let lookahead = (JITTER_TRUNCATION_SIGMAS * self.max_jitter_sigma_ps).ceil() as i64 + 1;
        let min_delay = self.delays_ps.iter().copied().min().unwrap_or(0);
        let cutoff = self.quantise(self.local_time(t_end - lookahead) + min_delay);
        let ready = self.pending.partition_point(|&(t, _)| t < cutoff);
        times.extend(self.pending[..ready].iter().map(|&(t, _)| t));
        channels.extend(self.pending[..ready].iter().map(|&(_, c)| c));
        self.pending.drain(..ready);
        std::mem::take(&mut self.missed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagger(spec: &TaggerSpec) -> Tagger {
        Tagger::new(spec, Section("tagger"), TAGGER_CHANNELS, SimRng::new(0, 0)).unwrap()
    }

    #[test]
    fn stamps_apply_offset_drift_delay_and_resolution() {
        let spec = TaggerSpec {
            resolution_ps: 4,
            offset_ps: 1_000,
            drift_ppm: 10.0,
            channel_delays_ps: [0, 50, 0, 0, 0],
            ..TaggerSpec::default()
        };
        let mut t = tagger(&spec);
        t.record(1_000_000, 1_000_000, 1);
        let (mut times, mut chans) = (Vec::new(), Vec::new());
        t.flush(10_000_000, &mut times, &mut chans);
        // 1e6 + 1000 + 10 (drift) + 50 = 1_001_060, quantised to 4 ps.
        assert_eq!(times, vec![1_001_060]);
        assert_eq!(chans, vec![1]);
    }

    #[test]
    fn output_is_time_ordered_and_late_tags_wait_for_the_lookahead() {
        let mut t = tagger(&TaggerSpec::default());
        t.cover_jitter(100.0);
        t.record(1_000, 1_300, 1);
        t.record(1_100, 1_050, 2);
        let (mut times, mut chans) = (Vec::new(), Vec::new());
        t.flush(1_500, &mut times, &mut chans);
        assert!(times.is_empty(), "within the look-ahead nothing is final");
        t.flush(10_000, &mut times, &mut chans);
        assert_eq!(times, vec![1_050, 1_300]);
        assert_eq!(chans, vec![2, 1]);
    }

    #[test]
    fn throughput_limit_loses_and_counts_events() {
        let spec = TaggerSpec {
            max_tags_per_s: 1e6, // one per µs
            buffer_tags: 10,
            ..TaggerSpec::default()
        };
        let mut t = tagger(&spec);
        for i in 0..100 {
            t.record(i, i, 1);
        }
        let (mut times, mut chans) = (Vec::new(), Vec::new());
        let missed = t.flush(1_000_000_000, &mut times, &mut chans);
        assert_eq!(times.len(), 10);
        assert_eq!(missed, 90);
    }

    #[test]
    fn trigger_level_above_the_pulse_silences_the_input() {
        let mut t = tagger(&TaggerSpec::default());
        t.set_trigger_level(1, 0.8).unwrap();
        t.record(10, 10, 1);
        t.record(20, 20, 2);
        let (mut times, mut chans) = (Vec::new(), Vec::new());
        t.flush(1_000_000, &mut times, &mut chans);
        assert_eq!(chans, vec![2]);
        assert!(t.set_trigger_level(1, f64::NAN).is_err());
        assert!(t.set_trigger_level(9, 0.1).is_err());
        assert!(t.set_delay(0, 2 * DELAY_LIMIT_PS).is_err());
    }
}
