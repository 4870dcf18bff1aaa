//! The web UI: the Arc "Database migration" journey (overview, assessment, new migration, monitor and
//! cutover) served by both hosts, plus the two read models only its dashboard needs
//! (`GET /api/overview`, `GET /api/connections`, in [`overview`]).
//!
//! Why plain HTML, CSS and a few vanilla ES modules, embedded with `include_str!`: the binary must build
//! and run without Node.js, the pages are forms and tables over the public API (no framework earns its
//! build step there), and what the browser runs is exactly the file in this folder, so a reviewer reads
//! the UI without a source map. The pages call only the public API under `/api`; they hold no secret.
//!
//! Where it is served: the embedded host serves the UI at `/`; the Azure host, whose HTTP functions all
//! live under the `api` route prefix, serves it at `/api/ui/` through one HTTP function (`Ui`). Both roots
//! hold the same files and the pages use relative URLs for their own files and absolute `/api/...` for the
//! API, so one set of files works at either root. Access control is the host's: the embedded host wraps
//! the router with [`auth`] (a token beyond loopback); the Azure host's function keys guard the API.
pub mod auth;
pub mod overview;

use crate::api::ApiState;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file: name under the UI root, media type, content.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $media:expr) => {
        Asset { name: $name, media_type: $media, body: include_str!(concat!("assets/", $name)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the UI.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("overview.js", JS),
    asset!("assessment.js", JS),
    asset!("wizard.js", JS),
    asset!("monitor.js", JS),
    asset!("migration.js", JS),
    asset!("chart.js", JS),
];

/// The Content-Security-Policy of every UI response: only our own files, no inline script or style, no
/// framing, no third party. The pages draw the lag chart as SVG elements, which needs nothing more.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The UI's routes (at `/` and at `/api/ui/`) and its read models, merged into [`crate::api::app`].
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/overview", get(overview::overview))
        .route("/api/connections", get(overview::connections))
        .route("/", get(index))
        .route("/{file}", get(file))
        .route("/api/ui", get(|| async { Redirect::permanent("/api/ui/") }))
        .route("/api/ui/", get(index))
        .route("/api/ui/{file}", get(file))
}

async fn index() -> Response {
    serve("index.html")
}

async fn file(Path(name): Path<String>) -> Response {
    serve(&name)
}

fn serve(name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "no such page").into_response();
    };
    let mut response = ([(header::CONTENT_TYPE, asset.media_type)], asset.body).into_response();
    secure_headers(response.headers_mut());
    response
}

/// Headers every page and file of the UI carries (the login page too).
pub(crate) fn secure_headers(headers: &mut axum::http::HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files are embedded in the binary; an upgrade must not run yesterday's script against today's API.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_index_loads_is_embedded() {
        let index = ASSETS[0].body;
        for asset in ASSETS {
            if asset.name.ends_with(".js") {
                let imported = ASSETS.iter().any(|a| a.body.contains(&format!("'./{}'", asset.name)));
                assert!(index.contains(asset.name) || imported, "{} is embedded but nothing loads it", asset.name);
            }
        }
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in asset.body.lines().filter(|l| l.starts_with("import ")) {
                let file = line.rsplit("'./").next().and_then(|rest| rest.split('\'').next()).unwrap_or_default();
                assert!(ASSETS.iter().any(|a| a.name == file), "{} imports {file}, which is not embedded", asset.name);
            }
        }
    }
}
