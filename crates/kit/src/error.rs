//! One error type for every handler, rendered as RFC 9457 `application/problem+json`
//! with a stable machine-readable `code`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An error a client sees. Internal causes are logged, never sent. `Clone`: one failure
/// can answer several requests (a failed send batch answers each of its sends).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// Extra headers (e.g. `Retry-After` and `RateLimit-*` on 429).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// 400 `validation_failed` naming the offending field.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            message.clone(),
        );
        e.errors.push(FieldError {
            field: field.to_owned(),
            message,
        });
        e
    }

    /// 400 `validation_failed` with several field errors.
    pub fn validation_many(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let mut e = Self::new(StatusCode::BAD_REQUEST, "validation_failed", detail);
        e.errors = errors;
        e
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    /// 503 with `Retry-After`: a dependency is down; the same request may succeed soon.
    /// Every 503 carries the header, so clients (and the gateway) can back off uniformly.
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail);
        e.headers
            .push(("retry-after", RETRY_AFTER_UNAVAILABLE_SECS.to_string()));
        e
    }

    /// 429 `rate_limited` with `Retry-After` (whole seconds, at least 1) and RateLimit headers.
    pub fn rate_limited(retry_after_ms: u64, limit: u32) -> Self {
        let secs = retry_after_ms.div_ceil(1000).max(1);
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests; retry in {secs} s"),
        );
        e.headers.push(("retry-after", secs.to_string()));
        e.headers.push(("ratelimit-limit", limit.to_string()));
        e.headers.push(("ratelimit-remaining", "0".to_owned()));
        e.headers.push(("ratelimit-reset", secs.to_string()));
        e
    }

    /// 500 `internal`: logs the cause, tells the client nothing about it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred",
        )
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl std::error::Error for ApiError {}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [FieldError],
}

pub const PROBLEM_JSON: &str = "application/problem+json";

/// `Retry-After` on a 503: long enough for a pool to reconnect after a database
/// restart (PostgreSQL accepts connections again within ~1 s of starting), short enough
/// that a client retrying a send is not held up noticeably.
pub const RETRY_AFTER_UNAVAILABLE_SECS: u64 = 2;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: format!(
                "https://intellicolab.dev/problems/{}",
                self.code.replace('_', "-")
            ),
            title: self.title(),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            errors: &self.errors,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (self.status, bytes).into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                res.headers_mut().insert(name, v);
            }
        }
        res
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&e) {
            tracing::error!(error = %e, "database unavailable");
            Self::unavailable("database_unavailable", "the database is unavailable")
        } else {
            Self::internal(e)
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(format!("{e:#}"))
    }
}
