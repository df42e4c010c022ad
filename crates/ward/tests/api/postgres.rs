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
