//! `GET /v1/ws`: authentication by first frame, heartbeats, errors that keep the socket,
//! and automatic logoff (revocation, idle timeout) with `session.expired` and close 4401.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::*;

const PASSWORD: &str = "Socket-Secret-Passphrase-4410";
const USER: &str = "ws.user";
/// Generous: a frame that should come "at once" or "within seconds" must come before this.
const SOON: Duration = Duration::from_secs(5);
const LONG: Duration = Duration::from_secs(30);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A server with one staff user (no MFA). The server field comes first so it stops
/// before its data dir is removed.
struct Env {
    server: Server,
    _dir: DataDir,
}

fn start(env: &[(&str, &str)]) -> Env {
    let dir = data_dir();
    add_user(&dir.path, &[], USER, "staff", PASSWORD);
    let server = Server::start(&dir.path, &["--no-tls"], env);
    Env { server, _dir: dir }
}

async fn connect(server: &Server, path_and_query: &str) -> Ws {
    let url = format!("{}{path_and_query}", server.url.replacen("http://", "ws://", 1));
    let (ws, response) = tokio_tungstenite::connect_async(url).await.expect("WebSocket upgrade");
    assert_eq!(response.status(), 101);
    ws
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.expect("send");
}

#[derive(Debug)]
enum Got {
    Json(Value),
    Closed(Option<u16>, String),
}

/// The next text or close frame (WebSocket pings and pongs are skipped), or None if none
/// came within `limit`.
async fn next(ws: &mut Ws, limit: Duration) -> Option<Got> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()?;
        match msg {
            Some(Ok(Message::Text(t))) => return Some(Got::Json(serde_json::from_str(&t).expect("JSON text frame"))),
            Some(Ok(Message::Close(f))) => {
                return Some(Got::Closed(
                    f.as_ref().map(|f| u16::from(f.code)),
                    f.map(|f| f.reason.to_string()).unwrap_or_default(),
                ));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            Some(Err(e)) => panic!("socket error: {e}"),
            None => return Some(Got::Closed(None, String::new())),
        }
    }
}

async fn next_json(ws: &mut Ws, limit: Duration) -> Value {
    match next(ws, limit).await {
        Some(Got::Json(v)) => v,
        other => panic!("expected a JSON frame, got {other:?}"),
    }
}

async fn expect_close(ws: &mut Ws, limit: Duration, reason: &str) {
    match next(ws, limit).await {
        Some(Got::Closed(Some(4401), r)) => assert_eq!(r, reason),
        other => panic!("expected close 4401 {reason}, got {other:?}"),
    }
}

/// Connects and authenticates; returns the socket and the `ready` frame.
async fn ready(server: &Server, token: &str) -> (Ws, Value) {
    let mut ws = connect(server, "/v1/ws").await;
    send(&mut ws, json!({"type": "auth", "token": token})).await;
    let ready = next_json(&mut ws, SOON).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    (ws, ready)
}

