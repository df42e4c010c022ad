//! Break-glass: emergency read access to one dialog (164.312(a)(2)(ii)).
//!
//! A caller whose policies allow `breakglass:invoke` on the dialog (clinicians by
//! default), from a session that proved a second factor, states a reason of at least
//! [`MIN_REASON`] characters and gets a grant: for `[access] breakglass_minutes` the
//! `breakglass` condition holds for that dialog, which the managed clinician policy turns
//! into `dialog:read` and `message:read` only. The grant is recorded at high severity with
//! its reason, an alert goes to `[access] alert_webhook_url`, every read under it is
//! audited as break-glass, and administrators and auditors list and revoke grants.
//!
//! The reason is a justification shown to administrators and auditors; callers are told
//! not to put clinical details in it, but it is free text typed under pressure and may name
//! a patient, so it is treated as PHI: sealed under the data key of the dialog the grant
//! opens (AAD binding the grant, its user, the dialog and the key), so erasing the dialog
//! erases it; never written to the audit trail (which records its length), never in the
//! alert (ids only). Grants from before reasons were sealed are sealed at start
//! ([`Access::seal_legacy_reasons`]).

use time::OffsetDateTime;
use uuid::Uuid;
use ward_audit::{Context, Outcome};
use ward_storage::{BreakGlassGrant, GrantReason};
use zeroize::Zeroizing;

use crate::service::{Access, AccessError, Facts, Principal};

/// Shortest reason accepted, in characters.
pub const MIN_REASON: usize = 20;
/// Longest reason accepted, in characters.
pub const MAX_REASON: usize = 1_000;

/// A grant with its reason opened; `None` once the dialog's data key is destroyed (the
/// reason was erased with the dialog).
#[derive(Debug, Clone)]
pub struct GrantView {
    pub grant: BreakGlassGrant,
    pub reason: Option<String>,
}

/// Binds a sealed reason to its grant: moved to another row, it no longer opens.
fn reason_aad(id: Uuid, user_id: Uuid, dialog_id: Uuid, key_id: Uuid) -> Vec<u8> {
    format!("ward:breakglass-reason|{id}|{user_id}|{dialog_id}|{key_id}").into_bytes()
}

impl Access {
    /// Grants the caller emergency read access to `dialog_id`.
    pub async fn invoke_breakglass(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        reason: &str,
    ) -> Result<GrantView, AccessError> {
        let resource = format!("dialog/{dialog_id}");
        let refuse =
            |why: &'static str| ctx.event("breakglass.invoke", Outcome::Denied).resource(resource.clone()).reason(why);
        let reason = reason.trim();
        let chars = reason.chars().count();
        if !(MIN_REASON..=MAX_REASON).contains(&chars) {
            self.audit().record_alone(&refuse("reason_missing_or_too_short")).await?;
            return Err(AccessError::Invalid(format!(
                "reason: state why emergency access is needed, in {MIN_REASON} to {MAX_REASON} characters"
            )));
        }
        if who.mfa_at.is_none() {
            self.audit().record_alone(&refuse("mfa_required")).await?;
            return Err(AccessError::MfaRequired(
                "break-glass access needs a session that proved a second factor: sign in with MFA".into(),
            ));
        }
        let Some(dialog) = self.store().dialog_by_id(dialog_id).await? else {
            self.audit().record_alone(&refuse("no_such_dialog")).await?;
            return Err(AccessError::NotFound);
        };
        if self.store().member(dialog_id, who.user_id).await?.is_some() {
            self.audit().record_alone(&refuse("already_a_member")).await?;
            return Err(AccessError::Conflict("the caller is a member of this dialog already".into()));
        }
        let facts = Facts { dialog_member: Some(false), breakglass: Some(false) };
        self.authorize(ctx, who, "breakglass:invoke", &resource, facts).await?;
        let now = ctx.now;
        let expires_at = now + self.settings().breakglass;
        let (id, key_id) = (Uuid::now_v7(), dialog.data_key_id);
        let sealed = self.seal_reason(id, who.user_id, dialog_id, key_id, reason).await?;
        let grant = BreakGlassGrant {
            id,
            user_id: who.user_id,
            dialog_id,
            reason: GrantReason::Sealed { key_id, sealed },
            created_at: now,
            expires_at,
            revoked_at: None,
            revoked_by: None,
        };
        let mut tx = self.store().begin().await?;
        tx.insert_breakglass_grant(&grant).await?;
        let event = ctx
            .event("breakglass.invoke", Outcome::Success)
            .resource(resource)
            .detail("severity", "high")
            .detail("grant_id", grant.id.to_string())
            .detail("expires_at", rfc3339(expires_at))
            .detail("reason_chars", chars);
        let row = self.audit().record(&mut *tx, &event).await?;
        tx.commit().await?;
        self.alert("breakglass.invoked", ctx, &grant, row.seq);
        Ok(GrantView { grant, reason: Some(reason.to_string()) })
    }

    /// A reason sealed under the dialog's data key `key_id`, bound to its grant.
    async fn seal_reason(
        &self,
        id: Uuid,
        user_id: Uuid,
        dialog_id: Uuid,
        key_id: Uuid,
        reason: &str,
    ) -> Result<Vec<u8>, AccessError> {
        let key = self.keys()?.by_id(key_id).await?;
        Ok(ward_keys::seal(&key, &reason_aad(id, user_id, dialog_id, key_id), reason.as_bytes())?)
    }

