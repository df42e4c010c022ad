//! The access review (`GET /v1/access/review`), for auditors: per user, roles, policies,
//! effective permissions, memberships, last sign-in, MFA state, break-glass uses and
//! dormancy. Generating it is recorded.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use ward_access::review::Review;
use ward_audit::Outcome;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, Caller, look_back};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReviewQuery {
    /// Break-glass uses of the last this many days (1 to 366, default 90).
    days: Option<i64>,
}

/// The access review of every account.
#[utoipa::path(get, path = "/v1/access/review", tag = "access", security(("bearer" = [])),
    params(ReviewQuery), responses((status = 200, body = Object), (status = 403)))]
pub async fn review(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ReviewQuery>,
) -> Result<Json<Review>, ApiError> {
    let now = caller.ctx.now;
    let (days, since) = look_back(q.days, 90, now)?;
    let event = caller.ctx.event("access.review", Outcome::Success).resource("*").detail("days", days);
    state.audit.record_alone(&event).await?;
    Ok(Json(state.access.review(now, since).await?))
}
