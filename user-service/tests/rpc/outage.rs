//! Postgres cut away mid-run (a chaos proxy between the service and Postgres): callers get a
//! clear error reply in time, readiness says why, and everything heals once it is back.

use std::time::Instant;

use tests::{ChaosProxy, DEADLINE, eventually};
use uuid::Uuid;

use crate::support::{
    RPC_TIMEOUT, TestApp, created, http_status, metrics_text, new_user, remote_error, test_env, with_settings,
};

/// Starts the service with its database reached through a chaos proxy.
async fn spawn_behind_proxy(settings: &[(&str, &str)]) -> (TestApp, ChaosProxy) {
    let env = test_env().await;
    let proxy = ChaosProxy::in_front_of(&env.db().url).await;
    let proxied = proxy.url_for(&env.db().url);
    let env = env.set("DATABASE_URL", proxied);
    (TestApp::spawn_in(with_settings(env, settings)).await, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_user_answers_503_in_time_while_postgres_is_cut_and_200_once_it_is_back() {
    let (app, proxy) = spawn_behind_proxy(&[]).await;
    let user = new_user("Ada");
    app.seed(&user).await;
    assert_eq!(app.get_user(user.id).await.unwrap(), user);

    proxy.cut().await;
    let asked = Instant::now();
    let (status, message) = remote_error(app.get_user(user.id).await);
    assert_eq!((status, message.as_str()), (Some(503), "database unavailable"));
    assert!(asked.elapsed() < RPC_TIMEOUT, "answered after {:?}", asked.elapsed());

    proxy.restore();
    let answered = eventually(DEADLINE, || app.get_user(user.id)).await;
    assert_eq!(answered, user);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_the_database_down_during_the_cut() {
    let (app, proxy) = spawn_behind_proxy(&[]).await;
    let (status, body) = http_status(&app.ops_url("/readyz")).await;
    assert_eq!(status, 200, "{body}");

    proxy.cut().await;
    let (status, body) = http_status(&app.ops_url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["database"], "down", "{body}");
    assert_eq!(body["checks"]["broker"], "up", "{body}");

    proxy.restore();
    eventually(DEADLINE, || async {
        let (status, body) = http_status(&app.ops_url("/readyz")).await;
        if status == 200 { Ok(()) } else { Err(body) }
    })
    .await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_during_the_cut_is_retried_until_it_lands() {
    let patient = [
        ("RETRY_MAX_ATTEMPTS", "20"),
        ("RETRY_INITIAL_DELAY_MS", "100"),
        ("RETRY_MULTIPLIER", "2"),
        ("RETRY_MAX_DELAY_MS", "500"),
    ];
    let (app, proxy) = spawn_behind_proxy(&patient).await;
    let user = new_user("Ada");

    proxy.cut().await;
    app.emit(&created(&user), &Uuid::new_v4().to_string()).await;
    let retried = [format!("queue=\"{}\"", app.events_queue), "outcome=\"retried\"".to_owned()];
    eventually(DEADLINE, || async {
        let metrics = metrics_text(&app).await;
        let seen = metrics.lines().any(|line| {
            line.starts_with("transport_messages_total{") && retried.iter().all(|label| line.contains(label))
        });
        if seen { Ok(()) } else { Err("no retry recorded yet") }
    })
    .await;

    proxy.restore();
    let answered = eventually(DEADLINE, || app.get_user(user.id)).await;
    assert_eq!(answered, user);
    app.finish().await;
}
