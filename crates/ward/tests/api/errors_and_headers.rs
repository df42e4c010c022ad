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
