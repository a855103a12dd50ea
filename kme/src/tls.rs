//! Mutual TLS for the KME: the ETSI 014 server (client certificates required, chained to the
//! configured CA) and the KME-to-KME link, with rustls on the ring provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::subject::{SubjectError, common_name};

/// Why TLS could not be set up, or a peer's certificate not read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The CA certificate is unusable as a trust anchor.
    #[error("{path}: not a usable CA certificate: {source}")]
    Anchor {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The client verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The own certificate's subject.
    #[error("{path}: {source}")]
    Subject {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: SubjectError,
    },
}

/// A KME's TLS identity: its certificate chain and key, and the CA its callers chain to.
#[derive(Debug, Clone)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    roots: Arc<RootCertStore>,
    /// The certificate's subject common name: the KME's ID.
    pub name: String,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError + '_ {
    |source| TlsError::Pem {
        path: path.to_owned(),
        source,
    }
}

/// Every certificate in PEM file `path`.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(pem_error(path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(path))?;
    if certificates.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            source: rustls::pki_types::pem::Error::NoItemsFound,
        });
    }
    Ok(certificates)
}

/// Trust anchors from the CA file `path`.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots.add(certificate).map_err(|source| TlsError::Anchor {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// The subject common name of the first certificate in `path`: a KME's or SAE's ID.
pub fn certificate_name(path: &Path) -> Result<String, TlsError> {
    subject_name(path, &read_certificates(path)?[0])
}

fn subject_name(path: &Path, certificate: &CertificateDer<'_>) -> Result<String, TlsError> {
    common_name(certificate).map_err(|source| TlsError::Subject {
        path: path.to_owned(),
        source,
    })
}

impl Identity {
    /// The identity `name` in a directory `qkd pki init` wrote: `name.pem`, `name.key` and
    /// `ca.pem`.
    pub fn from_pki(pki: &Path, name: &str) -> Result<Self, TlsError> {
        Identity::read(
            &pki.join(format!("{name}.pem")),
            &pki.join(format!("{name}.key")),
            &pki.join("ca.pem"),
        )
    }

    /// Reads certificate `certificate` (chain), key `key` and CA `ca`.
    pub fn read(certificate: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        let chain = read_certificates(certificate)?;
        let name = subject_name(certificate, &chain[0])?;
        Ok(Identity {
            chain,
            key: Arc::new(PrivateKeyDer::from_pem_file(key).map_err(pem_error(key))?),
            roots: Arc::new(read_roots(ca)?),
            name,
        })
    }

    /// A server that requires a client certificate chained to the CA, speaking `protocols`
    /// (ALPN; empty for none).
    pub fn server(&self, protocols: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&self.roots), provider())
                .build()?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// A client presenting this identity and trusting the CA.
    pub fn client(&self) -> Result<Arc<ClientConfig>, TlsError> {
        Ok(Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .with_root_certificates(Arc::clone(&self.roots))
                .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?,
        ))
    }
}

/// The host of address `host:port` (`[v6]:port` too).
pub fn host_of(address: &str) -> &str {
    address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_matches(['[', ']'])
}

/// The name to check a server's certificate against for address `host` (an IP or a DNS name).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|_| {
        TlsError::Config(rustls::Error::General(format!(
            "{host} is neither an IP address nor a DNS name"
        )))
    })
}

/// The common name of the certificate a TLS peer presented (verified by then).
pub fn peer_name(certificates: Option<&[CertificateDer<'_>]>) -> Result<String, SubjectError> {
    let first = certificates
        .and_then(<[_]>::first)
        .ok_or(SubjectError::Malformed(0))?;
    common_name(first)
}
