//! The BB84 vocabulary every layer shares: the two bases, the four states, and how a passive
//! receiver turns the detectors that clicked in one slot into a result.

/// Preparation or measurement basis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Basis {
    /// Rectilinear: H is bit 0, V bit 1. The key basis.
    Z,
    /// Diagonal: D is bit 0, A bit 1. The test basis.
    X,
}

/// Index of a BB84 state: 0 = H, 1 = V, 2 = D, 3 = A (the detector order too).
#[inline]
pub fn state_index(basis: Basis, bit: u8) -> usize {
    match basis {
        Basis::Z => usize::from(bit & 1),
        Basis::X => 2 + usize::from(bit & 1),
    }
}

/// The basis and bit of state `index` (the inverse of [`state_index`]); `None` beyond A.
#[inline]
pub fn state(index: usize) -> Option<(Basis, u8)> {
    match index {
        0 | 1 => Some((Basis::Z, index as u8)),
        2 | 3 => Some((Basis::X, index as u8 - 2)),
        _ => None,
    }
}

/// Bob's result for the set of detectors that clicked in one slot (bit `i` = detector `i`, in
/// state order), squashed as a passive receiver must: clicks in both detectors of one basis give
/// a random bit; clicks in both bases give a random basis first. `coin` supplies fair bits.
#[inline]
pub fn squash(mask: u8, mut coin: impl FnMut() -> bool) -> Option<(Basis, u8)> {
    let z = mask & 0b0011;
    let x = (mask >> 2) & 0b0011;
    let (basis, pair) = match (z != 0, x != 0) {
        (false, false) => return None,
        (true, false) => (Basis::Z, z),
        (false, true) => (Basis::X, x),
        (true, true) => {
            if coin() {
                (Basis::Z, z)
            } else {
                (Basis::X, x)
            }
        }
    };
    let bit = match pair {
        0b01 => 0,
        0b10 => 1,
        _ => u8::from(coin()),
    };
    Some((basis, bit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_clicks_map_to_their_state_and_double_clicks_to_the_coin() {
        for (mask, state) in [(0b0001, 0), (0b0010, 1), (0b0100, 2), (0b1000, 3)] {
            let (basis, bit) = squash(mask, || unreachable!("no coin for a single click")).unwrap();
            assert_eq!(state_index(basis, bit), state);
        }
        for index in 0..4 {
            let (basis, bit) = state(index).unwrap();
            assert_eq!(state_index(basis, bit), index);
        }
        assert_eq!(state(4), None);
        assert_eq!(squash(0, || true), None);
        // Both of one basis: the coin is the bit.
        assert_eq!(squash(0b0011, || true), Some((Basis::Z, 1)));
        assert_eq!(squash(0b1100, || false), Some((Basis::X, 0)));
        // Both bases: the first coin picks the basis, a single click within it gives the bit.
        assert_eq!(squash(0b0101, || true), Some((Basis::Z, 0)));
        assert_eq!(squash(0b0101, || false), Some((Basis::X, 0)));
    }
}
