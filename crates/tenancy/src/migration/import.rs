//! The target side of a migration: imports staged in a tenant that clients cannot see
//! (state `importing`, answered with `-TRYAGAIN`) until the source hands it over.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ferrite_storage::{Digest, Slot, Value, now_ms};
use parking_lot::Mutex;

use super::conflict::{ConflictLog, ConflictPolicy};
use super::wire::{Batch, Record, WIRE_VERSION, canonical_value, route};
use crate::registry::Registry;
use crate::tenant::{Tenant, TenantLimits, TenantState};

/// Why an import command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("incompatible migration wire format: source speaks v{theirs}, target speaks v{ours}")]
    Version { theirs: u16, ours: u16 },
    #[error("cannot migrate a tenant to the server it is on")]
    SameServer,
    #[error("target already has tenant '{tenant}' ({state}); delete it or migrate it away first")]
    TenantExists { tenant: String, state: &'static str },
    #[error("tenant '{tenant}' is already being imported by migration {migration}")]
    Busy { tenant: String, migration: String },
    #[error("no such import '{0}'")]
    Unknown(String),
    #[error("import {id} is {state}")]
    WrongState { id: String, state: &'static str },
    #[error("{0}")]
    Batch(String),
    #[error("{0}")]
    Invalid(String),
}

/// Where an import stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportState {
    Receiving,
    Active,
    Aborted,
    /// Its source stopped a continuous sync: the copy is kept as it is (the tenant stays
    /// unservable here), never reaped, until TENANT.IMPORT.ABORT or a new import of the tenant
    /// replaces it.
    Stopped,
}

impl ImportState {
    pub fn name(self) -> &'static str {
        match self {
            ImportState::Receiving => "receiving",
            ImportState::Active => "active",
            ImportState::Aborted => "aborted",
            ImportState::Stopped => "stopped",
        }
    }
}

/// What the source sends to open an import.
#[derive(Debug, Clone)]
pub struct BeginRequest {
    pub tenant: String,
    pub migration_id: String,
    pub version: u16,
    pub source_addr: String,
    pub source_run_id: String,
    /// The tenant's credential as the source keeps it (never the password).
    pub credential: Option<crate::Credential>,
    pub limits: TenantLimits,
    /// The tenant's ACL users (passwords as salted hashes), which move with it.
    pub acl_users: Vec<crate::acl::UserRecord>,
    /// A continuous sync whose target takes writes too: the staged tenant is served from the
    /// start, and this decides keys both sides changed.
    pub conflict: Option<ConflictPolicy>,
    /// The new owner's reverse stream after a cutover (the old source as a backup): the staged
    /// copy replaces this server's `moved` record only when it is activated (ROLLBACK); until
    /// then clients keep getting the same MOVED answer.
    pub backup: bool,
}

/// The target's digest and key count at the moment it took ownership.
#[derive(Debug, Clone)]
pub struct Activation {
    pub digest: Digest,
    pub keys: u64,
    pub at_ms: u64,
}

/// What the target recorded when it activated one pattern of an incremental import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternActivation {
    pub keys: u64,
    pub digest: u64,
    /// Unix ms.
    pub at_ms: u64,
}

/// One import.
pub struct Import {
    pub id: String,
    pub migration_id: String,
    pub tenant_id: String,
    pub source_addr: String,
    /// The run (process) of the source that opened it: only that run can resume it.
    pub source_run_id: String,
    staged: Arc<Tenant>,
    /// The `moved` record this import replaced (a reverse migration), restored on abort.
    previous: Mutex<Option<Arc<Tenant>>>,
    state: Mutex<ImportState>,
    /// Last applied sequence number per stream (duplicates after a reconnect are skipped).
    applied: Mutex<BTreeMap<u16, u64>>,
    pub batches: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub started: Instant,
    /// Tokio's clock, so that a test under a paused clock can run the reaper's real default.
    last_activity: Mutex<tokio::time::Instant>,
    activation: Mutex<Option<Activation>>,
    /// Set: the staged tenant is served while synced, and the policy decides conflicts.
    pub conflict: Option<ConflictPolicy>,
    pub conflicts: ConflictLog,
    /// Large values whose first chunk lost a conflict: their later chunks are dropped too.
    skipping: Mutex<std::collections::HashSet<Vec<u8>>>,
    /// Incremental mode: per pattern (by index), when it was activated here and the key count
    /// and digest it had then, over the keys living past `VERIFY_HORIZON_MS` (for VERIFY).
    /// Non-empty means clients may have written here: the import can no longer be dropped.
    pattern_activations: Mutex<BTreeMap<usize, PatternActivation>>,
    /// A backup copy on the old source after a cutover (see [`BeginRequest::backup`]).
    pub backup: bool,
}

