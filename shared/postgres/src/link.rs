//! Creating, switching and dropping the link: database, schema, publication, subscription, slot.
//!
//! Every step checks before it acts, so a crash between any two steps and a re-run converge on the same
//! end state: the target database is created only when missing; the schema is copied only into a target
//! without tables (and a differing target is refused); the publication is created, or its table list
//! corrected; the subscription is created only when missing. The one step PostgreSQL cannot make atomic is
//! CREATE SUBSCRIPTION, which creates the slot on the source and then commits on the target: a crash in
//! between leaves a slot nobody uses, so before creating the subscription an inactive slot of ours is
//! dropped. Dropping is the same list backwards, each object only if present, and tolerant of a source
//! that can no longer be reached (the subscription is detached from its slot first).
//!
//! The statements that carry a password (CREATE SUBSCRIPTION) run with statement logging turned off for
//! the session, so a failure does not copy the password into the target's server log. Only a superuser may
//! turn it off; for another role `quiet_logging` reports it, and validation warns
//! (`password_may_reach_target_log`) with what to do.
use crate::connect::{Server, Session};
use crate::connect::{quiet_logging, subscription_oid, writable};
use crate::errors::{classify_publisher_connect, is_missing_object};
use crate::rules::{self, Table};
use crate::schema;
use crate::seed;
use crate::sql::{quote_ident, quote_literal};
use milink_core::ports::LinkPlan;
use milink_core::EngineError;
use std::time::Duration;

pub(crate) async fn create(plan: &LinkPlan, seeders: &seed::Seeders) -> Result<(), EngineError> {
    let source = Server::new("source", &plan.source)?;
    let target = Server::new("target", &plan.target)?;
    let database = plan.database.as_str();
    let name = plan.link_name();

    let src = source.connect(Some(database)).await?;
    let tables = rules::tables(&src).await?;
    refuse_tables_without_identity(&tables, &source)?;
    let published: Vec<&Table> = tables.iter().filter(|t| t.is_published()).collect();

    let target_admin = target.connect(None).await?;
    ensure_database(&target_admin, &src, database, &plan.link_name()).await?;
    let tgt = target.connect(Some(database)).await?;
    let parallel = ensure_schema(plan, &source, &target, &src, &tgt).await?;

    // Before any slot: a slot decodes with the catalog as it was, so the publication must predate it.
    let publication_changed = ensure_publication(&src, &name, &published).await?;
    if parallel {
        seeders.ensure_running(plan);
        tracing::info!(link = %name, tables = published.len(), "link created; seeding in parallel from one snapshot");
        return Ok(());
    }
    ensure_subscription(plan, &source, &tgt, &name, publication_changed).await?;
    tracing::info!(link = %name, tables = published.len(), "link created");
    Ok(())
}

/// No table whose UPDATEs and DELETEs cannot be replicated is ever published (validate reports them
/// first; this is the guard for a table that lost its key since).
fn refuse_tables_without_identity(tables: &[Table], source: &Server) -> Result<(), EngineError> {
    let findings = rules::table_findings(tables, &[], true);
    match findings.into_iter().find(|f| f.rule == "table_without_replica_identity") {
        None => Ok(()),
        Some(finding) => Err(EngineError::definite(
            &finding.rule,
            format!("{}: {}: {}", source.place().label(), finding.message, finding.objects.join(", ")),
            finding.remediation,
        )),
    }
}

/// The comment milink puts on a target database it created, so that cancel with drop_target drops only
/// databases milink made, never one that was there before.
fn created_marker(link: &str) -> String {
    format!("created by milink for {link}")
}

