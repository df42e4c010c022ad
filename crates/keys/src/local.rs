//! The local keyring: versioned master keys in `<dir>/keyring.json` (the default backend).
//!
//! File: `{"format": 1, "sealed": bool, "kdf": {...} | null, "body": ...}`. The body lists the
//! master versions (`version`, `created_at`, base64 `key`) and the active version. With a
//! passphrase the body is [`seal`]ed (AAD `ward:keyring:v1`) under a key derived by argon2id
//! (default m = 64 MiB, t = 3, p = 1, random 16-byte salt; all stored in `kdf`) and stored as
//! base64. Without one the body is plain and [`KeyStore::warnings`] says so loudly.
//!
//! The directory is kept 0700 and the file 0600 (looser modes are refused). Every write is
//! atomic (temp file created 0600, fsync, rename, fsync of the directory) and is made under an
//! exclusive lock on `keyring.lock`, after re-reading the file, so two processes (the server
//! and an admin command) never drop each other's versions. `unwrap` re-reads the file when it
//! meets a version newer than it knows. File I/O runs on the calling thread; it happens only
//! on open, rotation and that re-read.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::aead::{DataKey, fill_random, open, seal};
use crate::error::KeyError;
use crate::store::{KeyState, KeyStore, KeyVersionInfo, WrappedKey};
use ward_storage::{Store, StoreTx};

const KEYRING_FILE: &str = "keyring.json";
const LOCK_FILE: &str = "keyring.lock";
const FILE_FORMAT: u32 = 1;
const KEYRING_AAD: &[u8] = b"ward:keyring:v1";
const WRAP_AAD_PREFIX: &[u8] = b"ward:wrap:v1|";
const SALT_LEN: usize = 16;
const KDF_ALG: &str = "argon2id";
/// Argon2 version 0x13, as stored in the file.
const KDF_VERSION: u32 = 0x13;

/// The argon2id cost used when a keyring is sealed (an existing sealed keyring keeps the
/// parameters recorded in its file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Parallelism.
    pub p: u32,
}

impl KdfCost {
    /// m = 64 MiB, t = 3, p = 1 (RFC 9106's second recommended option).
    pub const DEFAULT: KdfCost = KdfCost { m_kib: 64 * 1024, t: 3, p: 1 };
}

impl Default for KdfCost {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[derive(Clone)]
struct MasterVersion {
    created_at: OffsetDateTime,
    key: DataKey,
}

#[derive(Clone)]
struct Ring {
    active: u32,
    versions: BTreeMap<u32, MasterVersion>,
}

impl Ring {
    fn first() -> Self {
        let v1 = MasterVersion { created_at: OffsetDateTime::now_utc(), key: DataKey::generate() };
        Ring { active: 1, versions: BTreeMap::from([(1, v1)]) }
    }

    fn add_version(&mut self) -> Result<u32, KeyError> {
        let newest = self.versions.keys().next_back().copied().unwrap_or(0);
        let version =
            newest.checked_add(1).ok_or_else(|| KeyError::Keyring("no master key version number is left".into()))?;
        self.versions
            .insert(version, MasterVersion { created_at: OffsetDateTime::now_utc(), key: DataKey::generate() });
        self.active = version;
        Ok(version)
    }

    fn newest(&self) -> u32 {
        self.versions.keys().next_back().copied().unwrap_or(0)
    }
}

/// The passphrase-derived key for one `kdf` record (salt and parameters).
struct Sealer {
    kdf: KdfRecord,
    key: DataKey,
}

struct State {
    ring: Ring,
    /// `Some` when the keyring is sealed (there is a passphrase).
    sealer: Option<Sealer>,
}

/// The local keyring: a file-backed (or, for tests, in-memory) [`KeyStore`].
pub struct LocalKeyStore {
    /// The keyring directory; `None` for [`LocalKeyStore::ephemeral`] and the database home.
    dir: Option<PathBuf>,
    /// Set when the keyring lives in the shared database instead of a file.
    db: Option<DbHome>,
    passphrase: Option<Zeroizing<String>>,
    state: RwLock<State>,
}

/// The keyring's home in the database: the store and the revision this process last saw.
struct DbHome {
    store: Arc<dyn Store>,
    revision: std::sync::Mutex<i64>,
}

/// How the database keyring is named in messages.
const DB_LABEL: &str = "the keyring in the database";
/// Attempts at a rotation that loses compare-and-swap races to other nodes.
const DB_ROTATE_ATTEMPTS: u32 = 10;

impl std::fmt::Debug for LocalKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("LocalKeyStore");
        out.field("dir", &self.dir).field("sealed", &self.is_sealed());
        // `try_read`: formatting must never block on (or deadlock with) a rotation.
        if let Ok(state) = self.state.try_read() {
            out.field("active_version", &state.ring.active).field("versions", &state.ring.versions.len());
        }
        out.finish_non_exhaustive()
    }
}

impl LocalKeyStore {
    /// Opens (or creates, with version 1) the keyring in `dir`, sealed when `passphrase` is
    /// given, with the default argon2id cost for a new seal. See the module docs.
    pub fn open(dir: &Path, passphrase: Option<Zeroizing<String>>) -> Result<Self, KeyError> {
        Self::open_with_kdf_cost(dir, passphrase, KdfCost::DEFAULT)
    }

