-- Leases: one node at a time runs a cluster-wide job (scheduled key rotation and rewrap,
-- the file sweep). A lease is held by `holder` until `expires_at` (Unix ms); the holder
-- renews it while it works and deletes it when done.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
