//! A prepare-and-measure (decoy-state BB84) link: Alice's weak-coherent source, the fiber, an
//! optional eavesdropper, and Bob's node.
//!
//! Cost grows with detection events, not pulses. A pulse of mean photon number `μ` delivers a
//! Poisson number of photons with mean `λ = μ·t·η_max` that Bob's best detector would count
//! (`t`: fiber and optics transmission). The world jumps straight from one slot that has such a
//! *candidate* photon to the next with a geometric skip at the largest `λ`, accepts the slot with
//! probability `(1-e^{-λ_k})/(1-e^{-λ_max})` for its class `k`, draws the candidate count from a
//! zero-truncated Poisson law, and thins each candidate to a detector by its efficiency. Every
//! step is exact, not an approximation.

use serde::{Deserialize, Serialize};

use super::clock::Gates;
use super::controller_optics::ActuatorError;
use super::detector::NEVER;
use super::eve::{Eve, EveSpec};
use super::fiber::{Fiber, FiberSpec};
use super::node::{NodeOutput, ReceiverNode};
use super::param::{ConfigError, Section};
use super::receiver::{Receiver, ReceiverSpec};
use super::rng::{GeometricSkip, SimRng, ZeroTruncatedPoisson};
use super::source::{IntensitySpec, SlotChoice, WcpSource, WcpSourceSpec, default_laser_width};
use super::stream;
use super::tagger::{TAGGER_CHANNELS, Tagger, TaggerSpec};
use qkd_units::pattern::PatternKey;

/// Everything that defines a prepare-and-measure link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Alice's source.
    pub source: WcpSourceSpec,
    /// The fiber from Alice to Bob.
    pub fiber: FiberSpec,
    /// The eavesdropper (absent by default).
    #[serde(default)]
    pub eve: EveSpec,
    /// Bob's receiver.
    pub receiver: ReceiverSpec,
    /// Bob's time tagger.
    #[serde(default)]
    pub tagger: TaggerSpec,
}

/// Per-class acceptance of candidate slots and their photon-number laws.
#[derive(Debug, Clone)]
struct CandidateLaw {
    skip: GeometricSkip,
    accept: Vec<f64>,
    photons: Vec<ZeroTruncatedPoisson>,
}

