//! `{cmd:"get_user"}`: a user's profile from the projection.

use shared::{State, contracts::GetUser, contracts::User, error::chain};
use uuid::Uuid;

use crate::{app::AppState, error::GetUserError};

/// Parses the id, then reads the projection. A malformed id never reaches the database; a
/// database outage is answered within [`crate::Config::database_timeout`].
pub async fn get_user(State(state): State<AppState>, request: GetUser) -> Result<User, GetUserError> {
    let id = Uuid::parse_str(&request.id).map_err(GetUserError::InvalidId)?;
    match state.lookups.find(id).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(GetUserError::NotFound),
        Err(error) => {
            // The transport logs the error object the caller gets, not its cause: log it here.
            tracing::warn!(user_id = %id, error = %chain(&error), "get_user: database unavailable");
            Err(GetUserError::Database(error))
        }
    }
}
