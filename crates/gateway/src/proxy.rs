//! The request path: route match → edge checks (hidden paths, CORS preflight, methods,
//! body size and type, token, rate limit) → forward to an upstream instance with a
//! streamed body → response headers (request id, security, CORS, rate limit).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kit::ApiError;
use token::TokenError;

pub use crate::body::ProxyBody;
use crate::body::{GuardedBody, Replayable};
use crate::config::{AuthPolicy, Config, RouteConfig};
use crate::edge_auth::{EdgeAuth, Identity};
use crate::ratelimit::{ClientKey, Decision, RateLimiter};
use crate::upstream::{self, Cluster, Outgoing, SendError};
use crate::{assets, cors, own, ws};

pub type HttpClient = Client<HttpConnector, ProxyBody>;

/// One upstream client (and so one connection pool) per thread that proxies: a pooled
/// connection is driven by a task on the thread that opened it, so sharing one pool
/// between threads would hand every request across threads twice.
pub struct Clients {
    connect_timeout_ms: u64,
    pool_max_idle_per_host: usize,
    per_thread: thread_local::ThreadLocal<HttpClient>,
}

impl Clients {
    pub fn new(config: &Config) -> Self {
        Self {
            connect_timeout_ms: config.connect_timeout_ms,
            pool_max_idle_per_host: config.pool_max_idle_per_host,
            per_thread: thread_local::ThreadLocal::new(),
        }
    }

    /// This thread's client.
    pub fn get(&self) -> &HttpClient {
        self.per_thread
            .get_or(|| build_client(self.connect_timeout_ms, self.pool_max_idle_per_host))
    }
}

pub fn http_client(config: &Config) -> HttpClient {
    build_client(config.connect_timeout_ms, config.pool_max_idle_per_host)
}

fn build_client(connect_timeout_ms: u64, pool_max_idle_per_host: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_millis(connect_timeout_ms)));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(pool_max_idle_per_host)
        .build(connector)
}

pub struct Route {
    pub prefix: String,
    pub cluster: Arc<Cluster>,
    pub websocket: bool,
    rewrite: Option<String>,
    auth: AuthPolicy,
    rate_limit: u16,
    pub(crate) timeout: Duration,
    body_limit: u64,
    methods: Option<Vec<Method>>,
    allow: HeaderValue,
    json: bool,
    request_add: Vec<(HeaderName, HeaderValue)>,
    request_remove: Vec<HeaderName>,
    response_add: Vec<(HeaderName, HeaderValue)>,
    response_remove: Vec<HeaderName>,
    no_store: bool,
    ratelimited: metrics::Counter,
    requests: [metrics::Counter; 5],
    duration: metrics::Histogram,
}

fn header_pairs(
    map: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    map.iter()
        .map(|(k, v)| {
            Ok((
                HeaderName::try_from(k.as_str())
                    .map_err(|e| anyhow::anyhow!("header name {k:?}: {e}"))?,
                HeaderValue::try_from(v.as_str())
                    .map_err(|e| anyhow::anyhow!("header value for {k:?}: {e}"))?,
            ))
        })
        .collect()
}

fn header_names(list: &[String]) -> anyhow::Result<Vec<HeaderName>> {
    list.iter()
        .map(|k| {
            HeaderName::try_from(k.as_str()).map_err(|e| anyhow::anyhow!("header name {k:?}: {e}"))
        })
        .collect()
}

