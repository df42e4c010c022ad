//! Access control end to end: every route guarded and declared, minimum necessary for
//! administrators and auditors, custom policies with their audit trail and simulation,
//! STS session policies, break-glass, and the access review.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

/// Builds a request for `method` on `url`.
fn request(c: &reqwest::Client, method: &str, url: &str) -> reqwest::RequestBuilder {
    let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
    c.request(m, url)
}

/// Starts a dialog of `members` (user ids) by `token`; returns its id.
async fn group(server: &Server, token: &str, members: &[&str]) -> String {
    let res = server
        .client()
        .post(server.at("/v1/dialogs"))
        .bearer_auth(token)
        .json(&json!({"type": "group", "name": "care team", "members": members}))
        .send()
        .await
        .expect("dialog");
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string()
}

/// GET `path` with `token`; answers the status and the body.
async fn get(server: &Server, token: &str, path: &str) -> (u16, Value) {
    let res = server.client().get(server.at(path)).bearer_auth(token).send().await.expect("get");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Audit events matching `query`, read by the auditor `token`.
async fn events(server: &Server, auditor: &str, query: &str) -> Vec<Value> {
    let (status, page) = get(server, auditor, &format!("/v1/audit/events?{query}")).await;
    assert_eq!(status, 200, "{page}");
    page["events"].as_array().expect("events").clone()
}

#[tokio::test]
async fn every_route_declares_an_action_and_refuses_callers_without_a_credential() {
    let dir = data_dir();
    let server = Server::start(&dir.path, &["--no-tls"], &[]);
    let c = server.client();
    let doc: Value = c.get(server.at("/v1/openapi.json")).send().await.expect("doc").json().await.expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    let open = ["/healthz", "/readyz", "/metrics", "/v1/auth/login", "/v1/auth/mfa"];
    let mut guarded = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("operations") {
            if op.get("x-ward-public") == Some(&Value::Bool(true)) {
                assert!(open.contains(&path.as_str()), "{method} {path} is public but not on the allowed list");
                continue;
            }
            let action = op["x-ward-action"].as_str().unwrap_or_else(|| panic!("{method} {path} declares no action"));
            assert!(action.contains(':'), "{method} {path}: {action}");
            assert!(op["x-ward-resource"].as_str().is_some(), "{method} {path} declares no resource");
            if path == "/v1/ws" {
                continue; // authenticated by its first frame: checked below
            }
            let concrete = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { uuid::Uuid::now_v7().to_string() } else { seg.to_string() })
                .collect::<Vec<_>>()
                .join("/");
            for token in [None, Some("not-a-token")] {
                let mut req = request(&c, method, &server.at(&concrete)).json(&json!({}));
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let res = req.send().await.expect("request");
                assert_eq!(res.status(), 401, "{method} {path} answered without a valid credential");
                assert_eq!(error_code(res).await, "unauthenticated");
            }
            guarded += 1;
        }
    }
    assert!(guarded >= 40, "the walk saw {guarded} guarded operations");
    for public in open {
        let res = request(&c, if public.starts_with("/v1/auth") { "post" } else { "get" }, &server.at(public))
            .json(&json!({}))
            .send()
            .await
            .expect("public");
        assert_ne!(res.status(), 401, "{public} is open");
    }

    // The WebSocket: a first frame that is not `auth` ends it with 4401.
    let url = server.at("/v1/ws").replacen("http", "ws", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
    use futures_util::{SinkExt as _, StreamExt as _};
    ws.send(tokio_tungstenite::tungstenite::Message::text(r#"{"type":"ping"}"#)).await.expect("send");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Close(Some(frame)) = m {
                return u16::from(frame.code);
            }
        }
        0
    })
    .await
    .expect("closed in time");
    assert_eq!(closed, 4401);
}

