//! Active polarization tracking: keep the error cost at its floor by moving the controller's
//! actuators, whatever kind they are.
//!
//! The receiver sees the rotation only quadratically (see [`crate::counts`]), so the loop probes:
//! each sweep measures the cost where it stands, then dithers one actuator at a time to both
//! sides, fits a parabola through the three costs and steps to its vertex. The parabola's
//! curvature is the in-situ characterisation of that actuator (cost per unit², equivalently
//! radians of rotation per device unit); it sets how far to dither so that probing costs a chosen,
//! small amount of QBER, and it is refined on every sweep. Far from the floor the dither and the
//! step grow with the excess cost, which is what brings the loop back after a sudden rotation.
//!
//! Far from the floor the loop moves in fewer, larger steps: with a model of the controller
//! (actuators that declare their optics, see [`crate::model`]) it fits the fiber to the readings
//! and moves straight to the compensating setting; otherwise, with reference states, it steers
//! the measured correlations back (see [`crate::newton`]). Near the floor the model also looks
//! for a better optimum elsewhere in the actuators' ranges than the one probing has found.
//!
//! Initial alignment scans each actuator over its range, then over narrower spans around the best
//! point, before handing over to the sweeps. While the excess cost is above a threshold the
//! tracker reports itself paused: blocks measured then are to be flagged, not silently kept.

use std::time::Duration;

use qkd_drivers::{ActuatorSpec, ActuatorUnit, PolarizationController, PolarizationError};

use crate::counts::StateCounts;
use crate::model::{ControllerModel, Observation, travel};
use crate::monitor::{ErrorMonitor, MonitorError};
use crate::newton::{Jacobian, SIGNALS};
use crate::state::PolarizationCalibration;

/// How the loop trades probing against precision.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    /// Link time of one measurement window (more are read until the cost is precise enough).
    pub window: Duration,
    /// Standard error of a cost measurement to reach before it is used.
    pub cost_sigma: f64,
    /// Most windows one measurement may take.
    pub max_windows: u32,
    /// Cost increase a dither aims for near the optimum: probing raises the QBER of the key
    /// while it lasts; too small a dither drowns in counting noise.
    pub dither_cost: f64,
    /// Excess cost over the floor that pauses key generation.
    pub pause_above: f64,
    /// Excess cost under which key generation resumes.
    pub resume_below: f64,
    /// Far from the optimum, probe each actuator on one side only and take the curvature as
    /// known: for motorised controllers, where every move costs travel and settling.
    pub one_sided_when_far: bool,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            window: Duration::from_millis(2),
            cost_sigma: 0.0015,
            max_windows: 25,
            dither_cost: 0.0015,
            pause_above: 0.02,
            resume_below: 0.007,
            one_sided_when_far: false,
        }
    }
}

impl TrackerConfig {
    /// Settings for a controller that settles in `settle`: when every move costs tens of
    /// milliseconds (motorised paddles), fewer, coarser measurements with larger dithers track
    /// better than precise ones the drift has outdated by the time the sweep ends.
    pub fn for_settle_time(settle: Duration) -> Self {
        let slow = settle >= Duration::from_millis(5);
        TrackerConfig {
            cost_sigma: if slow { 0.003 } else { 0.0015 },
            dither_cost: if slow { 0.0025 } else { 0.0015 },
            one_sided_when_far: slow,
            ..TrackerConfig::default()
        }
    }
}

/// Why tracking stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    /// The detections could not be read.
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    /// The controller refused or failed.
    #[error("polarization controller: {0}")]
    Controller(#[from] PolarizationError),
    /// Too few detections in one of the bases to measure the cost.
    #[error("no usable signal: {z} key-basis and {x} test-basis detections in {seconds:.3} s")]
    NoSignal {
        /// Key-basis detections seen.
        z: u64,
        /// Test-basis detections seen.
        x: u64,
        /// Link time spent.
        seconds: f64,
    },
    /// The controller has no actuators.
    #[error("the polarization controller has no actuators")]
    NoActuators,
    /// The controller reports a range the loop cannot work in.
    #[error(
        "actuator {actuator} reports the range [{min}, {max}]: it needs finite bounds, lowest first"
    )]
    BadRange {
        /// Actuator index.
        actuator: usize,
        /// Reported lowest value.
        min: f64,
        /// Reported highest value.
        max: f64,
    },
}

