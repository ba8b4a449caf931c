//! What every handler can reach: the pool, the broker client, the hasher, the token keys and
//! the failed-login throttle.
//! Cheap to clone (handles and `Arc`s only).

use std::sync::Arc;

use axum::extract::FromRef;
use shared::Client;
use sqlx::PgPool;

use crate::{login_throttle::LoginThrottle, password::PasswordHasher, token::Tokens};

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub rpc: Client,
    pub hasher: PasswordHasher,
    pub tokens: Arc<Tokens>,
    pub throttle: LoginThrottle,
}

impl FromRef<AppState> for Arc<Tokens> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.tokens)
    }
}
