//! The gateway's own endpoints: on the public listener `/healthz`, `/readyz`,
//! `/openapi.json`, `/docs` and the embedded web client for everything no route claims;
//! on the admin listener (operators only) `/metrics`, `/healthz` and `/readyz`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use kit::ApiError;
use serde_json::json;

use crate::state::Gateway;

pub async fn handle(gw: &Gateway, req: Request) -> Response {
    let method = req.method();
    let path = req.uri().path();
    let read = method == Method::GET || method == Method::HEAD;
    match path {
        "/healthz" if read => "ok".into_response(),
        "/readyz" if read => readyz(gw),
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

/// The admin listener's routes: what operators scrape and probe, never exposed publicly.
pub fn admin_router(gw: Arc<Gateway>) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    kit::telemetry::render_metrics(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(gw): State<Arc<Gateway>>| async move { readyz(&gw) }),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(gw)
}

/// Ready whenever the gateway runs: it can serve now — its own endpoints, the web
/// client, every cluster with a live instance, and a prompt 503 + `Retry-After` for a
/// cluster without one. Failing the probe because an upstream is down would take every
/// gateway out of the load balancer at once (a partial outage becomes a total one) and
/// delay its return until the probe passes again after the upstream recovers. The body
/// reports each cluster's instances (also the `gateway_upstream_available_instances`
/// gauge); `status` is `degraded` while some cluster has none available.
fn readyz(gw: &Gateway) -> Response {
    let mut degraded = false;
    let upstreams: serde_json::Map<String, serde_json::Value> = gw
        .clusters
        .iter()
        .map(|c| {
            let available = c.available_count();
            degraded |= available == 0;
            (
                c.name.clone(),
                json!({"available": available, "instances": c.instances.len()}),
            )
        })
        .collect();
    let status = if degraded { "degraded" } else { "ready" };
    let mut res = (
        StatusCode::OK,
        axum::Json(json!({"status": status, "upstreams": upstreams})),
    )
        .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
