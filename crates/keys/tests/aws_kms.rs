//! The AWS KMS key store against moto's KMS server on loopback (no mocks on Ward's side).
//!
//! Each test starts its own `moto_server` on 127.0.0.1 and a free port, creates its KMS keys
//! with the SDK under dummy static credentials, and stops the server when it ends (a guard
//! kills it on drop, also when the test fails). The test of [`AwsKmsKeyStore::open`], which
//! reads the usual AWS chain, runs its body in a child process of this test binary started
//! with the AWS environment variables set (this crate forbids `unsafe`, so no `set_var`).
//!
//! Without moto every test fails and says to `pip install 'moto[server]'`.
#![cfg(feature = "aws-kms")]

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::Client;
use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use time::OffsetDateTime;
use ward_keys::{AwsKmsKeyStore, CacheSettings, DataKey, DataKeys, KeyError, KeyState, KeyStore, WrappedKey};

const REGION: &str = "us-east-1";
const ACCESS_KEY: &str = "AKIAWARDTESTKEY00000";
/// A dummy secret; no error message may ever contain it.
const SECRET_KEY: &str = "ward-test-secret-never-printed";
/// Set in the child that runs the body of the `open` test: the moto endpoint.
const CHILD_ENDPOINT: &str = "WARD_KMS_TEST_ENDPOINT";
/// Set in that child: the KMS key id to open.
const CHILD_KEY: &str = "WARD_KMS_TEST_KEY_ID";
/// Set in that child: what it does (`round-trip` or `no-region`).
const CHILD_ROLE: &str = "WARD_KMS_TEST_ROLE";

/// A running `moto_server`; killed when dropped.
struct Moto {
    child: Child,
    endpoint: String,
    _logs: tempfile::TempDir,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto on 127.0.0.1 and a free port and waits until it accepts connections.
    fn start() -> Self {
        let exe = on_path("moto_server").unwrap_or_else(|| {
            panic!(
                "moto_server is not on PATH: the AWS KMS key store tests need moto's KMS server; run \
                 `pip install 'moto[server]'` (scripts/services.sh does)"
            )
        });
        // Another process may take the free port before moto binds it: then try another.
        let mut last_log = String::new();
        for _ in 0..3 {
            let logs = tempfile::tempdir().expect("tempdir");
            let log_path = logs.path().join("moto.log");
            let log = File::create(&log_path).expect("moto log file");
            let port = free_port();
            let child = Command::new(&exe)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
            let mut moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}"), _logs: logs };
            if moto.wait_ready(port) {
                return moto;
            }
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("moto_server did not start; its last output:\n{last_log}");
    }

    /// True once moto accepts connections; false if it exited (e.g. the port was taken).
    fn wait_ready(&mut self, port: u16) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.child.try_wait().expect("moto status").is_some() {
                return false;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server did not accept connections on port {port} within 60 s");
    }

