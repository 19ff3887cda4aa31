//! Live tenant migration.
//!
//! A [`MigrationManager`] on the source streams one tenant's keyspace to a target Ferrite: it
//! switches on change capture, walks the keyspace by cursor and ships it in checksummed batches
//! over `PARALLEL` pipelined connections ([`wire`]), then ships changed keys as they happen.
//! At cutover it gates that tenant's writes, drains the last changes, has the target confirm
//! (same key count and digest), marks the tenant `moved` here and activates it there. The target
//! side is an [`ImportManager`]. Both keep digests, so [`MigrationManager::verify`] compares
//! checksums in O(buckets) plus a sample of keys value by value.
//!
//! ```no_run
//! # async fn demo(manager: &ferrite_tenancy::MigrationManager) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use ferrite_tenancy::{MigrationConfig, MigrationMode, MigrationPhase};
//!
//! let migration = manager
//!     .migrate("acme-corp", "target-cluster:6379", MigrationConfig {
//!         mode: MigrationMode::Live,
//!         parallel: 4,
//!         batch_size: 1000,
//!         ..Default::default()
//!     })
//!     .await?;
//! loop {
//!     let status = manager.status(&migration.id).await?;
//!     if status.phase == MigrationPhase::LiveSync && status.lag_keys < 100 {
//!         break;
//!     }
//!     tokio::time::sleep(Duration::from_millis(100)).await;
//! }
//! let result = manager.cutover(&migration.id).await?;
//! println!("downtime: {} ms", result.downtime_ms);
//! assert!(manager.verify(&migration.id).await?.checksum_match);
//! # Ok(()) }
//! ```
//! A doctest that runs this against two in-process servers lives in the crate docs.

mod cutover;
pub mod import;
pub mod lag;
mod source;
pub mod state;
mod stream;
pub mod validate;
mod verify;
pub mod wire;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ferrite_client::{ClientError, ConnectOptions, Connection};
use ferrite_protocol::frame::Frame;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, Semaphore, oneshot};

pub use cutover::BREAKPOINTS;
pub use import::{Activation, BeginRequest, Import, ImportError, ImportManager, ImportState};
pub use lag::Trend;
pub use state::{MigrationPhase, MigrationState};

use crate::registry::Registry;
use crate::tenant::{Tenant, TenantState};

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
}

impl MigrationMode {
    pub fn name(self) -> &'static str {
        match self {
            MigrationMode::Live => "live",
            MigrationMode::Fast => "fast",
            MigrationMode::Incremental => "incremental",
        }
    }

    pub fn parse(s: &str) -> Option<MigrationMode> {
        match s.to_ascii_lowercase().as_str() {
            "live" => Some(MigrationMode::Live),
            "fast" => Some(MigrationMode::Fast),
            "incremental" => Some(MigrationMode::Incremental),
            _ => None,
        }
    }
}

/// Options of one migration (TENANT.MIGRATE arguments).
#[derive(Debug, Clone)]
pub struct MigrationConfig {
    pub mode: MigrationMode,
    /// Parallel streams to the target.
    pub parallel: usize,
    /// Keys per batch.
    pub batch_size: usize,
    /// How long the migration may go without reaching the target before it fails (overrides
    /// `sync_timeout_secs`).
    pub timeout: Option<Duration>,
    /// Password for the target (its requirepass) when no migration token is configured.
    pub auth: Option<String>,
    /// Shipping rate limit in bytes per second (0 = none).
    pub rate_bytes_per_sec: u64,
    /// The address clients are sent to after cutover (`-MOVED tenant:<id> <redirect>`), when it
    /// differs from the address this server uses to reach the target (a separate migration
    /// network, a proxy). Defaults to the target address.
    pub redirect: Option<String>,
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
        }
    }
}

/// Server-wide migration settings (`[tenancy.migration]`).
#[derive(Debug, Clone)]
pub struct MigrationSettings {
    pub enabled: bool,
    pub max_concurrent: usize,
    pub sync_timeout: Duration,
    /// Most undelivered changed keys a cutover accepts without FORCE.
    pub cutover_max_lag: u64,
    pub token: Option<String>,
    /// How long the source keeps its frozen copy after cutover.
    pub retention: Duration,
    /// How long the activation of the target may be retried before the cutover is declared
    /// failed (the tenant then waits for CUTOVER RETRY).
    pub activation_timeout: Duration,
    /// Allows TENANT.MIGRATE.DEBUG breakpoints (tests only).
    pub fault_injection: bool,
    /// Which pre-migration checks run.
    pub validation: validate::ValidationSettings,
}

impl Default for MigrationSettings {
    fn default() -> Self {
        MigrationSettings {
            enabled: true,
            max_concurrent: 5,
            sync_timeout: Duration::from_secs(3600),
            cutover_max_lag: 1000,
            token: None,
            retention: Duration::from_secs(3600),
            activation_timeout: Duration::from_secs(30),
            fault_injection: false,
            validation: validate::ValidationSettings::default(),
        }
    }
}

/// Why a migration command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    #[error("migrations are disabled on this server (tenancy.migration.enabled = false)")]
    Disabled,
    #[error("no such migration '{0}'")]
    UnknownMigration(String),
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
    #[error("{0}")]
    Failed(String),
    #[error("MODE {0} is not supported by this server")]
    UnsupportedMode(&'static str),
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
    pub error: Option<String>,
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
    pub status: &'static str,
}

