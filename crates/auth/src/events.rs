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
    /// Always false at registration; notifications mail only verified addresses.
    pub email_verified: bool,
}

#[derive(Serialize)]
pub struct UserUpdated<'a> {
    pub user_id: uuid::Uuid,
    pub username: &'a str,
    pub email: &'a str,
    pub display_name: &'a str,
    pub email_verified: bool,
}

impl<'a> UserUpdated<'a> {
    /// The event for `user` as it is now.
    pub fn of(user: &'a crate::store::users::UserRow) -> Self {
        Self {
            user_id: user.id,
            username: &user.username,
            email: &user.email,
            display_name: &user.display_name,
            email_verified: user.email_verified_at.is_some(),
        }
    }
}

/// The account is gone: consumers drop what they hold of it (idempotently).
#[derive(Serialize)]
pub struct UserDeleted {
    pub user_id: uuid::Uuid,
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
