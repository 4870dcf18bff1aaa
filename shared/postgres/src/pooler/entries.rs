//! The pooler's `[databases]` entries file: find the migrated database's entry, and rewrite it to point at the
//! target.
//!
//! PgBouncer has no SQL command that changes a database entry: `[databases]` is read from its ini file on
//! start and on RELOAD. So milink is told about a file (`pooler_databases_file`) that pgbouncer.ini
//! `%include`s, which holds the entries milink may repoint, and rewrites exactly one line in it: the entry
//! whose name is the migrated database's. Only `host`, `port` and `dbname` change; every other parameter of
//! the entry (user, pool_size, auth_user...), every other line and the comments stay byte for byte.
//!
//! The rewrite is atomic (a new file renamed over the old one, so a RELOAD never reads half a file) and
//! serialized with other writers (several migrations of one source, a person's script) by an exclusive lock
//! on `<file>.lock` beside it. Repeating it is harmless: an entry that already points at the target is left
//! alone. Values are parsed and quoted as PgBouncer's own loader does: `key=value` pairs separated by spaces,
//! a value in single quotes when it holds a space or a quote, with `''` for a quote.
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where an entry should point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) dbname: String,
}

/// One `key=value` list, in the order written.
type Pairs = Vec<(String, String)>;

/// The entry named `database` in the text of an entries file: its line number and parameters.
pub(crate) fn find(text: &str, database: &str) -> Option<(usize, Pairs)> {
    let mut in_databases = true; // an included file's lines before any header belong to the including section
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_databases = trimmed.eq_ignore_ascii_case("[databases]");
            continue;
        }
        if !in_databases || trimmed.is_empty() || trimmed.starts_with([';', '#', '%']) {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else { continue };
        if unquote_name(key.trim()) == database {
            return parse_pairs(value).map(|pairs| (number, pairs));
        }
    }
    None
}

/// An entry name as written, double quotes removed (`"my db"` → `my db`, `""` → `"`).
fn unquote_name(key: &str) -> String {
    match key.strip_prefix('"').and_then(|k| k.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => key.to_owned(),
    }
}

/// A connection string as PgBouncer parses it; None when it would refuse it too.
fn parse_pairs(value: &str) -> Option<Pairs> {
    let mut pairs = Vec::new();
    let mut chars = value.trim().chars().peekable();
    loop {
        while chars.next_if_eq(&' ').is_some() {}
        if chars.peek().is_none() {
            return Some(pairs);
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ' ')).collect();
        while chars.next_if_eq(&' ').is_some() {}
        if key.is_empty() || chars.next() != Some('=') {
            return None;
        }
        while chars.next_if_eq(&' ').is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next()? {
                    '\'' if chars.next_if_eq(&'\'').is_some() => value.push('\''),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != ' ')));
        }
        if value.is_empty() {
            return None;
        }
        pairs.push((key, value));
    }
}

fn render(pairs: &Pairs) -> String {
    pairs.iter().map(|(key, value)| format!("{key}={}", quote_value(value))).collect::<Vec<_>>().join(" ")
}

fn quote_value(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\'', '\t']) {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\'', "''"))
}

/// The entry's parameters with host, port and dbname set to `to`; the others kept in place.
pub(crate) fn repointed(pairs: &Pairs, to: &Destination) -> Pairs {
    let wanted = [("host", to.host.clone()), ("port", to.port.to_string()), ("dbname", to.dbname.clone())];
    let mut out: Pairs = pairs.clone();
    for (key, value) in wanted {
        match out.iter_mut().find(|(k, _)| k == key) {
            Some(pair) => pair.1 = value,
            None => out.push((key.to_owned(), value)),
        }
    }
    out
}

/// The file's text with the entry of `database` pointing at `to`; None when there is no such entry.
pub(crate) fn rewritten(text: &str, database: &str, to: &Destination) -> Option<String> {
    let (number, pairs) = find(text, database)?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let line = &lines[number];
    let key = line.split_once('=').map(|(k, _)| k.trim_end()).unwrap_or(line);
    lines[number] = format!("{key} = {}", render(&repointed(&pairs, to)));
    let mut out = lines.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    Some(out)
}

/// Why the file could not be read or rewritten.
#[derive(Debug)]
pub(crate) enum FileError {
    Io { doing: &'static str, path: PathBuf, error: std::io::Error },
    NoEntry,
}

/// Rewrites the entry of `database` in `path` under the file's lock; true when the file changed.
pub(crate) fn repoint(path: &Path, database: &str, to: &Destination) -> Result<bool, FileError> {
    fn io<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
        move |error| FileError::Io { doing, path: path.to_owned(), error }
    }
    let lock_path = sibling(path, ".lock");
    let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io("opening the lock file", &lock_path))?;
    lock.lock().map_err(io("locking", &lock_path))?;
    let text = fs::read_to_string(path).map_err(io("reading", path))?;
    let new = rewritten(&text, database, to).ok_or(FileError::NoEntry)?;
    if new == text {
        return Ok(false);
    }
    let metadata = fs::metadata(path).map_err(io("reading the permissions of", path))?;
    let temporary = sibling(path, ".milink-new");
    let mut file = fs::File::create(&temporary).map_err(io("creating", &temporary))?;
    file.write_all(new.as_bytes()).and_then(|_| file.sync_all()).map_err(io("writing", &temporary))?;
    // PgBouncer reads the file as its own OS user: keep the mode and, where allowed, the owner.
    fs::set_permissions(&temporary, metadata.permissions()).map_err(io("setting the permissions of", &temporary))?;
    let _ = std::os::unix::fs::chown(&temporary, Some(metadata.uid()), Some(metadata.gid()));
    fs::rename(&temporary, path).map_err(io("replacing", path))?;
    Ok(true)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}
