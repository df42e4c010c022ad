//! Account administration, sign-in and session checks, each recorded in the audit trail.
//!
//! Every change commits in one transaction with its audit record; a refused or failed
//! attempt is recorded on its own before the caller is answered. If the audit record
//! cannot be written, the operation fails with [`AuthError::Audit`].

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;
use ward_audit::{AuditLog, Context, Outcome};
use ward_crypto::{PasswordHasher, SessionToken};
use ward_keys::DataKeys;
use ward_storage::{SessionRecord, Store, UserRecord};

use crate::cache::SessionCache;
use crate::{AuthError, PasswordPolicy, Role, User, Username};

/// Default lifetime of a session-cache entry.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);

/// Automatic-logoff limits (HIPAA 164.312(a)(2)(iii)).
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub idle: Duration,
    pub absolute: Duration,
}

/// The rules of sign-in: password policy, automatic logoff, and brute-force protection.
#[derive(Debug, Clone, Copy)]
pub struct AuthSettings {
    pub policy: PasswordPolicy,
    pub limits: SessionLimits,
    /// Failures after which each further failure locks for 1 s, 2 s, 4 s, … (max 15 min).
    pub lockout_threshold: i64,
    /// Failures after which the account stays locked until unlocked by an administrator.
    pub hard_lock_threshold: i64,
    /// Sign-in attempts per client IP per minute, on this node.
    pub attempts_per_ip_per_minute: u32,
    /// Password hashes computed at once (each holds the argon2 memory cost).
    pub max_concurrent_hashes: u32,
}

impl AuthSettings {
    /// The lock deadline after `failures` consecutive failures at `now`.
    pub fn lock_until(&self, failures: i64, now: OffsetDateTime) -> Option<OffsetDateTime> {
        if failures >= self.hard_lock_threshold {
            return Some(OffsetDateTime::new_utc(
                time::Date::from_calendar_date(9999, time::Month::December, 31).ok()?,
                time::Time::MIDNIGHT,
            ));
        }
        if failures < self.lockout_threshold {
            return None;
        }
        let exponent = u32::try_from(failures - self.lockout_threshold).unwrap_or(u32::MAX).min(20);
        let secs = 2u64.saturating_pow(exponent).min(15 * 60);
        Some(now + Duration::from_secs(secs))
    }
}

type IpLimiter = governor::DefaultKeyedRateLimiter<String>;

/// What a successful sign-in hands back. The token is shown once and never stored.
#[derive(Debug)]
pub struct LoginSuccess {
    pub token: SessionToken,
    pub session: SessionRecord,
    pub user: User,
    /// The user's role requires a second factor it has not enrolled: the session may only
    /// enroll one, read itself and log out.
    pub mfa_enrollment_required: bool,
}

/// The answer to a correct password.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Signed in.
    Session(Box<LoginSuccess>),
    /// The user has a second factor: present a code with this one-time `mfa_token`
    /// ([`Accounts::complete_mfa_login`]) before `expires_at`.
    MfaRequired { mfa_token: SessionToken, expires_at: OffsetDateTime },
}

impl LoginOutcome {
    /// The session, when no second step is needed.
    pub fn session(self) -> Option<LoginSuccess> {
        match self {
            LoginOutcome::Session(s) => Some(*s),
            LoginOutcome::MfaRequired { .. } => None,
        }
    }
}

/// What kind of credential a request carries (policy conditions will test it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A sign-in session.
    Session,
    /// A temporary credential made by `POST /v1/sts/assume-role`.
    Temporary,
    /// A service account's API key.
    ApiKey,
}

/// A request's verified identity.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: User,
    /// The session (for an API key: a stand-in carrying the key's id and expiry).
    pub session: SessionRecord,
    pub kind: CredentialKind,
    /// The holder proved a second factor in this session.
    pub mfa: bool,
    /// The user's role requires MFA and this session has not proved it: only enrollment,
    /// the session itself and logout are open to it.
    pub mfa_enrollment_required: bool,
}

