//! Names that reach T-SQL or an ARM URL, and the only two ways they get there.
//!
//! Every identifier milink puts into a T-SQL statement goes through [`quote_ident`] (bracket quoting,
//! `]` doubled) and every string literal through [`quote_literal`] (`N'…'`, `'` doubled); nothing is spliced
//! raw. Values the server accepts as parameters (WHERE clauses, procedure arguments) are passed as
//! parameters instead (see [`crate::tsql::Statement`]). Names that also travel in an ARM URL path (the link,
//! the availability groups, certificates) must additionally match the ARM path pattern of
//! `distributedAvailabilityGroupName` (`^[#a-zA-Z_][\w@#$]*$`, at most 128 characters, mi-link.md §1.5), so
//! they are validated once, here, into [`LinkNames`]. Database names are free text (the core allows any
//! printable text up to 128 characters): they are quoted in T-SQL and percent-encoded in URLs.
use thiserror::Error;

/// Longest SQL Server identifier (`sysname`).
pub const SYSNAME_MAX: usize = 128;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {what} {value:?}: {why}")]
pub struct InvalidName {
    /// Which kind of name.
    pub what: &'static str,
    /// The value as given (names are not secrets).
    pub value: String,
    /// What to change.
    pub why: String,
}

fn invalid(what: &'static str, value: &str, why: impl Into<String>) -> InvalidName {
    InvalidName { what, value: value.to_owned(), why: why.into() }
}

/// Checks a SQL Server identifier: 1–128 characters, no control characters (NUL included).
pub fn check_sysname(what: &'static str, value: &str) -> Result<(), InvalidName> {
    if value.is_empty() {
        return Err(invalid(what, value, "it is empty"));
    }
    if value.chars().count() > SYSNAME_MAX {
        return Err(invalid(what, value, "it is longer than 128 characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(what, value, "it contains a control character"));
    }
    Ok(())
}

/// `[name]` with every `]` doubled: the T-SQL delimited identifier for any sysname.
///
/// Callers validate with [`check_sysname`] first; quoting itself cannot fail and never lets a character
/// end the identifier early.
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('[');
    for c in name.chars() {
        if c == ']' {
            quoted.push(']');
        }
        quoted.push(c);
    }
    quoted.push(']');
    quoted
}

/// `N'text'` with every `'` doubled: a Unicode T-SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("N'{}'", text.replace('\'', "''"))
}

/// True when `value` matches the ARM path pattern `^[#a-zA-Z_][\w@#$]*$` with at most 128 characters.
pub fn is_arm_link_name(value: &str) -> bool {
    let mut chars = value.chars();
    let first_ok = matches!(chars.next(), Some(c) if c == '#' || c == '_' || c.is_ascii_alphabetic());
    first_ok
        && value.len() <= SYSNAME_MAX
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '#' | '$'))
}

/// Checks a name that travels in an ARM path and in T-SQL (link, availability groups).
pub fn check_arm_link_name(what: &'static str, value: &str) -> Result<(), InvalidName> {
    if is_arm_link_name(value) {
        Ok(())
    } else {
        Err(invalid(
            what,
            value,
            "it must match ^[#a-zA-Z_][\\w@#$]*$ (a letter, '_' or '#' first; then letters, digits, '_', '@', '#', \
             '$'; at most 128 characters), because Azure uses it in the resource path",
        ))
    }
}

/// Checks an ARM certificate name (server trust certificates): letters, digits, `_` and `-`, 1–128.
pub fn check_certificate_resource_name(value: &str) -> Result<(), InvalidName> {
    let ok = !value.is_empty()
        && value.len() <= SYSNAME_MAX
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid("certificate name", value, "use 1–128 letters, digits, '_' or '-'"))
    }
}

/// Percent-encodes one URL path segment (RFC 3986 unreserved characters pass through).
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The names of the objects one link consists of.
///
/// Defaults derive from the migration's link name (`milink_<12 hex>`), which never contains user input:
/// the distributed AG (= the ARM resource name) is the link name, the SQL Server AG is `<link>_ag`, and
/// the MI-side AG (the second member of the distributed AG) is `<link>_mi`. The config may override each one;
/// overrides are validated against the ARM path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkNames {
    /// Distributed availability group on SQL Server, and the ARM `distributedAvailabilityGroups` name.
    pub distributed_ag: String,
    /// The local availability group on SQL Server that holds the database.
    pub local_ag: String,
    /// The managed instance's member of the distributed AG (`instanceAvailabilityGroupName`).
    pub instance_ag: String,
}

impl LinkNames {
    /// Names for a link, from its default name and optional overrides.
    pub fn new(
        link_name: &str,
        distributed_ag: Option<&str>,
        local_ag: Option<&str>,
        instance_ag: Option<&str>,
    ) -> Result<Self, InvalidName> {
        let names = Self {
            distributed_ag: distributed_ag.map(str::to_owned).unwrap_or_else(|| link_name.to_owned()),
            local_ag: local_ag.map(str::to_owned).unwrap_or_else(|| format!("{link_name}_ag")),
            instance_ag: instance_ag.map(str::to_owned).unwrap_or_else(|| format!("{link_name}_mi")),
        };
        check_arm_link_name("link (distributed availability group) name", &names.distributed_ag)?;
        check_arm_link_name("availability group name", &names.local_ag)?;
        check_arm_link_name("managed instance availability group name", &names.instance_ag)?;
        if names.distributed_ag == names.local_ag {
            return Err(invalid("availability group name", &names.local_ag, "it must differ from the link name"));
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_are_doubled_and_nothing_escapes_the_identifier() {
        assert_eq!(quote_ident("Toy]Store"), "[Toy]]Store]");
        assert_eq!(quote_ident("a]]b"), "[a]]]]b]");
        assert_eq!(quote_ident("[x]"), "[[x]]]");
        assert_eq!(quote_literal("O'Brien"), "N'O''Brien'");
    }

    #[test]
    fn arm_pattern_matches_the_documented_one() {
        assert!(is_arm_link_name("milink_0f1e2d3c4b5a"));
        assert!(is_arm_link_name("#dag@1$"));
        assert!(!is_arm_link_name("1dag"));
        assert!(!is_arm_link_name("my-dag"));
        assert!(!is_arm_link_name("Toy]Store"));
        assert!(!is_arm_link_name(&"a".repeat(129)));
        assert!(is_arm_link_name(&"a".repeat(128)));
    }

    #[test]
    fn default_link_names_derive_from_the_link_name() {
        let names = LinkNames::new("milink_abc", None, None, None).unwrap();
        assert_eq!(names.distributed_ag, "milink_abc");
        assert_eq!(names.local_ag, "milink_abc_ag");
        assert_eq!(names.instance_ag, "milink_abc_mi");
        assert!(LinkNames::new("milink_abc", Some("bad-name"), None, None).is_err());
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_path_segment("Toy]Store"), "Toy%5DStore");
        assert_eq!(encode_path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(encode_path_segment("ø"), "%C3%B8");
    }
}
