//! The connection pooler (PgBouncer) in front of the source: milink holds the application's traffic itself
//! during the cutover, so clients see a pause instead of errors, and it points the pooler at the target.
//!
//! With `pooler_admin_url` in the source connection's options (see `config`), the cutover becomes:
//! 1. `fence`: check the options and that the pooler's entries file has the database's entry (so nothing is
//!    touched when the switch could not repoint it), then `PAUSE <db>` on PgBouncer's admin console, then the
//!    usual fence. PAUSE returns once every server connection of the database is released, i.e. once the
//!    transactions in flight have finished (this is why the pooler must run `pool_mode = transaction`: in
//!    session mode a connection is released only when its client leaves, and PAUSE would wait forever).
//!    New transactions queue inside PgBouncer. PAUSE is bounded by `pooler_pause_timeout_seconds`: a client
//!    holding a transaction open would otherwise stall the cutover and, meanwhile, every other client; on
//!    timeout milink RESUMEs and fails the fence with an error that says what to do. A pooler that is
//!    down or refuses (wrong admin password, unknown database) fails the same way, before anything is
//!    fenced. These failures are returned as transient (see `nothing_fenced`): the flow retries the fence,
//!    then abandons the cutover and the migration returns to ReadyForCutover, its reason saying what to do;
//!    a definite Fence error would fail the whole migration. A transaction that outlives every attempt's
//!    PAUSE therefore holds the other clients up to `pooler_pause_timeout_seconds` once per attempt. If the
//!    fence itself fails after the PAUSE, milink RESUMEs before returning the error, so the application's
//!    traffic is never held longer than one attempt, whatever the retry schedule.
//! 2. drain, finalize: unchanged; clients keep waiting in PgBouncer.
//! 3. `switch`: the usual switch, then the database's entry in the entries file is rewritten to the target
//!    (`entries`; PgBouncer has no command that changes an entry, it reads `[databases]` from its files), then
//!    `RELOAD`, a check with `SHOW DATABASES` that PgBouncer really took the new entry, and `RESUME <db>`: the
//!    queued transactions run on the target.
//! 4. `unfence` (an abandoned cutover): the usual unfence, then `RESUME <db>`, so no client ever reaches a
//!    read-only source through the pooler.
//!
//! Every step can be repeated after a crash: PgBouncer accepts PAUSE of a paused database, answers RESUME of
//! a running one with "database X is not paused" (taken as success here), RELOAD is always safe, and an entry
//! already pointing at the target is left alone. The unfence's RESUME also succeeds when the pooler refuses
//! the connection or the admin login, with a warning: a pooler that is not running holds no pause (it starts
//! unpaused), and credentials that cannot log in now could not have paused it; failing there would strand
//! the migration in Unfencing, after a fence that failed for that very reason.
//!
//! The admin console speaks the simple query protocol only, hence `simple_query` throughout; the admin
//! password lives in a [`Secret`] and [`scrubbed`] removes it from anything returned, like the connections'.
//!
//! Limits, as built: the options are checked when the fence runs, not by `validate` (a wrong option shows up
//! as an abandoned cutover, not as a validation finding); the pooler's entry must be named like the database;
//! the entry is pointed at the host and port of the target connection's url (no separate "as the pooler sees
//! the target" address yet); only PgBouncer is supported. Failback (`reverse`) pauses the same way and repoints
//! the entry back at the source. The
//! pause spans fence, drain, finalize and switch, so the application's longest wait is the cutover's write
//! downtime (about 1.1 to 3 s on the 2-core test machine, for a PAUSE of about 10 ms).
mod config;
mod entries;
#[cfg(test)]
mod entries_tests;

use crate::errors;
use config::PoolerConfig;
use entries::Destination;
use milink_core::config::Endpoint;
use milink_core::ports::LinkPlan;
use milink_core::EngineError;
use std::time::Duration;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Time allowed to the admin commands that do not wait for clients (RESUME, RELOAD, SHOW).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How a command ended when PgBouncer answered.
enum Answer {
    Done(Vec<SimpleQueryMessage>),
    /// PgBouncer's error text (`database x is not paused`, `no such database: x`...).
    Refused(String),
}

