//! Password hashing with argon2id (RFC 9106) and strong password generation.
//!
//! Hashes are PHC strings, so each carries its own parameters and salt; raising the
//! parameters later only affects new hashes, and old ones still verify; sign-in rehashes a
//! password whose stored parameters differ from the configured ones
//! ([`PasswordHasher::needs_rehash`]). Default: m = 64 MiB, t = 3, p = 1 (RFC 9106's second
//! recommended option), chosen by measurement (docs/authentication.md); the floor is the
//! OWASP / SAFEGUARDS.md minimum m = 19 MiB, t = 2.
//!
//! **Pepper.** With [`PasswordHasher::with_pepper`], hashes are keyed with a server-side
//! secret (argon2's `secret` input) that lives in the key store, not in the database, so
//! a stolen database alone does not allow offline guessing. The PHC string records the
//! pepper's 8-byte fingerprint as `keyid`, so a hash made without the pepper (or with
//! another one) is recognised: unpeppered hashes still verify and are rehashed at the
//! next sign-in; a hash under an unknown pepper is an error, never a silent mismatch.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::Digest as _;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The argon2 parameters are outside what the algorithm accepts.
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    /// Hashing failed (only with impossible inputs such as a 4 GiB password).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// A stored hash could not be parsed: the record is corrupt.
    #[error("stored password hash is malformed")]
    MalformedHash,
    /// A stored hash was keyed with a pepper this server does not have (a database
    /// restored beside the wrong key store).
    #[error("stored password hash uses an unknown pepper: is this the right key store?")]
    UnknownPepper,
}

/// Default memory cost in KiB (64 MiB).
pub const DEFAULT_M_KIB: u32 = 64 * 1024;
/// Default iterations.
pub const DEFAULT_T: u32 = 3;

/// The server-side secret mixed into every hash, and its fingerprint.
#[derive(Clone)]
struct Pepper {
    secret: std::sync::Arc<zeroize::Zeroizing<Vec<u8>>>,
    id: [u8; 8],
}

/// Hashes and verifies passwords with fixed argon2id parameters.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    pepper: Option<Pepper>,
    /// A valid hash of a random password, verified when the user does not exist so that
    /// an unknown username costs the same time as a wrong password.
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", self.argon.params())
            .field("peppered", &self.pepper.is_some())
            .finish()
    }
}

impl PasswordHasher {
    /// Memory in KiB, iterations, parallelism.
    pub fn new(m_kib: u32, t: u32, p: u32) -> Result<Self, PasswordError> {
        let params = Params::new(m_kib, t, p, None).map_err(|e| PasswordError::Params(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut hasher = Self { argon, pepper: None, dummy_hash: String::new() };
        hasher.dummy_hash = hasher.hash(&generate_password())?;
        Ok(hasher)
    }

    /// The same hasher keyed with a server-side pepper (16 to 64 bytes).
    pub fn with_pepper(mut self, secret: zeroize::Zeroizing<Vec<u8>>) -> Result<Self, PasswordError> {
        if !(16..=64).contains(&secret.len()) {
            return Err(PasswordError::Params("the pepper must be 16 to 64 bytes".into()));
        }
        let digest = sha2::Sha256::digest([b"ward:pepper-id:".as_slice(), &secret].concat());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        self.pepper = Some(Pepper { secret: std::sync::Arc::new(secret), id });
        self.dummy_hash = self.hash(&generate_password())?;
        Ok(self)
    }

    /// The argon2 context for hashing (`keyed` = with the pepper) or for a stored hash.
    fn context<'a>(&'a self, keyid: Option<&[u8]>) -> Result<Argon2<'a>, PasswordError> {
        let params = self.argon.params().clone();
        match (keyid, &self.pepper) {
            (None, _) => Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params)),
            (Some(id), Some(p)) if id == p.id => {
                let mut b = argon2::ParamsBuilder::new();
                b.m_cost(params.m_cost()).t_cost(params.t_cost()).p_cost(params.p_cost());
                let keyid = argon2::KeyId::new(&p.id).map_err(|e| PasswordError::Params(e.to_string()))?;
                b.keyid(keyid);
                let params = b.build().map_err(|e| PasswordError::Params(e.to_string()))?;
                Argon2::new_with_secret(&p.secret, Algorithm::Argon2id, Version::V0x13, params)
                    .map_err(|e| PasswordError::Params(e.to_string()))
            }
            (Some(_), _) => Err(PasswordError::UnknownPepper),
        }
    }
    /// The default parameters: m = 64 MiB, t = 3, p = 1.
    pub fn default_params() -> Result<Self, PasswordError> {
        Self::new(DEFAULT_M_KIB, DEFAULT_T, 1)
    }

    /// True when `stored` was made with other parameters (or another algorithm) than
    /// this hasher's, so it should be replaced after a successful verification.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else { return true };
        let Ok(params) = Params::try_from(&parsed) else { return true };
        let mine = self.argon.params();
        let pepper_id = self.pepper.as_ref().map(|p| p.id.as_slice());
        let stored_id = (!params.keyid().is_empty()).then(|| params.keyid());
        stored_id != pepper_id
            || parsed.algorithm.as_str() != "argon2id"
            || params.m_cost() != mine.m_cost()
            || params.t_cost() != mine.t_cost()
            || params.p_cost() != mine.p_cost()
    }

    /// A PHC-format argon2id hash of `password` with a fresh 128-bit salt.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        self.context(self.pepper.as_ref().map(|p| p.id.as_slice()))?
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// True when `password` matches `stored`. With `stored = None` (no such user) a dummy
    /// hash is verified anyway and `false` returned, to keep timing equal.
    pub fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, PasswordError> {
        let target = stored.unwrap_or(&self.dummy_hash);
        let parsed = PasswordHash::new(target).map_err(|_| PasswordError::MalformedHash)?;
        let keyid = Params::try_from(&parsed).map_err(|_| PasswordError::MalformedHash)?.keyid().to_vec();
        let ok = self
            .context((!keyid.is_empty()).then_some(keyid.as_slice()))?
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(ok && stored.is_some())
    }
}

