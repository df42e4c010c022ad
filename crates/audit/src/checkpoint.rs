//! Signed checkpoints of the chain head.
//!
//! A checkpoint says "record `seq` has hash `head_hash`", signed with Ed25519. Each one is
//! stored in the database *and* appended (one JSON line, fsynced) to a checkpoint file
//! outside it. Whoever rewrites rows and recomputes every hash cannot produce a matching
//! signature, and whoever deletes the newest rows and their checkpoints in the database
//! still leaves the file's checkpoint pointing past the end.
//!
//! The signing key is a file with mode 0600 beside its public half (`.pub`). The server
//! keeps it sealed (`ward-sealed-v1:<base64>`) by a [`SecretSealer`], which the key-management
//! module provides: AES-256-GCM under a data key wrapped by the master key, so a copy of
//! the data dir does not yield the key. A plain key file (64 hex characters, as written
//! before sealing existed or by tools) is sealed in place the next time it is loaded with
//! a sealer. Nodes sharing one PostgreSQL database are given the same key file
//! (`[audit] signing_key_file`); its data key lives in the shared database.

use std::fs::{self, OpenOptions};
use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use ward_storage::CheckpointRow;
use zeroize::Zeroizing;

const TAG_V1: &[u8] = b"ward-checkpoint/v1\n";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("audit signing key {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("audit signing key {path} is not 64 hex characters")]
    Malformed { path: PathBuf },
    #[error("audit signing key {path} is readable by others (mode {mode:03o}); fix with: chmod 600 {path}")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("audit signing key {path} is sealed and {reason}")]
    Sealed { path: PathBuf, reason: String },
}

/// Seals and opens small secrets (the signing key) with a key this crate does not hold.
/// Implemented by the key-management module; errors are operator-readable strings.
pub trait SecretSealer: Send + Sync {
    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, String>;
    fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, String>;
}

/// The prefix of a sealed key file.
const SEALED_PREFIX: &str = "ward-sealed-v1:";

/// One checkpoint, as stored in the database and in the checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub head_hash: String,
    pub time_us: i64,
    /// First 16 hex digits of SHA-256(public key).
    pub key_id: String,
    /// Base64 Ed25519 signature over the canonical message.
    pub signature: String,
}

impl Checkpoint {
    fn message(seq: i64, head_hash: &str, time_us: i64) -> Vec<u8> {
        let mut m = TAG_V1.to_vec();
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(&time_us.to_be_bytes());
        m.extend_from_slice(head_hash.as_bytes());
        m
    }

    /// True when the signature is valid under `key`.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let Ok(bytes) = STANDARD.decode(&self.signature) else { return false };
        let Ok(sig) = Signature::from_slice(&bytes) else { return false };
        key.verify(&Self::message(self.seq, &self.head_hash, self.time_us), &sig).is_ok()
    }

    pub fn to_row(&self) -> CheckpointRow {
        CheckpointRow {
            seq: self.seq,
            head_hash: self.head_hash.clone(),
            time_us: self.time_us,
            key_id: self.key_id.clone(),
            signature: self.signature.clone(),
        }
    }

    pub fn from_row(r: &CheckpointRow) -> Self {
        Checkpoint {
            seq: r.seq,
            head_hash: r.head_hash.clone(),
            time_us: r.time_us,
            key_id: r.key_id.clone(),
            signature: r.signature.clone(),
        }
    }
}

/// The Ed25519 key that signs checkpoints. `Debug` shows only the key id.
pub struct CheckpointSigner {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner").field("key_id", &self.key_id).finish()
    }
}

/// The key id of a public key.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

