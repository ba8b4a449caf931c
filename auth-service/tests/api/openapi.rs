//! GET /openapi.json: an OpenAPI 3.1 document covering every route and the problem shape.

use reqwest::StatusCode;
use serde_json::Value;

use crate::test_app::TestApp;

#[tokio::test]
async fn the_openapi_document_parses_and_lists_every_route() {
    let app = TestApp::spawn().await;

    let response = app.get("/openapi.json", None).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"), "{}", document["openapi"]);
    let routes = [
        ("/auth/signup", "post"),
        ("/auth/login", "post"),
        ("/users/{id}", "get"),
        ("/users/me", "get"),
        ("/healthz", "get"),
        ("/openapi.json", "get"),
    ];
    for (path, method) in routes {
        assert!(document["paths"][path][method].is_object(), "{method} {path} is not documented");
    }
    assert_eq!(document["paths"].as_object().unwrap().len(), routes.len(), "no undocumented extras");

    let problem = &document["components"]["schemas"]["Problem"];
    for member in ["type", "title", "status", "detail", "errors"] {
        assert!(problem["properties"][member].is_object(), "Problem.{member} missing");
    }
    let conflict = &document["paths"]["/auth/signup"]["post"]["responses"]["409"]["content"];
    assert!(conflict["application/problem+json"]["schema"].is_object(), "errors are documented as problem+json");
    let required = document["components"]["schemas"]["SignupRequest"]["required"].as_array().unwrap();
    assert_eq!(required.len(), 3);
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());

    // The rules the server enforces are stated.
    let schemas = &document["components"]["schemas"];
    for request in ["SignupRequest", "LoginRequest"] {
        assert_eq!(schemas[request]["additionalProperties"], false, "{request}");
    }
    let signup = &schemas["SignupRequest"]["properties"];
    assert_eq!(signup["email"]["pattern"], auth_service::account::EMAIL_PATTERN);
    assert_eq!(signup["email"]["maxLength"], 254);
    assert_eq!(signup["name"]["pattern"], auth_service::account::NAME_PATTERN);
    assert_eq!((signup["name"]["minLength"].as_u64(), signup["name"]["maxLength"].as_u64()), (Some(1), Some(100)));
    assert_eq!(
        (signup["password"]["minLength"].as_u64(), signup["password"]["maxLength"].as_u64()),
        (Some(8), Some(128))
    );
    let id = &document["paths"]["/users/{id}"]["get"]["parameters"][0];
    assert_eq!((id["name"].as_str(), id["schema"]["format"].as_str()), (Some("id"), Some("uuid")));
    let shed = &document["paths"]["/auth/signup"]["post"]["responses"]["503"];
    assert!(shed["headers"]["retry-after"].is_object(), "{shed}");
}
