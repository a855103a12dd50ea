//! The node's state on disk, in one SQLite database in its state directory (`state.sqlite`):
//! keys held and committed under the block numbers both nodes agree on, and the authentication
//! state (hash keys and unused pads).
//!
//! Every change is one transaction, durable when it returns (write-ahead log, `synchronous =
//! FULL`): a key is committed together with the authentication state refilled from it, a pad's
//! use is journalled before the seal that uses it leaves the node, and the journal refuses to
//! move a pad position backwards. Other processes (`qkd keys list`, `qkd node status`) read the
//! same file while the node runs; the `sqlite3` shell reads it too.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use qkd_postprocess::auth::AuthState;
use qkd_postprocess::bits::Bits;
use qkd_runtime::StoreError;
use qkd_runtime::channel::AuthJournal;
use qkd_runtime::keys::KeySink;
use qkd_runtime::messages::BlockId;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};

pub mod pool;

/// File name of the database in a state directory.
pub const DATABASE: &str = "state.sqlite";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    /// SQLite reported an error.
    #[error("{path}: {source}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The state directory could not be made.
    #[error("{path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A stored value does not decode.
    #[error("{path}: the stored {what} is damaged")]
    Damaged {
        /// The database.
        path: PathBuf,
        /// What.
        what: &'static str,
    },
    /// A journalled pad position would move backwards: a pad could be used twice.
    #[error(
        "{path}: refusing to move the authentication pads back (seal pad {seal} < {stored_seal} or check pad {check} < {stored_check})"
    )]
    PadsBackwards {
        /// The database.
        path: PathBuf,
        /// Seal pad offered.
        seal: u64,
        /// Seal pad stored.
        stored_seal: u64,
        /// Check pad offered.
        check: u64,
        /// Check pad stored.
        stored_check: u64,
    },
    /// No state directory here (reading a node that never ran).
    #[error("{0}: no node state here (has the node run with this state directory?)")]
    Missing(PathBuf),
}

impl From<StoreFailure> for StoreError {
    fn from(failure: StoreFailure) -> Self {
        StoreError(Box::new(failure))
    }
}

/// One stored key, as `qkd keys list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The block whose key it is (the nodes' shared name for it).
    pub block: BlockId,
    /// Length in bits.
    pub bits: u64,
    /// SHA-256 of the key's bytes (bit i is bit i % 8 of byte i / 8), hex.
    pub sha256: String,
    /// Committed (usable); otherwise held, awaiting the preparer's word.
    pub committed: bool,
}

/// The bytes of `key`: bit i is bit `i % 8` of byte `i / 8`.
pub fn key_bytes(key: &Bits) -> Vec<u8> {
    let mut bytes: Vec<u8> = key.words().iter().flat_map(|w| w.to_le_bytes()).collect();
    bytes.truncate(key.len().div_ceil(8));
    bytes
}

/// SHA-256 of a key's bytes, hex.
pub fn key_sha256(key: &Bits) -> String {
    hex(&Sha256::digest(key_bytes(key)))
}

/// Bytes (a digest) in lower-case hex, as the store keeps and shows them.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    block INTEGER PRIMARY KEY,
    bits INTEGER NOT NULL,
    key BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('held', 'committed'))
);
CREATE TABLE IF NOT EXISTS auth (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    state BLOB NOT NULL,
    seal_pad INTEGER NOT NULL,
    check_pad INTEGER NOT NULL
);
";

