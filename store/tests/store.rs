//! The store on a real file: keys round trip by block, a held key becomes committed with the
//! authentication state in one step, the journal refuses to move pads back, and another
//! connection reads what was written.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use qkd_postprocess::auth::{AuthState, Authenticator, Role};
use qkd_postprocess::bits::Bits;
use qkd_runtime::keys::KeySink;
use qkd_store::{Store, StoreFailure, key_sha256};

fn dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("qkd-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn state() -> AuthState {
    let secret: Vec<u8> = (0..4096).map(|i| (i * 7 % 251) as u8).collect();
    AuthState::from_secret(&secret, Role::Initiator).unwrap()
}

#[test]
fn keys_are_held_then_committed_with_the_auth_state_and_read_back_elsewhere() {
    let dir = dir("keys");
    let mut store = Store::open(&dir).unwrap();
    assert!(store.init_auth(&state()).unwrap());
    assert!(
        !store.init_auth(&state()).unwrap(),
        "a journal is never restarted"
    );
    let key = Bits::from_word_fn(1_000, || 0x0123_4567_89AB_CDEF);
    store.hold(7, &key).unwrap();
    assert_eq!(store.held().unwrap(), vec![7]);
    assert_eq!(store.held_key(7).unwrap(), Some(key.clone()));
    assert_eq!(store.committed_among(&[7]).unwrap(), Vec::<u64>::new());
    // Commit: the delivered part, with the state refilled from the key's head.
    let delivered = key.range(512, 1_000);
    let mut auth = Authenticator::from_state(store.auth_state().unwrap().unwrap());
    let _ = auth.seal().unwrap();
    auth.refill(&[9; 64], Role::Initiator);
    store.commit(7, &delivered, auth.state()).unwrap();
    assert!(store.held().unwrap().is_empty());
    assert_eq!(store.committed_among(&[6, 7]).unwrap(), vec![7]);
    assert_eq!(store.last_block().unwrap(), Some(7));
    // Another connection (another process would do the same) sees the key and the pads.
    let reader = Store::open_read_only(&dir).unwrap();
    let keys = reader.keys().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0].block, keys[0].bits), (7, 488));
    assert!(keys[0].committed);
    assert_eq!(keys[0].sha256, key_sha256(&delivered));
    assert_eq!(reader.key(7).unwrap(), Some((delivered, true)));
    let read_back = reader.auth_state().unwrap().unwrap();
    assert_eq!(read_back.next_seal_pad(), 1);
    assert_eq!(read_back.seals_left(), auth.state().seals_left());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_journal_refuses_to_move_a_pad_back() {
    let dir = dir("pads");
    let store = Store::open(&dir).unwrap();
    store.init_auth(&state()).unwrap();
    let mut journal = store.journal();
    let mut auth = Authenticator::from_state(state());
    let _ = auth.seal().unwrap();
    journal.save(auth.state()).unwrap();
    // The state from before that seal again (a restart from a stale copy): refused.
    let error = journal.save(&state()).unwrap_err();
    let failure = error
        .0
        .downcast_ref::<StoreFailure>()
        .expect("a store failure");
    assert!(
        matches!(
            failure,
            StoreFailure::PadsBackwards {
                seal: 0,
                stored_seal: 1,
                ..
            }
        ),
        "{failure}"
    );
    assert_eq!(store.auth_state().unwrap().unwrap().next_seal_pad(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reading_a_node_that_never_ran_says_so() {
    let dir = dir("missing");
    let error = Store::open_read_only(&dir).unwrap_err();
    assert!(error.to_string().contains("no node state here"), "{error}");
}

#[test]
fn a_meta_value_is_claimed_once_and_survives_reopening() {
    let dir = dir("claim");
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.claim_meta("recording.ab", "first").unwrap(), None);
    assert_eq!(
        store
            .claim_meta("recording.ab", "second")
            .unwrap()
            .as_deref(),
        Some("first")
    );
    drop(store);
    let reopened = Store::open(&dir).unwrap();
    assert_eq!(
        reopened
            .claim_meta("recording.ab", "third")
            .unwrap()
            .as_deref(),
        Some("first")
    );
    assert_eq!(
        reopened.meta("recording.ab").unwrap().as_deref(),
        Some("first")
    );
    assert_eq!(reopened.claim_meta("recording.cd", "other").unwrap(), None);
}
