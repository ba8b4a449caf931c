//! The public port's limits: how many requests it handles at once and for how long.
//!
//! - **In-flight limit** (`MAX_IN_FLIGHT`): a request beyond it is answered at once with 503
//!   problem+json and `Retry-After: 1` (load shedding), never queued, so a flood costs a
//!   bounded amount of memory and the requests already accepted keep their latency.
//! - **Request timeout** (`REQUEST_TIMEOUT_MS`): a request still running after it is dropped
//!   (its work cancelled: a queued hash is skipped, an RPC abandoned) and answered 503
//!   problem+json with `Retry-After: 1`. A signup whose one statement had already reached the
//!   database may still have committed: retrying it then answers 409.
//!
//! The operations port has neither limit: `/readyz` and `/metrics` stay reachable under load.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::Semaphore;

use crate::{config::Overload, error::ApiError};

/// The limits' shared state; cheap to clone.
#[derive(Clone)]
pub struct Limits {
    in_flight: Arc<Semaphore>,
    timeout: Duration,
}

impl Limits {
    pub fn new(settings: &Overload) -> Self {
        Self { in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))), timeout: settings.request_timeout }
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`); see the module docs.
pub async fn enforce(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let Ok(_permit) = Arc::clone(&limits.in_flight).try_acquire_owned() else {
        metrics::counter!("http_requests_shed_total", "reason" => "in_flight").increment(1);
        return ApiError::Overloaded("the in-flight limit is reached").into_response();
    };
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => {
            metrics::counter!("http_requests_shed_total", "reason" => "timeout").increment(1);
            ApiError::TimedOut.into_response()
        }
    }
}
