//! The catalogue of actions: every action a route or domain operation can ask for.
//!
//! Actions are `<area>:<verb>`; the audit trail names the same operation `<area>.<verb>`
//! ([`audit_name`]). A policy's action pattern must match at least one entry here, so a
//! typo is refused when the policy is saved instead of silently granting nothing.

/// Every action, grouped by area.
pub const ACTIONS: &[&str] = &[
    // One's own account and sessions.
    "account:read",
    "account:logout",
    "account:revoke_session",
    "account:password",
    "account:mfa",
    "sts:assume_role",
    // Users and service credentials (administration).
    "user:create",
    "user:list",
    "user:read",
    "user:update",
    "user:disable",
    "user:unlock",
    "user:reset_mfa",
    "apikey:create",
    "apikey:list",
    "apikey:revoke",
    // Keys, settings, policies.
    "key:read",
    "key:rotate",
    "settings:read",
    "settings:update",
    "policy:list",
    "policy:read",
    "policy:write",
    "policy:delete",
    "policy:attach",
    "policy:simulate",
    // Audit and reviews.
    "audit:read",
    "audit:export",
    "access:review",
    // Conversations (PHI).
    "dialog:create",
    "dialog:list",
    "dialog:read",
    "dialog:add_member",
    "dialog:remove_member",
    "dialog:typing",
    "message:send",
    "message:read",
    "message:update",
    "message:delete",
    "receipt:write",
    "realtime:connect",
    "file:upload",
    "file:read",
    "file:delete",
    // Emergency access.
    "breakglass:invoke",
    "breakglass:list",
    "breakglass:revoke",
];

/// The audit trail's name for an action: `message:read` → `message.read`.
pub fn audit_name(action: &str) -> String {
    action.replacen(':', ".", 1)
}

/// Whether `action` is in the catalogue.
pub fn is_known(action: &str) -> bool {
    ACTIONS.contains(&action)
}
