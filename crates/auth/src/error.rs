//! The identity domain's error type.

use ward_storage::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The username breaks the naming rule; the message says which part.
    #[error("invalid username: {0}")]
    InvalidUsername(String),
    /// The password breaks the policy; the message names the rule.
    #[error("password rejected: {0}")]
    WeakPassword(String),
    #[error("unknown role `{0}` (expected one of admin, clinician, staff, patient, auditor, service)")]
    UnknownRole(String),
    #[error("a user needs at least one role")]
    NoRole,
    #[error("username is already taken")]
    UsernameTaken,
    #[error("no such user")]
    UserNotFound,
    /// Wrong password, unknown user or disabled account: one answer for all three.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many failed sign-ins: locked until `retry_after_s` from now, or (None) until
    /// an administrator unlocks the account.
    #[error("the account is locked after repeated failed sign-ins")]
    Locked { retry_after_s: Option<u64> },
    /// Too many sign-in attempts from one address.
    #[error("too many sign-in attempts from this address")]
    RateLimited { retry_after_s: u64 },
    /// A request outside its bounds (e.g. a credential lifetime); the message says which.
    #[error("{0}")]
    Invalid(String),
    /// Not allowed for this caller (e.g. assuming a role it does not hold).
    #[error("{0}")]
    Forbidden(String),
    /// No token, or a token that matches no session.
    #[error("authentication required")]
    Unauthenticated,
    /// The session ended: idle or absolute limit reached, revoked, or logged out.
    #[error("session expired")]
    SessionExpired,
    /// A conflicting state (e.g. enrolling a factor that is already enrolled).
    #[error("{0}")]
    Conflict(String),
    /// The session lacks the second factor its role requires.
    #[error("{0}")]
    MfaRequired(String),
    /// The second step of a sign-in is unknown, used or expired: sign in again.
    #[error("the MFA sign-in step is unknown or expired: sign in again")]
    MfaChallengeInvalid,
    /// A second-factor code that does not match (or was used already).
    #[error("the code is not valid")]
    InvalidCode,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealing or opening a secret failed (key store unavailable, or tampered data).
    #[error("key management: {0}")]
    Keys(#[from] ward_keys::KeyError),
    /// The audit record could not be written, so the operation did not happen.
    #[error(transparent)]
    Audit(#[from] ward_audit::AuditError),
    /// Hashing failed or a stored hash is corrupt.
    #[error("password hashing: {0}")]
    Hash(#[from] ward_crypto::PasswordError),
}

impl AuthError {
    /// A stable reason code for audit records (never user input).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::InvalidUsername(_) => "invalid_username",
            AuthError::WeakPassword(_) => "weak_password",
            AuthError::UnknownRole(_) => "unknown_role",
            AuthError::NoRole => "no_role",
            AuthError::UsernameTaken => "username_taken",
            AuthError::UserNotFound => "user_not_found",
            AuthError::InvalidCredentials => "invalid_credentials",
            AuthError::Locked { .. } => "locked",
            AuthError::Invalid(_) => "invalid_request",
            AuthError::Forbidden(_) => "forbidden",
            AuthError::RateLimited { .. } => "rate_limited",
            AuthError::Unauthenticated => "unauthenticated",
            AuthError::SessionExpired => "session_expired",
            AuthError::Conflict(_) => "conflict",
            AuthError::MfaRequired(_) => "mfa_required",
            AuthError::MfaChallengeInvalid => "mfa_challenge_invalid",
            AuthError::InvalidCode => "invalid_code",
            AuthError::Store(_) | AuthError::Audit(_) | AuthError::Hash(_) | AuthError::Keys(_) => "internal",
        }
    }
}
