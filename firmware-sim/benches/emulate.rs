//! Emulated detection events per second on one core: the figure that decides whether a
//! 100 MHz link at 50 km emulates faster than real time (target ≥ 10 M events/s).
// A benchmark with a broken preset should stop at once.
#![allow(clippy::expect_used)]

use divan::{Bencher, counter::ItemsCount};
use qkd_firmware_sim::world::{LinkPreset, NodeOutput, PrepareMeasureWorld};

fn main() {
    divan::main();
}

/// 10 ms of emulated link time per iteration, counted in detection events.
#[divan::bench(args = ["snspd", "ingaas-gated", "gys"])]
fn prepare_measure_50km(bencher: Bencher, preset: &str) {
    let spec = LinkPreset::from_name(preset)
        .expect("preset exists")
        .spec(50.0);
    let step_ps = 10_000_000_000;
    let mut probe = PrepareMeasureWorld::new(&spec, 1).expect("valid preset");
    let mut out = NodeOutput::default();
    probe.run_until(step_ps, &mut out);
    let events = out.clicks.len();
    bencher
        .counter(ItemsCount::new(events))
        .with_inputs(|| {
            (
                PrepareMeasureWorld::new(&spec, 1).expect("valid preset"),
                NodeOutput::default(),
            )
        })
        .bench_local_values(|(mut world, mut out)| {
            world.run_until(step_ps, &mut out);
            out
        });
}
