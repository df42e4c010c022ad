//! Row types shared by both engines, and their conversion to and from [`crate::model`].

use time::OffsetDateTime;
use uuid::Uuid;

use crate::StoreError;
use crate::model::{SessionRecord, UserRecord};

/// Unix milliseconds, the storage representation of a UTC time.
pub(crate) fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub(crate) fn from_millis(ms: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {ms}: {e}")))
}

pub(crate) fn uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("id {s:?}: {e}")))
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    pub id: String,
    pub username: String,
    pub username_key: String,
    pub password_hash: String,
    pub roles: String,
    pub disabled: bool,
    pub failed_logins: i64,
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TryFrom<UserRow> for UserRecord {
    type Error = StoreError;
    fn try_from(r: UserRow) -> Result<Self, StoreError> {
        Ok(UserRecord {
            id: uuid(&r.id)?,
            username: r.username,
            username_key: r.username_key,
            password_hash: r.password_hash,
            roles: serde_json::from_str(&r.roles).map_err(|e| StoreError::Corrupt(format!("roles: {e}")))?,
            disabled: r.disabled,
            failed_logins: r.failed_logins,
            locked_until: r.locked_until.map(from_millis).transpose()?,
            created_at: from_millis(r.created_at)?,
            updated_at: from_millis(r.updated_at)?,
        })
    }
}

pub(crate) fn roles_json(roles: &[String]) -> String {
    serde_json::Value::from(roles.to_vec()).to_string()
}

#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    pub id: String,
    pub token_hash: String,
    pub user_id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub idle_expires_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub assumed_role: Option<String>,
    pub parent_session_id: Option<String>,
    pub mfa_at: Option<i64>,
    pub session_policy: Option<String>,
}

impl TryFrom<SessionRow> for SessionRecord {
    type Error = StoreError;
    fn try_from(r: SessionRow) -> Result<Self, StoreError> {
        Ok(SessionRecord {
            id: uuid(&r.id)?,
            token_hash: r.token_hash,
            user_id: uuid(&r.user_id)?,
            created_at: from_millis(r.created_at)?,
            last_seen_at: from_millis(r.last_seen_at)?,
            idle_expires_at: from_millis(r.idle_expires_at)?,
            expires_at: from_millis(r.expires_at)?,
            revoked_at: r.revoked_at.map(from_millis).transpose()?,
            ip: r.ip,
            user_agent: r.user_agent,
            assumed_role: r.assumed_role,
            parent_session_id: r.parent_session_id.as_deref().map(uuid).transpose()?,
            mfa_at: r.mfa_at.map(from_millis).transpose()?,
            session_policy: r.session_policy,
        })
    }
}

/// SQL shared by both engines: SQLite and PostgreSQL both accept `$N` placeholders.
pub(crate) mod sql {
    pub const INSERT_USER: &str = "INSERT INTO users (id, username, username_key, password_hash, roles, disabled, \
         failed_logins, locked_until, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
    pub const USER_BY_ID: &str = "SELECT id, username, username_key, password_hash, roles, disabled, failed_logins, \
         locked_until, created_at, updated_at FROM users WHERE id = $1";
    pub const USER_BY_KEY: &str = "SELECT id, username, username_key, password_hash, roles, disabled, failed_logins, \
         locked_until, created_at, updated_at FROM users WHERE username_key = $1";
    pub const LIST_USERS: &str = "SELECT id, username, username_key, password_hash, roles, disabled, failed_logins, \
         locked_until, created_at, updated_at FROM users ORDER BY created_at, id";
    pub const SET_DISABLED: &str = "UPDATE users SET disabled = $2, updated_at = $3 WHERE id = $1";
    pub const SET_PASSWORD: &str = "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1";
    pub const UNLOCK: &str = "UPDATE users SET failed_logins = 0, locked_until = NULL, updated_at = $2 WHERE id = $1";
    pub const REHASH: &str = "UPDATE users SET password_hash = $2 WHERE id = $1";
    pub const SET_ROLES: &str = "UPDATE users SET roles = $2, updated_at = $3 WHERE id = $1";
    pub const COUNT_FAILURE: &str =
        "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1 RETURNING failed_logins";
    pub const SET_LOCK: &str = "UPDATE users SET locked_until = $2 WHERE id = $1";
    pub const REVOKE_USER_SESSIONS: &str =
        "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL";
    pub const REVOKE_OTHER_SESSIONS: &str =
        "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL AND id <> $3";
    pub const SESSION_BY_ID: &str = "SELECT id, token_hash, user_id, created_at, last_seen_at, idle_expires_at, \
         expires_at, revoked_at, ip, user_agent, assumed_role, parent_session_id, mfa_at, \
         session_policy FROM sessions WHERE id = $1";
    pub const LIVE_SESSIONS: &str = "SELECT id, token_hash, user_id, created_at, last_seen_at, idle_expires_at, \
         expires_at, revoked_at, ip, user_agent, assumed_role, parent_session_id, mfa_at, \
         session_policy FROM sessions WHERE user_id = $1 AND revoked_at IS NULL \
         AND expires_at > $2 AND idle_expires_at > $2 ORDER BY created_at";
    pub const INSERT_SESSION: &str = "INSERT INTO sessions (id, token_hash, user_id, created_at, last_seen_at, \
         idle_expires_at, expires_at, revoked_at, ip, user_agent, assumed_role, parent_session_id, mfa_at, \
         session_policy) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
    pub const SESSION_BY_HASH: &str = "SELECT id, token_hash, user_id, created_at, last_seen_at, idle_expires_at, \
         expires_at, revoked_at, ip, user_agent, assumed_role, parent_session_id, mfa_at, \
         session_policy FROM sessions WHERE token_hash = $1";
    pub const TOUCH_SESSION: &str =
        "UPDATE sessions SET last_seen_at = $2, idle_expires_at = $3 WHERE id = $1 AND revoked_at IS NULL";
    pub const NOTE_SESSION_CHANGE: &str =
        "INSERT INTO session_changes (user_id, session_id, at) SELECT user_id, id, $2 FROM sessions WHERE id = $1";
    pub const NOTE_USER_CHANGE: &str = "INSERT INTO session_changes (user_id, session_id, at) VALUES ($1, NULL, $2)";
    pub const PRUNE_SESSION_CHANGES: &str = "DELETE FROM session_changes WHERE at < $1";
    pub const SESSION_CHANGES_SINCE: &str =
        "SELECT seq, user_id, session_id, at FROM session_changes WHERE at >= $1 ORDER BY seq";
    pub const REVOKE_SESSION: &str = "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";

