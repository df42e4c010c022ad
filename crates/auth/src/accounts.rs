//! Account administration, sign-in and session checks.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;
use ward_crypto::{PasswordHasher, SessionToken};
use ward_storage::{SessionRecord, Store, UserRecord};

use crate::{AuthError, PasswordPolicy, Role, User, Username};

/// Automatic-logoff limits (HIPAA 164.312(a)(2)(iii)).
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub idle: Duration,
    pub absolute: Duration,
}

/// What a successful sign-in hands back. The token is shown once and never stored.
#[derive(Debug)]
pub struct LoginSuccess {
    pub token: SessionToken,
    pub session: SessionRecord,
    pub user: User,
}

/// A request's verified identity.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: User,
    pub session: SessionRecord,
}

/// The identity service. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
    hasher: PasswordHasher,
    policy: PasswordPolicy,
    limits: SessionLimits,
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>, hasher: PasswordHasher, policy: PasswordPolicy, limits: SessionLimits) -> Self {
        Self { store, hasher, policy, limits }
    }

    /// Creates a user after checking the name, the roles and the password policy.
    pub async fn create_user(
        &self,
        username: &str,
        password: &str,
        roles: &[String],
        now: OffsetDateTime,
    ) -> Result<User, AuthError> {
        let username = Username::parse(username)?;
        let mut parsed = roles.iter().map(|r| r.parse()).collect::<Result<Vec<Role>, _>>()?;
        parsed.sort();
        parsed.dedup();
        if parsed.is_empty() {
            return Err(AuthError::NoRole);
        }
        self.policy.check(password, &username)?;
        let hash = self.hash(password).await?;
        let record = UserRecord {
            id: Uuid::now_v7(),
            username: username.as_str().to_string(),
            username_key: username.key(),
            password_hash: hash,
            roles: parsed.iter().map(|r| r.as_str().to_string()).collect(),
            disabled: false,
            failed_logins: 0,
            locked_until: None,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_user(&record).await.map_err(|e| match e {
            ward_storage::StoreError::Conflict(_) => AuthError::UsernameTaken,
            other => other.into(),
        })?;
        User::try_from(&record)
    }

    pub async fn list_users(&self) -> Result<Vec<User>, AuthError> {
        self.store.list_users().await?.iter().map(User::try_from).collect()
    }

    pub async fn find_by_username(&self, username: &str) -> Result<User, AuthError> {
        let key = Username::parse(username).map_err(|_| AuthError::UserNotFound)?.key();
        let record = self.store.user_by_username_key(&key).await?.ok_or(AuthError::UserNotFound)?;
        User::try_from(&record)
    }

    /// Disables a user and revokes every session at once.
    pub async fn disable(&self, username: &str, now: OffsetDateTime) -> Result<User, AuthError> {
        let user = self.find_by_username(username).await?;
        self.store.set_user_disabled(user.id, true, now).await?;
        Ok(User { disabled: true, ..user })
    }

    /// Clears failed sign-in counters and locks.
    pub async fn unlock(&self, username: &str, now: OffsetDateTime) -> Result<User, AuthError> {
        let user = self.find_by_username(username).await?;
        self.store.unlock_user(user.id, now).await?;
        Ok(user)
    }

    /// Sets a new password (policy-checked) and revokes the user's sessions.
    pub async fn reset_password(&self, username: &str, password: &str, now: OffsetDateTime) -> Result<User, AuthError> {
        let user = self.find_by_username(username).await?;
        self.policy.check(password, &Username::parse(&user.username)?)?;
        let hash = self.hash(password).await?;
        self.store.set_password_hash(user.id, &hash, now).await?;
        Ok(user)
    }

    /// Verifies a password and opens a session. Unknown users, wrong passwords and
    /// disabled accounts all answer [`AuthError::InvalidCredentials`], after the same
    /// argon2 work.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        ip: Option<String>,
        user_agent: Option<String>,
        now: OffsetDateTime,
    ) -> Result<LoginSuccess, AuthError> {
        let record = match Username::parse(username) {
            Ok(name) => self.store.user_by_username_key(&name.key()).await?,
            Err(_) => None,
        };
        let verified = self.verify(password, record.as_ref().map(|r| r.password_hash.clone())).await?;
        let record = match record {
            Some(r) if verified && !r.disabled => r,
            _ => return Err(AuthError::InvalidCredentials),
        };
        let user = User::try_from(&record)?;
        let token = SessionToken::generate();
        let now = whole_millis(now);
        let session = SessionRecord {
            id: Uuid::now_v7(),
            token_hash: token.hash().0,
            user_id: user.id,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: now + self.limits.idle,
            expires_at: now + self.limits.absolute,
            revoked_at: None,
            ip,
            user_agent,
        };
        self.store.insert_session(&session).await?;
        Ok(LoginSuccess { token, session, user })
    }

    /// Resolves a bearer token to its live session, enforcing idle and absolute limits,
    /// and records the activity.
    pub async fn authenticate(&self, token: &str, now: OffsetDateTime) -> Result<Authenticated, AuthError> {
        let hash = SessionToken::from_client(token).hash();
        let session = self.store.session_by_token_hash(&hash.0).await?.ok_or(AuthError::Unauthenticated)?;
        if session.revoked_at.is_some() || now >= session.expires_at || now >= session.idle_expires_at {
            return Err(AuthError::SessionExpired);
        }
        let record = self.store.user_by_id(session.user_id).await?.ok_or(AuthError::Unauthenticated)?;
        if record.disabled {
            return Err(AuthError::SessionExpired);
        }
        let idle_expires_at = (now + self.limits.idle).min(session.expires_at);
        self.store.touch_session(session.id, now, idle_expires_at).await?;
        let session = SessionRecord { last_seen_at: now, idle_expires_at, ..session };
        Ok(Authenticated { user: User::try_from(&record)?, session })
    }

    /// Ends a session at once.
    pub async fn logout(&self, session_id: Uuid, now: OffsetDateTime) -> Result<(), AuthError> {
        self.store.revoke_session(session_id, now).await?;
        Ok(())
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// argon2 is CPU-bound for tens of milliseconds: keep it off the async workers.
    async fn hash(&self, password: &str) -> Result<String, AuthError> {
        let hasher = self.hasher.clone();
        let password = zeroize::Zeroizing::new(password.to_string());
        tokio::task::spawn_blocking(move || hasher.hash(&password))
            .await
            .map_err(|e| AuthError::Hash(ward_crypto::PasswordError::Hash(e.to_string())))?
            .map_err(AuthError::from)
    }

    async fn verify(&self, password: &str, stored: Option<String>) -> Result<bool, AuthError> {
        let hasher = self.hasher.clone();
        let password = zeroize::Zeroizing::new(password.to_string());
        tokio::task::spawn_blocking(move || hasher.verify(&password, stored.as_deref()))
            .await
            .map_err(|e| AuthError::Hash(ward_crypto::PasswordError::Hash(e.to_string())))?
            .map_err(AuthError::from)
    }
}

/// Storage keeps milliseconds; answering with the same precision keeps login and
/// `GET /v1/auth/session` consistent.
fn whole_millis(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000).unwrap_or(t)
}
