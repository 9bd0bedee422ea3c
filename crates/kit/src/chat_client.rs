//! The chat service's internal routes, shared by the services that ask chat (notifications,
//! files): the membership check (`GET /internal/rooms/{room}/members/{user}`, with a short
//! timeout: when chat cannot answer, the caller gets 503 `dependency_unavailable`, never a
//! silent allow) and presence (`GET /internal/presence?user_ids=`), asked before a push.

use std::time::Duration;

use crate::ApiError;
use crate::error::code;
use serde::Deserialize;
use uuid::Uuid;

/// `200 {role, room_kind}` of the membership route.
#[derive(Debug, Clone, Deserialize)]
pub struct Membership {
    pub role: String,
    pub room_kind: String,
}

pub struct ChatClient {
    base: String,
    http: reqwest::Client,
}

fn unavailable() -> ApiError {
    ApiError::unavailable(
        code::DEPENDENCY_UNAVAILABLE,
        "the chat service is unavailable; try again later",
    )
}

impl ChatClient {
    pub fn new(base: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .unwrap_or_default();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// The user's membership of the room, or None when they are not a member (or the room
    /// does not exist: chat answers 404 for both, and so does this service).
    pub async fn membership(&self, room: Uuid, user: Uuid) -> Result<Option<Membership>, ApiError> {
        let url = format!("{}/internal/rooms/{room}/members/{user}", self.base);
        let mut req = self.http.get(&url);
        if let Some(tp) = crate::trace::current_traceparent() {
            req = req.header(crate::http::TRACEPARENT.clone(), tp);
        }
        let res = req.send().await.map_err(|e| {
            tracing::warn!(error = %e, "chat membership check failed");
            unavailable()
        })?;
        match res.status() {
            reqwest::StatusCode::OK => res.json::<Membership>().await.map(Some).map_err(|e| {
                tracing::warn!(error = %e, "chat membership answer undecodable");
                unavailable()
            }),
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s => {
                tracing::warn!(status = %s, "chat membership check failed");
                Err(unavailable())
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct PresenceItem {
    user_id: Uuid,
    status: String,
}

#[derive(Debug, Deserialize)]
struct PresencePage {
    items: Vec<PresenceItem>,
}

impl ChatClient {
    /// Whether `user` has an open, active connection (`online`; `idle` and `offline` are
    /// not). Err when chat cannot say (unreachable, timeout, an answer not understood):
    /// the caller decides.
    pub async fn is_online(&self, user: Uuid) -> anyhow::Result<bool> {
        let url = format!("{}/internal/presence?user_ids={user}", self.base);
        let res = self.http.get(&url).send().await?.error_for_status()?;
        let page: PresencePage = res.json().await?;
        Ok(page
            .items
            .iter()
            .any(|i| i.user_id == user && i.status == "online"))
    }
}
