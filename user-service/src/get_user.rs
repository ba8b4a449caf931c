//! `{cmd:"get_user"}`: a user's profile from the projection.

use shared::{State, contracts::GetUser, contracts::User};
use uuid::Uuid;

use crate::{error::GetUserError, state::AppState};

/// Parses the id, then reads the projection. A malformed id never reaches the database; a
/// database outage is answered within `DATABASE_TIMEOUT_MS`. Failures are not logged here:
/// the transport logs every error reply once, with its cause ([`GetUserError`] keeps it).
pub async fn get_user(State(state): State<AppState>, request: GetUser) -> Result<User, GetUserError> {
    let id = Uuid::parse_str(&request.id).map_err(GetUserError::InvalidId)?;
    match state.lookups.find(id).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(GetUserError::NotFound),
        Err(error) => Err(GetUserError::Database(error)),
    }
}