/// Handle returned by [`MigrationManager::migrate`].
#[derive(Debug, Clone)]
pub struct MigrationHandle {
    pub id: String,
    pub state: MigrationState,
    pub progress: f64,
}

/// Mutable bookkeeping of a migration.
#[derive(Debug)]
struct Progress {
    state: MigrationState,
    phase: MigrationPhase,
    error: Option<String>,
    import_id: Option<String>,
    started_at: u64,
    started: Instant,
    completed_at: Option<u64>,
    finished: Option<Instant>,
    downtime_ms: Option<f64>,
    keys_migrated: u64,
}

struct CutoverRequest {
    force: bool,
    /// Made by a scheduled cutover (UNSCHEDULE withdraws only those).
    scheduled: bool,
    reply: oneshot::Sender<Result<CutoverResult, MigrationError>>,
}

/// A cutover planned for a given time.
#[derive(Debug, Clone, Copy)]
struct Scheduled {
    at_ms: u64,
    force: bool,
}

/// One migration (source side).
pub struct Migration {
    pub id: String,
    /// How to reach the target (fixed when the migration is created).
    connect: ConnectOptions,
    pub tenant: Arc<Tenant>,
    pub source: String,
    pub target: String,
    /// Where clients are sent after cutover (usually the target address).
    pub redirect: String,
    pub mode: MigrationMode,
    cfg: Mutex<MigrationConfig>,
    progress: Mutex<Progress>,
    keys_total: AtomicU64,
    keys_synced: AtomicU64,
    bytes_synced: AtomicU64,
    bytes_sent: AtomicU64,
    reconnects: AtomicU64,
    lag: Mutex<lag::LagTracker>,
    paused: AtomicBool,
    cancel: AtomicBool,
    wake: Notify,
    cutover: Mutex<Option<CutoverRequest>>,
    /// Signalled when the coordinator task ends.
    finished: Notify,
    task_done: AtomicBool,
    checkpoint: Mutex<source::Checkpoint>,
    /// When the cutover closed the gate (for the downtime of a retried activation).
    gate_closed_at: Mutex<Option<Instant>>,
    frozen_released: AtomicBool,
    schedule: Mutex<Option<Scheduled>>,
    schedule_generation: AtomicU64,
    /// The coordinator is running a cutover that a schedule requested.
    scheduled_cutover_running: AtomicBool,
    /// Bytes of the large value being shipped in chunks not yet read (0 = none): lag.
    large_bytes_left: AtomicU64,
    /// Read from the keyspace into batch builders, not yet queued: lag too.
    unsealed_keys: AtomicU64,
    unsealed_bytes: AtomicU64,
    unsealed_since_ms: AtomicU64,
    /// Creation order on this server (ids sort as text, "_10" before "_2").
    seq: u64,
    breakpoints: Mutex<HashSet<&'static str>>,
    parked: Mutex<Option<&'static str>>,
    release: Notify,
}

impl Migration {
    pub fn state(&self) -> MigrationState {
        self.progress.lock().state
    }

    /// Moves to `next` if the lifecycle allows it.
    fn transition(&self, next: MigrationState, op: &'static str) -> Result<(), MigrationError> {
        let mut p = self.progress.lock();
        if !p.state.can_become(next) {
            return Err(MigrationError::WrongState {
                id: self.id.clone(),
                state: p.state.name(),
                op,
            });
        }
        p.state = next;
        Ok(())
    }

    fn set_phase(&self, phase: MigrationPhase) {
        self.progress.lock().phase = phase;
    }

    fn settings(&self) -> MigrationConfig {
        self.cfg.lock().clone()
    }
}

struct Inner {
    registry: Arc<Registry>,
    imports: Arc<ImportManager>,
    settings: RwLock<MigrationSettings>,
    migrations: Mutex<BTreeMap<String, Arc<Migration>>>,
    slots: Arc<Semaphore>,
    /// Address clients use to reach this server (for self-migration checks and STATUS).
    self_addr: String,
    run_id: String,
    id_prefix: String,
    counter: AtomicU64,
    /// Tenant bytes per second the last complete snapshot from this server achieved: what
    /// VALIDATE's estimate uses besides the measured link speed.
    snapshot_rate: Mutex<Option<f64>>,
}

/// Runs this server's migrations and imports.
#[derive(Clone)]
pub struct MigrationManager {
    inner: Arc<Inner>,
}

impl MigrationManager {
    pub fn new(
        registry: Arc<Registry>,
        settings: MigrationSettings,
        self_addr: String,
        run_id: String,
    ) -> MigrationManager {
        let imports = Arc::new(ImportManager::new(registry.clone(), run_id.clone()));
        // Time-based so that ids are never reused across restarts, plus a piece of the random
        // run id so that two servers started in the same millisecond differ (a reverse
        // migration's id must not equal the forward one's).
        let id_prefix = format!(
            "{}{}",
            radix36(ferrite_storage::now_ms()),
            run_id.get(..4).unwrap_or("")
        );
        MigrationManager {
            inner: Arc::new(Inner {
                registry,
                imports,
                slots: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
                settings: RwLock::new(settings),
                migrations: Mutex::new(BTreeMap::new()),
                self_addr,
                run_id,
                id_prefix,
                counter: AtomicU64::new(1),
                snapshot_rate: Mutex::new(None),
            }),
        }
    }

