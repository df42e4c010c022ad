//! Ward's HTTP API.
//!
//! **Architecture invariant:** this is the only crate that knows HTTP, JSON request
//! shapes and the web framework. Handlers are thin: extract, call one domain operation,
//! map the result. Every error leaves through [`error::ApiError`], which renders the
//! contract's shape `{"error": {"code", "message", "request_id"}}` in one place.
//!
//! Map:
//! * [`server`]: binding, TLS or plain, graceful shutdown, the `ward listening on` line.
//! * [`tls`]: certificate loading or first-start self-signed generation; TLS 1.2/1.3 only.
//! * [`middleware`]: request ids, the access log line, metrics, security headers, and the
//!   error envelope for answers produced outside handlers (404, 405, 413, timeouts, panics).
//! * [`guard`]: every route's declared action and resource, checked by the `Caller`
//!   extractor through the policy engine before the handler runs.
//! * [`routes`]: one module per resource.
//! * [`metrics`]: the Prometheus registry owned by the app (no global recorder).
//! * [`openapi`]: the OpenAPI 3.1 document, generated from the handlers' annotations.

pub mod error;
mod extract;
pub mod guard;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod tls;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use ward_audit::AuditLog;
use ward_auth::Accounts;
use ward_config::Config;
use ward_storage::Store;

pub use server::{Application, Scheme};

/// Everything a handler may use. Built once at start-up and passed explicitly.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub accounts: Accounts,
    /// Data keys under the master-key store.
    pub keys: ward_keys::DataKeys,
    /// Dialogs and messages.
    pub messaging: ward_messaging::Messaging,
    /// Shared files of dialogs.
    pub files: ward_files::Files,
    /// Policies, decisions, break-glass grants and access reviews.
    pub access: ward_access::Access,
    /// The audit trail every handler records through.
    pub audit: AuditLog,
    pub metrics: Arc<metrics::Metrics>,
    /// Cancelled when shutdown begins; long-lived connections (WebSockets) watch it and
    /// close with code 1001 (going away).
    pub shutdown: CancellationToken,
    /// True when this listener speaks TLS (drives HSTS).
    pub tls: bool,
}
