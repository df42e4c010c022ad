//! The same binary on PostgreSQL: start-up, CLI, and two nodes sharing one database.

use ward_storage::testing::TempPostgres;

use crate::helpers::*;

#[tokio::test]
async fn serve_and_user_add_on_postgres_with_two_nodes() {
    let db = TempPostgres::create().await.expect("create test database");
    let cfg_dir = tempfile::tempdir().expect("tmp");
    let cfg = cfg_dir.path().join("ward.toml");
    // Nodes sharing a database share the checkpoint signing key and the keyring.
    let key = cfg_dir.path().join("signing.key");
    let keys = cfg_dir.path().join("keys");
    std::fs::write(
        &cfg,
        format!(
            "[database]\nurl = \"{}\"\n[audit]\nsigning_key_file = \"{}\"\n[keys]\nlocal_dir = \"{}\"\n",
            db.url,
            key.display(),
            keys.display()
        ),
    )
    .expect("config");
    let cfg = cfg.display().to_string();

    let (a_dir, b_dir) = (data_dir(), data_dir());
    let a = Server::start(&a_dir.path, &["--no-tls", "--config", &cfg], &[]);
    let b = Server::start(&b_dir.path, &["--no-tls", "--config", &cfg], &[]);

    let ready: serde_json::Value =
        a.client().get(a.at("/readyz")).send().await.expect("readyz").json().await.expect("json");
    assert_eq!(ready["database_backend"], "postgres");
    assert_eq!(ready["checks"]["database"]["status"], "ok");
    assert!(!a_dir.path.join("ward.db").exists(), "no SQLite file in PostgreSQL mode");

    // The CLI writes to the same database the servers use.
    add_user(&a_dir.path, &["--config", &cfg], "pg.doctor", "clinician", "postgres passphrase 1");
    let token = login(&a, "pg.doctor", "postgres passphrase 1").await;

    // A session made on node A is valid on node B, and a logout on B ends it on A within
    // the session-change feed's poll interval, although A holds it in its session cache.
    let res = a.client().get(a.at("/v1/auth/session")).bearer_auth(&token).send().await.expect("session on A");
    assert_eq!(res.status(), 200, "A now caches the session");
    let res = b.client().get(b.at("/v1/auth/session")).bearer_auth(&token).send().await.expect("session on B");
    assert_eq!(res.status(), 200);
    let res = b.client().post(b.at("/v1/auth/logout")).bearer_auth(&token).send().await.expect("logout on B");
    assert_eq!(res.status(), 204);
    let started = std::time::Instant::now();
    loop {
        let res = a.client().get(a.at("/v1/auth/session")).bearer_auth(&token).send().await.expect("session on A");
        if res.status() == 401 {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "node A never saw the logout made on B");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Both nodes append to one chain at once; it stays one gapless, verifiable sequence.
    let (ca, cb) = (a.client(), b.client());
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (c, url) =
            if i % 2 == 0 { (ca.clone(), a.at("/v1/auth/login")) } else { (cb.clone(), b.at("/v1/auth/login")) };
        tasks.push(tokio::spawn(async move {
            let body = serde_json::json!({"username": "pg.doctor", "password": "postgres passphrase 1"});
            c.post(url).json(&body).send().await.expect("login").status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), 200);
    }
    signal(&a.child, "TERM");
    assert_eq!(a.wait_exit().code(), Some(0));
    signal(&b.child, "TERM");
    assert_eq!(b.wait_exit().code(), Some(0));
    for node in [&a_dir, &b_dir] {
        let mut cmd = ward();
        cmd.args(["audit", "verify", "--config", &cfg, "--data-dir"]).arg(&node.path);
        let out = run(cmd, None);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("audit trail intact"), "{text}");
    }
}

