//! The old source as a backup after a cutover; TENANT.MIGRATE.ROLLBACK and FINALIZE.
//!
//! After the hand-over the old source (whose migration's actor keeps running in `completed`)
//! asks the new owner to keep it up to date: `TENANT.IMPORT.BACKUP <import> START` makes the new
//! owner start a continuous sync of the tenant back to the old source (an ordinary migration,
//! marked as the backup of that import), which stages the copy as an import that keeps
//! answering MOVED until it is activated ([`super::import::BeginRequest::backup`]). So every
//! write the new owner acknowledges is captured and shipped back by the same machinery as a
//! forward migration.
//!
//! ROLLBACK is the cutover of that reverse stream, with a cutover's guarantees: the new owner
//! gates the tenant's writes, drains, both sides compare key count and digest, the new owner
//! records the tenant moved back (durably) before the old source activates its copy (durably).
//! If that does not complete, the tenant stays unwritable rather than writable on both.
//! FINALIZE, the end of the retention, or a later migration of the tenant on the new owner ends
//! the reverse stream and drops the copy on the old source.
//!
//! Known limit: the backup lives in memory on both sides; a restart of either ends it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::actor::{Control, Io, Reply, Work};
use super::api::{
    BackupStatus, CutoverResult, MigrationConfig, MigrationError, MigrationMode, MigrationStatus,
};
use super::import::ImportState;
use super::state::MigrationState;
use super::{MigrationManager, normalize_addr, same_endpoint};
use crate::tenant::TenantState;

/// How often the old source asks the new owner how its backup stands.
const POLL: Duration = Duration::from_secs(1);
/// How long a START, STATUS or END may take before the backup counts as broken.
const CALL_WAIT: Duration = Duration::from_secs(5);
/// How long the new owner keeps retrying the reverse cutover while writers keep the lag above
/// `cutover_max_lag` (the backup catches up meanwhile).
const ROLLBACK_PATIENCE: Duration = Duration::from_secs(8);
/// How long the old source waits for the new owner's answer to a ROLLBACK (the reverse
/// cutover, its retries and its activation of the copy here).
const ROLLBACK_WAIT: Duration = Duration::from_secs(30);

/// ROLLBACK or FINALIZE, carried out by the backup's loop on the old source.
pub(super) enum BackupRequest {
    Rollback(Reply<CutoverResult>),
    Finalize(Reply<()>),
}

/// Takes a ROLLBACK or FINALIZE: refused at once when there is no live backup (or a ROLLBACK
/// of one that cannot take it now), else left for the loop.
pub(super) fn request(ctl: &mut Control, req: BackupRequest) {
    let refusal = refusal(ctl, matches!(req, BackupRequest::Rollback(_)));
    match (req, refusal) {
        (BackupRequest::Rollback(reply), Some(e)) => {
            let _ = reply.send(Err(e));
        }
        (BackupRequest::Finalize(reply), Some(e)) => {
            let _ = reply.send(Err(e));
        }
        (req, None) => ctl.pending_backup = Some(req),
    }
}

fn refusal(ctl: &Control, rollback: bool) -> Option<MigrationError> {
    let id = &ctl.info.id;
    let op = if rollback { "roll back" } else { "finalize" };
    let p = ctl.published();
    if !matches!(
        p.state,
        MigrationState::Completed | MigrationState::Verified
    ) {
        return Some(MigrationError::WrongState {
            id: id.clone(),
            state: p.state.name(),
            op,
        });
    }
    if ctl.pending_backup.is_some() {
        return Some(MigrationError::Failed(format!(
            "a ROLLBACK or FINALIZE of migration {id} is already under way"
        )));
    }
    let Some(b) = &p.backup else {
        return Some(MigrationError::Failed(format!(
            "migration {id} has no backup: it was started with RETENTION 0 or while tenancy.migration.rollback_retention_secs was 0 (or restored after a restart); to move the tenant back, migrate it from {}",
            ctl.info.target
        )));
    };
    match b.state {
        "ended" | "rolled_back" => Some(MigrationError::Failed(format!(
            "the backup of migration {id} has {} (FINALIZE, the end of its retention, or a later migration of the tenant); to move the tenant back, migrate it from {}",
            if b.state == "ended" {
                "ended"
            } else {
                "been rolled back already"
            },
            ctl.info.target
        ))),
        "broken" if rollback => Some(MigrationError::Failed(format!(
            "cannot roll back migration {id}: its backup is broken ({}); the tenant stays with the new owner {}",
            b.error.as_deref().unwrap_or("no answer from the new owner"),
            ctl.info.target
        ))),
        "starting" if rollback => Some(MigrationError::Failed(format!(
            "cannot roll back migration {id} yet: the new owner {} is still copying the tenant back (backup_state starting); retry when STATUS shows backup_state streaming",
            ctl.info.target
        ))),
        _ => None,
    }
}

