//! What every command shares: configuration, logging, the data dir and the services.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use ward_audit::{AuditLog, AuditSettings};
use ward_auth::{Accounts, AuthSettings, CredentialSettings, PasswordPolicy, Role, SessionLimits};
use ward_config::{Config, ConfigError, DatabaseLocation, Layers, LogFormat};
use ward_crypto::PasswordHasher;
use ward_keys::{
    AUDIT_SIGNING_SCOPE, CacheSettings, DataKeys, FileSealer, KdfCost, KeyStore, LocalKeyStore, Pkcs11KeyStore,
};
use ward_storage::{ConnectOptions, Store, Target};
use zeroize::Zeroizing;

/// A start-up failure, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot read config file {path}: {source}")]
    ConfigFile { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    DataDir(#[from] crate::datadir::DataDirError),
    #[error("cannot open the {backend} database: {source}")]
    Database { backend: &'static str, source: ward_storage::StoreError },
    #[error("cannot open the audit trail: {0}")]
    Audit(#[from] ward_audit::AuditError),
    #[error("cannot open the key store: {0}")]
    Keys(#[from] ward_keys::KeyError),
    #[error("{0}")]
    Other(String),
}

impl StartError {
    /// Configuration mistakes exit 2 (like usage errors); everything else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_) | StartError::ConfigFile { .. } => 2,
            _ => 1,
        }
    }
}

/// Reads the config file (if any) and merges it with the environment and flag overrides.
pub fn load_config(file: Option<&PathBuf>, flags: Vec<(String, String, toml::Value)>) -> Result<Config, StartError> {
    let file = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| StartError::ConfigFile { path: path.clone(), source })?;
            Some((path.clone(), text))
        }
        None => None,
    };
    let env = std::env::vars().collect();
    Ok(ward_config::load(Layers { file, env, flags })?)
}

/// Installs the tracing subscriber: human or JSON lines on stderr.
pub fn init_logging(config: &Config, default_level: Option<&str>) -> Result<(), StartError> {
    let level = default_level.unwrap_or(&config.log.level);
    let filter =
        EnvFilter::try_new(level).map_err(|e| StartError::Config(ConfigError::invalid("log.level", e.to_string())))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
    // A second init (tests running several commands in one process) keeps the first.
    let _ = result;
    Ok(())
}

/// Opens the configured database, creating the data dir first.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    crate::datadir::prepare(&config.server.data_dir)?;
    let target = match config.database_location()? {
        DatabaseLocation::Sqlite(path) => Target::Sqlite(path),
        DatabaseLocation::Postgres(url) => Target::Postgres(url),
    };
    let backend = match target {
        Target::Sqlite(_) => "sqlite",
        Target::Postgres(_) => "postgres",
    };
    let options = ConnectOptions {
        target,
        max_connections: config.database.max_connections,
        acquire_timeout: Duration::from_secs(config.database.acquire_timeout_s),
    };
    ward_storage::open(&options).await.map_err(|source| StartError::Database { backend, source })
}

/// What every command that acts on accounts needs.
pub struct Services {
    pub store: Arc<dyn Store>,
    pub audit: AuditLog,
    pub keys: DataKeys,
    pub accounts: Accounts,
}

/// Opens the database, the audit trail, the key store and the identity service, in order.
pub async fn services(config: &Config) -> Result<Services, StartError> {
    let store = open_store(config).await?;
    let keys = data_keys(config, store.clone()).await?;
    let audit = audit_log(config, store.clone(), &keys).await?;
    let accounts = accounts(config, store.clone(), audit.clone(), keys.clone()).await?;
    Ok(Services { store, audit, keys, accounts })
}

/// The data-key registry over the configured key store, with the `[keys] cache_*` bounds.
pub async fn data_keys(config: &Config, store: Arc<dyn Store>) -> Result<DataKeys, StartError> {
    let cache = CacheSettings {
        ttl: Duration::from_secs(config.keys.cache_ttl_s),
        max_uses: config.keys.cache_max_uses,
        capacity: usize::try_from(config.keys.cache_capacity).unwrap_or(usize::MAX),
    };
    let key_store = key_store(config, store.clone()).await?;
    Ok(DataKeys::with_cache(store, key_store, cache))
}

