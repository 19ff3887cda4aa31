//! Live tenant migration.
//!
//! A [`MigrationManager`] on the source streams one tenant's keyspace to a target Ferrite: it
//! switches on change capture, walks the keyspace by cursor and ships it in checksummed batches
//! over `PARALLEL` pipelined connections ([`wire`]), then ships changed keys as they happen.
//! At cutover it gates that tenant's writes, drains the last changes, has the target confirm
//! (same key count and digest), records the tenant `moved` here and activates it there. The
//! target side is an [`ImportManager`]. Both keep digests, so [`MigrationManager::verify`]
//! compares checksums in O(buckets) plus a sample of keys value by value.
//!
//! Each migration is one task, its actor ([`actor`]), which owns its state; the manager sends it
//! requests and reads what it publishes, so every operator command is answered at once whatever
//! the target does. The target is reached through the [`Target`] trait: over RESP
//! ([`resp::RespTarget`]) or in-process ([`local::LocalTarget`], which the unit tests use).
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

mod actor;
mod api;
pub mod conflict;
mod cutover;
mod delta;
pub mod dns;
pub mod import;
pub mod lag;
pub mod local;
mod pattern;
pub mod record;
pub mod resp;
mod restart;
mod rollback;
mod schedule;
mod source;
pub mod state;
mod status;
mod stop;
mod stream;
pub mod target;
#[cfg(test)]
mod tests;
pub mod validate;
mod verify;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use ferrite_client::{ClientError, ConnectOptions};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

pub use api::{
    AfterRequires, Approval, BackupStatus, ContentionSettings, CutoverResult, DEFAULT_HISTORY_MAX,
    MIGRATION_USER, MISSING_SAMPLE, MigrationConfig, MigrationError, MigrationHandle,
    MigrationMode, MigrationSettings, MigrationStatus, Priority, StopMode, StopResult,
    VerifyResult,
};
pub use conflict::ConflictPolicy;
pub use cutover::BREAKPOINTS;
pub use import::{
    Activation, BeginRequest, Import, ImportError, ImportManager, ImportState, PatternActivation,
};
pub use lag::Trend;
pub use record::{
    MigrationRecord, MigrationRecordSink, RecordedAuth, RecordedOrchestration, RecordedSettings,
};
pub use schedule::{GroupOp, GroupOutcome, Load, TotalValue, Totals};
pub use state::{MigrationPhase, MigrationState};
pub use stream::RECONNECT_BACKOFF;
pub use target::{Connector, Target, TargetAuth, TargetError};

use actor::{Actor, Control, DebugOp, Inbox, Request, Work};
use status::{Info, Published};

use crate::registry::Registry;
use crate::tenant::TenantState;

/// How long a request may wait for a migration's answer before it is reported as not
/// responding (the actor answers at once; this only bounds a wait that should never happen).
/// An accepted CUTOVER is exempt: it answers when the cutover has run.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long CANCEL ... AUTH waits for the target to show whether it accepts the password
/// (CANCEL answers within about a second, whatever the target does).
const PASSWORD_PROBE_WAIT: Duration = Duration::from_millis(500);

/// What the manager shares with every migration's task.
pub(crate) struct Env {
    pub registry: Arc<Registry>,
    pub imports: Arc<ImportManager>,
    pub settings: RwLock<MigrationSettings>,
    /// The `max_concurrent` slots, by priority, and the bandwidth shares of their holders.
    pub slots: Arc<schedule::Slots>,
    /// Address clients use to reach this server (for self-migration checks and STATUS).
    pub self_addr: String,
    pub run_id: String,
    /// Tenant bytes per second the last complete snapshot from this server achieved: what
    /// VALIDATE's estimate uses besides the measured link speed.
    pub snapshot_rate: Mutex<Option<f64>>,
    pub sink: RwLock<Option<Arc<dyn MigrationRecordSink>>>,
    /// The server is stopping: what the migrations publish from now on (pending ones ending
    /// as their manager goes away) is not their state after a restart, so it is not recorded.
    pub recording_stopped: std::sync::atomic::AtomicBool,
    /// The one unfinished migration of each tenant (tenant → migration id).
    /// Tenant → (migration id, whether it is a backup's reverse stream).
    claims: Mutex<HashMap<String, (String, bool)>>,
}