/// A session on the admin console.
struct Admin<'a> {
    client: Client,
    config: &'a PoolerConfig,
}

impl<'a> Admin<'a> {
    async fn connect(config: &'a PoolerConfig, doing: &str) -> Result<Self, EngineError> {
        let mut admin = config.admin.clone();
        admin.dbname("pgbouncer").application_name("milink").connect_timeout(config.connect_timeout);
        if let Some(password) = &config.password {
            admin.password(password.expose());
        }
        let failed = |e: tokio_postgres::Error| classify_login(config, doing, &e);
        let connecting = async {
            if config.tls {
                let (client, connection) = admin.connect(crate::tls::connector()).await.map_err(failed)?;
                tokio::spawn(async move { drop(connection.await) });
                Ok(client)
            } else {
                let (client, connection) = admin.connect(NoTls).await.map_err(failed)?;
                tokio::spawn(async move { drop(connection.await) });
                Ok(client)
            }
        };
        let client = tokio::time::timeout(config.connect_timeout + Duration::from_secs(1), connecting)
            .await
            .map_err(|_| unreachable(config, doing, "no answer in time"))??;
        Ok(Self { client, config })
    }

    /// Runs one admin command; None when it did not finish within `limit`.
    async fn run(&self, command: &str, limit: Duration) -> Result<Option<Answer>, EngineError> {
        match tokio::time::timeout(limit, self.client.simple_query(command)).await {
            Err(_) => Ok(None),
            Ok(Ok(messages)) => Ok(Some(Answer::Done(messages))),
            Ok(Err(error)) => match error.as_db_error() {
                Some(db) => Ok(Some(Answer::Refused(db.message().to_owned()))),
                None => Err(unreachable(self.config, command, &error.to_string())),
            },
        }
    }

    async fn must(&self, command: &str) -> Result<Vec<SimpleQueryMessage>, EngineError> {
        match self.run(command, COMMAND_TIMEOUT).await? {
            Some(Answer::Done(messages)) => Ok(messages),
            Some(Answer::Refused(text)) => Err(refused(self.config, command, &text)),
            None => Err(unreachable(self.config, command, "no answer within 10 s")),
        }
    }

    /// `RESUME <db>`; a database that is not paused is what a repeat expects.
    async fn resume(&self, database: &str) -> Result<(), EngineError> {
        let command = format!("RESUME {}", admin_name(database));
        match self.run(&command, COMMAND_TIMEOUT).await? {
            Some(Answer::Done(_)) => Ok(()),
            // Not paused, or not a database the pooler knows (so it cannot be paused): what a repeat finds.
            Some(Answer::Refused(text)) if text.contains("is not paused") || text.contains("no such database") => Ok(()),
            Some(Answer::Refused(text)) => Err(refused(self.config, &command, &text)),
            None => Err(unreachable(self.config, &command, "no answer within 10 s")),
        }
    }
}

/// A database name as the admin console parses it: bare when it is a plain word, else in double quotes.
fn admin_name(database: &str) -> String {
    if !database.is_empty() && database.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return database.to_owned();
    }
    format!("\"{}\"", database.replace('"', "\"\""))
}

