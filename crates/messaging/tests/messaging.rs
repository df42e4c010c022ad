//! The messaging service over a real SQLite store, audit trail and keyring.

use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;
use ward_audit::{AuditLog, AuditSettings, Context, Via};
use ward_keys::{DataKeys, KeyError, LocalKeyStore};
use ward_messaging::{DialogKind, Messaging, MessagingError, MessagingSettings, NewDialog, NewMessage};
use ward_storage::{ConnectOptions, HistoryQuery, Store, Target, UserRecord};

struct World {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    messaging: Messaging,
    access: ward_access::Access,
    users: Vec<Uuid>,
}

async fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ConnectOptions {
        target: Target::Sqlite(dir.path().join("ward.db")),
        max_connections: 4,
        acquire_timeout: std::time::Duration::from_secs(5),
    };
    let store = ward_storage::open(&options).await.expect("open");
    let audit = AuditLog::open(
        store.clone(),
        AuditSettings {
            checkpoint_every: 1000,
            checkpoint_interval: std::time::Duration::from_secs(60),
            key_file: dir.path().join("audit/signing.key"),
            checkpoint_file: dir.path().join("audit/checkpoints.jsonl"),
        },
    )
    .await
    .expect("audit");
    let keys = DataKeys::new(store.clone(), Arc::new(LocalKeyStore::ephemeral()));
    let now = OffsetDateTime::now_utc();
    let mut users = Vec::new();
    let mut tx = store.begin().await.expect("begin");
    for name in ["ann", "bob", "cat"] {
        let id = Uuid::now_v7();
        let user = UserRecord {
            id,
            username: name.into(),
            username_key: name.into(),
            password_hash: "$argon2id$unused".into(),
            roles: vec!["patient".into()],
            disabled: false,
            failed_logins: 0,
            locked_until: None,
            created_at: now,
            updated_at: now,
        };
        tx.insert_user(&user).await.expect("user");
        users.push(id);
    }
    tx.commit().await.expect("commit");
    let access = ward_access::Access::new(store.clone(), audit.clone(), Default::default(), None, Some(keys.clone()));
    let messaging = Messaging::new(store.clone(), audit, keys, access.clone(), MessagingSettings::default());
    World { _dir: dir, store, messaging, access, users }
}

/// A patient's audit context and principal, as the API would build them.
async fn as_user(w: &World, id: Uuid) -> (Context, ward_access::Principal) {
    let mut ctx = Context::anonymous(Via::Api, Some("127.0.0.1".into()), None, OffsetDateTime::now_utc());
    ctx.user_id = Some(id.to_string());
    let principal = w
        .access
        .principal(id, &["patient".to_string()], ward_access::CredentialKind::Session, None, None, None)
        .await
        .expect("principal");
    (ctx, principal)
}

fn text(body: &str) -> NewMessage {
    NewMessage { body: body.into(), client_msg_id: None, attachments: vec![] }
}

fn page(after: Option<i64>, before: Option<i64>, limit: i64) -> HistoryQuery {
    HistoryQuery { after, before, limit }
}

#[tokio::test]
async fn bodies_and_names_are_sealed_and_read_back_by_members_only() {
    let w = world().await;
    let (ann, bob, cat) = (as_user(&w, w.users[0]).await, as_user(&w, w.users[1]).await, as_user(&w, w.users[2]).await);
    let new = NewDialog { kind: DialogKind::Group, name: Some("rash follow-up".into()), members: vec![w.users[1]] };
    let (dialog, created) = w.messaging.create_dialog(&ann.0, &ann.1, new).await.expect("create");
    assert!(created);
    let (sent, _) = w.messaging.send(&ann.0, &ann.1, dialog.id, text("marker-body-7f3a")).await.expect("send");
    assert_eq!(sent.seq, 1);

    let stored = w.store.message_by_id(dialog.id, sent.id).await.expect("read").expect("stored");
    let sealed = stored.body_sealed.expect("sealed");
    assert!(!sealed.windows(16).any(|w| w == b"marker-body-7f3a"), "the body is stored only sealed");
    let stored_dialog = w.store.dialog_by_id(dialog.id).await.expect("read").expect("stored");
    let name = stored_dialog.name_sealed.expect("sealed name");
    assert!(!name.windows(6).any(|w| w == b"follow"), "the name is stored only sealed");

    let seen = w.messaging.history(&bob.0, &bob.1, dialog.id, page(None, None, 50)).await.expect("member reads");
    assert_eq!(seen.messages[0].body.as_deref(), Some("marker-body-7f3a"));
    assert_eq!(
        w.messaging.dialog(&bob.0, &bob.1, dialog.id).await.expect("dialog").name.as_deref(),
        Some("rash follow-up")
    );
    assert!(matches!(
        w.messaging.history(&cat.0, &cat.1, dialog.id, page(None, None, 50)).await,
        Err(MessagingError::NotFound)
    ));
    assert!(matches!(w.messaging.send(&cat.0, &cat.1, dialog.id, text("x")).await, Err(MessagingError::NotFound)));
    assert!(matches!(w.messaging.dialog(&cat.0, &cat.1, dialog.id).await, Err(MessagingError::NotFound)));
}

