//! What chat's clients of other services share (the users and the files service): one
//! way to build their HTTP client and one circuit breaker, so that a dependency that is
//! down costs a caller one fast 503 `dependency_unavailable`, not a timeout per request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker, and how long it stays open: 3 failed calls
/// (2 s timeout each by default) say "down" without a single slow answer doing so, and
/// 5 s later one call tries again.
const FAILURE_THRESHOLD: u32 = 3;
const OPEN_FOR: Duration = Duration::from_secs(5);

/// An HTTP client whose connect and whole-request timeouts are `timeout`.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .unwrap_or_default()
}

/// A request to another service that joins the trace of the request that needs it.
pub fn traced(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match kit::trace::current_traceparent() {
        Some(tp) => req.header(kit::http::TRACEPARENT.clone(), tp),
        None => req,
    }
}

#[derive(Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
}

/// Opens after [`FAILURE_THRESHOLD`] consecutive failures, for [`OPEN_FOR`].
#[derive(Default)]
pub struct Breaker(Mutex<State>);

impl Breaker {
    /// Whether calls are refused now (the breaker is open).
    pub fn is_open(&self) -> bool {
        self.0
            .lock()
            .is_ok_and(|s| s.open_until.is_some_and(|t| t > Instant::now()))
    }

    /// Records a call's outcome; returns the consecutive failures so far (0 on success).
    pub fn record(&self, ok: bool) -> u32 {
        let Ok(mut s) = self.0.lock() else {
            return 0;
        };
        if ok {
            *s = State::default();
            return 0;
        }
        s.failures += 1;
        if s.failures >= FAILURE_THRESHOLD {
            s.open_until = Some(Instant::now() + OPEN_FOR);
        }
        s.failures
    }
}
