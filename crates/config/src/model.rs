//! The configuration tree, its defaults and its bounds.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::load::ConfigError;

/// The whole effective configuration of one `ward` process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub database: DatabaseConfig,
    pub session: SessionConfig,
    pub auth: AuthConfig,
    pub keys: KeysConfig,
    pub audit: AuditConfig,
    pub cluster: ClusterConfig,
    pub access: AccessConfig,
    pub files: FilesConfig,
    pub messaging: MessagingConfig,
    pub retention: EmptySection,
    pub backup: EmptySection,
}

/// A section whose settings arrive with a later feature; any key in it is unknown today.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptySection {}

/// `[cluster]`: several nodes behind one service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server that relays real-time events between nodes (`nats://host:4222`); unset:
    /// one node, events stay local.
    pub nats_url: Option<String>,
    /// The NATS subject of this deployment's events (nodes of one deployment share it).
    pub nats_subject: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { nats_url: None, nats_subject: "ward.events".into() }
    }
}

/// `[access]`: access control, emergency (break-glass) access and access reviews.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// How long a break-glass grant lets its holder read a dialog, in minutes (1 to 1,440).
    pub breakglass_minutes: u64,
    /// Where break-glass alerts are POSTed (HTTPS; plain HTTP only to a loopback address).
    /// Unset: no alert is sent, and start-up logs a warning. Carries ids only, never PHI.
    pub alert_webhook_url: Option<String>,
    /// The HMAC-SHA256 key that signs each alert (at least 32 characters); required with
    /// `alert_webhook_url`. Best given as `WARD_ACCESS_ALERT_WEBHOOK_SECRET`.
    pub alert_webhook_secret: Option<String>,
    /// An account without a sign-in for this many days is listed as dormant by the access
    /// review (1 to 3,650).
    pub dormant_days: u64,
    /// How many seconds a node may serve policies it has cached before reading them again
    /// (0 to 60); a change made on this node applies at once.
    pub policy_cache_s: u64,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            breakglass_minutes: 60,
            alert_webhook_url: None,
            alert_webhook_secret: None,
            dormant_days: 90,
            policy_cache_s: 2,
        }
    }
}

/// `[files]`: shared files (uploads sealed per segment under a per-file data key).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Where sealed file objects are kept: `local` (a directory, default) or `s3`.
    pub backend: String,
    /// The `local` backend's directory (default: `<data_dir>/files`).
    pub local_dir: Option<PathBuf>,
    /// Largest file in bytes (413 beyond; nothing is kept). 1 KiB to 16 GiB.
    pub max_bytes: u64,
    /// Content types accepted; each upload's declared type must be one of them and match
    /// what its first bytes show.
    pub allowed_types: Vec<String>,
    /// Longest upload or download of one file, in seconds (30 to 86,400).
    pub transfer_timeout_s: u64,
    /// How often the orphan sweep runs, in seconds (60 to 86,400).
    pub sweep_interval_s: u64,
    /// An object without a file record is removed only once it is this many seconds old,
    /// so an upload in progress is never swept (60 to 604,800).
    pub orphan_grace_s: u64,
    /// clamd's Unix socket (Debian's clamav-daemon: `/var/run/clamav/clamd.ctl`): every
    /// upload is scanned while it streams and kept only when clean. Unset: no scanning.
    pub clamd_socket: Option<PathBuf>,
    /// How long clamd may take to answer after an upload's last byte, in seconds (1 to 600).
    pub clamd_timeout_s: u64,
    /// Uploads streaming at once on one node (1 to 1,024); beyond, 503 with `Retry-After`.
    /// Each holds up to about 15 MiB.
    pub max_concurrent_uploads: u64,
    pub s3: S3Config,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            backend: "local".into(),
            local_dir: None,
            max_bytes: 100 * 1024 * 1024,
            allowed_types: DEFAULT_FILE_TYPES.iter().map(|t| (*t).to_string()).collect(),
            transfer_timeout_s: 3_600,
            sweep_interval_s: 3_600,
            orphan_grace_s: 86_400,
            clamd_socket: None,
            clamd_timeout_s: 120,
            max_concurrent_uploads: 16,
            s3: S3Config::default(),
        }
    }
}

