//! Per-tenant backups and restores (TENANT.BACKUP*, TENANT.RESTORE; docs/backup.md).
//!
//! - [`command`]: the commands' syntax, parsed into [`command::Request`]s, and their replies.
//! - [`store`]: the backup directory (`[backup] dir`), backup ids, the description every backup
//!   carries ([`store::BackupMeta`]), LIST/INFO/DELETE.
//! - [`native`]: Ferrite's own backup files — the persistence crate's snapshot format (framed,
//!   CRC-32 per frame) with the description as its second frame, written from a
//!   [`ferrite_storage::PointInTimeCopy`] (writes keep running) and loaded into a fresh keyspace.
//! - [`rdb_format`]: Redis RDB files in and out (the same two operations for `FORMAT rdb` and
//!   `TENANT.RESTORE <t> RDB <path>`).
//! - [`replace`]: THE one way a tenant's data is replaced by freshly loaded data
//!   ([`replace::replace_keyspace`]): atomic for clients, durable for persistence.
//! - [`jobs`]: running backups and restores with their progress (TENANT.BACKUP.JOBS, INFO).
//! - [`schedule`]: scheduled backups and their retention (`[backup] interval_secs`, `retention`).

pub mod command;
pub mod jobs;
pub mod native;
pub mod rdb_format;
pub mod replace;
pub mod schedule;
pub mod store;

use std::sync::Arc;

use ferrite_storage::{Keyspace, PointInTimeCopy};

pub use jobs::{Jobs, Progress};
pub use store::{BackupMeta, Format};

/// What a copy of a tenant shows, captured in the critical section that opened it.
pub struct OpenedCopy {
    pub copy: PointInTimeCopy,
    /// Keys and digest of the keyspace at the copy's version (what the file must hold).
    pub keys: u64,
    pub digest: u64,
    /// Function libraries at the copy's version (name → code).
    pub libraries: std::collections::BTreeMap<String, Vec<u8>>,
}

