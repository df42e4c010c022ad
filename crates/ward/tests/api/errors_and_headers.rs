//! Errors in the contract's shape, for every way a request can fail; security headers.

use crate::helpers::*;

#[tokio::test]
async fn every_failure_has_the_contract_shape() {
    let dir = data_dir();
    // A small body limit keeps the oversized body within socket buffers, so the client
    // reads the early 413 instead of failing mid-upload.
    let server = Server::start(&dir.path, &["--no-tls"], &[("WARD_SERVER_MAX_BODY_BYTES", "2048")]);
    let c = server.client();

    let res = c.get(server.at("/no/such/route")).send().await.expect("404");
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "not_found");

    let res = c.delete(server.at("/healthz")).send().await.expect("405");
    assert_eq!(res.status(), 405);
    assert_eq!(error_code(res).await, "method_not_allowed");

    let res = c
        .post(server.at("/v1/auth/login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("400");
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid_request");

    let res =
        c.post(server.at("/v1/auth/login")).json(&serde_json::json!({"username": "x"})).send().await.expect("400");
    assert_eq!(res.status(), 400, "missing field");
    assert_eq!(error_code(res).await, "invalid_request");

    let big = "x".repeat(8 * 1024);
    let res = c
        .post(server.at("/v1/auth/login"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("413");
    assert_eq!(res.status(), 413);
    assert_eq!(error_code(res).await, "payload_too_large");

    let res = c
        .post(server.at("/v1/auth/login"))
        .json(&serde_json::json!({"username": "nobody", "password": "wrong password here"}))
        .send()
        .await
        .expect("401");
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "invalid_credentials");

    let res = c.get(server.at("/v1/auth/session")).send().await.expect("401");
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "unauthenticated");
}

/// A bad query string or path id is refused 400 `invalid_request` with a message naming the
/// missing, unknown or malformed parameter, and never quotes a value the client sent.
#[tokio::test]
async fn bad_query_strings_and_path_ids_name_the_parameter_not_the_value() {
    let dir = data_dir();
    add_user(&dir.path, &[], "pat.q", "patient", "violet orchard lantern 4471");
    let server = Server::start(&dir.path, &["--no-tls"], &[]);
    let token = login(&server, "pat.q", "violet orchard lantern 4471").await;
    let dialog = uuid::Uuid::now_v7();
    let refused = |query: String| {
        let (server, token) = (&server, &token);
        async move {
            let res = server
                .client()
                .post(server.at(&format!("/v1/files{query}")))
                .bearer_auth(token)
                .header("content-type", "text/plain")
                .body("hello")
                .send()
                .await
                .expect("upload");
            assert_eq!(res.status(), 400, "{query}");
            let body: serde_json::Value = res.json().await.expect("json");
            assert_eq!(body["error"]["code"], "invalid_request", "{body}");
            body["error"]["message"].as_str().expect("message").to_string()
        }
    };
    let missing = refused(String::new()).await;
    assert!(missing.contains("missing field `dialog_id`"), "{missing}");
    let unknown = refused(format!("?dialog_id={dialog}&colour=blue")).await;
    assert!(unknown.contains("unknown field `colour`"), "{unknown}");
    let wrong = refused("?dialog_id=PHI-MARKER-not-a-uuid".to_string()).await;
    assert!(wrong.contains("wrong type or format") && !wrong.contains("PHI-MARKER"), "{wrong}");

    // The same for a path id.
    for path in ["/v1/files/PHI-MARKER", "/v1/dialogs/PHI-MARKER/messages"] {
        let res = server.client().get(server.at(path)).bearer_auth(&token).send().await.expect("get");
        assert_eq!(res.status(), 400, "{path}");
        let body: serde_json::Value = res.json().await.expect("json");
        let message = body["error"]["message"].as_str().expect("message");
        assert_eq!(body["error"]["code"], "invalid_request");
        assert!(message.contains("`id` is not a valid id") && !message.contains("PHI-MARKER"), "{message}");
    }
}

#[tokio::test]
async fn answers_carry_security_headers_and_a_fresh_request_id() {
    let dir = data_dir();
    let server = Server::plain(&dir.path);
    let res =
        server.client().get(server.at("/healthz")).header("x-request-id", "forged-id").send().await.expect("healthz");
    let h = res.headers();
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h["content-security-policy"].to_str().expect("ascii").contains("default-src 'none'"));
    assert!(h.get("strict-transport-security").is_none(), "no HSTS over plain HTTP");
    let id = h["x-request-id"].to_str().expect("ascii");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "server-made request id: {id}");
}
