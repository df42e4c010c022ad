//! Small secrets kept in files (the audit signing key) sealed with a data key:
//! [`FileSealer`] implements the audit crate's [`ward_audit::SecretSealer`].

use zeroize::Zeroizing;

use crate::{DataKey, open, seal};

/// Seals with one data key and a fixed AAD naming what is sealed and the key's id, so a
/// sealed file moved to another purpose does not open.
pub struct FileSealer {
    key: DataKey,
    aad: Vec<u8>,
}

impl std::fmt::Debug for FileSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSealer").field("aad", &String::from_utf8_lossy(&self.aad)).finish_non_exhaustive()
    }
}

impl FileSealer {
    /// `purpose` names the secret (e.g. `audit-signing-key`); `key_id` is the data key's id.
    pub fn new(key: DataKey, purpose: &str, key_id: uuid::Uuid) -> Self {
        Self { key, aad: format!("ward:sealed-file|{purpose}|{key_id}").into_bytes() }
    }
}

impl ward_audit::SecretSealer for FileSealer {
    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, String> {
        seal(&self.key, &self.aad, plain).map_err(|e| e.to_string())
    }

    fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        open(&self.key, &self.aad, sealed).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use ward_audit::CheckpointSigner;

    use super::*;

    #[test]
    fn the_signing_key_file_is_sealed_reloads_and_refuses_another_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit/signing.key");
        let (key, id) = (DataKey::generate(), uuid::Uuid::now_v7());
        let sealer = FileSealer::new(key.clone(), "audit-signing-key", id);
        let made = CheckpointSigner::load_or_create_sealed(&path, &sealer).expect("create");
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("ward-sealed-v1:"), "sealed on disk");
        assert!(CheckpointSigner::load_or_create(&path).is_err(), "not readable without the sealer");
        let again = CheckpointSigner::load_or_create_sealed(&path, &sealer).expect("reload");
        assert_eq!(made.key_id(), again.key_id());
        let stranger = FileSealer::new(DataKey::generate(), "audit-signing-key", id);
        assert!(CheckpointSigner::load_or_create_sealed(&path, &stranger).is_err(), "another data key");
        let moved = FileSealer::new(key, "other-purpose", id);
        assert!(CheckpointSigner::load_or_create_sealed(&path, &moved).is_err(), "another purpose (AAD)");
    }

    #[test]
    fn a_plain_key_file_is_sealed_in_place_and_keeps_its_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("signing.key");
        let plain = CheckpointSigner::load_or_create(&path).expect("plain");
        let hex_secret = fs::read_to_string(&path).expect("read");
        assert_eq!(hex_secret.trim().len(), 64);
        let sealer = FileSealer::new(DataKey::generate(), "audit-signing-key", uuid::Uuid::now_v7());
        let sealed = CheckpointSigner::load_or_create_sealed(&path, &sealer).expect("seal in place");
        assert_eq!(plain.key_id(), sealed.key_id(), "same signing key");
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("ward-sealed-v1:") && !text.contains(hex_secret.trim()), "no plain copy left");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
    }
}
