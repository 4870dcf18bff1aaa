//! Errors as engines report them, classified once where they are born.
//!
//! An engine maps its native errors (SQLSTATE, SQL Server error numbers, ARM codes, I/O) to an
//! [`EngineError`] with a [`ErrorKind`]: *transient* errors are retried with backoff and then shown as
//! Stalled; *definite* errors fail the migration with a remediation a user can act on. Unknown is transient.
//! Messages never carry secrets: engines build them from error codes and names, not from connection strings.
use serde::{Deserialize, Serialize};

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorKind {
    /// Retrying may succeed (network blip, lock timeout, server restarting). Unknown errors are transient.
    Transient,
    /// Retrying the same thing will fail the same way (wrong password, missing privilege, bad setting).
    Definite,
}

/// An error from an engine, safe to store and show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{message}")]
pub struct EngineError {
    /// Transient or definite.
    pub kind: ErrorKind,
    /// A stable code (`authentication_failed`, `wal_level_not_logical`, `unreachable`, ...).
    pub code: String,
    /// What happened, in words, without secrets.
    pub message: String,
    /// What the user can do about it.
    pub remediation: String,
}

impl EngineError {
    /// A transient error.
    pub fn transient(code: &str, message: impl Into<String>, remediation: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Transient, code: code.into(), message: message.into(), remediation: remediation.into() }
    }

    /// A definite error.
    pub fn definite(code: &str, message: impl Into<String>, remediation: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Definite, code: code.into(), message: message.into(), remediation: remediation.into() }
    }

    /// True when retrying may help.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}