/// Two nodes that share nothing but the database (and the audit signing key): the sealed
/// keyring lives in the database, so messages written on one node read on the other, also
/// after a rotation made from the command line.
#[tokio::test]
async fn two_nodes_share_the_sealed_keyring_through_the_database() {
    use serde_json::{Value, json};

    let db = TempPostgres::create().await.expect("create test database");
    let cfg_dir = tempfile::tempdir().expect("tmp");
    let cfg = cfg_dir.path().join("ward.toml");
    let key = cfg_dir.path().join("signing.key");
    std::fs::write(
        &cfg,
        format!(
            "[database]\nurl = \"{}\"\n[audit]\nsigning_key_file = \"{}\"\n[keys]\nkeyring = \"database\"\n",
            db.url,
            key.display()
        ),
    )
    .expect("config");
    let cfg = cfg.display().to_string();
    let env = [("WARD_MASTER_PASSPHRASE", "a shared passphrase for the database keyring")];
    let (a_dir, b_dir) = (data_dir(), data_dir());
    let a = Server::start(&a_dir.path, &["--no-tls", "--config", &cfg], &env);
    let b = Server::start(&b_dir.path, &["--no-tls", "--config", &cfg], &env);
    assert!(!a_dir.path.join("keys/keyring.json").exists() && !b_dir.path.join("keys/keyring.json").exists());

    for (name, pw) in [("db.one", "database passphrase 1"), ("db.two", "database passphrase 2")] {
        let mut cmd = ward();
        cmd.args(["user", "add", name, "--role", "patient", "--password-stdin", "--config", &cfg, "--data-dir"])
            .arg(&a_dir.path)
            .env(env[0].0, env[0].1);
        assert!(run(cmd, Some(&format!("{pw}\n"))).status.success());
    }
    let one = login(&a, "db.one", "database passphrase 1").await;
    let two_on_b = login(&b, "db.two", "database passphrase 2").await;
    let two_id = user_id(&b, &two_on_b).await;

    let dialog_on = |server: &Server, token: String, members: Vec<String>| {
        let (c, url) = (server.client(), server.at("/v1/dialogs"));
        async move {
            let res = c.post(url).bearer_auth(token).json(&json!({"type": "group", "members": members})).send().await;
            let res = res.expect("dialog");
            assert_eq!(res.status(), 201);
            res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string()
        }
    };
    let first = dialog_on(&a, one.clone(), vec![two_id.clone()]).await;
    send_message(&a, &one, &first, "written on node A").await;
    assert_eq!(message_bodies(&b, &two_on_b, &first).await, ["written on node A"]);

    let mut cmd = ward();
    cmd.args(["keys", "rotate", "--config", &cfg, "--data-dir"]).arg(&b_dir.path).env(env[0].0, env[0].1);
    let out = run(cmd, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Node A's CLI sees both versions in the database keyring, version 2 active.
    let mut cmd = ward();
    cmd.args(["keys", "status", "--config", &cfg, "--data-dir"]).arg(&a_dir.path).env(env[0].0, env[0].1);
    let out = run(cmd, None);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let active: Vec<&str> = text.lines().filter(|l| l.contains("active") && !l.contains("decrypt")).collect();
    assert!(active.len() == 1 && active[0].starts_with('2'), "version 2 is active: {text}");
    // A dialog made on B after the rotation gets a data key wrapped by version 2; node A,
    // which loaded version 1 only, finds version 2 in the database when it meets it.
    let one_id = user_id(&a, &one).await;
    let after = dialog_on(&b, two_on_b.clone(), vec![one_id]).await;
    send_message(&b, &two_on_b, &after, "written on node B after rotation").await;
    assert_eq!(message_bodies(&a, &one, &after).await, ["written on node B after rotation"]);
    assert_eq!(message_bodies(&a, &one, &first).await, ["written on node A"]);

    for (server, node) in [(a, &a_dir), (b, &b_dir)] {
        signal(&server.child, "TERM");
        assert_eq!(server.wait_exit().code(), Some(0));
        assert!(!node.path.join("keys/keyring.json").exists(), "no keyring file on any node");
    }
}

const PUSH_SECRET: &str = "the push secret of this two-node test";

/// Two nodes on one PostgreSQL database and NATS: a message sent through node A reaches a
/// WebSocket on node B; what crosses NATS is sealed. Node A knows the member is online on
/// node B (presence over NATS), so no push notification goes out until they disconnect.
#[tokio::test]
async fn events_cross_nodes_over_nats_sealed() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use serde_json::{Value, json};
    use tokio_tungstenite::tungstenite::Message;

    let db = TempPostgres::create().await.expect("create test database");
    let cfg_dir = tempfile::tempdir().expect("tmp");
    let cfg = cfg_dir.path().join("ward.toml");
    let subject = format!("ward.test.{}", uuid::Uuid::now_v7().simple());
    let (push_url, pushes) = webhook_receiver(Vec::new()).await;
    std::fs::write(
        &cfg,
        format!(
            "[database]\nurl = \"{}\"\n[audit]\nsigning_key_file = \"{}\"\n[keys]\nlocal_dir = \"{}\"\n\
             [cluster]\nnats_url = \"nats://127.0.0.1:4222\"\nnats_subject = \"{subject}\"\n\
             [messaging]\npush_webhook_url = \"{push_url}\"\npush_webhook_secret = \"{PUSH_SECRET}\"\n",
            db.url,
            cfg_dir.path().join("signing.key").display(),
            cfg_dir.path().join("keys").display()
        ),
    )
    .expect("config");
    let cfg = cfg.display().to_string();
    let eavesdropper = async_nats::connect("nats://127.0.0.1:4222").await.expect("NATS at 127.0.0.1:4222");
    let mut tap = eavesdropper.subscribe(subject.clone()).await.expect("subscribe");
    let mut presence_tap = eavesdropper.subscribe(format!("{subject}.presence")).await.expect("subscribe");

    let (a_dir, b_dir) = (data_dir(), data_dir());
    let a = Server::start(&a_dir.path, &["--no-tls", "--config", &cfg], &[]);
    let b = Server::start(&b_dir.path, &["--no-tls", "--config", &cfg], &[]);
    add_user(&a_dir.path, &["--config", &cfg], "nats.one", "patient", "nats passphrase 1");
    add_user(&a_dir.path, &["--config", &cfg], "nats.two", "patient", "nats passphrase 2");
    let one = login(&a, "nats.one", "nats passphrase 1").await;
    let two = login(&b, "nats.two", "nats passphrase 2").await; // a session made on B

    let url = format!("{}/v1/ws", b.url.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket on node B");
    ws.send(Message::text(json!({"type": "auth", "token": two}).to_string())).await.expect("auth");
    type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
    async fn next(ws: &mut Ws) -> Result<Value, tokio::time::error::Elapsed> {
        let frame = async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => return serde_json::from_str::<Value>(&t).expect("json"),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("unexpected {other:?}"),
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), frame).await
    }
    let ready = next(&mut ws).await.expect("ready in time");
    assert_eq!(ready["type"], "ready");
    let two_id = ready["user_id"].as_str().expect("id").to_string();
    // Node B reports its connected users within a second, sealed: no user id in clear.
    let mut reports = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_millis(1500), async {
        while let Some(m) = presence_tap.next().await {
            reports.push(String::from_utf8_lossy(&m.payload).to_string());
        }
    })
    .await;
    assert!(!reports.is_empty(), "presence reports cross NATS");
    let two_bytes = *uuid::Uuid::parse_str(&two_id).expect("uuid").as_bytes();
    for text in &reports {
        use base64::Engine as _;
        let envelope: Value = serde_json::from_str(text).expect("an envelope");
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(envelope["sealed"].as_str().expect("sealed"))
            .expect("base64");
        assert!(!text.contains(&two_id), "{text}");
        assert!(!sealed.windows(16).any(|w| w == two_bytes), "the user id is not in clear in the sealed report");
    }

    let secret = format!("NATS-MARKER-{}", uuid::Uuid::now_v7().simple());
    let res = a
        .client()
        .post(a.at("/v1/dialogs"))
        .bearer_auth(&one)
        .json(&json!({"type": "private", "members": [two_id]}))
        .send()
        .await
        .expect("dialog on A");
    let dialog = res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string();
    assert_eq!(next(&mut ws).await.expect("dialog.created in time")["type"], "dialog.created");
    send_message(&a, &one, &dialog, &secret).await;
    let event = next(&mut ws).await.expect("message.created reached node B");
    assert_eq!(
        (event["type"].as_str(), event["message"]["body"].as_str()),
        (Some("message.created"), Some(secret.as_str()))
    );

    // What crossed NATS: two envelopes, ids and ciphertext only.
    for _ in 0..2 {
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), tap.next()).await.expect("in time");
        let payload = seen.expect("a relayed event").payload;
        let text = String::from_utf8_lossy(&payload);
        assert!(text.contains("\"sealed\"") && !text.contains(&secret) && !text.contains("message.created"), "{text}");
    }

    // Online on node B: node A sent no push. Offline everywhere: it does.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(pushes.lock().expect("lock").is_empty(), "no push for a member online on another node");
    drop(ws);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    send_message(&a, &one, &dialog, &secret).await;
    let got = webhook_calls(&pushes, 1).await;
    assert_eq!(got.len(), 1, "one push for the member now offline");
    let push: Value = serde_json::from_str(&got[0].1).expect("json");
    assert_eq!(push["recipient_ids"], json!([two_id]));
    assert!(signed(&got[0].0, &got[0].1, PUSH_SECRET) && !got[0].1.contains(&secret));
    for server in [a, b] {
        signal(&server.child, "TERM");
        assert_eq!(server.wait_exit().code(), Some(0));
    }
}
