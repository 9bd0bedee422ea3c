//! The one-time copy of the user service's blocks (`GET /internal/blocks`), for blocks
//! made before this service consumed `user.blocked` (a deployment that adds the
//! notifications service later): without it their senders would notify the blockers.

use sqlx::AnyConnection;
use uuid::Uuid;

use crate::store::copies;

/// Its `sync_state` name.
pub const BLOCKS: &str = "blocks-backfill";
/// Timeout of one page (up to 1,000 edges) from the user service.
pub const PAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, serde::Deserialize)]
pub struct BlockEdge {
    pub blocker_id: Uuid,
    pub blocked_id: Uuid,
}

pub struct Blocks;

impl kit::backfill::Job for Blocks {
    type Item = BlockEdge;

    fn name(&self) -> &'static str {
        BLOCKS
    }

    fn path(&self) -> &'static str {
        "/internal/blocks"
    }

    async fn apply(&self, conn: &mut AnyConnection, items: Vec<BlockEdge>) -> anyhow::Result<()> {
        let edges: Vec<(Uuid, Uuid)> = items.iter().map(|e| (e.blocker_id, e.blocked_id)).collect();
        copies::backfill_blocks(conn, &edges).await?;
        Ok(())
    }
}
