//! Slot recovery for prepare-and-measure links: from the receiver's time tags to detections
//! (pulse slot, which detectors clicked) ready for sifting.
//!
//! The source sends one sync pulse every `divider` slots. The receiver's tagger runs on its own
//! clock, so the sync period it measures differs from the nominal one by the clocks' mismatch
//! (up to ~100 ppm for free-running oscillators) and wanders with temperature. An alpha-beta
//! tracker follows the sync phase and period; a detection is placed in the slot nearest its
//! delay-corrected time and kept only inside the gate around that slot's centre, which rejects
//! most dark counts and afterpulses. Syncs that do not fit (missing, doubled, noise) are counted
//! and skipped rather than trusted.
//!
//! A source driven by a node marks the sync where the node's pattern starts (a marker input
//! beside the sync); with a marker channel configured, slots are numbered from that sync, and
//! detections before it are dropped: they belong to no pattern the node knows.

use crate::numeric::round_nearest;

/// Phase gain of the sync tracker.
const ALPHA: f64 = 1.0 / 16.0;
/// Period gain of the sync tracker (critically damped alpha-beta pair).
const BETA: f64 = ALPHA * ALPHA / (2.0 - ALPHA);
/// Detections held while the clock is not yet locked; beyond this the oldest are dropped, so a
/// stream without syncs (a loose cable) cannot exhaust memory.
const MAX_WAITING: usize = 1 << 20;

/// Packs a slot and a detector into one word; ordering by the word orders by slot.
#[inline]
fn pack(slot: u64, detector: u8) -> u64 {
    (slot << 2) | u64::from(detector)
}

/// What slot recovery needs to know about the link.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotConfig {
    /// The source's nominal pulse rate, Hz.
    pub nominal_rate_hz: f64,
    /// Slots per sync pulse.
    pub sync_divider: u64,
    /// Tag channel of the sync input.
    pub sync_channel: u8,
    /// Tag channels of detectors H, V, D, A.
    pub detector_channels: [u8; 4],
    /// Delay of each detector's signal relative to the sync's, in ps (subtracted).
    pub delays_ps: [i64; 4],
    /// Full width of the acceptance gate around each slot's centre, ps.
    pub gate_ps: i64,
    /// Slot index of the first sync pulse in the stream.
    pub first_sync_slot: u64,
    /// Where the stream's syncs sit on the tagger clock. Without it the first sync recovery sees
    /// starts slot `first_sync_slot`, which is right only for a recovery that reads the stream
    /// from its start; with it a recovery can start anywhere (a calibration step, a monitor
    /// opened mid-run) and still number slots as the source does.
    pub epoch: Option<SyncEpoch>,
    /// Largest mismatch between the source's and the tagger's clocks, ppm.
    pub max_clock_error_ppm: f64,
    /// Tag channel of the marker input: when set, slot 0 is the sync the latest marker came
    /// with, and nothing is numbered before the first marker.
    pub marker_channel: Option<u8>,
}

/// The tagger time of the sync that starts slot `first_sync_slot`, and the sync period measured
/// on the tagger's clock: together they number any later sync. The period must be the measured
/// one (a clock error of 1 ppm shifts the numbering by a sync every 10^6 syncs), and the
/// numbering holds while the clocks do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncEpoch {
    /// Tagger time of the reference sync, ps.
    pub time_ps: i64,
    /// Sync period on the tagger's clock, ps.
    pub period_ps: f64,
}

/// A configuration slot recovery cannot work with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("slot recovery: {0}")]
pub struct SlotConfigError(String);

impl SlotConfig {
    /// The usual wiring: sync on channel 0, detectors H, V, D, A on 1–4 with equal delays, the
    /// stream starting at slot 0, a gate of half a slot (at most 1 ns), clocks within 100 ppm.
    pub fn standard(nominal_rate_hz: f64, sync_divider: u64) -> Self {
        Self {
            nominal_rate_hz,
            sync_divider,
            sync_channel: 0,
            detector_channels: [1, 2, 3, 4],
            delays_ps: [0; 4],
            gate_ps: (1e12 / nominal_rate_hz / 2.0).min(1_000.0) as i64,
            first_sync_slot: 0,
            epoch: None,
            max_clock_error_ppm: 100.0,
            marker_channel: None,
        }
    }

