//! Polarization tracking inside `qkd link`: Bob's tracker runs on its own task, fed the
//! reference slots of every sifted batch (their states are public, so Alice names them in her
//! sift reply), and moves the receiver's polarization controller between batches. While it is
//! aligning or far from its floor it reports itself paused, and the batches measured then are
//! announced as held: sifted for their references, but their bits kept out of every block.
//!
//! The two sides run in lock step, so a run stays deterministic by seed: the link reads a tagger
//! batch only once the tracker waits for counts, and the tracker acts only on a batch it was fed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use qkd_calibration::counts::StateCounts;
use qkd_calibration::monitor::{ErrorMonitor, MonitorError};
use qkd_calibration::tracker::{Tracker, TrackingError};
use qkd_drivers::PolarizationController;
use qkd_postprocess::sift::{Measurements, SiftReply, reference_outcomes};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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
    /// The batch's reference counts.
    counts: mpsc::Receiver<StateCounts>,
    batch: Duration,
    elapsed: Duration,
}

impl FedMonitor {
    /// The counts of the next batch; `Ended` once the link stops.
    async fn next(&mut self) -> Result<StateCounts, MonitorError> {
        self.want.send(()).await.map_err(|_| MonitorError::Ended)?;
        let counts = self.counts.recv().await.ok_or(MonitorError::Ended)?;
        self.elapsed += self.batch;
        Ok(counts)
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
}

/// Bob's side of the lock step with the tracking task.
#[derive(Debug)]
pub struct LinkTracking {
    want: mpsc::Receiver<()>,
    counts: mpsc::Sender<StateCounts>,
    paused: Arc<AtomicBool>,
    /// The tracker is owed the counts of the batch just read.
    owed: bool,
    task: JoinHandle<Result<TrackingFigures, TrackingError>>,
}

impl LinkTracking {
    /// Starts tracking `controller`; each batch the link reads covers `batch` of link time.
    pub fn start<C: PolarizationController + 'static>(mut controller: C, batch: Duration) -> Self {
        let (want_tx, want) = mpsc::channel(1);
        let (counts, counts_rx) = mpsc::channel(1);
        let paused = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&paused);
        let mut monitor = FedMonitor {
            want: want_tx,
            counts: counts_rx,
            batch,
            elapsed: Duration::ZERO,
        };
        let task = tokio::spawn(async move {
            let mut figures = TrackingFigures::default();
            let result = track(&mut controller, &mut monitor, &flag, &mut figures).await;
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
            task,
        }
    }

    /// Waits until the tracker has acted on the last batch and wants the next; `false` if the
    /// tracker has stopped (its error is reported by [`Self::finish`]).
    pub async fn ready(&mut self) -> bool {
        self.owed = self.want.recv().await.is_some();
        self.owed
    }

    /// Key generation is paused: the batch about to be read is to be held.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Feeds the references of a sifted batch to the tracker, if it is owed them.
    pub async fn feed(&mut self, measured: &Measurements, reply: Option<&SiftReply>) {
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
        let _ = self.counts.send(counts).await;
    }

    /// Stops the tracker and returns what it did, or why it failed.
    pub async fn finish(self) -> Result<TrackingFigures, TrackingFailure> {
        drop(self.counts);
        drop(self.want);
        Ok(self.task.await??)
    }
}

/// Aligns, then sweeps until the link stops feeding counts; the pause flag follows each sweep.
async fn track<C: PolarizationController>(
    controller: &mut C,
    monitor: &mut FedMonitor,
    paused: &AtomicBool,
    figures: &mut TrackingFigures,
) -> Result<(), TrackingError> {
    let mut tracker = Tracker::for_controller(controller).await?;
    let result = async {
        tracker.align(controller, monitor).await?;
        figures.alignment_s = Some(monitor.elapsed().as_secs_f64());
        loop {
            let report = tracker.sweep(controller, monitor).await?;
            paused.store(report.paused, Ordering::SeqCst);
            figures.sweeps += 1;
        }
    }
    .await;
    figures.actuator_moves = tracker.moves();
    result
}
