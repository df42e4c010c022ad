//! The evaluation engine through the public API: every condition, wildcards, session
//! policies, and property tests (deny wins, order never matters, default deny,
//! monotonicity).

use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};
use time::macros::datetime;
use time::{Duration, OffsetDateTime, Weekday};
use ward_access::actions::ACTIONS;
use ward_access::{
    Conditions, CredentialKind, Decision, Effect, Matched, Policy, PolicyDocument, RequestContext, Statement, evaluate,
    evaluate_with_session,
};

/// Wednesday 2025-06-04 12:00 UTC.
const NOON: OffsetDateTime = datetime!(2025-06-04 12:00 UTC);

fn ctx() -> RequestContext {
    RequestContext {
        now: NOON,
        ip: Some(ip("10.1.2.3")),
        mfa_at: None,
        credential: CredentialKind::Session,
        dialog_member: None,
        breakglass: None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn policy(name: &str, doc: Value) -> Arc<Policy> {
    let doc = PolicyDocument::parse(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
    Arc::new(Policy::compile(name, doc).expect("compiles"))
}

/// Allows `message:read` on `dialog/*` under `conditions`.
fn allow_if(conditions: Value) -> Vec<Arc<Policy>> {
    vec![policy(
        "p",
        json!({"statements": [{"effect": "allow", "actions": ["message:read"],
                                "resources": ["dialog/*"], "conditions": conditions}]}),
    )]
}

/// Allows everything, and denies `message:read` on `dialog/*` under `conditions`.
fn deny_if(conditions: Value) -> Vec<Arc<Policy>> {
    vec![policy(
        "p",
        json!({"statements": [
            {"effect": "allow", "actions": ["*"], "resources": ["*"]},
            {"effect": "deny", "actions": ["message:read"], "resources": ["dialog/*"],
             "conditions": conditions}]}),
    )]
}

fn allowed(policies: &[Arc<Policy>], ctx: &RequestContext) -> bool {
    evaluate(policies, "message:read", "dialog/1", ctx).allowed
}

fn with(f: impl FnOnce(&mut RequestContext)) -> RequestContext {
    let mut c = ctx();
    f(&mut c);
    c
}

#[test]
fn noon_is_a_wednesday() {
    assert_eq!(NOON.weekday(), Weekday::Wednesday);
}

#[test]
fn default_deny_and_matched_list() {
    assert_eq!(evaluate(&[], "message:read", "dialog/1", &ctx()), Decision { allowed: false, matched: vec![] });
    let p = policy(
        "reader",
        json!({"statements": [
            {"sid": "other", "effect": "allow", "actions": ["user:read"], "resources": ["*"]},
            {"sid": "read", "effect": "allow", "actions": ["message:read"], "resources": ["dialog/*"]}]}),
    );
    let d = evaluate(std::slice::from_ref(&p), "message:read", "dialog/1", &ctx());
    assert_eq!(
        d,
        Decision {
            allowed: true,
            matched: vec![Matched {
                policy: "reader".into(),
                statement: 1,
                sid: Some("read".into()),
                effect: Effect::Allow
            }]
        }
    );
    let json = serde_json::to_value(&d).expect("serialize");
    assert_eq!(
        json,
        json!({"allowed": true, "matched": [{"policy": "reader", "statement": 1, "sid": "read", "effect": "allow"}]})
    );
    let d = evaluate(&[p], "message:send", "dialog/1", &ctx());
    assert_eq!(d, Decision { allowed: false, matched: vec![] });
}

#[test]
fn deny_wins_and_both_are_listed() {
    let policies = vec![
        policy("b", json!({"statements": [{"effect": "deny", "actions": ["message:*"], "resources": ["dialog/1"]}]})),
        policy("a", json!({"statements": [{"effect": "allow", "actions": ["*"], "resources": ["*"]}]})),
    ];
    let d = evaluate(&policies, "message:read", "dialog/1", &ctx());
    assert!(!d.allowed);
    let order: Vec<(&str, Effect)> = d.matched.iter().map(|m| (m.policy.as_str(), m.effect)).collect();
    assert_eq!(order, [("a", Effect::Allow), ("b", Effect::Deny)]);
    assert!(evaluate(&policies, "message:read", "dialog/2", &ctx()).allowed);
    let serialized = serde_json::to_value(&d.matched[0]).expect("serialize");
    assert!(serialized.get("sid").is_none(), "no sid, no key: {serialized}");
}

#[test]
fn wildcard_matching() {
    let decide = |action_pattern: &str, resource_pattern: &str, action: &str, resource: &str| {
        let p = policy(
            "p",
            json!({"statements": [{"effect": "allow", "actions": [action_pattern], "resources": [resource_pattern]}]}),
        );
        evaluate(&[p], action, resource, &ctx()).allowed
    };
    assert!(decide("message:*", "*", "message:read", "x/1"));
    assert!(decide("message:*", "*", "message:delete", "x/1"));
    assert!(!decide("message:*", "*", "dialog:read", "x/1"));
    assert!(decide("*:read", "*", "dialog:read", "x/1"));
    assert!(decide("*:read", "*", "user:read", "x/1"));
    assert!(!decide("*:read", "*", "user:readx", "x/1"));
    assert!(!decide("*:read", "*", "message:send", "x/1"));
    assert!(decide("*", "*", "anything:at_all", "whatever"));
    assert!(decide("*", "dialog/*", "dialog:read", "dialog/01J8"));
    assert!(!decide("*", "dialog/*", "dialog:read", "dialogs/1"));
    assert!(!decide("*", "dialog/*", "dialog:read", "user/1"));
    assert!(decide("*", "dialog/?", "dialog:read", "dialog/7"));
    assert!(!decide("*", "dialog/?", "dialog:read", "dialog/17"));
    assert!(decide("user:rea?", "*", "user:read", "x/1"));
    assert!(decide("*", "*/1", "dialog:read", "user/1"));
    assert!(decide("message:read", "dialog/42", "message:read", "dialog/42"));
    assert!(!decide("message:read", "dialog/42", "message:read", "dialog/421"));
    assert!(!decide("message:read", "dialog/42", "message:send", "dialog/42"));
    assert!(!decide("message:read", "dialog/a", "message:read", "dialog/A"), "case-sensitive");
    // Actions outside the catalogue still match patterns (the router only asks known ones).
    assert!(decide("message:*", "*", "message:future_verb", "x/1"));
    assert!(!decide("message:read", "*", "message:future_verb", "x/1"));
}

#[test]
fn mfa_present_or_absent() {
    let with_mfa = with(|c| c.mfa_at = Some(NOON - Duration::minutes(5)));
    assert!(allowed(&allow_if(json!({"mfa": true})), &with_mfa));
    assert!(!allowed(&allow_if(json!({"mfa": true})), &ctx()));
    assert!(allowed(&allow_if(json!({"mfa": false})), &ctx()));
    assert!(!allowed(&allow_if(json!({"mfa": false})), &with_mfa));
    // Deny without a second factor.
    assert!(!allowed(&deny_if(json!({"mfa": false})), &ctx()));
    assert!(allowed(&deny_if(json!({"mfa": false})), &with_mfa));
}

#[test]
fn mfa_max_age() {
    let p = allow_if(json!({"mfa_max_age_s": 900}));
    let at = |age: Duration| with(|c| c.mfa_at = Some(NOON - age));
    assert!(allowed(&p, &at(Duration::seconds(60))), "fresh");
    assert!(allowed(&p, &at(Duration::seconds(900))), "exactly at the limit");
    assert!(!allowed(&p, &at(Duration::seconds(901))), "stale");
    assert!(!allowed(&p, &at(Duration::milliseconds(900_001))), "stale by a millisecond");
    assert!(!allowed(&p, &ctx()), "no second factor");
    assert!(allowed(&p, &at(Duration::seconds(-3))), "a little clock skew");
    assert!(!allowed(&p, &at(Duration::minutes(-10))), "far in the future");
    let both = allow_if(json!({"mfa": true, "mfa_max_age_s": 60}));
    assert!(allowed(&both, &at(Duration::seconds(30))));
    assert!(!allowed(&both, &at(Duration::seconds(61))));
}

#[test]
fn source_ip() {
    let p = allow_if(json!({"source_ip": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]}));
    let from = |s: &str| with(|c| c.ip = Some(ip(s)));
    assert!(allowed(&p, &from("10.1.2.3")), "inside");
    assert!(allowed(&p, &from("10.255.255.255")), "inside, edge");
    assert!(!allowed(&p, &from("11.0.0.1")), "outside");
    assert!(allowed(&p, &from("192.0.2.7")), "bare address");
    assert!(!allowed(&p, &from("192.0.2.8")), "next to the bare address");
    assert!(allowed(&p, &from("2001:db8::1")), "IPv6 inside");
    assert!(!allowed(&p, &from("2001:db9::1")), "IPv6 outside");
    assert!(allowed(&p, &from("::ffff:10.9.9.9")), "IPv4-mapped IPv6");
    assert!(!allowed(&p, &with(|c| c.ip = None)), "unknown: the allow does not apply");
    // Host bits in a CIDR are ignored.
    let sloppy = allow_if(json!({"source_ip": ["10.1.2.3/16"]}));
    assert!(allowed(&sloppy, &from("10.1.200.1")));

    // A deny only from a network: bites inside, not outside, and bites when unknown.
    let d = deny_if(json!({"source_ip": ["203.0.113.0/24"]}));
    assert!(!allowed(&d, &from("203.0.113.9")));
    assert!(allowed(&d, &from("10.1.2.3")));
    assert!(!allowed(&d, &with(|c| c.ip = None)), "unknown: the deny applies");
}

#[test]
fn not_source_ip() {
    let p = allow_if(json!({"not_source_ip": ["10.0.0.0/8", "2001:db8::1"]}));
    let from = |s: &str| with(|c| c.ip = Some(ip(s)));
    assert!(!allowed(&p, &from("10.1.2.3")));
    assert!(allowed(&p, &from("192.0.2.1")));
    assert!(!allowed(&p, &from("2001:db8::1")));
    assert!(allowed(&p, &from("2001:db8::2")));
    assert!(!allowed(&p, &from("::ffff:10.0.0.1")), "IPv4-mapped IPv6");
    assert!(!allowed(&p, &with(|c| c.ip = None)), "unknown: the allow does not apply");

    // Deny unless from the office network: bites outside, and when the IP is unknown.
    let d = deny_if(json!({"not_source_ip": ["10.0.0.0/8"]}));
    assert!(allowed(&d, &from("10.1.2.3")));
    assert!(!allowed(&d, &from("198.51.100.1")));
    assert!(!allowed(&d, &with(|c| c.ip = None)), "unknown: the deny applies");
}

#[test]
fn time_of_day() {
    let at = |h: u8, m: u8| with(|c| c.now = NOON.replace_time(time::Time::from_hms(h, m, 0).expect("time")));
    let office = allow_if(json!({"time_of_day": {"after": "09:00", "before": "17:00"}}));
    assert!(allowed(&office, &at(12, 0)), "inside");
    assert!(allowed(&office, &at(9, 0)), "after is inclusive");
    assert!(!allowed(&office, &at(8, 59)), "just before");
    assert!(allowed(&office, &at(16, 59)), "last minute");
    assert!(!allowed(&office, &at(17, 0)), "before is exclusive");
    assert!(!allowed(&office, &at(23, 0)), "outside");
    let night = allow_if(json!({"time_of_day": {"after": "22:00", "before": "06:00"}}));
    assert!(allowed(&night, &at(22, 0)), "wraps: start");
    assert!(allowed(&night, &at(23, 59)));
    assert!(allowed(&night, &at(0, 0)), "wraps: midnight");
    assert!(allowed(&night, &at(5, 59)));
    assert!(!allowed(&night, &at(6, 0)), "wraps: end exclusive");
    assert!(!allowed(&night, &at(12, 0)));
    assert!(!allowed(&night, &at(21, 59)));
    // UTC, whatever the offset of `now`.
    let local = with(|c| c.now = NOON.to_offset(time::macros::offset!(+10)));
    assert!(allowed(&office, &local));
    // Deny at night.
    let d = deny_if(json!({"time_of_day": {"after": "22:00", "before": "06:00"}}));
    assert!(!allowed(&d, &at(23, 30)));
    assert!(allowed(&d, &at(12, 0)));
}

#[test]
fn weekdays() {
    let weekdays = allow_if(json!({"weekdays": ["mon", "tue", "wed", "thu", "fri"]}));
    let weekend = allow_if(json!({"weekdays": ["sat", "sun"]}));
    let on = |days: i64| with(|c| c.now = NOON + Duration::days(days));
    assert!(allowed(&weekdays, &on(0)), "Wednesday");
    assert!(!allowed(&weekend, &on(0)));
    assert!(!allowed(&weekdays, &on(3)), "Saturday");
    assert!(allowed(&weekend, &on(3)));
    assert!(allowed(&weekend, &on(4)), "Sunday");
    assert!(allowed(&weekdays, &on(5)), "Monday");
    // Sunday 23:30 in UTC-02:00 is Monday 01:30 UTC.
    let sunday_local = with(|c| {
        c.now = datetime!(2025-06-08 23:30 -2);
    });
    assert!(allowed(&weekdays, &sunday_local));
    assert!(!allowed(&weekend, &sunday_local));
}

#[test]
fn credential_kinds() {
    let p = allow_if(json!({"credential": ["session", "sts"]}));
    let using = |k: CredentialKind| with(|c| c.credential = k);
    assert!(allowed(&p, &using(CredentialKind::Session)));
    assert!(allowed(&p, &using(CredentialKind::Sts)));
    assert!(!allowed(&p, &using(CredentialKind::ApiKey)));
    let d = deny_if(json!({"credential": ["api_key"]}));
    assert!(!allowed(&d, &using(CredentialKind::ApiKey)));
    assert!(allowed(&d, &using(CredentialKind::Session)));
    assert_eq!(serde_json::to_value(CredentialKind::ApiKey).expect("serialize"), json!("api_key"));
}

#[test]
fn dialog_member() {
    let member = |m: Option<bool>| with(|c| c.dialog_member = m);
    let p = allow_if(json!({"dialog_member": true}));
    assert!(allowed(&p, &member(Some(true))));
    assert!(!allowed(&p, &member(Some(false))));
    assert!(!allowed(&p, &member(None)), "unknown: the allow does not apply");
    let p = allow_if(json!({"dialog_member": false}));
    assert!(allowed(&p, &member(Some(false))));
    assert!(!allowed(&p, &member(Some(true))));
    assert!(!allowed(&p, &member(None)));
    let d = deny_if(json!({"dialog_member": false}));
    assert!(allowed(&d, &member(Some(true))));
    assert!(!allowed(&d, &member(Some(false))));
    assert!(!allowed(&d, &member(None)), "unknown: the deny applies");
}

#[test]
fn breakglass() {
    let grant = |g: Option<bool>| with(|c| c.breakglass = g);
    let p = allow_if(json!({"breakglass": true}));
    assert!(allowed(&p, &grant(Some(true))));
    assert!(!allowed(&p, &grant(Some(false))));
    assert!(!allowed(&p, &grant(None)), "unknown: the allow does not apply");
    let d = deny_if(json!({"breakglass": false}));
    assert!(allowed(&d, &grant(Some(true))));
    assert!(!allowed(&d, &grant(Some(false))));
    assert!(!allowed(&d, &grant(None)), "unknown: the deny applies");
}

#[test]
fn every_condition_is_required() {
    let p = allow_if(json!({
        "mfa": true, "source_ip": ["10.0.0.0/8"], "time_of_day": {"after": "08:00", "before": "18:00"},
        "weekdays": ["wed"], "credential": ["session"], "dialog_member": true}));
    let good = with(|c| {
        c.mfa_at = Some(NOON);
        c.dialog_member = Some(true);
    });
    assert!(allowed(&p, &good));
    let breakers: [fn(&mut RequestContext); 6] = [
        |c| c.mfa_at = None,
        |c| c.ip = Some("11.0.0.1".parse().expect("ip")),
        |c| c.now -= Duration::hours(6),
        |c| c.now += Duration::days(1),
        |c| c.credential = CredentialKind::ApiKey,
        |c| c.dialog_member = Some(false),
    ];
    for (i, breaker) in breakers.iter().enumerate() {
        let mut c = good;
        breaker(&mut c);
        assert!(!allowed(&p, &c), "breaking condition {i} must deny");
    }
}

#[test]
fn session_policy_intersection() {
    let identity = vec![policy(
        "identity",
        json!({"statements": [{"effect": "allow", "actions": ["message:*", "dialog:read"], "resources": ["dialog/*"]}]}),
    )];
    let session = policy(
        "session",
        json!({"statements": [{"sid": "ro", "effect": "allow", "actions": ["message:read", "dialog:read"], "resources": ["*"]}]}),
    );
    let decide =
        |action: &str, session: Option<&Policy>| evaluate_with_session(&identity, session, action, "dialog/1", &ctx());
    // Both allow.
    let d = decide("message:read", Some(&session));
    assert!(d.allowed);
    let names: Vec<&str> = d.matched.iter().map(|m| m.policy.as_str()).collect();
    assert_eq!(names, ["identity", "session"]);
    // Identity allows, the session does not.
    assert!(!decide("message:send", Some(&session)).allowed);
    assert!(decide("message:send", None).allowed);
    // The session allows, identity does not.
    assert!(!decide("user:read", Some(&session)).allowed);
    // A deny in the session wins.
    let deny_session = policy(
        "session",
        json!({"statements": [
            {"effect": "allow", "actions": ["*"], "resources": ["*"]},
            {"effect": "deny", "actions": ["message:read"], "resources": ["dialog/1"]}]}),
    );
    let d = decide("message:read", Some(&deny_session));
    assert!(!d.allowed);
    assert_eq!(d.matched.len(), 3);
    assert!(decide("dialog:read", Some(&deny_session)).allowed);
    // A deny in identity wins over a session allow.
    let mut with_deny = identity.clone();
    with_deny.push(policy(
        "guard",
        json!({"statements": [{"effect": "deny", "actions": ["dialog:read"], "resources": ["*"]}]}),
    ));
    assert!(!evaluate_with_session(&with_deny, Some(&session), "dialog:read", "dialog/1", &ctx()).allowed);
    // `None` is plain evaluation.
    assert_eq!(
        evaluate_with_session(&identity, None, "message:read", "dialog/1", &ctx()),
        evaluate(&identity, "message:read", "dialog/1", &ctx())
    );
}

// ----------------------------------------------------------------------------------------
// Property tests.

const ACTION_PATTERNS: &[&str] =
    &["*", "*:*", "message:*", "*:read", "dialog:*", "user:rea?", "*:*_member", "breakglass:*"];
const RESOURCE_PATTERNS: &[&str] =
    &["*", "dialog/*", "dialog/1", "dialog/2", "user/1", "user/*", "*/1", "dialog/?", "dialog/1?"];
const RESOURCES: &[&str] = &["dialog/1", "dialog/2", "dialog/10", "user/1", "user/2", "key/1"];

fn conditions_choices() -> Vec<Conditions> {
    [
        json!({}),
        json!({}),
        json!({}),
        json!({"source_ip": ["10.0.0.0/8"]}),
        json!({"not_source_ip": ["10.0.0.0/8", "2001:db8::/32"]}),
        json!({"mfa": true}),
        json!({"mfa": false}),
        json!({"mfa_max_age_s": 300}),
        json!({"dialog_member": true}),
        json!({"dialog_member": false}),
        json!({"breakglass": true}),
        json!({"time_of_day": {"after": "09:00", "before": "17:00"}}),
        json!({"time_of_day": {"after": "22:00", "before": "06:00"}}),
        json!({"weekdays": ["mon", "tue", "wed"]}),
        json!({"credential": ["sts", "api_key"]}),
        json!({"source_ip": ["192.0.2.0/24"], "dialog_member": true, "mfa": true}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).expect("conditions"))
    .collect()
}

fn pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(ACTIONS).prop_map(str::to_owned),
        1 => proptest::sample::select(ACTION_PATTERNS).prop_map(str::to_owned),
    ]
}

