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
-- The tsvector also holds the message's room as the lexeme `#<room id hex>`, so GIN
-- intersects a query with the caller's rooms inside the index.
CREATE INDEX message_search_tsv ON message_search USING GIN (tsv);
-- Newest-first scans for very common terms, the room checked inside the index (a user's
-- rooms are spread over the whole table: see store::search::candidates).
CREATE INDEX message_search_time ON message_search (created_at, room_id);
