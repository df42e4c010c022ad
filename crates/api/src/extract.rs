//! Extractors: JSON bodies with contract-shaped rejections, the client's network details,
//! and the caller's identity with its audit context.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, USER_AGENT};
use axum::http::request::Parts;
use time::OffsetDateTime;
use ward_audit::{Context, Via};
use ward_auth::Authenticated;

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

/// Where a request came from: the peer address, or the forwarded one when the peer is a
/// configured trusted proxy (`server.trusted_proxies`).
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// The audit context of an anonymous request.
    pub fn context(&self) -> Context {
        Context::anonymous(Via::Api, self.ip.clone(), self.user_agent.clone(), OffsetDateTime::now_utc())
    }
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let trusted = &state.config.server.trusted_proxies;
        let ip = match peer {
            Some(p) if trusted.contains(&p) => forwarded_client(parts, trusted).or(Some(p)),
            other => other,
        };
        let user_agent =
            parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(256).collect());
        Ok(ClientInfo { ip: ip.map(|i| i.to_string()), user_agent })
    }
}

/// The right-most `X-Forwarded-For` address that is not itself a trusted proxy.
fn forwarded_client(parts: &Parts, trusted: &[IpAddr]) -> Option<IpAddr> {
    let all: Vec<IpAddr> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    all.into_iter().rev().find(|ip| !trusted.contains(ip))
}

/// The caller's verified session and the audit context of this request. A handler that
/// takes this cannot run unauthenticated.
pub struct Caller {
    pub who: Authenticated,
    pub ctx: Context,
}

impl Caller {
    /// Lets the request on only if the caller holds `role`; a refusal answers 403
    /// `forbidden` and is recorded as `denied` under `action`.
    pub async fn require(&self, state: &AppState, role: ward_auth::Role, action: &str) -> Result<(), ApiError> {
        if self.who.has_role(role) {
            return Ok(());
        }
        let event = self.ctx.event(action, ward_audit::Outcome::Denied).reason(format!("requires role {role}"));
        state.audit.record_alone(&event).await?;
        Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("this requires the {role} role")))
    }
}

/// The roles that take part in conversations. `admin` and `auditor` read no PHI, and a
/// temporary credential or API key acting with one of those roles gets none either.
pub const CONVERSATION_ROLES: [ward_auth::Role; 4] =
    [ward_auth::Role::Clinician, ward_auth::Role::Staff, ward_auth::Role::Patient, ward_auth::Role::Service];

impl Caller {
    /// Lets the request on only if the caller holds one of `roles` (for the credential in
    /// use: a temporary credential or API key acts with its one role); otherwise 403
    /// `forbidden`, recorded as `denied` under `action`. Until the policy engine (#7) this
    /// is the minimum-necessary rule for PHI routes.
    pub async fn require_any(&self, state: &AppState, roles: &[ward_auth::Role], action: &str) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.who.has_role(*r)) {
            return Ok(());
        }
        let names: Vec<String> = roles.iter().map(ToString::to_string).collect();
        let event =
            self.ctx.event(action, ward_audit::Outcome::Denied).reason(format!("requires one of {}", names.join(", ")));
        state.audit.record_alone(&event).await?;
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this requires one of the roles {}", names.join(", ")),
        ))
    }
}

/// A caller whose session may still lack the second factor its role requires. Only the
/// routes that let such a user enroll, read its session and log out take this; every
/// other route takes [`Caller`], which refuses it with 403 `mfa_required`.
pub struct EnrollingCaller(pub Caller);

impl FromRequestParts<AppState> for EnrollingCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let client = ClientInfo::from_request_parts(parts, state).await?;
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthenticated)?;
        let anonymous = client.context();
        let who = state.accounts.authenticate(&anonymous, token).await?;
        let ctx = who.context(client.ip, client.user_agent, anonymous.now);
        Ok(EnrollingCaller(Caller { who, ctx }))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let EnrollingCaller(caller) = EnrollingCaller::from_request_parts(parts, state).await?;
        if caller.who.mfa_enrollment_required {
            let route = parts.extensions.get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string());
            let event = caller
                .ctx
                .event("access.denied", ward_audit::Outcome::Denied)
                .reason("mfa_required")
                .detail("method", parts.method.as_str())
                .detail("route", route.unwrap_or_default());
            state.audit.record_alone(&event).await?;
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "mfa_required",
                "this account's role requires a second factor: enroll one at /v1/auth/mfa/totp/enroll, or sign in \
                 again with it",
            ));
        }
        Ok(caller)
    }
}