/// What one sweep saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepReport {
    /// Cost measured where the sweep started.
    pub cost: f64,
    /// Its excess over the floor.
    pub excess: f64,
    /// Key generation is paused.
    pub paused: bool,
}

/// Largest factor by which a dither widens while the optimum is far.
const MAX_WIDENING: f64 = 16.0;

/// Damping of the first far-field step (Levenberg-Marquardt).
const INITIAL_DAMPING: f64 = 0.1;

/// Most far-field steps per sweep.
const FAR_STEPS: u32 = 8;

/// Largest far-field step, in units of an actuator's first probe.
const FAR_TRUST: f64 = 3.0;

/// Precision of a cost far from the floor, as a share of its excess.
const RELATIVE_PRECISION: f64 = 0.1;

/// Most moves to a modelled setting per sweep.
const LEAPS: u32 = 3;

/// Readings of one far episode the model fits (the oldest are dropped: the fiber drifts).
const MODEL_READINGS: usize = 8;

/// Correlations the readings must show before the model is fitted: three angles, and one more
/// so a wrong model shows in the residual.
const MODEL_SIGNALS: usize = 4;

/// Residual, in standard errors, above which the model is taken not to describe the controller.
const MAX_MISFIT: f64 = 8.0;

/// Predicted gain in cost for which the loop leaves the optimum it tracks for another one the
/// model finds elsewhere in the actuators' ranges.
const BETTER_BY: f64 = 0.004;

/// Sweeps of leaping that end still far before the loop falls back to probing for the episode.
const MAX_FAILED_LEAPS: u32 = 3;

/// Growth of the floor estimate per sweep, so a floor set on a lucky window does not stick.
const FLOOR_CREEP: f64 = 0.0001;

/// The correlations' distance from alignment (`aligned` on the diagonal, 0 across the bases)
/// and the weight of each (0 where the counts show nothing).
fn residuals(counts: &StateCounts, aligned: f64) -> ([f64; SIGNALS], [f64; SIGNALS]) {
    let target = [aligned, aligned, 0.0, 0.0];
    let seen = counts.correlations();
    let mut residual = [0.0; SIGNALS];
    let mut weight = [0.0; SIGNALS];
    for k in 0..SIGNALS {
        if let Some((value, _)) = seen[k] {
            residual[k] = value - target[k];
            weight[k] = 1.0;
        }
    }
    (residual, weight)
}

/// A first probe of an actuator: a move that rotates the state by a fraction of a radian on the
/// devices we know, or a fortieth of the range.
fn first_probe(spec: &ActuatorSpec) -> f64 {
    let range = spec.max - spec.min;
    match spec.unit {
        ActuatorUnit::Millivolts => 250.0f64.min(range / 10.0),
        ActuatorUnit::Degrees => 6.0f64.min(range / 10.0),
        ActuatorUnit::Steps | ActuatorUnit::DacCode => range / 40.0,
    }
}

/// The tracking loop's state.
#[derive(Debug, Clone)]
pub struct Tracker {
    config: TrackerConfig,
    actuators: Vec<ActuatorSpec>,
    /// The setting the loop has chosen (commanded at the next measurement).
    setting: Vec<f64>,
    /// The setting commanded last.
    commanded: Vec<f64>,
    /// Cost per unit² of each actuator near the optimum, as tracked.
    curvature: Vec<f64>,
    /// The same as last characterised (bounds what tracking may drift to).
    characterised: Vec<f64>,
    /// Factor on each actuator's nominal dither (1 near the optimum).
    widening: Vec<f64>,
    floor: Option<f64>,
    paused: bool,
    moves: u64,
    unwinds: u64,
    /// Model of the correlations while far from the floor (dropped once back near it).
    jacobian: Option<Jacobian>,
    /// Levenberg-Marquardt damping of the far-field steps.
    damping: f64,
    /// What the actuators do to the light, when they say (see [`crate::model`]).
    model: Option<ControllerModel>,
    /// Readings since the loop last was near its floor, for the model.
    readings: Vec<Observation>,
    /// The loop is far from its floor (readings from before are of no use to the model).
    far: bool,
    /// Sweeps this far episode whose leaps did not bring the loop back.
    failed_leaps: u32,
    leaps: u64,
}

