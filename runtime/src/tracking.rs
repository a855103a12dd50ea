//! Polarization tracking on Bob's link: his tracker runs on its own task, fed the reference
//! slots of sifted batches (their states are public, so Alice names them in her sift reply),
//! and moves the receiver's polarization controller between batches. While it is aligning or
//! far from its floor it reports itself paused, and the batches measured then are announced as
//! held: sifted for their references, but their bits kept out of every block.
//!
//! The two sides run in lock step, so a run stays deterministic by seed: the link reads a tagger
//! batch only once the tracker waits for counts, and the tracker acts only on a batch it was fed.
//! Link time is what the batches covered, as their tags say. A node's tagger may deliver
//! batches cut before a move after it (frames in flight on a tag stream): the monitor skips as
//! many batches after every move as can be in flight. A node keeps one tracking across its
//! connections: it starts from the calibration it saved (checking it first), publishes the
//! calibration after alignment and every sweep so the node can save it, and reports its state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use qkd_calibration::counts::StateCounts;
use qkd_calibration::monitor::{ErrorMonitor, MonitorError};
use qkd_calibration::state::PolarizationCalibration;
use qkd_calibration::tracker::{Tracker, TrackingError};
use qkd_drivers::PolarizationController;
use qkd_postprocess::sift::{Measurements, SiftReply, reference_outcomes};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::events::{Events, NodeEvent, TrackingState};

/// What tracking did over a link run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TrackingFigures {
    /// Link time the initial alignment took (null if the run ended first).
    pub alignment_s: Option<f64>,
    /// Tracking sweeps after alignment.
    pub sweeps: u64,
    /// Commands sent to the polarization controller.
    pub actuator_moves: u64,
}

/// Windows of counts fed by the link, one tagger batch at a time.
struct FedMonitor {
    /// Asks the link for the next batch.
    want: mpsc::Sender<()>,
    /// The batch's reference counts and the link time it covered.
    counts: mpsc::Receiver<(StateCounts, Duration)>,
    /// Link time of the batches used.
    elapsed: Duration,
    /// Link time of the batches skipped after moves.
    skipped: Duration,
    /// Batches still to skip since the last move.
    to_skip: Arc<AtomicU32>,
}

impl FedMonitor {
    /// The counts of the next batch not skipped after a move; `Ended` once the link stops.
    async fn next(&mut self) -> Result<StateCounts, MonitorError> {
        loop {
            self.want.send(()).await.map_err(|_| MonitorError::Ended)?;
            let (counts, covered) = self.counts.recv().await.ok_or(MonitorError::Ended)?;
            let skip = self
                .to_skip
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if skip {
                self.skipped += covered;
                continue;
            }
            self.elapsed += covered;
            return Ok(counts);
        }
    }
}

impl ErrorMonitor for FedMonitor {
    async fn measure(&mut self, duration: Duration) -> Result<StateCounts, MonitorError> {
        let until = self.elapsed + duration;
        let mut total = self.next().await?;
        while self.elapsed < until {
            total.merge(&self.next().await?);
        }
        Ok(total)
    }

    async fn discard(&mut self, duration: Duration) -> Result<(), MonitorError> {
        let until = self.elapsed + duration;
        while self.elapsed < until {
            self.next().await?;
        }
        Ok(())
    }

    fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

/// Why tracking ended other than by the link stopping.
#[derive(Debug, thiserror::Error)]
pub enum TrackingFailure {
    /// The tracker failed (a device, or its own limits).
    #[error(transparent)]
    Tracker(#[from] TrackingError),
    /// The tracking task did not run to its end.
    #[error("the tracking task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The tracker stopped asking for counts while the link still fed them.
    #[error("the tracker stopped while the link ran")]
    Stopped,
}

/// Where tracking starts and whom it tells.
#[derive(Debug, Default)]
pub struct TrackingStart {
    /// A calibration saved earlier for this controller: checked, and used if still aligned.
    pub saved: Option<PolarizationCalibration>,
    /// Where its state changes go.
    pub events: Events,
    /// Batches the link may read after a move that were cut before it (a tag stream's frames
    /// in flight; none in lock step with the emulator): skipped after every move.
    pub in_flight: u32,
}

/// A controller whose every move makes the monitor skip the batches in flight.
struct Noted<C> {
    controller: C,
    in_flight: u32,
    to_skip: Arc<AtomicU32>,
}

impl<C: PolarizationController> PolarizationController for Noted<C> {
    fn identity(&self) -> &qkd_drivers::DeviceIdentity {
        self.controller.identity()
    }

    fn actuators(&self) -> &[qkd_drivers::ActuatorSpec] {
        self.controller.actuators()
    }

    fn settle_time(&self) -> Duration {
        self.controller.settle_time()
    }

    fn settle_time_for(&self, target: &[f64]) -> Duration {
        self.controller.settle_time_for(target)
    }

    async fn set(&mut self, values: &[f64]) -> Result<(), qkd_drivers::PolarizationError> {
        let result = self.controller.set(values).await;
        // Even a failed command may have moved something.
        self.to_skip.store(self.in_flight, Ordering::SeqCst);
        result
    }

