//! Ferrite's persistence: every tenant's data in its own directory, as a point-in-time snapshot
//! plus an append-only log of the write effects since; a catalog of tenants (credentials as
//! salted hashes, quotas, throttles, state, moved addresses) and of migrations. Files are
//! versioned and checksummed per frame ([`format`]); docs/persistence.md explains the layout and
//! the choices.
//!
//! - [`Persistence`]: opens and loads a data directory at startup, attaches every tenant's
//!   [`log::TenantLog`] (subscribed to its keyspace's effects), makes registry changes durable
//!   ([`ferrite_tenancy::TenantStore`]), runs snapshots (SAVE, BGSAVE, BGREWRITEAOF, the `save`
//!   schedule, size-triggered compaction, recovery after a write failure), and reports status.
//! - [`check`]: verifies a data directory offline and repairs a damaged log by truncating it.

pub mod catalog;
pub mod check;
pub mod core;
pub mod format;
pub mod load;
pub mod log;
pub mod migrations;
pub mod paths;
pub mod record;
pub mod snapshot;

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ferrite_storage::{Keyspace, SinkId};
use ferrite_tenancy::{Credential, Registry, Tenant, TenantLimits, TenantState, TenantStore};
use parking_lot::{Condvar, Mutex};

use crate::catalog::{AclUserRecord, Catalog, TenantRecord};
pub use crate::core::FsyncPolicy;
use crate::log::TenantLog;
pub use crate::snapshot::{LoadError, SnapshotInfo};

/// Persistence settings (`[persistence]` in ferrite.toml).
#[derive(Debug, Clone)]
pub struct Settings {
    pub dir: PathBuf,
    pub appendfsync: FsyncPolicy,
    /// Snapshot everything after `seconds` if at least `changes` writes happened (Redis's
    /// `save`); empty: only on request and by size.
    pub save: Vec<(u64, u64)>,
    /// A tenant's log is compacted (a new snapshot replaces it) once it has grown by this
    /// percentage of the last snapshot's size (Redis's `auto-aof-rewrite-percentage`); 0 = never.
    pub auto_compact_percentage: u64,
    /// ... and is at least this large (`auto-aof-rewrite-min-size`).
    pub auto_compact_min_size: u64,
}

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot use data directory {path}: {message}")]
    Dir { path: PathBuf, message: String },
    #[error(
        "data directory {0} is in use by another ferrite process (its LOCK file is held); give each server its own --dir"
    )]
    Locked(PathBuf),
    #[error("cannot load {0}")]
    Load(#[from] LoadError),
}

/// What kind of full snapshot is running (they do the same work; Redis reports them apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveKind {
    /// SAVE, BGSAVE, the `save` schedule, SHUTDOWN SAVE.
    Snapshot,
    /// BGREWRITEAOF.
    Rewrite,
}

enum Job {
    All(SaveKind),
    /// One tenant (compaction by size, or recovery after a write failure), by attachment key.
    Tenant(usize),
}

#[derive(Default)]
struct Jobs {
    queue: VecDeque<Job>,
    running: Option<SaveKind>,
    /// One tenant's compaction or recovery is running.
    running_tenant: bool,
    stop: bool,
}

/// What the last load found.
#[derive(Debug, Clone, Default)]
pub struct LoadSummary {
    pub tenants: u64,
    pub keys: u64,
    pub expired: u64,
    pub effects: u64,
    pub replay_errors: u64,
    pub took_ms: u64,
    /// Torn tails that were cut off: (file, offset).
    pub torn: Vec<(PathBuf, u64)>,
    /// Directories of staged imports or deleted tenants that were removed.
    pub dropped_dirs: Vec<PathBuf>,
}

/// Status for INFO persistence and metrics.
#[derive(Debug, Clone)]
pub struct Status {
    pub last_save_unix: u64,
    pub last_save_ok: bool,
    pub last_save_secs: i64,
    pub save_in_progress: Option<(SaveKind, Instant)>,
    pub saves: u64,
    pub rewrites: u64,
    pub last_rewrite_ok: bool,
    pub last_rewrite_secs: i64,
    pub rewrite_scheduled: bool,
    pub rewrite_failures_in_a_row: u64,
    pub changes_at_last_save: u64,
    pub snapshots: u64,
    pub snapshot_failures: u64,
    pub compactions: u64,
    pub last_snapshot: Option<SnapshotInfo>,
    pub load: LoadSummary,
}

impl Status {
    /// Records a finished rewrite of the logs: a BGREWRITEAOF, or an automatic compaction of one
    /// tenant's log (Redis's automatic AOF rewrite, which Redis counts the same way).
    fn rewrite_done(&mut self, ok: bool, took_secs: i64) {
        self.last_rewrite_ok = ok;
        self.last_rewrite_secs = took_secs;
        if ok {
            self.rewrites += 1;
            self.rewrite_failures_in_a_row = 0;
        } else {
            self.rewrite_failures_in_a_row += 1;
        }
    }
}

struct Attached {
    tenant: Arc<Tenant>,
    incarnation: u64,
    log: Arc<TenantLog>,
    keyspace: Arc<Keyspace>,
    sink: SinkId,
    /// A staged import: journaled, not in the catalog.
    staged: bool,
}

/// A tenant's contents before a restore replaced them ([`Persistence::replace_data`]), handed
/// back so that the caller frees them off its reply path: freeing a million keys takes about as
/// long as loading them.
pub type OldContents = ferrite_storage::table::ShardedTable<ferrite_storage::Entry>;

/// A replacement of a tenant's data in progress ([`Persistence::begin_replace`]): the tenant's
/// next snapshot being written while the new data loads. Dropped unfinished (the load failed),
/// it removes that file and lets the tenant's snapshots run again; the tenant is unchanged.
pub struct Replacement {
    ks: Arc<Keyspace>,
    /// The log generation the new snapshot starts.
    generation: u64,
    writer: snapshot::SnapshotWriter,
    /// Holds the tenant's `snapshotting` flag until the replacement ends.
    claim: SnapshotClaim,
}

impl Replacement {
    /// Where the loader puts every key it loads, as it loads it (the header's key count can
    /// still be set until the first entries are written).
    pub fn writer(&mut self) -> &mut snapshot::SnapshotWriter {
        &mut self.writer
    }
}

/// A tenant's `snapshotting` flag, taken: no other snapshot of it runs until this is dropped.
struct SnapshotClaim(Arc<TenantLog>);

impl Drop for SnapshotClaim {
    fn drop(&mut self) {
        self.0.snapshotting.store(false, SeqCst);
    }
}

/// A data directory in use.
pub struct Persistence {
    root: PathBuf,
    _lock: File,
    core: Arc<crate::core::Core>,
    me: Weak<Persistence>,
    catalog: Mutex<Catalog>,
    attached: Mutex<HashMap<usize, Attached>>,
    settings: Mutex<Settings>,
    jobs: Mutex<Jobs>,
    jobs_cv: Condvar,
    status: Mutex<Status>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Earliest next recovery attempt per broken tenant (backoff while the disk stays full).
    retry_at: Mutex<HashMap<usize, Instant>>,
    last_tick_save: Mutex<Instant>,
}

fn key_of(t: &Arc<Tenant>) -> usize {
    Arc::as_ptr(t) as usize
}

fn state_name(s: TenantState) -> &'static str {
    match s {
        TenantState::Moved => "moved",
        TenantState::Suspended => "suspended",
        _ => "active",
    }
}

impl Persistence {
    /// Opens `settings.dir` (creating it), loads every tenant into `registry`, and from then on
    /// journals their writes and registry changes. Fails (naming file and offset) when a file is
    /// damaged anywhere but at the torn tail of a log.
    pub fn open(
        settings: Settings,
        registry: &Arc<Registry>,
    ) -> Result<Arc<Persistence>, OpenError> {
        let started = Instant::now();
        let root = settings.dir.clone();
        let dir_err = |e: std::io::Error| OpenError::Dir {
            path: root.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(root.join(paths::TENANTS)).map_err(dir_err)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join(paths::LOCK))
            .map_err(dir_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(root)),
            Err(std::fs::TryLockError::Error(e)) => return Err(dir_err(e)),
        }
        let (catalog, cat_load) = Catalog::open(&root)?;
        let core = crate::core::Core::new(settings.appendfsync);
        let mut summary = LoadSummary::default();
        if let Some((offset, _)) = cat_load.torn {
            summary.torn.push((catalog.path().to_path_buf(), offset));
        }

