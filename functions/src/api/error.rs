//! The one error type of the HTTP edge: a status, a stable code, a message a user can act on, and
//! optional details (the blockers of a refused start). Internal errors are logged in full and answered
//! with a generic message, so nothing internal or secret leaks into a response body.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use milink_core::flow::Rejection;
use milink_core::ports::StoreError;
use serde_json::{json, Value};

/// The stable error codes of the API: the one list the OpenAPI document's `Error.code` enum is checked
/// against (a test compares them), so a code cannot be added in one place and not the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The body is missing or not the JSON the route takes.
    InvalidBody,
    /// A connection or database name is not valid.
    InvalidName,
    /// The config names no such connection.
    UnknownConnection,
    /// No engine migrates from that source to that target.
    UnsupportedPair,
    /// No engine assesses that connection.
    UnsupportedEngine,
    /// A database is Not ready in the latest assessment.
    DatabaseNotReady,
    /// The request needs confirmTrafficStopped: true.
    ConfirmationRequired,
    /// The migration is not ReadyForCutover.
    NotReadyForCutover,
    /// The migration is past the point of no return or finished.
    CannotCancel,
    /// No such migration, assessment or route.
    NotFound,
    /// The state store did not answer.
    StoreUnavailable,
    /// No completed cutover with a reverse link to fail back over.
    CannotFailBack,
    /// A verification runs only while the link syncs.
    CannotVerify,
    /// A migration setting is out of range.
    InvalidSettings,
    /// The migration kept changing while the request was applied.
    Conflict,
    /// The route does not take that method.
    MethodNotAllowed,
    /// This milink needs its token (Bearer or the login cookie).
    Unauthorized,
    /// A state change that did not come from milink's own pages.
    CrossSiteRefused,
    /// Without a token, milink answers only requests addressed to a loopback name.
    NotLoopback,
    /// A fleet plan has problems (listed in details).
    InvalidPlan,
    /// No reverse link to remove.
    NoReverseLink,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 21] = [ErrorCode::InvalidBody, ErrorCode::InvalidName, ErrorCode::UnknownConnection, ErrorCode::UnsupportedPair, ErrorCode::UnsupportedEngine, ErrorCode::DatabaseNotReady, ErrorCode::ConfirmationRequired, ErrorCode::NotReadyForCutover, ErrorCode::CannotCancel, ErrorCode::NotFound, ErrorCode::StoreUnavailable, ErrorCode::CannotFailBack, ErrorCode::CannotVerify, ErrorCode::InvalidSettings, ErrorCode::Conflict, ErrorCode::MethodNotAllowed, ErrorCode::Unauthorized, ErrorCode::CrossSiteRefused, ErrorCode::NotLoopback, ErrorCode::InvalidPlan, ErrorCode::NoReverseLink];

    /// The code as it appears in a response body.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::UnknownConnection => "unknown_connection",
            ErrorCode::UnsupportedPair => "unsupported_pair",
            ErrorCode::UnsupportedEngine => "unsupported_engine",
            ErrorCode::DatabaseNotReady => "database_not_ready",
            ErrorCode::ConfirmationRequired => "confirmation_required",
            ErrorCode::NotReadyForCutover => "not_ready_for_cutover",
            ErrorCode::CannotCancel => "cannot_cancel",
            ErrorCode::NotFound => "not_found",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::CannotFailBack => "cannot_fail_back",
            ErrorCode::CannotVerify => "cannot_verify",
            ErrorCode::InvalidSettings => "invalid_settings",
            ErrorCode::Conflict => "conflict",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::CrossSiteRefused => "cross_site_refused",
            ErrorCode::NotLoopback => "not_loopback",
            ErrorCode::InvalidPlan => "invalid_plan",
            ErrorCode::NoReverseLink => "no_reverse_link",
        }
    }
}

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: ErrorCode,
    /// What happened and what to do.
    pub message: String,
    /// Extra structured detail.
    pub details: Option<Value>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: None }
    }

    /// 400 with `code`.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, format!("no {what} with id {id}"))
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if let StoreError::Conflict(_) = error {
            return ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, "the migration kept changing while your request was applied; retry it");
        }
        tracing::error!(%error, "store error in API");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::StoreUnavailable, "the state store is unavailable; retry shortly")
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let (status, code) = match rejection {
            Rejection::ConfirmationRequired => (StatusCode::BAD_REQUEST, ErrorCode::ConfirmationRequired),
            Rejection::NotReadyForCutover { .. } => (StatusCode::CONFLICT, ErrorCode::NotReadyForCutover),
            Rejection::CannotCancel { .. } => (StatusCode::CONFLICT, ErrorCode::CannotCancel),
            Rejection::CannotFailBack { .. } => (StatusCode::CONFLICT, ErrorCode::CannotFailBack),
            Rejection::CannotVerify { .. } => (StatusCode::CONFLICT, ErrorCode::CannotVerify),
            Rejection::NoReverseLink { .. } => (StatusCode::CONFLICT, ErrorCode::NoReverseLink),
        };
        ApiError::new(status, code, rejection.to_string())
    }
}

impl From<milink_core::config::LookupError> for ApiError {
    fn from(error: milink_core::config::LookupError) -> Self {
        use milink_core::config::LookupError;
        let code = match error {
            LookupError::UnknownConnection { .. } => ErrorCode::UnknownConnection,
            LookupError::UnsupportedEngine { .. } => ErrorCode::UnsupportedEngine,
            LookupError::UnsupportedPair { .. } => ErrorCode::UnsupportedPair,
        };
        ApiError::bad_request(code, error.to_string())
    }
}

/// Parses a JSON body, turning every parse problem into a 400 that says what is wrong.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(ErrorCode::InvalidBody, "the request needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn the_openapi_document_lists_exactly_the_error_codes_the_api_can_answer() {
        let openapi: serde_json::Value = serde_json::from_str(super::super::OPENAPI).unwrap();
        let listed: Vec<String> = openapi["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .expect("Error.code is an enum")
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let mut documented = listed.clone();
        documented.sort();
        let mut answered: Vec<String> = ErrorCode::ALL.iter().map(|c| c.as_str().to_owned()).collect();
        answered.sort();
        assert_eq!(documented, answered, "openapi.json's Error.code enum and ErrorCode differ");
    }
}
