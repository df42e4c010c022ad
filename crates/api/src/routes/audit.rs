//! Search and export of the audit trail, for the `auditor` role only (`/v1/audit/*`).
//! Every search and export is itself recorded before any data leaves; a refused caller
//! is recorded as `denied`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use ward_audit::export::{self, Format};
use ward_audit::{AuditRecord, Outcome};
use ward_storage::AuditFilter;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, Caller};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// A user id or username.
    actor: Option<String>,
    /// An action (`auth.login`) or a prefix (`auth.*`).
    action: Option<String>,
    /// `success`, `failure` or `denied`.
    outcome: Option<String>,
    /// An exact resource, e.g. `setting/session.idle_timeout_s` for a setting's history.
    resource: Option<String>,
    /// RFC 3339 time, inclusive.
    since: Option<String>,
    /// RFC 3339 time, exclusive.
    until: Option<String>,
    /// 1 to 1000, default 100.
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventsPage {
    #[schema(value_type = Vec<Object>)]
    events: Vec<AuditRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `jsonl`, `csv` or `fhir` (a FHIR R4 Bundle of AuditEvent resources).
    format: String,
    since: Option<String>,
    until: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
}

fn micros(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|s| {
        export::parse_time_us(s).ok_or_else(|| ApiError::invalid_request(format!("{name}: expected an RFC 3339 time")))
    })
    .transpose()
}

fn filter(
    actor: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<AuditFilter, ApiError> {
    if let Some(a) = &action
        && !a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '*'))
    {
        return Err(ApiError::invalid_request("action: letters, digits, `.`, `_` and a trailing `*` only"));
    }
    if let Some(o) = &outcome
        && !matches!(o.as_str(), "success" | "failure" | "denied")
    {
        return Err(ApiError::invalid_request("outcome: one of success, failure, denied"));
    }
    Ok(AuditFilter {
        actor,
        action,
        outcome,
        since_us: micros("since", since)?,
        until_us: micros("until", until)?,
        after_seq: None,
        resource: None,
    })
}

/// Searches the audit trail, oldest first, with cursor pagination.
#[utoipa::path(get, path = "/v1/audit/events", tag = "audit", security(("bearer" = [])), params(EventsQuery),
    responses((status = 200, body = EventsPage), (status = 403, description = "not an auditor")))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_request("limit: between 1 and 1000"));
    }
    let mut f = filter(q.actor, q.action, q.outcome, q.since.as_deref(), q.until.as_deref())?;
    f.resource = q.resource;
    f.after_seq = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| ApiError::invalid_request("cursor: not a cursor"))?),
    };
    let event = caller.ctx.event("audit.search", Outcome::Success).detail("limit", limit);
    state.audit.record_alone(&event).await?;
    let events = state.audit.search(&f, limit).await?;
    let next_cursor = if events.len() as i64 == limit { events.last().map(|e| e.seq.to_string()) } else { None };
    Ok(Json(EventsPage { events, next_cursor }))
}

/// Exports the trail (optionally filtered) as JSON Lines, CSV or a FHIR R4 Bundle.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", security(("bearer" = [])), params(ExportQuery),
    responses((status = 200, description = "the export, streamed"), (status = 403, description = "not an auditor")))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let format: Format = q.format.parse().map_err(ApiError::invalid_request)?;
    let f = filter(q.actor, q.action, q.outcome, q.since.as_deref(), q.until.as_deref())?;
    let event = caller.ctx.event("audit.export", Outcome::Success).detail("format", format.name());
    state.audit.record_alone(&event).await?;
    let body = Body::from_stream(export::stream(
        state.audit.clone(),
        f,
        format,
        export::observer(state.store.backend().as_str()),
    ));
    Ok(([(CONTENT_TYPE, format.content_type())], body).into_response())
}
