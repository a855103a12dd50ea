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

#[test]
fn a_replanned_shuffle_is_the_shuffle_built_for_that_plan() {
    // Replanning keeps the permutations and changes only the block sizes (reusing what it can):
    // the same questions and the same corrections as shuffles built afresh for the new plan.
    let n = 30_000;
    let (alice, bob) = noisy_pair(n, 900, 5);
    let low = CascadePlan::for_qber(n, 0.01);
    let high = CascadePlan::for_qber(n, 0.03);
    assert_ne!(low.block_sizes, high.block_sizes, "the plans must differ");
    let replanned = Shuffles::new(n, &low, 42).unwrap().replan(&high).unwrap();
    let fresh = Shuffles::new(n, &high, 42).unwrap();
    assert_eq!(replanned.block_sizes(), fresh.block_sizes());
    let mut a = Corrector::new(bob.clone(), &replanned).unwrap();
    let mut b = Corrector::new(bob.clone(), &fresh).unwrap();
    let mut responder = ParityResponder::new(&alice, &fresh).unwrap();
    loop {
        let (qa, qb) = (a.next_query(), b.next_query());
        assert_eq!(qa, qb);
        let Some(query) = qa else { break };
        let answer = responder.answer(&query).unwrap();
        a.absorb(&answer).unwrap();
        b.absorb(&answer).unwrap();
    }
    let ((ka, ra), (kb, rb)) = (a.finish(), b.finish());
    assert_eq!(ka, alice);
    assert_eq!((ka, ra), (kb, rb));
    // A plan with more passes than the permutations serve is refused, not truncated.
    let mut longer = high.clone();
    longer.block_sizes.push(4);
    assert!(replanned.replan(&longer).is_err());
}

/// A 2-universal verification tag of `t` bits (Toeplitz, seed from `seed`).
fn tag(key: &Bits, t: usize, seed: u64) -> Bits {
    let mut rng = SimRng::new(seed, 1);
    let seed = Bits::from_word_fn(key.len() + t - 1, || rng.next_u64());
    qkd_postprocess::toeplitz::hash_direct(key, &seed, t).unwrap()
}

#[test]
fn errors_cascade_leaves_behind_are_caught_by_verification() {
    // Two short passes of large blocks on a key with 5 % errors: each first-pass block holds
    // about six errors, even numbers of them hide from its parity, and the second pass cannot
    // find them all. Verification (a 64-bit 2-universal hash: a residual error pattern collides
    // with probability 2^-64) must tell every such key from Alice's.
    let n = 4_000;
    let plan = CascadePlan {
        block_sizes: vec![128, 256],
    };
    let shuffles = Shuffles::new(n, &plan, 3).unwrap();
    let mut residual = 0;
    for frame in 0..40 {
        let (alice, bob) = noisy_pair(n, 200, 100 + frame);
        let (corrected, _) = reconcile(&alice, bob, &shuffles).unwrap();
        if corrected == alice {
            assert_eq!(tag(&corrected, 64, frame), tag(&alice, 64, frame));
        } else {
            residual += 1;
            assert_ne!(
                tag(&corrected, 64, frame),
                tag(&alice, 64, frame),
                "frame {frame}"
            );
        }
    }
    assert!(
        residual >= 10,
        "only {residual} of 40 frames kept errors: the test saw too few"
    );
}

#[test]
fn contradictory_answers_stop_the_correction_instead_of_looping() {
    // One top-level parity answered wrongly makes the inferred parities of every later pass
    // inconsistent; the corrector must end (and report it) rather than flip a bit back and forth.
    let n = 10_000;
    let shuffles = Shuffles::new(n, &CascadePlan::for_qber(n, 0.01), 8).unwrap();
    let mut stopped = 0;
    for frame in 0..20 {
        let (alice, bob) = noisy_pair(n, 100, 200 + frame);
        let mut responder = ParityResponder::new(&alice, &shuffles).unwrap();
        let mut corrector = Corrector::new(bob, &shuffles).unwrap();
        let mut first = true;
        let mut rounds = 0;
        while let Some(query) = corrector.next_query() {
            let mut answer = responder.answer(&query).unwrap();
            if std::mem::take(&mut first) {
                answer.parities[0] ^= 1 << (frame % 64);
            }
            corrector.absorb(&answer).unwrap();
            rounds += 1;
            assert!(rounds < 10_000, "frame {frame}: no end in sight");
        }
        let (corrected, report) = corrector.finish();
        assert_ne!(
            corrected, alice,
            "frame {frame}: a lie cannot give the right key"
        );
        stopped += usize::from(report.contradicted);
    }
    assert!(stopped > 0, "no frame saw the contradiction");
}

/// Mid-reconciliation, the two sides' `Debug` shows sizes and counts, never key words, layouts
/// or parities: no list at all (the derived one printed them all).
#[test]
fn debug_output_holds_no_key_material() {
    let n = 4096;
    let shuffles = Shuffles::new(n, &CascadePlan::for_qber(n, 0.02), 5).unwrap();
    let alice = Bits::from_word_fn(n, || u64::MAX);
    let mut bob = alice.clone();
    for i in (0..n).step_by(97) {
        bob.flip(i);
    }
    let mut responder = ParityResponder::new(&alice, &shuffles).unwrap();
    let mut corrector = Corrector::new(bob, &shuffles).unwrap();
    for _ in 0..5 {
        let Some(query) = corrector.next_query() else {
            break;
        };
        let answer = responder.answer(&query).unwrap();
        corrector.absorb(&answer).unwrap();
    }
    for text in [format!("{responder:?}"), format!("{corrector:?}")] {
        assert!(text.len() < 400, "{text}");
        for leak in ["18446744073709551615", "[", "Permuted", "words"] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
        assert!(text.contains("bits: 4096"), "{text}");
    }
}
