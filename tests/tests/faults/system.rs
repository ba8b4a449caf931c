//! The system under test, as it runs in production: the three built service binaries as OS
//! processes, on the suite's private broker and Postgres, mailing through a real SMTP server.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tests::{
    ChaosProxy,
    local_postgres::LocalPostgres,
    local_rabbit::LocalRabbit,
    process::{OsProcess, ScratchDir, free_port},
    smtp::SmtpSink,
};
use tokio::process::Command;

/// How long a service may take to answer `/readyz` with 200 after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The suite's private infrastructure, shared by the scenarios (which run one after another
/// and each use databases and queues of their own on it).
pub struct Infra {
    pub rabbit: LocalRabbit,
    pub postgres: LocalPostgres,
}

impl Infra {
    pub async fn start() -> Infra {
        let (rabbit, postgres) = tokio::join!(LocalRabbit::start(), LocalPostgres::start());
        Infra { rabbit, postgres }
    }
}

/// One of the three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Auth,
    User,
    Notification,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Auth, Service::User, Service::Notification];

    /// The binary's name, as cargo builds it.
    pub fn binary(self) -> &'static str {
        match self {
            Service::Auth => "auth-service",
            Service::User => "user-service",
            Service::Notification => "notification-service",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.binary())
    }
}

/// The queues one system's services use (unique per scenario, so leftovers of one scenario
/// never count in another).
#[derive(Debug, Clone)]
pub struct Queues {
    pub user: String,
    pub user_events: String,
    pub notification: String,
}

impl Queues {
    /// Whether `name` is one of these queues or one of their delay queues or DLQs.
    pub fn owns(&self, name: &str) -> bool {
        [&self.user, &self.user_events, &self.notification]
            .iter()
            .any(|base| name == base.as_str() || name.strip_prefix(base.as_str()).is_some_and(|s| s.starts_with('.')))
    }
}

/// A running system: three service processes with their databases, an SMTP sink, and a
/// chaos proxy between notification-service and Postgres. The parts a fault acts on are
/// separate fields, so faults on different parts can run at the same time.
pub struct System {
    pub auth_url: String,
    pub services: Services,
    pub smtp: SmtpSink,
    pub notification_db_link: ChaosProxy,
    /// Direct URLs (not through the proxy) of the auth and users databases, for counting.
    pub auth_db: String,
    pub users_db: String,
    pub queues: Queues,
}

impl System {
    /// Creates the databases, starts the SMTP sink and the three services (user and
    /// notification first, as in production) and waits until each is ready.
    pub async fn start(infra: &Infra, tag: &str) -> System {
        let postgres = &infra.postgres;
        let auth_db = postgres.create_database(&format!("{tag}_auth")).await;
        let users_db = postgres.create_database(&format!("{tag}_users")).await;
        let notifications_db = postgres.create_database(&format!("{tag}_notifications")).await;
        let smtp = SmtpSink::start().await;
        let notification_db_link = ChaosProxy::in_front_of(&notifications_db).await;
        let queues = Queues {
            user: tests::unique(&format!("{tag}_user")),
            user_events: tests::unique(&format!("{tag}_user_events")),
            notification: tests::unique(&format!("{tag}_notification")),
        };
        let common = common_env(&infra.rabbit, &smtp, &queues, tag);
        let mut services = Services {
            processes: HashMap::new(),
            env: HashMap::new(),
            ready_urls: HashMap::new(),
            unexpected_exits: Vec::new(),
            logs: ScratchDir::new(&format!("faults_{tag}")),
        };
        let http_addr = format!("127.0.0.1:{}", free_port());
        for service in Service::ALL {
            let ops_addr = format!("127.0.0.1:{}", free_port());
            let database = match service {
                Service::Auth => auth_db.clone(),
                Service::User => users_db.clone(),
                Service::Notification => notification_db_link.url_for(&notifications_db),
            };
            let mut vars = common.clone();
            vars.extend([("DATABASE_URL", database), ("OPS_ADDR", ops_addr.clone())]);
            let ready = vec![format!("http://{ops_addr}/readyz")];
            if service == Service::Auth {
                vars.push(("HTTP_ADDR", http_addr.clone()));
            }
            services.env.insert(service, vars);
            services.ready_urls.insert(service, ready);
        }
        for service in [Service::User, Service::Notification, Service::Auth] {
            services.start(service);
            services.wait_ready(service).await;
        }
        System {
            auth_url: format!("http://{http_addr}"),
            services,
            smtp,
            notification_db_link,
            auth_db,
            users_db,
            queues,
        }
    }

