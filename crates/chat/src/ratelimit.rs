//! Per-user send rate limit: the shared in-process GCRA limiter ([`kit::ratelimit`])
//! with one policy, keyed by user.

use std::time::Duration;

use kit::ratelimit::{Gcra, Limiter};
use uuid::Uuid;

/// Users tracked at most (beyond, idle users are forgotten first).
const MAX_USERS: usize = 100_000;

pub struct RateLimiter {
    policy: Gcra,
    pub burst: u32,
    limiter: Limiter<Uuid>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        let policy = Gcra::per_second(per_second, burst);
        Self {
            policy,
            burst: policy.limit,
            limiter: Limiter::new(MAX_USERS),
        }
    }

    /// Ok when `user` may send now; else how long to wait.
    pub fn check(&self, user: Uuid) -> Result<(), Duration> {
        let d = self.limiter.check(&self.policy, &user);
        if d.allowed {
            Ok(())
        } else {
            Err(d.retry_after())
        }
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
