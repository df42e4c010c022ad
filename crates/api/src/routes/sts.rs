//! Temporary limited-privilege credentials (`/v1/sts/*`), modelled on AWS STS.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Caller};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssumeRole {
    /// A role the caller holds.
    role: String,
    /// Lifetime in seconds, 900 to 43,200.
    duration_s: u64,
    /// A session policy (a policy document) to narrow the role further: the credential may
    /// do only what both the role's policies and this one allow, and a deny in either wins.
    #[schema(value_type = Option<Object>)]
    policy: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Credential {
    /// Opaque bearer token, shown once.
    token: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: OffsetDateTime,
    role: String,
}

/// Issues a temporary credential acting with one of the caller's roles.
#[utoipa::path(post, path = "/v1/sts/assume-role", tag = "auth", security(("bearer" = [])), request_body = AssumeRole,
    responses((status = 200, body = Credential), (status = 400, description = "duration out of bounds"),
              (status = 403, description = "a role the caller does not hold")))]
pub async fn assume_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<AssumeRole>,
) -> Result<Json<Credential>, ApiError> {
    // Checked here, stored as its canonical JSON, applied by the policy engine on every use.
    let policy = match body.policy {
        Some(value) => {
            let policy = ward_access::service::session_policy_from_value(value)?;
            let text = serde_json::to_string(&policy.document)
                .map_err(|_| ApiError::invalid_request("policy: cannot be stored"))?;
            Some(text)
        }
        None => None,
    };
    let ok = state.accounts.assume_role(&caller.ctx, &caller.who, &body.role, body.duration_s, policy).await?;
    let role = ok.session.assumed_role.clone().unwrap_or_default();
    Ok(Json(Credential { token: ok.token.expose().to_string(), expires_at: ok.session.expires_at, role }))
}
