-- Dialogs, their members and their messages.
--
-- Free text (a dialog's name, a message's body) is stored only sealed (AES-256-GCM) under
-- the dialog's data key (`data_keys` scope `dialog/<id>`); the database never sees it in
-- plaintext. Deleting a message erases its body and its edit history; a tombstone stays.
CREATE TABLE dialogs (
    id          TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,                    -- 'private' (two members) or 'group'
    name_sealed BYTEA,                            -- NULL: no name
    data_key_id TEXT NOT NULL REFERENCES data_keys (id),
    pair_key    TEXT UNIQUE,                      -- private: '<smaller id>:<larger id>'; NULL for groups
    created_by  TEXT NOT NULL REFERENCES users (id),
    created_at  BIGINT NOT NULL,
    last_seq    BIGINT NOT NULL DEFAULT 0         -- the newest message's seq; advanced under the row lock
);

CREATE TABLE dialog_members (
    dialog_id     TEXT NOT NULL REFERENCES dialogs (id),
    user_id       TEXT NOT NULL REFERENCES users (id),
    role          TEXT NOT NULL,                  -- 'owner', 'admin' or 'member'
    joined_at     BIGINT NOT NULL,
    last_read_seq BIGINT NOT NULL DEFAULT 0,      -- only ever raised
    PRIMARY KEY (dialog_id, user_id)
);
CREATE INDEX dialog_members_user ON dialog_members (user_id);

CREATE TABLE messages (
    id            TEXT PRIMARY KEY NOT NULL,
    dialog_id     TEXT NOT NULL REFERENCES dialogs (id),
    seq           BIGINT NOT NULL,                -- per dialog, from 1, without gaps
    sender_id     TEXT NOT NULL REFERENCES users (id),
    client_msg_id TEXT,                           -- the sender's idempotency key (NULLs never collide)
    body_sealed   BYTEA,                          -- NULL once deleted
    data_key_id   TEXT NOT NULL REFERENCES data_keys (id),
    attachments   TEXT NOT NULL DEFAULT '[]',     -- JSON array of file ids
    created_at    BIGINT NOT NULL,
    edited_at     BIGINT,
    deleted_at    BIGINT,
    UNIQUE (dialog_id, seq),
    UNIQUE (dialog_id, sender_id, client_msg_id)
);

-- The previous sealed body of each edit; removed with the body when the message is deleted.
CREATE TABLE message_edits (
    message_id  TEXT NOT NULL REFERENCES messages (id),
    edited_at   BIGINT NOT NULL,
    body_sealed BYTEA NOT NULL
);
CREATE INDEX message_edits_message ON message_edits (message_id);
