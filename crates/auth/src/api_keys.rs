//! API keys for service accounts (HIPAA 164.312(d), entity authentication).
//!
//! A key is `ward_ak_` followed by 256 random bits in base64url: the prefix lets secret
//! scanners recognise a leaked key, the randomness makes the SHA-256 digest (all that is
//! stored) safe to keep without a slow hash. A key belongs to a user holding the
//! `service` role, acts with exactly one role that user holds, and has an expiry (at most
//! `[auth] api_key_max_days`). It is shown once at creation, refused once revoked or
//! expired, and dies with its user (disabled, or the role taken away). API keys skip
//! the MFA requirement by design: they are machine credentials, issued by an
//! administrator who did pass MFA.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;
use ward_audit::{Context, Outcome};
use ward_crypto::SessionToken;
use ward_storage::{ApiKeyRecord, SessionRecord};
use zeroize::Zeroizing;

use crate::accounts::{Authenticated, CredentialKind};
use crate::{Accounts, AuthError, Role, User, UserRef};

/// What every Ward API key starts with.
pub const API_KEY_PREFIX: &str = "ward_ak_";

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub role: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When the key last authenticated a request (to within a minute); `None`: never.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

impl From<&ApiKeyRecord> for ApiKeyView {
    fn from(r: &ApiKeyRecord) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            name: r.name.clone(),
            role: r.role.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            last_used_at: r.last_used_at,
        }
    }
}

/// A key just made: `key` is shown once.
pub struct NewApiKey {
    pub key: Zeroizing<String>,
    pub view: ApiKeyView,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey").field("key", &"<redacted>").field("view", &self.view).finish()
    }
}

fn key_hash(key: &str) -> String {
    ward_crypto::sha256_hex(key.as_bytes())
}

/// How far `last_used_at` may lag behind a key's real last use.
const LAST_USED_STEP: time::Duration = time::Duration::minutes(1);

impl Accounts {
    /// Issues an API key for a service account (administrators).
    pub async fn create_api_key(
        &self,
        ctx: &Context,
        owner: UserRef<'_>,
        name: &str,
        role: &str,
        expires_in_days: u64,
    ) -> Result<NewApiKey, AuthError> {
        let attempt = async {
            let user = self.find(owner).await?;
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
                return Err(AuthError::Invalid("name: 1 to 100 printable characters".into()));
            }
            let max = self.credentials.api_key_max_days;
            if !(1..=max).contains(&expires_in_days) {
                return Err(AuthError::Invalid(format!("expires_in_days: must be between 1 and {max}")));
            }
            if !user.roles.contains(&Role::Service) {
                return Err(AuthError::Invalid(
                    "API keys are for service accounts: the user needs the service role".into(),
                ));
            }
            let role: Role = role.parse()?;
            if !user.roles.contains(&role) {
                return Err(AuthError::Invalid(format!("the user does not hold the {role} role")));
            }
            if user.disabled {
                return Err(AuthError::Invalid("the user is disabled".into()));
            }
            let key = Zeroizing::new(format!("{API_KEY_PREFIX}{}", SessionToken::generate().expose()));
            let record = ApiKeyRecord {
                id: Uuid::now_v7(),
                user_id: user.id,
                name: name.to_string(),
                key_hash: key_hash(&key),
                role: role.as_str().to_string(),
                created_at: ctx.now,
                expires_at: ctx.now + Duration::from_secs(expires_in_days.saturating_mul(86_400)),
                revoked_at: None,
                last_used_at: None,
            };
            let mut tx = self.store.begin().await?;
            tx.insert_api_key(&record).await?;
            let event = ctx
                .event("apikey.create", Outcome::Success)
                .resource(format!("apikey/{}", record.id))
                .detail("user_id", user.id.to_string())
                .detail("role", role.as_str())
                .detail("expires_in_days", expires_in_days);
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            Ok(NewApiKey { key, view: ApiKeyView::from(&record) })
        };
        self.audited_failure(ctx, "apikey.create", None, attempt.await).await
    }

    /// A user's API keys, newest last.
    pub async fn api_keys(&self, owner: UserRef<'_>) -> Result<Vec<ApiKeyView>, AuthError> {
        let user = self.find(owner).await?;
        Ok(self.store.api_keys(user.id).await?.iter().map(ApiKeyView::from).collect())
    }

    /// Revokes one API key at once (administrators).
    pub async fn revoke_api_key(&self, ctx: &Context, owner: UserRef<'_>, key_id: Uuid) -> Result<(), AuthError> {
        let attempt = async {
            let user = self.find(owner).await?;
            let mut tx = self.store.begin().await?;
            if !tx.revoke_api_key(key_id, user.id, ctx.now).await? {
                return Err(AuthError::UserNotFound);
            }
            let event = ctx.event("apikey.revoke", Outcome::Success).resource(format!("apikey/{key_id}"));
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            Ok(())
        };
        self.audited_failure(ctx, "apikey.revoke", None, attempt.await).await
    }

    /// Resolves an API key to its service account, acting with the key's one role.
    pub(crate) async fn authenticate_api_key(
        &self,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<Authenticated, AuthError> {
        let record = self.store.api_key_by_hash(&key_hash(key)).await?.ok_or(AuthError::Unauthenticated)?;
        if record.revoked_at.is_some() || now >= record.expires_at {
            return Err(AuthError::SessionExpired);
        }
        let user_record = self.store.user_by_id(record.user_id).await?.ok_or(AuthError::Unauthenticated)?;
        let mut user = User::try_from(&user_record)?;
        let role: Role = record.role.parse()?;
        if user.disabled || !user.roles.contains(&role) {
            return Err(AuthError::SessionExpired);
        }
        user.roles = vec![role];
        // Use is recorded for reviews of stale keys, at most once a minute per key (a write
        // per request would cost a durable write each).
        if record.last_used_at.is_none_or(|at| now - at >= LAST_USED_STEP) {
            self.store.touch_api_key(record.id, now).await?;
        }
        let session = SessionRecord {
            id: record.id,
            token_hash: String::new(),
            user_id: record.user_id,
            created_at: record.created_at,
            last_seen_at: now,
            idle_expires_at: record.expires_at,
            expires_at: record.expires_at,
            revoked_at: None,
            ip: None,
            user_agent: None,
            assumed_role: Some(record.role),
            parent_session_id: None,
            mfa_at: None,
            session_policy: None,
        };
        Ok(Authenticated { user, session, kind: CredentialKind::ApiKey, mfa: false, mfa_enrollment_required: false })
    }
}
