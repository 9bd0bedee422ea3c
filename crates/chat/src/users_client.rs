//! The user service's relationship check, with a short timeout and a circuit breaker:
//! when the user service is down the caller gets 503 `dependency_unavailable`, never a
//! silent allow. Also the items of the user service's paged lists that chat copies once
//! (`kit::backfill`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kit::ApiError;
use kit::error::code;
use serde::Deserialize;
use uuid::Uuid;

/// Consecutive failures that open the breaker, and how long it stays open.
const FAILURE_THRESHOLD: u32 = 3;
const OPEN_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct PairFlags {
    pub a_blocks_b: bool,
    pub b_blocks_a: bool,
    #[serde(default)]
    pub a_follows_b: bool,
    #[serde(default)]
    pub b_follows_a: bool,
    /// Whether each user has a profile at the user service (an unknown id does not);
    /// true when the user service does not say.
    #[serde(default = "yes")]
    pub a_exists: bool,
    #[serde(default = "yes")]
    pub b_exists: bool,
}

fn yes() -> bool {
    true
}

/// An item of `GET /internal/blocks`.
#[derive(Debug, Deserialize)]
pub struct BlockEdge {
    pub blocker_id: Uuid,
    pub blocked_id: Uuid,
}

/// An item of `GET /internal/usernames`.
#[derive(Debug, Deserialize)]
pub struct Username {
    pub user_id: Uuid,
    pub username: String,
}

#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

pub struct UsersClient {
    base: String,
    http: reqwest::Client,
    breaker: Mutex<Breaker>,
}

fn unavailable() -> ApiError {
    ApiError::unavailable(
        code::DEPENDENCY_UNAVAILABLE,
        "the user service is unavailable; try again later",
    )
}

impl UsersClient {
    pub fn new(base: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .unwrap_or_default();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            breaker: Mutex::new(Breaker::default()),
        }
    }

    /// `GET /internal/relationships/{a}/{b}` of the user service.
    pub async fn relationship(&self, a: Uuid, b: Uuid) -> Result<PairFlags, ApiError> {
        if let Ok(b) = self.breaker.lock()
            && b.open_until.is_some_and(|t| t > Instant::now())
        {
            metrics::counter!("chat_users_breaker_rejections_total").increment(1);
            return Err(unavailable());
        }
        let url = format!("{}/internal/relationships/{a}/{b}", self.base);
        let result = async {
            let mut req = self.http.get(&url);
            // The relationship check joins the trace of the request that needs it.
            if let Some(tp) = kit::trace::current_traceparent() {
                req = req.header(kit::http::TRACEPARENT.clone(), tp);
            }
            let res = req.send().await?.error_for_status()?;
            res.json::<PairFlags>().await
        }
        .await;
        let Ok(mut breaker) = self.breaker.lock() else {
            return result.map_err(|_| unavailable());
        };
        match result {
            Ok(flags) => {
                *breaker = Breaker::default();
                Ok(flags)
            }
            Err(e) => {
                breaker.failures += 1;
                if breaker.failures >= FAILURE_THRESHOLD {
                    breaker.open_until = Some(Instant::now() + OPEN_FOR);
                }
                tracing::warn!(error = %e, failures = breaker.failures, "user service relationship check failed");
                Err(unavailable())
            }
        }
    }
}
