//! The comparison, without I/O: two snapshots in, a list of changes out, each with the steps that carry
//! it (none when it cannot be carried).
//!
//! Additive changes get steps: a new table (created from pg_dump, added to the publication, the
//! subscription refreshed so its rows are copied), a new column whose value for existing rows can be
//! reproduced exactly, a changed default or NOT NULL (metadata only), a new sequence. A column can be
//! reproduced when PostgreSQL stored the value old rows read (`attmissingval`, the fast default: exact
//! even for `now()`), when it has no default (old rows read NULL on both sides), when its default is a
//! plain constant, or when it is a stored generated column. Anything else — a type change, a dropped or
//! renamed column or table, a table only the target has, a new table without a key, a volatile default on
//! a rewritten table — is reported with what to do, and blocks the cutover.
//!
//! Renames are never carried as something new. A table that both gained and lost columns is treated as a
//! suspected column rename: nothing is added to it, because adding the new name would fill old rows with
//! NULL where the source has their values. A table the publication holds but the target lacks was renamed
//! (membership follows the table; a new one is published only after the target has it): copying it under
//! the new name would collide with the old one's index names, so the user is told to rename it on the
//! target. A renamed *partition* is not recognised: it shows as a new partition that fails to attach
//! (its bounds overlap the old one's) next to the old one, both reported.
use super::catalog::{Column, Name, Relation, Snapshot};
use crate::sql::{qualified, quote_ident, quote_literal};
use milink_core::migration::SchemaChange;

/// One thing the carrier does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Step {
    /// Create the table on the target from pg_dump's definition (with its indexes and constraints).
    CreateTable(Name),
    /// `ALTER PUBLICATION ... ADD TABLE`.
    Publish(Name),
    /// `ALTER SUBSCRIPTION ... REFRESH PUBLICATION WITH (copy_data = true)`.
    Refresh,
    /// Statements run on the target in one transaction (column changes).
    Alter(String),
    /// `CREATE SEQUENCE IF NOT EXISTS` on the target with the source's parameters.
    CreateSequence(Name),
}

/// A difference, and how to carry it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    /// `carried` is false here; the carrier sets it once every step succeeded.
    pub(crate) change: SchemaChange,
    /// Empty: it cannot be carried.
    pub(crate) steps: Vec<Step>,
}

fn display((schema, name): &Name) -> String {
    format!("{schema}.{name}")
}

fn sql_name((schema, name): &Name) -> String {
    qualified(schema, name)
}

fn item(object: String, change: String, remediation: String, steps: Vec<Step>) -> Item {
    Item { change: SchemaChange { object, change, carried: false, remediation }, steps }
}

const RESTART: &str = "or cancel the migration and start it again";

/// Every difference between the source and the target (and the link's membership).
pub(crate) fn compare(source: &Snapshot, target: &Snapshot) -> Vec<Item> {
    let mut items = Vec::new();
    for (name, relation) in &source.relations {
        match (relation.kind, target.relations.get(name)) {
            ('S', None) => items.push(item(
                display(name),
                "new sequence".into(),
                String::new(),
                vec![Step::CreateSequence(name.clone())],
            )),
            ('S', Some(_)) => {}
            // Publication membership follows a table through a rename; a table new since the link is
            // published only once the target has it.
            (_, None) if source.published.contains(name) => items.push(renamed_table(name, source, target)),
            (_, None) => items.push(new_table(name, relation, source, target)),
            (_, Some(_)) => {
                items.extend(membership(name, relation, source, target));
                if !relation.is_partition {
                    items.extend(compare_columns(name, &source.columns[name], target.columns.get(name)));
                }
            }
        }
    }
    for (name, relation) in &target.relations {
        if source.relations.contains_key(name) {
            continue;
        }
        let (what, drop) = match relation.kind {
            'S' => ("sequence", "DROP SEQUENCE"),
            _ => ("table", "DROP TABLE"),
        };
        items.push(item(
            display(name),
            format!("{what} dropped or renamed on the source (the target still has it)"),
            format!(
                "If it was dropped on purpose, drop it on the target too ({drop} {};); if it was renamed, rename \
                 it on the target too (ALTER {} ... RENAME TO <its new name>;). Or cancel the migration and start it \
                 again.",
                sql_name(name),
                what.to_uppercase(),
            ),
            Vec::new(),
        ));
    }
    items
}

