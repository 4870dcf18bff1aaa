//! Who may use the embedded host: nobody but its owner once it listens beyond loopback.
//!
//! With a token configured (`MILINK_TOKEN` or `milink up --token-file`), every request but
//! `GET /api/health` and the login page (with its stylesheet) must carry it: as
//! `Authorization: Bearer <token>` (the CLI, scripts), or as the session cookie the login page sets
//! (browsers). The cookie holds a random session id, never the token, valid for 12 hours and until milink
//! restarts (sessions live in memory only), and is `HttpOnly` (the page's script cannot read it) and `SameSite=Strict` (another site's page does not
//! send it). Because a browser sends cookies by itself, a cookie-authenticated request that changes state
//! must also carry the `X-Milink-Request` header, which a cross-site form cannot set and a cross-site
//! script can only set after a CORS preflight we never answer, and its `Origin`, when present, must be this
//! host. Bearer requests need neither: a browser never attaches a bearer token on its own.
//!
//! Without a token the host answers everyone who can reach it, which `milink up` allows on loopback only;
//! there it still refuses what a web page could make the user's browser send (requests addressed to a
//! non-loopback name, as DNS rebinding does, and state changes from another origin). Behind a reverse
//! proxy, forward the original `Host` header: the `Origin` check compares with it.
use crate::api::error::ErrorCode;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "milink_session";
/// The header a cookie-authenticated state-changing request must carry.
pub const REQUEST_HEADER: &str = "x-milink-request";
/// The response header that tells the pages they run on a cookie session.
pub const SESSION_HEADER: &str = "x-milink-session";
/// How long a login lasts.
const SESSION_SECONDS: u64 = 12 * 3600;

/// The host's access rule: open (no token, loopback only) or token-protected.
#[derive(Clone, Default)]
pub struct Access {
    token: Option<Arc<str>>,
    /// Session id → when it expires.
    sessions: Arc<Mutex<HashMap<String, Instant>>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches a log line, even through a Debug of the host's settings.
        f.debug_struct("Access").field("token", &self.token.as_ref().map(|_| "<set>")).finish()
    }
}

/// Why a token was refused at start.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Too short to resist guessing.
    #[error("the token is {0} characters long; use at least 16 (e.g. `openssl rand -hex 32`)")]
    TooShort(usize),
}

impl Access {
    /// No token: everyone who can reach the host may use it.
    pub fn open() -> Self {
        Self::default()
    }

    /// Requests must carry `token` (surrounding whitespace, e.g. a file's newline, is not part of it).
    pub fn with_token(token: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if token.chars().count() < 16 {
            return Err(TokenError::TooShort(token.chars().count()));
        }
        Ok(Self { token: Some(token.into()), sessions: Arc::default() })
    }

    /// Whether a token is required.
    pub fn is_protected(&self) -> bool {
        self.token.is_some()
    }

    fn token_matches(&self, candidate: &str) -> bool {
        self.token.as_deref().is_some_and(|token| constant_time_eq(token.as_bytes(), candidate.as_bytes()))
    }

    fn session_valid(&self, id: &str) -> bool {
        self.sessions.lock().map(|s| s.get(id).is_some_and(|expires| *expires > Instant::now())).unwrap_or(false)
    }

    fn new_session(&self) -> String {
        let id = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        if let Ok(mut sessions) = self.sessions.lock() {
            let now = Instant::now();
            sessions.retain(|_, expires| *expires > now);
            sessions.insert(id.clone(), now + Duration::from_secs(SESSION_SECONDS));
        }
        id
    }

    fn end_session(&self, id: &str) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.remove(id);
        }
    }
}

/// Compares without an early exit, so response time does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (i, byte) in a.iter().enumerate() {
        difference |= usize::from(byte ^ b.get(i).copied().unwrap_or(0));
    }
    difference == 0
}

/// Wraps `router` with the access rule; with a token it also serves `/login` and `/logout`.
pub fn protect(router: Router, access: Access) -> Router {
    if !access.is_protected() {
        return router.layer(middleware::from_fn(guard_open));
    }
    let login = Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .with_state(access.clone());
    router.merge(login).layer(middleware::from_fn_with_state(access, guard))
}

/// How a request proved who it is.
enum Credential {
    Bearer,
    Cookie,
    None,
}

