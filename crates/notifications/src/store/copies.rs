//! Local copies fed by other services' events: the blocks (users) and the recipients'
//! identities (auth). Each row carries the id (uuid v7, time-ordered) of the newest
//! event applied, so a late older event never overwrites a newer one.

use sqlx::{Any, Executor, Row};
use uuid::Uuid;

pub async fn apply_block<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    blocker: Uuid,
    blocked: Uuid,
    active: bool,
    version: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO blocks (blocker_id, blocked_id, active, version) VALUES ($1, $2, $3, $4)
         ON CONFLICT (blocker_id, blocked_id) DO UPDATE
           SET active = excluded.active, version = excluded.version
           WHERE blocks.version < excluded.version",
    )
    .bind(blocker.to_string())
    .bind(blocked.to_string())
    .bind(i64::from(active))
    .bind(version)
    .execute(ex)
    .await?;
    Ok(())
}

/// Rows per backfill INSERT (2 binds each): 500 rows are 1,000 binds.
const BACKFILL_ROWS: usize = 500;

/// Adds backfilled active blocks (version ''): a pair that an event already set keeps
/// what the event said, and any later event overwrites the backfilled row.
pub async fn backfill_blocks(
    conn: &mut sqlx::AnyConnection,
    edges: &[(Uuid, Uuid)],
) -> Result<(), sqlx::Error> {
    for chunk in edges.chunks(BACKFILL_ROWS) {
        let rows = (0..chunk.len())
            .map(|i| format!("(${}, ${}, 1, '')", 2 * i + 1, 2 * i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO blocks (blocker_id, blocked_id, active, version) VALUES {rows}
             ON CONFLICT (blocker_id, blocked_id) DO NOTHING"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (blocker, blocked) in chunk {
            q = q.bind(blocker.to_string()).bind(blocked.to_string());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Everyone who blocks `sender` (bounded by the sender's blockers, not by room size).
pub async fn blockers_of<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    sender: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows = sqlx::query("SELECT blocker_id FROM blocks WHERE blocked_id = $1 AND active = 1")
        .bind(sender.to_string())
        .fetch_all(ex)
        .await?;
    rows.iter()
        .map(|r| super::uuid_col(r, "blocker_id"))
        .collect()
}

/// An identity change from auth (`None` fields are left as they are).
pub struct Identity<'a> {
    pub user_id: Uuid,
    pub username: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub email: Option<&'a str>,
    /// Absent from the event = unverified (an address auth has not confirmed gets no
    /// notification mail).
    pub email_verified: bool,
    pub version: &'a str,
}

/// Upserts the identity; a field is taken when the event is newer than the row, or when
/// the row does not know the field yet (a `user.registered` overtaken by an update).
/// `email_verified` follows the newest event, as the address it qualifies.
pub async fn apply_identity<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    i: &Identity<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO recipients (user_id, username, display_name, email, version, email_verified)
         VALUES ($1, COALESCE($2, ''), COALESCE($3, ''), COALESCE($4, ''), $5, $6)
         ON CONFLICT (user_id) DO UPDATE SET
           username = CASE WHEN excluded.username <> ''
               AND (recipients.username = '' OR recipients.version < excluded.version)
               THEN excluded.username ELSE recipients.username END,
           display_name = CASE WHEN excluded.display_name <> ''
               AND (recipients.display_name = '' OR recipients.version < excluded.version)
               THEN excluded.display_name ELSE recipients.display_name END,
           email = CASE WHEN excluded.email <> ''
               AND (recipients.email = '' OR recipients.version < excluded.version)
               THEN excluded.email ELSE recipients.email END,
           email_verified = CASE WHEN recipients.version < excluded.version
               THEN excluded.email_verified ELSE recipients.email_verified END,
           version = CASE WHEN recipients.version < excluded.version
               THEN excluded.version ELSE recipients.version END",
    )
    .bind(i.user_id.to_string())
    .bind(i.username)
    .bind(i.display_name)
    .bind(i.email)
    .bind(i.version)
    .bind(i64::from(i.email_verified))
    .execute(ex)
    .await?;
    Ok(())
}

/// A user as auth last described them.
#[derive(Debug, Clone, Default)]
pub struct Recipient {
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub email_verified: bool,
}

/// The identity of a user (a recipient, or an actor named in a mail), if known.
pub async fn identity<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
) -> Result<Option<Recipient>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT username, display_name, email, email_verified FROM recipients WHERE user_id = $1",
    )
    .bind(user.to_string())
    .fetch_optional(ex)
    .await?;
    row.map(|r| {
        Ok(Recipient {
            username: r.try_get("username")?,
            display_name: r.try_get("display_name")?,
            email: r.try_get("email")?,
            email_verified: r.try_get::<i64, _>("email_verified")? != 0,
        })
    })
    .transpose()
}
