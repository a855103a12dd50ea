//! `qkd pki` and `qkd kme`: the demo certificates a two-node link's KMEs and SAEs use, and the
//! ETSI GS QKD 014 status of a node's KME read from its store.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use qkd_store::Store;

use crate::node::config::NodeConfig;

/// `qkd pki …`.
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Write a demo CA (`ca.pem`) and a certificate and key per KME and SAE (`NAME.pem`,
    /// `NAME.key`) into a directory; refuses to overwrite. The CA's key is not kept.
    Init {
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
        /// A KME's name (its certificate's common name is its KME ID); repeat per KME.
        #[arg(long = "kme")]
        kmes: Vec<String>,
        /// An SAE's name (its SAE ID); repeat per SAE.
        #[arg(long = "sae")]
        saes: Vec<String>,
    },
}

/// `qkd kme …`.
#[derive(Debug, Subcommand)]
pub enum KmeCommand {
    /// The ETSI 014 status of each pair of this node's SAEs and the peer's, from the node's
    /// store (the node may be running).
    Status {
        /// The node's configuration file (with a `[kme]` section).
        #[arg(long)]
        config: PathBuf,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub fn pki(command: &PkiCommand) -> Result<()> {
    let PkiCommand::Init { dir, kmes, saes } = command;
    let names: Vec<String> = kmes.iter().chain(saes).cloned().collect();
    for file in qkd_kme::pki::init(dir, &names)? {
        println!("{}", file.display());
    }
    Ok(())
}

pub fn run(command: &KmeCommand) -> Result<()> {
    let KmeCommand::Status { config, json } = command;
    let file = config;
    let config = NodeConfig::load(file)?;
    let settings = config.kme.as_ref().with_context(|| {
        format!(
            "{}: no [kme] section: this node serves no keys",
            file.display()
        )
    })?;
    let store = Store::open_read_only(&config.state_dir)?;
    let (kme_id, statuses) = qkd_kme::statuses(settings, &store)?;
    if *json {
        let report = serde_json::json!({
            "kme_id": kme_id,
            "listen": settings.listen.to_string(),
            "statuses": statuses,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for s in &statuses {
            println!(
                "{} → {}  ({} → {}): {} keys of {} bits stored, {} per request, sizes {}..={}",
                s.master_SAE_ID,
                s.slave_SAE_ID,
                s.source_KME_ID,
                s.target_KME_ID,
                s.stored_key_count,
                s.key_size,
                s.max_key_per_request,
                s.min_key_size,
                s.max_key_size
            );
        }
    }
    Ok(())
}
