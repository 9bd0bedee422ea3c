//! Upstream clusters: instances, load balancing (round robin or power of two choices on
//! outstanding requests), health, and [`send`], the one way a request (HTTP or a
//! WebSocket handshake) reaches an instance.
//!
//! Health is active (`GET /readyz`) and passive. A refused connection marks the instance
//! down at once; the active probe checks instances that are down every 250 ms and
//! readmits one (clearing any ejection) as soon as it answers again. Consecutive 5xx
//! (other than 503) eject an instance with exponential backoff even while its probe
//! passes; the first request after the backoff is the half-open probe of the circuit
//! breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{Method, Uri};
use hyper::body::Incoming;
use metrics::{Counter, Gauge};

use crate::body::{ProxyBody, Replayable, is_body_too_large};
use crate::client::{self, Clients, HttpClient, Lease};
use crate::config::{Config, LoadBalancing};

pub struct Instance {
    /// The configured base URL, used as the `instance` metric label.
    pub url: String,
    pub scheme: Scheme,
    pub authority: Authority,
    /// Its slot in the proxying threads' connection pools (`client::Clients`).
    pub(crate) id: usize,
    /// The `Host` requests to it carry: the authority, without a default port.
    host: http::HeaderValue,
    healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    /// Milliseconds since the cluster's epoch until which the instance is ejected.
    ejected_until: AtomicU64,
    outstanding: AtomicUsize,
    pub(crate) ejected_total: Counter,
    /// Responses by status class (1xx..5xx), and `error` for no response at all.
    status_counters: [Counter; 6],
}

impl Instance {
    fn parse(cluster: &str, url: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = url
            .trim_end_matches('/')
            .parse()
            .map_err(|e| anyhow::anyhow!("upstream {cluster}: {url:?} is not a URL: {e}"))?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        if scheme != Scheme::HTTP {
            anyhow::bail!("upstream {cluster}: {url:?}: only http:// instances are supported");
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("upstream {cluster}: {url:?} has no host"))?;
        let label = url.trim_end_matches('/').to_owned();
        let host = match authority.port_u16() {
            Some(80) | None => http::HeaderValue::from_str(authority.host()),
            Some(port) => http::HeaderValue::try_from(format!("{}:{port}", authority.host())),
        }
        .map_err(|e| anyhow::anyhow!("upstream {cluster}: {url:?}: {e}"))?;
        let status = |s: &'static str| metrics::counter!("gateway_upstream_requests_total", "upstream" => cluster.to_owned(), "instance" => label.clone(), "status" => s);
        Ok(Self {
            status_counters: [
                status("1xx"),
                status("2xx"),
                status("3xx"),
                status("4xx"),
                status("5xx"),
                status("error"),
            ],
            ejected_total: metrics::counter!("gateway_upstream_ejections_total", "upstream" => cluster.to_owned(), "instance" => label.clone()),
            url: label,
            scheme,
            authority,
            id: client::next_instance_id(),
            host,
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            outstanding: AtomicUsize::new(0),
        })
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// The URI of `path` (and `query`) on this instance.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Option<Uri> {
        client::uri(&self.scheme, &self.authority, path, query)
    }

    pub fn count_status(&self, status: Option<u16>) {
        let idx = match status {
            Some(s) => ((s / 100).clamp(1, 5) - 1) as usize,
            None => 5,
        };
        self.status_counters[idx].increment(1);
    }
}

/// Counts a request in flight on an instance until dropped (with the response body),
/// and holds the connection it went on, which goes back to the pool then.
pub struct InFlight {
    instance: Arc<Instance>,
    lease: Option<Lease>,
}

impl InFlight {
    pub fn new(instance: Arc<Instance>) -> Self {
        instance.outstanding.fetch_add(1, Ordering::Relaxed);
        Self {
            instance,
            lease: None,
        }
    }

