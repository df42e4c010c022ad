//! The PKCS#11 key store ("pkcs11"): Ward's master keys live inside an HSM token and never
//! leave it. Data keys are wrapped and unwrapped by the token itself.
//!
//! **What lives in the token.** Each master-key version is one AES-256 secret key generated
//! inside the token (`C_GenerateKey`, `CKM_AES_KEY_GEN`) as a token object that is private,
//! sensitive, not extractable, not copyable and not modifiable, usable only to encrypt and
//! decrypt. Its value can't be read, wrapped out or copied, even by Ward. Ward keeps only
//! object handles and each version's number and creation time.
//!
//! **Labels and ids.** Version `N` has `CKA_LABEL = "ward-master-vN"` and
//! `CKA_ID = "ward-master:N:<created, unix seconds>"`, so the versions and their creation
//! times are read back from the token (by [`KeyStore::versions`], on open, and whenever a
//! version is missing from the handle cache). The newest version is the active one. Other
//! AES keys on the token are ignored; an object labelled `ward-master-v…` with a malformed
//! id is an error, never skipped in silence.
//!
//! **Wrapping.** A data key is encrypted inside the token with `CKM_AES_GCM`: a fresh random
//! 96-bit IV per wrap, drawn on the host from AWS-LC's CSPRNG, a 128-bit tag, and the AAD
//! `ward:pkcs11-wrap:v1|<version>|<caller's aad>`, so a wrapped key can be moved neither to
//! another place (caller AAD) nor to another version. Stored ciphertext:
//! `IV (12 bytes) || ciphertext (32 bytes) || tag (16 bytes)`. A failed decryption (wrong AAD,
//! altered bytes, wrong key) is [`KeyError::Integrity`]; the plaintext, when there is one,
//! goes straight into a zeroizing buffer and becomes a [`DataKey`].
//!
//! **IV limit.** NIST SP 800-38D allows 2^32 encryptions with random 96-bit IVs under one
//! key. A master key wraps only data keys (one per dialog, file or user, plus rewraps after a
//! rotation), a number that stays many orders of magnitude below that before the next
//! rotation (at least yearly).
//!
//! **Multi-node.** Every node points at the same token (the same HSM partition or cluster).
//! A rotation made by another node or process is picked up by [`KeyStore::versions`], by
//! [`KeyStore::unwrap`] when it meets a version it doesn't know (it re-lists the token
//! before answering [`KeyError::UnknownVersion`]), and by [`KeyStore::wrap`], which re-lists
//! the token when its listing is older than a minute. If two nodes rotate at the same moment
//! and both create version `N`, nothing is destroyed (one of them may already have wrapped
//! with its key): unwrap tries every object of a version, a version held by more than one
//! object is never used to wrap, and the rotating node that sees the clash rotates again.
//!
//! **Sessions and threads.** One read-write session per store, logged in as the user, kept
//! behind a mutex; the async methods run their PKCS#11 calls on tokio's blocking pool. If
//! the session is closed or logged out under the store (an HSM restart, a network HSM
//! reconnecting), the store opens a new session, logs in again and retries once. The module
//! is loaded and initialized (`C_Initialize` with OS locking) once per process and path and
//! stays loaded for the life of the process. Within one process the login state of a token
//! is shared by all its sessions, as PKCS#11 specifies; a second store opened with another
//! PIN than the one that logged in is refused all the same.
//!
//! **CI.** SoftHSM2 (`/usr/lib/softhsm/libsofthsm2.so`, Debian package `softhsm2`) is the
//! test peer: `tests/pkcs11.rs` runs every case against real SoftHSM2 tokens.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::aead::{DataKey, fill_random};
use crate::error::KeyError;
use crate::store::{KeyState, KeyStore, KeyVersionInfo, WrappedKey};

