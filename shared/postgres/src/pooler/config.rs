//! The pooler's settings, read from the source connection's `options` table and checked before anything
//! is touched, so a typo shows up as "what to change" and never as a half-done cutover.
//!
//! ```toml
//! [connections.src.options]
//! pooler_admin_url = "postgresql://pgbouncer_admin@127.0.0.1:6432/pgbouncer"
//! pooler_password_file = "/etc/milink/pgbouncer_admin_password"   # or pooler_password_env = "VAR"
//! pooler_databases_file = "/etc/pgbouncer/milink_databases.ini"   # %include'd by pgbouncer.ini
//! pooler_pause_timeout_seconds = 5                                # optional, default 5
//! ```
//!
//! The admin password follows the connection's own rule (config.rs): never in the url, taken from an
//! environment variable or a file, held only in a [`Secret`]. It is read when a step runs rather than at
//! start because the core keeps engine options as written; for the same reason paths must be absolute
//! (the core knows the config file's directory, this crate does not).
use milink_core::config::{Endpoint, Secret};
use milink_core::EngineError;
use std::path::PathBuf;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};

const KEYS: [&str; 5] = [
    "pooler_admin_url",
    "pooler_password_env",
    "pooler_password_file",
    "pooler_databases_file",
    "pooler_pause_timeout_seconds",
];
const DEFAULT_PAUSE_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How milink reaches and drives the pooler in front of a source.
#[derive(Clone)]
pub(crate) struct PoolerConfig {
    /// The source connection's name, for messages.
    pub(crate) connection: String,
    /// `host:port` of the admin console.
    pub(crate) address: String,
    pub(crate) admin: tokio_postgres::Config,
    pub(crate) tls: bool,
    pub(crate) password: Option<Secret>,
    pub(crate) databases_file: PathBuf,
    pub(crate) pause_timeout: Duration,
    pub(crate) connect_timeout: Duration,
}

impl PoolerConfig {
    /// The pooler of `source`, or None when its options name none.
    pub(crate) fn of(source: &Endpoint) -> Result<Option<Self>, EngineError> {
        let connection = source.name.as_str().to_owned();
        let options = &source.options;
        let invalid = |why: String| invalid(&connection, why);
        if let Some(unknown) = options.keys().find(|k| k.starts_with("pooler_") && !KEYS.contains(&k.as_str())) {
            return Err(invalid(format!("unknown option {unknown} (known: {})", KEYS.join(", "))));
        }
        let text = |key: &str| -> Result<Option<String>, EngineError> {
            match options.get(key) {
                None => Ok(None),
                Some(value) => match value.as_str() {
                    Some(s) if !s.trim().is_empty() => Ok(Some(s.to_owned())),
                    _ => Err(invalid(format!("{key} must be a non-empty string"))),
                },
            }
        };
        let Some(url) = text("pooler_admin_url")? else {
            if let Some(key) = KEYS.iter().find(|k| options.contains_key(**k)) {
                return Err(invalid(format!("{key} is set but pooler_admin_url is not; set it, or remove every pooler_ option")));
            }
            return Ok(None);
        };
        let admin: tokio_postgres::Config = url
            .parse()
            .map_err(|_| invalid("pooler_admin_url does not parse as postgresql://user@host:port/pgbouncer".into()))?;
        if admin.get_password().is_some() {
            return Err(invalid(
                "pooler_admin_url contains a password; remove it and set pooler_password_env or pooler_password_file".into(),
            ));
        }
        let address = admin_address(&admin).ok_or_else(|| invalid("pooler_admin_url names no host".into()))?;
        if admin.get_user().is_none() {
            return Err(invalid("pooler_admin_url names no user (one of PgBouncer's admin_users)".into()));
        }
        match admin.get_dbname() {
            None | Some("pgbouncer") => {}
            Some(other) => {
                return Err(invalid(format!("pooler_admin_url names database {other}; the admin console is database pgbouncer")))
            }
        }
        let databases_file = absolute(text("pooler_databases_file")?, "pooler_databases_file", &invalid)?.ok_or_else(|| {
            invalid(
                "pooler_databases_file is not set: name the file holding PgBouncer's [databases] entries (%include'd by \
                 pgbouncer.ini), which milink rewrites to point the database at the target"
                    .into(),
            )
        })?;
        let password = password(&text("pooler_password_env")?, &text("pooler_password_file")?, &invalid)?;
        let pause_timeout = match options.get("pooler_pause_timeout_seconds") {
            None => DEFAULT_PAUSE_TIMEOUT,
            Some(value) => match value.as_integer() {
                Some(n) if (1..=3600).contains(&n) => Duration::from_secs(n as u64),
                _ => return Err(invalid("pooler_pause_timeout_seconds must be a whole number of seconds, 1 to 3600".into())),
            },
        };
        let connect_timeout = admin.get_connect_timeout().copied().unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let tls = !matches!(admin.get_ssl_mode(), SslMode::Disable);
        Ok(Some(Self { connection, address, admin, tls, password, databases_file, pause_timeout, connect_timeout }))
    }

