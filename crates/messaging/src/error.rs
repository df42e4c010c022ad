//! The messaging module's error type; mapped to the API's error shape in `ward-api`.

/// Everything a messaging operation can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// The dialog or message does not exist, or the caller may not see it (existence is
    /// not leaked: both answer the same).
    #[error("no such dialog or message")]
    NotFound,
    /// The request breaks a rule (the message names the rule, never the content).
    #[error("{0}")]
    Invalid(String),
    /// A body larger than `[messaging] max_body_bytes`.
    #[error("the message body is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    /// The caller is a member but lacks the right (e.g. editing another's message).
    #[error("{0}")]
    Forbidden(String),
    /// The record's state forbids it (e.g. editing a deleted message).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] ward_storage::StoreError),
    /// The audit record could not be written, so the operation did not happen.
    #[error(transparent)]
    Audit(#[from] ward_audit::AuditError),
    /// A key could not be found or used, or a sealed record failed authentication.
    #[error(transparent)]
    Keys(#[from] ward_keys::KeyError),
}

impl From<ward_access::AccessError> for MessagingError {
    fn from(e: ward_access::AccessError) -> Self {
        use ward_access::AccessError as A;
        match e {
            A::Denied(m) | A::MfaRequired(m) => MessagingError::Forbidden(m),
            A::NotFound => MessagingError::NotFound,
            A::Invalid(m) => MessagingError::Invalid(m),
            A::Conflict(m) => MessagingError::Conflict(m),
            A::Store(s) => MessagingError::Store(s),
            A::Keys(k) => MessagingError::Keys(k),
            A::Audit(a) => MessagingError::Audit(a),
        }
    }
}
