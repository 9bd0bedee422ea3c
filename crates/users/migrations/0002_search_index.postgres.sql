-- People search moved to an in-memory index per instance (src/search.rs): the trigram
-- table and the name indexes leave the write path; a change feed keeps instances in step.
DROP TABLE IF EXISTS profile_trigrams;
DROP INDEX IF EXISTS profiles_username_norm;
DROP INDEX IF EXISTS profiles_display_norm;

CREATE TABLE search_changes (
    seq BIGSERIAL PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL,
    changed_at BIGINT NOT NULL
);
CREATE INDEX search_changes_changed_at ON search_changes (changed_at);