#[tokio::test]
async fn a_body_moved_to_another_row_or_altered_by_one_bit_is_refused() {
    let w = world().await;
    let ann = as_user(&w, w.users[0]).await;
    let new = NewDialog { kind: DialogKind::Private, name: None, members: vec![w.users[1]] };
    let (dialog, _) = w.messaging.create_dialog(&ann.0, &ann.1, new).await.expect("create");
    let (first, _) = w.messaging.send(&ann.0, &ann.1, dialog.id, text("first")).await.expect("send");
    let (second, _) = w.messaging.send(&ann.0, &ann.1, dialog.id, text("second")).await.expect("send");
    let sealed_first = w.store.message_by_id(dialog.id, first.id).await.expect("read").expect("row").body_sealed;

    // First's ciphertext written into second's row.
    let mut tx = w.store.begin().await.expect("begin");
    assert!(
        tx.edit_message(dialog.id, second.id, sealed_first.as_deref().expect("sealed"), OffsetDateTime::now_utc())
            .await
            .expect("edit")
    );
    tx.commit().await.expect("commit");
    let moved = w.messaging.history(&ann.0, &ann.1, dialog.id, page(Some(1), None, 10)).await;
    assert!(matches!(moved, Err(MessagingError::Keys(KeyError::Integrity))), "moved ciphertext refused: {moved:?}");

    // One flipped bit in first's own row.
    let mut flipped = sealed_first.expect("sealed");
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    let mut tx = w.store.begin().await.expect("begin");
    assert!(tx.edit_message(dialog.id, first.id, &flipped, OffsetDateTime::now_utc()).await.expect("edit"));
    tx.commit().await.expect("commit");
    let altered = w.messaging.history(&ann.0, &ann.1, dialog.id, page(None, Some(2), 10)).await;
    assert!(
        matches!(altered, Err(MessagingError::Keys(KeyError::Integrity))),
        "altered ciphertext refused: {altered:?}"
    );
}