/// A published table the target lacks: renamed or moved on the source (its indexes keep their names, so a
/// copy under the new name would collide with the old table's), or dropped on the target.
fn renamed_table(name: &Name, source: &Snapshot, target: &Snapshot) -> Item {
    let shape = |columns: Option<&Vec<Column>>| -> Vec<(String, String)> {
        columns.into_iter().flatten().map(|c| (c.name.clone(), c.type_name.clone())).collect()
    };
    let old = target.relations.keys().find(|candidate| {
        !source.relations.contains_key(*candidate) && shape(target.columns.get(*candidate)) == shape(source.columns.get(name))
    });
    let old_sql = old.map(sql_name).unwrap_or_else(|| "<its old name>".into());
    let (schema, table) = (quote_ident(&name.0), quote_ident(&name.1));
    let change = match old {
        Some(old) => format!("table renamed on the source (from {})", display(old)),
        None => "table renamed on the source (or dropped on the target)".into(),
    };
    item(
        display(name),
        change,
        format!(
            "Rename it on the target too (ALTER TABLE {old_sql} RENAME TO {table}; and ALTER TABLE ... SET SCHEMA              {schema} if it moved), then milink refreshes the link; {RESTART}."
        ),
        Vec::new(),
    )
}

/// Goes into the publication itself (partitions come with their root; unlogged rows are not replicated).
fn publishable(relation: &Relation) -> bool {
    !relation.unlogged && !relation.is_partition
}

fn new_table(name: &Name, relation: &Relation, source: &Snapshot, target: &Snapshot) -> Item {
    if !relation.has_identity && !relation.unlogged {
        return item(
            display(name),
            "new table without a primary key or replica identity".into(),
            format!(
                "Logical replication cannot carry its UPDATEs and DELETEs: on the source add a primary key \
                 (ALTER TABLE {0} ADD PRIMARY KEY (...)) or run ALTER TABLE {0} REPLICA IDENTITY FULL; milink then \
                 creates it on the target and adds it to the link.",
                sql_name(name)
            ),
            Vec::new(),
        );
    }
    let mut steps = vec![create_table(name, relation, target)];
    if publishable(relation) && !source.published.contains(name) {
        steps.push(Step::Publish(name.clone()));
    }
    let change = match relation.unlogged {
        true => "new unlogged table (created on the target; its rows are not replicated)",
        false => {
            steps.push(Step::Refresh);
            "new table"
        }
    };
    item(display(name), change.into(), String::new(), steps)
}

/// A new partition of a table the target has is made a partition of it there (it inherits columns, keys
/// and indexes, as on the source); pg_dump would add a primary key the attachment already created. Any
/// other new table comes from pg_dump.
fn create_table(name: &Name, relation: &Relation, target: &Snapshot) -> Step {
    match &relation.partition_of {
        Some((parent, clause)) if target.relations.contains_key(parent) => Step::Alter(format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} {clause}",
            sql_name(name),
            sql_name(parent)
        )),
        _ => Step::CreateTable(name.clone()),
    }
}

