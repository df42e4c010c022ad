//! The syslog forwarder against a real receiver: rsyslog (Debian packages `rsyslog` and
//! `rsyslog-openssl`, installed by scripts/services.sh) listening with TLS on 127.0.0.1,
//! run as a child process with a configuration written to a temporary directory.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use ward_audit::syslog::{SyslogError, SyslogSettings, run_forwarder};
use ward_audit::{AuditEvent, AuditLog, AuditRecord, AuditSettings, Outcome, Via};
use ward_storage::{ConnectOptions, Store, Target};

const SERVER_NAME: &str = "siem.test";
const HOSTNAME: &str = "ward-node-1";
const WAIT: Duration = Duration::from_secs(20);

/// A CA and a server certificate for [`SERVER_NAME`] signed by it, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn write(dir: &Path) -> Self {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.distinguished_name.push(DnType::CommonName, "Ward test SIEM CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca cert");

        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, SERVER_NAME);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca).expect("server cert");

        let pki = Pki { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") };
        fs::write(&pki.ca, ca.pem()).expect("write ca");
        fs::write(&pki.cert, cert.pem()).expect("write cert");
        fs::write(&pki.key, key.serialize_pem()).expect("write key");
        fs::set_permissions(&pki.key, fs::Permissions::from_mode(0o600)).expect("chmod key");
        pki
    }
}

/// `rsyslogd -n` with TLS (the OpenSSL stream driver) on `port`, writing every message
/// it receives twice: raw to `raw.log` and as the fields its RFC 5424 parser found to
/// `parsed.log`. Killed when dropped.
struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16, pki: &Pki) -> Self {
        let q = |p: &Path| p.display().to_string();
        let conf = format!(
            r#"global(
  workDirectory="{dir}"
  maxMessageSize="64k"
  defaultNetstreamDriver="ossl"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp" streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon")
template(name="raw" type="string" string="%rawmsg%\n")
template(name="parsed" type="string"
  string="%pri%|%protocol-version%|%hostname%|%app-name%|%procid%|%msgid%|%structured-data%|%msg%\n")
ruleset(name="siem") {{
  action(type="omfile" file="{dir}/raw.log" template="raw")
  action(type="omfile" file="{dir}/parsed.log" template="parsed")
}}
input(type="imtcp" port="{port}" ruleset="siem")
"#,
            dir = q(dir),
            ca = q(&pki.ca),
            cert = q(&pki.cert),
            key = q(&pki.key),
        );
        let conf_path = dir.join("rsyslog.conf");
        fs::write(&conf_path, conf).expect("write rsyslog.conf");
        let pid_file = dir.join("rsyslogd.pid");
        let _ = fs::remove_file(&pid_file);
        let out = fs::OpenOptions::new().create(true).append(true).open(dir.join("rsyslogd.out")).expect("out");
        let child = Command::new(rsyslogd())
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn rsyslogd");
        Rsyslog { child: Some(child), dir: dir.to_path_buf(), port }
    }

    /// Waits until the TLS port accepts TCP connections.
    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait")) {
                panic!("rsyslogd exited ({status}):\n{}", self.output());
            }
            assert!(Instant::now() < deadline, "rsyslogd is not listening on {}:\n{}", self.port, self.output());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills rsyslogd abruptly (SIGKILL), as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn output(&self) -> String {
        fs::read_to_string(self.dir.join("rsyslogd.out")).unwrap_or_default()
    }

    fn raw_lines(&self) -> Vec<String> {
        lines(&self.dir.join("raw.log"))
    }

    fn parsed_lines(&self) -> Vec<String> {
        lines(&self.dir.join("parsed.log"))
    }

    /// The parsed lines, once the second action has caught up with the first.
    async fn parsed_lines_matching_raw(&self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let (raw, parsed) = (self.raw_lines().len(), self.parsed_lines());
            if parsed.len() == raw {
                return parsed;
            }
            assert!(Instant::now() < deadline, "{raw} raw messages but {} parsed", parsed.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many received messages carry each record id.
    fn received(&self) -> HashMap<Uuid, usize> {
        let mut seen = HashMap::new();
        for line in self.raw_lines() {
            if let Some(id) = sd_value(&line, "id").and_then(|v| Uuid::parse_str(&v).ok()) {
                *seen.entry(id).or_insert(0) += 1;
            }
        }
        seen
    }

    /// Waits until every one of `ids` has arrived.
    async fn wait_for(&self, ids: &[Uuid]) -> HashMap<Uuid, usize> {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = self.received();
            let missing: Vec<&Uuid> = ids.iter().filter(|id| !seen.contains_key(id)).collect();
            if missing.is_empty() {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} records never reached rsyslog: {missing:?}\nrsyslogd output:\n{}",
                missing.len(),
                ids.len(),
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}

fn rsyslogd() -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join("rsyslogd"))
        .find(|p| p.is_file())
        .expect("rsyslogd not found: install the Debian packages rsyslog and rsyslog-openssl (scripts/services.sh)")
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

/// The unescaped value of SD-PARAM `name` in a raw message.
fn sd_value(msg: &str, name: &str) -> Option<String> {
    let start = msg.find(&format!(" {name}=\""))? + name.len() + 3;
    let mut value = String::new();
    let mut chars = msg[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?),
            '"' => return Some(value),
            c => value.push(c),
        }
    }
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn open_store(dir: &Path) -> Arc<dyn Store> {
    ward_storage::open(&ConnectOptions {
        target: Target::Sqlite(dir.join("ward.db")),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
    })
    .await
    .expect("open store")
}

