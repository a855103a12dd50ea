//! The BB84 receiver: polarization controller, passive basis split, and four detectors H, V, D, A.
//!
//! A photon entering with Stokes vector `s` (after fiber and controller) takes the Z arm with
//! probability `p_Z` and the X arm otherwise; in its arm a polarizing beam splitter sends it to the
//! detector with analysis axis `a` with probability `(1 + v·s·a)/2`, where `v` is the visibility.
//! Photons are independent, so the number reaching each detector is Poisson and a pulse can click
//! several detectors (double clicks).

use serde::{Deserialize, Serialize};

use super::clock::Gates;
use super::controller_optics::{ActuatorError, ControllerOptics, ControllerSpec};
use super::detector::{Detector, DetectorSpec, NEVER};
use super::param::{ConfigError, Section};
use super::polarization::{A, D, H, Rotation, Stokes, V, dot};
use super::rng::SimRng;

/// Detector names in index order.
pub const DETECTOR_NAMES: [&str; 4] = ["H", "V", "D", "A"];
/// Analysis axis of each detector on the Poincaré sphere.
pub const DETECTOR_AXES: [Stokes; 4] = [H, V, D, A];

/// Parameters of a receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverSpec {
    /// Transmission of the receiver optics before the detectors.
    pub optics_transmission: f64,
    /// Probability that the passive basis splitter sends a photon to the Z arm.
    pub basis_z_probability: f64,
    /// Polarization controller in front of the receiver.
    #[serde(default)]
    pub controller: ControllerSpec,
    /// Detectors H, V, D, A.
    pub detectors: [DetectorSpec; 4],
}

impl ReceiverSpec {
    /// Four identical detectors, balanced basis split, lossless optics, no controller.
    pub fn uniform(detector: DetectorSpec) -> Self {
        ReceiverSpec {
            optics_transmission: 1.0,
            basis_z_probability: 0.5,
            controller: ControllerSpec::None,
            detectors: [detector; 4],
        }
    }
}

/// A receiver while the world runs.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Detectors H, V, D, A.
    pub detectors: [Detector; 4],
    controller: ControllerOptics,
    pending_setting: Option<(i64, Vec<f64>)>,
    optics_transmission: f64,
    /// Probability of each arm for each detector.
    arm: [f64; 4],
    efficiency_max: f64,
    /// Cumulative probability, per BB84 input state, that a candidate photon reaches (and is
    /// counted by) detector 0..=i.
    tables: [[f64; 4]; 4],
}

impl Receiver {
    /// Validates `spec`; `rng_for` hands each detector its own stream.
    pub fn new(
        spec: &ReceiverSpec,
        section: Section<'_>,
        mut rng_for: impl FnMut(usize) -> SimRng,
    ) -> Result<Self, ConfigError> {
        let optics = section.probability("optics_transmission", spec.optics_transmission, 1.0)?;
        let pz = section.probability("basis_z_probability", spec.basis_z_probability, 1.0)?;
        let controller_name = section.nested("controller");
        let controller = ControllerOptics::new(&spec.controller, Section(&controller_name))?;
        let mut detectors = Vec::with_capacity(4);
        for (i, d) in spec.detectors.iter().enumerate() {
            let name = section.nested(&format!("detectors[{i}]"));
            detectors.push(Detector::new(d, Section(&name), rng_for(i))?);
        }
        let gated = detectors.iter().filter(|d| d.is_gated()).count();
        if gated != 0 && gated != 4 {
            return Err(section.inconsistent(
                "detectors",
                "either all four detectors are gated or none is",
            ));
        }
        let detectors: [Detector; 4] = detectors
            .try_into()
            .map_err(|_| section.inconsistent("detectors", "exactly four detectors"))?;
        let efficiency_max = detectors
            .iter()
            .map(Detector::efficiency)
            .fold(0.0, f64::max);
        let mut receiver = Receiver {
            detectors,
            controller,
            pending_setting: None,
            optics_transmission: optics,
            arm: [pz, pz, 1.0 - pz, 1.0 - pz],
            efficiency_max,
            tables: [[0.0; 4]; 4],
        };
        receiver.update_tables(&Rotation::IDENTITY, 1.0);
        Ok(receiver)
    }

    /// Probability that a photon reaching the receiver is a *candidate*: it survives the optics
    /// and the best detector's efficiency. Candidates are then thinned per detector.
    pub fn candidate_efficiency(&self) -> f64 {
        self.optics_transmission * self.efficiency_max
    }

    /// `true` when the detectors are gated.
    pub fn is_gated(&self) -> bool {
        self.detectors[0].is_gated()
    }

    /// The controller optics.
    pub fn controller(&self) -> &ControllerOptics {
        &self.controller
    }

    /// Per-detector probabilities that a candidate photon with Stokes vector `s` at the
    /// receiver's input (before the controller) is counted, for visibility `v`.
    pub fn candidate_probabilities(&self, s: Stokes, v: f64) -> [f64; 4] {
        let s = self.controller.rotation().apply(s);
        std::array::from_fn(|i| {
            let pass = 0.5 * (1.0 + v * dot(s, DETECTOR_AXES[i]));
            self.arm[i] * pass * self.detectors[i].efficiency() / self.efficiency_max
        })
    }

