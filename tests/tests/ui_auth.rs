//! Who may use `milink up`, with the real binary: it refuses to listen beyond loopback without a token;
//! with a token every request but `/api/health` needs it (Bearer or the login page's cookie), a
//! cookie-authenticated request that changes state must come from milink's own pages, and the CLI sends
//! `MILINK_TOKEN` as a Bearer.
use anyhow::{bail, Context, Result};
use milink_e2e::milink::binary;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "a-test-token-of-some-length-7f3a";

struct Up {
    dir: tempfile::TempDir,
    base: String,
    child: Child,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_dir() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("milink.toml"), "[server]\nstate = \"state.db\"\n")?;
    Ok(dir)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn up_command(dir: &std::path::Path, listen: &str, token: Option<&str>) -> Command {
    let mut command = Command::new(binary());
    command.args(["up", "--config", "milink.toml", "--listen", listen]).current_dir(dir).env_remove("MILINK_TOKEN").env_remove("MILINK_TOKEN_FILE");
    if let Some(token) = token {
        command.env("MILINK_TOKEN", token);
    }
    command
}

/// Starts `milink up` on `listen` (port 0 picks one) and waits for health on loopback.
async fn start(listen_host: &str, token: Option<&str>) -> Result<Up> {
    let dir = config_dir()?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.path().join("milink.log"))?;
    let child = up_command(dir.path(), &format!("{listen_host}:{port}"), token).stdout(Stdio::null()).stderr(log).spawn()?;
    let up = Up { dir, base: format!("http://127.0.0.1:{port}"), child };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if reqwest::get(format!("{}/api/health", up.base)).await.is_ok_and(|r| r.status() == 200) {
            return Ok(up);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("milink did not start: {}", std::fs::read_to_string(up.dir.path().join("milink.log")).unwrap_or_default())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().expect("a client builds")
}

fn run_until_exit(mut command: Command) -> Result<Output> {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("milink up kept running when it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.wait_with_output()?)
}

#[tokio::test]
async fn without_a_token_it_refuses_to_listen_beyond_loopback_and_says_what_to_do() -> Result<()> {
    let dir = config_dir()?;
    let output = run_until_exit(up_command(dir.path(), &format!("0.0.0.0:{}", free_port()?), None))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("refusing to listen on 0.0.0.0") && stderr.contains("MILINK_TOKEN"), "{stderr}");
    // A token too short to resist guessing is refused too, even on loopback.
    let output = run_until_exit(up_command(dir.path(), "127.0.0.1:0", Some("secret")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("at least 16"), "{stderr}");
    assert!(!stderr.contains("secret\""), "the refused token is not echoed: {stderr}");
    Ok(())
}

#[tokio::test]
async fn with_a_token_it_listens_beyond_loopback_and_every_request_but_health_needs_it() -> Result<()> {
    let up = start("0.0.0.0", Some(TOKEN)).await?;
    let http = client();
    let refused = http.get(format!("{}/api/migrations", up.base)).send().await?;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = refused.json().await?;
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = http.get(format!("{}/api/migrations", up.base)).bearer_auth("not-the-token-at-all-0000").send().await?;
    assert_eq!(wrong.status(), 401);
    let allowed = http.get(format!("{}/api/migrations", up.base)).bearer_auth(TOKEN).send().await?;
    assert_eq!(allowed.status(), 200);
    assert_eq!(http.get(format!("{}/api/health", up.base)).send().await?.status(), 200);
    // The UI itself needs it too: a browser without a session is sent to the login page.
    let page = http.get(format!("{}/", up.base)).send().await?;
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()[LOCATION], "/login");
    for path in ["/app.js", "/api/overview", "/api/connections", "/api/ui/"] {
        let status = http.get(format!("{}{path}", up.base)).send().await?.status();
        assert!(status == 401 || status == 303, "{path} answered {status} without the token");
    }
    Ok(())
}

async fn login(http: &reqwest::Client, base: &str, token: &str) -> Result<reqwest::Response> {
    let form = format!("token={}", token.replace('-', "%2D"));
    Ok(http.post(format!("{base}/login")).header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(form).send().await?)
}

#[tokio::test]
async fn the_login_page_sets_an_http_only_same_site_cookie_that_opens_the_ui_and_the_api() -> Result<()> {
    let up = start("127.0.0.1", Some(TOKEN)).await?;
    let http = client();
    let page = http.get(format!("{}/login", up.base)).send().await?;
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"].to_str()?.contains("script-src 'self'"));
    assert!(!page.text().await?.contains(TOKEN));
    let wrong = login(&http, &up.base, "not-the-token-at-all-0000").await?;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get(SET_COOKIE).is_none());

    let ok = login(&http, &up.base, TOKEN).await?;
    assert_eq!(ok.status(), 303);
    let cookie = ok.headers()[SET_COOKIE].to_str()?.to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(TOKEN), "the cookie holds a session id, not the token");
    let session = cookie.split(';').next().context("a cookie")?.to_owned();
    let index = http.get(format!("{}/", up.base)).header(COOKIE, &session).send().await?;
    assert_eq!(index.status(), 200);
    let html = index.text().await?;
    assert!(html.contains("app.js") && !html.contains(TOKEN));
    assert_eq!(http.get(format!("{}/api/overview", up.base)).header(COOKIE, &session).send().await?.status(), 200);

    // Logging out ends the session.
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, session.parse()?);
    headers.insert("x-milink-request", "1".parse()?);
    assert_eq!(http.post(format!("{}/logout", up.base)).headers(headers).send().await?.status(), 200);
    assert_eq!(http.get(format!("{}/api/overview", up.base)).header(COOKIE, &session).send().await?.status(), 401);
    Ok(())
}

