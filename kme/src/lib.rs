//! Key delivery from a node's key store: a key management entity (KME) serving ETSI GS QKD 014
//! v1.1.1 to the node's SAEs (encryptors) over mutual TLS.
//!
//! Keys are cut from the node's committed key material ([`qkd_store::pool`]); the two KMEs of a
//! link agree on every cut over their own link ([`link`]) before a master SAE's answer leaves,
//! so the slave SAE fetches the same bits from the other node, once.

pub mod api;
pub mod client;
pub mod link;
pub mod pki;
pub mod server;
pub mod subject;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use qkd_store::Store;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};

use crate::api::{Limits, Pair, Status};
use crate::link::{Link, LinkDriver, Side};
use crate::tls::{Identity, TlsError, host_of, peer_name, server_name};

/// An SAE of this KME: its ID and the common name its certificate carries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SaeEntry {
    /// ID and certificate name are the same.
    Named(String),
    /// The certificate's name maps to another ID.
    Mapped {
        /// The SAE ID.
        id: String,
        /// Its certificate's subject common name.
        common_name: String,
    },
}

/// The `[kme]` section of a node's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmeSettings {
    /// Where the ETSI 014 server listens.
    pub listen: SocketAddr,
    /// The KME-to-KME link: Alice's KME listens there, Bob's connects.
    pub link: String,
    /// The CA every certificate chains to.
    pub ca: PathBuf,
    /// This KME's certificate (its common name is the KME ID).
    pub certificate: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The peer KME's ID (its certificate's common name).
    pub peer_kme: String,
    /// This KME's SAEs.
    pub saes: Vec<SaeEntry>,
    /// The peer KME's SAEs (the slaves this KME's SAEs may name, the masters of keys it holds).
    pub peer_saes: Vec<String>,
    /// Default key size in bits.
    #[serde(default = "defaults::key_size")]
    pub key_size: u64,
    /// Smallest key size.
    #[serde(default = "defaults::min_key_size")]
    pub min_key_size: u64,
    /// Largest key size.
    #[serde(default = "defaults::max_key_size")]
    pub max_key_size: u64,
    /// Most keys per request.
    #[serde(default = "defaults::max_key_per_request")]
    pub max_key_per_request: u64,
    /// Most keys the status reports.
    #[serde(default = "defaults::max_key_count")]
    pub max_key_count: u64,
}

mod defaults {
    use super::Limits;
    pub fn key_size() -> u64 {
        Limits::default().key_size
    }
    pub fn min_key_size() -> u64 {
        Limits::default().min_key_size
    }
    pub fn max_key_size() -> u64 {
        Limits::default().max_key_size
    }
    pub fn max_key_per_request() -> u64 {
        Limits::default().max_key_per_request
    }
    pub fn max_key_count() -> u64 {
        Limits::default().max_key_count
    }
}