impl CheckpointSigner {
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&secret);
        let key_id = key_id(&key.verifying_key());
        Self { key, key_id }
    }

    /// Loads the key file, or creates it (0600, with a `.pub` beside it) if missing. The
    /// file is kept plain (hex): for tools and tests; the server uses
    /// [`CheckpointSigner::load_or_create_sealed`].
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        Self::load_or_create_with(path, None)
    }

    /// Like [`CheckpointSigner::load_or_create`], keeping the secret sealed by `sealer`
    /// (a plain file is sealed in place).
    pub fn load_or_create_sealed(path: &Path, sealer: &dyn SecretSealer) -> Result<Self, KeyError> {
        Self::load_or_create_with(path, Some(sealer))
    }

    fn load_or_create_with(path: &Path, sealer: Option<&dyn SecretSealer>) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io { path: path.to_path_buf(), source };
        if !path.exists() {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(io)?;
            }
            let mut secret = Zeroizing::new([0u8; 32]);
            rand::RngCore::fill_bytes(&mut rand::rng(), secret.as_mut());
            let signer = Self::from_secret(*secret);
            let text = key_file_text(path, &secret, sealer)?;
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
            f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(io)?;
            fs::write(public_path(path), hex::encode(signer.verifying_key().as_bytes())).map_err(io)?;
            return Ok(signer);
        }
        let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen { path: path.to_path_buf(), mode });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io)?);
        let mut secret = Zeroizing::new([0u8; 32]);
        match text.trim().strip_prefix(SEALED_PREFIX) {
            Some(encoded) => {
                let sealed = |reason: String| KeyError::Sealed { path: path.to_path_buf(), reason };
                let sealer = sealer.ok_or_else(|| sealed("this command cannot open it".into()))?;
                let bytes = STANDARD.decode(encoded).map_err(|_| KeyError::Malformed { path: path.to_path_buf() })?;
                let plain = sealer.open(&bytes).map_err(|e| sealed(format!("cannot be opened: {e}")))?;
                if plain.len() != 32 {
                    return Err(KeyError::Malformed { path: path.to_path_buf() });
                }
                secret.copy_from_slice(&plain);
            }
            None => {
                hex::decode_to_slice(text.trim(), secret.as_mut())
                    .map_err(|_| KeyError::Malformed { path: path.to_path_buf() })?;
                if sealer.is_some() {
                    let sealed_text = key_file_text(path, &secret, sealer)?;
                    // Overwrite the plain key's bytes in place before the sealed file
                    // replaces it, so they do not linger in the old file's blocks (on a
                    // copy-on-write or flash device, only encryption of the disk helps).
                    scrub_file(path).map_err(io)?;
                    replace_file(path, sealed_text.as_bytes()).map_err(io)?;
                    tracing::info!(path = %path.display(), "sealed the plain audit signing key file");
                }
            }
        }
        Ok(Self::from_secret(*secret))
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn sign(&self, seq: i64, head_hash: &str, time_us: i64) -> Checkpoint {
        let sig = self.key.sign(&Checkpoint::message(seq, head_hash, time_us));
        Checkpoint {
            seq,
            head_hash: head_hash.to_string(),
            time_us,
            key_id: self.key_id.clone(),
            signature: STANDARD.encode(sig.to_bytes()),
        }
    }
}

/// The key file's text: hex, or sealed by `sealer`.
fn key_file_text(
    path: &Path,
    secret: &[u8; 32],
    sealer: Option<&dyn SecretSealer>,
) -> Result<Zeroizing<String>, KeyError> {
    match sealer {
        None => Ok(Zeroizing::new(hex::encode(secret))),
        Some(sealer) => {
            let sealed = sealer.seal(secret).map_err(|reason| KeyError::Sealed {
                path: path.to_path_buf(),
                reason: format!("cannot be sealed: {reason}"),
            })?;
            Ok(Zeroizing::new(format!("{SEALED_PREFIX}{}\n", STANDARD.encode(sealed))))
        }
    }
}

/// Overwrites a file's contents with zeros, in place, and syncs it.
fn scrub_file(path: &Path) -> std::io::Result<()> {
    let len = fs::metadata(path)?.len();
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(&vec![0u8; usize::try_from(len).unwrap_or(0)])?;
    f.sync_all()
}

/// Writes `bytes` to a 0600 temporary file beside `path`, syncs it and renames it over `path`.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `<key file>.pub`.
pub fn public_path(key_path: &Path) -> PathBuf {
    let mut p = key_path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Reads a public key file (64 hex characters).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_path_buf(), source })?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| KeyError::Malformed { path: path.to_path_buf() })?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Malformed { path: path.to_path_buf() })
}

/// Appends a checkpoint to the file outside the database and flushes it to disk.
pub fn append_to_file(path: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    let line = serde_json::to_string(checkpoint).map_err(std::io::Error::other)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

/// Every checkpoint in the file; a missing file holds none. Lines that do not parse are
/// returned as errors with their line number.
pub fn read_file(path: &Path) -> std::io::Result<Vec<Result<Checkpoint, usize>>> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|_| i + 1));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_seq_hash_and_time() {
        let s = CheckpointSigner::from_secret([7; 32]);
        let c = s.sign(10, &"a".repeat(64), 99);
        let k = s.verifying_key();
        assert!(c.verify(&k));
        assert!(!Checkpoint { seq: 11, ..c.clone() }.verify(&k));
        assert!(!Checkpoint { head_hash: "b".repeat(64), ..c.clone() }.verify(&k));
        assert!(!Checkpoint { time_us: 100, ..c.clone() }.verify(&k));
        assert!(!c.verify(&CheckpointSigner::from_secret([8; 32]).verifying_key()));
    }

    #[test]
    fn key_file_is_created_private_and_reloads() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit/signing.key");
        let a = CheckpointSigner::load_or_create(&path).expect("create");
        assert_eq!(fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        let b = CheckpointSigner::load_or_create(&path).expect("load");
        assert_eq!(a.key_id(), b.key_id());
        assert_eq!(read_public_key(&public_path(&path)).expect("pub"), a.verifying_key());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(CheckpointSigner::load_or_create(&path), Err(KeyError::TooOpen { .. })));
    }

    #[test]
    fn checkpoint_file_round_trips() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("checkpoints.jsonl");
        assert!(read_file(&path).expect("missing is empty").is_empty());
        let s = CheckpointSigner::from_secret([1; 32]);
        append_to_file(&path, &s.sign(1, "h1", 1)).expect("append");
        append_to_file(&path, &s.sign(2, "h2", 2)).expect("append");
        let back: Vec<_> = read_file(&path).expect("read").into_iter().map(|r| r.expect("parses")).collect();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].seq, 2);
    }
}
