//! After the load: wait until the system has settled, then count what happened at every stage
//! and judge it against the criteria of issue 11.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    time::Duration,
};

use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection};
use tests::local_rabbit::{LocalRabbit, QueueCount};
use tokio::time::Instant;

use crate::{
    load::{Account, LoadOutcome, PASSWORD},
    system::System,
};

/// Pause between two looks at the system while it settles.
const POLL: Duration = Duration::from_millis(500);
/// Once the databases stopped changing, how many broker looks in a row must find every queue
/// idle before the suite concludes that nothing more will happen.
const IDLE_LOOKS: u32 = 3;
/// How many accounts the `get_user` sample reads back.
const SAMPLE: usize = 10;

/// The counts of one scenario (see the table in `main.rs`).
#[derive(Debug, Default)]
pub struct Tally {
    pub attempted: usize,
    pub accepted: usize,
    pub other_answers: String,
    pub credentials: usize,
    pub outbox_left: usize,
    pub projected: usize,
    pub mailed: usize,
    pub duplicates: usize,
    /// Duplicates carrying the same Message-ID as the first mail to that recipient.
    pub duplicates_same_id: usize,
    pub parked: u64,
    pub queued: u64,
    /// Accepted (201) accounts without a credential row.
    pub lost_signups: usize,
    /// Credential rows without a projected user.
    pub lost_projections: usize,
    /// Credential rows whose address got no mail.
    pub lost_mails: usize,
    pub get_user_ok: usize,
    pub get_user_sampled: usize,
    /// How long after the load the system settled; `None` when it did not within the deadline
    /// (or stopped moving while incomplete).
    pub settled_after: Option<Duration>,
    pub unexpected_exits: Vec<String>,
    pub allowed_duplicates: usize,
}

impl Tally {
    /// Every way this scenario missed the criteria (empty when it passed).
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                failures.push(what);
            }
        };
        check(
            self.accepted * 2 >= self.attempted,
            format!("only {} of {} signups accepted", self.accepted, self.attempted),
        );
        check(self.settled_after.is_some(), "did not settle".to_owned());
        check(self.lost_signups == 0, format!("{} accepted signups have no credential row", self.lost_signups));
        check(self.outbox_left == 0, format!("{} outbox rows not published", self.outbox_left));
        check(self.lost_projections == 0, format!("{} users not projected", self.lost_projections));
        check(self.lost_mails == 0, format!("{} recipients got no mail", self.lost_mails));
        check(self.parked == 0, format!("{} messages parked in DLQs", self.parked));
        check(self.queued == 0, format!("{} messages left in queues", self.queued));
        check(
            self.duplicates <= self.allowed_duplicates,
            format!("{} duplicate mails (allowed {})", self.duplicates, self.allowed_duplicates),
        );
        check(
            self.duplicates_same_id == self.duplicates,
            format!("{} duplicates with another Message-ID", self.duplicates - self.duplicates_same_id),
        );
        check(
            self.get_user_ok == self.get_user_sampled,
            format!(
                "get_user: {} of {} sampled lookups failed",
                self.get_user_sampled - self.get_user_ok,
                self.get_user_sampled
            ),
        );
        for exit in &self.unexpected_exits {
            check(false, exit.clone());
        }
        failures
    }
}

/// What the databases and the mailbox say at one moment.
#[derive(Debug, Default, PartialEq, Eq)]
struct Snapshot {
    /// Credential rows: id → e-mail (lowercase).
    credentials: BTreeMap<String, String>,
    outbox_left: usize,
    projected: BTreeSet<String>,
    /// Mails received per recipient (lowercase), each with its Message-ID, in arrival order.
    mails: BTreeMap<String, Vec<Option<String>>>,
}

impl Snapshot {
    async fn take(system: &System) -> Result<Snapshot, sqlx::Error> {
        let mut auth = PgConnection::connect(&system.auth_db).await?;
        let credentials: Vec<(String, String)> =
            sqlx::query_as("SELECT id::text, lower(email) FROM credentials").fetch_all(&mut auth).await?;
        let outbox_left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetch_one(&mut auth).await?;
        let _closed = auth.close().await;
        let mut users = PgConnection::connect(&system.users_db).await?;
        let projected: Vec<String> = sqlx::query_scalar("SELECT id::text FROM users").fetch_all(&mut users).await?;
        let _closed = users.close().await;
        let mut mails: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
        for mail in system.smtp.mails() {
            for recipient in &mail.rcpt_to {
                mails.entry(recipient.to_lowercase()).or_default().push(mail.message_id());
            }
        }
        Ok(Snapshot {
            credentials: credentials.into_iter().collect(),
            outbox_left: usize::try_from(outbox_left).unwrap_or(usize::MAX),
            projected: projected.into_iter().collect(),
            mails,
        })
    }

    fn lost_projections(&self) -> usize {
        self.credentials.keys().filter(|id| !self.projected.contains(*id)).count()
    }