    /// The SDK configuration of the tests: moto's endpoint and dummy static credentials.
    async fn config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "ward-test"))
            .load()
            .await
    }

    async fn client(&self) -> Client {
        Client::new(&self.config().await)
    }

    /// A new KMS key of this spec and usage; its key id.
    async fn create_key(&self, spec: KeySpec, usage: KeyUsageType) -> String {
        let out = self
            .client()
            .await
            .create_key()
            .key_spec(spec)
            .key_usage(usage)
            .description("ward test key")
            .send()
            .await
            .expect("CreateKey");
        out.key_metadata().expect("metadata").key_id().to_string()
    }

    async fn symmetric_key(&self) -> String {
        self.create_key(KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt).await
    }

    async fn store(&self, key_id: &str) -> AwsKmsKeyStore {
        AwsKmsKeyStore::with_config(&self.config().await, key_id).await.expect("open the KMS key store")
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn keyring_message(result: Result<impl std::fmt::Debug, KeyError>) -> String {
    match result {
        Err(KeyError::Keyring(message)) => {
            assert!(!message.contains(SECRET_KEY), "a message shows the secret key: {message}");
            message
        }
        other => panic!("expected a keyring error, got {other:?}"),
    }
}

#[tokio::test]
async fn generate_then_unwrap_round_trips_and_the_aad_is_bound() {
    let moto = Moto::start();
    let key_id = moto.symmetric_key().await;
    let store = moto.store(&key_id).await;
    assert_eq!(store.backend(), "aws-kms");
    assert!(store.warnings().is_empty());

    let aad = b"ward:data-key|user/1|0190";
    let (key, wrapped) = store.generate(aad).await.expect("generate");
    assert_eq!(wrapped.version, 1);
    assert!(!wrapped.ciphertext.windows(32).any(|w| w == key.expose()), "the wrapped form hides the key");
    let (other, _) = store.generate(aad).await.expect("generate again");
    assert_ne!(key.expose(), other.expose(), "KMS draws a fresh key each time");

    let back = store.unwrap(&wrapped, aad).await.expect("unwrap");
    assert_eq!(back.expose(), key.expose());
    assert!(matches!(store.unwrap(&wrapped, b"ward:data-key|user/2|0190").await, Err(KeyError::Integrity)));
    assert!(matches!(store.unwrap(&wrapped, b"").await, Err(KeyError::Integrity)), "an empty AAD is another AAD");
}

#[tokio::test]
async fn wrap_then_unwrap_round_trips() {
    let moto = Moto::start();
    let store = moto.store(&moto.symmetric_key().await).await;
    let key = DataKey::from_bytes(&[42; 32]).expect("key");
    for aad in [&b"ward:data-key|dialog/7|x"[..], b""] {
        let wrapped = store.wrap(&key, aad).await.expect("wrap");
        assert_eq!(wrapped.version, 1);
        assert_eq!(store.unwrap(&wrapped, aad).await.expect("unwrap").expose(), key.expose());
    }
    let wrapped = store.wrap(&key, b"here").await.expect("wrap");
    assert!(matches!(store.unwrap(&wrapped, b"there").await, Err(KeyError::Integrity)));
    assert!(matches!(store.unwrap(&wrapped, b"").await, Err(KeyError::Integrity)));
    // Debug names the key, never credentials.
    let shown = format!("{store:?}");
    assert!(shown.contains("AwsKmsKeyStore") && !shown.contains(SECRET_KEY) && !shown.contains(ACCESS_KEY), "{shown}");
}

#[tokio::test]
async fn altered_or_foreign_ciphertexts_are_refused() {
    let moto = Moto::start();
    let store = moto.store(&moto.symmetric_key().await).await;
    let aad = b"ward:data-key|file/1|y";
    let (_, wrapped) = store.generate(aad).await.expect("generate");

    // The last byte is in the encrypted key (moto's blob: key id, IV, tag, then ciphertext).
    let mut altered = wrapped.clone();
    *altered.ciphertext.last_mut().expect("not empty") ^= 1;
    assert!(matches!(store.unwrap(&altered, aad).await, Err(KeyError::Integrity)), "altered ciphertext");
    let mut truncated = wrapped.clone();
    truncated.ciphertext.truncate(truncated.ciphertext.len() - 1);
    assert!(matches!(store.unwrap(&truncated, aad).await, Err(KeyError::Integrity)), "truncated ciphertext");
    let empty = WrappedKey { version: 1, ciphertext: Vec::new() };
    assert!(matches!(store.unwrap(&empty, aad).await, Err(KeyError::Integrity)), "empty ciphertext");
    let later = WrappedKey { version: 2, ..wrapped.clone() };
    assert!(matches!(store.unwrap(&later, aad).await, Err(KeyError::UnknownVersion(2))));

    // Wrapped under another KMS key: Decrypt names the configured key, so KMS refuses it
    // (real KMS: IncorrectKeyException, Integrity; moto: AccessDeniedException, Keyring).
    let foreign = moto.store(&moto.symmetric_key().await).await;
    let (_, theirs) = foreign.generate(aad).await.expect("generate under the other key");
    match store.unwrap(&theirs, aad).await {
        Err(KeyError::Integrity) => {}
        Err(KeyError::Keyring(message)) => assert!(message.contains("Decrypt"), "{message}"),
        other => panic!("a data key wrapped under another KMS key was not refused: {other:?}"),
    }
}

#[tokio::test]
async fn open_refuses_missing_disabled_and_unsuitable_keys() {
    let moto = Moto::start();
    let config = moto.config().await;
    let client = moto.client().await;

    let unknown = "6f1c7e40-0000-4000-8000-000000000000";
    let message = keyring_message(AwsKmsKeyStore::with_config(&config, unknown).await);
    assert!(message.contains(unknown) && message.contains("NotFoundException"), "{message}");
    assert!(message.contains("keys.aws_kms.key_id"), "says what to check: {message}");
    let message = keyring_message(AwsKmsKeyStore::with_config(&config, "alias/ward-missing").await);
    assert!(message.contains("alias/ward-missing"), "{message}");
    let message = keyring_message(AwsKmsKeyStore::with_config(&config, "  ").await);
    assert!(message.contains("keys.aws_kms.key_id"), "{message}");

    let disabled = moto.symmetric_key().await;
    client.disable_key().key_id(&disabled).send().await.expect("DisableKey");
    let message = keyring_message(AwsKmsKeyStore::with_config(&config, &disabled).await);
    assert!(message.contains("disabled") && message.contains(&disabled), "{message}");

    let deleting = moto.symmetric_key().await;
    client.schedule_key_deletion().key_id(&deleting).pending_window_in_days(7).send().await.expect("schedule");
    let message = keyring_message(AwsKmsKeyStore::with_config(&config, &deleting).await);
    assert!(message.contains("scheduled for deletion"), "{message}");

    let signing = moto.create_key(KeySpec::Rsa2048, KeyUsageType::SignVerify).await;
    let message = keyring_message(AwsKmsKeyStore::with_config(&config, &signing).await);
    assert!(message.contains("SIGN_VERIFY") && message.contains("SYMMETRIC_DEFAULT"), "{message}");

    let hmac = moto.create_key(KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac).await;
    let message = keyring_message(AwsKmsKeyStore::with_config(&config, &hmac).await);
    assert!(message.contains("GENERATE_VERIFY_MAC"), "{message}");

    // A key disabled after open shows in the key status (moto still encrypts and decrypts
    // with a disabled key, where KMS answers DisabledException).
    let key_id = moto.symmetric_key().await;
    let store = moto.store(&key_id).await;
    client.disable_key().key_id(&key_id).send().await.expect("DisableKey");
    let message = keyring_message(store.versions().await);
    assert!(message.contains("disabled"), "{message}");
}

#[tokio::test]
async fn an_alias_resolves_to_its_key_at_open() {
    let moto = Moto::start();
    let key_id = moto.symmetric_key().await;
    moto.client()
        .await
        .create_alias()
        .alias_name("alias/ward-master")
        .target_key_id(&key_id)
        .send()
        .await
        .expect("alias");
    let by_alias = moto.store("alias/ward-master").await;
    let by_id = moto.store(&key_id).await;
    let shown = format!("{by_alias:?}");
    assert!(shown.contains(&key_id) && shown.contains("arn:aws:kms"), "the ARN was resolved: {shown}");
    let (key, wrapped) = by_alias.generate(b"aad").await.expect("generate");
    assert_eq!(by_id.unwrap(&wrapped, b"aad").await.expect("same key").expose(), key.expose());
}

#[tokio::test]
async fn one_active_version_dated_by_its_newest_key_material_and_rotation_keeps_old_keys() {
    let moto = Moto::start();
    let key_id = moto.symmetric_key().await;
    let store = moto.store(&key_id).await;
    let created = moto
        .client()
        .await
        .describe_key()
        .key_id(&key_id)
        .send()
        .await
        .expect("DescribeKey")
        .key_metadata()
        .and_then(|m| m.creation_date())
        .map(|d| d.secs())
        .expect("creation date");

    let versions = store.versions().await.expect("versions");
    assert_eq!(versions.len(), 1);
    assert_eq!((versions[0].version, versions[0].state), (1, KeyState::Active));
    assert_eq!(versions[0].created_at.unix_timestamp(), created, "not rotated: the key's creation date");

    let (before, wrapped) = store.generate(b"old").await.expect("generate");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(store.rotate().await.expect("RotateKeyOnDemand"), 1, "still version 1");
    let after = store.versions().await.expect("versions");
    assert_eq!(after.len(), 1);
    assert_eq!((after[0].version, after[0].state), (1, KeyState::Active));
    assert!(after[0].created_at.unix_timestamp() > created, "dated by the rotation: {:?}", after[0].created_at);
    assert!(OffsetDateTime::now_utc() - after[0].created_at < time::Duration::minutes(5));
    assert_eq!(store.unwrap(&wrapped, b"old").await.expect("old data key still unwraps").expose(), before.expose());
    let (fresh, rewrapped) = store.generate(b"new").await.expect("generate after rotation");
    assert_eq!(store.unwrap(&rewrapped, b"new").await.expect("unwrap").expose(), fresh.expose());
}

#[tokio::test]
async fn the_registry_over_kms_rotates_without_a_rewrap() {
    let moto = Moto::start();
    let kms: Arc<dyn KeyStore> = Arc::new(moto.store(&moto.symmetric_key().await).await);
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ward_storage::ConnectOptions {
        target: ward_storage::Target::Sqlite(dir.path().join("ward.db")),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(5),
    };
    let db = ward_storage::open(&options).await.expect("open the database");
    let audit = ward_audit::AuditLog::open(
        db.clone(),
        ward_audit::AuditSettings {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            key_file: dir.path().join("audit/signing.key"),
            checkpoint_file: dir.path().join("audit/checkpoints.jsonl"),
        },
    )
    .await
    .expect("audit");
    let keys = DataKeys::with_cache(db.clone(), kms, CacheSettings::OFF);
    let now = OffsetDateTime::now_utc();
    let mut made = Vec::new();
    for i in 0..3 {
        let (id, key) = keys.get_or_create_alone(&format!("user/{i}"), now).await.expect("create");
        made.push((id, key.expose().to_vec()));
    }
    let record = db.data_key_by_id(made[0].0).await.expect("read").expect("stored");
    assert_eq!(record.key_version, 1);
    assert!(!record.wrapped.windows(32).any(|w| w == made[0].1.as_slice()), "stored only wrapped");

    let ctx = ward_audit::Context::cli(None, now);
    assert_eq!(keys.rotate(&audit, &ctx).await.expect("rotate"), 1);
    let report = keys.rewrap(&audit, &ctx, |_, _| {}).await.expect("rewrap");
    assert_eq!((report.rewrapped, report.skipped), (0, 0), "KMS decrypts old ciphertexts itself");
    let status = keys.status().await.expect("status");
    assert_eq!((status.backend, status.active_version, status.pending_rewrap), ("aws-kms", 1, 0));
    assert_eq!(status.versions.iter().map(|v| v.data_keys).collect::<Vec<_>>(), vec![3]);
    for (id, bytes) in made {
        assert_eq!(keys.by_id(id).await.expect("unwrap through KMS").expose().to_vec(), bytes);
    }
    let rows = db.audit_after(0, 100).await.expect("trail");
    assert_eq!(rows.iter().filter(|r| r.action == "keys.rotate").count(), 1);
}

#[test]
fn open_takes_credentials_from_the_environment_and_region_and_endpoint_from_its_arguments() {
    const TEST: &str = "open_takes_credentials_from_the_environment_and_region_and_endpoint_from_its_arguments";
    if let (Ok(endpoint), Ok(key_id), Ok(role)) =
        (std::env::var(CHILD_ENDPOINT), std::env::var(CHILD_KEY), std::env::var(CHILD_ROLE))
    {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        rt.block_on(async {
            match role.as_str() {
                "round-trip" => {
                    let store = AwsKmsKeyStore::open(&key_id, Some(REGION), Some(&endpoint)).await.expect("open");
                    let (key, wrapped) = store.generate(b"child").await.expect("generate");
                    assert_eq!(store.unwrap(&wrapped, b"child").await.expect("unwrap").expose(), key.expose());
                }
                "no-region" => {
                    let message = keyring_message(AwsKmsKeyStore::open(&key_id, None, Some(&endpoint)).await);
                    assert!(message.contains("no AWS region") && message.contains("keys.aws_kms.region"), "{message}");
                }
                other => panic!("unknown role {other}"),
            }
        });
        return;
    }

    let moto = Moto::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let key_id = rt.block_on(moto.symmetric_key());
    let home = tempfile::tempdir().expect("tempdir");
    for role in ["round-trip", "no-region"] {
        let mut child = Command::new(std::env::current_exe().expect("test binary"));
        child.args([TEST, "--exact", "--nocapture", "--test-threads", "1"]);
        // Only the environment speaks for the AWS chain: no profile, files or instance role.
        for name in [
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_KMS",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ] {
            child.env_remove(name);
        }
        let out: Output = child
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_CONFIG_FILE", home.path().join("config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", home.path().join("credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env(CHILD_ENDPOINT, &moto.endpoint)
            .env(CHILD_KEY, &key_id)
            .env(CHILD_ROLE, role)
            .output()
            .expect("start the child process");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("test result: ok. 1 passed"),
            "the child process ({role}) failed or ran no test ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
