//! `GET /chat/search`: full-text search over the messages of the caller's rooms (see
//! `crate::search` for words, phrases and highlights, `store::search` for the index).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use kit::error::code;
use kit::http::{Json, Query};
use kit::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use token::AuthUser;
use uuid::Uuid;

use super::Page;
use crate::access;
use crate::domain::Message;
use crate::search;
use crate::state::ApiContext;
use crate::store;

/// Results per page without `limit` (a screenful; 100 at most).
pub const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/chat/search", get(search))
}

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
    room_id: Option<Uuid>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `{start, end}`: Unicode scalar offsets into the message body, end exclusive.
#[derive(Serialize, Debug, PartialEq, Eq)]
struct Highlight {
    start: usize,
    end: usize,
}

#[derive(Serialize)]
struct Item {
    message: Message,
    room_id: Uuid,
    highlights: Vec<Highlight>,
}

/// Where a page ends: the last result's rank key (score, then newest, then id).
#[derive(Debug, Clone, Copy, PartialEq)]
struct After {
    score: f64,
    created_at: i64,
    id: Uuid,
}

impl After {
    /// Whether a result with this key comes after `self` in the ranking.
    fn before(&self, score: f64, created_at: i64, id: Uuid) -> bool {
        score
            .total_cmp(&self.score)
            .reverse()
            .then(created_at.cmp(&self.created_at).reverse())
            .then(id.cmp(&self.id).reverse())
            .is_gt()
    }
}

/// A result with its rank key and highlights.
type Ranked = (After, Message, Vec<(usize, usize)>);

/// The cursor: the last result's score (f64 bits), created_at and id, in hex.
fn encode_cursor(a: &After) -> String {
    format!(
        "{:016x}{:016x}{}",
        a.score.to_bits(),
        a.created_at as u64,
        a.id.simple()
    )
}

fn decode_cursor(raw: &str) -> Option<After> {
    if raw.len() != 64 || !raw.is_ascii() {
        return None;
    }
    let score = f64::from_bits(u64::from_str_radix(&raw[..16], 16).ok()?);
    let created_at = u64::from_str_radix(&raw[16..32], 16).ok()? as i64;
    let id = Uuid::try_parse(&raw[32..]).ok()?;
    score.is_finite().then_some(After {
        score,
        created_at,
        id,
    })
}

async fn search(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Json<Page<Item>>> {
    let text = q.q.as_deref().unwrap_or("").trim();
    if text.is_empty() {
        return Err(ApiError::validation("q", "must not be empty"));
    }
    if text.chars().count() > search::QUERY_MAX_CHARS {
        return Err(ApiError::validation(
            "q",
            format!("must be at most {} characters", search::QUERY_MAX_CHARS),
        ));
    }
    let limit = match q.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::validation(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
    };
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(raw) => Some(decode_cursor(raw).ok_or_else(|| {
            ApiError::bad_request(code::INVALID_CURSOR, "the cursor is not valid")
        })?),
    };
    let terms = search::parse_query(text);
    let mut conn = ctx.db.pool().acquire().await?;
    if let Some(room) = q.room_id {
        // 404 for a private room the caller is not in, 403 for a public one (as history).
        access::member_access(&mut conn, room, user.id).await?;
    }
    let found = store::search::candidates(&mut conn, user.id, q.room_id, &terms).await?;
    drop(conn);
    // Ranked here, not in SQL: the score depends only on the message and the query
    // (`search::score`), the same on both backends, so pages never shift.
    let mut ranked: Vec<Ranked> = found
        .into_iter()
        .map(|(message, created_at)| {
            let (score, highlights) = search::score(&message.body, &terms);
            let key = After {
                score,
                created_at,
                id: message.id,
            };
            (key, message, highlights)
        })
        .filter(|(key, _, _)| after.is_none_or(|a| a.before(key.score, key.created_at, key.id)))
        .collect();
    ranked.sort_by(|a, b| {
        b.0.score
            .total_cmp(&a.0.score)
            .then(b.0.created_at.cmp(&a.0.created_at))
            .then(b.0.id.cmp(&a.0.id))
    });
    let next_cursor =
        (ranked.len() as i64 > limit).then(|| encode_cursor(&ranked[limit as usize - 1].0));
    ranked.truncate(limit as usize);
    let (mut messages, highlights): (Vec<_>, Vec<_>) =
        ranked.into_iter().map(|(_, m, h)| (m, h)).unzip();
    // The page's reactions with the caller's `me` (one query for the page).
    let mut conn = ctx.db.pool().acquire().await?;
    store::reactions::attach(&mut conn, &mut messages, Some(user.id)).await?;
    drop(conn);
    let items = messages
        .into_iter()
        .zip(highlights)
        .map(|(message, highlights)| Item {
            room_id: message.room_id,
            message,
            highlights: highlights
                .into_iter()
                .map(|(start, end)| Highlight { start, end })
                .collect(),
        })
        .collect();
    Ok(Json(Page { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let a = After {
            score: -3.25,
            created_at: 1_700_000_000_123,
            id: Uuid::now_v7(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&a)), Some(a));
        assert_eq!(decode_cursor("zz"), None);
        // Ranking order: higher score, then newer, then larger id come first.
        assert!(a.before(-4.0, a.created_at, a.id));
        assert!(a.before(a.score, a.created_at - 1, a.id));
        assert!(!a.before(a.score, a.created_at, a.id));
        assert!(!a.before(0.0, 0, a.id));
        assert_eq!(decode_cursor(&"g".repeat(64)), None);
        assert_eq!(
            decode_cursor(&format!("{:016x}{}", f64::NAN.to_bits(), "0".repeat(48))),
            None
        );
    }
}