/// On the old source, after the cutover: keeps the backup going (starts it, publishes how it
/// stands) until ROLLBACK, FINALIZE, the end of the retention or the new owner ends it. Returns
/// an interrupt only when the server is going away.
pub(super) async fn serve_backup(work: &mut Work, io: &mut Io<'_>) -> Result<(), MigrationError> {
    let Some(first) = io.ctl.published().backup.clone() else {
        return Ok(());
    };
    if first.is_over() {
        return Ok(());
    }
    let Some(import) = io.ctl.published().import_id.clone() else {
        publish(io, "ended", Some("no import id recorded".into()), None);
        return Ok(());
    };
    let mut started = false;
    loop {
        if let Some(req) = io.ctl.pending_backup.take() {
            match req {
                BackupRequest::Rollback(reply) => {
                    let r = rollback(work, io, &import).await;
                    let done = r.is_ok();
                    let _ = reply.send(r);
                    if done {
                        return Ok(());
                    }
                }
                BackupRequest::Finalize(reply) => {
                    end(work, io, &import).await;
                    super::actor::release_frozen(work, io);
                    tracing::info!(migration = %io.ctl.info.id, "migration finalized: backup ended, frozen copy released");
                    let _ = reply.send(Ok(()));
                    return Ok(());
                }
            }
            continue;
        }
        if ferrite_storage::now_ms() >= first.until_ms {
            tracing::info!(migration = %io.ctl.info.id, "the backup's retention ended");
            end(work, io, &import).await;
            return Ok(());
        }
        let op: Vec<String> = if started {
            vec!["STATUS".into()]
        } else {
            let left = first.until_ms.saturating_sub(ferrite_storage::now_ms());
            vec![
                "START".into(),
                io.ctl.env.self_addr.clone(),
                left.div_ceil(1000).max(1).to_string(),
            ]
        };
        let target = work.target.clone();
        let answer = io
            .until(tokio::time::timeout(CALL_WAIT, target.backup(&import, &op)))
            .await?;
        match answer {
            Ok(Ok(st)) if st.state == "ended" && started => {
                // Ended on the new owner (a later migration of the tenant there, its own end
                // of retention): the copy here goes too.
                tracing::info!(migration = %io.ctl.info.id, "the new owner ended the backup");
                drop_copy_here(io);
                publish(io, "ended", st.error, st.migration_id);
                return Ok(());
            }
            Ok(Ok(st)) => {
                started = true;
                io.ctl.publish(|p| {
                    if let Some(b) = &mut p.backup {
                        let until = b.until_ms;
                        *b = st;
                        b.until_ms = until;
                        b.downtime_ms = None;
                    }
                });
            }
            Ok(Err(e)) if !started && e.to_string().contains("refused authentication") => {
                // Servers without a shared migration token (the forward migration used the
                // target's password): the new owner cannot log in here, and never will.
                let msg = format!(
                    "no backup: the new owner cannot authenticate to this server ({e}); servers need a shared tenancy.migration.token for backups"
                );
                tracing::warn!(migration = %io.ctl.info.id, error = %msg, "backup not started");
                drop_copy_here(io);
                publish(io, "ended", Some(msg), None);
                return Ok(());
            }
            Ok(Err(e)) => {
                let msg = if started {
                    format!("the new owner answered: {e}")
                } else {
                    format!("the new owner cannot start the backup: {e}")
                };
                publish_broken(io, msg);
            }
            Err(_) => publish_broken(
                io,
                format!(
                    "the new owner {} did not answer within {} s",
                    io.ctl.info.target,
                    CALL_WAIT.as_secs()
                ),
            ),
        }
        io.serve(tokio::time::sleep(POLL), |c| c.pending_backup.is_some())
            .await?;
    }
}

