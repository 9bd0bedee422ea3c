//! Login, refresh-token rotation and logout.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use kit::http::Json;
use kit::net::ClientIp;
use kit::{ApiError, ApiResult};
use serde::Deserialize;

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

fn invalid_credentials() -> ApiError {
    ApiError::unauthorized("invalid_credentials", "the login or password is incorrect")
}

/// POST /auth/login
///
/// Brute force is kept slow without letting anyone lock a victim out (see [`admit`]):
/// failures count per account (username and email share one counter; an unknown login
/// counts under its normalised string), per (account, client IP) and per IP. The last
/// two refuse with 429; the account alone only slows its logins down. A valid device
/// token of the account skips the account and address limits, so the owner logs in at
/// once during an attack.
async fn login(
    State(ctx): State<ApiContext>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Json(body): Json<LoginBody>,
) -> ApiResult<Json<TokenResponse>> {
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
    if let Gate::Slowed { delay_ms } = gate {
        metrics::counter!("auth_logins_total", "outcome" => "slowed").increment(1);
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
    }

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
        match &gate {
            // A device token's failures count against that device only (it is locked
            // like an address once it reaches the per-address limit).
            Gate::Device { key } => store::throttle::record(tx.conn(), key, now).await?,
            Gate::Open | Gate::Slowed { .. } => {
                for key in [&keys.account, &keys.account_ip, &keys.ip] {
                    store::throttle::record(tx.conn(), key, now).await?;
                }
            }
        }
        tx.commit().await?;
        metrics::counter!("auth_logins_total", "outcome" => "invalid_credentials").increment(1);
        return Err(invalid_credentials());
    };
    // A success forgives the failures of what it came through: the device token, or
    // else the address. The account's own counter is left to age out (a success of the
    // owner must not give guessers elsewhere a fresh allowance), and so is an address's
    // when its device token logged in (others may guess from behind the same NAT).
    let forgiven = match &gate {
        Gate::Device { key } => key,
        Gate::Open | Gate::Slowed { .. } => &keys.account_ip,
    };
    store::throttle::clear(tx.conn(), forgiven).await?;
    store::throttle::purge(tx.conn(), now - ctx.config.login_window_secs * 1000).await?;
    // The presented device token is replaced by the new one `start_session` issues.
    if let Some(hash) = &device {
        store::devices::delete(tx.conn(), hash).await?;
    }
    let tokens = start_session(&ctx, &mut tx, &user, user_agent(&headers), ip.to_string()).await?;
    tx.commit().await?;
    metrics::counter!("auth_logins_total", "outcome" => "success").increment(1);
    tracing::info!(user_id = %user.id, "login");
    Ok(Json(tokens))
}

/// The throttle keys of one login attempt.
struct ThrottleKeys {
    /// `account:<id>`, or `login:<normalised login>` when no account has that login.
    account: String,
    /// `account_ip:<account key>|<client address>`.
    account_ip: String,
    /// `ip:<client address>`.
    ip: String,
}

impl ThrottleKeys {
    fn new(account: Option<uuid::Uuid>, login: &str, ip: std::net::IpAddr) -> Self {
        let account = match account {
            Some(id) => format!("account:{id}"),
            None => format!("login:{login}"),
        };
        // An IPv6 client is counted by its /64: one subscriber or host usually gets a
        // whole /64 (RFC 6177), i.e. 2^64 addresses to rotate through.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            v4 => v4.to_string(),
        };
        Self {
            account_ip: format!("account_ip:{account}|{ip}"),
            account,
            ip: format!("ip:{ip}"),
        }
    }
}

/// How a login attempt may proceed.
enum Gate {
    /// A valid device token of the account: no account or address limit; failures count
    /// under `key` (`device:<token hash>`).
    Device { key: String },
    /// Within every limit.
    Open,
    /// The account is over its failure limit: answer after `delay_ms`.
    Slowed { delay_ms: u64 },
}

/// Failures an address may have on an account over its limit before that address is
/// refused for the rest of the window: a typo and one more try. Every address still
/// gets its first guesses, so someone with the password on a new device is never locked
/// out by others' failures; a guesser spread over many addresses gets about two guesses
/// per address and window instead of `login_max_failures_per_account_ip`.
const FAILURES_PER_ADDRESS_UNDER_ATTACK: i64 = 2;

/// First delay for an account over its limit; it doubles with each further failure up
/// to `login_slowdown_max_ms` (250, 500, 1000, 2000, 3000 ms by default).
const SLOWDOWN_BASE_MS: u64 = 250;

/// Decides whether a login may proceed: 429 (with `Retry-After`) when the client IP or
/// the (account, IP) pair is over its limit; slowed down when only the account is.
async fn admit(ctx: &ApiContext, keys: &ThrottleKeys, device: Option<&str>) -> ApiResult<Gate> {
    let config = &ctx.config;
    let now = kit::time::now_ms();
    let window_ms = config.login_window_secs * 1000;
    let since = now - window_ms;
    let mut conn = ctx.db.pool().acquire().await?;
    if let Some(hash) = device {
        let key = format!("device:{hash}");
        let (n, _) = store::throttle::failures(&mut conn, &key, since).await?;
        if n < config.login_max_failures_per_account_ip {
            return Ok(Gate::Device { key });
        }
        // A device token that keeps failing no longer helps: the ordinary limits apply.
    }
    let refuse = |max: i64, oldest: Option<i64>| {
        let retry_ms = oldest
            .map(|o| o + window_ms - now)
            .unwrap_or(window_ms)
            .max(1000);
        metrics::counter!("auth_logins_total", "outcome" => "throttled").increment(1);
        ApiError::rate_limited(retry_ms as u64, max as u32)
    };
    let (n, oldest) = store::throttle::failures(&mut conn, &keys.ip, since).await?;
    if n >= config.login_max_failures_per_ip {
        return Err(refuse(config.login_max_failures_per_ip, oldest));
    }
    let (account_failures, _) = store::throttle::failures(&mut conn, &keys.account, since).await?;
    let under_attack = account_failures >= config.login_max_failures_per_account;
    let pair_max = if under_attack {
        config
            .login_max_failures_per_account_ip
            .min(FAILURES_PER_ADDRESS_UNDER_ATTACK)
    } else {
        config.login_max_failures_per_account_ip
    };
    let (n, oldest) = store::throttle::failures(&mut conn, &keys.account_ip, since).await?;
    if n >= pair_max {
        return Err(refuse(pair_max, oldest));
    }
    if !under_attack {
        return Ok(Gate::Open);
    }
    let over = (account_failures - config.login_max_failures_per_account).clamp(0, 16) as u32;
    let delay_ms = SLOWDOWN_BASE_MS
        .saturating_mul(1 << over)
        .min(config.login_slowdown_max_ms.max(0) as u64);
    Ok(Gate::Slowed { delay_ms })
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
    let invalid =
        || ApiError::unauthorized("invalid_token", "the refresh token is invalid or expired");
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
            "refresh_token_reused",
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
