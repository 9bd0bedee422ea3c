//! What the request path reads: the [`Gateway`] (routes, clusters, clients, edge
//! services; built once in `lib.rs`), each [`Route`] compiled from its configuration,
//! and the per-request [`Ctx`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode};

use crate::assets::Assets;
use crate::client::Clients;
use crate::config::{AuthPolicy, RouteConfig};
use crate::cors::Cors;
use crate::edge_auth::EdgeAuth;
use crate::openapi::MergedSpec;
use crate::ratelimit::RateLimiter;
use crate::upstream::Cluster;
use crate::ws::WsHub;

pub struct Route {
    pub prefix: String,
    pub cluster: Arc<Cluster>,
    pub websocket: bool,
    rewrite: Option<String>,
    pub(crate) auth: AuthPolicy,
    pub(crate) rate_limit: u16,
    pub(crate) timeout: Duration,
    pub(crate) body_limit: u64,
    methods: Option<Vec<Method>>,
    pub(crate) allow: HeaderValue,
    pub(crate) json: bool,
    pub(crate) request_add: Vec<(HeaderName, HeaderValue)>,
    pub(crate) request_remove: Vec<HeaderName>,
    pub(crate) response_add: Vec<(HeaderName, HeaderValue)>,
    pub(crate) response_remove: Vec<HeaderName>,
    pub(crate) no_store: bool,
    pub(crate) ratelimited: metrics::Counter,
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
            timeout: Duration::from_millis(cfg.timeout_ms),
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

    pub(crate) fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || self.prefix.ends_with('/') || rest.starts_with('/'),
            None => false,
        }
    }

    pub(crate) fn allows(&self, method: &Method) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|m| m.contains(method) || method == Method::OPTIONS)
    }

    /// The path the upstream sees.
    pub(crate) fn upstream_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
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

    pub(crate) fn count(&self, status: StatusCode, started: Instant) {
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
    pub cors: Cors,
    pub ws: WsHub,
    pub assets: Assets,
    pub openapi: Arc<MergedSpec>,
}

impl Gateway {
    pub(crate) fn route(&self, path: &str) -> Option<&Route> {
        // Routes are sorted longest prefix first.
        self.routes.iter().find(|r| r.matches(path))
    }
}

/// Everything a request needs besides the request itself.
pub struct Ctx {
    pub peer: SocketAddr,
    pub peer_trusted: bool,
    pub request_id: HeaderValue,
}
