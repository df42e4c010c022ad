//! Automatic logoff with time as an input (no sleeping), and what sign-in records.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use ward_audit::{AuditLog, AuditSettings, Context, Via};
use ward_auth::{Accounts, AuthError, AuthSettings, PasswordPolicy, SessionLimits, UserRef};
use ward_crypto::PasswordHasher;
use ward_storage::{AuditFilter, ConnectOptions, Store, Target};

struct Env {
    accounts: Accounts,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().expect("tmp");
    let store = ward_storage::open(&ConnectOptions {
        target: Target::Sqlite(dir.path().join("ward.db")),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
    })
    .await
    .expect("open");
    let audit = AuditLog::open(
        store.clone(),
        AuditSettings {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            key_file: dir.path().join("audit/signing.key"),
            checkpoint_file: dir.path().join("audit/checkpoints.jsonl"),
        },
    )
    .await
    .expect("audit");
    let limits = SessionLimits { idle: Duration::from_secs(900), absolute: Duration::from_secs(43_200) };
    let hasher = PasswordHasher::new(1024, 1, 1).expect("params");
    let settings = AuthSettings {
        policy: PasswordPolicy::new(12),
        limits,
        lockout_threshold: 5,
        hard_lock_threshold: 20,
        attempts_per_ip_per_minute: 1000,
        max_concurrent_hashes: 2,
    };
    Env { accounts: Accounts::new(store.clone(), audit, hasher, settings, keys(&store)), store, _dir: dir }
}

fn keys(store: &Arc<dyn Store>) -> ward_keys::DataKeys {
    ward_keys::DataKeys::new(store.clone(), Arc::new(ward_keys::LocalKeyStore::ephemeral()))
}

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time")
}

fn at(t: OffsetDateTime) -> Context {
    Context::anonymous(Via::Api, Some("192.0.2.1".into()), Some("test-agent".into()), t)
}

#[tokio::test]
async fn idle_limit_ends_a_session_and_activity_extends_it() {
    let e = env().await;
    let a = &e.accounts;
    a.create_user(&Context::cli(None, t0()), "idle.user", "long enough password", &["staff".into()])
        .await
        .expect("user");
    let ok =
        a.login(&at(t0()), "idle.user", "long enough password").await.expect("login").session().expect("no MFA step");
    let token = ok.token.expose().to_string();

    // Used at 14 minutes: still alive, and the idle deadline moves.
    let t = t0() + Duration::from_secs(14 * 60);
    let who = a.authenticate(&at(t), &token).await.expect("alive");
    assert_eq!(who.session.idle_expires_at, t + Duration::from_secs(900));
    // 14 more minutes: alive thanks to the activity.
    a.authenticate(&at(t + Duration::from_secs(14 * 60)), &token).await.expect("extended");
    // 15 idle minutes after that: gone, recorded once, and it stays gone.
    let late = t + Duration::from_secs(14 * 60 + 900);
    assert!(matches!(a.authenticate(&at(late), &token).await, Err(AuthError::SessionExpired)));
    assert!(matches!(a.authenticate(&at(late), &token).await, Err(AuthError::SessionExpired)));
    let expired = e
        .store
        .audit_search(&AuditFilter { action: Some("session.expired".into()), ..Default::default() }, 10)
        .await
        .expect("search");
    assert_eq!(expired.len(), 1, "expiry recorded exactly once");
    assert_eq!(expired[0].reason.as_deref(), Some("idle_timeout"));
}

#[tokio::test]
async fn absolute_limit_ends_even_an_active_session() {
    let e = env().await;
    let a = &e.accounts;
    a.create_user(&Context::cli(None, t0()), "busy.user", "long enough password", &["clinician".into()])
        .await
        .expect("user");
    let ok =
        a.login(&at(t0()), "busy.user", "long enough password").await.expect("login").session().expect("no MFA step");
    let token = ok.token.expose().to_string();
    let mut now = t0();
    // Active every 10 minutes for 12 hours.
    while now < t0() + Duration::from_secs(43_200 - 600) {
        now += Duration::from_secs(600);
        let who = a.authenticate(&at(now), &token).await.expect("alive while active");
        assert!(who.session.idle_expires_at <= who.session.expires_at, "idle never outlives absolute");
    }
    let end = t0() + Duration::from_secs(43_200);
    assert!(matches!(a.authenticate(&at(end), &token).await, Err(AuthError::SessionExpired)));
}

