//! T-SQL over TDS with tiberius, behind the two-method port the rest of the engine uses.
//!
//! [`SqlSession`] runs a [`Statement`] and returns rows as JSON objects keyed by column name; the collector
//! and the observation code deserialize those into typed rows. That keeps tiberius in this one file (the only
//! place a socket to SQL Server is opened) and lets the orchestration be tested with a scripted session.
//! Connection settings come from [`crate::options::SqlConnection`]: SQL authentication or an Entra token,
//! TLS required by default with the server certificate validated (a CA file or, for test servers only,
//! `trust_server_certificate`). Azure's redirect (`Routing`) is followed once. Errors are classified here
//! by SQL Server error number ([`crate::errors::sql_error`]); the connection's password or token never
//! appears in one.
use crate::errors;
use crate::options::{CertificateCheck, SqlAuth, SqlConnection};
use crate::tsql::{SqlParam, Statement};
use async_trait::async_trait;
use milink_core::error::EngineError;
use serde_json::{Map, Number, Value};
use std::time::Duration;
use tiberius::{AuthMethod, Client, ColumnData, Config, EncryptionLevel, Query};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

/// A result row: column name → value.
pub type Row = Map<String, Value>;

/// A connection that runs statements.
#[async_trait]
pub trait SqlSession: Send {
    /// Runs a statement and returns the rows of its first result set.
    async fn query(&mut self, statement: &Statement) -> Result<Vec<Row>, EngineError>;
    /// Runs a statement for its effect.
    async fn execute(&mut self, statement: &Statement) -> Result<(), EngineError>;
}

/// Opens sessions to one server.
#[async_trait]
pub trait SqlConnector: Send + Sync {
    /// A new session.
    async fn connect(&self) -> Result<Box<dyn SqlSession>, EngineError>;
}

/// Deserializes rows into typed rows.
pub fn rows_as<T: serde::de::DeserializeOwned>(rows: Vec<Row>, what: &str) -> Result<Vec<T>, EngineError> {
    rows.into_iter()
        .map(|row| serde_json::from_value(Value::Object(row)))
        .collect::<Result<Vec<T>, _>>()
        .map_err(|e| EngineError::transient("unexpected_rows", format!("{what}: unexpected result: {e}"), "milink retries; if it persists, report it with the SQL Server version"))
}

/// [`SqlConnector`] over tiberius.
#[derive(Clone)]
pub struct TdsConnector {
    connection: SqlConnection,
}

impl TdsConnector {
    /// A connector for one server.
    pub fn new(connection: SqlConnection) -> Self {
        Self { connection }
    }

    async fn config(&self, host: &str, port: u16) -> Result<Config, EngineError> {
        let c = &self.connection;
        let mut config = Config::new();
        config.host(host);
        config.port(port);
        config.database(&c.database);
        config.application_name("milink");
        config.encryption(if c.encrypt { EncryptionLevel::Required } else { EncryptionLevel::Off });
        match c.certificate_check() {
            CertificateCheck::SystemRoots | CertificateCheck::Unencrypted => {}
            CertificateCheck::CaFile(ca) => config.trust_cert_ca(ca.display().to_string()),
            CertificateCheck::TrustAny => {
                tracing::warn!(host, port, "SQL Server's certificate is not validated (trust_server_certificate = true): test servers only");
                config.trust_cert();
            }
        }
        let auth = match &c.auth {
            SqlAuth::Sql { user, password } => AuthMethod::sql_server(user, password.expose()),
            SqlAuth::EntraToken(token) => AuthMethod::aad_token(token.expose()),
            SqlAuth::Entra(tokens) => AuthMethod::aad_token(tokens.bearer().await?.expose()),
        };
        config.authentication(auth);
        Ok(config)
    }

    async fn open(config: Config, host: &str, port: u16) -> Result<Client<Compat<TcpStream>>, tiberius::error::Error> {
        let tcp = tokio::time::timeout(Duration::from_secs(30), TcpStream::connect((host, port)))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out after 30 s"))??;
        tcp.set_nodelay(true)?;
        Client::connect(config, tcp.compat_write()).await
    }
}

