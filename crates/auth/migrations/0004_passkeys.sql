-- Passkeys (WebAuthn credentials) and their ceremony challenges. Portable between SQLite
-- and PostgreSQL. (0003 is the email-verification/TOTP migration of the same release.)

-- `credential_id` and `public_key` are base64url without padding; `public_key` is an
-- uncompressed P-256 point (algorithm -7, ES256) or an Ed25519 key (-8, EdDSA).
-- `sign_count` is the authenticator's last signature counter (0 when it keeps none).
CREATE TABLE passkeys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id TEXT NOT NULL UNIQUE,
    algorithm BIGINT NOT NULL,
    public_key TEXT NOT NULL,
    sign_count BIGINT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX passkeys_user ON passkeys (user_id, created_at);

-- A challenge handed out by a ceremony's start, taken (deleted) by its finish: single
-- use. Stored hashed like the other tokens. `user_id` is the registering user; null for
-- a login, where the authenticator says whose credential it is.
CREATE TABLE passkey_challenges (
    challenge_hash TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL
);
CREATE INDEX passkey_challenges_expiry ON passkey_challenges (expires_at);
