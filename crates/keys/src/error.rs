//! The one error type of ward-keys. Messages are written for an operator and never contain
//! key material.

/// Everything that can go wrong with keys, keyrings and sealed data.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Authentication failed: the ciphertext, its AAD or its key does not match.
    #[error("ciphertext failed authentication: it was altered or moved")]
    Integrity,
    /// A wrapped key names a master-key version the key store does not have.
    #[error("unknown master key version {0}: the keyring does not hold it")]
    UnknownVersion(u32),
    /// The sealed keyring could not be opened (wrong or missing passphrase, or damage).
    #[error(
        "the keyring could not be opened: wrong or missing WARD_MASTER_PASSPHRASE (a sealed keyring requires it) \
         or a damaged keyring file"
    )]
    WrongPassphrase,
    /// The keyring is malformed or unusable; the message never contains key material.
    #[error("keyring error: {0}")]
    Keyring(String),
    /// Reading or writing the keyring failed.
    #[error("keyring I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Key bytes of the wrong length.
    #[error("invalid key: a data key must be exactly 32 bytes")]
    InvalidKey,
    /// A data key was destroyed (cryptographic erase): what it encrypted is gone for good.
    #[error("data key {0} was destroyed")]
    Destroyed(String),
    /// The database holding wrapped data keys failed.
    #[error(transparent)]
    Store(#[from] ward_storage::StoreError),
    /// The audit record of a key operation could not be written, so it did not happen.
    #[error("the audit trail cannot be written: {0}")]
    Audit(String),
    /// The cryptographic library failed (not an authentication failure).
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),
}
