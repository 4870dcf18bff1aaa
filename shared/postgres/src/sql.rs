//! Quoting: the only way a name or a value from outside reaches SQL text or a connection string.
//!
//! Most values travel as bind parameters. Some statements cannot take parameters (CREATE DATABASE,
//! CREATE SUBSCRIPTION ... CONNECTION, ALTER ROLE ... IN DATABASE), so names are quoted here, always, even
//! when they look harmless: database names come from users and may hold quotes, spaces or any Unicode.
//! Connection strings (libpq `key='value'` syntax) have their own quoting, which is different from SQL's;
//! mixing the two up is how a password with a quote in it breaks a subscription, so both live side by side.

/// A SQL identifier, always double-quoted (`Toy"Store` → `"Toy""Store"`), so case and every character
/// survive exactly as the catalogs hold them.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A schema-qualified name, both parts quoted.
pub(crate) fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// A SQL string literal. Backslashes force the `E'...'` form with backslashes doubled, which reads the
/// same whatever `standard_conforming_strings` says.
pub(crate) fn quote_literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// A libpq connection string, built from key/value pairs; each value single-quoted with `\` and `'`
/// escaped by a backslash, as libpq's conninfo parser expects.
#[derive(Default)]
pub(crate) struct ConnInfo {
    parts: Vec<String>,
}

impl ConnInfo {
    pub(crate) fn with(mut self, key: &str, value: &str) -> Self {
        let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
        self.parts.push(format!("{key}='{escaped}'"));
        self
    }

    pub(crate) fn with_opt(self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(value) => self.with(key, value),
            None => self,
        }
    }

    /// The connection string. It may hold a password: hand it to a server or a child process, never to a
    /// log line or an error message.
    pub(crate) fn build(self) -> String {
        self.parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_survive_quotes_spaces_and_unicode() {
        assert_eq!(quote_ident("ToyStore"), "\"ToyStore\"");
        assert_eq!(quote_ident("Toy\"Store"), "\"Toy\"\"Store\"");
        assert_eq!(quote_ident("Toy Store"), "\"Toy Store\"");
        assert_eq!(quote_ident("Tøy'商店"), "\"Tøy'商店\"");
        assert_eq!(qualified("my schema", "t\"1"), "\"my schema\".\"t\"\"1\"");
    }

    #[test]
    fn literals_double_quotes_and_escape_backslashes() {
        assert_eq!(quote_literal("abc"), "'abc'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\'b"), "E'a\\\\''b'");
    }

    #[test]
    fn conninfo_values_escape_quotes_and_backslashes() {
        let info = ConnInfo::default()
            .with("host", "127.0.0.1")
            .with("dbname", "Tøy'商店")
            .with("password", "p\\w'd x")
            .with_opt("sslmode", None)
            .build();
        assert_eq!(info, r"host='127.0.0.1' dbname='Tøy\'商店' password='p\\w\'d x'");
    }

    #[test]
    fn a_conninfo_inside_a_literal_keeps_both_quotings() {
        // CREATE SUBSCRIPTION ... CONNECTION <literal>: the server first reads the SQL literal, then libpq
        // reads the conninfo; each layer must undo exactly its own escaping.
        let info = ConnInfo::default().with("password", "a'b\\c").build();
        assert_eq!(info, r"password='a\'b\\c'");
        assert_eq!(quote_literal(&info), r"E'password=''a\\''b\\\\c'''");
    }
}
