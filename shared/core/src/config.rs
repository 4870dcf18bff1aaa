//! `milink.toml`: named connections, the server's knobs, notifications.
//!
//! Connections are named here and requests refer to them by name. A connection's URL never holds a
//! password: the password comes from an environment variable or a file the config names, is read once at
//! start, and lives only in memory inside a [`Secret`], whose `Debug` is redacted and which cannot be
//! serialized. That is how secrets stay out of the store, messages, logs and error bodies.
use crate::names::ConnectionName;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A secret held in memory only.
///
/// Hand-written rather than taken from a crate: all it must do is refuse to print or serialize itself, and
/// ten lines do that with no extra dependency.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must hand it to a driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A resolved connection: everything an engine needs to reach one server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The connection's name.
    pub name: ConnectionName,
    /// `postgres`, `sqlserver`, `azure-sql-mi`.
    pub engine: String,
    /// The URL without a password.
    pub url: String,
    /// The password, when one is configured.
    pub password: Option<Secret>,
    /// For a source: the URL the *target* uses to reach it, when it differs from `url` (NAT, containers).
    pub replication_url: Option<String>,
    /// Engine-specific settings, as written.
    pub options: toml::Table,
}

/// A problem with the config, phrased so the user knows what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown fields.
    #[error("config {path} is invalid: {message}")]
    Parse {
        /// Which file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A connection is wrong.
    #[error("connection {name}: {message}")]
    Connection {
        /// Which connection.
        name: String,
        /// What is wrong and what to do.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnection {
    engine: String,
    url: String,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    replication_url: Option<String>,
    #[serde(default)]
    options: toml::Table,
}

/// Knobs of the embedded host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the API listens on.
    pub listen: String,
    /// SQLite state file.
    pub state: PathBuf,
    /// How often every link is polled.
    pub poll_interval_ms: u64,
    /// Handlers running at once.
    pub max_concurrency: usize,
    /// Attempts of a step before it is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, with jitter.
    pub retry_base_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7878".into(),
            state: PathBuf::from("milink.db"),
            poll_interval_ms: 1000,
            max_concurrency: 8,
            max_attempts: 6,
            retry_base_ms: 500,
            retry_max_ms: 30_000,
        }
    }
}

/// Where notifications go (they are always logged too).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// A URL that receives a JSON POST per notification.
    pub webhook_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    notify: NotifyConfig,
    #[serde(default)]
    admission: crate::admission::Caps,
    #[serde(default)]
    alerts: crate::alerts::AlertSettings,
    #[serde(default)]
    connections: BTreeMap<String, RawConnection>,
}

/// The whole config, secrets resolved.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Server knobs.
    pub server: ServerConfig,
    /// Notifications.
    pub notify: NotifyConfig,
    /// Caps on active migrations (`[admission]`).
    pub admission: crate::admission::Caps,
    /// Alert thresholds and where alerts go (`[alerts]`).
    pub alerts: crate::alerts::AlertSettings,
    /// Connections by name.
    pub connections: BTreeMap<ConnectionName, Endpoint>,
}