impl Import {
    pub fn state(&self) -> ImportState {
        *self.state.lock()
    }

    pub fn tenant(&self) -> &Arc<Tenant> {
        &self.staged
    }

    pub fn activation(&self) -> Option<Activation> {
        self.activation.lock().clone()
    }

    pub fn resume_points(&self) -> Vec<(u16, u64)> {
        self.applied.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }

    pub fn idle(&self) -> Duration {
        self.last_activity.lock().elapsed()
    }

    fn touch(&self) {
        *self.last_activity.lock() = tokio::time::Instant::now();
    }
}

/// A key as FETCH returns it: modified time (Unix ms) and canonical value.
pub type Fetched = (u64, Vec<u8>);

/// All imports of this server.
pub struct ImportManager {
    registry: Arc<Registry>,
    run_id: String,
    imports: Mutex<HashMap<String, Arc<Import>>>,
    counter: AtomicU64,
}

impl ImportManager {
    pub fn new(registry: Arc<Registry>, run_id: String) -> ImportManager {
        ImportManager {
            registry,
            run_id,
            imports: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(1),
        }
    }

    pub fn get(&self, id: &str) -> Result<Arc<Import>, ImportError> {
        self.imports
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| ImportError::Unknown(id.to_string()))
    }

    /// Imports, newest last.
    pub fn list(&self) -> Vec<Arc<Import>> {
        let mut v: Vec<_> = self.imports.lock().values().cloned().collect();
        v.sort_by_key(|i| i.started);
        v
    }

    /// Opens (or, for the same migration retrying, reopens) an import.
    pub fn begin(&self, req: BeginRequest) -> Result<Arc<Import>, ImportError> {
        if req.version != WIRE_VERSION {
            return Err(ImportError::Version {
                theirs: req.version,
                ours: WIRE_VERSION,
            });
        }
        if req.source_run_id == self.run_id {
            return Err(ImportError::SameServer);
        }
        Registry::validate_id(req.tenant.as_bytes())
            .map_err(|e| ImportError::Invalid(e.to_string()))?;
        // A stopped copy of the tenant (an ended continuous sync) gives way to the new import.
        if let Some(stopped) = self.stopped_for(&req.tenant) {
            tracing::info!(import = %stopped.id, tenant = %req.tenant, "a new import replaces the stopped copy");
            self.abort(&stopped.id)?;
        }
        // So does a backup copy (the old source after a cutover) when another migration of
        // the tenant comes here: that one is the tenant's new move, and ends the backup.
        if !req.backup {
            let backups: Vec<String> = self
                .imports
                .lock()
                .values()
                .filter(|i| {
                    i.backup
                        && i.tenant_id == req.tenant
                        && i.migration_id != req.migration_id
                        && i.state() == ImportState::Receiving
                })
                .map(|i| i.id.clone())
                .collect();
            for id in backups {
                tracing::info!(import = %id, tenant = %req.tenant, "a new import of the tenant replaces its backup copy");
                self.abort(&id)?;
            }
        }
        // A source that restarted cannot resume what its previous run staged (the checkpoint
        // died with that process): its first batches would be taken for ones already applied
        // and skipped. That import gives way to a clean one.
        let stale: Vec<String> = self
            .imports
            .lock()
            .values()
            .filter(|i| {
                i.migration_id == req.migration_id
                    && i.source_run_id != req.source_run_id
                    && i.state() == ImportState::Receiving
            })
            .map(|i| i.id.clone())
            .collect();
        for id in stale {
            tracing::info!(import = %id, migration = %req.migration_id, "the source restarted: its previous run's import gives way to a clean one");
            self.abort(&id)?;
        }
        let mut imports = self.imports.lock();
        // A retry of the same migration (the same run of its source) resumes its import.
        if let Some(existing) = imports
            .values()
            .find(|i| i.migration_id == req.migration_id && i.state() == ImportState::Receiving)
        {
            existing.touch();
            return Ok(existing.clone());
        }
        if let Some(other) = imports
            .values()
            .find(|i| i.tenant_id == req.tenant && i.state() == ImportState::Receiving)
        {
            return Err(ImportError::Busy {
                tenant: req.tenant,
                migration: other.migration_id.clone(),
            });
        }
        let staged = Arc::new(Tenant::new(&req.tenant, req.credential.clone(), req.limits));
        // Checked by the server when it parsed the request; a bad record refuses the import.
        staged
            .acl()
            .restore(&req.acl_users)
            .map_err(|e| ImportError::Invalid(e.to_string()))?;
        if req.backup {
            // The old source after a cutover: its clients keep being sent to the new owner
            // until ROLLBACK activates this copy.
            let moved_to = self
                .registry
                .get(&req.tenant)
                .filter(|t| t.state() == TenantState::Moved)
                .and_then(|t| t.moved_to())
                .ok_or_else(|| {
                    ImportError::Invalid(format!(
                        "no moved record of tenant '{}' here: only the server a tenant moved away from keeps it as a backup",
                        req.tenant
                    ))
                })?;
            staged.set_moved(&moved_to);
        } else if req.conflict.is_some() {
            // Served (read and written) while synced; the keyspace records what its own
            // clients change, which is what makes a change from the source a conflict.
            staged.set_state(TenantState::Active);
            staged.keyspace().lock().start_tracking();
        } else {
            staged.set_state(TenantState::Importing);
        }
        let previous = self
            .registry
            .insert_import(staged.clone())
            .map_err(|e| match e {
                crate::TenancyError::WrongState { state, .. } => ImportError::TenantExists {
                    tenant: req.tenant.clone(),
                    state,
                },
                other => ImportError::Invalid(other.to_string()),
            })?;
        let n = self.counter.fetch_add(1, Relaxed);
        let id = format!("imp_{}_{n}", &self.run_id[..8.min(self.run_id.len())]);
        let import = Arc::new(Import {
            id: id.clone(),
            migration_id: req.migration_id,
            tenant_id: req.tenant,
            source_addr: req.source_addr,
            source_run_id: req.source_run_id,
            staged,
            previous: Mutex::new(previous),
            state: Mutex::new(ImportState::Receiving),
            applied: Mutex::new(BTreeMap::new()),
            batches: AtomicU64::new(0),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            started: Instant::now(),
            last_activity: Mutex::new(tokio::time::Instant::now()),
            activation: Mutex::new(None),
            conflict: req.conflict,
            conflicts: ConflictLog::default(),
            skipping: Mutex::new(Default::default()),
            pattern_activations: Mutex::new(BTreeMap::new()),
            backup: req.backup,
        });
        imports.insert(id, import.clone());
        tracing::info!(import = %import.id, tenant = %import.tenant_id, migration = %import.migration_id, source = %import.source_addr, "import opened");
        Ok(import)
    }

    /// Applies one batch; returns its sequence number. A batch already applied (resent after a
    /// reconnect) is acknowledged without being applied again.
    pub fn apply_batch(&self, id: &str, payload: &[u8]) -> Result<u64, ImportError> {
        let import = self.get(id)?;
        if import.state() != ImportState::Receiving {
            return Err(ImportError::WrongState {
                id: id.to_string(),
                state: import.state().name(),
            });
        }
        import.touch();
        let batch = Batch::parse(payload).map_err(|e| ImportError::Batch(e.to_string()))?;
        let records = batch
            .records()
            .map_err(|e| ImportError::Batch(e.to_string()))?;
        let mut applied = import.applied.lock();
        let last = applied.get(&batch.stream).copied().unwrap_or(0);
        if batch.seq <= last {
            return Ok(batch.seq);
        }
        let ks = import.staged.keyspace();
        // Incremental mode: keys of patterns already served here belong to this server's
        // clients; the source no longer sends them, and a record that still named one must not
        // overwrite what a client wrote.
        let split = import.staged.active_split();
        let sent_by_source = |r: &Record<'_>| match (&split, record_key(r)) {
            (Some(s), Some(k)) => s.owner_of(k) != crate::patterns::Owner::Here,
            _ => true,
        };
        let failed = {
            let mut db = ks.lock();
            let now = now_ms();
            let mark = db.effects_begin();
            let mut replayer = None;
            let failed = match import.conflict {
                None => records
                    .into_iter()
                    .filter(sent_by_source)
                    .try_for_each(|r| apply(&mut db, r, now, &mut replayer))
                    .err(),
                Some(policy) => records
                    .into_iter()
                    .filter(sent_by_source)
                    .try_for_each(|r| {
                        apply_resolving(&import, policy, &mut db, r, now, &mut replayer)
                    })
                    .err(),
            };
            // Journaled as the batch itself (persistence replays it with `apply_journaled`),
            // not as what replaying its effects recorded.
            db.discard_propagated();
            db.effects_end(mark, now, &[IMPORT_EFFECT, payload]);
            failed
        };
        // Applied, even if only partly: effects are not idempotent, a resent batch must not run
        // again.
        applied.insert(batch.stream, batch.seq);
        drop(applied);
        import.batches.fetch_add(1, Relaxed);
        import.records.fetch_add(u64::from(batch.count), Relaxed);
        import.bytes.fetch_add(payload.len() as u64, Relaxed);
        if let Some(e) = failed {
            // The staged copy no longer follows the source: drop it rather than ever activate
            // it wrong; the source sees the import gone and starts a new one.
            tracing::error!(import = %id, error = %e, "an effect could not be applied; dropping the import");
            let _ = self.abort(id);
            return Err(ImportError::Batch(format!("{e}; the import was dropped")));
        }
        Ok(batch.seq)
    }

    /// Whether an import step (which takes the staged tenant's lock with
    /// [`ferrite_storage::Keyspace::lock`]) must leave the async worker for the blocking pool:
    /// the tenant serves clients (conflict resolution, incremental mode: a client's batch may
    /// hold the lock), or its lock is taken or awaited right now. A step started while the
    /// lock is free and nobody waits for it, with no await in between, cannot wait for a task
    /// of its own thread: none can queue before the step ends, so it may run on the worker.
    pub fn step_may_wait(&self, id: &str) -> bool {
        self.get(id).is_ok_and(|i| {
            i.staged.state() == TenantState::Active || i.staged.keyspace().try_lock().is_none()
        })
    }

    /// Where each stream's applied batches end, for a sender that reconnects. Also the source's
    /// heartbeat: an import that hears nothing for `sync_timeout_secs` is reaped, and a quiet
    /// tenant in live sync sends no batches.
    pub fn resume(&self, id: &str) -> Result<Vec<(u16, u64)>, ImportError> {
        let import = self.get(id)?;
        if import.state() != ImportState::Receiving {
            return Err(ImportError::WrongState {
                id: id.to_string(),
                state: import.state().name(),
            });
        }
        import.touch();
        Ok(import.resume_points())
    }

    /// Key count and digest of the staged data (what the source compares before handing over).
    pub fn prepare(&self, id: &str) -> Result<(u64, Digest), ImportError> {
        let import = self.get(id)?;
        if import.state() != ImportState::Receiving {
            return Err(ImportError::WrongState {
                id: id.to_string(),
                state: import.state().name(),
            });
        }
        import.touch();
        let ks = import.staged.keyspace();
        let db = ks.lock();
        Ok((db.len() as u64, db.digest().clone()))
    }

    /// Makes the imported tenant live here. Idempotent: activating an active import succeeds.
    pub fn activate(&self, id: &str) -> Result<Activation, ImportError> {
        let import = self.get(id)?;
        let mut state = import.state.lock();
        match *state {
            ImportState::Active => {
                return import
                    .activation()
                    .ok_or_else(|| ImportError::Invalid("activation record missing".into()));
            }
            ImportState::Aborted | ImportState::Stopped => {
                return Err(ImportError::WrongState {
                    id: id.to_string(),
                    state: state.name(),
                });
            }
            ImportState::Receiving => {}
        }
        let ks = import.staged.keyspace();
        let activation = {
            let db = ks.lock();
            Activation {
                digest: db.digest().clone(),
                keys: db.len() as u64,
                at_ms: now_ms(),
            }
        };
        // Importing, or moved for a backup copy (which answers MOVED until now).
        let before = import.staged.state();
        import.staged.set_state(TenantState::Active);
        // Incremental mode: the last pattern is here too; the tenant is whole again.
        import.staged.set_split(None);
        // Durable before the source hears it is active: a target that restarts after saying
        // yes must still serve the tenant.
        if let Err(e) = self.registry.persist(&import.staged) {
            import.staged.set_state(before);
            return Err(ImportError::Invalid(format!(
                "cannot activate import {id}: {e}"
            )));
        }
        *import.activation.lock() = Some(activation.clone());
        *state = ImportState::Active;
        import.previous.lock().take();
        tracing::info!(import = %import.id, tenant = %import.tenant_id, keys = activation.keys, "import activated: tenant is served here");
        Ok(activation)
    }

    /// The state of `tenant` here when it stands in the way of a new import of it (TENANT.IMPORT.CHECK):
    /// None when it is absent, `moved` away, or a stopped copy (which a new import replaces).
    pub fn blocking_state(&self, tenant: &str) -> Option<&'static str> {
        let t = self.registry.get(tenant)?;
        if t.state() == TenantState::Moved || self.stopped_for(tenant).is_some() {
            return None;
        }
        Some(t.state().name())
    }

    /// The stopped import holding `tenant` here, if any.
    pub fn stopped_for(&self, tenant: &str) -> Option<Arc<Import>> {
        self.imports
            .lock()
            .values()
            .find(|i| i.tenant_id == tenant && i.state() == ImportState::Stopped)
            .cloned()
    }

    /// The import whose copy `tenant` is here, while that copy is still the import's: being
    /// received (served or not) or kept after its source stopped a continuous sync. None once
    /// it is activated (the tenant is this server's then) or aborted. What a restore or any
    /// other wholesale replacement of the tenant's data must not write over.
    pub fn holding(&self, tenant: &str) -> Option<Arc<Import>> {
        self.imports
            .lock()
            .values()
            .find(|i| {
                i.tenant_id == tenant
                    && matches!(i.state(), ImportState::Receiving | ImportState::Stopped)
            })
            .cloned()
    }

    /// Keeps a receiving import as a stopped copy (its source stopped a continuous sync).
    /// Idempotent.
    pub fn stop(&self, id: &str) -> Result<(), ImportError> {
        let import = self.get(id)?;
        let mut state = import.state.lock();
        match *state {
            ImportState::Stopped => Ok(()),
            ImportState::Receiving => {
                *state = ImportState::Stopped;
                tracing::info!(import = %import.id, tenant = %import.tenant_id, "import stopped by its source; the copy is kept");
                Ok(())
            }
            other => Err(ImportError::WrongState {
                id: id.to_string(),
                state: other.name(),
            }),
        }
    }

    /// Drops the staged data and puts back what was there before. Idempotent.
    pub fn abort(&self, id: &str) -> Result<(), ImportError> {
        let import = self.get(id)?;
        let mut state = import.state.lock();
        match *state {
            ImportState::Aborted => return Ok(()),
            ImportState::Active => {
                return Err(ImportError::WrongState {
                    id: id.to_string(),
                    state: "active",
                });
            }
            ImportState::Receiving | ImportState::Stopped => {}
        }
        if !import.pattern_activations.lock().is_empty() {
            // Clients have been writing the moved patterns here: dropping them would lose
            // acknowledged writes.
            return Err(ImportError::WrongState {
                id: id.to_string(),
                state: "partly active (incremental migration: some patterns are served here)",
            });
        }
        *state = ImportState::Aborted;
        let previous = import.previous.lock().take();
        self.registry
            .restore_after_import(&import.staged, previous, &import.source_addr);
        let ks = import
            .staged
            .replace_keyspace(Arc::new(ferrite_storage::Keyspace::new()));
        // Freeing a large staging area can take a while; do it off the caller's thread.
        std::thread::spawn(move || drop(ks));
        tracing::info!(import = %import.id, tenant = %import.tenant_id, "import aborted; staged data dropped");
        Ok(())
    }

    /// For VERIFY: each key's modified time and canonical value in the imported tenant.
    pub fn fetch(&self, id: &str, keys: &[&[u8]]) -> Result<Vec<Option<Fetched>>, ImportError> {
        let import = self.get(id)?;
        let ks = import.staged.keyspace();
        let db = ks.lock();
        Ok(keys
            .iter()
            .map(|k| {
                db.peek(k).map(|e| {
                    (
                        e.modified_ms(),
                        canonical_value(e.value(), e.expire_at().unwrap_or(0)),
                    )
                })
            })
            .collect())
    }

    /// Incremental mode: key count and digest of the keys pattern `index` of `patterns` owns in
    /// the staged data, of those alive after `alive_after` (what the source compares before
    /// handing the pattern over, with the same cutoff).
    pub fn pattern_digest(
        &self,
        id: &str,
        patterns: &[Vec<u8>],
        index: usize,
        alive_after: u64,
    ) -> Result<(u64, u64), ImportError> {
        let import = self.receiving(id)?;
        let split = self.split_for(&import, patterns, index)?;
        let ks = import.staged.keyspace();
        let db = ks.lock();
        Ok(split.digest_of(index, &db, alive_after))
    }

    /// Incremental mode: serves pattern `index` here from now on. The first activated pattern
    /// makes the tenant visible here, with the patterns not yet activated answered with a
    /// redirect to the source. Records (and returns) what the pattern held (see
    /// `pattern_activations`). Idempotent.
    pub fn activate_pattern(
        &self,
        id: &str,
        patterns: &[Vec<u8>],
        index: usize,
    ) -> Result<PatternActivation, ImportError> {
        let import = self.receiving(id)?;
        let split = self.split_for(&import, patterns, index)?;
        let mut recorded = import.pattern_activations.lock();
        if let Some(r) = recorded.get(&index) {
            return Ok(*r);
        }
        let at_ms = now_ms();
        let digest = {
            let ks = import.staged.keyspace();
            let db = ks.lock();
            let (keys, digest) =
                split.digest_of(index, &db, at_ms + crate::patterns::VERIFY_HORIZON_MS);
            PatternActivation {
                keys,
                digest,
                at_ms,
            }
        };
        let split = split.with(index, crate::patterns::Owner::Here);
        // The split first: no client sees the tenant active without it.
        import.staged.set_split(Some(split));
        if import.staged.state() == TenantState::Importing {
            import.staged.set_state(TenantState::Active);
        }
        recorded.insert(index, digest);
        tracing::info!(import = %import.id, tenant = %import.tenant_id, pattern = %String::from_utf8_lossy(&patterns[index]), keys = digest.keys, "pattern activated: its keys are served here");
        Ok(digest)
    }

    /// Incremental mode: the last pattern is being handed over as a whole-tenant cutover (the
    /// source answers MOVED for every key before it activates the pattern here): with `hold`,
    /// the pattern's keys wait here (then TRYAGAIN) instead of being sent back to the source;
    /// without, they are sent back again (the cutover was aborted). A tenant not yet visible
    /// here is left as it is (its clients get TRYAGAIN anyway).
    pub fn hold_pattern(
        &self,
        id: &str,
        patterns: &[Vec<u8>],
        index: usize,
        hold: bool,
    ) -> Result<(), ImportError> {
        let import = self.receiving(id)?;
        if import.staged.split().is_none() {
            return Ok(());
        }
        let split = self.split_for(&import, patterns, index)?;
        let (from, to) = if hold {
            (
                crate::patterns::Owner::There,
                crate::patterns::Owner::Handing,
            )
        } else {
            (
                crate::patterns::Owner::Handing,
                crate::patterns::Owner::There,
            )
        };
        if split.owners()[index] == from {
            import.staged.set_split(Some(split.with(index, to)));
        }
        Ok(())
    }

    /// Incremental mode: what pattern `index` held when it was activated.
    pub fn pattern_activation(
        &self,
        id: &str,
        index: usize,
    ) -> Result<PatternActivation, ImportError> {
        let import = self.get(id)?;
        import
            .pattern_activations
            .lock()
            .get(&index)
            .copied()
            .ok_or_else(|| ImportError::Invalid(format!("pattern {index} was never activated")))
    }

    fn receiving(&self, id: &str) -> Result<Arc<Import>, ImportError> {
        let import = self.get(id)?;
        if import.state() != ImportState::Receiving {
            return Err(ImportError::WrongState {
                id: id.to_string(),
                state: import.state().name(),
            });
        }
        import.touch();
        Ok(import)
    }

    /// The staged tenant's split (created with every pattern served by the source), checked
    /// against the pattern list the source sent.
    fn split_for(
        &self,
        import: &Import,
        patterns: &[Vec<u8>],
        index: usize,
    ) -> Result<crate::patterns::PatternSplit, ImportError> {
        let list = crate::patterns::normalize(patterns)
            .map_err(|e| ImportError::Invalid(e.to_string()))?;
        if list.len() != patterns.len() || index >= list.len() {
            return Err(ImportError::Invalid(format!(
                "pattern index {index} out of range, or the list does not end with '*'"
            )));
        }
        match import.staged.split() {
            Some(s) if s.patterns() != list.as_slice() => Err(ImportError::Invalid(
                "the pattern list differs from the one already activated".into(),
            )),
            Some(s) => Ok((*s).clone()),
            None => Ok(crate::patterns::PatternSplit::new(
                &import.migration_id,
                &import.source_addr,
                list,
                crate::patterns::Owner::There,
            )),
        }
    }

    /// Aborts imports that have received nothing for `idle` (their source is gone).
    pub fn reap(&self, idle: Duration) {
        let stale: Vec<String> = self
            .imports
            .lock()
            .values()
            .filter(|i| i.state() == ImportState::Receiving && i.idle() > idle)
            .map(|i| i.id.clone())
            .collect();
        for id in stale {
            tracing::warn!(import = %id, "import idle too long; aborting");
            let _ = self.abort(&id);
        }
    }
}

