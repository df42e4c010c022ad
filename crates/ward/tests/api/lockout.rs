//! Brute-force protection over HTTP: account lockout with Retry-After, administrator
//! unlock, per-IP limits, and the password policy's refusals.

use crate::helpers::*;

#[tokio::test]
async fn repeated_failures_lock_the_account_until_unlocked() {
    let dir = data_dir();
    add_user(&dir.path, &[], "target", "staff", "the right passphrase");
    // Hard lock after 4 failures so the test stays short; the temporary lock starts at 3.
    let server = Server::start(
        &dir.path,
        &["--no-tls"],
        &[("WARD_AUTH_LOCKOUT_THRESHOLD", "3"), ("WARD_AUTH_HARD_LOCK_THRESHOLD", "4")],
    );
    let c = server.client();
    let attempt = |password: &'static str| {
        let c = c.clone();
        let url = server.at("/v1/auth/login");
        async move {
            c.post(url)
                .json(&serde_json::json!({"username": "target", "password": password}))
                .send()
                .await
                .expect("login")
        }
    };
    for _ in 0..3 {
        assert_eq!(attempt("wrong passphrase!").await.status(), 401);
    }
    let locked = attempt("the right passphrase").await;
    assert_eq!(locked.status(), 423, "temporarily locked: even the right password waits");
    let retry: u64 = locked.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!(retry >= 1);
    assert_eq!(error_code(locked).await, "account_locked");

    tokio::time::sleep(std::time::Duration::from_millis(1100 * retry)).await;
    assert_eq!(attempt("wrong passphrase!").await.status(), 401, "fourth failure: hard lock");
    let hard = attempt("the right passphrase").await;
    assert_eq!(hard.status(), 423);
    assert!(hard.headers().get("retry-after").is_none(), "a hard lock has no end");

    let mut cmd = ward();
    cmd.args(["user", "unlock", "target", "--data-dir"]).arg(&dir.path);
    assert!(run(cmd, None).status.success());
    assert_eq!(attempt("the right passphrase").await.status(), 200, "unlocked");
}

#[tokio::test]
async fn too_many_attempts_from_one_address_answer_429() {
    let dir = data_dir();
    let server = Server::start(&dir.path, &["--no-tls"], &[("WARD_AUTH_LOGIN_ATTEMPTS_PER_IP_PER_MINUTE", "3")]);
    let c = server.client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let res = c
            .post(server.at("/v1/auth/login"))
            .json(&serde_json::json!({"username": "nobody", "password": "whatever it is"}))
            .send()
            .await
            .expect("login");
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            assert!(res.headers().get("retry-after").is_some());
            assert_eq!(error_code(res).await, "rate_limited");
        }
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
}

#[test]
fn weak_and_short_passwords_are_refused_with_the_rule_that_failed() {
    let dir = data_dir();
    for (password, rule) in [
        ("short1", "at least 12 characters"),
        ("password1234", "too easy to guess"),
        ("qwertyuiopasdf", "too easy to guess"),
        ("mallory-2026-secure", "username"),
    ] {
        let mut cmd = ward();
        cmd.args(["user", "add", "mallory", "--role", "staff", "--password-stdin", "--data-dir"]).arg(&dir.path);
        let out = run(cmd, Some(&format!("{password}\n")));
        assert_eq!(out.status.code(), Some(1), "{password} refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(rule), "{password}: expected {rule:?} in {err}");
    }
}

#[tokio::test]
async fn a_hash_with_older_parameters_is_upgraded_at_sign_in_without_ending_sessions() {
    use sqlx::Connection as _;
    let dir = data_dir();
    let mut cmd = ward();
    cmd.args(["user", "add", "old.hash", "--role", "staff", "--password-stdin", "--data-dir"])
        .arg(&dir.path)
        .env("WARD_AUTH_ARGON2_MEMORY_KIB", "19456")
        .env("WARD_AUTH_ARGON2_ITERATIONS", "2");
    assert!(run(cmd, Some("an older passphrase 3\n")).status.success());
    let url = format!("sqlite://{}", dir.path.join("ward.db").display());
    let stored = || {
        let url = url.clone();
        async move {
            let mut conn = sqlx::sqlite::SqliteConnection::connect(&url).await.expect("open");
            let h: String =
                sqlx::query_scalar("SELECT password_hash FROM users").fetch_one(&mut conn).await.expect("hash");
            h
        }
    };
    assert!(stored().await.contains("m=19456,t=2"));
    let server = Server::plain(&dir.path);
    let first = login(&server, "old.hash", "an older passphrase 3").await;
    assert!(stored().await.contains("m=65536,t=3,p=1"), "upgraded to the configured parameters");
    let res = server.client().get(server.at("/v1/auth/session")).bearer_auth(&first).send().await.expect("s");
    assert_eq!(res.status(), 200, "the rehash ends no session");
    login(&server, "old.hash", "an older passphrase 3").await;
}