    /// The connection was upgraded (WebSocket): it never goes back to the pool.
    pub fn detach_connection(&mut self) {
        if let Some(lease) = &mut self.lease {
            lease.detach();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.instance.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Cluster {
    pub name: String,
    pub instances: Vec<Arc<Instance>>,
    next: AtomicUsize,
    policy: LoadBalancing,
    epoch: Instant,
    eject_after: u32,
    eject_base_ms: u64,
    eject_max_ms: u64,
    max_outstanding: usize,
    /// How many other instances a request may be retried on.
    max_retries: u32,
    retries: Counter,
    pub(crate) duration: metrics::Histogram,
    /// Instances that are up and not ejected, as of the last health check.
    available_gauge: Gauge,
}

impl Cluster {
    pub fn new(name: &str, urls: &[String], config: &Config) -> anyhow::Result<Self> {
        let instances = urls
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .map(|u| Instance::parse(name, u).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            name: name.to_owned(),
            instances,
            next: AtomicUsize::new(0),
            policy: config.load_balancing,
            epoch: Instant::now(),
            // Minimums checked by `Config::validate` at load.
            eject_after: config.eject_after_failures,
            eject_base_ms: config.eject_base_ms,
            eject_max_ms: config.eject_max_ms,
            max_outstanding: config.max_outstanding_per_instance,
            max_retries: config.max_retries,
            retries: metrics::counter!("gateway_upstream_retries_total"),
            duration: metrics::histogram!("gateway_upstream_duration_seconds", "upstream" => name.to_owned()),
            available_gauge: metrics::gauge!("gateway_upstream_available_instances", "upstream" => name.to_owned()),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn available(&self, i: &Instance, now: u64) -> bool {
        i.is_healthy()
            && i.ejected_until.load(Ordering::Relaxed) <= now
            && i.outstanding() < self.max_outstanding
    }

    /// Chooses an instance not in `tried`. When every instance is down or ejected it
    /// still picks one (panic mode): trying beats refusing without trying. Instances at
    /// their in-flight limit (open circuit) are never picked.
    pub fn pick(&self, tried: &[usize]) -> Option<(usize, Arc<Instance>)> {
        let n = self.instances.len();
        if tried.len() >= n {
            return None;
        }
        let now = self.now_ms();
        let candidates = |healthy_only: bool| {
            (0..n).filter(move |i| {
                let inst = &self.instances[*i];
                !tried.contains(i)
                    && if healthy_only {
                        self.available(inst, now)
                    } else {
                        inst.outstanding() < self.max_outstanding
                    }
            })
        };
        let chosen = self
            .choose(candidates(true).count(), |k| candidates(true).nth(k))
            .or_else(|| self.choose(candidates(false).count(), |k| candidates(false).nth(k)))?;
        Some((chosen, self.instances[chosen].clone()))
    }

    fn choose(&self, count: usize, nth: impl Fn(usize) -> Option<usize>) -> Option<usize> {
        match count {
            0 => None,
            1 => nth(0),
            _ => {
                let ticket = self.next.fetch_add(1, Ordering::Relaxed);
                match self.policy {
                    LoadBalancing::RoundRobin => nth(ticket % count),
                    LoadBalancing::P2c => {
                        let a = ticket % count;
                        let b = (a + 1 + rand::random_range(0..count - 1)) % count;
                        let (a, b) = (nth(a)?, nth(b)?);
                        let load = |i: usize| self.instances[i].outstanding();
                        Some(if load(b) < load(a) { b } else { a })
                    }
                }
            }
        }
    }

    /// A request reached the instance and got a non-5xx answer.
    pub fn record_success(&self, i: &Instance) {
        if i.consecutive_failures.load(Ordering::Relaxed) != 0 {
            i.consecutive_failures.store(0, Ordering::Relaxed);
            i.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A connect error or a 5xx: enough in a row eject the instance.
    pub fn record_failure(&self, i: &Instance) {
        let failures = i.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < self.eject_after {
            return;
        }
        let now = self.now_ms();
        if i.ejected_until.load(Ordering::Relaxed) > now {
            return;
        }
        let n = i.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let backoff = self
            .eject_base_ms
            .saturating_mul(1 << n)
            .min(self.eject_max_ms);
        i.ejected_until.store(now + backoff, Ordering::Relaxed);
        i.ejected_total.increment(1);
        tracing::warn!(upstream = %self.name, instance = %i.url, failures, backoff_ms = backoff, "upstream instance ejected");
    }

    /// The connection was refused or could not be made: the instance is down until its
    /// active probe succeeds again (which readmits it at once, see [`Cluster::readmit`]).
    pub fn record_unreachable(&self, i: &Instance) {
        if i.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(upstream = %self.name, instance = %i.url, "upstream instance unreachable");
        }
        self.record_failure(i);
    }

    /// The active probe found a down instance answering again: whatever ejection it was
    /// serving ends now, so a recovered instance takes traffic within one probe
    /// interval instead of after its back-off (up to `eject_max_ms`, 30 s by default).
    fn readmit(&self, i: &Instance) {
        i.consecutive_failures.store(0, Ordering::Relaxed);
        i.ejections.store(0, Ordering::Relaxed);
        i.ejected_until.store(0, Ordering::Relaxed);
        i.healthy.store(true, Ordering::Relaxed);
    }

    /// Instances that would be picked now (up, not ejected, below the in-flight limit).
    pub fn available_count(&self) -> usize {
        let now = self.now_ms();
        self.instances
            .iter()
            .filter(|i| self.available(i, now))
            .count()
    }
}

/// Instances already tried for one request, without a heap allocation in the common
/// case of few attempts.
#[derive(Default)]
pub(crate) struct Tried {
    inline: [usize; 4],
    len: usize,
    spill: Vec<usize>,
}

impl Tried {
    fn push(&mut self, idx: usize) {
        if self.len < self.inline.len() {
            self.inline[self.len] = idx;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline);
            }
            self.spill.push(idx);
        }
        self.len += 1;
    }

    fn as_slice(&self) -> &[usize] {
        if self.len <= self.inline.len() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Why [`send`] got no response. Each becomes a problem+json answer
/// (`reply::failure_response`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Every instance is at its in-flight limit.
    Overloaded,
    /// No instance could be reached, or the connection failed before response headers.
    Unavailable,
    /// No response headers before the deadline.
    Timeout,
    /// The request body went past the route's limit while streaming.
    TooLarge,
    /// The upstream URI could not be built from the path.
    BadUri,
}

/// One request on its way to a cluster.
pub struct Outgoing<'a> {
    /// Method, headers (already rewritten for the upstream) and version; the URI is set
    /// per attempt.
    pub parts: http::request::Parts,
    pub body: Replayable,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Until the response headers arrive, over all attempts.
    pub deadline: tokio::time::Instant,
}

/// Sends `req` to an instance of `cluster`: pick (load balancing, health, in-flight
/// limit) → connect → response headers, with passive health recorded on the way.
///
/// Retry policy: a connection that could not be made sent nothing, so the request goes
/// to another instance whatever its method, provided its body was not read (it is not:
/// hyper reads a body only on an established connection). An idempotent request whose
/// body was not read is also retried after a reset before response headers. At most
/// `max_retries` further instances are tried, and never past the deadline.
pub async fn send(
    clients: &Clients,
    cluster: &Cluster,
    req: Outgoing<'_>,
) -> Result<(http::Response<Incoming>, InFlight), SendError> {
    let Outgoing {
        parts,
        body,
        path,
        query,
        deadline,
    } = req;
    let idempotent = is_idempotent(&parts.method);
    // Only kept when a retry is possible at all: the common single-instance cluster
    // pays no header copy.
    let spare = (cluster.instances.len() > 1 && cluster.max_retries > 0)
        .then(|| (parts.method.clone(), parts.version, parts.headers.clone()));
    let mut next_parts = Some(parts);
    let mut tried = Tried::default();
    loop {
        let Some((idx, instance)) = cluster.pick(tried.as_slice()) else {
            return Err(if tried.is_empty() {
                SendError::Overloaded
            } else {
                SendError::Unavailable
            });
        };
        tried.push(idx);
        let mut parts = match (next_parts.take(), &spare) {
            (Some(p), _) => p,
            (None, Some((method, version, headers))) => {
                let Ok(r) = http::Request::builder()
                    .method(method.clone())
                    .version(*version)
                    .body(())
                else {
                    return Err(SendError::Unavailable);
                };
                let (mut p, ()) = r.into_parts();
                p.headers = headers.clone();
                p
            }
            (None, None) => return Err(SendError::Unavailable),
        };
        let Some(attempt_body) = body.attempt() else {
            return Err(SendError::Unavailable);
        };
        let Some(uri) = client::origin_uri(path, query) else {
            return Err(SendError::BadUri);
        };
        parts.uri = uri;
        // Unless a route set its own (hyper-util's client did the same).
        parts
            .headers
            .entry(http::header::HOST)
            .or_insert_with(|| instance.host.clone());
        let mut in_flight = InFlight::new(instance.clone());
        let sent = Instant::now();
        let result = tokio::time::timeout_at(
            deadline,
            clients.send(
                instance.id,
                &instance.authority,
                http::Request::from_parts(parts, attempt_body),
            ),
        )
        .await;
        cluster.duration.record(sent.elapsed().as_secs_f64());
        match result {
            Ok(Ok((res, lease))) => {
                in_flight.lease = Some(lease);
                let status = res.status();
                instance.count_status(Some(status.as_u16()));
                // A 503 is a live instance declining because one of *its* dependencies is
                // down (e.g. chat's `dependency_unavailable` while users is away): every
                // instance would answer the same, so it neither ejects nor heals this one.
                if status == http::StatusCode::SERVICE_UNAVAILABLE {
                } else if status.is_server_error() {
                    cluster.record_failure(&instance);
                } else {
                    cluster.record_success(&instance);
                }
                return Ok((res, in_flight));
            }
            Ok(Err(e)) => {
                instance.count_status(None);
                if is_body_too_large(e.source_error()) {
                    return Err(SendError::TooLarge);
                }
                let safe = if e.is_connect() {
                    cluster.record_unreachable(&instance);
                    tracing::warn!(upstream = %cluster.name, instance = %instance.url, error = %e, "upstream connect failed");
                    true
                } else {
                    // Not counted against the instance: the client's own body failing
                    // (an aborted upload) ends up here too.
                    tracing::warn!(upstream = %cluster.name, instance = %instance.url, error = %e, "upstream request failed");
                    idempotent
                };
                if safe && body.untouched() && tried.len() as u32 <= cluster.max_retries {
                    cluster.retries.increment(1);
                    continue;
                }
                return Err(SendError::Unavailable);
            }
            Err(_) => {
                instance.count_status(None);
                cluster.record_failure(&instance);
                tracing::warn!(upstream = %cluster.name, instance = %instance.url, "upstream timed out");
                return Err(SendError::Timeout);
            }
        }
    }
}

/// How often instances known to be down are probed: bounds how long a recovered
/// instance waits for traffic.
const DOWN_RECHECK: Duration = Duration::from_millis(250);

/// Polls `GET <instance>/readyz` of every instance every `interval`, and of instances
/// that are down every [`DOWN_RECHECK`], until `shutdown`.
pub async fn health_check_loop(
    clusters: Vec<Arc<Cluster>>,
    client: HttpClient,
    interval: Duration,
    timeout: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let tick = interval.min(DOWN_RECHECK);
    let mut next_full = tokio::time::Instant::now();
    loop {
        let full = tokio::time::Instant::now() >= next_full;
        if full {
            next_full = tokio::time::Instant::now() + interval;
        }
        let checks = clusters.iter().flat_map(|c| {
            c.instances
                .iter()
                .filter(|i| full || !i.is_healthy())
                .map(|i| {
                    let client = client.clone();
                    let cluster = c.clone();
                    let instance = i.clone();
                    async move {
                        let ok = probe(&client, &instance, timeout).await;
                        let was = instance.healthy.swap(ok, Ordering::Relaxed);
                        if was != ok {
                            if ok {
                                cluster.readmit(&instance);
                                tracing::info!(upstream = %cluster.name, instance = %instance.url, "upstream instance healthy");
                            } else {
                                tracing::warn!(upstream = %cluster.name, instance = %instance.url, "upstream instance failed its health check");
                            }
                        }
                    }
                })
        });
        futures::future::join_all(checks).await;
        for c in &clusters {
            c.available_gauge.set(c.available_count() as f64);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

async fn probe(client: &HttpClient, instance: &Instance, timeout: Duration) -> bool {
    let Some(uri) = instance.uri("/readyz", None) else {
        return false;
    };
    let Ok(req) = http::Request::get(uri).body(ProxyBody::empty()) else {
        return false;
    };
    let check = async {
        let res = client.request(req).await.ok()?;
        let ok = res.status().is_success();
        // Read the (tiny) body so the connection goes back to the pool.
        let _ = http_body_util::BodyExt::collect(res.into_body()).await;
        Some(ok)
    };
    matches!(tokio::time::timeout(timeout, check).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(n: usize, policy: LoadBalancing) -> Cluster {
        let urls: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 1000 + i))
            .collect();
        let config = Config {
            load_balancing: policy,
            eject_after_failures: 3,
            eject_base_ms: 60_000,
            ..Config::default()
        };
        Cluster::new("users", &urls, &config).unwrap()
    }

    #[test]
    fn tried_instances_spill_past_the_inline_capacity() {
        let mut t = Tried::default();
        assert!(t.is_empty());
        for i in 0..7 {
            t.push(i * 10);
            assert_eq!(t.len(), i + 1);
            assert_eq!(t.as_slice(), (0..=i).map(|k| k * 10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn round_robin_takes_turns_and_skips_tried_instances() {
        let c = cluster(3, LoadBalancing::RoundRobin);
        let picks: Vec<usize> = (0..6).map(|_| c.pick(&[]).unwrap().0).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        let (second, _) = c.pick(&[0]).unwrap();
        assert_ne!(second, 0);
        assert!(c.pick(&[0, 1, 2]).is_none());
    }

    #[test]
    fn power_of_two_choices_prefers_the_less_loaded() {
        let c = cluster(2, LoadBalancing::P2c);
        let _busy: Vec<InFlight> = (0..5)
            .map(|_| InFlight::new(c.instances[0].clone()))
            .collect();
        for _ in 0..20 {
            assert_eq!(c.pick(&[]).unwrap().0, 1);
        }
    }

    #[test]
    fn consecutive_failures_eject_and_panic_mode_still_picks() {
        let c = cluster(2, LoadBalancing::RoundRobin);
        let bad = c.instances[0].clone();
        c.record_failure(&bad);
        c.record_failure(&bad);
        assert_eq!(c.available_count(), 2);
        c.record_failure(&bad);
        for _ in 0..5 {
            assert_eq!(c.pick(&[]).unwrap().0, 1);
        }
        // A success elsewhere does not readmit it; with every instance out, one is still tried.
        let other = c.instances[1].clone();
        for _ in 0..3 {
            c.record_failure(&other);
        }
        assert_eq!(c.available_count(), 0);
        assert!(c.pick(&[]).is_some());
    }
}
