//! Access policies (`/v1/admin/policies…`): list, read, write, delete, attach and
//! simulate. Writes are audited with the documents before and after by `ward_access`.

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;
use ward_access::{Attachments, CredentialKind, Decision, PolicyView, RequestContext, Simulation, Subject};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Caller};

#[derive(Serialize, ToSchema)]
pub struct PolicyList {
    #[schema(value_type = Vec<Object>)]
    policies: Vec<PolicyView>,
}

/// Every policy: the managed role policies (`ward-<role>`, read-only) and the custom ones.
#[utoipa::path(get, path = "/v1/admin/policies", tag = "access", security(("bearer" = [])),
    responses((status = 200, body = PolicyList), (status = 403)))]
pub async fn list(State(state): State<AppState>, _caller: Caller) -> Result<Json<PolicyList>, ApiError> {
    Ok(Json(PolicyList { policies: state.access.list().await? }))
}

/// One policy with its document and attachments.
#[utoipa::path(get, path = "/v1/admin/policies/{name}", tag = "access", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PolicyView>, ApiError> {
    Ok(Json(state.access.get(&name).await?))
}

/// Creates (201) or replaces (200) a custom policy. The body is a policy document:
/// `{"statements": [{"effect", "actions", "resources", "conditions"?}]}`.
#[utoipa::path(put, path = "/v1/admin/policies/{name}", tag = "access", security(("bearer" = [])),
    request_body = Object,
    responses((status = 201, body = Object), (status = 200, body = Object), (status = 400),
              (status = 409, description = "a managed policy")))]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(document): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<PolicyView>), ApiError> {
    let (view, created) = state.access.put(&caller.ctx, &name, document).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(view)))
}

/// Deletes a custom policy and its attachments.
#[utoipa::path(delete, path = "/v1/admin/policies/{name}", tag = "access", security(("bearer" = [])),
    responses((status = 204), (status = 404), (status = 409, description = "a managed policy")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.access.delete(&caller.ctx, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets exactly which users and roles a custom policy applies to:
/// `{"users": [user_id], "roles": ["clinician"]}`.
#[utoipa::path(put, path = "/v1/admin/policies/{name}/attachments", tag = "access", security(("bearer" = [])),
    request_body = Object,
    responses((status = 200, body = Object), (status = 400), (status = 404), (status = 409)))]
pub async fn attach(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(to): ApiJson<Attachments>,
) -> Result<Json<PolicyView>, ApiError> {
    Ok(Json(state.access.attach(&caller.ctx, &name, to).await?))
}

/// A simulated request's circumstances; everything is optional.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SimContext {
    /// A second factor was proved (default false).
    #[serde(default)]
    mfa: bool,
    /// How long ago it was proved, in seconds (default 0).
    mfa_age_s: Option<u64>,
    /// The source IP address.
    #[schema(value_type = Option<String>)]
    ip: Option<IpAddr>,
    /// When (RFC 3339; default now).
    time: Option<String>,
    /// `session` (default), `sts` or `api_key`.
    #[schema(value_type = Option<String>)]
    credential: Option<CredentialKind>,
    dialog_member: Option<bool>,
    breakglass: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimRequest {
    /// Exactly one of `user_id`, `role` and `policies`.
    user_id: Option<Uuid>,
    role: Option<String>,
    policies: Option<Vec<String>>,
    /// `<area>:<verb>`, e.g. `message:read`.
    action: String,
    /// `<kind>/<id>` or `*`, e.g. `dialog/…`.
    resource: String,
    #[serde(default)]
    context: Option<SimContext>,
    /// A session policy to intersect, as an STS credential would carry.
    #[schema(value_type = Option<Object>)]
    session_policy: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct SimAnswer {
    /// `allow` or `deny`.
    decision: &'static str,
    /// The statements that applied: `{policy, statement, sid, effect}`.
    #[schema(value_type = Vec<Object>)]
    matched_statements: Vec<ward_access::Matched>,
}

/// Evaluates a hypothetical request for a user, a role or a list of policies.
#[utoipa::path(post, path = "/v1/admin/policies/simulate", tag = "access", security(("bearer" = [])),
    request_body = SimRequest,
    responses((status = 200, body = SimAnswer), (status = 400), (status = 404)))]
pub async fn simulate(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<SimRequest>,
) -> Result<Json<SimAnswer>, ApiError> {
    let subject = match (body.user_id, body.role, body.policies) {
        (Some(id), None, None) => Subject::User(id),
        (None, Some(role), None) => Subject::Role(role),
        (None, None, Some(names)) => Subject::Policies(names),
        _ => return Err(ApiError::invalid_request("give exactly one of user_id, role and policies")),
    };
    if !ward_access::actions::is_known(&body.action) {
        return Err(ApiError::invalid_request("action: not a known action (see the action catalogue)"));
    }
    let c = body.context.unwrap_or_default();
    let now = match &c.time {
        Some(t) => OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|_| ApiError::invalid_request("context.time: expected an RFC 3339 time"))?,
        None => OffsetDateTime::now_utc(),
    };
    let mfa_at = c.mfa.then(|| now - std::time::Duration::from_secs(c.mfa_age_s.unwrap_or(0)));
    let context = RequestContext {
        now,
        ip: c.ip,
        mfa_at,
        credential: c.credential.unwrap_or(CredentialKind::Session),
        dialog_member: c.dialog_member,
        breakglass: c.breakglass,
    };
    let session_policy = body.session_policy.map(ward_access::service::session_policy_from_value).transpose()?;
    let event = caller
        .ctx
        .event("policy.simulate", ward_audit::Outcome::Success)
        .resource(body.resource.clone())
        .detail("policy_action", body.action.clone());
    state.audit.record_alone(&event).await?;
    let sim = Simulation { subject, action: body.action, resource: body.resource, context, session_policy };
    let Decision { allowed, matched } = state.access.simulate(&sim).await?;
    Ok(Json(SimAnswer { decision: if allowed { "allow" } else { "deny" }, matched_statements: matched }))
}