    /// The same wiring, slots numbered from the sync the source marks on `channel`.
    #[must_use]
    pub fn marked(mut self, channel: u8) -> Self {
        self.marker_channel = Some(channel);
        self
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), SlotConfigError> {
        let fail = |m: String| Err(SlotConfigError(m));
        if !(self.nominal_rate_hz > 0.0 && self.nominal_rate_hz <= 1e11) {
            return fail(format!(
                "nominal rate {} Hz is outside (0, 1e11]",
                self.nominal_rate_hz
            ));
        }
        if self.sync_divider == 0 || self.sync_divider > 1 << 30 {
            return fail(format!(
                "sync divider {} is outside [1, 2^30]",
                self.sync_divider
            ));
        }
        let period = 1e12 / self.nominal_rate_hz;
        if !(self.gate_ps > 0 && (self.gate_ps as f64) <= period) {
            return fail(format!(
                "gate {} ps must be positive and at most the slot period ({period} ps)",
                self.gate_ps
            ));
        }
        if !(0.0..=1000.0).contains(&self.max_clock_error_ppm) {
            return fail(format!(
                "clock error bound {} ppm is outside [0, 1000]",
                self.max_clock_error_ppm
            ));
        }
        if self.detector_channels.contains(&self.sync_channel) {
            return fail("a detector shares the sync channel".into());
        }
        if let Some(marker) = self.marker_channel
            && (marker == self.sync_channel || self.detector_channels.contains(&marker))
        {
            return fail(format!(
                "the marker channel {marker} is also a sync or detector channel"
            ));
        }
        if self.delays_ps.iter().any(|d| d.abs() > 1_000_000_000) {
            return fail("detector delays must be within ±1 ms".into());
        }
        if let Some(epoch) = &self.epoch {
            let nominal = period * self.sync_divider as f64;
            let error_ppm = (epoch.period_ps / nominal - 1.0).abs() * 1e6;
            // NaN (a zero or non-finite period) fails too.
            if error_ppm.is_nan() || error_ppm > self.max_clock_error_ppm {
                return fail(format!(
                    "epoch sync period {} ps is not within {} ppm of the nominal {nominal} ps",
                    epoch.period_ps, self.max_clock_error_ppm
                ));
            }
        }
        Ok(())
    }
}

/// Detections ready for sifting, as parallel arrays in increasing slot order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detections {
    /// Slot index.
    pub slot: Vec<u64>,
    /// Detectors that clicked in the slot: bit `i` for detector `i` (H, V, D, A).
    pub mask: Vec<u8>,
}

impl Detections {
    /// Number of detections.
    pub fn len(&self) -> usize {
        self.slot.len()
    }

    /// `true` without detections.
    pub fn is_empty(&self) -> bool {
        self.slot.is_empty()
    }

    /// Forgets all detections, keeping the allocations.
    pub fn clear(&mut self) {
        self.slot.clear();
        self.mask.clear();
    }

    /// Whether detection `i` clicked more than one detector.
    pub fn is_double_click(&self, i: usize) -> bool {
        self.mask[i].count_ones() > 1
    }
}

/// What slot recovery saw, for operators and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotStats {
    /// Sync pulses used.
    pub syncs: u64,
    /// Sync pulses that should have come but did not.
    pub missed_syncs: u64,
    /// Sync tags that did not fit the tracked clock and were ignored.
    pub rejected_syncs: u64,
    /// Detector tags inside a gate.
    pub in_gate: u64,
    /// Detector tags between gates (rejected).
    pub outside_gate: u64,
    /// Detector tags before the clock was locked (dropped).
    pub before_lock: u64,
    /// Tags on channels that are neither sync nor detector.
    pub other_channels: u64,
    /// Markers seen (pattern starts).
    pub markers: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Ignore,
    Sync,
    Marker,
    Detector(u8),
}

