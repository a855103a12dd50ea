//! The tamper matrix: every frame of a session, in both directions, modified, dropped,
//! duplicated, reordered with the next, preceded by a replay of the one before, or replaced by
//! the frame at the same place of another session. Against an untampered control of the same
//! detections, each attack must cost exactly the block whose messages it touched: no key from a
//! block containing affected bits, a key from every other block, the same keys on both nodes,
//! and the session going on to its end.
//!
//! The sessions run on paused tokio time, so a dropped message's timeout costs no wall time and
//! every run is deterministic in its frame sequence.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};

use common::{Outcome, Signing, Synthetic, session, settings, synthetic};
use qkd_runtime::block::BlockSettings;
use qkd_runtime::channel::memory::{MemoryTransport, Tamper};
use qkd_runtime::channel::{WireBody, decode_frame};
use qkd_runtime::error::ErrorKind;
use qkd_runtime::messages::{BlockId, Message};

/// What a frame of the control run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The sifting of the batch starting at this slot.
    Batch(u64),
    /// Block `id` before the preparer commits its key.
    Block(BlockId),
    /// Block `id` after the preparer committed (her word and its seal): cannot cost the key.
    Committed(BlockId),
    /// The start of the session (resynchronisation and resumption).
    Start,
    /// The measurer's last word.
    Finish,
}

/// Labels each frame of one direction of the control run. `announces` are the first slots of
/// the batches Bob announced, in order, to label Alice's sift replies.
fn label(frames: &[Vec<u8>], from_bob: bool, announces: &mut Vec<u64>) -> Vec<Part> {
    let mut parts = Vec::with_capacity(frames.len());
    let mut block: Option<BlockId> = None;
    let mut blocks_seen = 0usize;
    let mut sifts = 0usize;
    let mut committed = false;
    for frame in frames {
        let body = decode_frame::<Message>(frame).unwrap().body;
        let part = match body {
            WireBody::Resync
            | WireBody::Resynced
            | WireBody::Message(Message::Resume { .. } | Message::Resumed { .. }) => Part::Start,
            WireBody::Message(Message::Finish) => Part::Finish,
            WireBody::Message(Message::Announce(a) | Message::AnnounceHeld(a)) => {
                block = None;
                let first = a.slot[0];
                announces.push(first);
                Part::Batch(first)
            }
            WireBody::Message(Message::Sift(_)) => {
                block = None;
                sifts += 1;
                Part::Batch(announces[sifts - 1])
            }
            WireBody::Message(Message::OpenBlock { block: id, .. }) => {
                block = Some(id);
                Part::Block(id)
            }
            WireBody::Message(Message::TestErrors(_)) => {
                // Alice's k-th block answers Bob's k-th opening (numbered from 0 here).
                block = Some(blocks_seen as BlockId);
                blocks_seen += 1;
                committed = false;
                Part::Block(block.unwrap())
            }
            WireBody::Message(Message::Committed) => {
                committed = true;
                Part::Committed(block.unwrap())
            }
            WireBody::Seal(_) if committed => {
                committed = false;
                let id = block.unwrap();
                block = None;
                Part::Committed(id)
            }
            WireBody::Message(_) | WireBody::Seal(_) => Part::Block(
                block.unwrap_or_else(|| panic!("a block frame outside a block ({from_bob})")),
            ),
            WireBody::Abort(_) => panic!("the control run aborted"),
        };
        parts.push(part);
    }
    parts
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// One bit of the frame flipped.
    Modify,
    /// The frame never arrives.
    Drop,
    /// The frame arrives twice.
    Duplicate,
    /// The frame arrives after the next one.
    Reorder,
    /// The frame before it arrives again, just before it.
    ReplayPrevious,
    /// The frame at the same place of another session arrives instead.
    ReplayOtherSession,
}

const ATTACKS: [Attack; 6] = [
    Attack::Modify,
    Attack::Drop,
    Attack::Duplicate,
    Attack::Reorder,
    Attack::ReplayPrevious,
    Attack::ReplayOtherSession,
];

/// A transport hook carrying out `attack` on frame `target`; `other` is the same direction of
/// another session.
fn tamper(attack: Attack, target: u64, other: Arc<Vec<Vec<u8>>>) -> Tamper {
    let mut held: Option<Vec<u8>> = None;
    let mut previous: Option<Vec<u8>> = None;
    Box::new(move |n, frame: Vec<u8>| {
        let before = previous.replace(frame.clone());
        if n == target {
            match attack {
                Attack::Modify => {
                    let mut frame = frame;
                    let middle = frame.len() / 2;
                    frame[middle] ^= 0x01;
                    vec![frame]
                }
                Attack::Drop => vec![],
                Attack::Duplicate => vec![frame.clone(), frame],
                Attack::Reorder => {
                    held = Some(frame);
                    vec![]
                }
                Attack::ReplayPrevious => before.into_iter().chain([frame]).collect(),
                Attack::ReplayOtherSession => vec![other[n as usize].clone()],
            }
        } else if n == target + 1
            && let Some(late) = held.take()
        {
            vec![frame, late]
        } else {
            vec![frame]
        }
    })
}

/// The control run's frames of both directions.
struct Control {
    outcome: Outcome,
    bob: Vec<Vec<u8>>,
    alice: Vec<Vec<u8>>,
}

