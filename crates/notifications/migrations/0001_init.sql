-- One row per (recipient, message): the unique key makes consumption idempotent even
-- without the inbox (a redelivered event inserts nothing).
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- The kind it falls back to when an edit removes the mention (a mention that is
    -- also a reply stays as the reply); NULL: withdrawn then.
    fallback_kind TEXT,
    room_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    actor_id TEXT NOT NULL,
    preview TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    read_at BIGINT,
    -- Web Push: when it is next due (NULL: never; set at creation), how often tried, and
    -- when it was done with (sent, or nothing to send to).
    push_due_at BIGINT,
    push_attempts BIGINT NOT NULL DEFAULT 0,
    pushed_at BIGINT,
    emailed_at BIGINT,
    UNIQUE (user_id, message_id)
);
CREATE INDEX notifications_by_user ON notifications (user_id, id);
CREATE INDEX notifications_unread ON notifications (user_id, id) WHERE read_at IS NULL;
CREATE INDEX notifications_by_room ON notifications (user_id, room_id, seq) WHERE read_at IS NULL;
CREATE INDEX notifications_by_message ON notifications (message_id);
CREATE INDEX notifications_push_due ON notifications (push_due_at) WHERE pushed_at IS NULL AND read_at IS NULL;

CREATE TABLE preferences (
    user_id TEXT PRIMARY KEY,
    email TEXT NOT NULL DEFAULT 'instant',
    web_push BIGINT NOT NULL DEFAULT 1,
    previews BIGINT NOT NULL DEFAULT 1,
    timezone TEXT NOT NULL DEFAULT 'UTC',
    updated_at BIGINT NOT NULL
);

-- Per-room level; absent = the default (all for DMs, mentions for channels).
CREATE TABLE room_settings (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    level TEXT NOT NULL,
    muted_until BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
-- Who asked for every message of a channel (`message` notifications).
CREATE INDEX room_settings_all ON room_settings (room_id, user_id) WHERE level = 'all';

-- Copy of the user service's blocks; `version` = id (uuid v7) of the newest event applied,
-- so an older event never overwrites a newer one.
CREATE TABLE blocks (
    blocker_id TEXT NOT NULL,
    blocked_id TEXT NOT NULL,
    active BIGINT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);

-- Copy of auth's identities (email, names) for mail.
CREATE TABLE recipients (
    user_id TEXT PRIMARY KEY,
    username TEXT NOT NULL DEFAULT '',
    display_name TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT ''
);

CREATE TABLE push_subscriptions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    endpoint TEXT NOT NULL UNIQUE,
    p256dh TEXT NOT NULL,
    auth TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_success_at BIGINT,
    failures BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX push_subscriptions_by_user ON push_subscriptions (user_id);
