-- Email verification, TOTP two-factor login and account deletion (API.md "Auth
-- additions — v1.1"). Portable between SQLite and PostgreSQL: TEXT uuids, BIGINT epoch-ms
-- timestamps, no booleans (a NULL timestamp is "no").

-- When the current address was confirmed (a verification link, or a confirmed email
-- change); NULL = unverified. `deleted_at`: the account was deleted; the row stays,
-- anonymised, so its revoked sessions keep answering GET /internal/revocations.
ALTER TABLE users ADD COLUMN email_verified_at BIGINT;
ALTER TABLE users ADD COLUMN deleted_at BIGINT;

-- One TOTP credential per account (RFC 6238). `enabled_at` NULL = set up, not yet
-- confirmed with a code (a new setup replaces it). `last_step` is the newest 30 s time
-- step a code was accepted for: a code works once, and no older one after it.
CREATE TABLE totp_credentials (
    user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    enabled_at BIGINT,
    last_step BIGINT NOT NULL
);

-- Recovery codes, stored as SHA-256 of the normalised code (80 random bits each).
CREATE TABLE recovery_codes (
    code_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX recovery_codes_user ON recovery_codes (user_id);

-- The second step of a login with MFA on: an opaque token (stored hashed) that the
-- password step returns, valid 5 minutes, single-use.
CREATE TABLE mfa_challenges (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX mfa_challenges_user ON mfa_challenges (user_id);

-- Usernames and email keys of deleted accounts, reserved until `reserved_until` (30 days
-- by default) so nobody takes over a name others still know. `name_key` is
-- `username:<name>` or `email:<email key>`.
CREATE TABLE retired_names (
    name_key TEXT PRIMARY KEY,
    reserved_until BIGINT NOT NULL
);