/// The content types a fresh install accepts: photos, scans, PDFs, plain text and DICOM.
pub const DEFAULT_FILE_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/heif",
    "image/tiff",
    "application/pdf",
    "text/plain",
    "application/dicom",
];

impl FilesConfig {
    /// The `local` backend's directory for a data dir.
    pub fn local_dir(&self, data_dir: &std::path::Path) -> PathBuf {
        self.local_dir.clone().unwrap_or_else(|| data_dir.join("files"))
    }
}

/// `[files.s3]`: the bucket of the `s3` backend. Credentials come from the environment
/// (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`), web identity (EKS)
/// or the ECS/EC2 instance role, never from this file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// The bucket's region (default: `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// Another endpoint URL (an S3-compatible server or a VPC endpoint).
    pub endpoint: Option<String>,
    /// Allows a plain-HTTP endpoint; only to a loopback address (tests, a local gateway).
    pub allow_http: bool,
}

/// `[messaging]`: dialogs and messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagingConfig {
    /// Largest message body in bytes of UTF-8 (413 beyond).
    pub max_body_bytes: u64,
    /// Most members of a group dialog.
    pub max_group_members: u64,
    /// Where push notifications for offline members are POSTed (HTTPS; plain HTTP only to
    /// a loopback address). Unset: no push notifications. Carries ids only, never PHI.
    pub push_webhook_url: Option<String>,
    /// The HMAC-SHA256 key that signs each push notification (at least 32 characters);
    /// required with `push_webhook_url`. Best given as `WARD_MESSAGING_PUSH_WEBHOOK_SECRET`.
    pub push_webhook_secret: Option<String>,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self { max_body_bytes: 64 * 1024, max_group_members: 1_000, push_webhook_url: None, push_webhook_secret: None }
    }
}

/// `[server]`: where Ward listens and how it treats connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Directory holding the SQLite database, the TLS material and (later) keys and objects.
    pub data_dir: PathBuf,
    /// Socket address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Serve HTTPS. Turning it off is refused unless `listen` is loopback or
    /// `behind_tls_proxy` declares that a TLS-terminating proxy sits in front.
    pub tls: bool,
    /// PEM certificate chain; without it Ward generates a self-signed one for localhost.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Declares that a TLS-terminating proxy forwards to this listener.
    pub behind_tls_proxy: bool,
    /// Peers whose `X-Forwarded-For` is believed for the client address in audit records;
    /// from anyone else the header is ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Largest accepted request body in bytes (413 beyond).
    pub max_body_bytes: u64,
    /// Longest time one request may take before it is answered 503.
    pub request_timeout_s: u64,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_grace_s: u64,
    /// When set (at least 32 characters), `GET /metrics` needs `Authorization: Bearer
    /// <token>`; unset, it is open (warned at start when `listen` is not loopback).
    pub metrics_token: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./ward-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls: true,
            tls_cert: None,
            tls_key: None,
            behind_tls_proxy: false,
            trusted_proxies: Vec::new(),
            max_body_bytes: 1024 * 1024,
            request_timeout_s: 30,
            shutdown_grace_s: 30,
            metrics_token: None,
        }
    }
}

/// `[log]`: verbosity and format of the structured logs on stderr.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, or per-target like `info,ward_api=debug`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Human }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// `[database]`: which database holds Ward's records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://PATH`; unset means `sqlite://<data_dir>/ward.db`.
    pub url: Option<String>,
    /// Upper bound of the connection pool.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before failing with 503.
    pub acquire_timeout_s: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, max_connections: 16, acquire_timeout_s: 5 }
    }
}

/// `[session]`: automatic logoff (HIPAA 164.312(a)(2)(iii)).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A session unused this long ends (floor 10 s for tests, ceiling 12 h).
    pub idle_timeout_s: u64,
    /// A session ends this long after sign-in, used or not (floor 60 s, ceiling 12 h).
    pub absolute_timeout_s: u64,
    /// Longest time a validated session is served from memory (0 to 300,000 ms; 0 = off).
    /// Revocations take effect at once on the node that made them and within about 250 ms
    /// elsewhere (every node follows the database's session-change feed); this bound is the
    /// safety net should that feed stall.
    pub cache_ttl_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { idle_timeout_s: 900, absolute_timeout_s: 43_200, cache_ttl_ms: 30_000 }
    }
}

