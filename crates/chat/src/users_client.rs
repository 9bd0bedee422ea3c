//! The user service's relationship check, with a short timeout and a circuit breaker:
//! when the user service is down the caller gets 503 `dependency_unavailable`, never a
//! silent allow. Also the items of the user service's paged lists that chat copies once
//! (`kit::backfill`).

use std::time::Duration;

use kit::ApiError;
use kit::error::code;
use serde::Deserialize;
use uuid::Uuid;

use crate::dependency::{self, Breaker};

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

pub struct UsersClient {
    base: String,
    http: reqwest::Client,
    breaker: Breaker,
}

fn unavailable() -> ApiError {
    ApiError::unavailable(
        code::DEPENDENCY_UNAVAILABLE,
        "the user service is unavailable; try again later",
    )
}

impl UsersClient {
    pub fn new(base: &str, timeout: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: dependency::http_client(timeout),
            breaker: Breaker::default(),
        }
    }

    /// `GET /internal/relationships/{a}/{b}` of the user service.
    pub async fn relationship(&self, a: Uuid, b: Uuid) -> Result<PairFlags, ApiError> {
        if self.breaker.is_open() {
            metrics::counter!("chat_users_breaker_rejections_total").increment(1);
            return Err(unavailable());
        }
        let url = format!("{}/internal/relationships/{a}/{b}", self.base);
        let result = async {
            let res = dependency::traced(self.http.get(&url))
                .send()
                .await?
                .error_for_status()?;
            res.json::<PairFlags>().await
        }
        .await;
        let failures = self.breaker.record(result.is_ok());
        result.map_err(|e| {
            tracing::warn!(error = %e, failures, "user service relationship check failed");
            unavailable()
        })
    }
}
