//! Names that come from users: connection names, database names, and the ids milink mints.
//!
//! A name is validated once, when it enters (config, API body, CLI argument), and carried as a type from then
//! on. Validation here is engine-neutral (non-empty, no control characters, bounded length); each engine adds
//! its own limits (PostgreSQL's 63-byte identifiers) and always quotes names, never splices them into SQL.
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a user-supplied name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {why}")]
pub struct NameError {
    /// What kind of name it was ("connection name", "database name").
    pub what: &'static str,
    /// The value as given (names are not secrets).
    pub value: String,
    /// Why it was refused, phrased so the user knows what to change.
    pub why: &'static str,
}

/// The name of a connection in the config file (`[connections.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConnectionName(String);

impl ConnectionName {
    /// Validates a connection name: 1–63 characters of letters, digits, `.`, `_`, `-`, starting with a
    /// letter or digit (so it can be used in a URL path and a Table Storage key without escaping).
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let error = |why| NameError { what: "connection name", value: value.to_owned(), why };
        let mut chars = value.chars();
        match chars.next() {
            None => return Err(error("it is empty")),
            Some(first) if !first.is_ascii_alphanumeric() => {
                return Err(error("it must start with a letter or a digit"))
            }
            _ => {}
        }
        if value.len() > 63 {
            return Err(error("it is longer than 63 characters"));
        }
        if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(error("only letters, digits, '.', '_' and '-' are allowed"));
        }
        Ok(Self(value.to_owned()))
    }

    /// The name as written in the config.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ConnectionName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ConnectionName> for String {
    fn from(name: ConnectionName) -> Self {
        name.0
    }
}

impl fmt::Display for ConnectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A database name as the user wrote it. Any printable text is allowed (quotes, spaces, unicode):
/// engines quote it wherever it reaches SQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatabaseName(String);

impl DatabaseName {
    /// Validates a database name: 1–128 characters (SQL Server's sysname), no control characters.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let error = |why| NameError { what: "database name", value: value.to_owned(), why };
        if value.is_empty() {
            return Err(error("it is empty"));
        }
        if value.chars().count() > 128 {
            return Err(error("it is longer than 128 characters"));
        }
        if value.chars().any(char::is_control) {
            return Err(error("it contains a control character"));
        }
        Ok(Self(value.to_owned()))
    }

    /// The name exactly as the server knows it (unquoted).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DatabaseName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DatabaseName> for String {
    fn from(name: DatabaseName) -> Self {
        name.0
    }
}

impl fmt::Display for DatabaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a migration: one database moving over one link. Minted as a random UUID at start.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MigrationId(pub String);

impl MigrationId {
    /// A fresh random id.
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// A short form (first 12 hex digits, no dashes) used to name objects milink creates on servers,
    /// such as `milink_<short>` publications, so that they never contain user input.
    pub fn short(&self) -> String {
        self.0.chars().filter(char::is_ascii_alphanumeric).take(12).collect::<String>().to_ascii_lowercase()
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MigrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_names_reject_what_would_break_a_url_or_key() {
        assert!(ConnectionName::parse("tailspin-src").is_ok());
        assert!(ConnectionName::parse("").is_err());
        assert!(ConnectionName::parse("-x").is_err());
        assert!(ConnectionName::parse("a/b").is_err());
        assert!(ConnectionName::parse("a b").is_err());
        assert!(ConnectionName::parse(&"a".repeat(64)).is_err());
    }

    #[test]
    fn database_names_allow_hostile_but_printable_text() {
        for name in ["Toy\"\"Store", "Toy Store", "Toy]Store", "ToyStore'; DROP", "Tøy商店"] {
            assert!(DatabaseName::parse(name).is_ok(), "{name}");
        }
        assert!(DatabaseName::parse("a\nb").is_err());
        assert!(DatabaseName::parse("").is_err());
        assert!(DatabaseName::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn short_ids_are_safe_identifiers() {
        let id = MigrationId("0F1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into());
        assert_eq!(id.short(), "0f1e2d3c4b5a");
    }
}