#[async_trait]
impl SqlConnector for TdsConnector {
    async fn connect(&self) -> Result<Box<dyn SqlSession>, EngineError> {
        let c = &self.connection;
        let config = self.config(&c.host, c.port).await?;
        let client = match Self::open(config, &c.host, c.port).await {
            Err(tiberius::error::Error::Routing { host, port }) => {
                let redirected = self.config(&host, port).await?;
                Self::open(redirected, &host, port).await
            }
            other => other,
        }
        .map_err(|e| classify(e, &c.host))?;
        Ok(Box::new(TdsSession { client, server: c.host.clone() }))
    }
}

struct TdsSession {
    client: Client<Compat<TcpStream>>,
    server: String,
}

fn query_of(statement: &Statement) -> Query<'_> {
    let mut query = Query::new(statement.sql.as_str());
    for param in &statement.params {
        match param {
            SqlParam::Text(text) => query.bind(text.as_str()),
            SqlParam::Int(value) => query.bind(*value),
            SqlParam::Secret(secret) => query.bind(secret.expose()),
        }
    }
    query
}

#[async_trait]
impl SqlSession for TdsSession {
    async fn query(&mut self, statement: &Statement) -> Result<Vec<Row>, EngineError> {
        let stream = query_of(statement).query(&mut self.client).await.map_err(|e| classify(e, &self.server))?;
        let rows = stream.into_first_result().await.map_err(|e| classify(e, &self.server))?;
        Ok(rows.iter().map(to_json).collect())
    }

    async fn execute(&mut self, statement: &Statement) -> Result<(), EngineError> {
        query_of(statement).execute(&mut self.client).await.map(|_| ()).map_err(|e| classify(e, &self.server))
    }
}

fn to_json(row: &tiberius::Row) -> Row {
    let mut out = Map::new();
    for (index, (column, data)) in row.cells().enumerate() {
        let value = match data {
            ColumnData::U8(v) => v.map(|v| Value::from(i64::from(v))),
            ColumnData::I16(v) => v.map(|v| Value::from(i64::from(v))),
            ColumnData::I32(v) => v.map(|v| Value::from(i64::from(v))),
            ColumnData::I64(v) => v.map(Value::from),
            ColumnData::F32(v) => v.and_then(|v| Number::from_f64(f64::from(v))).map(Value::Number),
            ColumnData::F64(v) => v.and_then(Number::from_f64).map(Value::Number),
            ColumnData::Bit(v) => v.map(Value::Bool),
            ColumnData::String(v) => v.as_ref().map(|s| Value::String(s.to_string())),
            ColumnData::Guid(v) => v.map(|g| Value::String(g.to_string())),
            ColumnData::Binary(v) => v.as_ref().map(|b| Value::String(format!("0x{}", b.iter().map(|x| format!("{x:02X}")).collect::<String>()))),
            ColumnData::Numeric(v) => v.and_then(|n| n.to_string().parse::<f64>().ok()).and_then(Number::from_f64).map(Value::Number),
            ColumnData::DateTime(_) | ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => row
                .try_get::<chrono::NaiveDateTime, _>(index)
                .ok()
                .flatten()
                .map(|t| Value::String(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string())),
            _ => None,
        };
        out.insert(column.name().to_owned(), value.unwrap_or(Value::Null));
    }
    out
}

/// Classifies a tiberius error.
pub fn classify(error: tiberius::error::Error, server: &str) -> EngineError {
    use tiberius::error::Error;
    match error {
        Error::Server(token) => errors::sql_error(i64::from(token.code()), token.message()),
        Error::Io { message, .. } => errors::unreachable(&format!("SQL Server {server}"), &message),
        Error::Tls(message) => errors::tls_failed(&format!("SQL Server {server}"), &message),
        Error::Routing { host, port } => errors::unreachable(&format!("SQL Server {server}"), &format!("redirected twice (last to {host}:{port})")),
        other => EngineError::transient("tds_error", format!("talking to SQL Server {server}: {other}"), "milink retries; if it persists, check the connection options"),
    }
}
