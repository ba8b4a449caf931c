//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, generated from the handlers'
//! annotations and the request/response types, plus the public `/healthz`. It describes the
//! public port only: the operations port (`/readyz`, `/metrics`) is not part of the API.
//!
//! The document is exact: every rule the server enforces on a request is stated in it
//! (lengths, patterns, UUID path ids, `additionalProperties: false`), and every status and
//! header a response may carry is listed, which a schemathesis run in the test suite checks.

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
    account,
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
        (name = "operations", description = "Liveness and this document"),
    )
)]
pub struct ApiDoc;

/// The document as served (built once).
pub fn document() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        state_exact_rules(&mut document);
        serde_json::to_string(&document).unwrap_or_else(|_| "{}".to_owned())
    })
}

/// Adds what the annotations cannot say (a pattern must be a literal there): the patterns the
/// parsers of [`crate::account`] implement, and `additionalProperties: false` on every request
/// body (they all deny unknown fields).
fn state_exact_rules(document: &mut serde_json::Value) {
    let schemas = &mut document["components"]["schemas"];
    for (field, pattern) in [("email", account::EMAIL_PATTERN), ("name", account::NAME_PATTERN)] {
        if let Some(property) = schemas["SignupRequest"]["properties"][field].as_object_mut() {
            property.insert("pattern".to_owned(), pattern.into());
        }
    }
    for request in ["SignupRequest", "LoginRequest"] {
        if let Some(schema) = schemas[request].as_object_mut() {
            schema.insert("additionalProperties".to_owned(), false.into());
        }
    }
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

/// The public `/healthz`.
struct OperationsRoutes;

impl Modify for OperationsRoutes {
    fn modify(&self, openapi: &mut openapi::OpenApi) {
        let summary = "Liveness: 200 while the process serves HTTP.";
        let responses = openapi::ResponsesBuilder::new().response(
            "200",
            ResponseBuilder::new().description(summary).content("application/json", ContentBuilder::new().build()),
        );
        let operation = OperationBuilder::new().summary(Some(summary)).tag("operations").responses(responses.build());
        openapi.paths.add_path_operation("/healthz", vec![HttpMethod::Get], operation);
    }
}
