//! The administrators' user API and one's own sessions and password, over HTTP.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn administrators_manage_users_and_others_are_refused() {
    let dir = data_dir();
    add_user(&dir.path, &[], "root.admin", "admin", "admin passphrase 11");
    add_user(&dir.path, &[], "dr.who", "clinician", "clinician passphrase 1");
    let server = Server::plain(&dir.path);
    let c = server.client();
    let admin = login(&server, "root.admin", "admin passphrase 11").await;
    let clinician = login(&server, "dr.who", "clinician passphrase 1").await;

    let res = c.get(server.at("/v1/users")).bearer_auth(&clinician).send().await.expect("list");
    assert_eq!(res.status(), 403, "a clinician manages no users");
    assert_eq!(error_code(res).await, "forbidden");

    let res = c
        .post(server.at("/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "Nurse.New", "password": "nurse passphrase 42", "roles": ["staff"]}))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let created: serde_json::Value = res.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["roles"], json!(["staff"]));

    let dup = c
        .post(server.at("/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "nurse.new", "password": "another passphrase 9", "roles": ["staff"]}))
        .send()
        .await
        .expect("duplicate");
    assert_eq!(dup.status(), 409);
    let weak = c
        .post(server.at("/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "weak.one", "password": "password1234", "roles": ["staff"]}))
        .send()
        .await
        .expect("weak");
    assert_eq!(weak.status(), 400);
    assert_eq!(error_code(weak).await, "invalid_request");

    let list: serde_json::Value =
        c.get(server.at("/v1/users")).bearer_auth(&admin).send().await.expect("list").json().await.expect("json");
    assert_eq!(list["users"].as_array().map(Vec::len), Some(3));

    let patched: serde_json::Value = c
        .patch(server.at(&format!("/v1/users/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"roles": ["staff", "clinician"]}))
        .send()
        .await
        .expect("patch")
        .json()
        .await
        .expect("json");
    assert_eq!(patched["roles"], json!(["clinician", "staff"]));

    let nurse = login(&server, "nurse.new", "nurse passphrase 42").await;
    let res = c.post(server.at(&format!("/v1/users/{id}/disable"))).bearer_auth(&admin).send().await.expect("disable");
    assert_eq!(res.status(), 200);
    let res = c.get(server.at("/v1/auth/session")).bearer_auth(&nurse).send().await.expect("session");
    assert_eq!(res.status(), 401, "disabling ends the user's sessions");
    let res = c.post(server.at(&format!("/v1/users/{id}/unlock"))).bearer_auth(&admin).send().await.expect("unlock");
    assert_eq!(res.status(), 200);

    let missing = c
        .get(server.at("/v1/users/00000000-0000-7000-8000-000000000000"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let bad_id = c.get(server.at("/v1/users/not-a-uuid")).bearer_auth(&admin).send().await.expect("get");
    assert_eq!(bad_id.status(), 400);
    assert_eq!(error_code(bad_id).await, "invalid_request");
}

#[tokio::test]
async fn own_sessions_are_listed_and_revoked_and_a_password_change_ends_the_others() {
    let dir = data_dir();
    add_user(&dir.path, &[], "multi.device", "patient", "patient passphrase 7");
    add_user(&dir.path, &[], "someone.else", "patient", "patient passphrase 8");
    let server = Server::plain(&dir.path);
    let c = server.client();
    let phone = login(&server, "multi.device", "patient passphrase 7").await;
    let laptop = login(&server, "multi.device", "patient passphrase 7").await;
    let tablet = login(&server, "multi.device", "patient passphrase 7").await;
    let other = login(&server, "someone.else", "patient passphrase 8").await;

    let list: serde_json::Value = c
        .get(server.at("/v1/auth/sessions"))
        .bearer_auth(&phone)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let sessions = list["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let text = list.to_string();
    for token in [&phone, &laptop, &tablet] {
        assert!(!text.contains(token.as_str()), "tokens are never listed");
    }

    // Someone else's session id is not found, not revoked.
    let others: serde_json::Value = c
        .get(server.at("/v1/auth/sessions"))
        .bearer_auth(&other)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let other_id = others["sessions"][0]["id"].as_str().expect("id").to_string();
    let res =
        c.delete(server.at(&format!("/v1/auth/sessions/{other_id}"))).bearer_auth(&phone).send().await.expect("del");
    assert_eq!(res.status(), 404);
    assert_eq!(c.get(server.at("/v1/auth/session")).bearer_auth(&other).send().await.expect("s").status(), 200);

    // Revoke the tablet from the phone.
    let tablet_id =
        sessions.iter().find(|s| s["current"] == false).expect("another")["id"].as_str().expect("id").to_string();
    let res =
        c.delete(server.at(&format!("/v1/auth/sessions/{tablet_id}"))).bearer_auth(&phone).send().await.expect("del");
    assert_eq!(res.status(), 204);
    let alive = |token: String| {
        let c = c.clone();
        let url = server.at("/v1/auth/session");
        async move { c.get(url).bearer_auth(token).send().await.expect("session").status().as_u16() }
    };
    let statuses = [alive(laptop.clone()).await, alive(tablet.clone()).await];
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 1, "exactly the revoked one died: {statuses:?}");

    // A wrong current password is refused; a weak new one too.
    let res = c
        .post(server.at("/v1/auth/password"))
        .bearer_auth(&phone)
        .json(&json!({"current_password": "not it at all", "new_password": "a fresh passphrase 99"}))
        .send()
        .await
        .expect("change");
    assert_eq!(res.status(), 401);
    let res = c
        .post(server.at("/v1/auth/password"))
        .bearer_auth(&phone)
        .json(&json!({"current_password": "patient passphrase 7", "new_password": "short"}))
        .send()
        .await
        .expect("change");
    assert_eq!(res.status(), 400);

    let res = c
        .post(server.at("/v1/auth/password"))
        .bearer_auth(&phone)
        .json(&json!({"current_password": "patient passphrase 7", "new_password": "a fresh passphrase 99"}))
        .send()
        .await
        .expect("change");
    assert_eq!(res.status(), 204);
    assert_eq!(alive(phone.clone()).await, 200, "the session that changed the password stays");
    assert_eq!(alive(laptop.clone()).await, 401, "every other session ends");
    login(&server, "multi.device", "a fresh passphrase 99").await;
}

#[tokio::test]
async fn temporary_credentials_are_bounded_and_cannot_escalate() {
    let dir = data_dir();
    add_user(&dir.path, &[], "svc.bot", "staff", "service passphrase 5");
    let mut cmd = ward();
    cmd.args(["user", "add", "two.hats", "--role", "staff,auditor", "--password-stdin", "--data-dir"]).arg(&dir.path);
    assert!(run(cmd, Some("two hats passphrase 3\n")).status.success());
    let server = Server::plain(&dir.path);
    let c = server.client();
    let assume = |token: String, body: serde_json::Value| {
        let c = c.clone();
        let url = server.at("/v1/sts/assume-role");
        async move { c.post(url).bearer_auth(token).json(&body).send().await.expect("assume") }
    };
    let bot = login(&server, "svc.bot", "service passphrase 5").await;
    for duration in [899, 43_201] {
        let res = assume(bot.clone(), json!({"role": "staff", "duration_s": duration})).await;
        assert_eq!(res.status(), 400, "duration {duration}");
        assert_eq!(error_code(res).await, "invalid_request");
    }
    let res = assume(bot.clone(), json!({"role": "admin", "duration_s": 900})).await;
    assert_eq!(res.status(), 403, "a role the user does not hold");

    let res = assume(bot.clone(), json!({"role": "staff", "duration_s": 900})).await;
    assert_eq!(res.status(), 200);
    let cred: serde_json::Value = res.json().await.expect("json");
    assert_eq!(cred["role"], "staff");
    let temp = cred["token"].as_str().expect("token").to_string();
    let me: serde_json::Value =
        c.get(server.at("/v1/auth/session")).bearer_auth(&temp).send().await.expect("s").json().await.expect("json");
    assert_eq!(me["roles"], json!(["staff"]));

    // A user with two roles assumes one; the credential cannot reach the other.
    let both = login(&server, "two.hats", "two hats passphrase 3").await;
    let res = assume(both.clone(), json!({"role": "staff", "duration_s": 3600})).await;
    let staff_only = res.json::<serde_json::Value>().await.expect("json")["token"].as_str().expect("t").to_string();
    let res = c.get(server.at("/v1/audit/events")).bearer_auth(&staff_only).send().await.expect("events");
    assert_eq!(res.status(), 403, "the staff credential cannot act as auditor");
    let res = assume(staff_only.clone(), json!({"role": "auditor", "duration_s": 900})).await;
    assert_eq!(res.status(), 403, "nor assume the auditor role back");
    let res = c.get(server.at("/v1/audit/events")).bearer_auth(&both).send().await.expect("events");
    assert_eq!(res.status(), 200, "the full session still can");

    // It dies with its user.
    let mut cmd = ward();
    cmd.args(["user", "disable", "svc.bot", "--data-dir"]).arg(&dir.path);
    assert!(run(cmd, None).status.success());
    refused_soon(&server, &temp).await;

    let res = assume(both, json!({"role": "staff", "duration_s": 900, "policy": {"statements": []}})).await;
    assert_eq!(res.status(), 400, "session policies are refused until access control lands");
}