        // Tenants from the catalog, into the registry.
        let records: Vec<TenantRecord> = catalog.tenants().cloned().collect();
        let mut to_load: Vec<(Arc<Tenant>, TenantRecord)> = Vec::new();
        for rec in &records {
            let credential = match &rec.credential {
                Some(c) => Some(Credential::decode(c).map_err(|e| {
                    OpenError::Load(LoadError::new(
                        catalog.path(),
                        format!("tenant '{}': {e}", rec.id),
                    ))
                })?),
                None => None,
            };
            let limits = TenantLimits {
                maxmemory: rec.maxmemory,
                maxkeys: rec.maxkeys,
                ops: rec.ops,
                maxclients: rec.maxclients,
            };
            let t = match registry.get(&rec.id) {
                // The built-in default tenant exists already: give it its saved settings.
                Some(t) if rec.id == ferrite_tenancy::DEFAULT_TENANT => {
                    t.set_credential(credential);
                    t.set_limits(limits);
                    t
                }
                _ => {
                    let t = Arc::new(Tenant::new(&rec.id, credential, limits));
                    registry.restore(t.clone());
                    t
                }
            };
            t.restore_created_at(rec.created_ms);
            let users: Vec<ferrite_tenancy::acl::UserRecord> = rec
                .acl_users
                .iter()
                .map(|u| ferrite_tenancy::acl::UserRecord {
                    name: u.name.clone(),
                    tokens: u.rules.clone(),
                })
                .collect();
            t.acl().restore(&users).map_err(|e| {
                OpenError::Load(LoadError::new(
                    catalog.path(),
                    format!("tenant '{}': {e}", rec.id),
                ))
            })?;
            match rec.state.as_str() {
                "moved" => t.set_moved(rec.moved_to.as_deref().unwrap_or_default()),
                "suspended" => t.set_state(TenantState::Suspended),
                _ => t.set_state(TenantState::Active),
            }
            to_load.push((t, rec.clone()));
        }

