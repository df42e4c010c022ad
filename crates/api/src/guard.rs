//! Every route's declared action and resource: the table the [`crate::extract::Caller`]
//! extractor consults before any handler runs.
//!
//! A route is either [`PUBLIC`] (health, metrics, OpenAPI, the two sign-in steps) or has a
//! [`Rule`] here; a signed-in request to a route with neither is refused (fail closed), and
//! a test walks the OpenAPI document to prove every operation is one or the other. The
//! OpenAPI document carries each rule as `x-ward-action` / `x-ward-resource`.
//!
//! Resources are templates over the path parameters (`dialog/{id}`). On a dialog the
//! route-level check assumes the best relation (member, break-glass), so a caller who
//! could never act on any dialog is refused with 403 before anything is read; the
//! messaging service then decides again with the real relation (404 for a non-member).

/// A route's declared action (`<area>:<verb>`), resource template and the action name its
/// denials are audited under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub action: &'static str,
    pub resource: &'static str,
    pub audit: &'static str,
}

const fn rule(
    method: &'static str,
    path: &'static str,
    action: &'static str,
    resource: &'static str,
    audit: &'static str,
) -> Rule {
    Rule { method, path, action, resource, audit }
}

/// Routes open without a credential.
pub const PUBLIC: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/mfa"),
];

/// Every other route.
pub const RULES: &[Rule] = &[
    rule("post", "/v1/auth/mfa/totp/enroll", "account:mfa", "user/self", "auth.mfa_enroll"),
    rule("post", "/v1/auth/mfa/totp/confirm", "account:mfa", "user/self", "auth.mfa_confirm"),
    rule("post", "/v1/auth/logout", "account:logout", "user/self", "auth.logout"),
    rule("get", "/v1/auth/session", "account:read", "user/self", "auth.session"),
    rule("get", "/v1/auth/sessions", "account:read", "user/self", "auth.sessions"),
    rule("delete", "/v1/auth/sessions/{id}", "account:revoke_session", "session/{id}", "session.revoke"),
    rule("post", "/v1/auth/password", "account:password", "user/self", "auth.password_change"),
    rule("post", "/v1/sts/assume-role", "sts:assume_role", "*", "sts.assume_role"),
    rule("post", "/v1/users", "user:create", "*", "user.create"),
    rule("get", "/v1/users", "user:list", "*", "user.list"),
    rule("get", "/v1/users/{id}", "user:read", "user/{id}", "user.read"),
    rule("patch", "/v1/users/{id}", "user:update", "user/{id}", "user.update"),
    rule("post", "/v1/users/{id}/disable", "user:disable", "user/{id}", "user.disable"),
    rule("post", "/v1/users/{id}/unlock", "user:unlock", "user/{id}", "user.unlock"),
    rule("post", "/v1/users/{id}/reset-mfa", "user:reset_mfa", "user/{id}", "user.mfa_reset"),
    rule("post", "/v1/users/{id}/api-keys", "apikey:create", "user/{id}", "apikey.create"),
    rule("get", "/v1/users/{id}/api-keys", "apikey:list", "user/{id}", "apikey.list"),
    rule("delete", "/v1/users/{id}/api-keys/{key_id}", "apikey:revoke", "apikey/{key_id}", "apikey.revoke"),
    rule("get", "/v1/admin/keys", "key:read", "*", "keys.status"),
    rule("post", "/v1/admin/keys/rotate", "key:rotate", "*", "keys.rotate"),
    rule("get", "/v1/admin/policies", "policy:list", "*", "policy.list"),
    rule("get", "/v1/admin/policies/{name}", "policy:read", "policy/{name}", "policy.read"),
    rule("put", "/v1/admin/policies/{name}", "policy:write", "policy/{name}", "policy.write"),
    rule("delete", "/v1/admin/policies/{name}", "policy:delete", "policy/{name}", "policy.delete"),
    rule("put", "/v1/admin/policies/{name}/attachments", "policy:attach", "policy/{name}", "policy.attach"),
    rule("post", "/v1/admin/policies/simulate", "policy:simulate", "*", "policy.simulate"),
    rule("get", "/v1/admin/break-glass", "breakglass:list", "*", "breakglass.list"),
    rule("delete", "/v1/admin/break-glass/{id}", "breakglass:revoke", "breakglass/{id}", "breakglass.revoke"),
    rule("get", "/v1/audit/events", "audit:read", "*", "audit.search"),
    rule("get", "/v1/audit/export", "audit:export", "*", "audit.export"),
    rule("get", "/v1/access/review", "access:review", "*", "access.review"),
    rule("post", "/v1/dialogs", "dialog:create", "*", "dialog.create"),
    rule("get", "/v1/dialogs", "dialog:list", "*", "dialog.list"),
    rule("get", "/v1/dialogs/{id}", "dialog:read", "dialog/{id}", "dialog.read"),
    rule("post", "/v1/dialogs/{id}/messages", "message:send", "dialog/{id}", "message.create"),
    rule("get", "/v1/dialogs/{id}/messages", "message:read", "dialog/{id}", "message.read"),
    rule("patch", "/v1/dialogs/{id}/messages/{mid}", "message:update", "dialog/{id}", "message.update"),
    rule("delete", "/v1/dialogs/{id}/messages/{mid}", "message:delete", "dialog/{id}", "message.delete"),
    rule("post", "/v1/dialogs/{id}/read", "receipt:write", "dialog/{id}", "receipt.read"),
    rule("post", "/v1/dialogs/{id}/members", "dialog:add_member", "dialog/{id}", "dialog.member_add"),
    rule("delete", "/v1/dialogs/{id}/members/{user_id}", "dialog:remove_member", "dialog/{id}", "dialog.member_remove"),
    rule("post", "/v1/dialogs/{id}/break-glass", "breakglass:invoke", "dialog/{id}", "breakglass.invoke"),
    // The file's dialog is known only once the file is read: the route-level check asks
    // whether the caller could act on any dialog's files; the files service then decides
    // with the real dialog and relation.
    rule("post", "/v1/files", "file:upload", "dialog/*", "file.upload"),
    rule("get", "/v1/files/{id}", "file:read", "dialog/*", "file.read"),
    rule("delete", "/v1/files/{id}", "file:delete", "dialog/*", "file.delete"),
    // Authenticated by its first frame, not a header; checked by the socket itself.
    rule("get", "/v1/ws", "realtime:connect", "*", "realtime.connect"),
];