    async fn get(&mut self) -> Result<Vec<f64>, qkd_drivers::PolarizationError> {
        self.controller.get().await
    }
}

/// Bob's side of the lock step with the tracking task.
#[derive(Debug)]
pub struct LinkTracking {
    want: mpsc::Receiver<()>,
    counts: mpsc::Sender<(StateCounts, Duration)>,
    paused: Arc<AtomicBool>,
    /// The tracker is owed the counts of the batch just read.
    owed: bool,
    calibration: watch::Receiver<Option<PolarizationCalibration>>,
    task: JoinHandle<Result<TrackingFigures, TrackingError>>,
}

impl LinkTracking {
    /// Starts tracking `controller` from `start`.
    pub fn start<C: PolarizationController + 'static>(controller: C, start: TrackingStart) -> Self {
        let to_skip = Arc::new(AtomicU32::new(0));
        let mut controller = Noted {
            controller,
            in_flight: start.in_flight,
            to_skip: Arc::clone(&to_skip),
        };
        let (want_tx, want) = mpsc::channel(1);
        let (counts, counts_rx) = mpsc::channel(1);
        let (calibrated, calibration) = watch::channel(None);
        let paused = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&paused);
        let mut monitor = FedMonitor {
            want: want_tx,
            counts: counts_rx,
            elapsed: Duration::ZERO,
            skipped: Duration::ZERO,
            to_skip,
        };
        let task = tokio::spawn(async move {
            let mut figures = TrackingFigures::default();
            let mut run = TrackingRun {
                paused: &flag,
                figures: &mut figures,
                events: &start.events,
                calibrated: &calibrated,
                state: None,
            };
            let result = run.track(&mut controller, &mut monitor, start.saved).await;
            match result {
                Ok(()) | Err(TrackingError::Monitor(MonitorError::Ended)) => Ok(figures),
                Err(e) => Err(e),
            }
        });
        LinkTracking {
            want,
            counts,
            paused,
            owed: false,
            calibration,
            task,
        }
    }

    /// Waits until the tracker has acted on the last batch and wants the next; `false` if the
    /// tracker has stopped (its error is reported by [`Self::finish`]). A batch read but never
    /// fed (its session ended) is still owed: the tracker waits for it.
    pub async fn ready(&mut self) -> bool {
        if !self.owed {
            self.owed = self.want.recv().await.is_some();
        }
        self.owed
    }

    /// The calibration the tracker holds, published after alignment and after every sweep.
    pub fn calibration(&self) -> watch::Receiver<Option<PolarizationCalibration>> {
        self.calibration.clone()
    }

    /// Key generation is paused: the batch about to be read is to be held.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Feeds the references of a sifted batch, which covered `covered` of link time, to the
    /// tracker, if it is owed them.
    pub async fn feed(
        &mut self,
        measured: &Measurements,
        reply: Option<&SiftReply>,
        covered: Duration,
    ) {
        if !std::mem::take(&mut self.owed) {
            return;
        }
        let mut counts = StateCounts::default();
        if let Some(reply) = reply {
            for (prepared, seen) in reference_outcomes(measured, reply) {
                counts.add(prepared, seen);
            }
        }
        // A tracker that has stopped reports why from `finish`.
        let _ = self.counts.send((counts, covered)).await;
    }

    /// Stops the tracker and returns what it did, or why it failed.
    pub async fn finish(self) -> Result<TrackingFigures, TrackingFailure> {
        drop(self.counts);
        drop(self.want);
        Ok(self.task.await??)
    }
}

/// The tracking task's outputs while it runs.
struct TrackingRun<'a> {
    paused: &'a AtomicBool,
    figures: &'a mut TrackingFigures,
    events: &'a Events,
    calibrated: &'a watch::Sender<Option<PolarizationCalibration>>,
    /// The state last reported.
    state: Option<TrackingState>,
}

impl TrackingRun<'_> {
    /// Resumes from `saved` or aligns, then sweeps until the link stops feeding counts; the
    /// pause flag follows each sweep.
    async fn track<C: PolarizationController>(
        &mut self,
        controller: &mut C,
        monitor: &mut FedMonitor,
        saved: Option<PolarizationCalibration>,
    ) -> Result<(), TrackingError> {
        let mut tracker = Tracker::for_controller(controller).await?;
        let result = async {
            let resumed = match saved {
                Some(saved) => {
                    self.report(TrackingState::Calibrating);
                    tracker.resume(controller, monitor, &saved).await?
                }
                None => false,
            };
            if !resumed {
                self.report(TrackingState::Aligning);
                tracker.align(controller, monitor).await?;
            }
            self.figures.alignment_s = Some((monitor.elapsed + monitor.skipped).as_secs_f64());
            self.publish(&tracker, controller);
            loop {
                let report = tracker.sweep(controller, monitor).await?;
                self.paused.store(report.paused, Ordering::SeqCst);
                self.report(if report.paused {
                    TrackingState::Paused
                } else {
                    TrackingState::Tracking
                });
                self.figures.sweeps += 1;
                self.publish(&tracker, controller);
            }
        }
        .await;
        self.figures.actuator_moves = tracker.moves();
        result
    }

    fn report(&mut self, state: TrackingState) {
        if self.state != Some(state) {
            self.state = Some(state);
            self.events.emit(NodeEvent::Tracking(state));
        }
    }

    fn publish(&self, tracker: &Tracker, controller: &impl PolarizationController) {
        let calibration = PolarizationCalibration::from_tracker(tracker, controller.identity());
        self.calibrated.send_replace(Some(calibration));
    }
}