        // Their data, several tenants at a time.
        let loads = load_all(&root, &to_load)?;
        let persistence = Arc::new_cyclic(|me| Persistence {
            root: root.clone(),
            _lock: lock,
            core: core.clone(),
            me: me.clone(),
            catalog: Mutex::new(catalog),
            attached: Mutex::new(HashMap::new()),
            settings: Mutex::new(settings),
            jobs: Mutex::new(Jobs::default()),
            jobs_cv: Condvar::new(),
            status: Mutex::new(Status {
                last_save_unix: ferrite_storage::now_ms() / 1000,
                last_save_ok: true,
                last_save_secs: -1,
                save_in_progress: None,
                saves: 0,
                rewrites: 0,
                last_rewrite_ok: true,
                last_rewrite_secs: -1,
                rewrite_scheduled: false,
                rewrite_failures_in_a_row: 0,
                changes_at_last_save: 0,
                snapshots: 0,
                snapshot_failures: 0,
                compactions: 0,
                last_snapshot: None,
                load: LoadSummary::default(),
            }),
            threads: Mutex::new(Vec::new()),
            retry_at: Mutex::new(HashMap::new()),
            last_tick_save: Mutex::new(Instant::now()),
        });
        let mut keep_dirs = Vec::new();
        for ((t, rec), load) in to_load.into_iter().zip(loads) {
            let dir = paths::tenant_dir(&root, rec.incarnation, &rec.id);
            // A moved tenant's data is loaded too, as the frozen copy it was: until the
            // migration is known to be complete, CANCEL may still give the tenant back here.
            let Some(load) = load else { continue };
            summary.tenants += 1;
            summary.keys += load.keys;
            summary.expired += load.expired;
            summary.effects += load.effects;
            summary.replay_errors += load.replay_errors;
            if let Some((p, off, _)) = &load.torn {
                summary.torn.push((p.clone(), *off));
            }
            let log =
                persistence.attach(&t, rec.incarnation, false, load.generation, load.last_log);
            log.sizes.snapshot.store(load.snapshot_bytes, Relaxed);
            log.sizes.since_snapshot.store(load.log_bytes, Relaxed);
            keep_dirs.push(dir);
        }
        // Directories nothing refers to: staged imports (dropped on restart, as the source
        // expects), tenants deleted just before a crash.
        if let Ok(rd) = std::fs::read_dir(root.join(paths::TENANTS)) {
            for entry in rd.flatten() {
                let p = entry.path();
                if !keep_dirs.contains(&p) {
                    tracing::info!(dir = %p.display(), "removing data of a tenant this server no longer has (a staged import or a deleted tenant)");
                    let _ = std::fs::remove_dir_all(&p);
                    summary.dropped_dirs.push(p);
                }
            }
        }
        // Tenants that exist without a record (the built-in default on a new directory).
        for t in registry.list() {
            if persistence.attached.lock().contains_key(&key_of(&t)) {
                continue;
            }
            TenantStore::save(&*persistence, &t).map_err(|e| OpenError::Dir {
                path: root.clone(),
                message: e,
            })?;
        }
        summary.took_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            dir = %root.display(),
            tenants = summary.tenants,
            keys = summary.keys,
            expired = summary.expired,
            effects = summary.effects,
            took_ms = summary.took_ms,
            "data loaded"
        );
        persistence.status.lock().load = summary;
        registry.set_store(persistence.clone());
        persistence.start_threads().map_err(|e| OpenError::Dir {
            path: root.clone(),
            message: format!("cannot start persistence threads: {e}"),
        })?;
        Ok(persistence)
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }

    fn start_threads(&self) -> std::io::Result<()> {
        let sync = self.core.spawn_sync_thread()?;
        let me = self.me.clone();
        let jobs = std::thread::Builder::new()
            .name("ferrite-snapshot".into())
            .spawn(move || {
                while let Some(p) = me.upgrade() {
                    if !p.run_next_job() {
                        break;
                    }
                }
            })?;
        let mut t = self.threads.lock();
        t.push(sync);
        t.push(jobs);
        Ok(())
    }

    /// Journals `t`'s writes from now on: a log in its directory, subscribed to its keyspace.
    fn attach(
        &self,
        t: &Arc<Tenant>,
        incarnation: u64,
        staged: bool,
        generation: u64,
        last_log: Option<(File, u64)>,
    ) -> Arc<TenantLog> {
        let dir = paths::tenant_dir(&self.root, incarnation, t.id());
        let log = TenantLog::new(
            self.core.clone(),
            t.id(),
            incarnation,
            dir,
            generation,
            last_log,
        );
        let ks = t.keyspace();
        let sink = ks.lock().subscribe(log.clone());
        t.set_durability(log.clone());
        self.core.register(&log);
        self.attached.lock().insert(
            key_of(t),
            Attached {
                tenant: t.clone(),
                incarnation,
                log: log.clone(),
                keyspace: ks,
                sink,
                staged,
            },
        );
        log
    }

    /// Stops journaling `t` and returns its incarnation.
    fn detach(&self, t: &Arc<Tenant>) -> Option<u64> {
        let a = self.attached.lock().remove(&key_of(t))?;
        // Called from async tasks (TENANT.DELETE, an import's end): never a blocking wait for
        // a busy tenant's lock. The closed log drops what is published until then.
        a.log.close();
        let sink = a.sink;
        a.keyspace.lock_later(move |db| {
            db.unsubscribe(sink);
        });
        self.core.forget(t.id());
        Some(a.incarnation)
    }

    fn record_of(t: &Tenant, incarnation: u64) -> TenantRecord {
        let l = t.limits();
        TenantRecord {
            id: t.id().to_string(),
            incarnation,
            credential: t.credential().map(|c| c.encode()),
            maxmemory: l.maxmemory,
            maxkeys: l.maxkeys,
            ops: l.ops,
            maxclients: l.maxclients,
            state: state_name(t.state()).to_string(),
            moved_to: (t.state() == TenantState::Moved)
                .then(|| t.moved_to())
                .flatten(),
            created_ms: t.created_at(),
            acl_users: t
                .acl()
                .records()
                .into_iter()
                .map(|u| AclUserRecord {
                    name: u.name,
                    rules: u.tokens,
                })
                .collect(),
        }
    }

    // -- status -------------------------------------------------------------------------------

    /// Writes may run (no log is broken).
    #[inline]
    pub fn writable(&self) -> bool {
        self.core.writable()
    }

    /// The error refused writes get, after `MISCONF `.
    pub fn error_text(&self) -> String {
        self.core.error_text()
    }

    pub fn policy(&self) -> FsyncPolicy {
        self.core.policy()
    }

    pub fn set_policy(&self, p: FsyncPolicy) {
        self.core.set_policy(p);
        self.settings.lock().appendfsync = p;
    }

    pub fn update_settings(&self, f: impl FnOnce(&mut Settings)) {
        let mut s = self.settings.lock();
        f(&mut s);
        self.core.set_policy(s.appendfsync);
    }

    pub fn status(&self) -> Status {
        self.status.lock().clone()
    }

    pub fn stats(&self) -> &crate::core::Stats {
        &self.core.stats
    }

    pub fn failing(&self) -> Vec<(String, String)> {
        self.core.failing()
    }

    pub fn last_error(&self) -> Option<String> {
        self.core.last_error()
    }

    /// Effects since the last full snapshot.
    pub fn changes_since_save(&self) -> u64 {
        let at = self.status.lock().changes_at_last_save;
        self.core.stats.changes.load(Relaxed).saturating_sub(at)
    }

    /// Bytes in log files not compacted yet, and in the newest snapshots, over all tenants.
    pub fn sizes(&self) -> (u64, u64) {
        let a = self.attached.lock();
        a.values().fold((0, 0), |(l, s), x| {
            (
                l + x.log.sizes.since_snapshot.load(Relaxed),
                s + x.log.sizes.snapshot.load(Relaxed),
            )
        })
    }

    /// Bytes published but not yet handed to the kernel.
    pub fn buffered(&self) -> u64 {
        let logs: Vec<_> = self
            .attached
            .lock()
            .values()
            .map(|a| a.log.clone())
            .collect();
        logs.iter().map(|l| l.buffered()).sum()
    }

    // -- the periodic tick ---------------------------------------------------------------------

    /// Called about every 100 ms: writes what connections did not (expiries, imports), and
    /// schedules snapshots: recovery of broken logs, compaction by size, the `save` schedule.
    pub fn tick(&self) {
        // A moved tenant whose frozen copy was released (retention over): its data goes too.
        let released: Vec<Arc<Tenant>> = self
            .attached
            .lock()
            .values()
            .filter(|a| {
                a.tenant.state() == TenantState::Moved
                    && !Arc::ptr_eq(&a.keyspace, &a.tenant.keyspace())
            })
            .map(|a| a.tenant.clone())
            .collect();
        for t in released {
            if let Some(inc) = self.detach(&t) {
                let _ = std::fs::remove_dir_all(paths::tenant_dir(&self.root, inc, t.id()));
                tracing::info!(tenant = %t.id(), "removed the data of a tenant handed over to another server");
            }
        }
        let list: Vec<(usize, Arc<TenantLog>, bool)> = self
            .attached
            .lock()
            .iter()
            .map(|(k, a)| (*k, a.log.clone(), a.tenant.state() == TenantState::Moved))
            .collect();
        let settings = self.settings.lock().clone();
        for (key, log, moved) in list {
            if log.is_broken() {
                let mut retry = self.retry_at.lock();
                let due = retry.get(&key).is_none_or(|t| Instant::now() >= *t);
                if due && !log.snapshotting.load(SeqCst) {
                    retry.insert(key, Instant::now() + Duration::from_secs(1));
                    drop(retry);
                    self.enqueue(Job::Tenant(key));
                }
                continue;
            }
            let _ = log.flush();
            if moved || log.snapshotting.load(SeqCst) {
                continue;
            }
            let since = log.sizes.since_snapshot.load(Relaxed);
            let base = log.sizes.snapshot.load(Relaxed);
            if settings.auto_compact_percentage > 0
                && since >= settings.auto_compact_min_size
                && since.saturating_mul(100)
                    >= base.saturating_mul(settings.auto_compact_percentage)
            {
                log.snapshotting.store(true, SeqCst);
                self.enqueue(Job::Tenant(key));
            }
        }
        // Redis's `save` points: after N seconds with at least M changes.
        if !settings.save.is_empty() {
            let elapsed = self.last_tick_save.lock().elapsed().as_secs();
            let changes = self.changes_since_save();
            let due = settings
                .save
                .iter()
                .any(|(secs, n)| changes >= *n && *n > 0 && elapsed >= *secs);
            let idle = {
                let j = self.jobs.lock();
                j.running.is_none() && !j.queue.iter().any(|x| matches!(x, Job::All(_)))
            };
            if due && idle {
                *self.last_tick_save.lock() = Instant::now();
                self.enqueue(Job::All(SaveKind::Snapshot));
            }
        }
    }

    fn enqueue(&self, job: Job) {
        let mut j = self.jobs.lock();
        j.queue.push_back(job);
        drop(j);
        self.jobs_cv.notify_one();
    }

    /// Runs one job (waiting for one); false when stopping.
    fn run_next_job(&self) -> bool {
        let job = {
            let mut j = self.jobs.lock();
            loop {
                if j.stop {
                    return false;
                }
                if let Some(job) = j.queue.pop_front() {
                    match &job {
                        Job::All(kind) => {
                            j.running = Some(*kind);
                            self.begin_save(*kind);
                        }
                        Job::Tenant(_) => j.running_tenant = true,
                    }
                    break job;
                }
                self.jobs_cv.wait_for(&mut j, Duration::from_millis(500));
            }
        };
        match job {
            Job::All(kind) => {
                let result = self.snapshot_all();
                // One critical section for both: INFO must not say no save runs while BGSAVE
                // still refuses to start one.
                let mut j = self.jobs.lock();
                self.finish_save(kind, result);
                j.running = None;
                let rewrite_waiting = j
                    .queue
                    .iter()
                    .any(|x| matches!(x, Job::All(SaveKind::Rewrite)));
                drop(j);
                self.status.lock().rewrite_scheduled = rewrite_waiting;
            }
            Job::Tenant(key) => {
                let target = self
                    .attached
                    .lock()
                    .get(&key)
                    .map(|a| (a.keyspace.clone(), a.log.clone(), a.tenant.clone()));
                if let Some((ks, log, tenant)) = target {
                    let broken = log.is_broken();
                    if Arc::ptr_eq(&ks, &tenant.keyspace()) && !log.is_closed() {
                        log.snapshotting.store(true, SeqCst);
                        let started = Instant::now();
                        let result = snapshot::take(&ks, &log);
                        let took = started.elapsed().as_secs() as i64;
                        match result {
                            Ok(info) => {
                                let mut s = self.status.lock();
                                s.snapshots += 1;
                                s.compactions += 1;
                                s.rewrite_done(true, took);
                                s.last_snapshot = Some(info);
                                if broken {
                                    self.retry_at.lock().remove(&key);
                                }
                            }
                            Err(e) => {
                                let mut s = self.status.lock();
                                s.snapshot_failures += 1;
                                s.rewrite_done(false, took);
                                drop(s);
                                if !broken {
                                    tracing::warn!(tenant = %tenant.id(), error = %e, "compaction failed");
                                }
                            }
                        }
                    }
                    log.snapshotting.store(false, SeqCst);
                }
                self.jobs.lock().running_tenant = false;
            }
        }
        self.jobs_cv.notify_all();
        true
    }

    /// Snapshots every tenant served here (and staged imports); the first error is returned
    /// after trying them all.
    fn snapshot_all(&self) -> Result<(), String> {
        let changes_before = self.core.stats.changes.load(Relaxed);
        let targets: Vec<(Arc<Keyspace>, Arc<TenantLog>, Arc<Tenant>)> = self
            .attached
            .lock()
            .values()
            .filter(|a| a.tenant.state() != TenantState::Moved)
            .map(|a| (a.keyspace.clone(), a.log.clone(), a.tenant.clone()))
            .collect();
        let mut first_error = None;
        for (ks, log, tenant) in targets {
            if !Arc::ptr_eq(&ks, &tenant.keyspace()) || log.is_closed() {
                continue;
            }
            // A compaction of this tenant may be running on another path (SAVE): wait for it.
            let deadline = Instant::now() + Duration::from_secs(600);
            while log
                .snapshotting
                .compare_exchange(false, true, SeqCst, SeqCst)
                .is_err()
            {
                if Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let r = snapshot::take(&ks, &log);
            log.snapshotting.store(false, SeqCst);
            match r {
                Ok(info) => {
                    let mut s = self.status.lock();
                    s.snapshots += 1;
                    s.last_snapshot = Some(info);
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant.id(), error = %e, "snapshot failed");
                    self.status.lock().snapshot_failures += 1;
                    first_error.get_or_insert(format!("tenant '{}': {e}", tenant.id()));
                }
            }
        }
        match first_error {
            None => {
                self.status.lock().changes_at_last_save = changes_before;
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    /// Shows a SAVE/BGSAVE/BGREWRITEAOF as in progress in the status (INFO's
    /// `rdb_bgsave_in_progress`, `aof_rewrite_in_progress`). Called with the jobs lock held, in
    /// the section that takes the job slot or queues the job to start at once; [`finish_save`]
    /// ends it.
    ///
    /// [`finish_save`]: Persistence::finish_save
    fn begin_save(&self, kind: SaveKind) {
        self.status.lock().save_in_progress = Some((kind, Instant::now()));
    }

    /// Records a finished SAVE/BGSAVE/BGREWRITEAOF in the status. Called with the jobs lock held
    /// (lock order: jobs, then status), in the section that frees the job slot.
    fn finish_save(&self, kind: SaveKind, result: Result<(), String>) {
        let mut s = self.status.lock();
        let took = s
            .save_in_progress
            .take()
            .map_or(0, |(_, t)| t.elapsed().as_secs() as i64);
        match kind {
            SaveKind::Snapshot => {
                s.last_save_ok = result.is_ok();
                s.last_save_secs = took;
                if result.is_ok() {
                    s.saves += 1;
                    s.last_save_unix = ferrite_storage::now_ms() / 1000;
                }
            }
            SaveKind::Rewrite => s.rewrite_done(result.is_ok(), took),
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "background save failed");
        }
    }

    // -- commands ------------------------------------------------------------------------------

    /// SAVE: snapshots everything now and returns when done (blocking: call it off the async
    /// workers). Writes keep running meanwhile.
    pub fn save_now(&self) -> Result<(), String> {
        {
            let mut j = self.jobs.lock();
            if j.running.is_some() {
                return Err("Background save already in progress".into());
            }
            j.running = Some(SaveKind::Snapshot);
            self.begin_save(SaveKind::Snapshot);
        }
        let result = self.snapshot_all();
        {
            // As for a background save: the status and the job slot change together.
            let mut j = self.jobs.lock();
            self.finish_save(SaveKind::Snapshot, result.clone());
            j.running = None;
        }
        self.jobs_cv.notify_all();
        result
    }

    /// BGSAVE [SCHEDULE]: the reply text, or the error.
    pub fn bgsave(&self, schedule: bool) -> Result<&'static str, String> {
        let mut j = self.jobs.lock();
        let busy = j.running.is_some() || j.queue.iter().any(|x| matches!(x, Job::All(_)));
        if j.running == Some(SaveKind::Snapshot)
            || j.queue
                .iter()
                .any(|x| matches!(x, Job::All(SaveKind::Snapshot)))
        {
            return Err("Background save already in progress".into());
        }
        if busy && !schedule {
            return Err(
                "Another child process is active (AOF?): can't BGSAVE right now. Use BGSAVE SCHEDULE in order to schedule a BGSAVE whenever possible."
                    .into(),
            );
        }
        j.queue.push_back(Job::All(SaveKind::Snapshot));
        if !busy {
            // In progress from the reply on, as Redis's (forked at once) is: a client that polls
            // INFO right after must not see `rdb_bgsave_in_progress:0` while the job waits for
            // the snapshot thread to pick it up and a second BGSAVE is refused.
            self.begin_save(SaveKind::Snapshot);
        }
        drop(j);
        self.jobs_cv.notify_one();
        Ok(if busy {
            "Background saving scheduled"
        } else {
            "Background saving started"
        })
    }

    /// BGREWRITEAOF: compacts every tenant's log into a new snapshot.
    pub fn bgrewriteaof(&self) -> Result<&'static str, String> {
        let mut j = self.jobs.lock();
        if j.running == Some(SaveKind::Rewrite)
            || j.queue
                .iter()
                .any(|x| matches!(x, Job::All(SaveKind::Rewrite)))
        {
            return Err("Background append only file rewriting already in progress".into());
        }
        let busy = j.running.is_some();
        j.queue.push_back(Job::All(SaveKind::Rewrite));
        if !busy {
            // As for BGSAVE: in progress from the reply on.
            self.begin_save(SaveKind::Rewrite);
        }
        drop(j);
        self.jobs_cv.notify_one();
        if busy {
            self.status.lock().rewrite_scheduled = true;
            Ok("Background append only file rewriting scheduled")
        } else {
            Ok("Background append only file rewriting started")
        }
    }

    /// LASTSAVE: Unix seconds of the last successful full snapshot (or of startup).
    pub fn lastsave(&self) -> u64 {
        self.status.lock().last_save_unix
    }

    /// Waits until no snapshot job is queued or running (tests, shutdown).
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut j = self.jobs.lock();
        while j.running.is_some() || j.running_tenant || !j.queue.is_empty() {
            if Instant::now() >= deadline {
                return false;
            }
            self.jobs_cv.wait_for(&mut j, Duration::from_millis(50));
        }
        true
    }

    /// Writes and fsyncs every log (SHUTDOWN, and before a tenant's activation is confirmed).
    pub fn flush_all(&self) -> Result<(), String> {
        let logs: Vec<_> = self
            .attached
            .lock()
            .values()
            .map(|a| a.log.clone())
            .collect();
        let mut first = Ok(());
        for l in logs {
            if l.is_closed() {
                continue;
            }
            if let Err(e) = l.flush_and_sync()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    /// Stops: lets a running snapshot finish, writes and fsyncs every log, stops the threads.
    pub fn shutdown(&self) {
        {
            let mut j = self.jobs.lock();
            j.queue.clear();
        }
        self.wait_idle(Duration::from_secs(600));
        if let Err(e) = self.flush_all() {
            tracing::error!(error = %e, "persistence: could not write everything at shutdown");
        }
        self.jobs.lock().stop = true;
        self.jobs_cv.notify_all();
        self.core.stop_sync_thread();
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            let _ = t.join();
        }
        let attached: Vec<_> = self
            .attached
            .lock()
            .values()
            .map(|a| a.log.clone())
            .collect();
        for l in attached {
            l.close();
        }
    }
}