impl Tracker {
    /// A tracker for `controller`, starting from its present setting.
    pub async fn new(
        controller: &mut impl PolarizationController,
        config: TrackerConfig,
    ) -> Result<Self, TrackingError> {
        let actuators = controller.actuators().to_vec();
        if actuators.is_empty() {
            return Err(TrackingError::NoActuators);
        }
        // The ranges come from the device: the loop divides by them and probes inside them.
        if let Some((index, a)) = actuators
            .iter()
            .enumerate()
            .find(|(_, a)| !(a.min.is_finite() && a.max.is_finite() && a.min < a.max))
        {
            return Err(TrackingError::BadRange {
                actuator: index,
                min: a.min,
                max: a.max,
            });
        }
        let setting = controller.get().await?;
        ActuatorSpec::check_setting(&actuators, &setting)?;
        let curvature: Vec<f64> = actuators
            .iter()
            .map(|a| 0.01 / first_probe(a).powi(2))
            .collect();
        Ok(Tracker {
            config,
            commanded: setting.clone(),
            setting,
            characterised: curvature.clone(),
            widening: vec![1.0; curvature.len()],
            curvature,
            floor: None,
            paused: true,
            moves: 0,
            unwinds: 0,
            jacobian: None,
            damping: INITIAL_DAMPING,
            model: ControllerModel::from_actuators(&actuators),
            readings: Vec::new(),
            far: false,
            failed_leaps: 0,
            leaps: 0,
            actuators,
        })
    }

    /// A tracker for `controller` with the settings its settle time calls for (see
    /// [`TrackerConfig::for_settle_time`]).
    pub async fn for_controller(
        controller: &mut impl PolarizationController,
    ) -> Result<Self, TrackingError> {
        let config = TrackerConfig::for_settle_time(controller.settle_time());
        Self::new(controller, config).await
    }

    /// The setting the loop has chosen, in device units.
    pub fn setting(&self) -> &[f64] {
        &self.setting
    }

    /// Cost per unit² of each actuator, as characterised so far.
    pub fn curvatures(&self) -> &[f64] {
        &self.curvature
    }

    /// Starts from characterised curvatures (a loaded calibration) instead of the defaults.
    pub fn set_curvatures(&mut self, curvatures: &[f64]) {
        for ((k, base), &c) in self
            .curvature
            .iter_mut()
            .zip(&mut self.characterised)
            .zip(curvatures)
        {
            if c.is_finite() && c > 0.0 {
                *k = c;
                *base = c;
            }
        }
    }

    /// Key generation should pause: the cost is too far above its floor.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Commands sent to the controller.
    pub fn moves(&self) -> u64 {
        self.moves
    }

    /// The lowest cost the loop believes reachable (misalignment and noise floor).
    pub fn floor(&self) -> Option<f64> {
        self.floor
    }

    /// Commands `setting` if it differs from the last one and waits for it to settle.
    async fn go(
        &mut self,
        controller: &mut impl PolarizationController,
        monitor: &mut impl ErrorMonitor,
        setting: &[f64],
    ) -> Result<(), TrackingError> {
        if setting == self.commanded.as_slice() {
            return Ok(());
        }
        let settle = controller.settle_time_for(setting);
        controller.set(setting).await?;
        self.moves += 1;
        self.commanded.clear();
        self.commanded.extend_from_slice(setting);
        monitor.discard(settle).await?;
        Ok(())
    }

    /// The cost at `setting`, read until precise enough (see [`Self::measure_at`]).
    async fn cost_at(
        &mut self,
        controller: &mut impl PolarizationController,
        monitor: &mut impl ErrorMonitor,
        setting: &[f64],
    ) -> Result<f64, TrackingError> {
        Ok(self.measure_at(controller, monitor, setting).await?.1)
    }

    /// Counts and cost at `setting`, read until precise enough: to the configured standard error
    /// near the floor, and to a tenth of the excess far from it, where differences between
    /// probes are large and every millisecond spent measuring delays the recovery.
    async fn measure_at(
        &mut self,
        controller: &mut impl PolarizationController,
        monitor: &mut impl ErrorMonitor,
        setting: &[f64],
    ) -> Result<(StateCounts, f64), TrackingError> {
        let base = self.config.cost_sigma;
        let floor = self.floor;
        let counts = self
            .counts_until(controller, monitor, setting, |cost, sigma| {
                sigma <= floor.map_or(base, |f| base.max(RELATIVE_PRECISION * (cost - f)))
            })
            .await?;
        let cost = self.cost_of(&counts)?;
        Ok((counts, cost))
    }

