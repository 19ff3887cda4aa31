//! Scheduled backups (`[backup] interval_secs`) and their retention (`[backup] retention`).
//!
//! Every `interval_secs` the schedule backs up every tenant served here ([`due_tenants`]) in
//! the native format, one after another, then deletes that tenant's oldest
//! *scheduled* backups beyond `retention`. Backups taken with TENANT.BACKUP are never deleted by
//! the schedule. A failure is logged and retried at the next interval.

use std::sync::Arc;
use std::time::Duration;

use ferrite_tenancy::{Tenant, TenantState};

use super::store::{self, Format};
use crate::shared::Shared;

/// The tenants a scheduled round backs up: served here, and (for the `default` tenant, which
/// always exists) holding keys.
pub fn due_tenants(sh: &Shared) -> Vec<Arc<Tenant>> {
    sh.registry
        .list()
        .into_iter()
        .filter(|t| matches!(t.state(), TenantState::Active | TenantState::Suspended))
        .filter(|t| t.id() != ferrite_tenancy::DEFAULT_TENANT || !t.keyspace().is_empty())
        .collect()
}

/// Runs until the server stops: a round every `interval_secs` (re-read each time, so the
/// schedule can be configured without a restart when CONFIG learns it; 0 = off).
pub async fn run(sh: Arc<Shared>) {
    let mut shutdown = sh.shutdown.subscribe();
    let mut last_round = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.changed() => return,
        }
        if *sh.shutdown.borrow() {
            return;
        }
        let interval = sh.config.read().backup.interval_secs;
        if interval == 0 || last_round.elapsed() < Duration::from_secs(interval) {
            continue;
        }
        last_round = tokio::time::Instant::now();
        round(&sh).await;
    }
}

/// One scheduled round: a backup of every due tenant, then retention.
pub async fn round(sh: &Arc<Shared>) {
    for t in due_tenants(sh) {
        match super::take_backup(sh, &t, None, Format::Native, true).await {
            Ok(found) => {
                tracing::info!(backup = %found.meta.id, tenant = %t.id(), "scheduled backup written");
            }
            Err(e) => {
                tracing::warn!(tenant = %t.id(), error = %e, "scheduled backup failed");
                continue;
            }
        }
        let keep = sh.config.read().backup.retention;
        let dir = store::dir(sh);
        let tenant = t.id().to_string();
        let pruned = tokio::task::spawn_blocking(move || prune(&dir, &tenant, keep)).await;
        if let Ok(Err(e)) = pruned {
            tracing::warn!(tenant = %t.id(), error = %e, "retention: cannot delete an old backup");
        }
    }
}

/// Deletes `tenant`'s oldest scheduled backups beyond the newest `keep` (0 keeps them all).
/// Returns the ids deleted.
pub fn prune(dir: &std::path::Path, tenant: &str, keep: usize) -> Result<Vec<String>, String> {
    if keep == 0 {
        return Ok(Vec::new());
    }
    let (found, _) = store::list(dir, Some(tenant));
    let scheduled: Vec<_> = found.into_iter().filter(|f| f.meta.scheduled).collect();
    let excess = scheduled.len().saturating_sub(keep);
    let mut deleted = Vec::new();
    // `list` is oldest first.
    for f in scheduled.into_iter().take(excess) {
        store::delete(dir, &f.meta.id)?;
        deleted.push(f.meta.id);
    }
    Ok(deleted)
}