impl TenantStore for Persistence {
    fn save(&self, t: &Arc<Tenant>) -> Result<(), String> {
        let existing = self
            .attached
            .lock()
            .get(&key_of(t))
            .map(|a| (a.incarnation, a.staged, a.log.clone()));
        let incarnation = match existing {
            Some((inc, staged, log)) => {
                if staged && t.state() != TenantState::Moved {
                    // An import being activated: its data must be on disk before it counts.
                    log.flush_and_sync()?;
                    if let Some(a) = self.attached.lock().get_mut(&key_of(t)) {
                        a.staged = false;
                    }
                }
                inc
            }
            None => {
                let inc = self
                    .catalog
                    .lock()
                    .new_incarnation()
                    .map_err(|e| self.catalog_error(e))?;
                self.attach(t, inc, false, 1, None);
                inc
            }
        };
        let rec = Self::record_of(t, incarnation);
        let replaced = {
            let mut c = self.catalog.lock();
            let before = c
                .tenant(t.id())
                .map(|r| r.incarnation)
                .filter(|i| *i != incarnation);
            c.put_tenant(rec).map_err(|e| self.catalog_error(e))?;
            before
        };
        // An import activated over a `moved` record of the same tenant (it came back): the
        // record now names the new data; the old copy goes.
        if let Some(old) = replaced {
            let stale: Vec<Arc<Tenant>> = self
                .attached
                .lock()
                .values()
                .filter(|a| a.incarnation == old)
                .map(|a| a.tenant.clone())
                .collect();
            for s in stale {
                self.detach(&s);
            }
            let _ = std::fs::remove_dir_all(paths::tenant_dir(&self.root, old, t.id()));
        }
        Ok(())
    }

