//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, generated from the handlers'
//! annotations and the request/response types, plus the operations routes that `shared::ops`
//! provides (documented here since their handlers live in another crate).

use std::sync::OnceLock;

use axum::{http::header, response::IntoResponse};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, ContentBuilder, HttpMethod, ResponseBuilder,
        path::OperationBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::{
    error::{FieldError, Problem},
    login::{self, LoginRequest, TokenBody},
    signup::{self, SignupRequest, UserBody},
    users,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "auth-service",
        description = "Signup and login; user profiles through the user-service. \
                       Errors are `application/problem+json` (RFC 9457)."
    ),
    paths(signup::signup, login::login, users::get_user, users::me, openapi_json),
    components(schemas(SignupRequest, LoginRequest, UserBody, TokenBody, Problem, FieldError)),
    modifiers(&BearerAuth, &OperationsRoutes),
    tags(
        (name = "auth", description = "Accounts and tokens (rate limited per client)"),
        (name = "users", description = "Profiles, from the user-service"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The document as served (built once).
pub fn document() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".to_owned()))
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json"))
)]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

/// Declares the `bearer` scheme the users routes require.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// `/healthz`, `/readyz`, `/metrics` from `shared::ops`.
struct OperationsRoutes;

impl Modify for OperationsRoutes {
    fn modify(&self, openapi: &mut openapi::OpenApi) {
        let routes = [
            ("/healthz", "Liveness: 200 while the process serves HTTP.", "application/json", None),
            (
                "/readyz",
                "Readiness: 200 when Postgres and the broker are usable.",
                "application/json",
                Some("503 when a dependency is down; the body names it."),
            ),
            ("/metrics", "Prometheus metrics.", "text/plain", None),
        ];
        for (path, summary, content_type, unavailable) in routes {
            let mut responses = openapi::ResponsesBuilder::new().response(
                "200",
                ResponseBuilder::new().description(summary).content(content_type, ContentBuilder::new().build()),
            );
            if let Some(description) = unavailable {
                responses = responses.response(
                    "503",
                    ResponseBuilder::new()
                        .description(description)
                        .content(content_type, ContentBuilder::new().build()),
                );
            }
            let operation =
                OperationBuilder::new().summary(Some(summary)).tag("operations").responses(responses.build());
            openapi.paths.add_path_operation(path, vec![HttpMethod::Get], operation);
        }
    }
}
