//! Loading one tenant's directory: the newest snapshot, then every later log in order, effects
//! applied with the clock they were recorded with; then keys whose time passed while the server
//! was down are removed.

use std::fs::{File, OpenOptions};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use ferrite_commands::replay::Replayer;
use ferrite_storage::{Db, Effects};
use ferrite_tenancy::migration::import::{IMPORT_EFFECT, apply_journaled};

use crate::format::{FrameError, FrameReader, Kind};
use crate::paths::{self, TenantFile};
use crate::record;
use crate::snapshot::{self, LoadError};

/// What loading a tenant found.
#[derive(Debug, Default)]
pub struct TenantLoad {
    /// Keys loaded (after removing expired ones).
    pub keys: u64,
    /// Keys dropped because they expired while the server was down.
    pub expired: u64,
    pub snapshot: Option<PathBuf>,
    pub snapshot_bytes: u64,
    /// Log bytes after the snapshot (the compaction trigger counts from here).
    pub log_bytes: u64,
    /// Effects applied.
    pub effects: u64,
    /// Effects that failed to apply (logged; a bug, not damage: the file passed its checksums).
    pub replay_errors: u64,
    /// The generation new effects go to, and its file if it exists (opened for appending).
    pub generation: u64,
    pub last_log: Option<(File, u64)>,
    /// A torn tail that was cut off: (file, offset, reason).
    pub torn: Option<(PathBuf, u64, String)>,
}

/// Loads `dir` (tenant `tenant`, incarnation `incarnation`) into `db`. `repair_torn` cuts a torn
/// tail off the newest log (the server does; `--check-data` without `--repair` does not).
pub fn load_tenant(
    dir: &Path,
    tenant: &str,
    incarnation: u64,
    db: &mut Db,
    repair_torn: bool,
) -> Result<TenantLoad, LoadError> {
    let mut out = TenantLoad {
        generation: 1,
        ..Default::default()
    };
    let mut snaps = Vec::new();
    let mut logs = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(LoadError::new(dir, e.to_string())),
    };
    for entry in rd {
        let entry = entry.map_err(|e| LoadError::new(dir, e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match paths::classify(&name) {
            TenantFile::Snapshot(g) => snaps.push((g, entry.path())),
            TenantFile::Log(g) => logs.push((g, entry.path())),
            TenantFile::Temporary => {
                // A snapshot that was being written when the server stopped.
                if repair_torn {
                    tracing::info!(file = %entry.path().display(), "removing an unfinished snapshot");
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            TenantFile::Other => {}
        }
    }
    snaps.sort();
    logs.sort();
    let base = snaps.last().map(|(g, _)| *g).unwrap_or(0);
    if let Some((g, path)) = snaps.last() {
        let (header, _) = snapshot::load(path, db)?;
        check_header(path, &header, tenant, incarnation, *g)?;
        out.snapshot = Some(path.clone());
        out.snapshot_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        out.generation = *g;
    }
    if repair_torn {
        // Superseded by the newest snapshot (a crash came between its rename and their removal).
        for (g, path) in snaps.iter().chain(logs.iter()) {
            if *g < base {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    logs.retain(|(g, _)| *g >= base);
    let mut replayer = Replayer::new();
    let n = logs.len();
    for (i, (g, path)) in logs.iter().enumerate() {
        let last = i + 1 == n;
        let good = replay_log(
            path,
            tenant,
            incarnation,
            *g,
            db,
            &mut replayer,
            &mut out,
            last,
        )?;
        out.generation = *g;
        out.log_bytes += good;
        if last {
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if good < size {
                if repair_torn {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(|e| LoadError::new(path, e.to_string()))?;
                    f.set_len(good)
                        .and_then(|_| f.sync_all())
                        .map_err(|e| LoadError::new(path, format!("cannot truncate: {e}")))?;
                } else {
                    continue;
                }
            }
            if repair_torn {
                let f = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(|e| LoadError::new(path, e.to_string()))?;
                out.last_log = Some((f, good));
            }
        }
    }
    // Keys whose time came while the server was down.
    let now = ferrite_storage::now_ms();
    let before = db.len();
    loop {
        if db.expire_cycle(now, 100_000) < 100_000 {
            break;
        }
    }
    out.expired = (before - db.len()) as u64;
    out.keys = db.len() as u64;
    Ok(out)
}

fn check_header(
    path: &Path,
    h: &record::FileHeader,
    tenant: &str,
    incarnation: u64,
    generation: u64,
) -> Result<(), LoadError> {
    if h.tenant != tenant || h.incarnation != incarnation || h.generation != generation {
        return Err(LoadError::new(
            path,
            format!(
                "the file belongs to tenant '{}' incarnation {} generation {}, not to tenant '{tenant}' incarnation {incarnation} generation {generation}",
                h.tenant, h.incarnation, h.generation
            ),
        ));
    }
    Ok(())
}

/// Replays one log; returns the offset where its good frames end. Only the newest log may end
/// torn: in an older one (fsynced before its successor got anything) that is corruption.
#[allow(clippy::too_many_arguments)]
fn replay_log(
    path: &Path,
    tenant: &str,
    incarnation: u64,
    generation: u64,
    db: &mut Db,
    replayer: &mut Replayer,
    out: &mut TenantLoad,
    newest: bool,
) -> Result<u64, LoadError> {
    let file = File::open(path).map_err(|e| LoadError::new(path, e.to_string()))?;
    let size = file
        .metadata()
        .map_err(|e| LoadError::new(path, e.to_string()))?
        .len();
    let torn = |out: &mut TenantLoad, offset: u64, reason: &str| -> Result<u64, LoadError> {
        if !newest {
            return Err(LoadError::corrupt(
                path,
                offset,
                format!("{reason} (not the newest log)"),
            ));
        }
        tracing::warn!(file = %path.display(), offset, reason, dropped_bytes = size - offset, "dropping the torn tail of a log (the last write before a crash; it was never acknowledged)");
        out.torn = Some((path.to_path_buf(), offset, reason.to_string()));
        Ok(offset)
    };
    let mut r = match FrameReader::open(BufReader::with_capacity(1 << 20, file), size, Kind::Log) {
        Ok(r) => r,
        Err(FrameError::Torn { reason, .. }) => return torn(out, 0, reason),
        Err(e) => return Err(LoadError::frame(path, e)),
    };
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        let at = match r.next_frame(&mut buf) {
            Ok(Some(at)) => at,
            Ok(None) => return Ok(size),
            Err(FrameError::Torn { offset, reason }) => {
                // A log whose header frame is torn has nothing: cut it whole.
                let keep = if first { 0 } else { offset };
                return torn(out, keep, reason);
            }
            Err(e) => return Err(LoadError::frame(path, e)),
        };
        if first {
            first = false;
            let h = record::read_header(&buf, record::LOG_HEADER)
                .map_err(|e| LoadError::corrupt(path, at, format!("header: {e}")))?;
            check_header(path, &h, tenant, incarnation, generation)?;
            continue;
        }
        let (now, effects) =
            record::read_effects(&buf).map_err(|e| LoadError::corrupt(path, at, e.to_string()))?;
        out.effects += effects.len() as u64;
        let result = match effects.first() {
            Some(a) if effects.len() == 1 && a.len() == 2 && a[0] == IMPORT_EFFECT => {
                apply_journaled(db, &a[1], now).map_err(|e| e.to_string())
            }
            _ => replayer
                .apply_all(db, &Effects::new(now, &effects))
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            out.replay_errors += 1;
            tracing::warn!(file = %path.display(), offset = at, error = %e, "an effect could not be applied while loading");
        }
    }
}
