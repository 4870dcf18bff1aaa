//! Reaching a server: parsing a connection's url, connecting, and running statements with errors
//! classified on the spot.
//!
//! A url names host, port, user and a maintenance database; the password never is in it (the config
//! refuses that) and is set on the driver's `Config` programmatically. The database being migrated is
//! chosen per connection, so one [`Server`] opens sessions on `postgres` (to create or drop databases,
//! fence, look at slots) and on the migrated database alike. Every statement goes through a [`Session`]
//! method that names what milink was doing, so an error reads "target 'tgt' (host:5432): creating the
//! subscription: ..." instead of a bare driver message, and is classified once, here.
//!
//! The same facts build the libpq connection strings handed to the target (CREATE SUBSCRIPTION) and to
//! pg_dump/psql, quoted by [`ConnInfo`]; those strings are the only place a password is ever written out.
use crate::errors::{classify, Place};
use crate::sql::ConnInfo;
use crate::tls::{SslMode, TlsSettings};
use milink_core::config::{Endpoint, Secret};
use milink_core::EngineError;
use std::time::Duration;
use tokio_postgres::config::Host;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row};
use tracing::Instrument;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One server, as milink reaches it.
#[derive(Clone)]
pub(crate) struct Server {
    place: Place,
    host: Host,
    port: u16,
    user: String,
    maintenance_database: String,
    tls: TlsSettings,
    connect_timeout: Duration,
    password: Option<Secret>,
}

impl Server {
    /// The server behind an endpoint (`role` is `source` or `target`, for messages).
    pub(crate) fn new(role: &'static str, endpoint: &Endpoint) -> Result<Self, EngineError> {
        Self::from_url(role, endpoint.name.as_str(), &endpoint.url, endpoint.password.clone())
    }

    /// The source as the *target* reaches it: its `replication_url` when set, else its url.
    pub(crate) fn as_seen_by_target(endpoint: &Endpoint) -> Result<Self, EngineError> {
        let url = endpoint.replication_url.as_deref().unwrap_or(&endpoint.url);
        Self::from_url("source", endpoint.name.as_str(), url, endpoint.password.clone())
    }

    fn from_url(role: &'static str, connection: &str, url: &str, password: Option<Secret>) -> Result<Self, EngineError> {
        let invalid = |why: &str| {
            EngineError::definite(
                "invalid_url",
                format!("connection '{connection}': the url is not usable: {why}"),
                format!(
                    "Write the url of connection '{connection}' as postgresql://user@host:port/database \
                     (no password in it; set password_env or password_file)."
                ),
            )
        };
        // The driver's parser understands both URLs and key=value strings; its error text is not echoed
        // because a malformed url could hold anything.
        let (url, tls) = crate::tls::split_url(url).map_err(|why| invalid(&why))?;
        let parsed: Config = url.parse().map_err(|_| invalid("it does not parse as a PostgreSQL url"))?;
        let host = parsed.get_hosts().first().cloned().ok_or_else(|| invalid("it names no host"))?;
        let port = parsed.get_ports().first().copied().unwrap_or(5432);
        let user = parsed.get_user().ok_or_else(|| invalid("it names no user"))?.to_owned();
        let address = match &host {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
            Host::Tcp(name) => format!("{name}:{port}"),
            #[cfg(unix)]
            Host::Unix(path) => format!("{}/.s.PGSQL.{port}", path.display()),
        };
        Ok(Self {
            place: Place { role, connection: connection.to_owned(), address, user: user.clone() },
            host,
            port,
            user,
            maintenance_database: parsed.get_dbname().unwrap_or("postgres").to_owned(),
            tls,
            connect_timeout: parsed.get_connect_timeout().copied().unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            password,
        })
    }

    pub(crate) fn place(&self) -> &Place {
        &self.place
    }

    pub(crate) fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// Opens a session on `database`, or on the maintenance database.
    pub(crate) async fn connect(&self, database: Option<&str>) -> Result<Session, EngineError> {
        let database = database.unwrap_or(&self.maintenance_database);
        let mut config = self.driver_config(database);
        let client = self.open(&mut config, crate::tls::SeenCertificate::default()).await?;
        Ok(Session { client, place: self.place.clone(), database: database.to_owned() })
    }

