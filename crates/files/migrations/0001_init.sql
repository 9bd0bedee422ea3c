-- Files (API.md "Files"): one row per stored upload. The bytes live in the object store
-- under `files/<id>` (and `thumbnails/<id>` when has_thumbnail = 1).
CREATE TABLE files (
    id            TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    width         BIGINT,
    height        BIGINT,
    has_thumbnail BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    -- When the file last became attached to no message (its upload, or the deletion of the
    -- last message carrying it): the garbage collector's clock.
    detached_at   BIGINT NOT NULL
);
CREATE INDEX files_owner ON files (owner_id);
CREATE INDEX files_detached ON files (detached_at);

-- Which messages carry which files, learnt from chat's `chat.message.created` and
-- `chat.message.deleted`: whoever is a member of `room_id` may read the file.
CREATE TABLE attachments (
    file_id    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (file_id, message_id)
);
CREATE INDEX attachments_message ON attachments (message_id);

-- One row per uploader, updated at the start of each reservation: the row lock (PostgreSQL;
-- SQLite serialises writers anyway) makes "sum, compare, reserve" atomic per user.
CREATE TABLE file_quotas (
    user_id   TEXT PRIMARY KEY,
    locked_at BIGINT NOT NULL
);

-- Bytes promised to uploads in flight, counted against the quota until the upload is
-- stored (the row goes in the transaction that inserts the file) or fails. A crashed
-- process's reservations stop counting at expires_at and the collector deletes them.
CREATE TABLE upload_reservations (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    bytes      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX upload_reservations_user ON upload_reservations (user_id);