impl Route {
    pub fn new(
        cfg: &RouteConfig,
        cluster: Arc<Cluster>,
        limiter: &RateLimiter,
    ) -> anyhow::Result<Self> {
        let policy_name = cfg.rate_limit.as_deref().unwrap_or("default");
        let rate_limit = limiter.policy_index(policy_name).ok_or_else(|| {
            anyhow::anyhow!(
                "route {}: unknown rate-limit policy {policy_name:?}",
                cfg.prefix
            )
        })?;
        if !cfg.prefix.starts_with('/') {
            anyhow::bail!("route prefix {:?} must start with /", cfg.prefix);
        }
        let methods = if cfg.methods.is_empty() {
            None
        } else {
            Some(
                cfg.methods
                    .iter()
                    .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow::anyhow!("route {}: {e}", cfg.prefix))?,
            )
        };
        let allow = methods
            .as_ref()
            .map(|m| {
                m.iter()
                    .map(Method::as_str)
                    .chain(std::iter::once("OPTIONS"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let label = cfg.prefix.clone();
        let class = |c: &'static str| metrics::counter!("gateway_requests_total", "route" => label.clone(), "status" => c);
        Ok(Self {
            requests: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: metrics::histogram!("gateway_request_duration_seconds", "route" => label.clone()),
            ratelimited: metrics::counter!("gateway_ratelimited_total", "route" => label.clone()),
            prefix: cfg.prefix.clone(),
            cluster,
            websocket: cfg.websocket,
            rewrite: cfg.rewrite.clone(),
            auth: cfg.auth,
            rate_limit,
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            body_limit: cfg.body_limit,
            methods,
            allow: HeaderValue::try_from(allow)?,
            json: cfg.json,
            request_add: header_pairs(&cfg.request_headers_add)?,
            request_remove: header_names(&cfg.request_headers_remove)?,
            response_add: header_pairs(&cfg.response_headers_add)?,
            response_remove: header_names(&cfg.response_headers_remove)?,
            no_store: cfg.no_store,
        })
    }

    fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || self.prefix.ends_with('/') || rest.starts_with('/'),
            None => false,
        }
    }

    fn allows(&self, method: &Method) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|m| m.contains(method) || method == Method::OPTIONS)
    }

    /// The path the upstream sees.
    fn upstream_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.rewrite {
            None => path.into(),
            Some(to) => {
                let rest = &path[self.prefix.len()..];
                let joined = format!("{}{}", to.trim_end_matches('/'), rest);
                if joined.is_empty() {
                    "/".into()
                } else {
                    joined.into()
                }
            }
        }
    }

    fn count(&self, status: StatusCode, started: Instant) {
        let idx = ((status.as_u16() / 100).clamp(1, 5) - 1) as usize;
        self.requests[idx].increment(1);
        self.duration.record(started.elapsed().as_secs_f64());
    }
}

pub struct Gateway {
    pub routes: Vec<Route>,
    pub clusters: Vec<Arc<Cluster>>,
    pub clients: Clients,
    pub auth: Arc<EdgeAuth>,
    pub limiter: Arc<RateLimiter>,
    pub trusted: kit::net::TrustedProxies,
    pub cors: cors::Cors,
    pub ws: ws::WsHub,
    pub assets: assets::Assets,
    pub openapi: Arc<crate::openapi::MergedSpec>,
}

impl Gateway {
    fn route(&self, path: &str) -> Option<&Route> {
        // Routes are sorted longest prefix first.
        self.routes.iter().find(|r| r.matches(path))
    }
}

static X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
static X_SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static REFERRER_POLICY: HeaderName = HeaderName::from_static("referrer-policy");
static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
static NO_REFERRER: HeaderValue = HeaderValue::from_static("no-referrer");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1: `Connection` and every header it
/// names, plus the well-known ones.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(conn) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = conn
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|t| HeaderName::try_from(t.trim()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
}

/// Removes identity headers a client must not set, and forwarding headers from peers
/// that are not trusted proxies.
fn strip_untrusted(headers: &mut HeaderMap, peer_trusted: bool) {
    headers.remove(&X_USER_ID);
    headers.remove(&X_SESSION_ID);
    let mut drop: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let n = name.as_str();
        if n.starts_with("x-internal-")
            || (!peer_trusted && (n.starts_with("x-forwarded-") || n == "forwarded"))
        {
            drop.push(name.clone());
        }
    }
    for name in drop {
        headers.remove(name);
    }
}

