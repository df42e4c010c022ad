//! AES-256-GCM sealing of small secrets and records with [`DataKey`]s (AWS-LC via aws-lc-rs).
//!
//! Sealed layout: `format (1 byte, = 1) || nonce (12 bytes) || ciphertext || tag (16 bytes)`.
//! The format byte is also bound into the AAD (`format || aad`), so it cannot be swapped.
//! Any change to the sealed bytes or to the AAD makes [`open`] fail with
//! [`KeyError::Integrity`]; it never returns unauthenticated plaintext.
//!
//! **Nonce strategy.** Every [`seal`] draws a fresh random 96-bit nonce from AWS-LC's CSPRNG
//! (seeded by the operating system). NIST SP 800-38D limits a key used with random nonces to
//! 2^32 invocations. Ward keeps each key far below that: data keys are scoped per dialog, file
//! or user and the data-key cache bounds how often one is used, and a master-key version would
//! have to wrap 2^32 data keys before it is rotated (rotation is at least yearly).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::error::KeyError;

/// The only sealed format so far.
const FORMAT_V1: u8 = 1;
/// Length of the AES-256-GCM tag.
const TAG_LEN: usize = 16;
/// Length of a data key in bytes (AES-256).
const KEY_LEN: usize = 32;

/// Bytes that [`seal`] adds to the plaintext: format byte, nonce and tag.
pub const SEALED_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// Where [`open_in_place`] leaves the plaintext in the sealed buffer (after the format
/// byte and the nonce).
pub const PLAINTEXT_OFFSET: usize = 1 + NONCE_LEN;

/// A 256-bit AES key. Zeroized on drop; `Debug` is redacted.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    /// A fresh key from AWS-LC's CSPRNG, which the operating system seeds.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(bytes.as_mut()).expect("the system random number generator must not fail");
        Self(bytes)
    }

    /// A key from exactly 32 bytes; anything else is [`KeyError::InvalidKey`].
    pub fn from_bytes(b: &[u8]) -> Result<Self, KeyError> {
        if b.len() != KEY_LEN {
            return Err(KeyError::InvalidKey);
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(b);
        Ok(Self(bytes))
    }

    /// The raw key bytes. Do not log, store or copy them outside a zeroizing buffer.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn aead_key(&self) -> Result<LessSafeKey, KeyError> {
        let unbound = UnboundKey::new(&AES_256_GCM, self.0.as_ref())
            .map_err(|_| KeyError::Crypto("AES-256-GCM rejected the key".into()))?;
        Ok(LessSafeKey::new(unbound))
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// Fills `dest` from AWS-LC's CSPRNG.
pub(crate) fn fill_random(dest: &mut [u8]) -> Result<(), KeyError> {
    aws_lc_rs::rand::fill(dest).map_err(|_| KeyError::Crypto("the system random number generator failed".into()))
}

/// The AAD actually authenticated: the format byte, then the caller's AAD.
fn full_aad(aad: &[u8]) -> Aad<Vec<u8>> {
    let mut full = Vec::with_capacity(1 + aad.len());
    full.push(FORMAT_V1);
    full.extend_from_slice(aad);
    Aad::from(full)
}

/// Encrypts `plaintext` with AES-256-GCM under `key` and a fresh random 96-bit nonce,
/// authenticating `aad` with it. Output: `1 || nonce || ciphertext || tag`.
pub fn seal(key: &DataKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
    let aead = key.aead_key()?;
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;

    let mut out = Vec::with_capacity(plaintext.len() + SEALED_OVERHEAD);
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = aead
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), full_aad(aad), &mut out[1 + NONCE_LEN..])
        .map_err(|_| KeyError::Crypto("AES-256-GCM sealing failed".into()))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Authenticates and decrypts the output of [`seal`]. A wrong key, a different `aad`, or any
/// change to `sealed` (including truncation or an unknown format byte) is
/// [`KeyError::Integrity`].
pub fn open(key: &DataKey, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    if sealed.len() < SEALED_OVERHEAD || sealed[0] != FORMAT_V1 {
        return Err(KeyError::Integrity);
    }
    let aead = key.aead_key()?;
    let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]).map_err(|_| KeyError::Integrity)?;
    let mut buf = Zeroizing::new(sealed[1 + NONCE_LEN..].to_vec());
    let plain_len =
        aead.open_in_place(nonce, full_aad(aad), buf.as_mut_slice()).map_err(|_| KeyError::Integrity)?.len();
    buf.truncate(plain_len);
    Ok(buf)
}

