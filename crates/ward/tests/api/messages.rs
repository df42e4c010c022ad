//! Messages over HTTP: sealed at rest (a byte scan of the data dir and the log finds no
//! marker, while the messages read back), readable across master-key rotation and
//! restarts, and refused to non-members.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::secrets_at_rest::files_under;

fn scan_for(dir: &std::path::Path, log: &str, marker: &str, when: &str) {
    let files = files_under(dir);
    assert!(files.iter().any(|f| f.ends_with("ward.db")), "the scan sees the database");
    for file in &files {
        let bytes = std::fs::read(file).expect("read");
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{when}: {} holds message text in plaintext",
            file.display()
        );
    }
    assert!(!log.contains(marker), "{when}: the log holds message text");
}

#[tokio::test]
async fn message_text_is_never_on_disk_or_in_the_log_and_reads_back_across_rotation_and_restarts() {
    let dir = data_dir();
    let env = [("WARD_MASTER_PASSPHRASE", "messages test passphrase"), ("WARD_LOG_LEVEL", "trace")];
    add_user(&dir.path, &[], "pat.one", "patient", "patient passphrase 81");
    add_user(&dir.path, &[], "pat.two", "patient", "patient passphrase 82");
    add_user(&dir.path, &[], "pat.out", "patient", "patient passphrase 83");
    let server = Server::start(&dir.path, &["--no-tls"], &env);
    let c = server.client();
    let one = login(&server, "pat.one", "patient passphrase 81").await;
    let two = login(&server, "pat.two", "patient passphrase 82").await;
    let outsider = login(&server, "pat.out", "patient passphrase 83").await;
    let two_id = user_id(&server, &two).await;

    let marker = format!("PHI-MARKER-{}", uuid::Uuid::new_v4().simple());
    let res = c
        .post(server.at("/v1/dialogs"))
        .bearer_auth(&one)
        .json(&json!({"type": "group", "name": format!("{marker} name"), "members": [two_id]}))
        .send()
        .await
        .expect("dialog");
    assert_eq!(res.status(), 201);
    let dialog = res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string();
    let mut expected = Vec::new();
    for i in 0..40 {
        let (token, body) =
            if i % 2 == 0 { (&one, format!("{marker} #{i}")) } else { (&two, format!("{marker} #{i}")) };
        let sent = send_message(&server, token, &dialog, &body).await;
        assert_eq!(sent["seq"], i + 1);
        expected.push(body);
    }
    assert_eq!(message_bodies(&server, &two, &dialog).await, expected, "members read every message back");

    // The dialog's key came from the cache for nearly every message; the counters show it.
    let metrics = c.get(server.at("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    let (hits, misses) = (value("ward_data_key_cache_hits_total"), value("ward_data_key_cache_misses_total"));
    assert!(hits >= 39.0 && hits > misses, "hits {hits}, misses {misses}");
    assert!(value("ward_key_store_calls_total{op=\"unwrap\"}") >= 1.0);

    // A non-member gets 404 on the dialog and its messages, like an unknown id.
    for path in [format!("/v1/dialogs/{dialog}"), format!("/v1/dialogs/{dialog}/messages")] {
        let res = c.get(server.at(&path)).bearer_auth(&outsider).send().await.expect("outsider");
        assert_eq!(res.status(), 404);
        assert_eq!(error_code(res).await, "not_found");
    }
    let listed: Value =
        c.get(server.at("/v1/dialogs")).bearer_auth(&outsider).send().await.expect("list").json().await.expect("json");
    assert_eq!(listed["dialogs"].as_array().map(Vec::len), Some(0));

    scan_for(&dir.path, &server.stderr(), &marker, "running");
    let log = server.stderr();
    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
    scan_for(&dir.path, &log, &marker, "stopped");

    // Rotate the master key from the command line, restart, and read old and new messages.
    let mut cmd = ward();
    cmd.args(["keys", "rotate", "--data-dir"]).arg(&dir.path).env(env[0].0, env[0].1);
    let out = run(cmd, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let server = Server::start(&dir.path, &["--no-tls"], &env);
    let one = login(&server, "pat.one", "patient passphrase 81").await;
    let after = format!("{marker} after rotation");
    send_message(&server, &one, &dialog, &after).await;
    expected.push(after);
    assert_eq!(message_bodies(&server, &one, &dialog).await, expected, "old and new messages after rotation");
    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));

    let server = Server::start(&dir.path, &["--no-tls"], &env);
    let two = login(&server, "pat.two", "patient passphrase 82").await;
    assert_eq!(message_bodies(&server, &two, &dialog).await, expected, "and after another restart");
    let shown: Value = server
        .client()
        .get(server.at(&format!("/v1/dialogs/{dialog}")))
        .bearer_auth(&two)
        .send()
        .await
        .expect("dialog")
        .json()
        .await
        .expect("json");
    assert_eq!(shown["name"], format!("{marker} name"));
    assert_eq!(shown["last_seq"], 41);
    scan_for(&dir.path, &server.stderr(), &marker, "after rotation");

    // The trail names messages by id and never holds their text.
    let mut cmd = ward();
    cmd.args(["audit", "export", "--format", "jsonl", "--data-dir"]).arg(&dir.path).env(env[0].0, env[0].1);
    let trail = String::from_utf8_lossy(&run(cmd, None).stdout).to_string();
    assert_eq!(trail.matches("\"message.create\"").count(), 41);
    assert!(trail.contains("\"message.read\"") && !trail.contains(&marker));
}

#[tokio::test]
async fn bad_message_input_answers_in_the_contract_shape_and_stores_nothing() {
    let dir = data_dir();
    add_user(&dir.path, &[], "pat.a", "patient", "patient passphrase 91");
    add_user(&dir.path, &[], "pat.b", "patient", "patient passphrase 92");
    let server = Server::start(&dir.path, &["--no-tls"], &[]);
    let c = server.client();
    let a = login(&server, "pat.a", "patient passphrase 91").await;
    let b = login(&server, "pat.b", "patient passphrase 92").await;
    let b_id = user_id(&server, &b).await;
    let res = c
        .post(server.at("/v1/dialogs"))
        .bearer_auth(&a)
        .json(&json!({"type": "private", "members": [b_id]}))
        .send()
        .await
        .expect("dialog");
    assert_eq!(res.status(), 201);
    let dialog = res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string();
    let res = c
        .post(server.at("/v1/dialogs"))
        .bearer_auth(&b)
        .json(&json!({"type": "private", "members": [user_id(&server, &a).await]}))
        .send()
        .await
        .expect("again");
    assert_eq!(res.status(), 200, "the pair's dialog already exists");
    assert_eq!(res.json::<Value>().await.expect("json")["id"], dialog.as_str());

    let url = server.at(&format!("/v1/dialogs/{dialog}/messages"));
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.post(&url).bearer_auth(&a).header("content-type", "application/json").body("{\"body\": "),
            400,
            "invalid_request",
        ),
        (c.post(&url).bearer_auth(&a).json(&json!({"body": 7})), 400, "invalid_request"),
        (
            c.post(&url)
                .bearer_auth(&a)
                .header("content-type", "application/json")
                .body(b"{\"body\": \"\xff\xfe\"}".to_vec()),
            400,
            "invalid_request",
        ),
        (c.post(&url).bearer_auth(&a).json(&json!({"body": "x".repeat(64 * 1024 + 1)})), 413, "payload_too_large"),
        (c.post(&url).bearer_auth(&a).json(&json!({"body": "hi", "extra": 1})), 400, "invalid_request"),
        (
            c.post(server.at(&format!("/v1/dialogs/{}/messages", uuid::Uuid::now_v7())))
                .bearer_auth(&a)
                .json(&json!({"body": "hi"})),
            404,
            "not_found",
        ),
        (
            c.post(server.at("/v1/dialogs/not-a-uuid/messages")).bearer_auth(&a).json(&json!({"body": "hi"})),
            400,
            "invalid_request",
        ),
        (c.get(format!("{url}?limit=0")).bearer_auth(&a), 400, "invalid_request"),
        (
            c.post(server.at("/v1/dialogs")).bearer_auth(&a).json(&json!({"type": "channel", "members": []})),
            400,
            "invalid_request",
        ),
        (c.post(&url).json(&json!({"body": "hi"})), 401, "unauthenticated"),
    ];
    for (i, (req, status, code)) in cases.into_iter().enumerate() {
        let res = req.send().await.expect("send");
        assert_eq!(res.status().as_u16(), status, "case {i}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"]["code"], code, "case {i}: {body}");
        assert!(body["error"]["request_id"].is_string(), "case {i}: {body}");
    }
    let page: Value = c.get(&url).bearer_auth(&b).send().await.expect("history").json().await.expect("json");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(0), "nothing was stored: {page}");

    // Minimum necessary: an administrator takes part in no conversation and reads none.
    add_user(&dir.path, &[], "msg.admin", "admin", "admin passphrase 93");
    let admin = login(&server, "msg.admin", "admin passphrase 93").await;
    for req in [c.get(server.at("/v1/dialogs")), c.get(&url), c.post(&url).json(&json!({"body": "hi"}))] {
        let res = req.bearer_auth(&admin).send().await.expect("admin");
        assert_eq!(res.status(), 403);
        assert_eq!(error_code(res).await, "forbidden");
    }
}

