//! What a content verification found, and what schema drift the link reports: the proof behind
//! "Completed" and behind "ready for cutover".
//!
//! A [`Verification`] is what an engine returns from `verify` (on demand while the link syncs) and from
//! `finalize` (inside the cutover, after the drain). It says how the sides were compared
//! ([`VerifyMethod`]), whether every table in scope was covered (`complete`), per table the rows on each
//! side and the key ranges whose content differs, and the differences that are not about rows (a table or
//! column missing on one side, a sequence that would hand out another next value, large objects the link
//! does not carry). The flow lets a cutover complete only on a verification that [`Verification::is_clean`]:
//! complete, with no difference of any kind.
//!
//! [`SchemaChange`] is what the link's observation reports when the source's schema moved after the link
//! was made: changes the engine carried (a new table created on the target and added to the link) are
//! informative; the others block the cutover until they are resolved.
use crate::migration::Position;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How many differing keys a table lists at most; the count of differing rows is always exact.
pub const MAX_LISTED_KEYS: usize = 50;

/// How the two sides were compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum VerifyMethod {
    /// Exact row counts only (what every cutover did before content verification existed; still what an
    /// engine without checksums reports). Sees inserts and deletes, not updates.
    #[default]
    RowCount,
    /// Checksums over key-ordered chunks of every row's content, with differing chunks bisected down to
    /// the differing keys.
    Checksum,
    /// The target is a physical replica of the source (the MI link): positions prove equality; row counts
    /// are a cross-check where the target can be queried.
    PhysicalReplica,
}

/// The outcome of a verification (on demand or at cutover).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// How the sides were compared.
    #[serde(default)]
    pub method: VerifyMethod,
    /// Every table in scope was compared (a verification that skipped or could not settle a table is not
    /// complete, and a cutover does not complete on it).
    #[serde(default)]
    pub complete: bool,
    /// Per table: rows on each side and the key ranges that differ.
    pub tables: Vec<TableCount>,
    /// Sequences set on the target (cutover only).
    pub sequences_set: u32,
    /// Differences that are not about a table's rows: scope, columns, sequences, large objects.
    #[serde(default)]
    pub differences: Vec<Difference>,
    /// The source position the comparison is valid at.
    #[serde(default)]
    pub source_position: Option<Position>,
    /// The target position it was compared at.
    #[serde(default)]
    pub target_position: Option<Position>,
    /// When it started.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Rows read on the source (the work done; with the elapsed time, the throughput).
    #[serde(default)]
    pub rows_compared: u64,
    /// Why it is not complete, when it is not (tables that never settled under load, for example).
    #[serde(default)]
    pub incomplete_reason: Option<String>,
    /// At cutover: how the comparison inside the write-downtime window built on the verification made
    /// before the fence (None for an on-demand verification, or an engine that compares in full).
    #[serde(default)]
    pub window: Option<WindowCheck>,
}

/// What a cutover's verification compared inside the write-downtime window. Every table was compared
/// in full before the fence (at matched positions, while the link synced); inside the window only what
/// changed since is compared again: keys changed on the source or written on the target since, and whole
/// tables that changed without keys (truncated, no key) or were not found equal before the fence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct WindowCheck {
    /// Changes decoded since the verification before the fence (source, and the target's own writes).
    pub changes: u64,
    /// Rows compared inside the window (by key, and whole tables).
    pub rows_compared: u64,
    /// Tables compared whole inside the window, each with why.
    #[serde(default)]
    pub whole_tables: Vec<String>,
    /// Why everything was compared inside the window, when it was (no tracked verification before the
    /// fence: it did not finish, or the target's writes could not be tracked).
    #[serde(default)]
    pub full_reason: Option<String>,
}

/// One table compared on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableCount {
    /// Qualified table name.
    pub table: String,
    /// Rows on the source.
    pub source_rows: u64,
    /// Rows on the target.
    pub target_rows: u64,
    /// Chunks compared (0 for a count-only comparison).
    #[serde(default)]
    pub chunks: u32,
    /// Key ranges whose content differs, narrowed by bisection.
    #[serde(default)]
    pub differing: Vec<DifferingRange>,
}

/// A key range whose rows differ between the sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DifferingRange {
    /// First key of the range (as text, in key order), inclusive.
    pub from_key: String,
    /// Last key of the range, inclusive.
    pub to_key: String,
    /// Rows in the range on the source.
    pub source_rows: u64,
    /// Rows in the range on the target.
    pub target_rows: u64,
    /// The differing keys themselves, when the range was narrowed to single rows (at most
    /// [`MAX_LISTED_KEYS`] per table).
    #[serde(default)]
    pub keys: Vec<String>,
}