fn statement() -> impl Strategy<Value = Statement> {
    (
        prop_oneof![2 => Just(Effect::Allow), 1 => Just(Effect::Deny)],
        proptest::collection::vec(pattern(), 1..4),
        proptest::collection::vec(proptest::sample::select(RESOURCE_PATTERNS).prop_map(str::to_owned), 1..3),
        proptest::sample::select(conditions_choices()),
    )
        .prop_map(|(effect, actions, resources, conditions)| Statement {
            sid: None,
            effect,
            actions,
            resources,
            conditions,
        })
}

/// Up to 4 policies of 1 to 6 statements, every statement with a unique sid.
fn policy_set() -> impl Strategy<Value = Vec<Vec<Statement>>> {
    proptest::collection::vec(proptest::collection::vec(statement(), 1..7), 0..5).prop_map(|mut set| {
        let mut n = 0;
        for statements in &mut set {
            for s in statements {
                s.sid = Some(format!("s{n}"));
                n += 1;
            }
        }
        set
    })
}

fn compile(set: &[Vec<Statement>]) -> Vec<Arc<Policy>> {
    set.iter()
        .enumerate()
        .map(|(i, statements)| {
            let doc = PolicyDocument { statements: statements.clone() };
            Arc::new(Policy::compile(format!("policy-{i}"), doc).expect("generated policies are valid"))
        })
        .collect()
}

