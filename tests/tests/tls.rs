//! Connections that verify who they talk to (docs/tls.md), against the dev clusters serving a certificate
//! from the test CA that `dev/tls.sh` makes: verify-full with that CA works; another CA, a host name the
//! certificate does not list, and an expired certificate (its own small cluster) each fail with one clear
//! error; a role that logs in with a client certificate only works; and the subscription the target
//! creates verifies the source the same way. Checked through the real binary (`milink doctor`,
//! `milink up`) and, for the subscription, in the servers' own catalogs.
use milink_e2e::milink::{binary, Milink};
use milink_e2e::pg::{self, Side};
use milink_e2e::unique;
use serde_json::{json, Value};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Where dev/tls.sh put the certificates, and the url of the cluster with the expired one.
struct Tls {
    dir: String,
    expired_url: String,
}

fn tls() -> &'static Tls {
    static TLS: OnceLock<Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        pg::servers();
        let script = milink_e2e::workspace_root().join("dev/tls.sh");
        let up = Command::new("bash").arg(&script).arg("up").output().expect("running dev/tls.sh up");
        assert!(up.status.success(), "dev/tls.sh up failed:\n{}{}", String::from_utf8_lossy(&up.stdout), String::from_utf8_lossy(&up.stderr));
        let env = Command::new("bash").arg(&script).arg("env").output().expect("running dev/tls.sh env");
        let text = String::from_utf8_lossy(&env.stdout).to_string();
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix("export ")?.strip_prefix(&format!("{name}=")).map(str::to_owned))
                .unwrap_or_else(|| panic!("dev/tls.sh env did not print {name}:\n{text}"))
        };
        Tls { dir: var("MILINK_TLS_DIR"), expired_url: var("MILINK_PG_TLS_EXPIRED_URL") }
    })
}

/// `url` with TLS settings (libpq's names) added to its query.
fn with(url: &str, settings: &str) -> String {
    format!("{url}?{settings}")
}

fn source_url_by(host: &str) -> String {
    pg::servers().source_url.replace("127.0.0.1", host)
}

/// A `[connections.<name>]` table; `password` false for a role that logs in with its certificate.
fn connection(name: &str, url: &str, password: bool) -> String {
    let password = if password { format!("password_file = \"{}\"\n", pg::servers().password_file) } else { String::new() };
    format!("[connections.{name}]\nengine = \"postgres\"\nurl = \"{url}\"\n{password}\n")
}

/// Runs `milink doctor -o json <name>` on a config holding `connections`: exit success and the report.
fn doctor(connections: &str, name: &str) -> (bool, Value) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("milink.toml"), connections).expect("writing the config");
    let out = Command::new(binary()).args(["-o", "json", "doctor", name]).current_dir(dir.path()).output().expect("running milink doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!format!("{stdout}{stderr}").contains(&pg::servers().password), "the password leaked into doctor's output");
    let reports: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("doctor printed no JSON ({e}):\n{stdout}\n{stderr}"));
    (out.status.success(), reports[0].clone())
}

#[test]
fn verify_full_with_the_test_ca_succeeds_and_doctor_shows_what_was_negotiated() {
    let ca = format!("{}/ca.crt", tls().dir);
    let url = with(&pg::servers().source_url, &format!("sslmode=verify-full&sslrootcert={ca}"));
    let (ok, report) = doctor(&connection("verified", &url, true), "verified");
    assert!(ok, "{report:#}");
    assert_eq!(report["encrypted"], true, "{report:#}");
    assert_eq!(report["verification"], "certificate chain and host name");
    assert!(report["version"].as_str().is_some_and(|v| v.starts_with("TLSv1.")), "{report:#}");
    assert!(report["cipher"].as_str().is_some_and(|c| !c.is_empty()), "{report:#}");
    assert_eq!(report["issuer"], "CN=milink test CA", "{report:#}");
    assert_eq!(report["subject"], "CN=milink dev server");
    assert!(report["expires"].as_str().is_some_and(|e| e > "2030"), "{report:#}");

    // verify-ca checks the chain only: the same server by a name its certificate does not list is accepted.
    let url = with(&source_url_by("localhost"), &format!("sslmode=verify-ca&sslrootcert={ca}"));
    let (ok, report) = doctor(&connection("chain_only", &url, true), "chain_only");
    assert!(ok, "{report:#}");
    assert_eq!(report["verification"], "certificate chain (not the host name)");
}

