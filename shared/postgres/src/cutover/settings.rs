//! The read-only settings the fence writes, and the per-migration keys that remember what was there.
//!
//! Each `pg_db_role_setting` entry the fence touches (the database's own, and every role-in-database entry
//! that could override it) gets `default_transaction_read_only = on` plus one key per fencing migration,
//! `milink.fence_<link name>`, holding the value in force before the *first* fence (`unset` when there was
//! none). Every key on an entry holds the same value: a second migration copies it from the first one's key
//! instead of reading the `on` the first one wrote. An entry stays `on` while any key remains; the unfence
//! that removes the last key restores the saved value. Each fence's and each unfence's changes are one
//! transaction, so there is no state in between for a crash to leave.
//!
//! A database fenced by milink before keys were per migration holds one `milink.saved_read_only` instead.
//! It counts as one more migration's key; the first unfence that finds no key of its own takes it as its
//! own (the migration that fenced with the old key is the only one that would unfence without a key).
use crate::connect::Session;
use crate::sql::{quote_ident, quote_literal};
use milink_core::EngineError;

pub(super) const SETTING: &str = "default_transaction_read_only";
/// The single key of fences made before keys were per migration.
pub(super) const LEGACY_KEY: &str = "milink.saved_read_only";
/// Prefix of the per-migration keys.
const KEY_PREFIX: &str = "milink.fence_";
/// The source's own subscriptions the fence disabled (oids, comma-separated), on the database's entry.
pub(super) const DISABLED_SUBSCRIPTIONS: &str = "milink.disabled_subscriptions";
const UNSET: &str = "unset";

/// The key of one migration's fence.
pub(super) fn key_of(link_name: &str) -> String {
    format!("{KEY_PREFIX}{link_name}")
}

fn is_fence_key(name: &str) -> bool {
    name.starts_with(KEY_PREFIX) || name == LEGACY_KEY
}

/// One `pg_db_role_setting` entry: the database's own (`role` None) or a role's in it.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) role: Option<String>,
    /// Every `name=value` item of the entry.
    pub(super) config: Vec<String>,
}

impl Entry {
    fn target(&self, database: &str) -> String {
        match &self.role {
            None => format!("DATABASE {}", quote_ident(database)),
            Some(role) => format!("ROLE {} IN DATABASE {}", quote_ident(role), quote_ident(database)),
        }
    }

    pub(super) fn value(&self, name: &str) -> Option<&str> {
        self.config.iter().find_map(|item| item.strip_prefix(name)?.strip_prefix('='))
    }

    /// The fence keys on this entry, as (name, saved value).
    fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.config.iter().filter_map(|item| item.split_once('=')).filter(|(name, _)| is_fence_key(name))
    }
}

/// The database's entry and every role entry that could override it for this database
/// or holds a fence key.
pub(super) async fn entries(admin: &Session, database_oid: u32) -> Result<Vec<Entry>, EngineError> {
    let rows = admin
        .rows(
            "reading database and role settings",
            "SELECT NULL::text, coalesce((SELECT setconfig FROM pg_db_role_setting
                                          WHERE setdatabase = $1 AND setrole = 0), '{}')
             UNION ALL
             (SELECT r.rolname::text, coalesce((SELECT s.setconfig FROM pg_db_role_setting s
                                                WHERE s.setdatabase = $1 AND s.setrole = r.oid), '{}')
              FROM pg_roles r
              WHERE EXISTS (SELECT 1 FROM pg_db_role_setting s, unnest(s.setconfig) AS item
                            WHERE s.setrole = r.oid AND s.setdatabase IN (0, $1)
                              AND (item LIKE 'default\\_transaction\\_read\\_only=%' OR item LIKE 'milink.%'))
              ORDER BY 1)",
            &[&database_oid],
        )
        .await?;
    Ok(rows.iter().map(|row| Entry { role: row.get(0), config: row.get(1) }).collect())
}

/// The statements that fence every entry for `key`'s migration: its key first (the value before the first
/// fence), then `on`. Repeating them changes nothing.
pub(super) fn fence_statements(entries: &[Entry], database: &str, key: &str) -> Vec<String> {
    let mut statements = Vec::new();
    for entry in entries {
        let target = entry.target(database);
        if entry.value(key).is_none() {
            // Another migration's key already holds the value from before any fence; the current value
            // may be that migration's `on`.
            let before = entry.keys().map(|(_, saved)| saved).next().or(entry.value(SETTING)).unwrap_or(UNSET);
            statements.push(format!("ALTER {target} SET {key} = {}", quote_literal(before)));
        }
        if entry.value(SETTING) != Some("on") {
            statements.push(format!("ALTER {target} SET {SETTING} = on"));
        }
    }
    statements
}

/// What unfencing `key`'s migration does: the statements, and whether it was the last fence on the database
/// (then the database's original value comes back, and so do the subscriptions the fence disabled).
pub(super) struct Unfence {
    pub(super) statements: Vec<String>,
    pub(super) last: bool,
}