/// Applies one record of a sync whose target takes writes: a change to a key the target's own
/// clients changed since the sync last wrote it is a conflict, which `policy` decides (see
/// [`super::conflict`]). Whatever the sync writes is unmarked, so only the target's own writes
/// stay marked.
fn apply_resolving(
    import: &Import,
    policy: ConflictPolicy,
    db: &mut ferrite_storage::Db,
    r: Record<'_>,
    now: u64,
    replayer: &mut Option<ferrite_commands::replay::Replayer>,
) -> Result<(), String> {
    // The target's own write to `key`: when (its last write; when it deleted the key, its
    // oldest unsynced change), if it made one since the sync last wrote the key.
    let local = |db: &ferrite_storage::Db, key: &[u8]| {
        db.changed_since(key)
            .map(|since| db.peek(key).map_or(since, |e| e.modified_ms().max(since)))
    };
    let (key, source_ms) = match &r {
        Record::Append { key, .. } => {
            if import.skipping.lock().contains(*key) {
                return Ok(());
            }
            let key = key.to_vec();
            apply(db, r, now, replayer)?;
            db.unmark_changed(&key);
            return Ok(());
        }
        Record::Flush { stream, parallel } => {
            let (stream, parallel) = (usize::from(*stream), usize::from(*parallel));
            let keys: Vec<Box<[u8]>> = db
                .iter()
                .filter(|(k, _)| route(k, parallel) == stream)
                .map(|(k, _)| k.into())
                .collect();
            for k in keys {
                if let Some(at) = local(db, &k) {
                    // A flush carries no time: it counts as made now.
                    let won = policy.source_wins(now, at);
                    import.conflicts.note(&import.id, policy, &k, won);
                    if !won {
                        continue;
                    }
                }
                db.entry_physical(&k, now).occupied().map(|o| o.remove());
                db.unmark_changed(&k);
            }
            return Ok(());
        }
        Record::Put { key, modified, .. } => (key.to_vec(), *modified),
        Record::Effect { key, now: at, .. } => (key.to_vec(), *at),
        // A deletion carries no time: it counts as made when it arrives.
        Record::Del { key } => (key.to_vec(), now),
    };
    let is_put = matches!(r, Record::Put { .. });
    if let Some(at) = local(db, &key) {
        let won = policy.source_wins(source_ms, at);
        import.conflicts.note(&import.id, policy, &key, won);
        if !won {
            if is_put {
                import.skipping.lock().insert(key);
            }
            return Ok(());
        }
    }
    import.skipping.lock().remove(&key);
    apply(db, r, now, replayer)?;
    db.unmark_changed(&key);
    Ok(())
}

