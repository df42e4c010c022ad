//! Records as the storage layer reads and writes them.

use time::OffsetDateTime;
use uuid::Uuid;

/// One account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: Uuid,
    /// As the user typed it at creation.
    pub username: String,
    /// Lower-cased `username`, unique: usernames are unique case-insensitively.
    pub username_key: String,
    /// argon2id PHC string; never logged (`Debug` of the domain type redacts it).
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub failed_logins: i64,
    pub locked_until: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// One sign-in session. The bearer token itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}
