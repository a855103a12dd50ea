//! Calibration and active polarization tracking, written against the driver traits only, so the
//! same loops run on the emulated bench and on lab hardware.
//!
//! - [`delay`]: each detector's arrival phase in the slot, from its timing against the sync.
//! - [`detectors`]: dark counts, relative efficiencies within a basis pair, afterpulsing; flags.
//! - [`intensity`]: the source's mean photon numbers from counts at a known transmission.
//! - [`error`]: why a calibration step failed.
//! - [`counts`]: what a window of detections says about the channel's polarization (error rates
//!   per basis, the cost the loops minimise).
//! - [`monitor`]: where those windows come from — reference states interleaved by the source, or
//!   the bits already disclosed for parameter estimation — read from a time tagger.
//! - [`newton`]: far from alignment, steps that steer the measured correlations straight to their
//!   aligned values.
//! - [`model`]: a polarization controller whose actuators say what they do to the light, fitted
//!   in situ, that tells the loop where to go after a sudden rotation in one move.
//! - [`tracker`]: the loop that moves a polarization controller's actuators to keep the cost at
//!   its floor, with in-situ characterisation of each actuator, initial alignment, and a pause
//!   flag while it cannot keep up.
//! - [`state`]: calibration saved to a versioned file tied to device identities.

pub mod counts;
pub mod delay;
pub mod detectors;
pub mod error;
pub mod intensity;
mod least_squares;
pub mod model;
pub mod monitor;
pub mod newton;
pub mod state;
mod stream;
pub mod tracker;
