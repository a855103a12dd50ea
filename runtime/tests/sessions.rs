//! Post-processing sessions between two nodes over a real channel, on synthetic detections with a
//! known error rate: keys match and have the bound's length to the bit when the channel is
//! honest, TCP carries the same protocol, hybrid signatures gate every key, keys are random, and
//! no bit sifted in a batch whose messages went unsealed enters a key.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{Outcome, Signing, entangled_length, session, settings, synthetic};
use qkd_postprocess::bits::Bits;
use qkd_postprocess::sift::Fate;
use qkd_runtime::block::AUTH_REFILL_BITS;
use qkd_runtime::channel::memory::{MemoryTransport, Tamper};
use qkd_runtime::channel::tcp::TcpTransport;
use qkd_runtime::channel::{WireBody, decode_frame, encode_frame};
use qkd_runtime::messages::Message;
use qkd_runtime::reconcile::ReconcileMessage;

/// Checks every committed key against the bound recomputed from its block's details, to the bit.
fn assert_lengths_follow_the_bound(outcome: &Outcome) {
    let committed = outcome.bob_keys.committed();
    assert!(!committed.is_empty(), "no key to check");
    for report in &outcome.bob_reports {
        let details = report.details.as_ref().expect("details of an opened block");
        let expected = entangled_length(
            details.key_bits,
            details.test_bits,
            details.test_errors,
            details.disclosed_bits,
            details.eps_sec,
            details.eps_cor,
        )
        .filter(|&l| l > AUTH_REFILL_BITS);
        match committed.get(&details.block) {
            Some(key) => {
                let length = expected.expect("a key where the bound allows none");
                assert_eq!(details.secret_bits, length, "block {}", details.block);
                assert_eq!(key.len() as u64, length - AUTH_REFILL_BITS);
            }
            None => assert_eq!(details.secret_bits, 0, "{details:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_channel_gives_matching_keys_of_the_bounds_length() {
    // 700 000 detections: 448 000 key-basis bits on average, two blocks of 200 000.
    let data = synthetic(1, 700_000, 100_000);
    let (a, b) = MemoryTransport::pair();
    let outcome = session(b, a, &data, &settings(200_000), Signing::Off).await;
    outcome.assert_clean();
    assert_eq!(outcome.keyed_blocks(), vec![0, 1], "two blocks, both keyed");
    assert!(outcome.keys_agree());
    assert_lengths_follow_the_bound(&outcome);
    for (alice, bob) in outcome.alice_reports.iter().zip(&outcome.bob_reports) {
        // Both sides count the same disclosure and compute the same details.
        assert_eq!(alice.disclosed_bits, bob.disclosed_bits);
        assert_eq!(alice.details, bob.details);
        assert_eq!(alice.slots, bob.slots);
        // Each key bit is wrong with probability QBER, independently: binomial spread.
        let n = bob.key_bits as f64;
        let q = bob.corrected_bits as f64 / n;
        let sigma = (common::QBER * (1.0 - common::QBER) / n).sqrt();
        assert!((q - common::QBER).abs() < 5.0 * sigma, "{q} ± {sigma}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_runs_over_tcp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
    let bob_stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let alice_stream = accept.await.unwrap();
    let data = synthetic(3, 200_000, 50_000);
    let outcome = session(
        TcpTransport::new(alice_stream),
        TcpTransport::new(bob_stream),
        &data,
        &settings(50_000),
        Signing::Off,
    )
    .await;
    outcome.assert_clean();
    assert_eq!(outcome.keyed_blocks(), vec![0, 1], "two blocks over TCP");
    assert!(outcome.keys_agree());
    assert_lengths_follow_the_bound(&outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_mode_keys_only_when_signatures_and_seals_both_check() {
    let data = synthetic(1, 200_000, 50_000);
    let run = |signing| {
        let data = data.clone();
        async move {
            let (a, b) = MemoryTransport::pair();
            session(b, a, &data, &settings(50_000), signing).await
        }
    };
    let hybrid = run(Signing::Hybrid).await;
    hybrid.assert_clean();
    assert_eq!(hybrid.keyed_blocks(), vec![0, 1]);
    assert!(hybrid.keys_agree());
    for signing in [Signing::AliceTrustsAnotherKey, Signing::OnlyBob] {
        let refused = run(signing).await;
        // Blocks ran and were refused at a seal; the session went on after each, and at the end
        // no key was kept on either side.
        assert!(refused.bob_reports.len() >= 2, "{signing:?}");
        assert!(
            refused.bob_keys.committed().is_empty() && refused.alice_keys.committed().is_empty(),
            "{signing:?}: a key despite a failed signature check"
        );
        assert!(refused.bob_reports.iter().all(|r| r.aborted.is_some()));
    }
}

/// Decodes `frame` as a message of the protocol, if it is one.
fn message(frame: &[u8]) -> Option<Message> {
    match decode_frame::<Message>(frame).ok()?.body {
        WireBody::Message(m) => Some(m),
        _ => None,
    }
}

/// The bits of a Toeplitz seed carried by an `Amplify` frame.
fn amplification_seed(frame: &[u8]) -> Option<Bits> {
    match message(frame)? {
        Message::Amplify { seed, .. } => seed.to_bits(),
        _ => None,
    }
}

/// A transport hook that keeps a copy of every frame.
fn recorder() -> (Tamper, Arc<Mutex<Vec<Vec<u8>>>>) {
    let frames = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&frames);
    let tamper: Tamper = Box::new(move |_, frame: Vec<u8>| {
        log.lock().unwrap().push(frame.clone());
        vec![frame]
    });
    (tamper, frames)
}

/// `ones` ones in `n` fair bits: within 5 σ of n/2.
fn balanced(ones: usize, n: usize) -> bool {
    let sigma = (n as f64 / 4.0).sqrt();
    (ones as f64 - n as f64 / 2.0).abs() < 5.0 * sigma
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_their_hash_seeds_are_random() {
    let data = synthetic(5, 200_000, 50_000);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (bob_end, alice_end) = MemoryTransport::pair();
        let (tamper, frames) = recorder();
        let outcome = session(
            alice_end.with_tamper(tamper),
            bob_end,
            &data,
            &settings(50_000),
            Signing::Off,
        )
        .await;
        outcome.assert_clean();
        assert!(outcome.keys_agree());
        let seeds: Vec<Bits> = frames
            .lock()
            .unwrap()
            .iter()
            .filter_map(|f| amplification_seed(f))
            .collect();
        assert_eq!(seeds.len(), outcome.keys().len(), "one seed per key");
        runs.push((outcome.keys(), seeds));
    }
    let (first_keys, first_seeds) = &runs[0];
    let (second_keys, second_seeds) = &runs[1];
    assert!(!first_keys.is_empty());
    // The same detections, other randomness: the seeds and keys are unrelated (half their bits
    // differ, within 5 σ of a binomial), and each is balanced.
    for (a, b) in first_seeds.iter().zip(second_seeds) {
        assert!(balanced(a.count_ones(), a.len()), "seed bias");
        assert!(balanced(a.hamming_distance(b), a.len()), "seeds repeat");
    }
    for (a, b) in first_keys.iter().zip(second_keys) {
        assert_eq!(a.len(), b.len(), "the same data gives the same lengths");
        assert!(balanced(a.count_ones(), a.len()), "key bias");
        assert!(balanced(a.hamming_distance(b), a.len()), "keys repeat");
    }
}

/// The frame at `index` of Alice's stream rewritten by `edit`, which sees it decoded.
fn rewrite(index: u64, edit: fn(&mut Message) -> bool) -> (Tamper, Arc<Mutex<bool>>) {
    let done = Arc::new(Mutex::new(false));
    let flag = Arc::clone(&done);
    let tamper: Tamper = Box::new(move |n, frame: Vec<u8>| {
        if n != index {
            return vec![frame];
        }
        let mut decoded = decode_frame::<Message>(&frame).unwrap();
        if let WireBody::Message(m) = &mut decoded.body
            && edit(m)
        {
            *flag.lock().unwrap() = true;
            return vec![encode_frame(&decoded).unwrap()];
        }
        vec![frame]
    });
    (tamper, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bits_of_a_batch_straddling_an_abandoned_block_never_reach_the_next() {
    // Batches of 25 000 detections give ~16 000 key bits each; blocks of 50 000 bits take four
    // batches and leave ~14 000 bits of the fourth waiting for the second block. That fourth
    // batch's sift reply is altered (a key-basis fate turned to discard, which decodes and
    // sifts), and the first block is forced to end without key (a parity answer flipped, so
    // verification fails at a point both sides reach together, before any seal).
    let data = synthetic(11, 400_000, 25_000);
    let block_bits = 50_000;
    // Find, in an honest run, the frames to alter: Alice's fourth Sift, and her first answer.
    let (bob_end, alice_end) = MemoryTransport::pair();
    let (log, frames) = recorder();
    let control = session(
        alice_end.with_tamper(log),
        bob_end,
        &data,
        &settings(block_bits),
        Signing::Off,
    )
    .await;
    control.assert_clean();
    let frames = frames.lock().unwrap().clone();
    let index = |pick: &dyn Fn(&Message) -> bool, nth: usize| {
        frames
            .iter()
            .enumerate()
            .filter(|(_, f)| message(f).as_ref().is_some_and(pick))
            .nth(nth)
            .map(|(i, _)| i as u64)
            .unwrap()
    };
    let fourth_sift = index(&|m| matches!(m, Message::Sift(_)), 3);
    let first_answer = index(&|m| matches!(m, Message::Reconcile(_)), 0);
    let straddling = control.bob_reports[0].slots.unwrap();
    assert_eq!(
        straddling.last,
        4 * 25_000 - 1,
        "the first block ends with the fourth batch"
    );
    assert!(
        control.bob_reports[1].slots.unwrap().first <= straddling.last,
        "in the honest run the fourth batch's leftover bits go into the second block"
    );

    let (sift_edit, sift_done) = rewrite(fourth_sift, |m| match m {
        Message::Sift(reply) => {
            let Some(i) = reply.fate.iter().position(|f| *f == Fate::Key) else {
                return false;
            };
            let kept_before = reply.fate[..i].iter().filter(|f| f.kept()).count();
            reply.fate[i] = Fate::Discard;
            reply.class.remove(kept_before);
            true
        }
        _ => false,
    });
    let (answer_edit, answer_done) = rewrite(first_answer, |m| match m {
        Message::Reconcile(ReconcileMessage::CascadeAnswer(answer)) => {
            answer.parities[0] ^= 1;
            true
        }
        _ => false,
    });
    let mut edits = [sift_edit, answer_edit];
    let tamper: Tamper = Box::new(move |n, frame| {
        let frames = edits[0](n, frame);
        frames.into_iter().flat_map(|f| edits[1](n, f)).collect()
    });
    let (bob_end, alice_end) = MemoryTransport::pair();
    let attacked = session(
        alice_end.with_tamper(tamper),
        bob_end,
        &data,
        &settings(block_bits),
        Signing::Off,
    )
    .await;
    assert!(*sift_done.lock().unwrap() && *answer_done.lock().unwrap());
    attacked.assert_clean();
    let first = &attacked.bob_reports[0];
    assert_eq!(
        first.aborted.as_deref(),
        Some("verification failed"),
        "{first:?}"
    );
    assert!(attacked.keys_agree());
    let keyed = attacked.keyed_blocks();
    assert!(!keyed.is_empty(), "later blocks still give keys");
    for report in &attacked.bob_reports[1..] {
        let slots = report.slots.unwrap();
        assert!(
            slots.first > straddling.last,
            "block {:?} took bits of the altered batch: {slots:?}",
            report.id
        );
    }
    assert!(attacked.progress.discarded_key_bits > 0);
}
