//! Dialogs and messages (`/v1/dialogs…`): thin handlers over `ward_messaging`. A caller who
//! is not a member gets 404 on everything about a dialog.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use ward_messaging::{Dialog, DialogKind, History, Message, NewDialog, NewMessage};
use ward_storage::HistoryQuery;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDialogRequest {
    /// `private` (exactly one other member; one dialog per pair) or `group`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    kind: DialogKind,
    name: Option<String>,
    /// The other members' user ids (the caller is added as owner).
    members: Vec<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct DialogList {
    #[schema(value_type = Vec<Object>)]
    dialogs: Vec<Dialog>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessageRequest {
    /// UTF-8 text, at most `[messaging] max_body_bytes`.
    #[serde(default)]
    body: String,
    /// The client's idempotency key: sending it again gives back the first message.
    client_msg_id: Option<String>,
    /// File ids of the same dialog.
    #[serde(default)]
    attachments: Vec<Uuid>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Messages with `seq` greater than this.
    after: Option<i64>,
    /// Messages with `seq` less than this (the newest ones first, returned in `seq` order).
    before: Option<i64>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
}

/// Creates a dialog (a private dialog that exists already is returned with 200).
#[utoipa::path(post, path = "/v1/dialogs", tag = "dialogs", security(("bearer" = [])),
    request_body = NewDialogRequest,
    responses((status = 201, body = Object), (status = 200, body = Object), (status = 400)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewDialogRequest>,
) -> Result<(StatusCode, Json<Dialog>), ApiError> {
    let new = NewDialog { kind: body.kind, name: body.name, members: body.members };
    let (dialog, created) = state.messaging.create_dialog(&caller.ctx, &caller.principal, new).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(dialog)))
}

/// The caller's dialogs, newest activity first, with unread counts and last messages.
#[utoipa::path(get, path = "/v1/dialogs", tag = "dialogs", security(("bearer" = [])),
    responses((status = 200, body = DialogList)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<DialogList>, ApiError> {
    Ok(Json(DialogList { dialogs: state.messaging.dialogs(&caller.ctx, &caller.principal).await? }))
}

/// One dialog.
#[utoipa::path(get, path = "/v1/dialogs/{id}", tag = "dialogs", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Dialog>, ApiError> {
    Ok(Json(state.messaging.dialog(&caller.ctx, &caller.principal, id).await?))
}

/// Sends a message (201; 200 with the first message when `client_msg_id` repeats).
#[utoipa::path(post, path = "/v1/dialogs/{id}/messages", tag = "dialogs", security(("bearer" = [])),
    request_body = NewMessageRequest,
    responses((status = 201, body = Object), (status = 200, body = Object), (status = 400), (status = 404),
        (status = 413)))]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewMessageRequest>,
) -> Result<(StatusCode, Json<Message>), ApiError> {
    let new = NewMessage { body: body.body, client_msg_id: body.client_msg_id, attachments: body.attachments };
    let (message, created) = state.messaging.send(&caller.ctx, &caller.principal, id, new).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(message)))
}

/// A page of history in `seq` order, with the cursor to go on.
#[utoipa::path(get, path = "/v1/dialogs/{id}/messages", tag = "dialogs", security(("bearer" = [])),
    params(HistoryParams),
    responses((status = 200, body = Object), (status = 400), (status = 404)))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Json<History>, ApiError> {
    let query = HistoryQuery { after: params.after, before: params.before, limit: params.limit.unwrap_or(50) };
    Ok(Json(state.messaging.history(&caller.ctx, &caller.principal, id, query).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    /// The new body (UTF-8, at most `[messaging] max_body_bytes`).
    body: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    /// Everything up to and including this `seq` has been read.
    up_to_seq: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    user_id: Uuid,
}

/// Edits the caller's own message.
#[utoipa::path(patch, path = "/v1/dialogs/{id}/messages/{mid}", tag = "dialogs", security(("bearer" = [])),
    request_body = EditRequest,
    responses((status = 200, body = Object), (status = 400), (status = 403), (status = 404), (status = 409),
        (status = 413)))]
pub async fn edit(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, mid)): ApiPath<(Uuid, Uuid)>,
    ApiJson(body): ApiJson<EditRequest>,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(state.messaging.edit(&caller.ctx, &caller.principal, id, mid, body.body).await?))
}

/// Deletes a message (its sender or a dialog admin): the body is erased, a tombstone stays.
#[utoipa::path(delete, path = "/v1/dialogs/{id}/messages/{mid}", tag = "dialogs", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403), (status = 404), (status = 409)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, mid)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(state.messaging.delete(&caller.ctx, &caller.principal, id, mid).await?))
}

/// Marks the dialog read up to a `seq` (a read receipt; the marker never moves back).
#[utoipa::path(post, path = "/v1/dialogs/{id}/read", tag = "dialogs", security(("bearer" = [])),
    request_body = ReadRequest,
    responses((status = 204), (status = 400), (status = 404)))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ReadRequest>,
) -> Result<StatusCode, ApiError> {
    state.messaging.mark_read(&caller.ctx, &caller.principal, id, body.up_to_seq).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds a member to a group (a dialog admin only).
#[utoipa::path(post, path = "/v1/dialogs/{id}/members", tag = "dialogs", security(("bearer" = [])),
    request_body = MemberRequest,
    responses((status = 204), (status = 400), (status = 403), (status = 404)))]
pub async fn add_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<MemberRequest>,
) -> Result<StatusCode, ApiError> {
    state.messaging.add_member(&caller.ctx, &caller.principal, id, body.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a member from a group (a dialog admin, or the member leaving).
#[utoipa::path(delete, path = "/v1/dialogs/{id}/members/{user_id}", tag = "dialogs", security(("bearer" = [])),
    responses((status = 204), (status = 400), (status = 403), (status = 404), (status = 409)))]
pub async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, user_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    state.messaging.remove_member(&caller.ctx, &caller.principal, id, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
