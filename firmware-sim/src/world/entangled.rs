//! An entanglement-based (BBM92) link: a continuous-wave SPDC source of `(|HH⟩+|VV⟩)/√2` pairs
//! in the middle, one fiber and one receiving node (receiver and free-running tagger) on each side.
//!
//! Pairs leave the source as a Poisson process, so multi-pair events (two pairs inside one
//! coincidence window) happen at the rate the statistics give. Only pairs with at least one photon
//! that a detector could count are simulated. Whichever photon arrives first is measured first: its
//! outcome is unbiased, and it collapses its partner to the conjugate state (`S3 → -S3`) of what
//! was found, shrunk by the first side's visibility; the partner is then measured in its own
//! node's frame. Dark counts, dead time and afterpulses are each node's own. An eavesdropper at
//! the source's output towards B measures B's photon before either node does: both photons then
//! leave in the states her outcome fixes.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::clock::{Gates, SlotClock};
use super::controller_optics::ActuatorError;
use super::detector::NEVER;
use super::eve::{Eve, EveSpec};
use super::fiber::{Fiber, FiberSpec};
use super::node::{NodeOutput, ReceiverNode};
use super::param::{ConfigError, Section};
use super::polarization::Stokes;
use super::receiver::{DETECTOR_AXES, Receiver, ReceiverSpec, cumulative, split};
use super::rng::SimRng;
use super::source::SpdcSourceSpec;
use super::stream;
use super::tagger::{TAGGER_CHANNELS, Tagger, TaggerSpec};

/// Everything that defines an entanglement-based link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntangledLinkSpec {
    /// The pair source.
    pub source: SpdcSourceSpec,
    /// Fiber from the source to node A.
    pub fiber_a: FiberSpec,
    /// Fiber from the source to node B.
    pub fiber_b: FiberSpec,
    /// Node A's receiver.
    pub receiver_a: ReceiverSpec,
    /// Node B's receiver.
    pub receiver_b: ReceiverSpec,
    /// Node A's tagger.
    #[serde(default)]
    pub tagger_a: TaggerSpec,
    /// Node B's tagger.
    #[serde(default)]
    pub tagger_b: TaggerSpec,
    /// An intercept-resend eavesdropper on B's photons.
    #[serde(default)]
    pub eve: EveSpec,
}

impl EntangledLinkSpec {
    /// A pair source feeding two fibers into identical receivers, with ideal taggers.
    pub fn new(source: SpdcSourceSpec, fibers: [FiberSpec; 2], receiver: ReceiverSpec) -> Self {
        let [fiber_a, fiber_b] = fibers;
        Self {
            source,
            fiber_a,
            fiber_b,
            receiver_a: receiver.clone(),
            receiver_b: receiver,
            tagger_a: TaggerSpec::default(),
            tagger_b: TaggerSpec::default(),
            eve: EveSpec::default(),
        }
    }
}

/// Polarization of a photon on its way to a node, in the source's frame.
#[derive(Debug, Clone, Copy)]
enum Photon {
    /// No candidate photon: the pair only relays through this node's queue.
    Absent,
    /// Its partner was not measured (yet): an unpolarized photon.
    Unpolarized,
    /// Its partner was found in some state: this is the conditioned (partially polarized) state.
    Conditioned(Stokes),
}

#[derive(Debug, Clone, Copy)]
struct Arrival {
    t_ps: i64,
    pair: u64,
    photon: Photon,
    /// When the first node handles a pair: whether the partner is a candidate at the second node.
    partner: bool,
    emitted_ps: i64,
}

/// The emulated entanglement-based link. Node 0 is A, node 1 is B.
#[derive(Debug, Clone)]
pub struct EntangledWorld {
    pair_rate_hz: f64,
    nodes: [ReceiverNode; 2],
    /// Index of the node whose photons arrive first (shorter fiber).
    first: usize,
    candidate_gap_ps: f64,
    /// Probabilities, given a candidate pair, of (both, first only) candidates.
    p_both: f64,
    p_first_only: f64,
    next_emission_ps: i64,
    source_enabled: bool,
    pairs: u64,
    queues: [VecDeque<Arrival>; 2],
    rng: SimRng,
    eve: Eve,
    now_ps: i64,
}

