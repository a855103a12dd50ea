//! Where a node's keys go, in two phases: the measurer *holds* a block's key once he has
//! computed it, and each node *commits* it only when it knows the other has it (the preparer on
//! the measurer's sealed confirmation, the measurer on her sealed commitment). A held key that
//! a crash or a lost message left undecided is settled on the next resumption by asking the
//! preparer, whose word is final: both nodes end with exactly the keys both committed.

use std::collections::BTreeMap;

use qkd_postprocess::auth::AuthState;
use qkd_postprocess::bits::Bits;

use crate::StoreError;
use crate::messages::BlockId;

/// A node's key store, as the session sees it.
pub trait KeySink: Send {
    /// The measurer holds block `block`'s amplified key, not yet usable; durable on return.
    fn hold(&mut self, block: BlockId, key: &Bits) -> Result<(), StoreError>;
    /// The blocks held and not yet settled (after a restart too), in order.
    fn held(&self) -> Result<Vec<BlockId>, StoreError>;
    /// Block `block`'s held key.
    fn held_key(&self, block: BlockId) -> Result<Option<Bits>, StoreError>;
    /// The preparer did not keep block `block`: its held key is dropped.
    fn forget(&mut self, block: BlockId) -> Result<(), StoreError>;
    /// Block `block`'s key is usable; `auth` is the authentication state refilled from it,
    /// made durable in the same step (and any held key of the block settled).
    fn commit(&mut self, block: BlockId, key: &Bits, auth: &AuthState) -> Result<(), StoreError>;
    /// Which of `blocks` this node has committed.
    fn committed_among(&self, blocks: &[BlockId]) -> Result<Vec<BlockId>, StoreError>;
    /// The highest block number this node holds or committed a key for.
    fn last_block(&self) -> Result<Option<BlockId>, StoreError>;
}

/// Keys in memory (one-process runs, tests).
#[derive(Debug, Default)]
pub struct MemorySink {
    held: BTreeMap<BlockId, Bits>,
    committed: BTreeMap<BlockId, Bits>,
}

impl MemorySink {
    /// The committed keys, by block.
    pub fn committed(&self) -> &BTreeMap<BlockId, Bits> {
        &self.committed
    }
}

impl KeySink for MemorySink {
    fn hold(&mut self, block: BlockId, key: &Bits) -> Result<(), StoreError> {
        self.held.insert(block, key.clone());
        Ok(())
    }

    fn held(&self) -> Result<Vec<BlockId>, StoreError> {
        Ok(self.held.keys().copied().collect())
    }

    fn held_key(&self, block: BlockId) -> Result<Option<Bits>, StoreError> {
        Ok(self.held.get(&block).cloned())
    }

    fn forget(&mut self, block: BlockId) -> Result<(), StoreError> {
        self.held.remove(&block);
        Ok(())
    }

    fn commit(&mut self, block: BlockId, key: &Bits, _auth: &AuthState) -> Result<(), StoreError> {
        self.held.remove(&block);
        self.committed.insert(block, key.clone());
        Ok(())
    }

    fn committed_among(&self, blocks: &[BlockId]) -> Result<Vec<BlockId>, StoreError> {
        Ok(blocks
            .iter()
            .copied()
            .filter(|b| self.committed.contains_key(b))
            .collect())
    }

    fn last_block(&self) -> Result<Option<BlockId>, StoreError> {
        let held = self.held.keys().next_back();
        let committed = self.committed.keys().next_back();
        Ok(held.max(committed).copied())
    }
}
