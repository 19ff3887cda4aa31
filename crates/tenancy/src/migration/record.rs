//! Migration records: a migration as plain data, for persistence to keep across restarts.
//!
//! The manager hands a [`MigrationRecord`] to the [`MigrationRecordSink`] every time a
//! migration's state changes (the sink must not block: it is called from the migration's task).
//! After a restart, [`super::MigrationManager::restore`] brings the records back: finished ones
//! as history (STATUS, `STATUS ALL`), and one that was running as `failed` (its change capture
//! and queues did not survive); a hand-over that was recorded before the restart can then still
//! be completed with CUTOVER RETRY or undone with CANCEL.

use super::api::{Approval, MigrationConfig, MigrationMode, Priority};
use super::conflict::ConflictPolicy;
use super::state::MigrationState;
use super::status::{Info, Published};
use crate::patterns::Owner;

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
    /// How it was started (RESUME after a restart starts it again the same way).
    pub settings: RecordedSettings,
    /// Priority, group, dependencies and approval.
    pub orchestration: RecordedOrchestration,
    /// `MODE incremental`: the patterns handed over to the target (by index into
    /// `settings.patterns`); a restart keeps redirecting their keys.
    pub patterns_moved: Vec<usize>,
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
            settings: RecordedSettings {
                patterns: info.patterns.clone(),
                conflict: info.conflict,
                parallel: p.parallel,
                batch_size: p.batch_size,
                rate_bytes_per_sec: p.rate_bytes_per_sec,
                timeout_ms: None,
                auth: RecordedAuth::Default,
                retention_ms: None,
                backup_of: info.backup_of.clone(),
            },
            orchestration: RecordedOrchestration {
                priority: p.priority,
                group: None,
                after: Vec::new(),
                needs_approval: false,
                approval: p.approval.clone(),
                plan: p.plan.clone(),
            },
            patterns_moved: moved_patterns(info),
        }
    }

    /// Adds what only the migration's configuration knows.
    pub(super) fn with_config(mut self, cfg: &MigrationConfig, needs_approval: bool) -> Self {
        self.settings.timeout_ms = cfg.timeout.map(|t| t.as_millis() as u64);
        self.settings.retention_ms = cfg.retention.map(|t| t.as_millis() as u64);
        self.settings.backup_of = cfg.backup_of.clone();
        if cfg.auth.is_some() {
            self.settings.auth = RecordedAuth::Password;
        }
        self.orchestration.group = cfg.group.clone();
        self.orchestration.needs_approval = needs_approval;
        self
    }

    /// The configuration to start it again with (the password, never recorded, is `auth`).
    pub(super) fn config(&self, auth: Option<String>) -> MigrationConfig {
        let s = &self.settings;
        let o = &self.orchestration;
        let d = MigrationConfig::default();
        MigrationConfig {
            mode: self.mode,
            parallel: if s.parallel == 0 {
                d.parallel
            } else {
                s.parallel
            },
            batch_size: if s.batch_size == 0 {
                d.batch_size
            } else {
                s.batch_size
            },
            timeout: s.timeout_ms.map(std::time::Duration::from_millis),
            auth,
            rate_bytes_per_sec: s.rate_bytes_per_sec,
            redirect: Some(self.redirect.clone()),
            conflict: s.conflict,
            priority: o.priority,
            after: o.after.clone(),
            group: o.group.clone(),
            approval: o.needs_approval,
            patterns: s.patterns.clone(),
            retention: s.retention_ms.map(std::time::Duration::from_millis),
            // A reverse stream is never started again (see `backup_of`).
            backup_of: None,
        }
    }
}

/// The patterns of an incremental migration that this server no longer serves (handed over, or
/// being handed over: the target may serve them already).
fn moved_patterns(info: &Info) -> Vec<usize> {
    let Some(split) = info.split() else {
        return Vec::new();
    };
    split
        .owners()
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Owner::There | Owner::Handing))
        .map(|(i, _)| i)
        .collect()
}

/// Receives every change of a migration's state (persistence keeps the history).
pub trait MigrationRecordSink: Send + Sync + 'static {
    fn record(&self, record: &MigrationRecord);

    /// Like [`Self::record`], for a record that must be durable before the migration goes on
    /// (a pattern handed over): an error stops that step.
    fn record_durably(&self, record: &MigrationRecord) -> Result<(), String> {
        self.record(record);
        Ok(())
    }

    /// The migration settings, when the sink is installed and on every change (CONFIG SET):
    /// `history_max` bounds the finished records kept.
    fn settings_changed(&self, _settings: &super::api::MigrationSettings) {}
}

/// How a migration authenticated to its target. The password itself is never recorded: a
/// migration restored after a restart that used one is resumed with
/// `TENANT.MIGRATE.RESUME <id> AUTH <password>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordedAuth {
    /// No AUTH given: the cluster's migration token (from the config) or nothing.
    #[default]
    Default,
    /// AUTH <password> was given with TENANT.MIGRATE.
    Password,
}

impl RecordedAuth {
    pub fn name(self) -> &'static str {
        match self {
            RecordedAuth::Default => "default",
            RecordedAuth::Password => "password",
        }
    }

    pub fn parse(s: &str) -> Option<RecordedAuth> {
        match s {
            "default" => Some(RecordedAuth::Default),
            "password" => Some(RecordedAuth::Password),
            _ => None,
        }
    }
}

/// What a migration was started with, so that RESUME after a restart starts it again the same
/// way (records written before these existed restore the defaults).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordedSettings {
    /// `MODE incremental`: the patterns, normalized.
    pub patterns: Vec<Vec<u8>>,
    pub conflict: Option<ConflictPolicy>,
    pub parallel: usize,
    pub batch_size: usize,
    pub rate_bytes_per_sec: u64,
    /// TIMEOUT given with the command (ms).
    pub timeout_ms: Option<u64>,
    pub auth: RecordedAuth,
    /// RETENTION given with the command (ms; `Some(0)`: no backup after the cutover).
    pub retention_ms: Option<u64>,
    /// On a new owner: this migration was the reverse stream keeping the old source of this
    /// import up to date (never started by an operator, so never started again by RESUME).
    pub backup_of: Option<String>,
}

/// Its place among the other migrations (see [`super::schedule`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordedOrchestration {
    pub priority: Priority,
    pub group: Option<String>,
    /// AFTER: the migrations it waits for.
    pub after: Vec<String>,
    /// It waits for an APPROVE before it starts.
    pub needs_approval: bool,
    /// The decision, who took it and when.
    pub approval: Option<Approval>,
    /// The plan shown while it awaits approval.
    pub plan: Vec<(String, String)>,
}
