//! Migration and import streams as shown in INFO replication (filled in by the migration manager).

use crate::connection::ClientState;
use crate::shared::Shared;

/// Lines describing migration streams; none until migrations exist.
pub fn lines(_st: &ClientState, _sh: &Shared) -> Vec<String> {
    Vec::new()
}