/// Opens the configured master-key store (`[keys] backend`): `local`, the keyring in
/// `[keys] local_dir` (default `<data_dir>/keys`) or, with `[keys] keyring = "database"`, in
/// the database, sealed with `WARD_MASTER_PASSPHRASE` when it is set; or `pkcs11`, the token `[keys.pkcs11] token_label` of the module
/// `[keys.pkcs11] module`, logged in with `WARD_KEYS_PKCS11_PIN`; or `aws-kms` (a build with
/// the `aws-kms` feature), the KMS key `[keys.aws_kms] key_id`.
pub async fn key_store(config: &Config, db: Arc<dyn Store>) -> Result<Arc<dyn KeyStore>, StartError> {
    let store: Arc<dyn KeyStore> = match config.keys.backend.as_str() {
        "pkcs11" => {
            let pkcs11 = &config.keys.pkcs11;
            let module = pkcs11.module.as_deref().ok_or_else(|| {
                StartError::Config(ConfigError::invalid("keys.pkcs11.module", "required with backend `pkcs11`"))
            })?;
            let pin = std::env::var("WARD_KEYS_PKCS11_PIN").ok().filter(|p| !p.is_empty()).ok_or_else(|| {
                StartError::Other(
                    "cannot open the key store: keys.backend = \"pkcs11\" needs the token's user PIN in \
                     WARD_KEYS_PKCS11_PIN"
                        .into(),
                )
            })?;
            Arc::new(Pkcs11KeyStore::open(module, &pkcs11.token_label, Zeroizing::new(pin))?)
        }
        "aws-kms" => aws_kms_store(config).await?,
        _ => {
            let passphrase = std::env::var("WARD_MASTER_PASSPHRASE").ok().filter(|p| !p.is_empty()).map(Zeroizing::new);
            let dir = config.keys.local_dir(&config.server.data_dir);
            if config.keys.keyring == "database" {
                Arc::new(LocalKeyStore::open_in_database(db, passphrase, Some(&dir), KdfCost::DEFAULT).await?)
            } else {
                Arc::new(LocalKeyStore::open(&dir, passphrase)?)
            }
        }
    };
    for warning in store.warnings() {
        tracing::warn!("{warning}");
    }
    Ok(store)
}

/// The AWS KMS key store of `[keys.aws_kms]`, with credentials from the usual AWS chain.
#[cfg(feature = "aws-kms")]
async fn aws_kms_store(config: &Config) -> Result<Arc<dyn KeyStore>, StartError> {
    let kms = &config.keys.aws_kms;
    let store = ward_keys::AwsKmsKeyStore::open(&kms.key_id, kms.region.as_deref(), kms.endpoint.as_deref()).await?;
    Ok(Arc::new(store))
}

/// Without the `aws-kms` feature the AWS SDK is not built in: say how to get a build that has it.
#[cfg(not(feature = "aws-kms"))]
async fn aws_kms_store(_config: &Config) -> Result<Arc<dyn KeyStore>, StartError> {
    Err(StartError::Other(
        "cannot open the key store: keys.backend = \"aws-kms\" needs a ward built with the aws-kms feature \
         (cargo build --release --features aws-kms)"
            .into(),
    ))
}

/// The audit log over `store`, configured from `[audit]`, its signing key file sealed by a
/// data key (scope [`AUDIT_SIGNING_SCOPE`]).
pub async fn audit_log(config: &Config, store: Arc<dyn Store>, keys: &DataKeys) -> Result<AuditLog, StartError> {
    let (id, key) = keys.get_or_create_alone(AUDIT_SIGNING_SCOPE, time::OffsetDateTime::now_utc()).await?;
    let sealer = FileSealer::new(key, "audit-signing-key", id);
    Ok(AuditLog::open_sealed(store, audit_settings(config), &sealer).await?)
}