    /// Like [`LocalKeyStore::open`], with the argon2id cost used if the keyring gets sealed
    /// now. Tests use a cheap cost; production uses [`KdfCost::DEFAULT`].
    pub fn open_with_kdf_cost(
        dir: &Path,
        passphrase: Option<Zeroizing<String>>,
        cost: KdfCost,
    ) -> Result<Self, KeyError> {
        if passphrase.as_ref().is_some_and(|p| p.is_empty()) {
            return Err(KeyError::Keyring(
                "WARD_MASTER_PASSPHRASE is set but empty: set a real passphrase, or unset it to run with an \
                 unsealed keyring (not for production)"
                    .into(),
            ));
        }
        prepare_dir(dir)?;
        let _lock = lock_dir(dir)?;
        let path = dir.join(KEYRING_FILE);
        let state = match read_keyring(&path)? {
            None => {
                let ring = Ring::first();
                let sealer = passphrase.as_ref().map(|p| new_sealer(p, cost)).transpose()?;
                write_keyring(dir, &ring, sealer.as_ref())?;
                tracing::info!(path = %path.display(), sealed = sealer.is_some(), "created a new keyring with master key version 1");
                State { ring, sealer }
            }
            Some(bytes) => {
                let (ring, sealer) = decode_keyring(&bytes, &path, passphrase.as_ref(), None)?;
                match (sealer, passphrase.as_ref()) {
                    (Some(sealer), _) => State { ring, sealer: Some(sealer) },
                    (None, None) => State { ring, sealer: None },
                    (None, Some(p)) => {
                        let sealer = new_sealer(p, cost)?;
                        write_keyring(dir, &ring, Some(&sealer))?;
                        tracing::warn!(path = %path.display(), "the keyring was not sealed; it is now sealed with WARD_MASTER_PASSPHRASE");
                        State { ring, sealer: Some(sealer) }
                    }
                }
            }
        };
        Ok(Self { dir: Some(dir.to_path_buf()), db: None, passphrase, state: RwLock::new(state) })
    }

    /// An in-memory keyring with a random version-1 master key and no file, for tests and
    /// benchmarks. Its keys are lost when it is dropped.
    pub fn ephemeral() -> Self {
        Self { dir: None, db: None, passphrase: None, state: RwLock::new(State { ring: Ring::first(), sealer: None }) }
    }

    /// True when the keyring file is sealed with a passphrase.
    pub fn is_sealed(&self) -> bool {
        self.passphrase.is_some()
    }

    /// The keyring file, or `None` for an ephemeral keyring.
    pub fn keyring_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(KEYRING_FILE))
    }

    /// Re-reads the file and adopts it, after checking that it still holds every version
    /// this process knows with the same key. Call with the directory lock held when writing.
    fn reload(&self, dir: &Path, state: &mut State) -> Result<(), KeyError> {
        let path = dir.join(KEYRING_FILE);
        let bytes = read_keyring(&path)?.ok_or_else(|| {
            KeyError::Keyring(format!("the keyring file {} has disappeared; restore it from backup", path.display()))
        })?;
        self.adopt(&bytes, &path, state)
    }

    /// Adopts a keyring document (file or database) after checking that it still holds
    /// every version this process knows, with the same key.
    fn adopt(&self, bytes: &[u8], path: &Path, state: &mut State) -> Result<(), KeyError> {
        let (ring, sealer) = decode_keyring(bytes, path, self.passphrase.as_ref(), state.sealer.as_ref())?;
        for (version, known) in &state.ring.versions {
            match ring.versions.get(version) {
                Some(on_disk) if on_disk.key.expose() == known.key.expose() => {}
                _ => {
                    return Err(KeyError::Keyring(format!(
                        "the keyring file {} no longer holds master key version {version} as this process knows it \
                         (was the file replaced?); refusing to use or overwrite it",
                        path.display()
                    )));
                }
            }
        }
        state.ring = ring;
        if sealer.is_some() {
            state.sealer = sealer;
        }
        Ok(())
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn unwrap_known(&self, wrapped: &WrappedKey, aad: &[u8]) -> Option<Result<DataKey, KeyError>> {
        let state = self.read_state();
        let master = state.ring.versions.get(&wrapped.version)?;
        Some(
            open(&master.key, &wrap_aad(wrapped.version, aad), &wrapped.ciphertext)
                .and_then(|plain| DataKey::from_bytes(&plain)),
        )
    }
}

impl LocalKeyStore {
    /// Opens (or creates) the keyring kept in the shared database (`[keys] keyring =
    /// "database"`), so that every node reaches the same master keys. It must be sealed:
    /// without a passphrase this is refused. When the database has no keyring yet and
    /// `import_from` names a directory holding a keyring file, that keyring is imported
    /// (the file is left in place; delete it once every node runs on the database). A
    /// database that already holds data keys but no keyring is refused rather than given
    /// a new master key that could not unwrap them.
    pub async fn open_in_database(
        store: Arc<dyn Store>,
        passphrase: Option<Zeroizing<String>>,
        import_from: Option<&Path>,
        cost: KdfCost,
    ) -> Result<Self, KeyError> {
        let passphrase = passphrase.filter(|p| !p.is_empty()).ok_or_else(|| {
            KeyError::Keyring(
                "keys.keyring = \"database\" keeps the keyring beside the data it protects, so it must be sealed: \
                 set WARD_MASTER_PASSPHRASE"
                    .into(),
            )
        })?;
        let label = Path::new(DB_LABEL);
        for _ in 0..DB_ROTATE_ATTEMPTS {
            if let Some((revision, bytes)) = store.keyring_document().await? {
                let (ring, sealer) = decode_keyring(&bytes, label, Some(&passphrase), None)?;
                let sealer =
                    sealer.ok_or_else(|| KeyError::Keyring(format!("{DB_LABEL} is not sealed; refusing to use it")))?;
                return Ok(Self::in_database(store, passphrase, revision, State { ring, sealer: Some(sealer) }));
            }
            let imported = match import_from.map(|dir| dir.join(KEYRING_FILE)) {
                Some(path) => match read_keyring(&path)? {
                    Some(bytes) => {
                        let (ring, sealer) = decode_keyring(&bytes, &path, Some(&passphrase), None)?;
                        tracing::warn!(path = %path.display(), "importing the keyring file into the database");
                        Some((ring, sealer))
                    }
                    None => None,
                },
                None => None,
            };
            let (ring, sealer) = match imported {
                Some((ring, Some(sealer))) => (ring, sealer),
                Some((ring, None)) => (ring, new_sealer(&passphrase, cost)?),
                None => {
                    let live: i64 = store.data_key_counts().await?.iter().map(|(_, n)| n).sum();
                    if live > 0 {
                        return Err(KeyError::Keyring(format!(
                            "the database holds {live} data keys but no keyring: start once with the keyring file \
                             in [keys] local_dir so it is imported, or restore the keyring"
                        )));
                    }
                    (Ring::first(), new_sealer(&passphrase, cost)?)
                }
            };
            let bytes = encode_keyring(&ring, Some(&sealer))?;
            let mut tx = store.begin().await?;
            let stored = tx.put_keyring_document(None, &bytes, OffsetDateTime::now_utc()).await?;
            tx.commit().await?;
            if stored {
                tracing::info!("stored the sealed keyring in the database");
                return Ok(Self::in_database(store, passphrase, 1, State { ring, sealer: Some(sealer) }));
            }
            // Another node stored one first: loop and use that one.
        }
        Err(KeyError::Keyring(format!("{DB_LABEL} kept changing while it was being opened")))
    }

