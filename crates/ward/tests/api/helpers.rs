//! Spawning `ward` processes and talking to them.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

pub const WARD: &str = env!("CARGO_BIN_EXE_ward");

/// A fresh data dir inside a temp dir (the data dir itself does not exist yet).
pub struct DataDir {
    _root: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn data_dir() -> DataDir {
    let root = tempfile::tempdir().expect("tempdir");
    let path = root.path().join("data");
    DataDir { _root: root, path }
}

/// A `ward` command with the test environment: no stray WARD_* settings leak in.
pub fn ward() -> Command {
    let mut cmd = Command::new(WARD);
    for (k, _) in std::env::vars() {
        if k.starts_with("WARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Runs a command to completion with `stdin` fed in.
pub fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ward");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait")
}

/// A running `ward serve`.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `ward serve --data-dir DIR --listen 127.0.0.1:0 EXTRA…` and waits for the
    /// `ward listening on` line.
    pub fn start(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = ward();
        cmd.arg("serve").arg("--data-dir").arg(data_dir).args(["--listen", "127.0.0.1:0"]).args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Server::spawn_with(cmd, data_dir.to_path_buf())
    }

    /// Spawns a prepared `ward serve` command and waits for its listening line.
    pub fn spawn_with(mut cmd: Command, data_dir: PathBuf) -> Server {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ward serve");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("ward listening on ") {
                    let _ = tx.send(url.to_string());
                }
                sink.lock().expect("lock").push(line);
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("ward did not start; stderr:\n{}", lines.lock().expect("lock").join("\n"));
            }
        };
        Server { child, url, data_dir, stderr: lines }
    }

    pub fn plain(data_dir: &Path) -> Server {
        Server::start(data_dir, &["--no-tls"], &[])
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// An HTTP client that trusts this server's certificate (if it uses TLS).
    pub fn client(&self) -> reqwest::Client {
        install_crypto();
        let mut b = reqwest::Client::builder().use_rustls_tls().timeout(Duration::from_secs(30));
        if self.url.starts_with("https") {
            let pem = std::fs::read(self.data_dir.join("tls/cert.pem")).expect("cert");
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"));
        }
        b.build().expect("client")
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Waits for the process to exit (after a signal) and returns its status.
    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        let status = wait_timeout(&mut self.child, Duration::from_secs(30));
        std::mem::forget(self);
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().expect("kill");
    assert!(ok.success(), "kill -{name} failed");
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Creates a user through the CLI with a known password.
pub fn add_user(data_dir: &Path, extra: &[&str], name: &str, role: &str, password: &str) {
    let mut cmd = ward();
    cmd.args(["user", "add", name, "--role", role, "--password-stdin", "--data-dir"]).arg(data_dir).args(extra);
    let out = run(cmd, Some(&format!("{password}\n")));
    assert!(out.status.success(), "user add failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// TOTP secrets of the users that tests enrolled, by (data dir, username), with the
/// newest time step used (a code is accepted once).
static TOTP: Mutex<Vec<(String, String, String, i64)>> = Mutex::new(Vec::new());

/// A TOTP code for `secret` not used before by these tests: the current step, or the one
/// after it (accepted as clock skew), waiting for a later step when both were spent.
pub fn next_totp_code(server: &Server, name: &str) -> String {
    let key = (server.data_dir.display().to_string(), name.to_lowercase());
    loop {
        let now = time::OffsetDateTime::now_utc();
        let step = now.unix_timestamp() / 30;
        let mut all = TOTP.lock().expect("lock");
        let entry = all.iter_mut().find(|e| (e.0.as_str(), e.1.as_str()) == (key.0.as_str(), key.1.as_str()));
        let entry = entry.expect("this user enrolled TOTP through the helpers");
        let next = (entry.3 + 1).max(step);
        if next <= step + 1 {
            entry.3 = next;
            let at = time::OffsetDateTime::from_unix_timestamp(next * 30).expect("time");
            return ward_auth::mfa::totp_code(&entry.2, at).expect("code");
        }
        drop(all);
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Remembers a user's TOTP secret and the step its confirmation code used.
pub fn remember_totp(server: &Server, name: &str, secret: &str, used_step: i64) {
    let mut all = TOTP.lock().expect("lock");
    let dir = server.data_dir.display().to_string();
    all.retain(|e| (e.0.as_str(), e.1.as_str()) != (dir.as_str(), name.to_lowercase().as_str()));
    all.push((dir, name.to_lowercase(), secret.to_string(), used_step));
}

/// Enrolls TOTP for the session `token` of `name` and returns the recovery codes.
pub async fn enroll_totp(server: &Server, token: &str, name: &str) -> Vec<String> {
    let c = server.client();
    let res = c.post(server.at("/v1/auth/mfa/totp/enroll")).bearer_auth(token).send().await.expect("enroll");
    assert_eq!(res.status(), 200, "enroll");
    let body: serde_json::Value = res.json().await.expect("json");
    let secret = body["secret"].as_str().expect("secret").to_string();
    let step = time::OffsetDateTime::now_utc().unix_timestamp() / 30;
    let at = time::OffsetDateTime::from_unix_timestamp(step * 30).expect("time");
    let code = ward_auth::mfa::totp_code(&secret, at).expect("code");
    let res = c
        .post(server.at("/v1/auth/mfa/totp/confirm"))
        .bearer_auth(token)
        .json(&serde_json::json!({"code": code}))
        .send()
        .await
        .expect("confirm");
    assert_eq!(res.status(), 200, "confirm");
    remember_totp(server, name, &secret, step);
    let body: serde_json::Value = res.json().await.expect("json");
    body["recovery_codes"].as_array().expect("codes").iter().map(|c| c.as_str().expect("str").to_string()).collect()
}

/// The raw answer to a password sign-in.
pub async fn login_answer(server: &Server, name: &str, password: &str) -> serde_json::Value {
    let res = server
        .client()
        .post(server.at("/v1/auth/login"))
        .json(&serde_json::json!({"username": name, "password": password}))
        .send()
        .await
        .expect("login request");
    assert_eq!(res.status(), 200, "login failed");
    res.json().await.expect("json")
}

/// Signs in and returns a full session token, passing MFA as a user would: a user whose
/// role requires MFA enrolls on first sign-in, and later sign-ins send a TOTP code.
pub async fn login(server: &Server, name: &str, password: &str) -> String {
    let body = login_answer(server, name, password).await;
    if body["mfa_required"] == true {
        let code = next_totp_code(server, name);
        let res = server
            .client()
            .post(server.at("/v1/auth/mfa"))
            .json(&serde_json::json!({"mfa_token": body["mfa_token"], "code": code}))
            .send()
            .await
            .expect("mfa request");
        assert_eq!(res.status(), 200, "mfa step failed");
        let body: serde_json::Value = res.json().await.expect("json");
        return body["token"].as_str().expect("token").to_string();
    }
    let token = body["token"].as_str().expect("token").to_string();
    if body["mfa_enrollment_required"] == true {
        enroll_totp(server, &token, name).await;
    }
    token
}

/// Asserts the contract's error shape and returns the code.
pub async fn error_code(res: reqwest::Response) -> String {
    let header_id = res.headers().get("x-request-id").map(|v| v.to_str().expect("ascii").to_string());
    let body: serde_json::Value = res.json().await.expect("error body is JSON");
    let err = &body["error"];
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "message present: {body}");
    assert_eq!(err["request_id"].as_str().map(str::to_string), header_id, "request id in body and header");
    err["code"].as_str().expect("code").to_string()
}

/// Waits (up to 5 s) until `token` is refused with 401 and returns the error code. A
/// change made by another process (a CLI command, another node) reaches a server's
/// session cache through the session-change feed, polled every 250 ms.
pub async fn refused_soon(server: &Server, token: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let res = server.client().get(server.at("/v1/auth/session")).bearer_auth(token).send().await.expect("session");
        if res.status() == 401 {
            return error_code(res).await;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the token was still accepted after 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The signed-in user's id.
pub async fn user_id(server: &Server, token: &str) -> String {
    let res = server.client().get(server.at("/v1/auth/session")).bearer_auth(token).send().await.expect("session");
    res.json::<serde_json::Value>().await.expect("json")["user"]["id"].as_str().expect("id").to_string()
}

/// Sends a message and expects 201; returns the message.
pub async fn send_message(server: &Server, token: &str, dialog: &str, body: &str) -> serde_json::Value {
    let res = server
        .client()
        .post(server.at(&format!("/v1/dialogs/{dialog}/messages")))
        .bearer_auth(token)
        .json(&serde_json::json!({ "body": body }))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);
    res.json().await.expect("json")
}

/// The bodies of a dialog's first 200 messages, in `seq` order (expects 200).
pub async fn message_bodies(server: &Server, token: &str, dialog: &str) -> Vec<String> {
    let res = server
        .client()
        .get(server.at(&format!("/v1/dialogs/{dialog}/messages?limit=200")))
        .bearer_auth(token)
        .send()
        .await
        .expect("history");
    assert_eq!(res.status(), 200);
    let page: serde_json::Value = res.json().await.expect("json");
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["body"].as_str().expect("body").to_string())
        .collect()
}

/// What a webhook receiver got: headers by lower-case name, and the raw body, per call.
pub type WebhookCalls = Arc<Mutex<Vec<(std::collections::HashMap<String, String>, String)>>>;

/// A local webhook receiver: answers each call with the next of `statuses` (then 200) and
/// keeps what it received (headers by lower-case name, raw body).
pub async fn webhook_receiver(statuses: Vec<u16>) -> (String, WebhookCalls) {
    let calls: WebhookCalls = Arc::default();
    let plan = Arc::new(Mutex::new(std::collections::VecDeque::from(statuses)));
    let (seen, script) = (calls.clone(), plan.clone());
    let app = axum::Router::new().route(
        "/push",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (seen, script) = (seen.clone(), script.clone());
            async move {
                let headers = headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                    .collect();
                seen.lock().expect("lock").push((headers, body));
                let status = script.lock().expect("lock").pop_front().unwrap_or(200);
                axum::http::StatusCode::from_u16(status).expect("status")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/push", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (url, calls)
}

/// Checks `Ward-Signature: t=…,v1=…` against the secret and the raw body.
pub fn signed(headers: &std::collections::HashMap<String, String>, body: &str, secret: &str) -> bool {
    let Some(sig) = headers.get("ward-signature") else { return false };
    let mut t = None;
    let mut v1 = None;
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    let fresh = (time::OffsetDateTime::now_utc().unix_timestamp() - t).abs() < 300;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    fresh && aws_lc_rs::hmac::verify(&key, format!("{t}.{body}").as_bytes(), &v1).is_ok()
}

/// Waits up to 10 s until `calls` holds at least `n` calls; returns them.
pub async fn webhook_calls(calls: &WebhookCalls, n: usize) -> Vec<(std::collections::HashMap<String, String>, String)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while calls.lock().expect("lock").len() < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    calls.lock().expect("lock").clone()
}

/// Creates custom policy `name` (expects 201) as the administrator `admin` and attaches it
/// to exactly `users` (expects 200).
pub async fn put_policy_for(server: &Server, admin: &str, name: &str, document: &serde_json::Value, users: &[&str]) {
    let c = server.client();
    let res = c.put(server.at(&format!("/v1/admin/policies/{name}"))).bearer_auth(admin).json(document).send().await;
    assert_eq!(res.expect("put").status(), 201);
    let res = c
        .put(server.at(&format!("/v1/admin/policies/{name}/attachments")))
        .bearer_auth(admin)
        .json(&serde_json::json!({ "users": users }))
        .send()
        .await
        .expect("attach");
    assert_eq!(res.status(), 200);
}