/// ROLLBACK: the new owner cuts its reverse stream over to this server.
async fn rollback(
    work: &mut Work,
    io: &mut Io<'_>,
    import: &str,
) -> Result<CutoverResult, MigrationError> {
    if let Some(e) = refusal_now(io.ctl) {
        return Err(e);
    }
    let id = io.ctl.info.id.clone();
    let owner = io.ctl.info.target.clone();
    tracing::info!(migration = %id, new_owner = %owner, "rollback: asking the new owner to hand the tenant back");
    let target = work.target.clone();
    let op = ["CUTOVER".to_string()];
    let answer = io
        .until(tokio::time::timeout(
            ROLLBACK_WAIT,
            target.backup(import, &op),
        ))
        .await?;
    let st = match answer {
        Ok(Ok(st)) => st,
        Ok(Err(e)) => {
            return Err(MigrationError::Failed(format!(
                "rollback refused by the new owner {owner}: {e}; the tenant is not writable here (STATUS shows whether it stays with the new owner; ROLLBACK may be retried)"
            )));
        }
        Err(_) => {
            return Err(MigrationError::Failed(format!(
                "rollback: the new owner {owner} did not answer within {} s; the tenant is not writable here (check STATUS there, then retry ROLLBACK)",
                ROLLBACK_WAIT.as_secs()
            )));
        }
    };
    // The new owner says it recorded the tenant moved back and activated the copy here: check
    // that this server does serve it before calling it done.
    let tenant_id = io.ctl.info.tenant.id().to_string();
    let here = io
        .ctl
        .env
        .registry
        .get(&tenant_id)
        .filter(|t| t.state() == TenantState::Active);
    if st.state != "rolled_back" || here.is_none() {
        return Err(MigrationError::Failed(format!(
            "rollback incomplete: the new owner reports the backup {} and this server does not serve the tenant; the tenant is not writable here (retry ROLLBACK)",
            st.state
        )));
    }
    io.ctl.transition(MigrationState::RolledBack, "roll back")?;
    let downtime_ms = st.downtime_ms.unwrap_or(0.0);
    let keys = here.map_or(0, |t| t.keyspace().len());
    publish(io, "rolled_back", None, st.migration_id);
    super::actor::release_frozen(work, io);
    tracing::info!(migration = %id, tenant = %tenant_id, keys, downtime_ms, "rolled back: this server owns the tenant again");
    Ok(CutoverResult {
        status: "rolled_back",
        downtime_ms,
        keys_migrated: keys,
    })
}

/// The checks of [`request`] again, on what is published now (the backup may have broken
/// since the request was taken).
fn refusal_now(ctl: &Control) -> Option<MigrationError> {
    refusal(ctl, true)
}

/// Ends the backup: the new owner stops its reverse stream and drops the copy here (bounded),
/// and the copy here is dropped whatever it answered (a broken backup's copy too).
async fn end(work: &mut Work, io: &mut Io<'_>, import: &str) {
    let target = work.target.clone();
    let op = ["END".to_string()];
    let answer = io
        .until(tokio::time::timeout(CALL_WAIT, target.backup(import, &op)))
        .await;
    let error = match answer {
        Ok(Ok(Ok(_))) => None,
        Ok(Ok(Err(e))) => Some(format!("the new owner answered END with: {e}")),
        Ok(Err(_)) => Some(format!(
            "the new owner {} did not answer END within {} s (its stream stops at its own end of retention)",
            io.ctl.info.target,
            CALL_WAIT.as_secs()
        )),
        // The server is going away: the copy goes with it.
        Err(e) => Some(e.to_string()),
    };
    drop_copy_here(io);
    let migration = io
        .ctl
        .published()
        .backup
        .as_ref()
        .and_then(|b| b.migration_id.clone());
    publish(io, "ended", error, migration);
}

/// Drops this server's backup copy of the tenant (the staged import), putting the moved
/// record back.
fn drop_copy_here(io: &mut Io<'_>) {
    let imports = io.ctl.env.imports.clone();
    let tenant = io.ctl.info.tenant.id().to_string();
    for imp in imports.list() {
        if imp.backup
            && imp.tenant_id == tenant
            && matches!(imp.state(), ImportState::Receiving | ImportState::Stopped)
            && let Err(e) = imports.abort(&imp.id)
        {
            tracing::warn!(import = %imp.id, error = %e, "cannot drop the backup copy");
        }
    }
}

fn publish(io: &mut Io<'_>, state: &'static str, error: Option<String>, migration: Option<String>) {
    io.ctl.publish(|p| {
        if let Some(b) = &mut p.backup {
            b.state = state;
            b.error = error;
            if migration.is_some() {
                b.migration_id = migration;
            }
            b.lag_seconds = 0.0;
            b.lag_records = 0;
            b.lag_bytes = 0;
        }
    });
}

