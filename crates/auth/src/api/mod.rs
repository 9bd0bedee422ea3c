//! HTTP API of the auth service, one module per feature.

mod accounts;
mod deletion;
mod email;
mod internal;
mod keys;
mod login;
mod mfa;
mod passkeys;
mod password;
mod sessions;
mod throttle;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use kit::ApiError;
use kit::db::Tx;
use serde::Serialize;

use crate::events::{self, SessionRevoked};
use crate::state::ApiContext;
use crate::store::{self, sessions::SessionRow, users::UserRow};

pub fn router(ctx: ApiContext) -> Router {
    Router::new()
        .merge(accounts::router())
        .merge(deletion::router())
        .merge(email::router())
        .merge(internal::router())
        .merge(login::router())
        .merge(mfa::router())
        .merge(passkeys::router())
        .merge(password::router())
        .merge(sessions::router())
        .merge(keys::router())
        .with_state(ctx)
}

/// The public view of an account (API.md `user`).
#[derive(Serialize)]
pub struct UserView {
    pub id: uuid::Uuid,
    pub username: String,
    pub email: String,
    pub display_name: String,
    #[serde(serialize_with = "kit::time::ser_rfc3339::serialize")]
    pub created_at: i64,
    pub email_verified: bool,
    pub mfa_enabled: bool,
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> Self {
        Self {
            id: u.id,
            username: u.username.clone(),
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            created_at: u.created_at,
            email_verified: u.email_verified_at.is_some(),
            mfa_enabled: u.mfa_enabled,
        }
    }
}

#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub user: UserView,
    /// Issued by login and registration (not by refresh): present it at later logins
    /// from this device to pass the per-account throttle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

/// The caller, from a valid access token whose session is still active in this
/// service's own database (so a logout takes effect here at once).
pub struct CurrentSession {
    pub user_id: uuid::Uuid,
    pub session_id: uuid::Uuid,
}

impl FromRequestParts<ApiContext> for CurrentSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &ApiContext,
    ) -> Result<Self, Self::Rejection> {
        let user = token::AuthUser::from_request_parts(parts, ctx).await?;
        let session = store::sessions::get(ctx.db.pool(), user.session_id).await?;
        let idle_ms = ctx.config.session_idle_days * 86_400_000;
        match session {
            Some(s) if s.user_id == user.id && s.is_active(kit::time::now_ms(), idle_ms) => {
                Ok(Self {
                    user_id: user.id,
                    session_id: user.session_id,
                })
            }
            _ => Err(token::extract::rejection(token::TokenError::Revoked)),
        }
    }
}

/// Signs an access token for a session.
pub fn access_token(
    ctx: &ApiContext,
    user: &UserRow,
    session_id: uuid::Uuid,
) -> Result<String, ApiError> {
    let now = kit::time::now_ms() / 1000;
    let claims = token::Claims {
        iss: token::ISSUER.to_owned(),
        aud: token::AUDIENCE.to_owned(),
        sub: user.id,
        sid: session_id,
        exp: now + ctx.config.access_token_ttl_secs,
        iat: now,
        jti: uuid::Uuid::now_v7(),
        username: user.username.clone(),
    };
    ctx.keys.sign(&claims).map_err(ApiError::from)
}

/// Starts a session for `user` inside `tx` and returns its tokens, with a new device
/// token.
pub async fn start_session(
    ctx: &ApiContext,
    tx: &mut Tx,
    user: &UserRow,
    user_agent: String,
    ip: String,
) -> Result<TokenResponse, ApiError> {
    let now = kit::time::now_ms();
    let session = SessionRow {
        id: uuid::Uuid::now_v7(),
        user_id: user.id,
        created_at: now,
        last_used_at: now,
        expires_at: now + ctx.config.session_absolute_days * 86_400_000,
        revoked_at: None,
        user_agent,
        ip,
    };
    store::sessions::insert(tx.conn(), &session).await?;
    let refresh_token = store::random_token();
    store::sessions::insert_refresh(
        tx.conn(),
        &store::token_hash(&refresh_token),
        session.id,
        now,
    )
    .await?;
    let device_token = store::random_token();
    store::devices::insert(
        tx.conn(),
        &store::token_hash(&device_token),
        user.id,
        now,
        now + ctx.config.device_token_ttl_days * 86_400_000,
    )
    .await?;
    Ok(TokenResponse {
        access_token: access_token(ctx, user, session.id)?,
        refresh_token,
        token_type: "Bearer",
        expires_in: ctx.config.access_token_ttl_secs,
        user: UserView::from(user),
        device_token: Some(device_token),
    })
}

/// How long after a session ends one of its access tokens can still be presented: the
/// token lifetime plus 60 s for clock differences between services (what the verifiers
/// tolerate). A revocation matters only that long.
pub fn revocation_window_ms(config: &crate::Config) -> i64 {
    (config.access_token_ttl_secs + 60) * 1000
}

/// Writes a `session.revoked` event for each session in `tx`.
pub async fn publish_revoked(
    ctx: &ApiContext,
    tx: &mut Tx,
    user_id: uuid::Uuid,
    sessions: &[uuid::Uuid],
) -> Result<(), ApiError> {
    // Tokens issued before now expire by `until` (unix seconds); services reject the
    // session until then. `GET /internal/revocations` reports the same moment in ms.
    let until = (kit::time::now_ms() + revocation_window_ms(&ctx.config)) / 1000;
    for sid in sessions {
        let event = bus::Envelope::new(
            events::SOURCE,
            "session.revoked",
            SessionRevoked {
                session_id: *sid,
                user_id,
                until,
            },
        );
        bus::outbox::enqueue(tx, &event).await?;
        // Every service of this process refuses the session before the client hears 204;
        // other processes learn it from the event (≤ 1 s, see docs/operations.md).
        token::revoke_in_process(*sid, until);
    }
    metrics::counter!("auth_sessions_revoked_total").increment(sessions.len() as u64);
    Ok(())
}

/// `User-Agent` of a request, bounded.
pub fn user_agent(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect())
        .unwrap_or_default()
}

/// Collects field errors from several parses into one 400.
pub fn collect_errors(errors: Vec<kit::error::FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation_many(errors))
    }
}
