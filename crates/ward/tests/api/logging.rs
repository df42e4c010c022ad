//! Logs never hold a request body, a token or a password.

use crate::helpers::*;

#[tokio::test]
async fn sign_in_logs_hold_no_password_token_or_body_even_at_trace_level() {
    let dir = data_dir();
    let password = "Marker-Passw0rd-7f3a9c";
    add_user(&dir.path, &[], "logcheck", "clinician", password);
    let server = Server::start(&dir.path, &["--no-tls", "--log-format", "json", "--log-level", "trace"], &[]);
    let c = server.client();
    let token = login(&server, "logcheck", password).await;
    // A failed attempt carries a different secret in its body.
    let res = c
        .post(server.at("/v1/auth/login"))
        .json(&serde_json::json!({"username": "logcheck", "password": "Wrong-Marker-0e1d2c"}))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 401);
    let res = c.get(server.at("/v1/auth/session?q=Query-Marker-55")).bearer_auth(&token).send().await.expect("session");
    assert_eq!(res.status(), 200);

    let logs = server.stderr();
    assert!(logs.contains("\"request_id\""), "JSON logs with request ids:\n{logs}");
    assert!(logs.contains("/v1/auth/login"), "the sign-in request was logged");
    for secret in [password, "Wrong-Marker-0e1d2c", token.as_str(), "Query-Marker-55"] {
        assert!(!logs.contains(secret), "{secret:?} leaked into the logs");
    }
    // The message-send half of this property is tested with messaging (not yet built).
}
