//! Two real node processes and a bench process on loopback, as `examples/two-node` runs them:
//! keys that match by ID and hash in both stores; `kill -9` of either node at any moment and a
//! restart leave both stores equal and never move a pad back; a tampered, dropped or replayed
//! message on the wire costs at most a block; the same bench seed gives other hash seeds.
//!
//! The tests share the machine's two cores with three processes each, so they run one at a time
//! and wait on what the nodes report (with bounds far beyond what a loaded machine needs), never
//! on fixed sleeps.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qkd_postprocess::bits::Bits;
use qkd_postprocess::sift::Basis;
use qkd_runtime::channel::{WireBody, decode_frame, encode_frame};
use qkd_runtime::messages::Message;

mod common;

use common::*;

#[test]
fn two_nodes_keep_the_same_keys_by_id_and_hash() {
    let _one = serial();
    let mut link = Link::new("keys", 1);
    link.start_both(4);
    let status = link.status("bob");
    assert_eq!(status["role"], "bob");
    assert_eq!(status["state"], "generating");
    assert_eq!(status["peer_connected"], true);
    // The same emulated link in one process: both QBERs are corrected errors over reconciled
    // bits, so they agree within the binomial spread of the two counts.
    let qber = status["qber_z"].as_f64().unwrap();
    let node_bits = status["blocks"].as_f64().unwrap() * 1e6; // block_bits of the example
    let one = qkd()
        .args([
            "link",
            "--preset",
            "snspd",
            "--distance-km",
            "50",
            "--seconds",
            "2",
        ])
        .args(["--block-bits", "1000000", "--json"])
        .output()
        .unwrap();
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let one: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    let link_qber = one["qber_z"].as_f64().unwrap();
    let link_bits: f64 = one["block_details"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["disclosed_bits"].as_u64() > Some(0))
        .map(|b| b["key_bits"].as_f64().unwrap())
        .sum();
    let sigma = (link_qber * (1.0 - link_qber) * (1.0 / node_bits + 1.0 / link_bits)).sqrt();
    assert!(
        (qber - link_qber).abs() < 5.0 * sigma,
        "QBER {qber} in two processes, {link_qber} in one (σ {sigma})"
    );
    for field in [
        "blocks",
        "aborted_blocks",
        "secret_bits",
        "qber_x",
        "secret_key_rate_bps",
    ] {
        assert!(status.get(field).is_some(), "status lacks {field}");
    }
    let (alice, bob) = link.finish();
    assert!(bob.len() >= 4, "{bob:?}");
    assert_eq!(alice, bob, "the stores differ");
    // Stopped nodes still answer from their stores.
    let stopped = link.status("alice");
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["keys_stored"].as_u64().unwrap(), alice.len() as u64);
}

