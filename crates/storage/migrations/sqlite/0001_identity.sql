-- Accounts and sessions. Times are Unix milliseconds (UTC); ids are UUIDv7 text.
CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL,
    username_key  TEXT NOT NULL UNIQUE,      -- lower-cased username: uniqueness ignores case
    password_hash TEXT NOT NULL,             -- argon2id PHC string
    roles         TEXT NOT NULL,             -- JSON array of role names
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until  BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY NOT NULL,
    token_hash      TEXT NOT NULL UNIQUE,    -- SHA-256 of the bearer token; the token is never stored
    user_id         TEXT NOT NULL REFERENCES users (id),
    created_at      BIGINT NOT NULL,
    last_seen_at    BIGINT NOT NULL,
    idle_expires_at BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    ip              TEXT,
    user_agent      TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);
