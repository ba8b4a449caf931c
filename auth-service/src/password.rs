//! argon2id password hashing, off the async runtime.
//!
//! Guarantees:
//! - hashing and verifying run on dedicated threads (`argon2-N`), never on a Tokio worker, so a
//!   burst of signups cannot stall unrelated requests;
//! - at most `concurrency` of them run at once (one per thread): each takes `m_cost` KiB, so an
//!   unbounded burst would cost memory without adding throughput on a machine with few cores;
//! - a thread that finishes a hash takes the next queued job at once, without a round trip
//!   through the async runtime, so the hashing threads stay busy while work is queued;
//! - a job whose caller went away (the HTTP client disconnected) is dropped, not hashed;
//! - the queue is bounded: at most `concurrency + queue_capacity` jobs are accepted at once
//!   (running or waiting); one more is refused at once with [`HashError::Saturated`] (the
//!   HTTP layer answers 503 with `Retry-After`), so a burst costs neither unbounded memory nor
//!   unbounded latency for the requests that were accepted;
//! - verifying an unknown account costs the same as verifying a known one: it runs against a
//!   dummy hash made with the same parameters, so response time does not tell whether an
//!   email is registered.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, PoisonError, mpsc},
};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version,
    password_hash::{SaltString, rand_core::OsRng},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::{account::Password, config::Argon2Params};

/// A PHC string (`$argon2id$v=19$m=…`), what the credentials table stores.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordDigest(pub String);

impl std::fmt::Debug for PasswordDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordDigest(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid argon2 parameters")]
    Params(#[source] argon2::Error),
    #[error("argon2 failed")]
    Argon2(#[source] argon2::password_hash::Error),
    #[error("a hashing thread could not be started")]
    Spawn(#[source] std::io::Error),
    #[error("the hashing job panicked")]
    Panicked,
    #[error("the hasher is closed")]
    Closed,
    /// Every hashing thread is busy and the queue is full: try again shortly.
    #[error("the password hashing queue is full")]
    Saturated,
}

/// Hashes and verifies passwords; cheap to clone. See the module docs for its guarantees.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

/// A unit of work for the hashing threads.
type Job = Box<dyn FnOnce() + Send>;

struct Inner {
    params: Params,
    /// The hashing threads' queue; they exit once every hasher handle is dropped.
    jobs: mpsc::Sender<Job>,
    /// A hash of a random password, verified against when the account does not exist.
    dummy: PasswordDigest,
    /// One permit per job accepted (running or waiting): `concurrency + queue_capacity`.
    slots: Arc<Semaphore>,
}

impl PasswordHasher {
    /// Checks the parameters, starts `concurrency` hashing threads and computes the dummy hash
    /// (one hash's worth of time). Up to `queue_capacity` jobs may wait for a thread.
    pub async fn new(params: Argon2Params, concurrency: usize, queue_capacity: usize) -> Result<Self, HashError> {
        let params = Params::new(params.m_cost, params.t_cost, params.p_cost, None).map_err(HashError::Params)?;
        let concurrency = concurrency.max(1);
        let jobs = start_threads(concurrency)?;
        let random = uuid::Uuid::new_v4().to_string();
        let dummy_params = params.clone();
        let dummy = submit(&jobs, None, move || hash_with(&dummy_params, &random)).await?;
        let slots = Arc::new(Semaphore::new(concurrency.saturating_add(queue_capacity)));
        Ok(Self { inner: Arc::new(Inner { params, jobs, dummy, slots }) })
    }

    /// Hashes a new password with a fresh random salt.
    pub async fn hash(&self, password: Password) -> Result<PasswordDigest, HashError> {
        let params = self.inner.params.clone();
        self.run(move || hash_with(&params, password.expose())).await
    }

    /// Whether `password` matches `stored`; with no stored hash, does the same work against
    /// the dummy hash and answers `false`.
    pub async fn verify(&self, password: Password, stored: Option<PasswordDigest>) -> Result<bool, HashError> {
        let known = stored.is_some();
        let digest = stored.unwrap_or_else(|| self.inner.dummy.clone());
        let matches = self.run(move || verify_with(password.expose(), &digest)).await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let Ok(slot) = Arc::clone(&self.inner.slots).try_acquire_owned() else {
            metrics::counter!("password_hash_rejected_total").increment(1);
            return Err(HashError::Saturated);
        };
        submit(&self.inner.jobs, Some(slot), work).await
    }
}

/// Starts the hashing threads, all taking jobs from one queue.
fn start_threads(count: usize) -> Result<mpsc::Sender<Job>, HashError> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    for index in 0..count {
        let queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name(format!("argon2-{index}"))
            .spawn(move || {
                loop {
                    // The lock is held only while waiting for the next job, not while hashing.
                    let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    match job {
                        Ok(job) => job(),
                        Err(mpsc::RecvError) => break,
                    }
                }
            })
            .map_err(HashError::Spawn)?;
    }
    Ok(jobs)
}

/// Queues `work` for the hashing threads and waits for its result. `slot`, the job's place
/// in the bounded queue, is released when the job has run (or was skipped).
async fn submit<T: Send + 'static>(
    jobs: &mpsc::Sender<Job>,
    slot: Option<OwnedSemaphorePermit>,
    work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
) -> Result<T, HashError> {
    let (result, outcome) = oneshot::channel();
    let job: Job = Box::new(move || {
        if result.is_closed() {
            return;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or(Err(HashError::Panicked));
        // Freed before the caller wakes up, so that it finds its slot free again.
        drop(slot);
        let _ = result.send(outcome);
    });
    jobs.send(job).map_err(|_| HashError::Closed)?;
    outcome.await.map_err(|_| HashError::Closed)?
}

fn hash_with(params: &Params, password: &str) -> Result<PasswordDigest, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let hash = hasher.hash_password(password.as_bytes(), &salt).map_err(HashError::Argon2)?;
    Ok(PasswordDigest(hash.to_string()))
}

/// Verifies with the parameters recorded in the hash itself, so hashes made under older
/// settings keep working after the cost is raised.
fn verify_with(password: &str, stored: &PasswordDigest) -> Result<bool, HashError> {
    let parsed = PasswordHash::new(&stored.0).map_err(HashError::Argon2)?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(error) => Err(HashError::Argon2(error)),
    }
}