fn context() -> impl Strategy<Value = RequestContext> {
    let ips = proptest::sample::select(vec![
        None,
        Some(ip("10.1.2.3")),
        Some(ip("192.0.2.44")),
        Some(ip("203.0.113.1")),
        Some(ip("2001:db8::7")),
        Some(ip("::ffff:10.0.0.1")),
    ]);
    let optional_bool = proptest::sample::select(vec![None, Some(true), Some(false)]);
    (
        0i64..(14 * 24 * 60),
        ips,
        proptest::sample::select(vec![None, Some(30i64), Some(600), Some(-2)]),
        proptest::sample::select(vec![CredentialKind::Session, CredentialKind::Sts, CredentialKind::ApiKey]),
        optional_bool.clone(),
        optional_bool,
    )
        .prop_map(|(minutes, ip, mfa_age, credential, dialog_member, breakglass)| {
            let now = NOON + Duration::minutes(minutes);
            RequestContext {
                now,
                ip,
                mfa_at: mfa_age.map(|s| now - Duration::seconds(s)),
                credential,
                dialog_member,
                breakglass,
            }
        })
}

fn request() -> impl Strategy<Value = (String, String, RequestContext)> {
    (
        proptest::sample::select(ACTIONS).prop_map(str::to_owned),
        proptest::sample::select(RESOURCES).prop_map(str::to_owned),
        context(),
    )
}

