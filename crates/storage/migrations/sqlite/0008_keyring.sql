-- The local key store's keyring kept in the shared database (`[keys] keyring = "database"`),
-- so every node reaches the same master keys without copying a file. The body is the same
-- document as keyring.json and is always sealed with WARD_MASTER_PASSPHRASE (argon2id, then
-- AES-256-GCM): the database never holds a master key in plain text. `revision` guards
-- concurrent rotations (compare and swap).
CREATE TABLE keyring (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    revision   BIGINT NOT NULL,
    body       BLOB NOT NULL,
    updated_at BIGINT NOT NULL
);
