//! The user service's relationship check, with a short timeout and a circuit breaker:
//! when the user service is down the caller gets 503 `dependency_unavailable`, never a
//! silent allow. Also the paged block list for the one-time backfill of chat's copy.

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

/// One page of a paged internal list of the user service (`{items, next_cursor}`).
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
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

    /// One page of a list for a one-time backfill (`/internal/blocks`,
    /// `/internal/usernames`), 1000 items at a time; no circuit breaker: the caller retries
    /// in the background.
    pub async fn page<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        after: Option<&str>,
    ) -> anyhow::Result<Page<T>> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base))?;
        url.query_pairs_mut().append_pair("limit", "1000");
        if let Some(after) = after {
            url.query_pairs_mut().append_pair("after", after);
        }
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}
