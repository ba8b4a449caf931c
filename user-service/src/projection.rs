//! `user.created` → the `users` projection.

use shared::{MessageContext, State, contracts::UserCreated};
use tracing::Instrument as _;

use crate::{error::ProjectionError, state::AppState};

/// Metric: events projected, by outcome (`applied` or `stale`).
pub const PROJECTED_METRIC: &str = "users_projected_total";

/// Upserts the event's profile ([`crate::users::Users::project`] says which version wins).
/// Returning `Ok` lets the transport ack the message, so the ack comes only after the write
/// committed; an error is retried or parked as [`ProjectionError`] says.
pub async fn on_user_created(
    State(state): State<AppState>,
    context: MessageContext,
    event: UserCreated,
) -> Result<(), ProjectionError> {
    let event_id = context.message_id.as_deref().unwrap_or_default();
    let write = shared::trace::query_span("INSERT", "users");
    let projected = state.users.project(&event, event_id).instrument(write).await?;
    metrics::counter!(PROJECTED_METRIC, "outcome" => projected.as_str()).increment(1);
    tracing::info!(user_id = %event.id, outcome = projected.as_str(), "user.created projected");
    Ok(())
}