/// A random 24-character alphanumeric password (~142 bits), for `ward user add`.
pub fn generate_password() -> String {
    rand::rng().sample_iter(&Alphanumeric).take(24).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> PasswordHasher {
        PasswordHasher::new(1024, 1, 1).expect("params")
    }

    #[test]
    fn hash_verifies_and_wrong_password_does_not() {
        let h = fast();
        let stored = h.hash("correct horse battery").expect("hash");
        assert!(stored.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(h.verify("correct horse battery", Some(&stored)).expect("verify"));
        assert!(!h.verify("correct horse batterY", Some(&stored)).expect("verify"));
    }

    #[test]
    fn unknown_user_never_verifies() {
        let h = fast();
        assert!(!h.verify("anything", None).expect("verify"));
    }

    #[test]
    fn default_params_beat_the_floor_and_old_hashes_are_flagged_for_rehash() {
        let h = PasswordHasher::default_params().expect("params");
        let stored = h.hash("x").expect("hash");
        assert!(stored.contains("m=65536,t=3,p=1"), "{stored}");
        assert!(!h.needs_rehash(&stored));
        let old = PasswordHasher::new(19 * 1024, 2, 1).expect("params").hash("x").expect("hash");
        assert!(h.needs_rehash(&old), "weaker parameters are upgraded on the next sign-in");
        assert!(h.verify("x", Some(&old)).expect("verify"), "old hashes still verify");
    }

    #[test]
    fn peppered_hashes_need_the_pepper() {
        let pepper = || zeroize::Zeroizing::new(vec![7u8; 32]);
        let plain = fast();
        let peppered = fast().with_pepper(pepper()).expect("pepper");
        let stored = peppered.hash("correct horse battery").expect("hash");
        assert!(stored.contains("keyid="), "the PHC string names the pepper: {stored}");
        assert!(peppered.verify("correct horse battery", Some(&stored)).expect("verify"));
        assert!(!peppered.verify("correct horse batterY", Some(&stored)).expect("verify"));
        assert!(!peppered.needs_rehash(&stored));
        // Without the pepper the hash cannot be checked at all (and says why).
        assert!(matches!(plain.verify("correct horse battery", Some(&stored)), Err(PasswordError::UnknownPepper)));
        let other = fast().with_pepper(zeroize::Zeroizing::new(vec![8u8; 32])).expect("pepper");
        assert!(matches!(other.verify("correct horse battery", Some(&stored)), Err(PasswordError::UnknownPepper)));
        // An unpeppered hash still verifies and is upgraded at the next sign-in.
        let old = plain.hash("correct horse battery").expect("hash");
        assert!(peppered.verify("correct horse battery", Some(&old)).expect("verify"));
        assert!(peppered.needs_rehash(&old));
        assert!(peppered.with_pepper(zeroize::Zeroizing::new(vec![1; 8])).is_err(), "a short pepper is refused");
    }

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let a = generate_password();
        assert_eq!(a.len(), 24);
        assert_ne!(a, generate_password());
    }
}
