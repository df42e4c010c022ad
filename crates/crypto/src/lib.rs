//! Ward's cryptographic primitives, built on audited crates (argon2, sha2, rand, subtle).
//!
//! **Invariant:** this crate does no I/O and no logging; secrets it returns are wrapped
//! so that `Debug` never shows them and memory is zeroized on drop.

pub mod password;
pub mod token;

pub use password::{PasswordError, PasswordHasher, generate_password};
pub use token::{SessionToken, TokenHash, sha256_hex};
