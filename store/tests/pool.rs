//! The key pool on a real file: cuts take committed bits once, in log order, and every refusal
//! (out of order, bits already cut, bits not committed, an ID used before) leaves the pool as it
//! was; a reserved key goes to its own SAE pair once, all of a request or none.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use qkd_postprocess::auth::{AuthState, Role};
use qkd_postprocess::bits::Bits;
use qkd_runtime::keys::KeySink;
use qkd_store::pool::{CutRecord, CutRefusal, DeliveryRefusal, Fate, KeyCut, Segment};
use qkd_store::{Store, key_bytes};

/// A store with blocks 0 and 1 committed (1 000 bits each, distinct patterns) and block 2 held.
fn pool(name: &str) -> (Store, std::path::PathBuf, [Bits; 2]) {
    let dir = std::env::temp_dir().join(format!("qkd-pool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut store = Store::open(&dir).unwrap();
    let secret: Vec<u8> = (0..4096).map(|i| (i * 7 % 251) as u8).collect();
    let auth = AuthState::from_secret(&secret, Role::Initiator).unwrap();
    store.init_auth(&auth).unwrap();
    let mut word = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        word ^= word << 13;
        word ^= word >> 7;
        word ^= word << 17;
        word
    };
    let keys = [
        Bits::from_word_fn(1_000, &mut next),
        Bits::from_word_fn(1_000, &mut next),
    ];
    for (block, key) in keys.iter().enumerate() {
        store.hold(block as u64, key).unwrap();
        store.commit(block as u64, key, &auth).unwrap();
    }
    store
        .hold(2, &Bits::from_word_fn(1_000, &mut next))
        .unwrap();
    (store, dir, keys)
}

fn cut(seq: u64, keys: &[(&str, &[Segment])]) -> CutRecord {
    CutRecord {
        seq,
        master: "sae-a".into(),
        slave: "sae-b".into(),
        keys: keys
            .iter()
            .map(|(id, segments)| KeyCut {
                key_id: (*id).into(),
                segments: segments.to_vec(),
            })
            .collect(),
    }
}

/// The state of every key cut so far, in cut order.
fn states(store: &Store) -> Vec<String> {
    store
        .pool_keys()
        .unwrap()
        .into_iter()
        .map(|k| k.state)
        .collect()
}

fn segment(block: u64, offset: u64, bits: u64) -> Segment {
    Segment {
        block,
        offset,
        bits,
    }
}

#[test]
fn cuts_take_committed_bits_once_across_blocks_and_erase_them() {
    let (store, dir, keys) = pool("cuts");
    assert_eq!(store.pool_bits(1).unwrap(), 2_000);
    // Three keys of 384 bits from blocks up to 1: the third spans the boundary.
    let plan = store.plan_cut(3, 384, 1).unwrap().unwrap();
    assert_eq!(plan[2], vec![segment(0, 768, 232), segment(1, 0, 152)]);
    assert_eq!(
        store.plan_cut(6, 384, 1).unwrap(),
        None,
        "2 000 bits hold five"
    );
    // A planner plans cut after cut from where the last ends, and nothing it cannot cover.
    let mut planner = store.planner(1).unwrap();
    assert_eq!(planner.plan(2, 384).unwrap(), plan[..2]);
    assert_eq!(planner.plan(4, 384), None);
    assert_eq!(planner.plan(1, 384).unwrap(), plan[2..]);
    assert_eq!(planner.remaining_bits(), 2_000 - 3 * 384);
    let ids = ["k0", "k1", "k2"];
    let record = cut(
        0,
        &[(ids[0], &plan[0]), (ids[1], &plan[1]), (ids[2], &plan[2])],
    );
    let served = store.apply_cut(&record, Fate::Serve).unwrap().unwrap();
    // Each key is its bits of the committed keys, in order.
    let mut joined = keys[0].clone();
    joined.extend(&keys[1]);
    for (i, key) in served.iter().enumerate() {
        assert_eq!(key.key_id, ids[i]);
        let expected = key_bytes(&joined.range(384 * i, 384 * (i + 1)));
        assert_eq!(*key.bytes, expected, "{}", key.key_id);
    }
    assert_eq!(store.pool_cursor().unwrap(), (1, 152));
    assert_eq!(store.pool_bits(1).unwrap(), 2_000 - 3 * 384);
    assert_eq!(store.last_cut().unwrap(), Some(0));
    // The cut bits are gone from the block keys; the rest is intact.
    let (block0, _) = store.key(0).unwrap().unwrap();
    assert!((0..1_000).all(|i| !block0.get(i)));
    let (block1, _) = store.key(1).unwrap().unwrap();
    assert!((0..152).all(|i| !block1.get(i)));
    assert_eq!(block1.range(152, 1_000), keys[1].range(152, 1_000));
    // The master's side keeps the record only.
    assert_eq!(store.cuts_after(None).unwrap(), vec![record]);
    assert_eq!(store.reserved_count("sae-a", "sae-b").unwrap(), 0);
    assert_eq!(states(&store), ["delivered"; 3]);
    // Bits off byte boundaries are taken and erased alone; bits skipped over stay unserved.
    let odd = cut(1, &[("odd", &[segment(1, 155, 21)])]);
    let served = store.apply_cut(&odd, Fate::Serve).unwrap().unwrap();
    assert_eq!(*served[0].bytes, key_bytes(&keys[1].range(155, 176)));
    let (block1, _) = store.key(1).unwrap().unwrap();
    assert_eq!(block1.range(152, 155), keys[1].range(152, 155));
    assert!((155..176).all(|i| !block1.get(i)));
    assert_eq!(block1.range(176, 1_000), keys[1].range(176, 1_000));
    assert_eq!(store.pool_cursor().unwrap(), (1, 176));
    // The next plan starts at the cursor, and nothing past block `through` is planned.
    assert_eq!(
        store.plan_cut(1, 8, 1).unwrap().unwrap()[0],
        vec![segment(1, 176, 8)]
    );
    assert_eq!(store.plan_cut(1, 8, 0).unwrap(), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_refused_cut_leaves_the_pool_as_it_was() {
    let (store, dir, _) = pool("refusals");
    store
        .apply_cut(&cut(0, &[("first", &[segment(0, 0, 256)])]), Fate::Reserve)
        .unwrap()
        .unwrap();
    let before = (
        store.pool_cursor().unwrap(),
        store.last_cut().unwrap(),
        store.pool_keys().unwrap(),
        store.key(0).unwrap(),
    );
    let refusals = [
        (
            cut(0, &[("again", &[segment(0, 256, 8)])]),
            CutRefusal::OutOfOrder {
                got: 0,
                applied: Some(0),
            },
        ),
        (
            cut(2, &[("skip", &[segment(0, 256, 8)])]),
            CutRefusal::OutOfOrder {
                got: 2,
                applied: Some(0),
            },
        ),
        (
            cut(1, &[("behind", &[segment(0, 128, 256)])]),
            CutRefusal::Reused { seq: 1, block: 0 },
        ),
        // A later key of the cut going back over an earlier one's bits.
        (
            cut(
                1,
                &[
                    ("ahead", &[segment(0, 512, 8)]),
                    ("back", &[segment(0, 300, 8)]),
                ],
            ),
            CutRefusal::Reused { seq: 1, block: 0 },
        ),
        (
            cut(1, &[("held", &[segment(2, 0, 8)])]),
            CutRefusal::NotCommitted { seq: 1, block: 2 },
        ),
        (
            cut(1, &[("missing", &[segment(9, 0, 8)])]),
            CutRefusal::NotCommitted { seq: 1, block: 9 },
        ),
        (
            cut(1, &[("past-end", &[segment(0, 900, 200)])]),
            CutRefusal::NotCommitted { seq: 1, block: 0 },
        ),
        // The first key is fine and would be written; the second reuses an ID.
        (
            cut(
                1,
                &[
                    ("fresh", &[segment(0, 256, 8)]),
                    ("first", &[segment(0, 264, 8)]),
                ],
            ),
            CutRefusal::DuplicateId("first".into()),
        ),
    ];
    for (record, refusal) in refusals {
        for fate in [Fate::Serve, Fate::Reserve] {
            assert_eq!(
                store.apply_cut(&record, fate).unwrap().err(),
                Some(refusal.clone()),
                "{fate:?} {record:?}"
            );
            let after = (
                store.pool_cursor().unwrap(),
                store.last_cut().unwrap(),
                store.pool_keys().unwrap(),
                store.key(0).unwrap(),
            );
            assert!(after == before, "{refusal} changed the pool");
        }
    }
    // A discarded cut need not find its bits (the peer may have lost them), but passes them.
    store
        .apply_cut(&cut(1, &[("lost", &[segment(2, 0, 64)])]), Fate::Discard)
        .unwrap()
        .unwrap();
    assert_eq!(store.pool_cursor().unwrap(), (2, 64));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_reserved_key_goes_to_its_own_sae_pair_once_and_a_request_whole_or_not_at_all() {
    let (store, dir, keys) = pool("deliver");
    let record = cut(
        0,
        &[("a", &[segment(0, 0, 128)]), ("b", &[segment(0, 128, 128)])],
    );
    assert!(
        store
            .apply_cut(&record, Fate::Reserve)
            .unwrap()
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.reserved_count("sae-a", "sae-b").unwrap(), 2);
    let ids = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        store.deliver("sae-b", "sae-a", &ids(&["a"])).unwrap().err(),
        Some(DeliveryRefusal::NotYours("a".into())),
        "the pair is ordered: master sae-a, slave sae-b"
    );
    assert_eq!(
        store
            .deliver("sae-a", "sae-b", &ids(&["a", "nope"]))
            .unwrap()
            .err(),
        Some(DeliveryRefusal::NotFound("nope".into()))
    );
    assert_eq!(
        store.reserved_count("sae-a", "sae-b").unwrap(),
        2,
        "none went"
    );
    let served = store
        .deliver("sae-a", "sae-b", &ids(&["b", "a"]))
        .unwrap()
        .unwrap();
    assert_eq!(served[0].key_id, "b");
    assert_eq!(*served[0].bytes, key_bytes(&keys[0].range(128, 256)));
    assert_eq!(*served[1].bytes, key_bytes(&keys[0].range(0, 128)));
    assert_eq!(
        store.deliver("sae-a", "sae-b", &ids(&["a"])).unwrap().err(),
        Some(DeliveryRefusal::NotFound("a".into())),
        "once"
    );
    // Discarding a cut leaves delivered keys delivered.
    store.discard_cut(0).unwrap();
    assert_eq!(states(&store), ["delivered"; 2]);
    // Reopened, the pool is where it was.
    drop(store);
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.pool_cursor().unwrap(), (0, 256));
    assert_eq!(store.last_cut().unwrap(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}