/// A W3C `traceparent` continuing the client's trace, or starting one. Built in a stack
/// buffer: this runs on every proxied request.
fn traceparent(incoming: Option<&HeaderValue>) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let span: u64 = rand::random::<u64>().max(1);
    // "00-" trace(32) "-" span(16) "-" flags(2)
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    let is_hex = |s: &[u8]| s.iter().all(u8::is_ascii_hexdigit);
    let parsed = incoming.map(|v| v.as_bytes().trim_ascii()).filter(|v| {
        // version(2) - trace(32) - parent(16) - flags(2) [- future fields]
        v.len() >= 55
            && (v.len() == 55 || v[55] == b'-')
            && v[2] == b'-'
            && v[35] == b'-'
            && v[52] == b'-'
            && is_hex(&v[0..2])
            && !v[0..2].eq_ignore_ascii_case(b"ff")
            && is_hex(&v[3..35])
            && v[3..35].iter().any(|&b| b != b'0')
            && is_hex(&v[36..52])
            && is_hex(&v[53..55])
    });
    match parsed {
        Some(v) => {
            for (o, i) in out[3..35].iter_mut().zip(&v[3..35]) {
                *o = i.to_ascii_lowercase();
            }
            out[53] = v[53].to_ascii_lowercase();
            out[54] = v[54].to_ascii_lowercase();
        }
        None => {
            let trace = rand::random::<u128>().max(1);
            for (i, o) in out[3..35].iter_mut().enumerate() {
                *o = HEX[((trace >> (4 * (31 - i))) & 0xf) as usize];
            }
        }
    }
    for (i, o) in out[36..52].iter_mut().enumerate() {
        *o = HEX[((span >> (4 * (15 - i))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| {
        HeaderValue::from_static("00-00000000000000000000000000000001-0000000000000001-01")
    })
}

/// A uuid as a header value, formatted without an intermediate `String`.
fn uuid_header(id: uuid::Uuid) -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&kit::http::X_REQUEST_ID)
        .filter(|v| v.to_str().is_ok_and(kit::http::is_valid_request_id))
        .cloned()
        .unwrap_or_else(|| uuid_header(uuid::Uuid::now_v7()))
}

/// Paths that could reach what a service keeps internal: dot segments and encoded
/// separators are refused outright rather than normalised differently than a service would.
fn suspicious_path(path: &str) -> bool {
    path.split('/').any(|seg| seg == "." || seg == "..") || {
        let lower = path.as_bytes();
        lower.windows(3).any(|w| {
            w[0] == b'%'
                && matches!(
                    (w[1].to_ascii_lowercase(), w[2].to_ascii_lowercase()),
                    (b'2', b'e') | (b'2', b'f') | (b'5', b'c')
                )
        })
    }
}

/// Whether any segment of `path` is `metrics`, however it is spelled (`%6detrics`,
/// `METRICS`, with empty segments or a trailing slash around it). No public route has
/// such a segment (path parameters are ids), so refusing them all is simpler and safer
/// than predicting how each service normalises a path.
fn names_metrics(path: &str) -> bool {
    path.split('/').any(|seg| {
        seg.len() >= "metrics".len()
            && if seg.contains('%') {
                percent_decode(seg).eq_ignore_ascii_case("metrics")
            } else {
                seg.eq_ignore_ascii_case("metrics")
            }
    })
}

/// Service endpoints that stay inside: the upstream path after rewriting.
fn hidden_upstream_path(path: &str) -> bool {
    matches!(path, "/metrics" | "/healthz" | "/readyz" | "/openapi.json")
        || path == "/internal"
        || path.starts_with("/internal/")
        || path.contains("/internal/")
        || path.ends_with("/internal")
}

fn ratelimit_headers(headers: &mut HeaderMap, d: &Decision) {
    headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(d.limit));
    headers.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(d.remaining));
    headers.insert(
        RATELIMIT_RESET.clone(),
        HeaderValue::from(d.reset_ms.div_ceil(1000)),
    );
}

