//! The master-key store interface: wrapping and unwrapping data keys with versioned master
//! keys. Backends: [`crate::LocalKeyStore`] ("local"), [`crate::Pkcs11KeyStore`] ("pkcs11") and,
//! with the cargo feature `aws-kms`, `AwsKmsKeyStore` ("aws-kms").

use crate::aead::DataKey;
use crate::error::KeyError;

/// A data key wrapped (encrypted) by one master-key version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    pub version: u32,
    pub ciphertext: Vec<u8>,
}

/// The role of a master-key version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Wraps new data keys (exactly one version is active).
    Active,
    /// An older version: still unwraps, never wraps.
    DecryptOnly,
}

/// One master-key version as shown to operators (no key material).
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyVersionInfo {
    pub version: u32,
    pub state: KeyState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
}

/// A store of versioned master keys that wraps and unwraps data keys.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The backend's name: "local", "pkcs11" or "aws-kms".
    fn backend(&self) -> &'static str;

    /// Warnings an operator must see (e.g. an unsealed local keyring); shown in `/readyz`
    /// details and logs. Empty when all is well.
    fn warnings(&self) -> Vec<String>;

    /// Wraps `key` with the active master version. `aad` binds the wrapped key to its place
    /// (e.g. `b"ward:data-key:user/<id>"`); the same `aad` is needed to unwrap it.
    async fn wrap(&self, key: &DataKey, aad: &[u8]) -> Result<WrappedKey, KeyError>;

    /// A new random data key and its wrapped form. The default draws the key locally and
    /// [`KeyStore::wrap`]s it; a KMS overrides it with its own generation (GenerateDataKey).
    async fn generate(&self, aad: &[u8]) -> Result<(DataKey, WrappedKey), KeyError> {
        let key = DataKey::generate();
        let wrapped = self.wrap(&key, aad).await?;
        Ok((key, wrapped))
    }

    /// Unwraps with the version recorded in `wrapped`. A wrong `aad` or tampering is
    /// [`KeyError::Integrity`]; an unknown version is [`KeyError::UnknownVersion`].
    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<DataKey, KeyError>;

    /// All master versions, oldest first.
    async fn versions(&self) -> Result<Vec<KeyVersionInfo>, KeyError>;

    /// Creates a new master version, which becomes active; older ones become decrypt-only.
    /// Returns the new version.
    async fn rotate(&self) -> Result<u32, KeyError>;

    /// [`KeyStore::rotate`] as part of the caller's transaction (which holds the rotation's
    /// audit record). A store that keeps its keyring in the database writes it there, so
    /// the new version and its record commit together; the new version is used after
    /// [`KeyStore::refresh`]. Other stores rotate at once.
    async fn rotate_in(&self, tx: &mut dyn ward_storage::StoreTx) -> Result<u32, KeyError> {
        let _ = tx;
        self.rotate().await
    }

    /// Re-reads what another process may have changed (after a rotation committed).
    async fn refresh(&self) -> Result<(), KeyError> {
        Ok(())
    }
}

/// The AAD of a wrapped data key: `<prefix><version>|<caller's aad>`, so a wrapped key is
/// bound to its master version as well as to its place. Each backend has its own prefix.
pub(crate) fn versioned_aad(prefix: &[u8], version: u32, aad: &[u8]) -> Vec<u8> {
    let version = version.to_string();
    let mut full = Vec::with_capacity(prefix.len() + version.len() + 1 + aad.len());
    full.extend_from_slice(prefix);
    full.extend_from_slice(version.as_bytes());
    full.push(b'|');
    full.extend_from_slice(aad);
    full
}