    fn in_database(store: Arc<dyn Store>, passphrase: Zeroizing<String>, revision: i64, state: State) -> Self {
        Self {
            dir: None,
            db: Some(DbHome { store, revision: std::sync::Mutex::new(revision) }),
            passphrase: Some(passphrase),
            state: RwLock::new(state),
        }
    }

    /// True when the keyring lives in the database.
    pub fn in_shared_database(&self) -> bool {
        self.db.is_some()
    }

    fn db_revision(db: &DbHome) -> std::sync::MutexGuard<'_, i64> {
        db.revision.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Re-reads the database keyring and adopts it.
    async fn refresh_from_db(&self, db: &DbHome) -> Result<(), KeyError> {
        let (revision, bytes) = db
            .store
            .keyring_document()
            .await?
            .ok_or_else(|| KeyError::Keyring(format!("{DB_LABEL} has disappeared; restore it from backup")))?;
        let mut state = self.write_state();
        self.adopt(&bytes, Path::new(DB_LABEL), &mut state)?;
        *Self::db_revision(db) = revision;
        Ok(())
    }

    /// Adds a version inside `tx` with compare-and-swap on the document's revision,
    /// retrying when another node rotated at the same moment (its version is kept, ours
    /// comes after it). This process adopts the new version at [`KeyStore::refresh`], after
    /// the caller commits.
    async fn rotate_in_db(&self, db: &DbHome, tx: &mut dyn StoreTx) -> Result<u32, KeyError> {
        for _ in 0..DB_ROTATE_ATTEMPTS {
            self.refresh_from_db(db).await?;
            let revision = *Self::db_revision(db);
            let (version, bytes) = {
                let state = self.read_state();
                let mut ring = state.ring.clone();
                let version = ring.add_version()?;
                (version, encode_keyring(&ring, state.sealer.as_ref())?)
            };
            if tx.put_keyring_document(Some(revision), &bytes, OffsetDateTime::now_utc()).await? {
                tracing::info!(version, "rotated the master key in the database keyring");
                return Ok(version);
            }
        }
        Err(KeyError::Keyring(format!("{DB_LABEL}: the rotation kept losing races with other nodes")))
    }
}

#[async_trait::async_trait]
impl KeyStore for LocalKeyStore {
    fn backend(&self) -> &'static str {
        "local"
    }

    fn warnings(&self) -> Vec<String> {
        match (&self.dir, self.is_sealed()) {
            (_, true) => Vec::new(),
            (Some(dir), false) => vec![format!(
                "the local keyring {} is not sealed with a passphrase: the master keys are stored in plain text on \
                 disk; this is not for production (set WARD_MASTER_PASSPHRASE)",
                dir.join(KEYRING_FILE).display()
            )],
            (None, false) => vec![
                "the keyring is ephemeral (in memory only): every master key is lost when the process exits; \
                 for tests only"
                    .to_string(),
            ],
        }
    }

    async fn wrap(&self, key: &DataKey, aad: &[u8]) -> Result<WrappedKey, KeyError> {
        let state = self.read_state();
        let version = state.ring.active;
        let master = state.ring.versions.get(&version).expect("the active version is always in the ring");
        let ciphertext = seal(&master.key, &wrap_aad(version, aad), key.expose())?;
        Ok(WrappedKey { version, ciphertext })
    }

    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<DataKey, KeyError> {
        if let Some(result) = self.unwrap_known(wrapped, aad) {
            return result;
        }
        // A newer version may have been created by another process (e.g. `ward keys rotate`).
        if let Some(db) = &self.db {
            let newest = self.read_state().ring.newest();
            if wrapped.version > newest {
                self.refresh_from_db(db).await?;
            }
        } else if let Some(dir) = &self.dir {
            let mut state = self.write_state();
            if wrapped.version > state.ring.newest() {
                self.reload(dir, &mut state)?;
            }
        }
        self.unwrap_known(wrapped, aad).unwrap_or(Err(KeyError::UnknownVersion(wrapped.version)))
    }

    async fn rotate_in(&self, tx: &mut dyn StoreTx) -> Result<u32, KeyError> {
        match &self.db {
            Some(db) => self.rotate_in_db(db, tx).await,
            None => self.rotate().await,
        }
    }

    async fn refresh(&self) -> Result<(), KeyError> {
        match &self.db {
            Some(db) => self.refresh_from_db(db).await,
            None => Ok(()),
        }
    }

    async fn versions(&self) -> Result<Vec<KeyVersionInfo>, KeyError> {
        let state = self.read_state();
        Ok(state
            .ring
            .versions
            .iter()
            .map(|(&version, v)| KeyVersionInfo {
                version,
                state: if version == state.ring.active { KeyState::Active } else { KeyState::DecryptOnly },
                created_at: v.created_at,
            })
            .collect())
    }

    async fn rotate(&self) -> Result<u32, KeyError> {
        if let Some(db) = &self.db {
            let mut tx = db.store.begin().await?;
            let version = self.rotate_in_db(db, &mut *tx).await?;
            tx.commit().await?;
            self.refresh_from_db(db).await?;
            return Ok(version);
        }
        let Some(dir) = &self.dir else {
            return self.write_state().ring.add_version();
        };
        let _lock = lock_dir(dir)?;
        let mut state = self.write_state();
        self.reload(dir, &mut state)?;
        let mut ring = state.ring.clone();
        let version = ring.add_version()?;
        write_keyring(dir, &ring, state.sealer.as_ref())?;
        state.ring = ring;
        tracing::info!(version, "rotated the master key: new data keys are wrapped with the new version");
        Ok(version)
    }
}

