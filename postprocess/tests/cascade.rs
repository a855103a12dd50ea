//! Cascade: keys end equal, every disclosed parity is counted, and the efficiency against the
//! Shannon limit is measured over many frames.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use qkd_firmware_sim::world::rng::SimRng;
use qkd_postprocess::bits::{Bits, binary_entropy};
use qkd_postprocess::cascade::{CascadePlan, Corrector, ParityResponder, Shuffles, reconcile};

/// A key and a copy with exactly `errors` flipped bits at random positions.
pub fn noisy_pair(n: usize, errors: usize, seed: u64) -> (Bits, Bits) {
    let mut rng = SimRng::new(seed, 0);
    let alice = Bits::from_word_fn(n, || rng.next_u64());
    let mut bob = alice.clone();
    let mut flipped = 0;
    while flipped < errors {
        let i = (rng.next_u64() % n as u64) as usize;
        if bob.get(i) == alice.get(i) {
            bob.flip(i);
            flipped += 1;
        }
    }
    (alice, bob)
}

#[test]
fn corrects_every_frame_and_counts_every_parity() {
    for qber in [0.01, 0.02, 0.05, 0.1] {
        let n = 20_000;
        let shuffles = Shuffles::new(n, &CascadePlan::for_qber(n, qber), 99).unwrap();
        for frame in 0..20 {
            let errors = (qber * n as f64) as usize;
            let (alice, bob) = noisy_pair(n, errors, frame);
            let (corrected, report) = reconcile(&alice, bob, &shuffles).unwrap();
            assert_eq!(corrected, alice, "QBER {qber} frame {frame}");
            assert_eq!(report.corrected, errors as u64);
            // Disclosure never beats the Shannon limit: n h(Q) bits are necessary.
            assert!(report.disclosed_bits as f64 >= n as f64 * binary_entropy(qber));
        }
    }
}

#[test]
fn protocol_violations_are_refused() {
    let n = 1000;
    let shuffles = Shuffles::new(n, &CascadePlan::for_qber(n, 0.02), 1).unwrap();
    let (alice, bob) = noisy_pair(n, 20, 3);
    let mut responder = ParityResponder::new(&alice, &shuffles).unwrap();
    let bad = qkd_postprocess::cascade::ParityQuery {
        ranges: vec![qkd_postprocess::cascade::Range {
            pass: 0,
            start: 5,
            end: 2_000,
        }],
    };
    assert!(responder.answer(&bad).is_err());
    let mut corrector = Corrector::new(bob, &shuffles).unwrap();
    let query = corrector.next_query().unwrap();
    let mut answer = responder.answer(&query).unwrap();
    answer.count -= 1;
    assert!(corrector.absorb(&answer).is_err());
    assert!(Corrector::new(Bits::zeros(999), &shuffles).is_err());
}

#[test]
fn keys_of_a_few_bits_are_planned_and_corrected() {
    for n in 1..=20 {
        let plan = CascadePlan::for_qber(n, 0.01);
        assert!(
            plan.block_sizes
                .iter()
                .all(|&k| (1..=n.max(1)).contains(&k)),
            "{n}: {plan:?}"
        );
        let shuffles = Shuffles::new(n, &plan, 9).unwrap();
        let (alice, bob) = noisy_pair(n, 1, n as u64);
        let (corrected, _) = reconcile(&alice, bob, &shuffles).unwrap();
        assert_eq!(corrected, alice, "{n} bits");
    }
}