impl Env {
    /// Makes `info` the tenant's unfinished migration, unless another one is.
    fn claim(&self, info: &Info) -> Result<(), MigrationError> {
        let mut claims = self.claims.lock();
        match claims.get(info.tenant.id()) {
            Some((other, _)) if *other != info.id => Err(MigrationError::TenantBusy {
                tenant: info.tenant.id().into(),
                migration: other.clone(),
            }),
            _ => {
                claims.insert(
                    info.tenant.id().into(),
                    (info.id.clone(), info.backup_of.is_some()),
                );
                Ok(())
            }
        }
    }

    fn release_claim(&self, info: &Info) {
        let mut claims = self.claims.lock();
        if claims
            .get(info.tenant.id())
            .is_some_and(|(id, _)| *id == info.id)
        {
            claims.remove(info.tenant.id());
        }
    }
}

/// The manager's handle on one migration.
#[derive(Clone)]
struct Entry {
    info: Arc<Info>,
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<Published>,
    target: Arc<dyn Target>,
    /// GROUP given at creation.
    group: Option<String>,
}

impl Entry {
    fn wrong_state(&self, op: &'static str) -> MigrationError {
        MigrationError::WrongState {
            id: self.info.id.clone(),
            state: self.status.borrow().state.name(),
            op,
        }
    }
}