#[tokio::test]
async fn edits_deletes_receipts_and_membership_changes_follow_their_rules_and_are_audited() {
    let dir = data_dir();
    for (name, pw) in
        [("chg.one", "change passphrase 1"), ("chg.two", "change passphrase 2"), ("chg.three", "change passphrase 3")]
    {
        add_user(&dir.path, &[], name, "patient", pw);
    }
    let server = Server::start(&dir.path, &["--no-tls"], &[]);
    let c = server.client();
    let one = login(&server, "chg.one", "change passphrase 1").await;
    let two = login(&server, "chg.two", "change passphrase 2").await;
    let three = login(&server, "chg.three", "change passphrase 3").await;
    let (two_id, three_id) = (user_id(&server, &two).await, user_id(&server, &three).await);
    let res = c
        .post(server.at("/v1/dialogs"))
        .bearer_auth(&one)
        .json(&json!({"type": "group", "members": [two_id]}))
        .send()
        .await
        .expect("dialog");
    let dialog = res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string();
    let m1 = send_message(&server, &two, &dialog, "first, from two").await["id"].as_str().expect("id").to_string();
    let m2 = send_message(&server, &one, &dialog, "second, from one").await["id"].as_str().expect("id").to_string();
    send_message(&server, &one, &dialog, "third, from one").await;
    let at = |path: &str| server.at(&format!("/v1/dialogs/{dialog}{path}"));
    let unread = |token: String| {
        let c = c.clone();
        let url = server.at("/v1/dialogs");
        async move {
            let list: Value = c.get(url).bearer_auth(token).send().await.expect("list").json().await.expect("json");
            list["dialogs"][0]["unread_count"].as_i64().expect("unread")
        }
    };

    // Read receipts: two has read up to its own message; the marker only moves forward.
    assert_eq!(unread(two.clone()).await, 2);
    let res = c.post(at("/read")).bearer_auth(&two).json(&json!({"up_to_seq": 3})).send().await.expect("read");
    assert_eq!(res.status(), 204);
    assert_eq!(unread(two.clone()).await, 0);
    let res = c.post(at("/read")).bearer_auth(&two).json(&json!({"up_to_seq": 99})).send().await.expect("read");
    assert_eq!(res.status(), 400);

    // Edits: only the sender; the history shows the new body.
    let res = c.patch(at(&format!("/messages/{m2}"))).bearer_auth(&two).json(&json!({"body": "x"})).send().await;
    assert_eq!(res.expect("edit").status(), 403);
    let res = c.patch(at(&format!("/messages/{m2}"))).bearer_auth(&one).json(&json!({"body": "second, edited"})).send();
    let edited: Value = res.await.expect("edit").json().await.expect("json");
    assert_eq!((edited["body"].as_str(), edited["edited_at"].is_string()), (Some("second, edited"), true));
    assert_eq!(message_bodies(&server, &two, &dialog).await[1], "second, edited");

    // Deletes: the sender or a dialog admin; a tombstone keeps the seq.
    let res = c.delete(at(&format!("/messages/{m2}"))).bearer_auth(&two).send().await.expect("delete");
    assert_eq!(res.status(), 403, "a plain member may not delete another's message");
    let res = c.delete(at(&format!("/messages/{m1}"))).bearer_auth(&one).send().await.expect("delete");
    assert_eq!(res.status(), 200, "the owner may");
    let page: Value = c.get(at("/messages")).bearer_auth(&two).send().await.expect("h").json().await.expect("json");
    assert_eq!(page["messages"][0]["seq"], 1);
    assert!(page["messages"][0]["body"].is_null() && page["messages"][0]["deleted_at"].is_string(), "{page}");
    let res = c.delete(at(&format!("/messages/{m1}"))).bearer_auth(&one).send().await.expect("again");
    assert_eq!(res.status(), 409);
    let res = c.patch(at(&format!("/messages/{m1}"))).bearer_auth(&two).json(&json!({"body": "y"})).send().await;
    assert_eq!(res.expect("edit deleted").status(), 409);

    // Membership: admins add and remove; anyone but the owner may leave; a former member
    // gets 404 like a stranger.
    let res = c.post(at("/members")).bearer_auth(&two).json(&json!({"user_id": three_id})).send().await;
    assert_eq!(res.expect("add").status(), 403);
    let res = c.post(at("/members")).bearer_auth(&one).json(&json!({"user_id": three_id})).send().await;
    assert_eq!(res.expect("add").status(), 204);
    assert_eq!(c.get(at("/messages")).bearer_auth(&three).send().await.expect("h").status(), 200);
    let res = c.delete(at(&format!("/members/{three_id}"))).bearer_auth(&one).send().await.expect("remove");
    assert_eq!(res.status(), 204);
    assert_eq!(c.get(at("/messages")).bearer_auth(&three).send().await.expect("h").status(), 404);
    let res = c.delete(at(&format!("/members/{two_id}"))).bearer_auth(&two).send().await.expect("leave");
    assert_eq!(res.status(), 204);
    assert_eq!(c.get(at("")).bearer_auth(&two).send().await.expect("h").status(), 404);
    let one_id = user_id(&server, &one).await;
    let res = c.delete(at(&format!("/members/{one_id}"))).bearer_auth(&one).send().await.expect("owner leaves");
    assert_eq!(res.status(), 409);

    let mut cmd = ward();
    cmd.args(["audit", "export", "--format", "jsonl", "--data-dir"]).arg(&dir.path);
    let trail = String::from_utf8_lossy(&run(cmd, None).stdout).to_string();
    for action in ["message.update", "message.delete", "receipt.read", "dialog.member_add", "dialog.member_remove"] {
        assert!(trail.contains(&format!("\"{action}\"")), "{action} recorded");
    }
    assert!(!trail.contains("second, edited") && !trail.contains("first, from two"), "no message text in the trail");
}

