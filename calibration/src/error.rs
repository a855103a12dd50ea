//! Why a calibration step failed. Reading tags and the source's records fails the same way for
//! every step (a [`MonitorError`]); the rest says what the step itself could not find.

use qkd_drivers::{SourceError, TaggerError};
use qkd_postprocess::slots::SlotConfigError;

use crate::monitor::MonitorError;

/// A calibration step that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// Reading tags or records failed, or slot recovery refused its configuration.
    #[error(transparent)]
    Read(#[from] MonitorError),
    /// Settings that cannot describe a measurement.
    #[error("{0}")]
    Settings(String),
    /// The tagger has no input marked as sync, or none marked as a detector.
    #[error("the tagger has no {0} input")]
    MissingInput(&'static str),
    /// The detectors report a different number of channels than the tagger carries.
    #[error("the detectors have {detectors} channels but the tagger carries {tagged}")]
    ChannelCount {
        /// Detector channels.
        detectors: usize,
        /// Tagger inputs wired to detectors.
        tagged: usize,
    },
    /// Too few syncs to measure their period (a loose sync cable, or too short a run).
    #[error("{found} sync pulses in the run, at least 2 consecutive ones needed")]
    NoSyncs {
        /// Syncs seen.
        found: u64,
    },
    /// Slot recovery never locked, so no slot was counted.
    #[error("slot recovery never locked to the sync: check the sync input and the delays")]
    NoLock,
    /// A channel's clicks show no arrival peak (no light, or the phase is smeared).
    #[error(
        "detector {detector} (tagger input {tagger_channel}): no arrival peak in {counts} clicks ({significance:.1} σ over the background)"
    )]
    NoPeak {
        /// Detector number.
        detector: u8,
        /// Tagger input.
        tagger_channel: u8,
        /// Clicks read on the channel.
        counts: usize,
        /// Peak counts over the background, in its standard deviations.
        significance: f64,
    },
    /// Too few detections or clicks on a channel to say anything.
    #[error("detector {detector}: {found} {what}, at least {needed} needed")]
    TooFew {
        /// Detector number.
        detector: usize,
        /// What was counted.
        what: &'static str,
        /// How many were found.
        found: usize,
        /// How many are needed.
        needed: usize,
    },
}

impl From<TaggerError> for CalibrationError {
    fn from(e: TaggerError) -> Self {
        Self::Read(e.into())
    }
}

impl From<SourceError> for CalibrationError {
    fn from(e: SourceError) -> Self {
        Self::Read(e.into())
    }
}

impl From<SlotConfigError> for CalibrationError {
    fn from(e: SlotConfigError) -> Self {
        Self::Read(e.into())
    }
}