/// The AAD of a wrapped data key: `ward:wrap:v1|<version>|<caller aad>`.
fn wrap_aad(version: u32, aad: &[u8]) -> Vec<u8> {
    crate::store::versioned_aad(WRAP_AAD_PREFIX, version, aad)
}

// ---------------------------------------------------------------------------------------------
// The file format. Types holding key material derive neither `Debug` nor `Clone`.

#[derive(Deserialize)]
struct Header {
    format: u32,
    sealed: bool,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfRecord {
    alg: String,
    version: u32,
    m_kib: u32,
    t: u32,
    p: u32,
    /// Base64.
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile<B> {
    format: u32,
    sealed: bool,
    kdf: Option<KdfRecord>,
    /// [`BodyFile`] when unsealed; the base64 of the sealed [`BodyFile`] JSON when sealed.
    body: B,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyFile {
    active: u32,
    versions: Vec<VersionFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    version: u32,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    key: SecretB64,
}

/// A base64 key in a zeroizing string.
struct SecretB64(Zeroizing<String>);

impl Serialize for SecretB64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretB64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| SecretB64(Zeroizing::new(s)))
    }
}

/// A JSON error without serde's message, which could quote a key.
fn json_error(path: &Path, what: &str, e: &serde_json::Error) -> KeyError {
    KeyError::Keyring(format!(
        "{}: {what} is malformed ({:?} error at line {}, column {})",
        path.display(),
        e.classify(),
        e.line(),
        e.column()
    ))
}

/// Serializes into a zeroizing buffer reserved up front, so that no reallocation leaves a
/// copy of key material behind.
fn to_json<T: Serialize>(value: &T, capacity: usize) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    serde_json::to_writer_pretty(&mut *out, value)
        .map_err(|e| KeyError::Keyring(format!("cannot serialize the keyring ({:?} error)", e.classify())))?;
    Ok(out)
}

fn ring_to_body(ring: &Ring) -> BodyFile {
    BodyFile {
        active: ring.active,
        versions: ring
            .versions
            .iter()
            .map(|(&version, v)| VersionFile {
                version,
                created_at: v.created_at,
                key: SecretB64(Zeroizing::new(B64.encode(v.key.expose()))),
            })
            .collect(),
    }
}

fn body_to_ring(body: &BodyFile, path: &Path) -> Result<Ring, KeyError> {
    let bad = |what: String| KeyError::Keyring(format!("{}: {what}", path.display()));
    let mut versions = BTreeMap::new();
    for v in &body.versions {
        if v.version == 0 {
            return Err(bad("master key version 0 is not allowed".into()));
        }
        let raw = Zeroizing::new(
            B64.decode(v.key.0.as_bytes())
                .map_err(|_| bad(format!("the key of version {} is not base64", v.version)))?,
        );
        let key =
            DataKey::from_bytes(&raw).map_err(|_| bad(format!("the key of version {} is not 32 bytes", v.version)))?;
        if versions.insert(v.version, MasterVersion { created_at: v.created_at, key }).is_some() {
            return Err(bad(format!("master key version {} appears twice", v.version)));
        }
    }
    if !versions.contains_key(&body.active) {
        return Err(bad(format!("the active version {} is not in the keyring", body.active)));
    }
    Ok(Ring { active: body.active, versions })
}

fn encode_keyring(ring: &Ring, sealer: Option<&Sealer>) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let capacity = 512 + 256 * ring.versions.len();
    let body = ring_to_body(ring);
    let mut file = match sealer {
        None => to_json(&KeyringFile { format: FILE_FORMAT, sealed: false, kdf: None, body }, capacity)?,
        Some(sealer) => {
            let plain = to_json(&body, capacity)?;
            let sealed = seal(&sealer.key, KEYRING_AAD, &plain)?;
            let file = KeyringFile {
                format: FILE_FORMAT,
                sealed: true,
                kdf: Some(sealer.kdf.clone()),
                body: B64.encode(sealed),
            };
            to_json(&file, capacity * 2)?
        }
    };
    file.push(b'\n');
    Ok(file)
}

