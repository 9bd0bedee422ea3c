//! The `files` table.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};
use uuid::Uuid;

use crate::domain::StoredFile;

const COLUMNS: &str =
    "id, owner_id, filename, content_type, size, sha256, width, height, has_thumbnail, created_at";

fn from_row(r: &AnyRow) -> Result<StoredFile, sqlx::Error> {
    Ok(StoredFile {
        id: super::uuid_col(r, "id")?,
        owner_id: super::uuid_col(r, "owner_id")?,
        filename: r.try_get("filename")?,
        content_type: r.try_get("content_type")?,
        size: r.try_get("size")?,
        sha256: r.try_get("sha256")?,
        width: r.try_get("width")?,
        height: r.try_get("height")?,
        has_thumbnail: kit::db::flag(r.try_get("has_thumbnail")?),
        created_at: r.try_get("created_at")?,
    })
}

pub async fn insert<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    f: &StoredFile,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO files (id, owner_id, filename, content_type, size, sha256, width, height,
                            has_thumbnail, created_at, detached_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
    )
    .bind(f.id.to_string())
    .bind(f.owner_id.to_string())
    .bind(&f.filename)
    .bind(&f.content_type)
    .bind(f.size)
    .bind(&f.sha256)
    .bind(f.width)
    .bind(f.height)
    .bind(i64::from(f.has_thumbnail))
    .bind(f.created_at)
    .execute(ex)
    .await?;
    Ok(())
}

pub async fn get<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: Uuid,
) -> Result<Option<StoredFile>, sqlx::Error> {
    // Only constants are formatted in.
    let sql = format!("SELECT {COLUMNS} FROM files WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The files among `ids` uploaded by `owner`, in no particular order.
pub async fn owned_among<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    owner: Uuid,
    ids: &[Uuid],
) -> Result<Vec<StoredFile>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = (2..ids.len() + 2)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT {COLUMNS} FROM files WHERE owner_id = $1 AND id IN ({list})");
    // Only placeholders are formatted in; the ids are bound.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(owner.to_string());
    for id in ids {
        q = q.bind(id.to_string());
    }
    q.fetch_all(ex).await?.iter().map(from_row).collect()
}

/// Restarts the collector's clock of `owner`'s files among `ids` (chat is about to attach
/// them): a file looked up at 23 h 59 min must not be collected before chat's
/// `chat.message.created` reaches this service and records the attachment.
pub async fn touch<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    owner: Uuid,
    ids: &[Uuid],
    now: i64,
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let list = (3..ids.len() + 3)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "UPDATE files SET detached_at = $2 WHERE owner_id = $1 AND detached_at < $2 AND id IN ({list})"
    );
    // Only placeholders are formatted in; the ids are bound.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(owner.to_string())
        .bind(now);
    for id in ids {
        q = q.bind(id.to_string());
    }
    q.execute(ex).await?;
    Ok(())
}

/// Deletes the file if `owner` uploaded it and no message carries it; true when deleted.
/// One statement, so a concurrent attachment or a second deleter (the collector in another
/// process) cannot both see it unattached and both act.
pub async fn delete_unattached<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: Uuid,
    owner: Option<Uuid>,
    detached_before: Option<i64>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM files WHERE id = $1
           AND ($2 IS NULL OR owner_id = $2)
           AND ($3 IS NULL OR detached_at < $3)
           AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.file_id = files.id)",
    )
    .bind(id.to_string())
    .bind(owner.map(|o| o.to_string()))
    .bind(detached_before)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Up to `limit` files attached to no message since before `cutoff` (collector candidates).
pub async fn unattached_before<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    cutoff: i64,
    limit: i64,
) -> Result<Vec<(Uuid, bool)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, has_thumbnail FROM files
         WHERE detached_at < $1
           AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.file_id = files.id)
         ORDER BY detached_at LIMIT $2",
    )
    .bind(cutoff)
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                super::uuid_col(r, "id")?,
                kit::db::flag(r.try_get("has_thumbnail")?),
            ))
        })
        .collect()
}

/// The unattached files of `owner` (a deleted account's): `(id, has_thumbnail)`.
pub async fn unattached_of<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    owner: Uuid,
) -> Result<Vec<(Uuid, bool)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, has_thumbnail FROM files
         WHERE owner_id = $1
           AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.file_id = files.id)",
    )
    .bind(owner.to_string())
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                super::uuid_col(r, "id")?,
                kit::db::flag(r.try_get("has_thumbnail")?),
            ))
        })
        .collect()
}

/// Bytes stored for `owner` (every file of theirs, attached or not).
pub async fn used_bytes<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    owner: Uuid,
) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS used FROM files WHERE owner_id = $1",
    )
    .bind(owner.to_string())
    .fetch_one(ex)
    .await?;
    row.try_get("used")
}