/// A table both sides have, but the link does not carry (yet).
fn membership(name: &Name, relation: &Relation, source: &Snapshot, target: &Snapshot) -> Option<Item> {
    let published = source.published.contains(name);
    if relation.kind == 'r' && !relation.unlogged && !relation.has_identity {
        return Some(item(
            display(name),
            "no longer has a primary key or replica identity".into(),
            format!(
                "Its UPDATEs and DELETEs cannot be replicated (and fail on the source while it is published): add \
                 a primary key back, or run ALTER TABLE {} REPLICA IDENTITY FULL on the source.",
                sql_name(name)
            ),
            Vec::new(),
        ));
    }
    if publishable(relation) && !published {
        let steps = vec![Step::Publish(name.clone()), Step::Refresh];
        return Some(item(display(name), "table added to the link".into(), String::new(), steps));
    }
    if source.replicated.contains(name) && !target.replicated.contains(name) {
        return Some(item(display(name), "table added to the subscription".into(), String::new(), vec![Step::Refresh]));
    }
    None
}

fn compare_columns(table: &Name, source: &[Column], target: Option<&Vec<Column>>) -> Vec<Item> {
    let target = target.map(Vec::as_slice).unwrap_or_default();
    let find = |columns: &[Column], name: &str| columns.iter().find(|c| c.name == name).cloned();
    let added: Vec<&Column> = source.iter().filter(|c| find(target, &c.name).is_none()).collect();
    let removed: Vec<&Column> = target.iter().filter(|c| find(source, &c.name).is_none()).collect();
    let renamed = !added.is_empty() && !removed.is_empty();
    let object = |column: &Column| format!("{}.{}", display(table), column.name);
    let mut items = Vec::new();
    for column in &added {
        let change = format!("column added: {} {}", column.name, column.type_name);
        let plan = match renamed {
            true => Err("a column was also dropped (a rename?), so milink does not guess".to_owned()),
            false => add_column(table, column),
        };
        items.push(match plan {
            Ok(sql) => item(object(column), change, String::new(), vec![Step::Alter(sql)]),
            Err(why) => item(
                object(column),
                change,
                format!(
                    "milink cannot add it by itself: {why}. If it was renamed on the source, rename it on the target \
                     too (ALTER TABLE {t} RENAME COLUMN <old name> TO {c};); otherwise add it on the target with the \
                     values the source's rows have (ALTER TABLE {t} ADD COLUMN {c} {ty}; then copy the values), {RESTART}.",
                    t = sql_name(table),
                    c = quote_ident(&column.name),
                    ty = column.type_name,
                ),
                Vec::new(),
            ),
        });
    }
    for column in &removed {
        items.push(item(
            object(column),
            format!("column dropped or renamed on the source: {}", column.name),
            format!(
                "Drop it on the target too (ALTER TABLE {t} DROP COLUMN {c};), or rename it there if it was renamed \
                 on the source, {RESTART}.",
                t = sql_name(table),
                c = quote_ident(&column.name)
            ),
            Vec::new(),
        ));
    }
    for column in source {
        if let Some(other) = find(target, &column.name) {
            items.extend(compare_column(table, column, &other));
        }
    }
    items
}

fn compare_column(table: &Name, source: &Column, target: &Column) -> Option<Item> {
    let object = format!("{}.{}", display(table), source.name);
    let (t, c) = (sql_name(table), quote_ident(&source.name));
    if source.type_name != target.type_name || source.collation != target.collation {
        return Some(item(
            object,
            format!("column type changed: {} {} (the target has {})", source.name, source.type_name, target.type_name),
            format!(
                "A column type changed on the source: change it on the target too \
                 (ALTER TABLE {t} ALTER COLUMN {c} TYPE {} {};), {RESTART}.",
                source.type_name, source.collation
            ),
            Vec::new(),
        ));
    }
    if source.generated != target.generated || source.identity != target.identity {
        return Some(item(
            object,
            format!("column {} changed its identity or generation expression", source.name),
            format!("Make the column match on the target (ALTER TABLE {t} ALTER COLUMN {c} ...), {RESTART}."),
            Vec::new(),
        ));
    }
    let mut statements = Vec::new();
    if source.generated.is_empty() && source.default != target.default {
        statements.push(match &source.default {
            Some(default) => format!("ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {default}"),
            None => format!("ALTER TABLE {t} ALTER COLUMN {c} DROP DEFAULT"),
        });
    }
    if source.not_null != target.not_null {
        let verb = if source.not_null { "SET" } else { "DROP" };
        statements.push(format!("ALTER TABLE {t} ALTER COLUMN {c} {verb} NOT NULL"));
    }
    if statements.is_empty() {
        return None;
    }
    let change = format!("column {} changed its default or NOT NULL", source.name);
    Some(item(object, change, String::new(), vec![Step::Alter(statements.join("; "))]))
}