    /// "pooler of connection 'src' (127.0.0.1:6432)", the subject of every message.
    pub(crate) fn label(&self) -> String {
        format!("pooler of connection '{}' ({})", self.connection, self.address)
    }
}

fn invalid(connection: &str, why: String) -> EngineError {
    EngineError::definite(
        "pooler_config_invalid",
        format!("connection '{connection}': the pooler options are not usable: {why}"),
        format!("Fix the pooler_ options of connection '{connection}' in milink.toml and restart milink; nothing was changed."),
    )
}

fn admin_address(admin: &tokio_postgres::Config) -> Option<String> {
    let port = admin.get_ports().first().copied().unwrap_or(6432);
    match admin.get_hosts().first()? {
        Host::Tcp(name) if name.contains(':') => Some(format!("[{name}]:{port}")),
        Host::Tcp(name) => Some(format!("{name}:{port}")),
        #[cfg(unix)]
        Host::Unix(path) => Some(format!("{}/.s.PGSQL.{port}", path.display())),
    }
}

fn absolute(path: Option<String>, key: &str, invalid: &dyn Fn(String) -> EngineError) -> Result<Option<PathBuf>, EngineError> {
    match path.map(PathBuf::from) {
        Some(path) if path.is_relative() => Err(invalid(format!("{key} must be an absolute path, not {}", path.display()))),
        other => Ok(other),
    }
}

fn password(
    env: &Option<String>,
    file: &Option<String>,
    invalid: &dyn Fn(String) -> EngineError,
) -> Result<Option<Secret>, EngineError> {
    match (env, absolute(file.clone(), "pooler_password_file", invalid)?) {
        (Some(_), Some(_)) => Err(invalid("set pooler_password_env or pooler_password_file, not both".into())),
        (Some(var), None) => std::env::var(var).map(|v| Some(Secret::new(v))).map_err(|_| {
            invalid(format!("environment variable {var} (pooler_password_env) is not set; export it before starting milink"))
        }),
        (None, Some(path)) => {
            // The io error names the path and the reason only; the file's content never reaches a message.
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid(format!("cannot read pooler_password_file {}: {e}", path.display())))?;
            Ok(Some(Secret::new(text.trim_end_matches(['\n', '\r']))))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use milink_core::ConnectionName;

    fn source(options: &str) -> Endpoint {
        Endpoint {
            name: ConnectionName::parse("src").unwrap(),
            engine: "postgres".into(),
            url: "postgresql://milink@127.0.0.1:54311/postgres".into(),
            password: None,
            replication_url: None,
            options: options.parse().unwrap(),
        }
    }

    fn error(options: &str) -> String {
        let error = PoolerConfig::of(&source(options)).err().expect("an error");
        assert_eq!(error.code, "pooler_config_invalid");
        assert!(error.message.contains("'src'"), "{}", error.message);
        error.message
    }

    #[test]
    fn no_pooler_options_means_no_pooler() {
        assert!(PoolerConfig::of(&source("other = 1")).unwrap().is_none());
    }

    #[test]
    fn a_complete_pooler_config_is_read() {
        let config = PoolerConfig::of(&source(
            "pooler_admin_url = \"postgresql://admin@127.0.0.1:6432/pgbouncer?sslmode=disable\"\n\
             pooler_databases_file = \"/etc/pgbouncer/db.ini\"\npooler_pause_timeout_seconds = 9",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(config.address, "127.0.0.1:6432");
        assert_eq!(config.pause_timeout, Duration::from_secs(9));
        assert!(!config.tls && config.password.is_none());
        assert_eq!(config.label(), "pooler of connection 'src' (127.0.0.1:6432)");
    }

    #[test]
    fn mistakes_are_refused_with_what_to_change() {
        let url = "pooler_admin_url = \"postgresql://admin@h:6432/pgbouncer\"\n";
        let file = "pooler_databases_file = \"/x/db.ini\"\n";
        assert!(error(&format!("{url}{file}pooler_pause_timeout = 3")).contains("unknown option pooler_pause_timeout"));
        assert!(error(file).contains("pooler_admin_url is not"));
        assert!(error(url).contains("pooler_databases_file is not set"));
        assert!(error(&format!("{url}pooler_databases_file = \"db.ini\"")).contains("absolute"));
        assert!(error(&format!("{file}pooler_admin_url = \"postgresql://admin:pw@h/pgbouncer\"")).contains("contains a password"));
        assert!(error(&format!("{file}pooler_admin_url = \"postgresql://admin@h/app\"")).contains("database app"));
        assert!(error(&format!("{url}{file}pooler_password_env = \"MILINK_NO_SUCH_VARIABLE_X\"")).contains("MILINK_NO_SUCH_VARIABLE_X"));
        assert!(error(&format!("{url}{file}pooler_pause_timeout_seconds = 0")).contains("whole number"));
    }

    #[test]
    fn a_password_in_the_url_is_not_echoed() {
        let message = error("pooler_admin_url = \"postgresql://admin:hunter2@h/pgbouncer\"\npooler_databases_file = \"/x\"");
        assert!(!message.contains("hunter2"), "{message}");
    }
}
