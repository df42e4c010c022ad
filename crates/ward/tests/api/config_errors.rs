//! Bad configuration stops start-up with one clear line naming the problem.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Output;

use crate::helpers::*;

fn serve(data_dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = ward();
    cmd.args(["serve", "--no-tls", "--data-dir"]).arg(data_dir).args(extra);
    if !extra.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A server that wrongly starts would block: the timeout turns that into a failure.
    cmd.env("WARD_SERVER_SHUTDOWN_GRACE_S", "0");
    let mut child =
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("spawn");
    let status = wait_timeout(&mut child, std::time::Duration::from_secs(30));
    let mut stderr = Vec::new();
    std::io::Read::read_to_end(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read");
    Output { status, stdout: Vec::new(), stderr }
}

/// Exactly one line on stderr besides log lines of the start-up so far, containing every
/// `needle`, and no panic.
fn assert_one_clear_line(out: &Output, code: i32, needles: &[&str]) {
    let all = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {all}");
    let is_log = |l: &&str| l.len() > 20 && l.as_bytes()[..4].iter().all(u8::is_ascii_digit) && l.contains("Z ");
    let lines: Vec<&str> = all.trim_end().lines().filter(|l| !is_log(l)).collect();
    assert_eq!(lines.len(), 1, "one line: {all}");
    let err = lines[0];
    assert!(all.trim_end().ends_with(err), "the error is the last line: {all}");
    assert!(err.starts_with("ward: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "mentions {n:?}: {err}");
    }
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
}

fn config_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("ward.toml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

#[test]
fn unknown_key_in_the_config_file() {
    let d = data_dir();
    let t = tempfile::tempdir().expect("tmp");
    let file = config_file(&t, "[server]\nlistn = \"127.0.0.1:1\"\n");
    assert_one_clear_line(&serve(&d.path, &["--config", &file], &[]), 2, &["server.listn", "unknown key"]);
}

#[test]
fn unknown_or_mistyped_environment_variable() {
    let d = data_dir();
    assert_one_clear_line(
        &serve(&d.path, &[], &[("WARD_SERVER_LISTN", "x")]),
        2,
        &["server.listn", "WARD_SERVER_LISTN"],
    );
    assert_one_clear_line(
        &serve(&d.path, &[], &[("WARD_SESSION_IDLE_TIMEOUT_S", "soon")]),
        2,
        &["session.idle_timeout_s", "WARD_SESSION_IDLE_TIMEOUT_S"],
    );
}

#[test]
fn out_of_range_value() {
    let d = data_dir();
    let t = tempfile::tempdir().expect("tmp");
    let file = config_file(&t, "[session]\nabsolute_timeout_s = 100000\n");
    assert_one_clear_line(&serve(&d.path, &["--config", &file], &[]), 2, &["session.absolute_timeout_s", "between"]);
}

#[test]
fn malformed_database_url_is_named_without_its_password() {
    let d = data_dir();
    let out = serve(&d.path, &[], &[("WARD_DATABASE_URL", "postgres//ward:hunter2@db/ward")]);
    assert_one_clear_line(&out, 2, &["database.url"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
}

#[test]
fn unreachable_database_fails_start_up() {
    let d = data_dir();
    let out = serve(
        &d.path,
        &[],
        &[("WARD_DATABASE_URL", "postgres://ward:hunter2@127.0.0.1:1/ward"), ("WARD_DATABASE_ACQUIRE_TIMEOUT_S", "2")],
    );
    assert_one_clear_line(&out, 1, &["cannot open the postgres database"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
}

#[test]
fn port_in_use() {
    let d = data_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = serve(&d.path, &["--listen", &addr], &[]);
    assert_one_clear_line(&out, 1, &["cannot listen on", &addr]);
}

#[test]
fn data_dir_open_to_others_is_refused_with_the_fix() {
    let d = data_dir();
    std::fs::create_dir_all(&d.path).expect("mkdir");
    std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = d.path.display().to_string();
    assert_one_clear_line(&serve(&d.path, &[], &[]), 1, &[&path, "chmod 700"]);
    std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(0o704)).expect("chmod");
    assert_one_clear_line(&serve(&d.path, &[], &[]), 1, &["chmod 700"]);
}

#[test]
fn unwritable_data_dir_is_refused() {
    // Tests run as root, for whom permission bits do not stop writes; a data dir below a
    // regular file can be neither created nor written by anyone.
    let t = tempfile::tempdir().expect("tmp");
    let file = t.path().join("plain-file");
    std::fs::write(&file, "x").expect("write");
    let out = serve(&file.join("data"), &[], &[]);
    assert_one_clear_line(&out, 1, &["cannot create data dir"]);
}

#[test]
fn print_config_shows_the_effective_config_with_secrets_redacted() {
    let d = data_dir();
    let t = tempfile::tempdir().expect("tmp");
    let file = config_file(&t, "[server]\nlisten = \"127.0.0.1:9000\"\n[session]\nidle_timeout_s = 600\n");
    let mut cmd = ward();
    cmd.args(["serve", "--print-config", "--config", &file, "--listen", "127.0.0.1:9100", "--data-dir"])
        .arg(&d.path)
        .env("WARD_SESSION_IDLE_TIMEOUT_S", "300")
        .env("WARD_DATABASE_URL", "postgres://ward:hunter2@db.example/ward");
    let out = run(cmd, None);
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("listen = \"127.0.0.1:9100\""), "flag beats file: {shown}");
    assert!(shown.contains("idle_timeout_s = 300"), "env beats file: {shown}");
    assert!(shown.contains("db.example") && !shown.contains("hunter2"), "password redacted: {shown}");
    assert!(!d.path.exists(), "print-config touches nothing");
}

#[test]
fn a_short_metrics_token_is_refused() {
    let d = data_dir();
    let short = ("WARD_SERVER_METRICS_TOKEN", "too-short");
    assert_one_clear_line(&serve(&d.path, &[], &[short]), 2, &["server.metrics_token", "32"]);
    assert!(!d.path.exists(), "a refused configuration touches nothing");
}

#[test]
fn push_webhook_needs_https_and_a_long_secret() {
    let d = data_dir();
    let secret = ("WARD_MESSAGING_PUSH_WEBHOOK_SECRET", "a push webhook secret of 32+ chars");
    let plain = ("WARD_MESSAGING_PUSH_WEBHOOK_URL", "http://push.example/hook");
    assert_one_clear_line(&serve(&d.path, &[], &[plain, secret]), 2, &["messaging.push_webhook_url", "https"]);
    let url = ("WARD_MESSAGING_PUSH_WEBHOOK_URL", "https://push.example/hook?token=PUSH-URL-TOKEN");
    assert_one_clear_line(&serve(&d.path, &[], &[url]), 2, &["messaging.push_webhook_secret", "required"]);
    let short = ("WARD_MESSAGING_PUSH_WEBHOOK_SECRET", "short");
    assert_one_clear_line(&serve(&d.path, &[], &[url, short]), 2, &["messaging.push_webhook_secret", "32"]);
    assert_one_clear_line(&serve(&d.path, &[], &[secret]), 2, &["messaging.push_webhook_secret", "without"]);
    let ftp = ("WARD_MESSAGING_PUSH_WEBHOOK_URL", "ftp://push.example/hook");
    assert_one_clear_line(&serve(&d.path, &[], &[ftp, secret]), 2, &["messaging.push_webhook_url", "https"]);
    assert!(!d.path.exists(), "a refused configuration touches nothing");

    let mut cmd = ward();
    cmd.args(["serve", "--print-config", "--data-dir"]).arg(&d.path).env(url.0, url.1).env(secret.0, secret.1);
    let out = run(cmd, None);
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("push.example") && !shown.contains(secret.1), "the secret is redacted: {shown}");
    assert!(!shown.contains("PUSH-URL-TOKEN"), "so is a token in the URL: {shown}");
}

#[test]
fn access_settings_are_bounded_and_the_alert_webhook_needs_https_and_a_long_secret() {
    let d = data_dir();
    let minutes = ("WARD_ACCESS_BREAKGLASS_MINUTES", "0");
    assert_one_clear_line(&serve(&d.path, &[], &[minutes]), 2, &["access.breakglass_minutes", "between 1 and 1440"]);
    let dormant = ("WARD_ACCESS_DORMANT_DAYS", "0");
    assert_one_clear_line(&serve(&d.path, &[], &[dormant]), 2, &["access.dormant_days", "between"]);
    let secret = ("WARD_ACCESS_ALERT_WEBHOOK_SECRET", "an alert webhook secret of 32+ chars");
    let plain = ("WARD_ACCESS_ALERT_WEBHOOK_URL", "http://alerts.example/hook");
    assert_one_clear_line(&serve(&d.path, &[], &[plain, secret]), 2, &["access.alert_webhook_url", "https"]);
    let url = ("WARD_ACCESS_ALERT_WEBHOOK_URL", "https://alerts.example/hook?token=ALERT-URL-TOKEN");
    assert_one_clear_line(&serve(&d.path, &[], &[url]), 2, &["access.alert_webhook_secret", "required"]);
    let short = ("WARD_ACCESS_ALERT_WEBHOOK_SECRET", "short");
    assert_one_clear_line(&serve(&d.path, &[], &[url, short]), 2, &["access.alert_webhook_secret", "32"]);
    assert_one_clear_line(&serve(&d.path, &[], &[secret]), 2, &["access.alert_webhook_secret", "without"]);
    assert!(!d.path.exists(), "a refused configuration touches nothing");

    let mut cmd = ward();
    cmd.args(["serve", "--print-config", "--data-dir"]).arg(&d.path).env(url.0, url.1).env(secret.0, secret.1);
    let out = run(cmd, None);
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("alerts.example") && !shown.contains(secret.1), "the secret is redacted: {shown}");
    assert!(!shown.contains("ALERT-URL-TOKEN"), "so is a token in the URL: {shown}");
    assert!(shown.contains("breakglass_minutes = 60"), "{shown}");
}
