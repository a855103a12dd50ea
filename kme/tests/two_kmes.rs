//! Two KMEs over real TLS on loopback, each over its own store holding the same committed keys:
//! keys fetched by a master SAE from one are fetched by ID by the slave SAE from the other, once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use qkd_kme::client::{Client, ClientError, FetchedKey};
use qkd_kme::link::Side;
use qkd_kme::tls::Identity;
use qkd_kme::{Kme, KmeSettings};
use qkd_postprocess::auth::{AuthState, Role};
use qkd_postprocess::bits::Bits;
use qkd_runtime::keys::KeySink;
use qkd_store::Store;

fn store(dir: &Path, role: Role) -> Store {
    let mut store = Store::open(dir).unwrap();
    let auth = AuthState::from_secret(&[7u8; 64], role).unwrap();
    store.init_auth(&auth).unwrap();
    for block in 0..3u64 {
        let key = Bits::from_word_fn(4000, {
            let mut x = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(block + 1);
            move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            }
        });
        store.commit(block, &key, &auth).unwrap();
    }
    store
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn settings(pki: &Path, kmes: [&str; 2], saes: [&str; 2], link: &str) -> KmeSettings {
    KmeSettings {
        max_key_size: 4096,
        max_key_per_request: 16,
        max_key_count: 1000,
        ..KmeSettings::pair(pki, kmes, saes, link)
    }
}

fn sae(pki: &Path, name: &str) -> Identity {
    Identity::from_pki(pki, name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_and_slave_fetch_the_same_keys_once() {
    let root = std::env::temp_dir().join(format!("qkd-two-kmes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let pki = root.join("pki");
    let names: Vec<String> = ["alice", "bob", "sae-a", "sae-b", "mallory"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    qkd_kme::pki::init(&pki, &names).unwrap();
    let link = format!("127.0.0.1:{}", free_port());
    let alice = Kme::start(
        &settings(&pki, ["alice", "bob"], ["sae-a", "sae-b"], &link),
        Side::Sequencer,
        store(&root.join("a"), Role::Responder),
    )
    .await
    .unwrap();
    let bob = Kme::start(
        &settings(&pki, ["bob", "alice"], ["sae-b", "sae-a"], &link),
        Side::Follower,
        store(&root.join("b"), Role::Initiator),
    )
    .await
    .unwrap();
    for _ in 0..200 {
        if alice.link.connected() && bob.link.connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(alice.link.connected() && bob.link.connected());

    let mut sae_a = Client::connect(&alice.address.to_string(), &sae(&pki, "sae-a"))
        .await
        .unwrap();
    let mut sae_b = Client::connect(&bob.address.to_string(), &sae(&pki, "sae-b"))
        .await
        .unwrap();
    let status = sae_a.status("sae-b").await.unwrap();
    assert_eq!(
        (status.source_KME_ID.as_str(), status.target_KME_ID.as_str()),
        ("alice", "bob")
    );
    assert_eq!(status.stored_key_count, 3 * 4000 / 256);

    // Alice's SAE is master; then Bob's, with keys spanning blocks.
    let keys = sae_a.enc_keys("sae-b", 3, 512).await.unwrap();
    let ids: Vec<String> = keys.iter().map(|k| k.key_id.clone()).collect();
    let fetched = sae_b.dec_keys("sae-a", &ids).await.unwrap();
    assert_eq!(keys, fetched);
    assert_eq!(keys[0].bytes.len(), 64);
    assert_ne!(keys[0].bytes, keys[1].bytes);
    let again = sae_b.dec_keys("sae-a", &ids[..1]).await.unwrap_err();
    assert!(
        matches!(again, ClientError::Refused { status: 400, .. }),
        "{again}"
    );

    let keys_b = sae_b.enc_keys("sae-a", 2, 4000).await.unwrap();
    let ids_b: Vec<String> = keys_b.iter().map(|k| k.key_id.clone()).collect();
    assert_eq!(sae_a.dec_keys("sae-b", &ids_b).await.unwrap(), keys_b);
    assert!(
        keys_b
            .iter()
            .all(|k| keys.iter().all(|a| a.bytes != k.bytes))
    );

    // What is left is the same on both sides; more than that is refused.
    let left_a = sae_a.status("sae-b").await.unwrap().stored_key_count;
    let left_b = sae_b.status("sae-a").await.unwrap().stored_key_count;
    assert_eq!(left_a, left_b);
    assert_eq!(left_a, (12_000 - 3 * 512 - 2 * 4000) / 256);
    let too_much = sae_a.enc_keys("sae-b", 2, 4096).await.unwrap_err();
    assert!(
        matches!(too_much, ClientError::Refused { status: 400, .. }),
        "{too_much}"
    );

    standard_refusals(&mut sae_a).await;

    // A key for sae-b asked for by another SAE of the CA: 401.
    let keys = sae_a.enc_keys("sae-b", 1, 256).await.unwrap();
    let mut mallory = Client::connect(&bob.address.to_string(), &sae(&pki, "mallory"))
        .await
        .unwrap();
    let (status, _) = mallory
        .call(
            "GET",
            &format!("/api/v1/keys/sae-a/dec_keys?key_ID={}", keys[0].key_id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 401);
    let got = sae_b
        .call(
            "GET",
            &format!("/api/v1/keys/sae-a/dec_keys?key_ID={}", keys[0].key_id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(got.0, 200);

    last_keys_to_concurrent_orders(&alice.address.to_string(), &pki, &mut sae_b).await;
    drop((alice, bob));
    std::fs::remove_dir_all(&root).unwrap();
}

/// Nine SAE connections at once for the last eight keys: their orders are planned one after
/// the other in as few steps as they queued in; eight get keys, one is refused.
async fn last_keys_to_concurrent_orders(address: &str, pki: &Path, sae_b: &mut Client) {
    let mut asks = tokio::task::JoinSet::new();
    for _ in 0..9 {
        let (address, identity) = (address.to_owned(), sae(pki, "sae-a"));
        asks.spawn(async move {
            let mut client = Client::connect(&address, &identity).await.unwrap();
            client.enc_keys("sae-b", 1, 256).await
        });
    }
    let (mut keys, mut refused) = (Vec::new(), 0);
    while let Some(answer) = asks.join_next().await {
        match answer.unwrap() {
            Ok(mut one) => keys.push(one.remove(0)),
            Err(ClientError::Refused { status: 400, .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((keys.len(), refused), (8, 1));
    let ids: Vec<String> = keys.iter().map(|k| k.key_id.clone()).collect();
    let fetched = sae_b.dec_keys("sae-a", &ids).await.unwrap();
    let by_id = |keys: &[FetchedKey]| {
        keys.iter()
            .map(|k| (k.key_id.clone(), k.bytes.to_vec()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(by_id(&keys), by_id(&fetched));
    let distinct: std::collections::BTreeSet<_> = keys.iter().map(|k| k.bytes.to_vec()).collect();
    assert_eq!(distinct.len(), 8);
}

/// The refusals ETSI 014 names, as an SAE sees them.
async fn standard_refusals(sae_a: &mut Client) {
    let (status, body) = sae_a
        .call(
            "POST",
            "/api/v1/keys/sae-b/enc_keys",
            Some(&serde_json::json!({"size": 100})),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("size shall be a multiple of 8"))
    );
    let (status, _) = sae_a
        .call(
            "POST",
            "/api/v1/keys/sae-b/enc_keys",
            Some(&serde_json::json!({"colour": 1})),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    let (status, _) = sae_a
        .call("GET", "/api/v1/keys/sae-b/enc_keys?number=17", None)
        .await
        .unwrap();
    assert_eq!(status, 400);
}
