//! The per-client rate limit of `/auth/*`: a token bucket per peer IP (tower_governor).
//!
//! A spent bucket is answered with 429 problem+json and `Retry-After` (whole seconds, at
//! least 1). The key is the TCP peer address: behind a reverse proxy every client shares the
//! proxy's address, so such a deployment must rate-limit at the proxy or switch the key
//! extractor to a trusted forwarding header.

use std::{sync::Arc, time::Duration};

use axum::{body::Body, http::Response, response::IntoResponse};
use governor::middleware::NoOpMiddleware;
use tokio_util::sync::CancellationToken;
use tower_governor::{
    GovernorError, GovernorLayer,
    governor::{GovernorConfig, GovernorConfigBuilder},
    key_extractor::PeerIpKeyExtractor,
};

use crate::{config::RateLimit, error::ApiError};

/// How often buckets of clients that went quiet are dropped, so the limiter's memory follows
/// the number of recent clients, not of all clients ever seen.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

type Config = GovernorConfig<PeerIpKeyExtractor, NoOpMiddleware>;

/// The limiter's configuration, shared by the layer and the cleanup task.
#[derive(Clone)]
pub struct Limiter(Arc<Config>);

impl Limiter {
    pub fn new(limit: RateLimit) -> Self {
        let period = Duration::from_secs(1) / limit.per_second.max(1);
        let config = GovernorConfigBuilder::default().period(period).burst_size(limit.burst.max(1)).finish();
        // `finish` refuses only a zero period or burst, which the `max(1)`s above exclude.
        Self(Arc::new(config.unwrap_or_else(GovernorConfig::default)))
    }

    /// The layer to put on the rate-limited routes.
    pub fn layer(&self) -> GovernorLayer<PeerIpKeyExtractor, NoOpMiddleware, Body> {
        GovernorLayer::new(Arc::clone(&self.0)).error_handler(reject)
    }

    /// Drops idle clients' buckets every minute until `stop`.
    pub async fn clean_until(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(CLEANUP_INTERVAL);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => self.0.limiter().retain_recent(),
            }
        }
    }
}

fn reject(error: GovernorError) -> Response<Body> {
    match error {
        GovernorError::TooManyRequests { wait_time, .. } => {
            ApiError::RateLimited { retry_after_secs: wait_time.max(1) }.into_response()
        }
        // Without a peer address (no ConnectInfo) there is no key: a wiring bug, not the client's.
        GovernorError::UnableToExtractKey | GovernorError::Other { .. } => {
            ApiError::Internal("the rate limiter found no peer address").into_response()
        }
    }
}
