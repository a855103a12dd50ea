//! What the tests of real node processes share: a copy of `examples/two-node` on free loopback
//! ports with fresh secrets and certificates, its processes, and what the nodes report.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test. Each test
// binary uses some of them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One link at a time on this machine.
pub static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Longest wait for anything the nodes should do in seconds.
pub const PATIENCE: Duration = Duration::from_secs(180);

pub fn qkd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qkd"))
}

/// `N` distinct free loopback ports: all are held open until all are found, so that no two
/// are the same.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// A stored key as `keys list` shows it: ID, block and SHA-256.
pub type StoredKey = (String, u64, String);

/// A copy of `examples/two-node` with its own ports and a bench at 50 km (fewer detections than
/// the example's 25 km, so three processes keep up with real time on two cores).
pub struct Link {
    pub dir: PathBuf,
    pub peer_port: u16,
    /// The ports Alice's and Bob's KMEs serve ETSI 014 on (0 when the configs have none).
    pub kme: [u16; 2],
    pub processes: BTreeMap<&'static str, Child>,
}

impl Link {
    pub fn new(name: &str, seed: u64) -> Link {
        Link::with(name, seed, |_, text| text)
    }

    /// An empty directory for a link's files, processes and states.
    pub fn directory(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("qkd-node-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A link whose files `edit` changes (given each file's name and text) before it starts.
    pub fn with(name: &str, seed: u64, edit: fn(&str, String) -> String) -> Link {
        let dir = Link::directory(name);
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/two-node");
        let [peer, tags, kme_link, alice_kme, bob_kme] = free_ports();
        let kme = [alice_kme, bob_kme];
        for file in ["bench.toml", "alice.toml", "bob.toml"] {
            let text = std::fs::read_to_string(example.join(file))
                .unwrap()
                .replace("127.0.0.1:7301", &format!("127.0.0.1:{peer}"))
                .replace("127.0.0.1:7401", &format!("127.0.0.1:{tags}"))
                .replace("127.0.0.1:8443", &format!("127.0.0.1:{}", kme[0]))
                .replace("127.0.0.1:9443", &format!("127.0.0.1:{}", kme[1]))
                .replace("127.0.0.1:8444", &format!("127.0.0.1:{kme_link}"))
                .replace("distance_km = 25.0", "distance_km = 50.0")
                .replace("seed = 1", &format!("seed = {seed}"))
                // A dropped frame costs one timeout.
                .replace("[network]\n", "[network]\nreceive_timeout_s = 5.0\n");
            std::fs::write(dir.join(file), edit(file, text)).unwrap();
        }
        let mut link = Link::provisioned(dir, peer);
        link.kme = kme;
        link.spawn("bench", &["sim", "serve", "--config", "bench.toml"]);
        link.wait_until("the bench", || link.dir.join("bench/bench.json").exists());
        link
    }

    /// A link in `dir` with fresh secrets, nothing running yet.
    pub fn provisioned(dir: PathBuf, peer_port: u16) -> Link {
        for args in [
            &["auth", "init", "--dir", "secrets"][..],
            &[
                "pki", "init", "--dir", "pki", "--kme", "alice", "--kme", "bob", "--sae", "sae-a",
                "--sae", "sae-b",
            ],
        ] {
            let init = qkd().args(args).current_dir(&dir).output().unwrap();
            assert!(
                init.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&init.stderr)
            );
        }
        Link {
            dir,
            peer_port,
            kme: [0; 2],
            processes: BTreeMap::new(),
        }
    }

    /// Waits for `name` to exit by itself, and returns its exit status.
    pub fn exited(&mut self, name: &'static str) -> std::process::ExitStatus {
        let mut child = self.processes.remove(name).unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{name} did not end: {}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn spawn(&mut self, name: &'static str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = qkd()
            .args(args)
            .current_dir(&self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.processes.insert(name, child);
    }

    /// Starts a node from `<role>.toml`.
    pub fn start(&mut self, role: &'static str) {
        let config = format!("{role}.toml");
        self.spawn(role, &["node", "--config", &config]);
    }

    /// Starts Alice, then Bob, and waits until Bob has stored `keys` keys.
    pub fn start_both(&mut self, keys: u64) {
        self.start("alice");
        self.start("bob");
        self.wait_for_keys("bob", keys);
    }

    /// Points Bob at `port` instead of Alice (a proxy in between).
    pub fn route_bob_through(&self, port: u16) {
        let file = self.dir.join("bob.toml");
        let text = std::fs::read_to_string(&file).unwrap().replace(
            &format!("127.0.0.1:{}", self.peer_port),
            &format!("127.0.0.1:{port}"),
        );
        std::fs::write(file, text).unwrap();
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    pub fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            if started.elapsed() >= PATIENCE {
                let status = |role: &str| {
                    String::from_utf8_lossy(&self.status_output(role).stdout).into_owned()
                };
                panic!(
                    "waited {PATIENCE:?} for {what}\nbench: {}\nalice: {}{}\nbob: {}{}",
                    self.log("bench"),
                    self.log("alice"),
                    status("alice"),
                    self.log("bob"),
                    status("bob")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = qkd().args(args).current_dir(&self.dir).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `qkd node status --json` of `role`, as it ran.
    pub fn status_output(&self, role: &str) -> std::process::Output {
        qkd()
            .args([
                "node",
                "status",
                "--config",
                &format!("{role}.toml"),
                "--json",
            ])
            .current_dir(&self.dir)
            .output()
            .unwrap()
    }

    pub fn status(&self, role: &str) -> serde_json::Value {
        let out = self.status_output(role);
        assert!(
            out.status.success(),
            "{role} status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The committed keys of a node's store: (key ID, bits, SHA-256).
    pub fn keys(&self, role: &str) -> Vec<StoredKey> {
        let listed = self.json(&[
            "keys",
            "list",
            "--config",
            &format!("{role}.toml"),
            "--json",
        ]);
        listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["key_id"].as_str().unwrap().to_owned(),
                    k["bits"].as_u64().unwrap(),
                    k["sha256"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    pub fn pad_bits_used(&self, role: &str) -> u64 {
        self.status(role)["auth"]["pad_bits_used"].as_u64().unwrap()
    }

    /// A node's status; `None` while it has not made its store yet.
    pub fn try_status(&self, role: &str) -> Option<serde_json::Value> {
        let out = self.status_output(role);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Keys a node has stored; 0 while it has not made its store yet.
    pub fn keys_stored(&self, role: &str) -> u64 {
        self.try_status(role)
            .map_or(0, |status| status["keys_stored"].as_u64().unwrap())
    }

    /// Waits until `role` has stored `n` keys in all.
    pub fn wait_for_keys(&self, role: &str, n: u64) {
        self.wait_until(&format!("{role} to store {n} keys"), || {
            self.keys_stored(role) >= n
        });
    }

    pub fn signal(&mut self, name: &str, signal: &str) {
        let child = self.processes.get_mut(name).unwrap();
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `kill -9`: the process ends at whatever it was doing.
    pub fn kill(&mut self, name: &'static str) {
        self.signal(name, "-KILL");
        self.processes.remove(name).unwrap().wait().unwrap();
    }

    /// SIGTERM, and the exit it leads to (which must be clean).
    pub fn stop(&mut self, name: &'static str) {
        self.signal(name, "-TERM");
        let mut child = self.processes.remove(name).unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < PATIENCE, "{name} did not stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "{name} stopped with {status}: {}",
            self.log(name)
        );
    }

    /// Stops both nodes cleanly (Bob first: he settles what he holds) and returns their keys.
    pub fn finish(&mut self) -> (Vec<StoredKey>, Vec<StoredKey>) {
        self.stop("bob");
        self.stop("alice");
        (self.keys("alice"), self.keys("bob"))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for child in self.processes.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() && std::env::var_os("QKD_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
