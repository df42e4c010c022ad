//! The conformance suite every [`Store`] engine must pass.
//!
//! Run by `tests/conformance.rs` against SQLite and PostgreSQL alike; a new engine is
//! done when this passes on it. Each check panics with a message naming the rule.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    ApiKeyRecord, AuditFilter, AuditRow, BreakGlassGrant, CheckpointRow, DataKeyRecord, DialogRecord, GrantReason,
    HistoryQuery, MemberRecord, MessageRecord, MfaChallengeRecord, MfaFactorRecord, PolicyAttachment, PolicyRecord,
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
        session_policy: None,
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
    private_dialogs_are_unique_per_pair(&*store).await;
    membership_adds_and_removes(&*store).await;
    seq_is_gapless(store.clone()).await;
    client_msg_ids_are_idempotency_keys(&*store).await;
    history_pages_both_ways(&*store).await;
    edits_and_deletes(&*store).await;
    mark_read_only_raises(&*store).await;
    dialogs_of_user_newest_activity_first(&*store).await;
    keyring_document_is_compare_and_swap(&*store).await;
    session_policy_round_trips(&*store).await;
    policies_are_put_replaced_and_deleted(&*store).await;
    policy_attachments_are_replaced_exactly(&*store).await;
    breakglass_grants_live_expire_and_revoke(&*store).await;
    last_sign_ins_ignore_temporary_credentials(&*store).await;
    memberships_list_every_pair(&*store).await;
    files_are_stored_and_tombstoned(&*store).await;
    leases_exclude_other_holders_until_released_or_lapsed(&*store).await;
    a_held_lease_runs_the_job_on_one_holder_only(store.clone()).await;
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
    let used = || async { store.api_key_by_hash("api-key-hash").await.expect("read").expect("key").last_used_at };
    store.touch_api_key(k.id, t + Duration::from_secs(60)).await.expect("touch");
    assert_eq!(used().await, Some(t + Duration::from_secs(60)));
    store.touch_api_key(k.id, t + Duration::from_secs(30)).await.expect("touch earlier");
    assert_eq!(used().await, Some(t + Duration::from_secs(60)), "never backwards");
    let k = ApiKeyRecord { last_used_at: Some(t + Duration::from_secs(60)), ..k };
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

/// Inserts users named `names` and a dialog data key; returns the users and the key's id.
async fn messaging_fixture(store: &dyn Store, names: &[&str]) -> (Vec<UserRecord>, Uuid) {
    let users: Vec<_> = names.iter().map(|n| user(n)).collect();
    for u in &users {
        insert_user(store, u).await.expect("insert user");
    }
    let key = DataKeyRecord {
        id: Uuid::now_v7(),
        scope: format!("dialog/{}", Uuid::now_v7()),
        key_version: 1,
        wrapped: vec![7; 40],
        created_at: now(),
        destroyed_at: None,
    };
    let mut tx = store.begin().await.expect("begin");
    tx.insert_data_key(&key).await.expect("insert data key");
    tx.commit().await.expect("commit");
    (users, key.id)
}

fn dialog(kind: &str, pair_key: Option<String>, data_key_id: Uuid, created_by: Uuid) -> DialogRecord {
    DialogRecord {
        id: Uuid::now_v7(),
        kind: kind.into(),
        name_sealed: (kind == "group").then(|| vec![1, 2, 3, 0, 255]),
        data_key_id,
        pair_key,
        created_by,
        created_at: now(),
        last_seq: 0,
    }
}

fn member(dialog_id: Uuid, user_id: Uuid, role: &str) -> MemberRecord {
    MemberRecord { dialog_id, user_id, role: role.into(), joined_at: now(), last_read_seq: 0 }
}

fn message(d: &DialogRecord, seq: i64, sender_id: Uuid, client_msg_id: Option<&str>) -> MessageRecord {
    MessageRecord {
        id: Uuid::now_v7(),
        dialog_id: d.id,
        seq,
        sender_id,
        client_msg_id: client_msg_id.map(Into::into),
        body_sealed: Some(format!("sealed body {seq}").into_bytes()),
        data_key_id: d.data_key_id,
        attachments: vec![Uuid::now_v7(), Uuid::now_v7()],
        created_at: now(),
        edited_at: None,
        deleted_at: None,
    }
}

async fn insert_dialog(store: &dyn Store, d: &DialogRecord, members: &[Uuid]) {
    let mut tx = store.begin().await.expect("begin");
    tx.insert_dialog(d).await.expect("insert dialog");
    for (i, m) in members.iter().enumerate() {
        let role = if i == 0 { "owner" } else { "member" };
        assert!(tx.insert_member(&member(d.id, *m, role)).await.expect("insert member"), "a new member");
    }
    tx.commit().await.expect("commit");
}

/// Takes the next seq and stores a message with it, in one transaction.
async fn send(store: &dyn Store, d: &DialogRecord, sender_id: Uuid, client_msg_id: Option<&str>) -> MessageRecord {
    let mut tx = store.begin().await.expect("begin");
    let seq = tx.next_seq(d.id).await.expect("next seq").expect("the dialog exists");
    let m = message(d, seq, sender_id, client_msg_id);
    tx.insert_message(&m).await.expect("insert message");
    tx.commit().await.expect("commit");
    m
}

