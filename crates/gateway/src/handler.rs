//! The request path, one phase per function, read top to bottom:
//!
//! 1. [`handle`]: request id and context; `/metrics` refused; route match (or the
//!    gateway's own endpoints, `own`); CORS preflight; per-route response headers; the
//!    headers every answer carries (`headers::response_headers`).
//! 2. [`proxy`]: the edge checks (`admit`), then [`forward`] or [`upgrade`]; rate-limit
//!    headers on the answer.
//! 3. [`forward`] (HTTP) and [`upgrade`] (WebSocket handshake): headers rewritten for the
//!    upstream (`headers::upstream_headers`), one `upstream::send` for both (pick →
//!    connect → retry → passive health), upstream faults answered by
//!    `reply::failure_response`; a `101` hands both connections to a relay (`ws`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{self, HeaderValue};
use kit::ApiError;

use crate::admit::{Admission, admit, names_metrics, query_without_token};
use crate::body::{GuardedBody, Replayable, has_body};
use crate::edge_auth::Identity;
use crate::headers::{
    ratelimit_headers, request_id, response_headers, strip_hop_by_hop, upstream_headers,
};
use crate::own;
use crate::reply::{CLOSE, failure_response};
use crate::state::{Ctx, Gateway, Route};
use crate::upstream::{self, Outgoing};

/// The one handler: own endpoints, proxied routes, the static web client.
pub async fn handle(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    req: Request,
) -> Response {
    let request_id = request_id(req.headers());
    let origin = req.headers().get(header::ORIGIN).cloned();
    let ctx = Ctx {
        peer,
        peer_trusted: gw.trusted.contains(peer.ip()),
        request_id,
    };
    let path = req.uri().path();
    let mut no_store = false;
    // Responses to requests that carry a token are the caller's own data.
    let authenticated = req.headers().contains_key(header::AUTHORIZATION)
        || req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("access_token=")));
    let method = req.method().clone();
    let log_path = if tracing::enabled!(tracing::Level::DEBUG) {
        path.to_owned()
    } else {
        String::new()
    };
    let mut res = if names_metrics(path) {
        // Metrics (the gateway's and the services') are for operators, on the admin
        // listener: they name upstream URLs and reveal traffic.
        ApiError::not_found("no such route").into_response()
    } else if let Some(route) = gw.route(path) {
        let started = Instant::now();
        no_store = route.no_store;
        let res = if let Some(preflight) = gw.cors.preflight(&req) {
            preflight
        } else {
            proxy(&gw, route, &ctx, req).await
        };
        route.count(res.status(), started);
        // Never the query: it may carry an access token.
        tracing::debug!(method = %method, path = %log_path, status = res.status().as_u16(), ms = started.elapsed().as_millis() as u64, "proxied");
        let mut res = res;
        for name in &route.response_remove {
            res.headers_mut().remove(name);
        }
        for (name, value) in &route.response_add {
            res.headers_mut().insert(name.clone(), value.clone());
        }
        res
    } else if let Some(preflight) = gw.cors.preflight(&req) {
        preflight
    } else {
        own::handle(&gw, req).await
    };
    let headers = res.headers_mut();
    response_headers(headers, ctx.request_id, no_store, authenticated);
    gw.cors.decorate(origin.as_ref(), headers);
    res
}

/// A routed request: the edge checks, then upstream.
async fn proxy(gw: &Gateway, route: &Route, ctx: &Ctx, req: Request) -> Response {
    let body_expected = has_body(req.body());
    // Checked on the parts alone: the body type is not Sync, so no reference to it may
    // be held across the checks' awaits.
    let (parts, body) = req.into_parts();
    let Admission {
        upstream_path,
        websocket,
        identity,
        token_for_upstream,
        decision,
    } = match admit(gw, route, ctx, &parts, body_expected).await {
        Ok(a) => a,
        Err(mut res) => {
            // The body was not read: the connection cannot carry another request, and
            // saying so keeps clients from reusing it.
            if body_expected {
                res.headers_mut().insert(header::CONNECTION, CLOSE.clone());
            }
            return res;
        }
    };
    let req = Request::from_parts(parts, body);
    let mut res = if websocket {
        upgrade(
            gw,
            route,
            ctx,
            req,
            &upstream_path,
            token_for_upstream,
            identity,
        )
        .await
    } else {
        forward(gw, route, ctx, req, &upstream_path, identity).await
    };
    ratelimit_headers(res.headers_mut(), &decision);
    res
}

/// An HTTP request: bodies streamed both ways.
async fn forward(
    gw: &Gateway,
    route: &Route,
    ctx: &Ctx,
    req: Request,
    upstream_path: &str,
    identity: Option<Identity>,
) -> Response {
    let deadline = tokio::time::Instant::now() + route.timeout;
    let (mut parts, body) = req.into_parts();
    upstream_headers(&mut parts.headers, route, ctx, identity);
    let query = parts.uri.query().map(str::to_owned);
    let body = if has_body(&body) {
        Replayable::new(body, route.body_limit)
    } else {
        Replayable::empty()
    };
    let outgoing = Outgoing {
        parts,
        body,
        path: upstream_path,
        query: query.as_deref(),
        deadline,
    };
    match upstream::send(&gw.clients, &route.cluster, outgoing).await {
        Ok((res, in_flight)) => {
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(GuardedBody::new(body, in_flight)))
        }
        Err(e) => failure_response(e, route.body_limit),
    }
}

/// A WebSocket handshake: goes to a chosen instance like any request (so with the same
/// retries, health and failure answers); on `101` both connections are relayed.
async fn upgrade(
    gw: &Gateway,
    route: &Route,
    ctx: &Ctx,
    mut req: Request,
    upstream_path: &str,
    token: Option<String>,
    identity: Option<Identity>,
) -> Response {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _) = req.into_parts();
    let query = parts.uri.query().map(query_without_token);
    upstream_headers(&mut parts.headers, route, ctx, identity);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Some(token) = token {
        // The query parameter travels upstream as a header, out of URLs and their logs.
        if let Ok(v) = HeaderValue::try_from(format!("Bearer {token}")) {
            parts.headers.insert(header::AUTHORIZATION, v);
        }
    }
    let deadline = tokio::time::Instant::now() + route.timeout.min(Duration::from_secs(10));
    let Ok(handshake) = http::Request::builder()
        .method(http::Method::GET)
        .version(http::Version::HTTP_11)
        .body(())
    else {
        return ApiError::internal("cannot build the upstream request").into_response();
    };
    let (mut handshake, ()) = handshake.into_parts();
    handshake.headers = parts.headers;
    let outgoing = Outgoing {
        parts: handshake,
        body: Replayable::empty(),
        path: upstream_path,
        query: query.as_deref(),
        deadline,
    };
    let (mut res, mut in_flight) = match upstream::send(&gw.clients, &route.cluster, outgoing).await
    {
        Ok(r) => r,
        Err(e) => return failure_response(e, route.body_limit),
    };
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The service refused the handshake (401, 400, …): pass its answer on.
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Response::from_parts(parts, Body::new(GuardedBody::new(body, in_flight)));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut res);
    in_flight.detach_connection();
    let (parts, _) = res.into_parts();
    gw.ws.relay(client_upgrade, upstream_upgrade, in_flight);
    // The 101 carries the service's handshake answer (Sec-WebSocket-Accept, protocol).
    Response::from_parts(parts, Body::empty())
}
