//! Upstream HTTP clients: the proxied requests' keep-alive connections (one pool per
//! proxying thread, on hyper's `client::conn::http1`), hyper-util's pooled client for the
//! gateway's own calls (health probes, OpenAPI documents), and the URIs of a request to
//! an instance.
//!
//! Why not hyper-util's pooled client on the request path: per request it clones the
//! URI and the pool key (scheme + authority) several times, hashes the key under the
//! pool's mutex twice (checkout and return), builds a lazy connect future it races
//! against the checkout, formats the `Host` header, rewrites the absolute URI into
//! origin form, boxes the whole request future, and spawns a task per response to put
//! the connection back once the body is read. In the production-topology profile
//! (docs/gateway-perf-notes.md) that was 6.4 % of the gateway's CPU per request; this
//! pool is a per-thread stack of ready senders per instance, the connection returned by
//! the response body's guard when the body is done.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Uri;
use http::uri::{Authority, Scheme};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::body::ProxyBody;
use crate::config::Config;

pub type HttpClient = Client<HttpConnector, ProxyBody>;

/// How long an idle upstream connection is kept (hyper-util's pool used the same).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// TCP keepalive probes on upstream connections after this much silence.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A process-wide number per upstream instance: its slot in every thread's pool.
static NEXT_INSTANCE_ID: AtomicUsize = AtomicUsize::new(0);

pub fn next_instance_id() -> usize {
    NEXT_INSTANCE_ID.fetch_add(1, Ordering::Relaxed)
}

/// An idle connection: its sender and since when it is idle.
struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

/// One thread's idle connections, by instance id; most recently used last.
#[derive(Default)]
struct Slots(Vec<VecDeque<Idle>>);

type Pools = Arc<thread_local::ThreadLocal<RefCell<Slots>>>;

/// The proxied requests' connections, one pool per thread that proxies: a connection is
/// driven by a task on the thread that opened it, so sharing one pool between threads
/// would hand every request across threads twice.
pub struct Clients {
    connect_timeout: Duration,
    pool_max_idle_per_host: usize,
    pools: Pools,
}

/// Why a request got no response from the instance.
#[derive(Debug)]
pub enum ClientError {
    /// No connection could be made (refused, unreachable, connect timeout): nothing
    /// was sent.
    Connect(std::io::Error),
    /// The connection failed while sending the request or before response headers.
    Request(hyper::Error),
}

impl ClientError {
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Connect(_))
    }

    /// The error itself, for `is_body_too_large` and logs.
    pub fn source_error(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            ClientError::Connect(e) => e,
            ClientError::Request(e) => e,
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::Request(e) => write!(f, "{e}"),
        }
    }
}

/// A connection in use by one exchange; back to its thread's pool when dropped (with
/// the response body, once it is read: hyper then has the connection idle again).
pub struct Lease {
    sender: Option<SendRequest<ProxyBody>>,
    instance: usize,
    max_idle: usize,
    pools: Pools,
}