    /// The same for an unpolarized photon (one half of an entangled pair whose partner is lost).
    pub fn unpolarized_probabilities(&self) -> [f64; 4] {
        std::array::from_fn(|i| {
            self.arm[i] * 0.5 * self.detectors[i].efficiency() / self.efficiency_max
        })
    }

    /// Recomputes the per-state tables for a channel rotation (fiber) and visibility.
    pub fn update_tables(&mut self, channel: &Rotation, visibility: f64) {
        self.tables = [H, V, D, A].map(|input| {
            cumulative(self.candidate_probabilities(channel.apply(input), visibility))
        });
    }

    /// Distributes `photons` candidate photons in BB84 state `state` over the detectors.
    #[inline]
    pub fn split_bb84(&self, state: usize, photons: u32, rng: &mut SimRng) -> [u32; 4] {
        split(&self.tables[state], photons, rng)
    }

    /// Requests a controller setting at world time `now`; it takes effect after the settle time.
    pub fn request_setting(&mut self, now: i64, setting: &[f64]) -> Result<i64, ActuatorError> {
        let delay = self.controller.check(setting)?;
        let at = now.saturating_add(delay);
        self.pending_setting = Some((at, setting.to_vec()));
        Ok(at)
    }

    /// The setting that will be in effect once pending moves finish.
    pub fn target_setting(&self) -> &[f64] {
        self.pending_setting
            .as_ref()
            .map_or(self.controller.setting(), |(_, s)| s.as_slice())
    }

    /// World time at which a pending setting takes effect.
    #[inline]
    pub fn next_setting_ps(&self) -> i64 {
        self.pending_setting.as_ref().map_or(NEVER, |(t, _)| *t)
    }

    /// Puts the pending setting into effect.
    pub fn apply_pending_setting(&mut self) {
        if let Some((_, setting)) = self.pending_setting.take() {
            self.controller.apply(&setting);
        }
    }

    /// The detector with the earliest internal event (dark count or afterpulse) and its time.
    #[inline]
    pub fn next_internal(&self) -> (usize, i64) {
        let mut best = (0, self.detectors[0].next_internal_event());
        for (i, d) in self.detectors.iter().enumerate().skip(1) {
            let t = d.next_internal_event();
            if t < best.1 {
                best = (i, t);
            }
        }
        best
    }

    /// Unpolarized background light (Raman noise) entering the receiver at `photons_per_s`:
    /// through the optics, the basis splitter and each arm's beam splitter (half each way).
    pub fn set_background(&mut self, photons_per_s: f64) {
        for (i, d) in self.detectors.iter_mut().enumerate() {
            d.set_background(photons_per_s * self.optics_transmission * self.arm[i] * 0.5);
        }
    }

    /// Starts every detector's dark-count process at `now`.
    pub fn start(&mut self, now: i64, gates: &Gates) {
        for d in &mut self.detectors {
            d.schedule_first_dark(now, gates);
        }
    }
}

/// Samples where each of `photons` candidates goes, given cumulative detector probabilities
/// (the remainder up to 1 is "not counted").
#[inline]
pub fn split(cumulative: &[f64; 4], photons: u32, rng: &mut SimRng) -> [u32; 4] {
    let mut counts = [0u32; 4];
    for _ in 0..photons {
        let u = rng.uniform();
        if let Some(i) = cumulative.iter().position(|&c| u < c) {
            counts[i] += 1;
        }
    }
    counts
}

/// Cumulative sums of four probabilities.
pub fn cumulative(p: [f64; 4]) -> [f64; 4] {
    let mut acc = 0.0;
    p.map(|x| {
        acc += x;
        acc
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::detector::DetectorPreset;

    fn receiver(pz: f64) -> Receiver {
        let mut spec = ReceiverSpec::uniform(DetectorPreset::Snspd.spec());
        spec.basis_z_probability = pz;
        Receiver::new(&spec, Section("r"), |i| SimRng::new(0, i as u64)).unwrap()
    }

    #[test]
    fn aligned_states_reach_their_own_detector_within_their_arm() {
        let r = receiver(0.7);
        let p = r.candidate_probabilities(H, 1.0);
        assert!((p[0] - 0.7).abs() < 1e-12 && p[1].abs() < 1e-12);
        assert!((p[2] - 0.15).abs() < 1e-12 && (p[3] - 0.15).abs() < 1e-12);
    }

    #[test]
    fn visibility_sends_e_d_to_the_orthogonal_detector() {
        let r = receiver(0.5);
        let e_d = 0.033;
        let p = r.candidate_probabilities(V, 1.0 - 2.0 * e_d);
        assert!((p[0] / (p[0] + p[1]) - e_d).abs() < 1e-12);
    }

    #[test]
    fn mixed_gating_is_rejected() {
        let mut spec = ReceiverSpec::uniform(DetectorPreset::Snspd.spec());
        spec.detectors[2] = DetectorPreset::IngaasGated.spec();
        let err =
            Receiver::new(&spec, Section("receiver"), |i| SimRng::new(0, i as u64)).unwrap_err();
        assert!(err.to_string().starts_with("receiver.detectors:"), "{err}");
    }
}
