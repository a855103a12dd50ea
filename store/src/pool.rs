//! The key pool the KMEs cut delivered keys from: the committed block keys, consumed in block
//! order behind one cursor, and the log of cuts both nodes apply in the same order.
//!
//! A cut is decided by one node (the sequencer) and applied by each node in its own transaction:
//! the bits it takes are checked to lie at or past the cursor in committed keys, zeroed in the
//! block's stored key, and the cursor moves past them, so a bit is never cut twice. Each node
//! keeps what its side of the cut needs: the master's side keeps only the record (its keys are
//! handed out as the cut is applied, or discarded), the slave's side keeps the key bytes until
//! its SAE fetches them, once.

use qkd_postprocess::bits::Bits;
use qkd_runtime::messages::BlockId;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Store, StoreFailure, key_bytes};

/// Tables of the pool (created with the rest of the schema).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kme_cuts (
    seq INTEGER PRIMARY KEY,
    master TEXT NOT NULL,
    slave TEXT NOT NULL,
    record BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS kme_keys (
    key_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    master TEXT NOT NULL,
    slave TEXT NOT NULL,
    bits INTEGER NOT NULL,
    key BLOB,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'delivered', 'discarded'))
);
";

/// Meta entry holding the cursor: `block offset`.
const CURSOR: &str = "kme_cursor";

/// Bits `[offset, offset + bits)` of block `block`'s committed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The block.
    pub block: BlockId,
    /// First bit.
    pub offset: u64,
    /// Number of bits.
    pub bits: u64,
}

/// One key of a cut: its ID and where its bits come from, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCut {
    /// The key's ID (a UUID, as text).
    pub key_id: String,
    /// Its bits.
    pub segments: Vec<Segment>,
}

impl KeyCut {
    /// Length of the key in bits.
    pub fn bits(&self) -> u64 {
        self.segments.iter().map(|s| s.bits).sum()
    }
}

/// The keys of one request, cut in one step for one master and slave SAE pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutRecord {
    /// Position in the log: one more than the cut before it.
    pub seq: u64,
    /// The SAE that asked for the keys.
    pub master: String,
    /// The SAE they are for.
    pub slave: String,
    /// The keys.
    pub keys: Vec<KeyCut>,
}

/// What this node does with the keys of a cut it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Its SAE is the master: the keys go out now (returned) and only the record stays.
    Serve,
    /// Its SAE is the slave: the keys stay until that SAE fetches them.
    Reserve,
    /// Nobody gets them (an answer that never left, a cut the peer could not follow).
    Discard,
}

/// A key handed out: its ID and bytes (bit i is bit `i % 8` of byte `i / 8`).
#[derive(Clone)]
pub struct ServedKey {
    /// The key's ID.
    pub key_id: String,
    /// The key.
    pub bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ServedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedKey")
            .field("key_id", &self.key_id)
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .finish()
    }
}

/// Why a cut cannot be applied here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CutRefusal {
    /// The cut is not the next one in the log.
    #[error("cut {got} is not the next one (this node has applied up to {applied:?})")]
    OutOfOrder {
        /// Its number.
        got: u64,
        /// The last one applied here.
        applied: Option<u64>,
    },
    /// It takes bits behind the cursor (already cut) or out of order.
    #[error("cut {seq} takes bits of block {block} already cut")]
    Reused {
        /// Its number.
        seq: u64,
        /// The block.
        block: BlockId,
    },
    /// It takes bits this node has no committed key for.
    #[error("cut {seq} takes bits of block {block} this node has not committed")]
    NotCommitted {
        /// Its number.
        seq: u64,
        /// The block.
        block: BlockId,
    },
    /// A key ID already used.
    #[error("key ID {0} is already used")]
    DuplicateId(String),
}

/// Why keys could not be handed to a slave.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryRefusal {
    /// No key with this ID is waiting here (never cut, or handed out already).
    #[error("key {0} is not found")]
    NotFound(String),
    /// The key is reserved for another SAE pair.
    #[error("key {0} is not reserved for this SAE")]
    NotYours(String),
}

