//! The gateway's own answers (problem+json with a stable `code`): refusals of the edge
//! checks and the 503s for upstream faults.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{self, HeaderValue};
use kit::ApiError;
use kit::error::code;

use crate::headers::RATELIMIT_RESET;
use crate::ratelimit::Decision;
use crate::upstream::SendError;

pub(crate) static CLOSE: HeaderValue = HeaderValue::from_static("close");

pub(crate) fn problem(status: StatusCode, code: &'static str, detail: &str) -> Response {
    ApiError::new(status, code, detail).into_response()
}

pub(crate) fn payload_too_large(body_limit: u64) -> Response {
    problem(
        StatusCode::PAYLOAD_TOO_LARGE,
        code::PAYLOAD_TOO_LARGE,
        &format!("request bodies are limited to {body_limit} bytes"),
    )
}

pub(crate) fn rate_limited(d: &Decision) -> Response {
    let mut res = ApiError::rate_limited(d.retry_after_ms(), d.limit).into_response();
    res.headers_mut().insert(
        RATELIMIT_RESET.clone(),
        HeaderValue::from(d.reset_ms.div_ceil(1000).max(1)),
    );
    res
}

/// The answer when no upstream response could be had. Every fault is a 503 with
/// `Retry-After` (never 502/504): the client may send the same request again, and a
/// send that carries a `client_msg_id` is stored at most once however often it is sent.
pub(crate) fn failure_response(e: SendError, body_limit: u64) -> Response {
    match e {
        SendError::Overloaded => ApiError::unavailable(
            code::UPSTREAM_OVERLOADED,
            "the service is at capacity; retry shortly",
        )
        .into_response(),
        SendError::Unavailable => ApiError::unavailable(
            code::UPSTREAM_UNAVAILABLE,
            "the service is unavailable; retry shortly",
        )
        .into_response(),
        SendError::Timeout => ApiError::unavailable(
            code::UPSTREAM_TIMEOUT,
            "the service did not answer in time; retry shortly",
        )
        .into_response(),
        SendError::TooLarge => {
            let mut res = payload_too_large(body_limit);
            res.headers_mut().insert(header::CONNECTION, CLOSE.clone());
            res
        }
        SendError::BadUri => ApiError::internal("cannot build the upstream URI").into_response(),
    }
}
