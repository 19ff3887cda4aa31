//! `ferrite --check-data <dir> [--repair]`: verifies every file of a data directory (framing,
//! checksums, records, that every effect applies) without starting a server, and with `--repair`
//! cuts a damaged log at its last good record — dropping what follows, as `redis-check-aof --fix`
//! does — so that the server can start again.

use std::path::Path;

use ferrite_storage::Keyspace;

use crate::catalog::Catalog;
use crate::load::load_tenant;
use crate::paths::{self, TenantFile};

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Human-readable findings, one per line.
    pub lines: Vec<String>,
    /// Problems left (0: the directory loads).
    pub problems: usize,
    /// Problems repaired.
    pub repaired: usize,
}

/// Checks (and with `repair`, repairs) the data directory `root`. Refuses a directory a running
/// server holds.
pub fn check(root: &Path, repair: bool) -> Result<Report, String> {
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(root.join(paths::LOCK))
        .ok();
    if let Some(l) = &lock
        && l.try_lock().is_err()
    {
        return Err(format!(
            "{} is in use by a running ferrite; stop it first",
            root.display()
        ));
    }
    let mut report = Report::default();
    let (catalog, load) = Catalog::open_with(root, repair).map_err(|e| e.to_string())?;
    if let Some((offset, reason)) = load.torn {
        if repair {
            report.repaired += 1;
            report.lines.push(format!(
                "{}: cut a torn last record at offset {offset} ({reason})",
                catalog.path().display()
            ));
        } else {
            report.problems += 1;
            report.lines.push(format!(
                "{}: torn last record at offset {offset} ({reason}); the server drops it at startup",
                catalog.path().display()
            ));
        }
    }
    let mut known = Vec::new();
    for rec in catalog.tenants() {
        let dir = paths::tenant_dir(root, rec.incarnation, &rec.id);
        known.push(dir.clone());
        if rec.state == "moved" {
            report.lines.push(format!(
                "tenant '{}': moved to {} (no data kept)",
                rec.id,
                rec.moved_to.as_deref().unwrap_or("?")
            ));
            continue;
        }
        // Each repair cuts one damaged log; a second pass verifies (and finds the next damage).
        for _attempt in 0..8 {
            let ks = Keyspace::new();
            let result = {
                let mut db = ks.lock();
                load_tenant(&dir, &rec.id, rec.incarnation, &mut db, repair)
            };
            match result {
                Ok(l) => {
                    if let Some((p, off, reason)) = &l.torn {
                        if repair {
                            report.repaired += 1;
                            report.lines.push(format!(
                                "{}: cut a torn tail at offset {off} ({reason})",
                                p.display()
                            ));
                        } else {
                            report.problems += 1;
                            report.lines.push(format!(
                                "{}: torn tail at offset {off} ({reason}); the server drops it at startup",
                                p.display()
                            ));
                        }
                    }
                    if l.replay_errors > 0 {
                        report.problems += 1;
                        report.lines.push(format!(
                            "tenant '{}': {} effect(s) failed to apply (see the log lines above)",
                            rec.id, l.replay_errors
                        ));
                    }
                    report.lines.push(format!(
                        "tenant '{}': ok, {} keys ({} expired), {} effects replayed",
                        rec.id, l.keys, l.expired, l.effects
                    ));
                    break;
                }
                Err(e) => {
                    let is_log = e.path.file_name().map(|n| {
                        matches!(paths::classify(&n.to_string_lossy()), TenantFile::Log(_))
                    }) == Some(true);
                    match (repair, is_log, e.offset) {
                        (true, true, Some(offset)) => match cut_log(&dir, &e.path, offset) {
                            Ok(line) => {
                                report.repaired += 1;
                                report.lines.push(line);
                                continue;
                            }
                            Err(why) => {
                                report.problems += 1;
                                report.lines.push(format!("{e}; repair failed: {why}"));
                                break;
                            }
                        },
                        (false, true, Some(_)) => {
                            report.problems += 1;
                            report.lines.push(format!(
                                "{e}; `--repair` would cut the log there (losing what follows)"
                            ));
                            break;
                        }
                        _ => {
                            report.problems += 1;
                            report
                                .lines
                                .push(format!("{e}; cannot be repaired automatically"));
                            break;
                        }
                    }
                }
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(root.join(paths::TENANTS)) {
        for entry in rd.flatten() {
            if !known.contains(&entry.path()) {
                report.lines.push(format!(
                    "{}: not in the catalog (a staged import or a deleted tenant); the server removes it at startup",
                    entry.path().display()
                ));
            }
        }
    }
    Ok(report)
}

/// The end of the last nonzero byte of `f` between `from` and `size` (`from` when there is
/// none): a log's preallocated tail is zeros (see `format::FLAG_ZERO_TAIL`).
fn written_end(f: &std::fs::File, from: u64, size: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    const STEP: u64 = 64 * 1024;
    let mut buf = vec![0u8; STEP as usize];
    let mut end = size;
    while end > from {
        let start = end.saturating_sub(STEP).max(from);
        let chunk = &mut buf[..(end - start) as usize];
        f.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b != 0) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(from)
}

/// Cuts `log` at `offset` and removes the logs after it (they would follow a gap).
fn cut_log(dir: &Path, log: &Path, offset: u64) -> Result<String, String> {
    let g = log
        .file_name()
        .and_then(|n| match paths::classify(&n.to_string_lossy()) {
            TenantFile::Log(g) => Some(g),
            _ => None,
        })
        .ok_or("not a log file")?;
    let size = std::fs::metadata(log).map_err(|e| e.to_string())?.len();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(log)
        .map_err(|e| e.to_string())?;
    // What was written after the cut, told apart from the preallocated zeros that follow it.
    let written = written_end(&f, offset, size).map_err(|e| e.to_string())?;
    f.set_len(offset)
        .and_then(|_| f.sync_all())
        .map_err(|e| e.to_string())?;
    let mut later = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            if let TenantFile::Log(x) = paths::classify(&entry.file_name().to_string_lossy())
                && x > g
                && std::fs::remove_file(entry.path()).is_ok()
            {
                later += 1;
            }
        }
    }
    let _ = paths::sync_dir(dir);
    let zeros = size - written;
    Ok(format!(
        "{}: cut at offset {offset}, the last good record (dropped {} bytes{}{})",
        log.display(),
        written - offset,
        if zeros > 0 {
            format!(" and {zeros} preallocated zero bytes")
        } else {
            String::new()
        },
        if later > 0 {
            format!(" and {later} later log file(s)")
        } else {
            String::new()
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_written_end_skips_a_zero_tail_of_any_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut f = std::fs::File::create(&path).unwrap();
        let mut bytes = vec![7u8; 100];
        bytes.extend(vec![0u8; 200_000]);
        f.write_all(&bytes).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let size = bytes.len() as u64;
        assert_eq!(written_end(&f, 0, size).unwrap(), 100);
        assert_eq!(written_end(&f, 40, size).unwrap(), 100);
        // Only zeros after the cut.
        assert_eq!(written_end(&f, 150, size).unwrap(), 150);
        assert_eq!(written_end(&f, size, size).unwrap(), size);
    }
}
