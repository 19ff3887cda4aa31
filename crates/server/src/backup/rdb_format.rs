//! Redis RDB files in and out of a tenant: `TENANT.BACKUP <t> FORMAT rdb` and
//! `TENANT.RESTORE <t> RDB <path> [DB <n>]` (and `TENANT.RESTORE <t> BACKUP <id>` of an RDB
//! backup).
//!
//! The backup framework calls exactly these two functions; the format is crate `ferrite-rdb`
//! (`file::read`, `file::Writer`), the conversion between a keyspace and a file is
//! `ferrite_commands::rdb_file` (values through `ferrite_commands::dump`).
//!
//! Databases: a tenant has one database. A file's database 0 is loaded; a file with keys in any
//! other database is refused unless `DB <n>` names the one to load (the others are skipped), so
//! no key is dropped without the operator asking for it. Backups are written as database 0.
//! Function libraries of the file must load (checked in a throwaway Lua engine, as redis-server
//! refuses a file whose library does not load); they replace the tenant's with its data.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use ferrite_commands::rdb_file::{self, LoadOptions, LoadSink, NoSink};
use ferrite_persistence::Replacement;
use ferrite_persistence::snapshot::SnapshotWriter;
use ferrite_storage::{Keyspace, PointInTimeCopy, Value};

use super::Progress;

/// Longest string a file may hold: Redis's `proto-max-bulk-len` default (512 MB), which no
/// redis-server value exceeds unless its operator raised that limit.
const MAX_STRING: u64 = 512 * 1024 * 1024;

/// Writes a whole RDB file (aux fields, the function libraries, SELECTDB 0 with `keys_hint` as
/// the resize hint, every key the copy hands out, once, with its expiry, EOF and CRC-64) to
/// `out`; redis-server 7.x loads it. Keys whose expiry has passed but that were not reclaimed
/// yet are written too (the recorded key count includes them; redis-server drops them on
/// load). Returns the number of keys written.
pub fn write(
    mut copy: PointInTimeCopy,
    libraries: &BTreeMap<String, Vec<u8>>,
    keys_hint: u64,
    out: &mut dyn Write,
    progress: &Progress,
) -> Result<u64, String> {
    progress.set_total(keys_hint);
    rdb_file::write(
        &mut copy,
        libraries,
        keys_hint,
        ferrite_storage::now_ms(),
        out,
        &mut |n| progress.set_done(n),
    )
}

/// Loads the RDB file at `path` (its database `db`, or 0 with nothing elsewhere) into a fresh
/// keyspace nobody else sees; a refused file (bad checksum, truncation, module data, unknown
/// opcode, a key twice, another database without `DB`, a library that does not load) is
/// dropped with it, so nothing is half-loaded anywhere. Keys whose expiry has passed are kept
/// (as the native loader does: the digest of a file Ferrite wrote equals the one it recorded);
/// the tenant's expiry reclaims them after the restore. With `replacement` (persistence on,
/// replacing an existing tenant's data), every key loaded is also written into the tenant's
/// next snapshot as it loads ([`replace::finish_replacement`](super::replace) puts it in place).
pub fn load(
    path: &Path,
    db: Option<u64>,
    replacement: Option<&mut Replacement>,
    progress: &Progress,
) -> Result<Arc<Keyspace>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    progress.done_bytes.store(0, Relaxed);
    progress.total_bytes.store(size, Relaxed);
    let file = CountingReader {
        inner: file,
        progress,
    };
    let fresh = Arc::new(Keyspace::new());
    let opts = LoadOptions {
        db,
        max_string: MAX_STRING,
        now_ms: ferrite_storage::now_ms(),
        file_size: Some(size),
    };
    {
        let mut guard = fresh.lock();
        let (mut snapshot_sink, mut no_sink);
        let sink: &mut dyn LoadSink = match replacement {
            Some(r) => {
                snapshot_sink = SnapshotSink {
                    writer: r.writer(),
                    modified_ms: opts.now_ms,
                };
                &mut snapshot_sink
            }
            None => {
                no_sink = NoSink;
                &mut no_sink
            }
        };
        let mut sink = AnnouncedTotal {
            inner: sink,
            progress,
        };
        let report = rdb_file::load(file, &mut guard, opts, &mut sink, &mut |n| {
            progress.set_done(n)
        })?;
        tracing::info!(
            path = %path.display(),
            version = report.version,
            keys = report.keys,
            skipped_other_db = report.other_db_keys,
            skipped_empty = report.empty_keys_skipped,
            functions = report.functions,
            "RDB file loaded"
        );
        crate::scripting::check_libraries(
            guard.scripting().libraries().values().map(Vec::as_slice),
        )
        .map_err(|e| format!("RDB file refused, nothing was loaded: {e}"))?;
    }
    Ok(fresh)
}

