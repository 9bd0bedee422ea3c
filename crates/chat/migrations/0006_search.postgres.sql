-- Message search (PostgreSQL): a table of its own rather than a column of `messages`
-- (updating `messages` rows per send would be a non-HOT update on the ingest path). The
-- tsvector is built in Rust from the normalised, segmented text (chat's
-- `search::tsvector`) and cast from its literal form: no parser, dictionary or stemmer
-- of PostgreSQL's is involved, so both backends index the same terms.
CREATE TABLE message_search (
    message_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    tsv TSVECTOR NOT NULL
);
CREATE INDEX message_search_tsv ON message_search USING GIN (tsv);
-- Newest-first candidate scans for very common terms (see store::search).
CREATE INDEX message_search_room_time ON message_search (room_id, created_at);
