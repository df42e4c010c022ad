//! Ward's key management (HIPAA § 164.312(a)(2)(iv), encryption and decryption): envelope
//! encryption with AES-256-GCM.
//!
//! PHI is sealed with per-scope [`DataKey`]s ([`seal`], [`open`]); data keys are stored only
//! wrapped by a versioned master key held by a [`KeyStore`]. The default store is
//! [`LocalKeyStore`], a keyring file sealed with a passphrase (argon2id); the others are
//! [`Pkcs11KeyStore`] (an HSM token) and, with the cargo feature `aws-kms`, `AwsKmsKeyStore`
//! (an AWS KMS key).

pub mod aead;
#[cfg(feature = "aws-kms")]
pub mod aws_kms;
pub mod cache;
pub mod error;
pub mod local;
pub mod pkcs11;
pub mod registry;
pub mod sealer;
pub mod store;

pub use aead::{DataKey, PLAINTEXT_OFFSET, SEALED_OVERHEAD, open, open_in_place, seal};
#[cfg(feature = "aws-kms")]
pub use aws_kms::AwsKmsKeyStore;
pub use cache::{CacheMetrics, CacheSettings, KeyCache};
pub use error::KeyError;
pub use local::{KdfCost, LocalKeyStore};
pub use pkcs11::Pkcs11KeyStore;
pub use registry::{AUDIT_SIGNING_SCOPE, DataKeys, KeyStatus, PEPPER_SCOPE, RewrapReport, VersionStatus};
pub use sealer::FileSealer;
pub use store::{KeyState, KeyStore, KeyVersionInfo, WrappedKey};
