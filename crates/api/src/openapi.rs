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
         (name = "audit", description = "The audit trail, for auditors"))
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

pub async fn serve(doc: Arc<utoipa::openapi::OpenApi>) -> Json<utoipa::openapi::OpenApi> {
    Json((*doc).clone())
}
