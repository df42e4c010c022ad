//! Setting up through the HTTP API as a client would: the administrator's session (with
//! TOTP enrollment when the role requires MFA), users (`POST /v1/users`), their sessions
//! (`POST /v1/auth/login`) and group dialogs (`POST /v1/dialogs`).
//!
//! A 429 during setup is waited out (`Retry-After`) and retried, so a server that still
//! has the default sign-in limit is slow to set up rather than failing.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::target::Admin;

/// The HTTP side of the bench: one keep-alive connection pool for setup and sends.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub token: String,
}

/// Retries of one setup call answered 429 or 503.
const SETUP_RETRIES: u32 = 20;

impl Api {
    /// A client with a pool large enough for `max_connections` requests in flight.
    pub fn new(base: &str, request_timeout: Duration, max_connections: usize) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(max_connections)
            .pool_idle_timeout(Duration::from_secs(300))
            .timeout(request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Api { http, base: base.to_string() })
    }

    /// `POST path` with a JSON body; 429 and 503 are retried after a pause.
    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> anyhow::Result<(StatusCode, Value)> {
        let mut tries = 0;
        loop {
            let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let res = req.send().await.with_context(|| format!("POST {path}"))?;
            let status = res.status();
            if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE)
                && tries < SETUP_RETRIES
            {
                tries += 1;
                let wait = res
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1)
                    .clamp(1, 60);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            let text = res.text().await.unwrap_or_default();
            let value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Ok((status, value));
        }
    }

    /// Signs in with a password. A role that requires MFA gets an enrollment-only session:
    /// TOTP is enrolled and confirmed on it (as an authenticator app would), which makes it
    /// a full session. Users are signed in once per run, so no later TOTP step is needed.
    pub async fn sign_in(&self, username: &str, password: &str) -> anyhow::Result<Session> {
        let (status, body) =
            self.post("/v1/auth/login", None, &json!({"username": username, "password": password})).await?;
        if status != StatusCode::OK {
            bail!("signing in as {username}: HTTP {status} {body}");
        }
        if body["mfa_required"] == true {
            bail!("{username} has a second factor already: sign in to it with a fresh user instead");
        }
        let token = body["token"].as_str().ok_or_else(|| anyhow!("no token in {body}"))?.to_string();
        let user_id = body["user"]["id"].as_str().ok_or_else(|| anyhow!("no user id in {body}"))?.to_string();
        if body["mfa_enrollment_required"] == true {
            self.enroll_totp(&token).await.with_context(|| format!("enrolling TOTP for {username}"))?;
        }
        Ok(Session { user_id, token })
    }

    async fn enroll_totp(&self, token: &str) -> anyhow::Result<()> {
        let (status, body) = self.post("/v1/auth/mfa/totp/enroll", Some(token), &json!({})).await?;
        if status != StatusCode::OK {
            bail!("enroll: HTTP {status} {body}");
        }
        let secret = body["secret"].as_str().ok_or_else(|| anyhow!("no secret in {body}"))?;
        let code = totp_now(secret)?;
        let (status, body) = self.post("/v1/auth/mfa/totp/confirm", Some(token), &json!({"code": code})).await?;
        if status != StatusCode::OK {
            bail!("confirm: HTTP {status} {body}");
        }
        Ok(())
    }

    /// The administrator's session.
    pub async fn admin(&self, admin: &Admin) -> anyhow::Result<String> {
        match admin {
            Admin::Token(t) => Ok(t.clone()),
            Admin::Password { username, password } => Ok(self.sign_in(username, password).await?.token),
        }
    }

    /// Creates `count` users named `{prefix}-u{i}` with one role, `concurrency` at a time,
    /// and signs each in once. Returns their sessions in order.
    pub async fn users(
        &self,
        admin_token: &str,
        prefix: &str,
        role: &str,
        password: &str,
        count: usize,
        concurrency: usize,
    ) -> anyhow::Result<Vec<Session>> {
        let made = futures_util::stream::iter(0..count)
            .map(|i| async move {
                let name = format!("{prefix}-u{i:05}");
                let body = json!({"username": name, "password": password, "roles": [role]});
                let (status, answer) = self.post("/v1/users", Some(admin_token), &body).await?;
                if status != StatusCode::CREATED {
                    bail!("creating {name}: HTTP {status} {answer}");
                }
                let session = self.sign_in(&name, password).await?;
                Ok::<_, anyhow::Error>((i, session))
            })
            .buffer_unordered(concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let mut sessions = Vec::with_capacity(count);
        for r in made {
            sessions.push(r?);
        }
        sessions.sort_by_key(|(i, _)| *i);
        Ok(sessions.into_iter().map(|(_, s)| s).collect())
    }

    /// Creates a group dialog owned by `owner` with the other `members`; returns its id.
    pub async fn group(&self, owner: &Session, name: &str, members: &[String]) -> anyhow::Result<String> {
        let body = json!({"type": "group", "name": name, "members": members});
        let (status, answer) = self.post("/v1/dialogs", Some(&owner.token), &body).await?;
        if status != StatusCode::CREATED {
            bail!("creating dialog {name}: HTTP {status} {answer}");
        }
        Ok(answer["id"].as_str().ok_or_else(|| anyhow!("no dialog id in {answer}"))?.to_string())
    }
}

/// The current TOTP code (SHA-1, 6 digits, 30 s: what Ward's enrollment hands out).
fn totp_now(secret_base32: &str) -> anyhow::Result<String> {
    let secret = totp_rs::Secret::Encoded(secret_base32.to_string())
        .to_bytes()
        .map_err(|e| anyhow!("the TOTP secret is not base32: {e:?}"))?;
    let generator = totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, secret, None, String::new());
    let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    Ok(generator.generate(now))
}