/// Opens a point-in-time copy of `ks`, waiting (up to `patience`) while another copy of it is
/// open (a persistence snapshot or another backup). Blocking: call it off the async workers.
pub fn open_copy(ks: &Arc<Keyspace>, patience: std::time::Duration) -> Result<OpenedCopy, String> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let opened = PointInTimeCopy::open_with(ks, |db| {
            let d = db.digest();
            (d.keys(), d.combined(), db.scripting().libraries().clone())
        });
        if let Some((copy, (keys, digest, libraries))) = opened {
            return Ok(OpenedCopy {
                copy,
                keys,
                digest,
                libraries,
            });
        }
        if std::time::Instant::now() >= deadline {
            return Err("another copy of this tenant (a snapshot or a backup) is still running; try again later".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

use ferrite_protocol::ErrorReply;
use ferrite_tenancy::{Tenant, TenantState};

use crate::shared::Shared;
use jobs::JobKind;
use store::Found;

/// How long a backup waits for another copy of its tenant (a snapshot) to finish.
const COPY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Takes a backup of `t` (TENANT.BACKUP, and the schedule): a point-in-time copy written while
/// the tenant keeps serving writes. Returns the finished backup.
pub async fn take_backup(
    sh: &Arc<Shared>,
    t: &Arc<Tenant>,
    name: Option<String>,
    format: Format,
    scheduled: bool,
) -> Result<Found, ErrorReply> {
    match t.state() {
        TenantState::Moved => {
            let to = t.moved_to().unwrap_or_else(|| "another server".into());
            return Err(ErrorReply::err(format!(
                "tenant '{}' has moved to {to}: back it up there",
                t.id()
            )));
        }
        TenantState::Importing => {
            return Err(ErrorReply::err(format!(
                "tenant '{}' is being imported by a migration: back it up once it is activated",
                t.id()
            )));
        }
        TenantState::Active | TenantState::Suspended => {}
    }
    let dir = store::dir(sh);
    let created_ms = ferrite_storage::now_ms();
    let job = match &name {
        Some(id) => {
            if store::exists(&dir, id) {
                return Err(ErrorReply::err(format!(
                    "backup '{id}' already exists: delete it first or choose another NAME"
                )));
            }
            sh.backup_jobs
                .start(JobKind::Backup, id, t.id())
                .map_err(|_| ErrorReply::err(format!("backup '{id}' is being written")))?
        }
        None => {
            // Two backups of a tenant in the same second get `_2`, `_3`... after the time.
            let base = store::default_id(t.id(), created_ms);
            let mut found = None;
            for n in 1..100 {
                let id = if n == 1 {
                    base.clone()
                } else {
                    format!("{base}_{n}")
                };
                if store::exists(&dir, &id) {
                    continue;
                }
                if let Ok(j) = sh.backup_jobs.start(JobKind::Backup, &id, t.id()) {
                    found = Some(j);
                    break;
                }
            }
            found.ok_or_else(|| {
                ErrorReply::err(format!(
                    "too many backups of tenant '{}' this second",
                    t.id()
                ))
            })?
        }
    };
    let ks = t.keyspace();
    let tenant = t.id().to_string();
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let progress = &job.job.progress;
        progress.set_phase("waiting for the copy");
        let opened = open_copy(&ks, COPY_PATIENCE)?;
        progress.set_total(opened.keys);
        progress.set_phase("writing");
        let meta = BackupMeta {
            id: job.job.id.clone(),
            tenant,
            format,
            created_ms,
            keys: opened.keys,
            digest: BackupMeta::digest_hex(opened.digest),
            scheduled,
            ferrite_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let size = match format {
            Format::Native => native::write(opened, &dir, &meta, progress)?,
            Format::Rdb => write_rdb(opened, &dir, &meta, progress)?,
        };
        Ok::<Found, String>(Found {
            path: store::data_path(&dir, &meta.id, format),
            meta,
            size,
        })
    })
    .await
    .map_err(|e| ErrorReply::err(format!("the backup stopped: {e}")))?;
    match result {
        Ok(found) => {
            tracing::info!(backup = %found.meta.id, tenant = %found.meta.tenant, keys = found.meta.keys, bytes = found.size, took_ms = started.elapsed().as_millis() as u64, "backup written");
            Ok(found)
        }
        Err(e) => {
            tracing::warn!(tenant = %t.id(), error = %e, "backup failed");
            Err(ErrorReply::err(format!(
                "backup of tenant '{}' failed: {e}",
                t.id()
            )))
        }
    }
}

/// An RDB backup: the data file through [`rdb_format::write`], then its description beside it
/// (both `.tmp` + fsync + rename; the description last, so a listed backup is complete).
fn write_rdb(
    opened: OpenedCopy,
    dir: &std::path::Path,
    meta: &BackupMeta,
    progress: &Progress,
) -> Result<u64, String> {
    use std::io::Write;
    let path = store::data_path(dir, &meta.id, Format::Rdb);
    let tmp = dir.join(format!("{}.rdb.tmp", meta.id));
    let written = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        rdb_format::write(
            opened.copy,
            &opened.libraries,
            opened.keys,
            &mut out,
            progress,
        )?;
        out.flush()
            .and_then(|()| out.get_ref().sync_all())
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        let meta_path = store::rdb_meta_path(dir, &meta.id);
        let meta_tmp = dir.join(format!("{}.rdb.json.tmp", meta.id));
        let text = serde_json::to_vec_pretty(meta).map_err(|e| e.to_string())?;
        let f =
            std::fs::File::create(&meta_tmp).map_err(|e| format!("{}: {e}", meta_tmp.display()))?;
        let mut w = std::io::BufWriter::new(f);
        w.write_all(&text)
            .and_then(|()| w.flush())
            .and_then(|()| w.get_ref().sync_all())
            .map_err(|e| format!("{}: {e}", meta_tmp.display()))?;
        std::fs::rename(&meta_tmp, &meta_path)
            .map_err(|e| format!("{}: {e}", meta_path.display()))?;
        ferrite_persistence::paths::sync_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", path.display()))
    })();
    if written.is_err() {
        for p in [tmp, path, dir.join(format!("{}.rdb.json.tmp", meta.id))] {
            let _ = std::fs::remove_file(p);
        }
    }
    written
}

/// What a restore did.
pub struct RestoreDone {
    pub tenant: String,
    /// The backup id or `rdb:<path>`.
    pub source: String,
    pub keys: u64,
    pub digest: String,
    pub took_ms: u64,
}

