//! `qkd bench kme`: ETSI GS QKD 014 requests per second and latency against two KMEs on
//! loopback, mutual TLS, each over its own store on disk holding the same committed keys; one
//! 256-bit key per request. Status requests (TLS and HTTP, no cut, no store write) are the
//! baseline of the same run.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use qkd_kme::client::Client;
use qkd_kme::link::Side;
use qkd_kme::tls::Identity;
use qkd_kme::{Kme, KmeSettings};
use qkd_postprocess::auth::{AuthState, Role};
use qkd_postprocess::bits::Bits;
use qkd_runtime::keys::KeySink;
use qkd_runtime::randomness::ProtocolRng;
use qkd_store::Store;
use serde::Serialize;

use super::machine::Machine;
use super::percentile;

/// Flags of `qkd bench kme`.
#[derive(Debug, Clone, clap::Args)]
pub struct KmeArgs {
    /// Requests timed per keep-alive figure (a tenth of it for new connections).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Keep-alive connections sending at once, as several encryptors would (the requests are
    /// shared among them).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Throughput and latency of one kind of request.
#[derive(Debug, Serialize)]
struct RequestFigures {
    requests: usize,
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl RequestFigures {
    fn from(mut times: Vec<Duration>, total: Duration) -> Self {
        times.sort();
        let ms = |q: f64| percentile(&times, q).as_secs_f64() * 1e3;
        RequestFigures {
            requests: times.len(),
            requests_per_s: times.len() as f64 / total.as_secs_f64(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            max_ms: ms(1.0),
        }
    }
}

/// What `qkd bench kme --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    /// Keep-alive connections at once.
    connections: usize,
    /// Get key as the master SAE on keep-alive connections: a cut agreed with the peer KME and
    /// stored on both nodes per request (cuts queued meanwhile share one write).
    get_key: RequestFigures,
    /// Get key with key IDs as the slave SAE on keep-alive connections, one ID per request.
    get_key_with_ids: RequestFigures,
    /// Get key on a new TLS connection per request (handshake with client certificate).
    new_connection: RequestFigures,
    /// Get status on keep-alive connections: TLS and HTTP alone, the baseline.
    status: RequestFigures,
}

/// Committed key per block in the benchmark's stores.
const BLOCK_BITS: usize = 1 << 20;
/// Key size requested.
const KEY_BITS: u64 = 256;

/// A store in `dir` whose committed keys are `blocks`, as a link would have left them.
fn store_with(dir: &Path, role: Role, secret: &[u8], blocks: &[Bits]) -> Result<Store> {
    let mut store = Store::open(dir)?;
    let auth = AuthState::from_secret(secret, role)?;
    store.init_auth(&auth)?;
    for (block, key) in blocks.iter().enumerate() {
        store.hold(block as u64, key)?;
        store.commit(block as u64, key, &auth)?;
    }
    Ok(store)
}

fn free_address() -> Result<String> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    Ok(format!("127.0.0.1:{port}"))
}

/// Times `count` runs of `one`, each to completion.
async fn time_each(
    count: usize,
    mut one: impl AsyncFnMut() -> Result<()>,
) -> Result<RequestFigures> {
    let mut times = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        one().await?;
        times.push(t.elapsed());
    }
    Ok(RequestFigures::from(times, started.elapsed()))
}

/// A keep-alive request kind.
#[derive(Debug, Clone, Copy)]
enum Ask {
    Status,
    GetKey,
    GetKeyWithIds,
}

/// `requests` requests of kind `ask`, shared among `clients` sending at once, each timed;
/// `ids` are the key IDs a Get key with key IDs takes, one per request. The clients come back
/// for the next figure.
async fn keep_alive(
    clients: Vec<Client>,
    requests: usize,
    ask: Ask,
    ids: &mut Vec<String>,
) -> Result<(RequestFigures, Vec<Client>)> {
    let share = requests.div_ceil(clients.len().max(1));
    let started = Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    for mut client in clients {
        let mine: Vec<String> = ids.drain(..share.min(ids.len())).collect();
        runs.spawn(async move {
            let mut times = Vec::with_capacity(share);
            for i in 0..share {
                let t = Instant::now();
                match ask {
                    Ask::Status => drop(client.status("sae-b").await?),
                    Ask::GetKey => drop(client.enc_keys("sae-b", 1, KEY_BITS).await?),
                    Ask::GetKeyWithIds => {
                        let id = mine.get(i).context("ran out of key IDs")?;
                        drop(client.dec_keys("sae-a", std::slice::from_ref(id)).await?);
                    }
                }
                times.push(t.elapsed());
            }
            anyhow::Ok((times, client))
        });
    }
    let (mut times, mut clients) = (Vec::new(), Vec::new());
    while let Some(run) = runs.join_next().await {
        let (mine, client) = run??;
        times.extend(mine);
        clients.push(client);
    }
    Ok((RequestFigures::from(times, started.elapsed()), clients))
}

