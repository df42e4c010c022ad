//! Evaluation cost of a realistic 50-statement policy set over 3 policies (literal and
//! wildcard actions and resources, conditions incl. CIDRs and time windows, one deny).
//!
//! `cargo bench -p ward-access --bench evaluate` runs the criterion benchmarks, then times
//! 200,000 single evaluations with `Instant` and prints p50 / p99 / p99.9 / max.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::Criterion;
use serde_json::{Value, json};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use ward_access::{CredentialKind, Policy, PolicyDocument, RequestContext, evaluate};

const DIALOG: &str = "dialog/0190f3c2-7a1b-7c3d-8e4f-123456789abc";
const OTHER_DIALOG: &str = "dialog/0190f3c2-7a1b-7c3d-8e4f-cba987654321";
const SAMPLES: usize = 200_000;
const WARM_UP: usize = 20_000;

fn policy(name: &str, statements: Vec<Value>) -> Arc<Policy> {
    let doc = PolicyDocument::parse(json!({ "statements": statements })).expect("valid bench policy");
    Arc::new(Policy::compile(name, doc).expect("compiles"))
}

/// 22 + 18 + 10 statements.
fn policy_set() -> Vec<Arc<Policy>> {
    let office = json!(["10.0.0.0/8", "192.168.0.0/16", "203.0.113.0/24", "2001:db8::/32"]);
    let clinician = policy(
        "managed/clinician",
        vec![
            json!({"sid": "own-account", "effect": "allow", "actions": ["account:read", "account:logout", "account:revoke_session", "account:password", "account:mfa"], "resources": ["user/self"]}),
            json!({"effect": "allow", "actions": ["dialog:list", "dialog:create"], "resources": ["*"]}),
            json!({"sid": "read-dialogs", "effect": "allow", "actions": ["dialog:read"], "resources": ["dialog/*"], "conditions": {"dialog_member": true}}),
            json!({"effect": "allow", "actions": ["dialog:add_member", "dialog:remove_member"], "resources": ["dialog/*"], "conditions": {"dialog_member": true, "mfa": true}}),
            json!({"effect": "allow", "actions": ["dialog:typing", "receipt:write"], "resources": ["dialog/*"], "conditions": {"dialog_member": true}}),
            json!({"sid": "messages", "effect": "allow", "actions": ["message:read", "message:send"], "resources": ["dialog/*"], "conditions": {"dialog_member": true}}),
            json!({"effect": "allow", "actions": ["message:update", "message:delete"], "resources": ["dialog/*"], "conditions": {"dialog_member": true, "mfa_max_age_s": 43200}}),
            json!({"effect": "allow", "actions": ["file:upload", "file:read"], "resources": ["dialog/*"], "conditions": {"dialog_member": true}}),
            json!({"effect": "allow", "actions": ["file:delete"], "resources": ["dialog/*"], "conditions": {"dialog_member": true, "mfa": true}}),
            json!({"effect": "allow", "actions": ["realtime:connect"], "resources": ["*"]}),
            json!({"sid": "breakglass-invoke", "effect": "allow", "actions": ["breakglass:invoke"], "resources": ["dialog/*"], "conditions": {"mfa_max_age_s": 900}}),
            json!({"sid": "breakglass-read", "effect": "allow", "actions": ["dialog:read", "message:read", "file:read"], "resources": ["dialog/*"], "conditions": {"breakglass": true, "mfa": true}}),
            json!({"effect": "allow", "actions": ["breakglass:list"], "resources": ["user/self"]}),
            json!({"effect": "allow", "actions": ["sts:assume_role"], "resources": ["role/clinician-*"], "conditions": {"mfa": true}}),
            json!({"effect": "allow", "actions": ["user:read"], "resources": ["user/*"], "conditions": {"credential": ["session", "sts"]}}),
            json!({"effect": "allow", "actions": ["key:read"], "resources": ["key/messaging"]}),
            json!({"effect": "allow", "actions": ["settings:read"], "resources": ["settings/notifications"]}),
            json!({"effect": "allow", "actions": ["policy:read", "policy:simulate"], "resources": ["policy/managed/clinician"]}),
            json!({"effect": "allow", "actions": ["message:read"], "resources": ["dialog/0190f3c2-7a1b-7c3d-8e4f-00000000000?"], "conditions": {"time_of_day": {"after": "07:00", "before": "19:00"}}}),
            json!({"effect": "allow", "actions": ["dialog:read"], "resources": ["dialog/0190f3c2-7a1b-7c3d-8e4f-000000000001"]}),
            json!({"effect": "allow", "actions": ["*:list"], "resources": ["dialog/*"], "conditions": {"dialog_member": true}}),
            json!({"effect": "allow", "actions": ["apikey:list"], "resources": ["user/self"], "conditions": {"credential": ["session"]}}),
        ],
    );
    let admin = policy(
        "custom/night-admin",
        vec![
            json!({"sid": "users", "effect": "allow", "actions": ["user:*"], "resources": ["user/*"], "conditions": {"mfa": true, "source_ip": office}}),
            json!({"effect": "allow", "actions": ["user:reset_mfa", "user:unlock"], "resources": ["user/*"], "conditions": {"mfa_max_age_s": 300, "source_ip": office}}),
            json!({"effect": "allow", "actions": ["apikey:*"], "resources": ["apikey/*", "user/*"], "conditions": {"mfa": true, "source_ip": office}}),
            json!({"effect": "allow", "actions": ["key:*"], "resources": ["key/*"], "conditions": {"mfa_max_age_s": 300, "source_ip": ["10.20.0.0/16"], "weekdays": ["mon", "tue", "wed", "thu", "fri"]}}),
            json!({"effect": "allow", "actions": ["settings:*"], "resources": ["settings/*"], "conditions": {"mfa": true, "time_of_day": {"after": "08:00", "before": "18:00"}}}),
            json!({"effect": "allow", "actions": ["policy:list", "policy:read", "policy:simulate"], "resources": ["policy/*"]}),
            json!({"effect": "allow", "actions": ["policy:write", "policy:delete", "policy:attach"], "resources": ["policy/custom/*"], "conditions": {"mfa_max_age_s": 600, "source_ip": office}}),
            json!({"sid": "audit", "effect": "allow", "actions": ["audit:read"], "resources": ["audit/*"], "conditions": {"mfa": true, "weekdays": ["mon", "tue", "wed", "thu", "fri"]}}),
            json!({"effect": "allow", "actions": ["audit:export"], "resources": ["audit/*"], "conditions": {"mfa_max_age_s": 300, "source_ip": ["10.20.0.0/16", "2001:db8:20::/48"], "time_of_day": {"after": "22:00", "before": "06:00"}}}),
            json!({"effect": "allow", "actions": ["access:review"], "resources": ["user/*"], "conditions": {"mfa": true}}),
            json!({"effect": "allow", "actions": ["breakglass:list", "breakglass:revoke"], "resources": ["breakglass/*"], "conditions": {"mfa": true, "source_ip": office}}),
            json!({"effect": "allow", "actions": ["*:read"], "resources": ["settings/*", "key/*"], "conditions": {"credential": ["session"]}}),
            json!({"effect": "allow", "actions": ["user:list"], "resources": ["*"], "conditions": {"not_source_ip": ["198.51.100.0/24"]}}),
            json!({"effect": "allow", "actions": ["dialog:list"], "resources": ["*"], "conditions": {"credential": ["api_key"], "source_ip": ["10.30.0.0/16"]}}),
            json!({"effect": "allow", "actions": ["message:send"], "resources": ["dialog/system-*"], "conditions": {"credential": ["api_key"], "source_ip": ["10.30.0.0/16"]}}),
            json!({"effect": "allow", "actions": ["sts:assume_role"], "resources": ["role/*"], "conditions": {"mfa_max_age_s": 900, "source_ip": office}}),
            json!({"effect": "allow", "actions": ["user:read", "user:list"], "resources": ["user/?*"], "conditions": {"time_of_day": {"after": "06:00", "before": "23:00"}}}),
            json!({"effect": "allow", "actions": ["key:rotate"], "resources": ["key/messaging", "key/audit"], "conditions": {"mfa_max_age_s": 120, "source_ip": ["10.20.0.0/16"]}}),
        ],
    );
    let guardrails = policy(
        "custom/guardrails",
        vec![
            json!({"sid": "no-deletes-off-network", "effect": "deny", "actions": ["message:delete", "file:delete", "policy:delete"], "resources": ["*"], "conditions": {"not_source_ip": office}}),
            json!({"effect": "allow", "actions": ["account:read"], "resources": ["user/self"]}),
            json!({"effect": "allow", "actions": ["realtime:connect"], "resources": ["*"], "conditions": {"credential": ["session", "sts"]}}),
            json!({"effect": "allow", "actions": ["receipt:write"], "resources": ["dialog/*"], "conditions": {"dialog_member": true}}),
            json!({"effect": "allow", "actions": ["message:read"], "resources": ["dialog/*"], "conditions": {"dialog_member": true, "source_ip": office}}),
            json!({"effect": "allow", "actions": ["dialog:read"], "resources": ["dialog/*"], "conditions": {"dialog_member": true, "time_of_day": {"after": "05:00", "before": "23:30"}}}),
            json!({"effect": "allow", "actions": ["file:read"], "resources": ["dialog/*/files/*"], "conditions": {"dialog_member": true}}),
            json!({"effect": "allow", "actions": ["policy:simulate"], "resources": ["policy/*"]}),
            json!({"effect": "allow", "actions": ["settings:read"], "resources": ["settings/*"], "conditions": {"weekdays": ["sat", "sun"]}}),
            json!({"effect": "allow", "actions": ["m?ssage:rea?"], "resources": ["dialog/archive-*"], "conditions": {"mfa": true}}),
        ],
    );
    vec![clinician, admin, guardrails]
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("bench address")
}