/// `[auth]`: person authentication (HIPAA 164.312(d)).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Shortest accepted password (NIST SP 800-63B; floor 8).
    pub password_min_length: usize,
    /// Consecutive failed sign-ins after which each further failure locks the account for
    /// an exponentially growing time (1 s, 2 s, 4 s, … up to 15 min).
    pub lockout_threshold: u64,
    /// Consecutive failed sign-ins after which the account stays locked until an
    /// administrator unlocks it (`ward user unlock`, `POST /v1/users/{id}/unlock`).
    pub hard_lock_threshold: u64,
    /// Sign-in attempts accepted per client IP per minute, per node (429 beyond).
    pub login_attempts_per_ip_per_minute: u32,
    /// argon2id memory cost in KiB (floor 19,456 = 19 MiB).
    pub argon2_memory_kib: u32,
    /// argon2id iterations (floor 2).
    pub argon2_iterations: u32,
    /// Password hashes computed at once on this node; each holds `argon2_memory_kib` of
    /// memory, so this bounds the memory a burst of sign-ins can take.
    pub max_concurrent_hashes: u32,
    /// Roles whose holders must use a second factor: until they enroll, their sessions may
    /// only enroll, read the session and log out (403 `mfa_required` elsewhere).
    pub mfa_required_roles: Vec<String>,
    /// The issuer shown by authenticator apps (`otpauth://` URI).
    pub mfa_issuer: String,
    /// Longest lifetime of a service account's API key, in days.
    pub api_key_max_days: u64,
}

/// `[keys]`: where the master keys live (HIPAA 164.312(a)(2)(iv)).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// `local`: a keyring file in `<data_dir>/keys`, sealed with a key derived from
    /// `WARD_MASTER_PASSPHRASE` (unsealed, with a warning, when that is unset).
    /// `pkcs11`: master keys inside an HSM token (`[keys.pkcs11]`, PIN from
    /// `WARD_KEYS_PKCS11_PIN`). `aws-kms`: the master key is an AWS KMS key
    /// (`[keys.aws_kms]`, credentials from the usual AWS chain; needs a ward built with
    /// `--features aws-kms`).
    pub backend: String,
    /// Directory of the local keyring (default `<data_dir>/keys`). Nodes that share a
    /// database must use the same keyring (the same sealed file on each node), or keep it
    /// in the database (`keyring = "database"`).
    pub local_dir: Option<PathBuf>,
    /// Where the local backend keeps its sealed keyring: `file` (in `local_dir`) or
    /// `database` (the shared database, for several nodes; requires
    /// `WARD_MASTER_PASSPHRASE`; a keyring file in `local_dir` is imported on first start).
    pub keyring: String,
    /// A new master-key version is made automatically when the active one is this old
    /// (90 ..= 2560 days, like AWS KMS); `ward keys rotate` rotates at any time.
    pub rotation_days: u64,
    /// Longest time an unwrapped data key stays cached in memory, in seconds (0 turns the
    /// data-key cache off: every record then calls the key store).
    pub cache_ttl_s: u64,
    /// Lookups a cached data key may serve before it is unwrapped again.
    pub cache_max_uses: u64,
    /// Most data keys cached at once.
    pub cache_capacity: u64,
    /// The HSM, for `backend = "pkcs11"`.
    pub pkcs11: Pkcs11Config,
    /// The KMS key, for `backend = "aws-kms"`.
    pub aws_kms: AwsKmsConfig,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            backend: "local".into(),
            local_dir: None,
            keyring: "file".into(),
            rotation_days: 365,
            cache_ttl_s: 300,
            cache_max_uses: 100_000,
            cache_capacity: 10_000,
            pkcs11: Pkcs11Config::default(),
            aws_kms: AwsKmsConfig::default(),
        }
    }
}

/// `[keys.pkcs11]`: the PKCS#11 module and token holding the master keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The vendor's PKCS#11 library, e.g. `/usr/lib/softhsm/libsofthsm2.so` or the AWS
    /// CloudHSM client's `/opt/cloudhsm/lib/libcloudhsm_pkcs11.so`.
    pub module: Option<PathBuf>,
    /// The label of the token (slot) that holds Ward's master keys.
    pub token_label: String,
}

