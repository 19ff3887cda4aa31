//! The public types of migrations: options, settings, errors and what STATUS, CUTOVER and
//! VERIFY report.

use std::time::Duration;

use super::conflict::ConflictPolicy;
use super::lag::Trend;
use super::state::{MigrationPhase, MigrationState};
use super::validate;

/// User name servers use with the shared migration token (`AUTH ferrite-migration <token>`).
pub const MIGRATION_USER: &str = "ferrite-migration";

/// How a tenant is moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MigrationMode {
    /// Snapshot, live change stream, brief cutover.
    #[default]
    Live,
    /// Suspend the tenant's writes, copy, switch.
    Fast,
    /// Move key patterns one at a time.
    Incremental,
    /// Snapshot, then keep the target in sync indefinitely (a warm copy) until STOP or a
    /// cutover; the target's copy stays importing (unservable) meanwhile.
    Continuous,
}

impl MigrationMode {
    pub fn name(self) -> &'static str {
        match self {
            MigrationMode::Live => "live",
            MigrationMode::Fast => "fast",
            MigrationMode::Incremental => "incremental",
            MigrationMode::Continuous => "continuous",
        }
    }

    pub fn parse(s: &str) -> Option<MigrationMode> {
        match s.to_ascii_lowercase().as_str() {
            "live" => Some(MigrationMode::Live),
            "fast" => Some(MigrationMode::Fast),
            "incremental" => Some(MigrationMode::Incremental),
            "continuous" => Some(MigrationMode::Continuous),
            _ => None,
        }
    }
}

/// How a migration ranks against the others: which queued one takes a free slot under
/// `max_concurrent` first, and its share of `max_bandwidth_bytes_per_sec` while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Low, Priority::Normal, Priority::High];

    pub fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            _ => None,
        }
    }

    /// Its weight in the bandwidth share: a high migration gets four times what a low one gets.
    pub fn weight(self) -> u64 {
        match self {
            Priority::Low => 1,
            Priority::Normal => 2,
            Priority::High => 4,
        }
    }
}

/// Which state of a dependency (`AFTER`) lets its dependents start
/// (`tenancy.migration.after_requires`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AfterRequires {
    /// The dependency has cut over.
    #[default]
    Completed,
    /// The dependency has cut over and VERIFY found both sides equal.
    Verified,
}

impl AfterRequires {
    pub fn name(self) -> &'static str {
        match self {
            AfterRequires::Completed => "completed",
            AfterRequires::Verified => "verified",
        }
    }

    pub fn parse(s: &str) -> Option<AfterRequires> {
        match s.to_ascii_lowercase().as_str() {
            "completed" => Some(AfterRequires::Completed),
            "verified" => Some(AfterRequires::Verified),
            _ => None,
        }
    }
}

/// Options of one migration (TENANT.MIGRATE arguments). Debug by hand: never prints `auth`.
#[derive(Clone)]
pub struct MigrationConfig {
    pub mode: MigrationMode,
    /// Parallel streams to the target.
    pub parallel: usize,
    /// Keys per batch.
    pub batch_size: usize,
    /// How long the migration keeps reconnecting to an unreachable target before it fails
    /// (overrides `reconnect_timeout_secs`).
    pub timeout: Option<Duration>,
    /// Password for the target (its requirepass) when no migration token is configured.
    pub auth: Option<String>,
    /// Shipping rate limit in bytes per second (0 = none).
    pub rate_bytes_per_sec: u64,
    /// The address clients are sent to after cutover (`-MOVED tenant:<id> <redirect>`), when it
    /// differs from the address this server uses to reach the target (a separate migration
    /// network, a proxy). Defaults to the target address.
    pub redirect: Option<String>,
    /// MODE continuous only: the target's copy is served (read and written) while it is synced,
    /// and this decides keys both sides changed (see [`super::conflict`]). None: the target's
    /// copy stays an import its clients cannot use.
    pub conflict: Option<ConflictPolicy>,
    /// PRIORITY: queue order and bandwidth weight.
    pub priority: Priority,
    /// AFTER: migrations that must have completed (or been verified, per
    /// `after_requires`) before this one starts.
    pub after: Vec<String>,
    /// GROUP: a name shared by migrations operated together (STATUS, PAUSE, RESUME, CANCEL and
    /// CUTOVER by group).
    pub group: Option<String>,
    /// APPROVAL: wait in `awaiting_approval` with VALIDATE's report as the plan until APPROVE
    /// (also when `require_approval` is set for every migration).
    pub approval: bool,
    /// `MODE incremental`: the key patterns, moved one at a time (`PATTERNS`), in the order
    /// that decides which pattern owns a key (see [`crate::patterns`]).
    pub patterns: Vec<Vec<u8>>,
    /// `RETENTION <secs>`: how long the old source is kept as a backup after the cutover (the
    /// new owner streams the tenant's changes back to it, so ROLLBACK is instant); `Some(0)`
    /// turns the backup off. `None`: `rollback_retention_secs`.
    pub retention: Option<Duration>,
    /// Set on the new owner only: this migration is the reverse stream that keeps the old source
    /// of import `backup_of` up to date (TENANT.IMPORT.BACKUP START), never one an operator
    /// started.
    pub backup_of: Option<String>,
}

