//! The conformance suite every [`Store`] engine must pass.
//!
//! Run by `tests/conformance.rs` against SQLite and PostgreSQL alike; a new engine is
//! done when this passes on it. Each check panics with a message naming the rule.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    ApiKeyRecord, AuditFilter, AuditRow, CheckpointRow, DataKeyRecord, MfaChallengeRecord, MfaFactorRecord,
    SessionRecord, Store, StoreError, UserRecord,
};

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
        assumed_role: Some("staff".into()),
        parent_session_id: Some(Uuid::now_v7()),
        mfa_at: Some(t),
    }
}

async fn insert_user(store: &dyn Store, u: &UserRecord) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    tx.insert_user(u).await?;
    tx.commit().await
}

async fn insert_session(store: &dyn Store, s: &SessionRecord) {
    let mut tx = store.begin().await.expect("begin");
    tx.insert_session(s).await.expect("insert session");
    tx.commit().await.expect("commit");
}

/// Runs every check against `store`, which must be freshly migrated and empty.
pub async fn run_all(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    users_round_trip(&*store).await;
    usernames_are_unique_ignoring_case(&*store).await;
    disabling_revokes_sessions(&*store).await;
    password_change_revokes_sessions(&*store).await;
    sessions_round_trip(&*store).await;
    rollback_discards_changes_and_audit(&*store).await;
    audit_chain_appends_in_order(&*store).await;
    concurrent_writers_commit_and_chain(store.clone()).await;
    credentials_round_trip(&*store).await;
    session_changes_are_fed(&*store).await;
    let stats = store.pool_stats();
    assert!(stats.max >= 1 && stats.size <= stats.max, "pool stats are coherent: {stats:?}");
}

async fn users_round_trip(store: &dyn Store) {
    let u = user("Alice");
    insert_user(store, &u).await.expect("insert");
    assert_eq!(store.user_by_id(u.id).await.expect("by id"), Some(u.clone()), "user reads back equal");
    assert_eq!(store.user_by_username_key("alice").await.expect("by key"), Some(u.clone()));
    assert_eq!(store.user_by_id(Uuid::now_v7()).await.expect("missing"), None);
    let listed = store.list_users().await.expect("list");
    assert!(listed.iter().any(|x| x.id == u.id), "list contains the user");
}

async fn usernames_are_unique_ignoring_case(store: &dyn Store) {
    insert_user(store, &user("Bob")).await.expect("insert");
    let dup = insert_user(store, &user("bob")).await;
    assert!(matches!(dup, Err(StoreError::Conflict("username"))), "case-insensitive duplicate refused: {dup:?}");
}

async fn disabling_revokes_sessions(store: &dyn Store) {
    let u = user("carol");
    insert_user(store, &u).await.expect("insert");
    insert_session(store, &session(u.id, "hash-carol")).await;
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.set_user_disabled(u.id, true, now()).await.expect("disable"));
    assert!(!tx.set_user_disabled(Uuid::now_v7(), true, now()).await.expect("missing"), "unknown user");
    tx.commit().await.expect("commit");
    let s = store.session_by_token_hash("hash-carol").await.expect("get").expect("exists");
    assert!(s.revoked_at.is_some(), "disable revokes sessions");
    assert!(store.user_by_id(u.id).await.expect("get").expect("exists").disabled);
}

async fn password_change_revokes_sessions(store: &dyn Store) {
    let u = user("dave");
    insert_user(store, &u).await.expect("insert");
    insert_session(store, &session(u.id, "hash-dave")).await;
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.set_password_hash(u.id, "$argon2id$new", None, now()).await.expect("set"));
    assert!(tx.unlock_user(u.id, now()).await.expect("unlock"));
    tx.commit().await.expect("commit");
    let back = store.user_by_id(u.id).await.expect("get").expect("exists");
    assert_eq!(back.password_hash, "$argon2id$new");
    let s = store.session_by_token_hash("hash-dave").await.expect("get").expect("exists");
    assert!(s.revoked_at.is_some(), "password change revokes sessions");
}

async fn sessions_round_trip(store: &dyn Store) {
    let u = user("erin");
    insert_user(store, &u).await.expect("insert");
    let s = session(u.id, "hash-erin");
    insert_session(store, &s).await;
    assert_eq!(store.session_by_token_hash("hash-erin").await.expect("get"), Some(s.clone()));
    assert_eq!(store.session_by_id(s.id).await.expect("by id"), Some(s.clone()));
    assert_eq!(store.live_sessions(u.id, now()).await.expect("live"), vec![s.clone()]);
    let later = s.last_seen_at + Duration::from_secs(5);
    store.touch_session(s.id, later, later + Duration::from_secs(900)).await.expect("touch");
    let back = store.session_by_token_hash("hash-erin").await.expect("get").expect("exists");
    assert_eq!(back.last_seen_at, later);
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.revoke_session(s.id, later).await.expect("revoke"));
    assert!(!tx.revoke_session(s.id, later).await.expect("again"), "second revoke is a no-op");
    tx.commit().await.expect("commit");
    assert!(store.session_by_token_hash("nope").await.expect("missing").is_none());
}

