//! Records as the storage layer reads and writes them.

use time::OffsetDateTime;
use uuid::Uuid;

/// One account. `Debug` leaves out the password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: Uuid,
    /// As the user typed it at creation.
    pub username: String,
    /// Lower-cased `username`, unique: usernames are unique case-insensitively.
    pub username_key: String,
    /// argon2id PHC string; never logged.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub failed_logins: i64,
    pub locked_until: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// One sign-in session. The bearer token itself is never stored, only its SHA-256
/// (which `Debug` leaves out too).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: Uuid,
    pub token_hash: String,
    pub user_id: Uuid,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    pub idle_expires_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// For a temporary credential (STS): the one role it acts with.
    pub assumed_role: Option<String>,
    /// For a temporary credential: the session that made it.
    pub parent_session_id: Option<Uuid>,
    /// When the holder last proved a second factor in this session (None: never).
    pub mfa_at: Option<OffsetDateTime>,
    /// For a temporary credential (STS): its session policy, a JSON policy document that
    /// can only narrow what `assumed_role` allows (None: no session policy).
    pub session_policy: Option<String>,
}

/// One entry of the session-change feed: `session_id` changed, or (None) every session
/// and the cached account data of `user_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionChange {
    pub seq: i64,
    pub user_id: Uuid,
    pub session_id: Option<Uuid>,
    pub at: OffsetDateTime,
}

/// A data key, stored only wrapped by a master-key version of the key store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyRecord {
    pub id: Uuid,
    /// What it encrypts: `user/<id>`, `system/password-pepper`, …; unique.
    pub scope: String,
    /// The master-key version that wraps it.
    pub key_version: i64,
    pub wrapped: Vec<u8>,
    pub created_at: OffsetDateTime,
    pub destroyed_at: Option<OffsetDateTime>,
}

/// One second factor of a user. `secret` is sealed; its meaning belongs to `kind`.
#[derive(Clone, PartialEq, Eq)]
pub struct MfaFactorRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    /// `totp` (WebAuthn later).
    pub kind: String,
    /// `pending` until confirmed, then `active`.
    pub state: String,
    pub secret: Vec<u8>,
    pub data_key_id: Uuid,
    /// TOTP: the newest time step accepted; only later steps are accepted next.
    pub last_used_step: i64,
    pub created_at: OffsetDateTime,
    pub confirmed_at: Option<OffsetDateTime>,
}

/// The step between a verified password and the second factor.
#[derive(Clone, PartialEq, Eq)]
pub struct MfaChallengeRecord {
    pub id: Uuid,
    pub token_hash: String,
    pub user_id: Uuid,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub attempts: i64,
    pub used_at: Option<OffsetDateTime>,
}

/// An API key of a service account; only the key's SHA-256 is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub key_hash: String,
    /// The one role the key acts with.
    pub role: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
}

macro_rules! redacted_debug {
    ($t:ty, $secret:literal, [$($field:ident),*]) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    $(.field(stringify!($field), &self.$field))*
                    .field($secret, &"<redacted>")
                    .finish_non_exhaustive()
            }
        }
    };
}
redacted_debug!(MfaFactorRecord, "secret", [id, user_id, kind, state, last_used_step, created_at]);
redacted_debug!(MfaChallengeRecord, "token_hash", [id, user_id, expires_at, attempts, used_at]);
redacted_debug!(ApiKeyRecord, "key_hash", [id, user_id, name, role, expires_at, revoked_at]);

/// One audit record as stored. Its meaning and hashing belong to `ward-audit`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub id: String,
    pub time_us: i64,
    pub actor_user_id: Option<String>,
    pub actor_username: Option<String>,
    pub actor_session_id: Option<String>,
    pub via: String,
    pub action: String,
    pub resource: Option<String>,
    pub outcome: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub mfa: bool,
    pub reason: Option<String>,
    /// A JSON object.
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

/// A signed statement "the chain's record `seq` has hash `head_hash`".
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CheckpointRow {
    pub seq: i64,
    pub head_hash: String,
    pub time_us: i64,
    pub key_id: String,
    pub signature: String,
}

/// Filters of an audit search; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// A user id or a username.
    pub actor: Option<String>,
    /// An exact action, or a prefix ending in `.` or `*` (`auth.*`).
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    /// Only records with a larger `seq` (the cursor).
    pub after_seq: Option<i64>,
    /// An exact resource (`setting/session.idle_timeout_s`, `user/<id>`).
    pub resource: Option<String>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .field("failed_logins", &self.failed_logins)
            .field("locked_until", &self.locked_until)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id", &self.id)
            .field("token_hash", &"<redacted>")
            .field("user_id", &self.user_id)
            .field("created_at", &self.created_at)
            .field("idle_expires_at", &self.idle_expires_at)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .field("assumed_role", &self.assumed_role)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_hashes() {
        let t = OffsetDateTime::UNIX_EPOCH;
        let u = UserRecord {
            id: Uuid::nil(),
            username: "a".into(),
            username_key: "a".into(),
            password_hash: "$argon2id$SECRET".into(),
            roles: vec![],
            disabled: false,
            failed_logins: 0,
            locked_until: None,
            created_at: t,
            updated_at: t,
        };
        assert!(!format!("{u:?}").contains("SECRET"));
        let s = SessionRecord {
            id: Uuid::nil(),
            token_hash: "TOKENHASH".into(),
            user_id: Uuid::nil(),
            created_at: t,
            last_seen_at: t,
            idle_expires_at: t,
            expires_at: t,
            revoked_at: None,
            ip: None,
            user_agent: None,
            assumed_role: None,
            parent_session_id: None,
            mfa_at: None,
            session_policy: None,
        };
        assert!(!format!("{s:?}").contains("TOKENHASH"));
    }
}

