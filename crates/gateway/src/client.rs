//! Upstream HTTP clients: one connection pool per proxying thread, and the URI of a
//! request to an instance.

use std::time::Duration;

use http::Uri;
use http::uri::{Authority, Scheme};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body::ProxyBody;
use crate::config::Config;

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

/// `scheme://authority/path[?query]`: where a request to an instance goes.
pub fn uri(scheme: &Scheme, authority: &Authority, path: &str, query: Option<&str>) -> Option<Uri> {
    let pq = match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    };
    Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query(pq)
        .build()
        .ok()
}
