//! Traces exported over OTLP by the three **built service binaries** (run as an operator runs
//! them, `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an in-process OTLP receiver,
//! `tests::otlp`): one signup is one trace across auth-service, user-service and
//! notification-service, linked parent to child through the outbox row and the `traceparent`
//! header of each message; `GET /users/{id}` is one trace down to user-service's SQL query; and
//! what is still buffered when a service stops is exported before it exits.
//!
//! The binaries are the ones `cargo build --bins` (or `cargo test --workspace`) left next to
//! this test (`target/<profile>/`); `cargo test -p tests --test traces` alone does not rebuild
//! them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{
    DEADLINE, ServiceEnv,
    cli::{RunningBinary, start_ready},
    otlp::{OtlpReceiver, ReceivedSpan},
    process::free_port,
    smtp::SmtpSink,
};

const PASSWORD: &str = "correct horse battery";
const JWT_SECRET: &str = "a traces test secret of at least 32 bytes";
const RETRY_VARS: [&str; 4] =
    ["RETRY_MAX_ATTEMPTS", "RETRY_INITIAL_DELAY_MS", "RETRY_MULTIPLIER", "RETRY_MAX_DELAY_MS"];

/// The caller's own trace context, sent as `traceparent`: the HTTP server span's parent.
struct Caller {
    trace_id: String,
    span_id: String,
}

impl Caller {
    fn new() -> Caller {
        Caller {
            trace_id: format!("{:032x}", rand::random::<u128>() | 1),
            span_id: format!("{:016x}", rand::random::<u64>() | 1),
        }
    }

    fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

/// The three binaries on one test's queues and databases, exporting to `receiver`.
struct System {
    receiver: OtlpReceiver,
    smtp: SmtpSink,
    auth_url: String,
    binaries: Vec<RunningBinary>,
    envs: Vec<ServiceEnv>,
}

impl System {
    /// The three services with `otel` (`OTEL_*` variables) on top of the endpoint, and
    /// `auth_otel` for auth-service alone.
    async fn start(otel: &[(&str, &str)], auth_otel: &[(&str, &str)]) -> System {
        let receiver = OtlpReceiver::start().await;
        let smtp = SmtpSink::start().await;
        let endpoint = receiver.endpoint();
        let auth_env = ServiceEnv::new().await;
        let (users_env, notifications_env) = tokio::join!(auth_env.sibling(), auth_env.sibling());
        let mut common = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
        common.extend_from_slice(otel);

        let mut user_vars = vec!["AMQP_URL", "DATABASE_URL", "USER_QUEUE", "USER_EVENTS_QUEUE", "EVENTS_EXCHANGE"];
        user_vars.extend(RETRY_VARS);
        let user = start_ready(&binary("user-service"), &users_env, &user_vars, &common, "OPS_ADDR").await;

        let mut notification_vars = vec!["AMQP_URL", "DATABASE_URL", "NOTIFICATION_QUEUE", "EVENTS_EXCHANGE"];
        notification_vars.extend(RETRY_VARS);
        let smtp_url = smtp.url();
        let mut extra = common.clone();
        extra.push(("SMTP_URL", smtp_url.as_str()));
        let notification =
            start_ready(&binary("notification-service"), &notifications_env, &notification_vars, &extra, "OPS_ADDR")
                .await;

        let http_addr = format!("127.0.0.1:{}", free_port());
        let mut extra = common.clone();
        extra.extend_from_slice(auth_otel);
        extra.extend([
            ("HTTP_ADDR", http_addr.as_str()),
            ("JWT_SECRET", JWT_SECRET),
            ("ARGON2_M_COST", "1024"),
            ("ARGON2_T_COST", "1"),
            ("OUTBOX_POLL_MS", "500"),
        ]);
        let auth_vars = ["AMQP_URL", "DATABASE_URL", "USER_QUEUE", "EVENTS_EXCHANGE"];
        let auth = start_ready(&binary("auth-service"), &auth_env, &auth_vars, &extra, "OPS_ADDR").await;
        System {
            receiver,
            smtp,
            auth_url: format!("http://{http_addr}"),
            binaries: vec![auth, user, notification],
            envs: vec![auth_env, users_env, notifications_env],
        }
    }

    /// Stops the services with SIGTERM (each must exit 0), then removes the test's queues.
    async fn stop(mut self) -> OtlpReceiver {
        for binary in self.binaries.drain(..) {
            tests::cli::assert_stops_cleanly_on(binary, "TERM").await;
        }
        if let Some(auth_env) = self.envs.drain(..).next() {
            auth_env.finish().await;
        }
        self.receiver
    }

