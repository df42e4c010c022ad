//! Access review (164.308(a)(4), (a)(3)(ii)(B)): per user, what they may do and have done
//! with it, for `ward access review` and `GET /v1/access/review`.
//!
//! Effective permissions are listed per action of the catalogue: `always` when some allow
//! statement grants it on every resource without conditions, `conditional` when the
//! allows that grant it carry conditions or narrower resources (membership of the
//! dialog, MFA, network, time) or when a deny with conditions or narrower resources may
//! take it away, and the action is left out when nothing allows it or an unconditional
//! deny on every resource takes it away.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::breakglass::rfc3339;
use crate::policy::{Effect, Policy};
use crate::service::{Access, AccessError};

/// The whole review.
#[derive(Debug, Clone, Serialize)]
pub struct Review {
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// Break-glass uses are counted from here.
    #[serde(with = "time::serde::rfc3339")]
    pub period_start: OffsetDateTime,
    pub dormant_days: u32,
    pub users: Vec<ReviewUser>,
}

/// One user's line of the review.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewUser {
    pub id: Uuid,
    pub username: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    /// Every policy that applies: managed, attached to a role, attached to the user.
    pub policies: Vec<String>,
    pub effective_permissions: Vec<Permission>,
    pub dialog_memberships: Vec<Uuid>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_sign_in: Option<OffsetDateTime>,
    pub mfa_enrolled: bool,
    pub breakglass_uses: Vec<BreakGlassUse>,
    /// No sign-in for `dormant_days` (an account never used counts from its creation).
    pub dormant: bool,
}

/// An action the user's policies grant.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Permission {
    pub action: &'static str,
    /// `always` or `conditional`.
    pub scope: &'static str,
}

/// One break-glass grant in the period.
#[derive(Debug, Clone, Serialize)]
pub struct BreakGlassUse {
    pub grant_id: Uuid,
    pub dialog_id: Uuid,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
}

/// The effective permissions of a set of policies.
pub fn effective_permissions(policies: &[std::sync::Arc<Policy>]) -> Vec<Permission> {
    let mut out = Vec::new();
    for &action in crate::actions::ACTIONS {
        let mut allowed = false;
        let mut always = false;
        let mut blocked = false;
        let mut sometimes_blocked = false;
        for p in policies {
            for s in &p.document.statements {
                if !s.actions.iter().any(|pat| crate::glob::matches(pat, action)) {
                    continue;
                }
                let everywhere = s.resources.iter().any(|r| r == "*") && s.conditions.is_empty();
                match s.effect {
                    Effect::Allow => {
                        allowed = true;
                        always |= everywhere;
                    }
                    Effect::Deny => {
                        blocked |= everywhere;
                        sometimes_blocked |= !everywhere;
                    }
                }
            }
        }
        if allowed && !blocked {
            let scope = if always && !sometimes_blocked { "always" } else { "conditional" };
            out.push(Permission { action, scope });
        }
    }
    out
}

impl Access {
    /// The review at `now`, counting break-glass uses since `period_start`.
    pub async fn review(&self, now: OffsetDateTime, period_start: OffsetDateTime) -> Result<Review, AccessError> {
        let store = self.store();
        let users = store.list_users().await?;
        let sign_ins: HashMap<Uuid, OffsetDateTime> = store.last_sign_ins().await?.into_iter().collect();
        let mut memberships: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for (user, dialog) in store.memberships().await? {
            memberships.entry(user).or_default().push(dialog);
        }
        let mut uses: BTreeMap<Uuid, Vec<BreakGlassUse>> = BTreeMap::new();
        for g in store.breakglass_grants_since(period_start).await? {
            uses.entry(g.user_id).or_default().push(BreakGlassUse {
                grant_id: g.id,
                dialog_id: g.dialog_id,
                created_at: rfc3339(g.created_at),
                expires_at: rfc3339(g.expires_at),
                revoked_at: g.revoked_at.map(rfc3339),
            });
        }
        let dormant_days = self.settings().dormant_days;
        let dormant_before = now - time::Duration::days(i64::from(dormant_days));
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            let policies = self.policies_of_user(u.id, &u.roles).await?;
            let mfa_enrolled = store.mfa_factors(u.id).await?.iter().any(|f| f.state == "active");
            let last_sign_in = sign_ins.get(&u.id).copied();
            out.push(ReviewUser {
                id: u.id,
                username: u.username,
                roles: u.roles,
                disabled: u.disabled,
                policies: policies.iter().map(|p| p.name.clone()).collect(),
                effective_permissions: effective_permissions(&policies),
                dialog_memberships: memberships.remove(&u.id).unwrap_or_default(),
                last_sign_in,
                mfa_enrolled,
                breakglass_uses: uses.remove(&u.id).unwrap_or_default(),
                dormant: last_sign_in.unwrap_or(u.created_at) < dormant_before,
            });
        }
        Ok(Review { generated_at: now, period_start, dormant_days, users: out })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::policy::PolicyDocument;

    fn policy(doc: serde_json::Value) -> Arc<Policy> {
        Arc::new(Policy::compile("p", PolicyDocument::parse(doc).expect("valid")).expect("compiles"))
    }

    fn scope_of(perms: &[Permission], action: &str) -> Option<&'static str> {
        perms.iter().find(|p| p.action == action).map(|p| p.scope)
    }

    #[test]
    fn a_conditional_deny_makes_an_unconditional_allow_conditional() {
        let allow = policy(serde_json::json!({"statements": [
            {"effect": "allow", "actions": ["message:read", "message:send"], "resources": ["*"]}]}));
        let perms = effective_permissions(std::slice::from_ref(&allow));
        assert_eq!(scope_of(&perms, "message:read"), Some("always"));
        let deny_without_mfa = policy(serde_json::json!({"statements": [
            {"effect": "deny", "actions": ["message:read"], "resources": ["*"], "conditions": {"mfa": false}}]}));
        let perms = effective_permissions(&[allow.clone(), deny_without_mfa]);
        assert_eq!(scope_of(&perms, "message:read"), Some("conditional"), "denied without MFA");
        assert_eq!(scope_of(&perms, "message:send"), Some("always"), "other actions keep theirs");
        let deny_one_dialog = policy(serde_json::json!({"statements": [
            {"effect": "deny", "actions": ["message:*"], "resources": ["dialog/01890a5d-ac96-774b-bcce-b302099a8057"]}]}));
        let perms = effective_permissions(&[allow.clone(), deny_one_dialog]);
        assert_eq!(scope_of(&perms, "message:send"), Some("conditional"), "denied on one dialog");
        let deny_all = policy(serde_json::json!({"statements": [
            {"effect": "deny", "actions": ["message:send"], "resources": ["*"]}]}));
        let perms = effective_permissions(&[allow, deny_all]);
        assert_eq!(scope_of(&perms, "message:send"), None, "an unconditional deny removes it");
    }
}
