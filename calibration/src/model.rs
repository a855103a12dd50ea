//! A model of a polarization controller whose actuators say what they do to the light (fiber
//! paddles: retarders whose axes turn with the paddle), used far from alignment to reach the
//! compensating setting in one move.
//!
//! The analysers see `M(θ) = G·C(θ)·F`: the fiber `F`, the controller `C` at setting `θ`, and a
//! fixed rotation `G` between the controller and the analysers (a patch cord, the paddles'
//! zero). Each reading at a setting gives the part of `M` the counts show (four correlations
//! with reference states, two from disclosed key bits). A least-squares fit over the readings
//! since the link was last aligned gives `F` (and refines `G`, which is held near its previous
//! value by a prior, since a few readings cannot pin down six angles); a search over the
//! actuators' ranges then gives the setting that makes `M` the identity.
//!
//! Probing coordinate by coordinate walks downhill and can end in a local minimum of the
//! reachable settings (paddles turn over 170°, not a full period); the model sees the whole
//! range at once.

use qkd_drivers::{ActuatorOptics, ActuatorSpec};
use qkd_units::poincare::Rotation;

use crate::counts::StateCounts;
use crate::least_squares::minimise;
use crate::newton::SIGNALS;

/// Standard deviation, in radians, of the prior on the fixed rotation after the controller.
const AFTER_PRIOR_RAD: f64 = 0.1;

/// Correlations the readings must show before the rotation after the controller is fitted
/// too: three readings with references, six from disclosed bits.
const JOINT_FIT_SIGNALS: usize = 12;

/// Increase of the weighted sum of squares within which two fits explain the readings equally
/// well (three standard errors).
const AMBIGUOUS_CHI2: f64 = 9.0;

/// Fibers closer than this, in radians, are the same fit.
const DISTINCT_RAD: f64 = 0.05;

/// Iterations of each fit from each starting point.
const FIT_ITERATIONS: u32 = 40;

/// Settings evaluated on the grid of the search (all actuators together).
const GRID_POINTS: f64 = 20_000.0;

/// Grid points refined by least squares.
const REFINED: usize = 6;

/// Cost per full range of travel when choosing grid points to refine beside the best ones.
const TRAVEL_COST: f64 = 0.1;

/// Settings whose predicted cost is within this of the best are equally good: the one with the
/// least travel is taken.
const COST_TIE: f64 = 0.002;

/// Smallest variance of a correlation estimate, as a share of one detection's: keeps readings
/// near ±1 from getting unbounded weight.
const MIN_VARIANCE_FACTOR: f64 = 0.02;

/// What the counts show of `m`: `[R11, R22, R12, R21]`, as in
/// [`StateCounts::correlations`](crate::counts::StateCounts::correlations).
fn signals_of(m: &Rotation) -> [f64; SIGNALS] {
    [m.0[0][0], m.0[1][1], m.0[0][1], m.0[1][0]]
}

/// How far `to` is from `from`, in full ranges summed over the actuators (motorised paddles
/// move one after the other).
pub fn travel(to: &[f64], from: &[f64], actuators: &[ActuatorSpec]) -> f64 {
    to.iter()
        .zip(from)
        .zip(actuators)
        .map(|((v, f), a)| (v - f).abs() / (a.max - a.min))
        .sum()
}

/// One reading: a setting and the correlations seen there.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Actuator setting, device units.
    pub setting: Vec<f64>,
    /// Correlations seen, divided by the visibility (what a perfect link would show).
    pub signals: [f64; SIGNALS],
    /// Inverse variance of each (0 where the counts show nothing).
    pub weights: [f64; SIGNALS],
}

impl Observation {
    /// The reading of `counts` at `setting`, on a link of visibility `visibility`.
    pub fn new(setting: &[f64], counts: &StateCounts, visibility: f64) -> Self {
        let mut signals = [0.0; SIGNALS];
        let mut weights = [0.0; SIGNALS];
        let visibility = visibility.clamp(0.1, 1.0);
        for (k, seen) in counts.correlations().iter().enumerate() {
            if let Some((value, n)) = *seen {
                signals[k] = value / visibility;
                let variance = (1.0 - value * value).max(MIN_VARIANCE_FACTOR) / n as f64;
                weights[k] = 1.0 / (variance / (visibility * visibility));
            }
        }
        Observation {
            setting: setting.to_vec(),
            signals,
            weights,
        }
    }