/// `CKA_LABEL` of version N: this prefix, then N.
const LABEL_PREFIX: &str = "ward-master-v";
/// `CKA_ID` of version N: this prefix, then `N:<created unix seconds>`.
const ID_PREFIX: &str = "ward-master:";
/// The start of the AAD of every wrap; the version and the caller's AAD follow.
const WRAP_AAD_PREFIX: &[u8] = b"ward:pkcs11-wrap:v1|";
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
const TAG_BITS: usize = 128;
const KEY_LEN: usize = 32;
/// Length of a wrapped data key: IV, encrypted key, tag.
const WRAPPED_LEN: usize = IV_LEN + KEY_LEN + TAG_LEN;
/// `wrap` re-lists the token when its listing is older than this, to follow rotations made
/// by other nodes.
const REFRESH_AFTER: Duration = Duration::from_secs(60);
/// Attempts at creating a version that no other node created at the same moment.
const CREATE_ATTEMPTS: u32 = 5;
/// Where operators put the PIN; named in error messages.
const PIN_ENV: &str = "WARD_KEYS_PKCS11_PIN";

/// A key store whose master keys are AES-256 keys inside a PKCS#11 token. See the module
/// docs.
pub struct Pkcs11KeyStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pkcs11KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = &self.inner.token;
        let mut out = f.debug_struct("Pkcs11KeyStore");
        out.field("module", &token.module).field("token_label", &token.label).field("slot", &token.slot.id());
        // `try_lock`: formatting must never wait for (or deadlock with) a PKCS#11 call.
        if let Ok(conn) = self.inner.conn.try_lock() {
            out.field("active_version", &conn.listing.active().map(|(v, _)| v))
                .field("versions", &conn.listing.versions.len());
        }
        out.finish_non_exhaustive()
    }
}

impl Pkcs11KeyStore {
    /// Loads the PKCS#11 `module`, finds the token labelled `token_label`, opens a read-write
    /// session and logs in as the user with `pin`. Creates master key version 1 inside the
    /// token when it holds no Ward master key yet. Runs PKCS#11 calls on the calling thread.
    pub fn open(module: &Path, token_label: &str, pin: Zeroizing<String>) -> Result<Self, KeyError> {
        if token_label.is_empty() {
            return Err(KeyError::Keyring(
                "the PKCS#11 token label is empty: set keys.pkcs11.token_label to the label of the token \
                 holding Ward's master keys"
                    .into(),
            ));
        }
        if pin.is_empty() {
            return Err(KeyError::Keyring(format!(
                "{PIN_ENV} is empty or unset: the user PIN of PKCS#11 token '{token_label}' is required"
            )));
        }
        let (canonical, ctx) = load_module(module)?;
        let slot = find_token(&ctx, module, token_label)?;
        let token = Token { ctx, module: canonical, label: token_label.to_string(), slot, pin };
        let session = token.open_session().map_err(|e| token.error("opening a session", e))?;
        let inner = Inner { token, conn: Mutex::new(Conn { session, listing: Listing::default() }) };
        let created = inner.run("reading the master keys", |inner, conn| {
            inner.refresh(conn)?;
            if conn.listing.versions.is_empty() { inner.create_version(conn).map(Some) } else { Ok(None) }
        })?;
        if let Some(version) = created {
            tracing::info!(token = %inner.token.label, version, "created master key version {version} inside the PKCS#11 token");
        }
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Runs `op` on tokio's blocking pool (PKCS#11 calls block), or right here when there is
    /// no tokio runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Inner) -> Result<T, KeyError> + Send + 'static,
    ) -> Result<T, KeyError> {
        let inner = Arc::clone(&self.inner);
        if tokio::runtime::Handle::try_current().is_err() {
            return op(&inner);
        }
        match tokio::task::spawn_blocking(move || op(&inner)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(KeyError::Keyring(format!("a PKCS#11 call did not complete: {e}"))),
        }
    }
}

