//! Pulse slots on the source's clock, and the gate times derived from them.

use qkd_units::Picoseconds;

const PS_PER_S: u128 = Picoseconds::PER_SECOND as u128;

/// Maps pulse slot indices to emission times on the source clock, exactly, for any integer rate.
///
/// Slot `k` is emitted at `floor(k · 10^12 / rate)` ps. Integer arithmetic keeps slot times exact
/// for runs of any length; the common case of a period that is a whole number of picoseconds
/// takes a fast path without division.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotClock {
    rate_hz: u64,
    /// `10^12 / rate` when it divides exactly, else 0.
    whole_period_ps: i64,
}

impl SlotClock {
    /// A clock ticking `rate_hz` times per second (`rate_hz > 0`, validated by the caller).
    pub fn new(rate_hz: u64) -> Self {
        let rate = rate_hz.max(1);
        let whole_period_ps = if PS_PER_S.is_multiple_of(u128::from(rate)) {
            (PS_PER_S / u128::from(rate)) as i64
        } else {
            0
        };
        SlotClock {
            rate_hz: rate,
            whole_period_ps,
        }
    }

    /// Pulses per second.
    pub fn rate_hz(&self) -> u64 {
        self.rate_hz
    }

    /// The period in picoseconds (fractional for rates that do not divide 10^12).
    pub fn period_ps(&self) -> f64 {
        PS_PER_S as f64 / self.rate_hz as f64
    }

    /// Emission time of slot `slot`.
    #[inline]
    pub fn time_of(&self, slot: u64) -> i64 {
        if self.whole_period_ps > 0 {
            slot as i64 * self.whole_period_ps
        } else {
            (u128::from(slot) * PS_PER_S / u128::from(self.rate_hz)) as i64
        }
    }

    /// The first slot emitted at or after `t` (`t ≥ 0`; earlier times give slot 0).
    pub fn first_slot_at_or_after(&self, t: i64) -> u64 {
        if t <= 0 {
            return 0;
        }
        let t = t as u128;
        (t * u128::from(self.rate_hz)).div_ceil(PS_PER_S) as u64
    }

    /// The slot whose emission time is nearest to `t`.
    pub fn nearest_slot(&self, t: i64) -> u64 {
        if t <= 0 {
            return 0;
        }
        let scaled = 2 * t as u128 * u128::from(self.rate_hz) + PS_PER_S;
        (scaled / (2 * PS_PER_S)) as u64
    }

    /// Number of slots emitted in `[from, to)`.
    pub fn slots_between(&self, from: i64, to: i64) -> u64 {
        self.first_slot_at_or_after(to)
            .saturating_sub(self.first_slot_at_or_after(from))
    }
}

/// Detector gates: one per slot, opened when that slot's light arrives at the detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gates {
    /// The source clock.
    pub clock: SlotClock,
    /// Delay from emission to arrival at the detector (fiber and receiver optics).
    pub arrival_delay_ps: i64,
}

impl Gates {
    /// Arrival time of slot `slot`.
    #[inline]
    pub fn time_of(&self, slot: u64) -> i64 {
        self.clock.time_of(slot) + self.arrival_delay_ps
    }

    /// The first gate opening at or after `t`.
    pub fn first_at_or_after(&self, t: i64) -> u64 {
        self.clock.first_slot_at_or_after(t - self.arrival_delay_ps)
    }

    /// The slot whose light arrives nearest to `t`.
    pub fn nearest(&self, t: i64) -> u64 {
        self.clock.nearest_slot(t - self.arrival_delay_ps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_and_fractional_periods_agree_with_exact_arithmetic() {
        for rate in [
            2_000_000u64,
            100_000_000,
            1_000_000_000,
            3_000_000,
            7_777_777,
        ] {
            let clock = SlotClock::new(rate);
            for slot in [0u64, 1, 2, 999, 123_456_789_012] {
                let exact = (u128::from(slot) * PS_PER_S / u128::from(rate)) as i64;
                assert_eq!(clock.time_of(slot), exact, "rate {rate} slot {slot}");
                let t = clock.time_of(slot);
                assert_eq!(clock.first_slot_at_or_after(t), slot);
                assert_eq!(clock.first_slot_at_or_after(t + 1), slot + 1);
                assert_eq!(clock.nearest_slot(t + 3), slot);
            }
        }
    }

    #[test]
    fn slots_between_counts_half_open_interval() {
        let clock = SlotClock::new(100_000_000); // 10 ns
        assert_eq!(clock.slots_between(0, 1_000_000), 100);
        assert_eq!(clock.slots_between(1, 10_001), 1);
    }

    #[test]
    fn gates_are_shifted_slots() {
        let gates = Gates {
            clock: SlotClock::new(1_000_000_000),
            arrival_delay_ps: 5_500,
        };
        assert_eq!(gates.time_of(2), 7_500);
        assert_eq!(gates.first_at_or_after(7_501), 3);
        assert_eq!(gates.nearest(7_900), 2);
    }
}