fn seal_test(action: &'static str) -> impl Fn(i64, &str) -> AuditRow + Send + Sync {
    move |seq, prev| AuditRow {
        seq,
        id: Uuid::now_v7().to_string(),
        time_us: seq * 1000,
        actor_user_id: Some("u-1".into()),
        actor_username: Some("Alice".into()),
        actor_session_id: None,
        via: "api".into(),
        action: action.into(),
        resource: Some(format!("user/{seq}")),
        outcome: if seq % 2 == 0 { "success".into() } else { "failure".into() },
        ip: Some("127.0.0.1".into()),
        user_agent: None,
        mfa: false,
        reason: None,
        details: "{}".into(),
        prev_hash: prev.to_string(),
        hash: format!("{seq:064x}"),
    }
}

async fn rollback_discards_changes_and_audit(store: &dyn Store) {
    let (seq_before, _) = store.audit_head().await.expect("head");
    let u = user("frank");
    let mut tx = store.begin().await.expect("begin");
    tx.insert_user(&u).await.expect("insert");
    tx.append_audit(&seal_test("user.create")).await.expect("append");
    tx.rollback().await.expect("rollback");
    assert!(store.user_by_id(u.id).await.expect("get").is_none(), "rolled-back change is gone");
    assert_eq!(store.audit_head().await.expect("head").0, seq_before, "rolled-back audit record is gone");
}

async fn audit_chain_appends_in_order(store: &dyn Store) {
    let (start, _) = store.audit_head().await.expect("head");
    for action in ["auth.login", "auth.logout", "user.create"] {
        let mut tx = store.begin().await.expect("begin");
        let row = tx.append_audit(&seal_test(action)).await.expect("append");
        tx.commit().await.expect("commit");
        assert_eq!(
            row.seq,
            start
                + 1
                + ["auth.login", "auth.logout", "user.create"].iter().position(|a| *a == action).expect("known") as i64
        );
    }
    let rows = store.audit_after(start, 100).await.expect("after");
    assert_eq!(rows.len(), 3);
    for pair in rows.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "no gaps");
        assert_eq!(pair[1].prev_hash, pair[0].hash, "each row links to the previous hash");
    }
    assert_eq!(store.audit_head().await.expect("head"), (start + 3, rows[2].hash.clone()));

    let f = |action: Option<&str>, outcome: Option<&str>, actor: Option<&str>| AuditFilter {
        action: action.map(Into::into),
        outcome: outcome.map(Into::into),
        actor: actor.map(Into::into),
        ..Default::default()
    };
    let auth = store.audit_search(&f(Some("auth.*"), None, None), 100).await.expect("search");
    assert_eq!(auth.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(), ["auth.login", "auth.logout"]);
    let exact = store.audit_search(&f(Some("user.create"), None, Some("alice")), 100).await.expect("search");
    assert_eq!(exact.len(), 1, "exact action and case-insensitive actor name");
    let page =
        store.audit_search(&AuditFilter { after_seq: Some(rows[0].seq), ..Default::default() }, 1).await.expect("page");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].seq, rows[1].seq, "cursor pagination");
    let window = store
        .audit_search(
            &AuditFilter { since_us: Some(rows[1].time_us), until_us: Some(rows[2].time_us), ..Default::default() },
            10,
        )
        .await
        .expect("window");
    assert_eq!(window.iter().map(|r| r.seq).collect::<Vec<_>>(), [rows[1].seq]);

    let cp = CheckpointRow {
        seq: rows[2].seq,
        head_hash: rows[2].hash.clone(),
        time_us: 1,
        key_id: "k1".into(),
        signature: "sig".into(),
    };
    store.insert_checkpoint(&cp).await.expect("checkpoint");
    store.insert_checkpoint(&cp).await.expect("duplicate is ignored");
    assert_eq!(store.checkpoints().await.expect("list"), vec![cp]);
}