async fn private_dialogs_are_unique_per_pair(store: &dyn Store) {
    let (users, key) = messaging_fixture(store, &["pair.a", "pair.b"]).await;
    let (a, b) = (users[0].id, users[1].id);
    let pair = format!("{}:{}", a.min(b), a.max(b));
    let d = dialog("private", Some(pair.clone()), key, a);
    insert_dialog(store, &d, &[a, b]).await;
    assert_eq!(store.dialog_by_id(d.id).await.expect("by id"), Some(d.clone()), "dialog reads back equal");
    assert_eq!(store.private_dialog(&pair).await.expect("by pair"), Some(d.clone()));
    assert_eq!(store.private_dialog("nobody:nobody").await.expect("missing"), None);
    assert_eq!(store.dialog_by_id(Uuid::now_v7()).await.expect("missing"), None);

    let mut tx = store.begin().await.expect("begin");
    let dup = tx.insert_dialog(&dialog("private", Some(pair.clone()), key, b)).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "one private dialog per pair: {dup:?}");
    // The conflict leaves the transaction usable (on PostgreSQL too), and groups have no
    // pair key, so any number of them coexist.
    let (g1, g2) = (dialog("group", None, key, a), dialog("group", None, key, a));
    tx.insert_dialog(&g1).await.expect("a group after the conflict");
    tx.insert_dialog(&g2).await.expect("groups never collide");
    tx.commit().await.expect("commit");
    assert_eq!(store.dialog_by_id(g2.id).await.expect("by id"), Some(g2), "group reads back equal");
    assert_eq!(store.private_dialog(&pair).await.expect("by pair").map(|x| x.id), Some(d.id), "the first one stays");
}

async fn membership_adds_and_removes(store: &dyn Store) {
    let (users, key) = messaging_fixture(store, &["members.a", "members.b", "members.c"]).await;
    let ids: Vec<_> = users.iter().map(|u| u.id).collect();
    let d = dialog("group", None, key, ids[0]);
    let mut tx = store.begin().await.expect("begin");
    tx.insert_dialog(&d).await.expect("insert dialog");
    let t = now();
    let owner = MemberRecord { joined_at: t, ..member(d.id, ids[0], "owner") };
    let second = MemberRecord { joined_at: t + Duration::from_secs(1), ..member(d.id, ids[1], "member") };
    let third = MemberRecord { joined_at: t + Duration::from_secs(2), ..member(d.id, ids[2], "admin") };
    for m in [&third, &owner, &second] {
        assert!(tx.insert_member(m).await.expect("insert member"), "a new member is added");
    }
    let again = MemberRecord { role: "admin".into(), ..second.clone() };
    assert!(!tx.insert_member(&again).await.expect("duplicate"), "an existing member is not added twice");
    tx.commit().await.expect("commit");
    assert_eq!(
        store.members(d.id).await.expect("members"),
        vec![owner.clone(), second.clone(), third.clone()],
        "members by joined_at; the duplicate changed nothing"
    );
    assert_eq!(store.member(d.id, ids[1]).await.expect("member"), Some(second.clone()));

    let mut tx = store.begin().await.expect("begin");
    assert!(tx.remove_member(d.id, ids[1]).await.expect("remove"));
    assert!(!tx.remove_member(d.id, ids[1]).await.expect("remove twice"), "removed once");
    assert!(!tx.remove_member(Uuid::now_v7(), ids[0]).await.expect("unknown dialog"));
    tx.commit().await.expect("commit");
    assert_eq!(store.member(d.id, ids[1]).await.expect("member"), None, "removed member is gone");
    assert_eq!(store.members(d.id).await.expect("members"), vec![owner, third]);
}