fn rfc3339(v: &Value) -> time::OffsetDateTime {
    let text = v.as_str().unwrap_or_else(|| panic!("a timestamp string, got {v}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).expect("RFC 3339")
}

#[tokio::test]
async fn ws_without_an_auth_frame_closes_4401_after_10_s() {
    let env = start(&[]);
    let started = Instant::now();
    let mut ws = connect(&env.server, "/v1/ws").await;
    expect_close(&mut ws, LONG, "unauthenticated").await;
    assert!(started.elapsed() >= Duration::from_secs(9), "waited for the auth frame: {:?}", started.elapsed());
}

#[tokio::test]
async fn ws_refuses_a_wrong_token_or_a_first_frame_that_is_not_auth_at_once() {
    let env = start(&[]);
    let mut ws = connect(&env.server, "/v1/ws").await;
    send(&mut ws, json!({"type": "auth", "token": "not-a-real-token"})).await;
    expect_close(&mut ws, SOON, "unauthenticated").await;

    // A token in the URL is not honoured: the first frame must still be `auth`.
    let token = login(&env.server, USER, PASSWORD).await;
    let mut ws = connect(&env.server, &format!("/v1/ws?token={token}")).await;
    send(&mut ws, json!({"type": "ping"})).await;
    expect_close(&mut ws, SOON, "unauthenticated").await;

    let mut ws = connect(&env.server, "/v1/ws").await;
    ws.send(Message::text("not json")).await.expect("send");
    expect_close(&mut ws, SOON, "unauthenticated").await;

    // A plain GET is not an upgrade: the contract's error shape.
    let res = env.server.client().get(env.server.at("/v1/ws")).send().await.expect("get");
    assert!(res.status().is_client_error(), "{}", res.status());
    assert_eq!(error_code(res).await, "invalid_request");
    let doc: Value = env
        .server
        .client()
        .get(env.server.at("/v1/openapi.json"))
        .send()
        .await
        .expect("doc")
        .json()
        .await
        .expect("json");
    assert!(doc["paths"]["/v1/ws"]["get"].is_object(), "documented in OpenAPI");
}

#[tokio::test]
async fn ws_refuses_a_session_that_must_still_enroll_mfa() {
    let env = start(&[]);
    add_user(&env._dir.path, &[], "ws.clinician", "clinician", PASSWORD);
    let answer = login_answer(&env.server, "ws.clinician", PASSWORD).await;
    assert_eq!(answer["mfa_enrollment_required"], true, "{answer}");
    let mut ws = connect(&env.server, "/v1/ws").await;
    send(&mut ws, json!({"type": "auth", "token": answer["token"]})).await;
    expect_close(&mut ws, SOON, "mfa_required").await;
}

#[tokio::test]
async fn ws_ready_then_bad_frames_get_errors_and_the_socket_lives_on() {
    let env = start(&[]);
    let token = login(&env.server, USER, PASSWORD).await;
    let (mut ws, ready) = ready(&env.server, &token).await;
    assert!(ready["user_id"].as_str().is_some_and(|s| !s.is_empty()), "{ready}");
    assert!(ready["session_id"].as_str().is_some_and(|s| !s.is_empty()), "{ready}");
    assert!(rfc3339(&ready["idle_expires_at"]) <= rfc3339(&ready["expires_at"]), "{ready}");

    ws.send(Message::text("not json")).await.expect("send");
    let e = next_json(&mut ws, SOON).await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("invalid_request")), "{e}");
    assert!(!e["message"].as_str().unwrap_or_default().contains("not json"), "input is not quoted: {e}");
    send(&mut ws, json!({"type": "no.such.type"})).await;
    let e = next_json(&mut ws, SOON).await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("invalid_request")), "{e}");
    ws.send(Message::binary(vec![1u8, 2, 3])).await.expect("send");
    let e = next_json(&mut ws, SOON).await;
    assert_eq!(e["type"], "error", "{e}");

    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut ws, SOON).await, json!({"type": "pong"}));
}

#[tokio::test]
async fn ws_logout_over_http_ends_the_socket_with_session_expired_revoked() {
    let env = start(&[]);
    let token = login(&env.server, USER, PASSWORD).await;
    let (mut ws, _) = ready(&env.server, &token).await;
    let res = env.server.client().post(env.server.at("/v1/auth/logout")).bearer_auth(&token).send().await;
    assert_eq!(res.expect("logout").status(), 204);
    let expired = next_json(&mut ws, SOON).await;
    assert_eq!(expired, json!({"type": "session.expired", "reason": "revoked"}));
    expect_close(&mut ws, SOON, "session_expired").await;
}

