//! What the handlers share. Cheap to clone: a pool handle and a queue sender.

use crate::{lookups::UserLookups, users::Users};

/// The state every handler of the server receives: the table for writes, the coalescing
/// reader for `get_user`.
#[derive(Debug, Clone)]
pub struct AppState {
    pub users: Users,
    pub lookups: UserLookups,
}
