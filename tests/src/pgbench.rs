//! pgbench and the PostgreSQL client tools on the dev servers, for benchmarks and load tests: the newest
//! installed major version's binaries, pointed at the source server as the `milink` role.
use crate::pg;
use std::process::{Command, Stdio};

/// A PostgreSQL client tool: the newest `/usr/lib/postgresql/<major>/bin/<tool>` (Debian), else `PATH`.
pub fn pg_bin(tool: &str) -> String {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|dirs| dirs.filter_map(|d| d.ok()?.file_name().to_str()?.parse::<u32>().ok()).max());
    match newest {
        Some(major) => format!("/usr/lib/postgresql/{major}/bin/{tool}"),
        None => tool.to_owned(),
    }
}

/// The source server's port, from its URL.
pub fn source_port() -> String {
    let url = &pg::servers().source_url;
    url.rsplit(':').next().and_then(|rest| rest.split('/').next()).unwrap_or("54311").to_owned()
}

/// `pgbench <args>` against `database` on the source, output piped (the caller reads its summary, or sets
/// `Stdio::null()`).
pub fn pgbench(database: &str, args: &[&str]) -> Command {
    let mut command = Command::new(pg_bin("pgbench"));
    command
        .args(args)
        .args(["-h", "127.0.0.1", "-p", &source_port(), "-U", "milink", database])
        .env("PGPASSWORD", &pg::servers().password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A log line without its terminal colour codes (`ESC [ ... m`), which milink writes when asked to.
pub fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// How long milink held the pooler paused (PAUSE → RESUME), from the times of its log lines (each starts
/// with an RFC 3339 time).
pub fn pooler_pause(log: &str) -> Option<std::time::Duration> {
    let at = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .map(without_colours)
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
    };
    (at("resumed it")? - at("pooler paused the database")?).to_std().ok()
}
