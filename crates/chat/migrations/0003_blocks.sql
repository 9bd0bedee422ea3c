-- Chat's copy of the user service's blocks (the source of truth), fed by its
-- `user.blocked` / `user.unblocked` events and backfilled once from its
-- `GET /internal/blocks`, so a DM send checks blocks without asking the user service.
CREATE TABLE blocks (
    blocker_id TEXT NOT NULL,
    blocked_id TEXT NOT NULL,
    -- The DM key of the pair (`min|max`, as rooms.dm_key): a block either way stops the DM.
    pair_key TEXT NOT NULL,
    -- 1 = blocked; 0 = unblocked (the row stays so that a late backfill page or an older
    -- event cannot bring a lifted block back).
    active BIGINT NOT NULL,
    -- Id (uuid v7, time-ordered) of the event that set `active`; '' for backfilled rows.
    -- An event only overwrites an older version, so redelivery and reordering are harmless.
    version TEXT NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);
CREATE INDEX blocks_pair ON blocks (pair_key, active);

-- One-time jobs that are done (`blocks-backfill`).
CREATE TABLE sync_state (
    name TEXT PRIMARY KEY,
    done_at BIGINT NOT NULL
);