/// Node B's index.
const NODE_B: usize = 1;

/// The state a photon is left in when its partner was found in `found` (both in the source's
/// frame, shrunk by `visibility`): the same linear polarization, the opposite circular one.
fn partner_of(found: Stokes, visibility: f64) -> Stokes {
    [
        visibility * found[0],
        visibility * found[1],
        -visibility * found[2],
    ]
}

/// Queues `arrival` in time order: photons projected at the source can overtake those still
/// waiting for their partner's measurement.
fn enqueue(queue: &mut VecDeque<Arrival>, arrival: Arrival) {
    let at = queue
        .iter()
        .rposition(|a| a.t_ps <= arrival.t_ps)
        .map_or(0, |i| i + 1);
    queue.insert(at, arrival);
}

fn node(
    fiber: &FiberSpec,
    receiver: &ReceiverSpec,
    tagger: &TaggerSpec,
    side: &str,
    seed: u64,
    base: u64,
    spectral_width_ghz: f64,
) -> Result<ReceiverNode, ConfigError> {
    let fiber_name = format!("fiber_{side}");
    let receiver_name = format!("receiver_{side}");
    let tagger_name = format!("tagger_{side}");
    let fiber = Fiber::new(
        fiber,
        Section(&fiber_name),
        SimRng::new(seed, base + stream::FIBER),
        spectral_width_ghz,
    )?;
    let receiver = Receiver::new(receiver, Section(&receiver_name), |i| {
        SimRng::new(seed, base + stream::DETECTOR + i as u64)
    })?;
    if receiver.is_gated() {
        return Err(Section(&receiver_name).inconsistent(
            "detectors",
            "gated detectors need a pulsed source; use free-running detectors with the CW pair source",
        ));
    }
    let tagger = Tagger::new(
        tagger,
        Section(&tagger_name),
        TAGGER_CHANNELS,
        SimRng::new(seed, base + stream::TAGGER),
    )?;
    // Continuous-wave light has no slots; free-running detectors never consult gates.
    let gates = Gates {
        clock: SlotClock::new(1),
        arrival_delay_ps: 0,
    };
    Ok(ReceiverNode::new(fiber, receiver, tagger, gates, false))
}

impl EntangledWorld {
    /// Validates `spec` and builds the link; `seed` fixes every random choice of the run.
    pub fn new(spec: &EntangledLinkSpec, seed: u64) -> Result<Self, ConfigError> {
        let section = Section("source");
        let pair_rate = section.check("pair_rate_hz", spec.source.pair_rate_hz, 0.0, 1e10, "Hz")?;
        let coupling =
            section.probability("coupling_efficiency", spec.source.coupling_efficiency, 1.0)?;
        let width = section.check(
            "spectral_width_ghz",
            spec.source.spectral_width_ghz,
            0.0,
            super::source::MAX_SPECTRAL_WIDTH_GHZ,
            "GHz",
        )?;
        let a = node(
            &spec.fiber_a,
            &spec.receiver_a,
            &spec.tagger_a,
            "a",
            seed,
            0,
            width,
        )?;
        let b = node(
            &spec.fiber_b,
            &spec.receiver_b,
            &spec.tagger_b,
            "b",
            seed,
            stream::NODE_B,
            width,
        )?;
        let first = usize::from(b.fiber.delay_ps() < a.fiber.delay_ps());
        let nodes = [a, b];
        let c: [f64; 2] = std::array::from_fn(|i| {
            coupling * nodes[i].fiber.transmission() * nodes[i].receiver.candidate_efficiency()
        });
        let (cf, cs) = (c[first], c[1 - first]);
        let p_any = 1.0 - (1.0 - cf) * (1.0 - cs);
        let candidate_rate = pair_rate * p_any;
        let mut world = EntangledWorld {
            pair_rate_hz: pair_rate,
            nodes,
            first,
            candidate_gap_ps: if candidate_rate > 0.0 {
                1e12 / candidate_rate
            } else {
                f64::INFINITY
            },
            p_both: if p_any > 0.0 { cf * cs / p_any } else { 0.0 },
            p_first_only: if p_any > 0.0 {
                cf * (1.0 - cs) / p_any
            } else {
                0.0
            },
            next_emission_ps: 0,
            source_enabled: true,
            pairs: 0,
            queues: [VecDeque::new(), VecDeque::new()],
            rng: SimRng::new(seed, stream::PAIRS),
            eve: Eve::new(&spec.eve, Section("eve"), SimRng::new(seed, stream::EVE))?,
            now_ps: 0,
        };
        world.next_emission_ps = world.emission_after(0);
        Ok(world)
    }

