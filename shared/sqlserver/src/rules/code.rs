//! The code-scanning MI compatibility rules of Microsoft's list (assessment.md §1.1): T-SQL in module
//! definitions that Azure SQL Managed Instance refuses or no longer parses (BULK INSERT from a file, COMPUTE,
//! `*=` joins, legacy RAISERROR, SQL Mail, discontinued system procedures, …), plus NextColumn from the catalog.
//!
//! Microsoft's assessment parses T-SQL with its own (closed) parser; milink reads `sys.sql_modules.definition`
//! of the modules a cheap `LIKE` pre-filter picked ([`crate::tsql::probe::code_candidates`]) and runs a small
//! tokenizer here, so that text in comments, string literals and bracket-quoted names never counts, and each
//! rule matches a token pattern rather than a substring. It is an approximation of a parse (documented per
//! rule below); every finding names the modules so a person can confirm it. All findings are warnings: the
//! module breaks on MI, the migration does not.
use crate::inventory::{DatabaseFacts, ModuleText};
use milink_core::assessment::{Finding, Severity};

/// One code rule: milink's id, Microsoft's rule name, what it means, what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeRule {
    /// milink's rule id (the finding's `rule`).
    pub id: &'static str,
    /// The rule's name in Microsoft's list (DMA / Azure Migrate / Arc).
    pub microsoft_rule: &'static str,
    /// What was found.
    pub message: &'static str,
    /// What to do.
    pub remediation: &'static str,
}

/// Every code rule, in the order findings are reported.
pub const CODE_RULES: &[CodeRule] = &[
    CodeRule { id: "bulk_insert", microsoft_rule: "BulkInsert", message: "BULK INSERT reads from a file path; MI reads only from Azure Blob Storage", remediation: "load the file from Azure Blob Storage: CREATE EXTERNAL DATA SOURCE … TYPE = BLOB_STORAGE, then BULK INSERT … WITH (DATA_SOURCE = …)" },
    CodeRule { id: "compute_clause", microsoft_rule: "ComputeClause", message: "the COMPUTE clause was removed from SQL Server and does not parse on MI", remediation: "rewrite with ROLLUP / GROUPING SETS, or compute the totals in the application" },
    CodeRule { id: "cryptographic_provider", microsoft_rule: "CryptographicProvider", message: "CREATE/ALTER CRYPTOGRAPHIC PROVIDER (EKM) is not supported on MI", remediation: "use Azure Key Vault for keys (TDE with customer-managed keys) and remove the provider statements" },
    CodeRule { id: "database_principal_alias", microsoft_rule: "DatabasePrincipalAlias", message: "database principal aliases (sp_addalias, sys.database_principal_aliases) are discontinued", remediation: "use database roles instead of aliases" },
    CodeRule { id: "disable_def_cnst_chk", microsoft_rule: "DisableDefCNSTCHK", message: "SET DISABLE_DEF_CNST_CHK was removed and does not run on MI", remediation: "remove the SET option (constraint checking is always immediate)" },
    CodeRule { id: "fast_first_row_hint", microsoft_rule: "FastFirstRowHint", message: "the FASTFIRSTROW table hint was removed", remediation: "use OPTION (FAST 1) instead" },
    CodeRule { id: "non_ansi_left_outer_join", microsoft_rule: "NonANSILeftOuterJoinSyntax", message: "non-ANSI left outer joins (*=) are not supported at compatibility level 90 or higher", remediation: "rewrite as LEFT OUTER JOIN … ON" },
    CodeRule { id: "non_ansi_right_outer_join", microsoft_rule: "NonANSIRightOuterJoinSyntax", message: "non-ANSI right outer joins (=*) are not supported at compatibility level 90 or higher", remediation: "rewrite as RIGHT OUTER JOIN … ON" },
    CodeRule { id: "openrowset_bulk_non_blob", microsoft_rule: "OpenRowsetWithNonBlobDataSourceBulk", message: "OPENROWSET(BULK …) reads a file path; MI reads only from Azure Blob Storage", remediation: "put the file in Azure Blob Storage and use OPENROWSET(BULK …, DATA_SOURCE = <external data source>)" },
    CodeRule { id: "openrowset_non_sql_provider", microsoft_rule: "OpenRowsetWithNonSQLProvider", message: "OPENROWSET uses an OLE DB provider MI does not have (only SQLNCLI, SQLNCLI11, SQLOLEDB, MSOLEDBSQL)", remediation: "read the data through a SQL Server target, or load it with Azure Data Factory" },
    CodeRule { id: "raiserror_legacy", microsoft_rule: "RAISERROR", message: "the legacy RAISERROR syntax (RAISERROR <number> '<text>') was removed", remediation: "rewrite as RAISERROR (<message>, <severity>, <state>) or THROW" },
    CodeRule { id: "sql_mail", microsoft_rule: "SqlMail", message: "SQL Mail (xp_sendmail, xp_startmail, …) was removed", remediation: "use Database Mail (sp_send_dbmail); on MI Agent mail needs the profile AzureManagedInstance_dbmail_profile" },
    CodeRule { id: "system_procedures_110", microsoft_rule: "SystemProcedures110", message: "discontinued system procedures are called (sp_dboption, sp_addserver, sp_dropalias, sp_activedirectory_*)", remediation: "use ALTER DATABASE … SET instead of sp_dboption, sp_addlinkedserver instead of sp_addserver, and roles instead of aliases" },
    CodeRule { id: "next_column", microsoft_rule: "NextColumn", message: "tables or columns are named NEXT, which can collide with the NEXT VALUE FOR sequence syntax", remediation: "quote the name ([NEXT]) wherever it is used, write AS before column aliases, or rename it" },
];

