//! The scenarios: which faults happen when, relative to the start of the load.
//!
//! A fault is a pair of actions (kill then start, stop then start), so faults can overlap on
//! one timeline. The actions on one part of the system run in order; the parts run side by
//! side, and the printed timeline shows when each action really happened. A broker start does
//! not wait for the node to boot; the end of the timeline does.

use std::time::Duration;

use tokio::time::Instant;

use tests::{ChaosProxy, local_postgres::LocalPostgres, local_rabbit::LocalRabbit, smtp::SmtpSink};

use crate::system::{Infra, Service, Services, System};

/// One thing done to the running system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `kill -9` of the service's process.
    Kill(Service),
    /// Starting the service's binary again with the same environment.
    Start(Service),
    /// A graceful broker stop (the node's data is kept).
    StopBroker,
    /// Starting the node again; it boots (seconds) while the timeline goes on.
    StartBroker,
    /// A fast Postgres shutdown (sessions ended, a checkpoint, the postmaster exits).
    StopPostgres,
    StartPostgres,
    /// The SMTP server goes away (connections refused) …
    StopSmtp,
    /// … and comes back on the same port.
    StartSmtp,
    /// Every connection between notification-service and Postgres is severed at once (the
    /// proxy lets new ones through right after).
    CutNotificationDb,
    /// The SMTP server waits this many milliseconds between taking a message and answering
    /// 250 (0: at once), so that faults find mails mid-send.
    SmtpAcceptDelay(u64),
}

/// A named run: how many signups, and the faults on their timeline.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub signups: usize,
    pub timeline: Vec<(Duration, Action)>,
}

impl Scenario {
    /// Duplicate mails the criteria allow: one per `kill -9` of notification-service (a mail
    /// whose 250 arrived in the instant before the crash is resent, with the same Message-ID).
    pub fn allowed_duplicates(&self) -> usize {
        self.timeline.iter().filter(|(_, action)| *action == Action::Kill(Service::Notification)).count()
    }
}

/// Signups per second, as the production-like run.
pub const RATE: u32 = 20;
/// Signups of a single-fault scenario (5 s of load).
const SINGLE: usize = 100;
/// Signups of the all-faults scenario (25 s of load).
const ALL: usize = 500;
/// The 250 delay while the database links are attacked: with 20 mails a second, about four
/// are between "message taken" and "250" at any moment, so cuts and restarts find mails
/// mid-send. Never while notification-service is killed (its allowance is one mail in that
/// window, not four) nor while the SMTP server is stopped: the sink records a mail before its
/// 250, and a server that took a mail and died before answering leaves every client unable to
/// tell (RFC 1047), which is not a fault the services can be asked to absorb.
const SLOW_SMTP: u64 = 200;

fn at(millis: u64, action: Action) -> (Duration, Action) {
    (Duration::from_millis(millis), action)
}

/// Every scenario, single faults first.
pub fn scenarios() -> Vec<Scenario> {
    use Action::*;
    let kill = |name, service| Scenario {
        name,
        signups: SINGLE,
        timeline: vec![at(2_000, Kill(service)), at(3_000, Start(service))],
    };
    vec![
        kill("kill -9 auth-service", Service::Auth),
        kill("kill -9 user-service", Service::User),
        kill("kill -9 notification-service", Service::Notification),
        Scenario {
            name: "broker restart",
            signups: SINGLE,
            timeline: vec![at(1_500, StopBroker), at(3_500, StartBroker)],
        },
        Scenario {
            name: "Postgres restart",
            signups: SINGLE,
            timeline: vec![at(0, SmtpAcceptDelay(SLOW_SMTP)), at(2_000, StopPostgres), at(4_000, StartPostgres)],
        },
        Scenario {
            name: "SMTP away 10 s",
            signups: SINGLE,
            timeline: vec![at(1_000, StopSmtp), at(11_000, StartSmtp)],
        },
        Scenario {
            name: "notification DB link cut",
            signups: SINGLE,
            timeline: std::iter::once(at(0, SmtpAcceptDelay(SLOW_SMTP)))
                .chain([1_000, 1_700, 2_400, 3_100, 3_800].into_iter().map(|ms| at(ms, CutNotificationDb)))
                .collect(),
        },
        Scenario {
            name: "all faults on a timeline",
            signups: ALL,
            timeline: vec![
                at(2_000, Kill(Service::Auth)),
                at(3_000, Start(Service::Auth)),
                at(4_000, Kill(Service::User)),
                at(5_000, Start(Service::User)),
                at(6_500, Kill(Service::Notification)),
                at(7_500, Start(Service::Notification)),
                at(8_500, SmtpAcceptDelay(SLOW_SMTP)),
                at(9_000, CutNotificationDb),
                at(10_000, StopPostgres),
                at(12_000, StartPostgres),
                at(13_000, CutNotificationDb),
                at(13_500, SmtpAcceptDelay(0)),
                at(14_000, StopSmtp),
                at(17_000, StopBroker),
                at(19_000, StartBroker),
                at(24_000, StartSmtp),
            ],
        },
    ]
}

