//! Follows, friends, blocks and suggestions.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use kit::http::{Path, Query};
use kit::{ApiError, ApiResult};
use serde::Serialize;
use token::AuthUser;

use super::{Page, PageParams, ensure_me, user_not_found};
use crate::cursor::{self, EdgeCursor};
use crate::domain::Profile;
use crate::events;
use crate::search::feed::Changes;
use crate::state::ApiContext;
use crate::store::graph::{self, EdgeList};
use crate::store::profiles;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/users/me/following/{id}", put(follow).delete(unfollow))
        .route("/users/me/blocks/{id}", put(block).delete(unblock))
        .route("/users/me/blocks", get(list_blocks))
        .route("/users/me/friends", get(list_friends))
        .route("/users/me/followers", get(my_followers))
        .route("/users/me/following", get(my_following))
        .route("/users/{id}/followers", get(followers))
        .route("/users/{id}/following", get(following))
        .route("/users/suggested", get(suggested))
}

fn blocked() -> ApiError {
    ApiError::forbidden(kit::error::code::BLOCKED, "one of you blocks the other")
}

/// The four edge changes of the caller to another user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EdgeChange {
    Follow,
    Unfollow,
    Block,
    Unblock,
}

impl EdgeChange {
    fn self_error(self) -> ApiError {
        match self {
            EdgeChange::Follow | EdgeChange::Unfollow => ApiError::bad_request(
                kit::error::code::CANNOT_FOLLOW_SELF,
                "you cannot follow yourself",
            ),
            EdgeChange::Block | EdgeChange::Unblock => ApiError::bad_request(
                kit::error::code::CANNOT_BLOCK_SELF,
                "you cannot block yourself",
            ),
        }
    }

    /// Creating an edge needs the caller's profile (made from the token if missing).
    fn creates(self) -> bool {
        matches!(self, EdgeChange::Follow | EdgeChange::Block)
    }
}

