//! Support for milink's end-to-end tests: real PostgreSQL servers started by `dev/pg.sh`, the real
//! `milink` binary started as a child process with its own config and state file, a writer that keeps
//! writing until the fence stops it, and a data check that compares source and target with plain SQL,
//! independently of milink.
#![allow(missing_docs, unreachable_pub)]

pub mod fleet;
pub mod holds;
pub mod milink;
pub mod pg;
pub mod pgbench;
pub mod webhook;
pub mod writer;

/// The workspace root (tests read `dev/` scripts and the built binary from there).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// A fresh, unique suffix for database names so tests can run in parallel.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{:08x}", rand::random::<u32>())
}
