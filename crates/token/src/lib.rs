//! Access tokens, per API.md: JWTs signed with EdDSA (Ed25519), header `typ: at+jwt`
//! and a `kid` found in the JWKS; claims `iss`, `aud`, `sub`, `sid`, `exp`, `iat`,
//! `jti`, `username`.
//!
//! - [`keys::KeySet`] (auth service only): signing keys kept in the data dir, rotation,
//!   the JWKS document.
//! - [`verify::Verifier`] (every service and the gateway): fetches and caches the JWKS,
//!   accepts only what RFC 8725 allows here, and honours revoked sessions.
//! - [`extract::AuthUser`]: the axum extractor that gives handlers the caller.

pub mod extract;
pub mod keys;
pub mod testing;
pub mod verify;

use serde::{Deserialize, Serialize};

/// Issuer and audience of IntelliColab access tokens.
pub const ISSUER: &str = "intellicolab";
pub const AUDIENCE: &str = "intellicolab";
/// The JWT `typ` header of access tokens (RFC 9068).
pub const TOKEN_TYPE: &str = "at+jwt";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: uuid::Uuid,
    pub sid: uuid::Uuid,
    pub exp: i64,
    pub iat: i64,
    pub jti: uuid::Uuid,
    pub username: String,
}

pub use extract::AuthUser;
pub use keys::KeySet;
pub use verify::{TokenError, Verifier, revoke_in_process};
