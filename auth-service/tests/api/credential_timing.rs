//! "No credential oracle": a login for an unknown email costs what a login with a wrong
//! password costs (it verifies against a dummy hash made with the same parameters), so the
//! response time does not tell whether an account exists.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::test_app::{PASSWORD, TestApp};

/// Logins timed per kind, interleaved so that both kinds see the same background load.
const ROUNDS: usize = 15;

async fn timed_login(app: &TestApp, email: &str, password: &str) -> Duration {
    let started = Instant::now();
    let response = app.login(email, password).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    elapsed
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_email_takes_as_long_as_a_wrong_password() {
    // Costly enough that hashing dominates a login, as in production (a debug build hashes
    // with 4 MiB in tens of milliseconds; a login without a hash takes one or two).
    let app = TestApp::spawn_with(|env| env.set("ARGON2_M_COST", "4096").set("ARGON2_T_COST", "1")).await;
    app.create_user("ada@example.com", "Ada").await;
    timed_login(&app, "ada@example.com", "not the password").await;
    timed_login(&app, "warm-up@example.com", PASSWORD).await;

    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        known.push(timed_login(&app, "ada@example.com", "not the password").await);
        unknown.push(timed_login(&app, &format!("nobody-{round}@example.com"), PASSWORD).await);
    }
    let (known, unknown) = (median(known), median(unknown));
    assert!(known >= Duration::from_millis(10), "a wrong password took only {known:?}: is the hash that cheap?");
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.5..=2.0).contains(&ratio),
        "unknown email {unknown:?} vs wrong password {known:?} (median of {ROUNDS}): the time tells them apart"
    );
}