/// The rule of a route, by lower-case method and matched path.
pub fn rule_for(method: &str, path: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
}

/// Whether a route is open without a credential.
pub fn is_public(method: &str, path: &str) -> bool {
    PUBLIC.iter().any(|(m, p)| m.eq_ignore_ascii_case(method) && *p == path)
}

/// The resource a rule names for these path parameters: `dialog/{id}` → `dialog/<id>`.
/// An id is written in its canonical form (lower-case, hyphenated), as the handler will
/// read it, so that `0190ABCD…` cannot slip past a deny written for `0190abcd…`. A
/// parameter the path lacks leaves the template as it is, which matches only `*`.
pub fn resource(template: &str, params: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in params {
        let canonical = value.parse::<uuid::Uuid>().map_or_else(|_| (*value).to_string(), |id| id.to_string());
        out = out.replace(&format!("{{{name}}}"), &canonical);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_names_a_known_action_once() {
        for r in RULES {
            assert!(ward_access::actions::is_known(r.action), "{} {}: {}", r.method, r.path, r.action);
            assert_eq!(RULES.iter().filter(|o| o.method == r.method && o.path == r.path).count(), 1, "{}", r.path);
            assert!(!is_public(r.method, r.path), "{} is both public and guarded", r.path);
        }
    }

    #[test]
    fn resources_fill_in_path_parameters() {
        assert_eq!(resource("dialog/{id}", &[("id", "42"), ("mid", "7")]), "dialog/42");
        assert_eq!(resource("apikey/{key_id}", &[("id", "1"), ("key_id", "9")]), "apikey/9");
        assert_eq!(resource("*", &[]), "*");
        let id = "0190abcd-0000-7000-8000-0000000000ff";
        for written in ["0190ABCD-0000-7000-8000-0000000000FF", "0190abcd000070008000 0000000000ff"] {
            let written = written.replace(' ', "");
            assert_eq!(resource("user/{id}", &[("id", &written)]), format!("user/{id}"), "{written}");
        }
    }
}
