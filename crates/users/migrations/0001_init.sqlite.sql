CREATE TABLE profiles (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL DEFAULT '',
    display_name TEXT NOT NULL DEFAULT '',
    bio TEXT NOT NULL DEFAULT '',
    avatar_url TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    followers_count BIGINT NOT NULL DEFAULT 0,
    following_count BIGINT NOT NULL DEFAULT 0,
    username_norm TEXT NOT NULL DEFAULT '',
    display_norm TEXT NOT NULL DEFAULT '',
    username_ver TEXT NOT NULL DEFAULT '',
    display_name_ver TEXT NOT NULL DEFAULT '',
    registered BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX profiles_username_norm ON profiles (username_norm);
CREATE INDEX profiles_display_norm ON profiles (display_norm);

CREATE TABLE profile_trigrams (
    trigram TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (trigram, user_id)
) WITHOUT ROWID;
CREATE INDEX profile_trigrams_user ON profile_trigrams (user_id);

CREATE TABLE follows (
    follower_id TEXT NOT NULL,
    followee_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (follower_id, followee_id)
);
CREATE INDEX follows_by_follower ON follows (follower_id, created_at, followee_id);
CREATE INDEX follows_by_followee ON follows (followee_id, created_at, follower_id);

CREATE TABLE blocks (
    blocker_id TEXT NOT NULL,
    blocked_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);
CREATE INDEX blocks_by_blocker ON blocks (blocker_id, created_at, blocked_id);
CREATE INDEX blocks_by_blocked ON blocks (blocked_id, blocker_id);
