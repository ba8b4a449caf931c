//! `mq send` and `mq emit` against the real user-service: its replies and typed errors, and an
//! event it projects.

use shared::CancellationToken;
use tests::{DEADLINE, ServiceEnv};

use crate::support::mq;

const GET_USER: &str = r#"{"cmd":"get_user"}"#;

#[tokio::test]
async fn send_prints_user_services_reply_or_its_typed_error() {
    let env = ServiceEnv::new().await;
    let config = user_service::Config::from_lookup(|name| env.lookup(name)).expect("test configuration");
    let shutdown = CancellationToken::new();
    let app = user_service::App::build(config, shutdown.clone()).await.expect("user-service starts");
    assert!(app.wait_ready(DEADLINE).await);
    let queue = env.user_queue().to_owned();

    let malformed = mq(&env, &["--json", "send", GET_USER, r#"{"id":"not-a-uuid"}"#, "--queue", &queue]).await;
    assert_eq!(malformed.code, Some(1), "{malformed:?}");
    let error = &malformed.json()["error"];
    assert_eq!((error["kind"].as_str(), error["status"].as_u64()), (Some("remote"), Some(400)), "{malformed:?}");

    let id = uuid::Uuid::new_v4().to_string();
    let unknown = mq(&env, &["send", GET_USER, &format!(r#"{{"id":"{id}"}}"#), "--queue", &queue]).await;
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert!(unknown.stderr.contains("404"), "{unknown:?}");

    let no_handler = mq(&env, &["--json", "send", r#"{"cmd":"nope"}"#, "{}", "--queue", &queue]).await;
    assert_eq!(no_handler.json()["error"]["kind"], "no-handler", "{no_handler:?}");
    // The service also parks a request nobody handles: mq lists it, then purges it.
    let parked = mq(&env, &["--json", "dlq", "list", &queue]).await.json();
    assert_eq!(parked["messages"][0]["failure"], "no-handler", "{parked}");
    let purged = mq(&env, &["--json", "dlq", "purge", &queue, "--yes"]).await;
    assert_eq!(purged.json()["purged"], 1, "{purged:?}");

    // An event emitted by mq is projected; then the request finds the user.
    let user =
        format!(r#"{{"id":"{id}","email":"grace@example.com","name":"Grace","createdAt":"2024-01-01T00:07:00.000Z"}}"#);
    let exchange = env.events_exchange().to_owned();
    let emitted = mq(&env, &["--json", "emit", "user.created", &user, "--exchange", &exchange]).await;
    assert_eq!(emitted.code, Some(0), "{emitted:?}");
    assert!(emitted.json()["messageId"].as_str().is_some_and(|id| !id.is_empty()), "{emitted:?}");
    let found = tests::eventually(DEADLINE, || async {
        let run = mq(&env, &["--json", "send", GET_USER, &format!(r#"{{"id":"{id}"}}"#), "--queue", &queue]).await;
        if run.code == Some(0) { Ok(run.json()) } else { Err(format!("{run:?}")) }
    })
    .await;
    assert_eq!(found["response"]["email"], "grace@example.com", "{found}");
    let text = mq(&env, &["send", GET_USER, &format!(r#"{{"id":"{id}"}}"#), "--queue", &queue]).await;
    assert!(text.stdout.contains("\"name\": \"Grace\""), "{text:?}");

    let timeout =
        mq(&env, &["--json", "send", GET_USER, "{}", "--queue", &tests::unique("nobody"), "--timeout", "300ms"]).await;
    assert_eq!(timeout.code, Some(1), "{timeout:?}");
    assert_eq!(timeout.json()["error"]["kind"], "timeout", "{timeout:?}");

    let bad = mq(&env, &["send", GET_USER, "{not json", "--queue", &queue]).await;
    assert_eq!(bad.code, Some(2), "{bad:?}");

    shutdown.cancel();
    app.run_until_stopped().await;
    env.finish().await;
}
