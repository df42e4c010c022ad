//! The AWS KMS key store ("aws-kms", cargo feature `aws-kms`): Ward's master key is a
//! symmetric KMS key and never leaves AWS KMS. Data keys are generated, wrapped and
//! unwrapped by KMS itself.
//!
//! **The KMS key.** `keys.aws_kms.key_id` names a customer managed symmetric encryption key
//! (`KeySpec` `SYMMETRIC_DEFAULT`, `KeyUsage` `ENCRYPT_DECRYPT`) by key id, key ARN, alias
//! name or alias ARN. [`AwsKmsKeyStore::open`] checks with `DescribeKey` that it exists, is
//! enabled and is such a key, and refuses to start otherwise. It keeps the key ARN that
//! `DescribeKey` resolved, and every later call names that ARN: pointing the alias at another
//! key while Ward runs changes nothing until the next start, and a data key is only ever
//! decrypted with the one key Ward was configured with (`Decrypt` is called with `KeyId`).
//! Do not point the alias at another key later: data keys wrapped under the old key would no
//! longer unwrap. Rotate the key in KMS instead (see below).
//!
//! **Calls.** [`KeyStore::generate`] is `GenerateDataKey` (`AES_256`): KMS draws the data
//! key and returns it together with its `CiphertextBlob`, which is stored as the
//! [`WrappedKey`] as it is. [`KeyStore::wrap`] is `Encrypt` of an existing data key (the
//! rewrap uses it), [`KeyStore::unwrap`] is `Decrypt`. Each call carries the encryption
//! context `{"ward:aad": <base64 of the caller's AAD>, "ward:format": "1"}` (no `ward:aad`
//! for an empty AAD), so a wrapped key only unwraps at the place it was made for; the
//! context also shows in CloudTrail, which then says which data key (scope and id) each call
//! was for. `Decrypt` refusing the ciphertext (`InvalidCiphertextException`: a wrong context
//! or altered bytes) or finding it made under another KMS key (`IncorrectKeyException`) is
//! [`KeyError::Integrity`]; every other failure is [`KeyError::Keyring`] with the KMS error
//! code and message (for `AccessDeniedException` also the IAM permission the call needs), or
//! with what kept the call from reaching KMS. [`AwsKmsKeyStore::open`] gives each call 5 s to
//! connect, 10 s per attempt and 30 s with the SDK's retries.
//!
//! **IAM.** Ward's AWS identity needs `kms:DescribeKey`, `kms:GenerateDataKey`,
//! `kms:Encrypt`, `kms:Decrypt` and `kms:ListKeyRotations` on the key, and
//! `kms:RotateKeyOnDemand` for `ward keys rotate` and the scheduled rotation. Credentials and
//! region come from the usual AWS chain (environment, shared config and credentials files,
//! web identity, ECS and EC2 instance roles; not SSO logins, which are for people and would
//! add two SDK crates to the build); `keys.aws_kms.region` and
//! `keys.aws_kms.endpoint` (a VPC endpoint, or a test server) override it.
//!
//! **Versions and rotation.** KMS keeps every backing key (key material) of a KMS key and
//! decrypts a ciphertext with the material that encrypted it, after any number of
//! rotations. Ward therefore never needs to rewrap a data key after a KMS rotation, and this
//! store reports one master version only:
//! - [`KeyStore::versions`] is version 1, [`KeyState::Active`], whose `created_at` is the
//!   date of the key's newest key material: the newest rotation date from
//!   `ListKeyRotations`, or the key's `CreationDate` if it was never rotated. Ward's
//!   scheduled rotation (`keys.rotation_days`) compares the active version's age with that
//!   period, so with this date it rotates once per period, not at every check once the key
//!   itself is older than the period; when KMS automatic rotation is on with a period no
//!   longer than `keys.rotation_days`, Ward never needs to rotate by itself.
//! - [`KeyStore::rotate`] is `RotateKeyOnDemand` (KMS makes new key material and uses it for
//!   new data keys; old material still decrypts) and returns 1. The rewrap that follows a
//!   rotation in [`crate::DataKeys`] finds no data key under an older version, so it has
//!   nothing to do. KMS allows only a few on-demand rotations per key, and none for keys
//!   with imported material or in a custom key store; when it refuses, the error says to
//!   rotate in KMS or to turn on automatic rotation.
//! - A [`WrappedKey`] of any other version is [`KeyError::UnknownVersion`].
//!
//! **Key bytes in memory.** The plaintext data key that `GenerateDataKey` and `Decrypt`
//! return is taken out of the SDK's response and zeroized once it is copied into the
//! [`DataKey`]. The copy of a data key that Ward hands to `Encrypt`, and the SDK's own HTTP
//! buffers (the base64 JSON of requests and responses), belong to the SDK and are not
//! zeroized: that is beyond Ward's reach.
//!
//! **CI.** moto's KMS server (`pip install 'moto[server]'`, command `moto_server`) is the
//! test peer: `tests/aws_kms.rs` runs every case against it on loopback. moto binds the
//! encryption context into its AES-GCM ciphertexts as KMS does and supports
//! `RotateKeyOnDemand` and `ListKeyRotations` (it records the rotation but keeps the key
//! material). Unlike KMS it answers `AccessDeniedException` for a ciphertext made under
//! another key (and for one whose embedded key id was altered), and it still encrypts and
//! decrypts with a disabled key.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::Client;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::operation::list_key_rotations::ListKeyRotationsError;
use aws_sdk_kms::operation::rotate_key_on_demand::RotateKeyOnDemandError;
use aws_sdk_kms::primitives::{Blob, DateTime};
use aws_sdk_kms::types::{DataKeySpec, KeyMetadata, KeySpec, KeyState as KmsKeyState, KeyUsageType};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::aead::DataKey;
use crate::error::KeyError;
use crate::store::{KeyState, KeyStore, KeyVersionInfo, WrappedKey};