pub fn audit_settings(config: &Config) -> AuditSettings {
    let dir = &config.server.data_dir;
    AuditSettings {
        checkpoint_every: i64::try_from(config.audit.checkpoint_every_records).unwrap_or(i64::MAX),
        checkpoint_interval: Duration::from_secs(config.audit.checkpoint_interval_s),
        key_file: config.audit.key_file(dir),
        checkpoint_file: config.audit.checkpoint_path(dir),
    }
}

/// The identity service over `store`, configured from `[auth]` and `[session]`, with the
/// password pepper from the key store.
pub async fn accounts(
    config: &Config,
    store: Arc<dyn Store>,
    audit: AuditLog,
    keys: DataKeys,
) -> Result<Accounts, StartError> {
    let (_, pepper) = keys.get_or_create_alone(ward_keys::PEPPER_SCOPE, time::OffsetDateTime::now_utc()).await?;
    let hasher = PasswordHasher::new(config.auth.argon2_memory_kib, config.auth.argon2_iterations, 1)
        .and_then(|h| h.with_pepper(Zeroizing::new(pepper.expose().to_vec())))
        .map_err(|e| StartError::Other(e.to_string()))?;
    let limits = SessionLimits {
        idle: Duration::from_secs(config.session.idle_timeout_s),
        absolute: Duration::from_secs(config.session.absolute_timeout_s),
    };
    let settings = AuthSettings {
        policy: PasswordPolicy::new(config.auth.password_min_length),
        limits,
        lockout_threshold: i64::try_from(config.auth.lockout_threshold).unwrap_or(i64::MAX),
        hard_lock_threshold: i64::try_from(config.auth.hard_lock_threshold).unwrap_or(i64::MAX),
        attempts_per_ip_per_minute: config.auth.login_attempts_per_ip_per_minute,
        max_concurrent_hashes: config.auth.max_concurrent_hashes,
    };
    let mfa_required_roles = config
        .auth
        .mfa_required_roles
        .iter()
        .map(|r| r.parse())
        .collect::<Result<Vec<Role>, _>>()
        .map_err(|e| StartError::Other(e.to_string()))?;
    let credentials = CredentialSettings {
        mfa_required_roles,
        mfa_issuer: config.auth.mfa_issuer.clone(),
        api_key_max_days: config.auth.api_key_max_days,
    };
    Ok(Accounts::new(store, audit, hasher, settings, keys)
        .with_credential_settings(credentials)
        .with_session_cache_ttl(Duration::from_millis(config.session.cache_ttl_ms)))
}

/// `[access]` as the access service's settings.
pub fn access_settings(config: &Config) -> ward_access::AccessSettings {
    let a = &config.access;
    ward_access::AccessSettings {
        breakglass: Duration::from_secs(a.breakglass_minutes * 60),
        dormant_days: u32::try_from(a.dormant_days).unwrap_or(u32::MAX),
        policy_cache: Duration::from_secs(a.policy_cache_s),
    }
}

/// The access-control service, configured from `[access]`, with its alert webhook and the
/// data keys that seal break-glass reasons.
pub fn access(
    config: &Config,
    store: Arc<dyn Store>,
    audit: AuditLog,
    keys: DataKeys,
) -> Result<ward_access::Access, StartError> {
    let a = &config.access;
    let settings = access_settings(config);
    let alerts = match (&a.alert_webhook_url, &a.alert_webhook_secret) {
        (Some(url), Some(secret)) => {
            // Delivers until drained at shutdown (`Access::drain_alerts`).
            let webhook = ward_webhook::Webhook::start(ward_webhook::WebhookSettings {
                url: url.clone(),
                secret: zeroize::Zeroizing::new(secret.as_bytes().to_vec()),
                metric: "breakglass_alert_calls",
                help: "Break-glass alert webhook calls by outcome: delivered, failed (after retries), dropped",
            })
            .map_err(|e| StartError::Other(format!("alert webhook: {e}")))?;
            Some(webhook)
        }
        _ => {
            tracing::warn!("no [access] alert_webhook_url: break-glass use is audited but nobody is alerted");
            None
        }
    };
    Ok(ward_access::Access::new(store, audit, settings, alerts, Some(keys)))
}