/// Many writers at once (on SQLite: one group-committed batch): every committed change is
/// visible, the rolled-back ones are not, and the chain stays gapless.
async fn concurrent_writers_commit_and_chain(store: Arc<dyn Store>) {
    let (start, _) = store.audit_head().await.expect("head");
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let u = user(&format!("writer{i}"));
                let mut tx = store.begin().await.expect("begin");
                tx.insert_user(&u).await.expect("insert");
                tx.append_audit(&seal_test("user.create")).await.expect("append");
                if i % 5 == 0 {
                    tx.rollback().await.expect("rollback");
                    (u.id, false)
                } else if i % 7 == 0 {
                    drop(tx); // dropped without commit: rolled back
                    (u.id, false)
                } else {
                    tx.commit().await.expect("commit");
                    (u.id, true)
                }
            })
        })
        .collect();
    let mut committed = 0;
    for t in tasks {
        let (id, kept) = t.await.expect("join");
        // A dropped transaction is undone asynchronously; the next write orders after it.
        let tx = store.begin().await.expect("begin");
        tx.rollback().await.expect("rollback");
        assert_eq!(store.user_by_id(id).await.expect("get").is_some(), kept, "user {id} kept = {kept}");
        committed += i64::from(kept);
    }
    let rows = store.audit_after(start, 1000).await.expect("after");
    assert_eq!(rows.len() as i64, committed, "one audit record per committed writer");
    assert!(rows.windows(2).all(|w| w[1].seq == w[0].seq + 1 && w[1].prev_hash == w[0].hash), "gapless chain");
}

