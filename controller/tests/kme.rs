//! Both KMEs of a running two-node link (real node processes, `examples/two-node` on free ports)
//! driven by curl, as the README shows, and by the project's own client: a key fetched by the
//! master SAE from Alice's KME is fetched by ID by the slave SAE from Bob's, once; the error
//! cases ETSI GS QKD 014 names get its status codes; a caller without a certificate of the CA
//! never gets an answer; and the pool drains to nothing on both sides with no key given twice.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::*;
use qkd_kme::client::{Client, ClientError, FetchedKey};
use qkd_kme::tls::Identity;
use serde_json::Value;

/// An answer of a KME to curl: the HTTP status (0 when none came) and the JSON body.
type Answer = (u16, Value);

/// Which node's KME.
#[derive(Debug, Clone, Copy)]
enum At {
    Alice,
    Bob,
}

impl Link {
    /// The `host:port` a node's KME serves on.
    fn kme_address(&self, at: At) -> String {
        let port = self.kme[match at {
            At::Alice => 0,
            At::Bob => 1,
        }];
        format!("127.0.0.1:{port}")
    }

    fn kme_url(&self, at: At, path: &str) -> String {
        format!("https://{}/api/v1/keys/{path}", self.kme_address(at))
    }

    /// curl as SAE `sae` (its certificate from `pki/`, or none), with `extra` arguments.
    fn curl_as(&self, credentials: Option<(&str, &str)>, url: &str, extra: &[&str]) -> Answer {
        let mut command = Command::new("curl");
        command
            .current_dir(&self.dir)
            .args(["-sS", "--max-time", "30", "--cacert", "pki/ca.pem"])
            .args(["-w", "\n%{http_code}"]);
        if let Some((cert, key)) = credentials {
            command.args(["--cert", cert, "--key", key]);
        }
        let out = command.args(extra).arg(url).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code: u16 = code.trim().parse().unwrap_or(0);
        let body = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
        };
        (code, body)
    }

    fn curl(&self, sae: &str, at: At, path: &str) -> Answer {
        let (cert, key) = (format!("pki/{sae}.pem"), format!("pki/{sae}.key"));
        self.curl_as(Some((&cert, &key)), &self.kme_url(at, path), &[])
    }

    fn curl_post(&self, sae: &str, at: At, path: &str, body: &str) -> Answer {
        let (cert, key) = (format!("pki/{sae}.pem"), format!("pki/{sae}.key"));
        let headers = ["-H", "Content-Type: application/json", "-d", body];
        self.curl_as(Some((&cert, &key)), &self.kme_url(at, path), &headers)
    }

    /// `stored_key_count` of a KME's status for the link's one SAE pair.
    fn stored(&self, at: At) -> u64 {
        let (sae, slave) = match at {
            At::Alice => ("sae-a", "sae-b"),
            At::Bob => ("sae-b", "sae-a"),
        };
        let (code, status) = self.curl(sae, at, &format!("{slave}/status"));
        assert_eq!(code, 200, "{status}");
        status["stored_key_count"].as_u64().unwrap()
    }

    /// Stops the bench (no more key comes) and waits until both KMEs count the same keys.
    fn freeze_pool(&mut self) -> u64 {
        self.stop("bench");
        let mut stored = 0;
        self.wait_until("both KMEs to count the same keys", || {
            stored = self.stored(At::Alice);
            stored > 0 && stored == self.stored(At::Bob)
        });
        stored
    }

    fn identity(&self, name: &str) -> Identity {
        Identity::from_pki(&self.dir.join("pki"), name).unwrap()
    }

    /// Takes every key the pool holds, in large keys then small: the slave gets each key the
    /// master got, with the same bits, and no bits come twice (`seen` holds those served so
    /// far). Ends with fewer than 16 keys of 256 bits left, the same on both sides.
    fn drain(&self, seen: &mut BTreeSet<Vec<u8>>) {
        let (alice, bob) = (self.kme_address(At::Alice), self.kme_address(At::Bob));
        let (sae_a, sae_b) = (self.identity("sae-a"), self.identity("sae-b"));
        runtime().block_on(async {
            let mut master = Client::connect(&alice, &sae_a).await.unwrap();
            let mut slave = Client::connect(&bob, &sae_b).await.unwrap();
            for size in [8192, 1024, 256] {
                loop {
                    let keys = match master.enc_keys("sae-b", 16, size).await {
                        Ok(keys) => keys,
                        Err(ClientError::Refused { status: 400, body }) => {
                            assert_eq!(
                                body["message"],
                                "not enough key material in the KME for the request"
                            );
                            break;
                        }
                        Err(e) => panic!("{e}"),
                    };
                    let fetched = slave.dec_keys("sae-a", &ids(&keys)).await.unwrap();
                    assert_eq!(keys, fetched);
                    for key in keys {
                        assert!(seen.insert(key.bytes.to_vec()), "bits served twice");
                    }
                }
            }
        });
        assert!(self.stored(At::Alice) < 16);
        assert_eq!(self.stored(At::Alice), self.stored(At::Bob));
    }

    /// The keys cut for SAEs in a node's store: key ID → state.
    fn kme_keys(&self, role: &str) -> BTreeMap<String, String> {
        let config = format!("{role}.toml");
        let listed = self.json(&["keys", "list", "--config", &config, "--json"]);
        listed["kme_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["key_id"].as_str().unwrap().to_owned(),
                    k["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn ids(keys: &[FetchedKey]) -> Vec<String> {
    keys.iter().map(|k| k.key_id.clone()).collect()
}

/// The refusals ETSI 014 names, with its codes, and callers without a certificate of the CA,
/// which get no answer at all.
fn standard_refusals(link: &Link) {
    let bad = |sae, at, path: &str, body: Option<&str>| {
        let (code, answer) = match body {
            Some(body) => link.curl_post(sae, at, path, body),
            None => link.curl(sae, at, path),
        };
        assert!(
            answer["message"].is_string() || code == 401,
            "{path}: {answer}"
        );
        code
    };
    assert_eq!(
        bad("sae-a", At::Alice, "sae-b/enc_keys?size=100", None),
        400
    );
    assert_eq!(
        bad("sae-a", At::Alice, "sae-b/enc_keys?number=129", None),
        400
    );
    let mandatory = r#"{"number":1,"extension_mandatory":[{"route_type":"direct"}]}"#;
    assert_eq!(
        bad("sae-a", At::Alice, "sae-b/enc_keys", Some(mandatory)),
        400
    );
    let unknown = r#"{"number":1,"colour":"blue"}"#;
    assert_eq!(
        bad("sae-a", At::Alice, "sae-b/enc_keys", Some(unknown)),
        400
    );
    let nobody = "sae-a/dec_keys?key_ID=3e1d2a6c-5b7f-4c1e-9a2b-8d0f6e4c2a1b";
    assert_eq!(bad("sae-b", At::Bob, nobody, None), 400);
    assert_eq!(bad("sae-a", At::Alice, "sae-x/enc_keys", None), 400);
    // An SAE of the other KME, with a valid certificate, is not served here.
    assert_eq!(bad("sae-b", At::Alice, "sae-a/enc_keys", None), 401);
    assert_eq!(bad("sae-a", At::Bob, "sae-a/status", None), 401);
    // No certificate, or one of another CA: no answer at all.
    let other = link.dir.join("other");
    let made = qkd()
        .args(["pki", "init", "--dir", "other", "--sae", "sae-a"])
        .current_dir(&link.dir)
        .output()
        .unwrap();
    assert!(made.status.success());
    assert!(other.join("sae-a.pem").exists());
    let url = link.kme_url(At::Alice, "sae-b/status");
    assert_eq!(link.curl_as(None, &url, &[]).0, 0);
    let foreign = Some(("other/sae-a.pem", "other/sae-a.key"));
    assert_eq!(link.curl_as(foreign, &url, &[]).0, 0);
}

#[test]
fn curl_and_the_own_client_get_the_same_keys_from_both_kmes_once() {
    let _one = serial();
    let mut link = Link::new("kme", 21);
    link.start_both(2);
    let stored = link.freeze_pool();

    // The README's commands: a key for sae-b as sae-a from Alice's KME, the same by ID as sae-b
    // from Bob's, once.
    let (code, container) = link.curl("sae-a", At::Alice, "sae-b/enc_keys");
    assert_eq!(code, 200, "{container}");
    let key = &container["keys"][0];
    let id = key["key_ID"].as_str().unwrap();
    assert_eq!(key["key"].as_str().unwrap().len(), 44, "256 bits in base64");
    let by_id = format!("sae-a/dec_keys?key_ID={id}");
    let (code, fetched) = link.curl("sae-b", At::Bob, &by_id);
    assert_eq!(code, 200, "{fetched}");
    assert_eq!(fetched["keys"][0], *key);
    let (code, again) = link.curl("sae-b", At::Bob, &by_id);
    assert_eq!(code, 400, "{again}");
    assert!(again["message"].is_string());
    assert_eq!(link.stored(At::Alice), stored - 1);

    // The own client, POST forms: three keys of 512 bits.
    let rt = runtime();
    let (sae_a, sae_b) = (link.identity("sae-a"), link.identity("sae-b"));
    let (alice, bob) = (link.kme_address(At::Alice), link.kme_address(At::Bob));
    let (keys, fetched) = rt.block_on(async {
        let mut master = Client::connect(&alice, &sae_a).await.unwrap();
        let mut slave = Client::connect(&bob, &sae_b).await.unwrap();
        let keys = master.enc_keys("sae-b", 3, 512).await.unwrap();
        let fetched = slave.dec_keys("sae-a", &ids(&keys)).await.unwrap();
        (keys, fetched)
    });
    assert_eq!(keys, fetched);
    assert!(keys.iter().all(|k| k.bytes.len() == 64));

    standard_refusals(&link);

    // `qkd kme status` reads the same count from the store.
    let status = link.json(&["kme", "status", "--config", "bob.toml", "--json"]);
    let pair = &status["statuses"][0];
    assert_eq!(pair["master_SAE_ID"], "sae-b");
    assert_eq!(pair["slave_SAE_ID"], "sae-a");
    assert_eq!(
        pair["stored_key_count"].as_u64(),
        Some(link.stored(At::Bob))
    );

    // Drain: every key the master gets, the slave gets once with the same bits, and no bits
    // come twice.
    let mut seen: BTreeSet<Vec<u8>> = keys.iter().map(|k| k.bytes.to_vec()).collect();
    link.drain(&mut seen);
    // Both stores say every key went out, to the SAEs that asked.
    for role in ["alice", "bob"] {
        let states = link.kme_keys(role);
        assert_eq!(states.len(), seen.len() + 1, "{role}");
        assert!(
            states.values().all(|s| s == "delivered"),
            "{role}: {states:?}"
        );
    }
}

/// What a burst of SAE requests has got so far, shared with the test's thread.
#[derive(Debug, Default)]
struct Burst {
    /// Keys the master got, in order.
    master: Vec<FetchedKey>,
    /// Of those, the ones the slave has got too (by ID).
    slave: BTreeMap<String, FetchedKey>,
    /// Keys the master got whose slave's answer died with Bob (handed out, never received).
    lost: Vec<String>,
    /// Requests that failed (a node was down).
    failures: u64,
}

/// Pairs of requests, master then slave, as fast as they go until `stop`, riding out a KME that
/// goes down: a key the master got is asked for again until the slave gets it.
fn burst(
    alice: &str,
    bob: &str,
    identities: &(Identity, Identity),
    state: &std::sync::Mutex<Burst>,
    stop: &std::sync::atomic::AtomicBool,
) {
    let (sae_a, sae_b) = identities;
    runtime().block_on(async {
        let (mut master, mut slave): (Option<Client>, Option<Client>) = (None, None);
        let mut pending: Vec<String> = Vec::new();
        let mut retrying = false;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) || !pending.is_empty() {
            if master.is_none() {
                master = Client::connect(alice, sae_a).await.ok();
            }
            if slave.is_none() {
                slave = Client::connect(bob, sae_b).await.ok();
            }
            let (Some(m), Some(s)) = (&mut master, &mut slave) else {
                state.lock().unwrap().failures += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            };
            if !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match m.enc_keys("sae-b", 2, 256).await {
                    Ok(keys) => {
                        pending.extend(ids(&keys));
                        state.lock().unwrap().master.extend(keys);
                    }
                    // The KMEs are reconnecting.
                    Err(ClientError::Refused { status: 503, .. }) => {
                        state.lock().unwrap().failures += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    Err(ClientError::Refused { status, body }) => panic!("{status}: {body}"),
                    Err(_) => {
                        state.lock().unwrap().failures += 1;
                        master = None;
                        continue;
                    }
                }
            }
            if pending.is_empty() {
                continue;
            }
            match s.dec_keys("sae-a", &pending).await {
                Ok(keys) => {
                    pending.clear();
                    retrying = false;
                    let mut state = state.lock().unwrap();
                    for key in keys {
                        let id = key.key_id.clone();
                        assert!(state.slave.insert(id, key).is_none(), "given twice");
                    }
                }
                // Bob died after handing some out, before his answer left: those are gone.
                Err(ClientError::Refused { status: 400, .. }) if retrying => {
                    retrying = false;
                    for id in std::mem::take(&mut pending) {
                        match s.dec_keys("sae-a", std::slice::from_ref(&id)).await {
                            Ok(mut key) => {
                                let key = key.remove(0);
                                state.lock().unwrap().slave.insert(id, key);
                            }
                            Err(ClientError::Refused { status: 400, .. }) => {
                                state.lock().unwrap().lost.push(id);
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                Err(ClientError::Refused { status, body }) => panic!("{status}: {body}"),
                Err(_) => {
                    state.lock().unwrap().failures += 1;
                    retrying = true;
                    slave = None;
                }
            }
        }
    });
}

/// Request loops at once in the crash test.
const BURSTS: usize = 2;

#[test]
fn kill_9_of_either_node_during_a_burst_of_requests_gives_no_key_twice() {
    let _one = serial();
    let mut link = Link::new("kme-crash", 22);
    link.start_both(2);
    // The link goes on making key through the burst (a node restarts only beside its bench).
    let state = std::sync::Arc::new(std::sync::Mutex::new(Burst::default()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Two SAE pairs at once: their orders meet at Alice's KME and go as one step.
    let requests: Vec<_> = (0..BURSTS)
        .map(|_| {
            let (alice, bob) = (link.kme_address(At::Alice), link.kme_address(At::Bob));
            let identities = (link.identity("sae-a"), link.identity("sae-b"));
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || burst(&alice, &bob, &identities, &state, &stop))
        })
        .collect();
    let served = || state.lock().unwrap().slave.len();
    // Each node in turn dies in the middle of the burst, and comes back.
    for role in ["alice", "bob", "alice"] {
        let before = served();
        link.wait_until("the burst to go on", || served() >= before + 40);
        link.kill(role);
        link.start(role);
    }
    let before = served();
    link.wait_until("the burst to resume", || served() >= before + 40);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for burst in requests {
        burst.join().unwrap();
    }
    let burst = std::mem::take(&mut *state.lock().unwrap());
    eprintln!(
        "burst: {} keys to the master, {} to the slave, {} lost with Bob's answer, {} failed requests",
        burst.master.len(),
        burst.slave.len(),
        burst.lost.len(),
        burst.failures
    );
    assert!(burst.failures > 0, "no request met a dead node");

    // Every key the master got, the slave got once, with the same bits; no bits twice.
    let master: BTreeMap<_, _> = burst
        .master
        .iter()
        .map(|k| (k.key_id.clone(), k.clone()))
        .collect();
    assert_eq!(master.len(), burst.master.len(), "an ID served twice");
    assert!(
        burst.lost.len() <= 2 * BURSTS,
        "more than the answers in flight: {:?}",
        burst.lost
    );
    let mut received = burst.slave.clone();
    for id in &burst.lost {
        received.insert(id.clone(), master[id].clone());
    }
    assert_eq!(master, received);
    let bits: BTreeSet<_> = burst.master.iter().map(|k| k.bytes.to_vec()).collect();
    assert_eq!(bits.len(), burst.master.len(), "bits served twice");

    // A key cut for an answer that vanished with Alice is one of the last request's (two keys)
    // per burst and kill of hers; no other key is left behind.
    link.freeze_pool();
    for role in ["alice", "bob"] {
        let behind: Vec<_> = link
            .kme_keys(role)
            .into_iter()
            .filter(|(id, state)| !master.contains_key(id) && state != "discarded")
            .collect();
        assert!(behind.len() <= 4 * BURSTS, "{role}: {behind:?}");
    }
    // What is left drains to nothing on both sides, none of it served before.
    let mut seen = bits;
    link.drain(&mut seen);
}
