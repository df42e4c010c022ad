//! Evaluation: may this request do `action` on `resource`?
//!
//! * A statement **applies** when one of its action patterns matches the action, one of its
//!   resource patterns matches the resource (`*` matches everything), and every condition
//!   present holds.
//! * **allowed** = at least one applying allow and no applying deny. Nothing applying means
//!   deny (default deny). The order of statements and of policies never matters; the
//!   [`Decision`] lists every applying statement, sorted by (policy, statement index).
//! * **Unknown context fails closed.** When the context lacks the value a condition needs
//!   (`ip`, `dialog_member` or `breakglass` is `None`), the condition does not hold for an
//!   allow (the allow does not apply) but does hold for a deny (the deny applies): a deny
//!   "unless from 10.0.0.0/8" bites when the IP is unknown.
//! * `mfa: true` holds iff `mfa_at` is set, `mfa: false` iff it is not; `mfa_max_age_s: n`
//!   iff `mfa_at` is set, at most `n` seconds before `now` and at most
//!   [`MFA_FUTURE_SKEW_S`] seconds after it. `time_of_day` and `weekdays` read `now` in UTC.
//!   An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`) also counts as its IPv4 address.
//! * [`evaluate_with_session`]: with an STS session policy the request is allowed only if
//!   the identity policies allow it **and** the session policy allows it (a deny in either
//!   wins); `matched` lists the statements of both.
//!
//! The hot path allocates nothing except the `matched` list, and that only when a
//! statement applies. Actions of the catalogue are matched by a precomputed bit per action.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime, UtcOffset};

use crate::policy::{ActionKey, CompiledConditions, Effect, Policy};

/// How far in the future (clock skew) `mfa_at` may be for `mfa_max_age_s` to hold.
pub const MFA_FUTURE_SKEW_S: i64 = 5;

/// The kind of credential a request was authenticated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A browser / app login session.
    Session,
    /// Temporary credentials from `sts:assume_role`.
    Sts,
    /// A long-lived API key.
    ApiKey,
}

impl CredentialKind {
    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// What the engine knows about the request besides the action and the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestContext {
    pub now: OffsetDateTime,
    /// The caller's address, when known.
    pub ip: Option<IpAddr>,
    /// When the session proved a second factor (`None`: it did not).
    pub mfa_at: Option<OffsetDateTime>,
    pub credential: CredentialKind,
    /// Whether the caller is a member of the dialog named by the resource (`None`: unknown,
    /// e.g. the resource is not a dialog).
    pub dialog_member: Option<bool>,
    /// Whether the caller holds a live break-glass grant for that dialog (`None`: unknown).
    pub breakglass: Option<bool>,
}

/// A statement that applied to the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matched {
    /// The policy's name.
    pub policy: String,
    /// The statement's index in the policy's document.
    pub statement: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub effect: Effect,
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// Every statement that applied, sorted by (policy, statement).
    pub matched: Vec<Matched>,
}

/// Evaluates `action` on `resource` against the identity's policies.
pub fn evaluate(policies: &[Arc<Policy>], action: &str, resource: &str, ctx: &RequestContext) -> Decision {
    evaluate_with_session(policies, None, action, resource, ctx)
}

/// Evaluates like [`evaluate`], intersected with an STS session policy when there is one:
/// allowed only if both the identity policies and the session policy allow.
pub fn evaluate_with_session(
    policies: &[Arc<Policy>],
    session: Option<&Policy>,
    action: &str,
    resource: &str,
    ctx: &RequestContext,
) -> Decision {
    let request = Request::new(action, resource, ctx);
    let mut outcome = Outcome::default();
    for policy in policies {
        request.apply(policy, &mut outcome);
    }
    let mut allowed = outcome.allowed();
    if let Some(session) = session {
        let mut session_outcome = Outcome { matched: outcome.matched, ..Outcome::default() };
        request.apply(session, &mut session_outcome);
        allowed = allowed && session_outcome.allowed();
        outcome.matched = session_outcome.matched;
    }
    let mut matched = outcome.matched;
    if matched.len() > 1 {
        matched.sort_unstable_by(|a, b| {
            (&a.policy, a.statement, a.effect as u8, &a.sid).cmp(&(&b.policy, b.statement, b.effect as u8, &b.sid))
        });
    }
    Decision { allowed, matched }
}