/// The key a record writes, if it names one.
fn record_key<'a>(r: &Record<'a>) -> Option<&'a [u8]> {
    match r {
        Record::Put { key, .. }
        | Record::Append { key, .. }
        | Record::Del { key }
        | Record::Effect { key, .. } => Some(*key),
        _ => None,
    }
}

/// The name an applied batch is journaled under, as the effect `[IMPORT_EFFECT, batch]`.
pub const IMPORT_EFFECT: &[u8] = b"TENANT.IMPORT.APPLIED";

/// Applies a batch journaled as `[IMPORT_EFFECT, batch]` again (checksum and version checked):
/// how persistence replays an import's log.
pub fn apply_journaled(
    db: &mut ferrite_storage::Db,
    batch: &[u8],
    now: u64,
) -> Result<(), ImportError> {
    let batch = Batch::parse(batch).map_err(|e| ImportError::Batch(e.to_string()))?;
    let records = batch
        .records()
        .map_err(|e| ImportError::Batch(e.to_string()))?;
    let mut replayer = None;
    for r in records {
        apply(db, r, now, &mut replayer).map_err(ImportError::Batch)?;
    }
    Ok(())
}

/// Applies one record to the staged keyspace. Effects run with the clock they ran with on the
/// source, so lazy expiry decides as it did there.
fn apply(
    db: &mut ferrite_storage::Db,
    r: Record<'_>,
    now: u64,
    replayer: &mut Option<ferrite_commands::replay::Replayer>,
) -> Result<(), String> {
    match r {
        Record::Put {
            key,
            expire,
            modified,
            value,
            ..
        } => {
            let expire = (expire != 0).then_some(expire);
            match db.entry_physical(key, now) {
                Slot::Occupied(mut o) => {
                    o.replace(value, expire);
                    o.set_modified(modified);
                }
                Slot::Vacant(v) => v.insert_with_modified(value, expire, modified),
            }
        }
        Record::Append { key, ty, value } => match db.entry_physical(key, now) {
            Slot::Occupied(mut o) if o.get().value_type() == ty => {
                o.preserve_modified();
                extend(o.get_mut().value_mut(), value);
            }
            Slot::Occupied(mut o) => o.replace(value, None),
            Slot::Vacant(v) => v.insert(value, None),
        },
        Record::Del { key } => {
            db.entry_physical(key, now).occupied().map(|o| o.remove());
        }
        Record::Flush { stream, parallel } => {
            let doomed: Vec<Box<[u8]>> = db
                .iter()
                .filter(|(k, _)| route(k, usize::from(parallel)) == usize::from(stream))
                .map(|(k, _)| k.into())
                .collect();
            for k in doomed {
                db.entry_physical(&k, now).occupied().map(|o| o.remove());
            }
        }
        Record::Effect { now, argv, .. } => {
            return replayer
                .get_or_insert_with(ferrite_commands::replay::Replayer::new)
                .apply(db, now, ferrite_storage::Argv::Borrowed(&argv))
                .map_err(|e| e.to_string());
        }
    }
    Ok(())
}

/// Adds the elements of `more` to `v` (same type).
fn extend(v: &mut Value, more: Value) {
    match (v, more) {
        (Value::Str(s), Value::Str(m)) => s.append(m.as_bytes()),
        (Value::List(l), Value::List(m)) => {
            for e in m.iter() {
                l.push_back(e);
            }
        }
        (Value::Hash(h), Value::Hash(m)) => {
            for (f, val) in m.iter() {
                h.insert(f, val);
            }
        }
        (Value::Set(s), Value::Set(m)) => {
            for e in m.iter() {
                s.insert(e);
            }
        }
        (Value::ZSet(z), Value::ZSet(m)) => {
            for (e, sc) in m.iter() {
                z.insert(e, sc);
            }
        }
        (Value::Stream(x), Value::Stream(m)) => x.absorb(&m),
        // Types are checked by the caller; a mismatch cannot reach here.
        _ => {}
    }
}