struct Inner {
    env: Arc<Env>,
    migrations: Mutex<BTreeMap<String, Entry>>,
    connector: Arc<dyn Connector>,
    id_prefix: String,
    counter: AtomicU64,
    /// What each migration was told to wait for (AFTER), to refuse a change that makes a cycle.
    after: Mutex<HashMap<String, Vec<String>>>,
    /// What CUTOVER DNS did for each migration (STATUS `dns`).
    dns: Mutex<HashMap<String, String>>,
    /// The last load contention management was told of.
    load: Mutex<Option<schedule::Load>>,
    /// On a new owner: the reverse stream (migration id) that keeps the old source of each
    /// import (by id) up to date as a backup, and when its retention ends (Unix ms).
    backups: Mutex<HashMap<String, (String, u64)>>,
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
        Self::with_connector(
            registry,
            settings,
            self_addr,
            run_id,
            Arc::new(resp::RespConnector),
        )
    }

    /// A manager that reaches targets through `connector` (in-process ones in tests).
    pub fn with_connector(
        registry: Arc<Registry>,
        settings: MigrationSettings,
        self_addr: String,
        run_id: String,
        connector: Arc<dyn Connector>,
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
                env: Arc::new(Env {
                    registry,
                    imports,
                    slots: schedule::Slots::new(settings.max_concurrent),
                    settings: RwLock::new(settings),
                    self_addr,
                    run_id,
                    snapshot_rate: Mutex::new(None),
                    sink: RwLock::new(None),
                    recording_stopped: Default::default(),
                    claims: Mutex::new(HashMap::new()),
                }),
                migrations: Mutex::new(BTreeMap::new()),
                connector,
                id_prefix,
                counter: AtomicU64::new(1),
                after: Mutex::new(HashMap::new()),
                dns: Mutex::new(HashMap::new()),
                load: Mutex::new(None),
                backups: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn imports(&self) -> &Arc<ImportManager> {
        &self.inner.env.imports
    }

    pub fn settings(&self) -> MigrationSettings {
        self.inner.env.settings.read().clone()
    }

    /// Applies new settings (CONFIG SET). A larger `max_concurrent` starts queued migrations;
    /// a smaller one lets running ones finish.
    pub fn update_settings(&self, s: MigrationSettings) {
        let env = &self.inner.env;
        let limit = s.max_concurrent;
        if let Some(sink) = env.sink.read().clone() {
            sink.settings_changed(&s);
        }
        *env.settings.write() = s;
        env.slots.set_limit(limit);
    }

    /// The server is stopping: records nothing more (see [`Env::recording_stopped`]).
    pub fn stop_recording(&self) {
        self.inner
            .env
            .recording_stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Hands every later change of a migration's state to `sink` (persistence).
    pub fn set_record_sink(&self, sink: Arc<dyn MigrationRecordSink>) {
        sink.settings_changed(&self.settings());
        *self.inner.env.sink.write() = Some(sink);
    }

    fn entry(&self, id: &str) -> Result<Entry, MigrationError> {
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
            .env
            .claims
            .lock()
            .get(tenant)
            .map(|(id, _)| id.clone())
    }

    /// The tenant's unfinished migration if it is a backup's reverse stream (claimed from the
    /// moment it is created, before it is listed).
    fn backup_stream_claiming(&self, tenant: &str) -> Option<String> {
        match self.inner.env.claims.lock().get(tenant) {
            Some((id, true)) => Some(id.clone()),
            _ => None,
        }
    }

    /// How this server authenticates to targets. An AUTH given with the command is what the
    /// operator chose for this target; the cluster's token is the default.
    fn target_auth(&self, cfg: &MigrationConfig) -> TargetAuth {
        if let Some(pw) = &cfg.auth {
            TargetAuth::Password(pw.clone())
        } else if let Some(token) = &self.inner.env.settings.read().token {
            TargetAuth::Token(token.clone())
        } else {
            TargetAuth::None
        }
    }

    /// Connection options for reaching a target directly (VALIDATE's probes).
    pub(crate) fn connect_options(&self, target: &str, cfg: &MigrationConfig) -> ConnectOptions {
        let mut o = ConnectOptions::new(target)
            .connect_timeout(resp::CONNECT_TIMEOUT)
            .command_timeout(Duration::from_secs(30))
            .name("ferrite-migration");
        match self.target_auth(cfg) {
            TargetAuth::Token(t) => o = o.tenant(MIGRATION_USER, t),
            TargetAuth::Password(p) => o = o.password(p),
            TargetAuth::None => {}
        }
        o
    }

    /// Starts migrating `tenant` to `target`. Validation errors (unknown tenant, unreachable or
    /// incompatible target, wrong password, migrating to itself, a second migration) are
    /// returned here and leave nothing behind.
    pub async fn migrate(
        &self,
        tenant: &str,
        target: &str,
        cfg: MigrationConfig,
    ) -> Result<MigrationHandle, MigrationError> {
        let env = self.inner.env.clone();
        let settings = self.settings();
        if !settings.enabled {
            return Err(MigrationError::Disabled);
        }
        let mut cfg = cfg;
        match (cfg.mode, cfg.patterns.is_empty()) {
            (MigrationMode::Incremental, true) => {
                return Err(MigrationError::Patterns(
                    "MODE incremental needs PATTERNS <glob> [<glob> ...]".into(),
                ));
            }
            (MigrationMode::Incremental, false) => {
                cfg.patterns = crate::patterns::normalize(&cfg.patterns)
                    .map_err(|e| MigrationError::Patterns(e.to_string()))?;
            }
            (mode, false) => {
                return Err(MigrationError::Patterns(format!(
                    "PATTERNS applies to MODE incremental only, not MODE {}",
                    mode.name()
                )));
            }
            (_, true) => {}
        }
        if cfg.conflict.is_some() && cfg.mode != MigrationMode::Continuous {
            return Err(MigrationError::Failed(format!(
                "CONFLICT applies to MODE continuous (a sync whose target takes writes too), not MODE {}",
                cfg.mode.name()
            )));
        }
        let t = env
            .registry
            .get(tenant)
            .ok_or_else(|| MigrationError::UnknownTenant(tenant.into()))?;
        if t.state() != TenantState::Active {
            return Err(MigrationError::TenantNotActive {
                tenant: tenant.into(),
                state: t.state().name(),
            });
        }
        // The reverse stream of a backup (see `rollback`) holds the tenant's claim; a new
        // migration of the tenant ends it once the new one has passed its checks.
        if let Some(m) = self.running_for(tenant).filter(|m| {
            cfg.backup_of.is_some() || self.backup_stream_claiming(tenant) != Some(m.clone())
        }) {
            return Err(MigrationError::TenantBusy {
                tenant: tenant.into(),
                migration: m,
            });
        }
        let target = normalize_addr(target)?;
        if same_endpoint(&target, &env.self_addr) {
            return Err(MigrationError::SelfTarget);
        }
        let redirect = match &cfg.redirect {
            Some(r) => normalize_addr(r)?,
            None => target.clone(),
        };
        let conn = self
            .inner
            .connector
            .connect(&target, self.target_auth(&cfg));
        let check = conn
            .check(tenant, &env.run_id)
            .await
            .map_err(|e| classify_target_error(&target, e))?;
        self.run_validation(&t, &check)?;
        let after = self.dependencies_of(&cfg.after)?;
        if let Some(g) = &cfg.group {
            schedule::check_group_name(g)?;
        }
        self.supersede_failed(tenant).await;
        if cfg.backup_of.is_none() {
            // A reverse stream that the old source started moments ago may not be listed yet:
            // end what is listed until the tenant's claim is no backup's (bounded).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while self.backup_stream_claiming(tenant).is_some()
                && tokio::time::Instant::now() < deadline
            {
                self.end_backups_of_tenant(tenant).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        let n = self.inner.counter.fetch_add(1, Relaxed);
        let id = format!("mig_{}_{n}", self.inner.id_prefix);
        let info = Arc::new(Info {
            id: id.clone(),
            tenant: t.clone(),
            source: env.self_addr.clone(),
            target: target.clone(),
            redirect,
            mode: cfg.mode,
            seq: n,
            delta: Default::default(),
            conflict: cfg.conflict,
            patterns: cfg.patterns.clone(),
            // A reverse stream keeps no backup of its own.
            backup_retention: match &cfg.backup_of {
                Some(_) => Duration::ZERO,
                None => cfg.retention.unwrap_or(settings.rollback_retention),
            },
            backup_of: cfg.backup_of.clone(),
        });
        // One unfinished migration per tenant: two concurrent MIGRATEs cannot both pass.
        env.claim(&info)?;
        let mut published = Published::new(t.keyspace().len(), cfg.parallel, cfg.batch_size);
        published.priority = cfg.priority;
        published.rate_bytes_per_sec = cfg.rate_bytes_per_sec;
        let needs_approval = cfg.approval || settings.require_approval;
        if needs_approval {
            published.approval = Some(Approval::pending());
        }
        let admission = schedule::Admission {
            after,
            needs_approval,
            planner: needs_approval.then(|| self.planner(tenant, &target, &cfg)),
        };
        self.inner
            .after
            .lock()
            .insert(id.clone(), cfg.after.clone());
        let group = cfg.group.clone();
        let (priority, after_ids) = (cfg.priority, cfg.after.clone());
        let mut status = self.spawn_with(info, cfg, published, conn, false, admission, group);
        tracing::info!(migration = %id, tenant, target = %target, priority = priority.name(), after = ?after_ids, needs_approval, "migration created");
        // With a free slot the actor starts at once: let the reply say so rather than
        // "queued" (bounded: a busy machine still gets an answer).
        if env.slots.has_room() {
            let _ = tokio::time::timeout(
                Duration::from_millis(200),
                status.wait_for(|p| p.state != MigrationState::Queued),
            )
            .await;
        }
        let st = status.borrow().state;
        Ok(MigrationHandle {
            id,
            state: st,
            progress: 0.0,
        })
    }

    /// Starts the actor of a migration and registers it, with what it waits for before it
    /// starts, and its group.
    #[allow(clippy::too_many_arguments)]
    fn spawn_with(
        &self,
        info: Arc<Info>,
        cfg: MigrationConfig,
        published: Published,
        target: Arc<dyn Target>,
        restored: bool,
        admission: schedule::Admission,
        group: Option<String>,
    ) -> watch::Receiver<Published> {
        self.spawn_with_restart(
            info,
            cfg,
            published,
            target,
            restored,
            admission,
            group,
            Default::default(),
        )
    }

    /// [`Self::spawn_with`], for a migration restored after a restart that RESUME may start
    /// again (see [`restart`]).
    #[allow(clippy::too_many_arguments)]
    fn spawn_with_restart(
        &self,
        info: Arc<Info>,
        cfg: MigrationConfig,
        published: Published,
        target: Arc<dyn Target>,
        restored: bool,
        admission: schedule::Admission,
        group: Option<String>,
        restored_with: restart::Restored,
    ) -> watch::Receiver<Published> {
        let (status_tx, status_rx) = watch::channel(published);
        let (req_tx, req_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let mut ctl = Control::new(info.clone(), self.inner.env.clone(), cfg, status_tx, ev_tx);
        ctl.restored = restored;
        ctl.restart = restored_with.restart;
        ctl.password_not_kept = restored_with.password_not_kept;
        ctl.admission = admission;
        // On disk from its creation (a queued one may not change state before a restart).
        let started_with_auth = ctl.started_with_auth();
        ctl.publish(|p| p.started_with_auth = started_with_auth);
        let actor = Actor {
            inbox: Inbox {
                requests: req_rx,
                events: ev_rx,
            },
            ctl,
            work: Work {
                target: target.clone(),
                checkpoint: Default::default(),
                streams: None,
                permit: None,
                frozen: None,
                subscription: None,
                rate: Default::default(),
                probe: None,
            },
        };
        self.inner.migrations.lock().insert(
            info.id.clone(),
            Entry {
                info,
                requests: req_tx,
                status: status_rx.clone(),
                target,
                group,
            },
        );
        tokio::spawn(actor.run());
        status_rx
    }

    /// Status of one migration (never waits on the migration).
    pub async fn status(&self, id: &str) -> Result<MigrationStatus, MigrationError> {
        let e = self.entry(id)?;
        Ok(self.compose(&e))
    }

    /// STATUS of one entry: what its actor published, plus what the manager knows (its group,
    /// its bandwidth share now).
    fn compose(&self, e: &Entry) -> MigrationStatus {
        let p = e.status.borrow().clone();
        let mut s = status::compose(&e.info, &p);
        s.group = e.group.clone();
        s.queue_position = self.inner.env.slots.position(&e.info.id);
        s.dns = self.inner.dns.lock().get(&e.info.id).cloned();
        let total = self.inner.env.settings.read().max_bandwidth;
        s.rate_limit = schedule::rate_limit(
            p.rate_bytes_per_sec,
            self.inner.env.slots.share(&e.info.id, total),
            p.throttle,
            p.free_rate,
        );
        s
    }

    /// Status of every migration, oldest first.
    pub fn status_all(&self) -> Vec<MigrationStatus> {
        let mut all: Vec<Entry> = self.inner.migrations.lock().values().cloned().collect();
        all.sort_by_key(|e| e.info.seq);
        all.iter().map(|e| self.compose(e)).collect()
    }

    /// Sends a request to a migration's actor and waits for its answer. A migration whose
    /// actor has ended (cancelled) is answered from what it last published.
    async fn ask<T>(
        &self,
        id: &str,
        op: &'static str,
        make: impl FnOnce(actor::Reply<T>) -> Request,
        bounded: bool,
    ) -> Result<T, MigrationError> {
        let e = self.entry(id)?;
        let (tx, rx) = oneshot::channel();
        let sent = tokio::time::timeout(ANSWER_TIMEOUT, e.requests.send(make(tx))).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(e.wrong_state(op)),
            Err(_) => return Err(MigrationError::NotResponding(id.into())),
        }
        let answer = if bounded {
            match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
                Ok(a) => a,
                Err(_) => return Err(MigrationError::NotResponding(id.into())),
            }
        } else {
            rx.await
        };
        answer.unwrap_or_else(|_| Err(e.wrong_state(op)))
    }

    /// Stops shipping; changes keep being captured.
    pub async fn pause(&self, id: &str) -> Result<(), MigrationError> {
        self.ask(id, "pause", Request::Pause, true).await
    }

    /// Resumes shipping after PAUSE; on a failed migration, retries it from its checkpoint.
    pub async fn resume(&self, id: &str) -> Result<(), MigrationError> {
        self.ask(id, "resume", Request::Resume, true).await
    }

    /// RESUME <id> AUTH <password>: starts a failed migration that was started with AUTH again,
    /// reaching its target with `password` from now on: one a restart interrupted (a password
    /// given with TENANT.MIGRATE is never kept on disk) from scratch, one whose RESUME had a wrong
    /// password as RESUME would.
    pub async fn resume_with_auth(&self, id: &str, password: String) -> Result<(), MigrationError> {
        let given = self.given_password(id, password)?;
        let target = given.target.clone();
        self.ask(
            id,
            "resume",
            |reply| Request::ResumeWith(given, reply),
            true,
        )
        .await?;
        self.use_target(id, target);
        Ok(())
    }

    /// A connection to migration `id`'s target that logs in with `password` (AUTH given again
    /// to RESUME, CUTOVER RETRY or CANCEL).
    fn given_password(
        &self,
        id: &str,
        password: String,
    ) -> Result<actor::GivenPassword, MigrationError> {
        let e = self.entry(id)?;
        let target = self
            .inner
            .connector
            .connect(&e.info.target, TargetAuth::Password(password.clone()));
        Ok(actor::GivenPassword { target, password })
    }

    /// From now on the manager reaches migration `id`'s target (VERIFY) through `target`.
    fn use_target(&self, id: &str, target: Arc<dyn Target>) {
        if let Some(entry) = self.inner.migrations.lock().get_mut(id) {
            entry.target = target;
        }
    }

    /// Cancels a migration before its hand-over: the source stays the owner, untouched, and the
    /// target is asked to drop what it staged (now if it answers, else in the background until
    /// it does or its own reaper drops it). On a migration whose activation was never
    /// confirmed, the target is asked to drop the import; only if it does does the source take
    /// the tenant back.
    pub async fn cancel(&self, id: &str) -> Result<(), MigrationError> {
        self.ask(id, "cancel", |reply| Request::Cancel(None, reply), true)
            .await
    }

    /// CANCEL <id> AUTH <password>: CANCEL of a migration started with AUTH, dropping the
    /// target's import with `password` (a restart of this server does not keep it). A password
    /// the target refuses is refused here, and nothing is cancelled: CANCEL can be given again
    /// (with the right one, or without AUTH to cancel here only).
    pub async fn cancel_with_auth(&self, id: &str, password: String) -> Result<(), MigrationError> {
        let given = self.given_password(id, password)?;
        let (import, started_with_auth) = {
            let e = self.entry(id)?;
            let p = e.status.borrow();
            (p.import_id.clone(), p.started_with_auth)
        };
        // (The actor refuses AUTH for a migration started without it: no login is tried then.)
        if let Some(import) = import.filter(|_| started_with_auth) {
            // Any answer but a refused login (even "no such import") shows the password works;
            // an unreachable target is left to the cancel's background retries.
            let probe =
                tokio::time::timeout(PASSWORD_PROBE_WAIT, given.target.report(&import)).await;
            if let Ok(Err(e)) = probe
                && e.is_auth_refusal()
            {
                return Err(MigrationError::Auth {
                    addr: given.target.addr().to_string(),
                    reason: format!(
                        "{e}; nothing was cancelled (TENANT.MIGRATE.CANCEL {id} without AUTH cancels here and leaves the import to the target's reaper)"
                    ),
                });
            }
        }
        let target = given.target.clone();
        self.ask(
            id,
            "cancel",
            |reply| Request::Cancel(Some(given), reply),
            true,
        )
        .await?;
        self.use_target(id, target);
        Ok(())
    }

    /// Cancels failed migrations of `tenant` before a new one starts (they would hold its change
    /// capture and a staged import on their target).
    async fn supersede_failed(&self, tenant: &str) {
        let failed: Vec<String> = self
            .inner
            .migrations
            .lock()
            .values()
            .filter(|e| {
                e.info.tenant.id() == tenant
                    && e.status.borrow().state == MigrationState::Failed
                    && e.info.tenant.state() == TenantState::Active
            })
            .map(|e| e.info.id.clone())
            .collect();
        for id in failed {
            tracing::info!(migration = %id, "superseded by a new migration of the tenant; cancelling");
            let _ = self.cancel(&id).await;
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
        self.refuse_whole_cutover(id)?;
        self.ask(
            id,
            "cut over",
            |reply| Request::Cutover {
                force,
                retry: false,
                auth: None,
                reply,
            },
            false,
        )
        .await
    }

    /// An incremental migration moves pattern by pattern: a whole-tenant cutover is refused.
    fn refuse_whole_cutover(&self, id: &str) -> Result<(), MigrationError> {
        let e = self.entry(id)?;
        if e.info.mode == MigrationMode::Incremental {
            return Err(MigrationError::Patterns(format!(
                "migration {id} is incremental: cut it over pattern by pattern with TENANT.MIGRATE.CUTOVER {id} PATTERN <glob> (the last pattern's cutover completes it)"
            )));
        }
        Ok(())
    }

    /// `MODE incremental`: hands the keys of one pattern over to the target (pattern-scoped
    /// gate, drain, that pattern's key count and digest confirmed on both sides, hand-over,
    /// activation there). The last pattern's cutover completes the migration.
    pub async fn cutover_pattern(
        &self,
        id: &str,
        pattern: &[u8],
        force: bool,
    ) -> Result<CutoverResult, MigrationError> {
        let index = self.pattern_index(id, pattern)?;
        self.ask(
            id,
            "cut over a pattern",
            |reply| Request::PatternCutover {
                index,
                force,
                reply,
            },
            false,
        )
        .await
    }

    /// The index of `pattern` in an incremental migration's list.
    fn pattern_index(&self, id: &str, pattern: &[u8]) -> Result<usize, MigrationError> {
        let e = self.entry(id)?;
        if e.info.mode != MigrationMode::Incremental {
            return Err(MigrationError::Patterns(format!(
                "migration {id} is not incremental: PATTERN applies to MODE incremental only"
            )));
        }
        e.info
            .patterns
            .iter()
            .position(|p| p.as_slice() == pattern)
            .ok_or_else(|| {
                let list: Vec<String> = e
                    .info
                    .patterns
                    .iter()
                    .map(|p| format!("'{}'", String::from_utf8_lossy(p)))
                    .collect();
                MigrationError::Patterns(format!(
                    "migration {id} has no pattern '{}'; its patterns are {}",
                    String::from_utf8_lossy(pattern),
                    list.join(", ")
                ))
            })
    }

    /// VERIFY of one pattern of an incremental migration, once that pattern has moved: the
    /// keys it owns here against what the target recorded when it activated them.
    pub async fn verify_pattern(
        &self,
        id: &str,
        pattern: &[u8],
    ) -> Result<VerifyResult, MigrationError> {
        let index = self.pattern_index(id, pattern)?;
        let e = self.entry(id)?;
        let p = e.status.borrow().clone();
        let done = matches!(
            p.state,
            MigrationState::Completed | MigrationState::Verified
        );
        let split = e
            .info
            .split()
            .ok_or_else(|| MigrationError::Failed("no pattern list recorded".into()))?;
        if !done && split.owners().get(index) != Some(&crate::patterns::Owner::There) {
            return Err(MigrationError::Patterns(format!(
                "pattern '{}' has not moved yet: VERIFY PATTERN compares a moved pattern",
                split.name(index)
            )));
        }
        if p.frozen_released {
            return Err(MigrationError::Failed(
                "the frozen copy was released after the retention period; nothing to verify against"
                    .into(),
            ));
        }
        let import = p
            .import_id
            .clone()
            .ok_or_else(|| MigrationError::Failed("no import id recorded".into()))?;
        verify::verify_patterns(
            &*e.target,
            &import,
            &e.info.tenant.keyspace(),
            &split,
            &[index],
        )
        .await
    }

    /// CUTOVER RETRY: after an unconfirmed activation, asks the target again; after a failure
    /// before the hand-over, resumes the migration and cuts over once it is live again (waiting
    /// for broken links to come back rather than refusing).
    pub async fn cutover_retry(
        &self,
        id: &str,
        force: bool,
    ) -> Result<CutoverResult, MigrationError> {
        self.cutover_retry_with_auth(id, force, None).await
    }

    /// CUTOVER RETRY [AUTH <password>]: `password` is needed by a migration started with AUTH
    /// after a restart of this server, which does not keep it (refused without it).
    pub async fn cutover_retry_with_auth(
        &self,
        id: &str,
        force: bool,
        password: Option<String>,
    ) -> Result<CutoverResult, MigrationError> {
        let auth = password.map(|pw| self.given_password(id, pw)).transpose()?;
        let target = auth.as_ref().map(|g| g.target.clone());
        let r = self
            .ask(
                id,
                "retry the cutover",
                |reply| Request::Cutover {
                    force,
                    retry: true,
                    auth,
                    reply,
                },
                false,
            )
            .await;
        if let Some(target) = target
            && r.is_ok()
        {
            self.use_target(id, target);
        }
        r
    }

    /// Plans a cutover at `at_ms` (Unix ms). Visible in STATUS; withdrawn by UNSCHEDULE or
    /// CANCEL. When the time comes, a lag above `cutover_max_lag` is waited out for up to a
    /// minute (unless `force`); the outcome is recorded in STATUS.
    pub async fn schedule_cutover(
        &self,
        id: &str,
        at_ms: u64,
        force: bool,
    ) -> Result<(), MigrationError> {
        self.refuse_whole_cutover(id)?;
        self.ask(
            id,
            "schedule a cutover",
            |reply| Request::Schedule {
                at_ms,
                force,
                reply,
            },
            true,
        )
        .await
    }

    /// Withdraws a scheduled cutover: before its time, or after it while its request still
    /// waits (e.g. behind a large value being shipped). Once the cutover runs it can no longer
    /// be withdrawn, and saying OK then would be a lie.
    pub async fn unschedule_cutover(&self, id: &str) -> Result<(), MigrationError> {
        self.ask(id, "unschedule a cutover", Request::Unschedule, true)
            .await
    }

    /// Fault injection for tests (`tenancy.migration.fault_injection = true`): arm a breakpoint,
    /// release the parked actor, or ask where it is parked.
    pub async fn debug(
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
        let op = match op {
            "break" => DebugOp::Break(
                point
                    .and_then(|p| BREAKPOINTS.iter().find(|b| **b == p))
                    .ok_or_else(|| {
                        MigrationError::Failed(format!(
                            "unknown breakpoint; use one of {}",
                            BREAKPOINTS.join(", ")
                        ))
                    })?,
            ),
            "continue" => DebugOp::Continue,
            _ => {
                // Where it is parked: what it published, without asking.
                return Ok(self.entry(id)?.status.borrow().parked_at);
            }
        };
        self.ask(id, "debug", |reply| Request::Debug(op, reply), true)
            .await
    }

    /// Ends a continuous sync (see [`StopMode`]); the source stays the owner, untouched, and the
    /// target keeps its copy as a stopped import. GRACEFUL answers once the target confirmed
    /// one consistency point (bounded by the drain's budget); IMMEDIATE at once.
    pub async fn stop(&self, id: &str, mode: StopMode) -> Result<StopResult, MigrationError> {
        self.ask(
            id,
            "stop",
            |reply| Request::Stop(mode, reply),
            mode == StopMode::Immediate,
        )
        .await
    }

    /// Compares the target (as it was at activation) with the source's frozen copy: digests per
    /// bucket, and a sample of keys value by value.
    pub async fn verify(&self, id: &str) -> Result<VerifyResult, MigrationError> {
        let e = self.entry(id)?;
        let p = e.status.borrow().clone();
        if !matches!(
            p.state,
            MigrationState::Completed | MigrationState::Verified
        ) {
            return Err(e.wrong_state("verify"));
        }
        if p.frozen_released {
            return Err(MigrationError::Failed(
                "the frozen copy was released after the retention period; nothing to verify against"
                    .into(),
            ));
        }
        let import = p
            .import_id
            .clone()
            .ok_or_else(|| MigrationError::Failed("no import id recorded".into()))?;
        let r = match e.info.split() {
            // Incremental: each pattern against what the target held when it took it over
            // (the target's clients wrote the earlier patterns since).
            Some(split) => {
                let all: Vec<usize> = (0..split.patterns().len()).collect();
                verify::verify_patterns(
                    &*e.target,
                    &import,
                    &e.info.tenant.keyspace(),
                    &split,
                    &all,
                )
                .await?
            }
            None => verify::verify(&*e.target, &import, &e.info.tenant.keyspace()).await?,
        };
        if r.status == "verified" {
            self.ask(id, "verify", Request::Verified, true).await?;
        }
        Ok(r)
    }

    /// Changes PARALLEL, BATCH_SIZE or RATE of a running migration.
    pub async fn update(
        &self,
        id: &str,
        parallel: Option<usize>,
        batch_size: Option<usize>,
        rate: Option<u64>,
    ) -> Result<(), MigrationError> {
        self.ask(
            id,
            "update",
            |reply| Request::Update {
                parallel,
                batch_size,
                rate,
                reply,
            },
            true,
        )
        .await
    }

    /// Brings back migrations persistence kept (after a restart); see [`restart`] for what
    /// each state comes back as.
    pub fn restore(&self, records: Vec<MigrationRecord>) {
        let mut records = records;
        // Dependencies (AFTER) were created before what waits for them.
        records.sort_by_key(|r| r.seq);
        for r in records {
            if self.inner.migrations.lock().contains_key(&r.id) {
                continue;
            }
            self.inner.counter.fetch_max(r.seq + 1, Relaxed);
            self.restore_one(r);
        }
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

/// Maps a target's refusal to a migration error.
fn classify_target_error(addr: &str, e: TargetError) -> MigrationError {
    match e {
        TargetError::Unreachable(reason) => MigrationError::Unreachable {
            addr: addr.into(),
            reason,
        },
        TargetError::Refused(msg) if msg.starts_with("ERR unknown command") => {
            MigrationError::NotFerrite {
                addr: addr.into(),
                reply: msg,
            }
        }
        TargetError::Refused(msg)
            if msg.starts_with("NOAUTH")
                || msg.starts_with("NOPERM")
                || msg.starts_with("WRONGPASS") =>
        {
            MigrationError::Auth {
                addr: addr.into(),
                reason: msg,
            }
        }
        TargetError::Refused(msg)
        | TargetError::ImportGone(msg)
        | TargetError::ImportActive(msg) => MigrationError::Refused {
            addr: addr.into(),
            reason: msg.strip_prefix("ERR ").unwrap_or(&msg).to_string(),
        },
    }
}

/// Maps an error of a direct connection (VALIDATE) to a migration error.
fn classify_client_error(addr: &str, e: ClientError) -> MigrationError {
    match e {
        ClientError::Server(msg) => classify_target_error(addr, TargetError::Refused(msg)),
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

/// Unix milliseconds as RFC 3339 (e.g. `2026-11-21T10:35:00.123Z`).
pub fn rfc3339_ms(ms: u64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod helper_tests {
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