#[derive(Default)]
struct Outcome {
    allow: bool,
    deny: bool,
    matched: Vec<Matched>,
}

impl Outcome {
    fn allowed(&self) -> bool {
        self.allow && !self.deny
    }
}

/// The request with what every statement needs computed once.
struct Request<'a> {
    action: ActionKey<'a>,
    resource: &'a str,
    ctx: &'a RequestContext,
    /// The address, and its IPv4 form when it is an IPv4-mapped IPv6 address.
    ip: Option<(IpAddr, Option<IpAddr>)>,
    /// Minutes since midnight, UTC.
    minute: u16,
    /// Bit `n` for `n` days from Monday, UTC.
    weekday: u8,
}

impl<'a> Request<'a> {
    fn new(action: &'a str, resource: &'a str, ctx: &'a RequestContext) -> Request<'a> {
        let utc = ctx.now.to_offset(UtcOffset::UTC);
        Request {
            action: ActionKey::new(action),
            resource,
            ctx,
            ip: ctx.ip.map(|ip| {
                let canonical = ip.to_canonical();
                (ip, (canonical != ip).then_some(canonical))
            }),
            minute: u16::from(utc.hour()) * 60 + u16::from(utc.minute()),
            weekday: 1 << utc.weekday().number_days_from_monday(),
        }
    }

    fn apply(&self, policy: &Policy, outcome: &mut Outcome) {
        for (index, statement) in policy.compiled.iter().enumerate() {
            if !statement.actions.matches(&self.action) || !statement.resources.iter().any(|g| g.matches(self.resource))
            {
                continue;
            }
            if let Some(conditions) = &statement.conditions
                && !self.holds(conditions, statement.effect)
            {
                continue;
            }
            match statement.effect {
                Effect::Allow => outcome.allow = true,
                Effect::Deny => outcome.deny = true,
            }
            outcome.matched.push(Matched {
                policy: policy.name.clone(),
                statement: index,
                sid: statement.sid.clone(),
                effect: statement.effect,
            });
        }
    }

    fn in_any(nets: &[ipnet::IpNet], (ip, mapped): (IpAddr, Option<IpAddr>)) -> bool {
        nets.iter().any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
    }

    /// Whether every condition holds; `effect` decides what an unknown value means.
    fn holds(&self, c: &CompiledConditions, effect: Effect) -> bool {
        // Fail closed: unknown context makes a deny's condition hold, an allow's not.
        let unknown = effect == Effect::Deny;
        let ctx = self.ctx;
        if let Some(want) = c.mfa
            && ctx.mfa_at.is_some() != want
        {
            return false;
        }
        if let Some(max_age) = c.mfa_max_age_s {
            let Some(at) = ctx.mfa_at else { return false };
            let age = ctx.now - at;
            if age > Duration::seconds(max_age) || age < Duration::seconds(-MFA_FUTURE_SKEW_S) {
                return false;
            }
        }
        if let Some(nets) = &c.source_ip {
            let inside = self.ip.map_or(unknown, |ip| Self::in_any(nets, ip));
            if !inside {
                return false;
            }
        }
        if let Some(nets) = &c.not_source_ip {
            let outside = self.ip.map_or(unknown, |ip| !Self::in_any(nets, ip));
            if !outside {
                return false;
            }
        }
        if let Some((after, before)) = c.time_of_day {
            let m = self.minute;
            let inside = if after < before { after <= m && m < before } else { m >= after || m < before };
            if !inside {
                return false;
            }
        }
        if let Some(days) = c.weekdays
            && days & self.weekday == 0
        {
            return false;
        }
        if let Some(kinds) = c.credential
            && kinds & ctx.credential.bit() == 0
        {
            return false;
        }
        let flag = |want: Option<bool>, have: Option<bool>| match (want, have) {
            (None, _) => true,
            (Some(_), None) => unknown,
            (Some(want), Some(have)) => want == have,
        };
        flag(c.dialog_member, ctx.dialog_member) && flag(c.breakglass, ctx.breakglass)
    }
}
