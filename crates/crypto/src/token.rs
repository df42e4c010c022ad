//! Opaque bearer tokens: 256 random bits, shown once, stored only as a SHA-256 digest.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A session token as handed to the client. `Debug` is redacted.
pub struct SessionToken(Zeroizing<String>);

impl SessionToken {
    /// A fresh token from the OS CSPRNG: 32 bytes, base64url without padding.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(bytes.as_mut());
        Self(Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref())))
    }

    /// Wraps a token received from a client.
    pub fn from_client(raw: &str) -> Self {
        Self(Zeroizing::new(raw.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest that the database stores in place of the token.
    pub fn hash(&self) -> TokenHash {
        TokenHash(sha256_hex(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// Hex SHA-256 of a token: what is stored and looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHash(pub String);

impl TokenHash {
    /// Constant-time comparison, for checks done outside an indexed lookup.
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_256_bits_and_hash_stably() {
        let t = SessionToken::generate();
        assert_eq!(t.expose().len(), 43);
        assert!(t.hash().ct_eq(&SessionToken::from_client(t.expose()).hash()));
        assert!(!t.hash().ct_eq(&SessionToken::generate().hash()));
        assert_eq!(format!("{t:?}"), "SessionToken(<redacted>)");
    }
}