/// Before the fence: PAUSE the database on the pooler, if the source has one. Checks first that the
/// switch will be able to repoint it, so a cutover that cannot finish never starts.
/// What validation says about the pooler before anything starts: options that do not parse, and a
/// databases file without an entry for the database, are blockers (the cutover would fail at its fence).
pub(crate) fn validate(plan: &LinkPlan) -> Vec<milink_core::Finding> {
    let config = match PoolerConfig::of(&plan.source) {
        Ok(Some(config)) => config,
        Ok(None) => return Vec::new(),
        Err(error) => return vec![errors::as_finding(&error)],
    };
    let database = plan.database.as_str();
    let text = match std::fs::read_to_string(&config.databases_file) {
        Ok(text) => text,
        Err(error) => {
            return vec![milink_core::Finding::new(
                "pooler_databases_file_unreadable",
                milink_core::Severity::Blocker,
                format!("{}: cannot read {}: {error}", config.label(), config.databases_file.display()),
                "Point pooler_databases_file at the file pgbouncer.ini %includes, readable and writable by milink.",
            )]
        }
    };
    match entries::find(&text, database) {
        Some(_) => Vec::new(),
        None => vec![milink_core::Finding::new(
            "pooler_entry_missing",
            milink_core::Severity::Blocker,
            format!("{}: {} has no entry for database {database}", config.label(), config.databases_file.display()),
            format!("Add `{database} = host=<source host> port=<port> dbname={database}` to that file and RELOAD PgBouncer, then start again."),
        )],
    }
}

pub(crate) async fn pause(plan: &LinkPlan) -> Result<Option<PoolerConfig>, EngineError> {
    pause_checked(plan).await.map_err(nothing_fenced)
}

/// Every failure before the fence leaves the source untouched and the link intact, so it is made
/// transient: the flow fails the whole migration on a definite Fence error, while a transient one is
/// retried and then abandons the cutover, back to ReadyForCutover (what a pooler that is down, refuses
/// the login or cannot pause in time deserves). An abandoned cutover shows only the message, so the
/// message carries what to do.
fn nothing_fenced(error: EngineError) -> EngineError {
    let message = format!("{}; nothing was fenced. {}", error.message, error.remediation);
    EngineError::transient(&error.code, message, error.remediation)
}

async fn pause_checked(plan: &LinkPlan) -> Result<Option<PoolerConfig>, EngineError> {
    let Some(config) = PoolerConfig::of(&plan.source)? else { return Ok(None) };
    let database = plan.database.as_str();
    check_entry(&config, database)?;
    let admin = Admin::connect(&config, "connecting to pause the database").await?;
    let command = format!("PAUSE {}", admin_name(database));
    let started = std::time::Instant::now();
    match admin.run(&command, config.pause_timeout).await? {
        Some(Answer::Done(_)) => {}
        // A PAUSE of the whole pooler by someone else holds this database too.
        Some(Answer::Refused(text)) if text.contains("already suspended/paused") => {}
        Some(Answer::Refused(text)) => return Err(refused(&config, &command, &text)),
        None => {
            drop(admin);
            resume_quietly(&config, database).await;
            return Err(pause_timed_out(&config, database));
        }
    }
    tracing::info!(database, pooler = %config.address, took_ms = started.elapsed().as_millis() as u64, "pooler paused the database");
    Ok(Some(config))
}

/// After a failed fence: RESUME, logging (not returning) a failure, because the fence's error is the one
/// to report and the unfence that follows RESUMEs again.
pub(crate) async fn resume_quietly(config: &PoolerConfig, database: &str) {
    let resumed = async { Admin::connect(config, "connecting to resume the database").await?.resume(database).await };
    match resumed.await {
        Ok(()) => tracing::info!(database, pooler = %config.address, "pooler resumed the database"),
        Err(error) => tracing::warn!(database, error = %error.message, "could not resume the database on the pooler"),
    }
}

