//! A small ARM REST client on reqwest: bearer auth, api-version, error bodies, and long-running operations.
//!
//! Hand-written rather than an SDK client because milink uses five resources and must run the same code
//! against Azure, sovereign clouds and the contract server in the tests: the base URL is configuration and
//! every request is plain reqwest, so the tests exercise exactly what production runs. Every non-2xx
//! response becomes an `EngineError` through [`crate::errors::arm_error`], the one place ARM codes are
//! classified. The token is sent only to the configured base URL: a polling URL that points elsewhere is
//! refused instead of followed.
use super::auth::TokenSource;
use crate::errors;
use milink_core::error::EngineError;
use reqwest::Method;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Most pages a list may have before milink stops following `nextLink` (a loop guard).
const MAX_PAGES: usize = 1000;

/// How long-running operations are polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Polling {
    /// Wait between polls when the service sends no `Retry-After`.
    pub default_interval: Duration,
    /// Longest wait between polls, whatever `Retry-After` says.
    pub max_interval: Duration,
    /// Give up (transiently: the next attempt resumes) after this long.
    pub timeout: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Self { default_interval: Duration::from_secs(10), max_interval: Duration::from_secs(60), timeout: Duration::from_secs(30 * 60) }
    }
}

/// One HTTP response, reduced to what ARM semantics need.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmResponse {
    /// Status code.
    pub status: u16,
    /// `Azure-AsyncOperation` header.
    pub async_operation: Option<String>,
    /// `Location` header.
    pub location: Option<String>,
    /// `Retry-After` header, seconds.
    pub retry_after: Option<Duration>,
    /// JSON body, when there is one.
    pub body: Option<Value>,
}

/// The ARM client.
pub struct ArmClient {
    http: reqwest::Client,
    base_url: String,
    tokens: Arc<dyn TokenSource>,
    /// Polling of long-running operations.
    pub polling: Polling,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl ArmClient {
    /// A client for `base_url` (`https://management.azure.com`, a sovereign cloud, or a test server).
    pub fn new(http: reqwest::Client, base_url: &str, tokens: Arc<dyn TokenSource>) -> Self {
        Self { http, base_url: base_url.trim_end_matches('/').to_owned(), tokens, polling: Polling::default() }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The full URL of a resource path (already percent-encoded) at `api_version`.
    pub fn url(&self, path: &str, api_version: &str) -> String {
        format!("{}{path}?api-version={api_version}", self.base_url)
    }

    /// Sends one request to an absolute URL on the configured base.
    ///
    /// Each request is a span (`arm GET managedInstances/distributedAvailabilityGroups`): the method, the
    /// resource types in the path (never names, ids or the query) and the HTTP status.
    pub async fn send(&self, method: Method, url: &str, body: Option<&Value>) -> Result<ArmResponse, EngineError> {
        let resource = resource_types(url);
        // Outside any span (the sync timer's observations) a request starts no trace of its own.
        let span = if tracing::Span::current().is_none() { tracing::Span::none() } else { tracing::info_span!(
            "arm",
            otel.name = format!("arm {method} {resource}"),
            http.request.method = %method,
            arm.resource_type = %resource,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        ) };
        let result = self.send_once(method, url, body).instrument(span.clone()).await;
        match &result {
            Ok(response) => {
                span.record("http.response.status_code", response.status);
                if response.status >= 400 && response.status != 404 {
                    span.record("otel.status_code", "ERROR");
                }
            }
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        result
    }

    async fn send_once(&self, method: Method, url: &str, body: Option<&Value>) -> Result<ArmResponse, EngineError> {
        if !url.starts_with(&format!("{}/", self.base_url)) {
            return Err(errors::config(
                "arm_foreign_url",
                format!("Azure asked milink to poll {url}, which is not on the configured ARM endpoint {}", self.base_url),
                "check options.arm_base_url of the target connection",
            ));
        }
        let token = self.tokens.bearer().await?;
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(token.expose())
            .header("Accept", "application/json")
            .header("User-Agent", concat!("milink/", env!("CARGO_PKG_VERSION")));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| errors::unreachable("Azure Resource Manager", &e.without_url().to_string()))?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let async_operation = header("azure-asyncoperation");
        let location = header("location");
        let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| errors::unreachable("Azure Resource Manager", &e.without_url().to_string()))?;
        let body = if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() };
        Ok(ArmResponse { status, async_operation, location, retry_after, body })
    }