    /// The grant's reason in plaintext, or `None` when the dialog's key (and with it the
    /// reason) has been destroyed. A reason that fails authentication is an error.
    async fn open_reason(&self, grant: &BreakGlassGrant) -> Result<Option<String>, AccessError> {
        let (key_id, sealed) = match &grant.reason {
            GrantReason::Legacy(plain) => return Ok(Some(plain.clone())),
            GrantReason::Sealed { key_id, sealed } => (*key_id, sealed),
        };
        let key = match self.keys()?.by_id(key_id).await {
            Ok(key) => key,
            Err(ward_keys::KeyError::Destroyed(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let aad = reason_aad(grant.id, grant.user_id, grant.dialog_id, key_id);
        let plain = ward_keys::open(&key, &aad, sealed)?;
        let text = std::str::from_utf8(&plain).map_err(|_| ward_keys::KeyError::Integrity)?;
        Ok(Some(text.to_string()))
    }

    async fn view(&self, grant: BreakGlassGrant) -> Result<GrantView, AccessError> {
        let reason = self.open_reason(&grant).await?;
        Ok(GrantView { grant, reason })
    }

    /// Seals the reasons of grants written before reasons were sealed (migration 0011),
    /// each in an audited transaction; answers how many. A grant whose dialog's key is
    /// destroyed keeps its plaintext and is logged: it needs an operator.
    pub async fn seal_legacy_reasons(&self, ctx: &Context) -> Result<usize, AccessError> {
        let mut total = 0;
        // Batches of up to 10,000, until one seals nothing (none left, or only grants that
        // cannot be sealed).
        loop {
            let sealed = self.seal_batch(ctx).await?;
            if sealed == 0 {
                return Ok(total);
            }
            total += sealed;
        }
    }

    /// One batch of [`Self::seal_legacy_reasons`]; answers how many it sealed.
    async fn seal_batch(&self, ctx: &Context) -> Result<usize, AccessError> {
        let mut sealed_count = 0;
        for grant in self.store().breakglass_grants_unsealed().await? {
            let GrantReason::Legacy(plain) = &grant.reason else { continue };
            let plain = Zeroizing::new(plain.clone());
            let Some(dialog) = self.store().dialog_by_id(grant.dialog_id).await? else { continue };
            let key_id = dialog.data_key_id;
            let sealed = match self.seal_reason(grant.id, grant.user_id, grant.dialog_id, key_id, &plain).await {
                Ok(sealed) => sealed,
                Err(AccessError::Keys(ward_keys::KeyError::Destroyed(_))) => {
                    tracing::error!(grant = %grant.id, "a break-glass reason cannot be sealed: its dialog's key is destroyed");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let event = ctx
                .event("breakglass.reason_seal", Outcome::Success)
                .resource(format!("dialog/{}", grant.dialog_id))
                .detail("grant_id", grant.id.to_string());
            let mut tx = self.store().begin().await?;
            if tx.seal_breakglass_reason(grant.id, key_id, &sealed).await? {
                self.audit().record(&mut *tx, &event).await?;
                tx.commit().await?;
                sealed_count += 1;
            } else {
                tx.rollback().await?;
            }
        }
        Ok(sealed_count)
    }

    /// The caller's live grant for a dialog, if any.
    pub async fn active_grant(
        &self,
        user_id: Uuid,
        dialog_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<BreakGlassGrant>, AccessError> {
        Ok(self.store().active_breakglass_grant(user_id, dialog_id, now).await?)
    }

    /// Grants made since `since`, newest first, with their reasons.
    pub async fn grants(&self, since: OffsetDateTime) -> Result<Vec<GrantView>, AccessError> {
        let mut out = Vec::new();
        for grant in self.store().breakglass_grants_since(since).await? {
            out.push(self.view(grant).await?);
        }
        Ok(out)
    }

    /// Ends a grant at once (audited at high severity; an alert is sent).
    pub async fn revoke_grant(&self, ctx: &Context, id: Uuid) -> Result<GrantView, AccessError> {
        let grant = self.store().breakglass_grant(id).await?.ok_or(AccessError::NotFound)?;
        if grant.expires_at <= ctx.now {
            return Err(AccessError::Conflict("the grant has expired already".into()));
        }
        let by = ctx.user_id.as_deref().and_then(|u| u.parse().ok());
        let mut tx = self.store().begin().await?;
        if !tx.revoke_breakglass_grant(id, ctx.now, by).await? {
            tx.rollback().await?;
            return Err(AccessError::Conflict("the grant was revoked already".into()));
        }
        let event = ctx
            .event("breakglass.revoke", Outcome::Success)
            .resource(format!("dialog/{}", grant.dialog_id))
            .detail("severity", "high")
            .detail("grant_id", id.to_string())
            .detail("grant_user_id", grant.user_id.to_string());
        let row = self.audit().record(&mut *tx, &event).await?;
        tx.commit().await?;
        let revoked = BreakGlassGrant { revoked_at: Some(ctx.now), revoked_by: by, ..grant };
        self.alert("breakglass.revoked", ctx, &revoked, row.seq);
        self.view(revoked).await
    }

    /// Queues an alert (ids only); without a webhook, logs that none was sent.
    fn alert(&self, kind: &str, ctx: &Context, grant: &BreakGlassGrant, audit_seq: i64) {
        let Some(webhook) = self.alerts() else {
            tracing::warn!(grant = %grant.id, "break-glass event with no [access] alert_webhook_url configured");
            return;
        };
        webhook.offer(serde_json::json!({
            "type": kind,
            "id": Uuid::now_v7(),
            "severity": "high",
            "grant_id": grant.id,
            "dialog_id": grant.dialog_id,
            "user_id": grant.user_id,
            "actor": ctx.username,
            "created_at": rfc3339(grant.created_at),
            "expires_at": rfc3339(grant.expires_at),
            "revoked_at": grant.revoked_at.map(rfc3339),
            "audit_seq": audit_seq,
        }));
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