/// The applying statements, by sid (independent of where the statements sit).
fn matched_sids(d: &Decision) -> Vec<(String, Effect)> {
    let mut sids: Vec<(String, Effect)> =
        d.matched.iter().map(|m| (m.sid.clone().expect("generated statements have sids"), m.effect)).collect();
    sids.sort_by(|a, b| a.0.cmp(&b.0));
    sids
}

fn deny_statement(actions: &str, resources: &str) -> Statement {
    Statement {
        sid: Some("the-deny".into()),
        effect: Effect::Deny,
        actions: vec![actions.into()],
        resources: vec![resources.into()],
        conditions: Conditions::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No policy: deny, nothing matched, for any request (with or without a session).
    #[test]
    fn no_policy_means_deny(
        (action, resource, ctx) in request(),
        session in proptest::collection::vec(statement(), 1..4),
    ) {
        let d = evaluate(&[], &action, &resource, &ctx);
        prop_assert!(!d.allowed);
        prop_assert!(d.matched.is_empty());
        let session = Policy::compile("session", PolicyDocument { statements: session }).expect("valid");
        prop_assert!(!evaluate_with_session(&[], Some(&session), &action, &resource, &ctx).allowed);
    }

    /// Adding a deny that matches the request (unconditional) always makes it a deny,
    /// wherever it is added.
    #[test]
    fn deny_always_wins(
        set in policy_set(),
        (action, resource, ctx) in request(),
        which in 0usize..3,
        position in any::<proptest::sample::Index>(),
    ) {
        let deny = match which {
            0 => deny_statement("*", "*"),
            1 => deny_statement(&action, &resource),
            _ => deny_statement(&action, "*"),
        };
        let mut set = set;
        if set.is_empty() || which == 0 {
            let at = position.index(set.len() + 1);
            set.insert(at, vec![deny]);
        } else {
            let policy = position.index(set.len());
            let at = position.index(set[policy].len() + 1);
            set[policy].insert(at, deny);
        }
        let d = evaluate(&compile(&set), &action, &resource, &ctx);
        prop_assert!(!d.allowed);
        prop_assert!(d.matched.iter().any(|m| m.sid.as_deref() == Some("the-deny")));
    }

    /// The order of policies never changes the decision, `matched` included; shuffling
    /// statements within and across policies never changes `allowed` nor which statements
    /// applied.
    #[test]
    fn order_never_matters(
        set in policy_set(),
        (action, resource, ctx) in request(),
        policy_keys in proptest::collection::vec(any::<u32>(), 8),
        statement_keys in proptest::collection::vec(any::<u32>(), 32),
        groups in proptest::collection::vec(0usize..4, 32),
    ) {
        let policies = compile(&set);
        let reference = evaluate(&policies, &action, &resource, &ctx);

        // Same policies, another order: the very same decision.
        let mut reordered: Vec<(u32, Arc<Policy>)> =
            policies.iter().cloned().enumerate().map(|(i, p)| (policy_keys[i % 8], p)).collect();
        reordered.sort_by_key(|(k, _)| *k);
        let reordered: Vec<Arc<Policy>> = reordered.into_iter().map(|(_, p)| p).collect();
        prop_assert_eq!(&evaluate(&reordered, &action, &resource, &ctx), &reference);
        let mut reversed = policies.clone();
        reversed.reverse();
        prop_assert_eq!(&evaluate(&reversed, &action, &resource, &ctx), &reference);

        // Statements shuffled and redistributed over up to 4 policies.
        let mut all: Vec<(u32, usize, Statement)> = set
            .iter()
            .flatten()
            .cloned()
            .enumerate()
            .map(|(i, s)| (statement_keys[i % 32], groups[i % 32], s))
            .collect();
        all.sort_by_key(|(k, _, _)| *k);
        let mut shuffled: Vec<Vec<Statement>> = vec![Vec::new(); 4];
        for (_, group, s) in all {
            shuffled[group].push(s);
        }
        shuffled.retain(|g| !g.is_empty());
        let d = evaluate(&compile(&shuffled), &action, &resource, &ctx);
        prop_assert_eq!(d.allowed, reference.allowed);
        prop_assert_eq!(matched_sids(&d), matched_sids(&reference));
    }

    /// Adding an allow never turns an allow into a deny; adding a deny never turns a deny
    /// into an allow.
    #[test]
    fn monotonic(
        set in policy_set(),
        (action, resource, ctx) in request(),
        extra in statement(),
        into in any::<proptest::sample::Index>(),
    ) {
        let extra = Statement { sid: Some("extra".into()), ..extra };
        let before = evaluate(&compile(&set), &action, &resource, &ctx);
        let mut after_set = set;
        if after_set.is_empty() {
            after_set.push(vec![extra.clone()]);
        } else {
            let i = into.index(after_set.len());
            after_set[i].push(extra.clone());
        }
        let after = evaluate(&compile(&after_set), &action, &resource, &ctx);
        match extra.effect {
            Effect::Allow => prop_assert!(!before.allowed || after.allowed),
            Effect::Deny => prop_assert!(before.allowed || !after.allowed),
        }
        // Either way the statements that applied before still apply.
        let after_sids = matched_sids(&after);
        for m in matched_sids(&before) {
            prop_assert!(after_sids.contains(&m));
        }
    }

    /// With a session policy: allowed iff both sides allow on their own.
    #[test]
    fn session_is_an_intersection(
        set in policy_set(),
        session in proptest::collection::vec(statement(), 1..5),
        (action, resource, ctx) in request(),
    ) {
        let policies = compile(&set);
        let session = Arc::new(
            Policy::compile("session", PolicyDocument { statements: session }).expect("valid"),
        );
        let both = evaluate_with_session(&policies, Some(&session), &action, &resource, &ctx);
        let identity = evaluate(&policies, &action, &resource, &ctx);
        let alone = evaluate(std::slice::from_ref(&session), &action, &resource, &ctx);
        prop_assert_eq!(both.allowed, identity.allowed && alone.allowed);
        prop_assert_eq!(both.matched.len(), identity.matched.len() + alone.matched.len());
    }
}
