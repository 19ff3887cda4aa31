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
    let starts: Vec<LogStart> = logs.iter().map(|(_, path)| peek_log(path)).collect();
    // A log whose predecessor (log format 2) is newer than the snapshot but not here: the
    // writes it held are missing, not torn by a crash (each log is created and its directory
    // fsynced before the switch to it), so nothing after it may be replayed as if they were not.
    if let (Some((g, path)), Some(start)) = (logs.first(), starts.first())
        && let Some((pg, length)) = start.predecessor
        && pg >= base.max(1)
    {
        return Err(LoadError::new(
            path,
            format!(
                "log generation {pg} ({length} bytes) is missing: log {g} says it follows it; move the logs from {g} on away to start from the snapshot alone"
            ),
        ));
    }
    let n = logs.len();
    for (i, (g, path)) in logs.iter().enumerate() {
        let mut last = i + 1 == n;
        // What the next log says this one held when it started (log format 2).
        let expected = match starts.get(i + 1).and_then(|s| s.predecessor) {
            Some((pg, length)) if pg != *g => {
                // `starts` has one entry per log, so the next log is there.
                let next = logs.get(i + 1).map_or(pg, |(next, _)| *next);
                // The cut the checker's repair makes here is at this log's end: nothing of it
                // is dropped, the later logs are.
                let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                return Err(LoadError::corrupt(
                    path,
                    size,
                    format!(
                        "log generation {pg} ({length} bytes) is missing: log {next} says it follows it, but the log before it here is generation {g}"
                    ),
                ));
            }
            predecessor => predecessor.map(|(_, length)| length),
        };
        // An older log may end short or torn only where its loss cannot have been followed by
        // replayed records: its successor says how long it was (the old log is fsynced just
        // after the switch, so a crash can come before), or no later log holds a record.
        let later_empty = starts[i + 1..].iter().all(|s| !s.records);
        let (good, size) = replay_log(
            path,
            tenant,
            incarnation,
            *g,
            db,
            &mut replayer,
            &mut out,
            last || later_empty || expected.is_some(),
        )?;
        out.generation = *g;
        out.log_bytes += good;
        if !last {
            match expected {
                Some(length) if good < length => {
                    // The crash came between the switch and the old log's fsync: the records
                    // after the gap must not be replayed. Keep the prefix, as for a torn tail.
                    let reason = format!(
                        "the log ends at offset {good} but its successor says it had {length} bytes (its tail was lost in a crash before it was fsynced)"
                    );
                    tracing::warn!(file = %path.display(), offset = good, expected = length, "stopping the replay at a gap: the later logs of this tenant are set aside (their records follow writes that were lost)");
                    out.torn = Some((path.clone(), good, reason));
                    if repair_torn {
                        set_aside(&logs[i + 1..])?;
                    }
                    last = true;
                }
                Some(length) if good != length || good != size => {
                    return Err(LoadError::corrupt(
                        path,
                        good.min(length),
                        format!(
                            "the log holds {good} good bytes of {size}, its successor says it had {length} (not the newest log)"
                        ),
                    ));
                }
                _ if good < size => {
                    // Torn, and no later log holds a record: this is the newest log with data.
                    if repair_torn {
                        set_aside(&logs[i + 1..])?;
                    }
                    last = true;
                }
                _ => {}
            }
        }
        if last {
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
                    break;
                }
            }
            if repair_torn {
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| LoadError::new(path, e.to_string()))?;
                out.last_log = Some((f, good));
            }
            break;
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

/// What the start of a log says, read before the replay.
struct LogStart {
    /// It holds a record after its header (a predecessor record counts: its writes began).
    records: bool,
    /// Its predecessor record: the previous log's (generation, length).
    predecessor: Option<(u64, u64)>,
}