impl CandidateLaw {
    fn new(mean_photon_numbers: &[f64], candidate_transmission: f64) -> Self {
        let lambdas: Vec<f64> = mean_photon_numbers
            .iter()
            .map(|mu| mu * candidate_transmission)
            .collect();
        let lambda_max = lambdas.iter().copied().fold(0.0, f64::max);
        let p_max = -(-lambda_max).exp_m1();
        let photons: Vec<ZeroTruncatedPoisson> = lambdas
            .iter()
            .map(|&l| ZeroTruncatedPoisson::new(l))
            .collect();
        let accept = photons
            .iter()
            .map(|law| {
                if p_max > 0.0 {
                    law.at_least_one() / p_max
                } else {
                    0.0
                }
            })
            .collect();
        CandidateLaw {
            skip: GeometricSkip::new(p_max),
            accept,
            photons,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    slot: u64,
    choice: SlotChoice,
    arrival_ps: i64,
}

/// The emulated prepare-and-measure link.
#[derive(Debug, Clone)]
pub struct PrepareMeasureWorld {
    source: WcpSource,
    eve: Eve,
    node: ReceiverNode,
    law: CandidateLaw,
    photon_rng: SimRng,
    source_enabled: bool,
    next: Option<Candidate>,
    /// Last slot the candidate process may reach without times overflowing.
    slot_limit: u64,
    next_sync_slot: u64,
    /// Sync slots where a node's pattern starts, each marked at the tagger, in order.
    pattern_starts: std::collections::VecDeque<u64>,
    now_ps: i64,
    pulses: u64,
}

impl PrepareMeasureWorld {
    /// Validates `spec` and builds the link; `seed` fixes every random choice of the run.
    pub fn new(spec: &LinkSpec, seed: u64) -> Result<Self, ConfigError> {
        let source = WcpSource::new(
            &spec.source,
            Section("source"),
            stream::seed(seed, stream::PATTERN),
        )?;
        let fiber = Fiber::new(
            &spec.fiber,
            Section("fiber"),
            SimRng::new(seed, stream::FIBER),
            spec.source.spectral_width_ghz,
        )?;
        let eve = Eve::new(&spec.eve, Section("eve"), SimRng::new(seed, stream::EVE))?;
        let receiver = Receiver::new(&spec.receiver, Section("receiver"), |i| {
            SimRng::new(seed, stream::DETECTOR + i as u64)
        })?;
        let tagger = Tagger::new(
            &spec.tagger,
            Section("tagger"),
            TAGGER_CHANNELS,
            SimRng::new(seed, stream::TAGGER),
        )?;
        let gates = Gates {
            clock: source.clock,
            arrival_delay_ps: fiber.delay_ps(),
        };
        let law = CandidateLaw::new(
            &source.mean_photon_numbers,
            fiber.transmission() * receiver.candidate_efficiency(),
        );
        let slot_limit = source.clock.first_slot_at_or_after(i64::MAX / 4);
        let mut world = PrepareMeasureWorld {
            next_sync_slot: 0,
            node: ReceiverNode::new(fiber, receiver, tagger, gates, true),
            source,
            eve,
            law,
            photon_rng: SimRng::new(seed, stream::PHOTONS),
            source_enabled: true,
            next: None,
            slot_limit,
            pattern_starts: std::collections::VecDeque::new(),
            now_ps: 0,
            pulses: 0,
        };
        world.draw_candidate_from(0);
        Ok(world)
    }

    /// Emulated time reached, in ps.
    pub fn now_ps(&self) -> i64 {
        self.now_ps
    }

    /// Pulses that have reached Bob's detectors so far (while the source was on).
    pub fn pulses(&self) -> u64 {
        self.pulses
    }

    /// Slots the source has emitted by now (those before the current time).
    pub fn slots_emitted(&self) -> u64 {
        self.source.clock.first_slot_at_or_after(self.now_ps)
    }

    /// Alice's source.
    pub fn source(&self) -> &WcpSource {
        &self.source
    }

    /// Alice's choices for `slot` (her emission record).
    pub fn slot_choice(&self, slot: u64) -> SlotChoice {
        self.source.choice(slot)
    }

    /// A node's pattern key takes over from the next sync slot the source has not emitted yet;
    /// that sync is marked at Bob's tagger (its marker input), so the receiver can number slots
    /// from it. Returns the world slot the pattern starts at.
    pub fn start_pattern(&mut self, key: &PatternKey) -> u64 {
        let divider = self.source.sync_divider;
        let start = self
            .slots_emitted()
            .div_ceil(divider)
            .saturating_mul(divider)
            .max(self.next_sync_slot);
        self.source.start_pattern(start, key);
        self.pattern_starts.retain(|&s| s < start);
        self.pattern_starts.push_back(start);
        self.restart_candidates();
        start
    }

    /// Bob's node (fiber, receiver, tagger), for inspection.
    pub fn node(&self) -> &ReceiverNode {
        &self.node
    }

    /// Bob's node, for settings that take effect immediately (tagger, detector bias).
    pub fn node_mut(&mut self) -> &mut ReceiverNode {
        &mut self.node
    }

    /// Whether the source emits light.
    pub fn source_enabled(&self) -> bool {
        self.source_enabled
    }

    /// Switches the source's light on or off from now on (sync keeps running).
    pub fn set_source_enabled(&mut self, enabled: bool) {
        self.source_enabled = enabled;
        self.restart_candidates();
    }

    /// Changes the intensity classes, basis bias and reference share from now on; the
    /// repetition rate is fixed.
    pub fn set_shares(
        &mut self,
        intensities: &[IntensitySpec],
        basis_z_probability: f64,
        reference_share: f64,
    ) -> Result<(), ConfigError> {
        let spec = WcpSourceSpec {
            rep_rate_hz: self.source.clock.rate_hz(),
            intensities: intensities.to_vec(),
            basis_z_probability,
            reference_share,
            sync_divider: self.source.sync_divider as u32,
            spectral_width_ghz: default_laser_width(),
        };
        self.source = self.source.reconfigured(&spec, Section("source"))?;
        self.law = CandidateLaw::new(
            &self.source.mean_photon_numbers,
            self.node.fiber.transmission() * self.node.receiver.candidate_efficiency(),
        );
        self.restart_candidates();
        Ok(())
    }

    /// Requests a polarization-controller setting; returns the world time it takes effect.
    pub fn set_controller(&mut self, setting: &[f64]) -> Result<i64, ActuatorError> {
        self.node.receiver.request_setting(self.now_ps, setting)
    }

    fn restart_candidates(&mut self) {
        let first = self.node.gates.first_at_or_after(self.now_ps);
        self.draw_candidate_from(first);
    }

    /// Finds the first candidate slot at or after `slot`.
    fn draw_candidate_from(&mut self, mut slot: u64) {
        self.next = None;
        if !self.source_enabled || self.law.skip.never() {
            return;
        }
        loop {
            let gap = self.photon_rng.geometric(&self.law.skip);
            slot = match slot.checked_add(gap) {
                Some(s) if s < self.slot_limit => s,
                _ => return,
            };
            let choice = self.source.choice(slot);
            if self.photon_rng.uniform() < self.law.accept[usize::from(choice.intensity)] {
                self.next = Some(Candidate {
                    slot,
                    choice,
                    arrival_ps: self.node.gates.time_of(slot),
                });
                return;
            }
            slot += 1;
        }
    }

    fn photon_event(&mut self, candidate: Candidate, out: &mut NodeOutput) {
        let class = usize::from(candidate.choice.intensity);
        let photons = self.law.photons[class].sample(&mut self.photon_rng);
        let state = self.eve.forward(&candidate.choice);
        let counts = self
            .node
            .receiver
            .split_bb84(state, photons, &mut self.photon_rng);
        self.node
            .photons(candidate.arrival_ps, candidate.slot, counts, out);
        self.draw_candidate_from(candidate.slot + 1);
    }

    fn sync_event(&mut self) {
        let t = self.node.gates.time_of(self.next_sync_slot);
        let marked = self.pattern_starts.front() == Some(&self.next_sync_slot);
        if marked {
            self.pattern_starts.pop_front();
        }
        self.node.tagger.record_sync(t, marked);
        self.next_sync_slot += self.source.sync_divider;
    }

    /// Emulates the link up to world time `t_end_ps`, appending what Bob's node produced.
    pub fn run_until(&mut self, t_end_ps: i64, out: &mut NodeOutput) {
        if t_end_ps <= self.now_ps {
            return;
        }
        if self.source_enabled {
            let gates = &self.node.gates;
            self.pulses += gates.first_at_or_after(t_end_ps) - gates.first_at_or_after(self.now_ps);
        }
        loop {
            let t_photon = self.next.map_or(NEVER, |c| c.arrival_ps);
            let t_sync = self.node.gates.time_of(self.next_sync_slot);
            let t_change = self.node.next_change_ps();
            let (detector, t_internal) = self.node.receiver.next_internal();
            let t = t_photon.min(t_sync).min(t_change).min(t_internal);
            if t >= t_end_ps {
                break;
            }
            if t == t_change {
                self.node.change();
            } else if t == t_photon {
                if let Some(candidate) = self.next {
                    self.photon_event(candidate, out);
                }
            } else if t == t_internal {
                self.node.fire_internal(detector, out);
            } else {
                self.sync_event();
            }
        }
        self.now_ps = t_end_ps;
        self.node.flush(t_end_ps, out);
    }
}