impl Lease {
    /// The connection was taken over (a WebSocket upgrade): never back to the pool.
    pub fn detach(&mut self) {
        self.sender = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(sender) = self.sender.take() else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        let pool = self.pools.get_or(Default::default);
        let Ok(mut slots) = pool.try_borrow_mut() else {
            return;
        };
        if slots.0.len() <= self.instance {
            slots.0.resize_with(self.instance + 1, VecDeque::new);
        }
        let list = &mut slots.0[self.instance];
        // The oldest go first: expired, or past the per-instance bound.
        while list
            .front()
            .is_some_and(|i| i.since.elapsed() > POOL_IDLE_TIMEOUT || i.sender.is_closed())
        {
            list.pop_front();
        }
        if list.len() >= self.max_idle {
            list.pop_front();
        }
        if self.max_idle > 0 {
            list.push_back(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

impl Clients {
    pub fn new(config: &Config) -> Self {
        Self {
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            pool_max_idle_per_host: config.pool_max_idle_per_host,
            pools: Arc::new(thread_local::ThreadLocal::new()),
        }
    }

    /// An idle connection to `instance` that is ready for a request, if this thread has one.
    async fn checkout(&self, instance: usize) -> Option<SendRequest<ProxyBody>> {
        loop {
            let idle = {
                let pool = self.pools.get_or(Default::default);
                let mut slots = pool.try_borrow_mut().ok()?;
                slots.0.get_mut(instance)?.pop_back()?
            };
            if idle.since.elapsed() > POOL_IDLE_TIMEOUT || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            if sender.is_ready() {
                return Some(sender);
            }
            // Its last response was read but the connection task has not run since:
            // one turn of the event loop.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<ProxyBody>, ClientError> {
        // `[::1]` → `::1`: the socket address wants the bare IPv6 address.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let connect = tokio::net::TcpStream::connect((host, port));
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ClientError::Connect(e)),
            Err(_) => {
                return Err(ClientError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ClientError::Request)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// Sends `req` (origin-form URI, `Host` set) to the instance `instance_id` at
    /// `authority` on a pooled connection, or a new one. A request a reused connection
    /// refused unsent (closed by the upstream meanwhile) goes again on a new one, as
    /// hyper-util's client did.
    pub async fn send(
        &self,
        instance_id: usize,
        authority: &Authority,
        mut req: http::Request<ProxyBody>,
    ) -> Result<(http::Response<Incoming>, Lease), ClientError> {
        loop {
            let (mut sender, reused) = match self.checkout(instance_id).await {
                Some(s) => (s, true),
                None => (self.connect(authority).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(res) => {
                    let lease = Lease {
                        sender: Some(sender),
                        instance: instance_id,
                        max_idle: self.pool_max_idle_per_host,
                        pools: self.pools.clone(),
                    };
                    return Ok((res, lease));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(ClientError::Request(e.into_error())),
                },
            }
        }
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

/// `path[?query]`, the origin form a request to an instance is sent with.
pub fn origin_uri(path: &str, query: Option<&str>) -> Option<Uri> {
    match query {
        Some(q) if !q.is_empty() => Uri::try_from(format!("{path}?{q}")).ok(),
        _ => Uri::try_from(path).ok(),
    }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use http_body_util::BodyExt;

    use super::*;

    /// A keep-alive HTTP/1.1 server that counts the connections it accepted and drops
    /// them all when told.
    async fn counting_server() -> (
        std::net::SocketAddr,
        Arc<AtomicUsize>,
        tokio::sync::broadcast::Sender<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (close, _) = tokio::sync::broadcast::channel::<()>(4);
        let (count, closer) = (accepted.clone(), close.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut closed = closer.subscribe();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                            let host = req
                                .headers()
                                .get(http::header::HOST)
                                .cloned()
                                .unwrap_or(http::HeaderValue::from_static("none"));
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::copy_from_slice(
                                    host.as_bytes(),
                                )),
                            ))
                        });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = closed.recv() => {}
                    }
                });
            }
        });
        (addr, accepted, close)
    }

    fn get(host: &'static str) -> http::Request<ProxyBody> {
        http::Request::get("/users/me")
            .header(http::header::HOST, host)
            .body(ProxyBody::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn connections_are_reused_and_closed_ones_replaced() {
        let (addr, accepted, close) = counting_server().await;
        let clients = Clients::new(&Config::default());
        let authority: Authority = addr.to_string().parse().unwrap();
        let id = next_instance_id();
        for _ in 0..3 {
            let (res, lease) = clients.send(id, &authority, get("users")).await.unwrap();
            assert_eq!(res.status(), http::StatusCode::OK);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"users");
            // The body is read: the connection goes back to the pool.
            drop(lease);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one keep-alive connection"
        );

        // The upstream closes its idle connections: the next request opens a new one.
        close.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (res, held) = clients.send(id, &authority, get("users")).await.unwrap();
        assert_eq!(res.status(), http::StatusCode::OK);
        let _ = res.into_body().collect().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        // While that connection is leased, a request opens a third one; detached (as
        // after a WebSocket upgrade) it never returns to the pool, and the next request
        // goes on the second once that is returned.
        let (res, mut detached) = clients.send(id, &authority, get("users")).await.unwrap();
        let _ = res.into_body().collect().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        detached.detach();
        drop(detached);
        drop(held);
        let (res, _held) = clients.send(id, &authority, get("users")).await.unwrap();
        assert_eq!(res.status(), http::StatusCode::OK);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);

        // Nobody listening: a connect error, which passive health counts as unreachable.
        drop(close);
        let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone: Authority = unused.local_addr().unwrap().to_string().parse().unwrap();
        drop(unused);
        let err = clients
            .send(next_instance_id(), &gone, get("users"))
            .await
            .err()
            .unwrap();
        assert!(err.is_connect(), "{err}");
    }
}