    /// The cost at `setting`, read until its standard error is at most `sigma`.
    async fn cost_within(
        &mut self,
        controller: &mut impl PolarizationController,
        monitor: &mut impl ErrorMonitor,
        setting: &[f64],
        sigma: f64,
    ) -> Result<f64, TrackingError> {
        let counts = self
            .counts_until(controller, monitor, setting, |_, s| s <= sigma)
            .await?;
        self.cost_of(&counts)
    }

    /// The cost of `counts`, or why there is none.
    fn cost_of(&self, counts: &StateCounts) -> Result<f64, TrackingError> {
        counts.cost().ok_or(TrackingError::NoSignal {
            z: counts.z().detections,
            x: counts.x().detections,
            seconds: self.config.window.as_secs_f64() * f64::from(self.config.max_windows),
        })
    }

    /// The counts at `setting`, read window by window until `enough(cost, standard error)`.
    async fn counts_until(
        &mut self,
        controller: &mut impl PolarizationController,
        monitor: &mut impl ErrorMonitor,
        setting: &[f64],
        enough: impl Fn(f64, f64) -> bool,
    ) -> Result<StateCounts, TrackingError> {
        self.go(controller, monitor, setting).await?;
        let mut counts = StateCounts::default();
        for _ in 0..self.config.max_windows.max(1) {
            counts.merge(&monitor.measure(self.config.window).await?);
            if let (Some(cost), Some(sigma)) = (counts.cost(), counts.cost_sigma())
                && enough(cost, sigma)
            {
                break;
            }
        }
        if self.model.is_some() {
            let visibility = 1.0 - 2.0 * self.floor.unwrap_or(0.0);
            if self.readings.len() >= MODEL_READINGS {
                self.readings.remove(0);
            }
            self.readings
                .push(Observation::new(setting, &counts, visibility));
        }
        Ok(counts)
    }

    fn with(&self, actuator: usize, value: f64) -> Vec<f64> {
        let mut s = self.setting.clone();
        s[actuator] = value;
        s
    }

    /// Initial alignment from an arbitrary rotation: each actuator scanned over its range, then
    /// over narrower spans around the best point; then the curvatures are measured there.
    pub async fn align(
        &mut self,
        controller: &mut impl PolarizationController,
        monitor: &mut impl ErrorMonitor,
    ) -> Result<f64, TrackingError> {
        // Coarse scans need only tell a few per cent from tens of per cent.
        self.scan(controller, monitor, &[(1.0, 11, 0.01), (0.15, 7, 0.003)])
            .await?;
        self.characterise(controller, monitor).await
    }

    /// Starts from a saved calibration instead of aligning: commands its setting, takes its
    /// curvatures and floor, and measures the cost there. Returns whether the link is still
    /// aligned (excess cost below the pause threshold); if not, the caller aligns anew.
    pub async fn resume(
        &mut self,
        controller: &mut impl PolarizationController,
        monitor: &mut impl ErrorMonitor,
        calibration: &PolarizationCalibration,
    ) -> Result<bool, TrackingError> {
        ActuatorSpec::check_setting(&self.actuators, &calibration.setting)?;
        self.set_curvatures(&calibration.curvatures);
        self.setting.clone_from(&calibration.setting);
        let here = self.setting.clone();
        let cost = self.cost_at(controller, monitor, &here).await?;
        let floor = calibration.floor.map_or(cost, |f| f.min(cost));
        if cost - floor > self.config.pause_above {
            return Ok(false);
        }
        self.floor = Some(floor);
        self.paused = false;
        Ok(true)
    }

