//! Streams every audit record to a SIEM as RFC 5424 syslog over TLS (RFC 5425).
//!
//! The forwarder tails the database instead of sitting in the write path, so it can
//! never block or drop a local record: [`run_forwarder`] reads up to 500 records (`BATCH`)
//! after its cursor, sends them on one TLS connection, and advances the cursor.
//!
//! **Delivery is at least once.** Plain syslog over TLS has no acknowledgement, so a
//! write that succeeded only proves the bytes reached the local socket. The cursor
//! therefore moves over a batch only once the connection is seen still open at the next
//! check (before the next batch, after `poll_interval` when idle, or at stop). When the
//! receiver has gone away, everything after the cursor is sent again on the next
//! connection; the SIEM can drop duplicates by the record `id` in the structured data.
//! The cursor (last confirmed `seq`) is kept in `cursor_file`, replaced atomically, so a
//! restart resumes where the previous process stopped.
//!
//! Message shape: `<PRI>1 TIMESTAMP HOSTNAME ward - ACTION [ward@32473 seq="…" id="…"
//! outcome="…" actor="…" ip="…" resource="…"] JSON`, facility authpriv (10), severity
//! informational (6) for success and warning (4) for failure and denied, and alert (1)
//! for a record marked `severity: high` whatever its outcome (break-glass use, a stored
//! file that failed its check, an infected upload), so a SIEM can page on it. JSON is the
//! record as [`crate::export::jsonl_line`] writes it.
//!
//! Nothing here logs record contents: connection problems are logged with the address
//! and the error only.

use std::future::poll_fn;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;
use tokio::io::{AsyncRead, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_util::sync::CancellationToken;
use ward_storage::{AuditRow, Store};

use crate::event::AuditRecord;

/// Records read and sent at a time: the forwarder's bounded in-memory queue.
const BATCH: i64 = 500;
/// authpriv: security and authorization messages kept private.
const FACILITY_AUTHPRIV: u8 = 10;
const SEVERITY_ALERT: u8 = 1;
const SEVERITY_ERROR: u8 = 3;
const SEVERITY_WARNING: u8 = 4;
const SEVERITY_INFO: u8 = 6;
/// The SD-ID of Ward's structured data element.
const SD_ID: &str = "ward@32473";
const APP_NAME: &str = "ward";
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// RFC 5424 TIMESTAMP: RFC 3339 in UTC with at most six fractional digits.
const TIMESTAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Where and how to forward.
#[derive(Debug, Clone)]
pub struct SyslogSettings {
    /// The receiver, `host:port` (RFC 5425's port is 6514).
    pub addr: String,
    /// The name the receiver's certificate must carry (DNS name or IP address).
    pub server_name: String,
    /// PEM certificates to trust for the receiver. Required: no built-in roots are used.
    pub ca_file: Option<PathBuf>,
    /// HOSTNAME field of every message; empty means NILVALUE.
    pub hostname: String,
    /// Holds the `seq` of the last record the receiver is known to have been sent.
    pub cursor_file: PathBuf,
    /// How often to look for new records when the forwarder has caught up.
    pub poll_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("syslog forwarding needs a CA file to verify the receiver (no built-in roots are trusted)")]
    NoCaFile,
    #[error("cannot read syslog CA file {path}: {source}")]
    CaFile { path: PathBuf, source: std::io::Error },
    #[error("syslog CA file {path} holds no usable PEM certificate{why}")]
    NoCertificate { path: PathBuf, why: String },
    #[error("invalid syslog TLS server name {0:?}")]
    ServerName(String),
    #[error("invalid syslog address {0:?}: expected host:port")]
    Addr(String),
    #[error("the syslog poll interval must be positive")]
    PollInterval,
    #[error("cannot build the syslog TLS client: {0}")]
    Tls(String),
    #[error("syslog cursor file {path}: {why}")]
    Cursor { path: PathBuf, why: String },
}