#[tokio::test]
async fn ws_idle_socket_is_logged_off_and_the_expiry_is_recorded_once() {
    let env = start(&[("WARD_SESSION_IDLE_TIMEOUT_S", "10")]);
    let token = login(&env.server, USER, PASSWORD).await;
    let (mut ws, ready) = ready(&env.server, &token).await;
    let session_id = ready["session_id"].as_str().expect("session id").to_string();

    // Only heartbeats from the client: they are not activity.
    let deadline = Instant::now() + LONG;
    let mut frames = Vec::new();
    let close = loop {
        assert!(Instant::now() < deadline, "no logoff within {LONG:?}; frames: {frames:?}");
        match next(&mut ws, Duration::from_secs(2)).await {
            None => send(&mut ws, json!({"type": "ping"})).await,
            Some(Got::Json(v)) => frames.push(v),
            Some(closed @ Got::Closed(..)) => break closed,
        }
    };
    assert!(matches!(&close, Got::Closed(Some(4401), r) if r == "session_expired"), "{close:?}");
    let events: Vec<&Value> = frames.iter().filter(|f| f["type"] != "pong").collect();
    assert_eq!(events.len(), 2, "one warning, one expiry: {frames:?}");
    assert_eq!(events[0]["type"], "session.expiring", "{frames:?}");
    assert_eq!(events[0]["reason"], "idle", "{frames:?}");
    rfc3339(&events[0]["expires_at"]);
    assert_eq!(*events[1], json!({"type": "session.expired", "reason": "idle_timeout"}));

    let res = env.server.client().get(env.server.at("/v1/auth/session")).bearer_auth(&token).send().await;
    let res = res.expect("session");
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "session_expired");

    // The expiry is in the audit trail once, as for an HTTP request.
    let url = format!("sqlite://{}?mode=ro", env.server.data_dir.join("ward.db").display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.expect("open db");
    let reasons: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT reason FROM audit_events WHERE action = 'session.expired' AND resource = $1")
            .bind(format!("session/{session_id}"))
            .fetch_all(&mut conn)
            .await
            .expect("query");
    assert_eq!(reasons, vec![(Some("idle_timeout".to_string()),)]);
}

#[tokio::test]
async fn ws_activity_frames_keep_the_session_alive_past_the_idle_limit() {
    let env = start(&[("WARD_SESSION_IDLE_TIMEOUT_S", "10")]);
    let token = login(&env.server, USER, PASSWORD).await;
    let (mut ws, _) = ready(&env.server, &token).await;
    let until = Instant::now() + Duration::from_secs(14);
    while Instant::now() < until {
        send(&mut ws, json!({"type": "activity"})).await;
        let slice = Instant::now() + Duration::from_secs(3);
        while let Some(left) = slice.checked_duration_since(Instant::now()) {
            match next(&mut ws, left).await {
                None => break,
                Some(Got::Json(v)) => assert_ne!(v["type"], "session.expired", "activity keeps the session: {v}"),
                Some(closed) => panic!("the socket closed despite activity: {closed:?}"),
            }
        }
    }
    let res = env.server.client().get(env.server.at("/v1/auth/session")).bearer_auth(&token).send().await;
    assert_eq!(res.expect("session").status(), 200, "the session is still alive");
}

#[tokio::test]
async fn ws_server_shutdown_closes_with_1001_and_the_server_exits() {
    let env = start(&[]);
    let token = login(&env.server, USER, PASSWORD).await;
    let (mut ws, _) = ready(&env.server, &token).await;
    signal(&env.server.child, "TERM");
    match next(&mut ws, LONG).await {
        Some(Got::Closed(Some(1001), _)) => {}
        other => panic!("expected close 1001, got {other:?}"),
    }
    let Env { server, _dir } = env;
    assert_eq!(server.wait_exit().code(), Some(0));
}

