-- Email (instant and daily digest). `emailed_at` (0001) is the claim: set when a worker
-- takes a notification for a mail, so at most one mail ever includes it; a failed send
-- clears it again and retries at `email_retry_at`, at most 5 times.
ALTER TABLE notifications ADD COLUMN email_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN email_retry_at BIGINT;
-- The round (uuid) that claimed it: that round reads back exactly what it claimed.
ALTER TABLE notifications ADD COLUMN email_claim TEXT;
CREATE INDEX notifications_email_due ON notifications (created_at) WHERE emailed_at IS NULL AND read_at IS NULL;
CREATE INDEX notifications_email_claim ON notifications (email_claim);

-- Absent in an event = unverified: unverified addresses get no notification mail.
ALTER TABLE recipients ADD COLUMN email_verified BIGINT NOT NULL DEFAULT 0;

-- The local date (YYYY-MM-DD, the user's timezone) of the last daily digest: set when a
-- worker takes the day, so one digest a local day even across restarts and instances.
ALTER TABLE preferences ADD COLUMN digest_on TEXT;

-- Room names from chat's message events, for mails (`#general`).
CREATE TABLE room_names (
    room_id TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
