//! A small client of the milink API, mapping HTTP outcomes to the CLI's exit codes.
use serde_json::Value;

/// Failures with a defined exit code.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The server cannot be reached.
    Unreachable(String),
    /// The server refused the request.
    Refused { status: u16, code: String, message: String },
    /// The migration ended Failed or Cancelled.
    Ended(String),
    /// Waiting timed out.
    TimedOut(String),
    /// The server failed (5xx).
    Server(String),
    /// Bad usage the argument parser could not see.
    Usage(String),
    /// A verification found differences between source and target.
    Differs(String),
}

impl std::error::Error for CliError {}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Unreachable(m) => write!(f, "{m}"),
            CliError::Refused { status, code, message } => write!(f, "{message} ({code}, HTTP {status})"),
            CliError::Ended(m) | CliError::TimedOut(m) | CliError::Server(m) | CliError::Usage(m) | CliError::Differs(m) => write!(f, "{m}"),
        }
    }
}

impl CliError {
    /// The process exit code.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Unreachable(_) => 3,
            CliError::Refused { .. } => 4,
            CliError::Ended(_) => 5,
            CliError::TimedOut(_) => 6,
            CliError::Server(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Differs(_) => 7,
        }
    }
}

/// The API client.
pub(crate) struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the server at `base`.
    pub(crate) fn new(base: &str) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), http: reqwest::Client::new() }
    }

    /// GET a JSON document.
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    /// POST a JSON body.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body)).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        // On Azure Functions every route but health needs a function key (docs/azure.md).
        let request = match std::env::var("MILINK_API_KEY") {
            Ok(key) if !key.is_empty() => request.header("x-functions-key", key),
            _ => request,
        };
        // `milink up` with a token (listening beyond loopback) wants it on every request but health.
        let request = match std::env::var("MILINK_TOKEN") {
            Ok(token) if !token.trim().is_empty() => request.bearer_auth(token.trim()),
            _ => request,
        };
        let response = request.send().await.map_err(|e| {
            CliError::Unreachable(format!(
                "cannot reach milink at {} ({}); start it with `milink up` or pass --server",
                self.base,
                e.without_url()
            ))
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let text = |key: &str| body["error"][key].as_str().unwrap_or_default().to_owned();
        if status.is_server_error() {
            let detail = if body.is_null() { status.to_string() } else { format!("{} ({})", text("message"), text("code")) };
            return Err(CliError::Server(format!("milink at {} failed: {detail}; retry shortly", self.base)).into());
        }
        let mut message = text("message");
        if message.is_empty() {
            message = format!("the server refused the request: {status}");
        }
        if let Some(details) = body["error"].get("details") {
            message.push_str(&crate::output::details(details));
        }
        Err(CliError::Refused { status: status.as_u16(), code: text("code"), message }.into())
    }
}