#[tokio::test]
async fn every_acknowledged_message_survives_kill_9() {
    let dir = data_dir();
    add_user(&dir.path, &[], "dur.one", "patient", "durable passphrase 1");
    add_user(&dir.path, &[], "dur.two", "patient", "durable passphrase 2");
    let server = Server::start(&dir.path, &["--no-tls"], &[]);
    let one = login(&server, "dur.one", "durable passphrase 1").await;
    let two = login(&server, "dur.two", "durable passphrase 2").await;
    let two_id = user_id(&server, &two).await;
    let res = server
        .client()
        .post(server.at("/v1/dialogs"))
        .bearer_auth(&one)
        .json(&json!({"type": "private", "members": [two_id]}))
        .send()
        .await
        .expect("dialog");
    let dialog = res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string();

    // 150 sends, 10 at a time (so commits are batched), each acknowledged with 201.
    let mut acknowledged = Vec::new();
    for round in 0..15 {
        let mut tasks = Vec::new();
        for i in 0..10 {
            let (c, url, token) = (server.client(), server.at(&format!("/v1/dialogs/{dialog}/messages")), one.clone());
            let body = format!("durable {}", round * 10 + i);
            tasks.push(tokio::spawn(async move {
                let res = c.post(url).bearer_auth(token).json(&json!({"body": body})).send().await.expect("send");
                assert_eq!(res.status(), 201);
                res.json::<Value>().await.expect("json")["seq"].as_i64().expect("seq")
            }));
        }
        for t in tasks {
            acknowledged.push(t.await.expect("join"));
        }
    }
    acknowledged.sort_unstable();
    assert_eq!(acknowledged, (1..=150).collect::<Vec<_>>(), "150 acknowledged, seq without gaps");

    signal(&server.child, "KILL");
    let _ = server.wait_exit();
    let server = Server::start(&dir.path, &["--no-tls"], &[]);
    let one = login(&server, "dur.one", "durable passphrase 1").await;
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = server
            .client()
            .get(server.at(&format!("/v1/dialogs/{dialog}/messages?after={after}&limit=200")))
            .bearer_auth(&one)
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("json");
        let messages = page["messages"].as_array().expect("messages").clone();
        seen.extend(messages.iter().map(|m| m["seq"].as_i64().expect("seq")));
        match page["next_cursor"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, (1..=150).collect::<Vec<_>>(), "every acknowledged message is there after kill -9");
}
