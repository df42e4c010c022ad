-- Access control: managed policies, their attachments, break-glass grants, and the
-- session policy of a temporary credential.
--
-- A policy is a named JSON document (its meaning belongs to `ward-access`), attached to
-- users and roles. Replacing a policy keeps its `created_at`; deleting it removes its
-- attachments first.
CREATE TABLE policies (
    name       TEXT PRIMARY KEY NOT NULL,
    document   TEXT NOT NULL,                    -- JSON policy document
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT                              -- user id; NULL when changed from the CLI
);

CREATE TABLE policy_attachments (
    policy_name    TEXT NOT NULL REFERENCES policies (name),
    principal_kind TEXT NOT NULL,                -- 'user' or 'role'
    principal      TEXT NOT NULL,                -- user id or role name
    PRIMARY KEY (policy_name, principal_kind, principal)
);

-- Break-glass: a user's time-limited emergency access to one dialog, with the reason they
-- gave. A grant is live while not revoked and before `expires_at`; rows are kept (revoked
-- or expired) for review.
CREATE TABLE breakglass_grants (
    id         TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    dialog_id  TEXT NOT NULL REFERENCES dialogs (id),
    reason     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,                           -- NULL: not revoked
    revoked_by TEXT                              -- user id; NULL when revoked from the CLI
);
CREATE INDEX breakglass_grants_user_dialog ON breakglass_grants (user_id, dialog_id);
CREATE INDEX breakglass_grants_created ON breakglass_grants (created_at);

-- A temporary credential's (STS) JSON session policy, which can only narrow what its role
-- allows; NULL for every other session.
ALTER TABLE sessions ADD COLUMN session_policy TEXT;
