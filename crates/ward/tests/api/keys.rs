//! Master keys over the CLI and the API: status, rotation with background rewrap, data
//! still readable after rotation and restart, a wrong passphrase refused at start.

use serde_json::Value;

use crate::helpers::*;

fn keys_cmd(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = ward();
    cmd.arg("keys").args(args).arg("--data-dir").arg(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd, None)
}

async fn key_status(server: &Server, admin: &str) -> Value {
    let res = server.client().get(server.at("/v1/admin/keys")).bearer_auth(admin).send().await.expect("keys");
    assert_eq!(res.status(), 200);
    res.json().await.expect("json")
}

#[tokio::test]
async fn rotation_rewraps_every_data_key_and_everything_still_opens_after_a_restart() {
    let dir = data_dir();
    let env = [("WARD_MASTER_PASSPHRASE", "keys test passphrase")];
    add_user(&dir.path, &[], "key.admin", "admin", "admin passphrase 71");
    let mut cmd = ward();
    cmd.args(["user", "add", "dr.key", "--role", "clinician", "--password-stdin", "--data-dir"]).arg(&dir.path);
    cmd.env(env[0].0, env[0].1);
    assert!(run(cmd, Some("clinician passphrase 72\n")).status.success());
    let server = Server::start(&dir.path, &["--no-tls"], &env);
    let admin = login(&server, "key.admin", "admin passphrase 71").await; // enrolls: a data key for the admin
    login(&server, "dr.key", "clinician passphrase 72").await; // and one for the clinician

    let status = key_status(&server, &admin).await;
    assert_eq!(status["backend"], "local");
    assert_eq!(status["active_version"], 1);
    assert!(status["warnings"].as_array().expect("warnings").is_empty(), "a sealed keyring has no warning");
    let wrapped_v1 = status["versions"][0]["data_keys"].as_i64().expect("count");
    assert!(wrapped_v1 >= 3, "the pepper and two users' keys: {status}");

    // Rotate over the API: 202 at once, the rewrap finishes in the background.
    let res =
        server.client().post(server.at("/v1/admin/keys/rotate")).bearer_auth(&admin).send().await.expect("rotate");
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.expect("json")["version"], 2);
    let started = std::time::Instant::now();
    let status = loop {
        let s = key_status(&server, &admin).await;
        if s["pending_rewrap"] == 0 {
            break s;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "rewrap did not finish: {s}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(status["versions"][0]["state"], "decrypt_only");
    assert_eq!(status["versions"][0]["data_keys"], 0);
    assert_eq!(status["versions"][1]["state"], "active");
    assert_eq!(status["versions"][1]["data_keys"].as_i64(), Some(wrapped_v1));

    // Rotate from the command line while the server runs.
    let out = keys_cmd(&dir.path, &["rotate"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("created master key version 3") && text.contains(&format!("rewrapped {wrapped_v1}")),
        "{text}"
    );

    // Passwords (peppered) and MFA secrets (under rewrapped user keys) still work, before
    // and after a restart.
    login(&server, "dr.key", "clinician passphrase 72").await;
    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
    let server = Server::start(&dir.path, &["--no-tls"], &env);
    let admin = login(&server, "key.admin", "admin passphrase 71").await;
    login(&server, "dr.key", "clinician passphrase 72").await;
    let status = key_status(&server, &admin).await;
    assert_eq!((status["active_version"].clone(), status["pending_rewrap"].clone()), (3.into(), 0.into()));

    let out = keys_cmd(&dir.path, &["status"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("backend: local") && text.contains("active"), "{text}");

    // Every key operation is in the trail.
    let mut cmd = ward();
    cmd.args(["audit", "export", "--format", "jsonl", "--data-dir"]).arg(&dir.path).env(env[0].0, env[0].1);
    let trail = String::from_utf8_lossy(&run(cmd, None).stdout).to_string();
    assert_eq!(trail.matches("\"keys.rotate\"").count(), 2, "two rotations recorded");
    assert!(trail.contains("\"keys.rewrap\""));
}

#[tokio::test]
async fn a_wrong_or_missing_passphrase_stops_start_up_with_a_clear_error() {
    let dir = data_dir();
    add_user(&dir.path, &[], "someone", "staff", "staff passphrase 73"); // unsealed keyring
    let server = Server::start(&dir.path, &["--no-tls"], &[("WARD_MASTER_PASSPHRASE", "the right passphrase")]);
    let ready: Value = server.client().get(server.at("/readyz")).send().await.expect("ready").json().await.expect("j");
    assert_eq!(ready["checks"]["key_store"]["status"], "ok", "{ready}");
    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
    let keyring = std::fs::read_to_string(dir.path.join("keys/keyring.json")).expect("keyring");
    assert!(keyring.contains("\"sealed\": true") || keyring.contains("\"sealed\":true"), "sealed now: {keyring}");

    for env in [vec![("WARD_MASTER_PASSPHRASE", "a wrong passphrase")], vec![]] {
        let mut cmd = ward();
        cmd.args(["serve", "--no-tls", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&dir.path);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = run(cmd, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("WARD_MASTER_PASSPHRASE"), "names the passphrase: {err}");
    }
}