/// `[keys.aws_kms]`: the AWS KMS key that is Ward's master key. Credentials come from the
/// usual AWS chain (environment, profile, SSO, web identity, ECS or EC2 role), never from
/// this file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsKmsConfig {
    /// The symmetric encryption key: key id, key ARN, alias name (`alias/ward`) or alias ARN.
    pub key_id: String,
    /// The AWS region (default: the chain's, e.g. `AWS_REGION` or the profile's).
    pub region: Option<String>,
    /// Another KMS endpoint URL, e.g. a VPC endpoint (default: the region's).
    pub endpoint: Option<String>,
}

impl KeysConfig {
    /// Where the local keyring lives for a data dir.
    pub fn local_dir(&self, data_dir: &std::path::Path) -> PathBuf {
        self.local_dir.clone().unwrap_or_else(|| data_dir.join("keys"))
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            password_min_length: 12,
            lockout_threshold: 5,
            hard_lock_threshold: 20,
            login_attempts_per_ip_per_minute: 60,
            argon2_memory_kib: 64 * 1024,
            argon2_iterations: 3,
            max_concurrent_hashes: 4,
            mfa_required_roles: vec!["admin".into(), "clinician".into(), "auditor".into()],
            mfa_issuer: "Ward".into(),
            api_key_max_days: 365,
        }
    }
}

/// `[audit]`: the tamper-evident audit trail (HIPAA 164.312(b)).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Sign a checkpoint of the chain head after this many new records...
    pub checkpoint_every_records: u64,
    /// ...or after this many seconds, whichever comes first (at most 60).
    pub checkpoint_interval_s: u64,
    /// Ed25519 checkpoint signing key; default `<data_dir>/audit/signing.key`. Nodes that
    /// share a PostgreSQL database must share this key file.
    pub signing_key_file: Option<PathBuf>,
    /// Append-only checkpoint file outside the database; default
    /// `<data_dir>/audit/checkpoints.jsonl`.
    pub checkpoint_file: Option<PathBuf>,
    /// How long audit records must be kept (HIPAA documentation: 6 years = 2,192 days).
    /// Ward never deletes audit records earlier; message retention never touches them.
    pub retention_days: u64,
    /// Must be set to accept a `retention_days` below 2,192; the shorter setting is then
    /// recorded in the trail at every start.
    pub allow_short_retention: bool,
    /// `host:port` of a SIEM's syslog-over-TLS listener (RFC 5425); unset = no streaming.
    pub syslog_addr: Option<String>,
    /// TLS name to verify on the syslog server's certificate; default: the host of
    /// `syslog_addr`.
    pub syslog_server_name: Option<String>,
    /// PEM file of the CA(s) that sign the syslog server's certificate (required with
    /// `syslog_addr`).
    pub syslog_ca_file: Option<PathBuf>,
}

/// Six years, the HIPAA documentation retention period.
pub const AUDIT_RETENTION_FLOOR_DAYS: u64 = 2192;

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_every_records: 1000,
            checkpoint_interval_s: 60,
            signing_key_file: None,
            checkpoint_file: None,
            retention_days: AUDIT_RETENTION_FLOOR_DAYS,
            allow_short_retention: false,
            syslog_addr: None,
            syslog_server_name: None,
            syslog_ca_file: None,
        }
    }
}

impl AuditConfig {
    pub fn key_file(&self, data_dir: &std::path::Path) -> PathBuf {
        self.signing_key_file.clone().unwrap_or_else(|| data_dir.join("audit/signing.key"))
    }

    /// The syslog server's TLS name: configured, or the host part of `syslog_addr`.
    pub fn syslog_name(&self) -> Option<String> {
        let addr = self.syslog_addr.as_ref()?;
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
        Some(self.syslog_server_name.clone().unwrap_or_else(|| host.trim_matches(['[', ']']).to_string()))
    }

    pub fn checkpoint_path(&self, data_dir: &std::path::Path) -> PathBuf {
        self.checkpoint_file.clone().unwrap_or_else(|| data_dir.join("audit/checkpoints.jsonl"))
    }
}

/// Where the database lives, derived from `[database] url` and the data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

