//! The files service's internal lookup (`POST /internal/files/lookup`), asked at send for
//! the files a message attaches: which of the ids exist and were uploaded by the sender,
//! with their descriptions (stored on the message). Short timeout and the shared circuit
//! breaker: when the files service cannot answer, the send gets 503
//! `dependency_unavailable` (never stored without its attachments checked).

use std::time::Duration;

use kit::ApiError;
use kit::error::code;
use serde::Deserialize;
use uuid::Uuid;

use crate::dependency::{self, Breaker};
use crate::domain::Attachment;

#[derive(Deserialize)]
struct Found {
    items: Vec<Attachment>,
}

pub struct FilesClient {
    lookup_url: String,
    http: reqwest::Client,
    breaker: Breaker,
}

fn unavailable() -> ApiError {
    ApiError::unavailable(
        code::DEPENDENCY_UNAVAILABLE,
        "the files service is unavailable; try again later",
    )
}

impl FilesClient {
    pub fn new(base: &str, timeout: Duration) -> Self {
        Self {
            lookup_url: format!("{}/internal/files/lookup", base.trim_end_matches('/')),
            http: dependency::http_client(timeout),
            breaker: Breaker::default(),
        }
    }

    /// The files among `ids` that exist and were uploaded by `owner` (any order; the
    /// others are left out).
    pub async fn lookup(&self, owner: Uuid, ids: &[Uuid]) -> Result<Vec<Attachment>, ApiError> {
        if self.breaker.is_open() {
            metrics::counter!("chat_files_breaker_rejections_total").increment(1);
            return Err(unavailable());
        }
        let body = serde_json::json!({"owner_id": owner, "ids": ids});
        let result = async {
            dependency::traced(self.http.post(&self.lookup_url).json(&body))
                .send()
                .await?
                .error_for_status()?
                .json::<Found>()
                .await
        }
        .await;
        let failures = self.breaker.record(result.is_ok());
        match result {
            Ok(found) => Ok(found.items),
            Err(e) => {
                tracing::warn!(error = %e, failures, "files service lookup failed");
                Err(unavailable())
            }
        }
    }
}
