//! Point-in-time snapshots of one tenant, taken without fork and without pausing writes
//! (`Db::open_snapshot`: the entries at version V by cursor, plus the pre-images the write path
//! saves), and loading them.
//!
//! A snapshot of generation `g` is opened in the same critical section that rotates the log to
//! generation `g`, so `snap-g` + `log-g` + later logs are the tenant. It is written to a `.tmp`
//! file, fsynced, renamed, and the directory fsynced; only then are older snapshots and logs
//! deleted. A crash at any point leaves either the old files or the new ones complete.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ferrite_storage::{Db, Keyspace, PointInTimeCopy, Slot};

use crate::format::{FrameError, FrameReader, Kind, begin_frame, end_frame, put_file_header};
use crate::log::TenantLog;
use crate::paths::{self, TenantFile};
use crate::record::{self, FileHeader};

/// Entries per step of the walk under the keyspace lock: short enough that writers barely
/// notice (tens of microseconds), long enough to keep the lock traffic low.
const WALK_STEP: usize = 256;
/// An entries frame is written out once it holds this many bytes.
const BLOCK_BYTES: usize = 256 * 1024;

/// What a snapshot wrote.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub generation: u64,
    pub entries: u64,
    pub bytes: u64,
    pub pre_images: u64,
    pub took_ms: u64,
}

/// Writes entries into frames of about [`BLOCK_BYTES`].
struct BlockWriter {
    out: BufWriter<File>,
    buf: Vec<u8>,
    frame_at: usize,
    count_at: usize,
    in_block: u32,
    entries: u64,
    bytes: u64,
}

impl BlockWriter {
    fn start_block(&mut self) {
        self.buf.clear();
        self.frame_at = begin_frame(&mut self.buf);
        self.count_at = record::begin_entries(&mut self.buf);
        self.in_block = 0;
    }

    fn finish_block(&mut self) -> std::io::Result<()> {
        if self.in_block == 0 {
            return Ok(());
        }
        record::end_entries(&mut self.buf, self.count_at, self.in_block);
        end_frame(&mut self.buf, self.frame_at);
        self.out.write_all(&self.buf)?;
        self.bytes += self.buf.len() as u64;
        self.in_block = 0;
        Ok(())
    }
}

/// Takes a snapshot of `ks` (journaled by `log`) and makes it the tenant's base: older
/// snapshots and logs are deleted. `ks` must be the keyspace `log` is subscribed to.
pub fn take(ks: &Arc<Keyspace>, log: &Arc<TenantLog>) -> Result<SnapshotInfo, String> {
    let started = Instant::now();
    // Make what the current log holds durable now, while writers keep going: the rotation
    // below must fsync the old log before the new one gets anything (so that only the newest
    // log can end torn), and that fsync runs in a writer's commit; with this one done first it
    // only has the last few milliseconds of writes to cover.
    if log.flush().is_ok() {
        log.sync();
    }
    // The next log file exists and is durable before writers switch to it (a failure here is
    // not fatal: the first write after the rotation creates the file as before).
    if let Err(e) = log.prepare_next() {
        tracing::warn!(tenant = %log.tenant, "cannot prepare the next log file: {e}");
    }
    // The function libraries as of the copy's version: later changes are in the new log.
    let opened = PointInTimeCopy::open_with(ks, |db| {
        (log.rotate_locked(), db.scripting().libraries().clone())
    });
    let Some((copy, (generation, libraries))) = opened else {
        return Err("a point-in-time copy of this keyspace is already open".into());
    };
    // Switch files here rather than in the next writer's commit: the old log's last
    // milliseconds are fsynced on this thread (writers of the tenant still wait for the file
    // lock meanwhile, but no longer for the file creation's fsyncs too).
    let _ = log.flush();
    let result = write(copy, log, generation, &libraries);
    match result {
        Ok((entries, bytes, pre_images)) => {
            if !log.snapshot_done(generation, bytes) {
                return Err("the snapshot was written but the new log could not be".into());
            }
            remove_older(&log.dir, generation);
            Ok(SnapshotInfo {
                generation,
                entries,
                bytes,
                pre_images,
                took_ms: started.elapsed().as_millis() as u64,
            })
        }
        Err(e) => {
            log.snapshot_failed();
            Err(e)
        }
    }
}

fn write(
    copy: PointInTimeCopy,
    log: &TenantLog,
    generation: u64,
    libraries: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<(u64, u64, u64), String> {
    let dir = &log.dir;
    let final_path = dir.join(paths::snapshot_file(generation));
    let tmp = dir.join(format!("{}.tmp", paths::snapshot_file(generation)));
    let header = FileHeader {
        tenant: log.tenant.clone(),
        incarnation: log.incarnation,
        generation,
        version: copy.version(),
        created_ms: ferrite_storage::now_ms(),
    };
    let written = write_file(copy, &tmp, &header, None, libraries, &|_| {})?;
    std::fs::rename(&tmp, &final_path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot rename {}: {e}", tmp.display())
    })?;
    paths::sync_dir(dir).map_err(|e| format!("cannot sync {}: {e}", dir.display()))?;
    Ok((written.entries, written.bytes, written.pre_images))
}

