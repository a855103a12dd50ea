//! Sifting: from detections (or coincidence pairs) to key-basis and test-basis bits.
//!
//! Bob announces in which slots he detected and in which basis (never the bits); Alice answers
//! which announcements match her preparation basis and, for decoy-state links, each kept slot's
//! intensity class. Reference slots (publicly known states used for tracking) never enter a key.
//! The key basis is Z, the basis both sides choose most often; every test-basis bit is later
//! disclosed to estimate the phase error.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::bits::Bits;
use crate::slots::Detections;

pub use qkd_units::bb84::Basis;

/// A protocol message that does not fit what this side holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sifting: {0}")]
pub struct SiftError(pub String);

/// Bob's results after squashing double clicks: one basis and bit per detection.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Measurements {
    /// Slot (or pair index) of each result.
    pub slot: Vec<u64>,
    /// Measured basis.
    pub basis: Vec<Basis>,
    /// Measured bit (secret).
    pub bit: Vec<u8>,
}

impl std::fmt::Debug for Measurements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Measurements({} results)", self.slot.len())
    }
}

impl Drop for Measurements {
    fn drop(&mut self) {
        self.bit.zeroize();
    }
}

/// Fair coins for [`squash`], reproducible by seed (xorshift64). Double clicks carry no
/// information Eve controls, so the coin needs to be fair, not secret.
#[derive(Debug, Clone)]
pub struct SquashCoin(u64);

impl SquashCoin {
    /// A coin sequence fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SquashCoin(seed | 1)
    }

    /// The next fair bit.
    pub fn flip(&mut self) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 & 1 == 1
    }
}

/// Turns clicked detectors into a basis and bit, as a passive receiver must (see
/// [`qkd_units::bb84::squash`]); `coin` supplies fair random bits.
pub fn squash(detections: &Detections, mut coin: impl FnMut() -> bool) -> Measurements {
    let mut out = Measurements {
        slot: Vec::with_capacity(detections.len()),
        basis: Vec::with_capacity(detections.len()),
        bit: Vec::with_capacity(detections.len()),
    };
    for (&slot, &mask) in detections.slot.iter().zip(&detections.mask) {
        if let Some((basis, bit)) = qkd_units::bb84::squash(mask, &mut coin) {
            out.slot.push(slot);
            out.basis.push(basis);
            out.bit.push(bit);
        }
    }
    out
}

/// Bob's public announcement: where he detected, and in which basis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Slots (or pair indices).
    pub slot: Vec<u64>,
    /// Bases.
    pub basis: Vec<Basis>,
}

impl Measurements {
    /// The public part: slots and bases.
    pub fn announcement(&self) -> Announcement {
        Announcement {
            slot: self.slot.clone(),
            basis: self.basis.clone(),
        }
    }
}

/// Alice's preparation of the announced slots, in announcement order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Preparations {
    /// Preparation basis.
    pub basis: Vec<Basis>,
    /// Encoded bit (secret).
    pub bit: Vec<u8>,
    /// Intensity class (0 = signal).
    pub class: Vec<u8>,
    /// Publicly known reference state.
    pub reference: Vec<bool>,
}

impl std::fmt::Debug for Preparations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Preparations({} slots)", self.basis.len())
    }
}

impl Drop for Preparations {
    fn drop(&mut self) {
        self.bit.zeroize();
    }
}

/// What happens to one announced detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fate {
    /// Bases differ: discarded.
    Discard,
    /// A reference slot: never in a key; the state Alice prepared there (BB84 state index,
    /// see [`qkd_units::bb84::state_index`]) is public by design, for Bob's polarization tracking.
    Reference(u8),
    /// Matched in the key basis.
    Key,
    /// Matched in the test basis.
    Test,
}

/// Alice's public answer to an announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiftReply {
    /// Fate of every announced detection.
    pub fate: Vec<Fate>,
    /// Intensity class of every kept detection, in order.
    pub class: Vec<u8>,
}

/// One side's sifted bits with their intensity classes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sifted {
    /// Key-basis bits.
    pub key: Bits,
    /// Intensity class of each key bit.
    pub key_class: Vec<u8>,
    /// Test-basis bits (to be disclosed).
    pub test: Bits,
    /// Intensity class of each test bit.
    pub test_class: Vec<u8>,
}