/// `next_seq` counts 1, 2, … per dialog: a rollback gives its number back, and concurrent
/// senders get consecutive numbers.
async fn seq_is_gapless(store: Arc<dyn Store>) {
    let (users, key) = messaging_fixture(&*store, &["seq.a", "seq.b"]).await;
    let (a, b) = (users[0].id, users[1].id);
    let d = dialog("group", None, key, a);
    let other = dialog("group", None, key, a);
    insert_dialog(&*store, &d, &[a, b]).await;
    insert_dialog(&*store, &other, &[a]).await;

    for expected in 1..=3 {
        let mut tx = store.begin().await.expect("begin");
        assert_eq!(tx.next_seq(d.id).await.expect("next"), Some(expected), "consecutive numbers");
        tx.commit().await.expect("commit");
    }
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(tx.next_seq(other.id).await.expect("next"), Some(1), "each dialog counts on its own");
    assert_eq!(tx.next_seq(Uuid::now_v7()).await.expect("unknown"), None, "unknown dialog");
    tx.commit().await.expect("commit");

    let mut tx = store.begin().await.expect("begin");
    assert_eq!(tx.next_seq(d.id).await.expect("next"), Some(4));
    tx.rollback().await.expect("rollback");
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(tx.next_seq(d.id).await.expect("next"), Some(4), "a rolled-back number is taken again");
    tx.commit().await.expect("commit");
    assert_eq!(store.dialog_by_id(d.id).await.expect("read").expect("exists").last_seq, 4);

    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            let d = d.clone();
            tokio::spawn(async move {
                let sender = if i % 2 == 0 { a } else { b };
                send(&*store, &d, sender, Some(&format!("concurrent-{i}"))).await.seq
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("join"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (5..=16).collect::<Vec<_>>(), "concurrent senders get consecutive numbers");
    let all = store.messages(d.id, HistoryQuery { after: None, before: None, limit: 100 }).await.expect("history");
    assert_eq!(all.iter().map(|m| m.seq).collect::<Vec<_>>(), (5..=16).collect::<Vec<_>>());
    assert_eq!(store.dialog_by_id(d.id).await.expect("read").expect("exists").last_seq, 16);
}

async fn client_msg_ids_are_idempotency_keys(store: &dyn Store) {
    let (users, key) = messaging_fixture(store, &["idem.a", "idem.b"]).await;
    let (a, b) = (users[0].id, users[1].id);
    let d = dialog("group", None, key, a);
    insert_dialog(store, &d, &[a, b]).await;
    let first = send(store, &d, a, Some("client-1")).await;
    assert_eq!(store.message_by_id(d.id, first.id).await.expect("by id"), Some(first.clone()), "reads back equal");
    assert_eq!(store.message_by_client_id(d.id, a, "client-1").await.expect("by client id"), Some(first.clone()));
    assert_eq!(store.message_by_client_id(d.id, b, "client-1").await.expect("other sender"), None);
    assert_eq!(store.message_by_id(Uuid::now_v7(), first.id).await.expect("other dialog"), None, "scoped by dialog");

    let mut tx = store.begin().await.expect("begin");
    let seq = tx.next_seq(d.id).await.expect("next").expect("exists");
    let dup = tx.insert_message(&message(&d, seq, a, Some("client-1"))).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "same sender, same client id: {dup:?}");
    tx.rollback().await.expect("rollback");

    let mut tx = store.begin().await.expect("begin");
    let seq = tx.next_seq(d.id).await.expect("next").expect("exists");
    assert_eq!(seq, 2, "the rejected duplicate's number was given back");
    let dup_seq = tx.insert_message(&message(&d, first.seq, b, None)).await;
    assert!(matches!(dup_seq, Err(StoreError::Conflict(_))), "a seq is used once: {dup_seq:?}");
    // The conflicts leave the transaction usable (on PostgreSQL too).
    let other = message(&d, seq, b, Some("client-1"));
    tx.insert_message(&other).await.expect("another sender may use the same client id");
    tx.commit().await.expect("commit");
    assert_eq!(store.message_by_client_id(d.id, b, "client-1").await.expect("read"), Some(other));

    let no_ids = [send(store, &d, a, None).await, send(store, &d, a, None).await];
    for m in &no_ids {
        assert_eq!(
            store.message_by_id(d.id, m.id).await.expect("read").as_ref(),
            Some(m),
            "no client id never collides"
        );
    }
}

async fn history_pages_both_ways(store: &dyn Store) {
    let (users, key) = messaging_fixture(store, &["history.a"]).await;
    let a = users[0].id;
    let d = dialog("group", None, key, a);
    let noise = dialog("group", None, key, a);
    insert_dialog(store, &d, &[a]).await;
    insert_dialog(store, &noise, &[a]).await;
    let mut sent = Vec::new();
    for i in 0..7 {
        sent.push(send(store, &d, a, Some(&format!("h{i}"))).await);
        send(store, &noise, a, None).await;
    }
    let id = d.id;
    let page = |after: Option<i64>, before: Option<i64>, limit: i64| async move {
        store
            .messages(id, HistoryQuery { after, before, limit })
            .await
            .expect("history")
            .into_iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(page(None, None, 3).await, [1, 2, 3], "from the start, oldest first");
    assert_eq!(page(Some(3), None, 3).await, [4, 5, 6], "forward from a cursor");
    assert_eq!(page(Some(6), None, 3).await, [7], "the last forward page is short");
    assert!(page(Some(7), None, 3).await.is_empty(), "nothing after the newest");
    assert_eq!(page(None, Some(8), 3).await, [5, 6, 7], "backward: the newest below the cursor, ascending");
    assert_eq!(page(None, Some(5), 3).await, [2, 3, 4], "backward from a cursor");
    assert_eq!(page(None, Some(2), 3).await, [1], "the last backward page is short");
    assert!(page(None, Some(1), 3).await.is_empty(), "nothing before the first");
    assert_eq!(page(Some(2), Some(6), 10).await, [3, 4, 5], "between two cursors");
    assert_eq!(page(Some(2), Some(6), 2).await, [3, 4], "between two cursors: the oldest first");
    assert!(page(None, None, 0).await.is_empty(), "limit 0");
    assert!(page(None, Some(8), -5).await.is_empty(), "a negative limit is 0");
    let full = store.messages(d.id, HistoryQuery { after: None, before: None, limit: 100 }).await.expect("history");
    assert_eq!(full, sent, "whole records, only this dialog's");
}

async fn edits_and_deletes(store: &dyn Store) {
    let (users, key) = messaging_fixture(store, &["edit.a", "edit.b"]).await;
    let (a, b) = (users[0].id, users[1].id);
    let d = dialog("group", None, key, a);
    insert_dialog(store, &d, &[a, b]).await;
    let m = send(store, &d, a, Some("to-edit")).await;
    let keep = send(store, &d, b, None).await;
    let t = now();

    let mut tx = store.begin().await.expect("begin");
    assert!(tx.edit_message(d.id, m.id, b"second", t).await.expect("edit"));
    assert!(!tx.edit_message(d.id, Uuid::now_v7(), b"x", t).await.expect("unknown"), "unknown message");
    assert!(!tx.edit_message(Uuid::now_v7(), m.id, b"x", t).await.expect("other dialog"), "scoped by dialog");
    tx.commit().await.expect("commit");
    let edited = store.message_by_id(d.id, m.id).await.expect("read").expect("exists");
    assert_eq!(edited, MessageRecord { body_sealed: Some(b"second".to_vec()), edited_at: Some(t), ..m.clone() });

    let gone_at = t + Duration::from_secs(1);
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.delete_message(d.id, m.id, gone_at).await.expect("delete"));
    assert!(!tx.delete_message(d.id, m.id, gone_at).await.expect("delete twice"), "deleted once");
    assert!(!tx.delete_message(d.id, Uuid::now_v7(), gone_at).await.expect("unknown"), "unknown message");
    assert!(!tx.edit_message(d.id, m.id, b"third", gone_at).await.expect("edit deleted"), "a tombstone is not edited");
    tx.commit().await.expect("commit");
    let tomb = store.message_by_id(d.id, m.id).await.expect("read").expect("the tombstone stays");
    assert_eq!(tomb, MessageRecord { body_sealed: None, deleted_at: Some(gone_at), ..edited }, "body erased");
    assert_eq!(store.message_by_id(d.id, keep.id).await.expect("read"), Some(keep), "other messages untouched");
    let history = store.messages(d.id, HistoryQuery { after: None, before: None, limit: 10 }).await.expect("history");
    assert_eq!(history.iter().map(|x| x.body_sealed.is_some()).collect::<Vec<_>>(), [false, true]);
}

async fn mark_read_only_raises(store: &dyn Store) {
    let (users, key) = messaging_fixture(store, &["read.a", "read.b"]).await;
    let (a, b) = (users[0].id, users[1].id);
    let d = dialog("group", None, key, a);
    insert_dialog(store, &d, &[a]).await;
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.mark_read(d.id, a, 3).await.expect("mark"), "raised");
    assert!(!tx.mark_read(d.id, a, 3).await.expect("same"), "unchanged");
    assert!(!tx.mark_read(d.id, a, 2).await.expect("lower"), "never lowered");
    assert!(tx.mark_read(d.id, a, 5).await.expect("higher"), "raised again");
    assert!(!tx.mark_read(d.id, b, 9).await.expect("not a member"), "not a member");
    tx.commit().await.expect("commit");
    assert_eq!(store.member(d.id, a).await.expect("read").expect("member").last_read_seq, 5);
    assert_eq!(store.member(d.id, b).await.expect("read"), None, "mark_read adds no member");
}