/// The one master version this store reports (see the module docs).
const VERSION: u32 = 1;
/// Encryption-context key holding the base64 of the caller's AAD.
const CONTEXT_AAD: &str = "ward:aad";
/// Encryption-context key holding the format of Ward's context.
const CONTEXT_FORMAT: &str = "ward:format";
const FORMAT_V1: &str = "1";
/// KMS accepts ciphertext blobs of 1 to 6144 bytes.
const MAX_CIPHERTEXT: usize = 6144;
/// Time to open a connection to KMS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for one attempt of a KMS call, and for a call with its retries.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A key store whose master key is a symmetric AWS KMS key. See the module docs.
#[derive(Clone)]
pub struct AwsKmsKeyStore {
    client: Client,
    /// The key as configured (key id, ARN or alias), for messages.
    configured: String,
    /// The key's ARN as `DescribeKey` resolved it at open; every call names it.
    arn: String,
    region: String,
}

impl std::fmt::Debug for AwsKmsKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client (and its credentials) stay out.
        f.debug_struct("AwsKmsKeyStore")
            .field("key_id", &self.configured)
            .field("key_arn", &self.arn)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl AwsKmsKeyStore {
    /// Opens the KMS key `key_id` (key id, key ARN, alias name or alias ARN) with credentials
    /// and region from the usual AWS chain. `region` overrides the chain's region, `endpoint`
    /// the KMS endpoint (a VPC endpoint, or a test server). Checks with `DescribeKey` that the
    /// key exists, is enabled and is a symmetric encryption key.
    pub async fn open(key_id: &str, region: Option<&str>, endpoint: Option<&str>) -> Result<Self, KeyError> {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(CALL_TIMEOUT)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(region) = region.filter(|r| !r.is_empty()) {
            loader = loader.region(Region::new(region.to_string()));
        }
        if let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) {
            loader = loader.endpoint_url(endpoint);
        }
        Self::with_config(&loader.load().await, key_id).await
    }

    /// Like [`AwsKmsKeyStore::open`], with an SDK configuration made by the caller (its
    /// credentials, region, endpoint and timeouts), e.g. a test's static credentials.
    pub async fn with_config(config: &SdkConfig, key_id: &str) -> Result<Self, KeyError> {
        let key_id = key_id.trim();
        if key_id.is_empty() {
            return Err(KeyError::Keyring(
                "no AWS KMS key is configured: set keys.aws_kms.key_id (or WARD_KEYS_AWS_KMS_KEY_ID) to the key id, \
                 key ARN or alias of a symmetric KMS key"
                    .into(),
            ));
        }
        let region = config.region().map(ToString::to_string).ok_or_else(|| {
            KeyError::Keyring(format!(
                "no AWS region for KMS key '{key_id}': set keys.aws_kms.region, AWS_REGION or the region of the AWS \
                 profile"
            ))
        })?;
        let client = Client::new(config);
        let metadata = describe(&client, key_id, &region).await?;
        let arn = metadata.arn().unwrap_or(metadata.key_id()).to_string();
        let store = Self { client, configured: key_id.to_string(), arn, region };
        store.check(&metadata)?;
        tracing::info!(key_id = %store.configured, key_arn = %store.arn, region = %store.region, "using the AWS KMS key as master key");
        Ok(store)
    }

    /// The key's metadata, checked to be usable.
    async fn metadata(&self) -> Result<KeyMetadata, KeyError> {
        let metadata = describe(&self.client, &self.arn, &self.region).await?;
        self.check(&metadata)?;
        Ok(metadata)
    }

    /// Refuses a key that is not an enabled symmetric encryption key.
    fn check(&self, metadata: &KeyMetadata) -> Result<(), KeyError> {
        let name = self.name();
        let usage = metadata.key_usage();
        if usage != Some(&KeyUsageType::EncryptDecrypt) {
            return Err(KeyError::Keyring(format!(
                "{name} has key usage {}; Ward needs a symmetric encryption key (KeySpec SYMMETRIC_DEFAULT, KeyUsage \
                 ENCRYPT_DECRYPT)",
                usage.map_or("(none)", KeyUsageType::as_str)
            )));
        }
        let spec = metadata.key_spec().map(KeySpec::as_str);
        if spec != Some(KeySpec::SymmetricDefault.as_str()) {
            return Err(KeyError::Keyring(format!(
                "{name} has key spec {}; Ward needs a symmetric encryption key (KeySpec SYMMETRIC_DEFAULT, KeyUsage \
                 ENCRYPT_DECRYPT)",
                spec.unwrap_or("(none)")
            )));
        }
        let state = metadata.key_state();
        match state {
            Some(KmsKeyState::Enabled) if metadata.enabled() => Ok(()),
            Some(KmsKeyState::PendingDeletion) => Err(KeyError::Keyring(format!(
                "{name} is scheduled for deletion: cancel the deletion (aws kms cancel-key-deletion) and enable the \
                 key, or every data key it wraps is lost when it is deleted"
            ))),
            Some(KmsKeyState::Disabled) => Err(KeyError::Keyring(format!(
                "{name} is disabled: enable it in AWS KMS (aws kms enable-key) to use it"
            ))),
            other => Err(KeyError::Keyring(format!(
                "{name} is not usable: its state is {} (it must be Enabled)",
                other.map_or("unknown", KmsKeyState::as_str)
            ))),
        }
    }

    /// "AWS KMS key '<configured>' (<arn>, region <region>)", for messages.
    fn name(&self) -> String {
        if self.configured == self.arn {
            format!("AWS KMS key '{}' (region {})", self.arn, self.region)
        } else {
            format!("AWS KMS key '{}' ({}, region {})", self.configured, self.arn, self.region)
        }
    }

    /// A failed call as an operator reads it.
    fn failure<E, R>(&self, operation: &str, e: &SdkError<E, R>) -> KeyError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        KeyError::Keyring(format!("{operation} with {} failed: {}", self.name(), describe_error(operation, e)))
    }

    /// The date of the key's newest key material: its newest rotation, else its creation.
    async fn material_date(&self, metadata: &KeyMetadata) -> Result<OffsetDateTime, KeyError> {
        let created = metadata.creation_date().map(to_offset).transpose()?;
        let mut newest = created;
        let mut marker = None;
        loop {
            let page = match self.client.list_key_rotations().key_id(&self.arn).set_marker(marker).send().await {
                Ok(page) => page,
                // Keys in a custom key store have no rotations to list.
                Err(e)
                    if matches!(
                        e.as_service_error(),
                        Some(ListKeyRotationsError::UnsupportedOperationException(_))
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(self.failure("ListKeyRotations", &e)),
            };
            for rotated in page.rotations().iter().filter_map(|r| r.rotation_date()) {
                let rotated = to_offset(rotated)?;
                newest = Some(newest.map_or(rotated, |n| n.max(rotated)));
            }
            match page.next_marker() {
                Some(next) if page.truncated() => marker = Some(next.to_string()),
                _ => break,
            }
        }
        newest.ok_or_else(|| KeyError::Keyring(format!("AWS KMS did not say when {} was created", self.name())))
    }
}

