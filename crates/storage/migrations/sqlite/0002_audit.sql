-- The audit trail: an append-only hash chain (see crates/audit), its head, and signed checkpoints.
CREATE TABLE audit_events (
    seq              BIGINT PRIMARY KEY NOT NULL,   -- 1, 2, 3, … without gaps
    id               TEXT NOT NULL UNIQUE,          -- UUIDv7
    time_us          BIGINT NOT NULL,               -- Unix microseconds, UTC
    actor_user_id    TEXT,
    actor_username   TEXT,
    actor_session_id TEXT,
    via              TEXT NOT NULL,                 -- api, cli, system
    action           TEXT NOT NULL,                 -- dotted: auth.login, user.create, …
    resource         TEXT,                          -- kind/id, never content
    outcome          TEXT NOT NULL,                 -- success, failure, denied
    ip               TEXT,
    user_agent       TEXT,
    mfa              BOOLEAN NOT NULL,
    reason           TEXT,
    details          TEXT NOT NULL,                 -- JSON object of ids and metadata, never PHI
    prev_hash        TEXT NOT NULL,
    hash             TEXT NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (time_us);
CREATE INDEX audit_events_action ON audit_events (action);
CREATE INDEX audit_events_actor ON audit_events (actor_user_id);

-- One row: the sequence number and hash of the newest record. Locking it serializes
-- appends across connections and nodes, so the chain stays one sequence.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_checkpoints (
    seq       BIGINT NOT NULL,
    head_hash TEXT NOT NULL,
    time_us   BIGINT NOT NULL,
    key_id    TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (seq, key_id)
);
