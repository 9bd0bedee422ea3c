//! The gateway's own endpoints (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`,
//! `/docs`) and the embedded web client for everything no route claims.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use kit::ApiError;

use crate::proxy::Gateway;

pub async fn handle(gw: &Gateway, req: Request) -> Response {
    let method = req.method();
    let path = req.uri().path();
    let read = method == Method::GET || method == Method::HEAD;
    match path {
        "/healthz" if read => "ok".into_response(),
        "/readyz" if read => readyz(gw),
        "/metrics" if read => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            kit::telemetry::render_metrics(),
        )
            .into_response(),
        "/openapi.json" if read => {
            let mut res = gw.openapi.get().into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            res
        }
        _ if read && (path == "/docs" || path.starts_with("/docs/")) => gw
            .assets
            .docs(method, path, req.headers())
            .unwrap_or_else(|| ApiError::not_found("no such route").into_response()),
        _ if read && !path.starts_with("/internal") => gw
            .assets
            .web(method, path, req.headers())
            .unwrap_or_else(|| ApiError::not_found("no such route").into_response()),
        _ => ApiError::not_found("no such route").into_response(),
    }
}

fn readyz(gw: &Gateway) -> Response {
    let down: Vec<&str> = gw
        .clusters
        .iter()
        .filter(|c| !c.has_healthy())
        .map(|c| c.name.as_str())
        .collect();
    if down.is_empty() {
        (StatusCode::OK, "ready").into_response()
    } else {
        ApiError::unavailable(
            "not_ready",
            format!("no healthy instance in: {}", down.join(", ")),
        )
        .into_response()
    }
}