/// Hashes `password` once with `params`, synchronously: the benchmark's raw baseline.
pub fn hash_blocking(params: Argon2Params, password: &str) -> Result<PasswordDigest, HashError> {
    let params = Params::new(params.m_cost, params.t_cost, params.p_cost, None).map_err(HashError::Params)?;
    hash_with(&params, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: Argon2Params = Argon2Params { m_cost: 64, t_cost: 1, p_cost: 1 };

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_do_not() {
        let hasher = PasswordHasher::new(CHEAP, 2, 64).await.unwrap();
        let digest = hasher.hash(Password::offered("correct horse".into())).await.unwrap();
        assert!(digest.0.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(hasher.verify(Password::offered("correct horse".into()), Some(digest.clone())).await.unwrap());
        assert!(!hasher.verify(Password::offered("wrong horse".into()), Some(digest)).await.unwrap());
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies_and_costs_a_full_verification() {
        // Costly enough that one verification dwarfs the bookkeeping around it.
        let params = Argon2Params { m_cost: 4096, t_cost: 1, p_cost: 1 };
        let hasher = PasswordHasher::new(params, 1, 4).await.unwrap();
        let digest = hasher.hash(Password::offered("correct horse".into())).await.unwrap();
        let timed = |stored: Option<PasswordDigest>| {
            let hasher = hasher.clone();
            async move {
                let started = std::time::Instant::now();
                let verified = hasher.verify(Password::offered("correct horse".into()), stored).await.unwrap();
                (verified, started.elapsed())
            }
        };
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let (verified, elapsed) = timed(Some(digest.clone())).await;
            assert!(verified);
            known.push(elapsed);
            let (verified, elapsed) = timed(None).await;
            assert!(!verified, "an unknown account verified");
            unknown.push(elapsed);
        }
        known.sort();
        unknown.sort();
        let ratio = unknown[2].as_secs_f64() / known[2].as_secs_f64();
        assert!(
            (0.5..=2.0).contains(&ratio),
            "unknown {:?} vs known {:?}: the time tells them apart",
            unknown[2],
            known[2]
        );
    }

    #[tokio::test]
    async fn queued_jobs_all_finish_with_more_callers_than_threads() {
        let hasher = PasswordHasher::new(CHEAP, 2, 64).await.unwrap();
        let digests = futures::future::join_all(
            (0..16).map(|i| hasher.hash(Password::offered(format!("password {i}")))).collect::<Vec<_>>(),
        )
        .await;
        let digests: Vec<PasswordDigest> = digests.into_iter().map(Result::unwrap).collect();
        for (i, digest) in digests.into_iter().enumerate() {
            assert!(hasher.verify(Password::offered(format!("password {i}")), Some(digest)).await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_thread_keeps_serving() {
        let hasher = PasswordHasher::new(CHEAP, 1, 4).await.unwrap();
        let panicked = hasher.run::<()>(|| panic!("boom")).await;
        assert!(matches!(panicked, Err(HashError::Panicked)), "{panicked:?}");
        assert!(hasher.hash(Password::offered("still working".into())).await.is_ok());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_frees_its_slots_when_jobs_finish() {
        let hasher = PasswordHasher::new(CHEAP, 1, 2).await.unwrap();
        // Hold the one thread with a job that waits for a signal, fill the two waiting slots.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.run(move || held.recv().map_err(|_| HashError::Closed)).await }
        });
        let queued: Vec<_> = (0..2)
            .map(|i| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(Password::offered(format!("queued {i}"))).await })
            })
            .collect();
        // All three slots are taken once the spawned tasks ran up to their submission.
        tests_wait_until(|| hasher.inner.slots.available_permits() == 0).await;

        let started = std::time::Instant::now();
        let refused = hasher.hash(Password::offered("one too many".into())).await;
        assert!(matches!(refused, Err(HashError::Saturated)), "{refused:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "refused at once, not queued");

        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for job in queued {
            job.await.unwrap().unwrap();
        }
        assert_eq!(hasher.inner.slots.available_permits(), 3, "every slot is free again");
        assert!(hasher.hash(Password::offered("accepted again".into())).await.is_ok());
    }

    /// Polls `condition` (a state of the hasher this test drives) for up to 10 s.
    async fn tests_wait_until(condition: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !condition() {
            assert!(std::time::Instant::now() < deadline, "condition not reached within 10 s");
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn digest_debug_is_redacted() {
        assert!(!format!("{:?}", PasswordDigest("$argon2id$secret".into())).contains("secret"));
    }
}
