//! The simulated world behind qkd-node's emulator, and the firmware of our device boards.
//!
//! - [`boards`]: the firmware cores of our source, detector and polarization boards, written
//!   against `embedded-hal` 1.0; `no_std`, no allocation, built for `thumbv7em-none-eabihf` in CI.
//! - [`world`] (feature `std`, default): a physics-faithful, seedable model of the optical bench
//!   that the emulated drivers run on.
//! - [`host`] (feature `host`): the board cores on simulated peripherals wired to a world, the
//!   Thorlabs MPC320 and OZ Optics EPC emulated, all served on pseudo-terminals with fault
//!   injection (`qkd sim serve`).
#![cfg_attr(not(feature = "std"), no_std)]

pub mod boards;

#[cfg(feature = "std")]
pub mod world;

#[cfg(feature = "host")]
pub mod host;