fn publish_broken(io: &mut Io<'_>, error: String) {
    if io.ctl.published().backup.as_ref().map(|b| b.state) != Some("broken") {
        tracing::warn!(migration = %io.ctl.info.id, error = %error, "backup broken");
    }
    io.ctl.publish(|p| {
        if let Some(b) = &mut p.backup {
            b.state = "broken";
            b.error = Some(error);
        }
    });
}

/// How a reverse stream (a migration on the new owner) stands, as the old source sees its
/// backup.
pub(super) fn backup_view(s: &MigrationStatus, until_ms: u64) -> BackupStatus {
    use MigrationState::*;
    let broken = s.unreachable_seconds > 0.0;
    let state = match s.state {
        Syncing | LiveSync | CuttingOver | Stopping if broken => "broken",
        Queued | Waiting | AwaitingApproval | Approved | Syncing => "starting",
        LiveSync | CuttingOver => "streaming",
        Paused | Failed => "broken",
        Completed | Verified => "rolled_back",
        Cancelled | Stopped | Stopping | RolledBack => "ended",
    };
    let error = match state {
        "broken" if s.state == Paused => Some(
            "the reverse stream is paused on the new owner (TENANT.MIGRATE.RESUME there)".into(),
        ),
        "broken" => s
            .error
            .clone()
            .or_else(|| s.last_error.clone())
            .or_else(|| Some("the link to the old source is down".into())),
        _ => None,
    };
    BackupStatus {
        state,
        migration_id: Some(s.id.clone()),
        lag_seconds: s.lag_seconds,
        lag_records: s.lag_keys,
        lag_bytes: s.lag_bytes,
        until_ms,
        error,
        downtime_ms: None,
    }
}