#[tokio::test]
async fn failures_answer_alike_but_are_recorded_with_their_reason_and_without_the_password() {
    let e = env().await;
    let a = &e.accounts;
    a.create_user(&Context::cli(None, t0()), "same.answer", "long enough password", &["patient".into()])
        .await
        .expect("user");
    let wrong = a.login(&at(t0()), "same.answer", "Secret-Marker-91").await;
    let unknown = a.login(&at(t0()), "nobody.here", "Secret-Marker-92").await;
    a.disable(&Context::cli(None, t0()), UserRef::Name("same.answer")).await.expect("disable");
    let disabled = a.login(&at(t0()), "same.answer", "long enough password").await;
    for r in [wrong, unknown, disabled] {
        assert!(matches!(r, Err(AuthError::InvalidCredentials)), "{r:?}");
    }
    let logins = e
        .store
        .audit_search(&AuditFilter { action: Some("auth.login".into()), ..Default::default() }, 10)
        .await
        .expect("search");
    let reasons: Vec<_> = logins.iter().map(|r| r.reason.clone().unwrap_or_default()).collect();
    assert_eq!(reasons, ["bad_password", "unknown_user", "disabled"]);
    assert!(logins.iter().all(|r| r.ip.as_deref() == Some("192.0.2.1") && r.outcome == "failure"));
    let everything = e.store.audit_after(0, 1000).await.expect("all");
    let text = format!("{everything:?}");
    assert!(!text.contains("Secret-Marker") && !text.contains("long enough password"), "no password in audit");
    let garbage = a.authenticate(&at(t0()), "not-a-token").await;
    assert!(matches!(garbage, Err(AuthError::Unauthenticated)));
}

#[tokio::test]
async fn failures_lock_exponentially_then_hard_until_unlocked_and_success_resets() {
    let e = env().await;
    let a = &e.accounts;
    let cli = Context::cli(None, t0());
    a.create_user(&cli, "lock.me", "long enough password", &["staff".into()]).await.expect("user");
    let mut now = t0();
    for _ in 0..5 {
        let r = a.login(&at(now), "lock.me", "wrong password!!").await;
        assert!(matches!(r, Err(AuthError::InvalidCredentials)), "{r:?}");
    }
    // The fifth failure locked the account for 1 s: even the right password is refused.
    let r = a.login(&at(now), "lock.me", "long enough password").await;
    assert!(matches!(r, Err(AuthError::Locked { retry_after_s: Some(1) })), "{r:?}");
    // Each further failure doubles the delay.
    now += Duration::from_secs(2);
    assert!(matches!(a.login(&at(now), "lock.me", "wrong password!!").await, Err(AuthError::InvalidCredentials)));
    assert!(matches!(a.login(&at(now), "lock.me", "x").await, Err(AuthError::Locked { retry_after_s: Some(2) })));
    // A success after the delay resets the count.
    now += Duration::from_secs(3);
    a.login(&at(now), "lock.me", "long enough password").await.expect("success after the delay");
    for i in 0..20 {
        now += Duration::from_secs(16 * 60); // past any temporary lock
        let r = a.login(&at(now), "lock.me", "wrong password!!").await;
        assert!(matches!(r, Err(AuthError::InvalidCredentials)), "failure {i}: {r:?}");
    }
    now += Duration::from_secs(24 * 3600);
    let r = a.login(&at(now), "lock.me", "long enough password").await;
    assert!(matches!(r, Err(AuthError::Locked { retry_after_s: None })), "hard lock: {r:?}");
    a.unlock(&Context::cli(None, now), UserRef::Name("lock.me")).await.expect("unlock");
    a.login(&at(now), "lock.me", "long enough password").await.expect("unlocked");
    let locked = e
        .store
        .audit_search(&AuditFilter { action: Some("auth.login".into()), ..Default::default() }, 1000)
        .await
        .expect("search")
        .into_iter()
        .filter(|r| r.reason.as_deref() == Some("locked"))
        .count();
    assert_eq!(locked, 3, "every refused attempt while locked is recorded");
}

#[tokio::test]
async fn api_keys_expire_on_time_and_need_a_service_account() {
    let e = env().await;
    let a = &e.accounts;
    let admin = Context::cli(None, t0());
    a.create_user(&admin, "feed.bot", "long enough password", &["service".into()]).await.expect("user");
    let made = a.create_api_key(&admin, UserRef::Name("feed.bot"), "feed", "service", 1).await.expect("key");
    assert!(made.key.starts_with(ward_auth::API_KEY_PREFIX));
    assert!(!format!("{made:?}").contains(made.key.as_str()), "Debug hides the key");
    let who = a.authenticate(&at(t0() + Duration::from_secs(3600)), &made.key).await.expect("valid within a day");
    assert_eq!(who.kind, ward_auth::CredentialKind::ApiKey);
    let late = t0() + Duration::from_secs(86_400);
    assert!(matches!(a.authenticate(&at(late), &made.key).await, Err(AuthError::SessionExpired)), "expired");
    let beyond = a.create_api_key(&admin, UserRef::Name("feed.bot"), "feed", "service", 366).await;
    assert!(matches!(beyond, Err(AuthError::Invalid(_))), "longer than api_key_max_days");
    let unknown = format!("{}{}", ward_auth::API_KEY_PREFIX, "x".repeat(43));
    assert!(matches!(a.authenticate(&at(t0()), &unknown).await, Err(AuthError::Unauthenticated)));
}