    pub const AUDIT_INSERT: &str = "INSERT INTO audit_events (seq, id, time_us, actor_user_id, actor_username, \
         actor_session_id, via, action, resource, outcome, ip, user_agent, mfa, reason, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";
    pub const AUDIT_HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";
    pub const AUDIT_AFTER: &str = "SELECT seq, id, time_us, actor_user_id, actor_username, actor_session_id, via, \
         action, resource, outcome, ip, user_agent, mfa, reason, details, prev_hash, hash FROM audit_events \
         WHERE seq > $1 ORDER BY seq LIMIT $2";
    /// Optional filters as `CAST($n AS …) IS NULL OR …`, which both engines accept.
    pub const AUDIT_SEARCH: &str = "SELECT seq, id, time_us, actor_user_id, actor_username, actor_session_id, via, \
         action, resource, outcome, ip, user_agent, mfa, reason, details, prev_hash, hash FROM audit_events \
         WHERE (CAST($1 AS TEXT) IS NULL OR actor_user_id = $1 OR lower(actor_username) = lower($1)) \
         AND (CAST($2 AS TEXT) IS NULL OR action = $2) \
         AND (CAST($3 AS TEXT) IS NULL OR action LIKE $3) \
         AND (CAST($4 AS TEXT) IS NULL OR outcome = $4) \
         AND (CAST($5 AS BIGINT) IS NULL OR time_us >= $5) \
         AND (CAST($6 AS BIGINT) IS NULL OR time_us < $6) \
         AND (CAST($9 AS TEXT) IS NULL OR resource = $9) \
         AND seq > $7 ORDER BY seq LIMIT $8";
    pub const SETTINGS: &str = "SELECT key, value FROM settings_snapshot ORDER BY key";
    pub const PUT_SETTING: &str = "INSERT INTO settings_snapshot (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value";
    pub const CHECKPOINT_INSERT: &str = "INSERT INTO audit_checkpoints (seq, head_hash, time_us, key_id, signature) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
    pub const CHECKPOINTS: &str =
        "SELECT seq, head_hash, time_us, key_id, signature FROM audit_checkpoints ORDER BY seq, key_id";
}

/// Splits an action filter into an exact match or a `LIKE` prefix (`auth.*` → `auth.%`).
/// Only `[a-z0-9._-]` reach the pattern, so it needs no escaping.
pub(crate) fn action_filter(action: Option<&str>) -> (Option<String>, Option<String>) {
    match action {
        None => (None, None),
        Some(a) => {
            let clean: String =
                a.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*')).collect();
            match clean.strip_suffix('*') {
                Some(prefix) => (None, Some(format!("{}%", prefix.replace('*', "")))),
                None => (Some(clean), None),
            }
        }
    }
}