#[async_trait::async_trait]
impl KeyStore for Pkcs11KeyStore {
    fn backend(&self) -> &'static str {
        "pkcs11"
    }

    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    async fn wrap(&self, key: &DataKey, aad: &[u8]) -> Result<WrappedKey, KeyError> {
        let key = key.clone();
        let aad = aad.to_vec();
        self.blocking(move |inner| inner.run("wrapping a data key", |inner, conn| inner.wrap(conn, &key, &aad))).await
    }

    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<DataKey, KeyError> {
        let wrapped = wrapped.clone();
        let aad = aad.to_vec();
        self.blocking(move |inner| inner.run("unwrapping a data key", |inner, conn| inner.unwrap(conn, &wrapped, &aad)))
            .await
    }

    async fn versions(&self) -> Result<Vec<KeyVersionInfo>, KeyError> {
        self.blocking(|inner| {
            inner.run("listing the master keys", |inner, conn| {
                inner.refresh(conn)?;
                Ok(conn.listing.infos())
            })
        })
        .await
    }

    async fn rotate(&self) -> Result<u32, KeyError> {
        let version = self
            .blocking(|inner| inner.run("creating a master key version", |inner, conn| inner.create_version(conn)))
            .await?;
        tracing::info!(token = %self.inner.token.label, version, "rotated the master key inside the PKCS#11 token: new data keys are wrapped with the new version");
        Ok(version)
    }
}

// ---------------------------------------------------------------------------------------------
// The module, the token and the session.

/// Loads and initializes a module once per process and path; later stores share it. The
/// context is never finalized: a module must not be initialized twice in one process.
fn load_module(path: &Path) -> Result<(PathBuf, Pkcs11), KeyError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        KeyError::Keyring(format!(
            "the PKCS#11 module {} cannot be opened ({e}): check keys.pkcs11.module and install the HSM \
             vendor's PKCS#11 library (for SoftHSM2: apt-get install softhsm2)",
            path.display()
        ))
    })?;
    let mut modules = lock(MODULES.get_or_init(Mutex::default));
    if let Some(ctx) = modules.get(&canonical) {
        return Ok((canonical, ctx.clone()));
    }
    let ctx = Pkcs11::new(&canonical).map_err(|e| {
        KeyError::Keyring(format!("the PKCS#11 module {} could not be loaded: {e}", canonical.display()))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Already initialized by other code in this process: the library state is shared.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(KeyError::Keyring(format!(
                "the PKCS#11 module {} failed to initialize: {}",
                canonical.display(),
                describe(&e)
            )));
        }
    }
    modules.insert(canonical.clone(), ctx.clone());
    Ok((canonical, ctx))
}

