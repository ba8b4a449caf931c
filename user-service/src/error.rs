//! The two boundaries of the service and what crosses them: the `get_user` reply a caller
//! sees and the failure policy the transport applies to an event. Each error is turned into
//! its outside form here and nowhere else.

use shared::{EventFailure, RpcException};

use crate::{lookups::LookupError, users::DbError};

/// Why `get_user` answered without a user. Each variant names the error object the caller
/// receives (NestJS `RpcException` shape).
#[derive(Debug, thiserror::Error)]
pub enum GetUserError {
    /// `{status:400, message:"id must be a UUID: <what is wrong with it>"}`.
    #[error("id must be a UUID")]
    InvalidId(#[source] uuid::Error),
    /// `{status:404, message:"user not found"}`: the projection has no such user (yet).
    #[error("user not found")]
    NotFound,
    /// `{status:503, message:"database unavailable"}`: the cause stays in our logs.
    #[error("database unavailable")]
    Database(#[source] LookupError),
}

impl From<GetUserError> for RpcException {
    fn from(error: GetUserError) -> Self {
        match error {
            GetUserError::InvalidId(source) => RpcException::status(400, format!("id must be a UUID: {source}")),
            GetUserError::NotFound => RpcException::status(404, "user not found"),
            GetUserError::Database(source) => RpcException::status(503, "database unavailable").with_source(source),
        }
    }
}

/// Why a `user.created` event was not projected.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Retried with backoff through the delay queues, then parked in `<queue>.dlq`.
    #[error("the database is unavailable")]
    Unavailable(#[source] DbError),
    /// Parked in `<queue>.dlq` at once: Postgres refuses this data, retrying cannot help.
    #[error("the database rejected the event's data")]
    Rejected(#[source] DbError),
}

impl From<DbError> for ProjectionError {
    fn from(error: DbError) -> Self {
        if error.is_rejected_data() { Self::Rejected(error) } else { Self::Unavailable(error) }
    }
}

impl From<ProjectionError> for EventFailure {
    fn from(error: ProjectionError) -> Self {
        match error {
            ProjectionError::Unavailable(_) => EventFailure::transient(error),
            ProjectionError::Rejected(_) => EventFailure::permanent(error),
        }
    }
}