async fn ensure_database(target_admin: &Session, src: &Session, database: &str, link: &str) -> Result<(), EngineError> {
    let exists = target_admin
        .maybe_row("looking for the target database", "SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await?
        .is_some();
    if exists {
        return Ok(());
    }
    // Same encoding as the source, so every row fits; same locale when the target has it.
    let row = src
        .row(
            "reading the source database's encoding",
            "SELECT pg_encoding_to_char(encoding), datcollate::text, datctype::text
             FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await?;
    let (encoding, collate, ctype): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    let base = format!("CREATE DATABASE {} TEMPLATE template0 ENCODING {}", quote_ident(database), quote_literal(&encoding));
    let with_locale = format!("{base} LC_COLLATE {} LC_CTYPE {}", quote_literal(&collate), quote_literal(&ctype));
    match target_admin.try_run(&with_locale).await {
        Ok(()) => {}
        // The source's locale is not installed on the target: its default locale will do.
        Err(e) if e.code().map(|c| c.code()) == Some("22023") => {
            target_admin.run("creating the target database", &base).await?;
        }
        Err(e) => return Err(crate::errors::classify(&e, target_admin.place(), "creating the target database")),
    }
    let mark = format!("COMMENT ON DATABASE {} IS {}", quote_ident(database), quote_literal(&created_marker(link)));
    target_admin.run("marking the target database as milink's", &mark).await?;
    tracing::info!(database, "target database created");
    Ok(())
}

/// Copies the schema into an empty target; true when the link seeds in parallel (`seed` module): then only
/// the tables are restored now, with the seeding record in the same transaction, and indexes and
/// constraints come after the rows. A target whose tables were there before milink keeps native sync.
async fn ensure_schema(plan: &LinkPlan, source: &Server, target: &Server, src: &Session, tgt: &Session) -> Result<bool, EngineError> {
    let database = plan.database.as_str();
    let name = plan.link_name();
    if seed::plan::state(tgt, &name).await?.is_some() {
        return Ok(true);
    }
    let target_shapes = schema::shapes(tgt).await?;
    if target_shapes.is_empty() {
        let source_major = src.version_num().await? / 10_000;
        let target_major = tgt.version_num().await? / 10_000;
        if subscription_oid(tgt, &name).await?.is_none() && seed::wanted(plan, src).await? {
            let record = seed::plan::record_sql(&name);
            schema::copy_section(source, target, database, (source_major, target_major), "pre-data", &record).await?;
            return Ok(true);
        }
        schema::copy(source, target, database, source_major, target_major).await?;
        return Ok(false);
    }
    let differences = schema::differences(&schema::shapes(src).await?, &target_shapes);
    if differences.is_empty() {
        return Ok(false);
    }
    Err(EngineError::definite(
        "target_schema_differs",
        format!(
            "{}: database {database} already has tables that differ from the source: {}",
            target.place().label(),
            differences.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        ),
        "Drop the target database (or its tables) so milink can copy the schema, or make it match the source.",
    ))
}

/// Creates the publication, or sets its table list to `tables`. True when the list changed.
async fn ensure_publication(src: &Session, name: &str, tables: &[&Table]) -> Result<bool, EngineError> {
    let wanted: Vec<String> = tables.iter().map(|t| t.display_name()).collect();
    let list = tables.iter().map(|t| t.sql_name()).collect::<Vec<_>>().join(", ");
    let current = src
        .maybe_row("looking for the publication", "SELECT oid FROM pg_publication WHERE pubname = $1", &[&name])
        .await?;
    let Some(current) = current else {
        let sql = match tables.is_empty() {
            true => format!("CREATE PUBLICATION {}", quote_ident(name)),
            false => format!("CREATE PUBLICATION {} FOR TABLE {list}", quote_ident(name)),
        };
        writable(src).await?;
        src.run("creating the publication", &sql).await?;
        return Ok(true);
    };
    let oid: u32 = current.get(0);
    let mut have: Vec<String> = src
        .rows(
            "reading the publication's tables",
            "SELECT n.nspname || '.' || c.relname FROM pg_publication_rel pr
             JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE pr.prpubid = $1",
            &[&oid],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut sorted = wanted.clone();
    have.sort();
    sorted.sort();
    if have == sorted {
        return Ok(false);
    }
    writable(src).await?;
    if tables.is_empty() {
        src.run("emptying the publication", &format!("DROP PUBLICATION {0}; CREATE PUBLICATION {0}", quote_ident(name)))
            .await?;
    } else {
        src.run("updating the publication's tables", &format!("ALTER PUBLICATION {} SET TABLE {list}", quote_ident(name)))
            .await?;
    }
    Ok(true)
}

async fn ensure_subscription(
    plan: &LinkPlan,
    source: &Server,
    tgt: &Session,
    name: &str,
    publication_changed: bool,
) -> Result<(), EngineError> {
    if subscription_oid(tgt, name).await?.is_some() {
        if publication_changed {
            let sql = format!("ALTER SUBSCRIPTION {} REFRESH PUBLICATION WITH (copy_data = true)", quote_ident(name));
            return tgt.run("refreshing the subscription's tables", &sql).await;
        }
        return Ok(());
    }
    // A slot left by a CREATE SUBSCRIPTION that crashed before committing on the target.
    drop_slot(source, name).await?;
    let (link, sql) = subscription_statement(plan, name, "copy_data = true, create_slot = true")?;
    create_subscription(tgt, name, &link, &sql).await
}

/// The end of parallel seeding: the subscription on the slot the rows were copied from, streaming from its
/// consistent point, created in one transaction with dropping the seeding record (a crash leaves either
/// both or neither; CREATE SUBSCRIPTION may run in a transaction when it creates no slot).
pub(crate) async fn subscribe_to_seeded_slot(plan: &LinkPlan, tgt: &Session, name: &str) -> Result<(), EngineError> {
    if subscription_oid(tgt, name).await?.is_some() {
        return tgt.run("dropping the seeding record", &seed::plan::drop_sql()).await;
    }
    let (link, create) = subscription_statement(plan, name, "copy_data = false, create_slot = false")?;
    let sql = format!("BEGIN; {create}; {}; COMMIT", seed::plan::drop_sql());
    create_subscription(tgt, name, &link, &sql).await
}

/// CREATE SUBSCRIPTION for the link, with `options` (how the tables are seeded and whether the slot exists).
fn subscription_statement(plan: &LinkPlan, name: &str, options: &str) -> Result<(Server, String), EngineError> {
    let link = Server::as_seen_by_target(&plan.source)?;
    let sql = format!(
        "CREATE SUBSCRIPTION {sub} CONNECTION {conninfo} PUBLICATION {sub}
         WITH ({options}, slot_name = {slot}, enabled = true)",
        sub = quote_ident(name),
        conninfo = quote_literal(&link.conninfo(plan.database.as_str(), name)),
        slot = quote_literal(name),
    );
    Ok((link, sql))
}

async fn create_subscription(tgt: &Session, name: &str, link: &Server, sql: &str) -> Result<(), EngineError> {
    if !quiet_logging(tgt).await? {
        // validate said so (password_may_reach_target_log); the migration goes on, as the user chose.
        tracing::warn!(link = %name, "the target logs failing statements and milink's role cannot turn that off: \
                                      a failing CREATE SUBSCRIPTION would put the source's password in its log");
    }
    let doing = "the target creating the subscription (connecting to the source)";
    let created = tgt.try_run(sql).await.map_err(|e| match e.as_db_error() {
        Some(db) if db.code().code().starts_with("08") => classify_publisher_connect(db.message(), link.place(), doing),
        _ => crate::errors::classify(&e, tgt.place(), "creating the subscription"),
    });
    if created.is_err() {
        let _ = tgt.try_run("ROLLBACK").await;
    }
    created
}

/// Removes the link after the drain; a reverse link, when kept, is made afterwards by `reverse`.
pub(crate) async fn switch(plan: &LinkPlan, seeders: &seed::Seeders) -> Result<(), EngineError> {
    remove_link(plan, seeders, crate::cutover::kept_sessions(plan)).await
}

pub(crate) async fn drop_link(plan: &LinkPlan, drop_target: bool, seeders: &seed::Seeders) -> Result<(), EngineError> {
    remove_link(plan, seeders, None).await?;
    let target = Server::new("target", &plan.target)?;
    let admin = target.connect(None).await?;
    crate::validate::drop_probe(&admin, &plan.link_name()).await?;
    if drop_target {
        let database = plan.database.as_str();
        let ours = admin
            .maybe_row(
                "checking who created the target database",
                "SELECT 1 FROM pg_database WHERE datname = $1 AND shobj_description(oid, 'pg_database') = $2",
                &[&database, &created_marker(&plan.link_name())],
            )
            .await?
            .is_some();
        if ours {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(database));
            admin.run("dropping the target database", &sql).await?;
        } else {
            tracing::warn!(database, "drop_target asked, but milink did not create this target database: it is kept");
        }
    }
    Ok(())
}

/// Subscription, slot (and table-sync slots), publication: each removed if present.
///
/// A seeding in progress is stopped first, and the slot is dropped only once no seeder runs anywhere: a
/// seeder still creating its slot would otherwise create it after the drop, and that slot would hold the
/// source's WAL with nothing to drop it. Here, the seeder of this process is stopped and waited for; a
/// seeder on another host finds its record gone and ends, releasing the seeding lock this waits for.
///
/// Inside the cutover's window (the switch), so what does not depend on each other runs at once (the
/// holder and the subscription; then the slots and the publication), on the drain's sessions when they
/// are still open (`kept`: the source's maintenance database and the target's database).
async fn remove_link(plan: &LinkPlan, seeders: &seed::Seeders, kept: Option<std::sync::Arc<crate::cutover::positions::Pair>>) -> Result<(), EngineError> {
    let source = Server::new("source", &plan.source)?;
    let target = Server::new("target", &plan.target)?;
    let name = plan.link_name();
    let database = plan.database.as_str();

    seeders.stop(&name).await;
    // Its snapshot holder (it holds the slot) goes with the subscription, before the slots; its record
    // with the subscription.
    let subscription = async {
        let connected;
        let tgt = match &kept {
            Some(kept) => &kept.target,
            None => match target.connect(Some(database)).await {
                Ok(tgt) => {
                    writable(&tgt).await?;
                    connected = tgt;
                    &connected
                }
                Err(error) if error.code == "database_not_found" => return Ok(None),
                Err(error) => return Err(error),
            },
        };
        tgt.run("dropping the seeding record", &seed::plan::drop_sql()).await?;
        seed::wait_until_stopped(tgt, &name).await?;
        drop_subscription(tgt, &name).await
    };
    let connected;
    let admin = match &kept {
        Some(kept) => &kept.source,
        None => {
            connected = source.connect(None).await?;
            writable(&connected).await?;
            &connected
        }
    };
    // Both run to their end (a future dropped between the seeding lock's take and release would leave the
    // lock on a kept session); the holder's error is reported first.
    let (abandoned, subscription) = tokio::join!(seed::abandon(admin, &name), subscription);
    abandoned?;
    let subscription = subscription?;
    let slots = async {
        drop_slot_on(admin, &name).await?;
        match subscription {
            Some(oid) => drop_sync_slots(admin, oid).await,
            None => Ok(()),
        }
    };
    let publication = async {
        match source.connect(Some(database)).await {
            Ok(src) => {
                writable(&src).await?;
                src.run("dropping the publication", &format!("DROP PUBLICATION IF EXISTS {}", quote_ident(&name))).await
            }
            Err(error) if error.code == "database_not_found" => Ok(()),
            Err(error) => Err(error),
        }
    };
    let (slots, publication) = tokio::join!(slots, publication);
    slots?;
    publication?;
    tracing::info!(link = %name, "link removed");
    Ok(())
}

/// Drops the subscription without needing the source: detached from its slot first, so DROP never
/// connects to a source that may be down or already fenced. Returns its oid when it existed.
async fn drop_subscription(tgt: &Session, name: &str) -> Result<Option<u32>, EngineError> {
    let Some(oid) = subscription_oid(tgt, name).await? else { return Ok(None) };
    let sub = quote_ident(name);
    tgt.run("disabling the subscription", &format!("ALTER SUBSCRIPTION {sub} DISABLE")).await?;
    tgt.run("detaching the subscription from its slot", &format!("ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)"))
        .await?;
    match tgt.try_run(&format!("DROP SUBSCRIPTION IF EXISTS {sub}")).await {
        Ok(()) => Ok(Some(oid)),
        Err(e) if is_missing_object(&e) => Ok(Some(oid)),
        Err(e) => Err(crate::errors::classify(&e, tgt.place(), "dropping the subscription")),
    }
}

/// Drops a replication slot on the source if it exists, ending the walsender still holding it.
pub(crate) async fn drop_slot(source: &Server, slot: &str) -> Result<(), EngineError> {
    let admin = source.connect(None).await?;
    writable(&admin).await?;
    drop_slot_on(&admin, slot).await
}

/// [`drop_slot`] on a writable session of the server.
async fn drop_slot_on(admin: &Session, slot: &str) -> Result<(), EngineError> {
    for _ in 0..50 {
        let Some(row) = admin
            .maybe_row("looking for the replication slot", "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
            .await?
        else {
            return Ok(());
        };
        match row.get::<_, Option<i32>>(0) {
            Some(pid) => {
                // The subscription is gone; its walsender lingers until it notices.
                admin.rows("ending the slot's walsender", "SELECT pg_terminate_backend($1)", &[&pid]).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => {
                let dropped = admin.rows("dropping the replication slot", "SELECT pg_drop_replication_slot($1)", &[&slot]).await;
                match dropped {
                    Ok(_) => return Ok(()),
                    // Someone (a late walsender, a concurrent drop) got there between our look and the drop.
                    Err(error) if error.code == "conflict" || error.code == "sql_error" => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(error) => return Err(error),
                }
            }
        }
    }
    Err(EngineError::transient(
        "slot_busy",
        format!("{}: replication slot {slot} stays in use", admin.place().label()),
        "milink retries; if it persists, look for another subscriber using this slot.",
    ))
}

/// Table-sync slots (`pg_<subscription oid>_sync_<relid>_<system id>`) left by a subscription dropped
/// while it was still seeding.
async fn drop_sync_slots(admin: &Session, subscription_oid: u32) -> Result<(), EngineError> {
    let pattern = format!("pg\\_{subscription_oid}\\_sync\\_%");
    let rows = admin
        .rows("listing table-sync slots", "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE $1", &[&pattern])
        .await?;
    for row in rows {
        drop_slot_on(admin, &row.get::<_, String>(0)).await?;
    }
    Ok(())
}
