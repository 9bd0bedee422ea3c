//! The HTTP conventions every service shares: problem+json extractors, request ids,
//! RED metrics by route template, body limits and the 404/405 fallbacks.

use std::time::Instant;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, code};

/// Largest request body accepted by default (API.md: 1 MiB, 413 beyond).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// JSON body extractor whose rejections are problem+json: 400 malformed, 415 wrong
/// content type, 413 too large.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json",
        ),
        JsonRejection::JsonDataError(e) => {
            ApiError::bad_request(code::VALIDATION_FAILED, e.body_text())
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request(code::MALFORMED_JSON, e.body_text())
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            payload_too_large()
        }
        other => ApiError::bad_request(code::MALFORMED_BODY, other.body_text()),
    }
}

pub fn payload_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        code::PAYLOAD_TOO_LARGE,
        format!("request bodies are limited to {DEFAULT_BODY_LIMIT} bytes"),
    )
}

/// Path extractor: a malformed id is a 400 `invalid_id`, never a 500.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                Err(ApiError::bad_request(code::INVALID_ID, e.body_text()))
            }
            Err(e) => Err(ApiError::internal(e.body_text())),
        }
    }
}

/// Query extractor with a 400 `invalid_query` rejection.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::bad_request(code::INVALID_QUERY, e.body_text()))
            }
            Err(e) => Err(ApiError::bad_request(code::INVALID_QUERY, e.body_text())),
        }
    }
}

/// Whether a client-sent request id may be echoed: 1–128 of `A-Z a-z 0-9 . _ -`.
pub fn is_valid_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The request id of the current request (set by [`observe`]).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Middleware: request id (echo a valid one, else a new uuid v7), a tracing span, and
/// RED metrics labelled by route template. `service` names the metrics' `service` label.
pub async fn observe(service: &'static str, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        req.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().clone();
    // Route template, never the raw path: ids must not become label values.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // Continue the caller's trace (the gateway always sends one), or start one.
    let incoming = req
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::trace::TraceParent::parse);
    // Without an incoming context this request is the root: its own context stands in for
    // the (unexported) remote parent, so logs and exported spans share one trace id.
    let incoming = incoming.unwrap_or_else(crate::trace::TraceParent::new_root);
    let ctx = incoming.child();
    let span = tracing::info_span!(
        "request",
        service,
        %method,
        route = %route,
        request_id = %request_id,
        trace_id = %ctx.trace_id,
        // Recorded by the authenticated-user extractor.
        user_id = tracing::field::Empty,
    );
    crate::trace::set_remote_parent(&span, &incoming);
    let mut res = {
        use tracing::Instrument;
        crate::trace::scope(ctx, next.run(req).instrument(span.clone())).await
    };
    let status = res.status();
    let elapsed = start.elapsed();
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                ms = elapsed.as_millis() as u64,
                "request failed"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                ms = elapsed.as_millis() as u64,
                "request"
            );
        }
    });
    let class = match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    let method = method.as_str().to_owned();
    metrics::counter!("http_requests_total", "service" => service, "method" => method.clone(), "route" => route.clone(), "status" => class).increment(1);
    metrics::histogram!("http_request_duration_seconds", "service" => service, "method" => method, "route" => route).record(elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    res
}

/// Fallback for unknown routes: 404 problem+json.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// Rewrites axum's bare 405/413 responses into problem+json.
pub async fn problem_statuses(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let is_problem = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if is_problem {
        return res;
    }
    match res.status() {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = res.headers().get(axum::http::header::ALLOW).cloned();
            let mut r = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                code::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
            .into_response();
            if let Some(allow) = allow {
                r.headers_mut().insert(axum::http::header::ALLOW, allow);
            }
            r
        }
        StatusCode::PAYLOAD_TOO_LARGE => payload_too_large().into_response(),
        _ => res,
    }
}