    /// Correlations this reading shows.
    pub fn shown(&self) -> usize {
        self.weights.iter().filter(|w| **w > 0.0).count()
    }
}

/// The fiber (and the rotation after the controller) that best explain a set of readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Rotation of the fiber in front of the controller.
    pub fiber: Rotation,
    /// Fixed rotation between the controller and the analysers.
    pub after: Rotation,
    /// Root-mean-square residual in standard errors (about 1 when the model holds).
    pub misfit: f64,
}

/// A controller of rotating retarders, and the rotation after it as fitted so far.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerModel {
    /// Retardance and axis turn per unit of each actuator, in the order light meets them.
    retarders: Vec<(f64, f64)>,
    after: Rotation,
}

/// The 24 rotations that map the cube onto itself: starting points spread over all of SO(3).
fn cube_rotations() -> Vec<Rotation> {
    const PERMUTATIONS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let mut out = Vec::with_capacity(24);
    for p in PERMUTATIONS {
        for signs in 0..8u8 {
            let mut m = [[0.0; 3]; 3];
            for (row, &col) in p.iter().enumerate() {
                m[row][col] = if signs >> row & 1 == 1 { -1.0 } else { 1.0 };
            }
            let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
            if det > 0.0 {
                out.push(Rotation(m));
            }
        }
    }
    out
}

/// `base` turned by the rotation vector `v` (applied after it).
fn perturbed(base: &Rotation, v: &[f64]) -> Rotation {
    Rotation::from_rotation_vector([v[0], v[1], v[2]]).after(base)
}

impl ControllerModel {
    /// The model of `actuators` if every one of them declares its optics.
    pub fn from_actuators(actuators: &[ActuatorSpec]) -> Option<Self> {
        let retarders = actuators
            .iter()
            .map(|a| match a.optics? {
                ActuatorOptics::RotatingRetarder {
                    retardance_rad,
                    rad_per_unit,
                } => (retardance_rad.is_finite() && rad_per_unit.is_finite())
                    .then_some((retardance_rad, rad_per_unit)),
            })
            .collect::<Option<Vec<_>>>()?;
        (!retarders.is_empty()).then_some(ControllerModel {
            retarders,
            after: Rotation::IDENTITY,
        })
    }

    /// Keeps the rotation after the controller that `fit` found.
    pub fn adopt(&mut self, fit: &Fit) {
        self.after = fit.after;
    }

    /// One actuator's rotation at `value`.
    fn element(&self, index: usize, value: f64) -> Rotation {
        let (retardance, per_unit) = self.retarders[index];
        Rotation::retarder(value * per_unit, retardance)
    }

    /// The controller's own rotation at `setting` (without what follows it).
    pub fn controller(&self, setting: &[f64]) -> Rotation {
        setting
            .iter()
            .enumerate()
            .fold(Rotation::IDENTITY, |total, (i, &value)| {
                self.element(i, value).after(&total)
            })
    }