/// A time split into whole picoseconds and a fraction, so long runs keep sub-ps precision.
#[derive(Debug, Clone, Copy)]
struct Phase {
    whole: i64,
    fraction: f64,
}

impl Phase {
    fn at(t: i64) -> Self {
        Phase {
            whole: t,
            fraction: 0.0,
        }
    }

    fn plus(self, ps: f64) -> Self {
        let total = self.fraction + ps;
        let whole = total.floor();
        Phase {
            whole: self.whole + whole as i64,
            fraction: total - whole,
        }
    }

    #[inline]
    fn since(self, t: i64) -> f64 {
        (t - self.whole) as f64 - self.fraction
    }
}

#[derive(Debug, Clone, Copy)]
enum Lock {
    /// Waiting for a first sync, or for a second one that confirms the period.
    Searching { first: Option<i64> },
    /// Tracking the sync clock.
    Locked(Clock),
}

/// The tracked sync clock, with what every detection needs precomputed (it changes per sync,
/// detections are far more frequent).
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// Time of the latest sync, tagger ps.
    phase: Phase,
    /// Sync period, tagger ps.
    period: f64,
    /// Number of that sync, counted from the first.
    index: i64,
    /// Slot index of that sync.
    base_slot: i64,
    /// Slots per tagger picosecond.
    slots_per_ps: f64,
    /// Half the gate, in slots.
    half_gate_slots: f64,
}

impl Clock {
    fn new(phase: Phase, period: f64, index: i64, config: &SlotConfig) -> Self {
        let slots_per_ps = config.sync_divider as f64 / period;
        Clock {
            phase,
            period,
            index,
            base_slot: config.first_sync_slot as i64 + index * config.sync_divider as i64,
            slots_per_ps,
            half_gate_slots: config.gate_ps as f64 * slots_per_ps / 2.0,
        }
    }
}

/// Streaming slot recovery: feed tag batches in order, collect detections.
#[derive(Debug, Clone)]
pub struct SlotRecovery {
    config: SlotConfig,
    routes: [Route; 256],
    nominal_sync_period: f64,
    lock: Lock,
    /// Delay-corrected detector tags seen before lock, placed once the clock is known.
    waiting: Vec<(i64, u8)>,
    /// Mapped detections not yet released, packed by [`pack`], possibly out of order by the
    /// delays.
    pending: Vec<u64>,
    /// Slots the delays can reorder by.
    horizon_slots: u64,
    last_slot: u64,
    /// With a marker channel: the sync numbering of slot 0 (the marked sync's index times the
    /// divider), once the clock has placed the marker; before the first marker, `None`.
    origin: Option<i64>,
    /// A marker seen before the clock was locked, placed at lock.
    marker_before_lock: Option<i64>,
    stats: SlotStats,
}

impl SlotRecovery {
    /// Prepares recovery for `config`.
    pub fn new(config: SlotConfig) -> Result<Self, SlotConfigError> {
        config.validate()?;
        let origin = config.marker_channel.is_none().then_some(0);
        let mut routes = [Route::Ignore; 256];
        routes[usize::from(config.sync_channel)] = Route::Sync;
        for (d, &c) in config.detector_channels.iter().enumerate() {
            routes[usize::from(c)] = Route::Detector(d as u8);
        }
        if let Some(marker) = config.marker_channel {
            routes[usize::from(marker)] = Route::Marker;
        }
        let slot_period = 1e12 / config.nominal_rate_hz;
        let spread = config.delays_ps.iter().max().unwrap_or(&0)
            - config.delays_ps.iter().min().unwrap_or(&0);
        Ok(SlotRecovery {
            nominal_sync_period: slot_period * config.sync_divider as f64,
            horizon_slots: (spread as f64 / slot_period).ceil() as u64 + 2,
            routes,
            config,
            lock: Lock::Searching { first: None },
            waiting: Vec::new(),
            pending: Vec::new(),
            last_slot: 0,
            origin,
            marker_before_lock: None,
            stats: SlotStats::default(),
        })
    }

