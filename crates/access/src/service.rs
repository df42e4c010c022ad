//! The access service: who a caller is in policy terms ([`Principal`]), decisions with
//! their denials audited, custom policies and their attachments, and the policy snapshot
//! every node caches.
//!
//! **Principal.** A caller's policies are the managed policy of each role it acts with
//! (a temporary credential or API key acts with one), the custom policies attached to
//! those roles and those attached to the user. A temporary credential may also carry a
//! session policy, which is intersected ([`crate::evaluate_with_session`]).
//!
//! **Cache.** Custom policies and attachments are read into an immutable snapshot that a
//! node serves for at most `[access] policy_cache_s` seconds (default 2); a change made
//! through this node replaces the snapshot at once, so another node sees it within that
//! bound. A snapshot that cannot be re-read is kept and the failure logged: the previous
//! rules stay in force (never "allow everything").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;
use ward_audit::{AuditEvent, AuditLog, Context, Outcome};
use ward_storage::{PolicyAttachment, PolicyRecord, Store};

use crate::engine::{CredentialKind, Decision, RequestContext, evaluate_with_session};
use crate::policy::{Policy, PolicyDocument};
use crate::{actions, managed};

/// Everything an access operation can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The policies do not allow it (the denial is already in the audit trail).
    #[error("{0}")]
    Denied(String),
    /// The operation needs a session that proved a second factor.
    #[error("{0}")]
    MfaRequired(String),
    #[error("not found")]
    NotFound,
    /// The request breaks a rule (the message names the rule and the field).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] ward_storage::StoreError),
    /// Sealing or opening a break-glass reason failed.
    #[error(transparent)]
    Keys(#[from] ward_keys::KeyError),
    /// The audit record could not be written, so the operation did not happen.
    #[error(transparent)]
    Audit(#[from] ward_audit::AuditError),
}

/// Facts about the caller's relation to the resource, for the `dialog_member` and
/// `breakglass` conditions; `None` where the question does not arise.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts {
    pub dialog_member: Option<bool>,
    pub breakglass: Option<bool>,
}

impl Facts {
    /// The most favourable relation to a dialog: asked before the dialog is looked up, so
    /// that a caller who could never do the action is refused without reading anything.
    pub const BEST_CASE: Facts = Facts { dialog_member: Some(true), breakglass: Some(true) };
}

/// A caller in policy terms.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    /// The roles it acts with.
    pub roles: Vec<String>,
    pub policies: Vec<Arc<Policy>>,
    pub session_policy: Option<Arc<Policy>>,
    pub credential: CredentialKind,
    pub mfa_at: Option<OffsetDateTime>,
    pub ip: Option<IpAddr>,
}

impl Principal {
    /// The engine's decision for `action` on `resource` at `now`.
    pub fn decide(&self, action: &str, resource: &str, now: OffsetDateTime, facts: Facts) -> Decision {
        let ctx = RequestContext {
            now,
            ip: self.ip,
            mfa_at: self.mfa_at,
            credential: self.credential,
            dialog_member: facts.dialog_member,
            breakglass: facts.breakglass,
        };
        evaluate_with_session(&self.policies, self.session_policy.as_deref(), action, resource, &ctx)
    }
}

/// Settings of the access service (`[access]`).
#[derive(Debug, Clone, Copy)]
pub struct AccessSettings {
    pub breakglass: Duration,
    pub dormant_days: u32,
    pub policy_cache: Duration,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self { breakglass: Duration::from_secs(3600), dormant_days: 90, policy_cache: Duration::from_secs(2) }
    }
}

/// A policy as administrators see it.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    pub name: String,
    /// Built in (read-only) or custom.
    pub managed: bool,
    pub document: PolicyDocument,
    pub attached_to: Attachments,
    #[serde(with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
}

/// Whom a policy applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachments {
    #[serde(default)]
    pub users: Vec<Uuid>,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Custom policies and attachments as read at one moment.