/// The one initialized token labelled `label`.
fn find_token(ctx: &Pkcs11, module: &Path, label: &str) -> Result<Slot, KeyError> {
    let listing_failed = |e: CkError| {
        KeyError::Keyring(format!("listing the tokens of PKCS#11 module {} failed: {}", module.display(), describe(&e)))
    };
    let mut labels = Vec::new();
    let mut matches = Vec::new();
    for slot in ctx.get_slots_with_token().map_err(listing_failed)? {
        let info = ctx.get_token_info(slot).map_err(listing_failed)?;
        if !info.token_initialized() {
            continue;
        }
        labels.push(format!("'{}'", info.label()));
        if info.label() == label {
            matches.push((slot, info));
        }
    }
    match matches.as_slice() {
        [] if labels.is_empty() => Err(KeyError::Keyring(format!(
            "no PKCS#11 token labelled '{label}': module {} shows no initialized token at all",
            module.display()
        ))),
        [] => Err(KeyError::Keyring(format!(
            "no PKCS#11 token labelled '{label}' in module {}; the tokens found are labelled {} \
             (check keys.pkcs11.token_label)",
            module.display(),
            labels.join(", ")
        ))),
        [(slot, info)] => {
            if info.user_pin_locked() {
                return Err(KeyError::Keyring(format!(
                    "the user PIN of PKCS#11 token '{label}' is locked after too many wrong attempts; the token's \
                     security officer must unlock it"
                )));
            }
            if !info.user_pin_initialized() {
                return Err(KeyError::Keyring(format!(
                    "PKCS#11 token '{label}' has no user PIN yet; the token's security officer must set one"
                )));
            }
            Ok(*slot)
        }
        several => Err(KeyError::Keyring(format!(
            "{} PKCS#11 tokens are labelled '{label}' in module {} (serial numbers {}); give the token holding \
             Ward's master keys a unique label",
            several.len(),
            module.display(),
            several.iter().map(|(_, i)| format!("'{}'", i.serial_number())).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// What identifies the token and logs in to it.
struct Token {
    ctx: Pkcs11,
    /// Canonical path of the module.
    module: PathBuf,
    label: String,
    slot: Slot,
    pin: Zeroizing<String>,
}

impl Token {
    /// A new read-write session, logged in as the user.
    fn open_session(&self) -> Result<Session, OpError> {
        let session = self.ctx.open_rw_session(self.slot)?;
        self.login(&session)?;
        Ok(session)
    }

    /// Logs the user in, or checks the PIN against the one this process logged in with when
    /// the token is already logged in (PKCS#11 login state is per process and token).
    fn login(&self, session: &Session) -> Result<(), OpError> {
        let memo_key = (self.module.clone(), self.slot.id());
        match session.login(UserType::User, Some(&AuthPin::from(self.pin.as_str()))) {
            Ok(()) => {
                login_memo().record(memo_key, self.pin.as_bytes());
                Ok(())
            }
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                match login_memo().matches(&memo_key, self.pin.as_bytes()) {
                    Some(true) => Ok(()),
                    Some(false) => Err(OpError::Key(KeyError::Keyring(format!(
                        "PKCS#11 login to token '{}' failed: wrong {PIN_ENV} (this process is already logged in to \
                         the token with another PIN)",
                        self.label
                    )))),
                    None => {
                        tracing::warn!(token = %self.label, "the PKCS#11 token was already logged in by other code in this process; the PIN could not be checked");
                        Ok(())
                    }
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Logs in again if the session has fallen back to a public session.
    fn ensure_logged_in(&self, session: &Session) -> Result<(), OpError> {
        match session.get_session_info()?.session_state() {
            SessionState::RwUser | SessionState::RoUser => Ok(()),
            _ => self.login(session),
        }
    }

    /// The operator's error for a failed step.
    fn error(&self, what: &str, e: OpError) -> KeyError {
        let e = match e {
            OpError::Key(e) => return e,
            OpError::Token(e) => e,
        };
        let label = &self.label;
        let CkError::Pkcs11(rv, function) = &e else {
            return KeyError::Keyring(format!("PKCS#11 token '{label}': {what} failed: {}", describe(&e)));
        };
        match rv {
            RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange => KeyError::Keyring(format!(
                "PKCS#11 login to token '{label}' failed: wrong {PIN_ENV} (the token refused the PIN; repeated \
                 failures lock the token)"
            )),
            RvError::PinLocked => KeyError::Keyring(format!(
                "PKCS#11 login to token '{label}' failed: the user PIN is locked after too many wrong attempts; \
                 the token's security officer must unlock it"
            )),
            RvError::PinExpired => KeyError::Keyring(format!(
                "PKCS#11 login to token '{label}' failed: the user PIN has expired; set a new one on the token \
                 and in {PIN_ENV}"
            )),
            RvError::UserPinNotInitialized => KeyError::Keyring(format!(
                "PKCS#11 token '{label}' has no user PIN yet; the token's security officer must set one"
            )),
            RvError::MechanismInvalid | RvError::MechanismParamInvalid => KeyError::Crypto(format!(
                "PKCS#11 token '{label}': {what} failed: the token does not support AES-256 keys with AES-GCM \
                 (96-bit IV, 128-bit tag) as Ward needs ({})",
                describe(&e)
            )),
            RvError::DeviceError
            | RvError::DeviceRemoved
            | RvError::DeviceMemory
            | RvError::TokenNotPresent
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed => KeyError::Keyring(format!(
                "PKCS#11 token '{label}' is not reachable or failed: {what} failed: {}",
                describe(&e)
            )),
            _ if matches!(
                function,
                Function::Encrypt | Function::EncryptInit | Function::Decrypt | Function::DecryptInit
            ) =>
            {
                KeyError::Crypto(format!("PKCS#11 token '{label}': {what} failed: {}", describe(&e)))
            }
            _ => KeyError::Keyring(format!("PKCS#11 token '{label}': {what} failed: {}", describe(&e))),
        }
    }
}

/// A cryptoki error for an operator: the function, the return value and its meaning.
fn describe(e: &CkError) -> String {
    match e {
        // `Function`'s Debug is the bare name, e.g. `Login`.
        CkError::Pkcs11(rv, function) => format!("C_{function:?} returned {rv:?}: {rv}"),
        other => other.to_string(),
    }
}

/// Which PIN logged this process in to which token, as an HMAC under a per-process random
/// key (not the PIN itself).
struct LoginMemo {
    key: aws_lc_rs::hmac::Key,
    tags: Mutex<HashMap<(PathBuf, u64), aws_lc_rs::hmac::Tag>>,
}

fn login_memo() -> &'static LoginMemo {
    static MEMO: OnceLock<LoginMemo> = OnceLock::new();
    MEMO.get_or_init(|| {
        let mut key = Zeroizing::new([0u8; 32]);
        fill_random(key.as_mut()).expect("the system random number generator must not fail");
        LoginMemo { key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_ref()), tags: Mutex::default() }
    })
}

impl LoginMemo {
    fn record(&self, token: (PathBuf, u64), pin: &[u8]) {
        let tag = aws_lc_rs::hmac::sign(&self.key, pin);
        lock(&self.tags).insert(token, tag);
    }

    /// `None` when this process has no record of logging in to the token.
    fn matches(&self, token: &(PathBuf, u64), pin: &[u8]) -> Option<bool> {
        let tags = lock(&self.tags);
        let tag = tags.get(token)?;
        Some(aws_lc_rs::hmac::verify(&self.key, pin, tag.as_ref()).is_ok())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Master-key versions and the operations.

/// A failed step: a cryptoki error (which may call for a new session) or a final answer.
enum OpError {
    Token(CkError),
    Key(KeyError),
}

impl From<CkError> for OpError {
    fn from(e: CkError) -> Self {
        OpError::Token(e)
    }
}

impl From<KeyError> for OpError {
    fn from(e: KeyError) -> Self {
        OpError::Key(e)
    }
}

impl OpError {
    /// The session, its login or an object handle is gone: a new session and a fresh listing
    /// may fix it.
    fn session_lost(&self) -> bool {
        matches!(
            self,
            OpError::Token(CkError::Pkcs11(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::UserNotLoggedIn
                    | RvError::KeyHandleInvalid
                    | RvError::ObjectHandleInvalid
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent,
                _
            ))
        )
    }
}

/// One object holding a master-key version.
#[derive(Clone, Copy)]
struct Master {
    handle: ObjectHandle,
    created_at: OffsetDateTime,
}

/// The master keys as last read from the token.
struct Listing {
    /// Version -> its objects; more than one only after two nodes created the same version.
    versions: BTreeMap<u32, Vec<Master>>,
    at: Instant,
}

impl Default for Listing {
    fn default() -> Self {
        Self { versions: BTreeMap::new(), at: Instant::now() }
    }
}

impl Listing {
    /// The version that wraps: the newest held by exactly one object.
    fn active(&self) -> Option<(u32, ObjectHandle)> {
        self.versions.iter().rev().find_map(|(&v, objects)| match objects.as_slice() {
            [only] => Some((v, only.handle)),
            _ => None,
        })
    }

    fn newest(&self) -> u32 {
        self.versions.keys().next_back().copied().unwrap_or(0)
    }

    fn count(&self, version: u32) -> usize {
        self.versions.get(&version).map_or(0, Vec::len)
    }

    fn infos(&self) -> Vec<KeyVersionInfo> {
        let active = self.active().map(|(v, _)| v);
        self.versions
            .iter()
            .filter_map(|(&version, objects)| {
                let created_at = objects.iter().map(|m| m.created_at).min()?;
                let state = if Some(version) == active { KeyState::Active } else { KeyState::DecryptOnly };
                Some(KeyVersionInfo { version, state, created_at })
            })
            .collect()
    }
}

/// The session and the handle cache, used under one lock.
struct Conn {
    session: Session,
    listing: Listing,
}

struct Inner {
    token: Token,
    conn: Mutex<Conn>,
}

impl Inner {
    /// Runs `op` with the session; if the session was lost, opens a new one, logs in, re-lists
    /// the token and runs `op` once more.
    fn run<T>(&self, what: &str, mut op: impl FnMut(&Self, &mut Conn) -> Result<T, OpError>) -> Result<T, KeyError> {
        let mut conn = lock(&self.conn);
        match op(self, &mut conn) {
            Err(e) if e.session_lost() => {
                tracing::warn!(token = %self.token.label, error = %self.token.error(what, e), "the PKCS#11 session was lost; opening a new one");
                self.recover(&mut conn).map_err(|e| self.token.error("reopening the session", e))?;
                op(self, &mut conn).map_err(|e| self.token.error(what, e))
            }
            result => result.map_err(|e| self.token.error(what, e)),
        }
    }

    fn recover(&self, conn: &mut Conn) -> Result<(), OpError> {
        if conn.session.get_session_info().is_err() {
            let old = std::mem::replace(&mut conn.session, self.token.open_session()?);
            // It is gone already; closing it can only fail.
            let _ = old.close();
        }
        self.token.ensure_logged_in(&conn.session)?;
        self.refresh(conn)
    }

    /// Re-reads the master keys from the token. A version this store knew must still be there.
    fn refresh(&self, conn: &mut Conn) -> Result<(), OpError> {
        let fresh = self.list(&conn.session)?;
        for (&version, objects) in &conn.listing.versions {
            // A version held by several objects may be one a clashing node gave up on.
            if objects.len() == 1 && !fresh.versions.contains_key(&version) {
                return Err(OpError::Key(KeyError::Keyring(format!(
                    "master key version {version} is no longer on PKCS#11 token '{}' (was it destroyed, or the \
                     token replaced?): data keys wrapped with it cannot be unwrapped; restore the token from its \
                     backup (if it was destroyed on purpose after every data key was rewrapped, restart Ward to \
                     accept the token as it is)",
                    self.token.label
                ))));
            }
        }
        conn.listing = fresh;
        Ok(())
    }

    /// All `ward-master-v*` AES keys on the token.
    fn list(&self, session: &Session) -> Result<Listing, OpError> {
        // A logged-out session sees no private object: it would list no version at all.
        self.token.ensure_logged_in(session)?;
        let template =
            [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::KeyType(KeyType::AES), Attribute::Token(true)];
        let wanted = [
            AttributeType::Label,
            AttributeType::Id,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::ValueLen,
        ];
        let mut versions: BTreeMap<u32, Vec<Master>> = BTreeMap::new();
        for handle in session.find_objects(&template)? {
            let (mut label, mut id, mut sensitive, mut extractable, mut len) = (None, None, None, None, None);
            for attribute in session.get_attributes(handle, &wanted)? {
                match attribute {
                    Attribute::Label(v) => label = Some(v),
                    Attribute::Id(v) => id = Some(v),
                    Attribute::Sensitive(v) => sensitive = Some(v),
                    Attribute::Extractable(v) => extractable = Some(v),
                    Attribute::ValueLen(v) => len = Some(usize::from(v)),
                    _ => {}
                }
            }
            let Some(label) = label.filter(|l| l.starts_with(LABEL_PREFIX.as_bytes())) else { continue };
            let shown_label = String::from_utf8_lossy(&label).into_owned();
            let Some(version) = parse_label(&label) else {
                tracing::warn!(token = %self.token.label, label = %shown_label, "ignoring a key whose label looks like a Ward master key but is not ward-master-v<N>");
                continue;
            };
            let created = id
                .as_deref()
                .and_then(parse_id)
                .filter(|&(v, _)| v == version)
                .and_then(|(_, secs)| OffsetDateTime::from_unix_timestamp(secs).ok());
            let Some(created_at) = created else {
                return Err(OpError::Key(KeyError::Keyring(format!(
                    "the key '{shown_label}' on PKCS#11 token '{}' has CKA_ID {:?}, not \
                     'ward-master:{version}:<created unix seconds>': fix or remove that object",
                    self.token.label,
                    id.as_deref().map(String::from_utf8_lossy).unwrap_or_default()
                ))));
            };
            if sensitive != Some(true) || extractable != Some(false) || len != Some(KEY_LEN) {
                tracing::warn!(token = %self.token.label, label = %shown_label, ?sensitive, ?extractable, value_len = ?len, "a Ward master key on the PKCS#11 token is not a sensitive, non-extractable AES-256 key");
            }
            versions.entry(version).or_default().push(Master { handle, created_at });
        }
        for (version, objects) in &versions {
            if objects.len() > 1 {
                tracing::warn!(token = %self.token.label, version, objects = objects.len(), "master key version {version} exists more than once (two nodes rotated at the same moment); it unwraps but never wraps");
            }
        }
        Ok(Listing { versions, at: Instant::now() })
    }

    /// Generates the next version inside the token. If another node created the same version
    /// at the same moment, both keys stay (either may have wrapped already) and this node
    /// tries the next version.
    fn create_version(&self, conn: &mut Conn) -> Result<u32, OpError> {
        for attempt in 1..=CREATE_ATTEMPTS {
            self.refresh(conn)?;
            let version =
                conn.listing.newest().checked_add(1).ok_or_else(|| {
                    KeyError::Keyring("no master key version number is left on the PKCS#11 token".into())
                })?;
            let created = OffsetDateTime::now_utc().unix_timestamp();
            generate_master(&conn.session, version, created)?;
            self.refresh(conn)?;
            match conn.listing.count(version) {
                1 => return Ok(version),
                0 => {
                    return Err(OpError::Key(KeyError::Keyring(format!(
                        "master key version {version} was generated on PKCS#11 token '{}' but cannot be found there",
                        self.token.label
                    ))));
                }
                _ => {
                    tracing::warn!(token = %self.token.label, version, attempt, "another node created master key version {version} at the same moment; creating the next version");
                    let mut jitter = [0u8; 1];
                    fill_random(&mut jitter)?;
                    std::thread::sleep(Duration::from_millis(10 + u64::from(jitter[0])));
                }
            }
        }
        Err(OpError::Key(KeyError::Keyring(format!(
            "could not create a new master key version on PKCS#11 token '{}': other nodes kept creating the same \
             version at the same moment; try again",
            self.token.label
        ))))
    }

    fn wrap(&self, conn: &mut Conn, key: &DataKey, aad: &[u8]) -> Result<WrappedKey, OpError> {
        if conn.listing.at.elapsed() >= REFRESH_AFTER {
            self.refresh(conn)?;
        }
        let (version, handle) = conn.listing.active().ok_or_else(|| {
            KeyError::Keyring(format!("PKCS#11 token '{}' holds no usable Ward master key", self.token.label))
        })?;
        let full_aad = wrap_aad(version, aad);
        let mut iv = [0u8; IV_LEN];
        fill_random(&mut iv)?;
        let params = GcmParams::new(&mut iv, &full_aad, Ulong::try_from(TAG_BITS)?)?;
        let sealed = conn.session.encrypt(&Mechanism::AesGcm(params), handle, key.expose())?;
        if sealed.len() != KEY_LEN + TAG_LEN {
            return Err(OpError::Key(KeyError::Crypto(format!(
                "PKCS#11 token '{}' returned {} bytes for an AES-GCM encryption of a 32-byte key (expected {})",
                self.token.label,
                sealed.len(),
                KEY_LEN + TAG_LEN
            ))));
        }
        // `iv` now holds the IV the token used (a token may write its own).
        let mut ciphertext = Vec::with_capacity(WRAPPED_LEN);
        ciphertext.extend_from_slice(&iv);
        ciphertext.extend_from_slice(&sealed);
        Ok(WrappedKey { version, ciphertext })
    }

    fn unwrap(&self, conn: &mut Conn, wrapped: &WrappedKey, aad: &[u8]) -> Result<DataKey, OpError> {
        if wrapped.version > conn.listing.newest() {
            // Another node or process may have rotated since the last listing.
            self.refresh(conn)?;
        }
        let candidates: Vec<ObjectHandle> = match conn.listing.versions.get(&wrapped.version) {
            Some(objects) if !objects.is_empty() => objects.iter().map(|m| m.handle).collect(),
            _ => return Err(OpError::Key(KeyError::UnknownVersion(wrapped.version))),
        };
        if wrapped.ciphertext.len() != WRAPPED_LEN {
            return Err(OpError::Key(KeyError::Integrity));
        }
        let (iv, sealed) = wrapped.ciphertext.split_at(IV_LEN);
        let full_aad = wrap_aad(wrapped.version, aad);
        for handle in candidates {
            let mut iv = <[u8; IV_LEN]>::try_from(iv).map_err(|_| KeyError::Integrity)?;
            let params = GcmParams::new(&mut iv, &full_aad, Ulong::try_from(TAG_BITS)?)?;
            match conn.session.decrypt(&Mechanism::AesGcm(params), handle, sealed) {
                Ok(plain) => {
                    let plain = Zeroizing::new(plain);
                    return DataKey::from_bytes(&plain).map_err(|_| OpError::Key(KeyError::Integrity));
                }
                // The tag did not verify: try the next object of this version, if any.
                Err(e) if refused_ciphertext(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(OpError::Key(KeyError::Integrity))
    }
}

/// A `C_Decrypt` failure that says the ciphertext (or its tag, IV or AAD) is not authentic,
/// as opposed to a lost session or a failing device.
fn refused_ciphertext(e: &CkError) -> bool {
    match e {
        CkError::Pkcs11(rv, Function::Decrypt) => {
            !OpError::Token(CkError::Pkcs11(*rv, Function::Decrypt)).session_lost()
                && !matches!(rv, RvError::DeviceError | RvError::DeviceMemory | RvError::HostMemory)
        }
        _ => false,
    }
}

/// Generates master key version `version` inside the token; its value never leaves it.
fn generate_master(session: &Session, version: u32, created: i64) -> Result<ObjectHandle, CkError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(Ulong::try_from(KEY_LEN)?),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Copyable(false),
        Attribute::Modifiable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(format!("{LABEL_PREFIX}{version}").into_bytes()),
        Attribute::Id(format!("{ID_PREFIX}{version}:{created}").into_bytes()),
    ];
    session.generate_key(&Mechanism::AesKeyGen, &template)
}

/// The version in a `ward-master-v<N>` label (canonical decimal, N >= 1).
fn parse_label(label: &[u8]) -> Option<u32> {
    let digits = std::str::from_utf8(label).ok()?.strip_prefix(LABEL_PREFIX)?;
    parse_canonical::<u32>(digits).filter(|&v| v > 0)
}

/// The version and creation time (unix seconds) in a `ward-master:<N>:<secs>` id.
fn parse_id(id: &[u8]) -> Option<(u32, i64)> {
    let (version, secs) = std::str::from_utf8(id).ok()?.strip_prefix(ID_PREFIX)?.split_once(':')?;
    Some((parse_canonical(version)?, i64::try_from(parse_canonical::<u64>(secs)?).ok()?))
}

/// A decimal number written the one way Ward writes it (no sign, no leading zero).
fn parse_canonical<T: std::str::FromStr + ToString>(s: &str) -> Option<T> {
    let n: T = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

/// The AAD of a wrapped data key: `ward:pkcs11-wrap:v1|<version>|<caller aad>`.
fn wrap_aad(version: u32, aad: &[u8]) -> Vec<u8> {
    crate::store::versioned_aad(WRAP_AAD_PREFIX, version, aad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_ids_parse_only_in_their_canonical_form() {
        assert_eq!(parse_label(b"ward-master-v1"), Some(1));
        assert_eq!(parse_label(b"ward-master-v42"), Some(42));
        for bad in [&b"ward-master-v0"[..], b"ward-master-v01", b"ward-master-v+1", b"ward-master-v", b"other-v1"] {
            assert_eq!(parse_label(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_id(b"ward-master:3:1767225600"), Some((3, 1_767_225_600)));
        for bad in [&b"ward-master:3"[..], b"ward-master:03:1", b"ward-master:3:-1", b"ward-master:3:1:2", b"x:3:1"] {
            assert_eq!(parse_id(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn wrap_aad_binds_the_version() {
        assert_eq!(wrap_aad(7, b"ward:data-key:user/1"), b"ward:pkcs11-wrap:v1|7|ward:data-key:user/1");
        // The delimiter keeps version and caller AAD apart ("1" + "1|x" vs "11" + "|x").
        assert_ne!(wrap_aad(1, b"1|x"), wrap_aad(11, b"|x"));
    }
}
