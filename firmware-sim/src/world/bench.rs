//! A prepare-and-measure world as devices see it: what the PTY host's simulated peripherals act
//! on, implemented both by the host's own bench and by the emulated drivers' bench, so that
//! devices served on pseudo-terminals and emulated devices can share one world.

use super::PrepareMeasureWorld;

/// A world that devices act on and that advances when they wait.
pub trait BenchWorld: Send {
    /// The world, if it is a prepare-and-measure one.
    fn world(&self) -> Option<&PrepareMeasureWorld>;

    /// The same, for settings.
    fn world_mut(&mut self) -> Option<&mut PrepareMeasureWorld>;

    /// Runs the world `ps` further (everything that happens meanwhile is recorded as usual).
    fn advance_ps(&mut self, ps: i64);

    /// Clicks of each detector (H, V, D, A) since the start.
    fn clicks(&self) -> [u64; 4];
}
