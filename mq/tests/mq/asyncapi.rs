//! The AsyncAPI document: the committed copy equals the generated one, the official parser
//! finds no error in it, and a running service serves it at `/asyncapi.json`.

use std::path::PathBuf;

use serde_json::Value;
use shared::CancellationToken;
use tests::{DEADLINE, ServiceEnv};

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/asyncapi.yaml")
}

#[test]
fn docs_asyncapi_yaml_is_the_generated_document() {
    let committed = std::fs::read_to_string(committed()).unwrap_or_default();
    assert!(
        committed == shared::asyncapi::yaml(),
        "docs/asyncapi.yaml is not the document the contract types generate: regenerate it with \
         `cargo run -q -p mq -- asyncapi > docs/asyncapi.yaml` and commit it"
    );
}

#[tokio::test]
async fn the_official_parser_finds_no_error_and_reads_the_yaml_as_generated() {
    let validation = tests::asyncapi::validate(&committed()).await;
    assert!(validation.errors.is_empty(), "@asyncapi/parser errors: {:#?}", validation.errors);
    assert!(validation.warnings.is_empty(), "@asyncapi/parser warnings: {:#?}", validation.warnings);
    assert_eq!(validation.document, shared::asyncapi::document(), "the YAML reads back as another document");
    assert_eq!(validation.document["asyncapi"], "3.0.0");
}

#[tokio::test]
async fn mq_asyncapi_prints_the_document() {
    let env = ServiceEnv::new().await;
    let yaml = crate::support::mq(&env, &["asyncapi"]).await;
    assert_eq!(yaml.code, Some(0), "{yaml:?}");
    assert_eq!(yaml.stdout, shared::asyncapi::yaml());
    let json = crate::support::mq(&env, &["--json", "asyncapi"]).await;
    assert_eq!(json.json(), shared::asyncapi::document());
    env.finish().await;
}

#[tokio::test]
async fn a_running_service_serves_the_document_on_its_ops_port_and_it_parses() {
    let env = ServiceEnv::new().await;
    let config = user_service::Config::from_lookup(|name| env.lookup(name)).expect("test configuration");
    let shutdown = CancellationToken::new();
    let app = user_service::App::build(config, shutdown.clone()).await.expect("user-service starts");
    assert!(app.wait_ready(DEADLINE).await);

    let (status, body) = http_get(app.ops_addr(), "/asyncapi.json").await;
    assert_eq!(status, 200, "{body}");
    let served: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(served, shared::asyncapi::document());
    let file = std::env::temp_dir().join(format!("asyncapi-{}.json", tests::unique("served")));
    std::fs::write(&file, &body).unwrap();
    let validation = tests::asyncapi::validate(&file).await;
    let _ = std::fs::remove_file(&file);
    assert!(validation.errors.is_empty(), "@asyncapi/parser errors in the served document: {:#?}", validation.errors);

    shutdown.cancel();
    app.run_until_stopped().await;
    env.finish().await;
}

/// A plain HTTP/1.0 GET: (status, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the ops port");
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read the response");
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}