/// After the unfence: RESUME the database. See the module doc for the failures taken as success.
pub(crate) async fn resume(plan: &LinkPlan) -> Result<(), EngineError> {
    let Some(config) = PoolerConfig::of(&plan.source)? else { return Ok(()) };
    let database = plan.database.as_str();
    let admin = match Admin::connect(&config, "connecting to resume the database").await {
        Ok(admin) => admin,
        Err(error) if matches!(error.code.as_str(), "pooler_unreachable" | "pooler_authentication_failed") => {
            could_not_have_paused(database, &error);
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    match admin.resume(database).await {
        Ok(()) => tracing::info!(database, pooler = %config.address, "pooler resumed the database"),
        Err(error) if error.code == "pooler_not_admin" => could_not_have_paused(database, &error),
        Err(error) => return Err(error),
    }
    Ok(())
}

/// The pooler refuses milink the way it did at the fence: milink's PAUSE cannot have happened.
fn could_not_have_paused(database: &str, error: &EngineError) {
    tracing::warn!(
        database, error = %error.message,
        "could not RESUME the database on the pooler; milink cannot have paused it with these settings, but if the \
         pooler shows the database paused (SHOW DATABASES), run RESUME on its admin console"
    );
}

/// After the switch: point the pooler's entry at the target, RELOAD, check, RESUME.
pub(crate) async fn repoint(plan: &LinkPlan) -> Result<(), EngineError> {
    repoint_to(plan, &plan.target).await
}

/// Points the pooler's entry at `primary` (the target after a cutover, the source after a failback),
/// RELOAD, check, RESUME.
pub(crate) async fn repoint_to(plan: &LinkPlan, primary: &Endpoint) -> Result<(), EngineError> {
    let Some(config) = PoolerConfig::of(&plan.source)? else { return Ok(()) };
    let database = plan.database.as_str();
    let to = destination(primary, database)?;
    let changed = entries::repoint(&config.databases_file, database, &to).map_err(|e| file_error(&config, database, e))?;
    let admin = Admin::connect(&config, "connecting to repoint the database").await?;
    admin.must("RELOAD").await?;
    let shown = admin.must("SHOW DATABASES").await?;
    if !points_at(&shown, database, &to) {
        return Err(EngineError::definite(
            "pooler_reload_ignored",
            format!(
                "{}: after RELOAD the pooler's entry for {database} does not point at {}:{}/{}",
                config.label(), to.host, to.port, to.dbname
            ),
            format!(
                "PgBouncer did not take the rewritten {}: check its log (a syntax error, or a file it cannot read) and \
                 that pgbouncer.ini %includes that file; milink retries the switch. The database stays paused on the \
                 pooler until then.",
                config.databases_file.display()
            ),
        ));
    }
    admin.resume(database).await?;
    tracing::info!(database, pooler = %config.address, primary = %format!("{}:{}", to.host, to.port), file_changed = changed, "pooler points the database at the primary and resumed it");
    Ok(())
}

/// Removes the pooler's admin password (and the connections') from whatever goes back to the caller.
pub(crate) fn scrubbed<T>(plan: &LinkPlan, result: Result<T, EngineError>) -> Result<T, EngineError> {
    let Err(error) = result else { return result };
    let pooler = PoolerConfig::of(&plan.source).ok().flatten().and_then(|c| c.password);
    let secrets: Vec<_> = pooler.iter().chain(plan.source.password.iter()).chain(plan.target.password.iter()).collect();
    Err(errors::redact(error, &secrets))
}

fn check_entry(config: &PoolerConfig, database: &str) -> Result<(), EngineError> {
    let text = std::fs::read_to_string(&config.databases_file).map_err(|error| {
        file_error(config, database, entries::FileError::Io { doing: "reading", path: config.databases_file.clone(), error })
    })?;
    match entries::find(&text, database) {
        Some(_) => Ok(()),
        None => Err(file_error(config, database, entries::FileError::NoEntry)),
    }
}

/// Where the pooler should send the database after the switch: the target as milink reaches it.
fn destination(target: &Endpoint, database: &str) -> Result<Destination, EngineError> {
    let parsed: tokio_postgres::Config = target.url.parse().map_err(|_| {
        EngineError::definite("invalid_url", format!("connection '{}': the url is not usable", target.name), "Fix the target's url.")
    })?;
    let host = match parsed.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = parsed.get_ports().first().copied().unwrap_or(5432);
    Ok(Destination { host, port, dbname: database.to_owned() })
}

fn points_at(shown: &[SimpleQueryMessage], database: &str, to: &Destination) -> bool {
    shown.iter().any(|message| match message {
        SimpleQueryMessage::Row(row) => {
            row.get("name") == Some(database)
                && row.get("host") == Some(to.host.as_str())
                && row.get("port") == Some(to.port.to_string().as_str())
                && row.get("database") == Some(to.dbname.as_str())
        }
        _ => false,
    })
}

fn classify_login(config: &PoolerConfig, doing: &str, error: &tokio_postgres::Error) -> EngineError {
    let Some(db) = error.as_db_error() else { return unreachable(config, doing, &error.to_string()) };
    let text = db.message();
    if ["password", "not allowed", "no such user", "authentication"].iter().any(|w| text.contains(w)) {
        let user = config.admin.get_user().unwrap_or_default();
        return EngineError::definite(
            "pooler_authentication_failed",
            format!("{}: {doing}: {text}", config.label()),
            format!(
                "Check the admin password of the pooler (pooler_password_env or pooler_password_file of connection '{}') \
                 and that user '{user}' is in PgBouncer's admin_users and auth_file. Then request the cutover again.",
                config.connection
            ),
        );
    }
    refused(config, doing, text)
}

fn unreachable(config: &PoolerConfig, doing: &str, text: &str) -> EngineError {
    EngineError::definite(
        "pooler_unreachable",
        format!("{}: {doing}: cannot reach the pooler's admin console: {text}", config.label()),
        format!(
            "Check that PgBouncer is running and listening on {} (pooler_admin_url of connection '{}'). Before the \
             fence nothing was changed: request the cutover again once it answers; after the switch milink retries.",
            config.address, config.connection
        ),
    )
}

fn refused(config: &PoolerConfig, command: &str, text: &str) -> EngineError {
    if text.contains("admin access needed") {
        let user = config.admin.get_user().unwrap_or_default();
        return EngineError::definite(
            "pooler_not_admin",
            format!("{}: {command}: the pooler answered: {text}", config.label()),
            format!(
                "User '{user}' of pooler_admin_url (connection '{}') may log in but is not an admin: add it to PgBouncer's \
                 admin_users and RELOAD, then request the cutover again.",
                config.connection
            ),
        );
    }
    EngineError::definite(
        "pooler_refused",
        format!("{}: {command}: the pooler answered: {text}", config.label()),
        format!(
            "Fix what PgBouncer reports (its [databases] entries come from pgbouncer.ini and {}); before the fence, \
             request the cutover again afterwards; after the switch, milink retries.",
            config.databases_file.display()
        ),
    )
}

fn pause_timed_out(config: &PoolerConfig, database: &str) -> EngineError {
    EngineError::definite(
        "pooler_pause_timeout",
        format!(
            "{}: PAUSE {database} did not finish within {} s: a client holds a transaction open through the pooler",
            config.label(),
            config.pause_timeout.as_secs()
        ),
        format!(
            "The pause was lifted. Find the long transaction (pg_stat_activity on the source, \
             state 'idle in transaction' or a long query; SHOW CLIENTS on the pooler), let it finish or end it, or \
             raise pooler_pause_timeout_seconds of connection '{}', then request the cutover again.",
            config.connection
        ),
    )
}

fn file_error(config: &PoolerConfig, database: &str, error: entries::FileError) -> EngineError {
    let file = config.databases_file.display();
    match error {
        entries::FileError::NoEntry => EngineError::definite(
            "pooler_entry_missing",
            format!("{}: {file} has no [databases] entry named {database}", config.label()),
            format!(
                "Add the entry milink repoints at cutover to {file} (e.g. `{database} = host=<source host> port=<port> \
                 dbname={database}`), make pgbouncer.ini %include that file, RELOAD PgBouncer, then request the \
                 cutover again."
            ),
        ),
        entries::FileError::Io { doing, path, error } => EngineError::definite(
            "pooler_file_error",
            format!("{}: {doing} {}: {error}", config.label(), path.display()),
            format!("milink must be able to read and replace {file} (pooler_databases_file of connection '{}') and create files beside it.", config.connection),
        ),
    }
}