/// What a secret shows in `{:?}`: whether it is set, never its value.
fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

impl std::fmt::Debug for MigrationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so that a new field cannot be forgotten here.
        let MigrationConfig {
            mode,
            parallel,
            batch_size,
            timeout,
            auth,
            rate_bytes_per_sec,
            redirect,
            conflict,
            priority,
            after,
            group,
            approval,
            patterns,
            retention,
            backup_of,
        } = self;
        f.debug_struct("MigrationConfig")
            .field("mode", mode)
            .field("parallel", parallel)
            .field("batch_size", batch_size)
            .field("timeout", timeout)
            .field("auth", &redacted(auth))
            .field("rate_bytes_per_sec", rate_bytes_per_sec)
            .field("redirect", redirect)
            .field("conflict", conflict)
            .field("priority", priority)
            .field("after", after)
            .field("group", group)
            .field("approval", approval)
            .field("retention", retention)
            .field("backup_of", backup_of)
            .field("patterns", &patterns.len())
            .finish()
    }
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            mode: MigrationMode::Live,
            parallel: 4,
            batch_size: 1000,
            timeout: None,
            auth: None,
            rate_bytes_per_sec: 0,
            redirect: None,
            conflict: None,
            priority: Priority::Normal,
            after: Vec::new(),
            group: None,
            approval: false,
            patterns: Vec::new(),
            retention: None,
            backup_of: None,
        }
    }
}

/// Server-wide migration settings (`[tenancy.migration]`).
/// Debug by hand: never prints `token`.
#[derive(Clone)]
pub struct MigrationSettings {
    pub enabled: bool,
    pub max_concurrent: usize,
    /// Target side: an import whose source stays silent this long is dropped.
    pub sync_timeout: Duration,
    /// Source side: how long a migration keeps reconnecting to a target that is unreachable
    /// (refusing connections, not answering, links broken) before it fails with the last error.
    /// The checkpoint is kept, so RESUME continues from it.
    pub reconnect_timeout: Duration,
    /// How long a write waits at a closed gate before `-TRYAGAIN`; also how long a cutover's
    /// drain may go without an acknowledgement before it is aborted (the gate reopens).
    pub redirect_timeout: Duration,
    /// Most undelivered changed keys a cutover accepts without FORCE.
    pub cutover_max_lag: u64,
    pub token: Option<String>,
    /// How long the source keeps its frozen copy after cutover.
    pub retention: Duration,
    /// How long the old source stays a backup after a cutover (the new owner streams the
    /// tenant's changes back so ROLLBACK is instant) unless the migration says `RETENTION`;
    /// zero: no backup.
    pub rollback_retention: Duration,
    /// How long the activation of the target may be retried before the cutover is declared
    /// failed (the tenant then waits for CUTOVER RETRY).
    pub activation_timeout: Duration,
    /// Allows TENANT.MIGRATE.DEBUG breakpoints (tests only).
    pub fault_injection: bool,
    /// Which pre-migration checks run.
    pub validation: validate::ValidationSettings,
    /// Bytes per second all running migrations ship together (0 = no limit), shared among them
    /// by the weight of their priority.
    pub max_bandwidth: u64,
    /// Every migration waits for APPROVE in `awaiting_approval` before it starts.
    pub require_approval: bool,
    /// What a dependency (`AFTER`) must reach before its dependents start.
    pub after_requires: AfterRequires,
    /// Where CUTOVER DNS sends its signed update.
    pub dns: super::dns::DnsSettings,
    /// When running migrations slow down for the source's own clients.
    pub contention: ContentionSettings,
    /// Finished migrations whose records persistence keeps (the oldest beyond are dropped;
    /// unfinished ones are always kept).
    pub history_max: usize,
}