#[derive(Default)]
struct Snapshot {
    loaded_at: Option<Instant>,
    records: Vec<PolicyRecord>,
    custom: BTreeMap<String, Arc<Policy>>,
    attachments: Vec<PolicyAttachment>,
    by_role: HashMap<String, Vec<Arc<Policy>>>,
    by_user: HashMap<Uuid, Vec<Arc<Policy>>>,
}

impl Snapshot {
    fn build(records: Vec<PolicyRecord>, attachments: Vec<PolicyAttachment>) -> Snapshot {
        let mut custom = BTreeMap::new();
        for r in &records {
            // Documents are checked before they are stored. One that no longer parses (a
            // newer version's syntax after a downgrade, a damaged row) must not silently
            // stop denying: it becomes "deny everything" for whoever it is attached to.
            let parsed = serde_json::from_str(&r.document)
                .map_err(|e| e.to_string())
                .and_then(|v| PolicyDocument::parse(v).map_err(|e| e.to_string()))
                .and_then(|d| Policy::compile(r.name.clone(), d).map_err(|e| e.to_string()));
            let policy = parsed.unwrap_or_else(|e| {
                tracing::error!(policy = %r.name, error = %e, "a stored policy cannot be read; it denies everything");
                deny_all_policy_named(&r.name)
            });
            custom.insert(r.name.clone(), Arc::new(policy));
        }
        let mut by_role: HashMap<String, Vec<Arc<Policy>>> = HashMap::new();
        let mut by_user: HashMap<Uuid, Vec<Arc<Policy>>> = HashMap::new();
        for a in &attachments {
            let Some(p) = custom.get(&a.policy_name) else { continue };
            match a.principal_kind.as_str() {
                "role" => by_role.entry(a.principal.clone()).or_default().push(p.clone()),
                "user" => {
                    if let Ok(id) = a.principal.parse() {
                        by_user.entry(id).or_default().push(p.clone());
                    }
                }
                _ => {}
            }
        }
        Snapshot { loaded_at: Some(Instant::now()), records, custom, attachments, by_role, by_user }
    }

    fn attachments_of(&self, name: &str) -> Attachments {
        let mut out = Attachments::default();
        for a in self.attachments.iter().filter(|a| a.policy_name == name) {
            match a.principal_kind.as_str() {
                "user" => out.users.extend(a.principal.parse::<Uuid>().ok()),
                _ => out.roles.push(a.principal.clone()),
            }
        }
        out
    }
}

/// The access service. Cheap to clone.
#[derive(Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    audit: AuditLog,
    settings: AccessSettings,
    managed: BTreeMap<String, Arc<Policy>>,
    snapshot: RwLock<Arc<Snapshot>>,
    reload: tokio::sync::Mutex<()>,
    alerts: Option<ward_webhook::Webhook>,
    keys: Option<ward_keys::DataKeys>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").field("settings", &self.inner.settings).finish_non_exhaustive()
    }
}

impl Access {
    /// `alerts`: where break-glass alerts go (`[access] alert_webhook_url`), if anywhere.
    /// `keys` seal and open break-glass reasons; without them (a command that only reads
    /// policies or reviews access) invoking break-glass or reading a reason is refused.
    pub fn new(
        store: Arc<dyn Store>,
        audit: AuditLog,
        settings: AccessSettings,
        alerts: Option<ward_webhook::Webhook>,
        keys: Option<ward_keys::DataKeys>,
    ) -> Self {
        let inner = Inner {
            store,
            audit,
            settings,
            managed: managed::policies(),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            reload: tokio::sync::Mutex::new(()),
            alerts,
            keys,
        };
        Self { inner: Arc::new(inner) }
    }