/// The scenarios whose name contains `FAULTS` (case-insensitive; all when it is unset).
pub fn selected() -> Vec<Scenario> {
    let filter = std::env::var("FAULTS").unwrap_or_default().to_lowercase();
    scenarios().into_iter().filter(|scenario| scenario.name.to_lowercase().contains(&filter)).collect()
}

/// Plays `timeline` from `start`, one lane per part of the system (the services, the broker,
/// Postgres, SMTP, the database link), the lanes side by side: a slow action (a graceful
/// broker stop under load) delays only the actions on its own part. Returns one line per
/// action, in the order they happened: real and planned time, and how long it took.
pub async fn play(
    timeline: &[(Duration, Action)],
    start: Instant,
    system: &mut System,
    infra: &mut Infra,
) -> Vec<String> {
    let lane = |part: Part| -> Vec<(Duration, Action)> {
        timeline.iter().filter(|(_, action)| action.part() == part).copied().collect()
    };
    let (services, broker, postgres, smtp, link) = tokio::join!(
        run_lane(&mut system.services, lane(Part::Services), start),
        run_lane(&mut infra.rabbit, lane(Part::Broker), start),
        run_lane(&mut infra.postgres, lane(Part::Postgres), start),
        run_lane(&mut system.smtp, lane(Part::Smtp), start),
        run_lane(&mut system.notification_db_link, lane(Part::DbLink), start),
    );
    let mut played: Vec<(Duration, String)> = [services, broker, postgres, smtp, link].concat();
    if timeline.iter().any(|(_, action)| *action == Action::StartBroker) {
        // The lane only started the node; settling begins with everything up.
        infra.rabbit.wait_accepting().await;
        played.push((start.elapsed(), "broker accepting again".to_owned()));
    }
    played.sort_by_key(|(at, _)| *at);
    played.into_iter().map(|(at, line)| format!("{:>6.1} s {line}", at.as_secs_f64())).collect()
}

/// The part of the system an action is done to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Services,
    Broker,
    Postgres,
    Smtp,
    DbLink,
}

impl Action {
    fn part(self) -> Part {
        match self {
            Action::Kill(_) | Action::Start(_) => Part::Services,
            Action::StopBroker | Action::StartBroker => Part::Broker,
            Action::StopPostgres | Action::StartPostgres => Part::Postgres,
            Action::StopSmtp | Action::StartSmtp | Action::SmtpAcceptDelay(_) => Part::Smtp,
            Action::CutNotificationDb => Part::DbLink,
        }
    }
}

/// Something actions are done to: one part of the system.
trait Target {
    async fn perform(&mut self, action: Action);
}

impl Target for Services {
    async fn perform(&mut self, action: Action) {
        match action {
            Action::Kill(service) => self.kill(service).await,
            Action::Start(service) => self.start(service),
            other => unreachable!("{other:?} is not done to the services"),
        }
    }
}

impl Target for LocalRabbit {
    async fn perform(&mut self, action: Action) {
        match action {
            Action::StopBroker => self.stop().await,
            Action::StartBroker => self.spawn_again().await,
            other => unreachable!("{other:?} is not done to the broker"),
        }
    }
}

impl Target for LocalPostgres {
    async fn perform(&mut self, action: Action) {
        match action {
            Action::StopPostgres => self.stop().await,
            Action::StartPostgres => self.start_again().await,
            other => unreachable!("{other:?} is not done to Postgres"),
        }
    }
}

impl Target for SmtpSink {
    async fn perform(&mut self, action: Action) {
        match action {
            Action::StopSmtp => self.stop().await,
            Action::StartSmtp => self.restart().await,
            Action::SmtpAcceptDelay(millis) => self.set_accept_delay(Duration::from_millis(millis)),
            other => unreachable!("{other:?} is not done to the SMTP server"),
        }
    }
}

impl Target for ChaosProxy {
    async fn perform(&mut self, action: Action) {
        match action {
            Action::CutNotificationDb => {
                self.cut().await;
                self.restore();
            }
            other => unreachable!("{other:?} is not done to the database link"),
        }
    }
}

/// Does `actions` to `target` in order, each at its offset from `start` (or as soon as the one
/// before has finished).
async fn run_lane(
    target: &mut impl Target,
    actions: Vec<(Duration, Action)>,
    start: Instant,
) -> Vec<(Duration, String)> {
    let mut played = Vec::new();
    for (offset, action) in actions {
        tokio::time::sleep_until(start + offset).await;
        let began = start.elapsed();
        target.perform(action).await;
        let took = start.elapsed() - began;
        let line = format!("(planned {:>4.1} s) {action:?}, {:.1} s", offset.as_secs_f64(), took.as_secs_f64());
        played.push((began, line));
    }
    played
}
