//! What every handler can reach: the pool, the broker client, the hasher and the token keys.
//! Cheap to clone (handles and `Arc`s only).

use std::sync::Arc;

use axum::extract::FromRef;
use shared::Client;
use sqlx::PgPool;

use crate::{password::PasswordHasher, token::Tokens};

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub rpc: Client,
    pub hasher: PasswordHasher,
    pub tokens: Arc<Tokens>,
}

impl FromRef<AppState> for Arc<Tokens> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.tokens)
    }
}