    fn delete(&self, t: &Arc<Tenant>) -> Result<(), String> {
        let Some(incarnation) = self.detach(t) else {
            return Ok(());
        };
        self.catalog
            .lock()
            .delete_tenant(t.id(), incarnation)
            .map_err(|e| self.catalog_error(e))?;
        let dir = paths::tenant_dir(&self.root, incarnation, t.id());
        // Harmless if it fails: nothing refers to it; the next start removes it.
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted tenant's data");
        }
        Ok(())
    }

    fn staged(&self, t: &Arc<Tenant>) {
        let inc = match self.catalog.lock().new_incarnation() {
            Ok(i) => i,
            Err(e) => {
                // The import runs in memory; its activation will fail to persist and say so.
                self.core.note_error(&format!("catalog: {e}"));
                return;
            }
        };
        self.attach(t, inc, true, 1, None);
    }

    fn unstaged(&self, t: &Arc<Tenant>) {
        if let Some(inc) = self.detach(t) {
            let _ = std::fs::remove_dir_all(paths::tenant_dir(&self.root, inc, t.id()));
        }
    }
}

impl Persistence {
    /// Replaces `t`'s data with what the private keyspace `fresh` holds (a restore from a
    /// backup), atomically for clients and on disk: [`Persistence::begin_replace`], `fresh`'s
    /// contents written into its snapshot, [`Persistence::finish_replace`]. `fresh` is left
    /// empty. Blocking: call it off the async workers.
    pub fn replace_data(
        &self,
        t: &Arc<Tenant>,
        fresh: &Arc<Keyspace>,
    ) -> Result<OldContents, String> {
        let mut replacement = self.begin_replace(t)?;
        let Some(mut copy) = ferrite_storage::PointInTimeCopy::open(fresh) else {
            return Err("the restored data is being copied by something else".into());
        };
        let writer = replacement.writer();
        writer.set_keys(fresh.len());
        let mut chunk = Vec::new();
        loop {
            chunk.clear();
            let mut n = 0u32;
            let more = copy.step(1024, |k, e| {
                record::put_entry(&mut chunk, k, e);
                n += 1;
            });
            writer.append_encoded(&chunk, n)?;
            if !more {
                break;
            }
        }
        drop(copy);
        self.finish_replace(t, replacement, fresh)
    }

