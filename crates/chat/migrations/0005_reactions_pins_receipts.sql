-- Reactions, pins and read receipts (chat v1.1). Portable SQL.
-- One row per (message, emoji, user): reacting twice is a no-op by the primary key.
CREATE TABLE reactions (
    message_id TEXT NOT NULL,
    emoji TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
);
-- `attach` aggregates a page of messages by message_id (the primary key's prefix serves it);
-- this one orders the users of one emoji by reaction time for "who reacted".
CREATE INDEX reactions_by_time ON reactions (message_id, created_at);

-- A pinned message has pinned_at (epoch ms) and pinned_by; NULL = not pinned.
ALTER TABLE messages ADD COLUMN pinned_at BIGINT;
ALTER TABLE messages ADD COLUMN pinned_by TEXT;
-- The pins of a room, newest first. Partial (both backends): only pinned rows (≤ 50 per
-- room) are in it, so the send hot path pays nothing for it.
CREATE INDEX messages_pins ON messages (room_id, pinned_at) WHERE pinned_at IS NOT NULL;

-- When the member's read marker last moved (epoch ms); NULL = never.
ALTER TABLE members ADD COLUMN read_at BIGINT;
