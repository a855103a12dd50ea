//! The simulated world behind qkd-node's emulator, and the firmware of our device boards.
//!
//! With the `std` feature (default) the crate provides [`world`]: a physics-faithful, seedable
//! model of the optical bench that the emulated drivers run on. The board firmware cores are
//! `no_std` and build for microcontrollers.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod boards;

#[cfg(feature = "std")]
pub mod world;

#[cfg(feature = "host")]
pub mod host;
