//! Ward's identity domain: accounts, roles, the password policy, sign-in and sessions.
//!
//! [`Accounts`] is the one entry point used by the HTTP API and the CLI alike. It knows
//! nothing of HTTP; time is always an argument (`now`), so expiry is tested without sleeping.
//!
//! Scope today: unique users with built-in roles, argon2id passwords under a length
//! policy, opaque session tokens stored as digests, idle and absolute session limits.
//! Lockout, MFA, the password blocklist and temporary credentials come with the
//! authentication issue and extend these types.

mod accounts;
mod api_keys;
mod cache;
mod error;
pub mod mfa;
mod types;

pub use accounts::{
    Accounts, AuthSettings, Authenticated, CredentialKind, CredentialSettings, LoginOutcome, LoginSuccess,
    SessionChanged, SessionLimits, UserRef,
};
pub use api_keys::{API_KEY_PREFIX, ApiKeyView, NewApiKey};
pub use error::AuthError;
pub use types::{PasswordPolicy, Role, User, Username};
