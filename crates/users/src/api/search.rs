//! `GET /users/search` (mechanism: see [`crate::search`]).

use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use kit::http::{Json, Query};
use kit::{ApiError, ApiResult};
use serde::Deserialize;
use token::AuthUser;

use super::Page;
use crate::cursor;
use crate::domain::Profile;
use crate::search::feed::parse_id;
use crate::search::index::SearchIndex;
use crate::search::{self, RankKey};
use crate::state::ApiContext;
use crate::store::{graph, profiles};

pub fn router() -> Router<ApiContext> {
    Router::new().route("/users/search", get(search_users))
}

#[derive(Debug, Deserialize)]
struct SearchParams {
    q: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

fn parse_cursor(raw: Option<&str>) -> ApiResult<Option<RankKey>> {
    let Some(c) = raw.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let p = cursor::decode("s", 4, c)?;
    let invalid =
        || ApiError::bad_request(kit::error::code::INVALID_CURSOR, "the cursor is malformed");
    let small = |s: &str| s.parse::<u8>().map_err(|_| invalid());
    Ok(Some(RankKey {
        tier: small(&p[0])?,
        distance: small(&p[1])?,
        followers: cursor::parse_i64(&p[2])?,
        id: parse_id(&p[3]).ok_or_else(invalid)?,
    }))
}

fn encode_cursor(k: &RankKey) -> String {
    cursor::encode(
        "s",
        &[
            &k.tier.to_string(),
            &k.distance.to_string(),
            &k.followers.to_string(),
            &uuid::Uuid::from_u128(k.id).to_string(),
        ],
    )
}

async fn search_users(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Query(params): Query<SearchParams>,
) -> ApiResult<Json<Page<Profile>>> {
    let started = Instant::now();
    let limit = cursor::limit(params.limit)?;
    let raw = params.q.unwrap_or_default();
    let q = search::Query::parse(&raw).ok_or_else(|| {
        ApiError::validation(
            "q",
            "must be 1–64 characters (ignoring case, accents and surrounding spaces)",
        )
    })?;
    let after = parse_cursor(params.cursor.as_deref())?;
    let (items, next) = search_page(
        &ctx.db,
        &ctx.search,
        &q,
        &user.id.to_string(),
        after.as_ref(),
        limit,
    )
    .await?;
    let next_cursor = next.as_ref().map(encode_cursor);
    metrics::histogram!("users_search_duration_seconds").record(started.elapsed().as_secs_f64());
    Ok(Json(Page { items, next_cursor }))
}

/// One page of results for `q` as `caller` sees them, after the position `after`; and the
/// position of the last item when more follow. (The benchmark calls this directly.)
///
/// Two indexed SQL statements (who blocks the caller; the profiles of the page) around
/// one in-memory index query.
pub async fn search_page(
    db: &kit::db::Db,
    index: &SearchIndex,
    q: &search::Query,
    caller: &str,
    after: Option<&RankKey>,
    limit: i64,
) -> Result<(Vec<Profile>, Option<RankKey>), sqlx::Error> {
    let hidden = graph::blockers_of(db.pool(), caller).await?;
    let mut keys = index.page(q, &hidden, after, limit as usize + 1);
    let more = keys.len() > limit as usize;
    keys.truncate(limit as usize);
    let next = if more { keys.last().copied() } else { None };
    let ids: Vec<String> = keys
        .iter()
        .map(|k| uuid::Uuid::from_u128(k.id).to_string())
        .collect();
    let items = profiles::by_ids(db.pool(), &ids).await?;
    Ok((items, next))
}
