//! Routes for other services only. Not under `/auth`, so the gateway (which routes
//! `/auth/...` here and answers 404 to any `/internal/...`) never exposes them.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use kit::ApiResult;
use kit::http::{Json, Query};
use serde::{Deserialize, Serialize};

use super::revocation_window_ms;
use crate::state::ApiContext;
use crate::store;

pub fn router() -> Router<ApiContext> {
    Router::new().route(token::verify::REVOCATIONS_PATH, get(revocations))
}

#[derive(Deserialize)]
struct RevocationsParams {
    /// Epoch ms; absent = every session whose tokens may still be live.
    #[serde(default)]
    since_ms: Option<i64>,
}

#[derive(Serialize)]
struct Revocation {
    session_id: uuid::Uuid,
    /// Epoch ms until which the session's access tokens must be refused: its revocation
    /// plus the token lifetime and 60 s of clock leeway (the `until` of the
    /// `session.revoked` event, which is in seconds).
    until: i64,
}

#[derive(Serialize)]
struct Revocations {
    items: Vec<Revocation>,
}

/// `GET /internal/revocations?since_ms=` — sessions ended (logout, logout-all, session
/// deletion, password change or reset, refresh-token reuse) at or after `since_ms`, so
/// a service that restarts refuses their tokens again (its in-process list is gone).
/// Sessions that ended longer ago than a token lives are left out: none of their
/// tokens can still pass, so they need no entry (this bounds the answer to the logouts
/// of the last ~16 minutes by default). Sessions that ended by idle or absolute timeout
/// are not listed: nothing cut their tokens short, which expire on their own.
async fn revocations(
    State(ctx): State<ApiContext>,
    Query(params): Query<RevocationsParams>,
) -> ApiResult<Json<Revocations>> {
    let window = revocation_window_ms(&ctx.config);
    let live_from = kit::time::now_ms() - window;
    let since = params.since_ms.unwrap_or(live_from).max(live_from);
    let items = store::sessions::revoked_since(ctx.db.pool(), since)
        .await?
        .into_iter()
        .map(|(session_id, revoked_at)| Revocation {
            session_id,
            until: revoked_at + window,
        })
        .collect();
    Ok(Json(Revocations { items }))
}
