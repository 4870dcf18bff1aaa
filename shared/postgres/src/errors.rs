//! Every PostgreSQL error becomes an [`EngineError`] here, once, where it is born.
//!
//! The flow only needs to know whether retrying can help (transient) or not (definite), plus words a user
//! can act on. SQLSTATE decides the kind: a wrong password or a missing privilege stays wrong however often
//! we retry; a dropped connection, a deadlock or a server that is still starting may not. Anything we do not
//! recognise is transient, so an unknown hiccup stalls a migration with its reason instead of failing it.
//!
//! Messages are built from the server's own text plus where we were and what we were doing; they never
//! include a connection string. [`redact`] is the last line of defence: the engine passes every error and
//! finding through it with the passwords it holds, so even a server message that echoes one is scrubbed.
use milink_core::config::Secret;
use milink_core::{EngineError, Finding};
use std::error::Error as _;
use std::io;

/// Which server an error concerns, for messages and remediations.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    /// `source` or `target`.
    pub(crate) role: &'static str,
    /// The connection's name in milink.toml.
    pub(crate) connection: String,
    /// `host:port`.
    pub(crate) address: String,
    /// The role milink logs in as.
    pub(crate) user: String,
}

impl Place {
    pub(crate) fn label(&self) -> String {
        format!("{} '{}' ({})", self.role, self.connection, self.address)
    }
}

/// Classifies a driver error raised while `doing` something on `place`.
pub(crate) fn classify(error: &tokio_postgres::Error, place: &Place, doing: &str) -> EngineError {
    if let Some(db) = error.as_db_error() {
        let mut text = db.message().to_owned();
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return classify_sqlstate(db.code().code(), &text, place, doing);
    }
    let io_kind = io_error_kind(error);
    let text = match error.source() {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    };
    if text.contains("TLS") {
        return EngineError::definite(
            "tls_failed",
            format!("{}: {doing}: {text}", place.label()),
            format!(
                "The TLS handshake with {} failed: check that the server accepts TLS (ssl = on) when the url says \
                 sslmode=require, or use sslmode=prefer or disable.",
                place.address
            ),
        );
    }
    if error.is_closed() || io_kind.is_some() || text.contains("timeout") {
        return unreachable(place, doing, &text);
    }
    EngineError::transient("driver_error", format!("{}: {doing}: {text}", place.label()), retry_hint())
}

fn io_error_kind(error: &tokio_postgres::Error) -> Option<io::ErrorKind> {
    let mut cause = error.source();
    while let Some(inner) = cause {
        if let Some(io) = inner.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        cause = inner.source();
    }
    None
}

fn retry_hint() -> &'static str {
    "milink retries this step; if it keeps failing, check both servers' logs"
}

/// The server could not be reached (refused, timed out, name not resolved, connection dropped).
/// Transient: a server restarting looks exactly like this; validation turns it into a blocker.
pub(crate) fn unreachable(place: &Place, doing: &str, text: &str) -> EngineError {
    EngineError::transient(
        "unreachable",
        format!("{}: {doing}: cannot reach {}: {text}", place.label(), place.address),
        format!(
            "Check that PostgreSQL is running and listening on {} (listen_addresses, port) and that no firewall \
             blocks it; host and port come from the url of connection '{}'.",
            place.address, place.connection
        ),
    )
}

pub(crate) fn authentication_failed(place: &Place, doing: &str, text: &str) -> EngineError {
    EngineError::definite(
        "authentication_failed",
        format!("{}: {doing}: {text}", place.label()),
        format!(
            "Check the password of connection '{}' (it comes from that connection's password_env or password_file \
             in milink.toml) and that role '{}' can log in to {}; if the server reports no pg_hba.conf entry, add \
             one for this client, user and database with scram-sha-256.",
            place.connection, place.user, place.address
        ),
    )
}

pub(crate) fn wal_level_remediation(address: &str) -> String {
    format!(
        "On the source ({address}) run: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL \
         (wal_level only changes at server start). Keep max_replication_slots and max_wal_senders above the \
         number of databases you migrate at once."
    )
}