    /// Counts so far.
    pub fn stats(&self) -> &SlotStats {
        &self.stats
    }

    /// The slot period measured on the tagger's clock, once locked.
    pub fn slot_period_ps(&self) -> Option<f64> {
        match self.lock {
            Lock::Locked(clock) => Some(1.0 / clock.slots_per_ps),
            Lock::Searching { .. } => None,
        }
    }

    /// The tagger clock's rate error against the source's nominal rate, in ppm, once locked.
    pub fn clock_error_ppm(&self) -> Option<f64> {
        match self.lock {
            Lock::Locked(clock) => Some((clock.period / self.nominal_sync_period - 1.0) * 1e6),
            Lock::Searching { .. } => None,
        }
    }

    /// Processes a batch of tags (time-ordered, as a tagger delivers them) and appends the
    /// detections that are final.
    pub fn process(&mut self, times: &[i64], channels: &[u8], out: &mut Detections) {
        for (&t, &c) in times.iter().zip(channels) {
            match self.routes[usize::from(c)] {
                Route::Detector(d) => {
                    let t = t - self.config.delays_ps[usize::from(d)];
                    self.detection(t, d);
                }
                Route::Sync => self.sync(t),
                Route::Marker => self.marker(t),
                Route::Ignore => self.stats.other_channels += 1,
            }
        }
        self.release(out, false);
    }

    /// Releases every detection still held back; call at the end of the stream.
    pub fn finish(&mut self, out: &mut Detections) {
        self.release(out, true);
    }

    #[inline]
    fn detection(&mut self, t: i64, detector: u8) {
        let (Lock::Locked(clock), Some(_)) = (self.lock, self.origin) else {
            if self.waiting.len() >= MAX_WAITING {
                let dropped = MAX_WAITING / 2;
                self.waiting.drain(..dropped);
                self.stats.before_lock += dropped as u64;
            }
            self.waiting.push((t, detector));
            return;
        };
        self.map(t, detector, &clock);
    }

    /// Places a delay-corrected time in its slot, if it falls inside the gate.
    #[inline]
    fn map(&mut self, t: i64, detector: u8, clock: &Clock) {
        let x = clock.phase.since(t) * clock.slots_per_ps;
        let nearest = round_nearest(x);
        if (x - nearest).abs() > clock.half_gate_slots {
            self.stats.outside_gate += 1;
            return;
        }
        let origin = self.origin.unwrap_or_default();
        let Ok(slot) = u64::try_from(clock.base_slot + nearest as i64 - origin) else {
            self.stats.before_lock += 1; // before the stream's (or the pattern's) first slot
            return;
        };
        self.stats.in_gate += 1;
        self.last_slot = self.last_slot.max(slot);
        self.pending.push(pack(slot, detector));
    }

    /// A marker: slots count from the sync it came with (stamped with it).
    fn marker(&mut self, t: i64) {
        self.stats.markers += 1;
        let Lock::Locked(clock) = self.lock else {
            self.marker_before_lock = Some(t);
            return;
        };
        self.anchor(&clock, t);
        // Detections held for want of a marker can be placed now (those before it drop out).
        for (t, d) in std::mem::take(&mut self.waiting) {
            self.map(t, d, &clock);
        }
    }

    /// Numbers slots from the sync at `t` on `clock`.
    fn anchor(&mut self, clock: &Clock, t: i64) {
        let index = clock.index + (clock.phase.since(t) / clock.period).round() as i64;
        self.origin = Some(index * self.config.sync_divider as i64);
    }