/// Parses a keyring file. Returns the sealer when the file is sealed (reusing `cached` when
/// its salt and parameters match, so no argon2 work is repeated).
fn decode_keyring(
    bytes: &[u8],
    path: &Path,
    passphrase: Option<&Zeroizing<String>>,
    cached: Option<&Sealer>,
) -> Result<(Ring, Option<Sealer>), KeyError> {
    let header: Header = serde_json::from_slice(bytes).map_err(|e| json_error(path, "the keyring file", &e))?;
    if header.format != FILE_FORMAT {
        return Err(KeyError::Keyring(format!(
            "{}: unsupported keyring format {} (this Ward reads format {FILE_FORMAT})",
            path.display(),
            header.format
        )));
    }
    if !header.sealed {
        let file: KeyringFile<BodyFile> =
            serde_json::from_slice(bytes).map_err(|e| json_error(path, "the keyring file", &e))?;
        return Ok((body_to_ring(&file.body, path)?, None));
    }
    let Some(passphrase) = passphrase else {
        tracing::error!(path = %path.display(), "the keyring is sealed and no WARD_MASTER_PASSPHRASE was given: a passphrase is required");
        return Err(KeyError::WrongPassphrase);
    };
    let file: KeyringFile<String> =
        serde_json::from_slice(bytes).map_err(|e| json_error(path, "the keyring file", &e))?;
    let kdf =
        file.kdf.ok_or_else(|| KeyError::Keyring(format!("{}: sealed but without a kdf section", path.display())))?;
    let key = match cached {
        Some(c) if c.kdf == kdf => c.key.clone(),
        _ => derive_key(passphrase, &kdf, path)?,
    };
    let sealed = B64
        .decode(file.body.as_bytes())
        .map_err(|_| KeyError::Keyring(format!("{}: the sealed body is not base64", path.display())))?;
    let plain = open(&key, KEYRING_AAD, &sealed).map_err(|e| match e {
        KeyError::Integrity => KeyError::WrongPassphrase,
        other => other,
    })?;
    let body: BodyFile = serde_json::from_slice(&plain).map_err(|e| json_error(path, "the sealed body", &e))?;
    Ok((body_to_ring(&body, path)?, Some(Sealer { kdf, key })))
}

fn new_sealer(passphrase: &str, cost: KdfCost) -> Result<Sealer, KeyError> {
    let mut salt = [0u8; SALT_LEN];
    fill_random(&mut salt)?;
    let kdf = KdfRecord {
        alg: KDF_ALG.into(),
        version: KDF_VERSION,
        m_kib: cost.m_kib,
        t: cost.t,
        p: cost.p,
        salt: B64.encode(salt),
    };
    let key = derive_key(passphrase, &kdf, Path::new("(new keyring)"))?;
    Ok(Sealer { kdf, key })
}

/// argon2id(passphrase, salt) -> 32-byte key, with bounds so that a damaged file cannot ask
/// for absurd memory.
fn derive_key(passphrase: &str, kdf: &KdfRecord, path: &Path) -> Result<DataKey, KeyError> {
    let bad = |what: &str| KeyError::Keyring(format!("{}: kdf {what}", path.display()));
    if kdf.alg != KDF_ALG || kdf.version != KDF_VERSION {
        return Err(bad("is not argon2id version 19"));
    }
    if kdf.m_kib > 4 * 1024 * 1024 || kdf.t > 64 || kdf.p > 64 {
        return Err(bad("parameters are out of range (m <= 4 GiB, t <= 64, p <= 64)"));
    }
    let salt = B64.decode(kdf.salt.as_bytes()).map_err(|_| bad("salt is not base64"))?;
    let params = Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32)).map_err(|e| bad(&format!("parameters: {e}")))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), &salt, out.as_mut())
        .map_err(|e| KeyError::Crypto(format!("argon2id: {e}")))?;
    DataKey::from_bytes(out.as_ref())
}

// ---------------------------------------------------------------------------------------------
// Files.

fn too_open(path: &Path, mode: u32, fix: &str) -> KeyError {
    KeyError::Keyring(format!(
        "{} is open to other users (mode {mode:03o}); it holds the master keys: fix with `chmod {fix} {}`",
        path.display(),
        path.display()
    ))
}

/// Creates `dir` with mode 0700 if missing; refuses one that group or others can access.
fn prepare_dir(dir: &Path) -> Result<(), KeyError> {
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(KeyError::Keyring(format!("{} is not a directory", dir.display()))),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 { Err(too_open(dir, mode, "700")) } else { Ok(()) }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            // `mode` is filtered by the umask; make the leaf exactly 0700.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Takes the exclusive keyring lock; it is released when the returned file is dropped.
fn lock_dir(dir: &Path) -> Result<fs::File, KeyError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))?;
    file.lock()?;
    Ok(file)
}