/// Classifies by SQLSTATE. `text` is the server's message.
pub(crate) fn classify_sqlstate(code: &str, text: &str, place: &Place, doing: &str) -> EngineError {
    let message = format!("{}: {doing}: {text}", place.label());
    let definite = |rule: &str, remediation: String| EngineError::definite(rule, message.clone(), remediation);
    let transient = |rule: &str| EngineError::transient(rule, message.clone(), retry_hint());
    match code {
        "28P01" | "28000" => authentication_failed(place, doing, text),
        "3D000" => definite(
            "database_not_found",
            format!("Create the database on {} or pick one that exists there.", place.address),
        ),
        "42501" => definite(
            "permission_denied",
            format!(
                "Role '{}' on {} needs superuser, or REPLICATION plus ownership of the tables (and CREATEDB on \
                 the target); grant it or use a role that has it.",
                place.user, place.address
            ),
        ),
        "55000" if text.contains("wal_level") => EngineError::definite(
            "wal_level_not_logical",
            message.clone(),
            wal_level_remediation(&place.address),
        ),
        "55000" => definite("prerequisite_not_met", "Fix the state the server describes, then retry.".into()),
        "53400" => definite(
            "limit_exceeded",
            format!(
                "Raise the limit the server names on {} (max_replication_slots, max_wal_senders, \
                 max_logical_replication_workers or max_worker_processes; they need a restart) or drop unused \
                 replication slots and subscriptions.",
                place.address
            ),
        ),
        // Concurrent runs of the same idempotent step race on CREATE; the retry finds the object and moves on.
        "42P04" | "42P07" | "42710" | "23505" => transient("concurrent_change"),
        "0A000" => definite("not_supported", "This server does not support the operation; see the message.".into()),
        "53300" | "53200" | "53100" => transient("server_busy"),
        "57P01" | "57P02" | "57P03" | "57P04" => transient("server_unavailable"),
        "40001" | "40P01" | "55P03" | "57014" | "55006" => transient("conflict"),
        _ if code.starts_with("08") => unreachable(place, doing, text),
        _ if code.starts_with("42") || code.starts_with("22") || code.starts_with("23") => definite(
            "sql_error",
            "The databases differ from what milink expected (schema drift?) or milink hit a bug; see the message."
                .into(),
        ),
        _ => transient("server_error"),
    }
}

/// Classifies a failure the *target* reports when it connects to the source for a subscription: the
/// target wraps the source's error in its own (SQLSTATE 08001 and the text of libpq), so the cause is read
/// from the text. `source` describes the source as the target reaches it.
pub(crate) fn classify_publisher_connect(text: &str, source: &Place, doing: &str) -> EngineError {
    if let Some(error) = crate::tls::publisher_certificate_error(text, source, doing) {
        return error;
    }
    if text.contains("password authentication failed") || text.contains("no password supplied") {
        return authentication_failed(source, doing, text);
    }
    if text.contains("no pg_hba.conf entry") || text.contains("does not exist") && text.contains("role") {
        return authentication_failed(source, doing, text);
    }
    if text.contains("wal_level") {
        return EngineError::definite(
            "wal_level_not_logical",
            format!("{}: {doing}: {text}", source.label()),
            wal_level_remediation(&source.address),
        );
    }
    if text.contains("database") && text.contains("does not exist") {
        return classify_sqlstate("3D000", text, source, doing);
    }
    if text.contains("exceeds max_wal_senders") || text.contains("too many clients") || text.contains("connection slots are reserved") {
        // The source answered but had no room for one more replication connection: a matter of capacity,
        // which admission control waits for, not a broken path.
        return EngineError::transient(
            "source_replication_full",
            format!("{}: {doing}: the source has no free connection for replication now: {text}", source.label()),
            format!(
                "Nothing to fix if other links use them: the migration waits its turn. Otherwise raise max_wal_senders \
                 (and max_connections) on {}.",
                source.address
            ),
        );
    }
    unreachable(source, doing, text)
}

/// Turns a connection error into a validation finding (connection tests report, they do not stop).
pub(crate) fn as_finding(error: &EngineError) -> Finding {
    let severity = milink_core::Severity::Blocker;
    Finding::new(&error.code, severity, error.message.clone(), error.remediation.clone())
}

/// Replaces every secret in an error's text. The last line of defence; messages are built without secrets.
pub(crate) fn redact(mut error: EngineError, secrets: &[&Secret]) -> EngineError {
    error.message = scrub(&error.message, secrets);
    error.remediation = scrub(&error.remediation, secrets);
    error
}

/// The same for a finding.
pub(crate) fn redact_finding(mut finding: Finding, secrets: &[&Secret]) -> Finding {
    finding.message = scrub(&finding.message, secrets);
    finding.remediation = scrub(&finding.remediation, secrets);
    finding.objects = finding.objects.iter().map(|o| scrub(o, secrets)).collect();
    finding
}