/// TENANT.RESTORE: loads `source` into a fresh keyspace, verifies it (checksums; for backups,
/// the recorded key count and digest), then replaces the destination tenant's data with it
/// ([`replace::replace_keyspace`]) or creates the tenant. Any refusal leaves every tenant as it
/// was.
pub async fn restore(
    sh: &Arc<Shared>,
    tenant: &str,
    source: command::Source,
    as_tenant: Option<&str>,
    replace_existing: bool,
) -> Result<RestoreDone, ErrorReply> {
    let started = std::time::Instant::now();
    let dest = as_tenant.unwrap_or(tenant).to_string();
    // What to load, checked before any work.
    let (label, backup) = match &source {
        command::Source::Backup(id) => {
            let dir = store::dir(sh);
            let lookup = id.clone();
            let found = tokio::task::spawn_blocking(move || store::find(&dir, &lookup))
                .await
                .map_err(|e| ErrorReply::err(format!("cannot read backup '{id}': {e}")))?
                .map_err(|e| ErrorReply::err(format!("backup '{id}' cannot be read: {e}")))?
                .ok_or_else(|| command::no_such_backup(id))?;
            if found.meta.tenant != tenant {
                return Err(ErrorReply::err(format!(
                    "backup '{id}' is of tenant '{}', not '{tenant}'",
                    found.meta.tenant
                )));
            }
            (id.clone(), Some(found))
        }
        command::Source::Rdb(path, _) => (format!("rdb:{}", path.display()), None),
    };
    // With persistence on, a restore of an RDB file into a tenant that is here writes the
    // tenant's next snapshot while the file loads (one pass over the data instead of two).
    let streamed_into =
        replace::destination(sh, &dest, replace_existing)?.filter(|_| sh.persistence.is_some());
    let job = sh
        .backup_jobs
        .start(JobKind::Restore, &label, &dest)
        .map_err(|j| {
            ErrorReply::err(format!(
                "a restore into tenant '{dest}' is already running ({})",
                j.id
            ))
        })?;
    let persistence = sh.persistence.clone();
    let stream_to = streamed_into.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let progress = &job.job.progress;
        progress.set_phase("loading");
        let begin = || match (&persistence, &stream_to) {
            (Some(p), Some(t)) => p.begin_replace(t).map(Some),
            _ => Ok(None),
        };
        let (fresh, replacement) = match (&source, backup) {
            (command::Source::Backup(_), Some(found)) => match found.meta.format {
                Format::Native => (native::load(&found.path, progress)?.1, None),
                Format::Rdb => {
                    progress.set_total(found.meta.keys);
                    let mut replacement = begin()?;
                    let fresh =
                        rdb_format::load(&found.path, None, replacement.as_mut(), progress)?;
                    native::verify(&found.meta, &fresh)?;
                    (fresh, replacement)
                }
            },
            (command::Source::Rdb(path, db), _) => {
                let mut replacement = begin()?;
                let fresh = rdb_format::load(path, *db, replacement.as_mut(), progress)?;
                (fresh, replacement)
            }
            (command::Source::Backup(id), None) => {
                return Err(format!("no such backup '{id}'"));
            }
        };
        progress.set_phase("replacing");
        Ok::<_, String>((fresh, replacement, job))
    })
    .await
    .map_err(|e| ErrorReply::err(format!("the restore stopped: {e}")))?;
    let (fresh, replacement, job) = loaded.map_err(|e| {
        ErrorReply::err(format!(
            "restore from {label} refused: {e}; tenant '{dest}' was not changed"
        ))
    })?;
    let (keys, digest) = {
        let db = fresh.lock_async().await;
        (
            db.digest().keys(),
            BackupMeta::digest_hex(db.digest().combined()),
        )
    };
    // Checked again: the tenant may have changed while the file was loading.
    let (t, created) = match replace::destination(sh, &dest, replace_existing)? {
        Some(t) => (t, false),
        None => (replace::create(sh, &dest)?, true),
    };
    let replaced = match (replacement, &streamed_into) {
        // Still the tenant whose snapshot was written while loading.
        (Some(r), Some(s)) if Arc::ptr_eq(s, &t) => {
            replace::finish_replacement(sh, &t, fresh, r).await
        }
        (r, _) => {
            // (Another tenant now: the snapshot written for the first is dropped.)
            drop(r);
            replace::replace_keyspace(sh, &t, fresh).await
        }
    };
    if let Err(e) = replaced {
        if created {
            let _ = sh.registry.delete(&dest, true, None);
        }
        return Err(ErrorReply::err(format!(
            "restore into tenant '{dest}' failed: {e}"
        )));
    }
    drop(job);
    tracing::info!(tenant = %dest, source = %label, keys, "restored");
    Ok(RestoreDone {
        tenant: dest,
        source: label,
        keys,
        digest,
        took_ms: started.elapsed().as_millis() as u64,
    })
}
