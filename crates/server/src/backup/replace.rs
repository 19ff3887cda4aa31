//! The one way a tenant's whole data is replaced by freshly loaded data (a restore), and the
//! checks that decide whether a tenant may be replaced.
//!
//! Atomic for clients: the swap happens in one critical section of the tenant's keyspace lock
//! ([`ferrite_storage::Db::replace_contents`]), so a command sees the old data or the new, never
//! a mix; a WATCH taken before fails its EXEC; clients blocked on keys the new data holds are
//! served; the digest is the new data's. Durable: with persistence on, the new data is written
//! as the tenant's next snapshot before the swap and put in place in the same critical section
//! as the swap and a log rotation ([`ferrite_persistence::Persistence::replace_data`]), so after
//! a restart the tenant is the restored data plus what was written after it — never the old
//! data, never a mix. An RDB restore into a tenant that exists writes that snapshot while the
//! file loads ([`finish_replacement`]) rather than in a second pass over the loaded data.

use std::sync::Arc;

use ferrite_persistence::{OldContents, Replacement};
use ferrite_protocol::ErrorReply;
use ferrite_storage::Keyspace;
use ferrite_tenancy::migration::ImportState;
use ferrite_tenancy::{CreateOptions, Registry, Tenant, TenantState};

use crate::errors;
use crate::shared::Shared;

/// Replaces `tenant`'s data with what `fresh` (a keyspace nobody else uses) holds; `fresh` is
/// left empty. Waits without holding a worker thread.
pub async fn replace_keyspace(
    sh: &Arc<Shared>,
    tenant: &Arc<Tenant>,
    fresh: Arc<Keyspace>,
) -> Result<(), String> {
    let persistence = sh.persistence.clone();
    let tenant = tenant.clone();
    swap_off_thread(move || match persistence {
        Some(p) => p.replace_data(&tenant, &fresh),
        None => {
            let ks = tenant.keyspace();
            let mut fresh_db = fresh.lock();
            let old = ks
                .lock()
                .replace_contents(&mut fresh_db, ferrite_storage::now_ms());
            drop(fresh_db);
            Ok(old)
        }
    })
    .await
}

/// [`replace_keyspace`] for data whose durable snapshot was written while it loaded:
/// `replacement` was begun for `tenant` ([`Persistence::begin_replace`]) and got every key
/// `fresh` holds. Only the swap (and the snapshot's fsync and rename) is left to do.
///
/// [`Persistence::begin_replace`]: ferrite_persistence::Persistence::begin_replace
pub async fn finish_replacement(
    sh: &Arc<Shared>,
    tenant: &Arc<Tenant>,
    fresh: Arc<Keyspace>,
    replacement: Replacement,
) -> Result<(), String> {
    let Some(persistence) = sh.persistence.clone() else {
        return Err("persistence is off".into());
    };
    let tenant = tenant.clone();
    swap_off_thread(move || persistence.finish_replace(&tenant, replacement, &fresh)).await
}

/// Runs a swap on the blocking pool; the old contents it returns are nobody's then, and are
/// freed in the background, after the reply.
async fn swap_off_thread(
    swap: impl FnOnce() -> Result<OldContents, String> + Send + 'static,
) -> Result<(), String> {
    let old = tokio::task::spawn_blocking(swap)
        .await
        .map_err(|e| format!("the restore stopped: {e}"))??;
    tokio::task::spawn_blocking(move || drop(old));
    Ok(())
}

/// The tenant a restore writes to, if it may: `Ok(Some(t))` to replace `t`'s data, `Ok(None)`
/// when there is no such tenant (the restore creates it). Refused: a tenant served elsewhere
/// (moved), being imported or migrated, the copy of a continuous sync (served or stopped), or
/// holding keys without `replace`.
pub fn destination(
    sh: &Shared,
    id: &str,
    replace: bool,
) -> Result<Option<Arc<Tenant>>, ErrorReply> {
    let id = Registry::validate_id(id.as_bytes()).map_err(|e| errors::tenancy(&e))?;
    let Some(t) = sh.registry.get(id) else {
        return Ok(None);
    };
    match t.state() {
        TenantState::Moved => {
            let to = t.moved_to().unwrap_or_else(|| "another server".into());
            return Err(ErrorReply::err(format!(
                "tenant '{id}' has moved to {to}: restore it there, or here as a new tenant with AS <new-tenant>"
            )));
        }
        TenantState::Importing => {
            return Err(ErrorReply::err(format!(
                "tenant '{id}' is being imported by a migration: restore after it is activated or aborted"
            )));
        }
        TenantState::Active | TenantState::Suspended => {}
    }
    // The served copy of a continuous sync (MODE continuous CONFLICT ...) is active here but
    // still the sync's: what the source ships next would land on the restored data, and a
    // STOP or ABORT would drop it. A stopped copy is still the import's too.
    if let Some(import) = sh.migrations.imports().holding(id) {
        let (src, imp) = (&import.source_addr, &import.id);
        return Err(ErrorReply::err(match import.state() {
            ImportState::Stopped => format!(
                "tenant '{id}' is the stopped copy of a continuous sync from {src} (import {imp}): drop it with TENANT.IMPORT.ABORT {imp} first, or restore here as a new tenant with AS <new-tenant>"
            ),
            _ => format!(
                "tenant '{id}' is the copy of a sync still running from {src} (migration {}, import {imp}; served here while it syncs): stop the sync on the source (TENANT.MIGRATE.STOP) and drop the copy (TENANT.IMPORT.ABORT {imp}) first, or restore here as a new tenant with AS <new-tenant>",
                import.migration_id
            ),
        }));
    }
    if let Some(m) = crate::hooks::running_migration(sh, id) {
        return Err(ErrorReply::err(format!(
            "tenant '{id}' is being migrated ({m}): cancel the migration or wait for it to end"
        )));
    }
    let keys = t.keyspace().len();
    if keys > 0 && !replace {
        return Err(ErrorReply::coded(
            "BUSYKEY",
            format!("tenant '{id}' holds {keys} keys: add REPLACE to replace them"),
        ));
    }
    Ok(Some(t))
}

/// Creates the tenant a restore writes to (AS a new tenant, or a tenant this server does not
/// have), with the server's default limits and no password, as TENANT.CREATE <id> would.
pub fn create(sh: &Shared, id: &str) -> Result<Arc<Tenant>, ErrorReply> {
    let t = sh
        .registry
        .create(id, CreateOptions::default())
        .map_err(|e| errors::tenancy(&e))?;
    tracing::info!(tenant = id, "tenant created for a restore");
    Ok(t)
}
