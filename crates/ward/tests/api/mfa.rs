//! TOTP MFA over HTTP: enrollment, the two-step sign-in, one-time codes, recovery codes,
//! and the `mfa_required` gate for roles that must use a second factor.

use serde_json::{Value, json};

use crate::helpers::*;

async fn post(server: &Server, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = server.client().post(server.at(path)).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request")
}

/// Every route a session without its required second factor may not use (all but
/// enroll, confirm, session and logout), with a body that would otherwise be accepted.
const GATED: &[(&str, &str)] = &[
    ("GET", "/v1/auth/sessions"),
    ("POST", "/v1/auth/password"),
    ("POST", "/v1/sts/assume-role"),
    ("GET", "/v1/users"),
    ("GET", "/v1/audit/events"),
    ("GET", "/v1/audit/export?format=jsonl"),
];

#[tokio::test]
async fn an_unenrolled_clinician_may_only_enroll_and_then_signs_in_with_totp_or_a_recovery_code() {
    let dir = data_dir();
    add_user(&dir.path, &[], "dr.mfa", "clinician", "clinician passphrase 77");
    let server = Server::plain(&dir.path);
    let c = server.client();

    // First sign-in: a session flagged for enrollment.
    let first = login_answer(&server, "dr.mfa", "clinician passphrase 77").await;
    assert_eq!(first["mfa_enrollment_required"], true, "{first}");
    let limited = first["token"].as_str().expect("token").to_string();
    for (method, path) in GATED {
        let req = match *method {
            "GET" => c.get(server.at(path)),
            _ => c.post(server.at(path)).json(&json!({"role": "clinician", "duration_s": 900,
                "current_password": "clinician passphrase 77", "new_password": "another long passphrase 5"})),
        };
        let res = req.bearer_auth(&limited).send().await.expect("gated request");
        assert_eq!(res.status(), 403, "{method} {path}");
        assert_eq!(error_code(res).await, "mfa_required", "{method} {path}");
    }
    let res = c.get(server.at("/v1/auth/session")).bearer_auth(&limited).send().await.expect("session");
    assert_eq!(res.status(), 200, "the session itself is readable");
    let session: Value = res.json().await.expect("json");
    assert_eq!((session["mfa"].clone(), session["mfa_enrollment_required"].clone()), (json!(false), json!(true)));

    // Enrollment: a secret and an otpauth URI; a wrong code does not confirm.
    let res = post(&server, "/v1/auth/mfa/totp/enroll", Some(&limited), json!({})).await;
    assert_eq!(res.status(), 200);
    let enrolled: Value = res.json().await.expect("json");
    let secret = enrolled["secret"].as_str().expect("secret").to_string();
    let uri = enrolled["otpauth_uri"].as_str().expect("uri");
    assert!(uri.starts_with("otpauth://totp/Ward:dr.mfa?"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")) && uri.contains("issuer=Ward"), "{uri}");
    let res = post(&server, "/v1/auth/mfa/totp/confirm", Some(&limited), json!({"code": "000000"})).await;
    let wrong_status = res.status();
    // 000000 could be the real code once in a million runs; any other answer is a failure.
    if wrong_status != 200 {
        assert_eq!(wrong_status, 400);
        assert_eq!(error_code(res).await, "invalid_request");
    }
    let step = time::OffsetDateTime::now_utc().unix_timestamp() / 30;
    let now = time::OffsetDateTime::from_unix_timestamp(step * 30).expect("time");
    let code = ward_auth::mfa::totp_code(&secret, now).expect("code");
    let res = post(&server, "/v1/auth/mfa/totp/confirm", Some(&limited), json!({"code": code})).await;
    assert_eq!(res.status(), 200);
    let codes: Vec<String> = res.json::<Value>().await.expect("json")["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("str").to_string())
        .collect();
    assert_eq!(codes.len(), 10, "ten recovery codes");
    remember_totp(&server, "dr.mfa", &secret, step);
    // The confirming session has proved the factor: the gate opens.
    let res = c.get(server.at("/v1/auth/sessions")).bearer_auth(&limited).send().await.expect("sessions");
    assert_eq!(res.status(), 200, "after confirmation the session is complete");
    let res = post(&server, "/v1/auth/mfa/totp/enroll", Some(&limited), json!({})).await;
    assert_eq!(res.status(), 409, "TOTP is already active");

    // Later sign-ins take two steps.
    let answer = login_answer(&server, "dr.mfa", "clinician passphrase 77").await;
    assert_eq!(answer["mfa_required"], true, "{answer}");
    assert!(answer.get("token").is_none(), "no session before the second factor: {answer}");
    let mfa_token = answer["mfa_token"].as_str().expect("mfa_token").to_string();
    let res = post(&server, "/v1/auth/mfa", None, json!({"mfa_token": mfa_token, "code": "12345x"})).await;
    assert_eq!(res.status(), 401, "a wrong code");
    assert_eq!(error_code(res).await, "invalid_credentials");
    let code = next_totp_code(&server, "dr.mfa");
    let res = post(&server, "/v1/auth/mfa", None, json!({"mfa_token": mfa_token, "code": code})).await;
    assert_eq!(res.status(), 200, "the right code");
    let body: Value = res.json().await.expect("json");
    let full = body["token"].as_str().expect("token").to_string();
    let session: Value = c
        .get(server.at("/v1/auth/session"))
        .bearer_auth(&full)
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("json");
    assert_eq!(session["mfa"], true);
    let res = post(&server, "/v1/auth/mfa", None, json!({"mfa_token": mfa_token, "code": code})).await;
    assert_eq!(res.status(), 401, "a used mfa_token is dead");
    assert_eq!(error_code(res).await, "unauthenticated");

    // The same code on a fresh challenge is refused: each code works once.
    let again = login_answer(&server, "dr.mfa", "clinician passphrase 77").await;
    let res = post(&server, "/v1/auth/mfa", None, json!({"mfa_token": again["mfa_token"], "code": code})).await;
    assert_eq!(res.status(), 401, "a TOTP code is accepted once");

    // A recovery code works once (the challenge survives a few wrong attempts).
    let res = post(&server, "/v1/auth/mfa", None, json!({"mfa_token": again["mfa_token"], "code": codes[3]})).await;
    assert_eq!(res.status(), 200, "a recovery code replaces the TOTP code");
    let later = login_answer(&server, "dr.mfa", "clinician passphrase 77").await;
    let res = post(&server, "/v1/auth/mfa", None, json!({"mfa_token": later["mfa_token"], "code": codes[3]})).await;
    assert_eq!(res.status(), 401, "a recovery code is accepted once");
    let res = post(&server, "/v1/auth/mfa", None, json!({"mfa_token": "not-a-token", "code": "123456"})).await;
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "unauthenticated");

    // The trail names each step and reason, never a code or secret.
    let auditor_token = {
        add_user(&dir.path, &[], "audrey", "auditor", "auditor passphrase 31");
        login(&server, "audrey", "auditor passphrase 31").await
    };
    let res = c.get(server.at("/v1/audit/events?action=auth.mfa*&limit=100")).bearer_auth(&auditor_token).send();
    let events: Value = res.await.expect("events").json().await.expect("json");
    let events = events["events"].as_array().expect("events");
    let seen: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e["actor"]["username"] == "dr.mfa")
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (s(&e["action"]), s(&e["outcome"]), s(&e["reason"]))
        })
        .collect();
    for expected in [
        ("auth.mfa_enroll", "success", ""),
        ("auth.mfa", "failure", "bad_code"),
        ("auth.mfa", "success", ""),
        ("auth.mfa", "failure", "code_reused"),
    ] {
        let e = (expected.0.to_string(), expected.1.to_string(), expected.2.to_string());
        assert!(seen.contains(&e), "missing {expected:?} in {seen:?}");
    }
    let text = serde_json::to_string(events).expect("json");
    assert!(!text.contains(&secret) && !text.contains(&codes[3]) && !text.contains(&code), "no secret or code");
    let mfa_success = events.iter().find(|e| e["action"] == "auth.mfa" && e["outcome"] == "success").expect("one");
    assert_eq!(mfa_success["mfa"], true, "the session's MFA is recorded");
}

