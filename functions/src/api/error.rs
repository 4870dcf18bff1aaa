//! The one error type of the HTTP edge: a status, a stable code, a message a user can act on, and
//! optional details (the blockers of a refused start). Internal errors are logged in full and answered
//! with a generic message, so nothing internal or secret leaks into a response body.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use milink_core::flow::Rejection;
use milink_core::ports::StoreError;
use serde_json::{json, Value};

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// Extra structured detail.
    pub details: Option<Value>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: None }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {what} with id {id}"))
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if let StoreError::Conflict(_) = error {
            return ApiError::new(StatusCode::CONFLICT, "conflict", "the migration kept changing while your request was applied; retry it");
        }
        tracing::error!(%error, "store error in API");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the state store is unavailable; retry shortly")
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let (status, code) = match rejection {
            Rejection::ConfirmationRequired => (StatusCode::BAD_REQUEST, "confirmation_required"),
            Rejection::NotReadyForCutover { .. } => (StatusCode::CONFLICT, "not_ready_for_cutover"),
            Rejection::CannotCancel { .. } => (StatusCode::CONFLICT, "cannot_cancel"),
            Rejection::CannotFailBack { .. } => (StatusCode::CONFLICT, "cannot_fail_back"),
            Rejection::CannotVerify { .. } => (StatusCode::CONFLICT, "cannot_verify"),
        };
        ApiError::new(status, code, rejection.to_string())
    }
}

/// Parses a JSON body, turning every parse problem into a 400 that says what is wrong.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("invalid_body", "the request needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_body", format!("invalid JSON body: {e}")))
}