    /// Stops every service with `SIGKILL`, and the SMTP sink (nothing is counted after this).
    pub async fn stop(mut self) {
        self.services.kill_all().await;
        self.smtp.stop().await;
    }
}

/// The three service processes, their environment and their logs.
pub struct Services {
    processes: HashMap<Service, OsProcess>,
    env: HashMap<Service, Vec<(&'static str, String)>>,
    ready_urls: HashMap<Service, Vec<String>>,
    /// Exits nobody asked for, noticed by [`Services::check_exits`].
    pub unexpected_exits: Vec<String>,
    logs: ScratchDir,
}

impl Services {
    /// Starts `service` (again) with its environment; does not wait for it to be ready (its
    /// dependencies may be down on purpose).
    ///
    /// # Panics
    /// When it is already running or its binary cannot be started.
    pub fn start(&mut self, service: Service) {
        assert!(!self.processes.contains_key(&service), "{service} is already running");
        let mut command = Command::new(binary_path(service.binary()));
        command.envs(self.env[&service].iter().map(|(name, value)| (*name, value.as_str()))).stdin(Stdio::null());
        let log = self.log_path(service);
        let process = OsProcess::spawn(service.binary(), command, &log)
            .unwrap_or_else(|error| panic!("cannot start {service}: {error}"));
        self.processes.insert(service, process);
    }

    /// `kill -9` of `service`.
    pub async fn kill(&mut self, service: Service) {
        self.check_exits();
        if let Some(process) = self.processes.remove(&service) {
            process.kill().await;
        }
    }