#[tokio::test]
async fn wrong_second_factor_codes_count_toward_the_account_lockout() {
    let dir = data_dir();
    add_user(&dir.path, &[], "dr.guess", "clinician", "clinician passphrase 78");
    let server = Server::start(&dir.path, &["--no-tls"], &[("WARD_AUTH_LOCKOUT_THRESHOLD", "3")]);
    login(&server, "dr.guess", "clinician passphrase 78").await; // enrolls
    let mut last = reqwest::StatusCode::OK;
    for _ in 0..3 {
        let answer = login_answer(&server, "dr.guess", "clinician passphrase 78").await;
        let res =
            post(&server, "/v1/auth/mfa", None, json!({"mfa_token": answer["mfa_token"], "code": "0000000"})).await;
        last = res.status();
    }
    assert_eq!(last, 401);
    let res = server
        .client()
        .post(server.at("/v1/auth/login"))
        .json(&json!({"username": "dr.guess", "password": "clinician passphrase 78"}))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 423, "three wrong codes lock the account like three wrong passwords");
    assert!(res.headers().get("retry-after").is_some());
}

#[tokio::test]
async fn a_lost_factor_is_reset_by_an_administrator_from_the_api_or_the_command_line() {
    let dir = data_dir();
    add_user(&dir.path, &[], "mfa.admin", "admin", "admin passphrase 81");
    add_user(&dir.path, &[], "dr.lost", "clinician", "clinician passphrase 82");
    let server = Server::plain(&dir.path);
    let c = server.client();
    let admin = login(&server, "mfa.admin", "admin passphrase 81").await;
    let doctor = login(&server, "dr.lost", "clinician passphrase 82").await; // enrolls
    assert_eq!(login_answer(&server, "dr.lost", "clinician passphrase 82").await["mfa_required"], true);

    // Over the API: factors gone, sessions ended, the next sign-in enrolls again.
    let users: Value =
        c.get(server.at("/v1/users")).bearer_auth(&admin).send().await.expect("users").json().await.expect("json");
    let id = users["users"].as_array().expect("users").iter().find(|u| u["username"] == "dr.lost").expect("user")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let res = post(&server, &format!("/v1/users/{id}/reset-mfa"), Some(&admin), json!({})).await;
    assert_eq!(res.status(), 204);
    assert_eq!(refused_soon(&server, &doctor).await, "session_expired");
    let again = login_answer(&server, "dr.lost", "clinician passphrase 82").await;
    assert_eq!(again["mfa_enrollment_required"], true, "{again}");

    // The only administrator lost their phone: the command line resets them.
    let mut cmd = ward();
    cmd.args(["user", "reset-mfa", "mfa.admin", "--data-dir"]).arg(&dir.path);
    let out = run(cmd, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(refused_soon(&server, &admin).await, "session_expired");
    let answer = login_answer(&server, "mfa.admin", "admin passphrase 81").await;
    assert_eq!(answer["mfa_enrollment_required"], true, "{answer}");
}

/// Routes a session that must still enroll MFA may use, and routes that need no session.
const OPEN_TO_UNENROLLED: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/openapi.json",
    "/v1/auth/login",
    "/v1/auth/mfa",
    "/v1/auth/mfa/totp/enroll",
    "/v1/auth/mfa/totp/confirm",
    "/v1/auth/session",
    "/v1/auth/logout",
    "/v1/ws",
];