pub(crate) fn scrub(text: &str, secrets: &[&Secret]) -> String {
    // A password can reach a text raw, escaped as a conninfo value (\' and \\), or that escaped again
    // as an SQL literal (''): remove every form, longest first so no fragment of one survives.
    let mut forms: Vec<String> = Vec::new();
    for secret in secrets.iter().map(|s| s.expose()).filter(|s| !s.is_empty()) {
        let conninfo = secret.replace('\\', "\\\\").replace('\'', "\\'");
        let literal = conninfo.replace('\'', "''");
        forms.extend([literal, conninfo, secret.to_owned()]);
    }
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.into_iter().fold(text.to_owned(), |text, form| text.replace(&form, "<redacted>"))
}

/// True for the errors that mean "this object is already gone" when dropping it.
pub(crate) fn is_missing_object(error: &tokio_postgres::Error) -> bool {
    matches!(error.code().map(|c| c.code()), Some("42704" | "42P01" | "3D000"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use milink_core::ErrorKind;

    #[test]
    fn scrub_removes_escaped_forms_of_a_password() {
        let secret = Secret::new(r"p'w\x");
        let conninfo = r"password='p\'w\\x'";
        let sql = r"CONNECTION 'password=''p\''w\\x'''";
        for text in [conninfo, sql, r"raw p'w\x"] {
            let out = scrub(text, &[&secret]);
            assert!(!out.contains("p'w") && !out.contains(r"w\\x") && !out.contains(r"w\x") && !out.contains("''w"), "{text} -> {out}");
        }
    }

    fn place() -> Place {
        Place { role: "source", connection: "src".into(), address: "127.0.0.1:54311".into(), user: "milink".into() }
    }

    #[test]
    fn a_source_without_a_free_wal_sender_is_capacity_not_a_broken_path() {
        // PostgreSQL's own words (src/backend/storage/lmgr/proc.c, InitProcess).
        let text = "could not connect to the publisher: connection to server at \"127.0.0.1\", port 54311 failed: FATAL:  number of requested standby connections exceeds max_wal_senders (currently 10)";
        let error = classify_publisher_connect(text, &place(), "probing");
        assert_eq!((error.code.as_str(), error.kind), ("source_replication_full", ErrorKind::Transient), "{error:?}");
        assert!(error.remediation.contains("max_wal_senders"));
        let broken = classify_publisher_connect("could not connect to the publisher: Connection refused", &place(), "probing");
        assert_eq!(broken.code, "unreachable");
    }

    #[test]
    fn sqlstates_map_to_the_kind_retrying_deserves() {
        let kind = |code| classify_sqlstate(code, "x", &place(), "testing").kind;
        for code in ["28P01", "28000", "3D000", "42501", "55000", "53400", "0A000", "42601"] {
            assert_eq!(kind(code), ErrorKind::Definite, "{code}");
        }
        for code in ["53300", "57P03", "08006", "08001", "40001", "40P01", "55P03", "XX000", "99999"] {
            assert_eq!(kind(code), ErrorKind::Transient, "{code}");
        }
    }

    #[test]
    fn a_wrong_password_names_the_connection_and_where_its_password_comes_from() {
        let error = classify_sqlstate("28P01", "password authentication failed for user \"milink\"", &place(), "connecting");
        assert_eq!(error.code, "authentication_failed");
        assert!(error.remediation.contains("'src'") && error.remediation.contains("password_env"));
    }

    #[test]
    fn wal_level_errors_carry_the_exact_fix() {
        let error = classify_sqlstate("55000", "logical decoding requires wal_level >= logical", &place(), "x");
        assert_eq!(error.code, "wal_level_not_logical");
        assert!(error.remediation.contains("ALTER SYSTEM SET wal_level = logical"));
    }

    #[test]
    fn publisher_errors_are_read_from_the_targets_text() {
        let text = "could not connect to the publisher: connection to server at \"127.0.0.1\", port 54311 failed: \
                    FATAL:  password authentication failed for user \"milink\"";
        assert_eq!(classify_publisher_connect(text, &place(), "x").code, "authentication_failed");
        let text = "could not connect to the publisher: connection to server at \"127.0.0.1\", port 1 failed: \
                    Connection refused";
        assert_eq!(classify_publisher_connect(text, &place(), "x").code, "unreachable");
    }

    #[test]
    fn secrets_are_scrubbed_from_messages() {
        let secret = Secret::new("hunter2");
        let error = EngineError::definite("x", "password='hunter2' rejected", "retype hunter2");
        let error = redact(error, &[&secret]);
        assert!(!error.message.contains("hunter2") && !error.remediation.contains("hunter2"));
    }
}
