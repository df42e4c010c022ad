-- Data keys, second factors and API keys.
--
-- A data key (AES-256) is stored only wrapped by a master-key version of the key store;
-- each has a scope naming what it encrypts (`user/<id>`, `system/password-pepper`, and
-- later `dialog/<id>`, `file/<id>`). Destroying one (cryptographic erase) blanks `wrapped`.
CREATE TABLE data_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    scope        TEXT NOT NULL UNIQUE,
    key_version  BIGINT NOT NULL,
    wrapped      BLOB NOT NULL,
    created_at   BIGINT NOT NULL,
    destroyed_at BIGINT
);

-- Second factors. `kind` is 'totp' today (WebAuthn later); `secret` holds the factor's
-- data sealed under the user's data key, never in plaintext. A factor is 'pending' from
-- enrollment until confirmed with a valid code, then 'active'.
CREATE TABLE mfa_factors (
    id             TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users (id),
    kind           TEXT NOT NULL,
    state          TEXT NOT NULL,
    secret         BLOB NOT NULL,
    data_key_id    TEXT NOT NULL REFERENCES data_keys (id),
    last_used_step BIGINT NOT NULL DEFAULT 0,   -- TOTP: newest accepted time step; a code works once
    created_at     BIGINT NOT NULL,
    confirmed_at   BIGINT
);
CREATE INDEX mfa_factors_user ON mfa_factors (user_id);

-- One-time recovery codes, stored as SHA-256 digests of 80-bit random codes.
CREATE TABLE recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users (id),
    code_hash  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- The half-finished sign-in between a verified password and the second factor.
CREATE TABLE mfa_challenges (
    id         TEXT PRIMARY KEY NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,            -- SHA-256 of the mfa_token
    user_id    TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    attempts   BIGINT NOT NULL DEFAULT 0,
    used_at    BIGINT
);

-- When the session's holder last proved a second factor (NULL: never).
ALTER TABLE sessions ADD COLUMN mfa_at BIGINT;

-- API keys of service accounts: shown once, stored as SHA-256 digests.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_keys_user ON api_keys (user_id);
