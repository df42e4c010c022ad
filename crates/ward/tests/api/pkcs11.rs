//! The `pkcs11` key store end to end against SoftHSM2 (Debian package softhsm2, installed
//! by `.ci/run`): users, MFA, messages and the audit signing key under master keys that
//! live in the token; rotation over the API with rewrap; a restart; no local keyring.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::helpers::*;
use crate::secrets_at_rest::files_under;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "ward-test-pin-1234";

/// A SoftHSM2 token in its own temp dir; `env` points a process at it.
struct Token {
    _dir: tempfile::TempDir,
    conf: PathBuf,
    label: String,
}

impl Token {
    fn new() -> Token {
        assert!(
            Path::new(MODULE).exists(),
            "SoftHSM2 is missing ({MODULE}): install it with `apt-get install -y softhsm2` (.ci/run does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
        )
        .expect("conf");
        let label = format!("ward-e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let out = std::process::Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", &label, "--pin", PIN, "--so-pin", "ward-test-so-5678"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("run softhsm2-util (apt-get install -y softhsm2)");
        assert!(out.status.success(), "init token: {}", String::from_utf8_lossy(&out.stderr));
        Token { _dir: dir, conf, label }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SOFTHSM2_CONF", self.conf.display().to_string()),
            ("WARD_KEYS_BACKEND", "pkcs11".into()),
            ("WARD_KEYS_PKCS11_MODULE", MODULE.into()),
            ("WARD_KEYS_PKCS11_TOKEN_LABEL", self.label.clone()),
            ("WARD_KEYS_PKCS11_PIN", PIN.into()),
        ]
    }
}

fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn add_user_with(dir: &Path, env: &[(&'static str, String)], name: &str, role: &str, password: &str) {
    let mut cmd = ward();
    cmd.args(["user", "add", name, "--role", role, "--password-stdin", "--data-dir"]).arg(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(cmd, Some(&format!("{password}\n")));
    assert!(out.status.success(), "user add: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn softhsm2_holds_the_master_keys_end_to_end_through_rotation_and_restart() {
    let token = Token::new();
    let env = token.env();
    let dir = data_dir();
    add_user_with(&dir.path, &env, "hsm.admin", "admin", "admin passphrase 61");
    add_user_with(&dir.path, &env, "hsm.pat", "patient", "patient passphrase 62");
    add_user_with(&dir.path, &env, "hsm.pat2", "patient", "patient passphrase 63");
    let server = Server::start(&dir.path, &["--no-tls"], &pairs(&env));
    let c = server.client();
    let admin = login(&server, "hsm.admin", "admin passphrase 61").await; // MFA secret under a data key
    let pat = login(&server, "hsm.pat", "patient passphrase 62").await;
    let pat2 = login(&server, "hsm.pat2", "patient passphrase 63").await;
    let pat2_id = user_id(&server, &pat2).await;

    let marker = format!("HSM-MARKER-{}", uuid::Uuid::new_v4().simple());
    let res = c
        .post(server.at("/v1/dialogs"))
        .bearer_auth(&pat)
        .json(&json!({"type": "private", "members": [pat2_id]}))
        .send()
        .await
        .expect("dialog");
    assert_eq!(res.status(), 201);
    let dialog = res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string();
    let mut expected = Vec::new();
    for i in 0..5 {
        let body = format!("{marker} before rotation {i}");
        let res = c
            .post(server.at(&format!("/v1/dialogs/{dialog}/messages")))
            .bearer_auth(&pat)
            .json(&json!({"body": body}))
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 201);
        expected.push(body);
    }

    let status: Value =
        c.get(server.at("/v1/admin/keys")).bearer_auth(&admin).send().await.expect("keys").json().await.expect("json");
    assert_eq!(status["backend"], "pkcs11", "{status}");
    assert_eq!(status["active_version"], 1);
    let res = c.post(server.at("/v1/admin/keys/rotate")).bearer_auth(&admin).send().await.expect("rotate");
    assert_eq!(res.status(), 202);
    let started = std::time::Instant::now();
    loop {
        let s: Value =
            c.get(server.at("/v1/admin/keys")).bearer_auth(&admin).send().await.expect("keys").json().await.expect("j");
        if s["pending_rewrap"] == 0 && s["active_version"] == 2 {
            assert_eq!(s["versions"][0]["data_keys"], 0, "{s}");
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "rewrap did not finish: {s}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let body = format!("{marker} after rotation");
    let res = c
        .post(server.at(&format!("/v1/dialogs/{dialog}/messages")))
        .bearer_auth(&pat2)
        .json(&json!({"body": body}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);
    expected.push(body);
    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));

    // After a restart every key comes back from the token: sign-in with the peppered
    // password and the MFA secret, the sealed audit signing key, old and new messages.
    let server = Server::start(&dir.path, &["--no-tls"], &pairs(&env));
    login(&server, "hsm.admin", "admin passphrase 61").await;
    let pat2 = login(&server, "hsm.pat2", "patient passphrase 63").await;
    assert_eq!(message_bodies(&server, &pat2, &dialog).await, expected);
    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));

    let files = files_under(&dir.path);
    assert!(!files.iter().any(|f| f.ends_with("keyring.json")), "no local keyring with the pkcs11 backend");
    for file in &files {
        let bytes = std::fs::read(file).expect("read");
        assert!(!bytes.windows(marker.len()).any(|w| w == marker.as_bytes()), "{} holds plaintext", file.display());
    }

    // A wrong PIN stops start-up with a clear error.
    let mut cmd = ward();
    cmd.args(["serve", "--no-tls", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&dir.path);
    for (k, v) in &env {
        cmd.env(k, if *k == "WARD_KEYS_PKCS11_PIN" { "a-wrong-pin" } else { v.as_str() });
    }
    let out = run(cmd, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("PIN"), "names the PIN: {err}");
}
