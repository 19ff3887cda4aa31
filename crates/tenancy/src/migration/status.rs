//! What a migration publishes, and STATUS composed from it.
//!
//! The actor owns the migration and publishes a [`Published`] snapshot through a `watch`
//! channel whenever something changes (and at least every [`super::actor::TICK`]); STATUS reads
//! the latest one and never waits on the actor. The one figure added at read time is what change
//! capture holds, read lock-free from the tenant's keyspace, so that a write is lag the moment it
//! is acknowledged to its client.

use std::sync::Arc;

use tokio::time::Instant;

use super::api::{Approval, MigrationMode, MigrationStatus, Priority, StopResult};
use super::lag::Trend;
use super::state::{MigrationPhase, MigrationState};
use super::stream::InFlight;
use crate::tenant::Tenant;

/// What does not change during a migration.
pub(super) struct Info {
    pub id: String,
    pub tenant: Arc<Tenant>,
    pub source: String,
    pub target: String,
    /// Where clients are sent after cutover (usually the target address).
    pub redirect: String,
    pub mode: MigrationMode,
    /// Creation order on this server (ids sort as text, "_10" before "_2").
    pub seq: u64,
    /// Effects of writes to the large keys already copied (see [`super::delta`]).
    pub delta: Arc<super::delta::DeltaLog>,
    /// MODE continuous with CONFLICT: the target takes writes too.
    pub conflict: Option<super::conflict::ConflictPolicy>,
    /// `MODE incremental`: the patterns as [`crate::patterns::normalize`] returned them.
    pub patterns: Vec<Vec<u8>>,
    /// How long the old source stays a backup after the cutover (zero: none), fixed at
    /// creation so that a migration knows from the start whether it will have one.
    pub backup_retention: std::time::Duration,
    /// On the new owner: the import whose old source this migration keeps up to date.
    pub backup_of: Option<String>,
}

impl Info {
    /// `MODE incremental`: the split the source serves the tenant by (each pattern `here`
    /// before its cutover).
    pub fn split(&self) -> Option<crate::patterns::PatternSplit> {
        if self.patterns.is_empty() {
            return None;
        }
        match self.tenant.split() {
            Some(s) if s.migration == self.id => Some((*s).clone()),
            _ => Some(crate::patterns::PatternSplit::new(
                &self.id,
                &self.redirect,
                self.patterns.clone(),
                crate::patterns::Owner::Here,
            )),
        }
    }
}

