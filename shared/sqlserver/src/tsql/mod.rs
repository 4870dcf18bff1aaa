//! T-SQL that milink sends, built by pure functions and checked by tests.
//!
//! A [`Statement`] is text plus parameters (`@P1`, `@P2`, … as tiberius binds them). Builders take
//! validated names and return statements; they never touch a connection, so every statement for every
//! step can be asserted exactly, including with hostile names. The split:
//! - [`probe`]: the read-only queries of assessment, validation and observation (each documented with the
//!   rule it feeds);
//! - [`link`]: the create-link and cancel steps on SQL Server;
//! - [`cutover`]: synchronous commit, failover, fence and unfence.
//!
//! Secrets (the master key password) travel only as [`SqlParam::Secret`], whose `Debug` is redacted, and
//! are turned into a literal on the server (`QUOTENAME(@P1, '''')`), so they are never in statement text.
use milink_core::config::Secret;
use std::fmt;

pub mod cutover;
pub mod link;
pub mod probe;

/// A parameter value.
#[derive(Clone, PartialEq, Eq)]
pub enum SqlParam {
    /// nvarchar text.
    Text(String),
    /// bigint.
    Int(i64),
    /// nvarchar text that must never be printed.
    Secret(Secret),
}

impl fmt::Debug for SqlParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlParam::Text(text) => write!(f, "Text({text:?})"),
            SqlParam::Int(value) => write!(f, "Int({value})"),
            SqlParam::Secret(_) => f.write_str("Secret(<redacted>)"),
        }
    }
}

/// One batch of T-SQL with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The batch text; parameters are `@P1`, `@P2`, ….
    pub sql: String,
    /// Parameter values, in order.
    pub params: Vec<SqlParam>,
}

impl Statement {
    /// A batch without parameters.
    pub fn new(sql: impl Into<String>) -> Self {
        Self { sql: sql.into(), params: Vec::new() }
    }

    /// Adds a text parameter.
    pub fn text(mut self, value: impl Into<String>) -> Self {
        self.params.push(SqlParam::Text(value.into()));
        self
    }

    /// Adds an integer parameter.
    pub fn int(mut self, value: i64) -> Self {
        self.params.push(SqlParam::Int(value));
        self
    }

    /// Adds a secret parameter.
    pub fn secret(mut self, value: Secret) -> Self {
        self.params.push(SqlParam::Secret(value));
        self
    }

    /// The statement text with its parameters shown (secrets redacted), for logs and tests.
    pub fn describe(&self) -> String {
        if self.params.is_empty() {
            self.sql.clone()
        } else {
            format!("{} -- params: {:?}", self.sql, self.params)
        }
    }
}

/// True when `hex` is a non-empty even-length string of hex digits (a certificate blob without `0x`).
pub fn is_hex_blob(hex: &str) -> bool {
    !hex.is_empty() && hex.len() & 1 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Normalizes a certificate blob as ARM or `CERTENCODED` return it: strips `0x`, upper-cases, checks hex.
pub fn normalize_hex_blob(blob: &str) -> Option<String> {
    let trimmed = blob.trim();
    let hex = trimmed.strip_prefix("0x").or_else(|| trimmed.strip_prefix("0X")).unwrap_or(trimmed);
    is_hex_blob(hex).then(|| hex.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let statement = Statement::new("SELECT @P1").secret(Secret::new("hunter2"));
        assert!(!format!("{statement:?}").contains("hunter2"));
        assert!(!statement.describe().contains("hunter2"));
    }

    #[test]
    fn blobs_are_normalized() {
        assert_eq!(normalize_hex_blob("0x30ab").as_deref(), Some("30AB"));
        assert_eq!(normalize_hex_blob("30AB").as_deref(), Some("30AB"));
        assert_eq!(normalize_hex_blob("0x30a"), None);
        assert_eq!(normalize_hex_blob("0x30zz"), None);
        assert_eq!(normalize_hex_blob(""), None);
    }
}
