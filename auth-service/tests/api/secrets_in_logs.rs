//! Passwords, hashes and tokens never appear in logs, events or error bodies (README
//! "Guarantees"), checked on the built binary logging at `trace` (every crate, every level), as
//! JSON: through signups (accepted, duplicate, malformed, invalid), logins (good, wrong
//! password, unknown email), token-bearing requests (good, tampered, and one whose RPC fails
//! and is logged as a 5xx with its cause chain), and the `user.created` event of the signup.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{BrokerProbe, DEADLINE, ServiceEnv};

use crate::test_app::JWT_SECRET;

/// What each request answered, with its body (error bodies are checked for secrets too).
struct Answer {
    status: StatusCode,
    body: String,
}

async fn answer(response: reqwest::Response) -> Answer {
    Answer { status: response.status(), body: response.text().await.unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_hashes_and_tokens_never_appear_in_logs_events_or_error_bodies() {
    let env = ServiceEnv::new().await;
    let crate::binary::Binary { process, http, log, dir: _dir } = crate::binary::start(
        &env,
        &[
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "trace"),
            ("RATE_LIMIT_PER_SECOND", "1000"),
            ("RATE_LIMIT_BURST", "1000"),
            ("RPC_TIMEOUT_MS", "1000"),
            ("OUTBOX_POLL_MS", "200"),
        ],
    )
    .await;
    let client = reqwest::Client::new();

    // A queue of the test's own on the events exchange (declared by the service at start),
    // bound before the first signup: it receives the user.created the service publishes.
    let probe = BrokerProbe::connect(env.amqp_url()).await;
    let tap = tests::unique("secrets_tap");
    probe.declare_queue(&tap).await;
    probe.bind(&tap, env.events_exchange(), "#").await;

    // Every password differs, and each is a string nothing else could contain.
    let secret = |what: &str| format!("pw-{what}-{}", uuid::Uuid::new_v4().simple());
    let (good, duplicate, wrong, unknown, malformed, invalid) =
        (secret("good"), secret("duplicate"), secret("wrong"), secret("unknown"), secret("malformed"), secret("x"));
    let email = format!("ada-{}@example.com", uuid::Uuid::new_v4().simple());
    let post = |path: &str, body: String| {
        client.post(format!("http://{http}{path}")).header("content-type", "application/json").body(body).send()
    };
    let signup = |password: &str| json!({"email": email, "password": password, "name": "Ada"}).to_string();
    let login = |email: &str, password: &str| json!({"email": email, "password": password}).to_string();

    let mut answers = Vec::new();
    let created = answer(post("/auth/signup", signup(&good)).await.unwrap()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let user_id = serde_json::from_str::<Value>(&created.body).unwrap()["id"].as_str().unwrap().to_owned();
    answers.push(created);
    let taken = answer(post("/auth/signup", signup(&duplicate)).await.unwrap()).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.body);
    answers.push(taken);
    let not_json = format!(r#"{{"email": "{email}", "password": "{malformed}", "name": "Ada""#);
    let unreadable = answer(post("/auth/signup", not_json).await.unwrap()).await;
    assert_eq!(unreadable.status, StatusCode::BAD_REQUEST, "{}", unreadable.body);
    answers.push(unreadable);
    // Too long a password (a field error), with an invalid email beside it.
    let too_long = invalid.repeat(4);
    let rejected = answer(
        post("/auth/signup", json!({"email": "not an email", "password": too_long, "name": "Ada"}).to_string())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(rejected.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", rejected.body);
    answers.push(rejected);

    let logged_in = answer(post("/auth/login", login(&email, &good)).await.unwrap()).await;
    assert_eq!(logged_in.status, StatusCode::OK, "{}", logged_in.body);
    let token = serde_json::from_str::<Value>(&logged_in.body).unwrap()["accessToken"].as_str().unwrap().to_owned();
    let refused = answer(post("/auth/login", login(&email, &wrong)).await.unwrap()).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    answers.push(refused);
    let stranger = format!("nobody-{}@example.com", uuid::Uuid::new_v4().simple());
    let no_account = answer(post("/auth/login", login(&stranger, &unknown)).await.unwrap()).await;
    assert_eq!(no_account.status, StatusCode::UNAUTHORIZED, "{}", no_account.body);
    answers.push(no_account);

    // The token on a request whose RPC fails (no user-service consumes the queue: a 5xx,
    // logged with its cause chain), and tampered (a 401).
    let me = answer(client.get(format!("http://{http}/users/me")).bearer_auth(&token).send().await.unwrap()).await;
    assert!(me.status.is_server_error(), "no user-service runs, yet: {} {}", me.status, me.body);
    answers.push(me);
    let tampered = format!("{token}x");
    let forged =
        answer(client.get(format!("http://{http}/users/{user_id}")).bearer_auth(&tampered).send().await.unwrap()).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "{}", forged.body);
    answers.push(forged);

    // The signup's event, as published.
    let event = probe.wait_for_message(&tap, DEADLINE).await;
    let event_body = String::from_utf8_lossy(&event.body).into_owned();
    assert!(event_body.contains(&user_id), "the tap got the signup's user.created: {event_body}");
    let pool = env.db().pool().await;
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM credentials WHERE id = $1::uuid")
        .bind(&user_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let outbox: Vec<String> = sqlx::query_scalar("SELECT payload::text FROM outbox").fetch_all(&pool).await.unwrap();
    pool.close().await;

    // Stop it (SIGTERM: everything it logs on the way out is in the file too).
    process.signal("TERM").await.unwrap();
    let status = process.wait_exit(DEADLINE).await.expect("auth-service exits after SIGTERM");
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(r#""level":"TRACE""#), "the log is at trace level: {} bytes", text.len());
    assert!(text.contains("/auth/login"), "requests are logged at all");

    let passwords = [&good, &duplicate, &wrong, &unknown, &malformed, &invalid];
    let secrets: Vec<(&str, &str)> = passwords
        .iter()
        .map(|password| ("a password", password.as_str()))
        .chain([("the hash", hash.as_str()), ("a hash", "$argon2"), ("the token", token.as_str())])
        .chain([("the token's signature", token.rsplit('.').next().unwrap()), ("the JWT key", JWT_SECRET)])
        .collect();
    for (what, secret) in &secrets {
        if let Some(line) = text.lines().find(|line| line.contains(secret)) {
            panic!("{what} is in the log: {line}");
        }
        assert!(!event_body.contains(secret), "{what} is in the published event: {event_body}");
        for payload in &outbox {
            assert!(!payload.contains(secret), "{what} is in an outbox row: {payload}");
        }
        for answer in &answers {
            assert!(!answer.body.contains(secret), "{what} is in a {} body: {}", answer.status, answer.body);
        }
    }
    probe.delete_queues(&[&tap]).await;
    env.finish().await;
}
