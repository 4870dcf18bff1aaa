//! The HTTP transport `azure_identity` uses: the workspace's own reqwest client.
//!
//! `azure_identity` 1.x sends its token requests through `azure_core`'s pluggable `HttpClient`. Its default
//! transport is reqwest 0.13 with rustls on aws-lc-rs, a second HTTP/TLS stack with a heavy C build; milink
//! already has reqwest 0.12 with rustls on ring. So the credential crate is built without its default
//! transport and given this adapter instead: one HTTP stack, one TLS stack, and the same client the ARM calls
//! use. Token requests are small, so request and response bodies are buffered.
use async_trait::async_trait;
use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::{AsyncRawResponse, Body, HttpClient, Request, StatusCode};
use azure_core::Bytes;

/// `azure_core::http::HttpClient` over a `reqwest::Client`.
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    /// Wraps a client.
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }
}

fn io_error(message: String) -> azure_core::Error {
    azure_core::Error::with_message(azure_core::error::ErrorKind::Io, message)
}

#[async_trait]
impl HttpClient for ReqwestTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes())
            .map_err(|e| io_error(format!("unsupported method: {e}")))?;
        let mut builder = self.client.request(method, request.url().as_str());
        for (name, value) in request.headers().iter() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let body = match request.body() {
            Body::Bytes(bytes) => bytes.to_vec(),
            Body::SeekableStream(_) => return Err(io_error("streaming request bodies are not used for tokens".into())),
        };
        let response = builder.body(body).send().await.map_err(|e| io_error(format!("token request failed: {}", e.without_url())))?;
        let status = StatusCode::from(response.status().as_u16());
        let mut headers = Headers::new();
        for (name, value) in response.headers() {
            if let Ok(value) = value.to_str() {
                headers.insert(HeaderName::from(name.as_str().to_owned()), HeaderValue::from(value.to_owned()));
            }
        }
        let bytes = response.bytes().await.map_err(|e| io_error(format!("token response failed: {}", e.without_url())))?;
        Ok(AsyncRawResponse::from_bytes(status, headers, Bytes::from(bytes.to_vec())))
    }
}
