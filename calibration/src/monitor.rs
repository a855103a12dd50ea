//! Windows of detections sorted by prepared and measured state, read from a time tagger.
//!
//! A [`TaggedMonitor`] runs the receiver's tags through slot recovery, squashes double clicks as
//! sifting does, and asks the source (in a real link: the peer, over the authenticated channel)
//! what was sent in the detected slots. Which detections count is the tracking strategy's
//! [`Feedback`].

use std::future::Future;
use std::time::Duration;

use qkd_drivers::{EmissionRecords, SourceError, TagBatch, TaggerError, TimeTagger, WcpSource};
use qkd_postprocess::sift::{SquashCoin, squash};
use qkd_postprocess::slots::{Detections, SlotConfig, SlotConfigError, SlotRecovery};
use qkd_units::bb84::state_index;

use crate::counts::StateCounts;
use crate::stream::reads_covering;

/// Which detections feed the tracking cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Reference slots, whose states the source makes public: every measurement of them counts,
    /// at once, at the price of the key those slots would have carried.
    References,
    /// Basis-matched key slots, as disclosed for parameter estimation (test basis) and learnt in
    /// error correction (key basis): no extra photons. The bench counts them when the window
    /// ends; a node learns them a block later.
    DisclosedBits,
}

/// Why a window could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The tagger failed.
    #[error("time tagger: {0}")]
    Tagger(#[from] TaggerError),
    /// The source could not say what it sent.
    #[error("source records: {0}")]
    Source(#[from] SourceError),
    /// The tags do not fit the configured slot recovery.
    #[error(transparent)]
    Slots(#[from] SlotConfigError),
    /// Whatever fed the windows stopped (the link's run ended).
    #[error("the detections stopped coming: the link has ended")]
    Ended,
}

/// A source of windows of counts in link time.
pub trait ErrorMonitor: Send {
    /// Counts detections over at least `duration` of link time.
    fn measure(
        &mut self,
        duration: Duration,
    ) -> impl Future<Output = Result<StateCounts, MonitorError>> + Send;

    /// Lets at least `duration` of link time pass without counting (actuators settling).
    fn discard(
        &mut self,
        duration: Duration,
    ) -> impl Future<Output = Result<(), MonitorError>> + Send;

    /// Link time read so far.
    fn elapsed(&self) -> Duration;
}

/// Tags from a tagger, through slot recovery, against the source's records.
#[derive(Debug)]
pub struct TaggedMonitor<T, S> {
    tagger: T,
    source: S,
    /// Link time one tagger read covers.
    batch_duration: Duration,
    feedback: Feedback,
    slots: SlotRecovery,
    batch: TagBatch,
    detections: Detections,
    records: EmissionRecords,
    coin: SquashCoin,
    elapsed: Duration,
}

impl<T: TimeTagger, S: WcpSource> TaggedMonitor<T, S> {
    /// A monitor on `tagger` (each read covering `batch_duration`) and `source`.
    pub fn new(
        tagger: T,
        source: S,
        batch_duration: Duration,
        slots: SlotConfig,
        feedback: Feedback,
    ) -> Result<Self, MonitorError> {
        Ok(TaggedMonitor {
            tagger,
            source,
            batch_duration: batch_duration.max(Duration::from_micros(1)),
            feedback,
            slots: SlotRecovery::new(slots)?,
            batch: TagBatch::default(),
            detections: Detections::default(),
            records: EmissionRecords::default(),
            coin: SquashCoin::new(0x7A5C_0FFE),
            elapsed: Duration::ZERO,
        })
    }

    /// Reads enough batches to cover `duration`, leaving the detections in `self.detections`.
    async fn read(&mut self, duration: Duration) -> Result<(), MonitorError> {
        self.detections.clear();
        for _ in 0..reads_covering(duration, self.batch_duration) {
            self.tagger.read(&mut self.batch).await?;
            self.slots.process(
                &self.batch.time_ps,
                &self.batch.channel,
                &mut self.detections,
            );
            self.elapsed += self.batch_duration;
        }
        Ok(())
    }
}

impl<T: TimeTagger, S: WcpSource> ErrorMonitor for TaggedMonitor<T, S> {
    async fn measure(&mut self, duration: Duration) -> Result<StateCounts, MonitorError> {
        self.read(duration).await?;
        let coin = &mut self.coin;
        let measured = squash(&self.detections, || coin.flip());
        self.records.clear();
        self.source
            .emissions(&measured.slot, &mut self.records)
            .await?;
        let mut counts = StateCounts::default();
        let r = &self.records;
        for i in 0..measured.slot.len().min(r.len()) {
            let prepared_basis = r.basis[i];
            let wanted = match self.feedback {
                Feedback::References => r.reference[i],
                Feedback::DisclosedBits => !r.reference[i] && prepared_basis == measured.basis[i],
            };
            if wanted {
                counts.add(
                    state_index(prepared_basis, r.bit[i]),
                    state_index(measured.basis[i], measured.bit[i]),
                );
            }
        }
        Ok(counts)
    }

    async fn discard(&mut self, duration: Duration) -> Result<(), MonitorError> {
        if duration.is_zero() {
            return Ok(());
        }
        self.read(duration).await
    }

    fn elapsed(&self) -> Duration {
        self.elapsed
    }
}
