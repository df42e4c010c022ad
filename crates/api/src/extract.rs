//! Extractors: JSON bodies with contract-shaped rejections, the caller's identity, and
//! the client's network details.

use std::net::SocketAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, USER_AGENT};
use axum::http::request::Parts;
use time::OffsetDateTime;

use crate::AppState;
use crate::error::ApiError;

/// `Json<T>` whose failures answer 400 `invalid_request` (or 413) in the contract's shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::for_status(StatusCode::PAYLOAD_TOO_LARGE);
        }
        // The body text of a rejection can quote the input; keep only the kind of failure.
        let message = match r {
            JsonRejection::MissingJsonContentType(_) => "expected Content-Type: application/json".to_string(),
            JsonRejection::JsonSyntaxError(_) => "the body is not valid JSON".to_string(),
            JsonRejection::JsonDataError(e) => shape_error(&e.body_text()),
            _ => "the body cannot be read".to_string(),
        };
        ApiError::invalid_request(message)
    }
}

/// Names a missing or unknown field (names come from our schema or are keys, not
/// values); any other mismatch is described without quoting what the client sent.
fn shape_error(serde_text: &str) -> String {
    let detail = serde_text.split(": ").find(|p| p.starts_with("missing field") || p.starts_with("unknown field"));
    match detail {
        Some(d) => format!("the body does not match the expected shape: {}", d.split(" at line").next().unwrap_or(d)),
        None => "the body does not match the expected shape (a field has the wrong type)".to_string(),
    }
}

/// The caller's verified session. A handler that takes this cannot run unauthenticated.
pub struct Caller(pub ward_auth::Authenticated);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthenticated)?;
        let who = state.accounts.authenticate(token, OffsetDateTime::now_utc()).await?;
        Ok(Caller(who))
    }
}

/// Where a request came from, for sessions and (later) audit records.
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        let user_agent =
            parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(256).collect());
        Ok(ClientInfo { ip, user_agent })
    }
}
