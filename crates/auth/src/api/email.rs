//! Email verification and changing the email address. Verification: a single-use link
//! token mailed at registration and on request. A change: the current password, then a
//! single-use link mailed to the new address (confirming it verifies that address); a
//! notice goes to the old one. `PATCH /auth/me` cannot change it (a stolen access token
//! alone would otherwise take the account over through a reset).
//!
//! Security mails greet with the username only, never the display name: that is text
//! the account holder (or whoever took the account over) chose, and it must not put
//! words into a mail that comes from us.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use kit::http::Json;
use kit::net::ClientIp;
use kit::{ApiError, ApiResult};
use serde::Deserialize;

use super::CurrentSession;
use super::throttle::check_current_password;
use crate::domain::Email;
use crate::events::{self, UserUpdated};
use crate::state::ApiContext;
use crate::store::{self, email_tokens};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/auth/email", post(request_change))
        .route("/auth/email/verify/request", post(request_verification))
        .route("/auth/email/verify/confirm", post(confirm))
}

/// Issues a verification token for the account's current address inside `tx` (voiding
/// older ones) and returns the mail to send once `tx` commits.
pub async fn issue_verification(
    ctx: &ApiContext,
    tx: &mut kit::db::Tx,
    user: &store::users::UserRow,
    now: i64,
) -> Result<VerificationMail, ApiError> {
    let token = store::random_token();
    email_tokens::void_outstanding(tx.conn(), user.id, email_tokens::EMAIL_VERIFY, now).await?;
    email_tokens::insert(
        tx.conn(),
        &email_tokens::NewEmailToken {
            hash: &store::token_hash(&token),
            user_id: user.id,
            purpose: email_tokens::EMAIL_VERIFY,
            email: &user.email,
            now,
            expires_at: now + ctx.config.email_verify_ttl_secs * 1000,
        },
    )
    .await?;
    let hours = ctx.config.email_verify_ttl_secs / 3600;
    let url = ctx.config.public_url.trim_end_matches('/');
    let body = format!(
        "Hello {username},\n\nplease confirm that this is the email address of the IntelliColab \
         account {username}.\nYour verification token (valid for {hours} hours, usable once):\n\n\
         {token}\n\n\
         Open {url}/#/confirm-email?token={token} or send it to POST /auth/email/verify/confirm.\n\
         If you did not create this account, ignore this mail.\n",
        username = user.username,
    );
    Ok(VerificationMail {
        to: user.email.clone(),
        body,
    })
}

/// A verification mail, sent after the transaction that issued its token committed.
pub struct VerificationMail {
    to: String,
    body: String,
}

impl VerificationMail {
    /// Sends it in the background: an SMTP server's latency is not the client's.
    pub fn send(self, ctx: &ApiContext) {
        let mailer = ctx.mailer.clone();
        tokio::spawn(async move {
            if let Err(e) = mailer
                .send(
                    &self.to,
                    "Verify your IntelliColab email address",
                    self.body,
                )
                .await
            {
                tracing::error!(error = %e, "verification mail failed");
            }
        });
    }
}