impl Sifted {
    fn keep(&mut self, fate: Fate, bit: u8, class: u8) {
        match fate {
            Fate::Key => {
                self.key.push(bit != 0);
                self.key_class.push(class);
            }
            Fate::Test => {
                self.test.push(bit != 0);
                self.test_class.push(class);
            }
            Fate::Discard | Fate::Reference(_) => {}
        }
    }
}

impl Fate {
    /// The detection's bit is kept (in the key or the test basis).
    pub fn kept(self) -> bool {
        matches!(self, Fate::Key | Fate::Test)
    }
}

/// The reference detections of a sifted batch, as (prepared, measured) BB84 state indices.
pub fn reference_outcomes<'a>(
    measured: &'a Measurements,
    reply: &'a SiftReply,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    reply
        .fate
        .iter()
        .zip(measured.basis.iter().zip(&measured.bit))
        .filter_map(|(fate, (&basis, &bit))| match fate {
            Fate::Reference(state) => Some((
                usize::from(*state),
                qkd_units::bb84::state_index(basis, bit),
            )),
            _ => None,
        })
}

/// Alice's side: decide each announced detection's fate and keep her bits.
pub fn sift_as_preparer(
    announcement: &Announcement,
    prepared: &Preparations,
) -> Result<(SiftReply, Sifted), SiftError> {
    let n = announcement.slot.len();
    if announcement.basis.len() != n
        || prepared.basis.len() != n
        || prepared.bit.len() != n
        || prepared.class.len() != n
        || prepared.reference.len() != n
    {
        return Err(SiftError(format!(
            "announcement of {n} detections does not match {} preparations",
            prepared.basis.len()
        )));
    }
    let mut reply = SiftReply {
        fate: Vec::with_capacity(n),
        class: Vec::new(),
    };
    let mut sifted = Sifted::default();
    for i in 0..n {
        let fate = if prepared.reference[i] {
            Fate::Reference(qkd_units::bb84::state_index(prepared.basis[i], prepared.bit[i]) as u8)
        } else if prepared.basis[i] != announcement.basis[i] {
            Fate::Discard
        } else if prepared.basis[i] == Basis::Z {
            Fate::Key
        } else {
            Fate::Test
        };
        reply.fate.push(fate);
        if fate.kept() {
            reply.class.push(prepared.class[i]);
        }
        sifted.keep(fate, prepared.bit[i], prepared.class[i]);
    }
    Ok((reply, sifted))
}

/// Bob's side: keep the bits Alice's reply marks.
pub fn sift_as_measurer(measured: &Measurements, reply: &SiftReply) -> Result<Sifted, SiftError> {
    if reply.fate.len() != measured.slot.len() {
        return Err(SiftError(format!(
            "reply covers {} detections, {} were announced",
            reply.fate.len(),
            measured.slot.len()
        )));
    }
    let kept = reply.fate.iter().filter(|f| f.kept()).count();
    if reply.class.len() != kept {
        return Err(SiftError(format!(
            "reply gives {} classes for {kept} kept detections",
            reply.class.len()
        )));
    }
    let mut sifted = Sifted::default();
    let mut classes = reply.class.iter();
    for (i, &fate) in reply.fate.iter().enumerate() {
        let expected = match measured.basis[i] {
            Basis::Z => Fate::Key,
            Basis::X => Fate::Test,
        };
        if let Fate::Reference(state) = fate
            && state > 3
        {
            return Err(SiftError(format!(
                "detection {i} is marked a reference of state {state}: there are four"
            )));
        }
        if fate.kept() && fate != expected {
            return Err(SiftError(format!(
                "detection {i} was measured in {:?} but marked {fate:?}",
                measured.basis[i]
            )));
        }
        if fate.kept() {
            let class = classes.next().copied().unwrap_or(0);
            sifted.keep(fate, measured.bit[i], class);
        }
    }
    Ok(sifted)
}

