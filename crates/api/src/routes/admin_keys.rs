//! Master-key administration (`/v1/admin/keys`), for the `admin` role: the versions and
//! how many data keys each wraps, and rotation. A rotation answers 202 at once; the rewrap
//! of every data key runs in the background (progress in `GET /v1/admin/keys` as
//! `pending_rewrap`) and resumes at the next start if interrupted.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Caller;

/// `ward_keys::KeyStatus` as JSON: backend, active version, versions with their states and
/// data-key counts, the rewrap backlog, warnings.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct KeysView(ward_keys::KeyStatus);

/// Master-key versions, their states and how many data keys each still wraps.
#[utoipa::path(get, path = "/v1/admin/keys", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = KeysView), (status = 403)))]
pub async fn status(State(state): State<AppState>, caller: Caller) -> Result<Json<KeysView>, ApiError> {
    let status = state.keys.status().await?;
    let event = caller.ctx.event("keys.status", ward_audit::Outcome::Success).resource("keys/master");
    state.audit.record_alone(&event).await?;
    Ok(Json(KeysView(status)))
}

#[derive(Serialize, ToSchema)]
pub struct Rotated {
    /// The new active master-key version.
    version: u32,
    /// Data keys the background rewrap will move to it.
    pending_rewrap: i64,
}

/// Creates a new master-key version; data keys are rewrapped in the background.
#[utoipa::path(post, path = "/v1/admin/keys/rotate", tag = "admin", security(("bearer" = [])),
    responses((status = 202, body = Rotated), (status = 403), (status = 503, description = "audit trail unavailable")))]
pub async fn rotate(State(state): State<AppState>, caller: Caller) -> Result<(StatusCode, Json<Rotated>), ApiError> {
    let version = state.keys.rotate(&state.audit, &caller.ctx).await?;
    let pending_rewrap = state.keys.status().await?.pending_rewrap;
    let (keys, audit, ctx) = (state.keys.clone(), state.audit.clone(), caller.ctx.clone());
    tokio::spawn(async move {
        match keys.rewrap(&audit, &ctx, |_, _| {}).await {
            Ok(r) => tracing::info!(rewrapped = r.rewrapped, version, "data keys rewrapped"),
            Err(e) => tracing::error!(error = %e, "rewrap stopped; it resumes at the next start"),
        }
    });
    Ok((StatusCode::ACCEPTED, Json(Rotated { version, pending_rewrap })))
}
