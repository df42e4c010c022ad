//! The one place where errors become HTTP answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ward_auth::AuthError;
use ward_storage::StoreError;

/// An error as the client will see it: a status, a stable code and a safe message.
/// The request id is added by [`crate::middleware`], which renders the body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (seconds) with 423 and 429.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_s: None }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", "authentication required")
    }

    /// A generic 500: the cause goes to the log (without PHI), never to the client.
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The code and a default message for an answer made outside a handler.
    pub fn for_status(status: StatusCode) -> Self {
        let (code, message) = match status.as_u16() {
            400 => ("invalid_request", "the request is malformed"),
            401 => ("unauthenticated", "authentication required"),
            403 => ("forbidden", "not allowed"),
            404 => ("not_found", "no such resource"),
            405 => ("method_not_allowed", "method not allowed on this resource"),
            408 => ("request_timeout", "the request took too long"),
            409 => ("conflict", "conflicts with the current state"),
            413 => ("payload_too_large", "the request body is too large"),
            415 => ("unsupported_media_type", "unsupported content type"),
            429 => ("rate_limited", "too many requests"),
            503 => ("unavailable", "temporarily unavailable"),
            504 => ("unavailable", "the request took too long"),
            s if s >= 500 => ("internal", "internal error"),
            _ => ("invalid_request", "the request cannot be served"),
        };
        Self::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if let Some(secs) = self.retry_after_s
            && let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        response.extensions_mut().insert(self);
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Self::new(StatusCode::CONFLICT, "conflict", format!("{what} already exists")),
            StoreError::Unavailable(_) => {
                tracing::error!(error = %e, "database unavailable");
                Self::unavailable("the database is unavailable")
            }
            other => {
                tracing::error!(error = %other, "storage error");
                Self::internal()
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidUsername(_)
            | AuthError::WeakPassword(_)
            | AuthError::UnknownRole(_)
            | AuthError::NoRole => Self::invalid_request(e.to_string()),
            AuthError::UsernameTaken => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            AuthError::UserNotFound => Self::not_found(),
            AuthError::InvalidCredentials => {
                Self::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "invalid username or password")
            }
            AuthError::Locked { retry_after_s } => Self {
                retry_after_s,
                ..Self::new(
                    StatusCode::LOCKED,
                    "account_locked",
                    match retry_after_s {
                        Some(_) => "too many failed sign-ins: try again after the Retry-After delay",
                        None => "too many failed sign-ins: an administrator must unlock the account",
                    },
                )
            },
            AuthError::RateLimited { retry_after_s } => Self {
                retry_after_s: Some(retry_after_s),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many sign-in attempts from this address",
                )
            },
            AuthError::Invalid(m) => Self::invalid_request(m),
            AuthError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            AuthError::Unauthenticated => Self::unauthenticated(),
            AuthError::SessionExpired => {
                Self::new(StatusCode::UNAUTHORIZED, "session_expired", "the session has ended")
            }
            AuthError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            AuthError::MfaRequired(m) => Self::new(StatusCode::FORBIDDEN, "mfa_required", m),
            AuthError::MfaChallengeInvalid => Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()),
            AuthError::InvalidCode => Self::new(StatusCode::UNAUTHORIZED, "invalid_credentials", e.to_string()),
            AuthError::Store(s) => s.into(),
            AuthError::Audit(a) => a.into(),
            AuthError::Keys(k) => k.into(),
            AuthError::Hash(h) => {
                tracing::error!(error = %h, "password hashing failed");
                Self::internal()
            }
        }
    }
}

impl From<ward_keys::KeyError> for ApiError {
    fn from(e: ward_keys::KeyError) -> Self {
        match e {
            ward_keys::KeyError::Store(s) => s.into(),
            ward_keys::KeyError::Audit(m) => {
                tracing::error!(error = %m, "audit trail unavailable: refusing the key operation");
                Self::unavailable("the audit trail cannot be written; the request was not carried out")
            }
            other => {
                tracing::error!(error = %other, "key management failed");
                Self::internal()
            }
        }
    }
}

impl From<ward_audit::AuditError> for ApiError {
    /// Fail closed: no audit record, no action.
    fn from(e: ward_audit::AuditError) -> Self {
        tracing::error!(error = %e, "audit trail unavailable: refusing the request");
        Self::unavailable("the audit trail cannot be written; the request was not carried out")
    }
}

impl From<ward_messaging::MessagingError> for ApiError {
    fn from(e: ward_messaging::MessagingError) -> Self {
        use ward_messaging::MessagingError as M;
        match e {
            M::NotFound => Self::not_found(),
            M::Invalid(m) => Self::invalid_request(m),
            M::TooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.to_string()),
            M::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            M::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            M::Store(s) => s.into(),
            M::Audit(a) => a.into(),
            M::Keys(k) => k.into(),
        }
    }
}

impl From<ward_files::FilesError> for ApiError {
    fn from(e: ward_files::FilesError) -> Self {
        use ward_files::FilesError as F;
        match e {
            F::NotFound => Self::not_found(),
            F::Invalid(m) => Self::invalid_request(m),
            F::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            F::TooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.to_string()),
            F::UnsupportedType(m) => Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", m),
            F::RangeNotSatisfiable { .. } => {
                Self::new(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable", e.to_string())
            }
            F::Infected(_) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "malware_detected", e.to_string()),
            F::ScanFailed(m) => {
                tracing::error!(error = %m, "malware scan failed");
                Self::unavailable("the malware scan could not complete; try again later")
            }
            F::Busy => Self { retry_after_s: Some(5), ..Self::unavailable(e.to_string()) },
            F::Integrity => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "integrity_failure", e.to_string()),
            F::Interrupted(_) => Self::invalid_request(e.to_string()),
            F::Objects(o) => {
                tracing::error!(error = %o, "object store unavailable");
                Self::unavailable("file storage is unavailable")
            }
            F::Store(s) => s.into(),
            F::Audit(a) => a.into(),
            F::Keys(k) => k.into(),
        }
    }
}

impl From<ward_access::AccessError> for ApiError {
    fn from(e: ward_access::AccessError) -> Self {
        use ward_access::AccessError as A;
        match e {
            A::Denied(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            A::MfaRequired(m) => Self::new(StatusCode::FORBIDDEN, "mfa_required", m),
            A::NotFound => Self::not_found(),
            A::Invalid(m) => Self::invalid_request(m),
            A::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            A::Store(s) => s.into(),
            A::Keys(k) => k.into(),
            A::Audit(a) => a.into(),
        }
    }
}
