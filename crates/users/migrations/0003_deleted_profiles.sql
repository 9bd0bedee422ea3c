-- Deleted accounts (auth's `user.deleted`): the profile row stays as a tombstone with
-- every visible field emptied (`username = ''` hides it from every read) so that a late
-- or redelivered `user.registered` / `user.updated` cannot bring it back. Portable.
ALTER TABLE profiles ADD COLUMN deleted_at BIGINT;