/// OLE DB providers OPENROWSET may name on MI.
pub const MI_OPENROWSET_PROVIDERS: &[&str] = &["SQLNCLI", "SQLNCLI11", "SQLOLEDB", "MSOLEDBSQL"];

const SQL_MAIL: &[&str] = &["XP_SENDMAIL", "XP_STARTMAIL", "XP_STOPMAIL", "XP_READMAIL", "XP_DELETEMAIL", "XP_FINDNEXTMSG", "SP_PROCESSMAIL"];
const SYSTEM_PROCEDURES_110: &[&str] = &["SP_DBOPTION", "SP_ADDSERVER", "SP_DROPALIAS", "SP_ACTIVEDIRECTORY_OBJ", "SP_ACTIVEDIRECTORY_SCP", "SP_ACTIVEDIRECTORY_START"];
const ALIASES: &[&str] = &["SP_ADDALIAS", "DATABASE_PRINCIPAL_ALIASES"];
const AGGREGATES: &[&str] = &["SUM", "AVG", "COUNT", "COUNT_BIG", "MAX", "MIN", "STDEV", "STDEVP", "VAR", "VARP"];

/// One token of T-SQL text. Comments are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A bare word, upper-cased (keywords, names, `@variables`).
    Word(String),
    /// A `[bracketed]` or `"double-quoted"` name, upper-cased: a name, never a keyword.
    Quoted(String),
    /// A `'string'` or `N'string'`, as written.
    Text(String),
    /// A number.
    Number,
    /// An operator or punctuation: `*=`, `=*`, or one character.
    Symbol(String),
}