#[test]
fn kill_9_of_either_node_at_any_moment_leaves_both_stores_equal_and_no_pad_reused() {
    let _one = serial();
    let mut link = Link::new("kill", 2);
    // The proxy only watches: every seal either node sends, to find a pad used twice.
    let proxy = Proxy::start(link.peer_port, |_, frame| vec![frame]);
    link.route_bob_through(proxy.port);
    link.start("alice");
    link.start("bob");
    let mut used: BTreeMap<&str, u64> = BTreeMap::new();
    let mut committed = std::collections::BTreeSet::new();
    // Kill each node in turn while it is working (blocks take most of the time, so most kills
    // land mid-block), restart it, and check that its pads only ever moved forward.
    for (round, victim) in ["bob", "alice", "bob", "alice", "bob"]
        .into_iter()
        .enumerate()
    {
        let target = link.keys_stored("bob") + 2;
        link.wait_for_keys("bob", target);
        // A moment into the next block, different every round.
        std::thread::sleep(Duration::from_millis(37 * (round as u64 + 1)));
        for role in ["alice", "bob"] {
            let now = link.pad_bits_used(role);
            assert!(
                now >= used.get(role).copied().unwrap_or(0),
                "{role}'s pads moved back"
            );
            used.insert(role, now);
        }
        committed.extend(link.keys("bob"));
        link.kill(victim);
        let after_crash = link.pad_bits_used(victim);
        assert!(
            after_crash >= used[victim],
            "{victim}'s journal lost pad uses in the crash"
        );
        link.start(victim);
    }
    let target = link.keys_stored("bob") + 2;
    link.wait_for_keys("bob", target);
    let (alice, bob) = link.finish();
    assert_eq!(alice, bob, "the stores differ after the crashes");
    // Every key committed before a crash is still there, unchanged.
    for key in &committed {
        assert!(bob.contains(key), "{key:?} lost or changed in a crash");
    }
    for role in ["alice", "bob"] {
        assert!(link.pad_bits_used(role) >= used[role]);
    }
    // On the wire: no pad of either node sealed two different transcripts.
    let seals = proxy.seals.lock().unwrap();
    let mut tags: BTreeMap<(bool, u64), &Vec<u8>> = BTreeMap::new();
    for (from_bob, pad, tag) in seals.iter() {
        if let Some(earlier) = tags.insert((*from_bob, *pad), tag) {
            assert_eq!(earlier, tag, "pad {pad} (from Bob: {from_bob}) used twice");
        }
    }
    // Both seal the messages of every committed key: the proxy saw them all.
    assert!(
        seals.len() >= 2 * bob.len(),
        "{} seals for {} keys",
        seals.len(),
        bob.len()
    );
}

/// A proxy between Bob and Alice that forwards whole frames, lets `attack` change Bob's n-th
/// frame (returning the frames to send instead), and records Alice's `Amplify` seeds and the
/// seals both send.
struct Proxy {
    port: u16,
    seeds: Arc<Mutex<Vec<Bits>>>,
    seals: Arc<Mutex<Vec<SealSeen>>>,
}

/// A seal seen on the wire: sent by Bob (`true`) or Alice, its pad and its tag.
type SealSeen = (bool, u64, Vec<u8>);

/// Records `frame`'s seal, if it is one.
fn record_seal(seals: &Mutex<Vec<SealSeen>>, from_bob: bool, frame: &[u8]) {
    if let Ok(WireBody::Seal(seal)) = decode_frame::<Message>(frame).map(|f| f.body) {
        seals
            .lock()
            .unwrap()
            .push((from_bob, seal.pad, seal.tag.to_vec()));
    }
}

type Attack = fn(u64, Vec<u8>) -> Vec<Vec<u8>>;

impl Proxy {
    fn start(alice_port: u16, attack: Attack) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seeds = Arc::new(Mutex::new(Vec::new()));
        let seals = Arc::new(Mutex::new(Vec::new()));
        let (recorded, sealed) = (Arc::clone(&seeds), Arc::clone(&seals));
        std::thread::spawn(move || {
            // Bob counts frames across his connections: the attack hits each index once.
            let sent = Arc::new(Mutex::new(0u64));
            for bob in listener.incoming() {
                let Ok(bob) = bob else { return };
                let Ok(alice) = std::net::TcpStream::connect(("127.0.0.1", alice_port)) else {
                    continue;
                };
                // Without nodelay, Nagle's algorithm and delayed acknowledgements hold every
                // small frame some 40 ms.
                for stream in [&bob, &alice] {
                    stream.set_nodelay(true).unwrap();
                }
                let (bob_in, alice_out) = (bob.try_clone().unwrap(), alice.try_clone().unwrap());
                let sent = Arc::clone(&sent);
                let bob_seals = Arc::clone(&sealed);
                std::thread::spawn(move || {
                    relay(bob_in, alice_out, |frame| {
                        record_seal(&bob_seals, true, &frame);
                        let mut n = sent.lock().unwrap();
                        *n += 1;
                        attack(*n - 1, frame)
                    });
                });
                let recorded = Arc::clone(&recorded);
                let alice_seals = Arc::clone(&sealed);
                std::thread::spawn(move || {
                    relay(alice, bob, |frame| {
                        record_seal(&alice_seals, false, &frame);
                        if let Ok(WireBody::Message(Message::Amplify { seed, .. })) =
                            decode_frame::<Message>(&frame).map(|f| f.body)
                        {
                            recorded.lock().unwrap().extend(seed.to_bits());
                        }
                        vec![frame]
                    });
                });
            }
        });
        Proxy { port, seeds, seals }
    }
}

