//! Two-factor login with TOTP (RFC 6238) and recovery codes: setup, enable, disable,
//! and the second step of a login (`POST /auth/login/mfa`).
//!
//! Every code check goes through the login throttle ([`super::throttle`]): a wrong code
//! counts as a failed login of the account, so someone holding the password (or an
//! access token) gets no more guesses at the 10^6 codes than the login form gives at the
//! password (5 per address and 15 minutes by default, then 429). A password success
//! while a second step is pending forgives nothing — otherwise alternating a correct
//! password with code guesses would reset the count.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use kit::http::Json;
use kit::net::ClientIp;
use kit::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};

use super::throttle::{ThrottleKeys, admit, check_current_password};
use super::{CurrentSession, TokenResponse, start_session, user_agent};
use crate::state::ApiContext;
use crate::store::{self, mfa, users::UserRow};
use crate::totp;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/auth/mfa/totp/setup", post(setup))
        .route("/auth/mfa/totp/enable", post(enable))
        .route("/auth/mfa/totp/disable", post(disable))
        .route("/auth/login/mfa", post(login_mfa))
}

/// Recovery codes per enable: 10, each 80 random bits (16 base32 characters in four
/// groups) — far beyond guessing under the login throttle, short enough to type.
const RECOVERY_CODES: usize = 10;
const RECOVERY_CODE_BYTES: usize = 10;
/// Issuer shown by authenticator apps (the otpauth URI's label prefix and `issuer`).
const ISSUER: &str = "IntelliColab";

