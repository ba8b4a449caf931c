//! The fault suite (issue 11): the whole system run as in production, with real faults
//! injected while users sign up, and proof that nothing is lost and no mail is sent twice.
//!
//! The suite starts a private RabbitMQ node and a private Postgres cluster of its own on free
//! ports (`tests::local_rabbit`, `tests::local_postgres`), so stopping, restarting or killing
//! them cannot disturb tests that share the machine's servers. Each scenario then starts a
//! fresh system on them: its own three databases and uniquely named queues, an SMTP sink, and
//! the three **built service binaries as OS processes** (`target/<profile>/auth-service` …;
//! `cargo test --workspace` builds them, `cargo build --bins` otherwise), notification-service
//! reaching Postgres through a chaos proxy. While 20 signups per second arrive over HTTP, the
//! scenario's timeline injects its faults: `kill -9` of a service then a restart, a broker
//! restart, a Postgres restart, SMTP away for 10 s, the notification-service's database
//! connections cut mid-send; each alone, then all together during 500 signups.
//!
//! After the load the suite polls (bounded) until every committed signup is published,
//! projected and mailed and no message is left in a queue, then counts every stage and
//! prints one table row per scenario (`cargo test -p tests --test faults -- --nocapture`).
//! A scenario passes with 0 lost at every stage, 0 parked in DLQs, 0 outbox rows left,
//! 0 messages left in queues, every sampled `get_user` answered, no service exiting by
//! itself, and 0 duplicate mails, except one per `kill -9` of notification-service, which
//! must carry the first mail's Message-ID.
//!
//! `FAULTS=<text>` runs only the scenarios whose name contains it (e.g. `FAULTS=smtp`);
//! `FAULTS_BIN_DIR=<dir>` takes the binaries from there (e.g. `target/release`);
//! `KEEP_SCRATCH=1` keeps every scratch directory (logs, data). A failing scenario's service
//! logs are kept and their directory printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod load;
mod report;
mod system;
mod tally;
mod timeline;

use std::time::Duration;

use tokio::time::Instant;

use crate::{
    system::{Infra, Service, System},
    tally::Tally,
    timeline::Scenario,
};

/// How long the system may take to settle after the load.
const SETTLE_DEADLINE: Duration = Duration::from_secs(90);
/// Log lines of each service shown for a failing scenario.
const LOG_LINES: usize = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_signup_projection_or_mail_is_lost_and_no_mail_is_sent_twice_under_faults() {
    tests::logs::init();
    eprintln!("faults: {}", system::binaries_built());
    let began = Instant::now();
    let mut infra = Infra::start().await;
    eprintln!(
        "faults: private RabbitMQ {} at {} and Postgres at {} up in {:.1} s",
        infra.rabbit.node(),
        infra.rabbit.url(),
        infra.postgres.url(),
        began.elapsed().as_secs_f64()
    );
    let mut rows = Vec::new();
    for (n, scenario) in timeline::selected().into_iter().enumerate() {
        let scenario_began = Instant::now();
        let tally = run(&mut infra, &scenario, &format!("s{n}")).await;
        rows.push((scenario.name.to_owned(), tally, scenario_began.elapsed().as_secs_f64()));
    }
    eprintln!("\nfault suite, {:.0} s in all:\n{}", began.elapsed().as_secs_f64(), report::table(&rows));
    let failures: Vec<String> = rows
        .iter()
        .flat_map(|(name, tally, _)| tally.failures().into_iter().map(move |failure| format!("{name}: {failure}")))
        .collect();
    assert!(failures.is_empty(), "fault scenarios failed:\n  {}", failures.join("\n  "));
}

/// One scenario on a fresh system: load and timeline together, then settle and count.
async fn run(infra: &mut Infra, scenario: &Scenario, tag: &str) -> Tally {
    eprintln!("\n== {} ({} signups at {}/s)", scenario.name, scenario.signups, timeline::RATE);
    let mut system = System::start(infra, tag).await;
    let start = Instant::now();
    let load = tokio::spawn(load::signups(system.auth_url.clone(), tag.to_owned(), scenario.signups, timeline::RATE));
    let played = timeline::play(&scenario.timeline, start, &mut system, infra).await;
    let load = load.await.unwrap();
    for line in &played {
        eprintln!("  {line}");
    }
    eprintln!("  load done after {:.1} s; settling", start.elapsed().as_secs_f64());
    let settled = tally::settle(&mut system, &infra.rabbit, SETTLE_DEADLINE).await;
    let mut tally = tally::count(&mut system, &infra.rabbit, &load).await;
    tally.settled_after = settled;
    tally.allowed_duplicates = scenario.allowed_duplicates();
    let failures = tally.failures();
    if failures.is_empty() {
        eprintln!("  PASS {tally:?}");
    } else {
        eprintln!("  FAIL: {}", failures.join("; "));
        for service in Service::ALL {
            eprintln!("  -- last lines of {service}:\n{}", last_lines(&system.services.log_tail(service), LOG_LINES));
        }
        eprintln!("  logs kept in {}", system.services.keep_logs().display());
    }
    system.stop().await;
    tally
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
