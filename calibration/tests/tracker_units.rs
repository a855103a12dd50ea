//! The tracker's pause, resume and unwinding as units, on a synthetic channel whose error rate is
//! a known bowl around a movable optimum (expected counts, no noise), and its leap to the
//! compensating setting on the emulated paddles after a step of the fiber.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use qkd_calibration::counts::StateCounts;
use qkd_calibration::monitor::{ErrorMonitor, Feedback, MonitorError, TaggedMonitor};
use qkd_calibration::tracker::{Tracker, TrackerConfig};
use qkd_drivers::emulator::EmulatedBench;
use qkd_drivers::{
    ActuatorSpec, ActuatorUnit, DeviceIdentity, PolarizationController, PolarizationError,
};
use qkd_firmware_sim::world::{ControllerSpec, InitialRotation, LinkPreset, StepSpec};
use qkd_postprocess::slots::SlotConfig;

/// The channel: the error rate of both bases is `floor + curvature · d²`, d the distance of the
/// setting from the optimum (modulo the actuator's period, if it has one), capped at ½.
#[derive(Debug, Clone, Copy)]
struct Bowl {
    optimum: f64,
    floor: f64,
    curvature: f64,
    period: Option<f64>,
}

impl Bowl {
    fn error(&self, x: f64) -> f64 {
        let mut d = x - self.optimum;
        if let Some(p) = self.period {
            d = d.rem_euclid(p);
            if d > p / 2.0 {
                d -= p;
            }
        }
        (self.floor + self.curvature * d * d).min(0.5)
    }
}

/// What the controller and the monitor share: the setting and the channel.
#[derive(Debug)]
struct World {
    setting: f64,
    bowl: Bowl,
}

type Shared = Arc<Mutex<World>>;

/// One actuator of ±5000 mV moving the bowl's setting.
struct Controller {
    identity: DeviceIdentity,
    actuators: Vec<ActuatorSpec>,
    world: Shared,
}

impl PolarizationController for Controller {
    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }
    fn actuators(&self) -> &[ActuatorSpec] {
        &self.actuators
    }
    fn settle_time(&self) -> Duration {
        Duration::ZERO
    }
    async fn set(&mut self, values: &[f64]) -> Result<(), PolarizationError> {
        ActuatorSpec::check_setting(&self.actuators, values)?;
        self.world.lock().unwrap().setting = values[0];
        Ok(())
    }
    async fn get(&mut self) -> Result<Vec<f64>, PolarizationError> {
        Ok(vec![self.world.lock().unwrap().setting])
    }
}

/// Expected counts of a window: `DETECTIONS` per basis at the bowl's error rate.
struct Monitor {
    world: Shared,
    elapsed: Duration,
}

/// Detections per basis in a window: enough that the loop's precision target (σ = 0.0015 on
/// the cost) is met in one window near the floor.
const DETECTIONS: f64 = 40_000.0;

impl ErrorMonitor for Monitor {
    async fn measure(&mut self, duration: Duration) -> Result<StateCounts, MonitorError> {
        self.elapsed += duration;
        let world = self.world.lock().unwrap();
        let e = world.bowl.error(world.setting);
        let right = (DETECTIONS * (1.0 - e) / 2.0).round() as u64;
        let wrong = (DETECTIONS * e / 2.0).round() as u64;
        let mut counts = StateCounts::default();
        for (a, b) in [(0, 1), (2, 3)] {
            counts.0[a][a] = right;
            counts.0[b][b] = right;
            counts.0[a][b] = wrong;
            counts.0[b][a] = wrong;
        }
        Ok(counts)
    }

    async fn discard(&mut self, duration: Duration) -> Result<(), MonitorError> {
        self.elapsed += duration;
        Ok(())
    }

    fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

fn bench(bowl: Bowl, start: f64) -> (Controller, Monitor, Shared) {
    let world = Arc::new(Mutex::new(World {
        setting: start,
        bowl,
    }));
    let controller = Controller {
        identity: DeviceIdentity {
            vendor: "test".into(),
            model: "bowl".into(),
            serial: "1".into(),
            firmware: "0".into(),
        },
        actuators: vec![ActuatorSpec {
            name: "squeezer".into(),
            unit: ActuatorUnit::Millivolts,
            min: -5000.0,
            max: 5000.0,
            period: bowl.period,
            optics: None,
        }],
        world: Arc::clone(&world),
    };
    let monitor = Monitor {
        world: Arc::clone(&world),
        elapsed: Duration::ZERO,
    };
    (controller, monitor, world)
}

/// 1 % floor; 1 % more error 500 mV from the optimum.
fn bowl(optimum: f64, period: Option<f64>) -> Bowl {
    Bowl {
        optimum,
        floor: 0.01,
        curvature: 0.01 / 500.0f64.powi(2),
        period,
    }
}

#[tokio::test]
async fn a_jump_pauses_key_generation_until_the_cost_is_back_under_the_resume_threshold() {
    let (mut controller, mut monitor, world) = bench(bowl(1200.0, None), -3000.0);
    let config = TrackerConfig::default();
    let (pause_above, resume_below) = (config.pause_above, config.resume_below);
    let mut tracker = Tracker::new(&mut controller, config).await.unwrap();
    assert!(tracker.paused(), "a tracker that has not aligned is paused");
    tracker.align(&mut controller, &mut monitor).await.unwrap();
    assert!(!tracker.paused(), "aligned: key generation runs");
    for _ in 0..20 {
        let report = tracker.sweep(&mut controller, &mut monitor).await.unwrap();
        assert!(!report.paused && report.excess < resume_below, "{report:?}");
    }
    // The fiber jumps: 1200 mV away the excess is 5.8 %, far above the pause threshold.
    world.lock().unwrap().bowl.optimum = -1200.0;
    let report = tracker.sweep(&mut controller, &mut monitor).await.unwrap();
    assert!(report.paused && report.excess > pause_above, "{report:?}");
    // Every sweep with the excess above the resume threshold stays paused (hysteresis); the
    // first under it resumes, and the loop stays near the floor after.
    let mut resumed = None;
    for sweep in 1..100 {
        let report = tracker.sweep(&mut controller, &mut monitor).await.unwrap();
        if report.excess >= resume_below && resumed.is_none() {
            assert!(
                report.paused,
                "sweep {sweep} resumed at excess {}",
                report.excess
            );
        }
        if !report.paused && resumed.is_none() {
            assert!(report.excess < resume_below);
            resumed = Some(sweep);
        }
    }
    assert!(resumed.is_some(), "never resumed");
    let setting = tracker.setting()[0];
    assert!((setting + 1200.0).abs() < 150.0, "settled at {setting} mV");
}

#[tokio::test]
async fn an_actuator_near_its_range_end_is_unwound_by_its_period() {
    // A squeezer whose retardance repeats every 4000 mV: the optimum drifts towards the top of
    // the range, and the loop must move by one period rather than pin at the end.
    let period = Some(4000.0);
    let (mut controller, mut monitor, world) = bench(bowl(3000.0, period), 3000.0);
    let mut tracker = Tracker::new(&mut controller, TrackerConfig::default())
        .await
        .unwrap();
    tracker.align(&mut controller, &mut monitor).await.unwrap();
    let mut highest_excess: f64 = 0.0;
    for step in 0..400 {
        // 10 mV per sweep towards the end of the range and beyond.
        world.lock().unwrap().bowl.optimum = 3000.0 + 10.0 * f64::from(step);
        let report = tracker.sweep(&mut controller, &mut monitor).await.unwrap();
        if step > 20 {
            highest_excess = highest_excess.max(report.excess);
        }
    }
    assert!(tracker.unwinds() >= 1, "never unwound");
    // The optimum is now 7000 mV, i.e. 3000 mV less a period: the loop followed it there.
    let setting = tracker.setting()[0];
    let error = world.lock().unwrap().bowl.error(setting) - 0.01;
    assert!(
        setting < 5000.0 - 4.0 * 10.0 && error < 0.003,
        "at {setting} mV, excess {error}"
    );
    // Unwinding costs a few sweeps of settling, never a pause.
    assert!(highest_excess < 0.02, "excess reached {highest_excess}");
}

#[tokio::test]
async fn paddles_leap_back_after_a_step_of_the_fiber() {
    // Motorised paddles declare their optics, so after a 1-rad step the tracker fits the fiber
    // and moves to the compensating angles in a leap or two instead of probing its way back.
    const STEP_AT_S: f64 = 12.0;
    let mut spec = LinkPreset::Snspd.spec(25.0);
    spec.fiber.drift_rad_per_sqrt_s = 0.0;
    spec.fiber.initial_rotation = InitialRotation::Fixed {
        axis: [0.6, -0.3, 0.74],
        angle_rad: 1.1,
    };
    spec.fiber.steps.push(StepSpec {
        at_s: STEP_AT_S,
        angle_rad: 1.0,
        axis: Some([0.2, 0.9, -0.39]),
    });
    spec.receiver.controller = ControllerSpec::three_paddles();
    spec.source.reference_share = 0.1;
    let bench = EmulatedBench::prepare_measure(&spec, 9).unwrap();
    let batch = Duration::from_millis(2);
    let slots = SlotConfig::standard(
        spec.source.rep_rate_hz as f64,
        u64::from(spec.source.sync_divider),
    );
    let mut monitor = TaggedMonitor::new(
        bench.tagger(0, batch).unwrap(),
        bench.wcp_source().unwrap(),
        batch,
        slots,
        Feedback::References,
    )
    .unwrap();
    let mut controller = bench.polarization_controller(0).unwrap();
    let mut tracker = Tracker::for_controller(&mut controller).await.unwrap();
    tracker.align(&mut controller, &mut monitor).await.unwrap();
    assert!(
        monitor.elapsed().as_secs_f64() < STEP_AT_S,
        "alignment took {:?}, past the step",
        monitor.elapsed()
    );
    while monitor.elapsed().as_secs_f64() < STEP_AT_S {
        let report = tracker.sweep(&mut controller, &mut monitor).await.unwrap();
        assert!(!report.paused, "paused before the step: {report:?}");
    }
    let leaps_before = tracker.leaps();
    let stepped_at = monitor.elapsed();
    let mut recovered = None;
    let mut paused = false;
    for _ in 0..40 {
        let report = tracker.sweep(&mut controller, &mut monitor).await.unwrap();
        paused |= report.paused;
        if paused && report.excess < 0.01 {
            recovered = Some(monitor.elapsed().saturating_sub(stepped_at));
            break;
        }
    }
    assert!(paused, "the step did not pause key generation");
    assert!(tracker.leaps() > leaps_before, "no leap");
    let took = recovered.expect("never recovered");
    // The bench's figures for paddles after a 1-rad step are 0.1–1 s (README, tracking).
    assert!(took < Duration::from_secs(2), "{took:?} to recover");
}
