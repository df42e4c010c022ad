//! API keys of service accounts over HTTP: issued once by an administrator, prefixed,
//! scoped to one role, listed without the key, revoked at once, dead with their user.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn service_accounts_use_prefixed_role_scoped_keys_that_die_when_revoked() {
    let dir = data_dir();
    add_user(&dir.path, &[], "key.admin", "admin", "admin passphrase 61");
    add_user(&dir.path, &[], "lab.bot", "service", "service passphrase 62");
    add_user(&dir.path, &[], "human.nurse", "staff", "staff passphrase 63");
    let server = Server::plain(&dir.path);
    let c = server.client();
    let admin = login(&server, "key.admin", "admin passphrase 61").await;
    let users: Value =
        c.get(server.at("/v1/users")).bearer_auth(&admin).send().await.expect("users").json().await.expect("json");
    let id_of = |name: &str| {
        users["users"].as_array().expect("users").iter().find(|u| u["username"] == name).expect("user")["id"]
            .as_str()
            .expect("id")
            .to_string()
    };
    let (bot, nurse) = (id_of("lab.bot"), id_of("human.nurse"));

    let create = |user: String, body: Value| {
        let c = c.clone();
        let url = server.at(&format!("/v1/users/{user}/api-keys"));
        let admin = admin.clone();
        async move { c.post(url).bearer_auth(admin).json(&body).send().await.expect("create") }
    };
    let res = create(nurse.clone(), json!({"name": "x", "role": "staff"})).await;
    assert_eq!(res.status(), 400, "only service accounts get keys");
    let res = create(bot.clone(), json!({"name": "lab feed", "role": "admin"})).await;
    assert_eq!(res.status(), 400, "a key acts only with a role its user holds");
    for days in [0, 100_000] {
        let res = create(bot.clone(), json!({"name": "lab feed", "role": "service", "expires_in_days": days})).await;
        assert_eq!(res.status(), 400, "expires_in_days {days}");
        assert_eq!(error_code(res).await, "invalid_request");
    }
    let res = create(bot.clone(), json!({"name": "lab feed", "role": "service", "expires_in_days": 30})).await;
    assert_eq!(res.status(), 201);
    let made: Value = res.json().await.expect("json");
    let key = made["key"].as_str().expect("key").to_string();
    assert!(key.starts_with("ward_ak_") && key.len() >= 50, "prefixed, 256-bit: {key}");
    assert_eq!(made["role"], "service");
    assert_eq!(made["last_used_at"], Value::Null, "not used yet");

    // The key authenticates as the service account with its one role, without MFA.
    let res = c.get(server.at("/v1/auth/session")).bearer_auth(&key).send().await.expect("session");
    assert_eq!(res.status(), 200);
    let session: Value = res.json().await.expect("json");
    assert_eq!(session["user"]["username"], "lab.bot");
    assert_eq!(session["roles"], json!(["service"]));
    assert_eq!(session["credential"], "api_key");
    let res = c.get(server.at("/v1/users")).bearer_auth(&key).send().await.expect("users");
    assert_eq!(res.status(), 403, "a service key is no administrator");
    let res = c
        .post(server.at("/v1/sts/assume-role"))
        .bearer_auth(&key)
        .json(&json!({"role": "service", "duration_s": 900}))
        .send()
        .await
        .expect("sts");
    assert_eq!(res.status(), 403, "a key cannot mint other credentials");

    // Listings never show the key again.
    let res = c.get(server.at(&format!("/v1/users/{bot}/api-keys"))).bearer_auth(&admin).send().await.expect("list");
    let text = res.text().await.expect("text");
    assert!(text.contains("lab feed") && !text.contains(&key), "{text}");
    // Its use is recorded, for reviews of stale keys.
    let listed: Value = serde_json::from_str(&text).expect("json");
    let used = listed["api_keys"][0]["last_used_at"].as_str().expect("last_used_at set by the requests above");
    let used = time::OffsetDateTime::parse(used, &time::format_description::well_known::Rfc3339).expect("time");
    let ago = time::OffsetDateTime::now_utc() - used;
    assert!(ago >= time::Duration::ZERO && ago < time::Duration::minutes(1), "{ago}");

    // Revoked: dead at once.
    let key_id = made["id"].as_str().expect("id");
    let res = c
        .delete(server.at(&format!("/v1/users/{bot}/api-keys/{key_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("revoke");
    assert_eq!(res.status(), 204);
    let res = c.get(server.at("/v1/auth/session")).bearer_auth(&key).send().await.expect("session");
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "session_expired");

    // A key dies with its user.
    let res = create(bot.clone(), json!({"name": "second", "role": "service"})).await;
    let second = res.json::<Value>().await.expect("json")["key"].as_str().expect("key").to_string();
    let res = c.get(server.at("/v1/auth/session")).bearer_auth(&second).send().await.expect("session");
    assert_eq!(res.status(), 200);
    let res = c.post(server.at(&format!("/v1/users/{bot}/disable"))).bearer_auth(&admin).send().await.expect("disable");
    assert_eq!(res.status(), 200);
    let res = c.get(server.at("/v1/auth/session")).bearer_auth(&second).send().await.expect("session");
    assert_eq!(res.status(), 401, "a disabled service account's keys stop working");

    // Issuing and revoking are in the audit trail, by id.
    let out = {
        let mut cmd = ward();
        cmd.args(["audit", "export", "--format", "jsonl", "--data-dir"]).arg(&dir.path);
        run(cmd, None)
    };
    let trail = String::from_utf8_lossy(&out.stdout);
    assert!(trail.contains("\"apikey.create\"") && trail.contains("\"apikey.revoke\""), "{trail}");
    assert!(!trail.contains(&key) && !trail.contains(&second), "keys never reach the trail");
}
