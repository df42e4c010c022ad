//! The built-in roles as managed policies: read-only documents named `ward-<role>`,
//! attached to their role. Administrators narrow or widen a role by attaching their own
//! policies to it (a deny there beats these allows); they cannot edit these.
//!
//! Minimum necessary (164.502(b), 164.514(d)): `admin` manages users, keys, settings and
//! policies but has no action on conversations or files; `auditor` reads the audit trail,
//! policies and reviews and nothing else. Conversation actions on a dialog need the caller
//! to be its member (`dialog_member`), except the read-only pair `dialog:read` and
//! `message:read` under a live break-glass grant, which only `clinician` may invoke, and
//! only from a session that proved a second factor (required by the procedure itself,
//! `breakglass.rs`, so that the refusal names the missing factor).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::policy::{Policy, PolicyDocument};

/// The managed policy's name for a role.
pub fn policy_name(role: &str) -> String {
    format!("ward-{role}")
}

/// Whether `name` is reserved for managed policies.
pub fn is_managed_name(name: &str) -> bool {
    name.starts_with("ward-")
}

/// Every signed-in principal may manage its own account and assume its own roles.
const SELF_SERVICE: &str =
    r#"{"sid": "self-service", "effect": "allow", "actions": ["account:*", "sts:assume_role"], "resources": ["*"]}"#;

/// Taking part in conversations: the common core of the four conversation roles.
const CONVERSATIONS: &str = r#"
    {"sid": "start-and-list", "effect": "allow", "actions": ["dialog:create", "dialog:list", "realtime:connect"],
     "resources": ["*"]},
    {"sid": "members-only", "effect": "allow",
     "actions": ["dialog:read", "dialog:add_member", "dialog:remove_member", "dialog:typing", "message:*",
                 "receipt:write", "file:*"],
     "resources": ["dialog/*"], "conditions": {"dialog_member": true}}"#;

/// The managed policy document of each built-in role.
pub fn documents() -> BTreeMap<&'static str, String> {
    let conversation = |extra: &str| format!(r#"{{"statements": [{SELF_SERVICE}, {CONVERSATIONS}{extra}]}}"#);
    let mut docs = BTreeMap::new();
    docs.insert(
        "admin",
        format!(
            r#"{{"statements": [{SELF_SERVICE},
            {{"sid": "administer", "effect": "allow",
              "actions": ["user:*", "apikey:*", "key:*", "settings:*", "policy:*", "breakglass:list",
                          "breakglass:revoke"],
              "resources": ["*"]}}]}}"#
        ),
    );
    docs.insert(
        "auditor",
        format!(
            r#"{{"statements": [{SELF_SERVICE},
            {{"sid": "audit-and-review", "effect": "allow",
              "actions": ["audit:*", "access:review", "breakglass:list", "policy:list", "policy:read",
                          "policy:simulate"],
              "resources": ["*"]}}]}}"#
        ),
    );
    docs.insert(
        "clinician",
        conversation(
            r#",
            {"sid": "break-glass-invoke", "effect": "allow", "actions": ["breakglass:invoke"],
             "resources": ["dialog/*"]},
            {"sid": "break-glass-read", "effect": "allow", "actions": ["dialog:read", "message:read"],
             "resources": ["dialog/*"], "conditions": {"breakglass": true}}"#,
        ),
    );
    docs.insert("staff", conversation(""));
    docs.insert("patient", conversation(""));
    docs.insert("service", conversation(""));
    docs
}

/// The managed policies, compiled, by role name.
pub fn policies() -> BTreeMap<String, Arc<Policy>> {
    documents()
        .into_iter()
        .map(|(role, text)| {
            let value: serde_json::Value = serde_json::from_str(&text).expect("managed policies are valid JSON");
            let doc = PolicyDocument::parse(value).expect("managed policies are valid policies");
            let policy = Policy::compile(policy_name(role), doc).expect("managed policies compile");
            (role.to_string(), Arc::new(policy))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use time::OffsetDateTime;

    use super::*;
    use crate::engine::{CredentialKind, RequestContext, evaluate};

    fn ctx(member: bool, breakglass: bool, mfa: bool) -> RequestContext {
        let now = OffsetDateTime::now_utc();
        RequestContext {
            now,
            ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            mfa_at: mfa.then_some(now),
            credential: CredentialKind::Session,
            dialog_member: Some(member),
            breakglass: Some(breakglass),
        }
    }

    fn allowed(role: &str, action: &str, resource: &str, c: &RequestContext) -> bool {
        let all = policies();
        evaluate(&[all[role].clone()], action, resource, c).allowed
    }

    #[test]
    fn every_role_has_a_managed_policy_that_compiles() {
        let all = policies();
        for role in ["admin", "clinician", "staff", "patient", "auditor", "service"] {
            assert!(all.contains_key(role), "{role}");
            assert_eq!(all[role].name, format!("ward-{role}"));
        }
    }

    #[test]
    fn admin_and_auditor_read_no_phi() {
        let member = ctx(true, true, true);
        for role in ["admin", "auditor"] {
            for action in ["message:read", "dialog:read", "file:read", "message:send", "dialog:create"] {
                assert!(!allowed(role, action, "dialog/1", &member), "{role} {action}");
            }
        }
        assert!(allowed("admin", "user:create", "*", &member));
        assert!(!allowed("admin", "audit:read", "*", &member));
        assert!(allowed("auditor", "audit:read", "*", &member));
        assert!(!allowed("auditor", "user:create", "*", &member));
    }

    #[test]
    fn conversations_need_membership_and_break_glass_is_read_only_for_clinicians() {
        assert!(allowed("patient", "message:send", "dialog/1", &ctx(true, false, false)));
        assert!(!allowed("patient", "message:read", "dialog/1", &ctx(false, false, false)));
        assert!(!allowed("patient", "message:read", "dialog/1", &ctx(false, true, true)), "only clinicians");
        let glass = ctx(false, true, true);
        assert!(allowed("clinician", "message:read", "dialog/1", &glass));
        assert!(allowed("clinician", "dialog:read", "dialog/1", &glass));
        assert!(!allowed("clinician", "message:send", "dialog/1", &glass), "read-only");
        assert!(!allowed("clinician", "message:delete", "dialog/1", &glass), "read-only");
        // MFA is required by the break-glass procedure itself (`breakglass.rs`), whatever the
        // policies say, so that its refusal can name the missing factor.
        assert!(allowed("clinician", "breakglass:invoke", "dialog/1", &ctx(false, false, true)));
        assert!(!allowed("staff", "breakglass:invoke", "dialog/1", &ctx(false, false, true)));
    }
}
