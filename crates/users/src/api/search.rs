//! `GET /users/search` (mechanism: see [`crate::search`]).

use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use kit::http::{Json, Query};
use kit::{ApiError, ApiResult};
use serde::Deserialize;
use token::AuthUser;

use super::{OrInternal, Page};
use crate::cursor;
use crate::domain::Profile;
use crate::search::{self, RankKey};
use crate::state::ApiContext;
use crate::store;

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
    let small = |s: &str| {
        s.parse::<u8>()
            .map_err(|_| ApiError::bad_request("invalid_cursor", "the cursor is malformed"))
    };
    Ok(Some(RankKey {
        tier: small(&p[0])?,
        distance: small(&p[1])?,
        followers: cursor::parse_i64(&p[2])?,
        id: p[3].clone(),
    }))
}

fn encode_cursor(k: &RankKey) -> String {
    cursor::encode(
        "s",
        &[
            &k.tier.to_string(),
            &k.distance.to_string(),
            &k.followers.to_string(),
            &k.id,
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
    let (items, next) = search_page(&ctx.db, &q, &user.id.to_string(), after.as_ref(), limit)
        .await
        .or_500()?;
    let next_cursor = next.as_ref().map(encode_cursor);
    metrics::histogram!("users_search_duration_seconds").record(started.elapsed().as_secs_f64());
    Ok(Json(Page { items, next_cursor }))
}

/// Fuzzy candidates considered per query: the ones sharing the most trigrams with it.
/// Bounds the work for short, common queries; real typos share many trigrams and stay in.
pub const FUZZY_CANDIDATES: i64 = 1000;

/// One page of results for `q` as `caller` sees them, after the position `after`; and the
/// position of the last item when more follow. (The benchmark calls this directly.)
///
/// Tiers are fetched in rank order, each already sorted and limited by the database, and
/// the next tier is only consulted while the page is not full — so a common prefix never
/// pays for the fuzzy tier.
pub async fn search_page(
    db: &kit::db::Db,
    q: &search::Query,
    caller: &str,
    after: Option<&RankKey>,
    limit: i64,
) -> Result<(Vec<Profile>, Option<RankKey>), sqlx::Error> {
    let want = limit as usize + 1;
    let mut keys: Vec<RankKey> = Vec::with_capacity(want);
    for tier in after.map_or(0, |a| a.tier)..=2 {
        if keys.len() >= want {
            break;
        }
        let position = match after {
            Some(a) if a.tier == tier => (a.followers, a.id.as_str()),
            _ => (i64::MAX, ""),
        };
        let found =
            store::tier_matches(db, q, caller, tier, position, (want - keys.len()) as i64).await?;
        keys.extend(found.into_iter().map(|c| RankKey {
            tier,
            distance: 0,
            followers: c.followers,
            id: c.id,
        }));
    }
    if keys.len() < want && q.fuzzy.is_some() {
        let candidates = store::fuzzy_candidates(db.pool(), q, caller, FUZZY_CANDIDATES).await?;
        let mut fuzzy: Vec<RankKey> = candidates
            .iter()
            .filter_map(|c| search::rank(q, c))
            .filter(|k| k.tier == 3 && after.is_none_or(|a| k > a))
            .collect();
        fuzzy.sort_unstable();
        fuzzy.truncate(want - keys.len());
        keys.extend(fuzzy);
    }
    let more = keys.len() > limit as usize;
    keys.truncate(limit as usize);
    let next = if more { keys.last().cloned() } else { None };
    let ids: Vec<String> = keys.into_iter().map(|k| k.id).collect();
    let items = store::profiles_by_ids(db.pool(), &ids).await?;
    Ok((items, next))
}