/// Automatic contention management (`[tenancy.migration.contention]`): when this server's
/// command latency (p99 over `window`, from its own histogram) or its CPU crosses a threshold,
/// running migrations slow down, lowest priority first; they speed up again, highest first, once
/// both are back under 70% of their thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentionSettings {
    pub enabled: bool,
    /// p99 of command latency, in seconds.
    pub p99: f64,
    /// This process's CPU time over wall time, as a fraction of all cores (0.9 = 90%).
    pub cpu: f64,
    /// The window latency and CPU are measured over.
    pub window: Duration,
}

impl Default for ContentionSettings {
    fn default() -> Self {
        ContentionSettings {
            enabled: true,
            p99: 0.010,
            cpu: 0.90,
            window: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for MigrationSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let MigrationSettings {
            enabled,
            max_concurrent,
            sync_timeout,
            reconnect_timeout,
            redirect_timeout,
            cutover_max_lag,
            token,
            retention,
            rollback_retention,
            activation_timeout,
            fault_injection,
            validation,
            max_bandwidth,
            require_approval,
            after_requires,
            dns,
            contention,
            history_max,
        } = self;
        f.debug_struct("MigrationSettings")
            .field("enabled", enabled)
            .field("max_concurrent", max_concurrent)
            .field("sync_timeout", sync_timeout)
            .field("reconnect_timeout", reconnect_timeout)
            .field("redirect_timeout", redirect_timeout)
            .field("cutover_max_lag", cutover_max_lag)
            .field("token", &redacted(token))
            .field("retention", retention)
            .field("rollback_retention", rollback_retention)
            .field("activation_timeout", activation_timeout)
            .field("fault_injection", fault_injection)
            .field("validation", validation)
            .field("max_bandwidth", max_bandwidth)
            .field("require_approval", require_approval)
            .field("after_requires", after_requires)
            .field("dns", dns)
            .field("contention", contention)
            .field("history_max", history_max)
            .finish()
    }
}

impl Default for MigrationSettings {
    fn default() -> Self {
        MigrationSettings {
            enabled: true,
            max_concurrent: 5,
            sync_timeout: Duration::from_secs(3600),
            reconnect_timeout: Duration::from_secs(60),
            redirect_timeout: Duration::from_millis(5000),
            cutover_max_lag: 1000,
            token: None,
            retention: Duration::from_secs(3600),
            // In-process targets (unit tests) have no reverse stream; the server's
            // configuration turns backups on by default (`rollback_retention_secs`).
            rollback_retention: Duration::ZERO,
            activation_timeout: Duration::from_secs(30),
            fault_injection: false,
            validation: validate::ValidationSettings::default(),
            max_bandwidth: 0,
            require_approval: false,
            after_requires: AfterRequires::Completed,
            dns: Default::default(),
            contention: ContentionSettings::default(),
            history_max: DEFAULT_HISTORY_MAX,
        }
    }
}

/// Default of `history_max`.
pub const DEFAULT_HISTORY_MAX: usize = 1000;

/// Why a migration command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    #[error("migrations are disabled on this server (tenancy.migration.enabled = false)")]
    Disabled,
    #[error("no such migration '{0}'")]
    UnknownMigration(String),
    #[error("AFTER would make a cycle: {0}")]
    DependencyCycle(String),
    #[error("no migration in group '{0}'")]
    UnknownGroup(String),
    #[error("no such tenant '{0}'")]
    UnknownTenant(String),
    #[error("tenant '{tenant}' is {state}; only an active tenant can be migrated")]
    TenantNotActive { tenant: String, state: &'static str },
    #[error("tenant '{tenant}' is already being migrated ({migration})")]
    TenantBusy { tenant: String, migration: String },
    #[error("cannot migrate a tenant to the server it is on")]
    SelfTarget,
    #[error("invalid target address '{0}': use host:port")]
    BadTarget(String),
    #[error("target {addr} is unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("target {addr} refused authentication: {reason}")]
    Auth { addr: String, reason: String },
    #[error("target {addr} is not a Ferrite server (it answered: {reply})")]
    NotFerrite { addr: String, reply: String },
    #[error("target {addr} refused the import: {reason}")]
    Refused { addr: String, reason: String },
    #[error("migration {id} is {state}: cannot {op}")]
    WrongState {
        id: String,
        state: &'static str,
        op: &'static str,
    },
    #[error(
        "lag is {lag} keys, above cutover_max_lag ({max}); wait, throttle the tenant, or use FORCE"
    )]
    LagTooHigh { lag: u64, max: u64 },
    #[error(
        "{keys} large value(s) still being copied ({bytes} bytes left); wait, or use FORCE (the rest is then copied with the tenant's writes held)"
    )]
    LargeValuesPending { keys: u64, bytes: u64 },
    #[error("{0}")]
    Failed(String),
    #[error("MODE {0} is not supported by this server")]
    UnsupportedMode(&'static str),
    /// A PATTERNS list, or a pattern named in CUTOVER/VERIFY, that cannot be used.
    #[error("{0}")]
    Patterns(String),
    /// Stopped by CANCEL (or by the deletion of its tenant): not a failure.
    #[error("the migration was cancelled")]
    Cancelled,
    /// Ended by TENANT.MIGRATE.STOP (a continuous sync): not a failure. Internal: what STOP
    /// answers is a [`StopResult`].
    #[error("the sync was stopped")]
    Stopped,
    /// The migration's task did not answer in time (never expected: it answers every request
    /// at once; this bounds the wait if it ever did not).
    #[error("migration {0} did not answer in time; try again")]
    NotResponding(String),
}

