//! The audit trail end to end: tamper evidence, fail-closed writes, no secrets in records
//! or exports, auditor-only search and export, one chain across two nodes.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use sqlx::Connection as _;
use sqlx::sqlite::SqliteConnection;

use crate::helpers::*;

const PASSWORD: &str = "Audit-Secret-Passphrase-7731";

fn ward_cmd(args: &[&str], dir: &Path) -> std::process::Output {
    let mut cmd = ward();
    cmd.args(args).arg("--data-dir").arg(dir);
    run(cmd, None)
}

/// A data dir with a short, finished trail: user creation, good and bad sign-ins,
/// a logout, server start and stop (whose final checkpoint lands in the file).
async fn recorded_trail() -> DataDir {
    let dir = data_dir();
    add_user(&dir.path, &[], "tamper.target", "clinician", PASSWORD);
    let server = Server::plain(&dir.path);
    let c = server.client();
    for _ in 0..2 {
        let token = login(&server, "tamper.target", PASSWORD).await;
        let res = c.post(server.at("/v1/auth/logout")).bearer_auth(&token).send().await.expect("logout");
        assert_eq!(res.status(), 204);
    }
    let bad = serde_json::json!({"username": "tamper.target", "password": "wrong password 123"});
    let res = c.post(server.at("/v1/auth/login")).json(&bad).send().await.expect("login");
    assert_eq!(res.status(), 401);
    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

async fn tamper(dir: &Path, statements: &[&str]) {
    let url = format!("sqlite://{}", dir.join("ward.db").display());
    let mut conn = SqliteConnection::connect(&url).await.expect("open db");
    for sql in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut conn).await.expect(sql);
    }
    conn.close().await.expect("close");
}

fn verify(dir: &Path) -> (Option<i32>, String) {
    let out = ward_cmd(&["audit", "verify"], dir);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[tokio::test]
async fn every_kind_of_tampering_fails_verification_and_an_untouched_trail_passes() {
    let base = recorded_trail().await;
    let (code, text) = verify(&base.path);
    assert_eq!(code, Some(0), "untouched trail verifies: {text}");
    assert!(text.contains("audit trail intact"), "{text}");

    let cases: &[(&str, &[&str], &str)] = &[
        (
            "modify a field",
            &["UPDATE audit_events SET outcome = 'success' WHERE action = 'auth.login' AND outcome = 'failure'"],
            "",
        ),
        ("delete a row", &["DELETE FROM audit_events WHERE seq = 3"], "at seq 3"),
        (
            "insert a row",
            &[
                "UPDATE audit_events SET seq = -(seq + 1) WHERE seq >= 3",
                "UPDATE audit_events SET seq = -seq WHERE seq < 0",
                "INSERT INTO audit_events SELECT 3, 'forged-' || id, time_us, actor_user_id, actor_username, \
                 actor_session_id, via, action, resource, outcome, ip, user_agent, mfa, reason, details, hash, hash \
                 FROM audit_events WHERE seq = 2",
            ],
            "at seq 3",
        ),
        (
            "swap two rows",
            &[
                "UPDATE audit_events SET seq = -1 WHERE seq = 3",
                "UPDATE audit_events SET seq = 3 WHERE seq = 4",
                "UPDATE audit_events SET seq = 4 WHERE seq = -1",
            ],
            "at seq 3",
        ),
        (
            "cut the last rows and their checkpoints",
            &[
                "DELETE FROM audit_checkpoints WHERE seq > (SELECT max(seq) - 2 FROM audit_events)",
                "DELETE FROM audit_events WHERE seq > (SELECT max(seq) - 2 FROM audit_events)",
                "UPDATE audit_head SET seq = (SELECT max(seq) FROM audit_events), \
                 hash = (SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1)",
            ],
            "truncated",
        ),
    ];
    for (name, statements, expect) in cases {
        let copy = data_dir();
        copy_dir(&base.path, &copy.path);
        tamper(&copy.path, statements).await;
        let (code, text) = verify(&copy.path);
        assert_eq!(code, Some(3), "{name}: verification must fail: {text}");
        assert!(text.contains("FAILED verification at seq"), "{name}: names the first bad seq: {text}");
        assert!(text.contains(expect), "{name}: expected {expect:?} in: {text}");
        eprintln!("{name}: {}", text.trim());
    }
}

#[tokio::test]
async fn rewriting_history_with_recomputed_hashes_is_caught_by_the_signed_checkpoints() {
    let base = recorded_trail().await;
    // The attacker changes record 2 and recomputes every later hash with Ward's own
    // algorithm (they have the source), leaving a self-consistent chain.
    let url = format!("sqlite://{}", base.path.join("ward.db").display());
    let mut conn = SqliteConnection::connect(&url).await.expect("open");
    sqlx::raw_sql("UPDATE audit_events SET outcome = 'failure' WHERE seq = 2").execute(&mut conn).await.expect("edit");
    let rows: Vec<ward_storage::AuditRow> =
        sqlx::query_as("SELECT * FROM audit_events ORDER BY seq").fetch_all(&mut conn).await.expect("rows");
    let mut prev = ward_audit::chain::GENESIS.to_string();
    for mut row in rows {
        row.prev_hash = prev.clone();
        row.hash = ward_audit::chain::row_hash(&row);
        sqlx::query("UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE seq = $3")
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .bind(row.seq)
            .execute(&mut conn)
            .await
            .expect("rehash");
        prev = row.hash;
    }
    sqlx::raw_sql("DELETE FROM audit_checkpoints").execute(&mut conn).await.expect("drop db checkpoints");
    conn.close().await.expect("close");
    let (code, text) = verify(&base.path);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("rewritten"), "{text}");
}