/// A dialog (conversation). Its name is PHI-bearing free text, so it is stored only sealed
/// under the dialog's data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogRecord {
    pub id: Uuid,
    /// `private` (exactly two members) or `group`.
    pub kind: String,
    /// The sealed name (AES-256-GCM under `data_key_id`); `None` when it has no name.
    pub name_sealed: Option<Vec<u8>>,
    /// The dialog's data key (scope `dialog/<id>`), which seals its name and messages.
    pub data_key_id: Uuid,
    /// For a private dialog, `<smaller user id>:<larger user id>`; unique, so a pair has one
    /// private dialog. `None` for groups.
    pub pair_key: Option<String>,
    pub created_by: Uuid,
    pub created_at: OffsetDateTime,
    /// The newest message's `seq` (0 before the first message).
    pub last_seq: i64,
}

/// A shared file: its bytes are in the object store, sealed per segment under the file's
/// own data key; its name, content type and digest only in `meta_sealed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub id: Uuid,
    pub dialog_id: Uuid,
    pub uploader_id: Uuid,
    /// The file's data key (scope `file/<id>`), destroyed when the file is deleted.
    pub data_key_id: Uuid,
    /// Plaintext bytes.
    pub size: i64,
    /// Plaintext bytes per sealed segment.
    pub segment_size: i64,
    /// Name, content type and SHA-256, sealed; `None` once deleted.
    pub meta_sealed: Option<Vec<u8>>,
    /// Where the sealed object is in the object store.
    pub object_key: String,
    pub created_at: OffsetDateTime,
    pub deleted_at: Option<OffsetDateTime>,
}

/// A user's membership of a dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub dialog_id: Uuid,
    pub user_id: Uuid,
    /// `owner`, `admin` or `member`.
    pub role: String,
    pub joined_at: OffsetDateTime,
    /// The newest `seq` this member has read (0: none).
    pub last_read_seq: i64,
}

/// A message. The body is stored only sealed under the dialog's data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: Uuid,
    pub dialog_id: Uuid,
    /// Per-dialog counter without gaps, from 1.
    pub seq: i64,
    pub sender_id: Uuid,
    /// The sender's idempotency key; unique per (dialog, sender).
    pub client_msg_id: Option<String>,
    /// The sealed body; `None` once deleted (a tombstone stays).
    pub body_sealed: Option<Vec<u8>>,
    /// The data key that sealed `body_sealed`.
    pub data_key_id: Uuid,
    /// Attached file ids (JSON array of UUID strings in the database).
    pub attachments: Vec<Uuid>,
    pub created_at: OffsetDateTime,
    pub edited_at: Option<OffsetDateTime>,
    pub deleted_at: Option<OffsetDateTime>,
}

/// A page of a dialog's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only messages with `seq > after`.
    pub after: Option<i64>,
    /// Only messages with `seq < before`.
    pub before: Option<i64>,
    /// At most this many. With `before` and no `after`, the newest `limit` messages below
    /// `before` are returned; otherwise the oldest `limit` above `after` (or from the
    /// start). Always returned in ascending `seq` order.
    pub limit: i64,
}

/// A managed access policy: a named JSON document whose meaning belongs to `ward-access`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    /// Unique; the policy's identity.
    pub name: String,
    /// The JSON policy document.
    pub document: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Who last changed it; `None` for the CLI.
    pub updated_by: Option<Uuid>,
}

/// A policy attached to a principal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyAttachment {
    pub policy_name: String,
    /// `user` or `role`.
    pub principal_kind: String,
    /// A user id (`user`) or a role name (`role`).
    pub principal: String,
}

/// A break-glass grant: a user's time-limited emergency access to one dialog. It is live
/// while not revoked and before `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassGrant {
    pub id: Uuid,
    pub user_id: Uuid,
    pub dialog_id: Uuid,
    /// The justification the user gave.
    pub reason: GrantReason,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    /// Who revoked it; `None` for the CLI (or while not revoked).
    pub revoked_by: Option<Uuid>,
}

/// A break-glass grant's stated reason: free text that may name a patient, so it is stored
/// sealed under the data key of the grant's dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantReason {
    Sealed {
        key_id: Uuid,
        sealed: Vec<u8>,
    },
    /// Written before reasons were sealed (migration 0011); sealed at the next start.
    Legacy(String),
}
