//! The files module's error type; mapped to the API's error shape in `ward-api`.

/// Everything a file operation can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The file or dialog does not exist, or the caller may not see it (existence is not
    /// leaked: both answer the same).
    #[error("no such file")]
    NotFound,
    /// The request breaks a rule (the message names the rule, never the content).
    #[error("{0}")]
    Invalid(String),
    /// The caller may see the file but not do this (e.g. delete another member's file).
    #[error("{0}")]
    Forbidden(String),
    /// Larger than `[files] max_bytes`; nothing was kept.
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// A content type outside `[files] allowed_types`, or one the bytes contradict.
    #[error("{0}")]
    UnsupportedType(String),
    /// The requested byte range lies outside the file.
    #[error("the range is outside the file's {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// clamd found malware (the signature's name); nothing was kept.
    #[error("the file was refused: malware detected ({0})")]
    Infected(String),
    /// clamd gave no verdict (down, a time-out, a stream limit); nothing was kept.
    #[error("the malware scan could not complete: {0}")]
    ScanFailed(String),
    /// This node has `max_concurrent_uploads` uploads streaming already.
    #[error("too many uploads in progress; try again shortly")]
    Busy,
    /// The stored object failed authentication (changed, truncated or swapped).
    #[error("the stored file failed its integrity check")]
    Integrity,
    /// The client's body stream broke off.
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    /// The object store failed (disk, network, S3).
    #[error("object store: {0}")]
    Objects(#[from] object_store::Error),
    #[error(transparent)]
    Store(#[from] ward_storage::StoreError),
    /// The audit record could not be written, so the operation did not happen.
    #[error(transparent)]
    Audit(#[from] ward_audit::AuditError),
    /// A key could not be found or used.
    #[error(transparent)]
    Keys(ward_keys::KeyError),
}

impl From<ward_keys::KeyError> for FilesError {
    fn from(e: ward_keys::KeyError) -> Self {
        match e {
            ward_keys::KeyError::Integrity => FilesError::Integrity,
            other => FilesError::Keys(other),
        }
    }
}

impl From<ward_messaging::MessagingError> for FilesError {
    fn from(e: ward_messaging::MessagingError) -> Self {
        use ward_messaging::MessagingError as M;
        match e {
            M::NotFound => FilesError::NotFound,
            M::Invalid(m) | M::Conflict(m) => FilesError::Invalid(m),
            M::Forbidden(m) => FilesError::Forbidden(m),
            M::TooLarge { limit, .. } => FilesError::TooLarge { limit: limit as u64 },
            M::Store(s) => FilesError::Store(s),
            M::Audit(a) => FilesError::Audit(a),
            M::Keys(k) => k.into(),
        }
    }
}
