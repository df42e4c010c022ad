//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations.

use std::sync::Arc;

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Ward", description = "Self-hosted, HIPAA-ready communication backend. Errors: \
        `{\"error\": {\"code\", \"message\", \"request_id\"}}`."),
    modifiers(&BearerAuth),
    tags((name = "operations", description = "Health, readiness, metrics"),
         (name = "auth", description = "Sign-in and sessions"),
         (name = "users", description = "Account administration, for administrators"),
         (name = "dialogs", description = "Dialogs and messages, for their members"),
         (name = "files", description = "Files shared in dialogs, for their members"),
         (name = "audit", description = "The audit trail, for auditors"),
         (name = "access", description = "Policies, break-glass oversight and access reviews"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn serve(doc: Arc<serde_json::Value>) -> Json<serde_json::Value> {
    Json((*doc).clone())
}

/// The document as JSON, with each operation's declared action and resource
/// ([`crate::guard`]) as `x-ward-action` / `x-ward-resource`, or `x-ward-public: true` for
/// the routes open without a credential.
pub fn with_route_rules(doc: utoipa::openapi::OpenApi) -> serde_json::Value {
    let mut value = serde_json::to_value(&doc).unwrap_or_default();
    if let Some(paths) = value.get_mut("paths").and_then(serde_json::Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(ops) = item.as_object_mut() else { continue };
            for (method, op) in ops.iter_mut() {
                let Some(op) = op.as_object_mut() else { continue };
                if let Some(rule) = crate::guard::rule_for(method, path) {
                    op.insert("x-ward-action".into(), rule.action.into());
                    op.insert("x-ward-resource".into(), rule.resource.into());
                } else if crate::guard::is_public(method, path) {
                    op.insert("x-ward-public".into(), true.into());
                }
            }
        }
    }
    value
}