/// POST /auth/email/verify/request — 202; mails a new verification token (voiding older
/// ones) unless the address is already verified. 429 within `email_verify_resend_secs`
/// of the previous one.
async fn request_verification(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
) -> ApiResult<StatusCode> {
    let now = kit::time::now_ms();
    let mut tx = ctx.db.begin().await?;
    let user = store::users::by_id(tx.conn(), caller.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("account not found"))?;
    if user.email_verified_at.is_some() {
        return Ok(StatusCode::ACCEPTED);
    }
    let gap_ms = ctx.config.email_verify_resend_secs * 1000;
    if let Some(last) =
        email_tokens::latest_issued(tx.conn(), user.id, email_tokens::EMAIL_VERIFY).await?
        && last + gap_ms > now
    {
        return Err(ApiError::rate_limited((last + gap_ms - now) as u64, 1));
    }
    let mail = issue_verification(&ctx, &mut tx, &user, now).await?;
    tx.commit().await?;
    mail.send(&ctx);
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
struct ChangeBody {
    email: String,
    current_password: String,
}

fn email_taken() -> ApiError {
    ApiError::conflict(
        kit::error::code::EMAIL_TAKEN,
        "an account with that email exists",
    )
}

/// POST /auth/email — 202; the address changes once the token mailed to it is confirmed.
/// A newer request voids the token of an older one.
async fn request_change(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
    ClientIp(ip): ClientIp,
    Json(body): Json<ChangeBody>,
) -> ApiResult<StatusCode> {
    let email = Email::parse(&body.email).map_err(|e| ApiError::validation_many(vec![e]))?;
    let user = store::users::by_id(ctx.db.pool(), caller.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("account not found"))?;
    if !check_current_password(&ctx, &user, &body.current_password, ip).await? {
        return Err(ApiError::forbidden(
            kit::error::code::INVALID_CREDENTIALS,
            "the current password is incorrect",
        ));
    }
    if email.as_str() == user.email {
        return Err(ApiError::validation(
            "email",
            "is already the address of this account",
        ));
    }
    // Only after the password: whether an address has an account is not for anyone
    // holding a token to probe.
    if store::users::by_email_key(ctx.db.pool(), email.key())
        .await?
        .is_some_and(|other| other.id != user.id)
    {
        return Err(email_taken());
    }
    let token = store::random_token();
    let now = kit::time::now_ms();
    let mut tx = ctx.db.begin().await?;
    email_tokens::void_outstanding(tx.conn(), user.id, email_tokens::EMAIL_CHANGE, now).await?;
    email_tokens::insert(
        tx.conn(),
        &email_tokens::NewEmailToken {
            hash: &store::token_hash(&token),
            user_id: user.id,
            purpose: email_tokens::EMAIL_CHANGE,
            email: email.as_str(),
            now,
            expires_at: now + ctx.config.email_change_ttl_secs * 1000,
        },
    )
    .await?;
    tx.commit().await?;

    let hours = ctx.config.email_change_ttl_secs / 3600;
    let url = ctx.config.public_url.trim_end_matches('/');
    let confirm = format!(
        "Hello {username},\n\nplease confirm that {new} is to be the email address of the \
         IntelliColab account {username}.\nYour confirmation token (valid for {hours} hours, \
         usable once):\n\n{token}\n\n\
         Open {url}/#/confirm-email?token={token} or send it to POST /auth/email/verify/confirm.\n\
         If you did not ask for this, ignore this mail; nothing changes.\n",
        new = email.as_str(),
        username = user.username,
    );
    let notice = format!(
        "Hello {username},\n\nsomeone signed in to your IntelliColab account {username} asked to \
         change its email address from this one to {new}.\nThe change happens only once the \
         link mailed to the new address is confirmed.\n\n\
         If this was not you, change your password now at {url} (this ends every other \
         session) and review your sessions; until the new address is confirmed, a newer \
         request replaces this one.\n",
        username = user.username,
        new = mask(email.as_str()),
    );
    let (mailer, old, new) = (
        ctx.mailer.clone(),
        user.email.clone(),
        email.as_str().to_owned(),
    );
    // In the background, as reset mails: an SMTP server's latency is not the client's.
    tokio::spawn(async move {
        if let Err(e) = mailer
            .send(&new, "Confirm your new IntelliColab email address", confirm)
            .await
        {
            tracing::error!(error = %e, "email change confirmation mail failed");
        }
        if let Err(e) = mailer
            .send(
                &old,
                "Your IntelliColab email address is being changed",
                notice,
            )
            .await
        {
            tracing::error!(error = %e, "email change notice failed");
        }
    });
    tracing::info!(user_id = %user.id, "email change requested");
    Ok(StatusCode::ACCEPTED)
}

/// `n***@example.com`: enough for the owner to recognise an address, not to give the
/// full new address to whoever reads the old mailbox.
fn mask(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

#[derive(Deserialize)]
struct ConfirmBody {
    token: String,
}

/// POST /auth/email/verify/confirm — 204. A verification token marks the address
/// verified if it is still the account's (published as `user.updated`). For an email
/// change: the address is checked to be free again, set (and verified), published as
/// `user.updated`, and every outstanding password reset token of the account is voided
/// (it went to the old address).
async fn confirm(
    State(ctx): State<ApiContext>,
    Json(body): Json<ConfirmBody>,
) -> ApiResult<StatusCode> {
    let invalid = || {
        ApiError::bad_request(
            kit::error::code::INVALID_TOKEN,
            "the token is unknown, used or expired",
        )
    };
    let now = kit::time::now_ms();
    let mut tx = ctx.db.begin().await?;
    let Some(token) =
        email_tokens::consume(tx.conn(), &store::token_hash(body.token.trim()), now).await?
    else {
        return Err(invalid());
    };
    if token.purpose == email_tokens::EMAIL_VERIFY {
        // An address changed since the mail is not the one the link proves.
        if !store::users::set_email_verified(tx.conn(), token.user_id, &token.email, now).await? {
            return Err(invalid());
        }
        let user = store::users::by_id(tx.conn(), token.user_id)
            .await?
            .ok_or_else(invalid)?;
        let event = bus::Envelope::new(events::SOURCE, "user.updated", UserUpdated::of(&user));
        bus::outbox::enqueue(&mut tx, &event).await?;
        tx.commit().await?;
        ctx.outbox.wake();
        tracing::info!(user_id = %user.id, "email verified");
        return Ok(StatusCode::NO_CONTENT);
    }
    if token.purpose != email_tokens::EMAIL_CHANGE {
        return Err(invalid());
    }
    let email = Email::parse(&token.email).map_err(|e| ApiError::internal(e.message))?;
    // Taken since the request: refused, and (the transaction rolls back) the token stays
    // usable should the address become free within its lifetime.
    if store::users::by_email_key(tx.conn(), email.key())
        .await?
        .is_some_and(|other| other.id != token.user_id)
    {
        return Err(email_taken());
    }
    let user = store::users::by_id(tx.conn(), token.user_id)
        .await?
        .ok_or_else(invalid)?;
    if let Err(e) =
        store::users::set_email(tx.conn(), user.id, email.as_str(), email.key(), now).await
    {
        return Err(if kit::db::is_unique_violation(&e) {
            email_taken()
        } else {
            e.into()
        });
    }
    store::resets::void_all(tx.conn(), user.id, now).await?;
    // A verification link mailed to the old address no longer proves anything.
    email_tokens::void_outstanding(tx.conn(), user.id, email_tokens::EMAIL_VERIFY, now).await?;
    let user = store::users::by_id(tx.conn(), user.id)
        .await?
        .ok_or_else(invalid)?;
    let event = bus::Envelope::new(events::SOURCE, "user.updated", UserUpdated::of(&user));
    bus::outbox::enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    ctx.outbox.wake();
    tracing::info!(user_id = %user.id, "email changed");
    Ok(StatusCode::NO_CONTENT)
}