async fn dialogs_of_user_newest_activity_first(store: &dyn Store) {
    let (users, key) = messaging_fixture(store, &["list.a", "list.b"]).await;
    let (a, b) = (users[0].id, users[1].id);
    // Times in the past, so that messages sent now are the newest activity.
    let t = now() - Duration::from_secs(600);
    let at = |secs: u64| t + Duration::from_secs(secs);
    let quiet_old = DialogRecord { created_at: at(10), ..dialog("group", None, key, a) };
    let quiet_new = DialogRecord { created_at: at(30), ..dialog("group", None, key, a) };
    let busy = DialogRecord { created_at: at(0), ..dialog("group", None, key, b) };
    let chatty_long_ago = DialogRecord { created_at: at(0), ..dialog("group", None, key, a) };
    let not_mine = dialog("group", None, key, b);
    insert_dialog(store, &quiet_old, &[a]).await;
    insert_dialog(store, &quiet_new, &[a, b]).await;
    insert_dialog(store, &busy, &[b, a]).await;
    insert_dialog(store, &chatty_long_ago, &[a]).await;
    insert_dialog(store, &not_mine, &[b]).await;
    send(store, &busy, b, None).await;
    send(store, &busy, a, None).await;
    for _ in 0..3 {
        // More messages than `busy`, all sent at t + 20 s: older than `quiet_new`'s creation.
        let mut tx = store.begin().await.expect("begin");
        let seq = tx.next_seq(chatty_long_ago.id).await.expect("seq").expect("dialog");
        let m = MessageRecord { created_at: at(20), ..message(&chatty_long_ago, seq, a, None) };
        tx.insert_message(&m).await.expect("insert");
        tx.commit().await.expect("commit");
    }

    let mine = store.dialogs_of_user(a).await.expect("dialogs");
    let ids: Vec<_> = mine.iter().map(|(d, _)| d.id).collect();
    assert_eq!(
        ids,
        [busy.id, quiet_new.id, chatty_long_ago.id, quiet_old.id],
        "by the newest message's time, else the creation time; not by message count"
    );
    assert_eq!(mine[0].0, DialogRecord { last_seq: 2, ..busy.clone() }, "the dialog as stored");
    assert!(mine.iter().all(|(d, m)| m.dialog_id == d.id && m.user_id == a), "each with the user's membership");
    assert_eq!((mine[0].1.role.as_str(), mine[3].1.role.as_str()), ("member", "owner"));
    assert!(store.dialogs_of_user(Uuid::now_v7()).await.expect("none").is_empty());
}

/// Edits keep each replaced body; deleting the message erases them. Nothing in the
/// interface reads the edit history, so each engine's tests pass `edits` (the stored
/// previous bodies of a message, oldest first, read with plain SQL).
#[cfg(test)]
pub(crate) async fn edit_history_is_kept_then_erased<F, Fut>(store: &dyn Store, edits: F)
where
    F: Fn(Uuid) -> Fut,
    Fut: std::future::Future<Output = Vec<Vec<u8>>>,
{
    let (users, key) = messaging_fixture(store, &["history.editor"]).await;
    let a = users[0].id;
    let d = dialog("group", None, key, a);
    insert_dialog(store, &d, &[a]).await;
    let m = send(store, &d, a, None).await;
    let other = send(store, &d, a, None).await;
    let t = now();
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.edit_message(d.id, m.id, b"v2", t).await.expect("edit"));
    assert!(tx.edit_message(d.id, m.id, b"v3", t + Duration::from_secs(1)).await.expect("edit"));
    assert!(tx.edit_message(d.id, other.id, b"w2", t).await.expect("edit"));
    tx.commit().await.expect("commit");
    let original = m.body_sealed.clone().expect("sent with a body");
    assert_eq!(edits(m.id).await, vec![original, b"v2".to_vec()], "each edit keeps the body it replaced");

    let mut tx = store.begin().await.expect("begin");
    assert!(tx.delete_message(d.id, m.id, t).await.expect("delete"));
    tx.commit().await.expect("commit");
    assert!(edits(m.id).await.is_empty(), "delete erases the edit history");
    assert_eq!(edits(other.id).await.len(), 1, "another message's history stays");
}