fn problem(status: StatusCode, code: &'static str, detail: &str) -> Response {
    ApiError::new(status, code, detail).into_response()
}

/// Everything a request needs besides the request itself.
struct Ctx {
    peer: SocketAddr,
    peer_trusted: bool,
    request_id: HeaderValue,
}

/// The one handler: own endpoints, proxied routes, the static web client.
pub async fn handle(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
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
    headers.insert(kit::http::X_REQUEST_ID.clone(), ctx.request_id);
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
    headers
        .entry(REFERRER_POLICY.clone())
        .or_insert_with(|| NO_REFERRER.clone());
    if no_store {
        headers.insert(header::CACHE_CONTROL, NO_STORE.clone());
    } else if authenticated {
        // Unless the service chose its own (e.g. `private` on a file download).
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert_with(|| NO_STORE.clone());
    }
    gw.cors.decorate(origin.as_ref(), headers);
    res
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// Whether a request carries a body (hyper knows: Content-Length or chunked framing).
fn has_body(body: &Body) -> bool {
    http_body::Body::size_hint(body).exact() != Some(0)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim();
            m.eq_ignore_ascii_case("application/json")
                || (m.len() > 5
                    && m[..12.min(m.len())].eq_ignore_ascii_case("application/")
                    && m[m.len() - 5..].eq_ignore_ascii_case("+json"))
        })
        .unwrap_or(false)
}

/// The access token of a request: `Authorization: Bearer`, or on WebSocket routes the
/// `access_token` query parameter (browsers cannot set headers there).
fn access_token(req: &http::request::Parts, websocket: bool) -> Option<std::borrow::Cow<'_, str>> {
    if let Some(t) = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(token::extract::bearer)
    {
        return Some(t.into());
    }
    if websocket {
        return query_param(req.uri.query()?, "access_token").map(Into::into);
    }
    None
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query without `access_token` (it travels upstream as a header instead).
pub(crate) fn query_without_token(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("access_token="))
        .collect::<Vec<_>>()
        .join("&")
}

fn client_ip(gw: &Gateway, ctx: &Ctx, headers: &HeaderMap) -> IpAddr {
    if !ctx.peer_trusted {
        return ctx.peer.ip();
    }
    let xff = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok());
    gw.trusted.client_ip(ctx.peer.ip(), xff)
}

/// What the edge checks let through.
struct Admission {
    upstream_path: String,
    websocket: bool,
    identity: Option<Identity>,
    /// The token of a WebSocket handshake, which travels upstream as a header.
    token_for_upstream: Option<String>,
    decision: Decision,
}

/// The edge checks, in order; `Err` is the answer when a check fails.
async fn admit(
    gw: &Gateway,
    route: &Route,
    ctx: &Ctx,
    req: &http::request::Parts,
    body_expected: bool,
) -> Result<Admission, Response> {
    let path = req.uri.path();
    if suspicious_path(path) {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "dot segments and encoded separators are not allowed in paths",
        ));
    }
    let upstream_path = route.upstream_path(path).into_owned();
    if hidden_upstream_path(&upstream_path) {
        return Err(ApiError::not_found("no such route").into_response());
    }
    if !route.allows(&req.method) {
        let mut res = problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        );
        res.headers_mut().insert(header::ALLOW, route.allow.clone());
        return Err(res);
    }
    let websocket = route.websocket && is_upgrade(&req.headers);
    if body_expected {
        let declared = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > route.body_limit) {
            return Err(payload_too_large(route));
        }
        if route.json
            && matches!(req.method, Method::POST | Method::PUT | Method::PATCH)
            && !is_json(&req.headers)
        {
            return Err(problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ));
        }
    }

    let mut identity: Option<Identity> = None;
    let mut token_for_upstream: Option<String> = None;
    if route.auth == AuthPolicy::Token {
        let Some(token) = access_token(req, websocket) else {
            return Err(token::extract::rejection(TokenError::Missing).into_response());
        };
        let verified = gw.auth.verify(&token).await;
        if websocket && verified.is_ok() {
            token_for_upstream = Some(token.into_owned());
        }
        match verified {
            Ok(id) => identity = Some(id),
            Err(e) => {
                // Bad tokens still count against the caller's address.
                let key = ClientKey::Ip(client_ip(gw, ctx, &req.headers));
                let d = gw.limiter.check(route.rate_limit, key).await;
                if !d.allowed {
                    route.ratelimited.increment(1);
                    return Err(rate_limited(&d));
                }
                return Err(token::extract::rejection(e).into_response());
            }
        }
    }

    let key = match identity {
        Some(id) => ClientKey::User(id.user_id),
        None => ClientKey::Ip(client_ip(gw, ctx, &req.headers)),
    };
    let decision = gw.limiter.check(route.rate_limit, key).await;
    if !decision.allowed {
        route.ratelimited.increment(1);
        return Err(rate_limited(&decision));
    }

    Ok(Admission {
        upstream_path,
        websocket,
        identity,
        token_for_upstream,
        decision,
    })
}

