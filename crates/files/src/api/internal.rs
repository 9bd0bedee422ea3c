//! `POST /internal/files/lookup` `{owner_id, ids}` → `{items: [File]}`: the files among
//! `ids` that exist and were uploaded by `owner_id`, in the order of `ids` (chat calls it
//! when a message carries `attachment_ids`); the 24 h until their collection start again.
//! The gateway never exposes `/internal/…`.

use std::collections::HashMap;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use kit::ApiResult;
use kit::http::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::FileView;
use crate::state::ApiContext;
use crate::store::files;

/// Ids per lookup at most: a message carries ≤ 10 attachments (API.md); 100 leaves room
/// for a batch without letting one request build an unbounded `IN (…)`.
pub const MAX_LOOKUP_IDS: usize = 100;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/internal/files/lookup", post(lookup))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupBody {
    owner_id: Uuid,
    ids: Vec<Uuid>,
}

#[derive(Debug, Serialize)]
struct Items {
    items: Vec<FileView>,
}

async fn lookup(
    State(ctx): State<ApiContext>,
    Json(body): Json<LookupBody>,
) -> ApiResult<Json<Items>> {
    if body.ids.len() > MAX_LOOKUP_IDS {
        return Err(kit::ApiError::validation(
            "ids",
            format!("at most {MAX_LOOKUP_IDS} ids"),
        ));
    }
    // Touched before it is read: once the collector's single-statement delete has lost
    // this race the file is not found (chat answers 400 invalid_attachment); once it is
    // touched, the collector waits another full period.
    files::touch(ctx.db.pool(), body.owner_id, &body.ids, kit::time::now_ms()).await?;
    let found: HashMap<Uuid, FileView> =
        files::owned_among(ctx.db.pool(), body.owner_id, &body.ids)
            .await?
            .iter()
            .map(|f| (f.id, FileView::from(f)))
            .collect();
    let mut seen = std::collections::HashSet::new();
    let items = body
        .ids
        .iter()
        .filter(|id| seen.insert(**id))
        .filter_map(|id| found.get(id).cloned())
        .collect();
    Ok(Json(Items { items }))
}