/// A migration as its actor last published it.
#[derive(Debug, Clone)]
pub(super) struct Published {
    pub state: MigrationState,
    /// What the run is doing (without the overlay of a link being down: see [`Self::phase`]).
    pub base_phase: MigrationPhase,
    /// A failure, a refused cutover or a scheduled cutover that could not run.
    pub error: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<u64>,
    /// Since when a link to the target has been down (monotonic, and Unix ms for display).
    pub unreachable_since: Option<(Instant, u64)>,
    /// The give-up time of the current outage (reconnect timeout).
    pub reconnect_timeout_secs: u64,
    pub import_id: Option<String>,
    pub started_at_ms: u64,
    pub started: Instant,
    pub finished: Option<Instant>,
    pub completed_at_ms: Option<u64>,
    pub downtime_ms: Option<f64>,
    pub keys_migrated: u64,
    /// The tenant's key count when the snapshot started.
    pub keys_at_start: u64,
    pub keys_acked: u64,
    pub bytes_acked: u64,
    pub bytes_sent: u64,
    pub reconnects: u64,
    /// Sealed or being built, not acknowledged.
    pub in_flight: InFlight,
    /// Large values drained from change capture and not yet read to their end (the one being
    /// sent in chunks and those waiting behind it), and their unread bytes.
    pub large_keys_left: u64,
    pub large_bytes_left: u64,
    pub snapshot_done: bool,
    pub parallel: usize,
    pub batch_size: usize,
    pub scheduled_cutover_ms: Option<u64>,
    pub parked_at: Option<&'static str>,
    pub frozen_released: bool,
    pub keys_per_sec: f64,
    pub lag_trend: Trend,
    /// Lag keys per second of change (negative: shrinking).
    pub lag_rate: f64,
    /// What STOP left on the target (a stopped continuous sync).
    pub stop: Option<StopResult>,
    /// Conflicts the target reported at the last heartbeat, and the latest keys involved.
    pub conflicts: u64,
    pub conflict_sample: Vec<Vec<u8>>,
    /// Bytes per second sent, over the last few seconds.
    pub bytes_per_sec: f64,
    /// Bytes per second it sent while contention management left it alone: what a throttle
    /// factor is applied to.
    pub free_rate: f64,
    /// The contention factor of its priority (1.0: not slowed down).
    pub throttle: f64,
    pub priority: Priority,
    /// Its own RATE (bytes per second, 0 = none), before the server-wide bandwidth share.
    pub rate_bytes_per_sec: u64,
    /// The dependencies it still waits for (state `waiting`).
    pub waiting_for: Vec<String>,
    /// Set when it needs an approval: pending, then who decided what and when.
    pub approval: Option<Approval>,
    /// VALIDATE's report while it awaits approval: (check, detail), `result` last.
    pub plan: Vec<(String, String)>,
    /// Failed because a restart of this server interrupted it, and RESUME can start it again:
    /// what waits for it (AFTER) keeps waiting.
    pub interrupted_by_restart: bool,
    /// It logs in to its target with a password given with AUTH (known here or not: see
    /// [`super::actor::Control::started_with_auth`]); set when its actor starts.
    pub started_with_auth: bool,
    /// After the cutover, while the old source is kept as a backup (see [`super::rollback`]).
    pub backup: Option<super::api::BackupStatus>,
}

impl Published {
    pub fn new(keys: u64, parallel: usize, batch_size: usize) -> Published {
        Published {
            state: MigrationState::Queued,
            base_phase: MigrationPhase::Queued,
            error: None,
            last_error: None,
            last_error_at_ms: None,
            unreachable_since: None,
            reconnect_timeout_secs: 0,
            import_id: None,
            started_at_ms: ferrite_storage::now_ms(),
            started: Instant::now(),
            finished: None,
            completed_at_ms: None,
            downtime_ms: None,
            keys_migrated: 0,
            keys_at_start: keys,
            keys_acked: 0,
            bytes_acked: 0,
            bytes_sent: 0,
            reconnects: 0,
            in_flight: InFlight::default(),
            large_keys_left: 0,
            large_bytes_left: 0,
            snapshot_done: false,
            parallel,
            batch_size,
            scheduled_cutover_ms: None,
            parked_at: None,
            frozen_released: false,
            keys_per_sec: 0.0,
            lag_trend: Trend::Stable,
            lag_rate: 0.0,
            stop: None,
            conflicts: 0,
            conflict_sample: Vec::new(),
            bytes_per_sec: 0.0,
            free_rate: 0.0,
            throttle: 1.0,
            priority: Priority::Normal,
            rate_bytes_per_sec: 0,
            waiting_for: Vec::new(),
            approval: None,
            plan: Vec::new(),
            interrupted_by_restart: false,
            started_with_auth: false,
            backup: None,
        }
    }

    /// The phase STATUS shows: `reconnecting` while a link is down during a run.
    pub fn phase(&self) -> MigrationPhase {
        let running = matches!(
            self.base_phase,
            MigrationPhase::Connecting | MigrationPhase::Snapshot | MigrationPhase::LiveSync
        );
        if running && self.unreachable_since.is_some() && self.state.is_active() {
            MigrationPhase::Reconnecting
        } else {
            self.base_phase
        }
    }

