//! A small T-SQL lexer for tests: finds bracket-quoted identifiers and string literals exactly as SQL Server
//! reads them (`]]` and `''` are escapes), so a test can prove a hostile name came out as one token and that
//! nothing of it leaked outside the token.

/// One quoted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// `[...]`, unescaped.
    Ident(String),
    /// `N'...'` or `'...'`, unescaped.
    Literal(String),
}

/// The quoted tokens of `sql`, and the text outside them (each token replaced by a space). Panics on an
/// unterminated identifier or literal: the statement would not parse.
pub fn lex(sql: &str) -> (Vec<Token>, String) {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut outside = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let literal_start = c == '\'' || (c == 'N' && chars.get(i + 1) == Some(&'\'') && (i == 0 || !chars[i - 1].is_alphanumeric()));
        if c == '[' || literal_start {
            let (close, skip) = if c == '[' { (']', 1) } else if c == 'N' { ('\'', 2) } else { ('\'', 1) };
            i += skip;
            let mut value = String::new();
            loop {
                let ch = *chars.get(i).unwrap_or_else(|| panic!("unterminated token in {sql}"));
                if ch == close {
                    if chars.get(i + 1) == Some(&close) {
                        value.push(close);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                value.push(ch);
                i += 1;
            }
            tokens.push(if c == '[' { Token::Ident(value) } else { Token::Literal(value) });
            outside.push(' ');
        } else {
            outside.push(c);
            i += 1;
        }
    }
    (tokens, outside)
}

/// The identifiers of `sql`.
pub fn idents(sql: &str) -> Vec<String> {
    lex(sql).0.into_iter().filter_map(|t| if let Token::Ident(s) = t { Some(s) } else { None }).collect()
}

/// The literals of `sql`.
pub fn literals(sql: &str) -> Vec<String> {
    lex(sql).0.into_iter().filter_map(|t| if let Token::Literal(s) = t { Some(s) } else { None }).collect()
}
