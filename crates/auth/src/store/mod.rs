//! SQL of the auth service. Functions take any executor: the pool for reads, a
//! transaction's connection (`tx.conn()`) for writes that go with other writes.

pub mod accounts;
pub mod devices;
pub mod email_tokens;
pub mod mfa;
pub mod passkeys;
pub mod resets;
pub mod sessions;
pub mod throttle;
pub mod users;

pub const MIGRATIONS: &[kit::db::Migration] = &[
    bus::inbox::MIGRATION,
    kit::db::Migration {
        id: "auth-0001-init",
        sqlite: include_str!("../../migrations/0001_init.sql"),
        postgres: include_str!("../../migrations/0001_init.sql"),
    },
    kit::db::Migration {
        id: "auth-0002-email-tokens-devices",
        sqlite: include_str!("../../migrations/0002_email_tokens_devices.sql"),
        postgres: include_str!("../../migrations/0002_email_tokens_devices.sql"),
    },
    kit::db::Migration {
        id: "auth-0003-verify-mfa-deletion",
        sqlite: include_str!("../../migrations/0003_verify_mfa_deletion.sql"),
        postgres: include_str!("../../migrations/0003_verify_mfa_deletion.sql"),
    },
    kit::db::Migration {
        id: "auth-0004-passkeys",
        sqlite: include_str!("../../migrations/0004_passkeys.sql"),
        postgres: include_str!("../../migrations/0004_passkeys.sql"),
    },
];

/// SHA-256 hex of a secret token: only hashes of refresh, reset, email and device tokens
/// are stored.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// 256 random bits, URL-safe base64 without padding.
pub fn random_token() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}
