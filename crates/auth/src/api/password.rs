//! Password change and reset.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use kit::http::Json;
use kit::net::ClientIp;
use kit::{ApiError, ApiResult};
use serde::Deserialize;

use super::throttle::check_current_password;
use super::{CurrentSession, publish_revoked};
use crate::domain::{Email, Password};
use crate::events::{self, PasswordChanged};
use crate::state::ApiContext;
use crate::store;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/auth/password", post(change))
        .route("/auth/password-reset/request", post(request_reset))
        .route("/auth/password-reset/confirm", post(confirm_reset))
}

#[derive(Deserialize)]
struct ChangeBody {
    current_password: String,
    new_password: String,
}

/// POST /auth/password — ends every other session and voids outstanding reset tokens.
async fn change(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
    ClientIp(ip): ClientIp,
    Json(body): Json<ChangeBody>,
) -> ApiResult<StatusCode> {
    let new_password = Password::parse(&body.new_password, "new_password")
        .map_err(|e| ApiError::validation_many(vec![e]))?;
    let user = store::users::by_id(ctx.db.pool(), caller.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("account not found"))?;
    if !check_current_password(&ctx, &user, &body.current_password, ip).await? {
        return Err(ApiError::forbidden(
            kit::error::code::INVALID_CREDENTIALS,
            "the current password is incorrect",
        ));
    }
    let hash = ctx.hasher.hash(new_password.expose()).await?;
    let now = kit::time::now_ms();
    let mut tx = ctx.db.begin().await?;
    store::users::set_password(tx.conn(), user.id, &hash, now).await?;
    store::resets::void_all(tx.conn(), user.id, now).await?;
    let ended =
        store::sessions::revoke_all(tx.conn(), user.id, Some(caller.session_id), now).await?;
    publish_revoked(&ctx, &mut tx, user.id, &ended).await?;
    let event = bus::Envelope::new(
        events::SOURCE,
        "user.password_changed",
        PasswordChanged { user_id: user.id },
    );
    bus::outbox::enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    ctx.outbox.wake();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ResetRequestBody {
    email: String,
}

/// POST /auth/password-reset/request — 202 whether or not the account exists; the
/// lookup and mail happen in the background so timing does not tell either.
async fn request_reset(
    State(ctx): State<ApiContext>,
    Json(body): Json<ResetRequestBody>,
) -> ApiResult<StatusCode> {
    let email = Email::parse(&body.email).map_err(|e| ApiError::validation_many(vec![e]))?;
    tokio::spawn(async move {
        if let Err(e) = send_reset(&ctx, &email).await {
            tracing::error!(error = %e, "password reset mail failed");
        }
    });
    Ok(StatusCode::ACCEPTED)
}

async fn send_reset(ctx: &ApiContext, email: &Email) -> anyhow::Result<()> {
    let Some(user) = store::users::by_email_key(ctx.db.pool(), email.key()).await? else {
        return Ok(());
    };
    let token = store::random_token();
    let now = kit::time::now_ms();
    let ttl_ms = ctx.config.password_reset_ttl_secs * 1000;
    let mut tx = ctx.db.begin().await?;
    store::resets::insert(
        tx.conn(),
        &store::token_hash(&token),
        user.id,
        now,
        now + ttl_ms,
    )
    .await?;
    tx.commit().await?;
    let minutes = ctx.config.password_reset_ttl_secs / 60;
    let body = format!(
        "Hello {username},\n\nsomeone asked to reset the password of your IntelliColab account \
         {username}.\n\
         Your reset token (valid for {minutes} minutes, usable once):\n\n{token}\n\n\
         Open {url}/#/reset?token={token} or send it to POST /auth/password-reset/confirm.\n\
         If this was not you, ignore this mail; your password is unchanged.\n",
        username = user.username,
        url = ctx.config.public_url.trim_end_matches('/'),
    );
    ctx.mailer
        .send(&user.email, "Reset your IntelliColab password", body)
        .await
}

#[derive(Deserialize)]
struct ResetConfirmBody {
    token: String,
    new_password: String,
}

/// POST /auth/password-reset/confirm — single use; ends every session, voids every other
/// outstanding reset token of the user and forgets the account's device tokens.
async fn confirm_reset(
    State(ctx): State<ApiContext>,
    Json(body): Json<ResetConfirmBody>,
) -> ApiResult<StatusCode> {
    let new_password = Password::parse(&body.new_password, "new_password")
        .map_err(|e| ApiError::validation_many(vec![e]))?;
    let hash = ctx.hasher.hash(new_password.expose()).await?;
    let now = kit::time::now_ms();
    let mut tx = ctx.db.begin().await?;
    let Some(user_id) =
        store::resets::consume(tx.conn(), &store::token_hash(body.token.trim()), now).await?
    else {
        return Err(ApiError::bad_request(
            kit::error::code::INVALID_TOKEN,
            "the reset token is unknown, used or expired",
        ));
    };
    store::users::set_password(tx.conn(), user_id, &hash, now).await?;
    store::resets::void_all(tx.conn(), user_id, now).await?;
    // Whoever had the account before the reset may have collected device tokens.
    store::devices::delete_all(tx.conn(), user_id).await?;
    let ended = store::sessions::revoke_all(tx.conn(), user_id, None, now).await?;
    publish_revoked(&ctx, &mut tx, user_id, &ended).await?;
    let event = bus::Envelope::new(
        events::SOURCE,
        "user.password_changed",
        PasswordChanged { user_id },
    );
    bus::outbox::enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    ctx.outbox.wake();
    Ok(StatusCode::NO_CONTENT)
}
