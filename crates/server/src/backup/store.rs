//! The backup directory: ids, file names, the description each backup carries, and LIST / INFO
//! / DELETE.
//!
//! A native backup is one self-describing file, `<dir>/<id>.fbak` (its description is its second
//! frame, see [`super::native`]). An RDB backup is `<dir>/<id>.rdb`, a file redis-server loads as
//! it is, with its description beside it in `<dir>/<id>.rdb.json`. Files are written as `.tmp`,
//! fsynced and renamed, so a listed backup is always complete.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::shared::Shared;

/// A backup's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Ferrite's snapshot format (checksummed frames; every Ferrite type).
    Native,
    /// A Redis RDB file (loads in redis-server 7.x).
    Rdb,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Native => "native",
            Format::Rdb => "rdb",
        }
    }

    pub fn parse(word: &[u8]) -> Option<Format> {
        if word.eq_ignore_ascii_case(b"native") {
            Some(Format::Native)
        } else if word.eq_ignore_ascii_case(b"rdb") {
            Some(Format::Rdb)
        } else {
            None
        }
    }

    /// The data file's extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Native => "fbak",
            Format::Rdb => "rdb",
        }
    }
}

/// What every backup records about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMeta {
    pub id: String,
    pub tenant: String,
    pub format: Format,
    /// Unix milliseconds at which the copy was taken (its point in time).
    pub created_ms: u64,
    /// Keys at that point (expired keys not yet reclaimed included: they are in the file).
    pub keys: u64,
    /// `TENANT.DIGEST`'s combined digest at that point, hex.
    pub digest: String,
    /// Made by the schedule (subject to retention) rather than by TENANT.BACKUP.
    #[serde(default)]
    pub scheduled: bool,
    /// The Ferrite version that wrote it.
    #[serde(default)]
    pub ferrite_version: String,
}

impl BackupMeta {
    pub fn digest_hex(d: u64) -> String {
        format!("{d:016x}")
    }
}

/// A backup found in the directory.
#[derive(Debug, Clone)]
pub struct Found {
    pub meta: BackupMeta,
    /// The data file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// A file of the directory that looks like a backup but cannot be described.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub id: String,
    pub path: PathBuf,
    pub error: String,
}

/// The directory backups go to: `[backup] dir`, or `backups` under the data directory.
pub fn dir(sh: &Shared) -> PathBuf {
    let c = sh.config.read();
    if c.backup.dir.is_empty() {
        c.data_dir().join("backups")
    } else {
        PathBuf::from(&c.backup.dir)
    }
}

/// Whether `id` may name a backup: 1 to 128 of `A-Z a-z 0-9 _ - .`, not starting with a dot.
/// Ids become file names, so nothing else (no `/`, no `..` at the start) gets near the
/// filesystem.
pub fn valid_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id[0] != b'.'
        && id
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// Checks a backup id given by a client.
pub fn parse_id(id: &[u8]) -> Result<&str, String> {
    match std::str::from_utf8(id) {
        Ok(s) if valid_id(id) => Ok(s),
        _ => Err(format!(
            "invalid backup id '{}': use 1 to 128 letters, digits, '_', '-' or '.', not starting with '.'",
            String::from_utf8_lossy(id)
        )),
    }
}

/// The default id of a backup of `tenant` taken at `ms`: `backup_<yyyymmddThhmmssZ>_<tenant>`.
pub fn default_id(tenant: &str, ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "backup_{:04}{:02}{:02}T{:02}{:02}{:02}Z_{tenant}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The data file of backup `id` in `format`.
pub fn data_path(dir: &Path, id: &str, format: Format) -> PathBuf {
    dir.join(format!("{id}.{}", format.extension()))
}

/// The description file of an RDB backup.
pub fn rdb_meta_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.rdb.json"))
}

/// Whether a backup with this id exists (in either format).
pub fn exists(dir: &Path, id: &str) -> bool {
    data_path(dir, id, Format::Native).exists()
        || data_path(dir, id, Format::Rdb).exists()
        || rdb_meta_path(dir, id).exists()
}