/// What `POST /auth/login` answers instead of tokens when the account has MFA on.
#[derive(Serialize)]
pub struct MfaRequired {
    mfa_required: bool,
    mfa_token: String,
    methods: [&'static str; 2],
}

/// Starts the second step of a login inside `tx`: an opaque single-use token, stored
/// hashed, valid `mfa_token_ttl_secs` (5 minutes by default).
pub async fn challenge(
    ctx: &ApiContext,
    tx: &mut kit::db::Tx,
    user: &UserRow,
    now: i64,
) -> Result<MfaRequired, ApiError> {
    let token = store::random_token();
    mfa::insert_challenge(
        tx.conn(),
        &store::token_hash(&token),
        user.id,
        now,
        now + ctx.config.mfa_token_ttl_secs * 1000,
    )
    .await?;
    Ok(MfaRequired {
        mfa_required: true,
        mfa_token: token,
        methods: ["totp", "recovery_code"],
    })
}

/// A second factor as presented.
enum Factor<'a> {
    Totp(&'a str),
    RecoveryCode(&'a str),
}

impl<'a> Factor<'a> {
    /// `code` of `/disable`: six digits are a TOTP code, anything else a recovery code.
    fn either(code: &'a str) -> Self {
        let code = code.trim();
        if code.len() == totp::DIGITS as usize && code.bytes().all(|b| b.is_ascii_digit()) {
            Factor::Totp(code)
        } else {
            Factor::RecoveryCode(code)
        }
    }
}

/// SHA-256 of a recovery code without separators and case (as typed from paper).
fn recovery_hash(code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    store::token_hash(&normal)
}

/// Checks a second factor of `user` under the login throttle (429 over its limits). A
/// TOTP code is accepted for the current 30 s step or one either side (clock skew,
/// RFC 6238 §5.2), and only for a step later than the last accepted one: each code
/// works once. A recovery code works once. `Ok(false)` = wrong (counted as a failure).
async fn check_factor(
    ctx: &ApiContext,
    user: &UserRow,
    factor: Factor<'_>,
    ip: std::net::IpAddr,
) -> ApiResult<bool> {
    let keys = ThrottleKeys::new(Some(user.id), &user.username, ip);
    let gate = admit(ctx, &keys, None).await?;
    gate.wait().await;
    let now = kit::time::now_ms();
    let mut tx = ctx.db.begin().await?;
    let ok = match factor {
        Factor::Totp(code) => match mfa::totp(tx.conn(), user.id).await? {
            Some(credential) => {
                let secret = totp::base32_decode(&credential.secret)
                    .ok_or_else(|| ApiError::internal("stored TOTP secret is not base32"))?;
                let step = totp::step_at(now / 1000);
                match totp::matching_step(&secret, code.trim(), &[step - 1, step, step + 1]) {
                    Some(s) => mfa::use_step(tx.conn(), user.id, s).await?,
                    None => false,
                }
            }
            None => false,
        },
        Factor::RecoveryCode(code) => {
            mfa::use_recovery_code(tx.conn(), user.id, &recovery_hash(code), now).await?
        }
    };
    if ok {
        keys.forgive(tx.conn(), &gate).await?;
    } else {
        keys.record_failure(tx.conn(), &gate, now).await?;
        metrics::counter!("auth_mfa_failures_total").increment(1);
    }
    tx.commit().await?;
    Ok(ok)
}

fn wrong_password() -> ApiError {
    ApiError::forbidden(
        kit::error::code::INVALID_CREDENTIALS,
        "the current password is incorrect",
    )
}

fn wrong_code() -> ApiError {
    ApiError::forbidden(
        kit::error::code::INVALID_CODE,
        "the code is wrong or was already used",
    )
}

fn already_enabled() -> ApiError {
    ApiError::conflict(
        kit::error::code::MFA_ALREADY_ENABLED,
        "two-factor login is already on; turn it off first",
    )
}

async fn caller_account(ctx: &ApiContext, caller: &CurrentSession) -> ApiResult<UserRow> {
    store::users::by_id(ctx.db.pool(), caller.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("account not found"))
}

#[derive(Deserialize)]
struct SetupBody {
    current_password: String,
}

#[derive(Serialize)]
struct SetupResponse {
    secret: String,
    otpauth_uri: String,
}

/// POST /auth/mfa/totp/setup — a new pending secret (replacing a pending one); nothing
/// changes for logins until `/enable` confirms a code of it. The secret is returned
/// once and never logged.
async fn setup(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
    ClientIp(ip): ClientIp,
    Json(body): Json<SetupBody>,
) -> ApiResult<Json<SetupResponse>> {
    let user = caller_account(&ctx, &caller).await?;
    if !check_current_password(&ctx, &user, &body.current_password, ip).await? {
        return Err(wrong_password());
    }
    if user.mfa_enabled {
        return Err(already_enabled());
    }
    let secret = totp::base32_encode(&rand::random::<[u8; totp::SECRET_BYTES]>());
    let mut tx = ctx.db.begin().await?;
    mfa::set_pending(tx.conn(), user.id, &secret, kit::time::now_ms()).await?;
    tx.commit().await?;
    // Usernames are `a-z 0-9 _ .`: nothing in the label needs percent-encoding.
    let otpauth_uri = format!(
        "otpauth://totp/{ISSUER}:{username}?secret={secret}&issuer={ISSUER}&algorithm=SHA1&digits={digits}&period={period}",
        username = user.username,
        digits = totp::DIGITS,
        period = totp::STEP_SECS,
    );
    Ok(Json(SetupResponse {
        secret,
        otpauth_uri,
    }))
}

#[derive(Deserialize)]
struct EnableBody {
    code: String,
}

#[derive(Serialize)]
struct EnableResponse {
    recovery_codes: Vec<String>,
}

/// POST /auth/mfa/totp/enable — a code of the pending secret turns two-factor login on
/// and returns 10 new recovery codes, shown this once (stored as SHA-256 hashes).
async fn enable(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
    ClientIp(ip): ClientIp,
    Json(body): Json<EnableBody>,
) -> ApiResult<Json<EnableResponse>> {
    let user = caller_account(&ctx, &caller).await?;
    if user.mfa_enabled {
        return Err(already_enabled());
    }
    if mfa::totp(ctx.db.pool(), user.id).await?.is_none() {
        return Err(ApiError::conflict(
            kit::error::code::MFA_NOT_SET_UP,
            "no pending TOTP setup: call POST /auth/mfa/totp/setup first",
        ));
    }
    if !check_factor(&ctx, &user, Factor::Totp(&body.code), ip).await? {
        return Err(wrong_code());
    }
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| {
            let raw = totp::base32_encode(&rand::random::<[u8; RECOVERY_CODE_BYTES]>());
            // XXXX-XXXX-XXXX-XXXX
            raw.as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect();
    let hashes: Vec<String> = codes.iter().map(|c| recovery_hash(c)).collect();
    let mut tx = ctx.db.begin().await?;
    if !mfa::enable(tx.conn(), user.id, &hashes, kit::time::now_ms()).await? {
        return Err(already_enabled());
    }
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "two-factor login enabled");
    notify(
        &ctx,
        &user,
        "Two-factor login was turned on for your IntelliColab account",
        "two-factor login was turned on",
    );
    Ok(Json(EnableResponse {
        recovery_codes: codes,
    }))
}

#[derive(Deserialize)]
struct DisableBody {
    current_password: String,
    code: String,
}

/// POST /auth/mfa/totp/disable — needs the password and a current TOTP code or an
/// unused recovery code; removes the secret and every recovery code.
async fn disable(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
    ClientIp(ip): ClientIp,
    Json(body): Json<DisableBody>,
) -> ApiResult<StatusCode> {
    let user = caller_account(&ctx, &caller).await?;
    if !check_current_password(&ctx, &user, &body.current_password, ip).await? {
        return Err(wrong_password());
    }
    if !user.mfa_enabled {
        return Err(ApiError::conflict(
            kit::error::code::MFA_NOT_ENABLED,
            "two-factor login is not on",
        ));
    }
    if !check_factor(&ctx, &user, Factor::either(&body.code), ip).await? {
        return Err(wrong_code());
    }
    let mut tx = ctx.db.begin().await?;
    mfa::disable(tx.conn(), user.id).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "two-factor login disabled");
    notify(
        &ctx,
        &user,
        "Two-factor login was turned off for your IntelliColab account",
        "two-factor login was turned off",
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Mails the account holder that `what` happened (in the background).
fn notify(ctx: &ApiContext, user: &UserRow, subject: &'static str, what: &str) {
    let body = format!(
        "Hello {username},\n\n{what} for your IntelliColab account {username}.\n\n\
         If this was not you, change your password now at {url} (this ends every other \
         session) and review your sessions.\n",
        username = user.username,
        url = ctx.config.public_url.trim_end_matches('/'),
    );
    let (mailer, to) = (ctx.mailer.clone(), user.email.clone());
    tokio::spawn(async move {
        if let Err(e) = mailer.send(&to, subject, body).await {
            tracing::error!(error = %e, "two-factor notice failed");
        }
    });
}

#[derive(Deserialize)]
struct LoginMfaBody {
    mfa_token: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
}

/// POST /auth/login/mfa — the second step: the `mfa_token` of the password step and a
/// TOTP code or a recovery code. 401 `invalid_token` for an unknown, used or expired
/// `mfa_token` (log in again), 401 `invalid_code` for a wrong code (the same token may
/// try again, within the login limits: 429 beyond).
async fn login_mfa(
    State(ctx): State<ApiContext>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Json(body): Json<LoginMfaBody>,
) -> ApiResult<Json<TokenResponse>> {
    let factor = match (body.code.as_deref(), body.recovery_code.as_deref()) {
        (Some(code), None) => Factor::Totp(code),
        (None, Some(code)) => Factor::RecoveryCode(code),
        _ => {
            return Err(ApiError::validation(
                "code",
                "send exactly one of `code` and `recovery_code`",
            ));
        }
    };
    let invalid_token = || {
        ApiError::unauthorized(
            kit::error::code::INVALID_TOKEN,
            "the mfa_token is unknown, used or expired; log in again",
        )
    };
    let hash = store::token_hash(body.mfa_token.trim());
    let user_id = mfa::challenge_user(ctx.db.pool(), &hash, kit::time::now_ms())
        .await?
        .ok_or_else(invalid_token)?;
    let user = store::users::by_id(ctx.db.pool(), user_id)
        .await?
        .ok_or_else(invalid_token)?;
    if !check_factor(&ctx, &user, factor, ip).await? {
        metrics::counter!("auth_logins_total", "outcome" => "invalid_code").increment(1);
        return Err(ApiError::unauthorized(
            kit::error::code::INVALID_CODE,
            "the code is wrong or was already used",
        ));
    }
    let now = kit::time::now_ms();
    let mut tx = ctx.db.begin().await?;
    if !mfa::use_challenge(tx.conn(), &hash, now).await? {
        return Err(invalid_token());
    }
    let tokens = start_session(&ctx, &mut tx, &user, user_agent(&headers), ip.to_string()).await?;
    tx.commit().await?;
    metrics::counter!("auth_logins_total", "outcome" => "success").increment(1);
    tracing::info!(user_id = %user.id, "login (two-factor)");
    Ok(Json(tokens))
}