/// Members get every event of their dialogs pushed; others get nothing; a removed member
/// stops receiving.
#[tokio::test]
async fn members_receive_their_dialogs_events_and_no_one_else_does() {
    let env = start(&[]);
    let server = &env.server;
    let dir = &server.data_dir;
    add_user(dir, &[], "ws.patient", "patient", "patient socket passphrase 1");
    add_user(dir, &[], "ws.outsider", "patient", "patient socket passphrase 2");
    let staff = login(server, USER, PASSWORD).await;
    let patient = login(server, "ws.patient", "patient socket passphrase 1").await;
    let outsider = login(server, "ws.outsider", "patient socket passphrase 2").await;
    let (mut ws_staff, staff_ready) = ready(server, &staff).await;
    let (mut ws_patient, patient_ready) = ready(server, &patient).await;
    let (mut ws_outsider, _) = ready(server, &outsider).await;
    let patient_id = patient_ready["user_id"].as_str().expect("id").to_string();
    let c = server.client();

    let res = c
        .post(server.at("/v1/dialogs"))
        .bearer_auth(&staff)
        .json(&json!({"type": "group", "name": "follow-up", "members": [patient_id]}))
        .send()
        .await
        .expect("dialog");
    assert_eq!(res.status(), 201);
    let dialog = res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string();
    for ws in [&mut ws_staff, &mut ws_patient] {
        let event = next_json(ws, SOON).await;
        assert_eq!(
            (event["type"].as_str(), event["dialog"]["id"].as_str()),
            (Some("dialog.created"), Some(dialog.as_str()))
        );
    }

    let res = c
        .post(server.at(&format!("/v1/dialogs/{dialog}/messages")))
        .bearer_auth(&patient)
        .json(&json!({"body": "the rash is spreading"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);
    let mid = res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string();
    for ws in [&mut ws_staff, &mut ws_patient] {
        let event = next_json(ws, SOON).await;
        assert_eq!(event["type"], "message.created", "{event}");
        assert_eq!(
            (event["message"]["seq"].as_i64(), event["message"]["body"].as_str()),
            (Some(1), Some("the rash is spreading"))
        );
    }

    send(&mut ws_staff, json!({"type": "typing", "dialog_id": dialog})).await;
    let typing = next_json(&mut ws_patient, SOON).await;
    assert_eq!(
        (typing["type"].as_str(), typing["user_id"].as_str()),
        (Some("typing"), staff_ready["user_id"].as_str())
    );
    send(&mut ws_outsider, json!({"type": "typing", "dialog_id": dialog})).await;
    let refused = next_json(&mut ws_outsider, SOON).await;
    assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("not_found")));

    let res = c
        .patch(server.at(&format!("/v1/dialogs/{dialog}/messages/{mid}")))
        .bearer_auth(&patient)
        .json(&json!({"body": "the rash is spreading fast"}))
        .send()
        .await
        .expect("edit");
    assert_eq!(res.status(), 200);
    let res = c
        .post(server.at(&format!("/v1/dialogs/{dialog}/read")))
        .bearer_auth(&staff)
        .json(&json!({"up_to_seq": 1}))
        .send()
        .await
        .expect("read");
    assert_eq!(res.status(), 204);
    for ws in [&mut ws_staff, &mut ws_patient] {
        assert_eq!(next_json(ws, SOON).await["type"], "message.updated");
        assert_eq!(next_json(ws, SOON).await["type"], "receipt.read");
    }

    let res = c
        .delete(server.at(&format!("/v1/dialogs/{dialog}/members/{patient_id}")))
        .bearer_auth(&staff)
        .send()
        .await
        .expect("remove");
    assert_eq!(res.status(), 204);
    assert_eq!(next_json(&mut ws_patient, SOON).await["type"], "dialog.member_removed");
    assert_eq!(next_json(&mut ws_staff, SOON).await["type"], "dialog.member_removed");
    let res = c
        .post(server.at(&format!("/v1/dialogs/{dialog}/messages")))
        .bearer_auth(&staff)
        .json(&json!({"body": "after the removal"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);
    assert_eq!(next_json(&mut ws_staff, SOON).await["type"], "message.created");
    assert!(next(&mut ws_patient, Duration::from_millis(500)).await.is_none(), "a removed member gets nothing more");
    assert!(next(&mut ws_outsider, Duration::from_millis(500)).await.is_none(), "a stranger never got anything");
}

#[tokio::test]
async fn offline_members_get_a_signed_push_with_ids_only() {
    const SECRET: &str = "push webhook secret: at least 32 characters";
    const BODY_MARKER: &str = "PUSH-BODY-MARKER-7c1e";
    const NAME_MARKER: &str = "PUSH-NAME-MARKER-93ab";
    // The first call answers 503: the notification is retried, with the same id.
    let (url, calls) = webhook_receiver(vec![503]).await;
    let env = start(&[("WARD_MESSAGING_PUSH_WEBHOOK_URL", &url), ("WARD_MESSAGING_PUSH_WEBHOOK_SECRET", SECRET)]);
    let server = &env.server;
    let dir = &server.data_dir;
    add_user(dir, &[], "push.online", "patient", "patient push passphrase 1");
    add_user(dir, &[], "push.offline", "patient", "patient push passphrase 2");
    let staff = login(server, USER, PASSWORD).await;
    let online = login(server, "push.online", "patient push passphrase 1").await;
    let offline = login(server, "push.offline", "patient push passphrase 2").await;
    let (online_id, offline_id) = (user_id(server, &online).await, user_id(server, &offline).await);
    let (mut ws_online, _) = ready(server, &online).await;
    let c = server.client();
    let res = c
        .post(server.at("/v1/dialogs"))
        .bearer_auth(&staff)
        .json(&json!({"type": "group", "name": NAME_MARKER, "members": [online_id, offline_id]}))
        .send()
        .await
        .expect("dialog");
    assert_eq!(res.status(), 201);
    let dialog = res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string();
    let message = send_message(server, &staff, &dialog, BODY_MARKER).await;
    let message_id = message["id"].as_str().expect("id").to_string();
    assert_eq!(next_json(&mut ws_online, SOON).await["type"], "dialog.created");
    assert_eq!(next_json(&mut ws_online, SOON).await["type"], "message.created");

    let got = webhook_calls(&calls, 2).await;
    assert_eq!(got.len(), 2, "one refused call and its retry: {got:?}");
    let ids: Vec<&str> = got.iter().map(|(h, _)| h.get("ward-webhook-id").map_or("", String::as_str)).collect();
    assert!(!ids[0].is_empty() && ids[0] == ids[1], "a retry keeps the notification id: {ids:?}");
    for (headers, body) in &got {
        assert!(signed(headers, body, SECRET), "HMAC-signed with the secret: {headers:?}");
        assert!(!signed(headers, body, "another secret of at least 32 characters!"), "a wrong key fails");
        assert!(!body.contains(BODY_MARKER) && !body.contains(NAME_MARKER), "no PHI: {body}");
        let v: Value = serde_json::from_str(body).expect("JSON");
        let mut keys: Vec<&str> = v.as_object().expect("object").keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["created_at", "dialog_id", "id", "message_id", "recipient_ids", "type"], "ids only: {v}");
        assert_eq!(
            (v["dialog_id"].as_str(), v["message_id"].as_str()),
            (Some(dialog.as_str()), Some(message_id.as_str()))
        );
        assert_eq!(v["recipient_ids"], json!([offline_id]), "neither the sender nor a connected member");
    }

    // The connected member leaves: both members are offline now.
    drop(ws_online);
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_message(server, &staff, &dialog, BODY_MARKER).await;
    let got = webhook_calls(&calls, 3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    let v: Value = serde_json::from_str(&got[2].1).expect("JSON");
    let mut to: Vec<String> =
        v["recipient_ids"].as_array().expect("ids").iter().map(|x| x.as_str().expect("id").to_string()).collect();
    to.sort();
    let mut want = vec![online_id.clone(), offline_id.clone()];
    want.sort();
    assert_eq!(to, want);

    let metrics = c.get(server.at("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("ward_push_webhook_calls_total{outcome=\"delivered\"} 2"), "{metrics}");
    let logs = server.stderr();
    assert!(!logs.contains(BODY_MARKER) && !logs.contains(NAME_MARKER), "no PHI in the log");
}

/// Revocations reach open sockets through the session-change feed, whoever makes them:
/// an API key revoked over HTTP, and a user disabled by the CLI (another process).
#[tokio::test]
async fn ws_ends_when_its_api_key_is_revoked_or_its_user_disabled_by_the_cli() {
    let env = start(&[]);
    let server = &env.server;
    let dir = &server.data_dir;
    add_user(dir, &[], "ws.admin", "admin", "admin socket passphrase 71");
    add_user(dir, &[], "ws.bot", "service", "service socket passphrase 72");
    let admin = login(server, "ws.admin", "admin socket passphrase 71").await;
    let bot_token = login(server, "ws.bot", "service socket passphrase 72").await;
    let bot = user_id(server, &bot_token).await;
    let c = server.client();
    let res = c
        .post(server.at(&format!("/v1/users/{bot}/api-keys")))
        .bearer_auth(&admin)
        .json(&json!({"name": "socket feed", "role": "service"}))
        .send()
        .await
        .expect("create key");
    assert_eq!(res.status(), 201);
    let made: Value = res.json().await.expect("json");
    let (key, key_id) = (made["key"].as_str().expect("key"), made["id"].as_str().expect("id"));

    let (mut keyed, _) = ready(server, key).await;
    let (mut other, _) = ready(server, &bot_token).await;
    let res = c
        .delete(server.at(&format!("/v1/users/{bot}/api-keys/{key_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("revoke");
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(next_json(&mut keyed, SOON).await, json!({"type": "session.expired", "reason": "revoked"}));
    expect_close(&mut keyed, SOON, "session_expired").await;
    // The same user's session socket re-checked and lives on.
    send(&mut other, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut other, SOON).await, json!({"type": "pong"}));

    let staff = login(server, USER, PASSWORD).await;
    let (mut ws, _) = ready(server, &staff).await;
    let mut cmd = ward();
    cmd.args(["user", "disable", USER, "--data-dir"]).arg(dir);
    let out = run(cmd, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(next_json(&mut ws, SOON).await, json!({"type": "session.expired", "reason": "revoked"}));
    expect_close(&mut ws, SOON, "session_expired").await;
}

/// A member whose policies deny reading one dialog gets none of its events on the socket and
/// no last message in the list, while another dialog's events still arrive.
#[tokio::test]
async fn a_member_denied_reading_gets_no_events_or_last_message_of_that_dialog() {
    let dir = data_dir();
    add_user(&dir.path, &[], "pat.a", "patient", PASSWORD);
    add_user(&dir.path, &[], "pat.b", "patient", PASSWORD);
    add_user(&dir.path, &[], "adam", "admin", PASSWORD);
    let server = Server::start(&dir.path, &["--no-tls"], &[("WARD_ACCESS_POLICY_CACHE_S", "0")]);
    let c = server.client();
    let a = login(&server, "pat.a", PASSWORD).await;
    let b = login(&server, "pat.b", PASSWORD).await;
    let admin = login(&server, "adam", PASSWORD).await;
    let b_id = user_id(&server, &b).await;
    let mut dialogs = Vec::new();
    for _ in 0..2 {
        let res = c
            .post(server.at("/v1/dialogs"))
            .bearer_auth(&a)
            .json(&json!({"type": "group", "name": "care", "members": [b_id]}))
            .send()
            .await
            .expect("dialog");
        dialogs.push(res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string());
    }
    let (hidden, open) = (dialogs[0].clone(), dialogs[1].clone());
    send_message(&server, &a, &hidden, "HIDDEN-MARKER before").await;
    let deny = json!({"statements": [{"effect": "deny", "actions": ["message:read"],
                                      "resources": [format!("dialog/{hidden}")]}]});
    put_policy_for(&server, &admin, "no-reading", &deny, &[&b_id]).await;

    let list: Value =
        c.get(server.at("/v1/dialogs")).bearer_auth(&b).send().await.expect("list").json().await.expect("json");
    let entry = |id: &str| list["dialogs"].as_array().expect("dialogs").iter().find(|d| d["id"] == id).cloned();
    assert_eq!(entry(&hidden).expect("still listed: dialog:read is allowed")["last_message"], Value::Null);
    assert!(!list.to_string().contains("HIDDEN-MARKER"), "{list}");

    let (mut ws, _) = ready(&server, &b).await;
    send_message(&server, &a, &hidden, "HIDDEN-MARKER live").await;
    send_message(&server, &a, &open, "visible").await;
    // Events reach a socket in order: the visible one arrives, the hidden one never did.
    loop {
        let event = next_json(&mut ws, SOON).await;
        assert!(!event.to_string().contains("HIDDEN-MARKER"), "a denied dialog's event was sent: {event}");
        if event["type"] == "message.created" {
            assert_eq!(event["dialog_id"], open.as_str());
            assert_eq!(event["message"]["body"], "visible");
            break;
        }
    }
    let res = c.get(server.at(&format!("/v1/dialogs/{hidden}/messages"))).bearer_auth(&b).send().await;
    assert_eq!(res.expect("history").status(), 403, "a member refused by policy gets 403");
}
