//! The router: one module per resource, assembled with the cross-cutting layers.

pub mod admin_keys;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod breakglass;
pub mod dialogs;
pub mod files;
pub mod health;
pub mod policies;
pub mod review;
pub mod sts;
pub mod users;
pub mod ws;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::{AppState, middleware, openapi};

/// Builds the application router and the OpenAPI document describing it.
pub fn build(state: AppState) -> Router {
    let bounded = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(auth::login))
        .routes(routes!(auth::mfa_login))
        .routes(routes!(auth::totp_enroll))
        .routes(routes!(auth::totp_confirm))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::session))
        .routes(routes!(auth::sessions))
        .routes(routes!(auth::revoke_session))
        .routes(routes!(auth::change_password))
        .routes(routes!(users::create, users::list))
        .routes(routes!(users::get, users::update))
        .routes(routes!(users::disable))
        .routes(routes!(users::unlock))
        .routes(routes!(api_keys::create, api_keys::list))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(api_keys::reset_mfa))
        .routes(routes!(admin_keys::status))
        .routes(routes!(admin_keys::rotate))
        .routes(routes!(sts::assume_role))
        .routes(routes!(audit::events))
        .routes(routes!(audit::export))
        .routes(routes!(dialogs::create, dialogs::list))
        .routes(routes!(dialogs::get))
        .routes(routes!(dialogs::send, dialogs::history))
        .routes(routes!(dialogs::edit, dialogs::delete))
        .routes(routes!(dialogs::read))
        .routes(routes!(dialogs::add_member))
        .routes(routes!(dialogs::remove_member))
        .routes(routes!(breakglass::invoke))
        .routes(routes!(breakglass::list))
        .routes(routes!(breakglass::revoke))
        .routes(routes!(policies::list))
        .routes(routes!(policies::get, policies::put, policies::delete))
        .routes(routes!(policies::attach))
        .routes(routes!(policies::simulate))
        .routes(routes!(review::review))
        .routes(routes!(ws::upgrade));
    let max_body = usize::try_from(state.config.server.max_body_bytes).unwrap_or(usize::MAX);
    let timeout = Duration::from_secs(state.config.server.request_timeout_s);
    let bounded = bounded
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout));
    // File bodies stream: their size is bounded by `[files] max_bytes` while streaming,
    // their time by `[files] transfer_timeout_s`.
    let transfer = Duration::from_secs(state.config.files.transfer_timeout_s);
    let files = OpenApiRouter::new()
        .routes(routes!(files::upload))
        .routes(routes!(files::download, files::delete))
        .layer(DefaultBodyLimit::disable())
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, transfer));
    let (router, api) = bounded.merge(files).split_for_parts();
    let api = std::sync::Arc::new(openapi::with_route_rules(api));

    router
        .route("/v1/openapi.json", axum::routing::get(move || openapi::serve(api.clone())))
        .route_layer(axum::middleware::from_fn(middleware::record_route))
        .fallback(|| async { ApiError::not_found() })
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state)
}