fn context(now: OffsetDateTime) -> RequestContext {
    RequestContext {
        now,
        ip: Some(ip("10.1.2.3")),
        mfa_at: Some(now - Duration::minutes(3)),
        credential: CredentialKind::Session,
        dialog_member: Some(true),
        breakglass: Some(false),
    }
}

struct Request {
    action: &'static str,
    resource: &'static str,
    ctx: RequestContext,
    allowed: bool,
}

fn requests() -> Vec<Request> {
    let now = datetime!(2025-06-04 14:30 UTC);
    let ctx = context(now);
    let outside = RequestContext { ip: Some(ip("198.51.100.7")), ..ctx };
    let stranger = RequestContext { dialog_member: Some(false), ..ctx };
    let r = |action, resource, ctx, allowed| Request { action, resource, ctx, allowed };
    vec![
        r("message:read", DIALOG, ctx, true),
        r("message:delete", DIALOG, outside, false),
        r("message:send", DIALOG, ctx, true),
        r("message:read", OTHER_DIALOG, stranger, false),
        r("user:update", "user/0190f3c2-7a1b-7c3d-8e4f-111111111111", ctx, true),
        r("key:rotate", "key/messaging", outside, false),
        r("realtime:connect", "realtime/socket", ctx, true),
        r("audit:export", "audit/2025-06", ctx, false),
    ]
}