impl Authenticated {
    /// The audit context of a request made with this session.
    pub fn context(&self, ip: Option<String>, user_agent: Option<String>, now: OffsetDateTime) -> Context {
        let mut c = Context::anonymous(ward_audit::Via::Api, ip, user_agent, now);
        c.user_id = Some(self.user.id.to_string());
        c.username = Some(self.user.username.clone());
        c.session_id = Some(self.session.id.to_string());
        c.mfa = self.mfa;
        c
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.user.roles.contains(&role)
    }
}

/// Names a user: by username (the CLI) or by id (the API).
#[derive(Debug, Clone, Copy)]
pub enum UserRef<'a> {
    Name(&'a str),
    Id(Uuid),
}

/// Second factors and API keys: who must use MFA, how authenticator apps name Ward, and
/// how long an API key may live.
#[derive(Debug, Clone)]
pub struct CredentialSettings {
    pub mfa_required_roles: Vec<Role>,
    pub mfa_issuer: String,
    pub api_key_max_days: u64,
}

impl Default for CredentialSettings {
    fn default() -> Self {
        Self {
            mfa_required_roles: vec![Role::Admin, Role::Clinician, Role::Auditor],
            mfa_issuer: "Ward".into(),
            api_key_max_days: 365,
        }
    }
}

/// The identity service. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) audit: AuditLog,
    hasher: PasswordHasher,
    policy: PasswordPolicy,
    pub(crate) limits: SessionLimits,
    pub(crate) settings: AuthSettings,
    pub(crate) credentials: Arc<CredentialSettings>,
    /// Data keys that seal MFA secrets.
    pub(crate) keys: DataKeys,
    per_ip: Arc<IpLimiter>,
    /// Bounds concurrent argon2 work, and so its memory.
    hashing: Arc<tokio::sync::Semaphore>,
    /// Validated sessions (see [`crate::cache`]).
    pub(crate) cache: Arc<SessionCache>,
    /// Every change read from the session-change feed, for live connections (WebSockets)
    /// that must end when their session or user does.
    changes: tokio::sync::broadcast::Sender<SessionChanged>,
}

/// A change that may end sessions: one session, or (with `session_id` `None`) every
/// session and API key of a user (disable, password, roles, key revocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionChanged {
    pub user_id: Uuid,
    pub session_id: Option<Uuid>,
}

impl SessionChanged {
    /// Whether this change may concern the credential `credential_id` of `user_id`.
    pub fn concerns(&self, user_id: Uuid, credential_id: Uuid) -> bool {
        self.user_id == user_id && self.session_id.is_none_or(|s| s == credential_id)
    }
}

/// Changes buffered per listener; a listener that falls further behind is told it lagged
/// and must re-check everything it holds.
const CHANGES_BUFFER: usize = 1024;

