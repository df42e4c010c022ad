-- A feed of changes that make cached sessions stale (revocation, disable, password, roles,
-- MFA), written in the same transaction as the change. Every node (and the server beside
-- a CLI command) follows it to drop its cached sessions within a fraction of a second.
-- Rows older than an hour are pruned.
CREATE TABLE session_changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT NOT NULL,
    session_id TEXT,                 -- NULL: every session of the user
    at         BIGINT NOT NULL
);
CREATE INDEX session_changes_at ON session_changes (at);
