//! Registration and the caller's own account.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use kit::http::Json;
use kit::net::ClientIp;
use kit::{ApiError, ApiResult};
use serde::Deserialize;

use super::{CurrentSession, TokenResponse, UserView, collect_errors, start_session, user_agent};
use crate::domain::{DisplayName, Email, Password, Username};
use crate::events::{self, UserRegistered, UserUpdated};
use crate::state::ApiContext;
use crate::store::{self, accounts, users::NewUser};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/me", get(me).patch(update_me))
}

#[derive(Deserialize)]
struct RegisterBody {
    username: String,
    email: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
}

/// POST /auth/register
async fn register(
    State(ctx): State<ApiContext>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Json(body): Json<RegisterBody>,
) -> ApiResult<(StatusCode, Json<TokenResponse>)> {
    let mut errors = Vec::new();
    let username = Username::parse(&body.username)
        .map_err(|e| errors.push(e))
        .ok();
    let email = Email::parse(&body.email).map_err(|e| errors.push(e)).ok();
    let password = Password::parse(&body.password, "password")
        .map_err(|e| errors.push(e))
        .ok();
    // Blank means "use the username"; a value with a control character is refused even
    // when it trims to nothing (NEL, U+0085, is white space too).
    let display_name = match body
        .display_name
        .as_deref()
        .filter(|d| !d.trim().is_empty() || !kit::text::is_clean_label(d))
    {
        Some(d) => DisplayName::parse(d)
            .map_err(|e| errors.push(e))
            .ok()
            .map(|d| d.as_str().to_owned()),
        None => username.as_ref().map(|u| u.as_str().to_owned()),
    };
    collect_errors(errors)?;
    let (Some(username), Some(email), Some(password), Some(display_name)) =
        (username, email, password, display_name)
    else {
        return Err(ApiError::internal("validated fields missing"));
    };

    // Cheap conflict checks before the expensive hash; the unique constraints decide races.
    // A deleted account's names stay reserved for `deleted_name_reserve_secs`.
    let now = kit::time::now_ms();
    let pool = ctx.db.pool();
    if store::users::exists_username(pool, username.as_str()).await?
        || accounts::is_reserved(pool, &accounts::username_key(username.as_str()), now).await?
    {
        return Err(ApiError::conflict(
            kit::error::code::USERNAME_TAKEN,
            "that username is taken",
        ));
    }
    if store::users::by_email_key(pool, email.key())
        .await?
        .is_some()
        || accounts::is_reserved(pool, &accounts::email_key(email.key()), now).await?
    {
        return Err(ApiError::conflict(
            kit::error::code::EMAIL_TAKEN,
            "an account with that email exists",
        ));
    }
    let password_hash = ctx.hasher.hash(password.expose()).await?;

    let id = uuid::Uuid::now_v7();
    let mut tx = ctx.db.begin().await?;
    let new = NewUser {
        id,
        username: username.as_str(),
        email: email.as_str(),
        email_key: email.key(),
        display_name: &display_name,
        password_hash: &password_hash,
        now,
    };
    if let Err(e) = store::users::insert(tx.conn(), &new).await {
        if kit::db::is_unique_violation(&e) {
            drop(tx);
            return Err(
                if store::users::exists_username(ctx.db.pool(), username.as_str()).await? {
                    ApiError::conflict(kit::error::code::USERNAME_TAKEN, "that username is taken")
                } else {
                    ApiError::conflict(
                        kit::error::code::EMAIL_TAKEN,
                        "an account with that email exists",
                    )
                },
            );
        }
        return Err(e.into());
    }
    let user = store::users::by_id(tx.conn(), id)
        .await?
        .ok_or_else(|| ApiError::internal("inserted user missing"))?;
    let event = bus::Envelope::new(
        events::SOURCE,
        "user.registered",
        UserRegistered {
            user_id: id,
            username: &user.username,
            email: &user.email,
            display_name: &user.display_name,
            created_at: kit::time::rfc3339(now),
            email_verified: false,
        },
    );
    bus::outbox::enqueue(&mut tx, &event).await?;
    let mail = super::email::issue_verification(&ctx, &mut tx, &user, now).await?;
    let tokens = start_session(&ctx, &mut tx, &user, user_agent(&headers), ip.to_string()).await?;
    tx.commit().await?;
    ctx.outbox.wake();
    mail.send(&ctx);
    metrics::counter!("auth_registrations_total").increment(1);
    tracing::info!(user_id = %id, "account registered");
    Ok((StatusCode::CREATED, Json(tokens)))
}

/// GET /auth/me
async fn me(State(ctx): State<ApiContext>, caller: CurrentSession) -> ApiResult<Json<UserView>> {
    let user = store::users::by_id(ctx.db.pool(), caller.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("account not found"))?;
    Ok(Json(UserView::from(&user)))
}

#[derive(Deserialize)]
struct UpdateBody {
    /// Refused: changing the email needs the password and a confirmation mailed to the
    /// new address (`POST /auth/email`); a stolen access token alone must not do it.
    #[serde(default)]
    email: Option<serde_json::Value>,
    #[serde(default)]
    display_name: Option<String>,
}

/// PATCH /auth/me — change the display name (an addition to API.md); publishes
/// `user.updated` so the user service follows.
async fn update_me(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
    Json(body): Json<UpdateBody>,
) -> ApiResult<Json<UserView>> {
    let mut errors = Vec::new();
    if body.email.is_some_and(|e| !e.is_null()) {
        errors.push(crate::domain::field(
            "email",
            "cannot be changed here: use POST /auth/email with the current password",
        ));
    }
    let display_name = body
        .display_name
        .as_deref()
        .and_then(|d| DisplayName::parse(d).map_err(|e| errors.push(e)).ok());
    collect_errors(errors)?;
    let mut tx = ctx.db.begin().await?;
    let user = store::users::by_id(tx.conn(), caller.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("account not found"))?;
    let new_display = display_name
        .map(|d| d.as_str().to_owned())
        .unwrap_or_else(|| user.display_name.clone());
    store::users::set_display_name(tx.conn(), user.id, &new_display, kit::time::now_ms()).await?;
    let updated = store::users::by_id(tx.conn(), user.id)
        .await?
        .ok_or_else(|| ApiError::internal("updated user missing"))?;
    let event = bus::Envelope::new(events::SOURCE, "user.updated", UserUpdated::of(&updated));
    bus::outbox::enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    ctx.outbox.wake();
    Ok(Json(UserView::from(&updated)))
}
