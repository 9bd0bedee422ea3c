//! CORS with an origin allowlist. Preflights are answered at the edge; actual responses
//! get `Access-Control-Allow-Origin` only for allowed origins. Credentials (cookies) are
//! not used by this API, so none are allowed.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

static ALLOW_METHODS: HeaderValue =
    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
static ALLOW_HEADERS: HeaderValue = HeaderValue::from_static(
    "authorization, content-type, x-request-id, traceparent, accept, accept-language",
);
static EXPOSE_HEADERS: HeaderValue = HeaderValue::from_static(
    "x-request-id, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset, location",
);
static MAX_AGE: HeaderValue = HeaderValue::from_static("600");
static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("origin");

impl Cors {
    pub fn new(origins: &[String]) -> Self {
        let origins: Vec<String> = origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        Self {
            any: origins.iter().any(|o| o == "*"),
            origins,
        }
    }

    fn allowed(&self, origin: &HeaderValue) -> bool {
        let Ok(o) = origin.to_str() else {
            return false;
        };
        self.any || self.origins.iter().any(|a| a.eq_ignore_ascii_case(o))
    }

    /// The answer to a CORS preflight, if `req` is one.
    pub fn preflight(&self, req: &Request) -> Option<Response> {
        if req.method() != Method::OPTIONS {
            return None;
        }
        let origin = req.headers().get(header::ORIGIN)?;
        req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        if !self.allowed(origin) {
            return Some(
                kit::ApiError::forbidden(
                    kit::error::code::CORS_ORIGIN_NOT_ALLOWED,
                    "this origin may not call the API",
                )
                .into_response(),
            );
        }
        let mut res = StatusCode::NO_CONTENT.into_response();
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS.clone());
        h.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE.clone());
        Some(res)
    }

    /// Adds the CORS response headers for an allowed `origin`.
    pub fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        let Some(origin) = origin else {
            return;
        };
        headers.append(header::VARY, VARY_ORIGIN.clone());
        if self.allowed(origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                EXPOSE_HEADERS.clone(),
            );
        }
    }
}