/// What kind of non-row difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DifferenceKind {
    /// A table of the source is not in the link or not on the target.
    MissingTable,
    /// A table exists on the target only.
    ExtraTable,
    /// Columns (names or types) differ.
    Columns,
    /// A sequence would hand out a different next value.
    Sequence,
    /// Large objects the link does not carry.
    LargeObjects,
    /// Anything else the engine checks.
    Other,
}

/// A difference that is not about a table's rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Difference {
    /// What kind.
    pub kind: DifferenceKind,
    /// The object (qualified name).
    pub object: String,
    /// What differs, in words.
    pub detail: String,
    /// What to do.
    pub remediation: String,
}

impl TableCount {
    /// A count-only comparison.
    pub fn counted(table: impl Into<String>, source_rows: u64, target_rows: u64) -> Self {
        Self { table: table.into(), source_rows, target_rows, chunks: 0, differing: Vec::new() }
    }

    /// The sides differ.
    pub fn differs(&self) -> bool {
        self.source_rows != self.target_rows || !self.differing.is_empty()
    }
}

impl Verification {
    /// Tables whose rows differ (by count or content).
    pub fn mismatches(&self) -> Vec<&TableCount> {
        self.tables.iter().filter(|t| t.differs()).collect()
    }

    /// Found a difference that is proven, not merely unsettled: a table's rows or the schema differ. A
    /// cutover is refused on it before the fence (a later clean verification lifts the block).
    pub fn proves_a_difference(&self) -> bool {
        !self.differences.is_empty() || !self.mismatches().is_empty()
    }

    /// Complete and without any difference: the only verification a cutover completes on.
    pub fn is_clean(&self) -> bool {
        self.complete && self.differences.is_empty() && self.mismatches().is_empty()
    }

    /// One line naming what differs (or why the verification is not complete), for reasons and history.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .mismatches()
            .iter()
            .map(|t| {
                let keys: Vec<&str> = t.differing.iter().flat_map(|r| r.keys.iter().map(String::as_str)).take(5).collect();
                match (t.source_rows != t.target_rows, keys.is_empty()) {
                    (true, _) => format!("{} (source {} rows, target {})", t.table, t.source_rows, t.target_rows),
                    (false, false) => format!("{} (rows differ at key {})", t.table, keys.join(", ")),
                    (false, true) => format!("{} ({} key ranges differ)", t.table, t.differing.len()),
                }
            })
            .collect();
        parts.extend(self.differences.iter().map(|d| format!("{}: {}", d.object, d.detail)));
        if parts.is_empty() && !self.complete {
            parts.push(self.incomplete_reason.clone().unwrap_or_else(|| "not every table in scope was compared".into()));
        }
        if parts.is_empty() {
            return format!("{} tables equal", self.tables.len());
        }
        parts.join("; ")
    }
}

/// A change to the source's schema after the link was made, as the link's observation reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaChange {
    /// The object (qualified name).
    pub object: String,
    /// What changed, in words ("new table", "column added: note text", "type changed", ...).
    pub change: String,
    /// milink carried it to the target and the link; informative only. When false it blocks the cutover.
    pub carried: bool,
    /// What to do when it is not carried.
    pub remediation: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verification_is_clean_only_when_complete_and_equal() {
        let equal = Verification { complete: true, tables: vec![TableCount::counted("t", 3, 3)], ..Verification::default() };
        assert!(equal.is_clean());
        assert!(!Verification { complete: false, ..equal.clone() }.is_clean(), "an incomplete verification proves nothing");
        let mut updated = equal.clone();
        updated.tables[0].differing.push(DifferingRange {
            from_key: "(7)".into(),
            to_key: "(7)".into(),
            source_rows: 1,
            target_rows: 1,
            keys: vec!["(7)".into()],
        });
        assert!(!updated.is_clean(), "equal counts with a changed row must not pass");
        assert!(updated.summary().contains("(7)"), "{}", updated.summary());
        let drifted = Verification {
            differences: vec![Difference {
                kind: DifferenceKind::MissingTable,
                object: "public.new".into(),
                detail: "missing on the target".into(),
                remediation: "x".into(),
            }],
            ..equal
        };
        assert!(!drifted.is_clean());
    }

    #[test]
    fn verifications_stored_before_content_checks_still_load() {
        let old = r#"{"tables":[{"table":"t","sourceRows":1,"targetRows":1}],"sequencesSet":2}"#;
        let v: Verification = serde_json::from_str(old).unwrap();
        assert_eq!(v.method, VerifyMethod::RowCount);
        assert!(!v.complete);
    }
}