/// Whether a URL names this machine (`localhost` or a loopback address).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn in_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, format!("must be between {min} and {max}, got {value}")))
    }
}

impl Config {
    /// A webhook URL and its secret: HTTPS (plain HTTP to loopback only), and a secret of at
    /// least 32 characters, both or neither.
    fn check_webhook(
        section: &str,
        name: &str,
        url: Option<&String>,
        secret: Option<&String>,
    ) -> Result<(), ConfigError> {
        let url_key = format!("{section}.{name}_url");
        let secret_key = format!("{section}.{name}_secret");
        let Some(raw) = url else {
            if secret.is_some() {
                return Err(ConfigError::invalid(secret_key.clone(), format!("set without {name}_url")));
            }
            return Ok(());
        };
        let parsed = url::Url::parse(raw).map_err(|_| ConfigError::invalid(url_key.clone(), "not a valid URL"))?;
        let loopback = is_loopback(&parsed);
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(ConfigError::invalid(
                    url_key.clone(),
                    "must use https (plain http only to a loopback address)",
                ));
            }
            _ => return Err(ConfigError::invalid(url_key.clone(), "must be an https:// URL")),
        }
        match secret {
            None => Err(ConfigError::invalid(secret_key.clone(), format!("required with {name}_url"))),
            Some(secret) if secret.chars().count() < 32 => {
                Err(ConfigError::invalid(secret_key.clone(), "must be at least 32 characters"))
            }
            Some(_) => Ok(()),
        }
    }

    fn check_files(&self) -> Result<(), ConfigError> {
        let f = &self.files;
        in_range("files.max_bytes", f.max_bytes, 1024, 16 << 30)?;
        in_range("files.transfer_timeout_s", f.transfer_timeout_s, 30, 86_400)?;
        in_range("files.sweep_interval_s", f.sweep_interval_s, 60, 86_400)?;
        in_range("files.orphan_grace_s", f.orphan_grace_s, 60, 604_800)?;
        in_range("files.clamd_timeout_s", f.clamd_timeout_s, 1, 600)?;
        in_range("files.max_concurrent_uploads", f.max_concurrent_uploads, 1, 1_024)?;
        // An upload's object exists before its record: the sweep must not take it for an
        // orphan while the upload may still be running.
        if f.orphan_grace_s <= f.transfer_timeout_s + f.clamd_timeout_s {
            return Err(ConfigError::invalid(
                "files.orphan_grace_s",
                "must exceed files.transfer_timeout_s + files.clamd_timeout_s (an upload in progress is not an orphan)",
            ));
        }
        if f.allowed_types.is_empty() {
            return Err(ConfigError::invalid("files.allowed_types", "must name at least one content type"));
        }
        if let Some(bad) = f.allowed_types.iter().find(|t| {
            let mut parts = t.split('/');
            let ok = |p: Option<&str>| {
                p.is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
            };
            !(ok(parts.next()) && ok(parts.next()) && parts.next().is_none())
        }) {
            return Err(ConfigError::invalid("files.allowed_types", format!("`{bad}` is not a type/subtype")));
        }
        match f.backend.as_str() {
            "local" => Ok(()),
            "s3" => {
                if f.s3.bucket.is_empty() {
                    return Err(ConfigError::invalid("files.s3.bucket", "required with files.backend = \"s3\""));
                }
                if let Some(endpoint) = &f.s3.endpoint {
                    let parsed = url::Url::parse(endpoint)
                        .map_err(|_| ConfigError::invalid("files.s3.endpoint", "not a valid URL"))?;
                    let loopback = is_loopback(&parsed);
                    match parsed.scheme() {
                        "https" => {}
                        "http" if f.s3.allow_http && loopback => {}
                        _ => {
                            return Err(ConfigError::invalid(
                                "files.s3.endpoint",
                                "must use https (plain http only to a loopback address, with files.s3.allow_http)",
                            ));
                        }
                    }
                }
                Ok(())
            }
            _ => Err(ConfigError::invalid("files.backend", "expected `local` or `s3`")),
        }
    }

    /// Checks every bound and cross-field rule; the first violation is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        in_range("server.max_body_bytes", s.max_body_bytes, 1024, 1 << 30)?;
        in_range("server.request_timeout_s", s.request_timeout_s, 1, 3600)?;
        in_range("server.shutdown_grace_s", s.shutdown_grace_s, 0, 600)?;
        if s.metrics_token.as_ref().is_some_and(|t| t.chars().count() < 32) {
            return Err(ConfigError::invalid("server.metrics_token", "must be at least 32 characters"));
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return Err(ConfigError::invalid("server.tls_cert", "tls_cert and tls_key must be set together"));
        }
        if s.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("server.data_dir", "must not be empty"));
        }
        if self.log.level.trim().is_empty() {
            return Err(ConfigError::invalid("log.level", "must not be empty"));
        }
        let d = &self.database;
        in_range("database.max_connections", u64::from(d.max_connections), 1, 1000)?;
        in_range("database.acquire_timeout_s", d.acquire_timeout_s, 1, 300)?;
        self.database_location()?;
        let se = &self.session;
        in_range("session.idle_timeout_s", se.idle_timeout_s, 10, 43_200)?;
        in_range("session.absolute_timeout_s", se.absolute_timeout_s, 60, 43_200)?;
        in_range("session.cache_ttl_ms", se.cache_ttl_ms, 0, 300_000)?;
        if se.idle_timeout_s > se.absolute_timeout_s {
            return Err(ConfigError::invalid("session.idle_timeout_s", "must not exceed session.absolute_timeout_s"));
        }
        in_range("audit.checkpoint_every_records", self.audit.checkpoint_every_records, 1, 1_000_000)?;
        in_range("audit.checkpoint_interval_s", self.audit.checkpoint_interval_s, 1, 60)?;
        in_range("audit.retention_days", self.audit.retention_days, 1, 36_500)?;
        if let Some(addr) = &self.audit.syslog_addr {
            if addr.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
                return Err(ConfigError::invalid("audit.syslog_addr", "expected host:port"));
            }
            if self.audit.syslog_ca_file.is_none() {
                return Err(ConfigError::invalid(
                    "audit.syslog_ca_file",
                    "required with audit.syslog_addr: the CA that signs the syslog server's certificate",
                ));
            }
        }
        if self.audit.retention_days < AUDIT_RETENTION_FLOOR_DAYS && !self.audit.allow_short_retention {
            return Err(ConfigError::invalid(
                "audit.retention_days",
                format!(
                    "below the 6-year HIPAA floor ({AUDIT_RETENTION_FLOOR_DAYS} days); set \
                     audit.allow_short_retention = true to accept it (the choice is recorded in the audit trail)"
                ),
            ));
        }
        in_range("auth.password_min_length", self.auth.password_min_length as u64, 8, 128)?;
        in_range("auth.lockout_threshold", self.auth.lockout_threshold, 3, 50)?;
        in_range("auth.argon2_memory_kib", u64::from(self.auth.argon2_memory_kib), 19_456, 1_048_576)?;
        in_range("auth.argon2_iterations", u64::from(self.auth.argon2_iterations), 2, 10)?;
        in_range("auth.max_concurrent_hashes", u64::from(self.auth.max_concurrent_hashes), 1, 256)?;
        in_range("auth.hard_lock_threshold", self.auth.hard_lock_threshold, self.auth.lockout_threshold + 1, 100)?;
        const ROLES: [&str; 6] = ["admin", "clinician", "staff", "patient", "auditor", "service"];
        if let Some(bad) = self.auth.mfa_required_roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
            return Err(ConfigError::invalid(
                "auth.mfa_required_roles",
                format!("unknown role `{bad}` (expected any of {})", ROLES.join(", ")),
            ));
        }
        if self.auth.mfa_issuer.is_empty() || self.auth.mfa_issuer.contains(':') || self.auth.mfa_issuer.len() > 64 {
            return Err(ConfigError::invalid("auth.mfa_issuer", "1 to 64 characters, without `:`"));
        }
        in_range("auth.api_key_max_days", self.auth.api_key_max_days, 1, 3_650)?;
        in_range("keys.rotation_days", self.keys.rotation_days, 90, 2_560)?;
        if let Some(url) = &self.cluster.nats_url
            && !(url.starts_with("nats://") || url.starts_with("tls://"))
        {
            return Err(ConfigError::invalid("cluster.nats_url", "expected nats://host:port or tls://host:port"));
        }
        if self.cluster.nats_subject.is_empty()
            || !self.cluster.nats_subject.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(ConfigError::invalid("cluster.nats_subject", "letters, digits, `.`, `_` and `-` only"));
        }
        self.check_files()?;
        in_range("messaging.max_body_bytes", self.messaging.max_body_bytes, 1, 1024 * 1024)?;
        in_range("messaging.max_group_members", self.messaging.max_group_members, 2, 100_000)?;
        let m = &self.messaging;
        Self::check_webhook("messaging", "push_webhook", m.push_webhook_url.as_ref(), m.push_webhook_secret.as_ref())?;
        let a = &self.access;
        in_range("access.breakglass_minutes", a.breakglass_minutes, 1, 1_440)?;
        in_range("access.dormant_days", a.dormant_days, 1, 3_650)?;
        in_range("access.policy_cache_s", a.policy_cache_s, 0, 60)?;
        Self::check_webhook("access", "alert_webhook", a.alert_webhook_url.as_ref(), a.alert_webhook_secret.as_ref())?;
        in_range("keys.cache_ttl_s", self.keys.cache_ttl_s, 0, 3_600)?;
        in_range("keys.cache_max_uses", self.keys.cache_max_uses, 1, 4_294_967_296)?;
        in_range("keys.cache_capacity", self.keys.cache_capacity, 1, 1_000_000)?;
        if !matches!(self.keys.keyring.as_str(), "file" | "database") {
            return Err(ConfigError::invalid("keys.keyring", "expected `file` or `database`"));
        }
        match self.keys.backend.as_str() {
            "local" => {}
            "pkcs11" => {
                if self.keys.pkcs11.module.is_none() {
                    return Err(ConfigError::invalid(
                        "keys.pkcs11.module",
                        "required with backend `pkcs11`: the path of the HSM's PKCS#11 library",
                    ));
                }
                if self.keys.pkcs11.token_label.is_empty() {
                    return Err(ConfigError::invalid(
                        "keys.pkcs11.token_label",
                        "required with backend `pkcs11`: the label of the token holding the master keys",
                    ));
                }
            }
            "aws-kms" => {
                if self.keys.aws_kms.key_id.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        "keys.aws_kms.key_id",
                        "required with backend `aws-kms`: the key id, key ARN or alias of a symmetric KMS key",
                    ));
                }
            }
            other => {
                return Err(ConfigError::invalid(
                    "keys.backend",
                    format!("unknown backend `{other}` (expected local, pkcs11 or aws-kms)"),
                ));
            }
        }
        in_range(
            "auth.login_attempts_per_ip_per_minute",
            u64::from(self.auth.login_attempts_per_ip_per_minute),
            1,
            100_000,
        )?;
        Ok(())
    }

    /// The database this configuration points at.
    pub fn database_location(&self) -> Result<DatabaseLocation, ConfigError> {
        let Some(raw) = &self.database.url else {
            return Ok(DatabaseLocation::Sqlite(self.server.data_dir.join("ward.db")));
        };
        let key = "database.url";
        let url = url::Url::parse(raw).map_err(|e| ConfigError::invalid(key, format!("not a valid URL ({e})")))?;
        match url.scheme() {
            "postgres" | "postgresql" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(ConfigError::invalid(key, "a postgres URL needs a host"));
                }
                if url.path().trim_start_matches('/').is_empty() {
                    return Err(ConfigError::invalid(key, "a postgres URL needs a database name"));
                }
                Ok(DatabaseLocation::Postgres(raw.clone()))
            }
            "sqlite" => {
                let path = raw.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or_default();
                if path.is_empty() {
                    return Err(ConfigError::invalid(key, "a sqlite URL needs a file path"));
                }
                Ok(DatabaseLocation::Sqlite(PathBuf::from(path)))
            }
            other => {
                Err(ConfigError::invalid(key, format!("unsupported scheme `{other}` (use postgres:// or sqlite://)")))
            }
        }
    }

    /// The security-relevant settings whose changes are recorded in the audit trail, as
    /// `key → value` (TOML text). Node-local keys (paths, listen address, logging) and the
    /// database URL are left out: they differ between nodes of one deployment.
    pub fn audited_settings(&self) -> std::collections::BTreeMap<String, String> {
        const KEYS: &[&str] = &[
            "server.tls",
            "server.behind_tls_proxy",
            "server.trusted_proxies",
            "server.max_body_bytes",
            "server.request_timeout_s",
            "session.idle_timeout_s",
            "session.absolute_timeout_s",
            "session.cache_ttl_ms",
            "auth.password_min_length",
            "auth.lockout_threshold",
            "auth.hard_lock_threshold",
            "auth.login_attempts_per_ip_per_minute",
            "auth.argon2_memory_kib",
            "auth.argon2_iterations",
            "auth.mfa_required_roles",
            "auth.api_key_max_days",
            "messaging.max_body_bytes",
            "messaging.max_group_members",
            "access.breakglass_minutes",
            "access.dormant_days",
            "access.policy_cache_s",
            "files.backend",
            "files.max_bytes",
            "files.allowed_types",
            "files.clamd_socket",
            "files.s3.bucket",
            "files.s3.region",
            "keys.backend",
            "keys.keyring",
            "keys.rotation_days",
            "keys.cache_ttl_s",
            "keys.cache_max_uses",
            "keys.pkcs11.token_label",
            "keys.aws_kms.key_id",
            "keys.aws_kms.region",
            "audit.checkpoint_every_records",
            "audit.checkpoint_interval_s",
            "audit.retention_days",
            "audit.allow_short_retention",
        ];
        let tree = toml::Value::try_from(self).unwrap_or(toml::Value::Table(toml::Table::new()));
        let mut settings: std::collections::BTreeMap<String, String> = KEYS
            .iter()
            .filter_map(|key| {
                let value = key.split('.').try_fold(&tree, |node, part| node.get(part))?;
                Some((key.to_string(), value.to_string()))
            })
            .collect();
        // Where push notifications go, but never a token in its user part, path or query.
        let push = self.messaging.push_webhook_url.as_deref().map_or_else(|| "off".to_string(), url_origin);
        settings.insert("messaging.push_webhook".into(), push);
        let alert = self.access.alert_webhook_url.as_deref().map_or_else(|| "off".to_string(), url_origin);
        settings.insert("access.alert_webhook".into(), alert);
        let s3 = self.files.s3.endpoint.as_deref().map_or_else(|| "aws".to_string(), url_origin);
        settings.insert("files.s3.endpoint".into(), s3);
        settings
    }

    /// The configuration as TOML with every secret replaced by `REDACTED`.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if let Some(url) = &shown.cluster.nats_url {
            shown.cluster.nats_url = Some(redact_url(url));
        }
        if let Some(url) = &shown.database.url {
            shown.database.url = Some(redact_url(url));
        }
        if let Some(url) = &shown.keys.aws_kms.endpoint {
            shown.keys.aws_kms.endpoint = Some(redact_url(url));
        }
        if let Some(url) = &shown.files.s3.endpoint {
            shown.files.s3.endpoint = Some(redact_url(url));
        }
        if let Some(url) = &shown.messaging.push_webhook_url {
            // Its path or query may carry a token.
            shown.messaging.push_webhook_url = Some(format!("{}/REDACTED", url_origin(url)));
        }
        if shown.server.metrics_token.is_some() {
            shown.server.metrics_token = Some("REDACTED".into());
        }
        if shown.messaging.push_webhook_secret.is_some() {
            shown.messaging.push_webhook_secret = Some("REDACTED".into());
        }
        if let Some(url) = &shown.access.alert_webhook_url {
            shown.access.alert_webhook_url = Some(format!("{}/REDACTED", url_origin(url)));
        }
        if shown.access.alert_webhook_secret.is_some() {
            shown.access.alert_webhook_secret = Some("REDACTED".into());
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// A URL's scheme, host and port only (`https://push.example:8443`).
pub fn url_origin(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(url) => url.origin().ascii_serialization(),
        Err(_) => "<not a valid URL>".to_string(),
    }
}

/// Hides the password of a URL, keeping the rest readable.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            // Setting a password only fails for URLs that cannot have one, which have none.
            let _ = url.set_password(Some("REDACTED"));
            url.to_string()
        }
        Ok(_) => raw.to_string(),
        Err(_) => "<redacted: not a valid URL>".to_string(),
    }
}