/// What TENANT.MIGRATE.STATUS reports.
#[derive(Debug, Clone)]
pub struct MigrationStatus {
    pub id: String,
    pub tenant: String,
    pub source: String,
    pub target: String,
    pub mode: MigrationMode,
    pub state: MigrationState,
    pub phase: MigrationPhase,
    /// Percent, 0–100.
    pub progress: f64,
    pub keys_synced: u64,
    /// Keys the target has acknowledged in all, changes shipped again included (what a retry or
    /// a reconnect re-sent shows here, not in `keys_synced`).
    pub keys_shipped: u64,
    pub keys_total: u64,
    pub bytes_synced: u64,
    pub lag_keys: u64,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    pub lag_trend: Trend,
    pub keys_per_sec: f64,
    /// Unix ms.
    pub started_at: u64,
    pub estimated_completion: Option<u64>,
    pub completed_at: Option<u64>,
    pub downtime_ms: Option<f64>,
    /// What is wrong: the failure of a failed migration, a refused cutover, or, while the
    /// target is unreachable, that (with its cause, since when, and when it gives up).
    pub error: Option<String>,
    /// The latest error met, even if since recovered from (a stream's lost connection, a
    /// refused cutover), and when it began (Unix ms).
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    /// How long the target has been unreachable (0 while every link works).
    pub unreachable_seconds: f64,
    pub parallel: usize,
    pub batch_size: usize,
    pub import_id: Option<String>,
    /// Unix ms of a scheduled cutover.
    pub scheduled_cutover: Option<u64>,
    /// The fault-injection breakpoint the coordinator is parked at (tests only).
    pub parked_at: Option<&'static str>,
    /// Seconds since the migration started (until it finished).
    pub duration_seconds: f64,
    /// Bytes sent to the target, including resends after reconnects.
    pub bytes_sent: u64,
    pub reconnects: u64,
    /// Seconds until the target catches up at the current trend (lag shrinking; 0 when caught
    /// up); None while the lag grows or holds, or when nothing is being synced.
    pub catch_up_seconds: Option<f64>,
    /// What STOP left on the target (a stopped continuous sync).
    pub stop: Option<StopResult>,
    pub conflict_policy: Option<ConflictPolicy>,
    /// Conflicts the target resolved (as of its last heartbeat), and the latest keys involved.
    pub conflicts: u64,
    pub conflict_sample: Vec<Vec<u8>>,
    /// Bytes per second sent to the target over the last few seconds.
    pub bytes_per_sec: f64,
    pub priority: Priority,
    pub group: Option<String>,
    /// Its place in the queue for a slot (1 = next), while it waits for one.
    pub queue_position: Option<usize>,
    /// The dependencies (`AFTER`) it still waits for (state `waiting`).
    pub waiting_for: Vec<String>,
    /// Bytes per second it may ship now: the lower of its RATE and its share of
    /// `max_bandwidth_bytes_per_sec` (0 = no limit).
    pub rate_limit: u64,
    /// Whether it needs an approval, and the decision once made.
    pub approval: Option<Approval>,
    /// VALIDATE's report, shown while it awaits approval: (check, detail), `result` last.
    pub plan: Vec<(String, String)>,
    /// What CUTOVER DNS did: the record set, or why it could not be.
    pub dns: Option<String>,
    /// The share of its speed contention management leaves it (1.0: not slowed down).
    pub throttle: f64,
    /// `MODE incremental`: each pattern, in order, and where its keys are served
    /// (`here`, `gated`, `handing_over`, `moved`).
    pub patterns: Vec<(String, &'static str)>,
    /// After a cutover with a backup: the reverse stream from the new owner (see
    /// [`BackupStatus`]).
    pub backup: Option<BackupStatus>,
    /// On the new owner: the import whose old source this migration keeps up to date.
    pub backup_of: Option<String>,
}

/// The old source as a backup after a cutover, as its STATUS shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupStatus {
    /// `starting` (the new owner copies the tenant back), `streaming`, `broken` (see `error`),
    /// `ended` (FINALIZE, the retention, or a later migration of the tenant), `rolled_back`.
    pub state: &'static str,
    /// The new owner's migration that streams the changes back.
    pub migration_id: Option<String>,
    pub lag_seconds: f64,
    pub lag_records: u64,
    pub lag_bytes: u64,
    /// Unix ms when the retention ends the backup.
    pub until_ms: u64,
    pub error: Option<String>,
    /// A ROLLBACK's answer: how long the new owner paused the tenant's writes.
    pub downtime_ms: Option<f64>,
}

