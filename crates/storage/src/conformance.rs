//! The conformance suite every [`Store`] engine must pass.
//!
//! Run by `tests/conformance.rs` against SQLite and PostgreSQL alike; a new engine is
//! done when this passes on it. Each check panics with a message naming the rule.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{SessionRecord, Store, StoreError, UserRecord};

fn now() -> OffsetDateTime {
    // Whole milliseconds: the storage resolution.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000).expect("valid nanosecond")
}

fn user(name: &str) -> UserRecord {
    let t = now();
    UserRecord {
        id: Uuid::now_v7(),
        username: name.to_string(),
        username_key: name.to_lowercase(),
        password_hash: "$argon2id$placeholder".into(),
        roles: vec!["clinician".into()],
        disabled: false,
        failed_logins: 0,
        locked_until: None,
        created_at: t,
        updated_at: t,
    }
}

fn session(user_id: Uuid, hash: &str) -> SessionRecord {
    let t = now();
    SessionRecord {
        id: Uuid::now_v7(),
        token_hash: hash.into(),
        user_id,
        created_at: t,
        last_seen_at: t,
        idle_expires_at: t + Duration::from_secs(900),
        expires_at: t + Duration::from_secs(43_200),
        revoked_at: None,
        ip: Some("127.0.0.1".into()),
        user_agent: Some("conformance".into()),
    }
}

/// Runs every check against `store`, which must be freshly migrated and empty.
pub async fn run_all(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    users_round_trip(&*store).await;
    usernames_are_unique_ignoring_case(&*store).await;
    disabling_revokes_sessions(&*store).await;
    password_change_revokes_sessions(&*store).await;
    sessions_round_trip(&*store).await;
    let stats = store.pool_stats();
    assert!(stats.max >= 1 && stats.size <= stats.max, "pool stats are coherent: {stats:?}");
}

async fn users_round_trip(store: &dyn Store) {
    let u = user("Alice");
    store.insert_user(&u).await.expect("insert");
    assert_eq!(store.user_by_id(u.id).await.expect("by id"), Some(u.clone()), "user reads back equal");
    assert_eq!(store.user_by_username_key("alice").await.expect("by key"), Some(u.clone()));
    assert_eq!(store.user_by_id(Uuid::now_v7()).await.expect("missing"), None);
    let listed = store.list_users().await.expect("list");
    assert!(listed.iter().any(|x| x.id == u.id), "list contains the user");
}

async fn usernames_are_unique_ignoring_case(store: &dyn Store) {
    store.insert_user(&user("Bob")).await.expect("insert");
    let dup = store.insert_user(&user("bob")).await;
    assert!(matches!(dup, Err(StoreError::Conflict("username"))), "case-insensitive duplicate refused: {dup:?}");
}

async fn disabling_revokes_sessions(store: &dyn Store) {
    let u = user("carol");
    store.insert_user(&u).await.expect("insert");
    store.insert_session(&session(u.id, "hash-carol")).await.expect("session");
    assert!(store.set_user_disabled(u.id, true, now()).await.expect("disable"));
    let s = store.session_by_token_hash("hash-carol").await.expect("get").expect("exists");
    assert!(s.revoked_at.is_some(), "disable revokes sessions");
    assert!(store.user_by_id(u.id).await.expect("get").expect("exists").disabled);
    assert!(!store.set_user_disabled(Uuid::now_v7(), true, now()).await.expect("missing"), "unknown user");
}

async fn password_change_revokes_sessions(store: &dyn Store) {
    let u = user("dave");
    store.insert_user(&u).await.expect("insert");
    store.insert_session(&session(u.id, "hash-dave")).await.expect("session");
    assert!(store.set_password_hash(u.id, "$argon2id$new", now()).await.expect("set"));
    let back = store.user_by_id(u.id).await.expect("get").expect("exists");
    assert_eq!(back.password_hash, "$argon2id$new");
    let s = store.session_by_token_hash("hash-dave").await.expect("get").expect("exists");
    assert!(s.revoked_at.is_some(), "password change revokes sessions");
    assert!(store.unlock_user(u.id, now()).await.expect("unlock"));
}

async fn sessions_round_trip(store: &dyn Store) {
    let u = user("erin");
    store.insert_user(&u).await.expect("insert");
    let s = session(u.id, "hash-erin");
    store.insert_session(&s).await.expect("insert");
    assert_eq!(store.session_by_token_hash("hash-erin").await.expect("get"), Some(s.clone()));
    let later = s.last_seen_at + Duration::from_secs(5);
    store.touch_session(s.id, later, later + Duration::from_secs(900)).await.expect("touch");
    let back = store.session_by_token_hash("hash-erin").await.expect("get").expect("exists");
    assert_eq!(back.last_seen_at, later);
    assert!(store.revoke_session(s.id, later).await.expect("revoke"));
    assert!(!store.revoke_session(s.id, later).await.expect("again"), "second revoke is a no-op");
    assert!(store.session_by_token_hash("nope").await.expect("missing").is_none());
}