    pub fn imports(&self) -> &Arc<ImportManager> {
        &self.inner.imports
    }

    pub fn settings(&self) -> MigrationSettings {
        self.inner.settings.read().clone()
    }

    /// Applies new settings (CONFIG SET). A larger `max_concurrent` frees queued migrations.
    pub fn update_settings(&self, s: MigrationSettings) {
        let old = self.inner.settings.read().max_concurrent;
        if s.max_concurrent > old {
            self.inner.slots.add_permits(s.max_concurrent - old);
        } else if s.max_concurrent < old {
            let shrink = old - s.max_concurrent;
            let slots = self.inner.slots.clone();
            tokio::spawn(async move {
                if let Ok(p) = slots.acquire_many(shrink as u32).await {
                    p.forget();
                }
            });
        }
        *self.inner.settings.write() = s;
    }

    fn find(&self, id: &str) -> Result<Arc<Migration>, MigrationError> {
        self.inner
            .migrations
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| MigrationError::UnknownMigration(id.to_string()))
    }

    /// The unfinished migration of `tenant`, if any.
    pub fn running_for(&self, tenant: &str) -> Option<String> {
        self.inner
            .migrations
            .lock()
            .values()
            .find(|m| {
                m.tenant.id() == tenant
                    && matches!(
                        m.state(),
                        MigrationState::Queued
                            | MigrationState::Syncing
                            | MigrationState::LiveSync
                            | MigrationState::Paused
                            | MigrationState::CuttingOver
                    )
            })
            .map(|m| m.id.clone())
    }

    /// Connection options for reaching a target.
    pub(crate) fn connect_options(&self, target: &str, cfg: &MigrationConfig) -> ConnectOptions {
        let mut o = ConnectOptions::new(target)
            .connect_timeout(Duration::from_secs(3))
            .command_timeout(Duration::from_secs(30))
            .name("ferrite-migration");
        // An AUTH given with the command is what the operator chose for this target; the
        // cluster's token is the default.
        if let Some(pw) = &cfg.auth {
            o = o.password(pw.clone());
        } else if let Some(token) = &self.inner.settings.read().token {
            o = o.tenant(MIGRATION_USER, token.clone());
        }
        o
    }

    /// Connects to a target and checks that it is a compatible Ferrite that can take the
    /// tenant. Returns the connection and the target's CHECK reply.
    async fn connect_checked(
        &self,
        tenant: &str,
        target: &str,
        cfg: &MigrationConfig,
    ) -> Result<(Connection, Vec<(String, Frame)>), MigrationError> {
        let opts = self.connect_options(target, cfg);
        let mut conn = Connection::connect(opts).await.map_err(|e| match e {
            ClientError::Server(msg)
                if msg.contains("WRONGPASS") || msg.contains("NOAUTH") || msg.contains("AUTH") =>
            {
                MigrationError::Auth {
                    addr: target.into(),
                    reason: msg,
                }
            }
            other => MigrationError::Unreachable {
                addr: target.into(),
                reason: other.to_string(),
            },
        })?;
        let reply = conn
            .cmd(&[
                "TENANT.IMPORT.CHECK",
                tenant,
                &wire::WIRE_VERSION.to_string(),
                &self.inner.run_id,
            ])
            .await
            .map_err(|e| classify_target_error(target, e))?;
        let pairs =
            ferrite_client::value::as_pairs(&reply).map_err(|e| MigrationError::NotFerrite {
                addr: target.into(),
                reply: e.to_string(),
            })?;
        Ok((conn, pairs))
    }

    /// Starts migrating `tenant` to `target`. Validation errors (unknown tenant, unreachable or
    /// incompatible target, wrong password, migrating to itself, a second migration) are returned
    /// here and leave nothing behind.
    pub async fn migrate(
        &self,
        tenant: &str,
        target: &str,
        cfg: MigrationConfig,
    ) -> Result<MigrationHandle, MigrationError> {
        let settings = self.settings();
        if !settings.enabled {
            return Err(MigrationError::Disabled);
        }
        if cfg.mode == MigrationMode::Incremental {
            return Err(MigrationError::UnsupportedMode("incremental"));
        }
        let t = self
            .inner
            .registry
            .get(tenant)
            .ok_or_else(|| MigrationError::UnknownTenant(tenant.into()))?;
        if t.state() != TenantState::Active {
            return Err(MigrationError::TenantNotActive {
                tenant: tenant.into(),
                state: t.state().name(),
            });
        }
        if let Some(m) = self.running_for(tenant) {
            return Err(MigrationError::TenantBusy {
                tenant: tenant.into(),
                migration: m,
            });
        }
        let target = normalize_addr(target)?;
        if same_endpoint(&target, &self.inner.self_addr) {
            return Err(MigrationError::SelfTarget);
        }
        let (control, check) = self.connect_checked(tenant, &target, &cfg).await?;
        self.run_validation(&t, &target, &check, &cfg, false)
            .await?;
        self.supersede_failed(tenant).await;

        let n = self.inner.counter.fetch_add(1, Relaxed);
        let id = format!("mig_{}_{n}", self.inner.id_prefix);
        let now = ferrite_storage::now_ms();
        let connect = self.connect_options(&target, &cfg);
        let redirect = match &cfg.redirect {
            Some(r) => normalize_addr(r)?,
            None => target.clone(),
        };
        let mig = Arc::new(Migration {
            id: id.clone(),
            connect,
            redirect,
            tenant: t.clone(),
            source: self.inner.self_addr.clone(),
            target: target.clone(),
            mode: cfg.mode,
            cfg: Mutex::new(cfg),
            progress: Mutex::new(Progress {
                state: MigrationState::Queued,
                phase: MigrationPhase::Queued,
                error: None,
                import_id: None,
                started_at: now,
                started: Instant::now(),
                completed_at: None,
                finished: None,
                downtime_ms: None,
                keys_migrated: 0,
            }),
            keys_total: AtomicU64::new(t.keyspace().len()),
            keys_synced: AtomicU64::new(0),
            bytes_synced: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            lag: Mutex::new(lag::LagTracker::default()),
            paused: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
            wake: Notify::new(),
            cutover: Mutex::new(None),
            finished: Notify::new(),
            task_done: AtomicBool::new(false),
            checkpoint: Mutex::new(source::Checkpoint::default()),
            gate_closed_at: Mutex::new(None),
            frozen_released: AtomicBool::new(false),
            schedule: Mutex::new(None),
            schedule_generation: AtomicU64::new(0),
            scheduled_cutover_running: AtomicBool::new(false),
            large_bytes_left: AtomicU64::new(0),
            unsealed_keys: AtomicU64::new(0),
            unsealed_bytes: AtomicU64::new(0),
            unsealed_since_ms: AtomicU64::new(0),
            seq: n,
            breakpoints: Mutex::new(HashSet::new()),
            parked: Mutex::new(None),
            release: Notify::new(),
        });
        {
            // Re-check under the lock so two concurrent MIGRATEs of one tenant cannot both pass.
            let mut all = self.inner.migrations.lock();
            if let Some(other) = all.values().find(|m| {
                m.tenant.id() == tenant && m.state().is_active()
                    || m.tenant.id() == tenant && m.state() == MigrationState::Queued
            }) {
                return Err(MigrationError::TenantBusy {
                    tenant: tenant.into(),
                    migration: other.id.clone(),
                });
            }
            all.insert(id.clone(), mig.clone());
        }
        tracing::info!(migration = %id, tenant, target = %target, "migration created");
        let this = self.clone();
        let m = mig.clone();
        tokio::spawn(async move { source::run(this, m, Some(control)).await });
        // With a free slot the coordinator starts at once: let the reply say so rather than
        // "queued" (bounded: a busy machine still gets an answer).
        let deadline = Instant::now() + Duration::from_millis(200);
        while mig.state() == MigrationState::Queued
            && self.inner.slots.available_permits() > 0
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let st = mig.state();
        Ok(MigrationHandle {
            id,
            state: st,
            progress: 0.0,
        })
    }

    /// Status of one migration.
    pub async fn status(&self, id: &str) -> Result<MigrationStatus, MigrationError> {
        let m = self.find(id)?;
        Ok(self.snapshot(&m))
    }

    /// Status of every migration, oldest first.
    pub fn status_all(&self) -> Vec<MigrationStatus> {
        let mut all: Vec<_> = self.inner.migrations.lock().values().cloned().collect();
        all.sort_by_key(|m| m.seq);
        all.iter().map(|m| self.snapshot(m)).collect()
    }

    fn snapshot(&self, m: &Migration) -> MigrationStatus {
        let p = self.progress_copy(m);
        let ks = m.tenant.keyspace();
        // Lock-free: STATUS must not contend with the tenant's commands (or deadlock inside EXEC).
        // A failed migration keeps its change capture and queues (its checkpoint): its lag is
        // what a retry has left to ship.
        let kept = p.state.is_active() || p.state == MigrationState::Failed;
        let tracking = kept.then(|| ks.tracking_lag_relaxed());
        let now = ferrite_storage::now_ms();
        // After the snapshot, lag is everything the target does not hold yet: changes not read,
        // batches not acknowledged, and the unread rest of a large value being chunked.
        let live = kept
            && match p.state {
                // Stopped: its phase says nothing more; the checkpoint says how far it got.
                MigrationState::Failed => m.checkpoint.lock().snapshot_done,
                _ => !matches!(
                    p.phase,
                    MigrationPhase::Snapshot | MigrationPhase::Connecting | MigrationPhase::Queued
                ),
            };
        let flight = if live {
            let mut f = stream::in_flight(&m.checkpoint.lock().streams);
            let unsealed = m.unsealed_keys.load(Relaxed);
            if unsealed > 0 {
                f.keys += unsealed;
                f.bytes += m.unsealed_bytes.load(Relaxed);
                let since = m.unsealed_since_ms.load(Relaxed);
                f.oldest_ms = Some(f.oldest_ms.map_or(since, |t| t.min(since)));
            }
            f
        } else {
            stream::InFlight::default()
        };
        let large = if live {
            m.large_bytes_left.load(Relaxed)
        } else {
            0
        };
        let (lag_keys, lag_bytes, lag_seconds) = match tracking {
            Some(l) => {
                let oldest = match (l.oldest_ms, flight.oldest_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let bytes = l.bytes + flight.bytes + large;
                // Chunks of a large value carry bytes but count no key of their own: while any
                // are unacknowledged, at least that key is behind.
                let keys = l.keys + flight.keys + u64::from(large > 0);
                (
                    if bytes > 0 { keys.max(1) } else { keys },
                    bytes,
                    oldest.map_or(0.0, |o| now.saturating_sub(o) as f64 / 1000.0),
                )
            }
            None => (0, 0, 0.0),
        };
        let acked = m.keys_synced.load(Relaxed);
        // keys_total: the tenant's keys (at the start while the snapshot runs, as they are now
        // afterwards); keys_synced: how many of them the target holds up to date. Live changes
        // re-ship keys, so the acknowledged count alone would pass the total.
        let (keys_total, keys_synced) = match p.state {
            MigrationState::Completed | MigrationState::Verified => {
                (p.keys_migrated, p.keys_migrated)
            }
            _ if live => {
                let total = ks.len();
                (total, total.saturating_sub(lag_keys))
            }
            _ => {
                let total = m.keys_total.load(Relaxed);
                (total, acked.min(total))
            }
        };
        let (rate, trend, lag_rate) = {
            let mut lt = m.lag.lock();
            lt.sample(lag_keys, acked);
            (lt.keys_per_sec(), lt.trend(), lt.lag_rate())
        };
        let progress = match p.state {
            MigrationState::Completed | MigrationState::Verified => 100.0,
            MigrationState::Queued => 0.0,
            // Stopped short: how far the copy got, never "done".
            MigrationState::Failed | MigrationState::Cancelled => {
                if keys_total == 0 {
                    0.0
                } else {
                    (keys_synced as f64 / keys_total as f64 * 100.0).min(99.0)
                }
            }
            _ => match p.phase {
                MigrationPhase::Snapshot | MigrationPhase::Connecting | MigrationPhase::Queued => {
                    if keys_total == 0 {
                        0.0
                    } else {
                        (keys_synced as f64 / keys_total as f64 * 100.0).min(99.0)
                    }
                }
                _ if lag_keys == 0 => 100.0,
                _ => {
                    let base = keys_total.max(1) as f64;
                    (100.0 * base / (base + lag_keys as f64)).min(99.9)
                }
            },
        };
        let estimated_completion = match (p.state, p.phase) {
            (MigrationState::Syncing, MigrationPhase::Snapshot) if rate > 0.0 => {
                let left = keys_total.saturating_sub(keys_synced) as f64;
                Some(now + (left / rate * 1000.0) as u64)
            }
            (MigrationState::LiveSync, _) if lag_keys == 0 => Some(now),
            (MigrationState::LiveSync, _) if lag_rate < 0.0 => {
                Some(now + (lag_keys as f64 / -lag_rate * 1000.0) as u64)
            }
            (MigrationState::Completed | MigrationState::Verified, _) => p.completed_at,
            _ => None,
        };
        let cfg = m.settings();
        let duration = match p.finished {
            Some(f) => f.duration_since(p.started),
            None => p.started.elapsed(),
        };
        MigrationStatus {
            id: m.id.clone(),
            tenant: m.tenant.id().to_string(),
            source: m.source.clone(),
            target: m.target.clone(),
            mode: m.mode,
            state: p.state,
            phase: p.phase,
            progress,
            keys_synced,
            keys_shipped: acked,
            keys_total,
            bytes_synced: m.bytes_synced.load(Relaxed),
            lag_keys,
            lag_bytes,
            lag_seconds,
            lag_trend: trend,
            keys_per_sec: rate,
            started_at: p.started_at,
            estimated_completion,
            completed_at: p.completed_at,
            downtime_ms: p.downtime_ms,
            error: p.error,
            parallel: cfg.parallel,
            batch_size: cfg.batch_size,
            import_id: p.import_id,
            scheduled_cutover: m.schedule.lock().map(|s| s.at_ms),
            parked_at: *m.parked.lock(),
            duration_seconds: duration.as_secs_f64(),
            bytes_sent: m.bytes_sent.load(Relaxed),
            reconnects: m.reconnects.load(Relaxed),
        }
    }

    fn progress_copy(&self, m: &Migration) -> Progress {
        let p = m.progress.lock();
        Progress {
            state: p.state,
            phase: p.phase,
            error: p.error.clone(),
            import_id: p.import_id.clone(),
            started_at: p.started_at,
            started: p.started,
            completed_at: p.completed_at,
            finished: p.finished,
            downtime_ms: p.downtime_ms,
            keys_migrated: p.keys_migrated,
        }
    }

    /// Stops shipping; changes keep being captured.
    pub async fn pause(&self, id: &str) -> Result<(), MigrationError> {
        let m = self.find(id)?;
        m.transition(MigrationState::Paused, "pause")?;
        m.paused.store(true, Relaxed);
        m.wake.notify_waiters();
        Ok(())
    }

    /// Resumes shipping after PAUSE; on a failed migration, retries it from its checkpoint.
    pub async fn resume(&self, id: &str) -> Result<(), MigrationError> {
        let m = self.find(id)?;
        if m.state() == MigrationState::Failed {
            return self.retry(&m);
        }
        if m.state() != MigrationState::Paused {
            return Err(MigrationError::WrongState {
                id: m.id.clone(),
                state: m.state().name(),
                op: "resume",
            });
        }
        let next = if m.progress.lock().phase == MigrationPhase::Snapshot {
            MigrationState::Syncing
        } else {
            MigrationState::LiveSync
        };
        m.transition(next, "resume")?;
        m.paused.store(false, Relaxed);
        m.wake.notify_waiters();
        Ok(())
    }

    /// Restarts a failed migration from its checkpoint (same import on the target when it still
    /// has it: only what was not acknowledged is sent again).
    fn retry(&self, m: &Arc<Migration>) -> Result<(), MigrationError> {
        if m.tenant.state() != TenantState::Active {
            return Err(MigrationError::WrongState {
                id: m.id.clone(),
                state: "failed after hand-over",
                op: "resume (use TENANT.MIGRATE.CUTOVER <id> RETRY)",
            });
        }
        if !m.task_done.load(Relaxed) {
            return Err(MigrationError::WrongState {
                id: m.id.clone(),
                state: "failed (still stopping)",
                op: "resume",
            });
        }
        if let Some(other) = self.running_for(m.tenant.id()) {
            return Err(MigrationError::TenantBusy {
                tenant: m.tenant.id().into(),
                migration: other,
            });
        }
        m.transition(MigrationState::Queued, "retry")?;
        m.set_phase(MigrationPhase::Queued);
        m.paused.store(false, Relaxed);
        m.cancel.store(false, Relaxed);
        tracing::info!(migration = %m.id, "retrying from the checkpoint");
        let this = self.clone();
        let mm = m.clone();
        tokio::spawn(async move { source::run(this, mm, None).await });
        Ok(())
    }

    /// Cancels a migration before cutover: the source stays the owner, untouched, and the target
    /// drops everything it staged. On a migration whose activation was never confirmed, the
    /// target is asked to drop the import; only if it does does the source take the tenant back.
    pub async fn cancel(&self, id: &str) -> Result<(), MigrationError> {
        let m = self.find(id)?;
        let st = m.state();
        if !st.can_become(MigrationState::Cancelled) {
            return Err(MigrationError::WrongState {
                id: m.id.clone(),
                state: st.name(),
                op: "cancel",
            });
        }
        self.unschedule_cutover(id).ok();
        m.cancel.store(true, Relaxed);
        m.wake.notify_waiters();
        m.release.notify_waiters();
        if st == MigrationState::Failed || m.task_done.load(Relaxed) {
            // No coordinator is running: clean up here.
            let handed_over = m.tenant.state() == TenantState::Moved;
            if let Some(refusal) = source::abort_target(self, &m).await {
                if handed_over && refusal.contains("is active") {
                    // The target did activate: the migration actually completed.
                    let keys = m.tenant.keyspace().len();
                    cutover::complete(&m, keys, 0.0);
                    source::release_checkpoint(&m);
                    return Err(MigrationError::WrongState {
                        id: m.id.clone(),
                        state: "completed (the target confirmed it owns the tenant)",
                        op: "cancel",
                    });
                }
                if handed_over {
                    return Err(MigrationError::Failed(format!(
                        "cannot cancel: the target did not drop the import ({refusal}); the tenant stays handed over"
                    )));
                }
            }
            if handed_over {
                m.tenant.set_state(TenantState::Active);
                if let Err(e) = self.inner.registry.persist(&m.tenant) {
                    m.tenant.set_moved(&m.redirect);
                    return Err(MigrationError::Failed(format!(
                        "the target dropped the import but the tenant could not be taken back: {e}"
                    )));
                }
                if m.tenant.gate().is_closed() {
                    m.tenant.gate().open();
                }
            }
            m.tenant.keyspace().lock_async().await.stop_tracking();
            source::release_checkpoint(&m);
            m.transition(MigrationState::Cancelled, "cancel")?;
            m.set_phase(MigrationPhase::Stopped);
            return Ok(());
        }
        let wait = m.finished.notified();
        tokio::pin!(wait);
        wait.as_mut().enable();
        if !m.task_done.load(Relaxed) {
            let _ = tokio::time::timeout(Duration::from_secs(30), wait).await;
        }
        match m.state() {
            MigrationState::Cancelled => Ok(()),
            other => Err(MigrationError::Failed(format!(
                "cancel did not complete: migration is {}",
                other.name()
            ))),
        }
    }

    /// Cancels failed migrations of `tenant` before a new one starts (they would hold its change
    /// capture and a staged import on their target).
    async fn supersede_failed(&self, tenant: &str) {
        let failed: Vec<String> = self
            .inner
            .migrations
            .lock()
            .values()
            .filter(|m| {
                m.tenant.id() == tenant
                    && m.state() == MigrationState::Failed
                    && m.tenant.state() == TenantState::Active
            })
            .map(|m| m.id.clone())
            .collect();
        for id in failed {
            tracing::info!(migration = %id, "superseded by a new migration of the tenant; cancelling");
            let _ = self.cancel(&id).await;
        }
    }

    /// CUTOVER RETRY: after an unconfirmed activation, asks the target again; after a failure
    /// before the hand-over, resumes the migration and cuts over once it is live again.
    pub async fn cutover_retry(
        &self,
        id: &str,
        force: bool,
    ) -> Result<CutoverResult, MigrationError> {
        let m = self.find(id)?;
        match (m.state(), m.tenant.state()) {
            (MigrationState::Failed, TenantState::Moved) => {
                cutover::retry_activation(self, &m).await
            }
            (MigrationState::Failed, _) => {
                self.retry(&m)?;
                let deadline = Instant::now() + self.settings().sync_timeout;
                while m.state() != MigrationState::LiveSync {
                    if matches!(
                        m.state(),
                        MigrationState::Failed | MigrationState::Cancelled
                    ) || Instant::now() > deadline
                    {
                        return Err(MigrationError::Failed(format!(
                            "retry stopped before live sync: {}",
                            m.progress
                                .lock()
                                .error
                                .clone()
                                .unwrap_or_else(|| m.state().name().into())
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                self.cutover_with(id, force).await
            }
            (MigrationState::LiveSync, _) => self.cutover_with(id, force).await,
            (other, _) => Err(MigrationError::WrongState {
                id: m.id.clone(),
                state: other.name(),
                op: "retry the cutover",
            }),
        }
    }

    /// Plans a cutover at `at_ms` (Unix ms). Visible in STATUS; cancelled by UNSCHEDULE or
    /// CANCEL. When the time comes, a lag above `cutover_max_lag` is waited out for up to a
    /// minute (unless `force`); the outcome is recorded in STATUS.
    pub fn schedule_cutover(
        &self,
        id: &str,
        at_ms: u64,
        force: bool,
    ) -> Result<(), MigrationError> {
        let m = self.find(id)?;
        let st = m.state();
        if !matches!(
            st,
            MigrationState::Queued
                | MigrationState::Syncing
                | MigrationState::LiveSync
                | MigrationState::Paused
        ) {
            return Err(MigrationError::WrongState {
                id: m.id.clone(),
                state: st.name(),
                op: "schedule a cutover",
            });
        }
        // A second of slack for clocks and typing; further back is a mistake, not "now".
        if at_ms + 1000 < ferrite_storage::now_ms() {
            return Err(MigrationError::Failed(
                "the scheduled time is in the past; use CUTOVER without SCHEDULED to cut over now"
                    .into(),
            ));
        }
        let generation = m.schedule_generation.fetch_add(1, Relaxed) + 1;
        *m.schedule.lock() = Some(Scheduled { at_ms, force });
        let this = self.clone();
        let id = id.to_string();
        tokio::spawn(async move { this.run_scheduled(id, generation).await });
        Ok(())
    }

    /// Withdraws a scheduled cutover: before its time, or after it while its request still waits
    /// for the coordinator (e.g. behind a large value being shipped). Once the cutover runs it
    /// can no longer be withdrawn, and saying OK then would be a lie.
    pub fn unschedule_cutover(&self, id: &str) -> Result<(), MigrationError> {
        let m = self.find(id)?;
        if m.schedule.lock().is_none() {
            return Err(MigrationError::Failed(format!(
                "migration {id} has no scheduled cutover"
            )));
        }
        {
            let mut slot = m.cutover.lock();
            if m.scheduled_cutover_running.load(Relaxed) {
                return Err(MigrationError::Failed(format!(
                    "the scheduled cutover of {id} is already running; it can no longer be withdrawn"
                )));
            }
            m.schedule_generation.fetch_add(1, Relaxed);
            if slot.as_ref().is_some_and(|r| r.scheduled) {
                if let Some(req) = slot.take() {
                    let _ = req.reply.send(Err(MigrationError::Failed(
                        "the scheduled cutover was withdrawn (UNSCHEDULE)".into(),
                    )));
                }
            }
        }
        *m.schedule.lock() = None;
        Ok(())
    }

    async fn run_scheduled(&self, id: String, generation: u64) {
        let Ok(m) = self.find(&id) else { return };
        let Some(plan) = *m.schedule.lock() else {
            return;
        };
        let wait = plan.at_ms.saturating_sub(ferrite_storage::now_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if m.schedule_generation.load(Relaxed) != generation {
                return;
            }
            let outcome = match m.state() {
                MigrationState::LiveSync => Some(self.request_cutover(&id, plan.force, true).await),
                MigrationState::Syncing | MigrationState::Queued | MigrationState::Paused => None,
                other => Some(Err(MigrationError::WrongState {
                    id: id.clone(),
                    state: other.name(),
                    op: "cut over",
                })),
            };
            if m.schedule_generation.load(Relaxed) != generation {
                // Withdrawn (UNSCHEDULE, CANCEL) while its request waited: nothing to record.
                return;
            }
            match outcome {
                Some(Ok(r)) => {
                    tracing::info!(migration = %id, downtime_ms = r.downtime_ms, "scheduled cutover completed");
                    break;
                }
                Some(Err(MigrationError::LagTooHigh { .. })) | None
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Some(Err(e)) => {
                    m.progress.lock().error = Some(format!("scheduled cutover failed: {e}"));
                    break;
                }
                None => {
                    m.progress.lock().error = Some(
                        "scheduled cutover failed: the migration never reached live sync".into(),
                    );
                    break;
                }
            }
        }
        if m.schedule_generation.load(Relaxed) == generation {
            *m.schedule.lock() = None;
        }
    }

    /// Fault injection for tests (`tenancy.migration.fault_injection = true`): arm a breakpoint,
    /// release the parked coordinator, or ask where it is parked.
    pub fn debug(
        &self,
        id: &str,
        op: &str,
        point: Option<&str>,
    ) -> Result<Option<&'static str>, MigrationError> {
        if !self.settings().fault_injection {
            return Err(MigrationError::Failed(
                "fault injection is disabled (tenancy.migration.fault_injection = false)".into(),
            ));
        }
        let m = self.find(id)?;
        match op {
            "break" => {
                let p = point
                    .and_then(|p| BREAKPOINTS.iter().find(|b| **b == p))
                    .ok_or_else(|| {
                        MigrationError::Failed(format!(
                            "unknown breakpoint; use one of {}",
                            BREAKPOINTS.join(", ")
                        ))
                    })?;
                m.breakpoints.lock().insert(p);
                Ok(None)
            }
            "continue" => {
                m.release.notify_waiters();
                Ok(None)
            }
            _ => Ok(*m.parked.lock()),
        }
    }

    /// Hands the tenant over to the target (see the module docs). Refused while lag exceeds
    /// `cutover_max_lag` unless `force`.
    pub async fn cutover(&self, id: &str) -> Result<CutoverResult, MigrationError> {
        self.cutover_with(id, false).await
    }

    pub async fn cutover_with(
        &self,
        id: &str,
        force: bool,
    ) -> Result<CutoverResult, MigrationError> {
        self.request_cutover(id, force, false).await
    }

    /// Hands a cutover request to the coordinator and waits for its outcome.
    async fn request_cutover(
        &self,
        id: &str,
        force: bool,
        scheduled: bool,
    ) -> Result<CutoverResult, MigrationError> {
        let m = self.find(id)?;
        let st = m.state();
        if st != MigrationState::LiveSync {
            return Err(MigrationError::WrongState {
                id: m.id.clone(),
                state: st.name(),
                op: "cut over",
            });
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut slot = m.cutover.lock();
            if slot.is_some() {
                return Err(MigrationError::WrongState {
                    id: m.id.clone(),
                    state: "cutting_over",
                    op: "cut over",
                });
            }
            *slot = Some(CutoverRequest {
                force,
                scheduled,
                reply: tx,
            });
        }
        m.wake.notify_waiters();
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(MigrationError::Failed(
                m.progress
                    .lock()
                    .error
                    .clone()
                    .unwrap_or_else(|| "the migration stopped during cutover".into()),
            )),
        }
    }

    /// Compares the target (as it was at activation) with the source's frozen copy: digests per
    /// bucket, and a sample of keys value by value.
    pub async fn verify(&self, id: &str) -> Result<VerifyResult, MigrationError> {
        let m = self.find(id)?;
        verify::verify(self, &m).await
    }

    /// Changes PARALLEL, BATCH_SIZE or RATE of a running migration.
    pub fn update(
        &self,
        id: &str,
        parallel: Option<usize>,
        batch_size: Option<usize>,
        rate: Option<u64>,
    ) -> Result<(), MigrationError> {
        let m = self.find(id)?;
        // A failed migration may be updated too: the settings apply when it is retried.
        if !m.state().is_active()
            && !matches!(m.state(), MigrationState::Queued | MigrationState::Failed)
        {
            return Err(MigrationError::WrongState {
                id: m.id.clone(),
                state: m.state().name(),
                op: "update",
            });
        }
        let mut c = m.cfg.lock();
        if let Some(p) = parallel {
            c.parallel = p;
        }
        if let Some(b) = batch_size {
            c.batch_size = b;
        }
        if let Some(r) = rate {
            c.rate_bytes_per_sec = r;
        }
        drop(c);
        m.wake.notify_waiters();
        Ok(())
    }
}

fn radix36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Checks `host:port` and maps `localhost` to the loopback address.
fn normalize_addr(addr: &str) -> Result<String, MigrationError> {
    let bad = || MigrationError::BadTarget(addr.to_string());
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    Ok(format!("{host}:{port}"))
}

/// True when two addresses name the same listener (same port, and the same host or both
/// loopback/unspecified).
fn same_endpoint(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> Option<(std::net::IpAddr, u16)> {
        let sa: std::net::SocketAddr = s.parse().ok()?;
        Some((sa.ip(), sa.port()))
    };
    match (parse(a), parse(b)) {
        (Some((ha, pa)), Some((hb, pb))) => {
            pa == pb
                && (ha == hb
                    || (ha.is_loopback() || ha.is_unspecified())
                        && (hb.is_loopback() || hb.is_unspecified()))
        }
        _ => a == b,
    }
}

/// Maps a target's error reply to a migration error.
fn classify_target_error(addr: &str, e: ClientError) -> MigrationError {
    match e {
        ClientError::Server(msg) if msg.starts_with("ERR unknown command") => {
            MigrationError::NotFerrite {
                addr: addr.into(),
                reply: msg,
            }
        }
        ClientError::Server(msg)
            if msg.starts_with("NOAUTH")
                || msg.starts_with("NOPERM")
                || msg.starts_with("WRONGPASS") =>
        {
            MigrationError::Auth {
                addr: addr.into(),
                reason: msg,
            }
        }
        ClientError::Server(msg) => MigrationError::Refused {
            addr: addr.into(),
            reason: msg.strip_prefix("ERR ").unwrap_or(&msg).to_string(),
        },
        other if other.is_connection_error() => MigrationError::Unreachable {
            addr: addr.into(),
            reason: other.to_string(),
        },
        other => MigrationError::Refused {
            addr: addr.into(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(normalize_addr("localhost:7000").unwrap(), "127.0.0.1:7000");
        assert!(normalize_addr("nope").is_err());
        assert!(normalize_addr("h:0").is_err());
        assert!(same_endpoint("127.0.0.1:7000", "127.0.0.1:7000"));
        assert!(same_endpoint("127.0.0.1:7000", "0.0.0.0:7000"));
        assert!(!same_endpoint("127.0.0.1:7000", "127.0.0.1:7001"));
        assert_eq!(radix36(0), "0");
        assert_eq!(radix36(36), "10");
    }
}
