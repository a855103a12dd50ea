//! One receiving node: the fiber that feeds it, its receiver, and its time tagger; and what it
//! produces while the world runs.

use super::clock::Gates;
use super::detector::ClickOrigin;
use super::fiber::Fiber;
use super::receiver::Receiver;
use super::tagger::Tagger;

/// Slot recorded for noise clicks that belong to no pulse (continuous-wave sources).
pub const NO_SLOT: u64 = u64::MAX;

/// Ground truth of clicks, in avalanche-time order. Only the emulator knows it: tests and
/// statistics use it to check what the node's own processing recovers from the tags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Clicks {
    /// Pulse slot (prepare-and-measure) or pair index (entangled source) behind the click; noise
    /// clicks carry the nearest slot, or [`NO_SLOT`] without a pulsed source.
    pub slot: Vec<u64>,
    /// Detector index: 0 = H, 1 = V, 2 = D, 3 = A.
    pub detector: Vec<u8>,
    /// What caused the click.
    pub origin: Vec<ClickOrigin>,
    /// World time of the avalanche in ps (before jitter and the tagger's clock).
    pub time_ps: Vec<i64>,
}

impl Clicks {
    /// Number of clicks.
    pub fn len(&self) -> usize {
        self.slot.len()
    }

    /// `true` without clicks.
    pub fn is_empty(&self) -> bool {
        self.slot.is_empty()
    }

    /// Forgets all clicks, keeping the allocations.
    pub fn clear(&mut self) {
        self.slot.clear();
        self.detector.clear();
        self.origin.clear();
        self.time_ps.clear();
    }

    #[inline]
    fn push(&mut self, slot: u64, detector: u8, origin: ClickOrigin, time_ps: i64) {
        self.slot.push(slot);
        self.detector.push(detector);
        self.origin.push(origin);
        self.time_ps.push(time_ps);
    }
}

/// What one node produced during a run step: its tagger's stream and the ground truth behind it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeOutput {
    /// Timestamps on the node's tagger clock, in ps, non-decreasing.
    pub tag_times_ps: Vec<i64>,
    /// Input channel of each timestamp (0 = sync, 1..=4 = detectors H, V, D, A).
    pub tag_channels: Vec<u8>,
    /// Events the tagger lost to its throughput limit.
    pub missed_tags: u64,
    /// Ground truth of the clicks.
    pub clicks: Clicks,
}

impl NodeOutput {
    /// Forgets everything, keeping the allocations.
    pub fn clear(&mut self) {
        self.tag_times_ps.clear();
        self.tag_channels.clear();
        self.missed_tags = 0;
        self.clicks.clear();
    }
}

/// A receiving node while the world runs.
#[derive(Debug, Clone)]
pub struct ReceiverNode {
    /// The fiber from the source to this node.
    pub fiber: Fiber,
    /// Controller, basis split and detectors.
    pub receiver: Receiver,
    /// The node's tagger.
    pub tagger: Tagger,
    /// Arrival times of pulse slots at the detectors (gates of gated detectors).
    pub gates: Gates,
    /// Whether clicks belong to pulse slots (pulsed source) or to no slot (continuous wave).
    pub slotted: bool,
}

impl ReceiverNode {
    /// Assembles a node and aligns the receiver's tables with the fiber's starting rotation.
    pub fn new(
        fiber: Fiber,
        mut receiver: Receiver,
        mut tagger: Tagger,
        gates: Gates,
        slotted: bool,
    ) -> Self {
        receiver.update_tables(&fiber.rotation(), fiber.visibility());
        receiver.set_background(fiber.raman_photons_per_s());
        for d in &receiver.detectors {
            tagger.cover_jitter(d.jitter_sigma_ps());
        }
        receiver.start(0, &gates);
        ReceiverNode {
            fiber,
            receiver,
            tagger,
            gates,
            slotted,
        }
    }

    /// Emulated time of the next change of the polarization transformation (fiber drift or step,
    /// controller move finishing).
    #[inline]
    pub fn next_change_ps(&self) -> i64 {
        self.fiber
            .next_change_ps()
            .min(self.receiver.next_setting_ps())
    }

    /// Applies the change due at [`Self::next_change_ps`].
    pub fn change(&mut self) {
        if self.receiver.next_setting_ps() <= self.fiber.next_change_ps() {
            self.receiver.apply_pending_setting();
        } else {
            self.fiber.change();
        }
        self.receiver
            .update_tables(&self.fiber.rotation(), self.fiber.visibility());
    }

    /// Biases (counting) or unbiases detector `index` from world time `now`.
    pub fn set_detector_enabled(&mut self, index: usize, enabled: bool, now: i64) {
        if let Some(d) = self.receiver.detectors.get_mut(index) {
            d.set_enabled(enabled, now, &self.gates);
        }
    }

    /// Handles detector `detector`'s next dark count or afterpulse.
    pub fn fire_internal(&mut self, detector: usize, out: &mut NodeOutput) {
        if let Some((t, origin)) = self.receiver.detectors[detector].fire_internal(&self.gates) {
            let slot = if self.slotted {
                self.gates.nearest(t)
            } else {
                NO_SLOT
            };
            self.click(slot, detector, origin, t, out);
        }
    }

    /// Photons (already split over the detectors) arrive at `t`, belonging to `slot`.
    #[inline]
    pub fn photons(&mut self, t: i64, slot: u64, counts: [u32; 4], out: &mut NodeOutput) {
        for (detector, &count) in counts.iter().enumerate() {
            if count > 0 && self.receiver.detectors[detector].photon(t, &self.gates) {
                self.click(slot, detector, ClickOrigin::Photon, t, out);
            }
        }
    }

    #[inline]
    fn click(
        &mut self,
        slot: u64,
        detector: usize,
        origin: ClickOrigin,
        t: i64,
        out: &mut NodeOutput,
    ) {
        out.clicks.push(slot, detector as u8, origin, t);
        let stamped = self.receiver.detectors[detector].jitter(t);
        self.tagger.record(t, stamped, detector as u8 + 1);
    }

    /// Releases the tags that are final once all events before `t_end` are in.
    pub fn flush(&mut self, t_end: i64, out: &mut NodeOutput) {
        out.missed_tags += self
            .tagger
            .flush(t_end, &mut out.tag_times_ps, &mut out.tag_channels);
    }
}
