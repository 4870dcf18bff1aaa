//! The real `milink up` (built by milink-e2e), with the two local PostgreSQL servers as `src` and `dst`, an
//! access token, JSON logs at debug level, and OTLP export to `endpoint` on short intervals.
use milink_e2e::{milink, pg};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A token a reader would notice in any output.
pub const TOKEN: &str = "tok-NOTICE-ME-IF-LEAKED-7f3a9c";

pub struct Host {
    pub dir: tempfile::TempDir,
    pub base: String,
    child: Child,
    http: reqwest::Client,
}

impl Host {
    pub async fn start(endpoint: &str) -> Host {
        let servers = pg::servers();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nstate = \"state.db\"\npoll_interval_ms = 200\nmax_attempts = 5\nretry_base_ms = 100\nretry_max_ms = 2000\n\n\
             [connections.src]\nengine = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n\n\
             [connections.dst]\nengine = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n",
            servers.source_url, servers.password_file, servers.target_url, servers.password_file
        );
        std::fs::write(dir.path().join("milink.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("milink.log")).unwrap();
        let child = Command::new(milink::binary())
            .args(["up", "--config", "milink.toml"])
            .current_dir(dir.path())
            .env("MILINK_LOG", "debug")
            .env("MILINK_LOG_FORMAT", "json")
            .env("MILINK_TOKEN", TOKEN)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_METRIC_EXPORT_INTERVAL", "300")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting milink up");
        let host = Host { dir, base: format!("http://127.0.0.1:{port}"), child, http: reqwest::Client::new() };
        for _ in 0..300 {
            if host.http.get(format!("{}/api/health", host.base)).send().await.is_ok() {
                return host;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("milink did not answer; log:\n{}", host.logs());
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("milink.log")).unwrap_or_default()
    }

    /// A request with the token and, when given, a W3C traceparent.
    pub fn request(&self, method: reqwest::Method, path: &str, traceparent: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(TOKEN);
        match traceparent {
            Some(traceparent) => request.header("traceparent", traceparent),
            None => request,
        }
    }

    pub async fn post(&self, path: &str, body: &Value, traceparent: Option<&str>) -> Value {
        let response = self.request(reqwest::Method::POST, path, traceparent).json(body).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path} answered {status}: {body}");
        body
    }

    pub async fn get(&self, path: &str) -> Value {
        self.request(reqwest::Method::GET, path, None).send().await.unwrap().json().await.unwrap()
    }

    pub async fn metrics_text(&self) -> String {
        let response = self.request(reqwest::Method::GET, "/metrics", None).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Polls a migration until its status is `status`.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        for _ in 0..1200 {
            let migration = self.get(&format!("/api/migrations/{id}")).await;
            if migration["status"] == status {
                return migration;
            }
            assert!(!matches!(migration["status"].as_str(), Some("Failed" | "Cancelled")), "{migration:#}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("migration {id} never reached {status}; log:\n{}", self.logs());
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
