-- Message search (SQLite): an FTS5 index fed with text normalised and segmented in Rust
-- (chat's `search::tokens`), so the `ascii` tokenizer only splits at the spaces Rust put
-- between terms (it keeps every non-ASCII character in a token and lower-cases nothing
-- that Rust did not lower-case already).
--
-- `message_search` maps a message to its FTS rowid (an INTEGER PRIMARY KEY, stable under
-- VACUUM, unlike the implicit rowid of `messages`) and carries room and time for ranking.
CREATE TABLE message_search (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Contentless (the body is in `messages`; the index holds only terms) with deletes
-- allowed (SQLite 3.43+; the bundled one is newer). `room` holds one token per message,
-- `r` + the room id's hex: a search ANDs the body query with the caller's rooms inside
-- the index (doclist intersection) instead of filtering matches row by row. Prefix
-- indexes for 2 and 3 characters: a query word is also a prefix, and short prefixes would
-- otherwise merge the doclists of every term they start.
CREATE VIRTUAL TABLE message_fts USING fts5(
    room, body, tokenize = 'ascii', prefix = '2 3', content = '', contentless_delete = 1
);
