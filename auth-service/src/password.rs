//! argon2id password hashing, off the async runtime.
//!
//! Guarantees:
//! - hashing and verifying run on Tokio's blocking pool, never on a worker thread, so a burst
//!   of signups cannot stall unrelated requests;
//! - at most `concurrency` of them run at once (a semaphore): each takes `m_cost` KiB, so an
//!   unbounded burst would cost memory without adding throughput on a machine with few cores;
//! - verifying an unknown account costs the same as verifying a known one: it runs against a
//!   dummy hash made with the same parameters, so response time does not tell whether an
//!   email is registered.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version,
    password_hash::{SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

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
    #[error("the hashing task did not finish")]
    Task(#[source] tokio::task::JoinError),
    #[error("the hasher is closed")]
    Closed,
}

/// Hashes and verifies passwords; cheap to clone. See the module docs for its guarantees.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    params: Params,
    permits: Semaphore,
    /// A hash of a random password, verified against when the account does not exist.
    dummy: PasswordDigest,
}

impl PasswordHasher {
    /// Checks the parameters and computes the dummy hash (one hash's worth of time).
    pub async fn new(params: Argon2Params, concurrency: usize) -> Result<Self, HashError> {
        let params = Params::new(params.m_cost, params.t_cost, params.p_cost, None).map_err(HashError::Params)?;
        let random = uuid::Uuid::new_v4().to_string();
        let dummy_params = params.clone();
        let dummy =
            tokio::task::spawn_blocking(move || hash_with(&dummy_params, &random)).await.map_err(HashError::Task)??;
        Ok(Self { inner: Arc::new(Inner { params, permits: Semaphore::new(concurrency.max(1)), dummy }) })
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
        let _permit = self.inner.permits.acquire().await.map_err(|_| HashError::Closed)?;
        tokio::task::spawn_blocking(work).await.map_err(HashError::Task)?
    }
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
        let hasher = PasswordHasher::new(CHEAP, 2).await.unwrap();
        let digest = hasher.hash(Password::offered("correct horse".into())).await.unwrap();
        assert!(digest.0.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(hasher.verify(Password::offered("correct horse".into()), Some(digest.clone())).await.unwrap());
        assert!(!hasher.verify(Password::offered("wrong horse".into()), Some(digest)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_accounts_never_verify() {
        let hasher = PasswordHasher::new(CHEAP, 1).await.unwrap();
        assert!(!hasher.verify(Password::offered(String::new()), None).await.unwrap());
    }

    #[test]
    fn digest_debug_is_redacted() {
        assert!(!format!("{:?}", PasswordDigest("$argon2id$secret".into())).contains("secret"));
    }
}
