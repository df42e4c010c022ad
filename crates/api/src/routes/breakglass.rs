//! Break-glass (`POST /v1/dialogs/{id}/break-glass`) and its oversight
//! (`/v1/admin/break-glass…`, administrators and auditors).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use ward_access::GrantView;
use ward_audit::Outcome;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller, look_back};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Invoke {
    /// Why emergency access is needed, 20 to 1,000 characters. Stored sealed under the
    /// dialog's key (the audit trail records its length only) and shown to administrators
    /// and auditors: state the justification, not clinical details. A missing reason is
    /// refused (400) like a short one, and recorded.
    #[serde(default)]
    reason: String,
}

/// A break-glass grant.
#[derive(Serialize, ToSchema)]
pub struct Grant {
    id: Uuid,
    user_id: Uuid,
    dialog_id: Uuid,
    /// The stated reason; `null` once the dialog has been erased (its key destroyed).
    reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    revoked_at: Option<OffsetDateTime>,
    revoked_by: Option<Uuid>,
    /// Neither expired nor revoked.
    active: bool,
}

impl Grant {
    fn of(view: GrantView, now: OffsetDateTime) -> Self {
        let GrantView { grant: g, reason } = view;
        let active = g.revoked_at.is_none() && g.expires_at > now;
        Self {
            id: g.id,
            user_id: g.user_id,
            dialog_id: g.dialog_id,
            reason,
            created_at: g.created_at,
            expires_at: g.expires_at,
            revoked_at: g.revoked_at,
            revoked_by: g.revoked_by,
            active,
        }
    }
}

/// Emergency read access to a dialog the caller is not a member of: needs a session that
/// proved a second factor and a stated reason; recorded at high severity and alerted.
#[utoipa::path(post, path = "/v1/dialogs/{id}/break-glass", tag = "dialogs", security(("bearer" = [])),
    request_body = Invoke,
    responses((status = 201, body = Grant), (status = 400, description = "no reason, or too short"),
              (status = 403, description = "not allowed, or no MFA in this session"), (status = 404),
              (status = 409, description = "already a member")))]
pub async fn invoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Invoke>,
) -> Result<(StatusCode, Json<Grant>), ApiError> {
    let grant = state.access.invoke_breakglass(&caller.ctx, &caller.principal, id, &body.reason).await?;
    Ok((StatusCode::CREATED, Json(Grant::of(grant, caller.ctx.now))))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GrantsQuery {
    /// Grants made in the last this many days (1 to 366, default 30).
    days: Option<i64>,
    /// Only grants still in force.
    #[serde(default)]
    active: bool,
}

#[derive(Serialize, ToSchema)]
pub struct GrantList {
    grants: Vec<Grant>,
}

/// Break-glass grants, newest first.
#[utoipa::path(get, path = "/v1/admin/break-glass", tag = "access", security(("bearer" = [])),
    params(GrantsQuery), responses((status = 200, body = GrantList), (status = 403)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<GrantsQuery>,
) -> Result<Json<GrantList>, ApiError> {
    let now = caller.ctx.now;
    let (days, since) = look_back(q.days, 30, now)?;
    // The list shows the stated reasons: who read them is recorded.
    let event = caller.ctx.event("breakglass.list", Outcome::Success).resource("*").detail("days", days);
    state.audit.record_alone(&event).await?;
    let grants = state.access.grants(since).await?;
    let grants = grants.into_iter().map(|g| Grant::of(g, now)).filter(|g| !q.active || g.active).collect();
    Ok(Json(GrantList { grants }))
}

/// Ends a grant at once.
#[utoipa::path(delete, path = "/v1/admin/break-glass/{id}", tag = "access", security(("bearer" = [])),
    responses((status = 200, body = Grant), (status = 404), (status = 409, description = "already ended")))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Grant>, ApiError> {
    let grant = state.access.revoke_grant(&caller.ctx, id).await?;
    Ok(Json(Grant::of(grant, caller.ctx.now)))
}