    fn driver_config(&self, database: &str) -> Config {
        let mut config = Config::new();
        match &self.host {
            Host::Tcp(name) => config.host(name),
            #[cfg(unix)]
            Host::Unix(path) => config.host_path(path),
        };
        config
            .port(self.port)
            .user(&self.user)
            .dbname(database)
            .application_name("milink")
            .connect_timeout(self.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            // DDL that waits behind an application's lock gives up and is retried instead of hanging.
            .options("-c lock_timeout=30s");
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        config
    }

    /// The url's TLS settings.
    pub(crate) fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    /// A session on the maintenance database, with the certificate the server presented (`milink doctor`).
    pub(crate) async fn connect_observed(&self) -> Result<(Session, Option<rustls::pki_types::CertificateDer<'static>>), EngineError> {
        let mut config = self.driver_config(&self.maintenance_database);
        let seen = crate::tls::SeenCertificate::default();
        let client = self.open(&mut config, seen.clone()).await?;
        let certificate = seen.lock().ok().and_then(|mut seen| seen.take());
        let session = Session { client, place: self.place.clone(), database: self.maintenance_database.clone() };
        Ok((session, certificate))
    }

    /// Connects with the url's sslmode, as libpq would; `seen` receives the server's certificate.
    async fn open(&self, config: &mut Config, seen: crate::tls::SeenCertificate) -> Result<Client, EngineError> {
        use tokio_postgres::config::SslMode as DriverMode;
        let failed = |e: tokio_postgres::Error| {
            crate::tls::certificate_error(&e, &self.place, &self.tls).unwrap_or_else(|| classify(&e, &self.place, "connecting"))
        };
        // Errors of the connection task surface on the client's next call; nothing to do with them there.
        let plain = |config: &mut Config| {
            let mut config = config.clone();
            async move {
                let (client, connection) = config.ssl_mode(DriverMode::Disable).connect(NoTls).await?;
                tokio::spawn(async move { drop(connection.await) });
                Ok::<_, tokio_postgres::Error>(client)
            }
        };
        let mode = self.tls.effective_mode();
        match mode {
            SslMode::Disable => return plain(config).await.map_err(failed),
            // libpq's allow: without TLS first, with TLS only when the server refused that.
            SslMode::Allow => match plain(config).await {
                Err(e) if e.as_db_error().is_some() => {}
                other => return other.map_err(failed),
            },
            _ => {}
        }
        config.ssl_mode(if mode == SslMode::Prefer { DriverMode::Prefer } else { DriverMode::Require });
        let (client, connection) = config.connect(crate::tls::connector_for(&self.tls, &self.place, seen)?).await.map_err(failed)?;
        tokio::spawn(async move { drop(connection.await) });
        Ok(client)
    }

    /// A libpq connection string for `database`, with the password when there is one: for CREATE
    /// SUBSCRIPTION, whose connection string the target stores and uses. Its walsender on the source is
    /// named `application_name`: the subscription's name, so that `synchronous_standby_names` can name one
    /// link (`cutover::hold`) and `pg_stat_replication` tells links apart.
    pub(crate) fn conninfo(&self, database: &str, application_name: &str) -> String {
        self.conninfo_without_password(database)
            .with("application_name", application_name)
            .with_opt("password", self.password.as_ref().map(Secret::expose))
            .build()
    }

    /// The same without the password, for child processes that get it through `PGPASSWORD`.
    pub(crate) fn conninfo_for_tools(&self, database: &str) -> String {
        self.conninfo_without_password(database).with("application_name", "milink").build()
    }

    fn conninfo_without_password(&self, database: &str) -> ConnInfo {
        let host = match &self.host {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        };
        let info = ConnInfo::default()
            .with("host", &host)
            .with("port", &self.port.to_string())
            .with("user", &self.user)
            .with("dbname", database);
        // The url's TLS settings as written, so the target's libpq verifies the way milink does.
        let info = self.tls.conninfo_pairs().into_iter().fold(info, |info, (key, value)| info.with(key, value));
        info.with("connect_timeout", &self.connect_timeout.as_secs().max(2).to_string())
    }
}

/// An open connection to one database, whose methods classify errors with where and what.
pub(crate) struct Session {
    client: Client,
    place: Place,
    database: String,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Session {
    pub(crate) fn place(&self) -> &Place {
        &self.place
    }

    /// The database this session is on.
    pub(crate) fn database(&self) -> &str {
        &self.database
    }

    /// The driver's client, for what the methods here do not cover (COPY streams).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) async fn rows(&self, doing: &str, sql: &str, params: Params<'_>) -> Result<Vec<Row>, EngineError> {
        let span = self.statement_span(doing, sql);
        self.traced(&span, doing, self.client.query(sql, params).instrument(span.clone()).await)
    }