async fn keyring_document_is_compare_and_swap(store: &dyn Store) {
    let now = OffsetDateTime::now_utc();
    assert_eq!(store.keyring_document().await.expect("read"), None, "none at first");
    let put = |expected: Option<i64>, body: &'static [u8]| async move {
        let mut tx = store.begin().await.expect("begin");
        let done = tx.put_keyring_document(expected, body, now).await.expect("put");
        tx.commit().await.expect("commit");
        done
    };
    assert!(put(None, b"first").await);
    assert!(!put(None, b"second first").await, "only one first document");
    assert_eq!(store.keyring_document().await.expect("read"), Some((1, b"first".to_vec())));
    assert!(put(Some(1), b"rotated").await);
    assert!(!put(Some(1), b"lost race").await, "a stale revision is refused");
    assert_eq!(store.keyring_document().await.expect("read"), Some((2, b"rotated".to_vec())));
}

async fn session_policy_round_trips(store: &dyn Store) {
    let u = user("sts.policy");
    insert_user(store, &u).await.expect("insert user");
    let document = r#"{"version":"2025-01-01","statements":[{"effect":"deny","actions":["message.read"]}]}"#;
    let s = SessionRecord { session_policy: Some(document.into()), ..session(u.id, "hash-sts-policy") };
    insert_session(store, &s).await;
    assert_eq!(store.session_by_id(s.id).await.expect("by id"), Some(s.clone()), "the session policy is kept");
    assert_eq!(store.session_by_token_hash("hash-sts-policy").await.expect("by hash"), Some(s.clone()));
    assert_eq!(store.live_sessions(u.id, now()).await.expect("live"), vec![s]);
}

fn policy(name: &str, document: &str, at: OffsetDateTime) -> PolicyRecord {
    PolicyRecord { name: name.into(), document: document.into(), created_at: at, updated_at: at, updated_by: None }
}

fn attachment(policy_name: &str, principal_kind: &str, principal: &str) -> PolicyAttachment {
    PolicyAttachment {
        policy_name: policy_name.into(),
        principal_kind: principal_kind.into(),
        principal: principal.into(),
    }
}

async fn put_policies(store: &dyn Store, policies: &[&PolicyRecord]) {
    let mut tx = store.begin().await.expect("begin");
    for p in policies {
        tx.put_policy(p).await.expect("put policy");
    }
    tx.commit().await.expect("commit");
}

async fn policies_are_put_replaced_and_deleted(store: &dyn Store) {
    assert!(store.policies().await.expect("list").is_empty(), "none at first");
    let t = now() - Duration::from_secs(60);
    let readers = policy("readers", r#"{"statements":[]}"#, t);
    let auditors = policy("Auditors", r#"{"statements":[{"effect":"allow"}]}"#, t);
    let ops = policy("ops-admin", "{}", t);
    put_policies(store, &[&readers, &auditors, &ops]).await;
    assert_eq!(
        store.policies().await.expect("list"),
        vec![auditors.clone(), ops.clone(), readers.clone()],
        "policies read back equal, by name in byte order"
    );

    // Replacing keeps the creation time, whatever the new record says.
    let editor = Uuid::now_v7();
    let later = t + Duration::from_secs(30);
    let replaced = PolicyRecord {
        document: r#"{"statements":[{"effect":"deny"}]}"#.into(),
        created_at: later,
        updated_at: later,
        updated_by: Some(editor),
        ..readers.clone()
    };
    put_policies(store, &[&replaced]).await;
    let listed = store.policies().await.expect("list");
    assert_eq!(listed.len(), 3, "replaced, not added");
    assert_eq!(
        listed[2],
        PolicyRecord { created_at: t, ..replaced.clone() },
        "document, updated_at and updated_by replaced; created_at kept"
    );
    // A CLI change clears `updated_by`.
    let by_cli = PolicyRecord { updated_by: None, updated_at: later + Duration::from_secs(1), ..replaced };
    put_policies(store, &[&by_cli]).await;
    assert_eq!(store.policies().await.expect("list")[2], PolicyRecord { created_at: t, ..by_cli });

    let mut tx = store.begin().await.expect("begin");
    assert!(tx.delete_policy("ops-admin").await.expect("delete"));
    assert!(!tx.delete_policy("ops-admin").await.expect("delete twice"), "deleted once");
    assert!(!tx.delete_policy("no-such-policy").await.expect("unknown"), "unknown policy");
    tx.commit().await.expect("commit");
    let names: Vec<_> = store.policies().await.expect("list").into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["Auditors", "readers"], "the deleted policy is gone");

    let mut tx = store.begin().await.expect("begin");
    assert!(tx.delete_policy("Auditors").await.expect("delete"));
    tx.rollback().await.expect("rollback");
    assert_eq!(store.policies().await.expect("list").len(), 2, "a rolled-back delete changes nothing");

    let mut tx = store.begin().await.expect("begin");
    for name in ["Auditors", "readers"] {
        assert!(tx.delete_policy(name).await.expect("delete"));
    }
    tx.commit().await.expect("commit");
    assert!(store.policies().await.expect("list").is_empty(), "cleaned up");
}

async fn policy_attachments_are_replaced_exactly(store: &dyn Store) {
    let t = now();
    let (clinical, staff) = (policy("clinical", "{}", t), policy("staff-base", "{}", t));
    put_policies(store, &[&clinical, &staff]).await;
    let u = Uuid::now_v7().to_string();
    let replace = |name: &'static str, set: Vec<PolicyAttachment>| async move {
        let mut tx = store.begin().await.expect("begin");
        tx.replace_policy_attachments(name, &set).await.expect("replace attachments");
        tx.commit().await.expect("commit");
    };

    replace("clinical", vec![attachment("clinical", "user", &u), attachment("clinical", "role", "clinician")]).await;
    replace("staff-base", vec![attachment("staff-base", "role", "staff")]).await;
    assert_eq!(
        store.policy_attachments().await.expect("list"),
        vec![
            attachment("clinical", "role", "clinician"),
            attachment("clinical", "user", &u),
            attachment("staff-base", "role", "staff"),
        ],
        "by policy, principal kind and principal"
    );

    let nurse = attachment("clinical", "role", "nurse");
    replace("clinical", vec![nurse.clone(), attachment("clinical", "role", "clinician"), nurse.clone()]).await;
    assert_eq!(
        store.policy_attachments().await.expect("list"),
        vec![attachment("clinical", "role", "clinician"), nurse.clone(), attachment("staff-base", "role", "staff")],
        "exactly the new set (a duplicate counts once); the other policy's untouched"
    );

    // Refusals write nothing and leave the transaction usable.
    let mut tx = store.begin().await.expect("begin");
    let foreign = tx.replace_policy_attachments("clinical", &[attachment("staff-base", "role", "x")]).await;
    assert!(matches!(foreign, Err(StoreError::Database(_))), "another policy's attachment is refused: {foreign:?}");
    let missing = tx.replace_policy_attachments("no-such", &[attachment("no-such", "role", "staff")]).await;
    assert!(matches!(missing, Err(StoreError::Database(_))), "attaching an unknown policy is refused: {missing:?}");
    tx.replace_policy_attachments("no-such", &[]).await.expect("detaching an unknown policy is a no-op");
    tx.put_policy(&policy("after-refusals", "{}", t)).await.expect("the transaction is still usable");
    tx.commit().await.expect("commit");
    assert_eq!(store.policy_attachments().await.expect("list").len(), 3, "the refusals wrote nothing");

    replace("clinical", vec![]).await;
    assert_eq!(
        store.policy_attachments().await.expect("list"),
        vec![attachment("staff-base", "role", "staff")],
        "an empty set detaches the policy from everyone"
    );

    let mut tx = store.begin().await.expect("begin");
    assert!(tx.delete_policy("staff-base").await.expect("delete an attached policy"));
    tx.commit().await.expect("commit");
    assert!(store.policy_attachments().await.expect("list").is_empty(), "attachments go with their policy");
    let names: Vec<_> = store.policies().await.expect("list").into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["after-refusals", "clinical"]);
    let mut tx = store.begin().await.expect("begin");
    for name in names {
        assert!(tx.delete_policy(&name).await.expect("delete"));
    }
    tx.commit().await.expect("commit");
}