    pub fn settings(&self) -> AccessSettings {
        self.inner.settings
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub(crate) fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    pub(crate) fn keys(&self) -> Result<&ward_keys::DataKeys, AccessError> {
        self.inner.keys.as_ref().ok_or_else(|| {
            AccessError::Keys(ward_keys::KeyError::Keyring("this command runs without the key store".into()))
        })
    }

    pub(crate) fn alerts(&self) -> Option<&ward_webhook::Webhook> {
        self.inner.alerts.as_ref()
    }

    /// At shutdown: delivers the queued break-glass alerts within `grace` (no webhook: done).
    pub async fn drain_alerts(&self, grace: std::time::Duration) -> bool {
        match &self.inner.alerts {
            Some(alerts) => alerts.drain(grace).await,
            None => true,
        }
    }

    /// The break-glass alert webhook's counters, when one is configured.
    pub fn alert_metrics(&self) -> Option<&ward_webhook::WebhookMetrics> {
        self.inner.alerts.as_ref().map(ward_webhook::Webhook::metrics)
    }

    /// Whether `role` is a built-in role.
    pub fn is_role(&self, role: &str) -> bool {
        self.inner.managed.contains_key(role)
    }

    fn current(&self) -> Arc<Snapshot> {
        self.inner.snapshot.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The snapshot, re-read when older than the cache bound.
    async fn snapshot(&self) -> Result<Arc<Snapshot>, AccessError> {
        let current = self.current();
        if current.loaded_at.is_some_and(|t| t.elapsed() < self.inner.settings.policy_cache) {
            return Ok(current);
        }
        let _one_reader = self.inner.reload.lock().await;
        let current = self.current();
        if current.loaded_at.is_some_and(|t| t.elapsed() < self.inner.settings.policy_cache) {
            return Ok(current);
        }
        match self.load().await {
            Ok(fresh) => Ok(fresh),
            // The previous rules stay in force; with none loaded yet, nothing is decided.
            Err(e) if current.loaded_at.is_some() => {
                tracing::warn!(error = %e, "cannot re-read access policies; keeping the cached ones");
                Ok(current)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads policies and attachments and installs them as the snapshot.
    async fn load(&self) -> Result<Arc<Snapshot>, AccessError> {
        let records = self.inner.store.policies().await?;
        let attachments = self.inner.store.policy_attachments().await?;
        let fresh = Arc::new(Snapshot::build(records, attachments));
        *self.inner.snapshot.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh.clone();
        Ok(fresh)
    }

    /// The policies of a user acting with `roles`.
    fn policies_for(&self, snapshot: &Snapshot, user_id: Option<Uuid>, roles: &[String]) -> Vec<Arc<Policy>> {
        let mut out = Vec::new();
        for role in roles {
            out.extend(self.inner.managed.get(role).cloned());
            out.extend(snapshot.by_role.get(role).into_iter().flatten().cloned());
        }
        if let Some(id) = user_id {
            out.extend(snapshot.by_user.get(&id).into_iter().flatten().cloned());
        }
        // A policy attached both to a role and to the user counts once.
        let mut seen = BTreeSet::new();
        out.retain(|p| seen.insert(p.name.clone()));
        out
    }

    /// The policies that apply to a user acting with all of `roles`.
    pub async fn policies_of_user(&self, user_id: Uuid, roles: &[String]) -> Result<Vec<Arc<Policy>>, AccessError> {
        let snapshot = self.snapshot().await?;
        Ok(self.policies_for(&snapshot, Some(user_id), roles))
    }

    /// The principal of a caller. `session_policy` is a temporary credential's stored
    /// session policy (JSON); one that cannot be read denies everything (fail closed).
    pub async fn principal(
        &self,
        user_id: Uuid,
        roles: &[String],
        credential: CredentialKind,
        mfa_at: Option<OffsetDateTime>,
        ip: Option<IpAddr>,
        session_policy: Option<&str>,
    ) -> Result<Principal, AccessError> {
        let snapshot = self.snapshot().await?;
        let policies = self.policies_for(&snapshot, Some(user_id), roles);
        let session_policy = session_policy.map(|text| {
            Arc::new(session_policy_from_text(text).unwrap_or_else(|e| {
                tracing::error!(error = %e, "a stored session policy cannot be read; the credential is denied");
                deny_all_policy()
            }))
        });
        Ok(Principal { user_id, roles: roles.to_vec(), policies, session_policy, credential, mfa_at, ip })
    }

    /// Decides; a denial is recorded (outcome `denied`, action named the audit way) and
    /// answered with [`AccessError::Denied`].
    pub async fn authorize(
        &self,
        ctx: &Context,
        who: &Principal,
        action: &str,
        resource: &str,
        facts: Facts,
    ) -> Result<Decision, AccessError> {
        let decision = who.decide(action, resource, ctx.now, facts);
        if decision.allowed {
            return Ok(decision);
        }
        self.record_denial(ctx, &actions::audit_name(action), action, resource, &decision).await?;
        Err(AccessError::Denied(format!("the caller's policies do not allow {action} on {resource}")))
    }

    /// Records a denial under the audit action `audit`: which deny statements applied, or
    /// that no allow did.
    pub async fn record_denial(
        &self,
        ctx: &Context,
        audit: &str,
        action: &str,
        resource: &str,
        decision: &Decision,
    ) -> Result<(), AccessError> {
        self.inner.audit.record_alone(&denial_event(ctx, audit, action, resource, decision)).await?;
        Ok(())
    }

    /// Every policy: the managed ones first, then the custom ones by name.
    pub async fn list(&self) -> Result<Vec<PolicyView>, AccessError> {
        let snapshot = self.snapshot().await?;
        let mut out: Vec<PolicyView> = self
            .inner
            .managed
            .iter()
            .map(|(role, p)| PolicyView {
                name: p.name.clone(),
                managed: true,
                document: p.document.clone(),
                attached_to: Attachments { users: Vec::new(), roles: vec![role.clone()] },
                updated_at: None,
            })
            .collect();
        for r in &snapshot.records {
            let Some(p) = snapshot.custom.get(&r.name) else { continue };
            out.push(PolicyView {
                name: r.name.clone(),
                managed: false,
                document: p.document.clone(),
                attached_to: snapshot.attachments_of(&r.name),
                updated_at: Some(r.updated_at),
            });
        }
        Ok(out)
    }

    /// One policy by name.
    pub async fn get(&self, name: &str) -> Result<PolicyView, AccessError> {
        self.list().await?.into_iter().find(|p| p.name == name).ok_or(AccessError::NotFound)
    }

    /// Creates or replaces a custom policy; answers it and whether it is new. Audited as
    /// `policy.write` with the documents before and after.
    pub async fn put(
        &self,
        ctx: &Context,
        name: &str,
        document: serde_json::Value,
    ) -> Result<(PolicyView, bool), AccessError> {
        check_name(name)?;
        let doc = PolicyDocument::parse(document).map_err(|e| AccessError::Invalid(e.to_string()))?;
        let compiled = Policy::compile(name, doc).map_err(|e| AccessError::Invalid(e.to_string()))?;
        let _writer = self.inner.reload.lock().await;
        let before = self.inner.store.policies().await?.into_iter().find(|r| r.name == name);
        let text = serde_json::to_string(&compiled.document).map_err(|e| AccessError::Invalid(e.to_string()))?;
        let record = PolicyRecord {
            name: name.to_string(),
            document: text,
            created_at: before.as_ref().map_or(ctx.now, |b| b.created_at),
            updated_at: ctx.now,
            updated_by: ctx.user_id.as_deref().and_then(|u| u.parse().ok()),
        };
        let before_doc: serde_json::Value =
            before.as_ref().and_then(|b| serde_json::from_str(&b.document).ok()).unwrap_or(serde_json::Value::Null);
        let after_doc = serde_json::to_value(&compiled.document).unwrap_or(serde_json::Value::Null);
        let mut tx = self.inner.store.begin().await?;
        tx.put_policy(&record).await?;
        let event = ctx
            .event("policy.write", Outcome::Success)
            .resource(format!("policy/{name}"))
            .detail("before", before_doc)
            .detail("after", after_doc);
        self.inner.audit.record(&mut *tx, &event).await?;
        tx.commit().await?;
        drop(_writer);
        self.load().await?;
        Ok((self.get(name).await?, before.is_none()))
    }

    /// Deletes a custom policy and its attachments (audited with the document before).
    pub async fn delete(&self, ctx: &Context, name: &str) -> Result<(), AccessError> {
        if managed::is_managed_name(name) {
            return Err(AccessError::Conflict(format!("{name} is a managed policy and cannot be deleted")));
        }
        let before = self.get(name).await?;
        let mut tx = self.inner.store.begin().await?;
        if !tx.delete_policy(name).await? {
            tx.rollback().await?;
            return Err(AccessError::NotFound);
        }
        let event = ctx
            .event("policy.delete", Outcome::Success)
            .resource(format!("policy/{name}"))
            .detail("before", serde_json::to_value(&before.document).unwrap_or_default())
            .detail("attached_to_before", serde_json::to_value(&before.attached_to).unwrap_or_default());
        self.inner.audit.record(&mut *tx, &event).await?;
        tx.commit().await?;
        self.load().await?;
        Ok(())
    }

    /// Makes `attachments` the exact set a custom policy applies to (audited before/after).
    pub async fn attach(&self, ctx: &Context, name: &str, mut to: Attachments) -> Result<PolicyView, AccessError> {
        if managed::is_managed_name(name) {
            return Err(AccessError::Conflict(format!(
                "{name} is a managed policy: it stays attached to its role; attach a custom policy instead"
            )));
        }
        let before = self.get(name).await?;
        to.users.sort();
        to.users.dedup();
        to.roles.sort();
        to.roles.dedup();
        for (i, role) in to.roles.iter().enumerate() {
            if !self.is_role(role) {
                return Err(AccessError::Invalid(format!("roles[{i}]: {role:?} is not a role")));
            }
        }
        for (i, user) in to.users.iter().enumerate() {
            if self.inner.store.user_by_id(*user).await?.is_none() {
                return Err(AccessError::Invalid(format!("users[{i}]: no such user")));
            }
        }
        let rows: Vec<PolicyAttachment> = to
            .users
            .iter()
            .map(|u| PolicyAttachment {
                policy_name: name.to_string(),
                principal_kind: "user".into(),
                principal: u.to_string(),
            })
            .chain(to.roles.iter().map(|r| PolicyAttachment {
                policy_name: name.to_string(),
                principal_kind: "role".into(),
                principal: r.clone(),
            }))
            .collect();
        let mut tx = self.inner.store.begin().await?;
        tx.replace_policy_attachments(name, &rows).await?;
        let event = ctx
            .event("policy.attach", Outcome::Success)
            .resource(format!("policy/{name}"))
            .detail("before", serde_json::to_value(&before.attached_to).unwrap_or_default())
            .detail("after", serde_json::to_value(&to).unwrap_or_default());
        self.inner.audit.record(&mut *tx, &event).await?;
        tx.commit().await?;
        self.load().await?;
        self.get(name).await
    }

    /// Evaluates a hypothetical request (the API layer records the call as
    /// `policy.simulate`).
    pub async fn simulate(&self, sim: &Simulation) -> Result<Decision, AccessError> {
        let snapshot = self.snapshot().await?;
        let policies = match &sim.subject {
            Subject::User(id) => {
                let user = self.inner.store.user_by_id(*id).await?.ok_or(AccessError::NotFound)?;
                self.policies_for(&snapshot, Some(*id), &user.roles)
            }
            Subject::Role(role) => {
                if !self.is_role(role) {
                    return Err(AccessError::Invalid(format!("role: {role:?} is not a role")));
                }
                self.policies_for(&snapshot, None, std::slice::from_ref(role))
            }
            Subject::Policies(names) => {
                let mut out = Vec::new();
                for (i, name) in names.iter().enumerate() {
                    let p = snapshot
                        .custom
                        .get(name)
                        .cloned()
                        .or_else(|| self.inner.managed.values().find(|m| &m.name == name).cloned());
                    out.push(p.ok_or_else(|| AccessError::Invalid(format!("policies[{i}]: no policy {name:?}")))?);
                }
                out
            }
        };
        let ctx = RequestContext {
            now: sim.context.now,
            ip: sim.context.ip,
            mfa_at: sim.context.mfa_at,
            credential: sim.context.credential,
            dialog_member: sim.context.dialog_member,
            breakglass: sim.context.breakglass,
        };
        Ok(evaluate_with_session(&policies, sim.session_policy.as_ref(), &sim.action, &sim.resource, &ctx))
    }
}

/// Whom a simulation asks about.
#[derive(Debug, Clone)]
pub enum Subject {
    User(Uuid),
    Role(String),
    Policies(Vec<String>),
}

/// A hypothetical request for [`Access::simulate`].
#[derive(Debug, Clone)]
pub struct Simulation {
    pub subject: Subject,
    pub action: String,
    pub resource: String,
    pub context: RequestContext,
    pub session_policy: Option<Policy>,
}

/// Policy names: 1 to 64 of letters, digits, `.`, `_` and `-`, not starting with the
/// managed prefix `ward-`.
fn check_name(name: &str) -> Result<(), AccessError> {
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(AccessError::Invalid("name: 1 to 64 letters, digits, `.`, `_` or `-`".into()));
    }
    if managed::is_managed_name(name) {
        return Err(AccessError::Conflict(format!("{name} is a managed policy and cannot be changed")));
    }
    Ok(())
}

/// Parses and checks a session policy (for `sts:assume_role` and stored credentials).
pub fn session_policy_from_text(text: &str) -> Result<Policy, AccessError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| AccessError::Invalid("policy: not valid JSON".into()))?;
    session_policy_from_value(value)
}

/// Parses and checks a session policy given as JSON.
pub fn session_policy_from_value(value: serde_json::Value) -> Result<Policy, AccessError> {
    let doc = PolicyDocument::parse(value).map_err(|e| AccessError::Invalid(format!("policy: {e}")))?;
    Policy::compile("session", doc).map_err(|e| AccessError::Invalid(format!("policy: {e}")))
}

/// A session policy that denies everything: one statement `deny * *`.
fn deny_all_policy() -> Policy {
    deny_all_policy_named("session")
}

/// A policy named `name` that denies everything: one statement `deny * *`.
fn deny_all_policy_named(name: &str) -> Policy {
    let doc = PolicyDocument::parse(serde_json::json!({
        "statements": [{"effect": "deny", "actions": ["*"], "resources": ["*"]}]
    }))
    .expect("a constant policy parses");
    Policy::compile(name, doc).expect("a constant policy compiles")
}

/// The record of a denial: the action and resource asked, why (no allow, or the explicit
/// denies that applied). Domains that record it themselves (to point it at an item within
/// the resource) start from this.
pub fn denial_event(ctx: &Context, audit: &str, action: &str, resource: &str, decision: &Decision) -> AuditEvent {
    let denies: Vec<String> = decision
        .matched
        .iter()
        .filter(|m| m.effect == crate::Effect::Deny)
        .map(|m| format!("{}#{}", m.policy, m.statement))
        .collect();
    ctx.event(audit, Outcome::Denied)
        .resource(resource.to_string())
        .reason(if denies.is_empty() { "no policy allows it" } else { "an explicit deny applies" })
        .detail("policy_action", action)
        .detail("deny_statements", denies)
}
