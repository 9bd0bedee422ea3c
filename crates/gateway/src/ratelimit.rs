//! Rate limiting with GCRA (generic cell rate algorithm): one timestamp per key, the
//! "theoretical arrival time". Keys are per user for authenticated requests and per
//! client IP otherwise, separately for each policy.
//!
//! Backends: in-process (sharded maps) and Redis (one atomic Lua script, so every gateway
//! instance shares the limits). When Redis fails the gateway falls back to the local
//! limiter — logged once per outage and visible in `gateway_ratelimit_redis_fallback` —
//! and probes Redis again about once a second.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::RateLimitPolicy;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Ip(IpAddr),
    User(uuid::Uuid),
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::Ip(ip) => write!(f, "ip:{ip}"),
            ClientKey::User(id) => write!(f, "user:{id}"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Milliseconds until the quota is whole again.
    pub reset_ms: u64,
    /// Milliseconds until a rejected request would be allowed.
    pub retry_after_ms: u64,
}

/// A policy in GCRA terms (nanoseconds).
#[derive(Clone, Debug)]
pub struct Gcra {
    pub name: String,
    pub limit: u32,
    emission_ns: u64,
    tolerance_ns: u64,
}

impl Gcra {
    pub fn new(name: &str, p: &RateLimitPolicy) -> Self {
        let rate = u64::from(p.rate.max(1));
        let emission_ns = (p.period_ms.max(1) * 1_000_000 / rate).max(1);
        let burst = p.burst.max(1);
        Self {
            name: name.to_owned(),
            limit: burst,
            emission_ns,
            tolerance_ns: emission_ns * u64::from(burst),
        }
    }

    /// Applies one request at `now` to the stored arrival time `tat`: the decision and
    /// the new value to store (`None`: leave it).
    fn apply(&self, now: u64, tat: Option<u64>) -> (Decision, Option<u64>) {
        let tat = tat.unwrap_or(now).max(now);
        let new_tat = tat + self.emission_ns;
        let allow_at = new_tat.saturating_sub(self.tolerance_ns);
        if now < allow_at {
            let d = Decision {
                allowed: false,
                limit: self.limit,
                remaining: 0,
                reset_ms: ns_to_ms(tat - now),
                retry_after_ms: ns_to_ms(allow_at - now),
            };
            return (d, None);
        }
        let used = new_tat - now;
        let d = Decision {
            allowed: true,
            limit: self.limit,
            remaining: ((self.tolerance_ns - used) / self.emission_ns) as u32,
            reset_ms: ns_to_ms(used),
            retry_after_ms: 0,
        };
        (d, Some(new_tat))
    }
}

fn ns_to_ms(ns: u64) -> u64 {
    ns.div_ceil(1_000_000)
}

const SHARDS: usize = 64;
/// Entries per shard before expired ones are swept on insert.
const SHARD_SOFT_CAP: usize = 16_384;

/// The in-process backend: arrival times in sharded maps.
pub struct Local {
    epoch: Instant,
    shards: Vec<Mutex<HashMap<(u16, ClientKey), u64>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Local {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }
}

impl Local {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn check(&self, policy_idx: u16, policy: &Gcra, key: ClientKey) -> Decision {
        let now = self.now();
        let k = (policy_idx, key);
        let shard = &self.shards[(self.hasher.hash_one(k) as usize) % SHARDS];
        let Ok(mut map) = shard.lock() else {
            // A poisoned shard must not take the API down: let the request through.
            return Decision {
                allowed: true,
                limit: policy.limit,
                remaining: policy.limit,
                reset_ms: 0,
                retry_after_ms: 0,
            };
        };
        let (decision, store) = policy.apply(now, map.get(&k).copied());
        if let Some(tat) = store {
            if map.len() >= SHARD_SOFT_CAP && !map.contains_key(&k) {
                map.retain(|_, t| *t > now);
            }
            map.insert(k, tat);
        }
        decision
    }

    /// Drops keys whose bucket is full again (they hold no information).
    pub fn sweep(&self) {
        let now = self.now();
        for shard in &self.shards {
            if let Ok(mut map) = shard.lock() {
                map.retain(|_, t| *t > now);
            }
        }
    }
}