impl Config {
    /// Reads and validates a config file, resolving passwords from the environment or files.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, &|name| std::env::var(name).ok())
            .map_err(|e| match e {
                ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.into(), message },
                other => other,
            })
    }

    /// Parses config text; `env` looks up environment variables and `base` anchors relative file paths.
    pub fn parse(text: &str, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::new(), message: e.to_string() })?;
        let mut connections = BTreeMap::new();
        for (name, connection) in raw.connections {
            let endpoint = resolve(&name, connection, base, env)?;
            connections.insert(endpoint.name.clone(), endpoint);
        }
        let mut server = raw.server;
        if server.state.is_relative() {
            server.state = base.join(&server.state);
        }
        Ok(Self { server, notify: raw.notify, admission: raw.admission, alerts: raw.alerts, connections })
    }

    /// The endpoint named `name`, or an error that lists the names there are.
    pub fn endpoint(&self, name: &ConnectionName) -> Result<&Endpoint, LookupError> {
        self.connections.get(name).ok_or_else(|| LookupError::UnknownConnection {
            name: name.to_string(),
            known: self.connections.keys().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// Why a connection or an engine for it could not be found: classified once here, worded for the user,
/// and mapped by each edge (the API to its error codes, a step to a retried configuration stall).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No connection of that name.
    #[error("no connection named {name} in the config (known: {known})")]
    UnknownConnection {
        /// The name asked for.
        name: String,
        /// The names the config has.
        known: String,
    },
    /// No engine migrates from the connection's engine.
    #[error("connection {connection} has engine {engine:?}, which this build cannot migrate from (known: {known})")]
    UnsupportedEngine {
        /// The connection.
        connection: String,
        /// Its engine value.
        engine: String,
        /// The engines this build has.
        known: String,
    },
    /// The source's engine migrates to another kind of target.
    #[error("a {source_engine} source migrates to a {expected} target, but connection {target} is {target_engine}")]
    UnsupportedPair {
        /// The source's engine.
        source_engine: String,
        /// The target engine it migrates to.
        expected: String,
        /// The target connection.
        target: String,
        /// Its engine.
        target_engine: String,
    },
}

impl LookupError {
    /// As a step's error: retried (and then stalled) rather than failed, because a connection renamed
    /// during a cutover must not strand a fenced source; fixing the config and restarting lets it finish.
    pub fn into_engine_error(self) -> crate::error::EngineError {
        crate::error::EngineError::transient("configuration", self.to_string(), "fix milink.toml and restart milink")
    }
}

fn resolve(name: &str, raw: RawConnection, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Endpoint, ConfigError> {
    let error = |message: String| ConfigError::Connection { name: name.to_owned(), message };
    let name = ConnectionName::parse(name).map_err(|e| error(e.to_string()))?;
    for url in std::iter::once(&raw.url).chain(raw.replication_url.iter()) {
        if url_has_password(url) {
            return Err(error(
                "the url contains a password; remove it and set password_env or password_file instead".into(),
            ));
        }
    }
    let password = match (&raw.password_env, &raw.password_file) {
        (Some(_), Some(_)) => return Err(error("set password_env or password_file, not both".into())),
        (Some(var), None) => Some(Secret::new(env(var).ok_or_else(|| {
            error(format!("environment variable {var} (password_env) is not set; export it before starting milink"))
        })?)),
        (None, Some(file)) => {
            let path = if file.is_relative() { base.join(file) } else { file.clone() };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| error(format!("cannot read password_file {}: {e}", path.display())))?;
            Some(Secret::new(text.trim_end_matches(['\n', '\r'])))
        }
        (None, None) => None,
    };
    Ok(Endpoint {
        name,
        engine: raw.engine,
        url: raw.url,
        password,
        replication_url: raw.replication_url,
        options: raw.options,
    })
}

/// True when a URL (`scheme://user:pass@host`) or a key=value connection string carries a password.
fn url_has_password(url: &str) -> bool {
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            return userinfo.contains(':');
        }
        return url.to_ascii_lowercase().contains("password=");
    }
    url.to_ascii_lowercase().split([' ', ';']).any(|part| part.trim_start().starts_with("password="))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/tmp"), &|name| (name == "SRC_PW").then(|| "s3cret".to_owned()))
    }

    #[test]
    fn passwords_come_from_env_and_never_print() {
        let config = parse(
            "[connections.src]\nengine = \"postgres\"\nurl = \"postgresql://milink@localhost:5432/postgres\"\npassword_env = \"SRC_PW\"\n",
        )
        .unwrap();
        let endpoint = &config.connections[&ConnectionName::parse("src").unwrap()];
        assert_eq!(endpoint.password.as_ref().unwrap().expose(), "s3cret");
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn a_password_in_the_url_is_refused_with_the_fix() {
        let err = parse("[connections.src]\nengine = \"postgres\"\nurl = \"postgresql://u:pw@h/db\"\n").unwrap_err();
        assert!(err.to_string().contains("password_env"), "{err}");
        assert!(!err.to_string().contains("pw@"), "the error must not echo the password: {err}");
        let err = parse("[connections.src]\nengine = \"postgres\"\nurl = \"host=h password=pw\"\n").unwrap_err();
        assert!(err.to_string().contains("password_env"));
    }

    #[test]
    fn a_missing_env_var_names_the_variable() {
        let err = parse("[connections.src]\nengine = \"postgres\"\nurl = \"postgresql://u@h/db\"\npassword_env = \"NOPE\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("NOPE"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(parse("[server]\nlisten_on = \"x\"\n").is_err());
    }
}
