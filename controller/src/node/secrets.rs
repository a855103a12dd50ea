//! The secrets two nodes start from: a shared authentication secret and each node's ML-DSA
//! identity, written once by `qkd auth init` and read by the nodes at start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::link::{PRE_SHARED_SECRET_BYTES, fill_from_system};
use anyhow::{Context, Result, bail};
use qkd_postprocess::hybrid::{SEED_BYTES, SigningIdentity};
use zeroize::Zeroize;

/// File of the shared secret.
pub const SECRET_FILE: &str = "shared-secret";

/// The identity files of `role` ("alice" or "bob"): private seed, public key.
pub fn identity_files(role: &str) -> (String, String) {
    (format!("{role}-identity"), format!("{role}-identity.pub"))
}

/// Writes `bytes` to a new file readable by its owner only; refuses an existing one.
fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| {
            format!(
                "{}: not written (it exists, or the directory cannot take it)",
                path.display()
            )
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes a fresh shared secret and both nodes' identities into `dir`; refuses to overwrite any.
/// Returns the files written.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = vec![dir.join(SECRET_FILE)];
    for role in ["alice", "bob"] {
        let (private, public) = identity_files(role);
        files.push(dir.join(private));
        files.push(dir.join(public));
    }
    if let Some(existing) = files.iter().find(|f| f.exists()) {
        bail!(
            "{} exists: refusing to overwrite secrets (a new secret needs new state directories too)",
            existing.display()
        );
    }
    let mut secret = vec![0u8; PRE_SHARED_SECRET_BYTES];
    fill_from_system(&mut secret, "shared secret")?;
    let written = write_new(&files[0], &secret, true);
    secret.zeroize();
    written?;
    for (role, pair) in ["alice", "bob"].iter().zip(files[1..].chunks(2)) {
        let mut seed = [0u8; SEED_BYTES];
        fill_from_system(&mut seed, "ML-DSA seed")?;
        let public = SigningIdentity::from_seed(&seed).public_key();
        let written = write_new(&pair[0], &seed, true);
        seed.zeroize();
        written.with_context(|| format!("{role}'s identity"))?;
        write_new(&pair[1], &public, false)?;
    }
    Ok(files)
}

/// Reads a secret file of exactly `len` bytes (at least `len` when `at_least`).
pub fn read_secret(path: &Path, len: usize, at_least: bool) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() < len || (!at_least && bytes.len() != len) {
        bail!(
            "{}: {} bytes, {}{len} expected",
            path.display(),
            bytes.len(),
            if at_least { "at least " } else { "" }
        );
    }
    Ok(bytes)
}

/// This node's ML-DSA identity from its seed file.
pub fn identity(path: &Path) -> Result<SigningIdentity> {
    let mut bytes = read_secret(path, SEED_BYTES, false)?;
    let mut seed = [0u8; SEED_BYTES];
    seed.copy_from_slice(&bytes);
    bytes.zeroize();
    let identity = SigningIdentity::from_seed(&seed);
    seed.zeroize();
    Ok(identity)
}
