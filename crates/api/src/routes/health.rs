//! Liveness, readiness and metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ApiError;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the process answers.
    status: &'static str,
    version: &'static str,
}

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", version: env!("CARGO_PKG_VERSION") })
}

#[derive(Serialize, ToSchema)]
pub struct Check {
    /// `ok` or `failing`.
    status: &'static str,
    /// What failed, without secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// Conditions an operator must fix before production (the check still passes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` when every check passes, else `unavailable`.
    status: &'static str,
    database_backend: &'static str,
    checks: std::collections::BTreeMap<&'static str, Check>,
}

/// Readiness: the database answers, the key store unwraps a data key, the audit trail
/// accepts writes, and the file store (and clamd, when configured) answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let db = check(state.store.ping()).await;
    let audit = check(state.audit.probe()).await;
    let mut keys = check(state.keys.probe()).await;
    keys.warnings = state.keys.key_store().warnings();
    let mut files = check(state.files.probe()).await;
    files.warnings = state.files.warnings();
    let ready = db.status == "ok" && audit.status == "ok" && keys.status == "ok" && files.status == "ok";
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        database_backend: state.store.backend().as_str(),
        checks: [("database", db), ("audit", audit), ("key_store", keys), ("files", files)].into_iter().collect(),
    };
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body))
}

/// Runs one readiness probe with a 2 s limit.
async fn check<E: std::fmt::Display>(probe: impl std::future::Future<Output = Result<(), E>>) -> Check {
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(())) => Check { status: "ok", detail: None, warnings: vec![] },
        Ok(Err(e)) => Check { status: "failing", detail: Some(e.to_string()), warnings: vec![] },
        Err(_) => Check { status: "failing", detail: Some("no answer within 2 s".into()), warnings: vec![] },
    }
}

/// Prometheus text exposition: request counts and latency by route and status, pool usage.
/// With `[server] metrics_token` set, only for `Authorization: Bearer <that token>`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "`server.metrics_token` is set and was not presented")))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<impl IntoResponse, ApiError> {
    if let Some(expected) = &state.config.server.metrics_token {
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Compared as digests, in constant time: neither the length nor a prefix leaks.
        let (a, b) = (Sha256::digest(presented.as_bytes()), Sha256::digest(expected.as_bytes()));
        if !bool::from(a.as_slice().ct_eq(b.as_slice())) {
            return Err(ApiError::for_status(StatusCode::UNAUTHORIZED));
        }
    }
    let text = state.metrics.render(state.store.pool_stats());
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text))
}