    /// Starts replacing `t`'s data with data still to be loaded (a restore): from here until
    /// the returned [`Replacement`] is finished or dropped, no snapshot of `t` runs, and the
    /// loader hands every key it loads to [`Replacement::writer`], which writes them as the
    /// tenant's next snapshot (`.tmp`) while the load goes on, instead of writing them in a
    /// second pass afterwards. Writes to `t` keep running meanwhile (to its old data and log).
    /// Blocking.
    pub fn begin_replace(&self, t: &Arc<Tenant>) -> Result<Replacement, String> {
        let target = self
            .attached
            .lock()
            .get(&key_of(t))
            .map(|a| (a.keyspace.clone(), a.log.clone()));
        let Some((ks, log)) = target else {
            return Err(format!(
                "tenant '{}' is not journaled by this server's persistence",
                t.id()
            ));
        };
        if !Arc::ptr_eq(&ks, &t.keyspace()) || log.is_closed() {
            return Err(format!("tenant '{}' is being handed over", t.id()));
        }
        // No compaction of this tenant meanwhile: it would rotate the log under us.
        let deadline = Instant::now() + Duration::from_secs(600);
        while log
            .snapshotting
            .compare_exchange(false, true, SeqCst, SeqCst)
            .is_err()
        {
            if Instant::now() > deadline {
                return Err("a snapshot of this tenant has been running for 10 minutes".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let claim = SnapshotClaim(log);
        let log = &claim.0;
        if log.flush().is_ok() {
            log.sync();
        }
        // Only the keyspace's critical sections rotate the log, and we hold `snapshotting`:
        // the generation the rotation at the end will start is known now (checked again then).
        let generation = log.generation() + 1;
        let header = record::FileHeader {
            tenant: log.tenant.clone(),
            incarnation: log.incarnation,
            generation,
            // Not a copy of a keyspace at a version: data loaded from elsewhere.
            version: 0,
            created_ms: ferrite_storage::now_ms(),
            keys: None,
        };
        let tmp = log
            .dir
            .join(format!("{}.tmp", paths::snapshot_file(generation)));
        let writer = snapshot::SnapshotWriter::create(&tmp, header, None)?;
        Ok(Replacement {
            ks,
            generation,
            writer,
            claim,
        })
    }

    /// Ends a replacement begun with [`Persistence::begin_replace`]: `fresh` (a keyspace nobody
    /// else uses) must hold exactly what was handed to the writer. Its libraries complete the
    /// snapshot, which is fsynced; then, in one critical section of the tenant's keyspace, the
    /// log is rotated, the snapshot renamed into place (directory fsynced) and the keyspace's
    /// contents swapped ([`ferrite_storage::Db::replace_contents`]). A crash before the rename
    /// leaves the old data (nobody saw the new); after it, the new snapshot plus the new log
    /// are the tenant. `fresh` is left empty; the old contents are returned, to be freed
    /// outside any lock.
    pub fn finish_replace(
        &self,
        t: &Arc<Tenant>,
        replacement: Replacement,
        fresh: &Arc<Keyspace>,
    ) -> Result<OldContents, String> {
        let (keys, libraries) = {
            let db = fresh.lock();
            (db.len() as u64, db.scripting().libraries().clone())
        };
        let Replacement {
            ks,
            generation,
            mut writer,
            claim,
        } = replacement;
        if writer.entries() != keys {
            return Err(format!(
                "the snapshot of the restored data has {} keys, the data {keys}",
                writer.entries()
            ));
        }
        writer.libraries(&libraries)?;
        let written = writer.finish()?;
        let log = &claim.0;
        let final_path = log.dir.join(paths::snapshot_file(generation));
        let tmp = log
            .dir
            .join(format!("{}.tmp", paths::snapshot_file(generation)));
        // As snapshot::take does: the next log file exists and is durable before the rotation,
        // and the switch to it happens on this thread right after it.
        if let Err(e) = log.prepare_next() {
            tracing::warn!(tenant = %log.tenant, "cannot prepare the next log file: {e}");
        }
        // (The attachment is checked before the keyspace locks are taken: never the other
        // way round.)
        let attached = self
            .attached
            .lock()
            .get(&key_of(t))
            .is_some_and(|a| Arc::ptr_eq(&a.log, log));
        let mut fresh_db = fresh.lock();
        let mut db = ks.lock();
        if log.generation() + 1 != generation {
            drop(db);
            let _ = std::fs::remove_file(&tmp);
            return Err("the tenant's log moved on during the restore; try again".into());
        }
        // The load took a while: the tenant may have been handed over, or deleted and created
        // again, meanwhile (its keyspace and log are then others).
        if !attached || !Arc::ptr_eq(&ks, &t.keyspace()) || log.is_closed() {
            drop(db);
            let _ = std::fs::remove_file(&tmp);
            return Err(format!(
                "tenant '{}' changed during the restore (handed over, or deleted); nothing was replaced",
                t.id()
            ));
        }
        let g = log.rotate_locked();
        // The rotation alone changes nothing (the next log continues the old data), so a
        // failure here leaves the tenant as it was.
        if let Err(e) = std::fs::rename(&tmp, &final_path).and_then(|()| paths::sync_dir(&log.dir))
        {
            drop(db);
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&final_path);
            let _ = paths::sync_dir(&log.dir);
            return Err(format!("cannot put {} in place: {e}", final_path.display()));
        }
        let old = db.replace_contents(&mut fresh_db, ferrite_storage::now_ms());
        drop(db);
        drop(fresh_db);
        let _ = log.flush();
        if !log.snapshot_done(g, written.bytes) {
            tracing::warn!(tenant = %log.tenant, "restored, but the new log could not be started: writes are refused until a snapshot succeeds");
        }
        snapshot::remove_older(&log.dir, g);
        let mut s = self.status.lock();
        s.snapshots += 1;
        s.last_snapshot = Some(SnapshotInfo {
            generation: g,
            entries: written.entries,
            bytes: written.bytes,
            pre_images: 0,
            took_ms: 0,
        });
        Ok(old)
    }

    /// Keeps a migration's record (the migration manager's description of it, opaque here) in
    /// the catalog, fsynced: the store behind the server's `MigrationRecordSink`. An unchanged
    /// record writes nothing.
    pub fn put_migration(&self, id: &str, record: serde_json::Value) -> Result<(), String> {
        self.catalog
            .lock()
            .put_migration(id, record)
            .map_err(|e| self.catalog_error(e))
    }

    /// Drops a migration's record (history the operator cleared).
    pub fn forget_migration(&self, id: &str) -> Result<(), String> {
        self.catalog
            .lock()
            .forget_migration(id)
            .map_err(|e| self.catalog_error(e))
    }

    /// Whether the catalog keeps a record of migration `id`.
    pub fn has_migration(&self, id: &str) -> bool {
        self.catalog.lock().migrations().any(|(k, _)| k == id)
    }

    /// The migration records kept, for `MigrationManager::restore` at startup.
    pub fn migrations(&self) -> Vec<(String, serde_json::Value)> {
        self.catalog
            .lock()
            .migrations()
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect()
    }

    fn catalog_error(&self, e: std::io::Error) -> String {
        let msg = format!("catalog {}: {e}", self.root.join(paths::CATALOG).display());
        self.core.note_error(&msg);
        msg
    }
}

/// Loads every tenant's directory, in parallel (one thread per core, at most the tenants).
fn load_all(
    root: &Path,
    tenants: &[(Arc<Tenant>, TenantRecord)],
) -> Result<Vec<Option<load::TenantLoad>>, OpenError> {
    let work: Vec<usize> = (0..tenants.len()).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(work.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<load::TenantLoad, LoadError>>>> =
        Mutex::new((0..tenants.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    let Some(&idx) = work.get(i) else { break };
                    let (t, rec) = &tenants[idx];
                    let dir = paths::tenant_dir(root, rec.incarnation, &rec.id);
                    let ks = t.keyspace();
                    let r = {
                        let mut db = ks.lock();
                        load::load_tenant(&dir, &rec.id, rec.incarnation, &mut db, true)
                    };
                    results.lock()[idx] = Some(r);
                }
            });
        }
    });
    let mut out = Vec::with_capacity(tenants.len());
    for r in results.into_inner() {
        match r {
            None => out.push(None),
            Some(Ok(l)) => out.push(Some(l)),
            Some(Err(e)) => return Err(OpenError::Load(e)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_commands::replay::Replayer;
    use ferrite_storage::OwnedArgv;
    use ferrite_tenancy::{CreateOptions, TenancySettings};

    fn settings(dir: &Path) -> Settings {
        Settings {
            dir: dir.to_path_buf(),
            appendfsync: FsyncPolicy::Everysec,
            save: Vec::new(),
            auto_compact_percentage: 100,
            auto_compact_min_size: 64 << 20,
        }
    }

    /// Runs commands on a tenant as a connection would (effects published to its log).
    fn run(t: &Tenant, now: u64, cmds: &[&[&str]]) {
        let ks = t.keyspace();
        let mut db = ks.lock();
        let mut r = Replayer::new();
        for c in cmds {
            let argv: OwnedArgv = c.iter().map(|a| a.as_bytes().to_vec()).collect();
            r.apply(&mut db, now, ferrite_storage::Argv::Owned(&argv))
                .unwrap();
        }
    }

    fn digest(t: &Tenant) -> (usize, u64) {
        let ks = t.keyspace();
        let db = ks.lock();
        (db.len(), db.digest().combined())
    }

    fn registry() -> Arc<Registry> {
        Arc::new(Registry::new(TenancySettings::default()))
    }

    /// From BGSAVE's (and BGREWRITEAOF's) reply on, the status says a save is in progress or
    /// that it is done: never neither while a second one would be refused as "in progress".
    #[test]
    fn a_started_background_save_is_in_progress_or_done_from_its_reply_on() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry();
        let p = Persistence::open(settings(dir.path()), &reg).unwrap();
        for _ in 0..50 {
            let before = p.status();
            assert_eq!(p.bgsave(false), Ok("Background saving started"));
            let now = p.status();
            assert!(
                now.save_in_progress.is_some() || now.saves > before.saves,
                "BGSAVE was accepted but the status shows neither a save in progress nor a new one"
            );
            assert!(p.wait_idle(Duration::from_secs(10)));
            let before = p.status();
            assert_eq!(
                p.bgrewriteaof(),
                Ok("Background append only file rewriting started")
            );
            let now = p.status();
            assert!(now.save_in_progress.is_some() || now.rewrites > before.rewrites);
            assert!(p.wait_idle(Duration::from_secs(10)));
        }
    }

    #[test]
    fn tenants_and_data_survive_a_restart_with_snapshots_in_between() {
        let dir = tempfile::tempdir().unwrap();
        let now = ferrite_storage::now_ms();
        let (want_acme, want_default) = {
            let reg = registry();
            let p = Persistence::open(settings(dir.path()), &reg).unwrap();
            let acme = reg
                .create(
                    "acme",
                    CreateOptions {
                        credential: Some(Credential::from_password(b"pw")),
                        maxkeys: Some(100),
                        maxclients: Some(7),
                        ..Default::default()
                    },
                )
                .unwrap();
            run(
                &acme,
                now,
                &[
                    &["SET", "a", "1"],
                    &["RPUSH", "l", "x", "y"],
                    &["SADD", "s", "m"],
                ],
            );
            run(&reg.default_tenant(), now, &[&["HSET", "h", "f", "v"]]);
            p.save_now().unwrap();
            run(
                &acme,
                now + 1,
                &[
                    &["INCR", "a"],
                    &["ZADD", "z", "1.5", "m"],
                    &["SET", "gone", "x", "PX", "1"],
                ],
            );
            run(&acme, now + 2, &[&["EXPIRE", "l", "1000"]]);
            p.tick();
            let w = (digest(&acme), digest(&reg.default_tenant()));
            p.shutdown();
            w
        };
        let reg = registry();
        let p = Persistence::open(settings(dir.path()), &reg).unwrap();
        let acme = reg.get("acme").expect("tenant restored");
        assert!(acme.check_password(b"pw"));
        assert_eq!(acme.limits().maxkeys, 100);
        assert_eq!(acme.limits().maxclients, 7);
        // `gone` expired while the server was down: 1 key fewer, the rest identical.
        assert_eq!(digest(&acme).0, want_acme.0 - 1);
        assert!(acme.keyspace().lock().peek(b"gone").is_none());
        assert_eq!(digest(&reg.default_tenant()), want_default);
        let st = p.status();
        assert_eq!(st.load.tenants, 2);
        assert_eq!(st.load.expired, 1);
        p.shutdown();
    }

    /// Group write: one `write` hands the records of every connection journaled before it to
    /// the kernel; a connection whose records it covered commits without a write of its own,
    /// and one whose records came after it gets its own.
    #[test]
    fn one_write_covers_the_commits_of_every_connection_journaled_before_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let reg = registry();
            let p = Persistence::open(settings(dir.path()), &reg).unwrap();
            let t = reg.default_tenant();
            let d = t.durability().expect("journaled").clone();
            let writes = || p.core.stats.writes.load(Relaxed);
            let now = ferrite_storage::now_ms();
            let before = d.journaled();
            run(&t, now, &[&["SET", "a", "1"]]);
            let first = d.journaled();
            run(&t, now, &[&["SET", "b", "2"], &["SET", "c", "3"]]);
            let second = d.journaled();
            assert!(before < first && first < second);
            let w0 = writes();
            // The second connection commits first: its write carries the first one's records.
            assert_eq!(d.commit(second), Ok(None));
            assert_eq!(writes(), w0 + 1);
            assert_eq!(d.commit(first), Ok(None));
            assert_eq!(writes(), w0 + 1, "covered: no write of its own");
            run(&t, now, &[&["SET", "d", "4"]]);
            let third = d.journaled();
            assert_eq!(d.commit(third), Ok(None));
            assert_eq!(writes(), w0 + 2);
            p.shutdown();
        }
        // What the commits acknowledged is in the file: a restart loads all four keys.
        let reg = registry();
        let p = Persistence::open(settings(dir.path()), &reg).unwrap();
        assert_eq!(reg.default_tenant().keyspace().len(), 4);
        p.shutdown();
    }

    #[test]
    fn deleted_moved_and_staged_tenants_come_back_as_they_should() {
        let dir = tempfile::tempdir().unwrap();
        let now = ferrite_storage::now_ms();
        {
            let reg = registry();
            let p = Persistence::open(settings(dir.path()), &reg).unwrap();
            let gone = reg.create("gone", CreateOptions::default()).unwrap();
            run(&gone, now, &[&["SET", "k", "v"]]);
            reg.delete("gone", true, None).unwrap();
            let away = reg.create("away", CreateOptions::default()).unwrap();
            run(&away, now, &[&["SET", "k", "v"]]);
            away.set_moved("10.1.2.3:7000");
            reg.persist(&away).unwrap();
            let staged = Arc::new(Tenant::new("incoming", None, TenantLimits::default()));
            staged.set_state(TenantState::Importing);
            reg.insert_import(staged.clone()).unwrap();
            run(&staged, now, &[&["SET", "k", "v"]]);
            p.tick();
            p.shutdown();
        }
        let reg = registry();
        let p = Persistence::open(settings(dir.path()), &reg).unwrap();
        assert!(reg.get("gone").is_none());
        assert!(
            reg.get("incoming").is_none(),
            "a staged import is dropped on restart"
        );
        let away = reg.get("away").unwrap();
        assert_eq!(away.state(), TenantState::Moved);
        assert_eq!(away.moved_to().as_deref(), Some("10.1.2.3:7000"));
        // Kept as the frozen copy (a CANCEL could still give it back) until it is released.
        assert_eq!(away.keyspace().len(), 1);
        assert!(
            !p.status().load.dropped_dirs.is_empty(),
            "the staged import's data went"
        );
        p.shutdown();
    }

    #[test]
    fn migration_records_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let p = Persistence::open(settings(dir.path()), &registry()).unwrap();
            p.put_migration("m1", serde_json::json!({"state": "streaming"}))
                .unwrap();
            p.put_migration("m1", serde_json::json!({"state": "completed"}))
                .unwrap();
            p.put_migration("m2", serde_json::json!({"state": "failed"}))
                .unwrap();
            p.forget_migration("m2").unwrap();
            p.shutdown();
        }
        let p = Persistence::open(settings(dir.path()), &registry()).unwrap();
        assert_eq!(
            p.migrations(),
            vec![("m1".to_string(), serde_json::json!({"state": "completed"}))]
        );
        p.shutdown();
    }

    #[test]
    fn a_second_server_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = Persistence::open(settings(dir.path()), &registry()).unwrap();
        let err = Persistence::open(settings(dir.path()), &registry())
            .err()
            .unwrap();
        assert!(matches!(err, OpenError::Locked(_)), "{err}");
        p.shutdown();
    }

    /// The snapshot thread creates (and fsyncs) the next generation's log file, so that the
    /// first writer after the rotation does not pay for it inside its commit.
    #[test]
    fn the_next_log_file_exists_before_any_write_after_a_snapshot() {
        use crate::paths::TenantFile;
        let dir = tempfile::tempdir().unwrap();
        let now = ferrite_storage::now_ms();
        let generations = |pick: fn(&TenantFile) -> Option<u64>| -> Vec<u64> {
            let mut found = Vec::new();
            for tenant_dir in std::fs::read_dir(dir.path().join(paths::TENANTS)).unwrap() {
                for f in std::fs::read_dir(tenant_dir.unwrap().path()).unwrap() {
                    let name = f.unwrap().file_name();
                    if let Some(g) = pick(&paths::classify(&name.to_string_lossy())) {
                        found.push(g);
                    }
                }
            }
            found
        };
        let want = {
            let reg = registry();
            let p = Persistence::open(settings(dir.path()), &reg).unwrap();
            let t = reg.default_tenant();
            run(&t, now, &[&["SET", "k", "v"]]);
            p.save_now().unwrap();
            let snapshots = generations(|f| match f {
                TenantFile::Snapshot(g) => Some(*g),
                _ => None,
            });
            let logs = generations(|f| match f {
                TenantFile::Log(g) => Some(*g),
                _ => None,
            });
            let newest = snapshots.iter().copied().max().expect("a snapshot file");
            assert!(
                logs.contains(&newest),
                "no log of generation {newest} before any write: {logs:?}"
            );
            // The data written after the snapshot lands in that log and survives a restart.
            run(&t, now, &[&["SET", "after", "1"]]);
            p.tick();
            let w = digest(&t);
            p.shutdown();
            w
        };
        let reg = registry();
        let p = Persistence::open(settings(dir.path()), &reg).unwrap();
        assert_eq!(digest(&reg.default_tenant()), want);
        p.shutdown();
    }

    #[test]
    fn a_snapshot_taken_while_writes_run_reloads_to_the_same_content() {
        let dir = tempfile::tempdir().unwrap();
        let now = ferrite_storage::now_ms();
        let want = {
            let reg = registry();
            let p = Persistence::open(settings(dir.path()), &reg).unwrap();
            let t = reg.default_tenant();
            for i in 0..20_000 {
                let k = format!("k{i}");
                run(&t, now, &[&["SET", &k, "value"]]);
            }
            let writer = {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let k = format!("k{}", (i * 7919) % 30_000);
                        run(&t, now, &[&["APPEND", &k, "+"]]);
                        if i % 100 == 0 {
                            run(&t, now, &[&["FLUSHDB"]]);
                        }
                    }
                })
            };
            p.save_now().unwrap();
            writer.join().unwrap();
            p.tick();
            let w = digest(&t);
            p.shutdown();
            w
        };
        let reg = registry();
        let p = Persistence::open(settings(dir.path()), &reg).unwrap();
        assert_eq!(digest(&reg.default_tenant()), want);
        p.shutdown();
    }

    /// A fresh keyspace holding `cmds` (not journaled: the data a restore loads).
    fn fresh_with(now: u64, cmds: &[&[&str]]) -> Arc<Keyspace> {
        let t = Tenant::new("scratch", None, TenantLimits::default());
        run(&t, now, cmds);
        t.keyspace()
    }

    fn tmp_files(dir: &Path) -> Vec<PathBuf> {
        walk(dir)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".tmp"))
            .collect()
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    /// The restore path: the new data's snapshot is written while it "loads" (keys handed to
    /// the writer one by one), then swapped in; after a restart the tenant is the new data plus
    /// what was written after the swap, never the old data.
    #[test]
    fn a_replacement_written_while_loading_is_what_a_restart_loads() {
        let dir = tempfile::tempdir().unwrap();
        let now = ferrite_storage::now_ms();
        let want = {
            let reg = registry();
            let p = Persistence::open(settings(dir.path()), &reg).unwrap();
            let acme = reg.create("acme", CreateOptions::default()).unwrap();
            run(
                &acme,
                now,
                &[&["SET", "old", "1"], &["SET", "shared", "old"]],
            );
            let cmds: &[&[&str]] = &[
                &["SET", "shared", "new"],
                &["RPUSH", "l", "a", "b"],
                &["HSET", "h", "f", "v"],
                &["SET", "ttl", "x", "PX", "100000"],
            ];
            let fresh = fresh_with(now, cmds);
            let mut r = p.begin_replace(&acme).unwrap();
            // Writes to the tenant keep running while it loads; they are replaced too.
            run(&acme, now, &[&["SET", "during", "1"]]);
            r.writer().set_keys(4);
            {
                let db = fresh.lock();
                for (k, e) in db.iter() {
                    r.writer()
                        .entry(k, &e.value().to_value(), e.expire_at(), e.modified_ms())
                        .unwrap();
                }
            }
            let want_digest = fresh.lock().digest().combined();
            let old = p.finish_replace(&acme, r, &fresh).unwrap();
            assert_eq!(old.len(), 3);
            assert_eq!(digest(&acme), (4, want_digest));
            assert!(fresh.lock().is_empty());
            assert!(tmp_files(dir.path()).is_empty());
            run(&acme, now, &[&["SET", "after", "1"]]);
            let w = digest(&acme);
            p.shutdown();
            w
        };
        let reg = registry();
        let p = Persistence::open(settings(dir.path()), &reg).unwrap();
        let acme = reg.get("acme").unwrap();
        assert_eq!(digest(&acme), want);
        assert!(acme.keyspace().lock().peek(b"old").is_none());
        assert!(acme.keyspace().lock().peek(b"during").is_none());
        p.shutdown();
    }

    /// A load that fails (the replacement is dropped unfinished) leaves the tenant and its
    /// files as they were, and the tenant's snapshots run again afterwards.
    #[test]
    fn an_abandoned_replacement_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let now = ferrite_storage::now_ms();
        let reg = registry();
        let p = Persistence::open(settings(dir.path()), &reg).unwrap();
        let acme = reg.create("acme", CreateOptions::default()).unwrap();
        run(&acme, now, &[&["SET", "old", "1"]]);
        let before = digest(&acme);
        let mut r = p.begin_replace(&acme).unwrap();
        for i in 0..5000 {
            let v = ferrite_storage::Value::string(vec![b'x'; 100]);
            r.writer()
                .entry(format!("k{i}").as_bytes(), &v, None, now)
                .unwrap();
        }
        assert_eq!(tmp_files(dir.path()).len(), 1);
        drop(r);
        assert!(tmp_files(dir.path()).is_empty());
        assert_eq!(digest(&acme), before);
        // A writer that disagrees with the data it claims to hold is refused, nothing swapped.
        let mut r = p.begin_replace(&acme).unwrap();
        let fresh = fresh_with(now, &[&["SET", "a", "1"], &["SET", "b", "2"]]);
        r.writer()
            .entry(b"a", &ferrite_storage::Value::string("1"), None, now)
            .unwrap();
        let Err(e) = p.finish_replace(&acme, r, &fresh) else {
            panic!("a writer short of the data's keys was accepted");
        };
        assert!(e.contains("1 keys, the data 2"), "{e}");
        assert_eq!(digest(&acme), before);
        assert!(tmp_files(dir.path()).is_empty());
        // Snapshots were given back: SAVE works and the data reloads.
        p.save_now().unwrap();
        p.shutdown();
        // Everything holding the first server's persistence goes (it keeps the directory's lock).
        drop((p, reg, acme));
        let reg = registry();
        let p = Persistence::open(settings(dir.path()), &reg).unwrap();
        assert_eq!(digest(&reg.get("acme").unwrap()), before);
        p.shutdown();
    }

    /// Snapshots carry their key count; files without one (written before it existed) and
    /// files whose count is forged still load, the forged one without reserving for it.
    #[test]
    fn snapshots_load_with_without_and_with_a_forged_key_count() {
        let dir = tempfile::tempdir().unwrap();
        let now = ferrite_storage::now_ms();
        let ks = fresh_with(now, &[&["SET", "a", "1"], &["SADD", "s", "x", "y"]]);
        let want = ks.lock().digest().combined();
        for keys in [Some(2), None, Some(u64::MAX), Some(0)] {
            let path = dir.path().join("snap.fsnp");
            let copy = ferrite_storage::PointInTimeCopy::open(&ks).unwrap();
            let header = record::FileHeader {
                tenant: "t".into(),
                incarnation: 1,
                generation: 1,
                version: copy.version(),
                created_ms: now,
                keys,
            };
            snapshot::write_file(copy, &path, &header, None, &Default::default(), &|_| {}).unwrap();
            let loaded = Keyspace::new();
            let (h, n) = snapshot::load(&path, &mut loaded.lock()).unwrap();
            assert_eq!((h.keys, n), (keys, 2));
            assert_eq!(loaded.lock().digest().combined(), want, "{keys:?}");
        }
    }

    /// A snapshot larger than the write-back step and than many `O_DIRECT` stages loads back
    /// whole, written either way (`O_DIRECT` where the temp dir's file system takes it, and
    /// through the page cache with its write-back thread), and the two files are the same bytes.
    #[test]
    fn a_snapshot_bigger_than_the_write_back_step_loads_back_written_either_way() {
        let dir = tempfile::tempdir().unwrap();
        let header = record::FileHeader {
            tenant: "t".into(),
            incarnation: 1,
            generation: 1,
            version: 0,
            created_ms: 0,
            keys: None,
        };
        let fresh = Keyspace::new();
        let mut files = Vec::new();
        for mode in [
            snapshot::WriteMode::DirectIfSupported,
            snapshot::WriteMode::Buffered,
        ] {
            let path = dir.path().join(format!("{mode:?}.fsnp"));
            let mut w =
                snapshot::SnapshotWriter::create_with(&path, header.clone(), None, mode).unwrap();
            assert!(w.set_keys(200_000));
            {
                let mut db = fresh.lock();
                for i in 0..200_000u32 {
                    let key = format!("key:{i:012}");
                    let value = ferrite_storage::Value::string(format!("{i:0100}"));
                    w.entry(key.as_bytes(), &value, None, 7).unwrap();
                    if let ferrite_storage::Slot::Vacant(v) = db.entry_physical(key.as_bytes(), 0) {
                        v.insert_with_modified(value, None, 7);
                    }
                }
            }
            // The header went out with the first frame: too late to change the count now.
            assert!(!w.set_keys(1));
            let written = w.finish().unwrap();
            assert!(written.bytes > 16 << 20, "{written:?}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), written.bytes);
            let loaded = Keyspace::new();
            let (h, n) = snapshot::load(&path, &mut loaded.lock()).unwrap();
            assert_eq!((h.keys, n), (Some(200_000), 200_000), "{mode:?}");
            assert_eq!(
                loaded.lock().digest().combined(),
                fresh.lock().digest().combined(),
                "{mode:?}"
            );
            files.push(std::fs::read(&path).unwrap());
        }
        assert!(files[0] == files[1], "the two ways wrote different bytes");
    }
}
