//! Migrations after a restart of this server: what each kept record comes back as, and RESUME
//! of one the restart interrupted.
//!
//! - **Finished** (`completed`, `verified`, `cancelled`, `stopped`): history for STATUS.
//! - **Not started** (`queued`, `waiting`, `awaiting_approval`, `approved`): nothing was lost,
//!   so it comes back pending with its priority, group, dependencies (AFTER) and approval
//!   (decision, who, when, the plan): `queued`/`approved` wait for a slot again, `waiting` for
//!   its dependencies, `awaiting_approval` for APPROVE/REJECT. One that authenticated to its
//!   target with AUTH comes back `failed` instead (the password is never kept on disk): RESUME
//!   <id> AUTH <password> starts it.
//! - **Running** (`syncing`, `live_sync`, `paused`, `cutting_over`, `stopping`) or `failed`:
//!   its change capture and queues did not survive, so it comes back `failed` with the reason.
//!   RESUME starts it again from scratch under the same id with its original settings: the
//!   target's stale import (recorded in the record) is dropped first, then a new import gets a
//!   clean copy. A hand-over that was recorded (the tenant is `moved` here) keeps CUTOVER RETRY
//!   and CANCEL as before; RESUME is refused then. One started with AUTH needs the password
//!   again for each of them ([`Restored::password_not_kept`]), except CANCEL before the
//!   hand-over, which cancels here and leaves the target's import to its reaper.
//! - **Incremental, some patterns handed over**: those patterns stay the target's (their keys
//!   are redirected, never served here again); the migration comes back `failed` and RESUME is
//!   refused: the target's import holds what its clients wrote to the moved patterns, and a
//!   fresh copy would overwrite it (see docs/migration.md).

use std::sync::Arc;
use std::time::Duration;

use super::actor::{Control, Io, Work};
use super::api::{MigrationConfig, MigrationError};
use super::record::{MigrationRecord, RecordedAuth};
use super::state::{MigrationPhase, MigrationState};
use super::status::{Info, Published};
use super::target::TargetError;
use super::{MigrationManager, schedule};
use crate::patterns::{Owner, PatternSplit};
use crate::tenant::{Tenant, TenantLimits, TenantState};

/// What RESUME of a restored migration needs.
#[derive(Debug, Clone)]
pub(super) struct Restart {
    /// The import the interrupted run had opened on the target.
    pub stale_import: Option<String>,
}

/// What a restored migration's actor starts with besides its record.
#[derive(Debug, Clone, Default)]
pub(super) struct Restored {
    /// RESUME can start it again (see [`Restart`]).
    pub restart: Option<Restart>,
    /// It was started with AUTH: the password must be given again before the target can be
    /// logged in to (RESUME, CUTOVER RETRY or CANCEL ... AUTH).
    pub password_not_kept: bool,
}

/// Why RESUME cannot start `ctl`'s migration again, if it cannot.
pub(super) fn may_start_again(ctl: &Control) -> Result<(), MigrationError> {
    let id = &ctl.info.id;
    if ctl.restart.is_none() {
        let split = ctl.info.tenant.split();
        let moved = split
            .as_ref()
            .is_some_and(|s| s.migration == *id && s.is_split());
        return Err(MigrationError::Failed(if moved {
            format!(
                "migration {id} had handed patterns over to its target before this server restarted; those stay with the target, and a fresh copy would overwrite what its clients wrote since: cut the remaining keys over with a new migration once this one's import is activated on the target"
            )
        } else {
            format!(
                "migration {id} was interrupted by a restart of this server and cannot be started again here; start a new one with TENANT.MIGRATE (it replaces this one)"
            )
        }));
    }
    if ctl.password_missing() {
        return Err(MigrationError::Failed(format!(
            "migration {id} authenticated to its target with AUTH, which is not kept across restarts: TENANT.MIGRATE.RESUME {id} AUTH <password>"
        )));
    }
    Ok(())
}

/// RESUME accepted: the next run drops the stale import and copies from scratch.
pub(super) fn start_again(ctl: &mut Control) {
    if let Some(r) = ctl.restart.take() {
        ctl.stale_import = r.stale_import;
    }
    ctl.restored = false;
    ctl.publish(|p| {
        p.error = None;
        p.import_id = None;
        p.frozen_released = false;
        p.started_at_ms = ferrite_storage::now_ms();
        p.completed_at_ms = None;
        p.keys_migrated = 0;
        p.bytes_acked = 0;
        p.interrupted_by_restart = false;
    });
    tracing::info!(migration = %ctl.info.id, "interrupted by a restart: starting again from scratch");
}