async fn breakglass_grants_live_expire_and_revoke(store: &dyn Store) {
    let (users, key) = messaging_fixture(store, &["glass.a", "glass.b"]).await;
    let (a, b) = (users[0].id, users[1].id);
    let (d, other) = (dialog("group", None, key, b), dialog("group", None, key, b));
    insert_dialog(store, &d, &[b]).await;
    insert_dialog(store, &other, &[b]).await;
    let t = now();
    let ago = |secs: u64| t - Duration::from_secs(secs);
    let grant = |user_id, dialog_id, created_at, expires_at| BreakGlassGrant {
        id: Uuid::now_v7(),
        user_id,
        dialog_id,
        reason: GrantReason::Sealed { key_id: key, sealed: b"sealed reason".to_vec() },
        created_at,
        expires_at,
        revoked_at: None,
        revoked_by: None,
    };
    // Written before reasons were sealed (migration 0011).
    let expired = BreakGlassGrant {
        reason: GrantReason::Legacy("on-call: care team unreachable".into()),
        ..grant(a, d.id, ago(7200), ago(1))
    };
    let shorter = grant(a, d.id, ago(1800), t + Duration::from_secs(3600));
    let longer = grant(a, d.id, ago(1200), t + Duration::from_secs(7200));
    let other_dialog = grant(a, other.id, ago(600), t + Duration::from_secs(10_800));
    let other_user = grant(b, d.id, t, t + Duration::from_secs(14_400));
    let mut tx = store.begin().await.expect("begin");
    for g in [&expired, &shorter, &longer, &other_dialog, &other_user] {
        tx.insert_breakglass_grant(g).await.expect("insert grant");
    }
    let dup = tx.insert_breakglass_grant(&BreakGlassGrant { revoked_by: Some(a), ..shorter.clone() }).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "a grant id is used once: {dup:?}");
    tx.commit().await.expect("the conflict left the transaction usable");

    assert_eq!(store.breakglass_grant(shorter.id).await.expect("by id"), Some(shorter.clone()), "reads back equal");
    assert_eq!(store.breakglass_grant(Uuid::now_v7()).await.expect("unknown"), None);
    let active = |user, dialog, at| async move {
        store.active_breakglass_grant(user, dialog, at).await.expect("active grant").map(|g| g.id)
    };
    assert_eq!(active(a, d.id, t).await, Some(longer.id), "of several live grants, the one expiring last");
    assert_eq!(active(a, other.id, t).await, Some(other_dialog.id), "per dialog");
    assert_eq!(active(b, other.id, t).await, None, "per user");
    assert_eq!(active(a, d.id, ago(3)).await, Some(longer.id));
    assert_eq!(active(a, d.id, t + Duration::from_secs(5400)).await, Some(longer.id), "the shorter one expired");
    assert_eq!(active(a, d.id, longer.expires_at).await, None, "expired at expires_at");

    let admin = Uuid::now_v7();
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.revoke_breakglass_grant(longer.id, t, Some(admin)).await.expect("revoke"));
    assert!(!tx.revoke_breakglass_grant(longer.id, t, None).await.expect("revoke twice"), "revoked once");
    assert!(!tx.revoke_breakglass_grant(Uuid::now_v7(), t, None).await.expect("unknown"), "unknown grant");
    tx.commit().await.expect("commit");
    let revoked = BreakGlassGrant { revoked_at: Some(t), revoked_by: Some(admin), ..longer.clone() };
    assert_eq!(store.breakglass_grant(longer.id).await.expect("by id"), Some(revoked.clone()), "the revoker is kept");
    assert_eq!(active(a, d.id, t).await, Some(shorter.id), "a revoked grant is not live");

    let mut tx = store.begin().await.expect("begin");
    assert!(tx.revoke_breakglass_grant(shorter.id, t, None).await.expect("revoke from the CLI"));
    tx.commit().await.expect("commit");
    assert_eq!(active(a, d.id, t).await, None, "none live");
    let shorter = BreakGlassGrant { revoked_at: Some(t), ..shorter };
    assert_eq!(store.breakglass_grant(shorter.id).await.expect("by id").as_ref(), Some(&shorter));

    assert_eq!(
        store.breakglass_grants_since(ago(1800)).await.expect("since"),
        vec![other_user.clone(), other_dialog, revoked, shorter.clone()],
        "created at or after `since`, newest first, revoked ones included"
    );
    assert_eq!(store.breakglass_grants_since(t).await.expect("since"), vec![other_user], "`since` is inclusive");
    assert!(store.breakglass_grants_since(t + Duration::from_millis(1)).await.expect("since").is_empty());
    assert_eq!(store.breakglass_grants_since(ago(86_400)).await.expect("since").len(), 5, "expired ones included");

    // The legacy plaintext reason is found, sealed once, and its plaintext is gone.
    let ours = |grants: Vec<BreakGlassGrant>| grants.into_iter().filter(|g| g.dialog_id == d.id).collect::<Vec<_>>();
    assert_eq!(ours(store.breakglass_grants_unsealed().await.expect("unsealed")), vec![expired.clone()]);
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.seal_breakglass_reason(expired.id, key, b"now sealed").await.expect("seal"));
    assert!(!tx.seal_breakglass_reason(expired.id, key, b"twice").await.expect("seal twice"), "sealed once");
    assert!(!tx.seal_breakglass_reason(Uuid::now_v7(), key, b"x").await.expect("unknown"), "unknown grant");
    tx.commit().await.expect("commit");
    let sealed = GrantReason::Sealed { key_id: key, sealed: b"now sealed".to_vec() };
    assert_eq!(
        store.breakglass_grant(expired.id).await.expect("by id"),
        Some(BreakGlassGrant { reason: sealed, ..expired })
    );
    assert!(ours(store.breakglass_grants_unsealed().await.expect("unsealed")).is_empty());
}