pub(super) fn unfence_statements(entries: &[Entry], database: &str, key: &str) -> Unfence {
    // A fence made before keys were per migration is taken over by an unfence that has no key of its own.
    let database_entry = entries.iter().find(|entry| entry.role.is_none());
    let own = match database_entry.is_some_and(|db| db.value(key).is_none() && db.value(LEGACY_KEY).is_some()) {
        true => LEGACY_KEY,
        false => key,
    };
    let mut statements = Vec::new();
    let mut last = false;
    for entry in entries {
        let Some(saved) = entry.value(own) else { continue };
        let target = entry.target(database);
        let alone = entry.keys().all(|(name, _)| name == own);
        if alone {
            statements.push(match saved {
                UNSET => format!("ALTER {target} RESET {SETTING}"),
                value => format!("ALTER {target} SET {SETTING} = {}", quote_literal(value)),
            });
            last |= entry.role.is_none();
        }
        statements.push(format!("ALTER {target} RESET {own}"));
    }
    Unfence { statements, last }
}

/// Runs `statements` as one transaction: all of them or none.
pub(super) async fn apply(admin: &Session, doing: &str, statements: &[String]) -> Result<(), EngineError> {
    if statements.is_empty() {
        return Ok(());
    }
    let body = statements.join(";\n");
    let result = admin.run(doing, &format!("BEGIN;\n{body};\nCOMMIT")).await;
    if result.is_err() {
        // A statement that failed left the transaction open and aborted; nothing of it was committed.
        let _ = admin.try_run("ROLLBACK").await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(role: Option<&str>, config: &[&str]) -> Entry {
        Entry { role: role.map(str::to_owned), config: config.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn entries_name_the_database_or_the_role_in_it_quoted() {
        assert_eq!(entry(None, &[]).target("Toy\"Store"), "DATABASE \"Toy\"\"Store\"");
        assert_eq!(entry(Some("app user"), &[]).target("db"), "ROLE \"app user\" IN DATABASE \"db\"");
    }

    #[test]
    fn a_first_fence_saves_the_value_in_force_and_a_second_copies_it() {
        let fresh = [entry(None, &["search_path=app"]), entry(Some("boss"), &["default_transaction_read_only=off"])];
        let first = fence_statements(&fresh, "db", "milink.fence_a");
        assert_eq!(
            first,
            [
                "ALTER DATABASE \"db\" SET milink.fence_a = 'unset'",
                "ALTER DATABASE \"db\" SET default_transaction_read_only = on",
                "ALTER ROLE \"boss\" IN DATABASE \"db\" SET milink.fence_a = 'off'",
                "ALTER ROLE \"boss\" IN DATABASE \"db\" SET default_transaction_read_only = on",
            ]
        );
        let fenced = [entry(None, &["default_transaction_read_only=on", "milink.fence_a=unset"])];
        assert_eq!(fence_statements(&fenced, "db", "milink.fence_b"), ["ALTER DATABASE \"db\" SET milink.fence_b = 'unset'"]);
        assert!(fence_statements(&fenced, "db", "milink.fence_a").is_empty(), "fencing twice changes nothing");
    }

    #[test]
    fn only_the_last_unfence_restores_the_value() {
        let both = [entry(None, &["default_transaction_read_only=on", "milink.fence_a=off", "milink.fence_b=off"])];
        let first = unfence_statements(&both, "db", "milink.fence_a");
        assert_eq!(first.statements, ["ALTER DATABASE \"db\" RESET milink.fence_a"]);
        assert!(!first.last);
        let one = [entry(None, &["default_transaction_read_only=on", "milink.fence_b=off"])];
        let last = unfence_statements(&one, "db", "milink.fence_b");
        assert_eq!(
            last.statements,
            ["ALTER DATABASE \"db\" SET default_transaction_read_only = 'off'", "ALTER DATABASE \"db\" RESET milink.fence_b"]
        );
        assert!(last.last);
        let none = unfence_statements(&one, "db", "milink.fence_a");
        assert!(none.statements.is_empty() && !none.last, "an unfence without a key touches nothing");
    }

    #[test]
    fn a_fence_of_the_old_single_key_is_taken_over_by_an_unfence_without_its_own_key() {
        let old = [entry(None, &["default_transaction_read_only=on", "milink.saved_read_only=unset"])];
        let unfence = unfence_statements(&old, "db", "milink.fence_a");
        assert_eq!(
            unfence.statements,
            ["ALTER DATABASE \"db\" RESET default_transaction_read_only", "ALTER DATABASE \"db\" RESET milink.saved_read_only"]
        );
        assert_eq!(fence_statements(&old, "db", "milink.fence_a"), ["ALTER DATABASE \"db\" SET milink.fence_a = 'unset'"]);
    }
}
