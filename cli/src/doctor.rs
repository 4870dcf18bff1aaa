//! `milink doctor`: each connection's TLS as negotiated (version, cipher, the server certificate's
//! subject, issuer and expiry), for a security review before a migration starts.
//!
//! It reads the config file itself and connects directly, like `milink up` would, rather than asking a
//! running host: a TLS problem is often why the host cannot work, and the report must still come out.
use crate::output::{self, Format};
use anyhow::Context as _;
use clap::Args;
use milink_core::config::Config;
use serde_json::{json, Value};
use std::path::PathBuf;

/// `milink doctor` options.
#[derive(Args)]
pub(crate) struct DoctorArgs {
    /// Connections to check (names from the config); all of them when none is given.
    connections: Vec<String>,
    /// The config file with the connections.
    #[arg(long, short = 'c', env = "MILINK_CONFIG", default_value = "milink.toml")]
    config: PathBuf,
}

/// Reports every asked connection; fails (exit 1) when one of them cannot be reached as configured.
pub(crate) async fn run(args: DoctorArgs, format: Format) -> anyhow::Result<()> {
    let config = Config::load(&args.config).with_context(|| format!("loading {}", args.config.display()))?;
    let mut reports = Vec::new();
    let mut failed = 0;
    for (name, endpoint) in &config.connections {
        if !args.connections.is_empty() && !args.connections.iter().any(|c| c == name.as_str()) {
            continue;
        }
        let report = match endpoint.engine.as_str() {
            "postgres" => match milink_postgres::doctor::tls_report(endpoint).await {
                Ok(r) => json!({
                    "connection": r.connection, "engine": "postgres", "address": r.address, "sslmode": r.sslmode,
                    "verification": r.verification, "encrypted": r.encrypted, "version": r.version, "cipher": r.cipher,
                    "subject": r.subject, "issuer": r.issuer, "expires": r.expires, "clientCertificate": r.client_certificate,
                }),
                Err(error) => {
                    failed += 1;
                    json!({"connection": name.as_str(), "engine": "postgres", "error": {"code": error.code, "message": error.message, "remediation": error.remediation}})
                }
            },
            engine => json!({
                "connection": name.as_str(), "engine": engine,
                "verification": "not reported: milink's TDS and ARM clients do not expose the negotiated session; see docs/tls.md for what is checked",
            }),
        };
        reports.push(report);
    }
    for asked in &args.connections {
        if !config.connections.keys().any(|name| name.as_str() == asked) {
            anyhow::bail!("no connection '{asked}' in {}", args.config.display());
        }
    }
    print(&reports, format);
    if failed > 0 {
        anyhow::bail!("{failed} connection(s) failed the TLS check; each error above says what to change");
    }
    Ok(())
}

fn print(reports: &[Value], format: Format) {
    if matches!(format, Format::Json) {
        return output::json(&Value::Array(reports.to_vec()));
    }
    for report in reports {
        println!("{}", report["connection"].as_str().unwrap_or("?"));
        let fields = [
            "engine", "address", "sslmode", "verification", "encrypted", "version", "cipher", "subject", "issuer", "expires",
            "clientCertificate",
        ];
        for field in fields {
            if let Some(value) = report.get(field) {
                println!("  {field:<18} {}", output::cell(value));
            }
        }
        if let Some(error) = report.get("error") {
            println!("  error              {} ({})", output::cell(&error["message"]), output::cell(&error["code"]));
            println!("  what to do         {}", output::cell(&error["remediation"]));
        }
    }
}