    pub(crate) async fn row(&self, doing: &str, sql: &str, params: Params<'_>) -> Result<Row, EngineError> {
        let span = self.statement_span(doing, sql);
        self.traced(&span, doing, self.client.query_one(sql, params).instrument(span.clone()).await)
    }

    pub(crate) async fn maybe_row(&self, doing: &str, sql: &str, params: Params<'_>) -> Result<Option<Row>, EngineError> {
        let span = self.statement_span(doing, sql);
        self.traced(&span, doing, self.client.query_opt(sql, params).instrument(span.clone()).await)
    }

    /// Runs statements that take no parameters (DDL with quoted names), outside any transaction block:
    /// CREATE DATABASE and CREATE/DROP SUBSCRIPTION refuse to run inside one.
    pub(crate) async fn run(&self, doing: &str, sql: &str) -> Result<(), EngineError> {
        let span = self.statement_span(doing, sql);
        self.traced(&span, doing, self.client.batch_execute(sql).instrument(span.clone()).await)
    }

    /// The span of one statement, a child of the engine operation running it: the statement's kind (its
    /// first keyword), the server's role and connection name, and what milink was doing, in words. Never
    /// the SQL text or a parameter: `CREATE SUBSCRIPTION ... CONNECTION` carries a password, and values are
    /// the user's data. `MILINK_LOG=info,milink_postgres::connect=warn` turns these spans off.
    /// Outside any span (the sync timer's observations, which are not traced) there is none: each would
    /// start a trace of its own.
    fn statement_span(&self, doing: &str, sql: &str) -> tracing::Span {
        if tracing::Span::current().is_none() {
            return tracing::Span::none();
        }
        let kind = statement_kind(sql);
        tracing::info_span!(
            "statement",
            otel.name = format!("postgres {kind}"),
            db.system = "postgresql",
            db.operation = kind,
            db.name = %self.database,
            server = self.place.role,
            connection = %self.place.connection,
            doing,
            otel.status_code = tracing::field::Empty,
            error.code = tracing::field::Empty,
        )
    }

    /// Classifies a driver error, and marks the statement's span with the classified code.
    fn traced<T>(&self, span: &tracing::Span, doing: &str, result: Result<T, tokio_postgres::Error>) -> Result<T, EngineError> {
        result.map_err(|e| {
            let error = classify(&e, &self.place, doing);
            span.record("otel.status_code", "ERROR");
            span.record("error.code", tracing::field::display(&error.code));
            error
        })
    }

    /// The raw driver result, for the callers that must look at the SQLSTATE themselves.
    pub(crate) async fn try_run(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(sql).await
    }