/// Before a restarted run opens its import: asks the target to drop the one the interrupted
/// run had opened (it would otherwise be resumed, with whatever it held). Retries an
/// unreachable target as `begin` does.
pub(super) async fn drop_stale_import(
    work: &mut Work,
    io: &mut Io<'_>,
) -> Result<(), MigrationError> {
    let Some(import) = io.ctl.stale_import.clone() else {
        return Ok(());
    };
    let mut backoff = super::RECONNECT_BACKOFF.0;
    loop {
        match io.until(work.target.abort(&import)).await? {
            Ok(()) | Err(TargetError::ImportGone(_)) => break,
            Err(e) if e.is_unreachable() => {
                io.sleep(backoff).await?;
                backoff = (backoff * 2).min(super::RECONNECT_BACKOFF.1);
            }
            Err(e) => {
                return Err(MigrationError::Failed(format!(
                    "the target did not drop the import {import} the interrupted run had opened: {e}"
                )));
            }
        }
    }
    tracing::info!(migration = %io.ctl.info.id, import = %import, "stale import dropped on the target");
    io.ctl.stale_import = None;
    Ok(())
}

impl MigrationManager {
    /// Brings back one record (see the module docs).
    pub(super) fn restore_one(&self, r: MigrationRecord) {
        let env = self.inner.env.clone();
        let live = env.registry.get(&r.tenant);
        let tenant = live.clone().unwrap_or_else(|| {
            // A tenant deleted since: shown, never touched.
            Arc::new(Tenant::new(&r.tenant, None, TenantLimits::default()))
        });
        let cfg = r.config(None);
        let info = Arc::new(Info {
            id: r.id.clone(),
            tenant: tenant.clone(),
            source: r.source.clone(),
            target: r.target.clone(),
            redirect: r.redirect.clone(),
            mode: r.mode,
            seq: r.seq,
            delta: Default::default(),
            conflict: r.settings.conflict,
            patterns: r.settings.patterns.clone(),
            // The backup copy (rollback after cutover) does not survive a restart of the old
            // source, and a restarted new owner's reverse stream is gone with its memory.
            backup_retention: Duration::ZERO,
            backup_of: None,
        });
        let moved_patterns = restore_split(&info, &r);
        let active = live.is_some() && tenant.state() == TenantState::Active;
        let target = self
            .inner
            .connector
            .connect(&r.target, self.target_auth(&cfg));
        let mut p = Published::new(0, cfg.parallel, cfg.batch_size);
        p.priority = r.orchestration.priority;
        p.rate_bytes_per_sec = r.settings.rate_bytes_per_sec;
        p.approval = r.orchestration.approval.clone();
        p.plan = r.orchestration.plan.clone();
        p.error = r.error.clone();
        p.import_id = r.import_id.clone();
        p.started_at_ms = r.started_at_ms;
        p.completed_at_ms = r.completed_at_ms;
        p.downtime_ms = r.downtime_ms;
        p.keys_migrated = r.keys_migrated;
        p.bytes_acked = r.bytes_synced;
        let needs_password = r.settings.auth == RecordedAuth::Password;
        if r.state.is_pending() && active && !needs_password {
            self.restore_pending(info, cfg, p, target, &r);
            return;
        }
        p.state = r.state;
        p.base_phase = match r.state {
            MigrationState::Completed | MigrationState::Verified => MigrationPhase::Done,
            _ => MigrationPhase::Stopped,
        };
        p.finished = Some(tokio::time::Instant::now());
        // Nothing of the source's copy survived the restart.
        p.frozen_released = true;
        let interrupted = r.state.is_active() || r.state.is_pending();
        let reverse_stream = r.settings.backup_of.clone();
        let startable = active && !moved_patterns && reverse_stream.is_none();
        if interrupted || r.state == MigrationState::Failed {
            p.state = MigrationState::Failed;
        }
        if interrupted {
            let next = if let Some(import) = &reverse_stream {
                format!(
                    "it was the backup stream to the old source of import {import}, which does not survive a restart (the old source reports its backup broken; FINALIZE there drops its copy)"
                )
            } else if !active && needs_password {
                format!(
                    "the hand-over had been recorded: TENANT.MIGRATE.CUTOVER {id} RETRY AUTH <password> or TENANT.MIGRATE.CANCEL {id} AUTH <password> (AUTH is not kept across restarts)",
                    id = r.id
                )
            } else if !active {
                "CUTOVER RETRY or CANCEL (the hand-over had been recorded)".to_string()
            } else if moved_patterns {
                "the patterns handed over stay with the target (RESUME cannot start it again)"
                    .to_string()
            } else if needs_password {
                format!(
                    "TENANT.MIGRATE.RESUME {} AUTH <password> starts it again from scratch",
                    r.id
                )
            } else {
                format!(
                    "TENANT.MIGRATE.RESUME {} starts it again from scratch",
                    r.id
                )
            };
            p.error = Some(format!(
                "interrupted by a restart of this server (it was {}); {next}",
                r.state.name()
            ));
        }
        let restart = (p.state == MigrationState::Failed && startable).then(|| Restart {
            stale_import: r.import_id.clone(),
        });
        p.interrupted_by_restart = restart.is_some();
        let group = r.orchestration.group.clone();
        self.inner
            .after
            .lock()
            .insert(r.id.clone(), r.orchestration.after.clone());
        let rx = self.spawn_restored(
            info,
            cfg,
            p,
            target,
            Restored {
                restart,
                password_not_kept: needs_password,
            },
            Default::default(),
            group,
        );
        drop(rx);
    }