    /// Scans each actuator in turn and keeps its best value, once per `(share of the range,
    /// points, cost precision)`; a share below 1 is centred on the present value.
    async fn scan(
        &mut self,
        controller: &mut impl PolarizationController,
        monitor: &mut impl ErrorMonitor,
        rounds: &[(f64, u32, f64)],
    ) -> Result<(), TrackingError> {
        for &(span_fraction, points, sigma) in rounds {
            for i in 0..self.actuators.len() {
                let (min, max) = (self.actuators[i].min, self.actuators[i].max);
                let half = 0.5 * span_fraction * (max - min);
                let (low, high) = if span_fraction >= 1.0 {
                    (min, max)
                } else {
                    let centre = self.setting[i].clamp(min + half, max - half);
                    (centre - half, centre + half)
                };
                let mut best = (f64::INFINITY, self.setting[i]);
                for p in 0..points {
                    let value = low + (high - low) * f64::from(p) / f64::from(points.max(2) - 1);
                    let setting = self.with(i, value);
                    let cost = self
                        .cost_within(controller, monitor, &setting, sigma)
                        .await?;
                    if cost < best.0 {
                        best = (cost, value);
                    }
                }
                self.setting[i] = best.1;
            }
        }
        Ok(())
    }

    /// Costs with actuator `i` moved `delta` either side of its value (shifted inside the range
    /// when needed): `(centre used, cost above, cost below)`.
    async fn probe(
        &mut self,
        controller: &mut impl PolarizationController,
        monitor: &mut impl ErrorMonitor,
        i: usize,
        delta: f64,
    ) -> Result<(f64, f64, f64), TrackingError> {
        let (min, max) = (self.actuators[i].min, self.actuators[i].max);
        let mid = self.setting[i].clamp(min + delta, max - delta);
        let plus = self
            .cost_at(controller, monitor, &self.with(i, mid + delta))
            .await?;
        let minus = self
            .cost_at(controller, monitor, &self.with(i, mid - delta))
            .await?;
        Ok((mid, plus, minus))
    }

    /// Measures each actuator's curvature at the present setting (three costs per actuator) and
    /// takes the cost there as the floor. Returns that cost.
    pub async fn characterise(
        &mut self,
        controller: &mut impl PolarizationController,
        monitor: &mut impl ErrorMonitor,
    ) -> Result<f64, TrackingError> {
        let here = self.setting.clone();
        let centre = self.cost_at(controller, monitor, &here).await?;
        for i in 0..self.actuators.len() {
            let probe = first_probe(&self.actuators[i]);
            let (_, plus, minus) = self.probe(controller, monitor, i, probe).await?;
            let curvature = (plus + minus - 2.0 * centre) / (probe * probe);
            if curvature > 0.0 {
                self.curvature[i] = curvature;
                self.characterised[i] = curvature;
            }
        }
        let cost = self.cost_at(controller, monitor, &here).await?;
        self.floor = Some(cost.min(centre));
        self.paused = false;
        Ok(cost)
    }