/// The new owner's side: TENANT.IMPORT.BACKUP, which the old source calls.
impl MigrationManager {
    /// START: streams the tenant of `import` (activated here) back to its old source `to`, as
    /// a continuous sync marked as that import's backup, for `retention` at most. Idempotent:
    /// a backup already running is reported as it stands.
    pub async fn backup_start(
        &self,
        import: &str,
        to: &str,
        retention: Duration,
    ) -> Result<BackupStatus, MigrationError> {
        if let Ok(st) = self.backup_status(import)
            && !st.is_over()
            && st.state != "broken"
        {
            return Ok(st);
        }
        let imp = self
            .imports()
            .get(import)
            .map_err(|e| MigrationError::Failed(e.to_string()))?;
        if imp.state() != ImportState::Active {
            return Err(MigrationError::Failed(format!(
                "import {import} is {}: only the source of an activated import is kept as a backup",
                imp.state().name()
            )));
        }
        let to = normalize_addr(to)?;
        if !same_endpoint(&to, &imp.source_addr) {
            return Err(MigrationError::Failed(format!(
                "import {import} came from {}, not {to}: only its old source is kept as its backup",
                imp.source_addr
            )));
        }
        // A broken reverse stream of an earlier START gives way.
        let earlier = self.inner.backups.lock().get(import).cloned();
        if let Some((old, _)) = earlier {
            let _ = self.cancel(&old).await;
        }
        let cfg = MigrationConfig {
            mode: MigrationMode::Continuous,
            backup_of: Some(import.to_string()),
            ..Default::default()
        };
        let h = Box::pin(self.migrate(&imp.tenant_id, &to, cfg)).await?;
        let until_ms = ferrite_storage::now_ms() + retention.as_millis() as u64;
        self.inner
            .backups
            .lock()
            .insert(import.to_string(), (h.id.clone(), until_ms));
        tracing::info!(import, migration = %h.id, old_source = %to, retention_secs = retention.as_secs(), "backup started: streaming the tenant's changes back to its old source");
        // The retention ends the backup here too, should the old source be gone by then.
        let weak = Arc::downgrade(&self.inner);
        let import_id = import.to_string();
        let mig = h.id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(retention).await;
            if let Some(inner) = weak.upgrade() {
                let m = MigrationManager { inner };
                let current = m.inner.backups.lock().get(&import_id).map(|b| b.0.clone());
                if current.as_deref() == Some(mig.as_str()) {
                    let _ = m.backup_end(&import_id).await;
                }
            }
        });
        self.backup_status(import)
    }

    /// STATUS: how the reverse stream for `import` stands.
    pub fn backup_status(&self, import: &str) -> Result<BackupStatus, MigrationError> {
        let (id, until_ms) = self
            .inner
            .backups
            .lock()
            .get(import)
            .cloned()
            .ok_or_else(|| MigrationError::Failed(format!("no backup of import {import} here")))?;
        let e = self.entry(&id)?;
        Ok(backup_view(&self.compose(&e), until_ms))
    }

    /// CUTOVER (ROLLBACK on the old source): the cutover of the reverse stream, retried while
    /// writers keep its lag above `cutover_max_lag` (bounded); a reverse cutover whose
    /// activation was not confirmed is retried as CUTOVER RETRY.
    pub async fn backup_cutover(&self, import: &str) -> Result<BackupStatus, MigrationError> {
        let st = self.backup_status(import)?;
        let id = st
            .migration_id
            .clone()
            .ok_or_else(|| MigrationError::Failed(format!("no backup of import {import} here")))?;
        match st.state {
            "streaming" => {}
            "broken" if self.entry(&id)?.status.borrow().state == MigrationState::Failed => {}
            other => {
                return Err(MigrationError::Failed(format!(
                    "the backup is {other}{}: cannot hand the tenant back",
                    st.error.map(|e| format!(" ({e})")).unwrap_or_default()
                )));
            }
        }
        let deadline = Instant::now() + ROLLBACK_PATIENCE;
        loop {
            let failed = self.entry(&id)?.status.borrow().state == MigrationState::Failed;
            let r = if failed {
                self.cutover_retry(&id, false).await
            } else {
                self.cutover(&id).await
            };
            match r {
                Ok(c) => {
                    let mut st = self.backup_status(import)?;
                    st.downtime_ms = Some(c.downtime_ms);
                    tracing::info!(import, migration = %id, downtime_ms = c.downtime_ms, "rollback: the tenant is handed back to its old source");
                    return Ok(st);
                }
                Err(MigrationError::LagTooHigh { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// END: stops the reverse stream (its copy on the old source is dropped). Idempotent; a
    /// backup already rolled back is left as it is.
    pub async fn backup_end(&self, import: &str) -> Result<BackupStatus, MigrationError> {
        let Some((id, until_ms)) = self.inner.backups.lock().get(import).cloned() else {
            return Ok(BackupStatus {
                state: "ended",
                ..Default::default()
            });
        };
        let st = self.entry(&id)?.status.borrow().state;
        if !st.is_terminal()
            && st != MigrationState::Completed
            && let Err(e) = self.cancel(&id).await
        {
            tracing::warn!(import, migration = %id, error = %e, "cannot end the backup's stream");
        }
        tracing::info!(import, migration = %id, "backup ended");
        let e = self.entry(&id)?;
        Ok(backup_view(&self.compose(&e), until_ms))
    }

    /// Ends the reverse streams of `tenant` kept from here: a new migration of the tenant
    /// supersedes them.
    pub(super) async fn end_backups_of_tenant(&self, tenant: &str) {
        let streams: Vec<String> = self
            .inner
            .migrations
            .lock()
            .values()
            .filter(|e| {
                let st = e.status.borrow().state;
                e.info.backup_of.is_some()
                    && e.info.tenant.id() == tenant
                    && !st.is_terminal()
                    && st != MigrationState::Completed
            })
            .map(|e| e.info.id.clone())
            .collect();
        for id in streams {
            tracing::info!(migration = %id, tenant, "a new migration of the tenant ends its backup stream");
            if let Err(e) = self.cancel(&id).await {
                tracing::warn!(migration = %id, error = %e, "cannot end the backup's stream");
            }
        }
    }

    /// TENANT.MIGRATE.ROLLBACK on the old source (see the module docs).
    pub async fn rollback(&self, id: &str) -> Result<CutoverResult, MigrationError> {
        self.ask(
            id,
            "roll back",
            |reply| super::actor::Request::Backup(BackupRequest::Rollback(reply)),
            false,
        )
        .await
    }

    /// TENANT.MIGRATE.FINALIZE on the old source: ends the backup and releases the frozen
    /// copy; the migration is final.
    pub async fn finalize(&self, id: &str) -> Result<(), MigrationError> {
        self.ask(
            id,
            "finalize",
            |reply| super::actor::Request::Backup(BackupRequest::Finalize(reply)),
            false,
        )
        .await
    }
}
