-- Portable schema (SQLite and PostgreSQL): TEXT uuids, BIGINT epoch-ms, BIGINT 0/1 flags.
CREATE TABLE rooms (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    topic TEXT NOT NULL DEFAULT '',
    visibility TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    -- `min(a,b)|max(a,b)` for DMs: one room per pair, even under concurrent creation.
    dm_key TEXT UNIQUE,
    created_at BIGINT NOT NULL,
    -- The room's event counter; incremented in the transaction that stores each event.
    last_seq BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX rooms_discover ON rooms (visibility, kind, id);

CREATE TABLE members (
    room_id TEXT NOT NULL REFERENCES rooms (id),
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    joined_at BIGINT NOT NULL,
    read_seq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id, room_id);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL REFERENCES rooms (id),
    seq BIGINT NOT NULL,
    sender_id TEXT NOT NULL,
    body TEXT NOT NULL,
    client_msg_id TEXT,
    reply_to TEXT,
    created_at BIGINT NOT NULL,
    edited_at BIGINT,
    deleted BIGINT NOT NULL DEFAULT 0,
    UNIQUE (room_id, seq),
    -- Idempotent sends: a retried client_msg_id can never create a second message.
    UNIQUE (sender_id, client_msg_id)
);

CREATE TABLE room_events (
    room_id TEXT NOT NULL REFERENCES rooms (id),
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    message_id TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, seq)
);
CREATE INDEX room_events_message ON room_events (message_id);