    /// GET a resource; `None` when it does not exist (404).
    pub async fn get(&self, path: &str, api_version: &str, operation: &str) -> Result<Option<Value>, EngineError> {
        let response = self.send(Method::GET, &self.url(path, api_version), None).await?;
        match response.status {
            200 => Ok(response.body),
            404 => Ok(None),
            _ => Err(error_of(&response, operation)),
        }
    }

    /// Every item of a pageable list: GET the first page, then follow `nextLink` until there is none. ARM
    /// lists (`distributedAvailabilityGroups`, `serverTrustCertificates`) are pageable; reading only the
    /// first page would miss links and certificates. `nextLink` is an absolute URL that already carries the
    /// api-version; [`ArmClient::send`] refuses one that points off the configured endpoint.
    pub async fn list(&self, path: &str, api_version: &str, operation: &str) -> Result<Vec<Value>, EngineError> {
        let mut items = Vec::new();
        let mut url = self.url(path, api_version);
        for _ in 0..MAX_PAGES {
            let response = self.send(Method::GET, &url, None).await?;
            let body = match response.status {
                200 => response.body.unwrap_or(Value::Null),
                404 => return Ok(items),
                _ => return Err(error_of(&response, operation)),
            };
            match body.get("value") {
                Some(Value::Array(page)) => items.extend(page.iter().cloned()),
                None | Some(Value::Null) => {}
                Some(_) => return Err(EngineError::transient("arm_unexpected_body", format!("{operation}: `value` is not a list"), "milink retries; if it persists, report it")),
            }
            match body.get("nextLink").and_then(Value::as_str).filter(|next| !next.is_empty()) {
                Some(next) => url = next.to_owned(),
                None => return Ok(items),
            }
        }
        Err(EngineError::transient("arm_too_many_pages", format!("{operation}: more than {MAX_PAGES} pages"), "milink retries; if it persists, report it"))
    }

    /// Sends a mutating request and follows its long-running operation to the end. Returns the final
    /// resource for PUT/PATCH (and POST operations that return one); `None` otherwise. DELETE of something
    /// already gone succeeds.
    pub async fn execute(&self, method: Method, path: &str, api_version: &str, body: Option<&Value>, operation: &str) -> Result<Option<Value>, EngineError> {
        let url = self.url(path, api_version);
        let initial = self.send(method.clone(), &url, body).await?;
        match initial.status {
            404 if method == Method::DELETE => Ok(None),
            200..=299 => self.follow(method, &url, initial, operation).await,
            _ => Err(error_of(&initial, operation)),
        }
    }

    pub(super) fn wait_for(&self, retry_after: Option<Duration>) -> Duration {
        retry_after.unwrap_or(self.polling.default_interval).min(self.polling.max_interval)
    }
}

/// The `EngineError` of a failed response (`{"error": {"code", "message"}}` or a bare `{"code", "message"}`).
pub fn error_of(response: &ArmResponse, operation: &str) -> EngineError {
    let (code, message) = error_fields(response.body.as_ref());
    errors::arm_error(response.status, &code, &message, operation)
}

/// `code` and `message` of an ARM error body, wherever they are.
pub fn error_fields(body: Option<&Value>) -> (String, String) {
    let error = body.and_then(|b| b.get("error")).or(body);
    let text = |key: &str| error.and_then(|e| e.get(key)).and_then(Value::as_str).unwrap_or("").to_owned();
    (text("code"), text("message"))
}

/// The resource types of an ARM URL's path, e.g. `managedInstances/distributedAvailabilityGroups` for
/// `.../providers/Microsoft.Sql/managedInstances/{mi}/distributedAvailabilityGroups/{link}`: what a span may
/// name (resource names and subscription ids stay out).
fn resource_types(url: &str) -> String {
    let path = url.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.iter().rposition(|s| s.eq_ignore_ascii_case("providers")) {
        Some(i) if segments.len() > i + 2 => segments[i + 2..].iter().step_by(2).copied().collect::<Vec<_>>().join("/"),
        _ => "other".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::resource_types;

    #[test]
    fn an_arm_span_names_resource_types_never_names_or_ids() {
        let url = "https://management.azure.com/subscriptions/0000-1111/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/mi-prod/distributedAvailabilityGroups/link-1?api-version=2023-08-01";
        assert_eq!(resource_types(url), "managedInstances/distributedAvailabilityGroups");
        let operation = "https://management.azure.com/subscriptions/s/providers/Microsoft.Sql/locations/westeurope/distributedAvailabilityGroupsAzureAsyncOperation/abc";
        assert_eq!(resource_types(operation), "locations/distributedAvailabilityGroupsAzureAsyncOperation");
        assert_eq!(resource_types("https://management.azure.com/subscriptions/s"), "other");
    }
}
