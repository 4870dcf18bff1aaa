//! SQL Server LSNs and how they become the core's `Position(u64)`.
//!
//! An LSN is a triple (VLF sequence number: u32, log block offset: u32, slot: u16); the DMVs show it as
//! `numeric(25,0)` = `vlf * 10^15 + block * 10^5 + slot` (e.g. `71000009408100001` = 71 / 94081 / 1),
//! and ARM shows the same digits as a string. That needs up to 82 bits, more than `Position(u64)` holds.
//!
//! The mapping is `Position = vlf << 32 | block`: lexicographic order of the triple is preserved
//! (a < b ⇒ position(a) ≤ position(b)) and it is exact at log-block granularity; only the slot is dropped.
//! That is exact for what cutover compares: `last_hardened_lsn` is hardened per log block (the DMV columns
//! are "log-block IDs padded with zeros", mi-link.md §3.3), so two hardened LSNs map to equal positions
//! exactly when they are the same block. For record-level LSNs (`end_of_log_lsn`) two records in one block
//! map to the same position, which only ever makes a comparison more conservative in the stall detector.
//! The lossless alternative (a 128-bit `Position`) is proposed in the engine's report.
use milink_core::migration::Position;
use std::fmt;

/// A parsed SQL Server LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn {
    /// Virtual log file sequence number.
    pub vlf: u32,
    /// Log block offset within the VLF.
    pub block: u32,
    /// Slot (log record) within the block.
    pub slot: u16,
}

const BLOCK_FACTOR: u128 = 100_000;
const VLF_FACTOR: u128 = 1_000_000_000_000_000;

impl Lsn {
    /// Parses the decimal form (`numeric(25,0)` from a DMV, or ARM's string). Leading/trailing spaces and a
    /// `.0` suffix (numeric rendered as decimal) are tolerated; anything else that does not fit the triple is
    /// refused rather than wrapped.
    pub fn parse_decimal(text: &str) -> Option<Self> {
        let trimmed = text.trim();
        let digits = trimmed.strip_suffix(".0").unwrap_or(trimmed);
        if digits.is_empty() || digits.len() > 25 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let value: u128 = digits.parse().ok()?;
        let vlf = u32::try_from(value / VLF_FACTOR).ok()?;
        let block = u32::try_from((value % VLF_FACTOR) / BLOCK_FACTOR).ok()?;
        let slot = u16::try_from(value % BLOCK_FACTOR).ok()?;
        Some(Self { vlf, block, slot })
    }

    /// The decimal form.
    pub fn to_decimal(self) -> u128 {
        u128::from(self.vlf) * VLF_FACTOR + u128::from(self.block) * BLOCK_FACTOR + u128::from(self.slot)
    }

    /// The core position: `vlf << 32 | block` (see the module documentation).
    pub fn position(self) -> Position {
        Position(u64::from(self.vlf) << 32 | u64::from(self.block))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_decimal())
    }
}

/// Parses a decimal LSN straight to a position.
pub fn position_of(text: &str) -> Option<Position> {
    Lsn::parse_decimal(text).map(Lsn::position)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_arm_example_lsn_splits_into_its_parts() {
        let lsn = Lsn::parse_decimal("71000009408100001").unwrap();
        assert_eq!(lsn, Lsn { vlf: 71, block: 94081, slot: 1 });
        assert_eq!(lsn.position(), Position((71u64 << 32) | 94081));
        assert_eq!(lsn.to_string(), "71000009408100001");
    }

    #[test]
    fn values_that_do_not_fit_the_triple_are_refused() {
        assert!(Lsn::parse_decimal("").is_none());
        assert!(Lsn::parse_decimal("-1").is_none());
        assert!(Lsn::parse_decimal("12a").is_none());
        // block offset above u32::MAX
        assert!(Lsn::parse_decimal("1999999999900001").is_none());
        // slot above u16::MAX
        assert!(Lsn::parse_decimal("1000000000099999").is_none());
        // VLF above u32::MAX
        assert!(Lsn::parse_decimal("4294967296000000000000000").is_none());
        assert!(Lsn::parse_decimal("4294967295000000000000000").is_some());
        assert_eq!(Lsn::parse_decimal(" 71000009408100001.0 "), Lsn::parse_decimal("71000009408100001"));
    }

    proptest! {
        #[test]
        fn the_position_preserves_order(a in any::<(u32, u32, u16)>(), b in any::<(u32, u32, u16)>()) {
            let la = Lsn { vlf: a.0, block: a.1, slot: a.2 };
            let lb = Lsn { vlf: b.0, block: b.1, slot: b.2 };
            let parsed = Lsn::parse_decimal(&la.to_decimal().to_string()).unwrap();
            prop_assert_eq!(parsed, la);
            if la < lb {
                prop_assert!(la.position() <= lb.position());
            }
            if (la.vlf, la.block) != (lb.vlf, lb.block) {
                prop_assert_ne!(la.position(), lb.position());
            }
        }
    }
}
