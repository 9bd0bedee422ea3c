use sqlx::{Any, Executor, Row};

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: uuid::Uuid,
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub created_at: i64,
    /// When the current address was confirmed; `None` = unverified.
    pub email_verified_at: Option<i64>,
    /// A TOTP credential is enabled: logins ask for a second factor.
    pub mfa_enabled: bool,
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<UserRow, sqlx::Error> {
    let id: String = row.try_get("id")?;
    Ok(UserRow {
        id: id.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        password_hash: row.try_get("password_hash")?,
        created_at: row.try_get("created_at")?,
        email_verified_at: row.try_get("email_verified_at")?,
        mfa_enabled: row.try_get::<Option<i64>, _>("mfa_enabled_at")?.is_some(),
    })
}

/// `SELECT <user columns> FROM users WHERE <not deleted> AND <filter>` as a static
/// string: a deleted (anonymised) account is found by no lookup.
macro_rules! select_users {
    ($filter:literal) => {
        concat!(
            "SELECT id, username, email, display_name, password_hash, created_at, email_verified_at,
               (SELECT t.enabled_at FROM totp_credentials t WHERE t.user_id = users.id) AS mfa_enabled_at
             FROM users WHERE deleted_at IS NULL AND ",
            $filter
        )
    };
}

pub struct NewUser<'a> {
    pub id: uuid::Uuid,
    pub username: &'a str,
    pub email: &'a str,
    pub email_key: &'a str,
    pub display_name: &'a str,
    pub password_hash: &'a str,
    pub now: i64,
}

pub async fn insert<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    u: &NewUser<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, username, email, email_key, display_name, password_hash, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(u.id.to_string())
    .bind(u.username)
    .bind(u.email)
    .bind(u.email_key)
    .bind(u.display_name)
    .bind(u.password_hash)
    .bind(u.now)
    .execute(ex)
    .await?;
    Ok(())
}

pub async fn by_id<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: uuid::Uuid,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query(select_users!("id = $1"))
        .bind(id.to_string())
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Looks an account up by username or email (both case-insensitive).
pub async fn by_login<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    login: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    let key = login.trim().to_lowercase();
    sqlx::query(select_users!("(username = $1 OR email_key = $1)"))
        .bind(key)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn by_email_key<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    email_key: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query(select_users!("email_key = $1"))
        .bind(email_key)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn exists_username<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    username: &str,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 FROM users WHERE username = $1")
        .bind(username)
        .fetch_optional(ex)
        .await?
        .is_some())
}

pub async fn set_password<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: uuid::Uuid,
    hash: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(hash)
        .bind(now)
        .bind(id.to_string())
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn set_display_name<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: uuid::Uuid,
    display_name: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET display_name = $1, updated_at = $2 WHERE id = $3")
        .bind(display_name)
        .bind(now)
        .bind(id.to_string())
        .execute(ex)
        .await?;
    Ok(())
}

/// Sets a confirmed new email (a unique violation means another account took the
/// address).
pub async fn set_email<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: uuid::Uuid,
    email: &str,
    email_key: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    // A confirmed change proves the new address: it is verified from now on.
    sqlx::query("UPDATE users SET email = $1, email_key = $2, email_verified_at = $3, updated_at = $3 WHERE id = $4")
        .bind(email)
        .bind(email_key)
        .bind(now)
        .bind(id.to_string())
        .execute(ex)
        .await?;
    Ok(())
}

/// Marks the current address verified, if it is still `email`; returns whether it did.
pub async fn set_email_verified<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: uuid::Uuid,
    email: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE users SET email_verified_at = $1, updated_at = $1
         WHERE id = $2 AND email = $3 AND email_verified_at IS NULL AND deleted_at IS NULL",
    )
    .bind(now)
    .bind(id.to_string())
    .bind(email)
    .execute(ex)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Anonymises a deleted account: username and email key become `~deleted-<id>` (no
/// valid username or address contains `~`), the password hash and names are emptied.
/// The row stays so its revoked sessions keep being reported to other services.
pub async fn anonymise<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: uuid::Uuid,
    now: i64,
) -> Result<(), sqlx::Error> {
    let tomb = format!("~deleted-{id}");
    sqlx::query(
        "UPDATE users SET username = $1, email = '', email_key = $1, display_name = '',
           password_hash = '', email_verified_at = NULL, deleted_at = $2, updated_at = $2
         WHERE id = $3",
    )
    .bind(&tomb)
    .bind(now)
    .bind(id.to_string())
    .execute(ex)
    .await?;
    Ok(())
}