/// Copies length-prefixed frames from `from` to `to` through `edit` until either side closes.
fn relay(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    mut edit: impl FnMut(Vec<u8>) -> Vec<Vec<u8>>,
) {
    use std::io::{Read, Write};
    loop {
        let mut len = [0u8; 4];
        if from.read_exact(&mut len).is_err() {
            break;
        }
        let mut frame = vec![0u8; u32::from_le_bytes(len) as usize];
        if from.read_exact(&mut frame).is_err() {
            break;
        }
        let mut out = Vec::new();
        for edited in edit(frame) {
            out.extend_from_slice(&(edited.len() as u32).to_le_bytes());
            out.extend_from_slice(&edited);
        }
        if to.write_all(&out).is_err() {
            return;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// Bob's frames 300, 1500 and 2700 altered, dropped and replayed: a block of this link takes
/// some 400 of Bob's frames, so each attack falls in another block.
fn three_attacks(n: u64, frame: Vec<u8>) -> Vec<Vec<u8>> {
    match n {
        300 => {
            let mut decoded = decode_frame::<Message>(&frame).unwrap();
            if let WireBody::Message(Message::Announce(a)) = &mut decoded.body {
                for b in a.basis.iter_mut().take(50) {
                    *b = match b {
                        Basis::Z => Basis::X,
                        Basis::X => Basis::Z,
                    };
                }
                return vec![encode_frame(&decoded).unwrap()];
            }
            let mut frame = frame;
            let middle = frame.len() / 2;
            frame[middle] ^= 1;
            vec![frame]
        }
        1500 => vec![],
        2700 => vec![frame.clone(), frame],
        _ => vec![frame],
    }
}

#[test]
fn tampered_dropped_or_replayed_messages_cost_at_most_a_block_each() {
    let _one = serial();
    let mut link = Link::new("tamper", 3);
    let proxy = Proxy::start(link.peer_port, three_attacks);
    link.route_bob_through(proxy.port);
    link.start("alice");
    link.start("bob");
    // Well past the attacks.
    link.wait_for_keys("bob", 8);
    let status = link.status("bob");
    // The altered frame may end its block cleanly (verification fails, nothing is sealed);
    // the dropped and the replayed one need the channel started over. Which message a frame
    // number hits depends on how the batches fell in real time: one between blocks (a sift
    // announcement) costs only the pool of key bits waiting for the next block, no block.
    let aborted = status["aborted_blocks"].as_u64().unwrap();
    let resyncs = status["resyncs"].as_u64().unwrap();
    assert!(aborted <= 3, "an attack cost more than a block: {status}");
    assert!(resyncs >= 2, "an attack went unnoticed: {status}");
    assert!(aborted + resyncs >= 3, "an attack went unnoticed: {status}");
    let (alice, bob) = link.finish();
    assert_eq!(alice, bob);
}

#[test]
fn the_same_bench_seed_gives_other_hash_seeds_and_keys() {
    let _one = serial();
    let mut runs = Vec::new();
    for run in 0..2 {
        let mut link = Link::new(&format!("seeds-{run}"), 9);
        let proxy = Proxy::start(link.peer_port, |_, frame| vec![frame]);
        link.route_bob_through(proxy.port);
        link.start_both(2);
        let (_, keys) = link.finish();
        let seeds = proxy.seeds.lock().unwrap().clone();
        assert!(!seeds.is_empty());
        runs.push((keys, seeds));
    }
    let (first, second) = (&runs[0], &runs[1]);
    assert_ne!(
        first.0[0].2, second.0[0].2,
        "the same key from the same seed"
    );
    let (a, b) = (&first.1[0], &second.1[0]);
    // Independent uniform seeds differ in half their bits, within 5 σ of a binomial.
    let n = a.len().min(b.len());
    let differ = a.range(0, n).hamming_distance(&b.range(0, n));
    let sigma = (n as f64 / 4.0).sqrt();
    assert!(
        (differ as f64 - n as f64 / 2.0).abs() < 5.0 * sigma,
        "{differ} of {n} seed bits differ"
    );
}

/// The bench with Bob's polarization board in the light path (the fiber at a random rotation,
/// drifting) and both nodes on a source with reference slots; Bob tracks.
fn tracked(file: &str, text: String) -> String {
    let references = |text: String| {
        text.replace(
            "basis_z_probability",
            "reference_share = 0.1\nbasis_z_probability",
        )
    };
    match file {
        "bench.toml" => text.replace(
            "[tag_streams]",
            "light_path = \"epc\"\ndrift_rate = 0.05\n\n[tag_streams]",
        ),
        "bob.toml" => references(text) + "\n[tracking]\nenabled = true\n",
        _ => references(text),
    }
}

/// Bob aligns the fiber's random rotation (holding his batches meanwhile), saves the
/// calibration in his store as it changes, and after a restart starts by checking the saved
/// one. How good the alignment is on this bench is not asserted (see the README's tracking
/// section): the mechanics of the node are.
#[test]
fn bob_aligns_saves_his_calibration_and_checks_it_after_a_restart() {
    let _one = serial();
    let mut link = Link::with("tracking", 7, tracked);
    link.start("alice");
    link.start("bob");
    let mut states = Vec::new();
    link.wait_until("Bob to align", || {
        if let Some(status) = link.try_status("bob") {
            let state = status["state"].as_str().unwrap().to_owned();
            if states.last() != Some(&state) {
                states.push(state);
            }
        }
        link.log("bob").contains("polarization tracking: Tracking")
    });
    assert!(states.iter().any(|s| s == "aligning"), "{states:?}");
    let log = link.log("bob");
    assert!(log.contains("polarization tracking: Aligning"), "{log}");
    // Alignment is held: not one key before it ends.
    let aligned_at = log.find("polarization tracking: Tracking").unwrap();
    assert!(!log[..aligned_at].contains("committed"), "{log}");
    link.stop("bob");
    let polarization = link.status("bob")["polarization"].clone();
    let setting = polarization["setting"].as_array().expect("a saved setting");
    assert_eq!(setting.len(), 4, "{polarization}");
    assert!(
        setting.iter().all(serde_json::Value::is_f64),
        "{polarization}"
    );
    // Restarted, Bob checks the saved setting before anything else.
    link.start("bob");
    link.wait_until("Bob to check his saved calibration", || {
        link.log("bob")
            .contains("polarization tracking: Calibrating")
    });
    let log = link.log("bob");
    let first = log.find("polarization tracking:").unwrap();
    assert!(
        log[first..].starts_with("polarization tracking: Calibrating"),
        "{log}"
    );
    let (alice, bob) = link.finish();
    assert_eq!(alice, bob);
}

/// Both ends of an entangled link at 25 km, each node replaying its own recording of one bench
/// run (made with `qkd tags record`, the two started at different moments), as fast as the link
/// goes.
fn bbm92_recording_node(role: &str, peer_port: u16) -> String {
    let network = match role {
        "alice" => format!("listen = \"127.0.0.1:{peer_port}\""),
        _ => format!("peer = \"127.0.0.1:{peer_port}\""),
    };
    format!(
        "role = \"{role}\"\nnode_id = \"{role}\"\nstate_dir = \"state/{role}\"\n\
         protocol = \"bbm92\"\n\n[network]\n{network}\n\n\
         [auth]\nsecret = \"secrets/shared-secret\"\n\n[blocks]\nblock_bits = 100000\n\n\
         [devices]\ntagger = {{ kind = \"ptu\", path = \"{role}.ptu\", \
         pacing = \"as-fast-as-possible\" }}\n"
    )
}

#[test]
fn two_nodes_replay_recordings_of_both_ends_once_into_matching_keys() {
    let _one = serial();
    let [peer, alice_tags, bob_tags] = free_ports();
    let mut link = Link::provisioned(Link::directory("recorded"), peer);
    std::fs::write(
        link.dir.join("bench.toml"),
        format!(
            "protocol = \"bbm92\"\npreset = \"snspd\"\ndistance_km = 25.0\nseed = 3\n\
             dir = \"bench\"\n\n[tag_streams]\nalice = \"127.0.0.1:{alice_tags}\"\n\
             bob = \"127.0.0.1:{bob_tags}\"\n"
        ),
    )
    .unwrap();
    link.spawn("bench", &["sim", "serve", "--config", "bench.toml"]);
    link.wait_until("the bench", || link.dir.join("bench/bench.json").exists());
    for (name, port) in [("record-alice", alice_tags), ("record-bob", bob_tags)] {
        let (stream, out) = (format!("127.0.0.1:{port}"), format!("{}.ptu", &name[7..]));
        link.spawn(
            name,
            &[
                "tags",
                "record",
                "--stream",
                &stream,
                "--out",
                &out,
                "--seconds",
                "1.5",
                "--json",
            ],
        );
    }
    for name in ["record-alice", "record-bob"] {
        let status = link.exited(name);
        assert!(status.success(), "{name}: {}", link.log(name));
        // Stdout's JSON, after any progress lines a slow run put on stderr.
        let log = link.log(name);
        let start = log
            .split_inclusive(['\n', '\r'])
            .scan(0, |at, line| {
                let here = *at;
                *at += line.len();
                Some((here, line))
            })
            .find(|(_, line)| line.starts_with('{'))
            .map_or(0, |(at, _)| at);
        let recorded: serde_json::Value = serde_json::from_str(&log[start..]).unwrap();
        let file = recorded["file"].as_str().unwrap();
        assert!((recorded["seconds"].as_f64().unwrap() - 1.5).abs() < 1e-3);
        // What the recorder says it wrote is what a reader finds.
        let inspected = link.json(&["tags", "inspect", file, "--json"]);
        let photons: u64 = inspected["channels"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        let sync = inspected["sync_events"].as_u64().unwrap();
        assert_eq!(Some(photons + sync), recorded["tags"].as_u64(), "{file}");
        assert!(!link.dir.join(format!("{file}.partial")).exists());
    }
    link.stop("bench");
    for role in ["alice", "bob"] {
        std::fs::write(
            link.dir.join(format!("{role}.toml")),
            bbm92_recording_node(role, peer),
        )
        .unwrap();
    }
    link.start("alice");
    link.start("bob");
    // Both stop by themselves when the recordings end.
    for role in ["bob", "alice"] {
        let status = link.exited(role);
        assert!(status.success(), "{role}: {}", link.log(role));
    }
    assert!(link.log("alice").contains("the recorded link is over"));
    let (alice, bob) = (link.keys("alice"), link.keys("bob"));
    assert_eq!(alice, bob, "the stores differ");
    // 1.5 s of pairs at 25 km sift to some 700 000 key bits: several blocks of 100 000.
    assert!(alice.len() >= 3, "{alice:?}\n{}", link.log("bob"));
    // Restarted, a node refuses to replay its recording into key again, even under another
    // name.
    std::fs::copy(link.dir.join("alice.ptu"), link.dir.join("again.ptu")).unwrap();
    let text = bbm92_recording_node("alice", peer).replace("alice.ptu", "again.ptu");
    std::fs::write(link.dir.join("alice.toml"), text).unwrap();
    let again = qkd()
        .args(["node", "--config", "alice.toml"])
        .current_dir(&link.dir)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    let error = String::from_utf8_lossy(&again.stderr);
    assert!(
        error.contains("was replayed by this node already"),
        "{error}"
    );
    assert!(error.contains("alice.ptu"), "{error}");
    assert_eq!(link.keys("alice"), alice);
}