/// The keyring file's bytes, or `None` when there is none. Refuses a file others can read.
fn read_keyring(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, KeyError> {
    match fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(too_open(path, mode, "600"));
            }
            Ok(Some(Zeroizing::new(fs::read(path)?)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes the keyring atomically: temp file (0600 from creation), fsync, rename, fsync dir.
fn write_keyring(dir: &Path, ring: &Ring, sealer: Option<&Sealer>) -> Result<(), KeyError> {
    let bytes = encode_keyring(ring, sealer)?;
    let mut suffix = [0u8; 8];
    fill_random(&mut suffix)?;
    let tmp =
        dir.join(format!(".{KEYRING_FILE}.{}.tmp", suffix.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    let result = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, dir.join(KEYRING_FILE))?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(KeyError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfCost = KdfCost { m_kib: 8, t: 1, p: 1 };

    fn pass(p: &str) -> Option<Zeroizing<String>> {
        Some(Zeroizing::new(p.to_string()))
    }

    fn keys_dir() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("keys");
        (tmp, dir)
    }

    fn master_keys(store: &LocalKeyStore) -> Vec<[u8; 32]> {
        store.read_state().ring.versions.values().map(|v| *v.key.expose()).collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn wrap_unwrap_round_trip_and_aad_binding() {
        let store = LocalKeyStore::ephemeral();
        let dek = DataKey::generate();
        let wrapped = store.wrap(&dek, b"ward:data-key:user/1").await.expect("wrap");
        assert_eq!(wrapped.version, 1);
        assert_eq!(wrapped.ciphertext.len(), 32 + crate::SEALED_OVERHEAD);
        let back = store.unwrap(&wrapped, b"ward:data-key:user/1").await.expect("unwrap");
        assert_eq!(back.expose(), dek.expose());
        assert!(matches!(store.unwrap(&wrapped, b"ward:data-key:user/2").await, Err(KeyError::Integrity)));
        let mut tampered = wrapped.clone();
        tampered.ciphertext[20] ^= 1;
        assert!(matches!(store.unwrap(&tampered, b"ward:data-key:user/1").await, Err(KeyError::Integrity)));
        let unknown = WrappedKey { version: 9, ..wrapped };
        assert!(matches!(store.unwrap(&unknown, b"ward:data-key:user/1").await, Err(KeyError::UnknownVersion(9))));
    }

    #[tokio::test]
    async fn rotate_keeps_old_versions_and_wraps_with_the_new_one() {
        let store = LocalKeyStore::ephemeral();
        let dek = DataKey::generate();
        let old = store.wrap(&dek, b"a").await.expect("wrap");
        assert_eq!(store.rotate().await.expect("rotate"), 2);
        let new = store.wrap(&dek, b"a").await.expect("wrap");
        assert_eq!((old.version, new.version), (1, 2));
        assert_eq!(store.unwrap(&old, b"a").await.expect("unwrap v1").expose(), dek.expose());
        assert_eq!(store.unwrap(&new, b"a").await.expect("unwrap v2").expose(), dek.expose());
        // Relabelling a wrapped key with another version fails.
        let moved = WrappedKey { version: 1, ciphertext: new.ciphertext };
        assert!(matches!(store.unwrap(&moved, b"a").await, Err(KeyError::Integrity)));
        let states: Vec<_> = store.versions().await.expect("versions").iter().map(|v| (v.version, v.state)).collect();
        assert_eq!(states, [(1, KeyState::DecryptOnly), (2, KeyState::Active)]);
    }

    #[tokio::test]
    async fn unsealed_keyring_survives_reopen() {
        let (_tmp, dir) = keys_dir();
        let store = LocalKeyStore::open(&dir, None).expect("open");
        let dek = DataKey::generate();
        let w1 = store.wrap(&dek, b"a").await.expect("wrap");
        store.rotate().await.expect("rotate");
        let w2 = store.wrap(&dek, b"a").await.expect("wrap");
        let before = store.versions().await.expect("versions");
        drop(store);

        let reopened = LocalKeyStore::open(&dir, None).expect("reopen");
        let after = reopened.versions().await.expect("versions");
        assert_eq!(
            after.iter().map(|v| (v.version, v.state, v.created_at)).collect::<Vec<_>>(),
            before.iter().map(|v| (v.version, v.state, v.created_at)).collect::<Vec<_>>()
        );
        assert_eq!(reopened.unwrap(&w1, b"a").await.expect("v1").expose(), dek.expose());
        assert_eq!(reopened.unwrap(&w2, b"a").await.expect("v2").expose(), dek.expose());
    }

    #[tokio::test]
    async fn sealed_keyring_needs_the_right_passphrase() {
        let (_tmp, dir) = keys_dir();
        let store = LocalKeyStore::open_with_kdf_cost(&dir, pass("correct horse"), CHEAP).expect("create sealed");
        let dek = DataKey::generate();
        let wrapped = store.wrap(&dek, b"a").await.expect("wrap");
        store.rotate().await.expect("rotate");
        drop(store);

        let reopened = LocalKeyStore::open_with_kdf_cost(&dir, pass("correct horse"), CHEAP).expect("reopen");
        assert_eq!(reopened.unwrap(&wrapped, b"a").await.expect("unwrap").expose(), dek.expose());
        assert_eq!(reopened.versions().await.expect("versions").len(), 2);
        assert!(matches!(LocalKeyStore::open(&dir, pass("wrong horse")), Err(KeyError::WrongPassphrase)));
        assert!(matches!(LocalKeyStore::open(&dir, None), Err(KeyError::WrongPassphrase)));
    }

    #[tokio::test]
    async fn sealed_file_holds_no_key_material_and_is_private() {
        let (_tmp, dir) = keys_dir();
        let store = LocalKeyStore::open_with_kdf_cost(&dir, pass("pw"), CHEAP).expect("open");
        store.rotate().await.expect("rotate");
        let path = dir.join(KEYRING_FILE);
        let bytes = fs::read(&path).expect("read keyring");
        let text = String::from_utf8_lossy(&bytes);
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!((json["format"].as_u64(), json["sealed"].as_bool()), (Some(1), Some(true)));
        assert_eq!(json["kdf"]["alg"], "argon2id");
        let keys = master_keys(&store);
        assert_eq!(keys.len(), 2);
        for key in keys {
            assert!(!bytes.windows(32).any(|w| w == key), "raw key in file");
            let engines = [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::STANDARD_NO_PAD,
                base64::engine::general_purpose::URL_SAFE,
                base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            for engine in engines {
                assert!(!text.contains(&engine.encode(key)), "base64 key in file");
            }
        }
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert!(
            fs::read_dir(&dir).expect("ls").all(|e| !e.expect("entry").file_name().to_string_lossy().ends_with(".tmp"))
        );
    }

    #[test]
    fn default_kdf_cost_is_written_to_the_file() {
        let (_tmp, dir) = keys_dir();
        LocalKeyStore::open(&dir, pass("pw")).expect("open");
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join(KEYRING_FILE)).expect("read")).expect("json");
        let kdf = &json["kdf"];
        assert_eq!((kdf["m_kib"].as_u64(), kdf["t"].as_u64(), kdf["p"].as_u64()), (Some(65536), Some(3), Some(1)));
        assert_eq!(B64.decode(kdf["salt"].as_str().expect("salt")).expect("b64").len(), SALT_LEN);
    }

    #[tokio::test]
    async fn unsealed_keyring_is_sealed_when_a_passphrase_arrives() {
        let (_tmp, dir) = keys_dir();
        let store = LocalKeyStore::open(&dir, None).expect("open");
        assert_eq!(mode(&dir.join(KEYRING_FILE)), 0o600);
        let dek = DataKey::generate();
        let wrapped = store.wrap(&dek, b"a").await.expect("wrap");
        drop(store);

        let sealed = LocalKeyStore::open_with_kdf_cost(&dir, pass("pw"), CHEAP).expect("seal");
        assert!(sealed.is_sealed());
        assert_eq!(sealed.unwrap(&wrapped, b"a").await.expect("unwrap").expose(), dek.expose());
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join(KEYRING_FILE)).expect("read")).expect("json");
        assert_eq!(json["sealed"], true);
        assert!(matches!(LocalKeyStore::open(&dir, None), Err(KeyError::WrongPassphrase)));
    }

    #[test]
    fn warnings_only_for_unsealed_keyrings() {
        let (_tmp, dir) = keys_dir();
        let unsealed = LocalKeyStore::open(&dir, None).expect("open");
        let warnings = unsealed.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("not sealed") && warnings[0].contains("WARD_MASTER_PASSPHRASE"));
        assert_eq!(unsealed.backend(), "local");

        let (_tmp2, dir2) = keys_dir();
        let sealed = LocalKeyStore::open_with_kdf_cost(&dir2, pass("pw"), CHEAP).expect("open");
        assert!(sealed.warnings().is_empty());
        assert_eq!(LocalKeyStore::ephemeral().warnings().len(), 1);
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let (_tmp, dir) = keys_dir();
        let store = LocalKeyStore::open_with_kdf_cost(&dir, pass("secret-passphrase"), CHEAP).expect("open");
        let shown = format!("{store:?}");
        assert!(shown.contains("LocalKeyStore") && shown.contains("sealed: true"));
        assert!(!shown.contains("secret-passphrase"));
        for key in master_keys(&store) {
            assert!(!shown.contains(&B64.encode(key)));
            assert!(!shown.contains(&format!("{:?}", &key[..4])));
        }
    }

    #[test]
    fn open_directory_empty_passphrase_and_damaged_files_are_refused() {
        let (_tmp, dir) = keys_dir();
        LocalKeyStore::open(&dir, None).expect("open");

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = LocalKeyStore::open(&dir, None).expect_err("open dir");
        assert!(matches!(&err, KeyError::Keyring(m) if m.contains("chmod 700")), "{err}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");

        let path = dir.join(KEYRING_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(LocalKeyStore::open(&dir, None), Err(KeyError::Keyring(m)) if m.contains("chmod 600")));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");

        assert!(matches!(LocalKeyStore::open(&dir, pass("")), Err(KeyError::Keyring(m)) if m.contains("empty")));

        let good = fs::read(&path).expect("read");
        fs::write(&path, &good[..good.len() / 2]).expect("truncate");
        let err = LocalKeyStore::open(&dir, None).expect_err("truncated");
        assert!(matches!(&err, KeyError::Keyring(_)), "{err}");
        let text = String::from_utf8_lossy(&good);
        let key = text.split("\"key\": \"").nth(1).and_then(|s| s.split('"').next()).expect("key in plain file");
        assert!(!err.to_string().contains(key));

        // A wrong-typed field must not echo the key in the error.
        fs::write(&path, text.replace("\"version\": 1", &format!("\"version\": \"{key}\""))).expect("write");
        let err = LocalKeyStore::open(&dir, None).expect_err("bad type");
        assert!(matches!(&err, KeyError::Keyring(_)) && !err.to_string().contains(key), "{err}");

        fs::write(&path, text.replace("\"format\": 1", "\"format\": 2")).expect("write");
        assert!(matches!(LocalKeyStore::open(&dir, None), Err(KeyError::Keyring(m)) if m.contains("format 2")));
    }

    #[tokio::test]
    async fn two_processes_never_lose_each_others_versions() {
        let (_tmp, dir) = keys_dir();
        let a = LocalKeyStore::open_with_kdf_cost(&dir, pass("pw"), CHEAP).expect("a");
        let b = LocalKeyStore::open_with_kdf_cost(&dir, pass("pw"), CHEAP).expect("b");
        assert_eq!(a.rotate().await.expect("a rotates"), 2);
        let dek = DataKey::generate();
        let by_a = a.wrap(&dek, b"x").await.expect("wrap");
        // b has not seen version 2 yet: it re-reads the file.
        assert_eq!(b.unwrap(&by_a, b"x").await.expect("b unwraps v2").expose(), dek.expose());
        assert_eq!(b.rotate().await.expect("b rotates"), 3);
        let reopened = LocalKeyStore::open_with_kdf_cost(&dir, pass("pw"), CHEAP).expect("reopen");
        let versions: Vec<_> = reopened.versions().await.expect("versions").iter().map(|v| v.version).collect();
        assert_eq!(versions, [1, 2, 3]);
        assert_eq!(reopened.unwrap(&by_a, b"x").await.expect("v2").expose(), dek.expose());
    }

    async fn sqlite(dir: &Path) -> Arc<dyn Store> {
        let options = ward_storage::ConnectOptions {
            target: ward_storage::Target::Sqlite(dir.join("ward.db")),
            max_connections: 4,
            acquire_timeout: std::time::Duration::from_secs(5),
        };
        ward_storage::open(&options).await.expect("open store")
    }

    #[tokio::test]
    async fn the_database_keyring_is_sealed_shared_and_rotates_with_compare_and_swap() {
        let (tmp, _) = keys_dir();
        let store = sqlite(tmp.path()).await;
        let refused = LocalKeyStore::open_in_database(store.clone(), None, None, CHEAP).await;
        assert!(matches!(refused, Err(KeyError::Keyring(m)) if m.contains("WARD_MASTER_PASSPHRASE")), "must be sealed");

        let a = LocalKeyStore::open_in_database(store.clone(), pass("pw"), None, CHEAP).await.expect("a");
        let b = LocalKeyStore::open_in_database(store.clone(), pass("pw"), None, CHEAP).await.expect("b");
        assert!(a.in_shared_database() && a.warnings().is_empty());
        assert_eq!(master_keys(&a), master_keys(&b), "one keyring for both nodes");
        let (_, document) = store.keyring_document().await.expect("read").expect("stored");
        for key in master_keys(&a) {
            assert!(!document.windows(32).any(|w| w == key), "no master key in plain bytes");
            let b64 = B64.encode(key);
            assert!(!document.windows(b64.len()).any(|w| w == b64.as_bytes()), "nor in base64");
        }

        assert_eq!(a.rotate().await.expect("a rotates"), 2);
        let dek = DataKey::generate();
        let by_a = a.wrap(&dek, b"x").await.expect("wrap");
        assert_eq!(b.unwrap(&by_a, b"x").await.expect("b reads v2 from the database").expose(), dek.expose());
        assert_eq!(b.rotate().await.expect("b rotates after a"), 3);
        assert_eq!(a.rotate().await.expect("a catches up and rotates"), 4);
        let reopened = LocalKeyStore::open_in_database(store.clone(), pass("pw"), None, CHEAP).await.expect("reopen");
        let versions: Vec<_> = reopened.versions().await.expect("versions").iter().map(|v| v.version).collect();
        assert_eq!(versions, [1, 2, 3, 4]);
        assert_eq!(reopened.unwrap(&by_a, b"x").await.expect("v2").expose(), dek.expose());

        let wrong = LocalKeyStore::open_in_database(store, pass("not it"), None, CHEAP).await;
        assert!(matches!(wrong, Err(KeyError::WrongPassphrase)), "a wrong passphrase is refused");
    }

    #[tokio::test]
    async fn an_audited_rotation_commits_the_database_keyring_with_its_record() {
        let (tmp, _) = keys_dir();
        let store = sqlite(tmp.path()).await;
        let ring =
            Arc::new(LocalKeyStore::open_in_database(store.clone(), pass("pw"), None, CHEAP).await.expect("open"));
        let keys = crate::DataKeys::new(store.clone(), ring.clone());
        let audit = ward_audit::AuditLog::open(
            store.clone(),
            ward_audit::AuditSettings {
                checkpoint_every: 1000,
                checkpoint_interval: std::time::Duration::from_secs(60),
                key_file: tmp.path().join("audit/signing.key"),
                checkpoint_file: tmp.path().join("audit/checkpoints.jsonl"),
            },
        )
        .await
        .expect("audit");
        let now = OffsetDateTime::now_utc();
        let (id, key) = keys.get_or_create_alone("dialog/a", now).await.expect("key");
        let ctx = ward_audit::Context::cli(None, now);
        // On SQLite a second write transaction inside the first would wait forever: the
        // keyring is written in the rotation's own transaction.
        let rotated = tokio::time::timeout(std::time::Duration::from_secs(20), keys.rotate(&audit, &ctx)).await;
        assert_eq!(rotated.expect("no deadlock").expect("rotate"), 2);
        assert_eq!(keys.status().await.expect("status").active_version, 2, "adopted after the commit");
        keys.rewrap(&audit, &ctx, |_, _| {}).await.expect("rewrap");
        let other = LocalKeyStore::open_in_database(store.clone(), pass("pw"), None, CHEAP).await.expect("reopen");
        let fresh = crate::DataKeys::with_cache(store, Arc::new(other), crate::CacheSettings::OFF);
        assert_eq!(fresh.by_id(id).await.expect("rewrapped under v2").expose(), key.expose());
    }

    #[tokio::test]
    async fn a_keyring_file_is_imported_and_data_keys_without_a_keyring_are_refused() {
        let (tmp, dir) = keys_dir();
        let file = LocalKeyStore::open_with_kdf_cost(&dir, pass("pw"), CHEAP).expect("file keyring");
        file.rotate().await.expect("rotate");
        let dek = DataKey::generate();
        let wrapped = file.wrap(&dek, b"y").await.expect("wrap");

        let store = sqlite(tmp.path()).await;
        let keys = crate::DataKeys::new(store.clone(), Arc::new(LocalKeyStore::ephemeral()));
        keys.get_or_create_alone("user/x", OffsetDateTime::now_utc()).await.expect("a data key");
        let refused = LocalKeyStore::open_in_database(store.clone(), pass("pw"), None, CHEAP).await;
        assert!(
            matches!(refused, Err(KeyError::Keyring(m)) if m.contains("no keyring")),
            "no fresh master over old data"
        );

        let imported = LocalKeyStore::open_in_database(store, pass("pw"), Some(&dir), CHEAP).await.expect("import");
        assert_eq!(master_keys(&imported), master_keys(&file), "the file's versions, imported");
        assert_eq!(imported.unwrap(&wrapped, b"y").await.expect("unwrap").expose(), dek.expose());
    }

    #[test]
    fn key_version_info_serializes_for_operators() {
        let info = KeyVersionInfo {
            version: 3,
            state: KeyState::DecryptOnly,
            created_at: time::macros::datetime!(2026-01-02 03:04:05 UTC),
        };
        assert_eq!(
            serde_json::to_value(&info).expect("json"),
            serde_json::json!({"version": 3, "state": "decrypt_only", "created_at": "2026-01-02T03:04:05Z"})
        );
    }
}