#[tokio::test]
async fn outsiders_admins_and_auditors_cannot_read_a_dialog_and_every_refusal_is_audited() {
    let dir = data_dir();
    for (name, role) in [("pat.a", "patient"), ("pat.b", "patient"), ("pat.c", "patient")] {
        add_user(&dir.path, &[], name, role, "violet orchard lantern 4471");
    }
    add_user(&dir.path, &[], "adam", "admin", "amber quarry meadow 4471");
    add_user(&dir.path, &[], "audra", "auditor", "amber quarry meadow 4471");
    let server = Server::start(&dir.path, &["--no-tls"], &[]);
    let a = login(&server, "pat.a", "violet orchard lantern 4471").await;
    let b = login(&server, "pat.b", "violet orchard lantern 4471").await;
    let outsider = login(&server, "pat.c", "violet orchard lantern 4471").await;
    let admin = login(&server, "adam", "amber quarry meadow 4471").await;
    let auditor = login(&server, "audra", "amber quarry meadow 4471").await;
    let b_id = user_id(&server, &b).await;
    let dialog = group(&server, &a, &[&b_id]).await;
    send_message(&server, &a, &dialog, "the rash is spreading").await;
    assert_eq!(message_bodies(&server, &b, &dialog).await, ["the rash is spreading"]);

    let messages = format!("/v1/dialogs/{dialog}/messages");
    assert_eq!(get(&server, &outsider, &messages).await.0, 404, "another dialog's user: not found");
    assert_eq!(get(&server, &outsider, &format!("/v1/dialogs/{dialog}")).await.0, 404);
    let (status, body) = get(&server, &admin, &messages).await;
    assert_eq!(status, 403, "admin reads no PHI: {body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(get(&server, &auditor, &messages).await.0, 403, "auditor reads no PHI");
    assert_eq!(get(&server, &admin, "/v1/dialogs").await.0, 403);
    // Neither may the admin post into it, nor the auditor manage users.
    let res = server.client().post(server.at(&messages)).bearer_auth(&admin).json(&json!({"body": "x"})).send().await;
    assert_eq!(res.expect("send").status(), 403);
    assert_eq!(get(&server, &auditor, "/v1/users").await.0, 403);
    assert_eq!(get(&server, &admin, "/v1/users").await.0, 200, "the admin manages users");

    let denied = events(&server, &auditor, "action=message.read&outcome=denied").await;
    for who in ["pat.c", "adam", "audra"] {
        let e = denied.iter().find(|e| e["actor"]["username"] == who).unwrap_or_else(|| panic!("{who}: {denied:?}"));
        assert_eq!(e["resource"], format!("dialog/{dialog}"));
        assert_eq!(e["details"]["policy_action"], "message:read");
    }
    let users = events(&server, &auditor, "action=user.list&outcome=denied").await;
    assert!(users.iter().any(|e| e["actor"]["username"] == "audra"), "{users:?}");
}

#[tokio::test]
async fn custom_policies_are_validated_audited_simulated_and_enforced() {
    let dir = data_dir();
    add_user(&dir.path, &[], "pat.a", "patient", "violet orchard lantern 5512");
    add_user(&dir.path, &[], "pat.b", "patient", "violet orchard lantern 5512");
    add_user(&dir.path, &[], "adam", "admin", "amber quarry meadow 5512");
    add_user(&dir.path, &[], "audra", "auditor", "amber quarry meadow 5512");
    let server = Server::start(&dir.path, &["--no-tls"], &[("WARD_ACCESS_POLICY_CACHE_S", "0")]);
    let c = server.client();
    let a = login(&server, "pat.a", "violet orchard lantern 5512").await;
    let b = login(&server, "pat.b", "violet orchard lantern 5512").await;
    let admin = login(&server, "adam", "amber quarry meadow 5512").await;
    let auditor = login(&server, "audra", "amber quarry meadow 5512").await;
    let b_id = user_id(&server, &b).await;
    let dialog = group(&server, &a, &[&b_id]).await;

    // A typo is refused with its place named; managed policies are read-only.
    let typo = json!({"statements": [{"effect": "deny", "actions": ["mesage:send"], "resources": ["dialog/*"]}]});
    let res = c.put(server.at("/v1/admin/policies/read-only")).bearer_auth(&admin).json(&typo).send().await;
    let res = res.expect("put");
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.expect("json");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("statements[0].actions[0]"), "{message}");
    let res = c.put(server.at("/v1/admin/policies/ward-admin")).bearer_auth(&admin).json(&typo).send().await;
    assert_eq!(res.expect("put").status(), 409);
    let res = c.put(server.at("/v1/admin/policies/read-only")).bearer_auth(&b).json(&typo).send().await;
    assert_eq!(res.expect("put").status(), 403, "a patient writes no policy");
    let refused = events(&server, &auditor, "action=policy.write&outcome=denied").await;
    assert_eq!(refused.len(), 1, "the refusal is audited: {refused:?}");
    assert_eq!(refused[0]["actor"]["username"], "pat.b");

    let doc = json!({"statements": [{"sid": "no-sending", "effect": "deny", "actions": ["message:send"],
                                     "resources": ["dialog/*"]}]});
    put_policy_for(&server, &admin, "read-only", &doc, &[&b_id]).await;

    // Enforced: the member is refused (403, she may see the dialog) and it is audited.
    let res = c
        .post(server.at(&format!("/v1/dialogs/{dialog}/messages")))
        .bearer_auth(&b)
        .json(&json!({"body": "hello"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 403);
    send_message(&server, &a, &dialog, "others still may").await;
    assert_eq!(message_bodies(&server, &b, &dialog).await, ["others still may"], "reading is untouched");

    // Simulation names the statements that decided.
    let sim = |subject: Value| {
        let mut body = json!({"action": "message:send", "resource": format!("dialog/{dialog}"),
                              "context": {"dialog_member": true}});
        body.as_object_mut().expect("object").extend(subject.as_object().expect("object").clone());
        c.post(server.at("/v1/admin/policies/simulate")).bearer_auth(&admin).json(&body).send()
    };
    let answer: Value = sim(json!({"user_id": b_id})).await.expect("sim").json().await.expect("json");
    assert_eq!(answer["decision"], "deny", "{answer}");
    let matched = answer["matched_statements"].as_array().expect("matched");
    assert!(matched.iter().any(|m| m["policy"] == "read-only" && m["effect"] == "deny"), "{answer}");
    assert!(matched.iter().any(|m| m["policy"] == "ward-patient" && m["effect"] == "allow"), "{answer}");
    let answer: Value = sim(json!({"role": "patient"})).await.expect("sim").json().await.expect("json");
    assert_eq!(answer["decision"], "allow");
    let answer: Value = sim(json!({"role": "admin"})).await.expect("sim").json().await.expect("json");
    assert_eq!(answer["decision"], "deny");
    assert_eq!(answer["matched_statements"], json!([]), "default deny: nothing applied");
    let answer: Value = sim(json!({"policies": ["read-only"]})).await.expect("sim").json().await.expect("json");
    assert_eq!(answer["decision"], "deny");

    // Listed, and every change audited with before and after.
    let (_, list) = get(&server, &auditor, "/v1/admin/policies").await;
    let names: Vec<&str> =
        list["policies"].as_array().expect("list").iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(names.contains(&"ward-clinician") && names.contains(&"read-only"), "{names:?}");
    let writes = events(&server, &auditor, "action=policy.write&outcome=success").await;
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0]["details"]["before"], Value::Null);
    assert_eq!(writes[0]["details"]["after"]["statements"][0]["sid"], "no-sending");
    let attaches = events(&server, &auditor, "action=policy.attach").await;
    assert_eq!(attaches[0]["details"]["before"]["users"], json!([]));
    assert_eq!(attaches[0]["details"]["after"]["users"], json!([b_id]));

    // Replaced: the new document applies at once; deleted: the user may send again.
    let allow = json!({"statements": [{"effect": "deny", "actions": ["message:delete"], "resources": ["*"]}]});
    let res = c.put(server.at("/v1/admin/policies/read-only")).bearer_auth(&admin).json(&allow).send().await;
    assert_eq!(res.expect("put").status(), 200);
    let writes = events(&server, &auditor, "action=policy.write&outcome=success").await;
    assert_eq!(writes[1]["details"]["before"]["statements"][0]["sid"], "no-sending");
    send_message(&server, &b, &dialog, "sending again").await;
    let res = c.delete(server.at("/v1/admin/policies/read-only")).bearer_auth(&admin).send().await;
    assert_eq!(res.expect("delete").status(), 204);
    assert_eq!(events(&server, &auditor, "action=policy.delete").await.len(), 1);
}

