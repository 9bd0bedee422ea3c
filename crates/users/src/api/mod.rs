//! HTTP routes of the user service, one module per feature.

pub mod graph;
pub mod internal;
pub mod openapi;
pub mod profiles;
pub mod search;

use axum::Router;
use kit::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use token::AuthUser;

use crate::domain::Profile;
use crate::search::feed::Changes;
use crate::state::ApiContext;
use crate::store;
use crate::store::profiles::IdentityChange;

pub fn router(ctx: ApiContext) -> Router {
    Router::new()
        .merge(profiles::router())
        .merge(search::router())
        .merge(graph::router())
        .merge(internal::router())
        .merge(openapi::router())
        .with_state(ctx)
}

/// `{items, next_cursor}`.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// `?limit=&cursor=` of list routes.
#[derive(Debug, Default, Deserialize)]
pub struct PageParams {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

// Storage errors propagate with `?`: kit's `From<sqlx::Error> for ApiError` answers an
// unreachable database (pool timeout, I/O, closed pool, PostgreSQL connection
// exceptions) with 503 `database_unavailable` + `Retry-After` and anything else with a
// logged 500, so a client can tell "retry later" from a bug.

pub fn user_not_found() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        kit::error::code::USER_NOT_FOUND,
        "no such user",
    )
}

/// The caller's profile, created from the token (`sub`, `username`) when the auth
/// service's `user.registered` event has not arrived yet; the event later fills in the
/// display name and creation time.
pub async fn ensure_me(ctx: &ApiContext, user: &AuthUser) -> ApiResult<Profile> {
    if let Some(p) = store::profiles::get(ctx.db.pool(), user.id).await? {
        return Ok(p);
    }
    if user.username.trim().is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            kit::error::code::PROFILE_NOT_FOUND,
            "no profile exists for this account yet",
        ));
    }
    let mut tx = ctx.db.begin().await?;
    let change = IdentityChange {
        id: user.id,
        version: "",
        username: Some(&user.username),
        display_name: None,
        created_at: None,
    };
    let mut changes = Changes::default();
    store::profiles::apply_identity(&mut tx, ctx.db.backend(), &change, &mut changes).await?;
    let profile = store::profiles::get(tx.conn(), user.id).await?;
    tx.commit().await?;
    changes.apply_to(&ctx.search);
    // None: the account was deleted (its tombstone is never revived), and this token
    // is still within the revocation propagation time.
    profile.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            kit::error::code::PROFILE_NOT_FOUND,
            "no profile exists for this account",
        )
    })
}
