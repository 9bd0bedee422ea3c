-- Mailed single-use tokens, device tokens, and indexes for voiding reset tokens and
-- listing recent revocations. Portable between SQLite and PostgreSQL.

-- A token mailed to an address (stored hashed). `purpose` says what confirming it does:
-- 'email_change' sets the account's email to `email` (the new address); registration
-- verification ('email_verify') will confirm `email` through the same endpoint.
CREATE TABLE email_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL,
    email TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX email_tokens_user ON email_tokens (user_id, purpose);

-- Device tokens (OWASP "device cookies", stored hashed): a login presenting one of its
-- account's passes the per-account login throttle.
CREATE TABLE device_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX device_tokens_user ON device_tokens (user_id, created_at);

CREATE INDEX password_resets_user ON password_resets (user_id);
CREATE INDEX sessions_revoked ON sessions (revoked_at);
