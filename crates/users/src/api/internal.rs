//! Routes for other services only (the gateway does not expose `/internal`).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use kit::ApiResult;
use kit::http::{Json, Path};

use super::OrInternal;
use crate::state::ApiContext;
use crate::store::{self, PairFlags};

pub fn router() -> Router<ApiContext> {
    Router::new().route("/internal/relationships/{a}/{b}", get(relationships))
}

/// `{a_blocks_b, b_blocks_a, a_follows_b, b_follows_a}` (all false for unknown users).
async fn relationships(
    State(ctx): State<ApiContext>,
    Path((a, b)): Path<(uuid::Uuid, uuid::Uuid)>,
) -> ApiResult<Json<PairFlags>> {
    let flags = store::pair_flags_pool(ctx.db.pool(), &a.to_string(), &b.to_string())
        .await
        .or_500()?;
    Ok(Json(flags))
}
