-- Shared files.
--
-- A file's bytes live in the object store (local disk or S3) as segments sealed with
-- AES-256-GCM under the file's own data key (`data_keys` scope `file/<id>`). Its name,
-- content type and SHA-256 are PHI-bearing, so they are stored only sealed (`meta_sealed`)
-- under the same key. A row is written only once the object is complete; deleting a file
-- destroys its data key (cryptographic erase), blanks `meta_sealed` and keeps the row as a
-- tombstone for the audit trail.
CREATE TABLE files (
    id           TEXT PRIMARY KEY NOT NULL,
    dialog_id    TEXT NOT NULL REFERENCES dialogs (id),
    uploader_id  TEXT NOT NULL REFERENCES users (id),
    data_key_id  TEXT NOT NULL REFERENCES data_keys (id),
    size         BIGINT NOT NULL,                 -- plaintext bytes
    segment_size BIGINT NOT NULL,                 -- plaintext bytes per sealed segment
    meta_sealed  BLOB,                            -- NULL once deleted
    object_key   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    deleted_at   BIGINT
);
CREATE INDEX files_dialog ON files (dialog_id);