/// One RFC 5424 message for `record`, without framing.
pub fn format_5424(record: &AuditRecord, hostname: &str) -> String {
    let severity = if record.details["severity"] == "high" {
        SEVERITY_ALERT
    } else if record.outcome == "success" {
        SEVERITY_INFO
    } else {
        SEVERITY_WARNING
    };
    let mut out = header(severity, Some(record.time), hostname, &record.action);
    out.push('[');
    out.push_str(SD_ID);
    sd_param(&mut out, "seq", &record.seq.to_string());
    sd_param(&mut out, "id", &record.id.to_string());
    sd_param(&mut out, "outcome", &record.outcome);
    if let Some(actor) = record.actor.username.as_deref().or(record.actor.user_id.as_deref()) {
        sd_param(&mut out, "actor", actor);
    }
    if let Some(ip) = &record.ip {
        sd_param(&mut out, "ip", ip);
    }
    if let Some(resource) = &record.resource {
        sd_param(&mut out, "resource", resource);
    }
    out.push_str("] ");
    out.push_str(&serde_json::to_string(record).unwrap_or_else(|_| "{}".into()));
    out
}

/// RFC 5425 octet-counting framing: `MSG-LEN SP SYSLOG-MSG`, the length in bytes.
pub fn frame(msg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 8);
    let _ = write!(out, "{} ", msg.len());
    out.extend_from_slice(msg.as_bytes());
    out
}

/// A stored row that does not parse is itself evidence of tampering: the SIEM gets an
/// error-severity `audit.unreadable` message naming it instead of silence.
fn format_unreadable(row: &AuditRow, hostname: &str) -> String {
    let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(row.time_us) * 1000).ok();
    let mut out = header(SEVERITY_ERROR, time, hostname, "audit.unreadable");
    out.push('[');
    out.push_str(SD_ID);
    sd_param(&mut out, "seq", &row.seq.to_string());
    sd_param(&mut out, "id", &row.id);
    out.push_str("] stored audit record is unreadable; run ward audit verify");
    out
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID ` (PROCID is always NILVALUE).
fn header(severity: u8, time: Option<OffsetDateTime>, hostname: &str, msgid: &str) -> String {
    let pri = FACILITY_AUTHPRIV * 8 + severity;
    let timestamp = time.and_then(|t| t.to_offset(time::UtcOffset::UTC).format(TIMESTAMP).ok());
    format!(
        "<{pri}>1 {} {} {APP_NAME} - {} ",
        timestamp.as_deref().unwrap_or("-"),
        header_field(hostname, 255),
        header_field(msgid, 32)
    )
}

/// A header field is 1 to `max` printable US-ASCII characters, or NILVALUE.
fn header_field(value: &str, max: usize) -> String {
    if value.is_empty() {
        return "-".into();
    }
    value.chars().take(max).map(|c| if c.is_ascii_graphic() { c } else { '_' }).collect()
}

/// ` name="value"` with `"`, `\` and `]` escaped (RFC 5424 section 6.3.3).
fn sd_param(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Forwards every audit record after the stored cursor until `stop` is cancelled.
///
/// Checks the settings first: a missing or unusable CA file, a bad server name or
/// address, a zero poll interval, or an unreadable cursor file is an error. After that it
/// never fails: store and network problems are logged and retried with backoff (up to
/// 30 s), and it returns `Ok` once stopped.
pub async fn run_forwarder(
    store: Arc<dyn Store>,
    settings: SyslogSettings,
    stop: CancellationToken,
) -> Result<(), SyslogError> {
    let connector = TlsConnector::from(client_config(settings.ca_file.as_deref())?);
    let server_name = ServerName::try_from(settings.server_name.clone())
        .map_err(|_| SyslogError::ServerName(settings.server_name.clone()))?;
    match settings.addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
        _ => return Err(SyslogError::Addr(settings.addr.clone())),
    }
    if settings.poll_interval.is_zero() {
        return Err(SyslogError::PollInterval);
    }
    let cursor_file = settings.cursor_file.clone();
    let confirmed = tokio::task::spawn_blocking(move || read_cursor(&cursor_file))
        .await
        .map_err(|e| SyslogError::Cursor { path: settings.cursor_file.clone(), why: e.to_string() })??;
    let forwarder = Forwarder {
        store,
        settings,
        connector,
        server_name,
        conn: None,
        confirmed,
        sent_upto: confirmed,
        head_checked: false,
        store_backoff: Backoff::new(),
        net_backoff: Backoff::new(),
    };
    forwarder.run(&stop).await;
    Ok(())
}

