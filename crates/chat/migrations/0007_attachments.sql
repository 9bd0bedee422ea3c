-- Attachments (files v1.1). Portable SQL.
-- The files a message carries, as a JSON array of the files service's `File` objects
-- copied at send (reading a room never calls the files service). NULL = none, which is
-- most messages: no bytes stored for them, and no default to rewrite on old rows.
ALTER TABLE messages ADD COLUMN attachments TEXT;