/// A key of the log as `qkd keys list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolKey {
    /// Its ID.
    pub key_id: String,
    /// The cut it came from.
    pub seq: u64,
    /// Master SAE.
    pub master: String,
    /// Slave SAE.
    pub slave: String,
    /// Bits.
    pub bits: u64,
    /// `reserved`, `delivered` or `discarded`.
    pub state: String,
}

/// Successive cuts planned from the pool as it stood when the planner was made: the sequencer
/// plans several before any is applied, each where the one before it ends.
#[derive(Debug)]
pub struct Planner {
    ahead: Vec<Committed>,
    /// The committed key the next cut starts in.
    next: usize,
    block: BlockId,
    offset: u64,
    remaining: u64,
}

impl Planner {
    /// Uncut bits left after the cuts planned so far.
    pub fn remaining_bits(&self) -> u64 {
        self.remaining
    }

    /// Where `count` keys of `bits` bits each come from, after the cuts planned before; `None`,
    /// planning nothing, if fewer bits are left.
    pub fn plan(&mut self, count: usize, bits: u64) -> Option<Vec<Vec<Segment>>> {
        let total = (count as u64).checked_mul(bits)?;
        if total > self.remaining {
            return None;
        }
        // Planned on copies of the position, kept only when every key is covered.
        let (mut next, mut block, mut offset) = (self.next, self.block, self.offset);
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            let mut segments = Vec::new();
            let mut wanted = bits;
            while wanted > 0 {
                let c = self.ahead.get(next)?;
                if c.block != block {
                    (block, offset) = (c.block, 0);
                }
                let take = (c.bits.saturating_sub(offset)).min(wanted);
                if take > 0 {
                    segments.push(Segment {
                        block,
                        offset,
                        bits: take,
                    });
                    offset += take;
                    wanted -= take;
                }
                if offset >= c.bits {
                    next += 1;
                }
            }
            keys.push(segments);
        }
        (self.next, self.block, self.offset) = (next, block, offset);
        self.remaining -= total;
        Some(keys)
    }
}

/// A committed key as a cut sees it.
#[derive(Debug)]
struct Committed {
    block: BlockId,
    bits: u64,
}

impl Store {
    /// The pool's cursor: everything before bit `.1` of block `.0` (and every earlier block) is
    /// cut.
    pub fn pool_cursor(&self) -> Result<(BlockId, u64), StoreFailure> {
        self.pool_cursor_in(&self.lock())
    }

    /// The number of the last cut applied here.
    pub fn last_cut(&self) -> Result<Option<u64>, StoreFailure> {
        let last: Option<i64> =
            self.run(|db| db.query_row("SELECT MAX(seq) FROM kme_cuts", [], |r| r.get(0)))?;
        Ok(last.map(|s| s as u64))
    }

