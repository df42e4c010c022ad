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
//! The reason is a justification shown to auditors; callers are told not to put clinical
//! details in it. The alert carries ids only, never the reason.

use time::OffsetDateTime;
use uuid::Uuid;
use ward_audit::{Context, Outcome};
use ward_storage::BreakGlassGrant;

use crate::service::{Access, AccessError, Facts, Principal};

/// Shortest reason accepted, in characters.
pub const MIN_REASON: usize = 20;
/// Longest reason accepted, in characters.
pub const MAX_REASON: usize = 1_000;

impl Access {
    /// Grants the caller emergency read access to `dialog_id`.
    pub async fn invoke_breakglass(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        reason: &str,
    ) -> Result<BreakGlassGrant, AccessError> {
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
        if self.store().dialog_by_id(dialog_id).await?.is_none() {
            self.audit().record_alone(&refuse("no_such_dialog")).await?;
            return Err(AccessError::NotFound);
        }
        if self.store().member(dialog_id, who.user_id).await?.is_some() {
            self.audit().record_alone(&refuse("already_a_member")).await?;
            return Err(AccessError::Conflict("the caller is a member of this dialog already".into()));
        }
        let facts = Facts { dialog_member: Some(false), breakglass: Some(false) };
        self.authorize(ctx, who, "breakglass:invoke", &resource, facts).await?;
        let now = ctx.now;
        let expires_at = now + self.settings().breakglass;
        let grant = BreakGlassGrant {
            id: Uuid::now_v7(),
            user_id: who.user_id,
            dialog_id,
            reason: reason.to_string(),
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
            .reason(reason.to_string())
            .detail("severity", "high")
            .detail("grant_id", grant.id.to_string())
            .detail("expires_at", rfc3339(expires_at));
        let row = self.audit().record(&mut *tx, &event).await?;
        tx.commit().await?;
        self.alert("breakglass.invoked", ctx, &grant, row.seq);
        Ok(grant)
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

    /// Grants made since `since`, newest first.
    pub async fn grants(&self, since: OffsetDateTime) -> Result<Vec<BreakGlassGrant>, AccessError> {
        Ok(self.store().breakglass_grants_since(since).await?)
    }

    /// Ends a grant at once (audited at high severity; an alert is sent).
    pub async fn revoke_grant(&self, ctx: &Context, id: Uuid) -> Result<BreakGlassGrant, AccessError> {
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
        Ok(revoked)
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
