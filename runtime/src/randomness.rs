//! Randomness the security proof needs unpredictable — hash seeds, the squash coin — from the
//! operating system, in every node path. A ChaCha12 generator seeded from the system serves the
//! volume (a privacy amplification seed is as long as the block); no constructor takes a seed.

use rand::rngs::{StdRng, SysRng};
use rand::{Rng, SeedableRng};

/// The system could not give randomness.
#[derive(Debug, thiserror::Error)]
#[error("no randomness from the operating system: {0}")]
pub struct RandomnessError(#[source] pub(crate) rand::rngs::SysError);

/// Protocol randomness of one node, seeded from the operating system.
pub struct ProtocolRng {
    rng: StdRng,
    /// Coins left over from the last 64-bit draw.
    coins: u64,
    coins_left: u32,
}

impl std::fmt::Debug for ProtocolRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProtocolRng(seeded from the operating system)")
    }
}

impl ProtocolRng {
    /// A generator seeded from the operating system.
    pub fn from_os() -> Result<Self, RandomnessError> {
        Ok(ProtocolRng {
            rng: StdRng::try_from_rng(&mut SysRng).map_err(RandomnessError)?,
            coins: 0,
            coins_left: 0,
        })
    }

    /// 64 uniform bits.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A fair coin (for squashing double clicks, where the bit must not be predictable).
    pub fn coin(&mut self) -> bool {
        if self.coins_left == 0 {
            self.coins = self.rng.next_u64();
            self.coins_left = 64;
        }
        let coin = self.coins & 1 == 1;
        self.coins >>= 1;
        self.coins_left -= 1;
        coin
    }
}