/// Splits T-SQL into tokens the way SQL Server reads them: `--` and nested `/* */` comments are dropped,
/// `''` and `]]` are escapes.
pub fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let quoted = |i: &mut usize, close: char| -> String {
        let mut value = String::new();
        while *i < chars.len() {
            let c = chars[*i];
            *i += 1;
            if c == close {
                if chars.get(*i) == Some(&close) {
                    value.push(c);
                    *i += 1;
                } else {
                    break;
                }
            } else {
                value.push(c);
            }
        }
        value
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '\'' || ((c == 'N' || c == 'n') && next == Some('\'')) {
            i += if c == '\'' { 1 } else { 2 };
            out.push(Token::Text(quoted(&mut i, '\'')));
        } else if c == '[' {
            i += 1;
            out.push(Token::Quoted(quoted(&mut i, ']').to_uppercase()));
        } else if c == '"' {
            i += 1;
            out.push(Token::Quoted(quoted(&mut i, '"').to_uppercase()));
        } else if c.is_alphabetic() || c == '_' || c == '@' || c == '#' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || "_@#$".contains(chars[i])) {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect::<String>().to_uppercase()));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Token::Number);
        } else if (c == '*' && next == Some('=')) || (c == '=' && next == Some('*')) {
            out.push(Token::Symbol(chars[i..i + 2].iter().collect()));
            i += 2;
        } else {
            out.push(Token::Symbol(c.to_string()));
            i += 1;
        }
    }
    out
}

fn word(token: Option<&Token>, expected: &str) -> bool {
    matches!(token, Some(Token::Word(w)) if w == expected)
}

fn symbol(token: Option<&Token>, expected: &str) -> bool {
    matches!(token, Some(Token::Symbol(s)) if s == expected)
}

/// A name in a call position, bare or quoted (`master..xp_sendmail`, `[sp_dboption]`).
fn name_in(token: &Token, names: &[&str]) -> bool {
    match token {
        Token::Word(w) | Token::Quoted(w) => names.contains(&w.as_str()),
        _ => false,
    }
}

/// The tokens of the parenthesised list that opens at `open` (exclusive), up to its matching `)`.
fn parenthesised(tokens: &[Token], open: usize) -> &[Token] {
    let mut depth = 0usize;
    for (offset, token) in tokens[open..].iter().enumerate() {
        if symbol(Some(token), "(") {
            depth += 1;
        } else if symbol(Some(token), ")") {
            depth -= 1;
            if depth == 0 {
                return &tokens[open + 1..open + offset];
            }
        }
    }
    &tokens[open + 1..]
}

/// `*=` / `=*` as an old outer join: in a WHERE or HAVING condition (not `SET @x *= 2`, the compound
/// assignment), between two operands that are not variables.
fn old_outer_join(tokens: &[Token], at: usize) -> bool {
    let left_is_variable = matches!(tokens.get(at.wrapping_sub(1)), Some(Token::Word(w)) if w.starts_with('@'));
    if at == 0 || left_is_variable {
        return false;
    }
    for token in tokens[..at].iter().rev() {
        if let Token::Word(w) = token {
            match w.as_str() {
                "WHERE" | "HAVING" => return true,
                "SET" | "SELECT" | "UPDATE" | "FROM" | "ON" | "DECLARE" | "VALUES" | "INSERT" | "RETURN" | "BEGIN" | "END" => return false,
                _ => {}
            }
        }
    }
    false
}