    /// The fibers that explain `readings` equally well, best first, or `None` without readings.
    /// Fits from the 24 rotations of the cube and keeps every distinct one within the noise of
    /// the best: readings can fit more than one rotation (one reading with references fits two,
    /// mirrored through the circular axis the analysers never see). Once the readings show
    /// [`JOINT_FIT_SIGNALS`] correlations the best fit refines the rotation after the
    /// controller too.
    pub fn fit(&self, readings: &[Observation]) -> Option<Vec<Fit>> {
        let shown: usize = readings.iter().map(Observation::shown).sum();
        if shown == 0 {
            return None;
        }
        let controllers: Vec<Rotation> = readings
            .iter()
            .map(|r| self.controller(&r.setting))
            .collect();
        // Parameters: the fiber's turn from `start`, then (joint fits) the turn of `after`.
        let residuals = |start: &Rotation, p: &[f64]| {
            let fiber = perturbed(start, &p[..3]);
            let after = if p.len() > 3 {
                perturbed(&self.after, &p[3..])
            } else {
                self.after
            };
            let mut r = Vec::with_capacity(shown + 3);
            for (reading, controller) in readings.iter().zip(&controllers) {
                let predicted = signals_of(&after.after(controller).after(&fiber));
                for ((w, seen), p) in reading.weights.iter().zip(&reading.signals).zip(predicted) {
                    if *w > 0.0 {
                        r.push(w.sqrt() * (p - seen));
                    }
                }
            }
            r.extend(p[3..].iter().map(|v| v / AFTER_PRIOR_RAD));
            r
        };
        let mut fits: Vec<(f64, Rotation)> = cube_rotations()
            .iter()
            .map(|start| {
                let (p, sum) = minimise(|p| residuals(start, p), |_| {}, &[0.0; 3], FIT_ITERATIONS);
                (sum, perturbed(start, &p))
            })
            .collect();
        fits.sort_by(|a, b| a.0.total_cmp(&b.0));
        let best_sum = fits.first()?.0;
        let mut distinct: Vec<(f64, Rotation)> = Vec::new();
        for (sum, fiber) in fits {
            let new = distinct
                .iter()
                .all(|(_, f)| f.inverse().after(&fiber).angle() > DISTINCT_RAD);
            if sum <= best_sum + AMBIGUOUS_CHI2 && new {
                distinct.push((sum, fiber));
            }
        }
        let misfit = |sum: f64| (sum / shown as f64).sqrt();
        let mut out: Vec<Fit> = distinct
            .iter()
            .map(|&(sum, fiber)| Fit {
                fiber,
                after: self.after,
                misfit: misfit(sum),
            })
            .collect();
        if shown >= JOINT_FIT_SIGNALS
            && let Some(best) = out.first_mut()
        {
            let (p, sum) = minimise(
                |p| residuals(&best.fiber, p),
                |_| {},
                &[0.0; 6],
                FIT_ITERATIONS,
            );
            *best = Fit {
                fiber: perturbed(&best.fiber, &p[..3]),
                after: perturbed(&self.after, &p[3..]),
                misfit: misfit(sum),
            };
        }
        Some(out)
    }

    /// The cost the analysers would see above the floor (the mean of the two bases' error
    /// rates on a perfect link) with `after` after the controller and `fiber` before.
    fn cost(after: &Rotation, controller: &Rotation, fiber: &Rotation) -> f64 {
        after.after(controller).after(fiber).bb84_error(1.0)
    }

    /// The cost above the floor `fit` predicts at `setting`.
    pub fn predicted_cost(&self, fit: &Fit, setting: &[f64]) -> f64 {
        Self::cost(&fit.after, &self.controller(setting), &fit.fiber)
    }

