//! The PKCS#11 key store against real SoftHSM2 tokens (no mocks).
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` from the process environment at `C_Initialize`, which
//! happens once per process. This crate forbids `unsafe`, so the tests cannot set the variable
//! in their own (multi-threaded) process. Instead each test makes a temporary token directory
//! with its own `softhsm2.conf`, initializes its tokens with `softhsm2-util`, and runs its body
//! in a child process of this test binary (`<test> --exact`) started with `SOFTHSM2_CONF` set.
//! The child runs only that one test; the parent checks that it ran and passed. A test that
//! plays another node starts a grandchild the same way.
//!
//! Without SoftHSM2 every test fails and says to `apt-get install -y softhsm2`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::{AuthPin, Ulong};
use ward_keys::{DataKey, KeyError, KeyState, KeyStore, Pkcs11KeyStore, WrappedKey};
use zeroize::Zeroizing;

/// Where Debian's softhsm2 package puts the module (the first is a symlink to the second).
const MODULES: &[&str] = &["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"];
const PIN: &str = "1234";
const SO_PIN: &str = "5678";
/// Set in the child that runs a test's body: the test's temporary directory.
const CHILD_DIR: &str = "WARD_PKCS11_TEST_DIR";
/// Set in a grandchild that plays another node: what it does.
const ROLE: &str = "WARD_PKCS11_TEST_ROLE";
/// IV, encrypted data key, tag.
const WRAPPED_LEN: usize = 12 + 32 + 16;

fn softhsm_module() -> PathBuf {
    MODULES.iter().map(PathBuf::from).find(|p| p.exists()).unwrap_or_else(|| {
        panic!(
            "SoftHSM2 is not installed (no PKCS#11 module at {}): the PKCS#11 key store tests need it; run \
             `apt-get install -y softhsm2`",
            MODULES.join(" or ")
        )
    })
}

fn pin(p: &str) -> Zeroizing<String> {
    Zeroizing::new(p.to_string())
}

/// What a test body gets: the module and the name of the test (to start another node).
struct Hsm {
    module: PathBuf,
    test: String,
}

impl Hsm {
    fn open(&self, label: &str) -> Pkcs11KeyStore {
        Pkcs11KeyStore::open(&self.module, label, pin(PIN)).expect("open the PKCS#11 key store")
    }

    /// Runs `role` in a new process of this test binary: another node on the same tokens.
    fn other_node(&self, role: &str) -> String {
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args([self.test.as_str(), "--exact", "--nocapture", "--test-threads", "1"])
            .env(ROLE, role)
            .output()
            .expect("start another node");
        assert_ran(&out, &format!("{} (another node: {role})", self.test));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Runs `body` in a child process whose SoftHSM2 has a fresh token directory holding the
/// tokens `labels` (user PIN 1234, SO PIN 5678).
fn softhsm_test<F, Fut>(test: &str, labels: &[&str], body: F)
where
    F: FnOnce(Hsm) -> Fut,
    Fut: Future<Output = ()>,
{
    let module = softhsm_module();
    if std::env::var_os(CHILD_DIR).is_some() {
        let hsm = Hsm { module, test: test.to_string() };
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
        match std::env::var(ROLE) {
            Ok(role) => rt.block_on(play(&hsm, &role)),
            Err(_) => rt.block_on(body(hsm)),
        }
        return;
    }

    let tmp = tempfile::tempdir().expect("tempdir");
    let tokens = tmp.path().join("tokens");
    std::fs::create_dir(&tokens).expect("token dir");
    let conf = tmp.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
    )
    .expect("write softhsm2.conf");
    for label in labels {
        init_token(&conf, label);
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD_DIR, tmp.path())
        .env_remove(ROLE)
        .output()
        .expect("start the test's child process");
    assert_ran(&out, test);
}

fn init_token(conf: &Path, label: &str) {
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SO_PIN])
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap_or_else(|e| panic!("softhsm2-util cannot be run ({e}): run `apt-get install -y softhsm2`"));
    assert!(
        out.status.success(),
        "softhsm2-util --init-token --label {label} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The child must have run exactly the one test, and it must have passed.
fn assert_ran(out: &Output, test: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "the child process running `{test}` failed or ran no test ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What another node does. `rotate-and-wrap:<label>`: rotates, then wraps the data key
/// `[7; 32]` with AAD `ward:other-node` and prints `WRAPPED <version> <base64>`.
async fn play(hsm: &Hsm, role: &str) {
    let label = role.strip_prefix("rotate-and-wrap:").unwrap_or_else(|| panic!("unknown role {role}"));
    let store = hsm.open(label);
    let version = store.rotate().await.expect("rotate on the other node");
    let wrapped = store.wrap(&DataKey::from_bytes(&[7; 32]).expect("key"), b"ward:other-node").await.expect("wrap");
    assert_eq!(wrapped.version, version);
    println!("WRAPPED {} {}", wrapped.version, B64.encode(&wrapped.ciphertext));
}

/// A session of the test's own on the token `label`, logged in as the user (the login state
/// is shared with the store's session, as PKCS#11 specifies).
fn raw_session(hsm: &Hsm, label: &str) -> Session {
    let ctx = Pkcs11::new(&hsm.module).expect("load the module");
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|&s| ctx.get_token_info(s).expect("token info").label() == label)
        .expect("the token");
    let session = ctx.open_rw_session(slot).expect("open a session");
    match session.login(UserType::User, Some(&AuthPin::from(PIN))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    session
}

/// The objects labelled `label` on the token.
fn find_by_label(session: &Session, label: &str) -> Vec<ObjectHandle> {
    session.find_objects(&[Attribute::Label(label.as_bytes().to_vec())]).expect("find objects")
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn states(versions: &[ward_keys::KeyVersionInfo]) -> Vec<(u32, KeyState)> {
    versions.iter().map(|v| (v.version, v.state)).collect()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn wrap_unwrap_round_trip() {
    softhsm_test("wrap_unwrap_round_trip", &["ward-roundtrip"], |hsm| async move {
        let store = Arc::new(hsm.open("ward-roundtrip"));
        assert_eq!(store.backend(), "pkcs11");
        assert!(store.warnings().is_empty());
        let shown = format!("{store:?}");
        assert!(shown.contains("Pkcs11KeyStore") && shown.contains("ward-roundtrip"), "{shown}");
        assert!(!shown.to_lowercase().contains("pin"), "{shown}");

        let dek = DataKey::generate();
        let wrapped = store.wrap(&dek, b"ward:data-key:user/1").await.expect("wrap");
        assert_eq!(wrapped.version, 1);
        assert_eq!(wrapped.ciphertext.len(), WRAPPED_LEN);
        assert!(!wrapped.ciphertext.windows(32).any(|w| w == dek.expose()));
        let back = store.unwrap(&wrapped, b"ward:data-key:user/1").await.expect("unwrap");
        assert_eq!(back.expose(), dek.expose());

        // A fresh random IV per wrap.
        let again = store.wrap(&dek, b"ward:data-key:user/1").await.expect("wrap again");
        assert_ne!(again.ciphertext[..12], wrapped.ciphertext[..12]);
        assert_ne!(again.ciphertext, wrapped.ciphertext);

        let unknown = WrappedKey { version: 9, ..wrapped.clone() };
        let err = store.unwrap(&unknown, b"ward:data-key:user/1").await.expect_err("unknown version");
        assert!(matches!(err, KeyError::UnknownVersion(9)), "{err}");

        // One session behind a mutex, many callers.
        let tasks: Vec<_> = (0..16u8)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let dek = DataKey::from_bytes(&[i; 32]).expect("key");
                    let aad = format!("ward:data-key:task/{i}");
                    let wrapped = store.wrap(&dek, aad.as_bytes()).await.expect("wrap");
                    assert_eq!(store.unwrap(&wrapped, aad.as_bytes()).await.expect("unwrap").expose(), &[i; 32]);
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
    });
}

#[test]
fn wrong_aad_is_an_integrity_error() {
    softhsm_test("wrong_aad_is_an_integrity_error", &["ward-aad"], |hsm| async move {
        let store = hsm.open("ward-aad");
        let wrapped = store.wrap(&DataKey::generate(), b"ward:data-key:user/1").await.expect("wrap");
        for aad in [&b"ward:data-key:user/2"[..], b"", b"ward:data-key:user/1 "] {
            let err = store.unwrap(&wrapped, aad).await.expect_err("wrong aad");
            assert!(matches!(err, KeyError::Integrity), "{err}");
        }
        // The right AAD still works afterwards.
        store.unwrap(&wrapped, b"ward:data-key:user/1").await.expect("unwrap");
    });
}

#[test]
fn flipped_bits_are_integrity_errors() {
    softhsm_test("flipped_bits_are_integrity_errors", &["ward-bits"], |hsm| async move {
        let store = hsm.open("ward-bits");
        let wrapped = store.wrap(&DataKey::generate(), b"aad").await.expect("wrap");
        // Every single bit: IV, ciphertext and tag.
        for bit in 0..WRAPPED_LEN * 8 {
            let mut bad = wrapped.clone();
            bad.ciphertext[bit / 8] ^= 1 << (bit % 8);
            let err = store.unwrap(&bad, b"aad").await.expect_err("flipped bit");
            assert!(matches!(err, KeyError::Integrity), "bit {bit}: {err}");
        }
        for len in [0, 12, 28, WRAPPED_LEN - 1, WRAPPED_LEN + 1] {
            let mut bad = wrapped.clone();
            bad.ciphertext.resize(len, 0);
            let err = store.unwrap(&bad, b"aad").await.expect_err("wrong length");
            assert!(matches!(err, KeyError::Integrity), "length {len}: {err}");
        }
        store.unwrap(&wrapped, b"aad").await.expect("the untouched key still unwraps");
    });
}

#[test]
fn rotation_makes_v2_active_and_old_keys_still_unwrap() {
    softhsm_test("rotation_makes_v2_active_and_old_keys_still_unwrap", &["ward-rotate"], |hsm| async move {
        let store = hsm.open("ward-rotate");
        assert_eq!(states(&store.versions().await.expect("versions")), [(1, KeyState::Active)]);
        let dek = DataKey::generate();
        let old = store.wrap(&dek, b"a").await.expect("wrap v1");
        assert_eq!(store.rotate().await.expect("rotate"), 2);
        let versions = store.versions().await.expect("versions");
        assert_eq!(states(&versions), [(1, KeyState::DecryptOnly), (2, KeyState::Active)]);
        assert!(versions[0].created_at <= versions[1].created_at);

        let new = store.wrap(&dek, b"a").await.expect("wrap v2");
        assert_eq!((old.version, new.version), (1, 2));
        assert_eq!(store.unwrap(&old, b"a").await.expect("unwrap v1").expose(), dek.expose());
        assert_eq!(store.unwrap(&new, b"a").await.expect("unwrap v2").expose(), dek.expose());
        // The version is bound into the AAD: relabelling fails.
        let moved = WrappedKey { version: 1, ciphertext: new.ciphertext.clone() };
        assert!(matches!(store.unwrap(&moved, b"a").await, Err(KeyError::Integrity)));
        let moved = WrappedKey { version: 2, ciphertext: old.ciphertext.clone() };
        assert!(matches!(store.unwrap(&moved, b"a").await, Err(KeyError::Integrity)));

        assert_eq!(store.rotate().await.expect("rotate again"), 3);
        assert_eq!(store.wrap(&dek, b"a").await.expect("wrap v3").version, 3);
    });
}

#[test]
fn second_store_on_the_same_token_sees_the_rotation() {
    softhsm_test("second_store_on_the_same_token_sees_the_rotation", &["ward-shared"], |hsm| async move {
        let a = hsm.open("ward-shared");
        let b = hsm.open("ward-shared");
        assert_eq!(states(&b.versions().await.expect("versions")), [(1, KeyState::Active)]);
        let dek = DataKey::generate();
        let by_b_v1 = b.wrap(&dek, b"x").await.expect("b wraps v1");

        assert_eq!(a.rotate().await.expect("a rotates"), 2);
        let by_a = a.wrap(&dek, b"x").await.expect("a wraps");
        assert_eq!(by_a.version, 2);
        // b has not listed version 2 yet: unwrap re-lists the token.
        assert_eq!(b.unwrap(&by_a, b"x").await.expect("b unwraps v2").expose(), dek.expose());
        assert_eq!(states(&b.versions().await.expect("versions")), [(1, KeyState::DecryptOnly), (2, KeyState::Active)]);
        assert_eq!(b.wrap(&dek, b"x").await.expect("b wraps").version, 2);
        assert_eq!(a.unwrap(&by_b_v1, b"x").await.expect("a unwraps b's v1").expose(), dek.expose());
    });
}

#[test]
fn rotation_by_another_process_is_seen() {
    softhsm_test("rotation_by_another_process_is_seen", &["ward-nodes"], |hsm| async move {
        let store = hsm.open("ward-nodes");
        let dek = DataKey::generate();
        let mine = store.wrap(&dek, b"x").await.expect("wrap v1");

        let out = hsm.other_node("rotate-and-wrap:ward-nodes");
        // libtest may print "test <name> ... " on the same line as the output.
        let line = out.lines().find_map(|l| l.split_once("WRAPPED ").map(|(_, rest)| rest));
        let line = line.unwrap_or_else(|| panic!("no wrapped key from the other node:\n{out}"));
        let (version, ciphertext) = line.split_once(' ').expect("version and key");
        let theirs = WrappedKey {
            version: version.parse().expect("version"),
            ciphertext: B64.decode(ciphertext.trim()).expect("base64"),
        };
        assert_eq!(theirs.version, 2);

        assert_eq!(store.unwrap(&theirs, b"ward:other-node").await.expect("unwrap v2").expose(), &[7; 32]);
        assert_eq!(
            states(&store.versions().await.expect("versions")),
            [(1, KeyState::DecryptOnly), (2, KeyState::Active)]
        );
        assert_eq!(store.wrap(&dek, b"x").await.expect("wrap").version, 2);
        assert_eq!(store.unwrap(&mine, b"x").await.expect("unwrap v1").expose(), dek.expose());
    });
}

#[test]
fn master_key_is_sensitive_and_never_leaves_the_token() {
    softhsm_test("master_key_is_sensitive_and_never_leaves_the_token", &["ward-sensitive"], |hsm| async move {
        let before = unix_now();
        let store = hsm.open("ward-sensitive");
        let created_at = store.versions().await.expect("versions")[0].created_at;

        let session = raw_session(&hsm, "ward-sensitive");
        let objects = find_by_label(&session, "ward-master-v1");
        assert_eq!(objects.len(), 1, "exactly one object for version 1");
        let key = objects[0];
        let wanted = [
            AttributeType::Class,
            AttributeType::KeyType,
            AttributeType::ValueLen,
            AttributeType::Token,
            AttributeType::Private,
            AttributeType::Sensitive,
            AttributeType::AlwaysSensitive,
            AttributeType::Extractable,
            AttributeType::NeverExtractable,
            AttributeType::Encrypt,
            AttributeType::Decrypt,
            AttributeType::Wrap,
            AttributeType::Id,
        ];
        let attributes = session.get_attributes(key, &wanted).expect("attributes");
        assert_eq!(attributes.len(), wanted.len(), "{attributes:?}");
        let mut id = None;
        for attribute in attributes {
            match attribute {
                Attribute::Class(c) => assert_eq!(c, ObjectClass::SECRET_KEY),
                Attribute::KeyType(t) => assert_eq!(t, KeyType::AES),
                Attribute::ValueLen(len) => assert_eq!(usize::from(len), 32),
                Attribute::Token(v) => assert!(v, "CKA_TOKEN"),
                Attribute::Private(v) => assert!(v, "CKA_PRIVATE"),
                Attribute::Sensitive(v) => assert!(v, "CKA_SENSITIVE"),
                Attribute::AlwaysSensitive(v) => assert!(v, "CKA_ALWAYS_SENSITIVE"),
                Attribute::Extractable(v) => assert!(!v, "CKA_EXTRACTABLE"),
                Attribute::NeverExtractable(v) => assert!(v, "CKA_NEVER_EXTRACTABLE"),
                Attribute::Encrypt(v) => assert!(v, "CKA_ENCRYPT"),
                Attribute::Decrypt(v) => assert!(v, "CKA_DECRYPT"),
                Attribute::Wrap(v) => assert!(!v, "CKA_WRAP"),
                Attribute::Id(v) => id = Some(String::from_utf8(v).expect("utf-8 id")),
                other => panic!("unexpected attribute {other:?}"),
            }
        }
        let id = id.expect("CKA_ID");
        let secs: i64 = id.strip_prefix("ward-master:1:").expect("ward-master:1:<secs>").parse().expect("seconds");
        assert!((before - 1..=unix_now() + 1).contains(&secs), "{id}");
        assert_eq!(created_at.unix_timestamp(), secs);

        // The value cannot be read.
        let info = session.get_attribute_info(key, &[AttributeType::Value]).expect("attribute info");
        assert!(matches!(info.as_slice(), [AttributeInfo::Sensitive]), "{info:?}");
        let value = session.get_attributes(key, &[AttributeType::Value]).expect("get value");
        assert!(value.iter().all(|a| !matches!(a, Attribute::Value(_))), "CKA_VALUE was returned");
        // Nor changed: the key is not modifiable.
        assert!(session.update_attributes(key, &[Attribute::Extractable(true)]).is_err());
        assert!(session.update_attributes(key, &[Attribute::Label(b"ward-master-v9".to_vec())]).is_err());
        drop(session);
        store.wrap(&DataKey::generate(), b"still works").await.expect("wrap after the raw session closed");
    });
}

#[test]
fn wrong_pin_is_refused() {
    softhsm_test("wrong_pin_is_refused", &["ward-pin"], |hsm| async move {
        let err = Pkcs11KeyStore::open(&hsm.module, "ward-pin", pin("wrong-pin-98765")).expect_err("wrong PIN");
        let message = err.to_string();
        assert!(matches!(err, KeyError::Keyring(_)), "{message}");
        assert!(
            message.contains("login to token 'ward-pin' failed") && message.contains("wrong WARD_KEYS_PKCS11_PIN"),
            "{message}"
        );
        assert!(!message.contains("wrong-pin-98765"), "{message}");

        let err = Pkcs11KeyStore::open(&hsm.module, "ward-pin", pin("")).expect_err("empty PIN");
        assert!(err.to_string().contains("WARD_KEYS_PKCS11_PIN is empty"), "{err}");

        // The right PIN works, and the token got no master key from the failed attempts.
        let store = hsm.open("ward-pin");
        assert_eq!(states(&store.versions().await.expect("versions")), [(1, KeyState::Active)]);
        // The token is now logged in for this process; a wrong PIN is still refused.
        let err = Pkcs11KeyStore::open(&hsm.module, "ward-pin", pin("wrong-pin-98765")).expect_err("wrong PIN");
        assert!(err.to_string().contains("wrong WARD_KEYS_PKCS11_PIN"), "{err}");
        hsm.open("ward-pin");
    });
}

#[test]
fn unknown_token_label_is_refused() {
    softhsm_test("unknown_token_label_is_refused", &["ward-a", "ward-b"], |hsm| async move {
        let err = Pkcs11KeyStore::open(&hsm.module, "ward-missing", pin(PIN)).expect_err("unknown label");
        let message = err.to_string();
        assert!(matches!(err, KeyError::Keyring(_)), "{message}");
        assert!(
            message.contains("no PKCS#11 token labelled 'ward-missing'")
                && message.contains("'ward-a'")
                && message.contains("'ward-b'"),
            "{message}"
        );

        let err = Pkcs11KeyStore::open(Path::new("/nonexistent/libpkcs11.so"), "ward-a", pin(PIN))
            .expect_err("missing module");
        assert!(err.to_string().contains("/nonexistent/libpkcs11.so"), "{err}");
        let err = Pkcs11KeyStore::open(&hsm.module, "", pin(PIN)).expect_err("empty label");
        assert!(err.to_string().contains("token_label"), "{err}");
    });
}

#[test]
fn reopening_after_drop_keeps_the_versions() {
    softhsm_test("reopening_after_drop_keeps_the_versions", &["ward-reopen"], |hsm| async move {
        let store = hsm.open("ward-reopen");
        let dek = DataKey::generate();
        let w1 = store.wrap(&dek, b"a").await.expect("wrap");
        store.rotate().await.expect("rotate");
        let w2 = store.wrap(&dek, b"a").await.expect("wrap");
        let before = store.versions().await.expect("versions");
        drop(store);

        let reopened = hsm.open("ward-reopen");
        let after = reopened.versions().await.expect("versions");
        assert_eq!(
            after.iter().map(|v| (v.version, v.state, v.created_at)).collect::<Vec<_>>(),
            before.iter().map(|v| (v.version, v.state, v.created_at)).collect::<Vec<_>>()
        );
        assert_eq!(after.len(), 2);
        assert_eq!(reopened.unwrap(&w1, b"a").await.expect("v1").expose(), dek.expose());
        assert_eq!(reopened.unwrap(&w2, b"a").await.expect("v2").expose(), dek.expose());
        assert_eq!(reopened.wrap(&dek, b"a").await.expect("wrap").version, 2);
    });
}

#[test]
fn store_logs_in_again_after_the_token_logs_out() {
    softhsm_test("store_logs_in_again_after_the_token_logs_out", &["ward-logout"], |hsm| async move {
        let store = hsm.open("ward-logout");
        let dek = DataKey::generate();
        let wrapped = store.wrap(&dek, b"a").await.expect("wrap");

        // Logging out any session logs out every session of this process on the token.
        let session = raw_session(&hsm, "ward-logout");
        session.logout().expect("logout");
        let again = store.wrap(&dek, b"a").await.expect("wrap after logout");
        assert_eq!(again.version, 1);

        session.logout().expect("logout");
        assert_eq!(store.unwrap(&wrapped, b"a").await.expect("unwrap after logout").expose(), dek.expose());

        // A logged-out listing would see no private key at all; the store must not take that
        // for an empty token.
        session.logout().expect("logout");
        assert_eq!(states(&store.versions().await.expect("versions")), [(1, KeyState::Active)]);
        session.logout().expect("logout");
        assert_eq!(store.rotate().await.expect("rotate"), 2);
    });
}

#[test]
fn duplicate_version_from_a_concurrent_rotation_never_wraps() {
    softhsm_test("duplicate_version_from_a_concurrent_rotation_never_wraps", &["ward-clash"], |hsm| async move {
        let store = hsm.open("ward-clash");
        assert_eq!(store.rotate().await.expect("rotate"), 2);
        let dek = DataKey::generate();
        let mine = store.wrap(&dek, b"x").await.expect("wrap with my v2");
        assert_eq!(mine.version, 2);

        // Another node created its own version 2 at the same moment and wrapped with it.
        let session = raw_session(&hsm, "ward-clash");
        let theirs_key = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(Ulong::try_from(32usize).expect("32")),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(b"ward-master-v2".to_vec()),
                    Attribute::Id(format!("ward-master:2:{}", unix_now()).into_bytes()),
                ],
            )
            .expect("generate a clashing version 2");
        let mut iv = [9u8; 12];
        let aad = b"ward:pkcs11-wrap:v1|2|x";
        let params = GcmParams::new(&mut iv, aad, Ulong::try_from(128usize).expect("128")).expect("gcm params");
        let sealed = session.encrypt(&Mechanism::AesGcm(params), theirs_key, &[5; 32]).expect("encrypt");
        let theirs = WrappedKey { version: 2, ciphertext: [&iv[..], &sealed].concat() };
        assert_eq!(find_by_label(&session, "ward-master-v2").len(), 2);

        // Version 2 is ambiguous now: it unwraps with either key, but never wraps.
        assert_eq!(
            states(&store.versions().await.expect("versions")),
            [(1, KeyState::Active), (2, KeyState::DecryptOnly)]
        );
        assert_eq!(store.unwrap(&mine, b"x").await.expect("unwrap mine").expose(), dek.expose());
        assert_eq!(store.unwrap(&theirs, b"x").await.expect("unwrap theirs").expose(), &[5; 32]);
        assert!(matches!(store.unwrap(&theirs, b"y").await, Err(KeyError::Integrity)));
        assert_eq!(store.wrap(&dek, b"x").await.expect("wrap").version, 1);

        // The next rotation settles it.
        assert_eq!(store.rotate().await.expect("rotate"), 3);
        assert_eq!(store.wrap(&dek, b"x").await.expect("wrap").version, 3);
        assert_eq!(
            states(&store.versions().await.expect("versions")),
            [(1, KeyState::DecryptOnly), (2, KeyState::DecryptOnly), (3, KeyState::Active)]
        );
    });
}
