//! `POST /api/connections/{name}/test` with the real binary against the dev PostgreSQL servers: a good
//! connection reports its version, TLS state and latency; a wrong password, a closed port and an unknown
//! name each say what is wrong, and no password ever comes back.
use anyhow::Result;
use milink_e2e::milink::Milink;
use milink_e2e::pg::servers;

#[tokio::test]
async fn the_connection_test_says_what_answered_or_what_to_fix() -> Result<()> {
    let secrets = tempfile::tempdir()?;
    let wrong = "not-the-password-9c1e";
    let wrong_file = secrets.path().join("wrong");
    std::fs::write(&wrong_file, wrong)?;
    let extra = format!(
        "[connections.wrongpw]\nengine = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n\n\
         [connections.nowhere]\nengine = \"postgres\"\nurl = \"postgresql://milink@127.0.0.1:9/postgres?connect_timeout=3\"\npassword_file = \"{}\"\n",
        servers().source_url,
        wrong_file.display(),
        servers().password_file
    );
    let milink = Milink::start(&extra).await?;

    let (status, good) = milink.post("/api/connections/src/test", &serde_json::json!({})).await?;
    assert_eq!(status, 200, "{good}");
    assert_eq!((good["ok"].as_bool(), good["reachable"].as_bool(), good["authenticated"].as_bool()), (Some(true), Some(true), Some(true)), "{good}");
    assert!(good["serverVersion"].as_str().is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit())), "{good}");
    assert!(good["tls"].is_boolean(), "PostgreSQL always says whether the session is encrypted: {good}");
    assert!(good["connectMs"].as_f64().is_some_and(|ms| ms > 0.0) && good["roundTripMs"].as_f64().is_some(), "{good}");

    let (status, refused) = milink.post("/api/connections/wrongpw/test", &serde_json::json!({})).await?;
    assert_eq!(status, 200, "{refused}");
    assert_eq!((refused["ok"].as_bool(), refused["reachable"].as_bool(), refused["authenticated"].as_bool()), (Some(false), Some(true), Some(false)), "{refused}");
    assert_eq!(refused["error"]["code"], "authentication_failed", "{refused}");
    assert!(refused["error"]["remediation"].as_str().unwrap_or_default().contains("wrongpw"), "the remediation names the connection: {refused}");

    let (status, closed) = milink.post("/api/connections/nowhere/test", &serde_json::json!({})).await?;
    assert_eq!(status, 200, "{closed}");
    assert_eq!((closed["ok"].as_bool(), closed["reachable"].as_bool()), (Some(false), Some(false)), "{closed}");
    assert_eq!(closed["error"]["code"], "unreachable", "{closed}");

    let (status, unknown) = milink.post("/api/connections/nosuch/test", &serde_json::json!({})).await?;
    assert_eq!((status, unknown["error"]["code"].as_str()), (400, Some("unknown_connection")), "{unknown}");

    for body in [&good, &refused, &closed] {
        let text = body.to_string();
        assert!(!text.contains(wrong) && !text.contains(&servers().password), "a password came back: {text}");
    }
    assert!(!milink.logs().contains(wrong), "the wrong password reached the log");
    Ok(())
}