    /// What STATUS `error` says: a stored failure, or while retrying, the outage.
    pub fn error_text(&self) -> Option<String> {
        if let (Some((since, at_ms)), true) = (self.unreachable_since, self.state.is_active()) {
            let secs = since.elapsed().as_secs();
            return Some(format!(
                "the target has been unreachable for {secs} s (since {}): {}; reconnecting, gives up after {} s",
                crate::migration::rfc3339_ms(at_ms),
                self.last_error.as_deref().unwrap_or("no answer"),
                self.reconnect_timeout_secs
            ));
        }
        self.error.clone()
    }
}

/// Whether lag counts everything the target has not acknowledged (after the snapshot) or is
/// still the snapshot's progress.
fn lag_is_live(p: &Published) -> bool {
    let kept = p.state.is_active() || p.state == MigrationState::Failed;
    kept && match p.state {
        // Stopped: its phase says nothing more; the checkpoint says how far it got.
        MigrationState::Failed => p.snapshot_done,
        _ => p.snapshot_done && p.base_phase != MigrationPhase::Queued,
    }
}

/// Lag as STATUS and CUTOVER see it: (keys, bytes, oldest unacknowledged change in Unix ms).
pub(super) fn lag(info: &Info, p: &Published) -> (u64, u64, Option<u64>) {
    let kept = p.state.is_active() || p.state == MigrationState::Failed;
    if !kept {
        return (0, 0, None);
    }
    // Lock-free: STATUS must not contend with the tenant's commands (or deadlock inside EXEC).
    let l = info.tenant.keyspace().tracking_lag_relaxed();
    let (flight, large, large_keys) = if lag_is_live(p) {
        (p.in_flight, p.large_bytes_left, p.large_keys_left)
    } else {
        (InFlight::default(), 0, 0)
    };
    let oldest = match (l.oldest_ms, flight.oldest_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // Large keys already copied count their pending effects (or their size, when they must be
    // copied whole again), not their size at each change.
    let effects = if lag_is_live(p) {
        info.delta.pending_bytes()
    } else {
        0
    };
    let bytes = l.bytes + flight.bytes + large + effects;
    // Chunks of a large value carry bytes but count no key of their own: each large value not
    // read to its end yet is a key behind.
    let keys = l.keys + flight.keys + large_keys.max(u64::from(large > 0));
    (if bytes > 0 { keys.max(1) } else { keys }, bytes, oldest)
}

/// STATUS of one migration.
pub(super) fn compose(info: &Info, p: &Published) -> MigrationStatus {
    let now = ferrite_storage::now_ms();
    let live = lag_is_live(p);
    let (lag_keys, lag_bytes, oldest) = lag(info, p);
    let lag_seconds = oldest.map_or(0.0, |o| now.saturating_sub(o) as f64 / 1000.0);
    let acked = p.keys_acked;
    // keys_total: the tenant's keys (at the start while the snapshot runs, as they are now
    // afterwards); keys_synced: how many of them the target holds up to date. Live changes
    // re-ship keys, so the acknowledged count alone would pass the total.
    let (keys_total, keys_synced) = match p.state {
        MigrationState::Completed | MigrationState::Verified | MigrationState::RolledBack => {
            (p.keys_migrated, p.keys_migrated)
        }
        _ if live => {
            let total = info.tenant.keyspace().len();
            (total, total.saturating_sub(lag_keys))
        }
        _ => (p.keys_at_start, acked.min(p.keys_at_start)),
    };
    let copied = |synced: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            (synced as f64 / total as f64 * 100.0).min(99.0)
        }
    };
    let progress = match p.state {
        MigrationState::Completed | MigrationState::Verified | MigrationState::RolledBack => 100.0,
        st if st.is_pending() => 0.0,
        // Stopped short: how far the copy got, never "done".
        MigrationState::Failed | MigrationState::Cancelled => copied(keys_synced, keys_total),
        _ if !live => copied(keys_synced, keys_total),
        _ if lag_keys == 0 => 100.0,
        _ => {
            let base = keys_total.max(1) as f64;
            (100.0 * base / (base + lag_keys as f64)).min(99.9)
        }
    };
    let rate = p.keys_per_sec;
    let estimated_completion = match (p.state, p.base_phase) {
        (MigrationState::Syncing, MigrationPhase::Snapshot) if rate > 0.0 => {
            let left = keys_total.saturating_sub(keys_synced) as f64;
            Some(now + (left / rate * 1000.0) as u64)
        }
        (MigrationState::LiveSync, _) if lag_keys == 0 => Some(now),
        (MigrationState::LiveSync, _) if p.lag_rate < 0.0 => {
            Some(now + (lag_keys as f64 / -p.lag_rate * 1000.0) as u64)
        }
        (MigrationState::Completed | MigrationState::Verified | MigrationState::RolledBack, _) => {
            p.completed_at_ms
        }
        _ => None,
    };
    let duration = match p.finished {
        Some(f) => f.duration_since(p.started),
        None => p.started.elapsed(),
    };
    MigrationStatus {
        id: info.id.clone(),
        tenant: info.tenant.id().to_string(),
        source: info.source.clone(),
        target: info.target.clone(),
        mode: info.mode,
        state: p.state,
        phase: p.phase(),
        progress,
        keys_synced,
        keys_shipped: acked,
        keys_total,
        bytes_synced: p.bytes_acked,
        lag_keys,
        lag_bytes,
        lag_seconds,
        lag_trend: p.lag_trend,
        keys_per_sec: rate,
        started_at: p.started_at_ms,
        estimated_completion,
        completed_at: p.completed_at_ms,
        downtime_ms: p.downtime_ms,
        error: p.error_text(),
        last_error: p.last_error.clone(),
        last_error_at: p.last_error_at_ms,
        unreachable_seconds: p
            .unreachable_since
            .filter(|_| p.state.is_active())
            .map_or(0.0, |(since, _)| since.elapsed().as_secs_f64()),
        parallel: p.parallel,
        batch_size: p.batch_size,
        import_id: p.import_id.clone(),
        scheduled_cutover: p.scheduled_cutover_ms,
        parked_at: p.parked_at,
        duration_seconds: duration.as_secs_f64(),
        bytes_sent: p.bytes_sent,
        reconnects: p.reconnects,
        catch_up_seconds: catch_up_seconds(p, live, lag_keys),
        stop: p.stop.clone(),
        conflict_policy: info.conflict,
        conflicts: p.conflicts,
        conflict_sample: p.conflict_sample.clone(),
        bytes_per_sec: p.bytes_per_sec,
        priority: p.priority,
        // Filled in by the manager, which knows the group and the bandwidth shares.
        group: None,
        queue_position: None,
        waiting_for: p.waiting_for.clone(),
        rate_limit: p.rate_bytes_per_sec,
        approval: p.approval.clone(),
        plan: p.plan.clone(),
        dns: None,
        throttle: p.throttle,
        patterns: pattern_owners(info, p),
        backup: p.backup.clone(),
        backup_of: info.backup_of.clone(),
    }
}

/// The lag view's ETA: how long until the target has caught up at the current trend, while
/// changes are being shipped (live sync, a graceful stop's drain).
fn catch_up_seconds(p: &Published, live: bool, lag_keys: u64) -> Option<f64> {
    if !live || !matches!(p.state, MigrationState::LiveSync | MigrationState::Stopping) {
        return None;
    }
    if lag_keys == 0 {
        Some(0.0)
    } else if p.lag_rate < 0.0 {
        Some(lag_keys as f64 / -p.lag_rate)
    } else {
        None
    }
}

/// Each pattern of an incremental migration and where its keys are served.
fn pattern_owners(info: &Info, p: &Published) -> Vec<(String, &'static str)> {
    let Some(split) = info.split() else {
        return Vec::new();
    };
    let done = matches!(
        p.state,
        MigrationState::Completed | MigrationState::Verified
    );
    split
        .owners()
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let owner = if done {
                crate::patterns::Owner::There
            } else {
                *o
            };
            (split.name(i), owner.name())
        })
        .collect()
}