#[tokio::test]
async fn an_sts_session_policy_narrows_the_role_and_cannot_be_widened() {
    let dir = data_dir();
    add_user(&dir.path, &[], "pat.a", "patient", "violet orchard lantern 6620");
    add_user(&dir.path, &[], "pat.b", "patient", "violet orchard lantern 6620");
    add_user(&dir.path, &[], "audra", "auditor", "amber quarry meadow 4471");
    let server = Server::start(&dir.path, &["--no-tls"], &[]);
    let c = server.client();
    let auditor = login(&server, "audra", "amber quarry meadow 4471").await;
    let a = login(&server, "pat.a", "violet orchard lantern 6620").await;
    let b = login(&server, "pat.b", "violet orchard lantern 6620").await;
    let b_id = user_id(&server, &b).await;
    let dialog = group(&server, &a, &[&b_id]).await;
    send_message(&server, &a, &dialog, "for reading only").await;

    let assume = |token: String, policy: Value| {
        let mut body = json!({"role": "patient", "duration_s": 900});
        if !policy.is_null() {
            body["policy"] = policy;
        }
        c.post(server.at("/v1/sts/assume-role")).bearer_auth(token).json(&body).send()
    };
    let bad = assume(b.clone(), json!({"statements": [{"effect": "allow"}]})).await.expect("sts");
    assert_eq!(bad.status(), 400, "a malformed session policy is refused");
    let read_only = json!({"statements": [
        {"effect": "allow", "actions": ["message:read", "dialog:read"], "resources": ["dialog/*"]},
        {"effect": "allow", "actions": ["sts:assume_role", "account:read"], "resources": ["*"]}]});
    let res = assume(b.clone(), read_only.clone()).await.expect("sts");
    assert_eq!(res.status(), 200);
    let sts = res.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_string();

    assert_eq!(message_bodies(&server, &sts, &dialog).await, ["for reading only"]);
    let res = c
        .post(server.at(&format!("/v1/dialogs/{dialog}/messages")))
        .bearer_auth(&sts)
        .json(&json!({"body": "not allowed"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 403, "outside the session policy");
    assert_eq!(get(&server, &sts, "/v1/dialogs").await.0, 403, "dialog:list is not in the session policy");
    // The credential cannot make itself a wider one: a credential made from it keeps its
    // session policy, and it cannot be given a second one.
    let res = assume(sts.clone(), Value::Null).await.expect("sts");
    assert_eq!(res.status(), 200);
    let child = res.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_string();
    assert_eq!(message_bodies(&server, &child, &dialog).await, ["for reading only"]);
    let res = c
        .post(server.at(&format!("/v1/dialogs/{dialog}/messages")))
        .bearer_auth(&child)
        .json(&json!({"body": "still not allowed"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 403, "the session policy was inherited");
    let wide = json!({"statements": [{"effect": "allow", "actions": ["*"], "resources": ["*"]}]});
    assert_eq!(assume(sts.clone(), wide).await.expect("sts").status(), 403, "no second session policy");
    let refused = events(&server, &auditor, "action=sts.assume_role&outcome=denied").await;
    let reasons: Vec<&str> = refused.iter().map(|e| e["reason"].as_str().expect("reason")).collect();
    assert_eq!(reasons, ["second_session_policy"], "the refusal says why");
    // The membership rule still holds inside the session policy: another dialog is hidden.
    let other = group(&server, &a, &[]).await;
    assert_eq!(get(&server, &sts, &format!("/v1/dialogs/{other}/messages")).await.0, 404);
}

#[tokio::test]
async fn break_glass_needs_mfa_and_a_reason_is_read_only_audited_alerted_revocable_and_expires() {
    let dir = data_dir();
    let secret = "alert-secret-0123456789abcdef-0123456789";
    let (url, calls) = webhook_receiver(vec![503]).await;
    for (name, role) in [("pat.a", "patient"), ("pat.b", "patient"), ("nurse", "staff"), ("doc", "clinician")] {
        add_user(&dir.path, &[], name, role, "violet orchard lantern 7781");
    }
    add_user(&dir.path, &[], "adam", "admin", "amber quarry meadow 7781");
    add_user(&dir.path, &[], "audra", "auditor", "amber quarry meadow 7781");
    let env = [
        ("WARD_AUTH_MFA_REQUIRED_ROLES", r#"["admin", "auditor"]"#),
        ("WARD_ACCESS_BREAKGLASS_MINUTES", "1"),
        ("WARD_ACCESS_ALERT_WEBHOOK_URL", url.as_str()),
        ("WARD_ACCESS_ALERT_WEBHOOK_SECRET", secret),
    ];
    let server = Server::start(&dir.path, &["--no-tls"], &env);
    let c = server.client();
    let a = login(&server, "pat.a", "violet orchard lantern 7781").await;
    let b = login(&server, "pat.b", "violet orchard lantern 7781").await;
    let nurse = login(&server, "nurse", "violet orchard lantern 7781").await;
    let admin = login(&server, "adam", "amber quarry meadow 7781").await;
    let auditor = login(&server, "audra", "amber quarry meadow 7781").await;
    let b_id = user_id(&server, &b).await;
    let dialog = group(&server, &a, &[&b_id]).await;
    send_message(&server, &a, &dialog, "allergic to penicillin").await;
    let messages = format!("/v1/dialogs/{dialog}/messages");
    let invoke = |token: String, reason: &str| {
        c.post(server.at(&format!("/v1/dialogs/{dialog}/break-glass")))
            .bearer_auth(token)
            .json(&json!({ "reason": reason }))
            .send()
    };
    // Free text that may name a patient: it must reach no disk and no audit record.
    let marker = format!("GLASS-{}", uuid::Uuid::new_v4().simple());
    let reason = format!("patient unresponsive in ED, need medication history now {marker}");
    let reason = reason.as_str();

    // A clinician without MFA in this session: refused.
    let doc_plain = login(&server, "doc", "violet orchard lantern 7781").await;
    let res = invoke(doc_plain.clone(), reason).await.expect("invoke");
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(res).await, "mfa_required");
    enroll_totp(&server, &doc_plain, "doc").await;
    let doc = login(&server, "doc", "violet orchard lantern 7781").await;
    assert_eq!(get(&server, &doc, &messages).await.0, 404, "no access before break-glass");
    // Without a reason, or a short one: refused.
    let res = c.post(server.at(&format!("/v1/dialogs/{dialog}/break-glass"))).bearer_auth(&doc).json(&json!({}));
    assert_eq!(res.send().await.expect("invoke").status(), 400);
    let res = invoke(doc.clone(), "   too short      ").await.expect("invoke");
    assert_eq!(res.status(), 400);
    // Not a clinician: refused by policy (staff have no breakglass:invoke).
    assert_eq!(invoke(nurse.clone(), reason).await.expect("invoke").status(), 403);
    // A patient, even a member: no such right.
    assert_eq!(invoke(b.clone(), reason).await.expect("invoke").status(), 403);
    // A member needs none.
    let own = group(&server, &doc, &[]).await;
    let res = c.post(server.at(&format!("/v1/dialogs/{own}/break-glass"))).bearer_auth(&doc);
    assert_eq!(res.json(&json!({ "reason": reason })).send().await.expect("invoke").status(), 409);

    // Granted.
    let res = invoke(doc.clone(), reason).await.expect("invoke");
    assert_eq!(res.status(), 201);
    let grant: Value = res.json().await.expect("json");
    let grant_id = grant["id"].as_str().expect("id").to_string();
    let expires = time::OffsetDateTime::parse(
        grant["expires_at"].as_str().expect("expires"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("time");
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(left > time::Duration::seconds(50) && left <= time::Duration::seconds(61), "{left}");

    // Read-only.
    assert_eq!(message_bodies(&server, &doc, &dialog).await, ["allergic to penicillin"]);
    assert_eq!(get(&server, &doc, &format!("/v1/dialogs/{dialog}")).await.0, 200);
    let res = c.post(server.at(&messages)).bearer_auth(&doc).json(&json!({"body": "x"})).send().await;
    assert_eq!(res.expect("send").status(), 404, "no writing under break-glass");
    let res = c.post(server.at(&format!("/v1/dialogs/{dialog}/members"))).bearer_auth(&doc);
    let res = res.json(&json!({"user_id": b_id})).send().await.expect("add");
    assert_eq!(res.status(), 404, "no membership changes under break-glass");
    assert_eq!(message_bodies(&server, &a, &dialog).await, ["allergic to penicillin"], "nothing was written");

    // Audited at high severity, the reason by its length only; reads under it marked.
    let invoked = events(&server, &auditor, "action=breakglass.invoke&outcome=success").await;
    assert_eq!(invoked.len(), 1);
    assert_eq!(invoked[0]["reason"], Value::Null);
    assert_eq!(invoked[0]["details"]["reason_chars"], reason.chars().count());
    assert!(!invoked[0].to_string().contains(&marker), "no reason in the trail");
    assert_eq!(invoked[0]["details"]["severity"], "high");
    assert_eq!(invoked[0]["details"]["grant_id"], grant_id.as_str());
    assert_eq!(invoked[0]["actor"]["username"], "doc");
    let refused = events(&server, &auditor, "action=breakglass.invoke&outcome=denied").await;
    let reasons: Vec<&str> = refused.iter().filter_map(|e| e["reason"].as_str()).collect();
    for expected in ["mfa_required", "reason_missing_or_too_short", "no policy allows it", "already_a_member"] {
        assert!(reasons.contains(&expected), "{expected} is audited: {reasons:?}");
    }
    let short = refused.iter().filter(|e| e["reason"] == "reason_missing_or_too_short").count();
    assert_eq!(short, 2, "the missing and the short reason: {reasons:?}");
    let reads = events(&server, &auditor, "action=message.read&outcome=success").await;
    let glass: Vec<&Value> = reads.iter().filter(|e| e["actor"]["username"] == "doc").collect();
    assert!(!glass.is_empty());
    for e in &glass {
        assert_eq!(e["reason"], "break-glass");
        assert_eq!(e["details"]["grant_id"], grant_id.as_str());
    }
    let member_read = reads.iter().find(|e| e["actor"]["username"] == "pat.a").expect("member read");
    assert_ne!(member_read["reason"], "break-glass");

    // The alert: signed, retried after a 503, ids only.
    let got = webhook_calls(&calls, 2).await;
    assert_eq!(got.len(), 2, "one refused call and its retry");
    let (headers, body) = &got[1];
    assert!(signed(headers, body, secret), "signed with the alert secret");
    assert!(!signed(headers, body, "another secret of enough length 0123456789"));
    assert_eq!(got[0].0["ward-webhook-id"], headers["ward-webhook-id"], "the retry keeps its id");
    let alert: Value = serde_json::from_str(body).expect("json");
    assert_eq!(alert["type"], "breakglass.invoked");
    assert_eq!(alert["grant_id"], grant_id.as_str());
    assert_eq!(alert["dialog_id"], dialog.as_str());
    assert!(!body.contains("unresponsive") && !body.contains("penicillin"), "no reason or PHI in the alert");

    // Visible to administrators and auditors (not to the clinician), and revocable.
    for token in [&admin, &auditor] {
        let (status, list) = get(&server, token, "/v1/admin/break-glass?active=true").await;
        assert_eq!(status, 200);
        assert_eq!(list["grants"][0]["id"], grant_id.as_str(), "{list}");
        assert_eq!(list["grants"][0]["reason"], reason);
    }
    assert_eq!(get(&server, &doc, "/v1/admin/break-glass").await.0, 403);
    let res = c.delete(server.at(&format!("/v1/admin/break-glass/{grant_id}"))).bearer_auth(&auditor).send().await;
    assert_eq!(res.expect("revoke").status(), 403, "auditors see but do not revoke");
    let res = c.delete(server.at(&format!("/v1/admin/break-glass/{grant_id}"))).bearer_auth(&admin).send().await;
    assert_eq!(res.expect("revoke").status(), 200);
    assert_eq!(get(&server, &doc, &messages).await.0, 404, "revoked: gone at once");
    assert_eq!(events(&server, &auditor, "action=breakglass.revoke&outcome=success").await.len(), 1);

    // A new grant expires on its own.
    let res = invoke(doc.clone(), reason).await.expect("invoke");
    assert_eq!(res.status(), 201);
    let grant: Value = res.json().await.expect("json");
    let expires = time::OffsetDateTime::parse(
        grant["expires_at"].as_str().expect("expires"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("time");
    assert_eq!(get(&server, &doc, &messages).await.0, 200);
    let wait = expires - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(500);
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    assert_eq!(get(&server, &doc, &messages).await.0, 404, "expired");

    // The reason is nowhere on disk in the clear, nor in the log, nor in the whole trail.
    let log = server.stderr();
    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(!log.contains(&marker), "no reason in the log");
    for file in crate::secrets_at_rest::files_under(&dir.path) {
        let bytes = std::fs::read(&file).expect("read");
        let found = bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
        assert!(!found, "{} holds a break-glass reason in the clear", file.display());
    }
}

/// A break-glass alert still being retried when the server is told to stop is delivered
/// before it exits (the webhook is drained within the shutdown grace), not lost.
#[tokio::test]
async fn a_break_glass_alert_pending_at_shutdown_is_delivered_before_exit() {
    let dir = data_dir();
    let secret = "alert-secret-0123456789abcdef-0123456789";
    // Two refusals: the alert lands on its third try, about 3 s later (back-off 1 s, 2 s).
    let (url, calls) = webhook_receiver(vec![503, 503]).await;
    add_user(&dir.path, &[], "pat.a", "patient", "violet orchard lantern 7781");
    add_user(&dir.path, &[], "doc", "clinician", "violet orchard lantern 7781");
    let env = [("WARD_ACCESS_ALERT_WEBHOOK_URL", url.as_str()), ("WARD_ACCESS_ALERT_WEBHOOK_SECRET", secret)];
    let server = Server::start(&dir.path, &["--no-tls"], &env);
    let a = login(&server, "pat.a", "violet orchard lantern 7781").await;
    let dialog = group(&server, &a, &[]).await;
    // A clinician must use MFA (the default): the first sign-in enrolls, the second proves
    // a code, as break-glass needs.
    login(&server, "doc", "violet orchard lantern 7781").await;
    let doc = login(&server, "doc", "violet orchard lantern 7781").await;
    let res = server
        .client()
        .post(server.at(&format!("/v1/dialogs/{dialog}/break-glass")))
        .bearer_auth(&doc)
        .json(&json!({ "reason": "on-call: care team unreachable, need history" }))
        .send()
        .await
        .expect("invoke");
    assert_eq!(res.status(), 201);

    signal(&server.child, "TERM");
    // Waited for off this runtime, which also runs the webhook receiver.
    let exit = tokio::task::spawn_blocking(move || server.wait_exit()).await.expect("wait");
    assert_eq!(exit.code(), Some(0));
    let got = calls.lock().expect("lock").clone();
    assert_eq!(got.len(), 3, "the alert was retried to delivery before the server exited");
    assert!(signed(&got[2].0, &got[2].1, secret));
    assert_eq!(serde_json::from_str::<Value>(&got[2].1).expect("json")["type"], "breakglass.invoked");
}

/// A grant written before reasons were sealed (its reason in the plaintext column) is
/// sealed when the server starts, and still shown to auditors; the plaintext is gone.
#[tokio::test]
async fn break_glass_reasons_from_before_sealing_are_sealed_at_start() {
    use sqlx::Connection as _;
    let dir = data_dir();
    add_user(&dir.path, &[], "pat.a", "patient", "violet orchard lantern 7781");
    add_user(&dir.path, &[], "doc", "clinician", "violet orchard lantern 7781");
    add_user(&dir.path, &[], "audra", "auditor", "amber quarry meadow 7781");
    let env = [("WARD_AUTH_MFA_REQUIRED_ROLES", "[]")];
    let server = Server::start(&dir.path, &["--no-tls"], &env);
    let a = login(&server, "pat.a", "violet orchard lantern 7781").await;
    let doc = login(&server, "doc", "violet orchard lantern 7781").await;
    let dialog = group(&server, &a, &[]).await;
    let doc_id = user_id(&server, &doc).await;
    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));

    // The row as migration 0009 wrote it.
    let marker = format!("LEGACY-{}", uuid::Uuid::new_v4().simple());
    let grant_id = uuid::Uuid::now_v7().to_string();
    let url = format!("sqlite://{}", dir.path.join("ward.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    sqlx::query(
        "INSERT INTO breakglass_grants (id, user_id, dialog_id, reason, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&grant_id)
    .bind(&doc_id)
    .bind(&dialog)
    .bind(format!("on-call, care team unreachable {marker}"))
    .bind(now - 60_000)
    .bind(now - 1_000)
    .execute(&mut conn)
    .await
    .expect("legacy grant");
    conn.close().await.expect("close");
    let on_disk = |marker: &str| {
        crate::secrets_at_rest::files_under(&dir.path)
            .into_iter()
            .find(|file| std::fs::read(file).expect("read").windows(marker.len()).any(|w| w == marker.as_bytes()))
    };
    assert!(on_disk(&marker).is_some(), "the legacy plaintext is on disk before the start (the scan can see it)");

    let server = Server::start(&dir.path, &["--no-tls"], &env);
    let auditor = login(&server, "audra", "amber quarry meadow 7781").await;
    let (status, list) = get(&server, &auditor, "/v1/admin/break-glass").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["grants"][0]["id"], grant_id.as_str(), "{list}");
    assert_eq!(list["grants"][0]["reason"], format!("on-call, care team unreachable {marker}"));
    let sealed = events(&server, &auditor, "action=breakglass.reason_seal").await;
    assert_eq!(sealed.len(), 1, "the sealing is recorded");
    assert_eq!(sealed[0]["details"]["grant_id"], grant_id.as_str());
    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));

    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
    let (plain, sealed_len): (String, i64) =
        sqlx::query_as("SELECT reason, length(reason_sealed) FROM breakglass_grants WHERE id = $1")
            .bind(&grant_id)
            .fetch_one(&mut conn)
            .await
            .expect("row");
    conn.close().await.expect("close");
    assert_eq!(plain, "", "the plaintext column is emptied");
    assert!(sealed_len > 0);
    assert_eq!(on_disk(&marker), None, "the legacy reason is nowhere on disk in the clear");
}

#[tokio::test]
async fn the_access_review_lists_each_account_by_api_and_cli() {
    let dir = data_dir();
    add_user(&dir.path, &[], "pat.a", "patient", "violet orchard lantern 8893");
    add_user(&dir.path, &[], "pat.idle", "patient", "violet orchard lantern 8893");
    add_user(&dir.path, &[], "audra", "auditor", "amber quarry meadow 8893");
    add_user(&dir.path, &[], "adam", "admin", "amber quarry meadow 8893");
    let server = Server::start(&dir.path, &["--no-tls"], &[]);
    let a = login(&server, "pat.a", "violet orchard lantern 8893").await;
    let auditor = login(&server, "audra", "amber quarry meadow 8893").await;
    let admin = login(&server, "adam", "amber quarry meadow 8893").await;
    let dialog = group(&server, &a, &[]).await;

    assert_eq!(get(&server, &admin, "/v1/access/review").await.0, 403, "a report for auditors");
    let (status, review) = get(&server, &auditor, "/v1/access/review?days=30").await;
    assert_eq!(status, 200, "{review}");
    let users = review["users"].as_array().expect("users");
    let row = |name: &str| users.iter().find(|u| u["username"] == name).expect("user").clone();
    let pat = row("pat.a");
    assert_eq!(pat["roles"], json!(["patient"]));
    assert_eq!(pat["policies"], json!(["ward-patient"]));
    assert_eq!(pat["dialog_memberships"], json!([dialog]));
    assert!(pat["last_sign_in"].is_string());
    assert_eq!(pat["mfa_enrolled"], false);
    assert_eq!(pat["dormant"], false);
    let perms: Vec<&str> =
        pat["effective_permissions"].as_array().expect("perms").iter().filter_map(|p| p["action"].as_str()).collect();
    assert!(perms.contains(&"message:send") && !perms.contains(&"user:create"), "{perms:?}");
    assert!(row("pat.idle")["last_sign_in"].is_null());
    assert_eq!(row("audra")["mfa_enrolled"], true, "auditors enroll at first sign-in");
    let admin_perms = row("adam")["effective_permissions"].clone();
    let admin_actions: Vec<&str> =
        admin_perms.as_array().expect("perms").iter().filter_map(|p| p["action"].as_str()).collect();
    assert!(!admin_actions.iter().any(|a| a.starts_with("message:") || a.starts_with("file:")), "{admin_actions:?}");
    assert_eq!(review["dormant_days"], 90);

    // The CLI, on the same data dir while the server runs.
    for (format, expect) in [("json", "\"username\": \"pat.idle\""), ("csv", "username,id,roles"), ("table", "DORMANT")]
    {
        let mut cmd = ward();
        cmd.args(["access", "review", "--format", format, "--data-dir"]).arg(&dir.path);
        let out = run(cmd, None);
        assert!(out.status.success(), "{format}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if format == "table" {
            // Nobody here is dormant: the word appears only as a column header.
            assert!(!text.contains("DORMANT"), "{text}");
            assert!(text.contains("pat.idle") && text.contains("ward-patient"), "{text}");
        } else {
            assert!(text.contains(expect), "{format}: {text}");
        }
    }
    let reviews = events(&server, &auditor, "action=access.review").await;
    assert!(reviews.len() >= 4, "the API and each CLI run are recorded: {reviews:?}");
}
