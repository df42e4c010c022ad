//! Extractors: JSON bodies with contract-shaped rejections, the client's network details,
//! and the caller's identity with its audit context.

use std::net::{IpAddr, SocketAddr};

use axum::extract::path::ErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, USER_AGENT};
use axum::http::request::Parts;
use time::OffsetDateTime;
use ward_access::{Facts, Principal};
use ward_audit::{Context, Via};
use ward_auth::{Authenticated, CredentialKind};

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

/// `Query<T>` whose failures answer 400 `invalid_request` in the contract's shape, naming
/// a missing or unknown parameter.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        let detail = match &r {
            QueryRejection::FailedToDeserializeQueryString(e) => named_field(&e.body_text()),
            _ => None,
        };
        ApiError::invalid_request(match detail {
            Some(d) => format!("the query string does not match: {d}"),
            None => "the query string does not match (a parameter has the wrong type or format)".to_string(),
        })
    }
}

/// `Path<T>` whose failures answer 400 `invalid_request` in the contract's shape, naming
/// the path parameter that is wrong (never its value). Every typed path parameter is a
/// UUID; names (policies) are strings and fail only on invalid UTF-8.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        let kind = match &r {
            PathRejection::FailedToDeserializePathParams(e) => Some(e.kind()),
            _ => None,
        };
        ApiError::invalid_request(match kind {
            Some(ErrorKind::InvalidUtf8InPathParam { key }) => format!("the path parameter `{key}` is not UTF-8"),
            Some(ErrorKind::ParseErrorAtKey { key, .. } | ErrorKind::DeserializeError { key, .. }) => {
                format!("the path parameter `{key}` is not a valid id (a UUID)")
            }
            _ => "a path parameter is not a valid id (a UUID)".to_string(),
        })
    }
}

/// Names a missing or unknown field (names come from our schema or are keys, not
/// values); any other mismatch is described without quoting what the client sent.
fn shape_error(serde_text: &str) -> String {
    match named_field(serde_text) {
        Some(d) => format!("the body does not match the expected shape: {d}"),
        None => "the body does not match the expected shape (a field has the wrong type)".to_string(),
    }
}

/// `missing field `x`` or `unknown field `x`, expected …` from serde's text, without the
/// position; `None` for any other failure (whose text may quote the input).
fn named_field(serde_text: &str) -> Option<String> {
    let detail = serde_text.split(": ").find(|p| p.starts_with("missing field") || p.starts_with("unknown field"))?;
    Some(detail.split(" at line").next().unwrap_or(detail).to_string())
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

/// The caller's verified session, its principal in policy terms and the audit context of
/// this request. A handler that takes this cannot run unauthenticated, and runs only when
/// the caller's policies allow the route's declared action ([`crate::guard`]).
pub struct Caller {
    pub who: Authenticated,
    pub ctx: Context,
    pub principal: Principal,
}

/// The principal of an authenticated caller.
pub(crate) async fn principal_of(
    state: &AppState,
    who: &Authenticated,
    ip: Option<&str>,
) -> Result<Principal, ApiError> {
    let roles: Vec<String> = who.user.roles.iter().map(ToString::to_string).collect();
    let credential = match who.kind {
        CredentialKind::Session => ward_access::CredentialKind::Session,
        CredentialKind::Temporary => ward_access::CredentialKind::Sts,
        CredentialKind::ApiKey => ward_access::CredentialKind::ApiKey,
    };
    let ip = ip.and_then(|i| i.parse().ok());
    Ok(state
        .access
        .principal(who.user.id, &roles, credential, who.session.mfa_at, ip, who.session.session_policy.as_deref())
        .await?)
}

/// Checks the route's declared action through the engine; a denial is audited and
/// answers 403. A route without a rule refuses everyone (fail closed).
async fn guard_route(parts: &mut Parts, state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    let method = parts.method.as_str().to_ascii_lowercase();
    let path = parts.extensions.get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
    let Some(rule) = crate::guard::rule_for(&method, &path) else {
        let event = caller
            .ctx
            .event("access.denied", ward_audit::Outcome::Denied)
            .reason("the route declares no action")
            .detail("method", method)
            .detail("route", path);
        state.audit.record_alone(&event).await?;
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this route is not open to any caller"));
    };
    let params = RawPathParams::from_request_parts(parts, state).await.map_err(|_| ApiError::not_found())?;
    let pairs: Vec<(&str, &str)> = params.iter().collect();
    let resource = crate::guard::resource(rule.resource, &pairs);
    let facts = if resource.starts_with("dialog/") { Facts::BEST_CASE } else { Facts::default() };
    let decision = caller.principal.decide(rule.action, &resource, caller.ctx.now, facts);
    if decision.allowed {
        return Ok(());
    }
    state.access.record_denial(&caller.ctx, rule.audit, rule.action, &resource, &decision).await?;
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("the caller's policies do not allow {} on {}", rule.action, rule.resource),
    ))
}

/// A caller whose session may still lack the second factor its role requires. Only the
/// routes that let such a user enroll, read its session and log out take this; every
/// other route takes [`Caller`], which refuses it with 403 `mfa_required`.
pub struct EnrollingCaller(pub Caller);

/// Authenticates the bearer token and builds the caller's principal; no route check yet.
async fn authenticated(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
    let client = ClientInfo::from_request_parts(parts, state).await?;
    let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let token = header
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(ApiError::unauthenticated)?;
    let anonymous = client.context();
    let who = state.accounts.authenticate(&anonymous, token).await?;
    let principal = principal_of(state, &who, client.ip.as_deref()).await?;
    let ctx = who.context(client.ip, client.user_agent, anonymous.now);
    Ok(Caller { who, ctx, principal })
}

impl FromRequestParts<AppState> for EnrollingCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = authenticated(parts, state).await?;
        guard_route(parts, state, &caller).await?;
        Ok(EnrollingCaller(caller))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = authenticated(parts, state).await?;
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
        guard_route(parts, state, &caller).await?;
        Ok(caller)
    }
}

/// A look-back period from a `days` query parameter (1 to 366, `default` when absent):
/// the days and the moment the period starts, counted back from `now`.
pub fn look_back(days: Option<i64>, default: i64, now: OffsetDateTime) -> Result<(i64, OffsetDateTime), ApiError> {
    let days = days.unwrap_or(default);
    if !(1..=366).contains(&days) {
        return Err(ApiError::invalid_request("days: 1 to 366"));
    }
    Ok((days, now - time::Duration::days(days)))
}