/// The messaging service, configured from `[messaging]`.
pub fn messaging(
    config: &Config,
    store: Arc<dyn Store>,
    audit: AuditLog,
    keys: DataKeys,
    access: ward_access::Access,
) -> Result<ward_messaging::Messaging, StartError> {
    let settings = ward_messaging::MessagingSettings {
        max_body_bytes: usize::try_from(config.messaging.max_body_bytes).unwrap_or(usize::MAX),
        max_group_members: usize::try_from(config.messaging.max_group_members).unwrap_or(usize::MAX),
    };
    let messaging = ward_messaging::Messaging::new(store, audit, keys, access, settings);
    let m = &config.messaging;
    match (&m.push_webhook_url, &m.push_webhook_secret) {
        (Some(url), Some(secret)) => {
            let settings = ward_messaging::push::PushSettings {
                url: url.clone(),
                secret: zeroize::Zeroizing::new(secret.as_bytes().to_vec()),
            };
            // Delivers until drained at shutdown (`Messaging::drain_push`).
            let pusher = ward_messaging::push::Pusher::start(settings)
                .map_err(|e| StartError::Other(format!("push webhook: {e}")))?;
            tracing::info!("push notifications for offline members go to the configured webhook");
            Ok(messaging.with_push(pusher))
        }
        _ => Ok(messaging),
    }
}

/// The files service on the `[files]` backend.
pub fn files(
    config: &Config,
    store: Arc<dyn Store>,
    audit: AuditLog,
    keys: ward_keys::DataKeys,
    messaging: ward_messaging::Messaging,
) -> Result<ward_files::Files, StartError> {
    let f = &config.files;
    let backend = match f.backend.as_str() {
        "s3" => ward_files::Backend::S3 {
            bucket: f.s3.bucket.clone(),
            region: f.s3.region.clone(),
            endpoint: f.s3.endpoint.clone(),
            allow_http: f.s3.allow_http,
        },
        _ => ward_files::Backend::Local(f.local_dir(&config.server.data_dir)),
    };
    let objects = ward_files::Objects::open(&backend).map_err(|e| StartError::Other(format!("files: {e}")))?;
    let settings = ward_files::FilesSettings {
        max_bytes: f.max_bytes,
        allowed_types: f.allowed_types.iter().map(|t| t.to_ascii_lowercase()).collect(),
        orphan_grace: std::time::Duration::from_secs(f.orphan_grace_s),
        clamd: f.clamd_socket.as_ref().map(|socket| ward_files::Clamd {
            socket: socket.clone(),
            timeout: std::time::Duration::from_secs(f.clamd_timeout_s),
        }),
        max_concurrent_uploads: usize::try_from(f.max_concurrent_uploads).unwrap_or(16),
    };
    match &settings.clamd {
        Some(c) => tracing::info!(socket = %c.socket.display(), "uploads are scanned by clamd"),
        None => tracing::warn!("no [files] clamd_socket: uploads are not scanned for malware"),
    }
    Ok(ward_files::Files::new(store, audit, keys, messaging, objects, settings))
}

/// How long the sweep lease lasts without renewal.
const SWEEP_LEASE: Duration = Duration::from_secs(10 * 60);

/// Runs the files sweep at start and then every `every`, until `stop`, on one node at a
/// time (the `files.sweep` lease; `holder` names this process).
pub async fn sweep_files(
    files: ward_files::Files,
    every: Duration,
    lease: (Arc<dyn Store>, String),
    stop: tokio_util::sync::CancellationToken,
) {
    let (store, holder) = lease;
    loop {
        // One node at a time sweeps (the `files.sweep` lease).
        let sweep = files.sweep(time::OffsetDateTime::now_utc());
        match ward_storage::leases::hold(&*store, "files.sweep", &holder, SWEEP_LEASE, sweep).await {
            Ok(Some(Err(e))) => tracing::error!(error = %e, "the files sweep failed; retrying at the next interval"),
            Ok(Some(Ok(_)) | None) => {}
            Err(e) => tracing::error!(error = %e, "cannot take the files sweep lease; retrying at the next interval"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
