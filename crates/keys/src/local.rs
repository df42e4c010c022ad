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
use std::sync::{PoisonError, RwLock};

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::aead::{DataKey, fill_random, open, seal};
use crate::error::KeyError;
use crate::store::{KeyState, KeyStore, KeyVersionInfo, WrappedKey};

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
    /// The keyring directory; `None` for [`LocalKeyStore::ephemeral`].
    dir: Option<PathBuf>,
    passphrase: Option<Zeroizing<String>>,
    state: RwLock<State>,
}

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
        Ok(Self { dir: Some(dir.to_path_buf()), passphrase, state: RwLock::new(state) })
    }

    /// An in-memory keyring with a random version-1 master key and no file, for tests and
    /// benchmarks. Its keys are lost when it is dropped.
    pub fn ephemeral() -> Self {
        Self { dir: None, passphrase: None, state: RwLock::new(State { ring: Ring::first(), sealer: None }) }
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
        let (ring, sealer) = decode_keyring(&bytes, &path, self.passphrase.as_ref(), state.sealer.as_ref())?;
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
        if let Some(dir) = &self.dir {
            let mut state = self.write_state();
            if wrapped.version > state.ring.newest() {
                self.reload(dir, &mut state)?;
            }
        }
        self.unwrap_known(wrapped, aad).unwrap_or(Err(KeyError::UnknownVersion(wrapped.version)))
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
    let version = version.to_string();
    let mut full = Vec::with_capacity(WRAP_AAD_PREFIX.len() + version.len() + 1 + aad.len());
    full.extend_from_slice(WRAP_AAD_PREFIX);
    full.extend_from_slice(version.as_bytes());
    full.push(b'|');
    full.extend_from_slice(aad);
    full
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