/// The one sequence behind follow, unfollow, block and unblock: self check → lock both
/// profiles → change the edge (and the counters) → events in the outbox → commit →
/// search index and relay. Events are only published for an edge that really changed,
/// so repeating a request is a harmless no-op.
async fn change_edge(
    ctx: &ApiContext,
    user: &AuthUser,
    id: uuid::Uuid,
    op: EdgeChange,
) -> ApiResult<StatusCode> {
    if id == user.id {
        return Err(op.self_error());
    }
    if op.creates() {
        ensure_me(ctx, user).await?;
    }
    let (me, target) = (user.id, id);
    let mut tx = ctx.db.begin().await?;
    if !graph::lock_pair(&mut tx, ctx.db.backend(), me, target).await? {
        return Err(user_not_found());
    }
    let mut changes = Changes::default();
    let mut events = Vec::new();
    let changed = match op {
        EdgeChange::Follow => {
            if graph::pair_flags(tx.conn(), me, target).await?.any_block() {
                return Err(blocked());
            }
            let inserted = graph::insert_follow(&mut tx, me, target, &mut changes).await?;
            if inserted {
                events.push(events::follow("user.followed", me, target));
            }
            inserted
        }
        EdgeChange::Unfollow => {
            let deleted = graph::delete_follow(&mut tx, me, target, &mut changes).await?;
            if deleted {
                events.push(events::follow("user.unfollowed", me, target));
            }
            deleted
        }
        EdgeChange::Block => {
            let inserted = graph::insert_block(tx.conn(), me, target).await?;
            if inserted {
                // A block ends every follow between the two, in both directions.
                for (a, b) in [(me, target), (target, me)] {
                    if graph::delete_follow(&mut tx, a, b, &mut changes).await? {
                        events.push(events::follow("user.unfollowed", a, b));
                    }
                }
                events.push(events::block("user.blocked", me, target));
            }
            inserted
        }
        EdgeChange::Unblock => {
            let deleted = graph::delete_block(tx.conn(), me, target).await?;
            if deleted {
                events.push(events::block("user.unblocked", me, target));
            }
            deleted
        }
    };
    for event in &events {
        bus::outbox::enqueue(&mut tx, event).await?;
    }
    tx.commit().await?;
    changes.apply_to(&ctx.search);
    if changed {
        if op == EdgeChange::Follow {
            metrics::counter!("users_follows_total").increment(1);
        }
        ctx.outbox.wake();
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn follow(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<uuid::Uuid>,
) -> ApiResult<StatusCode> {
    change_edge(&ctx, &user, id, EdgeChange::Follow).await
}

async fn unfollow(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<uuid::Uuid>,
) -> ApiResult<StatusCode> {
    change_edge(&ctx, &user, id, EdgeChange::Unfollow).await
}

async fn block(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<uuid::Uuid>,
) -> ApiResult<StatusCode> {
    change_edge(&ctx, &user, id, EdgeChange::Block).await
}

async fn unblock(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<uuid::Uuid>,
) -> ApiResult<StatusCode> {
    change_edge(&ctx, &user, id, EdgeChange::Unblock).await
}

/// One page of `list` of `anchor`, as `viewer` sees it.
async fn page(
    ctx: &ApiContext,
    list: EdgeList,
    anchor: uuid::Uuid,
    viewer: uuid::Uuid,
    params: &PageParams,
) -> ApiResult<Page<Profile>> {
    let limit = cursor::limit(params.limit)?;
    let after = EdgeCursor::parse(params.cursor.as_deref())?;
    let (items, next) =
        graph::list_edges(ctx.db.pool(), list, anchor, viewer, &after, limit).await?;
    Ok(Page {
        items,
        next_cursor: next.map(|c| c.encode()),
    })
}

/// Lists of another user: 404 when the user is unknown or blocks the caller.
async fn others_page(
    ctx: &ApiContext,
    user: &AuthUser,
    id: uuid::Uuid,
    list: EdgeList,
    params: &PageParams,
) -> ApiResult<Page<Profile>> {
    let (me, target) = (user.id, id);
    if me != target {
        let flags = graph::pair_flags(ctx.db.pool(), me, target).await?;
        if flags.b_blocks_a {
            return Err(user_not_found());
        }
    }
    if profiles::get(ctx.db.pool(), target).await?.is_none() {
        return Err(user_not_found());
    }
    page(ctx, list, target, me, params).await
}

async fn followers(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<uuid::Uuid>,
    Query(params): Query<PageParams>,
) -> ApiResult<kit::http::Json<Page<Profile>>> {
    Ok(kit::http::Json(
        others_page(&ctx, &user, id, EdgeList::Followers, &params).await?,
    ))
}

async fn following(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<uuid::Uuid>,
    Query(params): Query<PageParams>,
) -> ApiResult<kit::http::Json<Page<Profile>>> {
    Ok(kit::http::Json(
        others_page(&ctx, &user, id, EdgeList::Following, &params).await?,
    ))
}

async fn my_followers(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Query(params): Query<PageParams>,
) -> ApiResult<kit::http::Json<Page<Profile>>> {
    let me = user.id;
    Ok(kit::http::Json(
        page(&ctx, EdgeList::Followers, me, me, &params).await?,
    ))
}

async fn my_following(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Query(params): Query<PageParams>,
) -> ApiResult<kit::http::Json<Page<Profile>>> {
    let me = user.id;
    Ok(kit::http::Json(
        page(&ctx, EdgeList::Following, me, me, &params).await?,
    ))
}

async fn list_friends(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Query(params): Query<PageParams>,
) -> ApiResult<kit::http::Json<Page<Profile>>> {
    let me = user.id;
    Ok(kit::http::Json(
        page(&ctx, EdgeList::Friends, me, me, &params).await?,
    ))
}

async fn list_blocks(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Query(params): Query<PageParams>,
) -> ApiResult<kit::http::Json<Page<Profile>>> {
    let me = user.id;
    Ok(kit::http::Json(
        page(&ctx, EdgeList::Blocks, me, me, &params).await?,
    ))
}

/// A suggestion: the profile and how many of the caller's follows follow it.
#[derive(Debug, Serialize)]
pub struct Suggestion {
    #[serde(flatten)]
    pub profile: Profile,
    pub mutual_count: i64,
}

async fn suggested(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Query(params): Query<PageParams>,
) -> ApiResult<kit::http::Json<Page<Suggestion>>> {
    let limit = cursor::limit(params.limit)?;
    let after = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => (i64::MAX, String::new()),
        Some(c) => {
            let p = cursor::decode("g", 2, c)?;
            (cursor::parse_i64(&p[0])?, p[1].clone())
        }
    };
    let mut rows =
        graph::suggestions(ctx.db.pool(), user.id, (after.0, &after.1), limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last()
            .map(|(id, score)| cursor::encode("g", &[&score.to_string(), id]))
    } else {
        None
    };
    let ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    let profiles = profiles::by_ids(ctx.db.pool(), &ids).await?;
    let scores: std::collections::HashMap<&str, i64> =
        rows.iter().map(|(id, s)| (id.as_str(), *s)).collect();
    let items = profiles
        .into_iter()
        .map(|p| {
            let mutual_count = scores.get(p.id.as_str()).copied().unwrap_or(0);
            Suggestion {
                profile: p,
                mutual_count,
            }
        })
        .collect();
    Ok(kit::http::Json(Page { items, next_cursor }))
}
