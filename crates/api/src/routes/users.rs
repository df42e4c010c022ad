//! Account administration over HTTP (`/v1/users`), for the `admin` role only. Every call,
//! reads included, is recorded; a refused caller is recorded as `denied`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;
use ward_audit::Outcome;
use ward_auth::{User, UserRef};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Caller};

/// A user as administrators see it.
#[derive(Serialize, ToSchema)]
pub struct UserDetail {
    id: Uuid,
    username: String,
    roles: Vec<String>,
    disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
}

impl From<&User> for UserDetail {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            username: u.username.clone(),
            roles: u.roles.iter().map(|r| r.to_string()).collect(),
            disabled: u.disabled,
            created_at: u.created_at,
        }
    }
}

/// A new user. The password is checked against the policy and never logged or recorded.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    password: String,
    roles: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// Replaces the user's roles.
    roles: Option<Vec<String>>,
    /// `true` disables the user and ends their sessions; re-enabling is not offered here.
    disabled: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    users: Vec<UserDetail>,
}

/// Creates a user.
#[utoipa::path(post, path = "/v1/users", tag = "users", security(("bearer" = [])), request_body = NewUser,
    responses((status = 201, body = UserDetail), (status = 400), (status = 403), (status = 409)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserDetail>), ApiError> {
    let user = state.accounts.create_user(&caller.ctx, &body.username, &body.password, &body.roles).await?;
    Ok((StatusCode::CREATED, Json(UserDetail::from(&user))))
}

/// Lists every user.
#[utoipa::path(get, path = "/v1/users", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserList), (status = 403)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<UserList>, ApiError> {
    state.audit.record_alone(&caller.ctx.event("user.list", Outcome::Success)).await?;
    let users = state.accounts.list_users().await?;
    Ok(Json(UserList { users: users.iter().map(UserDetail::from).collect() }))
}

/// One user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserDetail), (status = 403), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UserDetail>, ApiError> {
    let event = caller.ctx.event("user.read", Outcome::Success).resource(format!("user/{id}"));
    state.audit.record_alone(&event).await?;
    let user = state.accounts.find(UserRef::Id(id)).await?;
    Ok(Json(UserDetail::from(&user)))
}

/// Changes a user's roles, or disables them.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", security(("bearer" = [])), request_body = UserPatch,
    responses((status = 200, body = UserDetail), (status = 400), (status = 403), (status = 404)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<Json<UserDetail>, ApiError> {
    if patch.disabled == Some(false) {
        return Err(ApiError::invalid_request("disabled: only `true` is accepted (re-enabling is not offered)"));
    }
    let mut user = state.accounts.find(UserRef::Id(id)).await?;
    if let Some(roles) = &patch.roles {
        user = state.accounts.set_roles(&caller.ctx, UserRef::Id(id), roles).await?;
    }
    if patch.disabled == Some(true) {
        user = state.accounts.disable(&caller.ctx, UserRef::Id(id)).await?;
    }
    Ok(Json(UserDetail::from(&user)))
}

/// Disables a user and ends every session of theirs at once.
#[utoipa::path(post, path = "/v1/users/{id}/disable", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserDetail), (status = 403), (status = 404)))]
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UserDetail>, ApiError> {
    let user = state.accounts.disable(&caller.ctx, UserRef::Id(id)).await?;
    Ok(Json(UserDetail::from(&user)))
}

/// Lifts a lockout (temporary or hard).
#[utoipa::path(post, path = "/v1/users/{id}/unlock", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserDetail), (status = 403), (status = 404)))]
pub async fn unlock(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UserDetail>, ApiError> {
    let user = state.accounts.unlock(&caller.ctx, UserRef::Id(id)).await?;
    Ok(Json(UserDetail::from(&user)))
}