#[tokio::test]
async fn every_other_route_in_the_openapi_document_answers_mfa_required_to_an_unenrolled_session() {
    let dir = data_dir();
    add_user(&dir.path, &[], "dr.walk", "clinician", "clinician passphrase 91");
    let server = Server::plain(&dir.path);
    let c = server.client();
    let first = login_answer(&server, "dr.walk", "clinician passphrase 91").await;
    let limited = first["token"].as_str().expect("token").to_string();
    let doc: Value = c.get(server.at("/v1/openapi.json")).send().await.expect("doc").json().await.expect("json");
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if OPEN_TO_UNENROLLED.contains(&path.as_str()) {
            continue;
        }
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            // Any id will do: the gate answers before the handler looks anything up.
            let url = server.at(&path
                .replace("{id}", &uuid::Uuid::now_v7().to_string())
                .replace("{key_id}", &uuid::Uuid::now_v7().to_string()));
            let req = match method {
                "get" => c.get(url),
                "post" => c.post(url),
                "put" => c.put(url),
                "patch" => c.patch(url),
                _ => c.delete(url),
            };
            let res = req.bearer_auth(&limited).json(&json!({})).send().await.expect("request");
            assert_eq!(res.status(), 403, "{method} {path}");
            assert_eq!(error_code(res).await, "mfa_required", "{method} {path}");
            checked += 1;
        }
    }
    assert!(checked >= 12, "the walk covered the API ({checked} operations)");
}
