//! Login, refresh-token rotation and logout.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use kit::http::Json;
use kit::net::ClientIp;
use kit::{ApiError, ApiResult};
use serde::Deserialize;

use super::throttle::{ThrottleKeys, admit};
use super::{
    CurrentSession, TokenResponse, UserView, access_token, publish_revoked, start_session,
    user_agent,
};
use crate::state::ApiContext;
use crate::store;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/logout-all", post(logout_all))
}

#[derive(Deserialize)]
struct LoginBody {
    login: String,
    password: String,
    /// A device token from an earlier successful login (OWASP "device cookies").
    #[serde(default)]
    device_token: Option<String>,
}

/// Tokens, or (the account has two-factor login on) the start of the second step.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum LoginResponse {
    Tokens(TokenResponse),
    MfaRequired(super::mfa::MfaRequired),
}

fn invalid_credentials() -> ApiError {
    ApiError::unauthorized(
        kit::error::code::INVALID_CREDENTIALS,
        "the login or password is incorrect",
    )
}

/// POST /auth/login
///
/// Brute force is kept slow without letting anyone lock a victim out (see
/// [`super::throttle`]):
/// failures count per account (username and email share one counter; an unknown login
/// counts under its normalised string), per (account, client IP) and per IP. The last
/// two refuse with 429; the account alone only slows its logins down. A valid device
/// token of the account skips the account and address limits, so the owner logs in at
/// once during an attack. With two-factor login on, a right password answers
/// `{mfa_required, mfa_token, methods}` and `POST /auth/login/mfa` finishes.
async fn login(
    State(ctx): State<ApiContext>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Json(body): Json<LoginBody>,
) -> ApiResult<Json<LoginResponse>> {
    let login = body.login.trim().to_lowercase();
    if login.is_empty() || login.chars().count() > 254 {
        return Err(ApiError::validation(
            "login",
            "must be a username or an email address",
        ));
    }
    let user = store::users::by_login(ctx.db.pool(), &login).await?;
    let keys = ThrottleKeys::new(user.as_ref().map(|u| u.id), &login, ip);
    let device = match (&user, body.device_token.as_deref().map(str::trim)) {
        (Some(u), Some(t)) if !t.is_empty() => {
            let hash = store::token_hash(t);
            store::devices::is_valid(ctx.db.pool(), &hash, u.id, kit::time::now_ms())
                .await?
                .then_some(hash)
        }
        _ => None,
    };
    let gate = admit(&ctx, &keys, device.as_deref()).await?;
    gate.wait().await;

    // Unknown users cost one hash too: no timing difference, identical answer.
    let ok = ctx
        .hasher
        .verify(
            &body.password,
            user.as_ref().map(|u| u.password_hash.as_str()),
        )
        .await?;
    let now = kit::time::now_ms();
    let mut tx = ctx.db.begin().await?;
    let Some(user) = user.filter(|_| ok) else {
        keys.record_failure(tx.conn(), &gate, now).await?;
        tx.commit().await?;
        metrics::counter!("auth_logins_total", "outcome" => "invalid_credentials").increment(1);
        return Err(invalid_credentials());
    };
    if user.mfa_enabled {
        // The password was right; the second step decides (see `super::mfa` for why
        // nothing is forgiven yet). The device token stays as it is until then.
        let required = super::mfa::challenge(&ctx, &mut tx, &user, now).await?;
        tx.commit().await?;
        return Ok(Json(LoginResponse::MfaRequired(required)));
    }
    keys.forgive(tx.conn(), &gate).await?;
    store::throttle::purge(tx.conn(), now - ctx.config.login_window_secs * 1000).await?;
    // The presented device token is replaced by the new one `start_session` issues.
    if let Some(hash) = &device {
        store::devices::delete(tx.conn(), hash).await?;
    }
    let tokens = start_session(&ctx, &mut tx, &user, user_agent(&headers), ip.to_string()).await?;
    tx.commit().await?;
    metrics::counter!("auth_logins_total", "outcome" => "success").increment(1);
    tracing::info!(user_id = %user.id, "login");
    Ok(Json(LoginResponse::Tokens(tokens)))
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

/// POST /auth/refresh — rotates the refresh token; a rotated one presented again ends
/// the whole session (RFC 9700 reuse detection).
async fn refresh(
    State(ctx): State<ApiContext>,
    ClientIp(ip): ClientIp,
    Json(body): Json<RefreshBody>,
) -> ApiResult<Json<TokenResponse>> {
    let invalid = || {
        ApiError::unauthorized(
            kit::error::code::INVALID_TOKEN,
            "the refresh token is invalid or expired",
        )
    };
    let hash = store::token_hash(body.refresh_token.trim());
    let now = kit::time::now_ms();
    let mut tx = ctx.db.begin().await?;
    let Some((session_id, used)) = store::sessions::find_refresh(tx.conn(), &hash).await? else {
        return Err(invalid());
    };
    let session = store::sessions::get(tx.conn(), session_id)
        .await?
        .ok_or_else(invalid)?;
    if used || !store::sessions::use_refresh(tx.conn(), &hash, now).await? {
        if store::sessions::revoke(tx.conn(), session_id, now).await? {
            publish_revoked(&ctx, &mut tx, session.user_id, &[session_id]).await?;
        }
        tx.commit().await?;
        ctx.outbox.wake();
        tracing::warn!(session_id = %session_id, "refresh token reused; session revoked");
        return Err(ApiError::unauthorized(
            kit::error::code::REFRESH_TOKEN_REUSED,
            "this refresh token was already used; the session has been ended",
        ));
    }
    if !session.is_active(now, ctx.config.session_idle_days * 86_400_000) {
        return Err(invalid());
    }
    let user = store::users::by_id(tx.conn(), session.user_id)
        .await?
        .ok_or_else(invalid)?;
    let refresh_token = store::random_token();
    store::sessions::insert_refresh(
        tx.conn(),
        &store::token_hash(&refresh_token),
        session_id,
        now,
    )
    .await?;
    store::sessions::touch(tx.conn(), session_id, now, &ip.to_string()).await?;
    tx.commit().await?;
    Ok(Json(TokenResponse {
        access_token: access_token(&ctx, &user, session_id)?,
        refresh_token,
        token_type: "Bearer",
        expires_in: ctx.config.access_token_ttl_secs,
        user: UserView::from(&user),
        device_token: None,
    }))
}

/// POST /auth/logout — ends the session of the access token.
async fn logout(State(ctx): State<ApiContext>, caller: CurrentSession) -> ApiResult<StatusCode> {
    let mut tx = ctx.db.begin().await?;
    if store::sessions::revoke(tx.conn(), caller.session_id, kit::time::now_ms()).await? {
        publish_revoked(&ctx, &mut tx, caller.user_id, &[caller.session_id]).await?;
    }
    tx.commit().await?;
    ctx.outbox.wake();
    Ok(StatusCode::NO_CONTENT)
}

/// POST /auth/logout-all — ends every session of the user.
async fn logout_all(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
) -> ApiResult<StatusCode> {
    let mut tx = ctx.db.begin().await?;
    let ended =
        store::sessions::revoke_all(tx.conn(), caller.user_id, None, kit::time::now_ms()).await?;
    publish_revoked(&ctx, &mut tx, caller.user_id, &ended).await?;
    tx.commit().await?;
    ctx.outbox.wake();
    Ok(StatusCode::NO_CONTENT)
}