/// What [`write_file`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub entries: u64,
    pub bytes: u64,
    pub pre_images: u64,
}

/// Writes everything `copy` hands out to `path` in the snapshot format (header, an optional
/// [`record::BACKUP_INFO`] frame, the libraries, entries, end record) and fsyncs it; the file is
/// removed if anything fails. The caller renames it into place (tenant snapshots) or keeps it
/// where it is (backups). `progress` gets the number of entries written so far after each step.
/// The directory is created if missing.
pub fn write_file(
    mut copy: PointInTimeCopy,
    path: &Path,
    header: &FileHeader,
    info: Option<&[u8]>,
    libraries: &std::collections::BTreeMap<String, Vec<u8>>,
    progress: &dyn Fn(u64),
) -> Result<Written, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    let file = File::create(path).map_err(|e| fail("cannot create", e))?;
    let mut w = BlockWriter {
        out: BufWriter::with_capacity(1 << 20, file),
        buf: Vec::with_capacity(BLOCK_BYTES + 64 * 1024),
        frame_at: 0,
        count_at: 0,
        in_block: 0,
        entries: 0,
        bytes: 0,
    };
    let outcome = (|| -> std::io::Result<u64> {
        let mut head = Vec::new();
        put_file_header(&mut head, Kind::Snapshot);
        let at = begin_frame(&mut head);
        record::put_snapshot_header(&mut head, header);
        end_frame(&mut head, at);
        if let Some(info) = info {
            let at = begin_frame(&mut head);
            record::put_backup_info(&mut head, info);
            end_frame(&mut head, at);
        }
        if !libraries.is_empty() {
            let at = begin_frame(&mut head);
            record::put_libraries(&mut head, libraries);
            end_frame(&mut head, at);
        }
        w.out.write_all(&head)?;
        w.bytes += head.len() as u64;
        w.start_block();
        // Each step's entries are encoded (that is the copy) into `chunk`: the walk's under the
        // keyspace lock, the pre-images outside it; the file is written outside the lock.
        let mut chunk: Vec<u8> = Vec::new();
        loop {
            chunk.clear();
            let mut chunk_entries = 0u32;
            let more = copy.step(WALK_STEP, |k, e| {
                record::put_entry(&mut chunk, k, e);
                chunk_entries += 1;
            });
            w.append_encoded(&chunk, chunk_entries)?;
            progress(w.entries);
            if !more {
                break;
            }
        }
        let pre_images = copy.pre_images();
        w.finish_block()?;
        let mut end = Vec::new();
        let at = begin_frame(&mut end);
        record::put_snapshot_end(&mut end, w.entries);
        end_frame(&mut end, at);
        w.out.write_all(&end)?;
        w.bytes += end.len() as u64;
        w.out.flush()?;
        w.out.get_ref().sync_all()?;
        Ok(pre_images)
    })();
    match outcome {
        Ok(pre_images) => Ok(Written {
            entries: w.entries,
            bytes: w.bytes,
            pre_images,
        }),
        Err(e) => {
            drop(w);
            let _ = std::fs::remove_file(path);
            Err(fail("cannot write", e))
        }
    }
}

impl BlockWriter {
    /// Adds entries already encoded with `record::put_entry`.
    fn append_encoded(&mut self, chunk: &[u8], n: u32) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        if self.in_block.checked_add(n).is_none() {
            self.finish_block()?;
            self.start_block();
        }
        self.buf.extend_from_slice(chunk);
        self.in_block += n;
        self.entries += u64::from(n);
        if self.buf.len() >= BLOCK_BYTES {
            self.finish_block()?;
            self.start_block();
        }
        Ok(())
    }
}

/// Deletes snapshots and logs older than generation `g` (the snapshot of `g` replaces them).
pub fn remove_older(dir: &Path, g: u64) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut removed = false;
    for entry in rd.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let old = match paths::classify(&name) {
            TenantFile::Snapshot(x) | TenantFile::Log(x) => x < g,
            _ => false,
        };
        if old {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a superseded file");
            }
            removed = true;
        }
    }
    if removed {
        let _ = paths::sync_dir(dir);
    }
}

/// Why a file could not be loaded: names the file and, for damage, the offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub path: PathBuf,
    /// Where the damage starts, when the file is damaged (not unreadable).
    pub offset: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(o) => write!(
                f,
                "{}: corrupt at offset {o}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    pub fn new(path: &Path, message: impl Into<String>) -> LoadError {
        LoadError {
            path: path.to_path_buf(),
            offset: None,
            message: message.into(),
        }
    }

    /// Damage at `offset`.
    pub fn corrupt(path: &Path, offset: u64, message: impl Into<String>) -> LoadError {
        LoadError {
            path: path.to_path_buf(),
            offset: Some(offset),
            message: message.into(),
        }
    }

    /// A framing error of `path`.
    pub fn frame(path: &Path, e: FrameError) -> LoadError {
        match e {
            FrameError::Torn { offset, reason } => LoadError::corrupt(path, offset, reason),
            FrameError::Corrupt { offset, reason } => LoadError::corrupt(path, offset, reason),
            FrameError::Io(e) => LoadError::new(path, format!("read error: {e}")),
        }
    }
}

