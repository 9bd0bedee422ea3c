//! Deleting one's own account (`DELETE /auth/me`).
//!
//! Every session ends at once, as with logout-all (`session.revoked` events; this
//! process refuses the tokens before the 204, others within the revocation propagation
//! of docs/operations.md). The account row stays, anonymised (see
//! `store::users::anonymise`), so its revoked sessions keep answering `GET
//! /internal/revocations` for the services that poll it; every secret and pending token
//! goes. The username and email stay reserved for `deleted_name_reserve_secs` (30 days):
//! registering either within that time is 409 `username_taken` / `email_taken`.
//! `user.deleted {user_id}` tells the other services to drop what they hold.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::delete;
use kit::http::Json;
use kit::net::ClientIp;
use kit::{ApiError, ApiResult};
use serde::Deserialize;

use super::throttle::check_current_password;
use super::{CurrentSession, publish_revoked};
use crate::events::{self, UserDeleted};
use crate::state::ApiContext;
use crate::store::{self, accounts};

pub fn router() -> Router<ApiContext> {
    Router::new().route("/auth/me", delete(delete_account))
}

#[derive(Deserialize)]
struct DeleteBody {
    current_password: String,
}

/// DELETE /auth/me — 204; 403 `invalid_credentials` for a wrong password (counted as a
/// failed login, like `POST /auth/password`).
async fn delete_account(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
    ClientIp(ip): ClientIp,
    Json(body): Json<DeleteBody>,
) -> ApiResult<StatusCode> {
    let user = store::users::by_id(ctx.db.pool(), caller.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("account not found"))?;
    if !check_current_password(&ctx, &user, &body.current_password, ip).await? {
        return Err(ApiError::forbidden(
            kit::error::code::INVALID_CREDENTIALS,
            "the current password is incorrect",
        ));
    }
    let now = kit::time::now_ms();
    let reserved_until = now + ctx.config.deleted_name_reserve_secs * 1000;
    let email_key = crate::domain::Email::parse(&user.email)
        .map(|e| e.key().to_owned())
        .unwrap_or_else(|_| user.email.to_lowercase());
    let mut tx = ctx.db.begin().await?;
    let ended = store::sessions::revoke_all(tx.conn(), user.id, None, now).await?;
    publish_revoked(&ctx, &mut tx, user.id, &ended).await?;
    accounts::retire(
        tx.conn(),
        &accounts::username_key(&user.username),
        reserved_until,
    )
    .await?;
    accounts::retire(tx.conn(), &accounts::email_key(&email_key), reserved_until).await?;
    accounts::purge_secrets(tx.conn(), user.id).await?;
    store::users::anonymise(tx.conn(), user.id, now).await?;
    let event = bus::Envelope::new(
        events::SOURCE,
        "user.deleted",
        UserDeleted { user_id: user.id },
    );
    bus::outbox::enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    ctx.outbox.wake();
    metrics::counter!("auth_accounts_deleted_total").increment(1);
    tracing::info!(user_id = %user.id, "account deleted");

    let body = format!(
        "Hello {username},\n\nyour IntelliColab account {username} was deleted and every \
         session of it ended.\nThe username and this address stay reserved for {days} days.\n\n\
         If this was not you, contact the operators of this IntelliColab service at once.\n",
        username = user.username,
        days = ctx.config.deleted_name_reserve_secs / 86_400,
    );
    let (mailer, to) = (ctx.mailer.clone(), user.email.clone());
    tokio::spawn(async move {
        if let Err(e) = mailer
            .send(&to, "Your IntelliColab account was deleted", body)
            .await
        {
            tracing::error!(error = %e, "account deletion notice failed");
        }
    });
    Ok(StatusCode::NO_CONTENT)
}
