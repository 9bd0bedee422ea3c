//! `AuthUser`: the caller of a request, from a verified bearer token.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use kit::ApiError;
use kit::error::code;

use crate::{Claims, TokenError, Verifier};

#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: uuid::Uuid,
    pub session_id: uuid::Uuid,
    pub username: String,
    pub claims: Claims,
}

impl From<Claims> for AuthUser {
    fn from(claims: Claims) -> Self {
        Self {
            id: claims.sub,
            session_id: claims.sid,
            username: claims.username.clone(),
            claims,
        }
    }
}

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Maps a verification failure to the 401/503 problem a client sees.
pub fn rejection(e: TokenError) -> ApiError {
    let mut err = match e {
        TokenError::Missing => {
            ApiError::unauthorized(code::UNAUTHORIZED, "a bearer token is required")
        }
        TokenError::Invalid => {
            ApiError::unauthorized(code::INVALID_TOKEN, "the access token is invalid")
        }
        TokenError::Expired => {
            ApiError::unauthorized(code::TOKEN_EXPIRED, "the access token has expired")
        }
        TokenError::Revoked => {
            ApiError::unauthorized(code::SESSION_REVOKED, "the session of this token has ended")
        }
        TokenError::KeysUnavailable => {
            return ApiError::unavailable(code::AUTH_UNAVAILABLE, "token keys cannot be fetched");
        }
    };
    err.headers.push(("www-authenticate", "Bearer".to_owned()));
    err
}

impl<S> FromRequestParts<S> for AuthUser
where
    Arc<Verifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<Verifier>::from_ref(state);
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .ok_or_else(|| rejection(TokenError::Missing))?;
        let claims = verifier.verify(token).await.map_err(rejection)?;
        let user = AuthUser::from(claims);
        tracing::Span::current().record("user_id", tracing::field::display(user.id));
        Ok(user)
    }
}
