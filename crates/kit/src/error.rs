//! One error type for every handler, rendered as RFC 9457 `application/problem+json`
//! with a stable machine-readable `code`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub type ApiResult<T> = Result<T, ApiError>;

/// Declares each code once, as a constant, and lists them all in [`code::ALL`] so the
/// catalogue's test sees every constant (a code added here cannot be left out of it).
macro_rules! catalogue {
    ($($(#[$doc:meta])* $name:ident = $wire:literal;)+) => {
        $($(#[$doc])* pub const $name: &str = $wire;)+
        /// Every code above, in declaration order.
        pub const ALL: &[&str] = &[$($name),+];
    };
}

/// The catalogue of `code`s every service sends, in problem+json bodies (`ApiError::code`)
/// and in the chat WebSocket's `error` frames. The wire strings are a stable contract
/// (clients branch on them; docs/api.md lists them): never change one, add a new code instead.
pub mod code {
    catalogue! {
        // Shared: request parsing and the HTTP layer (kit::http, kit::error, kit::server).

        /// 400: a body field or parameter breaks a rule; `errors[]` names the fields.
        VALIDATION_FAILED = "validation_failed";
        /// 400: the body is not syntactically valid JSON.
        MALFORMED_JSON = "malformed_json";
        /// 400: the body could not be read as the expected JSON for another reason.
        MALFORMED_BODY = "malformed_body";
        /// 400: a path id (e.g. a UUID) does not parse.
        INVALID_ID = "invalid_id";
        /// 400: the query string does not parse or its values conflict.
        INVALID_QUERY = "invalid_query";
        /// 400: a pagination cursor is malformed or not one this route issued.
        INVALID_CURSOR = "invalid_cursor";
        /// 404: no such route or resource (`ApiError::not_found`).
        NOT_FOUND = "not_found";
        /// 405: the route exists, not for this method (with `Allow`).
        METHOD_NOT_ALLOWED = "method_not_allowed";
        /// 413: the request body is over the size limit.
        PAYLOAD_TOO_LARGE = "payload_too_large";
        /// 415: a body was sent without `Content-Type: application/json`.
        UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type";
        /// 429 (or a WebSocket `error` frame with `retry_after_ms`): over a rate limit.
        RATE_LIMITED = "rate_limited";
        /// 500: an unexpected failure; the cause is logged, never sent.
        INTERNAL = "internal";
        /// 503: the service's database cannot be reached (pool timeout, I/O, connection lost).
        DATABASE_UNAVAILABLE = "database_unavailable";
        /// 503 on `/ready`: a dependency did not answer the readiness check.
        NOT_READY = "not_ready";

        // Bearer tokens (token::extract::rejection).

        /// 401: no bearer token was sent.
        UNAUTHORIZED = "unauthorized";
        /// 401: the access token is malformed or its signature does not verify; also 400/401
        /// in auth for a bad refresh, reset or email-verification token.
        INVALID_TOKEN = "invalid_token";
        /// 401: the access token has expired.
        TOKEN_EXPIRED = "token_expired";
        /// 401: the token's session was revoked (logout, password change).
        SESSION_REVOKED = "session_revoked";
        /// 503: the token keys (JWKS) cannot be fetched from auth.
        AUTH_UNAVAILABLE = "auth_unavailable";

        // Gateway: edge checks and upstream faults.

        /// 400: the path has dot segments or encoded separators.
        INVALID_PATH = "invalid_path";
        /// 403: a CORS request from an origin not on the allow list.
        CORS_ORIGIN_NOT_ALLOWED = "cors_origin_not_allowed";
        /// 503: every instance of the upstream is at its concurrency limit.
        UPSTREAM_OVERLOADED = "upstream_overloaded";
        /// 503: no instance of the upstream could be reached.
        UPSTREAM_UNAVAILABLE = "upstream_unavailable";
        /// 503: the upstream did not answer within the timeout.
        UPSTREAM_TIMEOUT = "upstream_timeout";

        // Auth.

        /// 409: the username is already registered.
        USERNAME_TAKEN = "username_taken";
        /// 409: the email address is already registered.
        EMAIL_TAKEN = "email_taken";
        /// 401 on login, 403 on a password/email change: wrong username, email or password.
        INVALID_CREDENTIALS = "invalid_credentials";
        /// 401: a refresh token was used twice; its whole session is revoked.
        REFRESH_TOKEN_REUSED = "refresh_token_reused";
        /// 401 at the second step of a login, 403 when turning two-factor login on or
        /// off: the TOTP or recovery code is wrong or was already used.
        INVALID_CODE = "invalid_code";
        /// 409: two-factor login is already on (turn it off first).
        MFA_ALREADY_ENABLED = "mfa_already_enabled";
        /// 409: no pending TOTP setup to enable (call `/auth/mfa/totp/setup` first).
        MFA_NOT_SET_UP = "mfa_not_set_up";
        /// 409: two-factor login is not on.
        MFA_NOT_ENABLED = "mfa_not_enabled";
        /// 400 at passkey registration, 401 at passkey login: the credential or its
        /// ceremony does not verify (origin, challenge unknown/used/expired, signature,
        /// relying party, unknown credential).
        INVALID_PASSKEY = "invalid_passkey";
        /// 401: the passkey's signature counter did not increase (a cloned authenticator?).
        PASSKEY_CLONE_DETECTED = "passkey_clone_detected";
        /// 409: this authenticator's credential is already registered.
        PASSKEY_EXISTS = "passkey_exists";
        /// 409: the account already has the maximum of passkeys (20).
        TOO_MANY_PASSKEYS = "too_many_passkeys";
        /// 404: no such passkey of the caller.
        PASSKEY_NOT_FOUND = "passkey_not_found";

        // Users.

        /// 404: no such user (users), or a user id chat cannot resolve.
        USER_NOT_FOUND = "user_not_found";
        /// 404: the user exists but has no profile yet.
        PROFILE_NOT_FOUND = "profile_not_found";
        /// 403: one of the two users blocks the other (follow, DM, room invite).
        BLOCKED = "blocked";
        /// 400: a user tried to follow themselves.
        CANNOT_FOLLOW_SELF = "cannot_follow_self";
        /// 400: a user tried to block themselves.
        CANNOT_BLOCK_SELF = "cannot_block_self";

        // Chat.

        /// 404: no such room (or one the caller may not see).
        ROOM_NOT_FOUND = "room_not_found";
        /// 404: the user is not a member of the room.
        MEMBER_NOT_FOUND = "member_not_found";
        /// 404: no such message in the room.
        MESSAGE_NOT_FOUND = "message_not_found";
        /// 403 (or a WebSocket `error` frame): the caller is not a member of the room.
        NOT_MEMBER = "not_member";
        /// 409: the user is already a member of the room.
        ALREADY_MEMBER = "already_member";
        /// 400: the operation applies to channels only, not to DMs.
        NOT_A_CHANNEL = "not_a_channel";
        /// 403: the caller's role does not allow this (owner/admin only).
        FORBIDDEN = "forbidden";
        /// 400: removing oneself from a room goes through leave, not remove-member.
        USE_LEAVE = "use_leave";
        /// 403: only the sender may edit a message.
        NOT_SENDER = "not_sender";
        /// 409: the message was deleted and cannot be edited.
        MESSAGE_DELETED = "message_deleted";
        /// 400: a reaction's emoji is neither one emoji (grapheme cluster) nor a
        /// `:shortcode:` of 1–32 characters `a-z 0-9 _ + -`.
        INVALID_EMOJI = "invalid_emoji";
        /// 409: the message already carries the maximum of distinct emoji (20).
        TOO_MANY_REACTIONS = "too_many_reactions";
        /// 409: the room already has the maximum of pinned messages (50).
        PIN_LIMIT = "pin_limit";
        /// 409: the `client_msg_id` was already used for a different message.
        CLIENT_MSG_ID_CONFLICT = "client_msg_id_conflict";
        /// 503: a service chat asks (the user service) is unavailable or its breaker is open.
        DEPENDENCY_UNAVAILABLE = "dependency_unavailable";
        /// 503: the node is shutting down and did not store the message.
        SHUTTING_DOWN = "shutting_down";
        /// 400: `GET /chat/ws` without a WebSocket upgrade.
        WEBSOCKET_REQUIRED = "websocket_required";
        /// WebSocket `error` frame: a frame that is not JSON text or not a known message.
        MALFORMED_FRAME = "malformed_frame";
        /// WebSocket close reason (1008): the user already has the maximum of connections.
        TOO_MANY_CONNECTIONS = "too_many_connections";
        /// 400: `thread_root_id` is not a top-level message of the room.
        INVALID_THREAD = "invalid_thread";
        /// 400: an `attachment_ids` entry is not an upload of the sender's (unknown,
        /// someone else's), or there are more than 10 or duplicates.
        INVALID_ATTACHMENT = "invalid_attachment";

        // Notifications.

        /// 404: no such push subscription of the caller.
        SUBSCRIPTION_NOT_FOUND = "subscription_not_found";

        // Files.

        /// 404: no such file, or one the caller may not read (uploader, or a member of a
        /// room where it is attached).
        FILE_NOT_FOUND = "file_not_found";
        /// 409: the file is attached to a message and cannot be deleted.
        FILE_ATTACHED = "file_attached";
        /// 413: the upload would take the uploader over their storage quota.
        QUOTA_EXCEEDED = "quota_exceeded";
        /// 400: the bytes start like a PNG, JPEG, GIF or WebP image but do not decode, or
        /// declare dimensions or a size beyond the decoding limits (a decompression bomb).
        INVALID_IMAGE = "invalid_image";
        /// 503: the object store holding the files' bytes cannot be reached.
        STORAGE_UNAVAILABLE = "storage_unavailable";
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An error a client sees. Internal causes are logged, never sent. `Clone`: one failure
/// can answer several requests (a failed send batch answers each of its sends).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// Extra headers (e.g. `Retry-After` and `RateLimit-*` on 429).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// 400 `validation_failed` naming the offending field.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            code::VALIDATION_FAILED,
            message.clone(),
        );
        e.errors.push(FieldError {
            field: field.to_owned(),
            message,
        });
        e
    }

    /// 400 `validation_failed` with several field errors.
    pub fn validation_many(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let mut e = Self::new(StatusCode::BAD_REQUEST, code::VALIDATION_FAILED, detail);
        e.errors = errors;
        e
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code::NOT_FOUND, detail)
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    /// 503 with `Retry-After`: a dependency is down; the same request may succeed soon.
    /// Every 503 carries the header, so clients (and the gateway) can back off uniformly.
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail);
        e.headers
            .push(("retry-after", RETRY_AFTER_UNAVAILABLE_SECS.to_string()));
        e
    }

    /// 429 `rate_limited` with `Retry-After` (whole seconds, at least 1) and RateLimit headers.
    pub fn rate_limited(retry_after_ms: u64, limit: u32) -> Self {
        let secs = retry_after_ms.div_ceil(1000).max(1);
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            code::RATE_LIMITED,
            format!("too many requests; retry in {secs} s"),
        );
        e.headers.push(("retry-after", secs.to_string()));
        e.headers.push(("ratelimit-limit", limit.to_string()));
        e.headers.push(("ratelimit-remaining", "0".to_owned()));
        e.headers.push(("ratelimit-reset", secs.to_string()));
        e
    }

    /// 500 `internal`: logs the cause, tells the client nothing about it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::INTERNAL,
            "an internal error occurred",
        )
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl std::error::Error for ApiError {}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [FieldError],
}