fn recording() -> (Tamper, Arc<Mutex<Vec<Vec<u8>>>>) {
    let frames = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&frames);
    (
        Box::new(move |_, frame: Vec<u8>| {
            log.lock().unwrap().push(frame.clone());
            vec![frame]
        }),
        frames,
    )
}

async fn control(data: &Synthetic, settings: &BlockSettings) -> Control {
    let (bob_end, alice_end) = MemoryTransport::pair();
    let (bob_log, bob) = recording();
    let (alice_log, alice) = recording();
    let outcome = session(
        alice_end.with_tamper(alice_log),
        bob_end.with_tamper(bob_log),
        data,
        settings,
        Signing::Off,
    )
    .await;
    let bob = bob.lock().unwrap().clone();
    let alice = alice.lock().unwrap().clone();
    Control {
        outcome,
        bob,
        alice,
    }
}

/// Checks an attacked run against what the attack may cost. An attack that withholds or alters
/// a frame costs its block; a duplicate leaves the original to be acted on and is refused when
/// the next frame is due, which may be after the block is done (then the key stands).
fn judge(attacked: &Outcome, part: Part, attack: Attack, tail: u64, what: &str) {
    assert!(
        attacked.keys_agree(),
        "{what}: the nodes kept different keys"
    );
    assert!(attacked.bob.is_ok(), "{what}: Bob {:?}", attacked.bob);
    let in_tail = match part {
        Part::Finish => true,
        Part::Batch(first) => first > tail,
        _ => false,
    };
    match &attacked.alice {
        Ok(()) => {}
        Err(e) if in_tail && e.kind() == ErrorKind::Reconnect => {}
        Err(e) => panic!("{what}: Alice {e:?}"),
    }
    let committed = attacked.bob_keys.committed();
    assert!(!committed.is_empty(), "{what}: no key at all");
    for report in &attacked.bob_reports {
        let id = report.id.unwrap();
        let keyed = committed.contains_key(&id);
        let affected = match part {
            Part::Batch(first) => report
                .slots
                .is_some_and(|s| (s.first..=s.last).contains(&first)),
            Part::Block(block) => block == id,
            Part::Committed(_) | Part::Start | Part::Finish => false,
        };
        let may_stand = attack == Attack::Duplicate && matches!(part, Part::Block(_));
        if affected && !may_stand {
            assert!(!keyed, "{what}: block {id} gave a key from affected bits");
        } else if !affected {
            assert!(
                keyed,
                "{what}: block {id} lost its key ({:?})",
                report.aborted
            );
        }
    }
    if let Part::Committed(block) = part {
        assert!(
            committed.contains_key(&block),
            "{what}: block {block}'s key was committed by the preparer and must stay"
        );
    }
}

/// Runs every attack on every frame of one direction.
async fn matrix(from_bob: bool) {
    // Blocks of 10 000 key bits, three of them (two more after any block is lost), so a
    // session is a few hundred frames each way.
    let data = synthetic(21, 50_000, 8_000);
    let settings = settings(10_000);
    let base = control(&data, &settings).await;
    base.outcome.assert_clean();
    assert!(base.outcome.keys_agree());
    let blocks = base.outcome.keyed_blocks().len();
    assert_eq!(blocks, 3, "blocks in the control run");
    // Batches after the last block: an attack there leaves Alice waiting for a resynchronisation
    // that never comes (Bob has finished), so she ends on the closed connection.
    let tail = base
        .outcome
        .bob_reports
        .last()
        .and_then(|r| r.slots)
        .unwrap()
        .last;
    // The frames of another session, for cross-session replays.
    let other = control(&data, &settings).await;
    let mut announces = Vec::new();
    let bob_parts = label(&base.bob, true, &mut announces);
    let alice_parts = label(&base.alice, false, &mut announces);
    let (parts, other_frames) = if from_bob {
        (bob_parts, Arc::new(other.bob))
    } else {
        (alice_parts, Arc::new(other.alice))
    };
    let own = if from_bob { &base.bob } else { &base.alice };
    let mut runs = 0;
    for (target, &part) in parts.iter().enumerate() {
        for attack in ATTACKS {
            if attack == Attack::ReplayOtherSession && other_frames[target] == own[target] {
                // The same bytes in both sessions (announcements of the same detections): a
                // replay that changes nothing.
                continue;
            }
            let hook = tamper(attack, target as u64, Arc::clone(&other_frames));
            let (bob_end, alice_end) = MemoryTransport::pair();
            let (alice_end, bob_end) = if from_bob {
                (alice_end, bob_end.with_tamper(hook))
            } else {
                (alice_end.with_tamper(hook), bob_end)
            };
            let attacked = session(alice_end, bob_end, &data, &settings, Signing::Off).await;
            let what = format!(
                "{attack:?} of {} frame {target} ({part:?})",
                if from_bob { "Bob's" } else { "Alice's" }
            );
            judge(&attacked, part, attack, tail, &what);
            runs += 1;
        }
    }
    // Five attacks on every frame, and the cross-session replay wherever the bytes differ.
    assert!(
        runs >= 5 * parts.len(),
        "{runs} runs for {} frames",
        parts.len()
    );
}

#[tokio::test(start_paused = true)]
async fn every_attack_on_bobs_frames_costs_only_the_blocks_it_touches() {
    matrix(true).await;
}

#[tokio::test(start_paused = true)]
async fn every_attack_on_alices_frames_costs_only_the_blocks_it_touches() {
    matrix(false).await;
}