    /// `server_version_num`, e.g. 150004.
    pub(crate) async fn version_num(&self) -> Result<i32, EngineError> {
        let row = self
            .row("reading the server version", "SELECT current_setting('server_version_num')::int", &[])
            .await?;
        Ok(row.get(0))
    }
}

// Session helpers every step uses (fence, link, validate, observe, drift): here rather than in one of
// those steps, so the steps depend on connect and never on each other.

/// Sessions on a fenced source database are read-only by default; milink's own DDL must still run.
pub(crate) async fn writable(session: &Session) -> Result<(), EngineError> {
    session.run("opening the session for writes", "SET default_transaction_read_only = off").await
}

/// Settings under which no statement's text reaches the server's log: not when it fails
/// (`log_min_error_statement`), not as DDL (`log_statement`), not when it is slow or sampled.
const QUIET_LOGGING: [(&str, &str); 5] = [
    ("log_min_error_statement", "panic"),
    ("log_statement", "none"),
    ("log_min_duration_statement", "-1"),
    ("log_min_duration_sample", "-1"),
    ("log_transaction_sample_rate", "0"),
];

/// Keeps a statement that carries a password (CREATE SUBSCRIPTION ... CONNECTION) out of the server's log
/// should it fail, and says whether that is guaranteed: the settings are superuser-only (CREATE
/// SUBSCRIPTION needs superuser on PostgreSQL ≤ 15 anyway), so for another role it is only when the
/// server or the role already has them so. Utility statements are also kept out of pg_stat_statements
/// when the role may say so (best effort; that view is for superusers and pg_read_all_stats).
pub(crate) async fn quiet_logging(session: &Session) -> Result<bool, EngineError> {
    for (name, value) in QUIET_LOGGING {
        let _ = session.try_run(&format!("SET {name} = '{value}'")).await;
    }
    let _ = session.try_run("SET pg_stat_statements.track_utility = off").await;
    let row = session
        .row(
            "checking statement logging is off",
            "SELECT current_setting('log_min_error_statement') IN ('fatal', 'panic')
                AND current_setting('log_statement') = 'none'
                AND current_setting('log_min_duration_statement') = '-1'
                AND (current_setting('log_min_duration_sample', true) IS NULL
                     OR current_setting('log_min_duration_sample', true) = '-1'
                     OR current_setting('log_statement_sample_rate', true)::float8 = 0)
                AND coalesce(current_setting('log_transaction_sample_rate', true)::float8, 0) = 0",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// The subscription's row on the target: its oid, when it exists in this database.
pub(crate) async fn subscription_oid(tgt: &Session, name: &str) -> Result<Option<u32>, EngineError> {
    Ok(tgt
        .maybe_row(
            "looking for the subscription",
            "SELECT s.oid FROM pg_subscription s
             WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&name],
        )
        .await?
        .map(|row| row.get(0)))
}

/// A statement's kind for its span: its first keyword, upper-cased ("SELECT", "CREATE", "BEGIN"), or
/// "OTHER" when it does not start with one.
fn statement_kind(sql: &str) -> &'static str {
    const KINDS: [&str; 16] = [
        "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP", "TRUNCATE", "COPY", "BEGIN", "COMMIT", "ROLLBACK", "SET",
        "LOCK", "WITH", "ANALYZE",
    ];
    let first = sql.trim_start().split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or_default();
    KINDS.iter().copied().find(|kind| kind.eq_ignore_ascii_case(first)).unwrap_or("OTHER")
}

#[cfg(test)]
mod tests {
    use super::*;
    use milink_core::ConnectionName;

    #[test]
    fn a_statement_span_names_its_kind_never_its_text() {
        assert_eq!(statement_kind("  select 1"), "SELECT");
        assert_eq!(statement_kind("CREATE SUBSCRIPTION s CONNECTION 'password=x'"), "CREATE");
        assert_eq!(statement_kind("BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '1'"), "BEGIN");
        assert_eq!(statement_kind("(SELECT 1)"), "OTHER");
        assert_eq!(statement_kind("VACUUM x"), "OTHER");
    }

    fn endpoint(url: &str, password: Option<&str>) -> Endpoint {
        Endpoint {
            name: ConnectionName::parse("src").unwrap(),
            engine: "postgres".into(),
            url: url.into(),
            password: password.map(Secret::new),
            replication_url: None,
            options: Default::default(),
        }
    }

    #[test]
    fn urls_give_host_port_user_and_maintenance_database() {
        let server = Server::new("source", &endpoint("postgresql://milink@127.0.0.1:54311/postgres", None)).unwrap();
        assert_eq!(server.place().address, "127.0.0.1:54311");
        assert_eq!(server.place().user, "milink");
        assert_eq!(server.maintenance_database, "postgres");
        let server = Server::new("source", &endpoint("postgresql://u@db.example", None)).unwrap();
        assert_eq!(server.place().address, "db.example:5432");
    }

    #[test]
    fn a_url_without_user_or_host_is_a_definite_error() {
        let error = Server::new("source", &endpoint("postgresql://db.example/x", None)).err().unwrap();
        assert_eq!(error.code, "invalid_url");
        assert!(Server::new("source", &endpoint("not a url at all ===", None)).is_err());
    }

    #[test]
    fn conninfo_quotes_the_database_and_the_password() {
        let server = Server::new("source", &endpoint("postgresql://milink@127.0.0.1:54311/postgres", Some("p'w\\d"))).unwrap();
        let info = server.conninfo("Tøy'商店", "milink_1");
        assert!(info.contains(r"dbname='Tøy\'商店'"), "{info}");
        assert!(info.contains(r"password='p\'w\\d'"));
        assert!(!server.conninfo_for_tools("x").contains("password"));
        assert!(server.conninfo("x", "milink_1").contains("application_name='milink_1'"), "{info}");
        assert!(server.conninfo_for_tools("x").contains("application_name='milink'"));
    }
}
