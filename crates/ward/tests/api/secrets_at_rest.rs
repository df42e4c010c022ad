//! No credential is kept in plaintext: after sign-ins, MFA enrollment and an API key, a
//! byte scan of the whole data dir (database, WAL, keyring, audit files) and the server's
//! log finds no password, session token, MFA secret, recovery code or API key.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::helpers::*;

pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry")) {
        let path = entry.path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

/// Base32 (RFC 4648, no padding) to bytes, for the TOTP secret.
fn base32(s: &str) -> Vec<u8> {
    let (mut bits, mut acc, mut out) = (0u32, 0u64, Vec::new());
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => continue,
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test]
async fn no_password_token_secret_or_key_is_stored_or_logged_in_plaintext() {
    let dir = data_dir();
    let passwords = ["Marker-Admin-Pass 7731", "Marker-Clin-Pass 8842", "Marker-Svc-Pass 9953"];
    add_user(&dir.path, &[], "sec.admin", "admin", passwords[0]);
    add_user(&dir.path, &[], "sec.clin", "clinician", passwords[1]);
    add_user(&dir.path, &[], "sec.bot", "service", passwords[2]);
    let server = Server::start(
        &dir.path,
        &["--no-tls"],
        &[("WARD_MASTER_PASSPHRASE", "a test passphrase for the keyring"), ("WARD_LOG_LEVEL", "trace")],
    );
    let c = server.client();

    let mut secrets: Vec<Vec<u8>> = passwords.iter().map(|p| p.as_bytes().to_vec()).collect();
    let admin = login(&server, "sec.admin", passwords[0]).await;
    // Enroll the clinician by hand to capture the TOTP secret and recovery codes.
    let first = login_answer(&server, "sec.clin", passwords[1]).await;
    let clin = first["token"].as_str().expect("token").to_string();
    let res = c.post(server.at("/v1/auth/mfa/totp/enroll")).bearer_auth(&clin).send().await.expect("enroll");
    let secret = res.json::<Value>().await.expect("json")["secret"].as_str().expect("secret").to_string();
    let step = time::OffsetDateTime::now_utc().unix_timestamp() / 30;
    let code = ward_auth::mfa::totp_code(&secret, time::OffsetDateTime::from_unix_timestamp(step * 30).expect("t"))
        .expect("code");
    let res = c
        .post(server.at("/v1/auth/mfa/totp/confirm"))
        .bearer_auth(&clin)
        .json(&json!({"code": code}))
        .send()
        .await
        .expect("confirm");
    let codes: Value = res.json().await.expect("json");
    remember_totp(&server, "sec.clin", &secret, step);
    let again = login(&server, "sec.clin", passwords[1]).await;

    let users: Value =
        c.get(server.at("/v1/users")).bearer_auth(&admin).send().await.expect("users").json().await.expect("json");
    let bot = users["users"].as_array().expect("users").iter().find(|u| u["username"] == "sec.bot").expect("bot")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let res = c
        .post(server.at(&format!("/v1/users/{bot}/api-keys")))
        .bearer_auth(&admin)
        .json(&json!({"name": "scan", "role": "service"}))
        .send()
        .await
        .expect("key");
    let key = res.json::<Value>().await.expect("json")["key"].as_str().expect("key").to_string();
    let res = c.get(server.at("/v1/auth/session")).bearer_auth(&key).send().await.expect("use key");
    assert_eq!(res.status(), 200);

    for token in [&admin, &clin, &again, &key] {
        secrets.push(token.as_bytes().to_vec());
    }
    secrets.push(secret.as_bytes().to_vec());
    let raw_secret = base32(&secret);
    assert_eq!(raw_secret.len(), 20, "160-bit TOTP secret");
    secrets.push(base64::engine::general_purpose::STANDARD.encode(&raw_secret).into_bytes());
    secrets.push(raw_secret);
    for code in codes["recovery_codes"].as_array().expect("codes") {
        let code = code.as_str().expect("code");
        secrets.push(code.as_bytes().to_vec());
        secrets.push(code.replace('-', "").into_bytes());
    }

    // Scan while running (WAL not yet checkpointed) and after a clean stop.
    let scan = |when: &str, log: &str| {
        let files = files_under(&dir.path);
        assert!(files.iter().any(|f| f.ends_with("ward.db")), "the scan sees the database");
        assert!(files.iter().any(|f| f.ends_with("keyring.json")), "and the keyring");
        for file in &files {
            let bytes = std::fs::read(file).expect("read");
            for s in &secrets {
                assert!(
                    !bytes.windows(s.len()).any(|w| w == s.as_slice()),
                    "{when}: {} holds a secret in plaintext ({} bytes)",
                    file.display(),
                    s.len()
                );
            }
        }
        for s in &secrets {
            let text = String::from_utf8_lossy(s);
            assert!(!log.contains(text.as_ref()), "{when}: the log holds a secret");
        }
    };
    scan("running", &server.stderr());
    let log_before_stop = server.stderr();
    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
    scan("stopped", &log_before_stop);
}