/// Describes backup `id`: `Ok(None)` if there is none.
pub fn find(dir: &Path, id: &str) -> Result<Option<Found>, String> {
    let native = data_path(dir, id, Format::Native);
    if native.exists() {
        return describe_native(&native).map(Some);
    }
    let meta = rdb_meta_path(dir, id);
    if meta.exists() {
        return describe_rdb(&meta, id).map(Some);
    }
    Ok(None)
}

fn describe_native(path: &Path) -> Result<Found, String> {
    let meta = super::native::read_meta(path)?;
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    Ok(Found {
        meta,
        path: path.to_path_buf(),
        size,
    })
}

fn describe_rdb(meta_path: &Path, id: &str) -> Result<Found, String> {
    let text = std::fs::read(meta_path).map_err(|e| format!("{}: {e}", meta_path.display()))?;
    let meta: BackupMeta = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: not a backup description: {e}", meta_path.display()))?;
    if meta.id != id || meta.format != Format::Rdb {
        return Err(format!(
            "{}: describes backup '{}', not '{id}'",
            meta_path.display(),
            meta.id
        ));
    }
    let dir = meta_path.parent().unwrap_or(Path::new("."));
    let path = data_path(dir, id, Format::Rdb);
    let size = std::fs::metadata(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    Ok(Found { meta, path, size })
}

/// Every backup of the directory (of `tenant` only, if given), oldest first, and the files
/// that look like backups but cannot be read.
pub fn list(dir: &Path, tenant: Option<&str>) -> (Vec<Found>, Vec<Unreadable>) {
    let mut found = Vec::new();
    let mut bad = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (found, bad);
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let (id, described) = if let Some(id) = name.strip_suffix(".fbak") {
            (id.to_string(), describe_native(&entry.path()))
        } else if let Some(id) = name.strip_suffix(".rdb.json") {
            (id.to_string(), describe_rdb(&entry.path(), id))
        } else {
            continue;
        };
        if !valid_id(id.as_bytes()) {
            continue;
        }
        match described {
            Ok(f) if tenant.is_none_or(|t| f.meta.tenant == t) => found.push(f),
            Ok(_) => {}
            Err(error) => bad.push(Unreadable {
                id,
                path: entry.path(),
                error,
            }),
        }
    }
    found.sort_by(|a, b| (a.meta.created_ms, &a.meta.id).cmp(&(b.meta.created_ms, &b.meta.id)));
    bad.sort_by(|a, b| a.id.cmp(&b.id));
    (found, bad)
}

/// Deletes backup `id`'s files; false if there were none.
pub fn delete(dir: &Path, id: &str) -> Result<bool, String> {
    let mut any = false;
    for path in [
        data_path(dir, id, Format::Native),
        data_path(dir, id, Format::Rdb),
        rdb_meta_path(dir, id),
    ] {
        match std::fs::remove_file(&path) {
            Ok(()) => any = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot delete {}: {e}", path.display())),
        }
    }
    if any {
        let _ = ferrite_persistence::paths::sync_dir(dir);
    }
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_leave_the_directory_are_refused() {
        for bad in [
            &b"../etc/passwd"[..],
            b"..",
            b".hidden",
            b"a/b",
            b"a\\b",
            b"",
            b"a b",
            b"nul\0",
            &[b'x'; 129],
        ] {
            assert!(!valid_id(bad), "{:?}", String::from_utf8_lossy(bad));
            assert!(parse_id(bad).is_err());
        }
        for good in [
            "backup_20240115T103000Z_acme-corp",
            "nightly.1",
            "a..b",
            "x",
        ] {
            assert!(valid_id(good.as_bytes()), "{good}");
        }
    }

    #[test]
    fn default_ids_carry_the_utc_time_and_the_tenant() {
        // 2024-01-15T10:30:00Z
        assert_eq!(
            default_id("acme-corp", 1_705_314_600_123),
            "backup_20240115T103000Z_acme-corp"
        );
        // Every tenant id makes a valid backup id.
        assert!(valid_id(default_id(&"t".repeat(64), 0).as_bytes()));
    }
}