    /// Far from the floor: damped Gauss-Newton steps that drive the correlations the counts show
    /// to their aligned values, one move and one measurement each (see [`crate::newton`]). The
    /// Jacobian is probed on the first far sweep and then updated from every step; a step that
    /// raises the cost is undone and the damping raised.
    async fn steer(
        &mut self,
        controller: &mut impl PolarizationController,
        monitor: &mut impl ErrorMonitor,
        (counts, mut cost): (&StateCounts, f64),
        floor: f64,
    ) -> Result<(), TrackingError> {
        let aligned = 1.0 - 2.0 * floor;
        let scales: Vec<f64> = self.actuators.iter().map(first_probe).collect();
        let (mut signals, weights) = residuals(counts, aligned);
        if self.jacobian.is_none() {
            let mut columns = Vec::with_capacity(scales.len());
            for (i, &scale) in scales.iter().enumerate() {
                let a = &self.actuators[i];
                let sign = if self.setting[i] + scale <= a.max {
                    1.0
                } else {
                    -1.0
                };
                let probe = self.with(i, self.setting[i] + sign * scale);
                let (probed, _) = self.measure_at(controller, monitor, &probe).await?;
                let (moved, _) = residuals(&probed, aligned);
                columns.push(std::array::from_fn(|k| sign * (moved[k] - signals[k])));
            }
            self.jacobian = Some(Jacobian { columns });
        }
        for _ in 0..FAR_STEPS {
            let Some(jacobian) = self.jacobian.as_ref() else {
                break;
            };
            let Some(mut step) = jacobian.damped_step(&signals, &weights, self.damping) else {
                self.jacobian = None;
                break;
            };
            let longest = step.iter().fold(0.0f64, |m, d| m.max(d.abs()));
            if longest > FAR_TRUST {
                for d in &mut step {
                    *d *= FAR_TRUST / longest;
                }
            }
            let mut target = self.setting.clone();
            for ((t, d), (scale, a)) in target
                .iter_mut()
                .zip(&mut step)
                .zip(scales.iter().zip(&self.actuators))
            {
                let moved = (*t + *d * scale).clamp(a.min, a.max);
                *d = (moved - *t) / scale;
                *t = moved;
            }
            let (next_counts, next_cost) = self.measure_at(controller, monitor, &target).await?;
            // The step's outcome teaches the model whether or not it is kept.
            let (next_signals, _) = residuals(&next_counts, aligned);
            let change: [f64; SIGNALS] = std::array::from_fn(|k| next_signals[k] - signals[k]);
            if let Some(jacobian) = self.jacobian.as_mut() {
                jacobian.update(&step, &change);
            }
            if next_cost < cost {
                self.setting = target;
                (cost, signals) = (next_cost, next_signals);
                self.damping = (self.damping / 3.0).max(1e-3);
                if cost - floor < 0.5 * self.config.pause_above {
                    break;
                }
            } else {
                self.damping *= 4.0;
                if self.damping > 100.0 {
                    self.jacobian = None;
                    self.damping = INITIAL_DAMPING;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Far from the floor, with a model of the controller: fit the fiber to the readings of this
    /// episode and move straight to the setting that undoes it, reading the counts there (the
    /// next reading). From disclosed bits alone one reading shows too little, so the first move
    /// is a probe (see [`Self::model_probe`]).
    async fn leap(
        &mut self,
        controller: &mut impl PolarizationController,
        monitor: &mut impl ErrorMonitor,
        mut cost: f64,
        floor: f64,
    ) -> Result<(), TrackingError> {
        if !self.far {
            // Readings from before the jump describe another fiber: keep only the last.
            self.far = true;
            let first = self.readings.len().saturating_sub(1);
            self.readings.drain(..first);
        }
        for _ in 0..LEAPS {
            let shown: usize = self.readings.iter().map(Observation::shown).sum();
            let target = if shown < MODEL_SIGNALS {
                self.model_probe()
            } else {
                let Some(model) = self.model.as_ref() else {
                    break;
                };
                let fits = model.fit(&self.readings).unwrap_or_default();
                if fits.first().is_none_or(|f| f.misfit > MAX_MISFIT) {
                    // The controller does not behave as declared: probing takes over.
                    self.failed_leaps = MAX_FAILED_LEAPS;
                    return Ok(());
                }
                // Where the readings fit several fibers, the nearest of their settings is tried
                // first: a wrong guess costs travel, and its reading rules that fiber out.
                let Some((fit, target, _)) = fits
                    .iter()
                    .map(|fit| {
                        let target = model.compensating(fit, &self.actuators, &self.commanded).0;
                        let distance = travel(&target, &self.commanded, &self.actuators);
                        (fit, target, distance)
                    })
                    .min_by(|a, b| a.2.total_cmp(&b.2))
                else {
                    break;
                };
                let fit = *fit;
                self.leaps += 1;
                if let Some(model) = self.model.as_mut() {
                    model.adopt(&fit);
                }
                target
            };
            let next_cost = self.cost_at(controller, monitor, &target).await?;
            if next_cost < cost {
                self.setting = target;
                cost = next_cost;
            }
            if cost - floor < self.config.resume_below {
                self.failed_leaps = 0;
                return Ok(());
            }
        }
        self.failed_leaps += 1;
        Ok(())
    }

    /// Near the floor, with a model of the controller: probing follows the cost downhill and can
    /// settle in a local minimum of the reachable settings (paddles turn over less than a full
    /// period). If the model, fitted to the last readings, predicts a setting better by
    /// [`BETTER_BY`], the loop tries it and keeps it if the counts agree.
    async fn look_further(
        &mut self,
        controller: &mut impl PolarizationController,
        monitor: &mut impl ErrorMonitor,
        measured: f64,
    ) -> Result<(), TrackingError> {
        let Some(model) = self.model.as_ref() else {
            return Ok(());
        };
        if self.readings.len() < MODEL_READINGS {
            return Ok(());
        }
        let Some(fit) = model
            .fit(&self.readings)
            .and_then(|fits| fits.first().copied())
            .filter(|f| f.misfit <= MAX_MISFIT)
        else {
            return Ok(());
        };
        let (target, predicted) = model.compensating(&fit, &self.actuators, &self.setting);
        if model.predicted_cost(&fit, &self.setting) - predicted < BETTER_BY {
            return Ok(());
        }
        self.leaps += 1;
        let cost = self.cost_at(controller, monitor, &target).await?;
        if cost < measured {
            self.setting = target;
        }
        Ok(())
    }

    /// The setting with the actuator of the widest range moved a sixth of it
    /// towards the middle: a second reading far enough away to tell rotations apart.
    fn model_probe(&self) -> Vec<f64> {
        let Some((i, a)) = self
            .actuators
            .iter()
            .enumerate()
            .max_by(|x, y| (x.1.max - x.1.min).total_cmp(&(y.1.max - y.1.min)))
        else {
            return self.setting.clone();
        };
        let middle = 0.5 * (a.min + a.max);
        let shift = (a.max - a.min) / 6.0;
        let value = if self.setting[i] < middle {
            self.setting[i] + shift
        } else {
            self.setting[i] - shift
        };
        self.with(i, value)
    }

    /// Moves made to settings the controller model gave.
    pub fn leaps(&self) -> u64 {
        self.leaps
    }

    /// `value` for actuator `i`, moved by the actuator's period away from a range end it has come
    /// within `margin` of, when the period fits: the same optics, with room to keep tracking.
    fn unwound(&mut self, i: usize, value: f64, margin: f64) -> f64 {
        let a = &self.actuators[i];
        let Some(period) = a.period.filter(|p| p.is_finite() && *p > 0.0) else {
            return value;
        };
        let shifted = if value < a.min + margin {
            value + period
        } else if value > a.max - margin {
            value - period
        } else {
            return value;
        };
        if shifted >= a.min + margin && shifted <= a.max - margin {
            self.unwinds += 1;
            shifted
        } else {
            value
        }
    }

    /// Times an actuator was moved by its period at a range end.
    pub fn unwinds(&self) -> u64 {
        self.unwinds
    }

    /// One tracking sweep: measure, then dither and step every actuator once.
    pub async fn sweep(
        &mut self,
        controller: &mut impl PolarizationController,
        monitor: &mut impl ErrorMonitor,
    ) -> Result<SweepReport, TrackingError> {
        let here = self.setting.clone();
        let (counts, measured) = self.measure_at(controller, monitor, &here).await?;
        let floor = self
            .floor
            .map_or(measured, |f| (f + FLOOR_CREEP).min(measured));
        self.floor = Some(floor);
        let excess = measured - floor;
        if excess > self.config.pause_above {
            self.paused = true;
        } else if excess < self.config.resume_below {
            self.paused = false;
        }
        let report = SweepReport {
            cost: measured,
            excess,
            paused: self.paused,
        };
        // Steering needs the correlations across bases, which only reference states give:
        // with the key bits' two error rates alone it is underdetermined and wanders.
        let crossed = counts.correlations().iter().all(Option::is_some);
        if excess > self.config.pause_above {
            if self.model.is_some() && self.failed_leaps < MAX_FAILED_LEAPS {
                self.leap(controller, monitor, measured, floor).await?;
                return Ok(report);
            }
            if crossed {
                self.steer(controller, monitor, (&counts, measured), floor)
                    .await?;
                return Ok(report);
            }
        } else {
            self.far = false;
            self.failed_leaps = 0;
            self.look_further(controller, monitor, measured).await?;
        }
        self.jacobian = None;
        self.damping = INITIAL_DAMPING;
        let mut centre = measured;
        for i in 0..self.actuators.len() {
            let (min, max) = (self.actuators[i].min, self.actuators[i].max);
            let range = max - min;
            let k = self.curvature[i];
            // An excess cost over the floor says how far the optimum is, in nominal dithers.
            let far = 0.25 * ((centre - floor).max(0.0) / self.config.dither_cost).sqrt();
            self.widening[i] = self.widening[i].max(far.min(MAX_WIDENING / 2.0));
            let dither = ((2.0 * self.config.dither_cost / k).sqrt() * self.widening[i])
                .clamp(range * 1e-5, range / 8.0);
            let far_off = self.widening[i] > 1.0 && self.config.one_sided_when_far;
            let (mid, plus, minus) = if far_off {
                // One probe: the known curvature stands in for the second, halving the moves.
                let mid = self.setting[i].clamp(min + dither, max - dither);
                let plus = self
                    .cost_at(controller, monitor, &self.with(i, mid + dither))
                    .await?;
                (mid, plus, 2.0 * centre + k * dither * dither - plus)
            } else {
                self.probe(controller, monitor, i, dither).await?
            };
            // Nominal dithers cost a fraction of a per cent: both far above the centre mean the
            // fiber jumped while the sweep ran. The next sweep starts from a fresh reading.
            if self.widening[i] <= 1.0 && plus.min(minus) > centre + self.config.pause_above {
                break;
            }
            // Near the optimum every sample refines the curvature, negative ones too: keeping
            // only the positive would bias it upwards and shrink the dither until it drowns in
            // noise. The bounds keep a run of noise from undoing the characterisation.
            let measured_curvature = (plus + minus - 2.0 * centre) / (dither * dither);
            if self.widening[i] <= 1.0 && measured_curvature.is_finite() {
                let characterised = self.characterised[i];
                self.curvature[i] = (0.95 * k + 0.05 * measured_curvature)
                    .clamp(characterised / 3.0, 3.0 * characterised);
            }
            let k = self.curvature[i];
            let slope = (plus - minus) / (2.0 * dither);
            // A trust region of a few dithers: a vertex beyond it means the optimum is far, so
            // the next dither of this actuator widens; otherwise it returns to its nominal size.
            let reach = 3.0 * dither;
            let vertex = -slope / k;
            self.widening[i] = if vertex.abs() > reach {
                (self.widening[i] * 2.0).min(MAX_WIDENING)
            } else {
                (self.widening[i] * 0.6).max(1.0)
            };
            let step = vertex.clamp(-reach, reach);
            let target = (mid + step).clamp(min, max);
            let moved = target - mid;
            centre = (centre + slope * moved + 0.5 * k * moved * moved).max(floor);
            self.setting[i] = self.unwound(i, target, 4.0 * dither);
        }
        // The last actuator's value is commanded at the start of the next sweep.
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qkd_drivers::DeviceIdentity;

    /// A controller that reports whatever ranges it is given.
    struct Reporting {
        identity: DeviceIdentity,
        actuators: Vec<ActuatorSpec>,
    }

    impl PolarizationController for Reporting {
        fn identity(&self) -> &DeviceIdentity {
            &self.identity
        }
        fn actuators(&self) -> &[ActuatorSpec] {
            &self.actuators
        }
        fn settle_time(&self) -> Duration {
            Duration::ZERO
        }
        async fn set(&mut self, _values: &[f64]) -> Result<(), PolarizationError> {
            Ok(())
        }
        async fn get(&mut self) -> Result<Vec<f64>, PolarizationError> {
            Ok(vec![0.0; self.actuators.len()])
        }
    }

    fn reporting(min: f64, max: f64) -> Reporting {
        Reporting {
            identity: DeviceIdentity {
                vendor: "test".into(),
                model: "ranges".into(),
                serial: "1".into(),
                firmware: "0".into(),
            },
            actuators: vec![ActuatorSpec {
                name: "a".into(),
                unit: ActuatorUnit::Millivolts,
                min,
                max,
                period: None,
                optics: None,
            }],
        }
    }

    #[tokio::test]
    async fn device_ranges_the_loop_cannot_use_are_refused() {
        for (min, max) in [
            (5.0, -5.0),
            (0.0, 0.0),
            (f64::NAN, 1.0),
            (0.0, f64::INFINITY),
        ] {
            let result = Tracker::new(&mut reporting(min, max), TrackerConfig::default()).await;
            assert!(
                matches!(result, Err(TrackingError::BadRange { actuator: 0, .. })),
                "[{min}, {max}]"
            );
        }
        assert!(
            Tracker::new(&mut reporting(-5.0, 5.0), TrackerConfig::default())
                .await
                .is_ok()
        );
    }
}
