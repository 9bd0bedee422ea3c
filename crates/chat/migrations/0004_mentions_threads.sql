-- Chat v1.1: mentions and threads on messages, and chat's copy of the usernames.
-- Resolved mentions (a JSON array of user ids), stored so that history shows what the
-- sender's text resolved to at send/edit time, whoever joins or leaves later.
ALTER TABLE messages ADD COLUMN mentions TEXT NOT NULL DEFAULT '[]';
-- The top-level message whose thread this reply is in; NULL for top-level messages.
ALTER TABLE messages ADD COLUMN thread_root_id TEXT;
-- On thread roots: replies so far (tombstones included) and the newest one's time (ms).
ALTER TABLE messages ADD COLUMN reply_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN last_reply_at BIGINT;
CREATE INDEX messages_thread ON messages (thread_root_id, seq);

-- user id → username, fed by auth's `user.registered` / `user.updated` events and
-- backfilled once from the user service's `GET /internal/usernames`: `@username` in a
-- body resolves against it (joined with the room's members) without a call per send.
CREATE TABLE usernames (
    user_id TEXT PRIMARY KEY,
    username TEXT NOT NULL
);
CREATE INDEX usernames_by_name ON usernames (username);