async fn measure(dir: &Path, requests: usize, connections: usize) -> Result<Report> {
    let pki = dir.join("pki");
    let names = ["alice", "bob", "sae-a", "sae-b"].map(str::to_owned);
    qkd_kme::pki::init(&pki, &names)?;
    // Enough committed key for every timed request and the IDs fetched beforehand, with room.
    let fresh = (requests / 10).max(10);
    let bits = (2 * (requests + connections) + fresh + 128) as u64 * KEY_BITS;
    let blocks = bits.div_ceil(BLOCK_BITS as u64) as usize + 1;
    let mut rng = ProtocolRng::from_os()?;
    let keys: Vec<Bits> = (0..blocks)
        .map(|_| Bits::from_word_fn(BLOCK_BITS, || rng.next_u64()))
        .collect();
    let secret: Vec<u8> = (0..8).flat_map(|_| rng.next_u64().to_le_bytes()).collect();
    let link = free_address()?;
    let alice_store = store_with(&dir.join("alice"), Role::Responder, &secret, &keys)?;
    let bob_store = store_with(&dir.join("bob"), Role::Initiator, &secret, &keys)?;
    let settings = |kmes, saes| KmeSettings {
        key_size: KEY_BITS,
        ..KmeSettings::pair(&pki, kmes, saes, &link)
    };
    let alice_settings = settings(["alice", "bob"], ["sae-a", "sae-b"]);
    let bob_settings = settings(["bob", "alice"], ["sae-b", "sae-a"]);
    let alice = Kme::start(&alice_settings, Side::Sequencer, alice_store).await?;
    let bob = Kme::start(&bob_settings, Side::Follower, bob_store).await?;
    let (alice_at, bob_at) = (alice.address.to_string(), bob.address.to_string());
    let sae_a = Identity::from_pki(&pki, "sae-a")?;
    let sae_b = Identity::from_pki(&pki, "sae-b")?;
    let mut master = Client::connect(&alice_at, &sae_a).await?;
    // The pool counts once Bob's KME has reported what it holds.
    let ready = Instant::now();
    while master.status("sae-b").await?.stored_key_count == 0 {
        if ready.elapsed() > Duration::from_secs(30) {
            bail!("the two KMEs did not link within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut masters = vec![master];
    let mut slaves = Vec::with_capacity(connections);
    for _ in 0..connections {
        slaves.push(Client::connect(&bob_at, &sae_b).await?);
    }
    while masters.len() < connections {
        masters.push(Client::connect(&alice_at, &sae_a).await?);
    }
    let mut ids = Vec::new();
    let (status, masters) = keep_alive(masters, requests, Ask::Status, &mut ids).await?;
    let (get_key, mut masters) = keep_alive(masters, requests, Ask::GetKey, &mut ids).await?;
    let wanted = requests.div_ceil(connections) * connections;
    while ids.len() < wanted {
        let n = (wanted - ids.len()).min(128) as u64;
        let keys = masters[0].enc_keys("sae-b", n, KEY_BITS).await?;
        ids.extend(keys.into_iter().map(|k| k.key_id));
    }
    let (get_key_with_ids, _) = keep_alive(slaves, requests, Ask::GetKeyWithIds, &mut ids).await?;
    let new_connection = time_each(fresh, async || {
        let mut fresh = Client::connect(&alice_at, &sae_a).await?;
        fresh.enc_keys("sae-b", 1, KEY_BITS).await?;
        Ok(())
    })
    .await?;
    Ok(Report {
        machine: Machine::current(),
        connections,
        get_key,
        get_key_with_ids,
        new_connection,
        status,
    })
}

pub fn run(args: &KmeArgs) -> Result<()> {
    if !(10..=100_000).contains(&args.requests) {
        bail!("--requests: give 10 to 100000, got {}", args.requests);
    }
    if !(1..=64).contains(&args.connections) {
        bail!("--connections: give 1 to 64, got {}", args.connections);
    }
    let dir = std::env::temp_dir().join(format!("qkd-bench-kme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(measure(&dir, args.requests, args.connections));
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let line = |name: &str, r: &RequestFigures| {
            println!(
                "{name:<34} {:>8.0} requests/s  p50 {:>7.3} ms  p99 {:>7.3} ms ({} requests)",
                r.requests_per_s, r.p50_ms, r.p99_ms, r.requests
            );
        };
        line("get key (keep-alive)", &report.get_key);
        line(
            "get key with key IDs (keep-alive)",
            &report.get_key_with_ids,
        );
        line("get key (new TLS connection)", &report.new_connection);
        line("  baseline: status (keep-alive)", &report.status);
    }
    Ok(())
}
