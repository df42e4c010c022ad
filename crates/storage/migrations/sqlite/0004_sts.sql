-- Temporary limited-privilege credentials (STS): a session limited to one assumed role,
-- made from a parent session.
ALTER TABLE sessions ADD COLUMN assumed_role TEXT;
ALTER TABLE sessions ADD COLUMN parent_session_id TEXT;