#[async_trait::async_trait]
impl KeyStore for AwsKmsKeyStore {
    fn backend(&self) -> &'static str {
        "aws-kms"
    }

    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    async fn wrap(&self, key: &DataKey, aad: &[u8]) -> Result<WrappedKey, KeyError> {
        let out = self
            .client
            .encrypt()
            .key_id(&self.arn)
            .plaintext(Blob::new(key.expose().to_vec()))
            .set_encryption_context(Some(context(aad)))
            .send()
            .await
            .map_err(|e| self.failure("Encrypt", &e))?;
        let ciphertext = out.ciphertext_blob.map(Blob::into_inner).unwrap_or_default();
        if ciphertext.is_empty() {
            return Err(KeyError::Crypto(format!("AWS KMS Encrypt with {} returned no ciphertext", self.name())));
        }
        Ok(WrappedKey { version: VERSION, ciphertext })
    }

    async fn generate(&self, aad: &[u8]) -> Result<(DataKey, WrappedKey), KeyError> {
        let mut out = self
            .client
            .generate_data_key()
            .key_id(&self.arn)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context(aad)))
            .send()
            .await
            .map_err(|e| self.failure("GenerateDataKey", &e))?;
        // `into_inner` hands over the SDK's buffer (no copy) when it owns it alone, as after
        // decoding the response; that buffer is zeroized here.
        let plaintext = Zeroizing::new(out.plaintext.take().map(Blob::into_inner).unwrap_or_default());
        let ciphertext = out.ciphertext_blob.take().map(Blob::into_inner).unwrap_or_default();
        let key = DataKey::from_bytes(&plaintext).map_err(|_| {
            KeyError::Crypto(format!(
                "AWS KMS GenerateDataKey with {} returned a {}-byte data key (expected 32)",
                self.name(),
                plaintext.len()
            ))
        })?;
        if ciphertext.is_empty() {
            return Err(KeyError::Crypto(format!(
                "AWS KMS GenerateDataKey with {} returned no ciphertext",
                self.name()
            )));
        }
        Ok((key, WrappedKey { version: VERSION, ciphertext }))
    }

    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<DataKey, KeyError> {
        if wrapped.version != VERSION {
            return Err(KeyError::UnknownVersion(wrapped.version));
        }
        if wrapped.ciphertext.is_empty() || wrapped.ciphertext.len() > MAX_CIPHERTEXT {
            return Err(KeyError::Integrity);
        }
        let result = self
            .client
            .decrypt()
            .key_id(&self.arn)
            .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
            .set_encryption_context(Some(context(aad)))
            .send()
            .await;
        let mut out = match result {
            Ok(out) => out,
            Err(e) => {
                return Err(match e.as_service_error() {
                    Some(DecryptError::InvalidCiphertextException(_)) => KeyError::Integrity,
                    Some(DecryptError::IncorrectKeyException(_)) => {
                        tracing::warn!(key_arn = %self.arn, "a wrapped data key was encrypted under another AWS KMS key than the configured one (was keys.aws_kms.key_id changed, or the alias pointed at another key?)");
                        KeyError::Integrity
                    }
                    _ => self.failure("Decrypt", &e),
                });
            }
        };
        let plaintext = Zeroizing::new(out.plaintext.take().map(Blob::into_inner).unwrap_or_default());
        DataKey::from_bytes(&plaintext).map_err(|_| KeyError::Integrity)
    }

    async fn versions(&self) -> Result<Vec<KeyVersionInfo>, KeyError> {
        let metadata = self.metadata().await?;
        let created_at = self.material_date(&metadata).await?;
        Ok(vec![KeyVersionInfo { version: VERSION, state: KeyState::Active, created_at }])
    }

    async fn rotate(&self) -> Result<u32, KeyError> {
        if let Err(e) = self.client.rotate_key_on_demand().key_id(&self.arn).send().await {
            let refused = matches!(
                e.as_service_error(),
                Some(
                    RotateKeyOnDemandError::UnsupportedOperationException(_)
                        | RotateKeyOnDemandError::LimitExceededException(_)
                        | RotateKeyOnDemandError::ConflictException(_)
                        | RotateKeyOnDemandError::KmsInvalidStateException(_)
                )
            );
            if refused {
                return Err(KeyError::Keyring(format!(
                    "AWS KMS refused to rotate {} on demand ({}): rotate the key in AWS KMS or enable its automatic \
                     rotation (aws kms enable-key-rotation); no data key needs rewrapping after a KMS rotation",
                    self.name(),
                    describe_error("RotateKeyOnDemand", &e)
                )));
            }
            return Err(self.failure("RotateKeyOnDemand", &e));
        }
        tracing::info!(key_arn = %self.arn, "AWS KMS is rotating the key material of the master key: new data keys are wrapped with the new material, older ones still unwrap and need no rewrap");
        Ok(VERSION)
    }
}