/// Criterion runs in benchmark mode only under `cargo bench` (`--bench`), not `--test`.
fn bench_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn report(label: &str, mut samples: Vec<u64>) {
    samples.sort_unstable();
    println!(
        "{label}: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns ({} evaluations)",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        percentile(&samples, 0.999),
        samples.last().copied().unwrap_or(0),
        samples.len(),
    );
}

/// Times single evaluations (requests taken in turn) and prints the percentiles.
fn percentiles(policies: &[Arc<Policy>], requests: &[Request], samples: usize) {
    let evaluate_one =
        |r: &Request| evaluate(black_box(policies), black_box(r.action), black_box(r.resource), black_box(&r.ctx));
    for i in 0..WARM_UP.min(samples) {
        black_box(evaluate_one(&requests[i % requests.len()]));
    }
    let mut all = Vec::with_capacity(samples);
    let mut allowed = Vec::with_capacity(samples);
    let mut denied = Vec::with_capacity(samples);
    for i in 0..samples {
        let r = &requests[i % requests.len()];
        let start = Instant::now();
        let decision = black_box(evaluate_one(r));
        drop(decision);
        let ns = start.elapsed().as_nanos() as u64;
        all.push(ns);
        if r.allowed { allowed.push(ns) } else { denied.push(ns) }
    }
    let statements: usize = policies.iter().map(|p| p.statements_len()).sum();
    report(&format!("evaluate {statements} statements (mixed)"), all);
    report(&format!("evaluate {statements} statements (allowed)"), allowed);
    report(&format!("evaluate {statements} statements (denied)"), denied);
}

fn main() {
    let policies = policy_set();
    let statements: usize = policies.iter().map(|p| p.statements_len()).sum();
    assert_eq!(statements, 50, "the bench is about a 50-statement set");
    let requests = requests();
    for r in &requests {
        let d = evaluate(&policies, r.action, r.resource, &r.ctx);
        assert_eq!(d.allowed, r.allowed, "{} on {}: {d:?}", r.action, r.resource);
    }

    let mut criterion = Criterion::default().configure_from_args();
    let allowed = &requests[0];
    let denied = &requests[1];
    criterion.bench_function("evaluate/50 statements/allowed", |b| {
        b.iter(|| {
            evaluate(
                black_box(&policies),
                black_box(allowed.action),
                black_box(allowed.resource),
                black_box(&allowed.ctx),
            )
        })
    });
    criterion.bench_function("evaluate/50 statements/denied", |b| {
        b.iter(|| {
            evaluate(black_box(&policies), black_box(denied.action), black_box(denied.resource), black_box(&denied.ctx))
        })
    });
    criterion.final_summary();

    if bench_mode() {
        percentiles(&policies, &requests, SAMPLES);
    } else if !std::env::args().any(|a| a == "--list") {
        // `cargo test --benches`: exercise the timing code quickly.
        percentiles(&policies, &requests, 2_000);
    }
}