/// The code rules one module definition breaks (ids of [`CODE_RULES`], each once, in table order).
pub fn scan(definition: &str) -> Vec<&'static str> {
    let tokens = tokens(definition);
    let mut found = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let next = tokens.get(i + 1);
        let rule = match token {
            Token::Word(w) if w == "BULK" && word(next, "INSERT") => {
                // The statement's options follow within a few dozen tokens; DATA_SOURCE means blob storage.
                let rest = &tokens[i..tokens.len().min(i + 60)];
                (!rest.iter().any(|t| word(Some(t), "DATA_SOURCE"))).then_some("bulk_insert")
            }
            Token::Word(w) if w == "COMPUTE" && next.is_some_and(|t| name_in(t, AGGREGATES)) && symbol(tokens.get(i + 2), "(") => Some("compute_clause"),
            Token::Word(w) if (w == "CREATE" || w == "ALTER") && word(next, "CRYPTOGRAPHIC") && word(tokens.get(i + 2), "PROVIDER") => Some("cryptographic_provider"),
            Token::Word(w) if w == "SET" && word(next, "DISABLE_DEF_CNST_CHK") => Some("disable_def_cnst_chk"),
            Token::Word(w) if w == "FASTFIRSTROW" => Some("fast_first_row_hint"),
            Token::Symbol(s) if s == "*=" && old_outer_join(&tokens, i) => Some("non_ansi_left_outer_join"),
            Token::Symbol(s) if s == "=*" && old_outer_join(&tokens, i) => Some("non_ansi_right_outer_join"),
            Token::Word(w) if w == "OPENROWSET" && symbol(next, "(") => {
                let arguments = parenthesised(&tokens, i + 1);
                match arguments.first() {
                    Some(Token::Word(first)) if first == "BULK" => (!arguments.iter().any(|t| word(Some(t), "DATA_SOURCE"))).then_some("openrowset_bulk_non_blob"),
                    Some(Token::Text(provider)) => {
                        (!MI_OPENROWSET_PROVIDERS.iter().any(|p| provider.trim().eq_ignore_ascii_case(p))).then_some("openrowset_non_sql_provider")
                    }
                    _ => None,
                }
            }
            Token::Word(w) if w == "RAISERROR" && matches!(next, Some(Token::Number) | Some(Token::Word(_))) => Some("raiserror_legacy"),
            t if name_in(t, SQL_MAIL) => Some("sql_mail"),
            t if name_in(t, SYSTEM_PROCEDURES_110) => Some("system_procedures_110"),
            t if name_in(t, ALIASES) => Some("database_principal_alias"),
            _ => None,
        };
        if let Some(rule) = rule {
            if !found.contains(&rule) {
                found.push(rule);
            }
        }
    }
    CODE_RULES.iter().map(|r| r.id).filter(|id| found.contains(id)).collect()
}

/// The code-rule findings of one database: each rule once, naming the modules (and, for NextColumn, the
/// tables and columns).
pub fn database_findings(db: &DatabaseFacts) -> Vec<Finding> {
    let scanned: Vec<(&ModuleText, Vec<&'static str>)> = db.modules.iter().map(|m| (m, scan(&m.definition))).collect();
    let mut findings = Vec::new();
    for rule in CODE_RULES {
        let objects: Vec<String> = if rule.id == "next_column" {
            db.next_columns.clone()
        } else {
            scanned.iter().filter(|(_, rules)| rules.contains(&rule.id)).map(|(m, _)| m.name.clone()).collect()
        };
        if !objects.is_empty() {
            findings.push(
                Finding::new(rule.id, Severity::Warning, format!("{} (Microsoft rule {})", rule.message, rule.microsoft_rule), rule.remediation).with_objects(objects),
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_strings_and_quoted_names_never_count() {
        assert!(scan("-- COMPUTE SUM(x)\n/* BULK INSERT t FROM 'c:\\x' /* nested */ FASTFIRSTROW */ SELECT 'xp_sendmail', [FASTFIRSTROW] FROM t").is_empty());
    }

    #[test]
    fn compound_assignment_is_not_an_old_join() {
        assert!(scan("DECLARE @x int = 2; SET @x *= 3; UPDATE t SET c *= 2 WHERE id = 1").is_empty());
        assert_eq!(scan("SELECT * FROM a, b WHERE a.id *= b.id"), ["non_ansi_left_outer_join"]);
        assert_eq!(scan("SELECT * FROM a, b WHERE a.x = 1 AND a.id =* b.id"), ["non_ansi_right_outer_join"]);
    }

    #[test]
    fn each_rule_has_a_unique_id_and_microsofts_name() {
        let mut ids: Vec<&str> = CODE_RULES.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), CODE_RULES.len());
        assert!(CODE_RULES.iter().all(|r| !r.microsoft_rule.is_empty() && !r.remediation.is_empty()));
    }
}
