//! Events the auth service publishes (source `auth`), through its outbox.

use serde::Serialize;

pub const SOURCE: &str = "auth";

#[derive(Serialize)]
pub struct UserRegistered<'a> {
    pub user_id: uuid::Uuid,
    pub username: &'a str,
    pub email: &'a str,
    pub display_name: &'a str,
    pub created_at: String,
}

#[derive(Serialize)]
pub struct UserUpdated<'a> {
    pub user_id: uuid::Uuid,
    pub username: &'a str,
    pub email: &'a str,
    pub display_name: &'a str,
}

/// Tokens of `session_id` must be rejected until `until` (unix seconds).
#[derive(Serialize)]
pub struct SessionRevoked {
    pub session_id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub until: i64,
}

#[derive(Serialize)]
pub struct PasswordChanged {
    pub user_id: uuid::Uuid,
}
