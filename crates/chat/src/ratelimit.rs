//! Per-user send rate limit: GCRA (a token bucket in one timestamp per key), in-process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Past this many tracked users, entries whose bucket is full again are dropped.
const PRUNE_ABOVE: usize = 10_000;

pub struct RateLimiter {
    /// Time one send "costs".
    emission: Duration,
    /// How far ahead of now the theoretical arrival time may run (the burst).
    tolerance: Duration,
    pub burst: u32,
    tats: Mutex<HashMap<Uuid, Instant>>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            10.0
        };
        let burst = burst.max(1);
        let emission = Duration::from_secs_f64(1.0 / per_second);
        Self {
            emission,
            tolerance: emission * (burst - 1),
            burst,
            tats: Mutex::new(HashMap::new()),
        }
    }

    /// Ok when `user` may send now; else how long to wait.
    pub fn check(&self, user: Uuid) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut tats) = self.tats.lock() else {
            return Ok(());
        };
        if tats.len() > PRUNE_ABOVE {
            tats.retain(|_, tat| *tat > now);
        }
        let tat = tats.get(&user).copied().filter(|t| *t > now).unwrap_or(now);
        let ahead = tat - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        tats.insert(user, tat + self.emission);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_limits() {
        let rl = RateLimiter::new(10.0, 20);
        let u = Uuid::now_v7();
        for _ in 0..20 {
            assert!(rl.check(u).is_ok());
        }
        let wait = rl.check(u).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // Another user is unaffected.
        assert!(rl.check(Uuid::now_v7()).is_ok());
    }
}