async fn open_audit(store: Arc<dyn Store>, dir: &Path) -> AuditLog {
    AuditLog::open(
        store,
        AuditSettings {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            key_file: dir.join("audit/signing.key"),
            checkpoint_file: dir.join("audit/checkpoints.jsonl"),
        },
    )
    .await
    .expect("audit log")
}

/// Records events of every outcome, some with values that need escaping.
async fn record_some(audit: &AuditLog, tag: &str) -> Vec<(Uuid, i64)> {
    let now = OffsetDateTime::now_utc();
    let events = [
        AuditEvent::new("auth.login", Outcome::Success, Via::Api, now)
            .user(Uuid::now_v7(), format!("alice.{tag}"))
            .client(Some("192.0.2.10".into()), Some("test-agent".into())),
        AuditEvent::new("auth.login", Outcome::Failure, Via::Api, now)
            .claimed_username(&format!("mal\"lo]ry\\{tag}"))
            .client(Some("2001:db8::7".into()), None)
            .reason("bad_credentials"),
        AuditEvent::new("message.read", Outcome::Denied, Via::Api, now)
            .user(Uuid::now_v7(), "zoë")
            .resource(format!("message/\"x\\y]z-{tag}")),
        AuditEvent::new("server.start", Outcome::Success, Via::System, now).detail("version", "test"),
    ];
    let mut out = Vec::new();
    for event in &events {
        let row = audit.record_alone(event).await.expect("record");
        out.push((Uuid::parse_str(&row.id).expect("id"), row.seq));
    }
    out
}