    /// A migration that had not started: pending again, with what it waited for.
    fn restore_pending(
        &self,
        info: Arc<Info>,
        cfg: MigrationConfig,
        mut p: Published,
        target: Arc<dyn super::Target>,
        r: &MigrationRecord,
    ) {
        let mut after = Vec::new();
        for id in &r.orchestration.after {
            match self.entry(id) {
                Ok(e) => after.push((id.clone(), e.status.clone())),
                // A dependency whose record is gone was finished long ago (history_max).
                Err(_) => {
                    tracing::warn!(migration = %r.id, dependency = %id, "dependency no longer recorded; not waited for")
                }
            }
        }
        let needs_approval = r.orchestration.needs_approval;
        // `approved` and `awaiting_approval` come back through admission: the recorded decision
        // lets an approved one through, a pending one waits for APPROVE again (with its plan).
        p.state = MigrationState::Queued;
        p.base_phase = MigrationPhase::Queued;
        if r.state == MigrationState::AwaitingApproval || p.approval.is_none() && needs_approval {
            p.approval = Some(super::Approval::pending());
        }
        let admission = schedule::Admission {
            after,
            needs_approval,
            planner: None,
        };
        if let Err(e) = self.inner.env.claim(&info) {
            tracing::warn!(migration = %info.id, error = %e, "restored migration's tenant is busy");
        }
        self.inner
            .after
            .lock()
            .insert(info.id.clone(), r.orchestration.after.clone());
        let group = r.orchestration.group.clone();
        tracing::info!(migration = %info.id, was = r.state.name(), "restored pending migration");
        let rx = self.spawn_restored(info, cfg, p, target, Restored::default(), admission, group);
        drop(rx);
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_restored(
        &self,
        info: Arc<Info>,
        cfg: MigrationConfig,
        p: Published,
        target: Arc<dyn super::Target>,
        restored: Restored,
        admission: schedule::Admission,
        group: Option<String>,
    ) -> tokio::sync::watch::Receiver<Published> {
        let interrupted = p.state != MigrationState::Queued;
        self.spawn_with_restart(
            info,
            cfg,
            p,
            target,
            interrupted,
            admission,
            group,
            restored,
        )
    }
}

/// `MODE incremental`: the patterns handed over before the restart are the target's again
/// (their keys redirected). True when there were any.
fn restore_split(info: &Info, r: &MigrationRecord) -> bool {
    if r.patterns_moved.is_empty() || info.patterns.is_empty() {
        return false;
    }
    let tenant = &info.tenant;
    if tenant.state() != TenantState::Active {
        // Moved as a whole: MOVED answers for every key.
        return false;
    }
    let mut split = PatternSplit::new(&info.id, &info.redirect, info.patterns.clone(), Owner::Here);
    for &i in &r.patterns_moved {
        split = split.with(i, Owner::There);
    }
    tracing::info!(migration = %info.id, tenant = %tenant.id(), moved = ?r.patterns_moved, "patterns handed over before the restart stay redirected");
    tenant.set_split(Some(split));
    true
}