fn credential(access: &Access, headers: &HeaderMap) -> Credential {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(token) = value.strip_prefix("Bearer ") {
            if access.token_matches(token.trim()) {
                return Credential::Bearer;
            }
        }
    }
    match session_id(headers) {
        Some(id) if access.session_valid(&id) => Credential::Cookie,
        _ => Credential::None,
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn changes_state(request: &Request) -> bool {
    !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A browser names the page that sent a request in `Origin`; it must be this host. No `Origin`: not a
/// browser's cross-origin request (browsers always send it on those).
fn origin_is_this_host(headers: &HeaderMap) -> bool {
    match (headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()), headers.get(header::HOST).and_then(|v| v.to_str().ok())) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin.split_once("://").is_some_and(|(_, authority)| authority == host),
        (Some(_), None) => false,
    }
}

/// A cookie-authenticated request that may change state must come from our own pages.
fn same_site_request(request: &Request) -> bool {
    !changes_state(request) || (request.headers().get(REQUEST_HEADER).is_some() && origin_is_this_host(request.headers()))
}

/// Whether the request was addressed to this machine by a loopback name.
fn addressed_to_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else { return true };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Without a token (loopback only) there is no credential, so the browser is the threat: any page the user
/// visits can send a POST to 127.0.0.1 (a "simple" request needs no preflight), and a name that an attacker
/// re-points at 127.0.0.1 (DNS rebinding) makes that page same-origin. So the request must be addressed to
/// a loopback name, and one that changes state must not come from another origin's page.
async fn guard_open(request: Request, next: Next) -> Response {
    if request.uri().path() != "/api/health" && !addressed_to_loopback(request.headers()) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::NotLoopback,
            "without a token this milink answers requests addressed to localhost or a loopback address only; set MILINK_TOKEN to serve other names",
        );
    }
    if changes_state(&request) && !origin_is_this_host(request.headers()) {
        return refuse(StatusCode::FORBIDDEN, ErrorCode::CrossSiteRefused, "this request changes state but came from another site's page");
    }
    next.run(request).await
}

async fn guard(State(access): State<Access>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    // The login page and its stylesheet hold nothing secret and must load before there is a session.
    if path == "/api/health" || path == "/login" || path == "/style.css" {
        return next.run(request).await;
    }
    match credential(&access, request.headers()) {
        Credential::Bearer => next.run(request).await,
        Credential::Cookie if same_site_request(&request) => {
            // Tells the pages they run on a signed-in session, so they offer to sign out.
            let mut response = next.run(request).await;
            response.headers_mut().insert(SESSION_HEADER, HeaderValue::from_static("cookie"));
            response
        }
        Credential::Cookie => refuse(
            StatusCode::FORBIDDEN,
            ErrorCode::CrossSiteRefused,
            "this request changes state but did not come from milink's own pages (X-Milink-Request header missing or Origin not this host)",
        ),
        // Machines (the API, a Prometheus scraper) get 401; only a browser's page requests go to the login page.
        Credential::None if path.starts_with("/api/") || path == "/logout" || path == "/metrics" => refuse(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "this milink needs its token: send `Authorization: Bearer <token>` (the CLI sends MILINK_TOKEN) or log in at /login",
        ),
        Credential::None => {
            let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
    }
}

fn refuse(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({ "error": { "code": code.as_str(), "message": message } }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"milink\""));
    }
    response
}

const LOGIN_PAGE: &str = include_str!("assets/login.html");

fn login_response(status: StatusCode, message: &str) -> Response {
    let body = LOGIN_PAGE.replace("{{message}}", message);
    let mut response = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], Body::from(body)).into_response();
    super::secure_headers(response.headers_mut());
    response
}

async fn login_page() -> Response {
    login_response(StatusCode::OK, "")
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(access): State<Access>, Form(form): Form<LoginForm>) -> Response {
    if !access.token_matches(form.token.trim()) {
        // Slows guessing down; the token is long enough that this is a courtesy, not the defence.
        tokio::time::sleep(Duration::from_millis(500)).await;
        return login_response(StatusCode::UNAUTHORIZED, r#"<p class="error" role="alert">That token is not this milink's. Try again.</p>"#);
    }
    let id = access.new_session();
    let cookie = format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}");
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(access): State<Access>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        access.end_session(&id);
    }
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], axum::Json(json!({ "status": "loggedOut" }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_short_tokens_are_refused() {
        assert!(constant_time_eq(b"abcdefghijklmnop", b"abcdefghijklmnop"));
        assert!(!constant_time_eq(b"abcdefghijklmnop", b"abcdefghijklmno"));
        assert!(!constant_time_eq(b"abcdefghijklmnop", b"abcdefghijklmnopq"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(matches!(Access::with_token("short"), Err(TokenError::TooShort(5))));
        assert!(Access::with_token("  0123456789abcdef\n").is_ok_and(|a| a.token_matches("0123456789abcdef")));
        assert!(!format!("{:?}", Access::with_token("0123456789abcdef").unwrap()).contains("0123"));
    }
}