/// Doctor's error for one connection, asserting it failed and that the message and the fix name it.
fn refused(name: &str, url: &str) -> Value {
    let (ok, report) = doctor(&connection(name, url, true), name);
    assert!(!ok, "{name} should have been refused: {report:#}");
    let error = report["error"].clone();
    assert!(error["message"].as_str().is_some_and(|m| m.contains(&format!("'{name}'"))), "{error:#}");
    assert!(error["remediation"].as_str().is_some_and(|r| r.contains(&format!("'{name}'"))), "{error:#}");
    error
}

#[test]
fn another_ca_a_wrong_host_or_an_expired_certificate_each_fail_with_one_clear_error() {
    let dir = &tls().dir;
    let url = with(&pg::servers().source_url, &format!("sslmode=verify-full&sslrootcert={dir}/other-ca.crt"));
    let error = refused("other_ca", &url);
    assert_eq!(error["code"], "tls_certificate_untrusted", "{error:#}");
    assert!(error["message"].as_str().unwrap().contains("other-ca.crt"), "says which CA file was used: {error:#}");

    let url = with(&source_url_by("localhost"), &format!("sslmode=verify-full&sslrootcert={dir}/ca.crt"));
    let error = refused("wrong_host", &url);
    assert_eq!(error["code"], "tls_certificate_wrong_host", "{error:#}");
    assert!(error["message"].as_str().unwrap().contains("localhost"), "{error:#}");

    // The expired cluster works when the certificate is not judged, so only verification refuses it.
    let (ok, report) = doctor(&connection("expired_unchecked", &with(&tls().expired_url, "sslmode=require"), true), "expired_unchecked");
    assert!(ok && report["encrypted"] == true, "{report:#}");
    let error = refused("expired", &with(&tls().expired_url, &format!("sslmode=verify-full&sslrootcert={dir}/ca.crt")));
    assert_eq!(error["code"], "tls_certificate_expired", "{error:#}");

    // No silent fallback: a CA file that does not exist is an error, not an unverified connection.
    let error = refused("missing_ca", &with(&pg::servers().source_url, "sslmode=verify-full&sslrootcert=/nonexistent/ca.crt"));
    assert_eq!(error["code"], "tls_settings_invalid", "{error:#}");
}

#[test]
fn a_role_with_only_a_client_certificate_logs_in() {
    let dir = &tls().dir;
    let user_url = pg::servers().source_url.replace("milink@", "milink_cert_only@");
    let url = with(&user_url, &format!("sslmode=verify-full&sslrootcert={dir}/ca.crt&sslcert={dir}/cert-only.crt&sslkey={dir}/cert-only.key"));
    let (ok, report) = doctor(&connection("cert_only", &url, false), "cert_only");
    assert!(ok, "{report:#}");
    assert_eq!(report["clientCertificate"], true, "{report:#}");

    // The same role without its certificate is turned away (pg_hba `cert`): the certificate is what logs in.
    let url = with(&user_url, &format!("sslmode=verify-full&sslrootcert={dir}/ca.crt"));
    let (ok, report) = doctor(&connection("cert_only_without_it", &url, false), "cert_only_without_it");
    assert!(!ok, "{report:#}");
}

