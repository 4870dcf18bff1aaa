//! Carrying the additive changes: the steps of every item, run in the one order that works.
//!
//! 1. New tables, all in one pg_dump `--schema-only --table=...` piped to psql in a single transaction
//!    (their schemas created first if they are new too), so indexes, constraints, owned sequences and
//!    partition attachments come exactly as pg_dump writes them.
//! 2. Column statements, each group in one implicit transaction.
//! 3. New sequences, only once every new table exists: a table's own sequence arrives with pg_dump, and
//!    creating it first would make the table's copy fail on "already exists".
//! 4. `ALTER PUBLICATION ... ADD TABLE` for the tables the target now has, then one
//!    `ALTER SUBSCRIPTION ... REFRESH PUBLICATION WITH (copy_data = true)`: the subscription picks up every
//!    new table and copies its rows, those written before the carry included.
//!
//! Each step re-reads nothing and assumes nothing beyond the snapshot it was planned from, and each is
//! safe to repeat: a crash between two steps leaves a difference the next check plans again (a table on
//! the target but not in the publication is published; one published but not subscribed is refreshed).
//! A step that fails is reported with the failure, never raised: one table the target cannot take must
//! not stop the observation of the whole link.
use super::catalog::{sequence_definition, Name};
use super::diff::{Item, Step};
use crate::connect::{Server, Session};
use crate::connect::writable;
use crate::schema;
use crate::sql::{qualified, quote_ident};
use std::collections::{BTreeSet, HashMap};

/// What the carrier works with.
pub(crate) struct Sides<'a> {
    pub(crate) source: &'a Server,
    pub(crate) target: &'a Server,
    pub(crate) src: &'a Session,
    pub(crate) tgt: &'a Session,
    pub(crate) database: &'a str,
    pub(crate) link: &'a str,
}

/// Runs the steps of `items`; returns the steps that failed, with why.
pub(crate) async fn carry(sides: &Sides<'_>, items: &[Item]) -> HashMap<Step, String> {
    let steps: Vec<&Step> = items.iter().flat_map(|item| item.steps.iter()).collect();
    let mut failed = HashMap::new();
    let tables: Vec<&Name> = steps.iter().filter_map(|s| if let Step::CreateTable(n) = s { Some(n) } else { None }).collect();
    for (name, why) in create_tables(sides, &tables).await {
        failed.insert(Step::CreateTable(name), why);
    }
    for step in &steps {
        if let Step::Alter(sql) = step {
            if let Err(error) = sides.tgt.run("changing a column on the target", sql).await {
                failed.insert((*step).clone(), error.message);
            }
        }
    }
    for step in &steps {
        if let Step::CreateSequence(name) = step {
            let tables_created = !failed.keys().any(|step| matches!(step, Step::CreateTable(_)));
            let result = match tables_created {
                true => create_sequence(sides, name).await,
                false => Err("waiting for the new tables to be created first".into()),
            };
            if let Err(why) = result {
                failed.insert((*step).clone(), why);
            }
        }
    }
    let created = |name: &Name| !failed.contains_key(&Step::CreateTable(name.clone()));
    let publish: BTreeSet<&Name> = steps.iter().filter_map(|s| if let Step::Publish(n) = s { Some(n) } else { None }).collect();
    let (ready, waiting): (Vec<&Name>, Vec<&Name>) = publish.into_iter().partition(|name| created(name));
    for name in waiting {
        failed.insert(Step::Publish(name.clone()), "the table could not be created on the target".into());
    }
    if let Err(why) = add_to_publication(sides, &ready).await {
        failed.extend(ready.iter().map(|name| (Step::Publish((*name).clone()), why.clone())));
    }
    if steps.contains(&&Step::Refresh) {
        let sql = format!("ALTER SUBSCRIPTION {} REFRESH PUBLICATION WITH (copy_data = true)", quote_ident(sides.link));
        if let Err(error) = sides.tgt.run("refreshing the subscription's tables", &sql).await {
            failed.insert(Step::Refresh, error.message);
        }
    }
    failed
}

async fn create_schemas(tgt: &Session, names: &[&Name]) -> Result<(), String> {
    let schemas: BTreeSet<&str> = names.iter().map(|(schema, _)| schema.as_str()).collect();
    for schema in schemas {
        let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema));
        tgt.run("creating a schema on the target", &sql).await.map_err(|e| e.message)?;
    }
    Ok(())
}

/// Creates `tables` in one copy; when that fails, one by one, so one table the target cannot take (a type
/// it lacks, say) does not hold back the others. Returns the tables that could not be created, with why.
async fn create_tables(sides: &Sides<'_>, tables: &[&Name]) -> Vec<(Name, String)> {
    let together = copy_tables(sides, tables).await;
    match together {
        Ok(()) => Vec::new(),
        Err(why) if tables.len() == 1 => vec![(tables[0].clone(), why)],
        Err(_) => {
            let mut failed = Vec::new();
            for table in tables {
                if let Err(why) = copy_tables(sides, &[table]).await {
                    failed.push(((*table).clone(), why));
                }
            }
            failed
        }
    }
}

async fn copy_tables(sides: &Sides<'_>, tables: &[&Name]) -> Result<(), String> {
    if tables.is_empty() {
        return Ok(());
    }
    create_schemas(sides.tgt, tables).await?;
    let majors = async {
        Ok::<_, milink_core::EngineError>((sides.src.version_num().await? / 10_000, sides.tgt.version_num().await? / 10_000))
    };
    let majors = majors.await.map_err(|e| e.message)?;
    // A pg_dump pattern in double quotes matches one name exactly: no wildcard, no case folding.
    let patterns: Vec<String> = tables.iter().map(|(schema, name)| qualified(schema, name)).collect();
    schema::copy_tables(sides.source, sides.target, sides.database, majors, &patterns)
        .await
        .map_err(|error| error.message)?;
    tracing::info!(link = sides.link, tables = tables.len(), "new tables created on the target");
    Ok(())
}

async fn create_sequence(sides: &Sides<'_>, name: &Name) -> Result<(), String> {
    let definition = sequence_definition(sides.src, name).await.map_err(|e| e.message)?;
    let Some(definition) = definition else { return Ok(()) };
    create_schemas(sides.tgt, &[name]).await?;
    let sql = format!("CREATE SEQUENCE IF NOT EXISTS {} {definition}", qualified(&name.0, &name.1));
    sides.tgt.run("creating a sequence on the target", &sql).await.map_err(|e| e.message)
}

async fn add_to_publication(sides: &Sides<'_>, tables: &[&Name]) -> Result<(), String> {
    if tables.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = tables.iter().map(|(schema, name)| qualified(schema, name)).collect();
    let sql = format!("ALTER PUBLICATION {} ADD TABLE {}", quote_ident(sides.link), list.join(", "));
    // A fenced source's sessions are read-only by default; the link's own DDL must still run.
    writable(sides.src).await.map_err(|e| e.message)?;
    sides.src.run("adding tables to the publication", &sql).await.map_err(|e| e.message)
}