/// Reads a log's header and first record. Damage is not reported here (the replay does);
/// a log that cannot be read counts as holding records, so that nothing before it is excused.
fn peek_log(path: &Path) -> LogStart {
    let damaged = LogStart {
        records: true,
        predecessor: None,
    };
    let Ok(file) = File::open(path) else {
        return damaged;
    };
    let Ok(size) = file.metadata().map(|m| m.len()) else {
        return damaged;
    };
    let empty = LogStart {
        records: false,
        predecessor: None,
    };
    let mut r = match FrameReader::open(BufReader::new(file), size, Kind::Log) {
        Ok(r) => r,
        Err(FrameError::Torn { .. }) => return empty,
        Err(_) => return damaged,
    };
    let mut buf = Vec::new();
    match r.next_frame(&mut buf) {
        Ok(Some(_)) => {}
        Ok(None) | Err(FrameError::Torn { .. }) => return empty,
        Err(_) => return damaged,
    }
    match r.next_frame(&mut buf) {
        Ok(Some(_)) => LogStart {
            records: true,
            predecessor: record::read_predecessor(&buf).ok(),
        },
        Ok(None) | Err(FrameError::Torn { .. }) => empty,
        Err(_) => damaged,
    }
}

/// Moves logs whose records follow a gap out of the way (renamed `<name>.after-gap`, which the
/// loader ignores), so that the server can continue the log before them; kept for the operator.
/// A name already taken by an earlier gap at the same generation gets a number
/// (`<name>.after-gap.2`, ...): nothing set aside is overwritten.
fn set_aside(logs: &[(u64, PathBuf)]) -> Result<(), LoadError> {
    for (_, path) in logs {
        let mut aside = path.clone().into_os_string();
        aside.push(".after-gap");
        let mut n = 1;
        while Path::new(&aside).exists() {
            n += 1;
            aside = path.clone().into_os_string();
            aside.push(format!(".after-gap.{n}"));
        }
        std::fs::rename(path, &aside)
            .map_err(|e| LoadError::new(path, format!("cannot set the log aside: {e}")))?;
        tracing::warn!(file = %path.display(), to = %PathBuf::from(&aside).display(), "log set aside: it follows a gap");
    }
    if let Some((_, path)) = logs.first()
        && let Some(dir) = path.parent()
    {
        paths::sync_dir(dir).map_err(|e| LoadError::new(dir, e.to_string()))?;
    }
    Ok(())
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

/// Replays one log; returns the offset where its good frames end and the length of the file
/// without its preallocated zeros (the two differ when its tail is torn). `newest`: it may end
/// torn (the caller decides, see `load_tenant`); otherwise that is corruption.
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
) -> Result<(u64, u64), LoadError> {
    let file = File::open(path).map_err(|e| LoadError::new(path, e.to_string()))?;
    let size = file
        .metadata()
        .map_err(|e| LoadError::new(path, e.to_string()))?
        .len();
    let torn = |out: &mut TenantLoad, offset: u64, reason: &str| -> Result<(u64, u64), LoadError> {
        if !newest {
            return Err(LoadError::corrupt(
                path,
                offset,
                format!("{reason} (not the newest log)"),
            ));
        }
        tracing::warn!(file = %path.display(), offset, reason, dropped_bytes = size - offset, "dropping the torn tail of a log (the last write before a crash; it was never acknowledged)");
        out.torn = Some((path.to_path_buf(), offset, reason.to_string()));
        Ok((offset, size))
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
            Ok(None) => return Ok((r.data_end(), r.data_end())),
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
        if buf.first() == Some(&record::PREDECESSOR) {
            record::read_predecessor(&buf)
                .map_err(|e| LoadError::corrupt(path, at, e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use ferrite_storage::{EffectSink, Effects, Keyspace};

    use super::*;
    use crate::core::{Core, FsyncPolicy};
    use crate::log::TenantLog;

    fn set(log: &TenantLog, key: &str) {
        let argv = vec![vec![
            b"SET".to_vec(),
            key.as_bytes().to_vec(),
            b"v".to_vec(),
        ]];
        log.publish(&Effects::new(1, &argv));
        log.flush().expect("write");
    }

    /// Where the records of a log end (zeros follow: logs are preallocated).
    fn records_len(path: &Path) -> u64 {
        let f = File::open(path).expect("log");
        let len = f.metadata().expect("log").len();
        let end = crate::log::records_end(&f, path, len).expect("readable");
        assert!(end < len, "{}: no preallocated tail", path.display());
        end
    }

    /// Log 1 holds `a` and `b`, log 2 (after a rotation) `c` and `d`; the old log is not
    /// fsynced (as between the switch and the snapshot thread's fsync). Returns the two paths
    /// and log 1's length after `a`.
    fn two_logs(dir: &Path) -> (PathBuf, PathBuf, u64) {
        let log = TenantLog::new(
            Core::new(FsyncPolicy::Everysec),
            "t",
            1,
            dir.to_path_buf(),
            1,
            None,
        );
        let old = dir.join(paths::log_file(1));
        let new = dir.join(paths::log_file(2));
        set(&log, "a");
        let after_a = records_len(&old);
        set(&log, "b");
        log.prepare_next().expect("next log");
        log.rotate_locked();
        set(&log, "c");
        set(&log, "d");
        (old, new, after_a)
    }

    /// Logs 1, 2 and 3 (two rotations), each holding records; returns their paths.
    fn three_logs(dir: &Path) -> [PathBuf; 3] {
        let log = TenantLog::new(
            Core::new(FsyncPolicy::Everysec),
            "t",
            1,
            dir.to_path_buf(),
            1,
            None,
        );
        set(&log, "a");
        log.prepare_next().expect("log 2");
        log.rotate_locked();
        set(&log, "b");
        log.prepare_next().expect("log 3");
        log.rotate_locked();
        set(&log, "c");
        log.sync_retired();
        [1, 2, 3].map(|g| dir.join(paths::log_file(g)))
    }

    /// A log missing between two others (deleted, lost by the filesystem) is not a crash's
    /// torn tail: the start is refused, naming it, and nothing is set aside or cut.
    #[test]
    fn a_missing_log_between_two_others_refuses_the_load() {
        let dir = tempfile::tempdir().expect("temp dir");
        let [one, two, three] = three_logs(dir.path());
        let (result, present) = load(dir.path(), true);
        result.expect("all three load");
        assert_eq!(present, ["a", "b", "c"]);

        std::fs::remove_file(&two).expect("remove log 2");
        let one_len = std::fs::metadata(&one).expect("log 1").len();
        let (result, _) = load(dir.path(), true);
        let err = result.expect_err("refused");
        assert_eq!(err.path, one, "{err}");
        assert_eq!(err.offset, Some(one_len), "the cut drops nothing of log 1");
        assert!(err.to_string().contains("generation 2"), "{err}");
        assert!(three.exists(), "nothing set aside");

        // Missing at the start: the first log here follows one that is not.
        std::fs::remove_file(&one).expect("remove log 1");
        let (result, _) = load(dir.path(), true);
        let err = result.expect_err("refused");
        assert_eq!(err.path, three, "{err}");
        assert!(err.to_string().contains("generation 2"), "{err}");
    }

    fn load(dir: &Path, repair: bool) -> (Result<TenantLoad, LoadError>, Vec<&'static str>) {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        let result = load_tenant(dir, "t", 1, &mut db, repair);
        let present = ["a", "b", "c", "d"]
            .into_iter()
            .filter(|k| db.contains(k.as_bytes(), 1))
            .collect();
        (result, present)
    }

    fn predecessor_of(path: &Path) -> Option<(u64, u64)> {
        peek_log(path).predecessor
    }

    #[test]
    fn the_new_log_starts_with_the_old_logs_length_and_both_replay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (old, new, _) = two_logs(dir.path());
        let old_len = records_len(&old);
        assert_eq!(predecessor_of(&new), Some((1, old_len)));
        let (result, present) = load(dir.path(), true);
        let loaded = result.expect("loads");
        assert_eq!(present, ["a", "b", "c", "d"]);
        assert!(loaded.torn.is_none());
        assert_eq!(loaded.generation, 2);
    }

    /// Logs of format version 1 (written before the predecessor record) load as before; a
    /// version this build does not know is refused with the file named.
    #[test]
    fn log_format_version_1_still_loads_and_an_unknown_one_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (old, new, _) = two_logs(dir.path());
        std::fs::remove_file(&new).expect("remove log 2");
        let set_version = |v: u16| {
            let mut data = std::fs::read(&old).expect("read");
            data[4..6].copy_from_slice(&v.to_le_bytes());
            std::fs::write(&old, &data).expect("write");
        };
        set_version(1);
        let (result, present) = load(dir.path(), false);
        result.expect("a version 1 log loads");
        assert_eq!(present, ["a", "b"]);
        set_version(3);
        let (result, _) = load(dir.path(), false);
        let err = result.expect_err("refused");
        assert!(err.to_string().contains("version 3"), "{err}");
    }

    /// A crash before the old log's fsync cut its last record short: its prefix is kept, the
    /// successor's records (which follow the lost one) are not replayed, and the successor is
    /// set aside so that the server continues the old log.
    #[test]
    fn a_torn_predecessor_stops_the_replay_at_the_gap() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (old, new, _) = two_logs(dir.path());
        let old_len = records_len(&old);
        let f = OpenOptions::new().write(true).open(&old).expect("open");
        f.set_len(old_len - 3).expect("truncate");

        // A check without repair reports it and changes nothing.
        let (result, present) = load(dir.path(), false);
        let loaded = result.expect("loads");
        assert_eq!(present, ["a"]);
        let (path, _, reason) = loaded.torn.expect("reported");
        assert_eq!(path, old);
        assert!(reason.contains("lost"), "{reason}");
        assert!(new.exists());

        let (result, present) = load(dir.path(), true);
        let loaded = result.expect("loads");
        assert_eq!(present, ["a"]);
        assert_eq!(loaded.generation, 1, "the server continues log 1");
        assert!(loaded.last_log.is_some());
        assert!(!new.exists(), "the successor is set aside");
        let mut aside = new.clone().into_os_string();
        aside.push(".after-gap");
        assert!(Path::new(&aside).exists(), "kept for the operator");

        // Loads again, the same, with nothing more to report.
        let (result, present) = load(dir.path(), true);
        assert!(result.expect("loads").torn.is_none());
        assert_eq!(present, ["a"]);

        // The same gap at the same generation again (the set-aside log put back): the second
        // is set aside under another name, the first is kept.
        std::fs::copy(&aside, &new).expect("put log 2 back");
        let (result, present) = load(dir.path(), true);
        assert!(result.expect("loads").torn.is_some());
        assert_eq!(present, ["a"]);
        let mut second = new.clone().into_os_string();
        second.push(".after-gap.2");
        assert!(Path::new(&aside).exists() && Path::new(&second).exists());
    }

    /// The old log lost a whole record (it ends cleanly, but shorter than its successor says).
    #[test]
    fn a_short_predecessor_stops_the_replay_at_the_gap() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (old, _, after_a) = two_logs(dir.path());
        let f = OpenOptions::new().write(true).open(&old).expect("open");
        f.set_len(after_a).expect("truncate");
        let (result, present) = load(dir.path(), true);
        let loaded = result.expect("loads");
        assert_eq!(present, ["a"]);
        assert_eq!(loaded.torn.expect("reported").1, after_a);
    }

    /// The old log holds more than its successor says: that is damage, not a crash.
    #[test]
    fn a_predecessor_longer_than_its_successor_says_is_corruption() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (old, _, after_a) = two_logs(dir.path());
        let old_len = records_len(&old);
        // A good frame more: a copy of `b`'s.
        let data = std::fs::read(&old).expect("read");
        let frame = data[after_a as usize..old_len as usize].to_vec();
        let f = OpenOptions::new().write(true).open(&old).expect("open");
        std::os::unix::fs::FileExt::write_all_at(&f, &frame, old_len).expect("append");
        let (result, _) = load(dir.path(), true);
        let err = result.expect_err("refused");
        assert_eq!(err.offset, Some(old_len));
    }

    /// The crash lost the old log's tail and all of the new log's records (only its header,
    /// made durable before the rotation, is left): the old log is the newest with records and
    /// may end torn.
    #[test]
    fn a_torn_log_followed_by_an_empty_one_loads_its_prefix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = TenantLog::new(
            Core::new(FsyncPolicy::Everysec),
            "t",
            1,
            dir.path().to_path_buf(),
            1,
            None,
        );
        set(&log, "a");
        set(&log, "b");
        log.prepare_next().expect("next log");
        let new = dir.path().join(paths::log_file(2));
        let header_only = records_len(&new);
        log.rotate_locked();
        set(&log, "c");
        drop(log);
        let old = dir.path().join(paths::log_file(1));
        let old_len = records_len(&old);
        OpenOptions::new()
            .write(true)
            .open(&old)
            .and_then(|f| f.set_len(old_len - 2))
            .expect("truncate");
        OpenOptions::new()
            .write(true)
            .open(&new)
            .and_then(|f| f.set_len(header_only))
            .expect("truncate");
        let (result, present) = load(dir.path(), true);
        let loaded = result.expect("loads");
        assert_eq!(present, ["a"]);
        assert_eq!(loaded.generation, 1);
    }
}