/// Writes each key a load inserts into the tenant's next snapshot, with the modified time the
/// load gives it.
struct SnapshotSink<'a> {
    writer: &'a mut SnapshotWriter,
    modified_ms: u64,
}

impl LoadSink for SnapshotSink<'_> {
    fn expect_keys(&mut self, keys: u64) {
        self.writer.set_keys(keys);
    }

    fn key(&mut self, key: &[u8], expire_at: Option<u64>, value: &Value) -> Result<(), String> {
        self.writer.entry(key, value, expire_at, self.modified_ms)
    }
}

/// The file being loaded, counting the bytes read into the job's progress (`done_bytes` of
/// `total_bytes`): a restore's progress has a real total from the start, even for a file that
/// does not announce its key count.
struct CountingReader<'a> {
    inner: std::fs::File,
    progress: &'a Progress,
}

impl std::io::Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.done_bytes.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
}

/// Takes the key count the file announces for the database loaded (`RESIZEDB`) as the job's
/// total when none is known yet (an RDB backup's recorded count is kept), and passes
/// everything on to `inner`.
struct AnnouncedTotal<'a, 'b> {
    inner: &'b mut dyn LoadSink,
    progress: &'a Progress,
}

impl LoadSink for AnnouncedTotal<'_, '_> {
    fn expect_keys(&mut self, keys: u64) {
        if self.progress.total.load(Relaxed) == 0 {
            self.progress.set_total(keys);
        }
        self.inner.expect_keys(keys);
    }

    fn key(&mut self, key: &[u8], expire_at: Option<u64>, value: &Value) -> Result<(), String> {
        self.inner.key(key, expire_at, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RDB file of `n` string keys in database 0, announcing its count (`RESIZEDB`) or not.
    fn file(dir: &Path, name: &str, n: u64, announce: bool) -> std::path::PathBuf {
        let mut w = ferrite_rdb::file::Writer::new(Vec::new()).unwrap();
        if announce {
            w.select_db(0, n, 0).unwrap();
        }
        for i in 0..n {
            w.key(
                format!("key:{i}").as_bytes(),
                None,
                &ferrite_rdb::Value::String(vec![b'v'; 100]),
            )
            .unwrap();
        }
        let path = dir.join(name);
        std::fs::write(&path, w.finish().unwrap()).unwrap();
        path
    }

    #[test]
    fn an_rdb_restore_reports_keys_against_the_announced_count_and_bytes_against_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), "announced.rdb", 100_000, true);
        let size = std::fs::metadata(&path).unwrap().len();
        let progress = Progress::new();
        let ks = load(&path, None, None, &progress).unwrap();
        assert_eq!(ks.len(), 100_000);
        assert_eq!(progress.total.load(Relaxed), 100_000);
        assert_eq!(progress.done.load(Relaxed), 100_000);
        assert_eq!(progress.total_bytes.load(Relaxed), size);
        assert_eq!(progress.done_bytes.load(Relaxed), size);

        // Without the announcement (Redis before 3.2) the bytes are still a real total.
        let path = file(dir.path(), "silent.rdb", 1000, false);
        let size = std::fs::metadata(&path).unwrap().len();
        let progress = Progress::new();
        load(&path, None, None, &progress).unwrap();
        assert_eq!(progress.total.load(Relaxed), 0);
        assert_eq!(progress.done.load(Relaxed), 1000);
        assert_eq!(progress.total_bytes.load(Relaxed), size);
        assert_eq!(progress.done_bytes.load(Relaxed), size);

        // An RDB backup's recorded count stays the total.
        let path = file(dir.path(), "backup.rdb", 10, true);
        let progress = Progress::new();
        progress.set_total(12);
        load(&path, None, None, &progress).unwrap();
        assert_eq!(progress.total.load(Relaxed), 12);
    }
}
