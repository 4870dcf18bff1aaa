//! The real `milink` binary, run as `milink up` with its own config, port and state file.
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: `MILINK_BIN`, else target/debug/milink, brought up to date once per test
/// process (a test package does not rebuild another package's binary by itself, and a stale binary
/// would test old code).
pub fn binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Ok(path) = std::env::var("MILINK_BIN") {
        return PathBuf::from(path);
    }
    BUILT
        .get_or_init(|| {
            let root = crate::workspace_root();
            let status = Command::new(env!("CARGO")).args(["build", "-q", "-p", "milink"]).current_dir(&root).status();
            assert!(status.is_ok_and(|s| s.success()), "building the milink binary failed");
            let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
            target.join("debug/milink")
        })
        .clone()
}

/// A running (or killed) `milink up`.
pub struct Milink {
    pub dir: tempfile::TempDir,
    pub base: String,
    listen: String,
    child: Option<Child>,
    http: reqwest::Client,
    starts: u32,
}

impl Milink {
    /// Writes a config with connections `src` and `dst` (the local servers) plus `extra` TOML, and starts.
    pub async fn start(extra: &str) -> Result<Self> {
        Self::start_configured(extra, 200).await
    }

    /// Like [`Milink::start`] with the poll interval of a default install (for benchmarks).
    pub async fn start_with_poll(poll_interval_ms: u64) -> Result<Self> {
        Self::start_configured("", poll_interval_ms).await
    }

    async fn start_configured(extra: &str, poll_interval_ms: u64) -> Result<Self> {
        let servers = crate::pg::servers();
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nstate = \"state.db\"\npoll_interval_ms = {poll_interval_ms}\nmax_attempts = 5\nretry_base_ms = 100\nretry_max_ms = 2000\n\n\
             [connections.src]\nengine = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n\n\
             [connections.dst]\nengine = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n\n{extra}\n",
            servers.source_url, servers.password_file, servers.target_url, servers.password_file
        );
        std::fs::write(dir.path().join("milink.toml"), config)?;
        let mut milink = Self {
            dir,
            base: format!("http://127.0.0.1:{port}"),
            listen: format!("127.0.0.1:{port}"),
            child: None,
            http: reqwest::Client::new(),
            starts: 0,
        };
        milink.spawn().await?;
        Ok(milink)
    }

    async fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("milink-{}.log", self.starts)))?;
        let child = Command::new(binary())
            .args(["up", "--config", "milink.toml", "--listen", &self.listen])
            .current_dir(self.dir.path())
            // debug everywhere: the secret checks must hold at the most talkative level users can set
            .env("MILINK_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting milink up")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.http.get(format!("{}/api/health", self.base)).send().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("milink did not answer /api/health within 30 s; log:\n{}", self.logs())
    }

    /// SIGKILL: no shutdown, no flush, like a crash or a power cut.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same state file.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn().await
    }

    /// The SQLite state file (state, queue, dead letters); open it only while milink is stopped.
    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// Everything every run of this instance logged.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.dir.path().join(format!("milink-{n}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// POST a JSON body; returns status and body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let response = self.http.post(format!("{}{path}", self.base)).json(body).send().await?;
        Ok((response.status().as_u16(), response.json().await.unwrap_or(Value::Null)))
    }

    /// GET a JSON document.
    pub async fn get(&self, path: &str) -> Result<Value> {
        Ok(self.http.get(format!("{}{path}", self.base)).send().await?.json().await?)
    }

    /// Runs an assessment of `connection` and waits for its report.
    pub async fn assess(&self, connection: &str) -> Result<Value> {
        let (status, body) = self.post("/api/assessments", &serde_json::json!({ "connection": connection })).await?;
        if status != 202 {
            bail!("assess answered {status}: {body}");
        }
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let report = self.get(&format!("/api/assessments/{id}")).await?;
            if report["status"] != "Running" {
                return Ok(report);
            }
            if Instant::now() > deadline {
                bail!("assessment still running after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts migrating `database` from src to dst; returns the migration id.
    pub async fn start_migration(&self, database: &str, settings: Value) -> Result<String> {
        let body = serde_json::json!({ "source": "src", "target": "dst", "databases": [database], "settings": settings });
        let (status, body) = self.post("/api/migrations", &body).await?;
        if status != 202 {
            bail!("start answered {status}: {body}");
        }
        Ok(body["migrations"][0]["id"].as_str().unwrap_or_default().to_owned())
    }

    /// Polls a migration until `done` holds; fails on timeout or when it ends in another terminal status.
    pub async fn wait_for(&self, id: &str, what: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.get(&format!("/api/migrations/{id}")).await {
                Ok(m) if done(&m) => return Ok(m),
                Ok(m) if Instant::now() > deadline || matches!(m["status"].as_str(), Some("Failed" | "Cancelled")) => {
                    bail!("waiting for {what}: migration is {}\n{m:#}\nlog:\n{}", m["status"], self.logs())
                }
                Err(e) if Instant::now() > deadline => bail!("waiting for {what}: {e}\nlog:\n{}", self.logs()),
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the migration has the status `status`.
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Result<Value> {
        self.wait_for(id, status, timeout, |m| m["status"] == status).await
    }

    /// Asks for the cutover the way a user watching the status would: when the migration is ReadyForCutover.
    /// Under a write load the lag can cross the ready threshold between the poll and the request, and milink
    /// answers 409 `not_ready_for_cutover` (as it should); then it waits for Ready again and asks again.
    /// Returns the 202 body; any other refusal is an error.
    pub async fn cut_over_when_ready(&self, id: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_status(id, "ReadyForCutover", left).await?;
            let (status, body) = self.post(&format!("/api/migrations/{id}/cutover"), &serde_json::json!({ "confirmTrafficStopped": true })).await?;
            match status {
                202 => return Ok(body),
                409 if body["error"]["code"] == "not_ready_for_cutover" && Instant::now() < deadline => continue,
                _ => bail!("cutover answered {status}: {body}"),
            }
        }
    }
}

impl Drop for Milink {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