/// The node's store. Clones share one connection.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store in state directory `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreFailure> {
        std::fs::create_dir_all(dir).map_err(|source| StoreFailure::Directory {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DATABASE);
        let store = Self::connect(&path, OpenFlags::default())?;
        store.run(|db| {
            db.pragma_update(None, "journal_mode", "WAL")?;
            db.pragma_update(None, "synchronous", "FULL")?;
            db.execute_batch(SCHEMA)?;
            db.execute_batch(pool::SCHEMA)
        })?;
        Ok(store)
    }

    /// Opens an existing store to read it (another process may be writing).
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreFailure> {
        let path = dir.join(DATABASE);
        if !path.exists() {
            return Err(StoreFailure::Missing(dir.to_owned()));
        }
        let store = Self::connect(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        // A node that is just starting may have made the file but not its tables yet.
        let tables: i64 = store.run(|db| {
            db.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('keys', 'auth', 'meta')",
                [],
                |r| r.get(0),
            )
        })?;
        if tables < 3 {
            return Err(StoreFailure::Missing(dir.to_owned()));
        }
        Ok(store)
    }

    fn connect(path: &Path, flags: OpenFlags) -> Result<Self, StoreFailure> {
        let db =
            Connection::open_with_flags(path, flags).map_err(|source| StoreFailure::Sqlite {
                path: path.to_owned(),
                source,
            })?;
        let store = Store {
            db: Arc::new(Mutex::new(db)),
            path: path.to_owned(),
        };
        store.run(|db| db.busy_timeout(std::time::Duration::from_secs(10)))?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the connection, naming the file in any error.
    fn run<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreFailure> {
        f(&mut self.lock()).map_err(self.sql())
    }

    /// Names the file in a SQLite error.
    fn sql(&self) -> impl FnOnce(rusqlite::Error) -> StoreFailure + '_ {
        |source| StoreFailure::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn damaged(&self, what: &'static str) -> StoreFailure {
        StoreFailure::Damaged {
            path: self.path.clone(),
            what,
        }
    }

    /// A value of the meta table.
    pub fn meta(&self, name: &str) -> Result<Option<String>, StoreFailure> {
        self.run(|db| {
            db.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    /// Sets a value of the meta table.
    pub fn set_meta(&self, name: &str, value: &str) -> Result<(), StoreFailure> {
        self.run(|db| {
            db.execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )
        })
        .map(drop)
    }

    /// Sets a value of the meta table unless it has one: `None` if it was set, else the value
    /// it had (which stays). One transaction, so two claims of one name cannot both win.
    pub fn claim_meta(&self, name: &str, value: &str) -> Result<Option<String>, StoreFailure> {
        self.run(|db| {
            let tx = db.transaction()?;
            let had: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            if had.is_none() {
                tx.execute(
                    "INSERT INTO meta (name, value) VALUES (?1, ?2)",
                    params![name, value],
                )?;
            }
            tx.commit()?;
            Ok(had)
        })
    }

    /// The journalled authentication state, if any.
    pub fn auth_state(&self) -> Result<Option<AuthState>, StoreFailure> {
        let blob: Option<Vec<u8>> = self.run(|db| {
            db.query_row("SELECT state FROM auth WHERE id = 0", [], |r| r.get(0))
                .optional()
        })?;
        blob.map(|b| postcard::from_bytes(&b).map_err(|_| self.damaged("authentication state")))
            .transpose()
    }

    /// Starts the authentication journal from `state` (a fresh pre-shared secret), unless one is
    /// there already: the journal, not the secret file, then says which pads are spent. Returns
    /// whether it was started.
    pub fn init_auth(&self, state: &AuthState) -> Result<bool, StoreFailure> {
        let blob =
            postcard::to_allocvec(state).map_err(|_| self.damaged("authentication state"))?;
        let inserted = self.run(|db| {
            db.execute(
                "INSERT OR IGNORE INTO auth (id, state, seal_pad, check_pad) VALUES (0, ?1, ?2, ?3)",
                params![
                    blob,
                    state.next_seal_pad() as i64,
                    state.next_check_pad() as i64
                ],
            )
        })?;
        Ok(inserted == 1)
    }

    /// Writes `state` within `tx`, refusing pad positions behind the journalled ones.
    fn save_auth(
        &self,
        tx: &rusqlite::Transaction<'_>,
        state: &AuthState,
    ) -> Result<(), StoreFailure> {
        let (stored_seal, stored_check): (i64, i64) = tx
            .query_row(
                "SELECT seal_pad, check_pad FROM auth WHERE id = 0",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.sql())?;
        let (seal, check) = (state.next_seal_pad(), state.next_check_pad());
        if seal < stored_seal as u64 || check < stored_check as u64 {
            return Err(StoreFailure::PadsBackwards {
                path: self.path.clone(),
                seal,
                stored_seal: stored_seal as u64,
                check,
                stored_check: stored_check as u64,
            });
        }
        let blob =
            postcard::to_allocvec(state).map_err(|_| self.damaged("authentication state"))?;
        tx.execute(
            "UPDATE auth SET state = ?1, seal_pad = ?2, check_pad = ?3 WHERE id = 0",
            params![blob, seal as i64, check as i64],
        )
        .map_err(self.sql())?;
        Ok(())
    }

    /// Runs `f` in one transaction, committed (durably) if it succeeds.
    fn transaction<R>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<R, StoreFailure>,
    ) -> Result<R, StoreFailure> {
        let accepted =
            self.transaction_or_refuse(|tx| f(tx).map(Ok::<R, std::convert::Infallible>))?;
        Ok(accepted.unwrap_or_else(|never| match never {}))
    }

    /// A transaction that commits only if `f` accepts: a refusal (`Ok(Err(_))`) rolls back
    /// whatever `f` wrote before it found the reason to refuse.
    fn transaction_or_refuse<R, E>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<Result<R, E>, StoreFailure>,
    ) -> Result<Result<R, E>, StoreFailure> {
        let mut db = self.lock();
        let tx = db.transaction().map_err(self.sql())?;
        let result = f(&tx)?;
        if result.is_ok() {
            tx.commit().map_err(self.sql())?;
        }
        Ok(result)
    }

    /// Every stored key, in block order.
    pub fn keys(&self) -> Result<Vec<StoredKey>, StoreFailure> {
        self.run(|db| {
            let mut query =
                db.prepare("SELECT block, bits, sha256, state FROM keys ORDER BY block")?;
            let rows = query.query_map([], |r| {
                Ok(StoredKey {
                    block: r.get::<_, i64>(0)? as u64,
                    bits: r.get::<_, i64>(1)? as u64,
                    sha256: r.get(2)?,
                    committed: r.get::<_, String>(3)? == "committed",
                })
            })?;
            rows.collect()
        })
    }

    /// A stored key's bits, with whether it is committed.
    pub fn key(&self, block: BlockId) -> Result<Option<(Bits, bool)>, StoreFailure> {
        let row: Option<(i64, Vec<u8>, String)> = self.run(|db| {
            db.query_row(
                "SELECT bits, key, state FROM keys WHERE block = ?1",
                [block as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
        })?;
        let Some((bits, bytes, state)) = row else {
            return Ok(None);
        };
        Ok(Some((self.decode_key(bits, &bytes)?, state == "committed")))
    }

    /// A key of `bits` bits from its stored bytes.
    fn decode_key(&self, bits: i64, bytes: &[u8]) -> Result<Bits, StoreFailure> {
        let bits = usize::try_from(bits).map_err(|_| self.damaged("key length"))?;
        if bytes.len() != bits.div_ceil(8) {
            return Err(self.damaged("key"));
        }
        let words = bytes
            .chunks(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        Ok(Bits::from_words(words, bits))
    }

    fn put_key(
        &self,
        tx: &rusqlite::Transaction<'_>,
        block: BlockId,
        key: &Bits,
        state: &str,
    ) -> Result<(), StoreFailure> {
        tx.execute(
            "INSERT INTO keys (block, bits, key, sha256, state) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (block) DO UPDATE SET bits = excluded.bits, key = excluded.key,
                 sha256 = excluded.sha256, state = excluded.state",
            params![
                block as i64,
                key.len() as i64,
                key_bytes(key),
                key_sha256(key),
                state
            ],
        )
        .map_err(self.sql())?;
        Ok(())
    }

    /// The journal the channel writes pad uses to.
    pub fn journal(&self) -> Box<dyn AuthJournal> {
        Box::new(Journal(self.clone()))
    }
}

/// The authentication journal on the store.
#[derive(Debug)]
struct Journal(Store);

impl AuthJournal for Journal {
    fn save(&mut self, state: &AuthState) -> Result<(), StoreError> {
        let store = &self.0;
        Ok(store.transaction(|tx| store.save_auth(tx, state))?)
    }
}

impl KeySink for Store {
    fn hold(&mut self, block: BlockId, key: &Bits) -> Result<(), StoreError> {
        Ok(self.transaction(|tx| self.put_key(tx, block, key, "held"))?)
    }

    fn held(&self) -> Result<Vec<BlockId>, StoreError> {
        Ok(self.run(|db| {
            let mut query =
                db.prepare("SELECT block FROM keys WHERE state = 'held' ORDER BY block")?;
            let rows = query.query_map([], |r| r.get::<_, i64>(0))?;
            rows.map(|b| b.map(|b| b as u64)).collect()
        })?)
    }

    fn held_key(&self, block: BlockId) -> Result<Option<Bits>, StoreError> {
        Ok(self
            .key(block)?
            .and_then(|(key, committed)| (!committed).then_some(key)))
    }

    fn forget(&mut self, block: BlockId) -> Result<(), StoreError> {
        self.run(|db| {
            db.execute(
                "DELETE FROM keys WHERE block = ?1 AND state = 'held'",
                [block as i64],
            )
        })?;
        Ok(())
    }

    fn commit(&mut self, block: BlockId, key: &Bits, auth: &AuthState) -> Result<(), StoreError> {
        Ok(self.transaction(|tx| {
            self.put_key(tx, block, key, "committed")?;
            self.save_auth(tx, auth)
        })?)
    }

    fn committed_among(&self, blocks: &[BlockId]) -> Result<Vec<BlockId>, StoreError> {
        let mut committed = Vec::new();
        for &block in blocks {
            if matches!(self.key(block)?, Some((_, true))) {
                committed.push(block);
            }
        }
        Ok(committed)
    }

    fn last_block(&self) -> Result<Option<BlockId>, StoreError> {
        let last: Option<i64> =
            self.run(|db| db.query_row("SELECT MAX(block) FROM keys", [], |r| r.get(0)))?;
        Ok(last.map(|b| b as u64))
    }
}