    /// Committed keys from block `block` (the cursor's) up to block `through`.
    fn committed_ahead(
        &self,
        db: &rusqlite::Connection,
        block: BlockId,
        through: BlockId,
    ) -> Result<Vec<Committed>, StoreFailure> {
        let mut query = db
            .prepare_cached(
                "SELECT block, bits FROM keys WHERE state = 'committed' AND block >= ?1 AND block <= ?2
                 ORDER BY block",
            )
            .map_err(self.sql())?;
        let rows = query
            .query_map(
                params![block as i64, through.min(i64::MAX as u64) as i64],
                |r| {
                    Ok(Committed {
                        block: r.get::<_, i64>(0)? as u64,
                        bits: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    fn pool_cursor_in(&self, db: &rusqlite::Connection) -> Result<(BlockId, u64), StoreFailure> {
        let text: Option<String> = db
            .query_row("SELECT value FROM meta WHERE name = ?1", [CURSOR], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.sql())?;
        let Some(text) = text else { return Ok((0, 0)) };
        let mut parts = text.split(' ').map(str::parse::<u64>);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(block)), Some(Ok(offset)), None) => Ok((block, offset)),
            _ => Err(self.damaged("key pool cursor")),
        }
    }

    /// Uncut committed bits up to block `through`.
    pub fn pool_bits(&self, through: BlockId) -> Result<u64, StoreFailure> {
        Ok(self.planner(through)?.remaining_bits())
    }

    /// A planner of cuts from the cursor through committed keys up to block `through`.
    pub fn planner(&self, through: BlockId) -> Result<Planner, StoreFailure> {
        let db = self.lock();
        let (block, offset) = self.pool_cursor_in(&db)?;
        let ahead = self.committed_ahead(&db, block, through)?;
        let remaining = ahead
            .iter()
            .map(|c| {
                if c.block == block {
                    c.bits.saturating_sub(offset)
                } else {
                    c.bits
                }
            })
            .sum();
        Ok(Planner {
            ahead,
            next: 0,
            block,
            offset,
            remaining,
        })
    }

    /// Where `count` keys of `bits` bits each would come from, cutting from the cursor through
    /// committed keys up to block `through`; `None` if the pool holds fewer bits.
    pub fn plan_cut(
        &self,
        count: usize,
        bits: u64,
        through: BlockId,
    ) -> Result<Option<Vec<Vec<Segment>>>, StoreFailure> {
        Ok(self.planner(through)?.plan(count, bits))
    }

    /// Applies cut `record` in one transaction: the next in the log, taking only committed bits
    /// at or past the cursor, which it zeroes and passes. Returns the keys if `fate` serves them.
    pub fn apply_cut(
        &self,
        record: &CutRecord,
        fate: Fate,
    ) -> Result<Result<Vec<ServedKey>, CutRefusal>, StoreFailure> {
        let served = self.apply_cuts(&[(record, fate)])?;
        Ok(served.map(|mut each| each.pop().unwrap_or_default()))
    }

    /// Applies consecutive cuts, each with its fate, in one transaction (one write to disk for
    /// all): all of them, or none if any is refused. Returns each one's served keys.
    pub fn apply_cuts(
        &self,
        cuts: &[(&CutRecord, Fate)],
    ) -> Result<Result<Vec<Vec<ServedKey>>, CutRefusal>, StoreFailure> {
        self.transaction_or_refuse(|tx| {
            let mut served = Vec::with_capacity(cuts.len());
            for &(record, fate) in cuts {
                match self.apply_in(tx, record, fate)? {
                    Ok(keys) => served.push(keys),
                    Err(refusal) => return Ok(Err(refusal)),
                }
            }
            Ok(Ok(served))
        })
    }

    /// Applies `record` within `tx`.
    fn apply_in(
        &self,
        tx: &rusqlite::Transaction<'_>,
        record: &CutRecord,
        fate: Fate,
    ) -> Result<Result<Vec<ServedKey>, CutRefusal>, StoreFailure> {
        let applied: Option<i64> = tx
            .query_row("SELECT MAX(seq) FROM kme_cuts", [], |r| r.get(0))
            .map_err(self.sql())?;
        let applied = applied.map(|s| s as u64);
        if record.seq != applied.map_or(0, |s| s + 1) {
            return Ok(Err(CutRefusal::OutOfOrder {
                got: record.seq,
                applied,
            }));
        }
        let mut cursor = self.pool_cursor_in(tx)?;
        let mut served = Vec::new();
        for key in &record.keys {
            let mut bits = Bits::zeros(0);
            for segment in &key.segments {
                if (segment.block, segment.offset) < cursor {
                    return Ok(Err(CutRefusal::Reused {
                        seq: record.seq,
                        block: segment.block,
                    }));
                }
                let end = segment.offset.saturating_add(segment.bits);
                match self.committed_length(tx, segment.block)? {
                    Some(length) if end <= length => {
                        bits.extend(&self.take_bits(tx, segment, length)?);
                    }
                    // Discarded bits need not be here: the cursor passes them anyway.
                    None if fate == Fate::Discard => {}
                    _ => {
                        return Ok(Err(CutRefusal::NotCommitted {
                            seq: record.seq,
                            block: segment.block,
                        }));
                    }
                }
                cursor = (segment.block, end);
            }
            let bytes = Zeroizing::new(key_bytes(&bits));
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO kme_keys (key_id, seq, master, slave, bits, key, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        key.key_id,
                        record.seq as i64,
                        record.master,
                        record.slave,
                        bits.len() as i64,
                        (fate == Fate::Reserve).then_some(bytes.as_slice()),
                        match fate {
                            Fate::Serve => "delivered",
                            Fate::Reserve => "reserved",
                            Fate::Discard => "discarded",
                        }
                    ],
                )
                .map_err(self.sql())?;
            if inserted == 0 {
                return Ok(Err(CutRefusal::DuplicateId(key.key_id.clone())));
            }
            if fate == Fate::Serve {
                served.push(ServedKey {
                    key_id: key.key_id.clone(),
                    bytes,
                });
            }
        }
        self.close_cut(tx, record, cursor)?;
        Ok(Ok(served))
    }

    /// Ends applying `record` within `tx`: logs the cut and moves the cursor.
    fn close_cut(
        &self,
        tx: &rusqlite::Transaction<'_>,
        record: &CutRecord,
        cursor: (BlockId, u64),
    ) -> Result<(), StoreFailure> {
        let record_blob =
            postcard::to_allocvec(record).map_err(|_| self.damaged("key pool cut"))?;
        tx.execute(
            "INSERT INTO kme_cuts (seq, master, slave, record) VALUES (?1, ?2, ?3, ?4)",
            params![record.seq as i64, record.master, record.slave, record_blob],
        )
        .map_err(self.sql())?;
        tx.execute(
            "INSERT INTO meta (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![CURSOR, format!("{} {}", cursor.0, cursor.1)],
        )
        .map_err(self.sql())?;
        Ok(())
    }

    /// The length in bits of block `block`'s committed key, if it has one.
    fn committed_length(
        &self,
        tx: &rusqlite::Connection,
        block: BlockId,
    ) -> Result<Option<u64>, StoreFailure> {
        let bits: Option<i64> = tx
            .query_row(
                "SELECT bits FROM keys WHERE block = ?1 AND state = 'committed'",
                [block as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql())?;
        Ok(bits.map(|b| b as u64))
    }

    /// Reads the bits of `segment` from its block's committed key of `length` bits and zeroes
    /// them there, touching only the bytes that hold them (a cut costs its own bytes, not the
    /// block's).
    fn take_bits(
        &self,
        tx: &rusqlite::Connection,
        segment: &Segment,
        length: u64,
    ) -> Result<Bits, StoreFailure> {
        let mut blob = tx
            .blob_open(
                rusqlite::MAIN_DB,
                "keys",
                "key",
                segment.block as i64,
                false,
            )
            .map_err(self.sql())?;
        if blob.len() as u64 != length.div_ceil(8) {
            return Err(self.damaged("key"));
        }
        let first = (segment.offset / 8) as usize;
        let end = (segment.offset + segment.bits).div_ceil(8) as usize;
        let mut bytes = Zeroizing::new(vec![0u8; end - first]);
        blob.read_at_exact(&mut bytes, first).map_err(self.sql())?;
        let shift = (segment.offset % 8) as usize;
        let held = self.decode_key((bytes.len() * 8) as i64, &bytes)?;
        let taken = held.range(shift, shift + segment.bits as usize);
        for i in shift..shift + segment.bits as usize {
            bytes[i / 8] &= !(1u8 << (i % 8));
        }
        blob.write_at(&bytes, first).map_err(self.sql())?;
        Ok(taken)
    }

    /// The cuts after `seq` (all of them for `None`), in order.
    pub fn cuts_after(&self, seq: Option<u64>) -> Result<Vec<CutRecord>, StoreFailure> {
        let blobs: Vec<Vec<u8>> = self.run(|db| {
            let mut query =
                db.prepare("SELECT record FROM kme_cuts WHERE seq > ?1 ORDER BY seq")?;
            let rows = query.query_map([seq.map_or(-1, |s| s as i64)], |r| r.get(0))?;
            rows.collect()
        })?;
        blobs
            .iter()
            .map(|b| postcard::from_bytes(b).map_err(|_| self.damaged("key pool cut")))
            .collect()
    }

    /// Keys of cut `seq` still waiting for their slave are discarded (the master never got
    /// them).
    pub fn discard_cut(&self, seq: u64) -> Result<(), StoreFailure> {
        self.run(|db| {
            db.execute(
                "UPDATE kme_keys SET key = NULL, state = 'discarded' WHERE seq = ?1 AND state = 'reserved'",
                [seq as i64],
            )
        })
        .map(drop)
    }

    /// Hands keys `ids` to slave SAE `slave` (asking for keys from `master`), all or none, and
    /// erases them.
    pub fn deliver(
        &self,
        master: &str,
        slave: &str,
        ids: &[String],
    ) -> Result<Result<Vec<ServedKey>, DeliveryRefusal>, StoreFailure> {
        self.transaction_or_refuse(|tx| {
            let mut served = Vec::with_capacity(ids.len());
            for id in ids {
                let row: Option<(String, String, Option<Vec<u8>>, String)> = tx
                    .query_row(
                        "SELECT master, slave, key, state FROM kme_keys WHERE key_id = ?1",
                        [id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()
                    .map_err(self.sql())?;
                match row {
                    Some((m, s, Some(bytes), state)) if state == "reserved" => {
                        if m != master || s != slave {
                            return Ok(Err(DeliveryRefusal::NotYours(id.clone())));
                        }
                        served.push(ServedKey {
                            key_id: id.clone(),
                            bytes: Zeroizing::new(bytes),
                        });
                    }
                    Some((m, s, _, _)) if m != master || s != slave => {
                        return Ok(Err(DeliveryRefusal::NotYours(id.clone())));
                    }
                    _ => return Ok(Err(DeliveryRefusal::NotFound(id.clone()))),
                }
                tx.execute(
                    "UPDATE kme_keys SET key = NULL, state = 'delivered' WHERE key_id = ?1",
                    [id],
                )
                .map_err(self.sql())?;
            }
            Ok(Ok(served))
        })
    }

    /// Keys waiting for slave `slave` from master `master`.
    pub fn reserved_count(&self, master: &str, slave: &str) -> Result<u64, StoreFailure> {
        self.run(|db| {
            db.query_row(
                "SELECT COUNT(*) FROM kme_keys WHERE master = ?1 AND slave = ?2 AND state = 'reserved'",
                params![master, slave],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n as u64)
    }

    /// Every key cut so far, in cut order.
    pub fn pool_keys(&self) -> Result<Vec<PoolKey>, StoreFailure> {
        self.run(|db| {
            let mut query = db.prepare(
                "SELECT key_id, seq, master, slave, bits, state FROM kme_keys ORDER BY seq, rowid",
            )?;
            let rows = query.query_map([], |r| {
                Ok(PoolKey {
                    key_id: r.get(0)?,
                    seq: r.get::<_, i64>(1)? as u64,
                    master: r.get(2)?,
                    slave: r.get(3)?,
                    bits: r.get::<_, i64>(4)? as u64,
                    state: r.get(5)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The highest block below every held one (the measurer's blocks up to it are all settled:
    /// committed here exactly when the preparer committed them).
    pub fn settled_through(&self) -> Result<Option<BlockId>, StoreFailure> {
        let (held, last): (Option<i64>, Option<i64>) = self.run(|db| {
            db.query_row(
                "SELECT (SELECT MIN(block) FROM keys WHERE state = 'held'), (SELECT MAX(block) FROM keys)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        Ok(match held {
            Some(0) => None,
            Some(h) => Some(h as u64 - 1),
            None => last.map(|b| b as u64),
        })
    }
}