impl Accounts {
    pub fn new(
        store: Arc<dyn Store>,
        audit: AuditLog,
        hasher: PasswordHasher,
        settings: AuthSettings,
        keys: DataKeys,
    ) -> Self {
        let per_minute =
            std::num::NonZeroU32::new(settings.attempts_per_ip_per_minute).unwrap_or(std::num::NonZeroU32::MIN);
        let per_ip = Arc::new(governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute)));
        let hashing = Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent_hashes.max(1) as usize));
        Self {
            store,
            audit,
            hasher,
            policy: settings.policy,
            limits: settings.limits,
            settings,
            credentials: Arc::new(CredentialSettings::default()),
            keys,
            per_ip,
            hashing,
            cache: Arc::new(SessionCache::new(DEFAULT_CACHE_TTL)),
            changes: tokio::sync::broadcast::channel(CHANGES_BUFFER).0,
        }
    }

    /// Listens to the session-change feed as [`Accounts::follow_session_changes`] reads it
    /// (from every node and CLI command). A `Lagged` receive means changes were missed:
    /// re-check the credential.
    pub fn session_changes(&self) -> tokio::sync::broadcast::Receiver<SessionChanged> {
        self.changes.subscribe()
    }

    /// Sets how long a validated session may be served from memory (0 turns the cache
    /// off). Revocations made on other nodes take effect within this time.
    pub fn with_session_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache = Arc::new(SessionCache::new(ttl));
        self
    }

    /// Replaces the MFA and API-key settings (defaults: [`CredentialSettings::default`]).
    pub fn with_credential_settings(mut self, credentials: CredentialSettings) -> Self {
        self.credentials = Arc::new(credentials);
        self
    }

    /// True when one of `roles` must use a second factor.
    pub fn mfa_required_for(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.credentials.mfa_required_roles.contains(r))
    }

    /// Creates a user after checking the name, the roles and the password policy.
    pub async fn create_user(
        &self,
        ctx: &Context,
        username: &str,
        password: &str,
        roles: &[String],
    ) -> Result<User, AuthError> {
        let attempt = async {
            let name = Username::parse(username)?;
            let mut parsed = roles.iter().map(|r| r.parse()).collect::<Result<Vec<Role>, _>>()?;
            parsed.sort();
            parsed.dedup();
            if parsed.is_empty() {
                return Err(AuthError::NoRole);
            }
            self.policy.check(password, &name)?;
            let hash = self.hash(password).await?;
            let record = UserRecord {
                id: Uuid::now_v7(),
                username: name.as_str().to_string(),
                username_key: name.key(),
                password_hash: hash,
                roles: parsed.iter().map(|r| r.as_str().to_string()).collect(),
                disabled: false,
                failed_logins: 0,
                locked_until: None,
                created_at: ctx.now,
                updated_at: ctx.now,
            };
            let mut tx = self.store.begin().await?;
            tx.insert_user(&record).await.map_err(|e| match e {
                ward_storage::StoreError::Conflict(_) => AuthError::UsernameTaken,
                other => other.into(),
            })?;
            let event = ctx
                .event("user.create", Outcome::Success)
                .resource(format!("user/{}", record.id))
                .detail("roles", record.roles.clone());
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            User::try_from(&record)
        };
        self.audited_failure(ctx, "user.create", None, attempt.await).await
    }

    pub async fn list_users(&self) -> Result<Vec<User>, AuthError> {
        self.store.list_users().await?.iter().map(User::try_from).collect()
    }

    pub async fn find_by_username(&self, username: &str) -> Result<User, AuthError> {
        let key = Username::parse(username).map_err(|_| AuthError::UserNotFound)?.key();
        let record = self.store.user_by_username_key(&key).await?.ok_or(AuthError::UserNotFound)?;
        User::try_from(&record)
    }

    /// Looks a user up by name or id.
    pub async fn find(&self, who: UserRef<'_>) -> Result<User, AuthError> {
        match who {
            UserRef::Name(name) => self.find_by_username(name).await,
            UserRef::Id(id) => User::try_from(&self.store.user_by_id(id).await?.ok_or(AuthError::UserNotFound)?),
        }
    }

    /// Replaces a user's roles (administrators).
    pub async fn set_roles(&self, ctx: &Context, who: UserRef<'_>, roles: &[String]) -> Result<User, AuthError> {
        let attempt = async {
            let user = self.find(who).await?;
            let mut parsed = roles.iter().map(|r| r.parse()).collect::<Result<Vec<Role>, _>>()?;
            parsed.sort();
            parsed.dedup();
            if parsed.is_empty() {
                return Err(AuthError::NoRole);
            }
            let names: Vec<String> = parsed.iter().map(|r| r.as_str().to_string()).collect();
            let old: Vec<String> = user.roles.iter().map(|r| r.as_str().to_string()).collect();
            let mut tx = self.store.begin().await?;
            tx.set_user_roles(user.id, &names, ctx.now).await?;
            let event = ctx
                .event("user.update", Outcome::Success)
                .resource(format!("user/{}", user.id))
                .detail("old_roles", old)
                .detail("new_roles", names);
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            self.cache.forget_user(user.id);
            Ok(User { roles: parsed, ..user })
        };
        self.audited_failure(ctx, "user.update", None, attempt.await).await
    }

    /// Disables a user and revokes every session at once.
    pub async fn disable(&self, ctx: &Context, who: UserRef<'_>) -> Result<User, AuthError> {
        let attempt = async {
            let user = self.find(who).await?;
            let mut tx = self.store.begin().await?;
            tx.set_user_disabled(user.id, true, ctx.now).await?;
            let event = ctx.event("user.disable", Outcome::Success).resource(format!("user/{}", user.id));
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            self.cache.forget_user(user.id);
            Ok(User { disabled: true, ..user })
        };
        self.audited_failure(ctx, "user.disable", None, attempt.await).await
    }

    /// Clears failed sign-in counters and locks.
    pub async fn unlock(&self, ctx: &Context, who: UserRef<'_>) -> Result<User, AuthError> {
        let attempt = async {
            let user = self.find(who).await?;
            let mut tx = self.store.begin().await?;
            tx.unlock_user(user.id, ctx.now).await?;
            let event = ctx.event("user.unlock", Outcome::Success).resource(format!("user/{}", user.id));
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            Ok(user)
        };
        self.audited_failure(ctx, "user.unlock", None, attempt.await).await
    }

    /// Sets a new password (policy-checked) and revokes the user's sessions.
    pub async fn reset_password(&self, ctx: &Context, who: UserRef<'_>, password: &str) -> Result<User, AuthError> {
        let attempt = async {
            let user = self.find(who).await?;
            self.policy.check(password, &Username::parse(&user.username)?)?;
            let hash = self.hash(password).await?;
            let mut tx = self.store.begin().await?;
            tx.set_password_hash(user.id, &hash, None, ctx.now).await?;
            let event = ctx.event("user.password_reset", Outcome::Success).resource(format!("user/{}", user.id));
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            self.cache.forget_user(user.id);
            Ok(user)
        };
        self.audited_failure(ctx, "user.password_reset", None, attempt.await).await
    }

    /// Verifies a password and opens a session. Unknown users, wrong passwords and
    /// disabled accounts all answer [`AuthError::InvalidCredentials`], after the same
    /// argon2 work; the audit record keeps the real reason.
    pub async fn login(&self, ctx: &Context, username: &str, password: &str) -> Result<LoginOutcome, AuthError> {
        let refuse = |reason: &str, user_id: Option<Uuid>| {
            let mut event = ctx.event("auth.login", Outcome::Failure).claimed_username(username).reason(reason);
            event.actor.user_id = user_id.map(|id| id.to_string());
            event
        };
        if let Some(ip) = &ctx.ip {
            if self.per_ip.len() > 100_000 {
                self.per_ip.retain_recent();
            }
            if let Err(not_until) = self.per_ip.check_key(ip) {
                use governor::clock::Clock as _;
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                self.audit.record_alone(&refuse("rate_limited", None)).await?;
                return Err(AuthError::RateLimited { retry_after_s: wait.as_secs().max(1) });
            }
        }
        let record = match Username::parse(username) {
            Ok(name) => self.store.user_by_username_key(&name.key()).await?,
            Err(_) => None,
        };
        if let Some(r) = &record
            && let Some(until) = r.locked_until
            && until > ctx.now
        {
            self.audit.record_alone(&refuse("locked", Some(r.id))).await?;
            let hard = r.failed_logins >= self.settings.hard_lock_threshold;
            let retry_after_s = (!hard).then(|| u64::try_from((until - ctx.now).whole_seconds()).unwrap_or(0).max(1));
            return Err(AuthError::Locked { retry_after_s });
        }
        let verified = self.verify(password, record.as_ref().map(|r| r.password_hash.clone())).await?;
        let refusal = match &record {
            None => Some("unknown_user"),
            Some(_) if !verified => Some("bad_password"),
            Some(r) if r.disabled => Some("disabled"),
            Some(_) => None,
        };
        if let Some(reason) = refusal {
            let event = refuse(reason, record.as_ref().map(|r| r.id));
            match &record {
                Some(r) if reason == "bad_password" => {
                    let mut tx = self.store.begin().await?;
                    let settings = self.settings;
                    let now = ctx.now;
                    let count = tx.record_login_failure(r.id, &move |n| settings.lock_until(n, now)).await?;
                    self.audit.record(&mut *tx, &event.detail("failed_logins", count)).await?;
                    tx.commit().await?;
                }
                _ => {
                    self.audit.record_alone(&event).await?;
                }
            }
            return Err(AuthError::InvalidCredentials);
        }
        let record = record.ok_or(AuthError::InvalidCredentials)?;
        let user = User::try_from(&record)?;
        // Upgrade a hash made with older parameters while the password is at hand.
        let rehash =
            if self.hasher.needs_rehash(&record.password_hash) { Some(self.hash(password).await?) } else { None };
        let enrolled = self.has_active_factor(record.id).await?;
        let mut tx = self.store.begin().await?;
        if let Some(hash) = &rehash {
            // The password did not change, only its hash: no session ends.
            tx.rehash_password(record.id, hash).await?;
        }
        if enrolled {
            // The password was right; the failure counter is cleared only once the second
            // factor is right too.
            let (mfa_token, challenge) = self.new_challenge(record.id, ctx.now);
            tx.insert_mfa_challenge(&challenge).await?;
            let event = ctx
                .event("auth.login", Outcome::Success)
                .user(user.id, user.username.clone())
                .reason("mfa_required")
                .detail("next_step", "mfa");
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            return Ok(LoginOutcome::MfaRequired { mfa_token, expires_at: challenge.expires_at });
        }
        if record.failed_logins > 0 || record.locked_until.is_some() {
            tx.unlock_user(record.id, ctx.now).await?;
        }
        let (token, session) = self.new_session(ctx, user.id, None);
        tx.insert_session(&session).await?;
        let mfa_enrollment_required = self.mfa_required_for(&user.roles);
        let event = ctx
            .event("auth.login", Outcome::Success)
            .user(user.id, user.username.clone())
            .session(session.id)
            .resource(format!("session/{}", session.id))
            .detail("mfa_enrollment_required", mfa_enrollment_required);
        self.audit.record(&mut *tx, &event).await?;
        tx.commit().await?;
        Ok(LoginOutcome::Session(Box::new(LoginSuccess { token, session, user, mfa_enrollment_required })))
    }

    /// A new sign-in session for `user_id`, with the configured limits; `mfa_at` when a
    /// second factor was just proved.
    pub(crate) fn new_session(
        &self,
        ctx: &Context,
        user_id: Uuid,
        mfa_at: Option<OffsetDateTime>,
    ) -> (SessionToken, SessionRecord) {
        let token = SessionToken::generate();
        let now = whole_millis(ctx.now);
        let session = SessionRecord {
            id: Uuid::now_v7(),
            token_hash: token.hash().0,
            user_id,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: now + self.limits.idle,
            expires_at: now + self.limits.absolute,
            revoked_at: None,
            ip: ctx.ip.clone(),
            user_agent: ctx.user_agent.clone(),
            assumed_role: None,
            parent_session_id: None,
            mfa_at: mfa_at.map(whole_millis),
            session_policy: None,
        };
        (token, session)
    }

    /// Resolves a bearer token to its live session, enforcing idle and absolute limits,
    /// and records the activity. A session found past a limit is ended and its expiry
    /// recorded (once: it is revoked in the same transaction).
    pub async fn authenticate(&self, ctx: &Context, token: &str) -> Result<Authenticated, AuthError> {
        let now = ctx.now;
        if token.starts_with(crate::api_keys::API_KEY_PREFIX) {
            return self.authenticate_api_key(token, now).await;
        }
        let hash = SessionToken::from_client(token).hash();
        let (session, user) = match self.cache.get(&hash.0) {
            Some((s, u)) if now < s.expires_at && now < s.idle_expires_at => (s, u),
            stale => {
                // A miss, or a cached session that looks expired: another node may have
                // seen activity since, so the database decides. Only a stale entry is
                // dropped: a plain miss must not bump the epoch (that would discard other
                // requests' concurrent reads).
                if stale.is_some() {
                    self.cache.forget(&hash.0);
                }
                let epoch = self.cache.epoch();
                let session = self.store.session_by_token_hash(&hash.0).await?.ok_or(AuthError::Unauthenticated)?;
                if session.revoked_at.is_some() {
                    return Err(AuthError::SessionExpired);
                }
                let record = self.store.user_by_id(session.user_id).await?.ok_or(AuthError::Unauthenticated)?;
                let user = User::try_from(&record)?;
                self.cache.put(epoch, &session, &user);
                (session, user)
            }
        };
        let expired = if now >= session.expires_at {
            Some("absolute_timeout")
        } else if now >= session.idle_expires_at {
            Some("idle_timeout")
        } else {
            None
        };
        if let Some(reason) = expired {
            self.cache.forget(&session.token_hash);
            let mut tx = self.store.begin().await?;
            // Another node may have recorded this expiry already: record it once.
            if !tx.revoke_session(session.id, now).await? {
                return Err(AuthError::SessionExpired);
            }
            let event = Context::system(now)
                .event("session.expired", Outcome::Success)
                .user(user.id, user.username.clone())
                .session(session.id)
                .resource(format!("session/{}", session.id))
                .reason(reason);
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            return Err(AuthError::SessionExpired);
        }
        if user.disabled {
            return Err(AuthError::SessionExpired);
        }
        // A temporary credential acts with the one role it assumed, and only while the user
        // still holds that role.
        let assumed = match &session.assumed_role {
            Some(role) => {
                let role: Role = role.parse()?;
                if !user.roles.contains(&role) {
                    return Err(AuthError::SessionExpired);
                }
                Some(role)
            }
            None => None,
        };
        // Activity moves the idle deadline. Writing it on every request would cost a durable
        // write per request, so it is written when it has moved by a tenth of the idle limit
        // (at most 5 s): the deadline is then early by at most that much, never late.
        let step = (self.limits.idle / 10).min(Duration::from_secs(5));
        let session = if now - session.last_seen_at < step {
            session
        } else {
            let epoch = self.cache.epoch();
            let idle_expires_at = (now + self.limits.idle).min(session.expires_at);
            self.store.touch_session(session.id, now, idle_expires_at).await?;
            let session = SessionRecord { last_seen_at: now, idle_expires_at, ..session };
            self.cache.put(epoch, &session, &user);
            session
        };
        let mut user = user;
        if let Some(role) = assumed {
            user.roles = vec![role];
        }
        Ok(self.authenticated(user, session))
    }

    /// Follows the session-change feed until `stop`: every change written by any node or
    /// CLI command drops the affected cached sessions here within `every`.
    pub async fn follow_session_changes(self, every: Duration, stop: tokio_util::sync::CancellationToken) {
        // Entries are read with an overlap, since a transaction may commit a little after
        // the time it wrote; entries already applied are skipped by their sequence number.
        const OVERLAP: Duration = Duration::from_secs(5);
        let mut since = OffsetDateTime::now_utc() - OVERLAP;
        let mut seen: std::collections::BTreeMap<i64, OffsetDateTime> = std::collections::BTreeMap::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let started = OffsetDateTime::now_utc();
            match self.store.session_changes_since(since).await {
                Ok(changes) => {
                    for c in changes {
                        if seen.insert(c.seq, c.at).is_some() {
                            continue;
                        }
                        match c.session_id {
                            Some(id) => self.cache.forget_session(id),
                            None => self.cache.forget_user(c.user_id),
                        }
                        // No listener is not an error.
                        let _ = self.changes.send(SessionChanged { user_id: c.user_id, session_id: c.session_id });
                    }
                    since = started - OVERLAP;
                    seen.retain(|_, at| *at >= since);
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the session-change feed; retrying"),
            }
        }
    }

    /// The identity of a live session, with its MFA state.
    fn authenticated(&self, user: User, session: SessionRecord) -> Authenticated {
        let kind = if session.assumed_role.is_some() { CredentialKind::Temporary } else { CredentialKind::Session };
        let mfa = session.mfa_at.is_some();
        let mfa_enrollment_required = !mfa && self.mfa_required_for(&user.roles);
        Authenticated { user, session, kind, mfa, mfa_enrollment_required }
    }

    /// Issues a temporary credential (like AWS STS AssumeRole) that acts with one role the
    /// caller holds, for `duration_s` in 900..=43,200 seconds. A temporary credential may
    /// only assume its own role again, so it can never widen its rights. It has no idle
    /// limit of its own, cannot be extended, and dies with its user (disable, password
    /// reset) or when revoked. `session_policy` (JSON, checked by the caller) narrows it
    /// further; a credential made from one that has a session policy keeps that policy, and
    /// cannot be given a second one (two policies cannot be kept as one intersection).
    pub async fn assume_role(
        &self,
        ctx: &Context,
        who: &Authenticated,
        role: &str,
        duration_s: u64,
        session_policy: Option<String>,
    ) -> Result<LoginSuccess, AuthError> {
        // The reason a refusal's audit record gives.
        let mut refusal = "role_not_held";
        let attempt = async {
            if who.kind == CredentialKind::ApiKey {
                refusal = "api_key";
                return Err(AuthError::Forbidden("an API key cannot assume a role: it acts with its own".into()));
            }
            if !(900..=43_200).contains(&duration_s) {
                return Err(AuthError::Invalid("duration_s: must be between 900 and 43200".into()));
            }
            let role: Role = role.parse()?;
            if !who.user.roles.contains(&role) {
                return Err(AuthError::Forbidden(format!("the caller may not assume the {role} role")));
            }
            let session_policy = match (&who.session.session_policy, session_policy) {
                (Some(_), Some(_)) => {
                    refusal = "second_session_policy";
                    return Err(AuthError::Forbidden(
                        "a credential that has a session policy cannot be given another one".into(),
                    ));
                }
                (Some(inherited), None) => Some(inherited.clone()),
                (None, asked) => asked,
            };
            let token = SessionToken::generate();
            let now = whole_millis(ctx.now);
            let expires_at = now + Duration::from_secs(duration_s);
            let session = SessionRecord {
                id: Uuid::now_v7(),
                token_hash: token.hash().0,
                user_id: who.user.id,
                created_at: now,
                last_seen_at: now,
                idle_expires_at: expires_at,
                expires_at,
                revoked_at: None,
                ip: ctx.ip.clone(),
                user_agent: ctx.user_agent.clone(),
                assumed_role: Some(role.as_str().to_string()),
                parent_session_id: Some(who.session.id),
                // The credential carries its parent's proof of a second factor.
                mfa_at: who.session.mfa_at,
                session_policy: session_policy.clone(),
            };
            let mut tx = self.store.begin().await?;
            tx.insert_session(&session).await?;
            let event = ctx
                .event("sts.assume_role", Outcome::Success)
                .resource(format!("session/{}", session.id))
                .detail("role", role.as_str())
                .detail("duration_s", duration_s)
                .detail("session_policy", session.session_policy.is_some());
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            let user = User { roles: vec![role], ..who.user.clone() };
            Ok(LoginSuccess { token, session, user, mfa_enrollment_required: false })
        };
        match attempt.await {
            Err(AuthError::Forbidden(m)) => {
                let event = ctx.event("sts.assume_role", Outcome::Denied).reason(refusal);
                self.audit.record_alone(&event).await?;
                Err(AuthError::Forbidden(m))
            }
            other => self.audited_failure(ctx, "sts.assume_role", None, other).await,
        }
    }

    /// The caller's live sessions.
    pub async fn sessions(&self, who: &Authenticated, now: OffsetDateTime) -> Result<Vec<SessionRecord>, AuthError> {
        Ok(self.store.live_sessions(who.user.id, now).await?)
    }

    /// Ends one of the caller's own sessions; another user's session is "not found".
    pub async fn revoke_own_session(&self, ctx: &Context, who: &Authenticated, id: Uuid) -> Result<(), AuthError> {
        let session = self.store.session_by_id(id).await?.filter(|s| s.user_id == who.user.id);
        let Some(session) = session else {
            let event =
                ctx.event("session.revoke", Outcome::Failure).resource(format!("session/{id}")).reason("not_found");
            self.audit.record_alone(&event).await?;
            return Err(AuthError::UserNotFound);
        };
        let mut tx = self.store.begin().await?;
        tx.revoke_session(session.id, ctx.now).await?;
        let event = ctx.event("session.revoke", Outcome::Success).resource(format!("session/{}", session.id));
        self.audit.record(&mut *tx, &event).await?;
        tx.commit().await?;
        self.cache.forget(&session.token_hash);
        Ok(())
    }

    /// Changes the caller's password after checking the current one; every other session
    /// of the user ends, the calling one stays.
    pub async fn change_password(
        &self,
        ctx: &Context,
        who: &Authenticated,
        current: &str,
        new: &str,
    ) -> Result<(), AuthError> {
        let record = self.store.user_by_id(who.user.id).await?.ok_or(AuthError::UserNotFound)?;
        if !self.verify(current, Some(record.password_hash.clone())).await? {
            let event = ctx.event("user.password_change", Outcome::Failure).reason("bad_password");
            self.audit.record_alone(&event).await?;
            return Err(AuthError::InvalidCredentials);
        }
        let attempt = async {
            self.policy.check(new, &Username::parse(&record.username)?)?;
            let hash = self.hash(new).await?;
            let mut tx = self.store.begin().await?;
            tx.set_password_hash(record.id, &hash, Some(who.session.id), ctx.now).await?;
            let event = ctx.event("user.password_change", Outcome::Success).resource(format!("user/{}", record.id));
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            self.cache.forget_user(record.id);
            Ok(())
        };
        self.audited_failure(ctx, "user.password_change", None, attempt.await).await
    }

    /// Ends the caller's session at once.
    pub async fn logout(&self, ctx: &Context, who: &Authenticated) -> Result<(), AuthError> {
        let mut tx = self.store.begin().await?;
        tx.revoke_session(who.session.id, ctx.now).await?;
        let event = ctx.event("auth.logout", Outcome::Success).resource(format!("session/{}", who.session.id));
        self.audit.record(&mut *tx, &event).await?;
        tx.commit().await?;
        self.cache.forget(&who.session.token_hash);
        Ok(())
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Records a refused administrative attempt (its reason code, never its input) and
    /// passes the result on. Infrastructure failures are not attempts and are not recorded.
    pub(crate) async fn audited_failure<T>(
        &self,
        ctx: &Context,
        action: &str,
        resource: Option<String>,
        result: Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        match result {
            Err(e) if e.reason() != "internal" => {
                let mut event = ctx.event(action, Outcome::Failure).reason(e.reason());
                event.resource = resource;
                self.audit.record_alone(&event).await?;
                Err(e)
            }
            other => other,
        }
    }

    async fn hash(&self, password: &str) -> Result<String, AuthError> {
        self.argon2(password, move |h, pw| h.hash(pw)).await
    }

    async fn verify(&self, password: &str, stored: Option<String>) -> Result<bool, AuthError> {
        self.argon2(password, move |h, pw| h.verify(pw, stored.as_deref())).await
    }

    /// Runs argon2 work: CPU-bound for tens of milliseconds, so off the async workers, and
    /// at most `max_concurrent_hashes` at once, so its memory stays bounded.
    async fn argon2<T: Send + 'static>(
        &self,
        password: &str,
        work: impl FnOnce(&PasswordHasher, &str) -> Result<T, ward_crypto::PasswordError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let failed = |e: String| AuthError::Hash(ward_crypto::PasswordError::Hash(e));
        let _permit = self.hashing.acquire().await.map_err(|e| failed(e.to_string()))?;
        let hasher = self.hasher.clone();
        let password = zeroize::Zeroizing::new(password.to_string());
        tokio::task::spawn_blocking(move || work(&hasher, &password))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(AuthError::from)
    }
}

/// Storage keeps milliseconds; answering with the same precision keeps login and
/// `GET /v1/auth/session` consistent.
fn whole_millis(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000).unwrap_or(t)
}
