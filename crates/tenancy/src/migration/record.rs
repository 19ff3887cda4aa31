//! Migration records: a migration as plain data, for persistence to keep across restarts.
//!
//! The manager hands a [`MigrationRecord`] to the [`MigrationRecordSink`] every time a
//! migration's state changes (the sink must not block: it is called from the migration's task).
//! After a restart, [`super::MigrationManager::restore`] brings the records back: finished ones
//! as history (STATUS, `STATUS ALL`), and one that was running as `failed` (its change capture
//! and queues did not survive); a hand-over that was recorded before the restart can then still
//! be completed with CUTOVER RETRY or undone with CANCEL.

use super::api::MigrationMode;
use super::state::MigrationState;
use super::status::{Info, Published};

/// A migration as persistence keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationRecord {
    pub id: String,
    pub tenant: String,
    /// This server's address as clients reach it.
    pub source: String,
    pub target: String,
    /// Where clients are sent after cutover.
    pub redirect: String,
    pub mode: MigrationMode,
    pub state: MigrationState,
    pub error: Option<String>,
    pub import_id: Option<String>,
    /// Unix ms.
    pub started_at_ms: u64,
    pub completed_at_ms: Option<u64>,
    pub downtime_ms: Option<f64>,
    pub keys_migrated: u64,
    pub bytes_synced: u64,
    /// Creation order on the server.
    pub seq: u64,
}

impl MigrationRecord {
    pub(super) fn of(info: &Info, p: &Published) -> MigrationRecord {
        MigrationRecord {
            id: info.id.clone(),
            tenant: info.tenant.id().to_string(),
            source: info.source.clone(),
            target: info.target.clone(),
            redirect: info.redirect.clone(),
            mode: info.mode,
            state: p.state,
            error: p.error.clone(),
            import_id: p.import_id.clone(),
            started_at_ms: p.started_at_ms,
            completed_at_ms: p.completed_at_ms,
            downtime_ms: p.downtime_ms,
            keys_migrated: p.keys_migrated,
            bytes_synced: p.bytes_acked,
            seq: info.seq,
        }
    }
}

/// Receives every change of a migration's state (persistence keeps the history).
pub trait MigrationRecordSink: Send + Sync + 'static {
    fn record(&self, record: &MigrationRecord);
}