/// A TLS 1.3/1.2 client trusting only the certificates in `ca_file`.
fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, SyslogError> {
    let path = ca_file.ok_or(SyslogError::NoCaFile)?;
    let pem = std::fs::read(path).map_err(|source| SyslogError::CaFile { path: path.to_path_buf(), source })?;
    let mut roots = rustls::RootCertStore::empty();
    let mut why = String::new();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let added = match cert {
            Ok(cert) => roots.add(cert).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = added {
            why = format!(" ({e})");
        }
    }
    if roots.is_empty() {
        return Err(SyslogError::NoCertificate { path: path.to_path_buf(), why });
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| SyslogError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The stored cursor; 0 (forward everything) when there is no file yet.
fn read_cursor(path: &Path) -> Result<i64, SyslogError> {
    let err = |why: String| SyslogError::Cursor { path: path.to_path_buf(), why };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    match std::fs::read_to_string(path) {
        Ok(text) => match text.trim().parse::<i64>() {
            Ok(seq) if seq >= 0 => Ok(seq),
            _ => Err(err("does not hold a record number; fix or remove it".into())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Replaces the cursor file atomically: write a temporary file, sync, rename, sync dir.
fn write_cursor(path: &Path, seq: i64) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    writeln!(f, "{seq}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Exponential backoff from 1 s to 30 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { next: BACKOFF_START }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }
}

/// Waits `delay`; false if `stop` came first.
async fn pause(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

struct Forwarder {
    store: Arc<dyn Store>,
    settings: SyslogSettings,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    conn: Option<TlsStream<TcpStream>>,
    /// Last `seq` known sent on a connection that stayed open afterwards (persisted).
    confirmed: i64,
    /// Last `seq` written to the current connection (`>= confirmed`).
    sent_upto: i64,
    /// Whether the cursor was compared with the trail's head since start.
    head_checked: bool,
    store_backoff: Backoff,
    net_backoff: Backoff,
}

impl Forwarder {
    async fn run(mut self, stop: &CancellationToken) {
        while !stop.is_cancelled() {
            self.settle().await;
            let rows = match self.next_rows().await {
                Ok(rows) => {
                    self.store_backoff.reset();
                    rows
                }
                Err(e) => {
                    let delay = self.store_backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "syslog forwarder cannot read the audit trail");
                    if !pause(stop, delay).await {
                        break;
                    }
                    continue;
                }
            };
            let Some(last) = rows.last().map(|r| r.seq) else {
                if !pause(stop, self.settings.poll_interval).await {
                    break;
                }
                continue;
            };
            let caught_up = (rows.len() as i64) < BATCH;
            let payload = self.encode(&rows);
            if self.conn.is_none() {
                let connected = tokio::select! {
                    _ = stop.cancelled() => break,
                    c = self.connect() => c,
                };
                match connected {
                    Ok(conn) => {
                        tracing::info!(addr = %self.settings.addr, from_seq = self.confirmed + 1, "syslog forwarder connected");
                        self.conn = Some(conn);
                    }
                    Err(e) => {
                        let delay = self.net_backoff.next_delay();
                        tracing::warn!(addr = %self.settings.addr, error = %e, retry_in_s = delay.as_secs(), "syslog forwarder cannot connect");
                        if !pause(stop, delay).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            let Some(conn) = self.conn.as_mut() else { continue };
            let written = tokio::select! {
                _ = stop.cancelled() => break,
                w = tokio::time::timeout(WRITE_TIMEOUT, async {
                    conn.write_all(&payload).await?;
                    conn.flush().await
                }) => w,
            };
            match written {
                Ok(Ok(())) => {
                    self.sent_upto = last;
                    self.net_backoff.reset();
                }
                Ok(Err(e)) => {
                    self.drop_connection(&e.to_string());
                    if !pause(stop, self.net_backoff.next_delay()).await {
                        break;
                    }
                    continue;
                }
                Err(_) => {
                    self.drop_connection("write timed out");
                    continue;
                }
            }
            if caught_up && !pause(stop, self.settings.poll_interval).await {
                break;
            }
        }
        // What was written on a connection that is still open counts as sent.
        self.settle().await;
        if let Some(mut conn) = self.conn.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.shutdown()).await;
        }
    }

    /// Confirms what was written if the connection is still open; otherwise forgets the
    /// connection and rewinds to the cursor so the unconfirmed records are sent again.
    async fn settle(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            if still_open(conn).await {
                if self.sent_upto > self.confirmed {
                    self.confirmed = self.sent_upto;
                    self.persist().await;
                }
                return;
            }
            self.drop_connection("closed by the receiver");
        }
    }

    fn drop_connection(&mut self, why: &str) {
        let resend = self.sent_upto - self.confirmed;
        tracing::warn!(addr = %self.settings.addr, error = why, resend, "syslog connection lost; resending from the cursor");
        self.conn = None;
        self.sent_upto = self.confirmed;
    }

    /// The next batch after what was sent, once the cursor is known to be within the trail.
    async fn next_rows(&mut self) -> ward_storage::Result<Vec<AuditRow>> {
        if !self.head_checked {
            let (head, _) = self.store.audit_head().await?;
            if self.confirmed > head {
                tracing::warn!(
                    cursor = self.confirmed,
                    head,
                    "syslog cursor is ahead of the audit trail (database restored?); forwarding from the head"
                );
                self.confirmed = head;
                self.sent_upto = head;
                self.persist().await;
            }
            self.head_checked = true;
        }
        self.store.audit_after(self.sent_upto, BATCH).await
    }

    fn encode(&self, rows: &[AuditRow]) -> Vec<u8> {
        let mut payload = Vec::new();
        for row in rows {
            let msg = match AuditRecord::from_row(row) {
                Ok(record) => format_5424(&record, &self.settings.hostname),
                Err(_) => {
                    tracing::error!(seq = row.seq, "audit record is unreadable; forwarding audit.unreadable instead");
                    format_unreadable(row, &self.settings.hostname)
                }
            };
            payload.extend_from_slice(&frame(&msg));
        }
        payload
    }

    async fn connect(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let attempt = async {
            let tcp = TcpStream::connect(&self.settings.addr).await?;
            tcp.set_nodelay(true)?;
            self.connector.connect(self.server_name.clone(), tcp).await
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
    }

    async fn persist(&self) {
        let path = self.settings.cursor_file.clone();
        let seq = self.confirmed;
        let result = tokio::task::spawn_blocking(move || write_cursor(&path, seq)).await;
        let error = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(path = %self.settings.cursor_file.display(), error, "cannot save the syslog cursor");
    }
}

/// A syslog receiver never sends application data, so a readable connection has been
/// closed (EOF, close_notify or reset). Reads without waiting.
async fn still_open(conn: &mut TlsStream<TcpStream>) -> bool {
    poll_fn(|cx| {
        let mut scratch = [0u8; 256];
        for _ in 0..16 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *conn).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Ready(true),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(false),
                // Unexpected bytes from the receiver: discard them and look again.
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(false),
            }
        }
        Poll::Ready(true)
    })
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::event::{Actor, Via};

    fn record(outcome: &str) -> AuditRecord {
        AuditRecord {
            seq: 42,
            id: Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").expect("uuid"),
            time: OffsetDateTime::from_unix_timestamp_nanos(1_800_000_000_123_456_000).expect("time"),
            actor: Actor {
                user_id: Some("u-1".into()),
                username: Some("alice".into()),
                session_id: None,
                via: Some(Via::Api),
            },
            action: "auth.login".into(),
            resource: Some("user/u-1".into()),
            outcome: outcome.into(),
            ip: Some("192.0.2.1".into()),
            user_agent: Some("agent".into()),
            mfa: false,
            reason: None,
            details: json!({"k": "v"}),
            prev_hash: "0".repeat(64),
            hash: "f".repeat(64),
        }
    }

    #[test]
    fn success_is_authpriv_informational_and_the_header_is_complete() {
        let msg = format_5424(&record("success"), "node-1.example");
        let expected = concat!(
            "<86>1 2027-01-15T08:00:00.123456Z node-1.example ward - auth.login ",
            "[ward@32473 seq=\"42\" id=\"01890a5d-ac96-774b-bcce-b302099a8057\" outcome=\"success\" ",
            "actor=\"alice\" ip=\"192.0.2.1\" resource=\"user/u-1\"] {"
        );
        assert!(msg.starts_with(expected), "{msg}");
    }

    #[test]
    fn failure_and_denied_are_warnings() {
        assert!(format_5424(&record("failure"), "h").starts_with("<84>1 "));
        assert!(format_5424(&record("denied"), "h").starts_with("<84>1 "));
    }

    #[test]
    fn high_severity_records_are_alerts_whatever_their_outcome() {
        for outcome in ["success", "failure", "denied"] {
            let mut r = record(outcome);
            r.details = json!({"severity": "high", "grant_id": "g-1"});
            assert!(format_5424(&r, "h").starts_with("<81>1 "), "{outcome}");
        }
        let mut r = record("success");
        r.details = json!({"severity": "low"});
        assert!(format_5424(&r, "h").starts_with("<86>1 "), "only `high` raises it");
    }

    #[test]
    fn unreadable_rows_are_errors_naming_the_row() {
        let row = AuditRow {
            seq: 7,
            id: "bad-id".into(),
            time_us: 1_800_000_000_000_000,
            actor_user_id: None,
            actor_username: None,
            actor_session_id: None,
            via: "nowhere".into(),
            action: "auth.login".into(),
            resource: None,
            outcome: "success".into(),
            ip: None,
            user_agent: None,
            mfa: false,
            reason: None,
            details: "{}".into(),
            prev_hash: String::new(),
            hash: String::new(),
        };
        let msg = format_unreadable(&row, "");
        assert!(
            msg.starts_with(
                "<83>1 2027-01-15T08:00:00.000000Z - ward - audit.unreadable [ward@32473 seq=\"7\" id=\"bad-id\"] "
            ),
            "{msg}"
        );
    }

    #[test]
    fn sd_values_escape_quote_backslash_and_bracket() {
        let mut r = record("success");
        r.resource = Some(r#"a"b\c]d"#.into());
        r.actor.username = Some("ünï [x]".into());
        let msg = format_5424(&r, "h");
        assert!(msg.contains(r#" resource="a\"b\\c\]d"]"#), "{msg}");
        assert!(msg.contains(r#" actor="ünï [x\]""#), "{msg}");
    }

    #[test]
    fn absent_params_are_omitted_and_empty_header_fields_are_nil() {
        let mut r = record("success");
        r.actor = Actor { user_id: Some("u-9".into()), username: None, session_id: None, via: Some(Via::Cli) };
        r.ip = None;
        r.resource = None;
        let msg = format_5424(&r, "");
        assert!(msg.starts_with("<86>1 2027-01-15T08:00:00.123456Z - ward - auth.login [ward@32473 "), "{msg}");
        assert!(msg.contains(r#" outcome="success" actor="u-9"] {"#), "{msg}");
        assert!(!msg.contains(" ip=") && !msg.contains(" resource="), "{msg}");

        r.actor = Actor::default();
        let msg = format_5424(&r, "");
        assert!(msg.contains(r#" outcome="success"] {"#), "{msg}");
    }

    #[test]
    fn header_fields_are_printable_ascii_and_bounded() {
        let mut r = record("success");
        r.action = format!("a b\u{e9}{}", "x".repeat(40));
        let msg = format_5424(&r, "host name");
        let fields: Vec<&str> = msg.splitn(7, ' ').collect();
        assert_eq!(fields[2], "host_name");
        assert_eq!(fields[5].len(), 32);
        assert!(fields[5].starts_with("a_b_x"), "{msg}");
    }

    #[test]
    fn the_message_ends_with_the_record_as_json() {
        let r = record("failure");
        let msg = format_5424(&r, "h");
        let json = &msg[msg.find("] ").expect("sd end") + 2..];
        let back: AuditRecord = serde_json::from_str(json).expect("json");
        assert_eq!(back, r);
    }

    #[test]
    fn framing_counts_bytes_not_characters() {
        assert_eq!(frame("abc"), b"3 abc".to_vec());
        let msg = "é€";
        assert_eq!(msg.chars().count(), 2);
        let framed = frame(msg);
        assert!(framed.starts_with(b"5 "));
        assert_eq!(&framed[2..], msg.as_bytes());
    }

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_START);
    }

    #[test]
    fn the_cursor_file_is_replaced_and_read_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sub/syslog.cursor");
        assert_eq!(read_cursor(&path).expect("missing is zero"), 0);
        write_cursor(&path, 17).expect("write");
        write_cursor(&path, 18).expect("rewrite");
        assert_eq!(read_cursor(&path).expect("read"), 18);
        assert!(!dir.path().join("sub/syslog.cursor.tmp").exists());
        std::fs::write(&path, "garbage").expect("garble");
        assert!(matches!(read_cursor(&path), Err(SyslogError::Cursor { .. })));
    }

    #[test]
    fn a_ca_file_is_required_and_must_hold_a_certificate() {
        assert!(matches!(client_config(None), Err(SyslogError::NoCaFile)));
        let dir = tempfile::tempdir().expect("tmp");
        let missing = dir.path().join("missing.pem");
        assert!(matches!(client_config(Some(&missing)), Err(SyslogError::CaFile { .. })));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here").expect("write");
        assert!(matches!(client_config(Some(&empty)), Err(SyslogError::NoCertificate { .. })));
    }
}