/// The statements that add `column` to the target so every existing row reads what it reads on the
/// source, or why that cannot be done.
pub(crate) fn add_column(table: &Name, column: &Column) -> Result<String, String> {
    let (t, c) = (sql_name(table), quote_ident(&column.name));
    let not_null = if column.not_null { " NOT NULL" } else { "" };
    let head = format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c} {}", column.type_name);
    let head = match column.collation.is_empty() {
        true => head,
        false => format!("{head} {}", column.collation),
    };
    if !column.identity.is_empty() {
        return Err("it is an identity column, numbered row by row on the source".into());
    }
    if column.generated == "s" {
        let expression = column.default.as_deref().unwrap_or("NULL");
        return Ok(format!("{head} GENERATED ALWAYS AS ({expression}) STORED{not_null}"));
    }
    match (&column.missing_value, &column.default) {
        (Some(value), default) => {
            // Old rows get the exact value the source stored for them; new rows the real default.
            let add = format!("{head} DEFAULT {}::{}{not_null}", quote_literal(value), column.type_name);
            let then = match default {
                Some(expression) => format!("ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {expression}"),
                None => format!("ALTER TABLE {t} ALTER COLUMN {c} DROP DEFAULT"),
            };
            Ok(format!("{add}; {then}"))
        }
        (None, None) => Ok(format!("{head}{not_null}")),
        (None, Some(expression)) if is_constant(expression) => Ok(format!("{head} DEFAULT {expression}{not_null}")),
        (None, Some(expression)) => Err(format!(
            "its default ({expression}) may give each existing row a different value (a volatile function, or a \
             table rewritten since), which cannot be reproduced on the target"
        )),
    }
}

/// True for a default the server printed as a plain constant: a number, a boolean, NULL, or a quoted
/// literal with casts (`'x'::character varying`, `'{a,b}'::text[]`, `'1.5'::numeric(5,2)`). Anything
/// with a function call is not.
pub(crate) fn is_constant(expression: &str) -> bool {
    let expression = expression.trim();
    if matches!(expression, "true" | "false" | "NULL") || expression.parse::<f64>().is_ok() {
        return true;
    }
    let rest = if let Some(quoted) = expression.strip_prefix('\'') {
        // Skip the literal: '' is an escaped quote inside it.
        let mut chars = quoted.char_indices().peekable();
        let mut end = None;
        while let Some((i, ch)) = chars.next() {
            if ch == '\'' {
                if chars.peek().is_some_and(|(_, next)| *next == '\'') {
                    chars.next();
                    continue;
                }
                end = Some(i + 1);
                break;
            }
        }
        match end {
            Some(end) => &quoted[end..],
            None => return false,
        }
    } else if let Some(number) = expression.strip_prefix('(').and_then(|e| e.split_once(')')) {
        // Negative numbers print as (-5)::integer or (-5).
        if number.0.parse::<f64>().is_err() {
            return false;
        }
        number.1
    } else {
        return false;
    };
    // What follows may only be casts to type names: no call, no operator, no other literal.
    rest.split("::").skip(1).all(|cast| {
        let name = cast.trim();
        !name.is_empty()
            && name.chars().all(|ch| ch.is_alphanumeric() || " _.\"[](),".contains(ch))
            && !name.contains("((")
    }) && (rest.is_empty() || rest.starts_with("::"))
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
