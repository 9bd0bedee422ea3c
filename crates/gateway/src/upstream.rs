//! Upstream clusters: instances, load balancing (round robin or power of two choices on
//! outstanding requests), and health — active (`GET /readyz`) and passive (consecutive
//! connect errors or 5xx eject an instance with exponential backoff; the first request
//! after the backoff is the half-open probe of the circuit breaker).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use metrics::Counter;

use crate::config::{Config, LoadBalancing};

pub struct Instance {
    /// The configured base URL, used as the `instance` metric label.
    pub url: String,
    pub scheme: Scheme,
    pub authority: Authority,
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

    pub fn count_status(&self, status: Option<u16>) {
        let idx = match status {
            Some(s) => ((s / 100).clamp(1, 5) - 1) as usize,
            None => 5,
        };
        self.status_counters[idx].increment(1);
    }
}

/// Counts a request in flight on an instance until dropped (with the response body).
pub struct InFlight(Arc<Instance>);

impl InFlight {
    pub fn new(instance: Arc<Instance>) -> Self {
        instance.outstanding.fetch_add(1, Ordering::Relaxed);
        Self(instance)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
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
    pub(crate) duration: metrics::Histogram,
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
            eject_after: config.eject_after_failures.max(1),
            eject_base_ms: config.eject_base_ms,
            eject_max_ms: config.eject_max_ms.max(config.eject_base_ms),
            max_outstanding: config.max_outstanding_per_instance.max(1),
            duration: metrics::histogram!("gateway_upstream_duration_seconds", "upstream" => name.to_owned()),
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

    pub fn has_healthy(&self) -> bool {
        let now = self.now_ms();
        self.instances.iter().any(|i| self.available(i, now))
    }
}

/// Polls `GET <instance>/readyz` of every instance until `shutdown`.
pub async fn health_check_loop(
    clusters: Vec<Arc<Cluster>>,
    client: crate::proxy::HttpClient,
    interval: Duration,
    timeout: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let checks = clusters.iter().flat_map(|c| {
            c.instances.iter().map(|i| {
                let client = client.clone();
                let cluster = c.clone();
                let instance = i.clone();
                async move {
                    let ok = probe(&client, &instance, timeout).await;
                    let was = instance.healthy.swap(ok, Ordering::Relaxed);
                    if was != ok {
                        if ok {
                            tracing::info!(upstream = %cluster.name, instance = %instance.url, "upstream instance healthy");
                        } else {
                            tracing::warn!(upstream = %cluster.name, instance = %instance.url, "upstream instance failed its health check");
                        }
                    }
                }
            })
        });
        futures::future::join_all(checks).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn probe(client: &crate::proxy::HttpClient, instance: &Instance, timeout: Duration) -> bool {
    let Ok(uri) = http::Uri::builder()
        .scheme(instance.scheme.clone())
        .authority(instance.authority.clone())
        .path_and_query("/readyz")
        .build()
    else {
        return false;
    };
    let Ok(req) = http::Request::get(uri).body(crate::proxy::ProxyBody::empty()) else {
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
        assert!(c.has_healthy());
        c.record_failure(&bad);
        for _ in 0..5 {
            assert_eq!(c.pick(&[]).unwrap().0, 1);
        }
        // A success elsewhere does not readmit it; with every instance out, one is still tried.
        let other = c.instances[1].clone();
        for _ in 0..3 {
            c.record_failure(&other);
        }
        assert!(!c.has_healthy());
        assert!(c.pick(&[]).is_some());
    }
}
