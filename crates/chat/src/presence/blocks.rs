//! Which of the looked-up users block the viewer (chat's copy of the blocks).

use std::collections::HashSet;

use uuid::Uuid;

/// The users among `targets` (≤ 200) who block `viewer`: one statement, primary-key
/// lookups `(blocker_id, blocked_id)`.
pub async fn blockers_of(
    db: &kit::db::Db,
    viewer: Uuid,
    targets: &[Uuid],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    if targets.is_empty() {
        return Ok(HashSet::new());
    }
    let list: Vec<String> = (0..targets.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT blocker_id FROM blocks WHERE blocked_id = $1 AND active = 1 AND blocker_id IN ({})",
        list.join(", ")
    );
    let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).bind(viewer.to_string());
    for t in targets {
        q = q.bind(t.to_string());
    }
    let rows = q.fetch_all(db.pool()).await?;
    Ok(rows.iter().filter_map(|s| s.parse().ok()).collect())
}
