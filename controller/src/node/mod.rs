//! `qkd node`, `qkd keys` and `qkd auth`: running one node of a link, reading its keys, and
//! provisioning the secrets two nodes start from.

pub mod config;
mod daemon;
mod secrets;
mod status;
mod tagger;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use qkd_store::Store;
use serde::Serialize;

use config::NodeConfig;

/// Flags of `qkd node`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: Option<NodeCommand>,
    /// The node's configuration file (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// What to ask of a node.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// The node's status: from the running node, or from its store when it is not running.
    Status {
        /// The node's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// `qkd keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// The keys in a node's store, committed ones, in ID order, and the keys cut from them for
    /// SAEs with their state (the node may be running).
    List {
        /// The node's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// `qkd auth …`.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Write a fresh shared authentication secret and both nodes' ML-DSA identities into a
    /// directory (refuses to overwrite).
    Init {
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() -> Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("waiting for SIGTERM")?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub fn run(args: &NodeArgs) -> Result<()> {
    match &args.command {
        Some(NodeCommand::Status { config, json }) => status(config, *json),
        None => {
            let file = args
                .config
                .as_ref()
                .context("qkd node needs --config FILE (or a subcommand: status)")?;
            let config = NodeConfig::load(file)?;
            eprintln!(
                "node {} ({}) with state in {}; Ctrl-C or SIGTERM stops it",
                config.node_id,
                config.role.name(),
                config.state_dir.display()
            );
            runtime()?.block_on(async {
                let (stop, stopped) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    if shutdown_signal().await.is_ok() {
                        let _ = stop.send(true);
                    }
                });
                daemon::run(config, stopped).await
            })
        }
    }
}

fn status(file: &std::path::Path, json: bool) -> Result<()> {
    let config = NodeConfig::load(file)?;
    let report = runtime()?.block_on(status::query(&config.state_dir))?;
    let report = if let Some(live) = report {
        live
    } else {
        let store = Store::open_read_only(&config.state_dir)?;
        serde_json::to_value(status::offline(config.role, &config.node_id, &store)?)?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (name, value) in report.as_object().into_iter().flatten() {
            println!("{name:<22} {value}");
        }
    }
    Ok(())
}

/// One key as `qkd keys list --json` prints it.
#[derive(Debug, Serialize)]
struct KeyEntry {
    /// The key's ID, a UUID both nodes derive from its block number.
    key_id: String,
    /// The block it came from.
    block: u64,
    /// Length in bits.
    bits: u64,
    /// SHA-256 of its bytes (bit i is bit i % 8 of byte i / 8), hex.
    sha256: String,
}

/// A key cut for SAEs, as `qkd keys list --json` prints it under `kme_keys`.
#[derive(Debug, Serialize)]
struct DeliveryEntry {
    /// The key's ID as the KMEs served it.
    key_id: String,
    /// The cut (one request's keys) it came from.
    cut: u64,
    /// The SAE that asked for it.
    master_sae: String,
    /// The SAE it is for.
    slave_sae: String,
    /// Length in bits.
    bits: u64,
    /// `reserved` (waiting for its slave SAE here), `delivered` or `discarded`.
    state: String,
}

/// The key ID of block `block`: a UUID (version 8, RFC 9562) both nodes derive alike — "qkd"
/// in its first bytes, the block number in its last 60 bits.
pub fn key_id(block: u64) -> String {
    format!(
        "716b6400-0000-8000-{:04x}-{:012x}",
        0x8000 | ((block >> 48) & 0x0FFF),
        block & 0xFFFF_FFFF_FFFF
    )
}

pub fn keys(command: &KeysCommand) -> Result<()> {
    let KeysCommand::List { config, json } = command;
    let config = NodeConfig::load(config)?;
    let store = Store::open_read_only(&config.state_dir)?;
    let keys: Vec<KeyEntry> = store
        .keys()?
        .into_iter()
        .filter(|k| k.committed)
        .map(|k| KeyEntry {
            key_id: key_id(k.block),
            block: k.block,
            bits: k.bits,
            sha256: k.sha256,
        })
        .collect();
    let delivery: Vec<DeliveryEntry> = store
        .pool_keys()?
        .into_iter()
        .map(|k| DeliveryEntry {
            key_id: k.key_id,
            cut: k.seq,
            master_sae: k.master,
            slave_sae: k.slave,
            bits: k.bits,
            state: k.state,
        })
        .collect();
    if *json {
        let report = serde_json::json!({ "keys": keys, "kme_keys": delivery });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for k in &keys {
            println!(
                "{}  block {:>6}  {:>8} bits  {}",
                k.key_id, k.block, k.bits, k.sha256
            );
        }
        println!("{} keys", keys.len());
        for k in &delivery {
            println!(
                "{}  {:<9}  {:>6} bits  {} → {}  (cut {})",
                k.key_id, k.state, k.bits, k.master_sae, k.slave_sae, k.cut
            );
        }
        if !delivery.is_empty() {
            println!("{} keys cut for SAEs", delivery.len());
        }
    }
    Ok(())
}

pub fn auth(command: &AuthCommand) -> Result<()> {
    let AuthCommand::Init { dir } = command;
    let files = secrets::init(dir)?;
    for file in files {
        println!("{}", file.display());
    }
    Ok(())
}