/// Loads a snapshot into `db` (which may already hold keys: duplicates replace them). Returns
/// its header and the number of entries.
pub fn load(path: &Path, db: &mut Db) -> Result<(FileHeader, u64), LoadError> {
    load_counting(path, db, &|_| {})
}

/// [`load`], telling `progress` how many entries were loaded so far after each frame.
pub fn load_counting(
    path: &Path,
    db: &mut Db,
    progress: &dyn Fn(u64),
) -> Result<(FileHeader, u64), LoadError> {
    let file = File::open(path).map_err(|e| LoadError::new(path, e.to_string()))?;
    let size = file
        .metadata()
        .map_err(|e| LoadError::new(path, e.to_string()))?
        .len();
    // A snapshot is renamed into place only once complete: a torn one is corrupt too.
    let damaged = |e: FrameError| LoadError::frame(path, e);
    let mut r = FrameReader::open(
        BufReader::with_capacity(1 << 20, file),
        size,
        Kind::Snapshot,
    )
    .map_err(damaged)?;
    let mut buf = Vec::new();
    let at = r
        .next_frame(&mut buf)
        .map_err(damaged)?
        .ok_or_else(|| LoadError::new(path, "no header"))?;
    let header = record::read_header(&buf, record::SNAPSHOT_HEADER)
        .map_err(|e| LoadError::corrupt(path, at, format!("header: {e}")))?;
    let mut entries = 0u64;
    loop {
        let Some(at) = r.next_frame(&mut buf).map_err(damaged)? else {
            return Err(LoadError::corrupt(
                path,
                r.offset(),
                "the snapshot has no end record",
            ));
        };
        match buf.first() {
            Some(&record::ENTRIES) => {
                let now = 0;
                entries += record::read_entries(&buf, |e| {
                    match db.entry_physical(e.key, now) {
                        // A key written during the snapshot is there twice, equal: keep one.
                        Slot::Occupied(mut o) => {
                            o.replace(e.value, e.expire);
                            o.set_modified(e.modified);
                        }
                        Slot::Vacant(v) => v.insert_with_modified(e.value, e.expire, e.modified),
                    }
                })
                .map_err(|e| LoadError::corrupt(path, at, format!("{e}")))?;
                progress(entries);
            }
            // A backup's description (see `read_backup_info`): not data.
            Some(&record::BACKUP_INFO) => {}
            Some(&record::LIBRARIES) => {
                let libraries = record::read_libraries(&buf)
                    .map_err(|e| LoadError::corrupt(path, at, format!("{e}")))?;
                db.set_libraries(libraries);
            }
            Some(&record::SNAPSHOT_END) => {
                let total = record::read_snapshot_end(&buf)
                    .map_err(|e| LoadError::corrupt(path, at, format!("{e}")))?;
                if total != entries {
                    return Err(LoadError::corrupt(
                        path,
                        at,
                        format!("the end record counts {total} entries, the file has {entries}"),
                    ));
                }
                if r.offset() != size {
                    return Err(LoadError::corrupt(
                        path,
                        r.offset(),
                        "data after the end record",
                    ));
                }
                return Ok((header, entries));
            }
            _ => {
                return Err(LoadError::corrupt(path, at, "unknown record"));
            }
        }
    }
}

/// Reads the header and the [`record::BACKUP_INFO`] payload of a file written by [`write_file`]
/// with one (a backup), checking both frames' checksums; the rest of the file is not read.
pub fn read_backup_info(path: &Path) -> Result<(FileHeader, Vec<u8>), LoadError> {
    let file = File::open(path).map_err(|e| LoadError::new(path, e.to_string()))?;
    let size = file
        .metadata()
        .map_err(|e| LoadError::new(path, e.to_string()))?
        .len();
    let damaged = |e: FrameError| LoadError::frame(path, e);
    let mut r = FrameReader::open(BufReader::new(file), size, Kind::Snapshot).map_err(damaged)?;
    let mut buf = Vec::new();
    let at = r
        .next_frame(&mut buf)
        .map_err(damaged)?
        .ok_or_else(|| LoadError::new(path, "no header"))?;
    let header = record::read_header(&buf, record::SNAPSHOT_HEADER)
        .map_err(|e| LoadError::corrupt(path, at, format!("header: {e}")))?;
    let at = r
        .next_frame(&mut buf)
        .map_err(damaged)?
        .ok_or_else(|| LoadError::new(path, "no backup description"))?;
    let info = record::read_backup_info(&buf)
        .map_err(|e| LoadError::corrupt(path, at, format!("backup description: {e}")))?;
    Ok((header, info.to_vec()))
}
