//! Who may read a file: its uploader, or a member of a room where it is attached (chat's
//! internal membership route). Everyone else gets 404, as if it did not exist.
//!
//! Membership answers are cached for `membership_cache_ms` (2 s by default): a page
//! showing 20 images of one room asks chat once, and a member who leaves loses access
//! within 2 s.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kit::chat_client::ChatClient;
use kit::{ApiError, ApiResult};
use uuid::Uuid;

use crate::domain::StoredFile;
use crate::store::attachments;

/// Entries kept at most; the map is cleared when full (a burst of distinct rooms costs a
/// round of re-asks, never unbounded memory).
const CACHE_CAPACITY: usize = 10_000;

pub struct Access {
    chat: ChatClient,
    ttl: Duration,
    cache: Mutex<HashMap<(Uuid, Uuid), (Instant, bool)>>,
}

pub fn not_found() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        kit::error::code::FILE_NOT_FOUND,
        "no such file",
    )
}

impl Access {
    pub fn new(chat: ChatClient, ttl: Duration) -> Self {
        Self {
            chat,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn is_member(&self, room: Uuid, user: Uuid) -> ApiResult<bool> {
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock()
            && let Some((at, member)) = cache.get(&(room, user))
            && now.duration_since(*at) < self.ttl
        {
            return Ok(*member);
        }
        let member = self.chat.membership(room, user).await?.is_some();
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert((room, user), (now, member));
        }
        Ok(member)
    }

    /// Ok when `user` may read `file`; 404 `file_not_found` otherwise, 503 when chat
    /// cannot answer (never a silent allow).
    pub async fn check(&self, db: &kit::db::Db, file: &StoredFile, user: Uuid) -> ApiResult<()> {
        if file.owner_id == user {
            return Ok(());
        }
        for room in attachments::rooms_of(db.pool(), file.id).await? {
            if self.is_member(room, user).await? {
                return Ok(());
            }
        }
        Err(not_found())
    }
}