    /// Waits until `service` answers `/readyz` with 200.
    ///
    /// # Panics
    /// When it does not within 30 s, or exits; the message carries its log.
    pub async fn wait_ready(&mut self, service: Service) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            for url in &self.ready_urls[&service] {
                if http.get(url).send().await.is_ok_and(|response| response.status().is_success()) {
                    return;
                }
            }
            let exited = self.processes.get_mut(&service).and_then(OsProcess::exited);
            if exited.is_some() || tokio::time::Instant::now() >= deadline {
                panic!("{service} not ready ({exited:?}); its log ends with:\n{}", self.log_tail(service));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Records every service that exited although nobody killed it (and forgets its process,
    /// so it stays down: a service that dies by itself is a failure to report, not to hide).
    pub fn check_exits(&mut self) {
        let mut exited = Vec::new();
        for (service, process) in &mut self.processes {
            if let Some(status) = process.exited() {
                exited.push((*service, status));
            }
        }
        for (service, status) in exited {
            self.processes.remove(&service);
            self.unexpected_exits.push(format!("{service} exited by itself ({status})"));
        }
    }

    /// The end of `service`'s log (all its incarnations in this system).
    pub fn log_tail(&self, service: Service) -> String {
        tests::process::log_tail(&self.log_path(service))
    }

    /// Keeps the logs after the system is gone; returns their directory.
    pub fn keep_logs(&mut self) -> &Path {
        self.logs.keep()
    }

    async fn kill_all(&mut self) {
        for service in Service::ALL {
            if let Some(process) = self.processes.remove(&service) {
                process.kill().await;
            }
        }
    }

    fn log_path(&self, service: Service) -> PathBuf {
        self.logs.path().join(format!("{}.log", service.binary()))
    }
}

/// The environment every service gets. Both the old and the unified names of renamed
/// settings are set, so the suite works before and after the rename.
fn common_env(rabbit: &LocalRabbit, smtp: &SmtpSink, queues: &Queues, tag: &str) -> Vec<(&'static str, String)> {
    let pool = "10".to_owned();
    vec![
        ("AMQP_URL", rabbit.url()),
        ("AMQP_RECONNECT_MAX_MS", "1000".to_owned()),
        ("EVENTS_EXCHANGE", tests::unique(&format!("{tag}_events"))),
        ("USER_QUEUE", queues.user.clone()),
        ("USER_EVENTS_QUEUE", queues.user_events.clone()),
        ("NOTIFICATION_QUEUE", queues.notification.clone()),
        ("SMTP_URL", smtp.url()),
        ("MAIL_FROM", "Welcome <welcome@example.com>".to_owned()),
        ("JWT_SECRET", format!("{}{}", tests::unique("jwt"), tests::unique("secret"))),
        ("APP_ENV", "production".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "info".to_owned()),
        ("DATABASE_MAX_CONNECTIONS", pool.clone()),
        ("DB_MAX_CONNECTIONS", pool.clone()),
        ("DATABASE_POOL_SIZE", pool),
        // Fast retries that still ride out a 10 s SMTP outage many times over:
        // 0.1, 0.2, 0.4, 0.8, then 1 s between attempts, 60 attempts (about a minute).
        ("RETRY_INITIAL_DELAY_MS", "100".to_owned()),
        ("RETRY_MULTIPLIER", "2".to_owned()),
        ("RETRY_MAX_DELAY_MS", "1000".to_owned()),
        ("RETRY_MAX_ATTEMPTS", "60".to_owned()),
        // A crashed notification-service's claims are resent after the lease, which must end
        // well within the retries above (else the events are parked first) and be at least
        // twice the SMTP timeout. Production's 120 s would make a kill cost two minutes here.
        ("CLAIM_LEASE_MS", "10000".to_owned()),
        ("SMTP_TIMEOUT_MS", "5000".to_owned()),
        ("RATE_LIMIT_PER_SECOND", "10000".to_owned()),
        ("RATE_LIMIT_BURST", "10000".to_owned()),
        // Cheap hashing: the suite is about faults, and two cores are shared with everyone.
        ("ARGON2_M_COST", "1024".to_owned()),
        ("ARGON2_T_COST", "1".to_owned()),
        ("HASH_CONCURRENCY", "2".to_owned()),
        ("OUTBOX_POLL_MS", "1000".to_owned()),
        ("SHUTDOWN_GRACE_MS", "2000".to_owned()),
    ]
}

/// Where the three binaries are and how old each is (a `cargo test -p tests` does not rebuild
/// them, so a stale one is worth seeing).
///
/// # Panics
/// When one is missing.
pub fn binaries_built() -> String {
    let ages: Vec<String> = Service::ALL
        .iter()
        .map(|service| {
            let path = binary_path(service.binary());
            let age = std::fs::metadata(&path).and_then(|meta| meta.modified()).ok().and_then(|at| at.elapsed().ok());
            format!("{service} {}", age.map_or_else(|| "?".to_owned(), |age| format!("{} s old", age.as_secs())))
        })
        .collect();
    let dir = binary_path(Service::Auth.binary()).parent().map(Path::to_owned).unwrap_or_default();
    format!("service binaries in {}: {}", dir.display(), ages.join(", "))
}

/// The built binary `name`: in `FAULTS_BIN_DIR` when it is set (e.g. `target/release`, or a
/// directory of older builds to show what the suite finds in them), else next to this test
/// executable (`target/<profile>/<name>`).
///
/// # Panics
/// When it is not there (a `cargo test -p tests` does not build the services' binaries).
fn binary_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("FAULTS_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("the test executable's path");
            exe.parent().and_then(Path::parent).expect("the test executable lives in target/<profile>/deps").to_owned()
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --bins` first (or `cargo test --workspace`)",
        path.display()
    );
    path
}
