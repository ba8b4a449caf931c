//! Signups over HTTP at a steady rate, as users would make them, whatever state the system is
//! in: each request is sent on its tick, whether or not the earlier ones have been answered.

use std::{collections::BTreeMap, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{task::JoinSet, time::MissedTickBehavior};

/// The password every signup uses (and `login` needs).
pub const PASSWORD: &str = "correct horse battery staple";
/// How long one signup may take before it counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An account the API confirmed with 201.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub email: String,
}

/// What the load got back.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    pub attempted: usize,
    /// Every 201, with the id the API returned.
    pub accepted: Vec<Account>,
    /// Other answers, by status (503 while a dependency is down, say).
    pub refused: BTreeMap<u16, usize>,
    /// No answer at all (connection refused while auth-service was down, reset by a kill).
    pub transport_errors: usize,
}

impl LoadOutcome {
    /// The non-201 answers and transport errors, e.g. `503×4 conn×3` (`-` when none).
    pub fn failures_summary(&self) -> String {
        let mut parts: Vec<String> = self.refused.iter().map(|(status, n)| format!("{status}×{n}")).collect();
        if self.transport_errors > 0 {
            parts.push(format!("conn×{}", self.transport_errors));
        }
        if parts.is_empty() { "-".to_owned() } else { parts.join(" ") }
    }
}

/// Sends `count` signups with unique e-mail addresses (`<tag>-<n>@example.com`) at `per_second`.
pub async fn signups(auth_url: String, tag: String, count: usize, per_second: u32) -> LoadOutcome {
    let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let prefix = tests::unique(&tag);
    let mut requests = JoinSet::new();
    for n in 0..count {
        ticks.tick().await;
        let email = format!("{prefix}-{n}@example.com");
        requests.spawn(signup(http.clone(), format!("{auth_url}/auth/signup"), email, n));
    }
    let mut outcome = LoadOutcome { attempted: count, ..LoadOutcome::default() };
    while let Some(answer) = requests.join_next().await {
        match answer.unwrap() {
            Ok(account) => outcome.accepted.push(account),
            Err(Some(status)) => *outcome.refused.entry(status.as_u16()).or_default() += 1,
            Err(None) => outcome.transport_errors += 1,
        }
    }
    outcome
}

/// One signup: the account on 201, the status otherwise, `None` without an answer.
async fn signup(http: reqwest::Client, url: String, email: String, n: usize) -> Result<Account, Option<StatusCode>> {
    let body = json!({"email": email, "password": PASSWORD, "name": format!("Fault Tester {n}")});
    let response = http.post(url).json(&body).send().await.map_err(|_| None)?;
    let status = response.status();
    if status != StatusCode::CREATED {
        return Err(Some(status));
    }
    // A 201 whose body was lost to a kill is still a 201 the user saw only if it arrived
    // whole; without the body it counts as no answer.
    let created: Value = response.json().await.map_err(|_| None)?;
    let id = created["id"].as_str().ok_or(Some(status))?.to_owned();
    Ok(Account { id, email })
}
