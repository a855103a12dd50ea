//! `qkd pki init`: a demo certificate authority and a certificate per KME and per SAE, so a
//! two-node link with key delivery runs without openssl. Each certificate's subject common name
//! is the KME or SAE ID; each is valid for TLS servers and clients on `localhost`, `127.0.0.1`
//! and `::1` (and the name itself as a host name). The CA's key is not kept: add names by making
//! a new directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Why the certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A name is unusable as a file name and certificate name.
    #[error(
        "{0:?}: a KME or SAE name is 1 to 64 letters, digits, '.', '-' or '_' (and not \"ca\")"
    )]
    BadName(String),
    /// A name is given twice.
    #[error("{0:?} is named twice")]
    Duplicate(String),
    /// No names at all.
    #[error("name at least one --kme or --sae")]
    Nothing,
    /// A file exists already (nothing is overwritten).
    #[error("{0}: exists already; choose an empty directory")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// rcgen failed.
    #[error("making a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

fn valid(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != "ca"
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn subject(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "qkd-node demo");
    dn.push(DnType::CommonName, name);
    dn
}

/// Writes `contents` to new file `path` (`private`: readable by the owner only).
fn write_new(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = private;
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Makes `dir/ca.pem` and, per name in `names`, `dir/NAME.pem` and `dir/NAME.key`. Returns the
/// files written.
pub fn init(dir: &Path, names: &[String]) -> Result<Vec<PathBuf>, PkiError> {
    if names.is_empty() {
        return Err(PkiError::Nothing);
    }
    for (i, name) in names.iter().enumerate() {
        if !valid(name) {
            return Err(PkiError::BadName(name.clone()));
        }
        if names[..i].contains(name) {
            return Err(PkiError::Duplicate(name.clone()));
        }
    }
    let mut files = vec![dir.join("ca.pem")];
    for name in names {
        files.push(dir.join(format!("{name}.pem")));
        files.push(dir.join(format!("{name}.key")));
    }
    if let Some(existing) = files.iter().find(|f| f.exists()) {
        return Err(PkiError::Exists(existing.clone()));
    }
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })?;

    let mut ca = CertificateParams::default();
    ca.distinguished_name = subject("qkd-node demo CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_certificate = ca.self_signed(&ca_key)?;
    write_new(&files[0], &ca_certificate.pem(), false)?;
    let issuer = Issuer::new(ca, ca_key);

    for (name, paths) in names.iter().zip(files[1..].chunks(2)) {
        let mut params = CertificateParams::new(vec![
            name.clone(),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])?;
        params.distinguished_name = subject(name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &issuer)?;
        write_new(&paths[0], &certificate.pem(), false)?;
        write_new(&paths[1], &key.serialize_pem(), true)?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_nothing_is_overwritten() {
        let dir = std::env::temp_dir().join(format!("qkd-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(matches!(init(&dir, &[]), Err(PkiError::Nothing)));
        assert!(matches!(
            init(&dir, &names(&["a/b"])),
            Err(PkiError::BadName(_))
        ));
        assert!(matches!(
            init(&dir, &names(&["ca"])),
            Err(PkiError::BadName(_))
        ));
        assert!(matches!(
            init(&dir, &names(&["x", "x"])),
            Err(PkiError::Duplicate(_))
        ));
        let files = init(&dir, &names(&["alice", "sae-a"])).unwrap();
        assert_eq!(files.len(), 5);
        let identity = crate::tls::Identity::read(
            &dir.join("sae-a.pem"),
            &dir.join("sae-a.key"),
            &dir.join("ca.pem"),
        )
        .unwrap();
        assert_eq!(identity.name, "sae-a");
        assert!(matches!(
            init(&dir, &names(&["alice"])),
            Err(PkiError::Exists(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