static CLOSE: HeaderValue = HeaderValue::from_static("close");

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
        ws::proxy(
            gw,
            route,
            ctx.peer,
            req,
            &upstream_path,
            token_for_upstream,
            identity,
            &ctx.request_id,
            ctx.peer_trusted,
        )
        .await
    } else {
        forward(gw, route, ctx, req, &upstream_path, identity).await
    };
    ratelimit_headers(res.headers_mut(), &decision);
    res
}

fn payload_too_large(route: &Route) -> Response {
    problem(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &format!("request bodies are limited to {} bytes", route.body_limit),
    )
}

fn rate_limited(d: &Decision) -> Response {
    let mut res = ApiError::rate_limited(d.retry_after_ms(), d.limit).into_response();
    res.headers_mut().insert(
        RATELIMIT_RESET.clone(),
        HeaderValue::from(d.reset_ms.div_ceil(1000).max(1)),
    );
    res
}

/// Rewrites the client's headers for the upstream, in place.
pub(crate) fn upstream_headers(
    headers: &mut HeaderMap,
    route: &Route,
    peer: SocketAddr,
    peer_trusted: bool,
    request_id: &HeaderValue,
    identity: Option<Identity>,
) {
    strip_hop_by_hop(headers);
    strip_untrusted(headers, peer_trusted);
    let peer_ip = peer.ip().to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if peer_trusted => format!("{prior}, {peer_ip}"),
        _ => peer_ip,
    };
    if let Ok(v) = HeaderValue::try_from(xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = headers.get(header::HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    headers.remove(&FORWARDED);
    // The client will set Host to the instance's authority.
    headers.remove(header::HOST);
    headers.insert(kit::http::X_REQUEST_ID.clone(), request_id.clone());
    let tp = traceparent(headers.get(&kit::http::TRACEPARENT));
    headers.insert(kit::http::TRACEPARENT.clone(), tp);
    if let Some(id) = identity {
        // A hint only: services verify the token themselves.
        headers.insert(X_USER_ID.clone(), uuid_header(id.user_id));
    }
    for name in &route.request_remove {
        headers.remove(name);
    }
    for (name, value) in &route.request_add {
        headers.insert(name.clone(), value.clone());
    }
}

/// The answer when no upstream response could be had. Every fault is a 503 with
/// `Retry-After` (never 502/504): the client may send the same request again, and a
/// send that carries a `client_msg_id` is stored at most once however often it is sent.
pub(crate) fn failure_response(route: &Route, e: SendError) -> Response {
    match e {
        SendError::Overloaded => ApiError::unavailable(
            "upstream_overloaded",
            "the service is at capacity; retry shortly",
        )
        .into_response(),
        SendError::Unavailable => ApiError::unavailable(
            "upstream_unavailable",
            "the service is unavailable; retry shortly",
        )
        .into_response(),
        SendError::Timeout => ApiError::unavailable(
            "upstream_timeout",
            "the service did not answer in time; retry shortly",
        )
        .into_response(),
        SendError::TooLarge => {
            let mut res = payload_too_large(route);
            res.headers_mut().insert(header::CONNECTION, CLOSE.clone());
            res
        }
        SendError::BadUri => ApiError::internal("cannot build the upstream URI").into_response(),
    }
}

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
    upstream_headers(
        &mut parts.headers,
        route,
        ctx.peer,
        ctx.peer_trusted,
        &ctx.request_id,
        identity,
    );
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
    match upstream::send(gw.clients.get(), &route.cluster, outgoing).await {
        Ok((res, in_flight)) => {
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(GuardedBody::new(body, in_flight)))
        }
        Err(e) => failure_response(route, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("x"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn traceparent_keeps_the_trace_and_makes_a_new_span() {
        let incoming =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let out = traceparent(Some(&incoming));
        let s = out.to_str().unwrap();
        assert!(s.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(!s.contains("00f067aa0ba902b7"));
        assert!(s.ends_with("-01"));
        let fresh = traceparent(Some(&HeaderValue::from_static("garbage")));
        assert_eq!(fresh.to_str().unwrap().len(), 55);
        let shape = |v: &str| {
            let p: Vec<&str> = v.split('-').collect();
            p.len() == 4
                && p[0] == "00"
                && p[1].len() == 32
                && p[2].len() == 16
                && p[3].len() == 2
                && v.bytes()
                    .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        assert!(shape(fresh.to_str().unwrap()), "{fresh:?}");
        // Upper case is normalised; a future version's extra fields are tolerated.
        let upper = HeaderValue::from_static(
            "01-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01-extra",
        );
        let s = traceparent(Some(&upper));
        assert!(
            s.to_str()
                .unwrap()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        // Invalid ones start a new trace: all-zero trace id, version ff, bad parent id.
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bx-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            let out = traceparent(Some(&HeaderValue::from_static(bad)));
            let out = out.to_str().unwrap();
            assert!(shape(out), "{out}");
            assert!(
                !out.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
                "{bad} kept"
            );
        }
    }

    #[test]
    fn uuid_headers_are_hyphenated_lower_case() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(uuid_header(id).to_str().unwrap(), id.to_string());
        let rid = request_id(&HeaderMap::new());
        assert!(uuid::Uuid::parse_str(rid.to_str().unwrap()).is_ok());
    }

    #[test]
    fn paths_that_could_escape_a_route_are_refused() {
        assert!(suspicious_path("/users/../internal/x"));
        assert!(suspicious_path("/users/%2e%2e/metrics"));
        assert!(suspicious_path("/users/a%2Fb"));
        assert!(!suspicious_path("/users/me"));
        assert!(hidden_upstream_path("/internal/relationships/a/b"));
        assert!(hidden_upstream_path("/users/internal/x"));
        assert!(hidden_upstream_path("/metrics"));
        assert!(!hidden_upstream_path("/users/me"));
        for p in [
            "/metrics",
            "//metrics",
            "/metrics/",
            "/%6detrics",
            "/%6D%65trics",
            "/METRICS",
            "/chat/metrics",
            "/chat/../metrics",
        ] {
            assert!(names_metrics(p), "{p}");
        }
        assert!(!names_metrics("/users/me"));
        assert!(!names_metrics("/chat/rooms/metricsroom"));
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        for (ct, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_json(&h), ok, "{ct}");
        }
    }

    #[test]
    fn access_token_query_param_is_decoded_and_removed() {
        assert_eq!(
            query_param("a=1&access_token=x%2By", "access_token").as_deref(),
            Some("x+y")
        );
        assert_eq!(query_without_token("access_token=abc&x=1"), "x=1");
    }
}