/// Why a KME cannot start.
#[derive(Debug, thiserror::Error)]
pub enum KmeError {
    /// The settings are inconsistent.
    #[error("kme: {0}")]
    Settings(String),
    /// TLS material.
    #[error("kme: {0}")]
    Tls(#[from] TlsError),
    /// The node's store.
    #[error("kme: {0}")]
    Store(#[from] qkd_store::StoreFailure),
    /// The server's address.
    #[error("kme.listen {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

impl KmeSettings {
    /// Settings for KME `kmes[0]` of a pair linked at `link`, with one SAE each (`saes[0]` its
    /// own), the certificates `qkd pki init` wrote to `pki`, the default limits, serving on a
    /// free loopback port: the pair a benchmark or a test runs.
    pub fn pair(pki: &Path, kmes: [&str; 2], saes: [&str; 2], link: &str) -> Self {
        let [me, peer] = kmes;
        let limits = Limits::default();
        KmeSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            link: link.to_owned(),
            ca: pki.join("ca.pem"),
            certificate: pki.join(format!("{me}.pem")),
            key: pki.join(format!("{me}.key")),
            peer_kme: peer.to_owned(),
            saes: vec![SaeEntry::Named(saes[0].to_owned())],
            peer_saes: vec![saes[1].to_owned()],
            key_size: limits.key_size,
            min_key_size: limits.min_key_size,
            max_key_size: limits.max_key_size,
            max_key_per_request: limits.max_key_per_request,
            max_key_count: limits.max_key_count,
        }
    }

    /// The settings with paths taken relative to `base` (the configuration file's directory).
    #[must_use]
    pub fn resolved(mut self, base: &Path) -> Self {
        for path in [&mut self.ca, &mut self.certificate, &mut self.key] {
            *path = base.join(&*path);
        }
        self
    }

    /// The sizes and counts, checked.
    pub fn limits(&self) -> Result<Limits, KmeError> {
        let limits = Limits {
            key_size: self.key_size,
            min_key_size: self.min_key_size,
            max_key_size: self.max_key_size,
            max_key_per_request: self.max_key_per_request,
            max_key_count: self.max_key_count,
        };
        limits
            .validate()
            .map_err(|e| KmeError::Settings(e.to_string()))?;
        Ok(limits)
    }

    /// Certificate name → SAE ID for this KME's SAEs, checked for clashes with the peer's.
    pub fn sae_names(&self) -> Result<Vec<(String, String)>, KmeError> {
        let names: Vec<(String, String)> = self
            .saes
            .iter()
            .map(|entry| match entry {
                SaeEntry::Named(id) => (id.clone(), id.clone()),
                SaeEntry::Mapped { id, common_name } => (common_name.clone(), id.clone()),
            })
            .collect();
        if names.is_empty() {
            return Err(KmeError::Settings("saes: name at least one SAE".to_owned()));
        }
        for (i, (name, id)) in names.iter().enumerate() {
            if names[..i].iter().any(|(n, d)| n == name || d == id) {
                return Err(KmeError::Settings(format!("saes: {id} is named twice")));
            }
            if self.peer_saes.contains(id) {
                return Err(KmeError::Settings(format!(
                    "saes: {id} is also an SAE of the peer KME"
                )));
            }
        }
        Ok(names)
    }
}

/// This KME's ID and the ETSI 014 status of every pair of one of its SAEs (asking, as master)
/// and one of the peer KME's, from the store as it stands: the node need not run. The pool
/// counts the bits of the blocks this node has settled; a running sequencer counts those both
/// nodes have.
pub fn statuses(settings: &KmeSettings, store: &Store) -> Result<(String, Vec<Status>), KmeError> {
    let limits = settings.limits()?;
    let kme = tls::certificate_name(&settings.certificate)?;
    let pool_bits = match store.settled_through()? {
        Some(through) => store.pool_bits(through)?,
        None => 0,
    };
    let mut out = Vec::new();
    for (_, master) in settings.sae_names()? {
        for slave in &settings.peer_saes {
            let pair = Pair {
                kme: &kme,
                peer_kme: &settings.peer_kme,
                master: &master,
                slave,
            };
            out.push(Status::of(pair, &limits, pool_bits));
        }
    }
    Ok((kme, out))
}

/// A running KME's parts.
#[derive(Debug)]
pub struct Kme {
    /// Its ID (its certificate's name).
    pub name: String,
    /// The server's bound address.
    pub address: SocketAddr,
    /// Serving and linking; aborted when the KME is dropped.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The link (for status).
    pub link: Link,
}

impl Drop for Kme {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Longest wait between two attempts to reach the peer KME.
const RECONNECT_MAX: Duration = Duration::from_secs(2);

impl Kme {
    /// Starts the KME of `settings` over `store`: Alice's (`side` Sequencer) or Bob's.
    pub async fn start(settings: &KmeSettings, side: Side, store: Store) -> Result<Self, KmeError> {
        let limits = settings.limits()?;
        let saes = settings.sae_names()?;
        let identity = Identity::read(&settings.certificate, &settings.key, &settings.ca)?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| KmeError::Listen {
                    address: settings.listen.to_string(),
                    source,
                })?;
        let address = listener.local_addr().map_err(|source| KmeError::Listen {
            address: settings.listen.to_string(),
            source,
        })?;
        let (link, driver) = Link::new();
        let service = Arc::new(server::Service {
            kme_id: identity.name.clone(),
            peer_kme_id: settings.peer_kme.clone(),
            saes,
            peer_saes: settings.peer_saes.clone(),
            limits,
            side,
            store: store.clone(),
            link: link.clone(),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(identity.server(&[b"http/1.1"])?);
        let linking = match side {
            Side::Sequencer => {
                let listener =
                    TcpListener::bind(&settings.link)
                        .await
                        .map_err(|source| KmeError::Listen {
                            address: settings.link.clone(),
                            source,
                        })?;
                let acceptor = tokio_rustls::TlsAcceptor::from(identity.server(&[])?);
                tokio::spawn(sequence(
                    listener,
                    acceptor,
                    settings.peer_kme.clone(),
                    store,
                    driver,
                ))
            }
            Side::Follower => {
                let name = server_name(host_of(&settings.link))?;
                let connector = tokio_rustls::TlsConnector::from(identity.client()?);
                tokio::spawn(follow(
                    settings.link.clone(),
                    name,
                    connector,
                    settings.peer_kme.clone(),
                    store,
                    driver,
                ))
            }
        };
        Ok(Kme {
            name: identity.name.clone(),
            address,
            tasks: vec![
                tokio::spawn(server::serve(listener, acceptor, service)),
                linking,
            ],
            link,
        })
    }
}

/// Checks the peer KME's certificate name.
fn expect_peer(
    certificates: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    peer_kme: &str,
) -> Result<(), String> {
    match peer_name(certificates) {
        Ok(name) if name == peer_kme => Ok(()),
        Ok(name) => Err(format!("the peer KME is {name:?}, not {peer_kme:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Alice's end: accepts Bob's KME, one connection at a time (a new one replaces the old).
async fn sequence(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    peer_kme: String,
    store: Store,
    mut driver: LinkDriver,
) {
    let mut next = None;
    loop {
        let tcp = if let Some(tcp) = next.take() {
            tcp
        } else {
            let Ok((tcp, _)) = driver.refuse_until(listener.accept()).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tcp
        };
        let _ = tcp.set_nodelay(true);
        let tls = match driver.refuse_until(acceptor.accept(tcp)).await {
            Ok(tls) => tls,
            Err(e) => {
                eprintln!("kme: link: TLS: {e}");
                continue;
            }
        };
        if let Err(e) = expect_peer(tls.get_ref().1.peer_certificates(), &peer_kme) {
            eprintln!("kme: link: refused: {e}");
            continue;
        }
        let session = driver.session(Side::Sequencer, &store, tls);
        tokio::select! {
            ended = session => if let Err(e) = ended {
                eprintln!("kme: link: {e}");
            },
            accepted = listener.accept() => {
                eprintln!("kme: link: the peer KME connected again; the old connection is dropped");
                next = accepted.ok().map(|(tcp, _)| tcp);
            }
        }
    }
}

/// Bob's end: connects to Alice's KME and keeps the link up.
async fn follow(
    address: String,
    name: rustls::pki_types::ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
    peer_kme: String,
    store: Store,
    mut driver: LinkDriver,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = driver
            .refuse_until(async {
                let tcp = TcpStream::connect(&address).await?;
                let _ = tcp.set_nodelay(true);
                connector.connect(name.clone(), tcp).await
            })
            .await;
        match connected {
            Ok(tls) => match expect_peer(tls.get_ref().1.peer_certificates(), &peer_kme) {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    if let Err(e) = driver.session(Side::Follower, &store, tls).await {
                        eprintln!("kme: link: {e}");
                    }
                }
                Err(e) => eprintln!("kme: link: refused: {e}"),
            },
            Err(e) => {
                if backoff >= RECONNECT_MAX {
                    eprintln!("kme: link: connecting to {address}: {e}");
                }
            }
        }
        driver.refuse_until(tokio::time::sleep(backoff)).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}