/// A small database with a table, on the source only.
async fn small_database() -> anyhow::Result<String> {
    let name = unique("tls");
    pg::drop_everywhere(&name).await;
    pg::connect(Side::Source, "postgres").await?.batch_execute(&format!("CREATE DATABASE {}", pg::ident(&name))).await?;
    let db = pg::connect(Side::Source, &name).await?;
    db.batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g").await?;
    Ok(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_subscription_the_target_creates_verifies_the_source_too() -> anyhow::Result<()> {
    let dir = &tls().dir;
    let verified = with(&pg::servers().source_url, &format!("sslmode=verify-full&sslrootcert={dir}/ca.crt"));
    // milink reaches the source by its address, the target by a name the certificate does not list.
    let wrong_host = with(&source_url_by("localhost"), &format!("sslmode=verify-full&sslrootcert={dir}/ca.crt"));
    let extra = format!(
        "{}{}\nreplication_url = \"{wrong_host}\"\n",
        connection("src_verified", &verified, true),
        connection("src_wrong_host", &verified, true).trim_end()
    );
    let milink = Milink::start(&format!("{extra}\n")).await?;

    // When the target cannot verify the source, the migration stops before anything is created, saying so.
    let other = small_database().await?;
    let (status, body) = milink.post("/api/migrations", &json!({ "source": "src_wrong_host", "target": "dst", "databases": [other] })).await?;
    assert_eq!(status, 202, "{body}");
    let id = body["migrations"][0]["id"].as_str().unwrap_or_default().to_owned();
    let failed = milink.wait_for(&id, "Failed", Duration::from_secs(60), |m| m["status"] == "Failed").await?;
    let text = failed.to_string();
    assert!(text.contains("does not match host name"), "the target's own check refused the source: {failed:#}");
    assert!(failed["remediation"].as_str().is_some_and(|r| r.contains("src_wrong_host") && r.contains("replication_url")), "{failed:#}");
    assert!(!milink.logs().contains(&pg::servers().password), "a secret leaked");

    let database = small_database().await?;
    let (status, body) = milink.post("/api/migrations", &json!({ "source": "src_verified", "target": "dst", "databases": [database] })).await?;
    assert_eq!(status, 202, "{body}");
    let id = body["migrations"][0]["id"].as_str().unwrap_or_default().to_owned();
    // Admission may queue it while other tests hold the shared servers' WAL senders: it starts when they free.
    milink.wait_status(&id, "ReadyForCutover", Duration::from_secs(600)).await?;

    // The target stored the verifying settings, and the source sees the subscription's walsender on TLS.
    let target = pg::connect(Side::Target, &database).await?;
    let rows = target.query("SELECT subconninfo, subslotname::text FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())", &[]).await?;
    assert_eq!(rows.len(), 1, "one subscription in the target database");
    let (conninfo, slot): (String, String) = (rows[0].get(0), rows[0].get(1));
    assert!(conninfo.contains("sslmode='verify-full'") && conninfo.contains(&format!("sslrootcert='{dir}/ca.crt'")), "{conninfo}");
    let source = pg::connect(Side::Source, "postgres").await?;
    // The slot's walsender: the apply worker may be reconnecting for a moment.
    let mut encrypted = Vec::new();
    for _ in 0..100 {
        let sql = "SELECT s.ssl FROM pg_replication_slots r JOIN pg_stat_ssl s ON s.pid = r.active_pid WHERE r.slot_name = $1";
        encrypted = source.query(sql, &[&slot]).await?.iter().map(|row| row.get::<_, bool>(0)).collect();
        if !encrypted.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(encrypted, vec![true], "the subscription's connection to the source (slot {slot}) is encrypted");
    milink.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await?;
    milink.wait_status(&id, "Cancelled", Duration::from_secs(60)).await?;

    pg::drop_everywhere(&database).await;
    pg::drop_everywhere(&other).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sslmode_encrypts_as_libpq_would() -> anyhow::Result<()> {
    let source = &pg::servers().source_url;
    for (mode, encrypted) in [("disable", false), ("allow", false), ("prefer", true), ("require", true)] {
        let (ok, report) = doctor(&connection("mode", &with(source, &format!("sslmode={mode}")), true), "mode");
        assert!(ok, "{mode}: {report:#}");
        assert_eq!(report["encrypted"], encrypted, "sslmode={mode}: {report:#}");
        assert!(report["verification"].as_str().is_some_and(|v| v.starts_with("none")), "{report:#}");
    }
    // allow encrypts when the server refuses a plain connection: the replica cluster lets role
    // milink_tls_only in over TLS only (dev/pg.sh).
    let replica_port = std::env::var("MILINK_PG_REPLICA_PORT").unwrap_or_else(|_| "54313".into());
    let replica = format!("postgresql://milink@127.0.0.1:{replica_port}/postgres");
    let status = Command::new("bash").arg(milink_e2e::workspace_root().join("dev/pg.sh")).arg("replica").status()?;
    assert!(status.success(), "dev/pg.sh replica failed");
    let mut config: tokio_postgres::Config = replica.parse()?;
    config.password(pg::servers().password.as_str());
    let (admin, connection_task) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection_task);
    let password = pg::servers().password.replace('\'', "''");
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'milink_tls_only') THEN
                 CREATE ROLE milink_tls_only SUPERUSER LOGIN PASSWORD '{password}';
               END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$"
        ))
        .await?;
    let tls_only = replica.replace("milink@", "milink_tls_only@");
    let (ok, report) = doctor(&connection("allow_tls_only", &with(&tls_only, "sslmode=allow"), true), "allow_tls_only");
    assert!(ok && report["encrypted"] == true, "allow fell back to TLS: {report:#}");
    let (ok, report) = doctor(&connection("disable_tls_only", &with(&tls_only, "sslmode=disable"), true), "disable_tls_only");
    assert!(!ok, "disable never encrypts, so this role is refused: {report:#}");
    Ok(())
}