const SCRIPT: &str = r#"
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + t
local allow_at = new_tat - tau
if now < allow_at then
  return {0, 0, math.ceil(tat - now), math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
return {1, math.floor((tau - (new_tat - now)) / t), math.ceil(new_tat - now), 0}
"#;

const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
const REDIS_RETRY_MS: u64 = 1_000;

struct RedisBackend {
    conn: redis::aio::ConnectionManager,
    script: redis::Script,
    /// Set while Redis is failing; requests use the local limiter.
    degraded: AtomicBool,
    /// Local-clock ms after which the next request probes Redis again.
    retry_at_ms: AtomicU64,
}

pub struct RateLimiter {
    policies: Vec<Gcra>,
    pub local: Local,
    redis: Option<RedisBackend>,
}

impl RateLimiter {
    pub fn new(
        policies: &std::collections::BTreeMap<String, RateLimitPolicy>,
        redis_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        let policies = policies.iter().map(|(n, p)| Gcra::new(n, p)).collect();
        let redis = match redis_url {
            None => None,
            Some(url) => {
                let client = redis::Client::open(url)?;
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(1);
                // Lazy: the gateway starts (on local limits) even while Redis is down.
                let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, cfg)?;
                Some(RedisBackend {
                    conn,
                    script: redis::Script::new(SCRIPT),
                    degraded: AtomicBool::new(false),
                    retry_at_ms: AtomicU64::new(0),
                })
            }
        };
        metrics::gauge!("gateway_ratelimit_redis_fallback").set(0.0);
        Ok(Self {
            policies,
            local: Local::default(),
            redis,
        })
    }

    pub fn policy_index(&self, name: &str) -> Option<u16> {
        self.policies
            .iter()
            .position(|p| p.name == name)
            .map(|i| i as u16)
    }

    pub async fn check(&self, policy_idx: u16, key: ClientKey) -> Decision {
        let policy = &self.policies[policy_idx as usize];
        if let Some(redis) = &self.redis {
            let now_ms = self.local.now() / 1_000_000;
            let degraded = redis.degraded.load(Ordering::Relaxed);
            if !degraded || now_ms >= redis.retry_at_ms.load(Ordering::Relaxed) {
                if degraded {
                    redis
                        .retry_at_ms
                        .store(now_ms + REDIS_RETRY_MS, Ordering::Relaxed);
                }
                match redis_check(redis, policy, key).await {
                    Ok(d) => {
                        if degraded && redis.degraded.swap(false, Ordering::Relaxed) {
                            tracing::info!("Redis reachable again: shared rate limits restored");
                            metrics::gauge!("gateway_ratelimit_redis_fallback").set(0.0);
                        }
                        return d;
                    }
                    Err(e) => {
                        if !redis.degraded.swap(true, Ordering::Relaxed) {
                            tracing::warn!(error = %e, "Redis unreachable: falling back to local rate limits");
                            metrics::gauge!("gateway_ratelimit_redis_fallback").set(1.0);
                            redis
                                .retry_at_ms
                                .store(now_ms + REDIS_RETRY_MS, Ordering::Relaxed);
                        }
                        metrics::counter!("gateway_ratelimit_fallback_total").increment(1);
                    }
                }
            } else {
                metrics::counter!("gateway_ratelimit_fallback_total").increment(1);
            }
        }
        self.local.check(policy_idx, policy, key)
    }
}

async fn redis_check(
    redis: &RedisBackend,
    policy: &Gcra,
    key: ClientKey,
) -> anyhow::Result<Decision> {
    let mut conn = redis.conn.clone();
    let redis_key = format!("intellicolab:ratelimit:{}:{key}", policy.name);
    let emission_ms = policy.emission_ns as f64 / 1e6;
    let tolerance_ms = policy.tolerance_ns as f64 / 1e6;
    let mut invocation = redis.script.key(redis_key);
    invocation.arg(emission_ms).arg(tolerance_ms);
    let call = invocation.invoke_async::<(i64, i64, i64, i64)>(&mut conn);
    let (allowed, remaining, reset_ms, retry_ms) = tokio::time::timeout(REDIS_TIMEOUT, call)
        .await
        .map_err(|_| anyhow::anyhow!("Redis rate-limit call timed out"))??;
    Ok(Decision {
        allowed: allowed == 1,
        limit: policy.limit,
        remaining: remaining.clamp(0, i64::from(policy.limit)) as u32,
        reset_ms: reset_ms.max(0) as u64,
        retry_after_ms: retry_ms.max(0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_burst_then_spaces_requests() {
        let g = Gcra::new(
            "t",
            &RateLimitPolicy {
                rate: 10,
                period_ms: 1_000,
                burst: 3,
            },
        );
        let mut tat = None;
        let now = 1_000_000_000;
        for expected_remaining in [2, 1, 0] {
            let (d, store) = g.apply(now, tat);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = store;
        }
        let (d, store) = g.apply(now, tat);
        assert!(!d.allowed);
        assert!(store.is_none());
        assert_eq!(d.retry_after_ms, 100);
        // One emission interval later exactly one more request fits.
        let (d, _) = g.apply(now + 100_000_000, tat);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }
}