/// Test-basis errors per intensity class, from Alice's bits and the bits Bob disclosed.
pub fn test_errors(
    prepared: &Sifted,
    disclosed: &Bits,
    classes: usize,
) -> Result<Vec<u64>, SiftError> {
    if disclosed.len() != prepared.test.len() {
        return Err(SiftError(format!(
            "{} test bits disclosed, {} expected",
            disclosed.len(),
            prepared.test.len()
        )));
    }
    let mut errors = vec![0u64; classes];
    for i in 0..disclosed.len() {
        if disclosed.get(i) != prepared.test.get(i) {
            let class = usize::from(prepared.test_class[i]);
            let slot = errors
                .get_mut(class)
                .ok_or_else(|| SiftError(format!("intensity class {class} out of range")))?;
            *slot += 1;
        }
    }
    Ok(errors)
}

/// Detections per intensity class.
pub fn class_counts(classes: &[u8], count: usize) -> Vec<u64> {
    let mut n = vec![0u64; count];
    for &c in classes {
        if let Some(slot) = n.get_mut(usize::from(c)) {
            *slot += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_keep_the_same_positions_and_classes() {
        let detections = Detections {
            slot: vec![1, 2, 3, 4, 5],
            mask: vec![0b0001, 0b0100, 0b0010, 0b1000, 0b0001],
        };
        let bob = squash(&detections, || false);
        assert_eq!(bob.bit, vec![0, 0, 1, 1, 0]);
        let prepared = Preparations {
            basis: vec![Basis::Z, Basis::X, Basis::Z, Basis::Z, Basis::Z],
            bit: vec![0, 0, 0, 1, 0],
            class: vec![0, 1, 2, 0, 1],
            reference: vec![false, false, false, false, true],
        };
        let (reply, alice) = sift_as_preparer(&bob.announcement(), &prepared).unwrap();
        assert_eq!(
            reply.fate,
            vec![
                Fate::Key,
                Fate::Test,
                Fate::Key,
                Fate::Discard,
                Fate::Reference(0)
            ]
        );
        // The reference (H sent, H measured) reaches Bob's tracker, never a key.
        assert_eq!(
            reference_outcomes(&bob, &reply).collect::<Vec<_>>(),
            [(0, 0)]
        );
        let bob_sifted = sift_as_measurer(&bob, &reply).unwrap();
        assert_eq!(alice.key.len(), 2);
        assert_eq!(alice.key_class, bob_sifted.key_class);
        assert_eq!(alice.key.hamming_distance(&bob_sifted.key), 1);
        assert_eq!(
            test_errors(&alice, &bob_sifted.test, 3).unwrap(),
            vec![0, 0, 0]
        );
    }

    #[test]
    fn malformed_replies_are_refused() {
        let bob = Measurements {
            slot: vec![1, 2],
            basis: vec![Basis::Z, Basis::X],
            bit: vec![0, 1],
        };
        let no_such_state = SiftReply {
            fate: vec![Fate::Key, Fate::Reference(7)],
            class: vec![0],
        };
        assert!(sift_as_measurer(&bob, &no_such_state).is_err());
        let short = SiftReply {
            fate: vec![Fate::Key],
            class: vec![0],
        };
        assert!(sift_as_measurer(&bob, &short).is_err());
        let wrong_basis = SiftReply {
            fate: vec![Fate::Test, Fate::Discard],
            class: vec![0],
        };
        assert!(sift_as_measurer(&bob, &wrong_basis).is_err());
        let missing_class = SiftReply {
            fate: vec![Fate::Key, Fate::Test],
            class: vec![0],
        };
        assert!(sift_as_measurer(&bob, &missing_class).is_err());
    }

    #[test]
    fn double_clicks_are_squashed_at_random() {
        let detections = Detections {
            slot: (0..10_000).collect(),
            mask: vec![0b0011; 10_000],
        };
        let mut coin = SquashCoin::new(0x1234_5678);
        let m = squash(&detections, || coin.flip());
        let ones = m.bit.iter().filter(|&&b| b == 1).count() as f64;
        assert!((ones - 5_000.0).abs() < 5.0 * 50.0);
        assert!(m.basis.iter().all(|&b| b == Basis::Z));
    }
}