#[tokio::test]
async fn seq_is_gapless_sends_are_idempotent_and_history_pages_both_ways() {
    let w = world().await;
    let (ann, bob) = (as_user(&w, w.users[0]).await, as_user(&w, w.users[1]).await);
    let new = NewDialog { kind: DialogKind::Private, name: None, members: vec![w.users[1]] };
    let (dialog, _) = w.messaging.create_dialog(&ann.0, &ann.1, new.clone()).await.expect("create");
    let (again, created) =
        w.messaging.create_dialog(&bob.0, &bob.1, NewDialog { members: vec![w.users[0]], ..new }).await.expect("again");
    assert_eq!((again.id, created), (dialog.id, false), "one private dialog per pair");

    let mut handles = Vec::new();
    for i in 0..20 {
        let m = w.messaging.clone();
        let who = if i % 2 == 0 { ann.clone() } else { bob.clone() };
        handles.push(tokio::spawn(async move { m.send(&who.0, &who.1, dialog.id, text(&format!("m{i}"))).await }));
    }
    let mut seqs: Vec<i64> = Vec::new();
    for h in handles {
        seqs.push(h.await.expect("join").expect("send").0.seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "concurrent sends get 1..=20 without gaps");

    let with_id = NewMessage { body: "once".into(), client_msg_id: Some("c-1".into()), attachments: vec![] };
    let (a, first_time) = w.messaging.send(&ann.0, &ann.1, dialog.id, with_id.clone()).await.expect("send");
    let (b, second_time) = w.messaging.send(&ann.0, &ann.1, dialog.id, with_id).await.expect("resend");
    assert_eq!((a.id, a.seq, first_time, second_time), (b.id, 21, true, false), "same client_msg_id, same message");

    let forward = w.messaging.history(&ann.0, &ann.1, dialog.id, page(None, None, 8)).await.expect("page 1");
    assert_eq!(forward.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    let next =
        w.messaging.history(&ann.0, &ann.1, dialog.id, page(forward.next_cursor, None, 8)).await.expect("page 2");
    assert_eq!(next.messages.first().map(|m| m.seq), Some(9));
    let back = w.messaging.history(&ann.0, &ann.1, dialog.id, page(None, Some(22), 5)).await.expect("newest");
    assert_eq!(back.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![17, 18, 19, 20, 21]);
    let older = w.messaging.history(&ann.0, &ann.1, dialog.id, page(None, back.next_cursor, 5)).await.expect("older");
    assert_eq!(older.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![12, 13, 14, 15, 16]);
    let tail = w.messaging.history(&ann.0, &ann.1, dialog.id, page(Some(18), None, 50)).await.expect("tail");
    assert_eq!(tail.next_cursor, None, "a page that is not full ends the walk");
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let w = world().await;
    let ann = as_user(&w, w.users[0]).await;
    let private_of_three = NewDialog { kind: DialogKind::Private, name: None, members: vec![w.users[1], w.users[2]] };
    assert!(matches!(
        w.messaging.create_dialog(&ann.0, &ann.1, private_of_three).await,
        Err(MessagingError::Invalid(_))
    ));
    let unknown = NewDialog { kind: DialogKind::Group, name: None, members: vec![Uuid::now_v7()] };
    assert!(matches!(w.messaging.create_dialog(&ann.0, &ann.1, unknown).await, Err(MessagingError::Invalid(_))));
    assert!(w.messaging.dialogs(&ann.0, &ann.1).await.expect("list").is_empty(), "nothing was created");

    let (dialog, _) = w
        .messaging
        .create_dialog(&ann.0, &ann.1, NewDialog { kind: DialogKind::Group, name: None, members: vec![w.users[1]] })
        .await
        .expect("create");
    let big = "x".repeat(MessagingSettings::default().max_body_bytes + 1);
    assert!(matches!(
        w.messaging.send(&ann.0, &ann.1, dialog.id, text(&big)).await,
        Err(MessagingError::TooLarge { .. })
    ));
    assert!(matches!(w.messaging.send(&ann.0, &ann.1, dialog.id, text("  ")).await, Err(MessagingError::Invalid(_))));
    assert!(matches!(w.messaging.send(&ann.0, &ann.1, Uuid::now_v7(), text("x")).await, Err(MessagingError::NotFound)));
    assert!(matches!(
        w.messaging.history(&ann.0, &ann.1, dialog.id, page(None, None, 0)).await,
        Err(MessagingError::Invalid(_))
    ));
    assert_eq!(
        w.messaging.dialog(&ann.0, &ann.1, dialog.id).await.expect("dialog").last_seq,
        0,
        "no message was stored"
    );
}

#[tokio::test]
async fn an_earlier_body_copied_back_over_an_edit_is_refused() {
    let w = world().await;
    let ann = as_user(&w, w.users[0]).await;
    let new = NewDialog { kind: DialogKind::Private, name: None, members: vec![w.users[1]] };
    let (dialog, _) = w.messaging.create_dialog(&ann.0, &ann.1, new).await.expect("create");
    let (sent, _) = w.messaging.send(&ann.0, &ann.1, dialog.id, text("as first sent")).await.expect("send");
    let original = w.store.message_by_id(dialog.id, sent.id).await.expect("read").expect("row").body_sealed;
    let edited = w.messaging.edit(&ann.0, &ann.1, dialog.id, sent.id, "as edited".into()).await.expect("edit");
    assert_eq!(edited.body.as_deref(), Some("as edited"));

    // Put the first body's ciphertext back, keeping the edit's time: refused.
    let stored = w.store.message_by_id(dialog.id, sent.id).await.expect("read").expect("row");
    let mut tx = w.store.begin().await.expect("begin");
    let at = stored.edited_at.expect("edited");
    assert!(tx.edit_message(dialog.id, sent.id, original.as_deref().expect("sealed"), at).await.expect("swap"));
    tx.commit().await.expect("commit");
    let read = w.messaging.history(&ann.0, &ann.1, dialog.id, page(None, None, 10)).await;
    assert!(
        matches!(read, Err(MessagingError::Keys(KeyError::Integrity))),
        "an old body does not pass for the new one"
    );
}
