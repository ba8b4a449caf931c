//! Failed logins, throttled per account and per client IP.
//!
//! Every login attempt that names an email is counted against that email (trimmed and
//! lower-cased, whether or not an account has it) and against the client's IP, as a failure
//! until it succeeds: counting at the start rather than at the end means a burst of
//! concurrent guesses cannot all pass the check before the first failure is recorded. A
//! successful login takes its attempt back (and clears the account's count).
//!
//! Once a key has `limit` failures inside its window (counted from its first failure), further
//! attempts are answered 429 with `Retry-After` (the rest of the window) before any database
//! lookup or hashing, so the answer, its body and its timing are the same for a registered and
//! an unregistered email: the throttle is no account oracle. Emails are kept as keyed hashes
//! (SipHash with a per-process random key), a fixed size whatever the client sent; windows
//! that ended are dropped by [`LoginThrottle::clean_until`].

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash},
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use crate::config::LoginThrottle as Settings;

/// The throttle; cheap to clone.
#[derive(Clone)]
pub struct LoginThrottle {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    keys: std::collections::hash_map::RandomState,
    accounts: Mutex<HashMap<u64, Window>>,
    clients: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// An attempt counted as a failure until [`Attempt::succeeded`] or [`Attempt::not_judged`].
#[must_use = "an attempt stays counted as a failure unless taken back"]
pub struct Attempt {
    throttle: LoginThrottle,
    account: u64,
    client: IpAddr,
}

/// Why an attempt is refused: retry after this many seconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after_secs: u64,
}

impl LoginThrottle {
    pub fn new(settings: Settings) -> Self {
        let inner = Inner {
            settings,
            keys: std::collections::hash_map::RandomState::new(),
            accounts: Mutex::default(),
            clients: Mutex::default(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Counts an attempt for `email` from `client`, or refuses it when either is throttled
    /// (then nothing is counted).
    pub fn attempt(&self, email: &str, client: IpAddr) -> Result<Attempt, Throttled> {
        let account = self.account_key(email);
        let now = Instant::now();
        let settings = self.inner.settings;
        let mut accounts = lock(&self.inner.accounts);
        let mut clients = lock(&self.inner.clients);
        let account_wait = blocked(accounts.get(&account), settings.per_account, settings.window, now);
        let client_wait = blocked(clients.get(&client), settings.per_ip, settings.window, now);
        if let Some(wait) = account_wait.max(client_wait) {
            return Err(Throttled { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 });
        }
        count(accounts.entry(account).or_insert(Window { started: now, failures: 0 }), settings.window, now);
        count(clients.entry(client).or_insert(Window { started: now, failures: 0 }), settings.window, now);
        Ok(Attempt { throttle: self.clone(), account, client })
    }

    /// Drops the windows that ended, every window length, until `stop`.
    pub async fn clean_until(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.settings.window);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => self.forget_ended(Instant::now()),
            }
        }
    }

    fn forget_ended(&self, now: Instant) {
        let window = self.inner.settings.window;
        lock(&self.inner.accounts).retain(|_, entry| now.duration_since(entry.started) < window);
        lock(&self.inner.clients).retain(|_, entry| now.duration_since(entry.started) < window);
    }

    /// The email as the throttle knows it: trimmed, lower-cased, hashed with this process's key.
    fn account_key(&self, email: &str) -> u64 {
        self.inner.keys.hash_one(email.trim().to_lowercase())
    }

    /// The number of accounts and clients with a current window (for tests and operators).
    pub fn tracked(&self) -> (usize, usize) {
        (lock(&self.inner.accounts).len(), lock(&self.inner.clients).len())
    }
}

impl Attempt {
    /// The login succeeded: the account's failures are cleared, the client's attempt is taken
    /// back.
    pub fn succeeded(self) {
        lock(&self.throttle.inner.accounts).remove(&self.account);
        uncount(&mut lock(&self.throttle.inner.clients), &self.client);
    }

    /// The attempt was not judged (the service failed, e.g. overloaded): taken back on both keys.
    pub fn not_judged(self) {
        uncount(&mut lock(&self.throttle.inner.accounts), &self.account);
        uncount(&mut lock(&self.throttle.inner.clients), &self.client);
    }
}

/// How long `window` still blocks, if it holds `limit` failures.
fn blocked(window: Option<&Window>, limit: u32, length: Duration, now: Instant) -> Option<Duration> {
    let window = window?;
    let elapsed = now.duration_since(window.started);
    (elapsed < length && window.failures >= limit).then(|| length - elapsed)
}

/// Adds a failure to `window`, starting a new one if it ended.
fn count(window: &mut Window, length: Duration, now: Instant) {
    if now.duration_since(window.started) >= length {
        *window = Window { started: now, failures: 0 };
    }
    window.failures = window.failures.saturating_add(1);
}

fn uncount<K: Eq + Hash>(map: &mut HashMap<K, Window>, key: &K) {
    if let Some(window) = map.get_mut(key) {
        window.failures = window.failures.saturating_sub(1);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn throttle(per_account: u32, per_ip: u32) -> LoginThrottle {
        LoginThrottle::new(Settings { per_account, per_ip, window: Duration::from_secs(60) })
    }

    #[test]
    fn the_account_is_throttled_after_its_limit_whatever_the_spelling() {
        let throttle = throttle(3, 100);
        for email in ["ada@example.com", " ADA@example.com", "Ada@Example.COM "] {
            drop(throttle.attempt(email, CLIENT).unwrap());
        }
        let refused = throttle.attempt("ada@example.com", CLIENT).err().unwrap();
        assert!((59..=60).contains(&refused.retry_after_secs), "{refused:?}");
        assert!(throttle.attempt("bob@example.com", CLIENT).is_ok(), "other accounts are not affected");
    }

    #[test]
    fn the_client_is_throttled_across_accounts() {
        let throttle = throttle(100, 2);
        drop(throttle.attempt("a@example.com", CLIENT).unwrap());
        drop(throttle.attempt("b@example.com", CLIENT).unwrap());
        assert!(throttle.attempt("c@example.com", CLIENT).is_err());
        let other: IpAddr = "10.0.0.7".parse().unwrap();
        assert!(throttle.attempt("c@example.com", other).is_ok());
    }

    #[test]
    fn success_clears_the_account_and_unjudged_attempts_do_not_count() {
        let throttle = throttle(2, 100);
        drop(throttle.attempt("ada@example.com", CLIENT).unwrap());
        throttle.attempt("ada@example.com", CLIENT).unwrap().succeeded();
        drop(throttle.attempt("ada@example.com", CLIENT).unwrap());
        throttle.attempt("ada@example.com", CLIENT).unwrap().not_judged();
        drop(throttle.attempt("ada@example.com", CLIENT).unwrap());
        assert!(throttle.attempt("ada@example.com", CLIENT).is_err(), "two failures since the success");
    }

    #[test]
    fn ended_windows_are_forgotten() {
        let throttle = LoginThrottle::new(Settings { per_account: 1, per_ip: 1, window: Duration::from_millis(1) });
        drop(throttle.attempt("ada@example.com", CLIENT).unwrap());
        assert_eq!(throttle.tracked(), (1, 1));
        throttle.forget_ended(Instant::now() + Duration::from_millis(5));
        assert_eq!(throttle.tracked(), (0, 0));
    }
}