impl BackupStatus {
    pub const STATES: [&'static str; 5] =
        ["starting", "streaming", "broken", "ended", "rolled_back"];

    /// Whether the backup is over (nothing more will be streamed).
    pub fn is_over(&self) -> bool {
        matches!(self.state, "ended" | "rolled_back")
    }
}

/// How TENANT.MIGRATE.STOP ends a continuous sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Finish the batches under way, bring the target to one confirmed point, then stop.
    Graceful,
    /// Stop now; report what the target may be missing.
    Immediate,
}

impl StopMode {
    pub fn name(self) -> &'static str {
        match self {
            StopMode::Graceful => "graceful",
            StopMode::Immediate => "immediate",
        }
    }
}

/// Most key names a STOP IMMEDIATE lists among those the target may be missing.
pub const MISSING_SAMPLE: usize = 100;

/// What STOP did and what the target's copy holds.
#[derive(Debug, Clone)]
pub struct StopResult {
    pub mode: StopMode,
    /// Graceful: the instant (Unix ms) at which the target's copy equals the source's, confirmed
    /// by the target's key count and digest.
    pub consistent_as_of: Option<u64>,
    /// Graceful: key count and combined digest of the source at that instant (what the target
    /// confirmed).
    pub keys: u64,
    pub digest: Option<u64>,
    /// Immediate: changed keys whose latest change the target may not have (not shipped, or
    /// shipped and not acknowledged), their bytes, and up to [`MISSING_SAMPLE`] of their names.
    pub missing_keys: u64,
    pub missing_bytes: u64,
    pub missing_sample: Vec<Vec<u8>>,
    /// Whether the target confirmed it keeps the copy as a stopped import (else its reaper
    /// drops the import after `sync_timeout_secs`), with the reason when it did not.
    pub target_kept: Result<(), String>,
}

/// An approval a migration needed, and who decided it and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// `pending`, `approved` or `rejected`.
    pub decision: &'static str,
    pub by: Option<String>,
    /// Unix ms.
    pub at_ms: Option<u64>,
    pub reason: Option<String>,
}

impl Approval {
    /// Waiting for APPROVE or REJECT: nobody has decided yet.
    pub fn pending() -> Approval {
        Approval {
            decision: "pending",
            by: None,
            at_ms: None,
            reason: None,
        }
    }
}

/// Result of a cutover.
#[derive(Debug, Clone)]
pub struct CutoverResult {
    pub status: &'static str,
    /// Measured time the tenant's writes were paused, in milliseconds.
    pub downtime_ms: f64,
    pub keys_migrated: u64,
}

/// Result of VERIFY.
#[derive(Debug, Clone)]
pub struct VerifyResult {
    pub keys_source: u64,
    pub keys_target: u64,
    pub checksum_match: bool,
    /// Sampled keys that matched value by value, and how many were compared.
    pub sample_matched: u64,
    pub sample_compared: u64,
    /// Sampled keys skipped because the target changed them after cutover.
    pub sample_skipped: u64,
    pub mismatched_buckets: Vec<usize>,
    /// `MODE incremental`: the patterns whose keys differ (compared by key count and digest).
    pub mismatched_patterns: Vec<String>,
    pub status: &'static str,
}

/// Handle returned by [`MigrationManager::migrate`].
#[derive(Debug, Clone)]
pub struct MigrationHandle {
    pub id: String,
    pub state: MigrationState,
    pub progress: f64,
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret() {
        let config = MigrationConfig {
            auth: Some("sekrit-target-pass".into()),
            ..MigrationConfig::default()
        };
        let settings = MigrationSettings {
            token: Some("sekrit-migration-token".into()),
            ..MigrationSettings::default()
        };
        let shown = format!("{config:?} {settings:#?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        assert_eq!(shown.matches("<redacted>").count(), 2, "{shown}");
    }
}
