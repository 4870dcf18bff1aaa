//! Shared by the integration tests: Azurite, started by the project's own script (pinned version).
#![allow(dead_code, unreachable_pub)]
use milink_azure::auth::StorageAuth;
use milink_azure::table::TableClient;
use milink_core::config::Secret;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The emulator's well-known account and key (published by Microsoft; they protect nothing).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Starts Azurite with dev/azurite.sh (idempotent, locked) and returns its table endpoint.
pub fn azurite_endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            let status = std::process::Command::new(repo_root().join("dev/azurite.sh"))
                .arg("up")
                .status()
                .expect("dev/azurite.sh runs");
            assert!(status.success(), "dev/azurite.sh up failed");
            let port = std::env::var("MILINK_AZURITE_TABLE_PORT").unwrap_or_else(|_| "10002".into());
            format!("http://127.0.0.1:{port}/{ACCOUNT}")
        })
        .clone()
}

pub fn azurite_client() -> TableClient {
    let auth = StorageAuth::SharedKey { account: ACCOUNT.into(), key: Secret::new(KEY) };
    TableClient::new(&azurite_endpoint(), ACCOUNT, auth, reqwest::Client::new()).unwrap()
}

/// A table-name prefix no other test uses (table names: letters and digits only).
pub fn unique_prefix(tag: &str) -> String {
    format!("t{tag}{}", uuid::Uuid::new_v4().simple()).chars().take(40).collect()
}