    fn emission_after(&mut self, t: i64) -> i64 {
        let gap = self.rng.exponential() * self.candidate_gap_ps;
        if gap.is_finite() && gap < (i64::MAX / 4) as f64 {
            t + gap.round() as i64
        } else {
            NEVER
        }
    }

    /// Emulated time reached, in ps.
    pub fn now_ps(&self) -> i64 {
        self.now_ps
    }

    /// Pairs with at least one candidate photon emitted so far.
    pub fn candidate_pairs(&self) -> u64 {
        self.pairs
    }

    /// Node `index` (0 = A, 1 = B), for inspection.
    pub fn node(&self, index: usize) -> &ReceiverNode {
        &self.nodes[index]
    }

    /// Node `index`, for settings that take effect immediately.
    pub fn node_mut(&mut self, index: usize) -> &mut ReceiverNode {
        &mut self.nodes[index]
    }

    /// Mean rate of pairs leaving the source, in Hz.
    pub fn pair_rate_hz(&self) -> f64 {
        self.pair_rate_hz
    }

    /// Ground truth for coincidence finding: `t_b - t_a` for a pair whose photon A's tagger
    /// stamps at `t_a` (ignoring jitter and quantisation).
    pub fn partner_offset_ps(&self, t_a: i64) -> f64 {
        let [a, b] = &self.nodes;
        let emitted = a.tagger.world_time(t_a) - a.fiber.delay_ps() as f64;
        let at_b = (emitted + b.fiber.delay_ps() as f64).round() as i64;
        b.tagger.local_time(at_b) as f64 - t_a as f64
    }

    /// Whether the source emits pairs.
    pub fn source_enabled(&self) -> bool {
        self.source_enabled
    }

    /// Switches pair emission on or off from now on (pairs in flight still arrive).
    pub fn set_source_enabled(&mut self, enabled: bool) {
        self.source_enabled = enabled;
        self.next_emission_ps = if enabled {
            self.emission_after(self.now_ps)
        } else {
            NEVER
        };
    }

    /// Requests a polarization-controller setting at node `index`.
    pub fn set_controller(&mut self, index: usize, setting: &[f64]) -> Result<i64, ActuatorError> {
        self.nodes[index]
            .receiver
            .request_setting(self.now_ps, setting)
    }

    fn emit(&mut self) {
        let t = self.next_emission_ps;
        let u = self.rng.uniform();
        let (first, second) = if u < self.p_both {
            (true, true)
        } else if u < self.p_both + self.p_first_only {
            (true, false)
        } else {
            (false, true)
        };
        let candidate = |node: usize| if node == self.first { first } else { second };
        if candidate(NODE_B)
            && let Some(found) = self.eve.intercept_unpolarized()
        {
            self.emit_intercepted(t, DETECTOR_AXES[found], [first, second]);
        } else {
            self.emit_entangled(t, first, second);
        }
        self.pairs += 1;
        self.next_emission_ps = if self.source_enabled {
            self.emission_after(t)
        } else {
            NEVER
        };
    }

    /// A pair whose photons wait for the first of them to be measured.
    fn emit_entangled(&mut self, t: i64, first: bool, second: bool) {
        self.queues[self.first].push_back(Arrival {
            t_ps: t + self.nodes[self.first].fiber.delay_ps(),
            pair: self.pairs,
            photon: if first {
                Photon::Unpolarized
            } else {
                Photon::Absent
            },
            partner: second,
            emitted_ps: t,
        });
    }