async fn last_sign_ins_ignore_temporary_credentials(store: &dyn Store) {
    let t = now();
    let ago = |secs: u64| t - Duration::from_secs(secs);
    let (several, sts_only, one) = (user("signin.several"), user("signin.sts"), user("signin.one"));
    for u in [&several, &sts_only, &one] {
        insert_user(store, u).await.expect("insert user");
    }
    let sign_in = |user_id, hash: &str, at| SessionRecord {
        created_at: at,
        last_seen_at: at,
        assumed_role: None,
        parent_session_id: None,
        ..session(user_id, hash)
    };
    let sts = |user_id, hash: &str, at| SessionRecord { created_at: at, last_seen_at: at, ..session(user_id, hash) };
    insert_session(store, &sign_in(several.id, "signin-1", ago(7200))).await;
    insert_session(store, &sign_in(several.id, "signin-2", ago(3600))).await;
    insert_session(store, &sts(several.id, "signin-sts-1", t)).await;
    insert_session(store, &sts(sts_only.id, "signin-sts-2", t)).await;
    insert_session(store, &sign_in(one.id, "signin-3", ago(10_800))).await;
    // Revoked sign-ins count: they still happened.
    let mut tx = store.begin().await.expect("begin");
    tx.revoke_user_sessions(one.id, t).await.expect("revoke");
    tx.commit().await.expect("commit");

    let all = store.last_sign_ins().await.expect("last sign-ins");
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "one row per user, by user id");
    let ours: Vec<_> = all.into_iter().filter(|(u, _)| [several.id, sts_only.id, one.id].contains(u)).collect();
    let mut expected = vec![(several.id, ago(3600)), (one.id, ago(10_800))];
    expected.sort_unstable();
    assert_eq!(ours, expected, "the newest sign-in per user; temporary credentials are not sign-ins");
}

async fn memberships_list_every_pair(store: &dyn Store) {
    let (users, key) = messaging_fixture(store, &["pairs.a", "pairs.b"]).await;
    let (a, b) = (users[0].id, users[1].id);
    let (both, only_a) = (dialog("group", None, key, a), dialog("group", None, key, a));
    insert_dialog(store, &both, &[a, b]).await;
    insert_dialog(store, &only_a, &[a]).await;
    let ours = || async move {
        let all = store.memberships().await.expect("memberships");
        let text = |(u, d): &(Uuid, Uuid)| (u.to_string(), d.to_string());
        assert!(all.windows(2).all(|w| text(&w[0]) < text(&w[1])), "by user, then dialog");
        all.into_iter().filter(|(u, _)| *u == a || *u == b).collect::<Vec<_>>()
    };
    let mut expected = vec![(a, both.id), (a, only_a.id), (b, both.id)];
    expected.sort_unstable_by_key(|(u, d)| (u.to_string(), d.to_string()));
    assert_eq!(ours().await, expected, "every (user, dialog) membership");

    let mut tx = store.begin().await.expect("begin");
    assert!(tx.remove_member(both.id, b).await.expect("remove"));
    tx.commit().await.expect("commit");
    assert_eq!(ours().await, expected.into_iter().filter(|(u, _)| *u != b).collect::<Vec<_>>(), "a removed member");
}