    fn queue(&self, name: &str) -> String {
        self.envs[0].lookup(name).unwrap()
    }
}

/// The built binary `name` next to this test executable (`target/<profile>/<name>`).
fn binary(name: &str) -> String {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir: PathBuf = exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_owned();
    let path = dir.join(name);
    assert!(path.is_file(), "{} is missing: run `cargo build --bins` first", path.display());
    path.to_string_lossy().into_owned()
}

/// The spans received for `trace_id` once `done` says they are all there, within
/// [`DEADLINE`]; the failure shows what did arrive.
async fn trace_of(
    receiver: &OtlpReceiver,
    trace_id: &str,
    done: impl Fn(&[ReceivedSpan]) -> bool,
) -> Vec<ReceivedSpan> {
    let started = tokio::time::Instant::now();
    loop {
        let spans: Vec<ReceivedSpan> = receiver.spans().into_iter().filter(|span| span.trace_id == trace_id).collect();
        if done(&spans) {
            return spans;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "trace {trace_id} incomplete after {DEADLINE:?} ({} exports; are the binaries built from this tree? \
             `cargo build --bins`): {:#?}",
            receiver.exports(),
            spans
                .iter()
                .map(|span| (&span.service, &span.name, span.kind, &span.span_id, &span.parent_span_id))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The one span of `service` named `name`.
fn span<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|span| span.service == service && span.name == name).collect();
    assert_eq!(found.len(), 1, "one {service} span {name:?} expected among {spans:#?}");
    found[0]
}

fn has(spans: &[ReceivedSpan], service: &str, name: &str) -> bool {
    spans.iter().any(|span| span.service == service && span.name == name)
}

fn assert_child(child: &ReceivedSpan, parent: &ReceivedSpan) {
    assert_eq!(
        child.parent_span_id, parent.span_id,
        "{}'s {:?} is not the child of {}'s {:?}",
        child.service, child.name, parent.service, parent.name
    );
}

fn assert_messaging(span: &ReceivedSpan, operation: &str, destination: &str) {
    assert_eq!(span.attribute("messaging.system"), Some("rabbitmq"), "{span:#?}");
    assert_eq!(span.attribute("messaging.operation.type"), Some(operation), "{span:#?}");
    assert_eq!(span.attribute("messaging.destination.name"), Some(destination), "{span:#?}");
}

async fn post(http: &reqwest::Client, url: &str, body: &Value, caller: &Caller) -> (StatusCode, Value) {
    let response = http.post(url).header("traceparent", caller.traceparent()).json(body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_signup_is_one_trace_across_the_three_services_and_get_user_reaches_the_sql_query() {
    let system = System::start(&[("OTEL_BSP_SCHEDULE_DELAY", "100")], &[]).await;
    let (exchange, user_events, notifications, user_queue) = (
        system.queue("EVENTS_EXCHANGE"),
        system.queue("USER_EVENTS_QUEUE"),
        system.queue("NOTIFICATION_QUEUE"),
        system.queue("USER_QUEUE"),
    );
    let http = reqwest::Client::new();
    let email = format!("{}@example.com", tests::unique("traced"));

    // The signup: HTTP → outbox row → relay's publish → projection and welcome mail.
    let signup = Caller::new();
    let body = json!({"email": email, "password": PASSWORD, "name": "Ada"});
    let (status, created) = post(&http, &format!("{}/auth/signup", system.auth_url), &body, &signup).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let user_id = created["id"].as_str().unwrap().to_owned();
    system.smtp.wait_for_mails(1, DEADLINE).await;
    let (process_events, process_mail) = (format!("process {user_events}"), format!("process {notifications}"));
    let spans = trace_of(&system.receiver, &signup.trace_id, |spans| {
        has(spans, "auth-service", "POST /auth/signup")
            && has(spans, "user-service", "INSERT users")
            && has(spans, "notification-service", "smtp send")
            && has(spans, "notification-service", &process_mail)
            && has(spans, "user-service", &process_events)
    })
    .await;
    let request = span(&spans, "auth-service", "POST /auth/signup");
    assert_eq!(request.kind, SpanKind::Server);
    assert_eq!(request.parent_span_id, signup.span_id, "the request continues the caller's traceparent");
    assert_eq!(request.attribute("http.route"), Some("/auth/signup"));
    assert_eq!(request.attribute("http.response.status_code"), Some("201"));

    let publish = span(&spans, "auth-service", &format!("send {exchange}"));
    assert_eq!(publish.kind, SpanKind::Producer);
    assert_child(publish, request); // through the trace context stored with the outbox row
    assert_messaging(publish, "send", &exchange);
    assert_eq!(publish.attribute("messaging.rabbitmq.destination.routing_key"), Some("user.created"));
    let event_id = publish.attribute("messaging.message.id").expect("the event id").to_owned();

    for (service, name, queue) in
        [("user-service", &process_events, &user_events), ("notification-service", &process_mail, &notifications)]
    {
        let process = span(&spans, service, name);
        assert_eq!(process.kind, SpanKind::Consumer, "{process:#?}");
        assert_child(process, publish); // through the message's traceparent
        assert_messaging(process, "process", queue);
        assert_eq!(process.attribute("messaging.message.id"), Some(event_id.as_str()));
        assert_eq!(process.attribute("messaging.rabbitmq.destination.routing_key"), Some("user.created"));
    }
    assert_child(span(&spans, "user-service", "INSERT users"), span(&spans, "user-service", &process_events));
    let smtp = span(&spans, "notification-service", "smtp send");
    assert_eq!(smtp.kind, SpanKind::Client);
    assert_child(smtp, span(&spans, "notification-service", &process_mail));

    // GET /users/{id}: HTTP → get_user RPC → user-service's handler → its SQL query.
    let login = json!({"email": email, "password": PASSWORD});
    let (status, session) = post(&http, &format!("{}/auth/login", system.auth_url), &login, &Caller::new()).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let token = session["accessToken"].as_str().unwrap();
    let lookup = Caller::new();
    let response = http
        .get(format!("{}/users/{user_id}", system.auth_url))
        .bearer_auth(token)
        .header("traceparent", lookup.traceparent())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the projection was written before the INSERT span ended");
    let process_rpc = format!("process {user_queue}");
    let spans = trace_of(&system.receiver, &lookup.trace_id, |spans| {
        has(spans, "auth-service", "GET /users/{id}") && has(spans, "user-service", "SELECT users")
    })
    .await;
    let request = span(&spans, "auth-service", "GET /users/{id}");
    assert_eq!(request.kind, SpanKind::Server);
    assert_eq!(request.parent_span_id, lookup.span_id);
    let call = span(&spans, "auth-service", &format!("send {user_queue}"));
    assert_eq!(call.kind, SpanKind::Client);
    assert_child(call, request);
    assert_messaging(call, "send", &user_queue);
    let handler = span(&spans, "user-service", &process_rpc);
    assert_eq!(handler.kind, SpanKind::Server);
    assert_child(handler, call);
    assert_eq!(
        handler.attribute("messaging.message.conversation_id"),
        call.attribute("messaging.message.conversation_id")
    );
    let query = span(&spans, "user-service", "SELECT users");
    assert_eq!(query.kind, SpanKind::Client);
    assert_child(query, handler);
    assert_eq!(query.attribute("db.system.name"), Some("postgresql"));
    assert_eq!(query.attribute("db.collection.name"), Some("users"));

    let receiver = system.stop().await;
    let services: std::collections::BTreeSet<String> = receiver.spans().into_iter().map(|span| span.service).collect();
    assert_eq!(services.into_iter().collect::<Vec<_>>(), ["auth-service", "notification-service", "user-service"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_buffered_when_a_service_stops_are_exported_before_it_exits() {
    // A batch delay far beyond the test: only the flush at shutdown can export the spans.
    // auth-service is named by OTEL_SERVICE_NAME, the others by default after themselves.
    let system = System::start(&[("OTEL_BSP_SCHEDULE_DELAY", "600000")], &[("OTEL_SERVICE_NAME", "signup-api")]).await;
    let caller = Caller::new();
    let email = format!("{}@example.com", tests::unique("flushed"));
    let body = json!({"email": email, "password": PASSWORD, "name": "Grace"});
    let (status, created) =
        post(&reqwest::Client::new(), &format!("{}/auth/signup", system.auth_url), &body, &caller).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    system.smtp.wait_for_mails(1, DEADLINE).await;
    assert!(receiver_has_nothing_of(&system.receiver, &caller.trace_id), "exported before the batch delay");

    // Every binary has exited (0) when `stop` returns: nothing is left to arrive later.
    let receiver = system.stop().await;
    let spans: Vec<ReceivedSpan> =
        receiver.spans().into_iter().filter(|span| span.trace_id == caller.trace_id).collect();
    for service in ["signup-api", "user-service", "notification-service"] {
        assert!(spans.iter().any(|span| span.service == service), "nothing of {service} in {spans:#?}");
    }
}

fn receiver_has_nothing_of(receiver: &OtlpReceiver, trace_id: &str) -> bool {
    !receiver.spans().iter().any(|span| span.trace_id == trace_id)
}
