//! In-process rate limiting with GCRA (generic cell rate algorithm): one timestamp per
//! key — the "theoretical arrival time" (TAT) — instead of a counter and a refill task.
//!
//! - [`Gcra`]: a policy (`rate` requests per `period`, bursts of up to `burst`) and the
//!   pure decision function [`Gcra::apply`], which a shared backend (e.g. a Redis script)
//!   can mirror.
//! - [`Limiter`]: keyed arrival times in sharded maps with bounded memory: past
//!   `max_keys` a shard first drops keys whose bucket is full again (they hold no
//!   information) and, if every key is still live, forgets one (that key starts with a
//!   fresh burst: memory stays bounded at the cost of exactness under a flood of keys).
//! - The time source is a [`Clock`]: [`MonotonicClock`] in production, [`ManualClock`]
//!   in tests.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Nanoseconds since some fixed origin; never goes backwards.
pub trait Clock: Send + Sync {
    fn now_ns(&self) -> u64;
}

/// `Instant`-based time since the clock was created.
pub struct MonotonicClock(Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told (tests).
#[derive(Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start_ns: u64) -> Self {
        Self(AtomicU64::new(start_ns))
    }

    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(ns, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The outcome of one request; the fields map onto `RateLimit-*` and `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The burst size.
    pub limit: u32,
    pub remaining: u32,
    /// Milliseconds (rounded up) until the quota is whole again.
    pub reset_ms: u64,
    /// Nanoseconds until a rejected request would be allowed (0 when allowed).
    pub retry_after_ns: u64,
}

impl Decision {
    /// Milliseconds (rounded up) until a rejected request would be allowed.
    pub fn retry_after_ms(&self) -> u64 {
        ns_to_ms(self.retry_after_ns)
    }

    pub fn retry_after(&self) -> Duration {
        Duration::from_nanos(self.retry_after_ns)
    }

    /// Allowed without any accounting (a limiter that cannot decide lets requests through).
    pub fn allow_all(limit: u32) -> Self {
        Self {
            allowed: true,
            limit,
            remaining: limit,
            reset_ms: 0,
            retry_after_ns: 0,
        }
    }
}

/// A GCRA policy: each request costs `emission_ns`; the TAT may run up to
/// `tolerance_ns = emission_ns × burst` ahead of now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    pub limit: u32,
    pub emission_ns: u64,
    pub tolerance_ns: u64,
}

impl Gcra {
    /// `rate` requests per `period`, bursts of `burst` (each at least 1).
    pub fn new(rate: u64, period: Duration, burst: u32) -> Self {
        let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX).max(1);
        Self::from_emission(period_ns / rate.max(1), burst)
    }

    /// `per_second` requests a second (a non-finite or non-positive value means 10).
    pub fn per_second(per_second: f64, burst: u32) -> Self {
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            10.0
        };
        Self::from_emission((1e9 / per_second) as u64, burst)
    }

    fn from_emission(emission_ns: u64, burst: u32) -> Self {
        let emission_ns = emission_ns.max(1);
        let burst = burst.max(1);
        Self {
            limit: burst,
            emission_ns,
            tolerance_ns: emission_ns.saturating_mul(u64::from(burst)),
        }
    }

    /// Applies one request at `now` (ns) to the stored arrival time `tat`: the decision
    /// and the value to store (`None`: leave the stored one as it is).
    pub fn apply(&self, now: u64, tat: Option<u64>) -> (Decision, Option<u64>) {
        let tat = tat.unwrap_or(now).max(now);
        let new_tat = tat.saturating_add(self.emission_ns);
        let allow_at = new_tat.saturating_sub(self.tolerance_ns);
        if now < allow_at {
            let d = Decision {
                allowed: false,
                limit: self.limit,
                remaining: 0,
                reset_ms: ns_to_ms(tat - now),
                retry_after_ns: allow_at - now,
            };
            return (d, None);
        }
        let used = new_tat - now;
        let d = Decision {
            allowed: true,
            limit: self.limit,
            remaining: u32::try_from(self.tolerance_ns.saturating_sub(used) / self.emission_ns)
                .unwrap_or(u32::MAX),
            reset_ms: ns_to_ms(used),
            retry_after_ns: 0,
        };
        (d, Some(new_tat))
    }
}

fn ns_to_ms(ns: u64) -> u64 {
    ns.div_ceil(1_000_000)
}

const SHARDS: usize = 64;

/// Keyed GCRA state in memory (see the module docs).
pub struct Limiter<K> {
    clock: Arc<dyn Clock>,
    shards: Vec<Mutex<HashMap<K, u64>>>,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// Tracks about `max_keys` keys at most, on the monotonic clock.
    pub fn new(max_keys: usize) -> Self {
        Self::with_clock(max_keys, Arc::new(MonotonicClock::default()))
    }

    pub fn with_clock(max_keys: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (max_keys / SHARDS).max(16),
            hasher: Default::default(),
        }
    }

    /// The limiter's clock reading (ns).
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Counts one request of `key` under `policy`.
    pub fn check(&self, policy: &Gcra, key: &K) -> Decision {
        let now = self.clock.now_ns();
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let Ok(mut map) = shard.lock() else {
            // A poisoned shard must not take the service down: let the request through.
            return Decision::allow_all(policy.limit);
        };
        match map.get_mut(key) {
            Some(tat) => {
                let (decision, store) = policy.apply(now, Some(*tat));
                if let Some(new_tat) = store {
                    *tat = new_tat;
                }
                decision
            }
            None => {
                let (decision, store) = policy.apply(now, None);
                if let Some(new_tat) = store {
                    if map.len() >= self.per_shard {
                        map.retain(|_, t| *t > now);
                        if map.len() >= self.per_shard
                            && let Some(k) = map.keys().next().cloned()
                        {
                            map.remove(&k);
                        }
                    }
                    map.insert(key.clone(), new_tat);
                }
                decision
            }
        }
    }

    /// Drops keys whose bucket is full again (they hold no information).
    pub fn sweep(&self) {
        let now = self.clock.now_ns();
        for shard in &self.shards {
            if let Ok(mut map) = shard.lock() {
                map.retain(|_, t| *t > now);
            }
        }
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn ten_per_second_burst_3() -> Gcra {
        Gcra::new(10, Duration::from_secs(1), 3)
    }

    #[test]
    fn apply_allows_the_burst_then_spaces_requests() {
        let g = ten_per_second_burst_3();
        let mut tat = None;
        let now = 1_000 * MS;
        for expected_remaining in [2, 1, 0] {
            let (d, store) = g.apply(now, tat);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = store;
        }
        let (d, store) = g.apply(now, tat);
        assert!(!d.allowed);
        assert!(store.is_none(), "a refused request costs nothing");
        assert_eq!(d.retry_after_ms(), 100);
        assert_eq!(d.reset_ms, 300);
        // One emission interval later exactly one more request fits.
        let (d, _) = g.apply(now + 100 * MS, tat);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        // Just before it, not yet.
        let (d, _) = g.apply(now + 99 * MS, tat);
        assert!(!d.allowed);
        assert_eq!(d.retry_after(), Duration::from_millis(1));
    }

    #[test]
    fn per_second_matches_new_and_rejects_nonsense_rates() {
        assert_eq!(
            Gcra::per_second(10.0, 3),
            Gcra::new(10, Duration::from_secs(1), 3)
        );
        assert_eq!(Gcra::per_second(f64::NAN, 3), Gcra::per_second(10.0, 3));
        assert_eq!(Gcra::per_second(-1.0, 0).limit, 1);
    }

    #[test]
    fn limiter_keys_are_independent_and_refill_with_the_clock() {
        let clock = Arc::new(ManualClock::new(5_000 * MS));
        let rl: Limiter<u32> = Limiter::with_clock(1_000, clock.clone());
        let g = ten_per_second_burst_3();
        for _ in 0..3 {
            assert!(rl.check(&g, &1).allowed);
        }
        let refused = rl.check(&g, &1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms(), 100);
        assert!(rl.check(&g, &2).allowed, "another key is unaffected");
        clock.advance(Duration::from_millis(100));
        assert!(rl.check(&g, &1).allowed);
        assert!(!rl.check(&g, &1).allowed);
        // After a whole period the bucket is full again, and a sweep forgets the key.
        clock.advance(Duration::from_secs(1));
        rl.sweep();
        assert!(rl.is_empty());
        let d = rl.check(&g, &1);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_keys() {
        let clock = Arc::new(ManualClock::new(0));
        let rl: Limiter<u64> = Limiter::with_clock(0, clock);
        let g = Gcra::new(1, Duration::from_secs(3600), 1);
        for key in 0..100_000u64 {
            assert!(rl.check(&g, &key).allowed);
        }
        // 16 per shard minimum, 64 shards.
        assert!(rl.len() <= 16 * SHARDS, "{} keys kept", rl.len());
    }
}
