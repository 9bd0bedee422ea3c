//! Rate limiting with GCRA (generic cell rate algorithm): one timestamp per key, the
//! "theoretical arrival time". Keys are per user for authenticated requests and per
//! client IP otherwise, separately for each policy.
//!
//! Backends: in-process (sharded maps) and Redis (one atomic Lua script, so every gateway
//! instance shares the limits). When Redis fails the gateway falls back to the local
//! limiter — logged once per outage and visible in `gateway_ratelimit_redis_fallback` —
//! and probes Redis again about once a second.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub use kit::ratelimit::Decision;
use kit::ratelimit::{Gcra, Limiter};

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

/// A named policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub gcra: Gcra,
    /// Prefix of this policy's Redis keys, built once.
    redis_prefix: String,
    emission_ms: f64,
    tolerance_ms: f64,
}

impl Policy {
    pub fn new(name: &str, p: &RateLimitPolicy) -> Self {
        let gcra = Gcra::new(
            u64::from(p.rate),
            Duration::from_millis(p.period_ms),
            p.burst,
        );
        Self {
            name: name.to_owned(),
            gcra,
            redis_prefix: format!("intellicolab:ratelimit:{name}:"),
            emission_ms: gcra.emission_ns as f64 / 1e6,
            tolerance_ms: gcra.tolerance_ns as f64 / 1e6,
        }
    }
}

/// Keys the in-process backend tracks at most (64 shards).
const LOCAL_MAX_KEYS: usize = 64 * 16_384;

/// The in-process backend: the shared GCRA limiter, keyed by policy and client.
pub struct Local {
    limiter: Limiter<(u16, ClientKey)>,
}

impl Default for Local {
    fn default() -> Self {
        Self {
            limiter: Limiter::new(LOCAL_MAX_KEYS),
        }
    }
}

impl Local {
    fn now(&self) -> u64 {
        self.limiter.now_ns()
    }

    pub fn check(&self, policy_idx: u16, policy: &Policy, key: ClientKey) -> Decision {
        self.limiter.check(&policy.gcra, &(policy_idx, key))
    }

    /// Drops keys whose bucket is full again (they hold no information).
    pub fn sweep(&self) {
        self.limiter.sweep();
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
    policies: Vec<Policy>,
    pub local: Local,
    redis: Option<RedisBackend>,
}

impl RateLimiter {
    pub fn new(
        policies: &std::collections::BTreeMap<String, RateLimitPolicy>,
        redis_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        let policies = policies.iter().map(|(n, p)| Policy::new(n, p)).collect();
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
    policy: &Policy,
    key: ClientKey,
) -> anyhow::Result<Decision> {
    use std::fmt::Write;
    let mut conn = redis.conn.clone();
    let mut redis_key = String::with_capacity(policy.redis_prefix.len() + 48);
    redis_key.push_str(&policy.redis_prefix);
    let _ = write!(redis_key, "{key}");
    let mut invocation = redis.script.key(redis_key);
    invocation.arg(policy.emission_ms).arg(policy.tolerance_ms);
    let call = invocation.invoke_async::<(i64, i64, i64, i64)>(&mut conn);
    let (allowed, remaining, reset_ms, retry_ms) = tokio::time::timeout(REDIS_TIMEOUT, call)
        .await
        .map_err(|_| anyhow::anyhow!("Redis rate-limit call timed out"))??;
    Ok(Decision {
        allowed: allowed == 1,
        limit: policy.gcra.limit,
        remaining: remaining.clamp(0, i64::from(policy.gcra.limit)) as u32,
        reset_ms: reset_ms.max(0) as u64,
        retry_after_ns: (retry_ms.max(0) as u64).saturating_mul(1_000_000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_maps_onto_gcra_and_keys_are_per_policy() {
        let p = Policy::new(
            "t",
            &RateLimitPolicy {
                rate: 10,
                period_ms: 1_000,
                burst: 2,
            },
        );
        assert_eq!(p.gcra.emission_ns, 100_000_000);
        assert_eq!(p.gcra.limit, 2);
        assert_eq!(p.redis_prefix, "intellicolab:ratelimit:t:");
        let local = Local::default();
        let ip = ClientKey::Ip(IpAddr::from([127, 0, 0, 1]));
        assert!(local.check(0, &p, ip).allowed);
        assert!(local.check(0, &p, ip).allowed);
        let refused = local.check(0, &p, ip);
        assert!(!refused.allowed);
        assert!(refused.retry_after_ms() > 0);
        // The same client under another policy index has its own bucket.
        assert!(local.check(1, &p, ip).allowed);
    }
}
