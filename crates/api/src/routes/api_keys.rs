//! API keys of service accounts (`/v1/users/{id}/api-keys`), for administrators. The key
//! is shown once, in the creation answer; listings show only its id, name, role and dates.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use ward_auth::{ApiKeyView, UserRef};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Caller};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKeyRequest {
    /// What the key is for (shown in listings).
    name: String,
    /// The one role the key acts with; the user must hold it.
    role: String,
    /// Lifetime in days (default 90, at most `[auth] api_key_max_days`).
    expires_in_days: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// The key (`ward_ak_…`), shown this once: the server keeps only its SHA-256.
    key: String,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    meta: ApiKeyView,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    #[schema(value_type = Vec<Object>)]
    api_keys: Vec<ApiKeyView>,
}

/// Issues an API key for a service account (a user holding the `service` role).
#[utoipa::path(post, path = "/v1/users/{id}/api-keys", tag = "users", security(("bearer" = [])),
    request_body = NewApiKeyRequest,
    responses((status = 201, body = CreatedApiKey), (status = 400), (status = 403), (status = 404)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewApiKeyRequest>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let days = body.expires_in_days.unwrap_or(90);
    let made = state.accounts.create_api_key(&caller.ctx, UserRef::Id(id), &body.name, &body.role, days).await?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { key: made.key.to_string(), meta: made.view })))
}

/// A user's API keys (never the keys themselves).
#[utoipa::path(get, path = "/v1/users/{id}/api-keys", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = ApiKeyList), (status = 403), (status = 404)))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ApiKeyList>, ApiError> {
    Ok(Json(ApiKeyList { api_keys: state.accounts.api_keys(UserRef::Id(id)).await? }))
}

/// Revokes an API key at once.
#[utoipa::path(delete, path = "/v1/users/{id}/api-keys/{key_id}", tag = "users", security(("bearer" = [])),
    responses((status = 204), (status = 403), (status = 404)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, key_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    state.accounts.revoke_api_key(&caller.ctx, UserRef::Id(id), key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a user's second factors and recovery codes (a lost device) and ends their
/// sessions; their next sign-in enrolls again.
#[utoipa::path(post, path = "/v1/users/{id}/reset-mfa", tag = "users", security(("bearer" = [])),
    responses((status = 204), (status = 403), (status = 404)))]
pub async fn reset_mfa(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.accounts.reset_mfa(&caller.ctx, UserRef::Id(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
