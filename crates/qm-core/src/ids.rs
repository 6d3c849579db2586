//! Identifiers: allocation ids (unique for the ledger's life, and cheap to look up), node and
//! pool indices, and the millisecond timestamps every command carries.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};
use std::str::FromStr;

const SLOT_BITS: u32 = 24;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

/// The most allocations one ledger holds live at once.
pub const MAX_LIVE: usize = 1 << SLOT_BITS;

/// An allocation's id: a sequence number that is never reused (creation order) and the slot
/// where the ledger keeps it, packed in one word. Printed as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocId(NonZeroU64);

impl AllocId {
    pub(crate) fn new(seq: u64, slot: usize) -> Option<Self> {
        let slot = u64::try_from(slot).ok().filter(|s| *s <= SLOT_MASK)?;
        let seq = seq
            .checked_shl(SLOT_BITS)
            .filter(|s| s >> SLOT_BITS == seq)?;
        NonZeroU64::new(seq | slot).map(Self)
    }

    /// The creation sequence number: later allocations have larger ones.
    pub fn seq(self) -> u64 {
        self.0.get() >> SLOT_BITS
    }

    pub(crate) fn slot(self) -> usize {
        // The slot has 24 bits, so it always fits a usize.
        usize::try_from(self.0.get() & SLOT_MASK).unwrap_or(usize::MAX)
    }

    /// The packed value, for storage.
    pub fn get(self) -> u64 {
        self.0.get()
    }

    /// Rebuilds an id from its packed value.
    pub fn from_raw(raw: u64) -> Option<Self> {
        NonZeroU64::new(raw).map(Self)
    }
}

impl fmt::Display for AllocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl fmt::Debug for AllocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.seq())
    }
}

/// Why a text is not an allocation id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an allocation id")]
pub struct BadAllocId(pub String);

impl FromStr for AllocId {
    type Err = BadAllocId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadAllocId(s.to_owned()));
        }
        u64::from_str_radix(s, 16)
            .ok()
            .and_then(Self::from_raw)
            .ok_or_else(|| BadAllocId(s.to_owned()))
    }
}

/// A node's index in the ledger's node table. Indices are never reused, so an ended
/// allocation's node can still be named after the node is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeIdx(NonZeroU32);

impl NodeIdx {
    /// The node at `index` in the node table (stored plus one, so `Option<NodeIdx>` is 4 bytes).
    pub(crate) fn from_index(index: usize) -> Option<Self> {
        u32::try_from(index)
            .ok()
            .and_then(|i| i.checked_add(1))
            .and_then(NonZeroU32::new)
            .map(Self)
    }

    /// The position in the node table.
    pub fn index(self) -> usize {
        (self.0.get() - 1) as usize
    }
}

/// A pool's index in the ledger's pool table; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolIdx(pub(crate) u32);

impl PoolIdx {
    /// The position in the pool table.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A point in time: milliseconds since the Unix epoch. The ledger never reads a clock; every
/// command is handed the time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(NonZeroU64);

impl Timestamp {
    /// The time `millis` milliseconds after the epoch (saturating just below `u64::MAX`).
    pub fn from_millis(millis: u64) -> Self {
        Self(NonZeroU64::MIN.saturating_add(millis.min(u64::MAX - 1)))
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> u64 {
        self.0.get() - 1
    }

    /// This time plus `millis`, saturating.
    #[must_use]
    pub fn plus_millis(self, millis: u64) -> Self {
        Self::from_millis(self.as_millis().saturating_add(millis))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn millis_since(self, earlier: Self) -> u64 {
        self.as_millis().saturating_sub(earlier.as_millis())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}ms", self.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_pack_seq_and_slot_and_round_trip_as_hex() {
        let id = AllocId::new(5, 7).unwrap();
        assert_eq!((id.seq(), id.slot()), (5, 7));
        assert_eq!(id.to_string(), "5000007");
        assert_eq!("5000007".parse::<AllocId>().unwrap(), id);
        assert!("".parse::<AllocId>().is_err());
        assert!("0".parse::<AllocId>().is_err());
        assert!("xyz".parse::<AllocId>().is_err());
        assert!("+1".parse::<AllocId>().is_err());
        assert!(AllocId::new(1, MAX_LIVE).is_none());
        assert!(AllocId::new(u64::MAX, 0).is_none());
    }

    #[test]
    fn timestamps_hold_zero_and_saturate() {
        assert_eq!(Timestamp::from_millis(0).as_millis(), 0);
        let t = Timestamp::from_millis(u64::MAX).plus_millis(5);
        assert_eq!(t.as_millis(), u64::MAX - 1);
        assert_eq!(
            Timestamp::from_millis(10).millis_since(Timestamp::from_millis(20)),
            0
        );
    }
}