    /// The setting inside the actuators' ranges that best undoes `fit.fiber`: a grid over the
    /// whole ranges, its best points refined by least squares; among settings predicted equally
    /// good, the one least far from `from`. Returns it with its predicted cost above the floor.
    pub fn compensating(
        &self,
        fit: &Fit,
        actuators: &[ActuatorSpec],
        from: &[f64],
    ) -> (Vec<f64>, f64) {
        let n = self.retarders.len().min(actuators.len());
        let per_axis = (GRID_POINTS.powf(1.0 / n as f64).floor() as usize).max(3);
        let values: Vec<Vec<f64>> = actuators[..n]
            .iter()
            .map(|a| {
                (0..per_axis)
                    .map(|p| a.min + (a.max - a.min) * p as f64 / (per_axis - 1) as f64)
                    .collect()
            })
            .collect();
        let elements: Vec<Vec<Rotation>> = values
            .iter()
            .enumerate()
            .map(|(i, vs)| vs.iter().map(|&v| self.element(i, v)).collect())
            .collect();
        // Every grid point, numbered in mixed radix: its cost, and its cost with travel counted
        // too, so that a near solution is refined even when a far one is better.
        let mut setting = vec![0.0; n];
        let scored: Vec<(f64, f64, usize)> = (0..per_axis.pow(n as u32))
            .map(|point| {
                let mut rest = point;
                let mut controller = Rotation::IDENTITY;
                for (i, value) in setting.iter_mut().enumerate() {
                    let k = rest % per_axis;
                    rest /= per_axis;
                    controller = elements[i][k].after(&controller);
                    *value = values[i][k];
                }
                let cost = Self::cost(&fit.after, &controller, &fit.fiber);
                let reach = cost + TRAVEL_COST * travel(&setting, from, actuators);
                (cost, reach, point)
            })
            .collect();
        let grid_setting = |mut point: usize| -> Vec<f64> {
            values
                .iter()
                .map(|axis| {
                    let k = point % per_axis;
                    point /= per_axis;
                    axis[k]
                })
                .collect()
        };
        let mut starts: Vec<Vec<f64>> = Vec::with_capacity(2 * REFINED);
        for score in [|s: &(f64, f64, usize)| s.0, |s: &(f64, f64, usize)| s.1] {
            let mut ranked = scored.clone();
            ranked.sort_by(|a, b| score(a).total_cmp(&score(b)));
            starts.extend(ranked.iter().take(REFINED).map(|s| grid_setting(s.2)));
        }
        let project = |p: &mut [f64]| {
            for (v, a) in p.iter_mut().zip(actuators) {
                *v = v.clamp(a.min, a.max);
            }
        };
        // First two columns of M on H and D: zero off the diagonal means aligned.
        let residuals = |p: &[f64]| {
            let m = fit.after.after(&self.controller(p)).after(&fit.fiber).0;
            vec![m[1][0], m[2][0], m[0][1], m[2][1]]
        };
        let candidates: Vec<(f64, Vec<f64>)> = starts
            .iter()
            .map(|start| {
                let (p, _) = minimise(residuals, project, start, FIT_ITERATIONS);
                let cost = Self::cost(&fit.after, &self.controller(&p), &fit.fiber);
                (cost, p)
            })
            .collect();
        let best = candidates.iter().map(|c| c.0).fold(f64::INFINITY, f64::min);
        candidates
            .into_iter()
            .filter(|c| c.0 <= best + COST_TIE)
            .min_by(|a, b| travel(&a.1, from, actuators).total_cmp(&travel(&b.1, from, actuators)))
            .map_or_else(|| (from.to_vec(), f64::INFINITY), |(cost, p)| (p, cost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qkd_drivers::ActuatorUnit;

    fn paddles() -> Vec<ActuatorSpec> {
        let quarter = std::f64::consts::FRAC_PI_2;
        [quarter, 2.0 * quarter, quarter]
            .iter()
            .enumerate()
            .map(|(i, &retardance_rad)| ActuatorSpec {
                name: format!("paddle {i}"),
                unit: ActuatorUnit::Degrees,
                min: 0.0,
                max: 170.0,
                period: None,
                optics: Some(ActuatorOptics::RotatingRetarder {
                    retardance_rad,
                    rad_per_unit: 1f64.to_radians(),
                }),
            })
            .collect()
    }

    /// Counts a perfect link at rotation `m` would show, `n` per prepared state.
    fn counts_of(m: &Rotation, n: u64, references: bool) -> StateCounts {
        let stokes = [
            [1.0, 0.0, 0.0],
            [-1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, -1.0, 0.0],
        ];
        let mut counts = StateCounts::default();
        for (prepared, s) in stokes.iter().enumerate() {
            let out = m.apply(*s);
            for (measured, analysed) in stokes.iter().enumerate() {
                if !references && measured / 2 != prepared / 2 {
                    continue;
                }
                let p = 0.5 * (1.0 + qkd_units::poincare::dot(out, *analysed));
                counts.0[prepared][measured] = (p * n as f64).round() as u64;
            }
        }
        counts
    }

    fn reading(
        model: &ControllerModel,
        fiber: &Rotation,
        setting: &[f64],
        refs: bool,
    ) -> Observation {
        let m = model.controller(setting).after(fiber);
        Observation::new(setting, &counts_of(&m, 100_000, refs), 1.0)
    }

    #[test]
    fn the_cube_has_twenty_four_distinct_proper_rotations() {
        let all = cube_rotations();
        assert_eq!(all.len(), 24);
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(a.inverse().after(b).angle() > 1.0);
            }
        }
    }

    #[test]
    fn only_controllers_whose_actuators_declare_their_optics_are_modelled() {
        let mut actuators = paddles();
        assert!(ControllerModel::from_actuators(&actuators).is_some());
        actuators[1].optics = None;
        assert!(ControllerModel::from_actuators(&actuators).is_none());
        assert!(ControllerModel::from_actuators(&[]).is_none());
    }

    /// From readings a perfect link would give, the fit finds the fiber and the search a setting
    /// that undoes it, for rotations all over the sphere: with references within two leaps (one
    /// reading fits two rotations), from disclosed bits after one probe and two leaps.
    #[test]
    fn readings_lead_to_the_compensating_setting() {
        let actuators = paddles();
        let model = ControllerModel::from_actuators(&actuators).unwrap();
        let axes = [
            [0.3, -0.5, 0.81],
            [-0.9, 0.1, 0.4],
            [0.0, 0.0, 1.0],
            [0.6, 0.6, -0.5],
        ];
        for (k, axis) in axes.iter().enumerate() {
            let norm = qkd_units::poincare::dot(*axis, *axis).sqrt();
            let fiber = Rotation::about(axis.map(|c| c / norm), 0.7 + 0.6 * k as f64);
            for refs in [true, false] {
                let mut setting = vec![40.0, 100.0, 20.0];
                let mut readings = vec![reading(&model, &fiber, &setting, refs)];
                if !refs {
                    readings.push(reading(&model, &fiber, &[40.0, 130.0, 20.0], refs));
                }
                let mut truth = 1.0;
                for _ in 0..2 {
                    let fit = model.fit(&readings).unwrap()[0];
                    assert!(
                        fit.misfit < 3.0,
                        "axis {k}, refs {refs}: misfit {}",
                        fit.misfit
                    );
                    let (next, predicted) = model.compensating(&fit, &actuators, &setting);
                    // The search takes any setting within COST_TIE of the best it found.
                    assert!(predicted < COST_TIE, "{predicted}");
                    setting = next;
                    readings.push(reading(&model, &fiber, &setting, refs));
                    truth = ControllerModel::cost(
                        &Rotation::IDENTITY,
                        &model.controller(&setting),
                        &fiber,
                    );
                    if truth < COST_TIE {
                        break;
                    }
                }
                assert!(
                    truth < COST_TIE,
                    "axis {k}, refs {refs}: {truth} at {setting:?}"
                );
            }
        }
    }

    /// A rotation between the controller and the analysers is learnt from enough readings.
    #[test]
    fn the_rotation_after_the_controller_is_fitted_from_enough_readings() {
        let actuators = paddles();
        let model = ControllerModel::from_actuators(&actuators).unwrap();
        let after = Rotation::about([0.0, 0.6, 0.8], 0.15);
        let fiber = Rotation::about([0.8, 0.0, 0.6], 1.3);
        let readings: Vec<Observation> = [
            [10.0, 20.0, 30.0],
            [90.0, 45.0, 150.0],
            [120.0, 160.0, 60.0],
            [60.0, 80.0, 100.0],
        ]
        .iter()
        .map(|s| {
            let m = after.after(&model.controller(s)).after(&fiber);
            Observation::new(s, &counts_of(&m, 100_000, true), 1.0)
        })
        .collect();
        let fits = model.fit(&readings).unwrap();
        assert_eq!(fits.len(), 1, "four readings leave no ambiguity");
        let fit = fits[0];
        assert!(
            fit.after.inverse().after(&after).angle() < 0.01,
            "{:?}",
            fit.after
        );
        assert!(fit.fiber.inverse().after(&fiber).angle() < 0.01);
        assert!(fit.misfit < 3.0);
    }
}