/// [`open`] without a copy: authenticates and decrypts `sealed` in place and returns the
/// plaintext as a slice of it. For large buffers the caller owns (streams, files); the
/// caller zeroizes the buffer when done with the plaintext.
pub fn open_in_place<'a>(key: &DataKey, aad: &[u8], sealed: &'a mut [u8]) -> Result<&'a mut [u8], KeyError> {
    if sealed.len() < SEALED_OVERHEAD || sealed[0] != FORMAT_V1 {
        return Err(KeyError::Integrity);
    }
    let aead = key.aead_key()?;
    let (header, body) = sealed.split_at_mut(1 + NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&header[1..]).map_err(|_| KeyError::Integrity)?;
    aead.open_in_place(nonce, full_aad(aad), body).map_err(|_| KeyError::Integrity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_in_place_matches_open_and_refuses_tampering() {
        let key = DataKey::generate();
        let sealed = seal(&key, b"ward:test", b"in place").expect("seal");
        let mut buf = sealed.clone();
        assert_eq!(open_in_place(&key, b"ward:test", &mut buf).expect("open"), b"in place");
        let mut bad = sealed.clone();
        bad[SEALED_OVERHEAD - 2] ^= 1;
        assert!(matches!(open_in_place(&key, b"ward:test", &mut bad), Err(KeyError::Integrity)));
        let mut short = sealed[..5].to_vec();
        assert!(matches!(open_in_place(&key, b"ward:test", &mut short), Err(KeyError::Integrity)));
    }

    #[test]
    fn round_trip_including_empty_plaintext() {
        let key = DataKey::generate();
        for msg in [&b""[..], b"x", b"protected health information"] {
            let sealed = seal(&key, b"ward:test", msg).expect("seal");
            assert_eq!(sealed.len(), msg.len() + SEALED_OVERHEAD);
            assert_eq!(sealed[0], 1);
            assert_eq!(open(&key, b"ward:test", &sealed).expect("open").as_slice(), msg);
        }
    }

    #[test]
    fn nonces_are_fresh() {
        let key = DataKey::generate();
        let a = seal(&key, b"", b"same").expect("seal");
        let b = seal(&key, b"", b"same").expect("seal");
        assert_ne!(a, b);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let key = DataKey::generate();
        let sealed = seal(&key, b"aad", b"short msg").expect("seal");
        for bit in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(matches!(open(&key, b"aad", &bad), Err(KeyError::Integrity)), "bit {bit} not detected");
        }
    }

    #[test]
    fn other_aad_or_key_fails() {
        let key = DataKey::generate();
        let sealed = seal(&key, b"ward:data-key:user/1", b"secret").expect("seal");
        assert!(matches!(open(&key, b"ward:data-key:user/2", &sealed), Err(KeyError::Integrity)));
        assert!(matches!(open(&key, b"", &sealed), Err(KeyError::Integrity)));
        assert!(matches!(open(&DataKey::generate(), b"ward:data-key:user/1", &sealed), Err(KeyError::Integrity)));
    }

    #[test]
    fn truncated_or_extended_input_fails_without_panic() {
        let key = DataKey::generate();
        let sealed = seal(&key, b"", b"secret").expect("seal");
        for len in 0..sealed.len() {
            assert!(matches!(open(&key, b"", &sealed[..len]), Err(KeyError::Integrity)), "length {len}");
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(matches!(open(&key, b"", &longer), Err(KeyError::Integrity)));
    }

    #[test]
    fn data_key_checks_length_and_redacts_debug() {
        assert!(matches!(DataKey::from_bytes(&[0u8; 31]), Err(KeyError::InvalidKey)));
        assert!(matches!(DataKey::from_bytes(&[0u8; 33]), Err(KeyError::InvalidKey)));
        let key = DataKey::from_bytes(&[0xAB; 32]).expect("32 bytes");
        assert_eq!(key.expose(), &[0xAB; 32]);
        let shown = format!("{key:?} {:?}", key.clone());
        assert_eq!(shown, "DataKey(<redacted>) DataKey(<redacted>)");
    }
}