    fn lost_mails(&self) -> usize {
        self.credentials.values().filter(|email| !self.mails.contains_key(*email)).count()
    }

    /// Every committed signup published, projected and mailed.
    fn complete(&self) -> bool {
        self.outbox_left == 0 && self.lost_projections() == 0 && self.lost_mails() == 0
    }
}

/// Messages of `system`'s queues: (parked in DLQs, anywhere else incl. delay queues).
fn split_counts(system: &System, queues: &[QueueCount]) -> (u64, u64) {
    let ours = queues.iter().filter(|queue| system.queues.owns(&queue.name));
    ours.fold((0, 0), |(parked, queued), queue| {
        if queue.name.ends_with(".dlq") { (parked + queue.total(), queued) } else { (parked, queued + queue.total()) }
    })
}

/// Polls until every committed signup is published, projected and mailed and no message of
/// the system is left in a queue (ready or unacknowledged), or until nothing moves any more
/// while that is not so, or until `deadline`. Returns how long it took when it settled.
pub async fn settle(system: &mut System, rabbit: &LocalRabbit, deadline: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut idle_looks = 0;
    let mut last: Option<Snapshot> = None;
    while start.elapsed() < deadline {
        system.services.check_exits();
        if let Ok(snapshot) = Snapshot::take(system).await {
            let unchanged = last.as_ref() == Some(&snapshot);
            if snapshot.complete() || (unchanged && snapshot.outbox_left == 0) {
                let idle = rabbit.list_queues().await.is_ok_and(|queues| split_counts(system, &queues).1 == 0);
                if idle && snapshot.complete() {
                    return Some(start.elapsed());
                }
                idle_looks = if idle { idle_looks + 1 } else { 0 };
                if idle_looks >= IDLE_LOOKS {
                    eprintln!("  stopped waiting: nothing moves any more, but not everything arrived");
                    return None;
                }
            } else {
                idle_looks = 0;
            }
            last = Some(snapshot);
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

/// Counts everything (see [`Tally`]); the system should have settled first.
pub async fn count(system: &mut System, rabbit: &LocalRabbit, load: &LoadOutcome) -> Tally {
    system.services.check_exits();
    let snapshot = Snapshot::take(system).await.unwrap_or_else(|error| panic!("cannot read the databases: {error}"));
    let queues = rabbit.list_queues().await.unwrap_or_else(|error| panic!("{error}"));
    let (parked, queued) = split_counts(system, &queues);
    let committed: HashSet<&String> = snapshot.credentials.keys().collect();
    let mut duplicates = 0;
    let mut duplicates_same_id = 0;
    for ids in snapshot.mails.values() {
        for later in &ids[1..] {
            duplicates += 1;
            if later.is_some() && *later == ids[0] {
                duplicates_same_id += 1;
            }
        }
    }
    let (get_user_ok, get_user_sampled) = sample_get_user(&system.auth_url, &load.accepted).await;
    Tally {
        attempted: load.attempted,
        accepted: load.accepted.len(),
        other_answers: load.failures_summary(),
        credentials: snapshot.credentials.len(),
        outbox_left: snapshot.outbox_left,
        projected: snapshot.projected.len(),
        mailed: snapshot.mails.len(),
        duplicates,
        duplicates_same_id,
        parked,
        queued,
        lost_signups: load.accepted.iter().filter(|account| !committed.contains(&account.id)).count(),
        lost_projections: snapshot.lost_projections(),
        lost_mails: snapshot.lost_mails(),
        get_user_ok,
        get_user_sampled,
        settled_after: None,
        unexpected_exits: system.services.unexpected_exits.clone(),
        allowed_duplicates: 0,
    }
}

/// Logs in as one accepted account and reads up to [`SAMPLE`] accounts, spread over the run,
/// through `GET /users/{id}` (auth-service → RPC → user-service's projection). Returns
/// (answers that match the account, lookups made).
async fn sample_get_user(auth_url: &str, accepted: &[Account]) -> (usize, usize) {
    let Some(first) = accepted.first() else { return (0, 0) };
    let step = accepted.len().div_ceil(SAMPLE).max(1);
    let sample: Vec<&Account> = accepted.iter().step_by(step).collect();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let login = http
        .post(format!("{auth_url}/auth/login"))
        .json(&json!({"email": first.email, "password": PASSWORD}))
        .send()
        .await;
    let token = match login {
        Ok(response) => {
            response.json::<Value>().await.ok().and_then(|body| body["accessToken"].as_str().map(str::to_owned))
        }
        Err(_) => None,
    };
    let Some(token) = token else { return (0, sample.len()) };
    let mut ok = 0;
    for account in &sample {
        let answer = http.get(format!("{auth_url}/users/{}", account.id)).bearer_auth(&token).send().await;
        let Ok(response) = answer else { continue };
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if body["id"] == account.id.as_str()
            && body["email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(&account.email))
        {
            ok += 1;
        }
    }
    (ok, sample.len())
}