    fn sync(&mut self, t: i64) {
        match self.lock {
            Lock::Searching { first: None } => {
                self.lock = Lock::Searching { first: Some(t) };
                self.stats.syncs += 1;
            }
            Lock::Searching { first: Some(first) } => self.confirm(first, t),
            Lock::Locked(clock) => {
                let elapsed = clock.phase.since(t);
                let steps = (elapsed / clock.period).round();
                let error = elapsed - steps * clock.period;
                // A sync more than half a slot off cannot be trusted to set the slots.
                if steps < 1.0 || error.abs() * clock.slots_per_ps > 0.5 {
                    self.stats.rejected_syncs += 1;
                    return;
                }
                self.stats.syncs += 1;
                self.stats.missed_syncs += steps as u64 - 1;
                self.lock = Lock::Locked(Clock::new(
                    clock.phase.plus(steps * clock.period + ALPHA * error),
                    clock.period + BETA * error / steps,
                    clock.index + steps as i64,
                    &self.config,
                ));
            }
        }
    }

    /// Number of the sync at `t`, counted from the one that starts `first_sync_slot`: from the
    /// epoch when there is one, else this is the first. A sync before the epoch numbers slots
    /// before the stream's first, whose detections are then counted as before lock.
    fn index_of(&self, t: i64) -> i64 {
        self.config.epoch.map_or(0, |epoch| {
            ((t - epoch.time_ps) as f64 / epoch.period_ps).round() as i64
        })
    }

    /// A second sync: lock if the interval is a whole number of nominal periods within the
    /// clock-error bound, otherwise start over from this sync.
    fn confirm(&mut self, first: i64, t: i64) {
        let elapsed = (t - first) as f64;
        let steps = (elapsed / self.nominal_sync_period).round();
        let period = elapsed / steps;
        let error_ppm = (period / self.nominal_sync_period - 1.0).abs() * 1e6;
        // Over many missing syncs the bound no longer pins the count: insist on a short gap.
        let unambiguous = steps * self.config.max_clock_error_ppm * 1e-6 < 0.25;
        if steps >= 1.0 && unambiguous && error_ppm <= self.config.max_clock_error_ppm {
            self.stats.syncs += 1;
            self.stats.missed_syncs += steps as u64 - 1;
            let index = self.index_of(first);
            let start = Clock::new(Phase::at(first), period, index, &self.config);
            self.lock = Lock::Locked(Clock::new(
                start.phase.plus(elapsed),
                period,
                index + steps as i64,
                &self.config,
            ));
            if let Some(marker) = self.marker_before_lock.take() {
                self.anchor(&start, marker);
            }
            if self.origin.is_none() {
                return; // detections keep waiting for a marker
            }
            // Tags up to a sync period before the first sync belong to the slots just before it.
            for (t, d) in std::mem::take(&mut self.waiting) {
                if (t as f64) < first as f64 - self.nominal_sync_period {
                    self.stats.before_lock += 1;
                } else {
                    self.map(t, d, &start);
                }
            }
        } else {
            // The first sync was spurious (or too far back to count from): restart from this one,
            // keeping the tags that may still precede it by less than a period.
            self.stats.rejected_syncs += 1;
            let keep_from = self
                .waiting
                .partition_point(|&(w, _)| (w as f64) < t as f64 - self.nominal_sync_period);
            self.stats.before_lock += keep_from as u64;
            self.waiting.drain(..keep_from);
            self.lock = Lock::Searching { first: Some(t) };
        }
    }

    /// Groups pending detections by slot and appends those no later tag can still join.
    fn release(&mut self, out: &mut Detections, all: bool) {
        if !self.pending.is_sorted_by_key(|&packed| packed >> 2) {
            self.pending.sort_unstable();
        }
        let safe = if all {
            u64::MAX
        } else {
            pack(self.last_slot.saturating_sub(self.horizon_slots), 0)
        };
        let ready = self.pending.partition_point(|&packed| packed < safe);
        for &packed in &self.pending[..ready] {
            let slot = packed >> 2;
            let bit = 1u8 << (packed & 3);
            match out.slot.last() {
                Some(&last) if last == slot => {
                    if let Some(mask) = out.mask.last_mut() {
                        *mask |= bit;
                    }
                }
                _ => {
                    out.slot.push(slot);
                    out.mask.push(bit);
                }
            }
        }
        self.pending.drain(..ready);
    }
}
