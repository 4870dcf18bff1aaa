//! Bad input gets one clear error that says what to do, and no secret leaks: a wrong password, an
//! unreachable host, a source with wal_level=replica, malformed requests.
use milink_e2e::milink::Milink;
use milink_e2e::pg;
use serde_json::json;
use std::time::Duration;

const WRONG_PASSWORD: &str = "not-the-password-9f8e7d";

async fn milink_with_bad_connections() -> anyhow::Result<Milink> {
    let s = pg::servers();
    let dir = tempfile::tempdir()?;
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, WRONG_PASSWORD)?;
    let replica_port = std::env::var("MILINK_PG_REPLICA_PORT").unwrap_or_else(|_| "54313".into());
    let extra = format!(
        "[connections.badpw]\nengine = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n\n\
         [connections.nowhere]\nengine = \"postgres\"\nurl = \"postgresql://milink@127.0.0.1:1/postgres\"\npassword_file = \"{}\"\n\n\
         [connections.replica]\nengine = \"postgres\"\nurl = \"postgresql://milink@127.0.0.1:{replica_port}/postgres\"\npassword_file = \"{}\"\n",
        s.source_url,
        wrong.display(),
        s.password_file,
        s.password_file
    );
    let milink = Milink::start(&extra).await?;
    std::mem::forget(dir); // the file must outlive the config that names it
    Ok(milink)
}

async fn failed_migration(milink: &Milink, source: &str) -> anyhow::Result<serde_json::Value> {
    let body = json!({ "source": source, "target": "dst", "databases": ["ToyStore"] });
    let (status, started) = milink.post("/api/migrations", &body).await?;
    assert_eq!(status, 202, "{started}");
    let id = started["migrations"][0]["id"].as_str().unwrap().to_owned();
    milink.wait_for(&id, "Failed", Duration::from_secs(60), |m| m["status"] == "Failed").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_an_unreachable_host_and_wal_level_replica_each_say_what_to_do() -> anyhow::Result<()> {
    let milink = milink_with_bad_connections().await?;

    let m = failed_migration(&milink, "badpw").await?;
    let text = m.to_string();
    assert!(text.contains("password") || text.contains("authentication"), "{m:#}");
    assert!(m["remediation"].as_str().is_some_and(|r| r.contains("badpw")), "the fix names the connection: {m:#}");

    let m = failed_migration(&milink, "nowhere").await?;
    assert!(m["reason"].as_str().is_some_and(|r| r.contains("127.0.0.1:1")), "names host:port: {m:#}");
    assert!(m["remediation"].as_str().is_some_and(|r| !r.is_empty()));

    let report = milink.assess("replica").await?;
    let findings = report["instance"]["findings"].as_array().cloned().unwrap_or_default();
    let wal = findings.iter().find(|f| f["rule"].as_str().is_some_and(|r| r.contains("wal_level"))).unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(wal["severity"], "Blocker");
    assert!(wal["remediation"].as_str().unwrap().contains("wal_level"), "{wal:#}");
    let m = failed_migration(&milink, "replica").await?;
    assert!(m["reason"].as_str().unwrap_or_default().contains("wal_level"), "{m:#}");

    // The wrong password never reaches an API body or a log line.
    let everything = format!("{}{}", milink.get("/api/migrations").await?, milink.logs());
    assert!(!everything.contains(WRONG_PASSWORD), "a secret leaked");
    assert!(!milink.logs().contains(&pg::servers().password), "a secret leaked");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_stable_codes() -> anyhow::Result<()> {
    let milink = Milink::start("").await?;
    let cases = [
        ("/api/migrations", json!("not an object"), 400, "invalid_body"),
        ("/api/migrations", json!({ "source": "src", "target": "dst", "databases": [] }), 400, "invalid_body"),
        ("/api/migrations", json!({ "source": "nope", "target": "dst", "databases": ["x"] }), 400, "unknown_connection"),
        ("/api/migrations", json!({ "source": "src", "target": "dst", "databases": ["a\nb"] }), 400, "invalid_name"),
        ("/api/migrations", json!({ "source": "src", "target": "dst", "databases": ["x"], "settings": { "bogus": 1 } }), 400, "invalid_body"),
        ("/api/migrations", json!({ "source": "src", "target": "dst", "databases": ["x"], "settings": { "drainTimeoutSeconds": 1000000000000u64 } }), 400, "invalid_settings"),
        ("/api/migrations", json!({ "source": "src", "target": "dst", "databases": ["x"], "settings": { "drainStableSeconds": 30 } }), 400, "invalid_settings"),
        ("/api/assessments", json!({ "connection": "../etc" }), 400, "invalid_name"),
        ("/api/migrations/no-such-id/cutover", json!({ "confirmTrafficStopped": true }), 404, "not_found"),
        ("/api/migrations/no-such-id/cancel", json!({}), 404, "not_found"),
    ];
    for (path, body, status, code) in cases {
        let (got, answer) = milink.post(path, &body).await?;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{path} {body}: {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let openapi = milink.get("/api/openapi.json").await?;
    for path in ["/api/assessments", "/api/migrations", "/api/migrations/{id}/cutover", "/api/migrations/{id}/cancel"] {
        assert!(openapi["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    Ok(())
}