/// `DescribeKey` of `key_id`, with a clear message when the key is missing.
async fn describe(client: &Client, key_id: &str, region: &str) -> Result<KeyMetadata, KeyError> {
    let out = client.describe_key().key_id(key_id).send().await.map_err(|e| {
        let hint = match e.code() {
            Some("NotFoundException") => {
                " (no such key in this account and region: check keys.aws_kms.key_id and keys.aws_kms.region)"
            }
            Some("InvalidArnException") => " (check keys.aws_kms.key_id: a key id, key ARN, alias name or alias ARN)",
            _ => "",
        };
        KeyError::Keyring(format!(
            "DescribeKey of AWS KMS key '{key_id}' (region {region}) failed: {}{hint}",
            describe_error("DescribeKey", &e)
        ))
    })?;
    out.key_metadata
        .ok_or_else(|| KeyError::Keyring(format!("AWS KMS returned no metadata for key '{key_id}' (region {region})")))
}

/// A failed KMS call in one line: the service's error code and message, or what kept the
/// call from reaching KMS. Never holds credentials or key material.
fn describe_error<E, R>(operation: &str, e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(_) => {
            let code = e.code().unwrap_or("unknown error");
            let mut text = match e.message() {
                Some(message) if !message.is_empty() => format!("{code}: {message}"),
                _ => code.to_string(),
            };
            if code == "AccessDeniedException" {
                text.push_str(&format!(" (Ward's AWS identity may lack kms:{operation} on this key)"));
            }
            text
        }
        SdkError::TimeoutError(_) => format!("no answer from AWS KMS in time ({})", chain(e)),
        _ => format!(
            "the request did not reach AWS KMS (check the AWS credentials, the region and keys.aws_kms.endpoint): {}",
            chain(e)
        ),
    }
}

