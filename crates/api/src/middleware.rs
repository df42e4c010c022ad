//! Cross-cutting request handling, applied to every answer including 404s and panics.
//!
//! [`observe`] is the outermost layer. For each request it:
//! 1. assigns a fresh request id (UUIDv7; a client-sent id is ignored so log lines can't
//!    be forged), returned in `X-Request-Id` and carried by every log line of the request;
//! 2. logs one line on completion: method, route *template*, status, latency. Never the
//!    query string, a header value, or a body;
//! 3. counts the request and its latency by route and status;
//! 4. renders errors in the contract's shape with the request id, also for answers made
//!    outside handlers (unknown route, 405, 413 from the body limit, timeouts, panics);
//! 5. adds the security headers.

use std::time::Instant;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::Instrument;

use crate::AppState;
use crate::error::ApiError;
use crate::metrics::RouteLabels;

/// The id of the request being served.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Route template recorded by [`record_route`] for the outer layer.
#[derive(Debug, Clone)]
struct MatchedRoute(String);

/// Runs inside the router (as a route layer), where the matched template is known, and
/// hands it outwards on the response.
pub async fn record_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(MatchedRoute(route));
    }
    response
}

pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::now_v7().to_string();
    request.extensions_mut().insert(RequestId(request_id.clone()));
    let method = request.method().clone();
    let span = tracing::info_span!("http", request_id = %request_id, method = %method, route = tracing::field::Empty);

    let response = next.run(request).instrument(span.clone()).await;

    let route = response.extensions().get::<MatchedRoute>().map_or("unmatched", |r| r.0.as_str()).to_owned();
    span.record("route", route.as_str());
    let mut response = envelope_errors(response, &request_id);
    add_security_headers(&mut response, state.tls, &request_id);

    let status = response.status().as_u16();
    let labels = RouteLabels { method: method.to_string(), route, status };
    let elapsed = started.elapsed();
    state.metrics.requests.get_or_create(&labels).inc();
    state.metrics.latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::warn!(status, latency_ms, "request failed");
        } else {
            tracing::info!(status, latency_ms, "request");
        }
    });
    response
}

/// Gives every error answer the body `{"error": {"code", "message", "request_id"}}`.
fn envelope_errors(response: Response, request_id: &str) -> Response {
    let status = response.status();
    let error = match response.extensions().get::<ApiError>() {
        Some(e) => e.clone(),
        None if status.is_client_error() || status.is_server_error() => {
            let is_json = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if is_json {
                return response;
            }
            ApiError::for_status(status)
        }
        None => return response,
    };
    let (mut parts, _) = response.into_parts();
    let body = json!({"error": {"code": error.code, "message": error.message, "request_id": request_id}});
    let mut fresh = (error.status, Json(body)).into_response();
    // Keep headers such as Retry-After or Allow set by whoever made the answer.
    for (name, value) in parts.headers.drain().filter_map(|(n, v)| n.map(|n| (n, v))) {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name, value);
        }
    }
    fresh
}

fn add_security_headers(response: &mut Response, tls: bool, request_id: &str) {
    let headers = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: &'static str, value: &'static str| {
        h.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    };
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "referrer-policy", "no-referrer");
    set(headers, "x-frame-options", "DENY");
    // Ward serves no HTML; should any answer be rendered as a page, it may load nothing.
    set(headers, "content-security-policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'");
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if tls {
        set(headers, "strict-transport-security", "max-age=63072000; includeSubDomains");
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
}