pub const PROBLEM_JSON: &str = "application/problem+json";

/// `Retry-After` on a 503: long enough for a pool to reconnect after a database
/// restart (PostgreSQL accepts connections again within ~1 s of starting), short enough
/// that a client retrying a send is not held up noticeably.
pub const RETRY_AFTER_UNAVAILABLE_SECS: u64 = 2;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: format!(
                "https://intellicolab.dev/problems/{}",
                self.code.replace('_', "-")
            ),
            title: self.title(),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            errors: &self.errors,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (self.status, bytes).into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                res.headers_mut().insert(name, v);
            }
        }
        res
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&e) {
            tracing::error!(error = %e, "database unavailable");
            Self::unavailable(code::DATABASE_UNAVAILABLE, "the database is unavailable")
        } else {
            Self::internal(e)
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::code;

    #[test]
    fn catalogue_has_unique_snake_case_codes() {
        let mut seen = std::collections::HashSet::new();
        for c in code::ALL {
            assert!(seen.insert(*c), "code {c:?} is in the catalogue twice");
            // snake_case: lowercase ASCII words joined by single underscores, so the
            // problem `type` URI (underscores → hyphens) stays a clean path segment.
            let snake = !c.is_empty()
                && c.split('_')
                    .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()));
            assert!(snake, "code {c:?} is not snake_case");
        }
    }
}