/// An error and its sources, each shown once: "dispatch failure: io error: ...".
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// The encryption context of every call: the caller's AAD (base64) and the context format.
/// An empty AAD has no `ward:aad` entry (KMS takes no empty values); the base64 of any
/// other AAD is not empty, so the context still names exactly one AAD.
fn context(aad: &[u8]) -> HashMap<String, String> {
    let mut context = HashMap::from([(CONTEXT_FORMAT.to_string(), FORMAT_V1.to_string())]);
    if !aad.is_empty() {
        context.insert(CONTEXT_AAD.to_string(), B64.encode(aad));
    }
    context
}

fn to_offset(t: &DateTime) -> Result<OffsetDateTime, KeyError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.secs()) * 1_000_000_000 + i128::from(t.subsec_nanos()))
        .map_err(|_| KeyError::Keyring(format!("AWS KMS returned a date out of range ({} seconds)", t.secs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_carries_the_aad_unambiguously() {
        let c = context(b"ward:data-key|user/1|x");
        assert_eq!(c.len(), 2);
        assert_eq!(c[CONTEXT_FORMAT], "1");
        assert_eq!(B64.decode(&c[CONTEXT_AAD]).expect("base64"), b"ward:data-key|user/1|x");
        assert_ne!(context(b"a")[CONTEXT_AAD], context(b"a\0")[CONTEXT_AAD]);
        assert_eq!(context(b"").len(), 1, "an empty AAD adds no entry");
    }

    #[test]
    fn kms_dates_keep_their_subseconds() {
        let t = DateTime::from_secs_and_nanos(1_767_225_600, 250_000_000);
        let o = to_offset(&t).expect("in range");
        assert_eq!((o.unix_timestamp(), o.millisecond()), (1_767_225_600, 250));
    }
}