#[tokio::test]
async fn a_cross_site_request_with_the_cookie_cannot_change_anything() -> Result<()> {
    let up = start("127.0.0.1", Some(TOKEN)).await?;
    let http = client();
    let cookie = login(&http, &up.base, TOKEN).await?.headers()[SET_COOKIE].to_str()?.split(';').next().unwrap_or_default().to_owned();
    let post = |extra: &[(&str, String)]| {
        let mut request = http
            .post(format!("{}/api/assessments", up.base))
            .header(COOKIE, &cookie)
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"connection":"nowhere"}"#);
        for (name, value) in extra {
            request = request.header(*name, value);
        }
        request.send()
    };
    // What another site's form or fetch can send: the cookie (were it not SameSite) but not our header.
    let forged = post(&[("origin", "https://evil.example".into())]).await?;
    assert_eq!(forged.status(), 403);
    assert_eq!(forged.json::<serde_json::Value>().await?["error"]["code"], "cross_site_refused");
    assert_eq!(post(&[]).await?.status(), 403, "the header is required even without an Origin");
    let wrong_origin = post(&[("x-milink-request", "1".into()), ("origin", "https://evil.example".into())]).await?;
    assert_eq!(wrong_origin.status(), 403);
    // milink's own page: the header and this host as Origin; the request reaches the API (which refuses
    // the unknown connection: that is the API answering, not the guard).
    let host = up.base.trim_start_matches("http://").to_owned();
    let own = post(&[("x-milink-request", "1".into()), ("origin", format!("http://{host}"))]).await?;
    assert!(![401, 403].contains(&own.status().as_u16()));
    assert_eq!(own.json::<serde_json::Value>().await?["error"]["code"], "unknown_connection");
    // A bearer request is not a browser's ambient credential: no header needed.
    let bearer = http.post(format!("{}/api/assessments", up.base)).header(AUTHORIZATION, format!("Bearer {TOKEN}")).json(&serde_json::json!({"connection":"nowhere"})).send().await?;
    assert_eq!(bearer.json::<serde_json::Value>().await?["error"]["code"], "unknown_connection");
    Ok(())
}

#[tokio::test]
async fn without_a_token_other_sites_pages_and_rebound_names_are_refused() -> Result<()> {
    let up = start("127.0.0.1", None).await?;
    let http = client();
    let assess = |extra: &[(&str, &str)]| {
        let mut request = http.post(format!("{}/api/assessments", up.base)).header(CONTENT_TYPE, "text/plain").body(r#"{"connection":"nowhere"}"#);
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.send()
    };
    // A page on another site posting to 127.0.0.1 (a "simple" request: no preflight protects it).
    let forged = assess(&[("origin", "https://evil.example")]).await?;
    assert_eq!(forged.status(), 403);
    assert_eq!(forged.json::<serde_json::Value>().await?["error"]["code"], "cross_site_refused");
    // DNS rebinding: the attacker's name now points at 127.0.0.1, so its page is "same origin".
    let rebound = http.get(format!("{}/api/migrations", up.base)).header("host", "evil.example:7878").send().await?;
    assert_eq!(rebound.status(), 421);
    // Scripts and the CLI (no Origin) and milink's own pages keep working.
    assert_eq!(assess(&[]).await?.json::<serde_json::Value>().await?["error"]["code"], "unknown_connection");
    let host = up.base.trim_start_matches("http://").to_owned();
    let own = assess(&[("origin", &format!("http://{host}"))]).await?;
    assert_eq!(own.json::<serde_json::Value>().await?["error"]["code"], "unknown_connection");
    assert_eq!(http.get(format!("http://localhost:{}/api/migrations", host.rsplit(':').next().unwrap_or_default())).send().await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn a_token_file_works_like_milink_token_and_its_newline_is_not_part_of_it() -> Result<()> {
    let dir = config_dir()?;
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n"))?;
    let port = free_port()?;
    let mut command = up_command(dir.path(), &format!("0.0.0.0:{port}"), None);
    command.args(["--token-file", "token"]).stdout(Stdio::null()).stderr(Stdio::null());
    let up = Up { dir, base: format!("http://127.0.0.1:{port}"), child: command.spawn()? };
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{}/api/health", up.base)).send().await.is_err() {
        assert!(Instant::now() < deadline, "milink up --token-file did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http.get(format!("{}/api/migrations", up.base)).send().await?.status(), 401);
    assert_eq!(http.get(format!("{}/api/migrations", up.base)).bearer_auth(TOKEN).send().await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn the_cli_sends_milink_token_as_a_bearer() -> Result<()> {
    let up = start("127.0.0.1", Some(TOKEN)).await?;
    let cli = |token: Option<&str>| {
        let mut command = Command::new(binary());
        command.args(["--server", &up.base, "migrate", "list"]).env_remove("MILINK_TOKEN");
        if let Some(token) = token {
            command.env("MILINK_TOKEN", token);
        }
        command.output()
    };
    let refused = cli(None)?;
    assert_eq!(refused.status.code(), Some(4), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("MILINK_TOKEN"));
    let allowed = cli(Some(TOKEN))?;
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stderr));
    Ok(())
}
