//! `POST /notifications/unsubscribe?token=`: the one-click email opt-out of RFC 8058 (a
//! mail client POSTs `List-Unsubscribe=One-Click` to the `List-Unsubscribe` URL). No
//! login: the token, an HMAC of the user id, is the authority. It sets the `email`
//! preference to `off`; again is harmless (204 each time).

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use kit::{ApiError, ApiResult};
use serde::Deserialize;

use crate::state::ApiContext;
use crate::store::email;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/notifications/unsubscribe", post(unsubscribe))
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// The body (`List-Unsubscribe=One-Click`, form-encoded) is not read: the token alone
/// decides, so a client sending another body or none still opts out.
async fn unsubscribe(
    State(ctx): State<ApiContext>,
    Query(q): Query<TokenQuery>,
) -> ApiResult<StatusCode> {
    let Some(user) = ctx.unsubscribe.verify(&q.token) else {
        return Err(ApiError::bad_request(
            kit::error::code::INVALID_TOKEN,
            "the unsubscribe token is not valid",
        ));
    };
    email::email_off(ctx.db.pool(), user, kit::time::now_ms()).await?;
    tracing::info!(%user, "email notifications turned off by the unsubscribe link");
    Ok(StatusCode::NO_CONTENT)
}
