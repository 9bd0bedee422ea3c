//! `GET/PATCH /users/me`, `GET /users/{id}`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use kit::http::{Json, Path};
use kit::{ApiError, ApiResult};
use serde::Serialize;
use token::AuthUser;

use super::{ensure_me, user_not_found};
use crate::domain::{Profile, ProfilePatch, Relationship};
use crate::events;
use crate::search::feed::Changes;
use crate::state::ApiContext;
use crate::store::{graph, profiles};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/users/me", get(get_me).patch(patch_me))
        .route("/users/{id}", get(get_user))
}

async fn get_me(State(ctx): State<ApiContext>, user: AuthUser) -> ApiResult<Json<Profile>> {
    Ok(Json(ensure_me(&ctx, &user).await?))
}

async fn patch_me(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Json(body): Json<ProfilePatch>,
) -> ApiResult<Json<Profile>> {
    let patch = body.validate().map_err(ApiError::validation_many)?;
    let current = ensure_me(&ctx, &user).await?;
    if patch.is_empty() {
        return Ok(Json(current));
    }
    let mut tx = ctx.db.begin().await?;
    let mut changes = Changes::default();
    let profile = profiles::patch(&mut tx, ctx.db.backend(), user.id, &patch, &mut changes)
        .await?
        .ok_or_else(|| ApiError::internal("profile vanished during PATCH"))?;
    bus::outbox::enqueue(&mut tx, &events::profile_updated(&profile)).await?;
    tx.commit().await?;
    changes.apply_to(&ctx.search);
    ctx.outbox.wake();
    Ok(Json(profile))
}

#[derive(Serialize)]
struct ProfileWithRelationship {
    #[serde(flatten)]
    profile: Profile,
    relationship: Relationship,
}

async fn get_user(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<uuid::Uuid>,
) -> ApiResult<Json<ProfileWithRelationship>> {
    let (me, target) = (user.id, id);
    let flags = graph::pair_flags(ctx.db.pool(), me, target).await?;
    // A blocker is invisible to the people it blocks: same answer as for no such user.
    if flags.b_blocks_a {
        return Err(user_not_found());
    }
    let profile = profiles::get(ctx.db.pool(), target)
        .await?
        .ok_or_else(user_not_found)?;
    let relationship = if me == target {
        Relationship::default()
    } else {
        flags.relationship()
    };
    Ok(Json(ProfileWithRelationship {
        profile,
        relationship,
    }))
}