async fn files_are_stored_and_tombstoned(store: &dyn Store) {
    let (users, key_id) = messaging_fixture(store, &["FileOwner"]).await;
    let d = dialog("group", None, key_id, users[0].id);
    let mut tx = store.begin().await.expect("begin");
    tx.insert_dialog(&d).await.expect("dialog");
    tx.commit().await.expect("commit");
    let file_key = DataKeyRecord {
        id: Uuid::now_v7(),
        scope: format!("file/{}", Uuid::now_v7()),
        key_version: 1,
        wrapped: vec![9; 40],
        created_at: now(),
        destroyed_at: None,
    };
    let f = crate::FileRecord {
        id: Uuid::now_v7(),
        dialog_id: d.id,
        uploader_id: users[0].id,
        data_key_id: file_key.id,
        size: 65_537,
        segment_size: 65_536,
        meta_sealed: Some(vec![0, 1, 2, 255]),
        object_key: "files/x".into(),
        created_at: now(),
        deleted_at: None,
    };
    let mut tx = store.begin().await.expect("begin");
    tx.insert_data_key(&file_key).await.expect("file key");
    tx.insert_file(&f).await.expect("insert file");
    assert!(matches!(tx.insert_file(&f).await, Err(StoreError::Conflict(_))), "an id is stored once");
    tx.commit().await.expect("commit");
    assert_eq!(store.file_by_id(f.id).await.expect("read"), Some(f.clone()), "reads back equal");
    assert_eq!(store.file_by_id(Uuid::now_v7()).await.expect("read"), None);

    let later = now() + Duration::from_secs(5);
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.delete_file(f.id, later).await.expect("delete"));
    assert!(!tx.delete_file(f.id, later).await.expect("again"), "deleted once");
    tx.commit().await.expect("commit");
    let gone = store.file_by_id(f.id).await.expect("read").expect("tombstone kept");
    assert_eq!(
        (gone.meta_sealed.clone(), gone.deleted_at),
        (None, Some(later)),
        "metadata blanked, deletion time kept"
    );

    // In batches: the known ids (tombstones too), unknown ones left out; none asked, none given.
    let second = crate::FileRecord { id: Uuid::now_v7(), object_key: "files/y".into(), ..f.clone() };
    let mut tx = store.begin().await.expect("begin");
    tx.insert_file(&second).await.expect("insert file");
    tx.commit().await.expect("commit");
    let mut asked: Vec<Uuid> = (0..crate::FILES_BY_IDS_MAX - 2).map(|_| Uuid::now_v7()).collect();
    asked.extend([second.id, f.id]);
    let mut got = store.files_by_ids(&asked).await.expect("batch");
    got.sort_by_key(|r| r.id);
    assert_eq!(got, vec![gone, second], "both, by a full batch of ids");
    assert!(store.files_by_ids(&[]).await.expect("empty").is_empty());
}

async fn leases_exclude_other_holders_until_released_or_lapsed(store: &dyn Store) {
    let t = now();
    let take = |holder: &'static str, at: OffsetDateTime, until: OffsetDateTime| async move {
        let mut tx = store.begin().await.expect("begin");
        let taken = tx.take_lease("job.a", holder, at, until).await.expect("take");
        tx.commit().await.expect("commit");
        taken
    };
    let release = |holder: &'static str| async move {
        let mut tx = store.begin().await.expect("begin");
        let released = tx.release_lease("job.a", holder).await.expect("release");
        tx.commit().await.expect("commit");
        released
    };
    let minute = Duration::from_secs(60);
    assert!(take("node-1", t, t + minute).await, "a free lease is taken");
    assert!(!take("node-2", t, t + minute).await, "held by another");
    assert!(take("node-1", t, t + 2 * minute).await, "renewed by its holder");
    assert!(!take("node-2", t + minute, t + 3 * minute).await, "the renewal counts: not lapsed yet");
    assert!(take("node-2", t + 2 * minute, t + 3 * minute).await, "lapsed at expires_at: taken over");
    assert!(!release("node-1").await, "a former holder cannot give it up");
    assert!(!take("node-1", t + 2 * minute, t + 3 * minute).await);
    assert!(release("node-2").await);
    assert!(take("node-1", t + 2 * minute, t + 3 * minute).await, "free again once released");
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.take_lease("job.b", "node-2", t, t + minute).await.expect("take"), "leases are per name");
    tx.rollback().await.expect("rollback");
    assert!(release("node-1").await);
}

async fn a_held_lease_runs_the_job_on_one_holder_only(store: Arc<dyn Store>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Each job, once it holds the lease, waits for `go`: the others try while it holds it.
    let (runs, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (go, _) = tokio::sync::watch::channel(false);
    let jobs: Vec<_> = (0..4)
        .map(|i| {
            let (store, runs, done, mut wait) = (store.clone(), runs.clone(), done.clone(), go.subscribe());
            tokio::spawn(async move {
                let work = async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let _ = wait.wait_for(|go| *go).await;
                };
                let held =
                    crate::leases::hold(&*store, "job.once", &format!("node-{i}"), Duration::from_secs(60), work)
                        .await
                        .expect("hold");
                done.fetch_add(1, Ordering::SeqCst);
                held.is_some()
            })
        })
        .collect();
    for _ in 0..200 {
        if done.load(Ordering::SeqCst) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    go.send_replace(true);
    let mut ran = 0;
    for j in jobs {
        ran += usize::from(j.await.expect("join"));
    }
    assert_eq!((ran, runs.load(Ordering::SeqCst)), (1, 1), "one holder at a time");
    let again = crate::leases::hold(&*store, "job.once", "node-9", Duration::from_secs(60), async { 7 }).await;
    assert_eq!(again.expect("hold"), Some(7), "released after the job");
}