fn read_cursor(path: &Path) -> i64 {
    fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

async fn wait_cursor(path: &Path, seq: i64) {
    let deadline = Instant::now() + WAIT;
    while read_cursor(path) != seq {
        assert!(Instant::now() < deadline, "cursor stuck at {} instead of {seq}", read_cursor(path));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_forwarder(
    store: &Arc<dyn Store>,
    settings: &SyslogSettings,
) -> (CancellationToken, JoinHandle<Result<(), SyslogError>>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_forwarder(store.clone(), settings.clone(), stop.clone()));
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_rsyslog_over_tls_across_outages_and_restarts() {
    let dir = tempfile::tempdir().expect("tmp");
    let siem_dir = dir.path().join("siem");
    fs::create_dir_all(&siem_dir).expect("mkdir");
    let pki = Pki::write(&siem_dir);
    let port = free_port();
    let mut siem = Rsyslog::start(&siem_dir, port, &pki);
    siem.wait_listening().await;

    let store = open_store(dir.path()).await;
    let audit = open_audit(store.clone(), dir.path()).await;
    let settings = SyslogSettings {
        addr: format!("127.0.0.1:{port}"),
        server_name: SERVER_NAME.into(),
        ca_file: Some(pki.ca.clone()),
        hostname: HOSTNAME.into(),
        cursor_file: dir.path().join("audit/syslog.cursor"),
        poll_interval: Duration::from_millis(200),
    };

    // 1. Records made before the forwarder starts, and while it runs, all arrive.
    let mut sent = record_some(&audit, "a").await;
    let (stop, task) = start_forwarder(&store, &settings);
    sent.extend(record_some(&audit, "b").await);
    let ids: Vec<Uuid> = sent.iter().map(|(id, _)| *id).collect();
    siem.wait_for(&ids).await;
    let last_seq = sent.last().expect("records").1;
    wait_cursor(&settings.cursor_file, last_seq).await;

    // rsyslog's own RFC 5424 parser agrees with the format: header fields, SD, JSON body.
    let stored = store.audit_after(0, 100).await.expect("stored");
    let parsed = siem.parsed_lines_matching_raw().await;
    for line in &parsed {
        let f: Vec<&str> = line.splitn(8, '|').collect();
        assert_eq!(f.len(), 8, "{line}");
        assert_eq!((f[1], f[2], f[3], f[4]), ("1", HOSTNAME, "ward", "-"), "{line}");
        assert!(f[6].starts_with("[ward@32473 seq=\""), "{line}");
        let record: AuditRecord = serde_json::from_str(f[7].trim_start()).expect("JSON body");
        let row = stored.iter().find(|r| r.seq == record.seq).expect("stored row");
        assert_eq!(record, AuditRecord::from_row(row).expect("readable"));
        assert_eq!(f[5], record.action, "{line}");
        let severity = if record.outcome == "success" { 6 } else { 4 };
        assert_eq!(f[0], (10 * 8 + severity).to_string(), "{line}");
    }
    let raw = siem.raw_lines();
    let escaped = raw.iter().find(|l| l.contains("message.read")).expect("denied read");
    assert!(escaped.contains(r#"actor="zoë""#), "{escaped}");
    assert!(escaped.contains(r#" resource="message/\"x\\y\]z-a"]"#), "{escaped}");
    let claimed = raw.iter().find(|l| l.contains(" outcome=\"failure\"")).expect("failed login");
    assert_eq!(sd_value(claimed, "actor").as_deref(), Some("mal\"lo]ry\\a"));

    // 2. The receiver crashes; records made meanwhile wait in the database, the cursor
    //    does not move past them, and they arrive once the receiver is back.
    siem.kill();
    let during = record_some(&audit, "c").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(read_cursor(&settings.cursor_file), last_seq, "nothing confirmed while the receiver is down");
    siem = Rsyslog::start(&siem_dir, port, &pki);
    sent.extend(during);
    let ids: Vec<Uuid> = sent.iter().map(|(id, _)| *id).collect();
    let seen = siem.wait_for(&ids).await;
    let last_seq = sent.last().expect("records").1;
    wait_cursor(&settings.cursor_file, last_seq).await;
    assert!(seen.keys().all(|id| ids.contains(id)), "only recorded ids arrive");

    // 3. The forwarder stops cleanly and a new one resumes from the cursor file: the new
    //    records arrive and nothing already delivered is sent again.
    stop.cancel();
    task.await.expect("join").expect("forwarder returns Ok on stop");
    assert_eq!(read_cursor(&settings.cursor_file), last_seq);
    let before = siem.raw_lines().len();
    let later = record_some(&audit, "d").await;
    let (stop, task) = start_forwarder(&store, &settings);
    siem.wait_for(&later.iter().map(|(id, _)| *id).collect::<Vec<_>>()).await;
    let after = siem.raw_lines();
    let resent: Vec<&String> =
        after[before..].iter().filter(|l| !later.iter().any(|(id, _)| l.contains(&format!(" id=\"{id}\"")))).collect();
    assert!(resent.is_empty(), "the restarted forwarder replayed delivered records: {resent:?}");
    stop.cancel();
    task.await.expect("join").expect("forwarder returns Ok on stop");
}

#[tokio::test]
async fn bad_settings_are_errors_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open_store(dir.path()).await;
    let base = SyslogSettings {
        addr: "127.0.0.1:6514".into(),
        server_name: SERVER_NAME.into(),
        ca_file: None,
        hostname: HOSTNAME.into(),
        cursor_file: dir.path().join("syslog.cursor"),
        poll_interval: Duration::from_secs(1),
    };
    let run = |settings: SyslogSettings| run_forwarder(store.clone(), settings, CancellationToken::new());

    assert!(matches!(run(base.clone()).await, Err(SyslogError::NoCaFile)));
    let missing = SyslogSettings { ca_file: Some(dir.path().join("missing.pem")), ..base.clone() };
    let err = run(missing).await.expect_err("unreadable CA file");
    assert!(matches!(err, SyslogError::CaFile { .. }), "{err}");

    let pki = Pki::write(dir.path());
    let good = SyslogSettings { ca_file: Some(pki.ca.clone()), ..base };
    let no_port = SyslogSettings { addr: "siem.example".into(), ..good.clone() };
    assert!(matches!(run(no_port).await, Err(SyslogError::Addr(_))));
    let zero = SyslogSettings { poll_interval: Duration::ZERO, ..good.clone() };
    assert!(matches!(run(zero).await, Err(SyslogError::PollInterval)));
    fs::write(&good.cursor_file, "not a number").expect("garble");
    assert!(matches!(run(good.clone()).await, Err(SyslogError::Cursor { .. })));

    // Good settings: runs until stopped, then returns Ok.
    fs::remove_file(&good.cursor_file).expect("rm");
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_forwarder(store.clone(), good, stop.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    task.await.expect("join").expect("Ok on stop");
}
