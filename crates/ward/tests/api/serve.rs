//! Start-up on embedded defaults, probes, OpenAPI and metrics.

use std::os::unix::fs::PermissionsExt as _;

use crate::helpers::*;

#[tokio::test]
async fn plain_server_on_port_zero_reports_its_real_port_and_probes_answer() {
    let dir = data_dir();
    let server = Server::plain(&dir.path);
    let port: u16 = server.url.rsplit(':').next().expect("port").parse().expect("number");
    assert!(server.url.starts_with("http://127.0.0.1:") && port != 0, "{}", server.url);

    let c = server.client();
    let health = c.get(server.at("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);

    let ready = c.get(server.at("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(ready["checks"]["database"]["status"], "ok");
    assert_eq!(ready["database_backend"], "sqlite");

    let doc: serde_json::Value =
        c.get(server.at("/v1/openapi.json")).send().await.expect("openapi").json().await.expect("json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "OpenAPI 3.x: {}", doc["openapi"]);
    assert!(doc["paths"]["/v1/auth/login"]["post"].is_object(), "login documented");
    assert!(doc["paths"]["/readyz"]["get"].is_object(), "readyz documented");

    let metrics = c.get(server.at("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(
        metrics.contains(r#"ward_http_requests_total{method="GET",route="/readyz",status="200"} 1"#),
        "request counter by route and status:\n{metrics}"
    );
    assert!(metrics.contains("ward_http_request_duration_seconds_bucket"), "latency histogram");
    assert!(metrics.contains("ward_db_pool_connections"), "pool usage");
}

/// With `server.metrics_token` set, /metrics answers only the bearer of that token; other
/// callers get 401 in the contract's shape, and print-config never shows it.
#[tokio::test]
async fn metrics_can_require_a_token() {
    let dir = data_dir();
    let token = "metrics-scrape-token-0123456789abcdef";
    let server = Server::start(&dir.path, &["--no-tls"], &[("WARD_SERVER_METRICS_TOKEN", token)]);
    let c = server.client();
    for presented in [None, Some("wrong-token-of-the-same-length-012345"), Some("short")] {
        let mut req = c.get(server.at("/metrics"));
        if let Some(p) = presented {
            req = req.bearer_auth(p);
        }
        let res = req.send().await.expect("metrics");
        assert_eq!((res.status().as_u16(), error_code(res).await), (401, "unauthenticated".to_string()));
    }
    let res = c.get(server.at("/metrics")).bearer_auth(token).send().await.expect("metrics");
    assert_eq!(res.status(), 200);
    assert!(res.text().await.expect("text").contains("ward_build_info"));
    assert_eq!(c.get(server.at("/healthz")).send().await.expect("healthz").status(), 200, "probes stay open");

    let mut cmd = ward();
    cmd.args(["serve", "--print-config", "--data-dir"]).arg(&dir.path).env("WARD_SERVER_METRICS_TOKEN", token);
    let shown = String::from_utf8_lossy(&run(cmd, None).stdout).to_string();
    assert!(shown.contains("metrics_token = \"REDACTED\"") && !shown.contains(token), "{shown}");
}

#[tokio::test]
async fn data_dir_is_created_private_with_a_sqlite_database() {
    let dir = data_dir();
    let _server = Server::plain(&dir.path);
    let mode = std::fs::metadata(&dir.path).expect("data dir").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(dir.path.join("ward.db").exists(), "SQLite file in the data dir");
}

#[test]
fn not_yet_available_commands_say_so() {
    for args in [&["backup", "create"][..], &["backup", "verify"]] {
        let out = run(
            {
                let mut c = ward();
                c.args(args);
                c
            },
            None,
        );
        assert_eq!(out.status.code(), Some(69), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not yet available"));
    }
}

/// `ward serve` with no flags at all: embedded defaults, HTTPS on 127.0.0.1:8443, data
/// in ./ward-data. (Fails if something else holds port 8443 on the test machine.)
#[tokio::test]
async fn no_flags_starts_on_embedded_defaults() {
    let cwd = tempfile::tempdir().expect("tmp");
    let mut cmd = ward();
    cmd.arg("serve").current_dir(cwd.path());
    let server = Server::spawn_with(cmd, cwd.path().join("ward-data"));
    assert_eq!(server.url, "https://127.0.0.1:8443");
    let res = server.client().get(server.at("/healthz")).send().await.expect("healthz");
    assert_eq!(res.status(), 200);
    assert!(cwd.path().join("ward-data/ward.db").exists(), "SQLite database in ./ward-data");
    assert!(cwd.path().join("ward-data/tls/cert.pem").exists(), "self-signed certificate");
}