#[tokio::test]
async fn when_the_audit_store_refuses_writes_requests_fail_with_503_and_change_nothing() {
    let dir = data_dir();
    add_user(&dir.path, &[], "blocked.user", "staff", PASSWORD);
    let server = Server::plain(&dir.path);
    let c = server.client();
    let url = format!("sqlite://{}", dir.path.join("ward.db").display());
    let mut conn = SqliteConnection::connect(&url).await.expect("open");
    sqlx::raw_sql(
        "CREATE TRIGGER block_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit blocked'); END",
    )
    .execute(&mut conn)
    .await
    .expect("block");
    let count = |table: &'static str| {
        let url = url.clone();
        async move {
            let mut conn = SqliteConnection::connect(&url).await.expect("open");
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut conn)
                .await
                .expect("count");
            n
        }
    };
    let sessions_before = count("sessions").await;

    let res = c
        .post(server.at("/v1/auth/login"))
        .json(&serde_json::json!({"username": "blocked.user", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 503, "a sign-in that cannot be audited does not happen");
    assert_eq!(error_code(res).await, "unavailable");
    assert_eq!(count("sessions").await, sessions_before, "no session was stored");

    let ready = c.get(server.at("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(ready["checks"]["audit"]["status"], "failing");

    let users_before = count("users").await;
    let mut cmd = ward();
    cmd.args(["user", "add", "never.created", "--role", "staff", "--password-stdin", "--data-dir"]).arg(&dir.path);
    let out = run(cmd, Some("a long enough passphrase\n"));
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count("users").await, users_before, "no user was created");

    sqlx::raw_sql("DROP TRIGGER block_audit").execute(&mut conn).await.expect("unblock");
    let ready = c.get(server.at("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200, "ready again once the audit store accepts writes");
    login(&server, "blocked.user", PASSWORD).await;
}

#[tokio::test]
async fn auditors_search_and_export_others_are_refused_and_no_secret_is_recorded() {
    let dir = data_dir();
    add_user(&dir.path, &[], "audra", "auditor", "auditor passphrase 1");
    add_user(&dir.path, &[], "adam", "admin", "admin passphrase 11");
    add_user(&dir.path, &[], "nurse", "clinician", PASSWORD);
    let server = Server::plain(&dir.path);
    let c = server.client();
    login(&server, "nurse", PASSWORD).await;
    let wrong = serde_json::json!({"username": "nurse", "password": "Wrong-Secret-Marker-55"});
    assert_eq!(c.post(server.at("/v1/auth/login")).json(&wrong).send().await.expect("login").status(), 401);

    // An administrator reads no audit trail; the refusal is itself recorded.
    let admin = login(&server, "adam", "admin passphrase 11").await;
    let res = c.get(server.at("/v1/audit/events")).bearer_auth(&admin).send().await.expect("events");
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(res).await, "forbidden");

    let auditor = login(&server, "audra", "auditor passphrase 1").await;
    let page: serde_json::Value = c
        .get(server.at("/v1/audit/events?action=auth.login&outcome=failure"))
        .bearer_auth(&auditor)
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    let events = page["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{page}");
    let e = &events[0];
    assert_eq!(e["reason"], "bad_password");
    assert_eq!(e["ip"], "127.0.0.1");
    assert_eq!(e["actor"]["username"], "nurse");
    for field in ["seq", "id", "time", "action", "outcome", "user_agent", "mfa", "details", "prev_hash", "hash"] {
        assert!(e.get(field).is_some(), "event has {field}: {e}");
    }

    let denied: serde_json::Value = c
        .get(server.at("/v1/audit/events?outcome=denied"))
        .bearer_auth(&auditor)
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    assert_eq!(denied["events"][0]["action"], "audit.search");
    assert_eq!(denied["events"][0]["actor"]["username"], "adam");

    // Cursor pagination walks everything exactly once.
    let mut seqs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/audit/events?limit=2&cursor={c}"),
            None => "/v1/audit/events?limit=2".to_string(),
        };
        let p: serde_json::Value =
            c.get(server.at(&q)).bearer_auth(&auditor).send().await.expect("page").json().await.expect("json");
        seqs.extend(p["events"].as_array().expect("events").iter().map(|e| e["seq"].as_i64().expect("seq")));
        match p["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "pages are contiguous: {seqs:?}");

    let mut exports = String::new();
    for format in ["jsonl", "csv", "fhir"] {
        let res = c
            .get(server.at(&format!("/v1/audit/export?format={format}")))
            .bearer_auth(&auditor)
            .send()
            .await
            .expect("export");
        assert_eq!(res.status(), 200, "{format}");
        exports.push_str(&res.text().await.expect("body"));
    }
    let fhir_start = exports.find("{\"resourceType\":\"Bundle\"").expect("fhir bundle present");
    let bundle: serde_json::Value =
        serde_json::from_str(&exports[fhir_start..]).expect("FHIR export is one JSON document");
    let ev = &bundle["entry"][0]["resource"];
    assert_eq!(ev["resourceType"], "AuditEvent");
    for element in ["type", "recorded", "agent", "source"] {
        assert!(ev.get(element).is_some(), "R4 AuditEvent requires {element}");
    }
    assert!(ev["agent"][0].get("requestor").is_some(), "agent.requestor is required");
    assert!(ev["source"].get("observer").is_some(), "source.observer is required");

    // The export was itself recorded.
    let exported: serde_json::Value = c
        .get(server.at("/v1/audit/events?action=audit.export"))
        .bearer_auth(&auditor)
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    assert_eq!(exported["events"].as_array().map(Vec::len), Some(3));

    // No password, wrong or right, in any record or export, nor anywhere on disk in clear.
    for secret in [PASSWORD, "Wrong-Secret-Marker-55", "auditor passphrase 1"] {
        assert!(!exports.contains(secret), "{secret} in an export");
        assert!(!grep_dir(&dir.path, secret.as_bytes()), "{secret} on disk");
    }
}

fn grep_dir(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).expect("dir").any(|e| {
        let path = e.expect("entry").path();
        if path.is_dir() {
            grep_dir(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[test]
fn export_from_the_command_line_is_recorded() {
    let dir = data_dir();
    add_user(&dir.path, &[], "cli.user", "staff", PASSWORD);
    let out = ward_cmd(&["audit", "export", "--format", "jsonl"], &dir.path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("jsonl")).collect();
    assert_eq!(lines[0]["action"], "user.create");
    assert_eq!(lines[0]["actor"]["via"], "cli");
    assert_eq!(lines.last().expect("last")["action"], "audit.export");
    let (code, text) = verify(&dir.path);
    assert_eq!(code, Some(0), "{text}");
}

#[tokio::test]
async fn setting_changes_between_starts_are_recorded_with_old_and_new_values() {
    let dir = data_dir();
    add_user(&dir.path, &[], "audra", "auditor", "auditor passphrase 1");
    let first = Server::plain(&dir.path);
    signal(&first.child, "TERM");
    assert_eq!(first.wait_exit().code(), Some(0));
    let second = Server::start(&dir.path, &["--no-tls"], &[("WARD_SESSION_IDLE_TIMEOUT_S", "600")]);
    let auditor = login(&second, "audra", "auditor passphrase 1").await;
    let history: serde_json::Value = second
        .client()
        .get(second.at("/v1/audit/events?action=settings.update&resource=setting/session.idle_timeout_s"))
        .bearer_auth(&auditor)
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    let events = history["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "initial value, then one change: {history}");
    assert_eq!(events[0]["reason"], "initial");
    assert_eq!(events[0]["details"]["new"], "900");
    assert_eq!(events[1]["details"]["old"], "900");
    assert_eq!(events[1]["details"]["new"], "600");
    assert_eq!(events[1]["actor"]["via"], "system");
}