async fn credentials_round_trip(store: &dyn Store) {
    let t = now();
    let u = user("factor.owner");
    insert_user(store, &u).await.expect("insert user");
    let key = DataKeyRecord {
        id: Uuid::now_v7(),
        scope: format!("user/{}", u.id),
        key_version: 1,
        wrapped: vec![0, 1, 2, 255],
        created_at: t,
        destroyed_at: None,
    };
    let mut tx = store.begin().await.expect("begin");
    tx.insert_data_key(&key).await.expect("insert data key");
    tx.commit().await.expect("commit");
    assert_eq!(store.data_key_by_scope(&key.scope).await.expect("read").as_ref(), Some(&key), "data key by scope");
    assert_eq!(store.data_key_by_id(key.id).await.expect("read"), Some(key.clone()), "data key by id");
    let mut tx = store.begin().await.expect("begin");
    let doomed = DataKeyRecord { id: Uuid::now_v7(), scope: "file/doomed".into(), ..key.clone() };
    tx.insert_data_key(&doomed).await.expect("insert");
    assert!(tx.destroy_data_key(doomed.id, t).await.expect("destroy"));
    assert!(!tx.destroy_data_key(doomed.id, t).await.expect("destroy twice"), "destroyed once");
    tx.commit().await.expect("commit");
    let gone = store.data_key_by_id(doomed.id).await.expect("read").expect("tombstone");
    assert!(gone.wrapped.is_empty() && gone.destroyed_at == Some(t), "no copy of the wrapped key remains");
    let mut tx = store.begin().await.expect("begin");
    let dup = tx.insert_data_key(&DataKeyRecord { id: Uuid::now_v7(), ..key.clone() }).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "one data key per scope: {dup:?}");
    drop(tx);

    // Factors: a new pending factor replaces the old pending one; activation and steps.
    let factor = |id| MfaFactorRecord {
        id,
        user_id: u.id,
        kind: "totp".into(),
        state: "pending".into(),
        secret: vec![9; 40],
        data_key_id: key.id,
        last_used_step: 0,
        created_at: t,
        confirmed_at: None,
    };
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    for id in [first, second] {
        let mut tx = store.begin().await.expect("begin");
        tx.insert_mfa_factor(&factor(id)).await.expect("insert factor");
        tx.commit().await.expect("commit");
    }
    let factors = store.mfa_factors(u.id).await.expect("factors");
    assert_eq!(factors, vec![factor(second)], "the newer pending factor replaced the older");
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.activate_mfa_factor(second, t).await.expect("activate"));
    assert!(!tx.activate_mfa_factor(second, t).await.expect("activate twice"), "only a pending factor activates");
    assert!(tx.use_totp_step(second, 100).await.expect("step"));
    assert!(!tx.use_totp_step(second, 100).await.expect("same step"), "a step is accepted once");
    assert!(!tx.use_totp_step(second, 99).await.expect("older step"), "an older step is refused");
    assert!(tx.use_totp_step(second, 101).await.expect("newer step"));
    tx.commit().await.expect("commit");
    let active = &store.mfa_factors(u.id).await.expect("factors")[0];
    assert_eq!((active.state.as_str(), active.last_used_step, active.confirmed_at), ("active", 101, Some(t)));

    // Recovery codes are spent once.
    let mut tx = store.begin().await.expect("begin");
    tx.replace_recovery_codes(u.id, &["a".into(), "b".into()], t).await.expect("codes");
    tx.commit().await.expect("commit");
    assert_eq!(store.recovery_codes_left(u.id).await.expect("left"), 2);
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.use_recovery_code(u.id, "a", t).await.expect("use"));
    assert!(!tx.use_recovery_code(u.id, "a", t).await.expect("reuse"), "a recovery code works once");
    assert!(!tx.use_recovery_code(u.id, "zz", t).await.expect("unknown"));
    tx.commit().await.expect("commit");
    assert_eq!(store.recovery_codes_left(u.id).await.expect("left"), 1);

    // Challenges count attempts and are consumed once.
    let c = MfaChallengeRecord {
        id: Uuid::now_v7(),
        token_hash: "challenge-hash".into(),
        user_id: u.id,
        created_at: t,
        expires_at: t + Duration::from_secs(300),
        attempts: 0,
        used_at: None,
    };
    let mut tx = store.begin().await.expect("begin");
    tx.insert_mfa_challenge(&c).await.expect("challenge");
    assert_eq!(tx.count_challenge_attempt(c.id).await.expect("attempt"), 1);
    assert!(tx.consume_mfa_challenge(c.id, t).await.expect("consume"));
    assert!(!tx.consume_mfa_challenge(c.id, t).await.expect("consume twice"));
    tx.commit().await.expect("commit");
    let read = store.mfa_challenge("challenge-hash").await.expect("read").expect("present");
    assert_eq!((read.attempts, read.used_at), (1, Some(t)));

    // Sessions remember MFA; API keys round-trip and revoke once, for their owner only.
    let s = SessionRecord { mfa_at: None, ..session(u.id, "mfa-session") };
    insert_session(store, &s).await;
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.set_session_mfa(s.id, t).await.expect("mfa"));
    tx.commit().await.expect("commit");
    assert_eq!(store.session_by_id(s.id).await.expect("read").expect("present").mfa_at, Some(t));
    let k = ApiKeyRecord {
        id: Uuid::now_v7(),
        user_id: u.id,
        name: "ci".into(),
        key_hash: "api-key-hash".into(),
        role: "service".into(),
        created_at: t,
        expires_at: t + Duration::from_secs(86_400),
        revoked_at: None,
        last_used_at: None,
    };
    let mut tx = store.begin().await.expect("begin");
    tx.insert_api_key(&k).await.expect("api key");
    tx.commit().await.expect("commit");
    assert_eq!(store.api_key_by_hash("api-key-hash").await.expect("read"), Some(k.clone()));
    assert_eq!(store.api_keys(u.id).await.expect("list"), vec![k.clone()]);
    let mut tx = store.begin().await.expect("begin");
    assert!(!tx.revoke_api_key(k.id, Uuid::now_v7(), t).await.expect("other user"), "owner only");
    assert!(tx.revoke_api_key(k.id, u.id, t).await.expect("revoke"));
    assert!(!tx.revoke_api_key(k.id, u.id, t).await.expect("revoke twice"));
    tx.delete_mfa_factors(u.id).await.expect("reset mfa");
    tx.commit().await.expect("commit");
    assert!(store.mfa_factors(u.id).await.expect("factors").is_empty(), "MFA reset removes factors");
    assert_eq!(store.recovery_codes_left(u.id).await.expect("left"), 0, "and recovery codes");
}

async fn session_changes_are_fed(store: &dyn Store) {
    let t = now();
    let u = user("feed.subject");
    insert_user(store, &u).await.expect("insert user");
    let s = session(u.id, "feed-session");
    insert_session(store, &s).await;
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.revoke_session(s.id, t).await.expect("revoke"));
    assert!(!tx.revoke_session(s.id, t).await.expect("revoke twice"));
    tx.set_user_roles(u.id, &["staff".into()], t).await.expect("roles");
    tx.commit().await.expect("commit");
    let mut tx = store.begin().await.expect("begin");
    tx.set_user_roles(u.id, &["patient".into()], t).await.expect("roles");
    drop(tx); // rolled back: no entry
    let changes: Vec<_> = store
        .session_changes_since(t)
        .await
        .expect("feed")
        .into_iter()
        .filter(|c| c.user_id == u.id)
        .map(|c| c.session_id)
        .collect();
    assert_eq!(changes, vec![Some(s.id), None], "one entry per committed change, in order");
    let later = store.session_changes_since(t + Duration::from_secs(1)).await.expect("feed");
    assert!(later.iter().all(|c| c.user_id != u.id), "the feed is read by time");
}