    /// A pair whose B photon Eve found in `found` and resent: A's photon is projected onto the
    /// partner state, B receives Eve's. `candidates` are the first and second node's.
    fn emit_intercepted(&mut self, t: i64, found: Stokes, candidates: [bool; 2]) {
        for (order, candidate) in candidates.into_iter().enumerate() {
            if !candidate {
                continue;
            }
            let node = if order == 0 {
                self.first
            } else {
                1 - self.first
            };
            let photon = Photon::Conditioned(if node == NODE_B {
                found
            } else {
                partner_of(found, 1.0)
            });
            enqueue(
                &mut self.queues[node],
                Arrival {
                    t_ps: t + self.nodes[node].fiber.delay_ps(),
                    pair: self.pairs,
                    photon,
                    partner: false,
                    emitted_ps: t,
                },
            );
        }
    }

    /// Measures the photon of `arrival` at node `index`; returns the detector that counted it.
    fn measure(&mut self, index: usize, arrival: &Arrival, out: &mut NodeOutput) -> Option<usize> {
        let node = &self.nodes[index];
        let p = match arrival.photon {
            Photon::Absent => return None,
            Photon::Unpolarized => node.receiver.unpolarized_probabilities(),
            Photon::Conditioned(s) => node
                .receiver
                .candidate_probabilities(node.fiber.rotation().apply(s), node.fiber.visibility()),
        };
        let counts = split(&cumulative(p), 1, &mut self.rng);
        let detector = counts.iter().position(|&c| c > 0);
        self.nodes[index].photons(arrival.t_ps, arrival.pair, counts, out);
        detector
    }

    fn first_arrival(&mut self, out: &mut NodeOutput) {
        let Some(arrival) = self.queues[self.first].pop_front() else {
            return;
        };
        let found = self.measure(self.first, &arrival, out);
        if !arrival.partner {
            return;
        }
        let photon = match found {
            None => Photon::Unpolarized,
            Some(detector) => {
                let node = &self.nodes[self.first];
                let to_lab = node
                    .receiver
                    .controller()
                    .rotation()
                    .after(&node.fiber.rotation());
                let at_source = to_lab.inverse().apply(DETECTOR_AXES[detector]);
                Photon::Conditioned(partner_of(at_source, node.fiber.visibility()))
            }
        };
        let second = 1 - self.first;
        enqueue(
            &mut self.queues[second],
            Arrival {
                t_ps: arrival.emitted_ps + self.nodes[second].fiber.delay_ps(),
                photon,
                partner: false,
                ..arrival
            },
        );
    }

    /// Emulates the link up to world time `t_end_ps`, appending what each node produced.
    pub fn run_until(&mut self, t_end_ps: i64, out: &mut [NodeOutput; 2]) {
        if t_end_ps <= self.now_ps {
            return;
        }
        let second = 1 - self.first;
        loop {
            let t_emit = self.next_emission_ps;
            let t_first = self.queues[self.first].front().map_or(NEVER, |a| a.t_ps);
            let t_second = self.queues[second].front().map_or(NEVER, |a| a.t_ps);
            let t_change = [0, 1].map(|i| self.nodes[i].next_change_ps());
            let internal = [0, 1].map(|i| self.nodes[i].receiver.next_internal());
            let t = t_emit
                .min(t_first)
                .min(t_second)
                .min(t_change[0])
                .min(t_change[1])
                .min(internal[0].1)
                .min(internal[1].1);
            if t >= t_end_ps {
                break;
            }
            if let Some(i) = (0..2).find(|&i| t_change[i] == t) {
                self.nodes[i].change();
            } else if t == t_emit {
                self.emit();
            } else if t == t_first {
                self.first_arrival(&mut out[self.first]);
            } else if t == t_second {
                if let Some(arrival) = self.queues[second].pop_front() {
                    self.measure(second, &arrival, &mut out[second]);
                }
            } else if let Some(i) = (0..2).find(|&i| internal[i].1 == t) {
                self.nodes[i].fire_internal(internal[i].0, &mut out[i]);
            }
        }
        self.now_ps = t_end_ps;
        for (node, out) in self.nodes.iter_mut().zip(out.iter_mut()) {
            node.flush(t_end_ps, out);
        }
    }
}
