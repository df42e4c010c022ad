//! `ward user …` on the data dir of a running server.

use crate::helpers::*;

fn user_cmd(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut cmd = ward();
    cmd.arg("user").args(args).arg("--data-dir").arg(dir);
    run(cmd, stdin)
}

#[tokio::test]
async fn admin_commands_work_while_the_server_runs() {
    let dir = data_dir();
    let server = Server::plain(&dir.path);
    let c = server.client();

    // Add with a generated password, printed once.
    let out = user_cmd(&dir.path, &["add", "Nurse.Joy", "--role", "clinician"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let password =
        stdout.lines().find_map(|l| l.strip_prefix("password: ")).expect("generated password printed").to_string();
    assert!(password.len() >= 20);

    // Usernames are unique ignoring case.
    let dup = user_cmd(&dir.path, &["add", "nurse.joy", "--role", "staff"], None);
    assert_eq!(dup.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already taken"));

    // The running server sees the new user at once.
    let token = login(&server, "nurse.joy", &password).await;
    let me: serde_json::Value = c
        .get(server.at("/v1/auth/session"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("json");
    assert_eq!(me["user"]["username"], "Nurse.Joy");
    assert_eq!(me["roles"], serde_json::json!(["clinician"]));

    let list = user_cmd(&dir.path, &["list", "--json"], None);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains("\"username\":\"Nurse.Joy\""), "{listed}");

    // A weak password is refused with the rule it broke.
    let weak = user_cmd(&dir.path, &["reset-password", "nurse.joy", "--password-stdin"], Some("short\n"));
    assert_eq!(weak.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 12 characters"));

    // Reset ends existing sessions; the new password works.
    let reset =
        user_cmd(&dir.path, &["reset-password", "nurse.joy", "--password-stdin"], Some("a brand new passphrase\n"));
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    assert_eq!(refused_soon(&server, &token).await, "session_expired");
    let token = login(&server, "nurse.joy", "a brand new passphrase").await;

    // Disable ends every session and blocks sign-in.
    let off = user_cmd(&dir.path, &["disable", "NURSE.JOY"], None);
    assert!(off.status.success());
    let res = c.get(server.at("/v1/auth/session")).bearer_auth(&token).send().await.expect("session");
    assert!(res.status() == 200 || res.status() == 401, "cached for at most the feed's poll interval");
    refused_soon(&server, &token).await;
    let res = c
        .post(server.at("/v1/auth/login"))
        .json(&serde_json::json!({"username": "nurse.joy", "password": "a brand new passphrase"}))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 401);

    let unlock = user_cmd(&dir.path, &["unlock", "nurse.joy"], None);
    assert!(unlock.status.success());
    let missing = user_cmd(&dir.path, &["disable", "nobody"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such user"));
}

#[tokio::test]
async fn logout_kills_the_token_at_once() {
    let dir = data_dir();
    add_user(&dir.path, &[], "outgoing", "patient", "patient passphrase 1");
    let server = Server::plain(&dir.path);
    let c = server.client();
    let token = login(&server, "outgoing", "patient passphrase 1").await;
    let res = c.post(server.at("/v1/auth/logout")).bearer_auth(&token).send().await.expect("logout");
    assert_eq!(res.status(), 204);
    let res = c.get(server.at("/v1/auth/session")).bearer_auth(&token).send().await.expect("session");
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "session_expired");
}
