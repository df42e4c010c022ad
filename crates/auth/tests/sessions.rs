//! Automatic logoff with time as an input: no sleeping.

use std::time::Duration;

use time::OffsetDateTime;
use ward_auth::{Accounts, AuthError, PasswordPolicy, SessionLimits};
use ward_crypto::PasswordHasher;
use ward_storage::{ConnectOptions, Target};

async fn accounts(dir: &tempfile::TempDir) -> Accounts {
    let store = ward_storage::open(&ConnectOptions {
        target: Target::Sqlite(dir.path().join("ward.db")),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
    })
    .await
    .expect("open");
    let limits = SessionLimits { idle: Duration::from_secs(900), absolute: Duration::from_secs(43_200) };
    Accounts::new(store, PasswordHasher::new(1024, 1, 1).expect("params"), PasswordPolicy::new(12), limits)
}

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time")
}

#[tokio::test]
async fn idle_limit_ends_a_session_and_activity_extends_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = accounts(&dir).await;
    a.create_user("idle.user", "long enough password", &["staff".into()], t0()).await.expect("user");
    let ok = a.login("idle.user", "long enough password", None, None, t0()).await.expect("login");
    let token = ok.token.expose().to_string();

    // Used at 14 minutes: still alive, and the idle deadline moves.
    let at = t0() + Duration::from_secs(14 * 60);
    let who = a.authenticate(&token, at).await.expect("alive");
    assert_eq!(who.session.idle_expires_at, at + Duration::from_secs(900));
    // 14 more minutes: alive thanks to the activity.
    a.authenticate(&token, at + Duration::from_secs(14 * 60)).await.expect("extended");
    // 15 idle minutes after that: gone, and it stays gone.
    let late = at + Duration::from_secs(14 * 60 + 900);
    assert!(matches!(a.authenticate(&token, late).await, Err(AuthError::SessionExpired)));
}

#[tokio::test]
async fn absolute_limit_ends_even_an_active_session() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = accounts(&dir).await;
    a.create_user("busy.user", "long enough password", &["clinician".into()], t0()).await.expect("user");
    let ok = a.login("busy.user", "long enough password", None, None, t0()).await.expect("login");
    let token = ok.token.expose().to_string();
    let mut now = t0();
    // Active every 10 minutes for 12 hours.
    while now < t0() + Duration::from_secs(43_200 - 600) {
        now += Duration::from_secs(600);
        let who = a.authenticate(&token, now).await.expect("alive while active");
        assert!(who.session.idle_expires_at <= who.session.expires_at, "idle never outlives absolute");
    }
    let end = t0() + Duration::from_secs(43_200);
    assert!(matches!(a.authenticate(&token, end).await, Err(AuthError::SessionExpired)));
}

#[tokio::test]
async fn unknown_user_wrong_password_and_disabled_answer_alike() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = accounts(&dir).await;
    a.create_user("same.answer", "long enough password", &["patient".into()], t0()).await.expect("user");
    let wrong = a.login("same.answer", "not the password!", None, None, t0()).await;
    let unknown = a.login("nobody.here", "long enough password", None, None, t0()).await;
    a.disable("same.answer", t0()).await.expect("disable");
    let disabled = a.login("same.answer", "long enough password", None, None, t0()).await;
    for r in [wrong, unknown, disabled] {
        assert!(matches!(r, Err(AuthError::InvalidCredentials)), "{r:?}");
    }
    let garbage = a.authenticate("not-a-token", t0()).await;
    assert!(matches!(garbage, Err(AuthError::Unauthenticated)));
}
