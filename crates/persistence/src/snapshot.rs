//! Point-in-time snapshots of one tenant, taken without fork and without pausing writes
//! (`Db::open_snapshot`: the entries at version V by cursor, plus the pre-images the write path
//! saves), and loading them.
//!
//! A snapshot of generation `g` is opened in the same critical section that rotates the log to
//! generation `g`, so `snap-g` + `log-g` + later logs are the tenant. It is written to a `.tmp`
//! file, fsynced, renamed, and the directory fsynced; only then are older snapshots and logs
//! deleted. A crash at any point leaves either the old files or the new ones complete.

use std::fs::File;
use std::io::BufReader;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ferrite_storage::{CopiedEntries, Db, Keyspace, PointInTimeCopy, Slot};

use crate::format::{FrameError, FrameReader, Kind, begin_frame, end_frame, put_file_header};
use crate::log::TenantLog;
use crate::paths::{self, TenantFile};
use crate::record::{self, FileHeader};

/// Entries per step of the walk under the keyspace lock: about 10 µs for entries of 100-byte
/// strings (their cache misses overlapped, `Db::snapshot_walk`), so a writer that finds the lock
/// taken waits that long at most; long enough that the lock traffic stays low.
const WALK_STEP: usize = 128;
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

/// Takes a snapshot of `ks` (journaled by `log`) and makes it the tenant's base: older
/// snapshots and logs are deleted. `ks` must be the keyspace `log` is subscribed to.
pub fn take(ks: &Arc<Keyspace>, log: &Arc<TenantLog>) -> Result<SnapshotInfo, String> {
    let started = Instant::now();
    // The next log file exists and is durable before writers switch to it (a failure here is
    // not fatal: the first write after the rotation creates the file as before). First, so
    // that the writes made during its two fsyncs are covered by the pre-sync below.
    if let Err(e) = log.prepare_next() {
        tracing::warn!(tenant = %log.tenant, "cannot prepare the next log file: {e}");
    }
    // Make what the current log holds durable now, while writers keep going, so that the
    // old log's fsync after the switch below has only the last moment of writes to cover.
    if log.flush().is_ok() {
        log.sync();
    }
    // The function libraries as of the copy's version: later changes are in the new log.
    let opened = PointInTimeCopy::open_with(ks, |db| {
        (
            log.rotate_locked(),
            db.scripting().libraries().clone(),
            db.len() as u64,
        )
    });
    let Some((copy, (generation, libraries, keys))) = opened else {
        return Err("a point-in-time copy of this keyspace is already open".into());
    };
    // Switch files here rather than in the next writer's commit, then fsync the old log's
    // last milliseconds on this thread, outside the file lock: writers go on in the new log
    // meanwhile (its first record says how long the old log was, so a crash before this fsync
    // is recognised at load; under `always` a reply on the new log waits for it).
    let _ = log.flush();
    log.sync_retired();
    let result = write(copy, log, generation, keys, &libraries);
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
    keys: u64,
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
        // The keys at the copy's version: what the walk and the pre-images hand out, once each.
        keys: Some(keys),
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
    let mut w = SnapshotWriter::create(path, header.clone(), info)?;
    w.libraries(libraries)?;
    // Each step's entries are encoded into `chunk`: the walk's compact entries (most keys) are
    // copied out under the keyspace lock and encoded after it; open ones (long strings, big
    // collections) are encoded under it; the pre-images outside it. The file is written outside
    // the lock.
    let mut chunk: Vec<u8> = Vec::new();
    let mut copied = CopiedEntries::default();
    loop {
        chunk.clear();
        copied.clear();
        let mut chunk_entries = 0u32;
        let more = copy.step_copied(WALK_STEP, &mut copied, |k, e| {
            record::put_entry(&mut chunk, k, e);
            chunk_entries += 1;
        });
        for e in copied.iter() {
            record::put_copied_entry(&mut chunk, &e);
            chunk_entries += 1;
        }
        w.append_encoded(&chunk, chunk_entries)?;
        progress(w.entries);
        if !more {
            break;
        }
    }
    let mut written = w.finish()?;
    written.pre_images = copy.pre_images();
    Ok(written)
}

/// How `O_DIRECT` writes are aligned (file offsets, lengths and memory): 4 KiB covers every
/// logical block size in use (512 B and 4 KiB).
const DIRECT_ALIGN: usize = 4096;
/// Bytes gathered for one `O_DIRECT` write (a multiple of [`DIRECT_ALIGN`]).
const DIRECT_STAGE: usize = 1 << 20;
/// Bytes gathered for one write on the buffered path.
const BUFFERED_STAGE: usize = 1 << 20;

/// How a snapshot file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// `O_DIRECT` when the file system takes it, else buffered.
    DirectIfSupported,
    /// Through the page cache.
    #[cfg_attr(not(test), expect(dead_code))]
    Buffered,
}

/// Where a snapshot's bytes go: straight to the disk with `O_DIRECT` when the file system takes
/// it, else to the page cache in 1 MiB writes. Direct writes leave no dirty pages behind, so no
/// kernel write-back (flusher threads, journal commits forced by fsyncs of a growing file) runs
/// while the tenant's writers do: with buffered writes, the write p99 of a 20k writes/s load
/// during a snapshot of 1M keys was 3–5× its idle value on a 2-core VM, with `O_DIRECT`
/// 1.4–1.6× (docs/benchmarks.md), at the same snapshot duration. All writes are positional, so
/// the two paths can take over from each other at any offset.
struct SnapshotOut {
    /// A handle without `O_DIRECT`: the buffered path, the unaligned tail, the final fsync.
    file: File,
    direct: Option<DirectStage>,
    buffered: Vec<u8>,
    /// Bytes written to the file so far.
    offset: u64,
}

/// The `O_DIRECT` handle and its staging buffer.
struct DirectStage {
    file: File,
    /// `DIRECT_STAGE + DIRECT_ALIGN` bytes, never resized (so its address never moves); the
    /// stage is the aligned window `start..start + DIRECT_STAGE`.
    mem: Vec<u8>,
    start: usize,
    /// Bytes of the stage in use.
    fill: usize,
}

impl SnapshotOut {
    /// Creates (truncates) the file at `path`.
    fn create(path: &Path, mode: WriteMode) -> std::io::Result<SnapshotOut> {
        let file = File::create(path)?;
        let direct = match mode {
            // A file system without O_DIRECT (some tmpfs, FUSE) refuses the open: buffered then.
            WriteMode::DirectIfSupported => std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok(),
            WriteMode::Buffered => None,
        };
        let direct = direct.and_then(|file| {
            let mem = vec![0u8; DIRECT_STAGE + DIRECT_ALIGN];
            // Always below DIRECT_ALIGN for bytes; checked so that no offset can overrun.
            let start = mem.as_ptr().align_offset(DIRECT_ALIGN);
            (start < DIRECT_ALIGN).then_some(DirectStage {
                file,
                mem,
                start,
                fill: 0,
            })
        });
        Ok(SnapshotOut {
            file,
            direct,
            buffered: Vec::new(),
            offset: 0,
        })
    }

    fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Appends `data` to the file (written once a stage is full).
    fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let Some(d) = &mut self.direct else {
                self.buffered.extend_from_slice(data);
                if self.buffered.len() >= BUFFERED_STAGE {
                    self.flush()?;
                }
                return Ok(());
            };
            let n = (DIRECT_STAGE - d.fill).min(data.len());
            let at = d.start + d.fill;
            d.mem[at..at + n].copy_from_slice(&data[..n]);
            d.fill += n;
            data = &data[n..];
            if d.fill < DIRECT_STAGE {
                continue;
            }
            let stage = &d.mem[d.start..d.start + DIRECT_STAGE];
            match d.file.write_all_at(stage, self.offset) {
                Ok(()) => {
                    self.offset += DIRECT_STAGE as u64;
                    d.fill = 0;
                }
                // The file system took O_DIRECT at open but not this write (an alignment it
                // wants larger than ours, a short write that left the offset unaligned, direct
                // I/O it does not support after all): the rest goes through the page cache,
                // from the stage's first byte on.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                    tracing::debug!("O_DIRECT write refused, writing buffered: {e}");
                    self.buffered.extend_from_slice(stage);
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Hands the buffered path's bytes to the kernel. The direct path keeps its partial stage
    /// until [`SnapshotOut::finish`]: only whole aligned blocks can be written directly.
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buffered.is_empty() {
            self.file.write_all_at(&self.buffered, self.offset)?;
            self.offset += self.buffered.len() as u64;
            self.buffered.clear();
        }
        Ok(())
    }

    /// Writes everything still held; the direct path's unaligned tail goes through the page
    /// cache. The caller fsyncs [`SnapshotOut::file`] after.
    fn finish(&mut self) -> std::io::Result<()> {
        if let Some(d) = &mut self.direct {
            let tail = &d.mem[d.start..d.start + d.fill];
            self.file.write_all_at(tail, self.offset)?;
            self.offset += d.fill as u64;
            d.fill = 0;
        }
        self.flush()
    }
}

/// A snapshot file being written, entry by entry: the file header and the header frame (with
/// an optional [`record::BACKUP_INFO`] frame), then entries in frames of about
/// [`BLOCK_BYTES`], libraries, and the end record that counts the entries; [`finish`] fsyncs
/// it. The header is written with the first frame of entries, so a key count learnt after
/// [`create`] but before the first [`BLOCK_BYTES`] of entries ([`set_keys`]) still goes into
/// it. Dropped unfinished (an error anywhere, the caller's included), the file is removed.
///
/// [`create`]: SnapshotWriter::create
/// [`finish`]: SnapshotWriter::finish
/// [`set_keys`]: SnapshotWriter::set_keys
pub struct SnapshotWriter {
    path: PathBuf,
    out: SnapshotOut,
    /// The header and backup description until they are written.
    head: Option<(FileHeader, Option<Vec<u8>>)>,
    /// The entries frame being filled.
    buf: Vec<u8>,
    frame_at: usize,
    count_at: usize,
    in_block: u32,
    entries: u64,
    bytes: u64,
    /// Bytes written since the last write-back was asked for.
    unsynced: u64,
    write_back: WriteBack,
    finished: bool,
}

/// Writes a file's data to disk while it is still being written (buffered writes only: see
/// [`SnapshotOut`]): every [`WRITE_BACK_BYTES`]
/// the writer asks a helper thread, which has its own handle of the file, to `fdatasync` it,
/// and goes on writing. The kernel would otherwise hold the whole file in memory until the
/// final fsync, which then waits for all of it; this way that fsync has only the last few
/// megabytes left. Durability is unchanged: the final `sync_all` is still what makes the file
/// durable.
struct WriteBack {
    /// Asks for one `fdatasync` (a request while one runs is dropped: that one or the next
    /// covers it). `None` once finished, or when the helper could not be started.
    ask: Option<std::sync::mpsc::SyncSender<()>>,
    helper: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

/// How much written data makes [`WriteBack`] start writing it to disk.
const WRITE_BACK_BYTES: u64 = 16 << 20;

impl WriteBack {
    fn start(file: &File) -> WriteBack {
        let Ok(handle) = file.try_clone() else {
            return WriteBack::none();
        };
        let (ask, asked) = std::sync::mpsc::sync_channel::<()>(1);
        let helper = std::thread::Builder::new()
            .name("snapshot-sync".into())
            .spawn(move || {
                for () in asked {
                    handle.sync_data()?;
                }
                Ok(())
            });
        match helper {
            Ok(h) => WriteBack {
                ask: Some(ask),
                helper: Some(h),
            },
            Err(_) => WriteBack::none(),
        }
    }

    fn none() -> WriteBack {
        WriteBack {
            ask: None,
            helper: None,
        }
    }

    fn ask(&self) {
        if let Some(ask) = &self.ask {
            let _ = ask.try_send(());
        }
    }

    /// Stops the helper; its error, if a write-back failed.
    fn stop(&mut self) -> std::io::Result<()> {
        self.ask = None;
        match self.helper.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("the write-back thread failed")),
            None => Ok(()),
        }
    }
}

impl Drop for WriteBack {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl SnapshotWriter {
    /// Creates (truncates) the file at `path`, and its directory if missing.
    pub fn create(
        path: &Path,
        header: FileHeader,
        info: Option<&[u8]>,
    ) -> Result<SnapshotWriter, String> {
        SnapshotWriter::create_with(path, header, info, WriteMode::DirectIfSupported)
    }

    pub(crate) fn create_with(
        path: &Path,
        header: FileHeader,
        info: Option<&[u8]>,
        mode: WriteMode,
    ) -> Result<SnapshotWriter, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let out = SnapshotOut::create(path, mode)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        // Direct writes leave nothing for a write-back to do.
        let write_back = if out.is_direct() {
            WriteBack::none()
        } else {
            WriteBack::start(&out.file)
        };
        let mut w = SnapshotWriter {
            path: path.to_path_buf(),
            out,
            head: Some((header, info.map(<[u8]>::to_vec))),
            buf: Vec::with_capacity(BLOCK_BYTES + 64 * 1024),
            frame_at: 0,
            count_at: 0,
            in_block: 0,
            entries: 0,
            bytes: 0,
            unsynced: 0,
            write_back,
            finished: false,
        };
        w.start_block();
        Ok(w)
    }

    /// The header's key count (a hint for loaders), if the header is not written yet; false
    /// when it was (the count is then whatever [`create`](SnapshotWriter::create) got).
    pub fn set_keys(&mut self, keys: u64) -> bool {
        match &mut self.head {
            Some((h, _)) => {
                h.keys = Some(keys);
                true
            }
            None => false,
        }
    }

    /// Entries added so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Adds one entry: `key` with `value`, its expiry and modified time.
    pub fn entry(
        &mut self,
        key: &[u8],
        value: &ferrite_storage::Value,
        expire_at: Option<u64>,
        modified_ms: u64,
    ) -> Result<(), String> {
        if self.in_block == u32::MAX {
            self.flush_block().map_err(|e| self.failed(e))?;
        }
        record::put_value_entry(&mut self.buf, key, value, expire_at, modified_ms);
        self.in_block += 1;
        self.entries += 1;
        if self.buf.len() >= BLOCK_BYTES {
            self.flush_block().map_err(|e| self.failed(e))?;
        }
        Ok(())
    }

    /// Adds `n` entries already encoded with [`record::put_entry`].
    pub(crate) fn append_encoded(&mut self, chunk: &[u8], n: u32) -> Result<(), String> {
        if n == 0 {
            return Ok(());
        }
        if self.in_block.checked_add(n).is_none() {
            self.flush_block().map_err(|e| self.failed(e))?;
        }
        self.buf.extend_from_slice(chunk);
        self.in_block += n;
        self.entries += u64::from(n);
        if self.buf.len() >= BLOCK_BYTES {
            self.flush_block().map_err(|e| self.failed(e))?;
        }
        Ok(())
    }

    /// Adds the function libraries (nothing when there are none).
    pub fn libraries(
        &mut self,
        libraries: &std::collections::BTreeMap<String, Vec<u8>>,
    ) -> Result<(), String> {
        if libraries.is_empty() {
            return Ok(());
        }
        let mut frame = Vec::new();
        let at = begin_frame(&mut frame);
        record::put_libraries(&mut frame, libraries);
        end_frame(&mut frame, at);
        self.flush_block()
            .and_then(|()| self.write(&frame))
            .map_err(|e| self.failed(e))
    }

    /// Writes the end record and fsyncs the file.
    pub fn finish(mut self) -> Result<Written, String> {
        let mut end = Vec::new();
        let at = begin_frame(&mut end);
        record::put_snapshot_end(&mut end, self.entries);
        end_frame(&mut end, at);
        let done = self
            .flush_block()
            .and_then(|()| self.write(&end))
            .and_then(|()| self.out.finish())
            .and_then(|()| self.write_back.stop())
            .and_then(|()| self.out.file.sync_all());
        done.map_err(|e| self.failed(e))?;
        self.finished = true;
        Ok(Written {
            entries: self.entries,
            bytes: self.bytes,
            pre_images: 0,
        })
    }

    fn failed(&self, e: std::io::Error) -> String {
        format!("cannot write {}: {e}", self.path.display())
    }

    fn start_block(&mut self) {
        self.buf.clear();
        self.frame_at = begin_frame(&mut self.buf);
        self.count_at = record::begin_entries(&mut self.buf);
        self.in_block = 0;
    }

    /// Writes the entries gathered so far as one frame (the header first if it is not written
    /// yet) and starts the next.
    fn flush_block(&mut self) -> std::io::Result<()> {
        self.write_head()?;
        if self.in_block == 0 {
            return Ok(());
        }
        record::end_entries(&mut self.buf, self.count_at, self.in_block);
        end_frame(&mut self.buf, self.frame_at);
        self.out.write_all(&self.buf)?;
        self.bytes += self.buf.len() as u64;
        self.unsynced += self.buf.len() as u64;
        if self.unsynced >= WRITE_BACK_BYTES {
            // What the buffer holds goes to the kernel first, so the write-back covers it.
            self.out.flush()?;
            self.write_back.ask();
            self.unsynced = 0;
        }
        self.start_block();
        Ok(())
    }

    fn write_head(&mut self) -> std::io::Result<()> {
        let Some((header, info)) = self.head.take() else {
            return Ok(());
        };
        let mut head = Vec::new();
        put_file_header(&mut head, Kind::Snapshot);
        let at = begin_frame(&mut head);
        record::put_snapshot_header(&mut head, &header);
        end_frame(&mut head, at);
        if let Some(info) = info {
            let at = begin_frame(&mut head);
            record::put_backup_info(&mut head, &info);
            end_frame(&mut head, at);
        }
        self.write(&head)
    }

    /// Writes a whole frame (after the header).
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_head()?;
        self.out.write_all(bytes)?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.path);
        }
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
///
/// Two threads: a scoped thread reads the file, checks each frame's checksum and decodes its
/// entries into values (the reading, hashing and allocating), the caller's thread inserts them
/// into `db` (the table's cache misses), [`IN_FLIGHT`] frames at most between them. The
/// table is sized once from the header's key count when the file has one (capped by
/// [`record::reservation`]: a forged count cannot allocate more than the file could fill).
pub fn load_counting(
    path: &Path,
    db: &mut Db,
    progress: &dyn Fn(u64),
) -> Result<(FileHeader, u64), LoadError> {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Decoded>(IN_FLIGHT);
        let reader = s.spawn(move || read_frames(path, &tx));
        let mut inserted = 0u64;
        for decoded in rx {
            match decoded {
                Decoded::Reserve(keys) => db.reserve(keys),
                Decoded::Libraries(libraries) => db.set_libraries(libraries),
                Decoded::Entries { payload, entries } => {
                    inserted += entries.len() as u64;
                    let mut entries = entries.into_iter();
                    let mut chunk = Vec::with_capacity(WARM_AHEAD);
                    loop {
                        chunk.clear();
                        chunk.extend(entries.by_ref().take(WARM_AHEAD));
                        if chunk.is_empty() {
                            break;
                        }
                        db.warm(chunk.iter().map(|e| &payload[e.key_at.clone()]));
                        for e in chunk.drain(..) {
                            let key = &payload[e.key_at];
                            match db.entry_physical(key, 0) {
                                // A key written during the snapshot is there twice, equal:
                                // keep one.
                                Slot::Occupied(mut o) => {
                                    o.replace(e.value, e.expire);
                                    o.set_modified(e.modified);
                                }
                                Slot::Vacant(v) => {
                                    v.insert_with_modified(e.value, e.expire, e.modified)
                                }
                            }
                        }
                    }
                    progress(inserted);
                }
            }
        }
        // The channel ends when the reader is done, successfully or not: its result says which.
        reader
            .join()
            .map_err(|_| LoadError::new(path, "the thread reading the file failed"))?
    })
}

/// Keys whose place in the table is brought into the cache together before they are inserted
/// (`Db::warm`): enough for their cache misses to overlap, few enough that what they bring in
/// is still in the first-level cache when the inserts use it.
const WARM_AHEAD: usize = 32;

/// Frames decoded and not yet inserted, at most: memory in flight stays at a few
/// [`BLOCK_BYTES`] frames and their values.
const IN_FLIGHT: usize = 4;

/// What the reading thread of [`load_counting`] hands the inserting one.
enum Decoded {
    /// Room for this many keys (the header's count, capped).
    Reserve(usize),
    /// One entries frame: its payload (the keys are read from it in place) and its entries.
    Entries {
        payload: Vec<u8>,
        entries: Vec<DecodedEntry>,
    },
    Libraries(std::collections::BTreeMap<String, Vec<u8>>),
}

struct DecodedEntry {
    /// The key's bytes in the frame's payload.
    key_at: std::ops::Range<usize>,
    value: ferrite_storage::Value,
    expire: Option<u64>,
    modified: u64,
}

/// The reading side of [`load_counting`]: every frame of the file, checked and decoded, sent to
/// `tx` in order. Returns the header and the entry count once the end record agrees with it. A
/// closed channel (the inserting side stopped) ends it early; that side then reports.
fn read_frames(
    path: &Path,
    tx: &std::sync::mpsc::SyncSender<Decoded>,
) -> Result<(FileHeader, u64), LoadError> {
    let file = File::open(path).map_err(|e| LoadError::new(path, e.to_string()))?;
    let size = file
        .metadata()
        .map_err(|e| LoadError::new(path, e.to_string()))?
        .len();
    let stopped = || LoadError::new(path, "loading stopped");
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
    let reserve = record::reservation(header.keys, size);
    if reserve > 0 {
        tx.send(Decoded::Reserve(reserve)).map_err(|_| stopped())?;
    }
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
                let mut decoded = Vec::new();
                entries += record::read_entries(&buf, |e| {
                    decoded.push(DecodedEntry {
                        key_at: e.key_at,
                        value: e.value,
                        expire: e.expire,
                        modified: e.modified,
                    })
                })
                .map_err(|e| LoadError::corrupt(path, at, format!("{e}")))?;
                let payload = std::mem::take(&mut buf);
                tx.send(Decoded::Entries {
                    payload,
                    entries: decoded,
                })
                .map_err(|_| stopped())?;
            }
            // A backup's description (see `read_backup_info`): not data.
            Some(&record::BACKUP_INFO) => {}
            Some(&record::LIBRARIES) => {
                let libraries = record::read_libraries(&buf)
                    .map_err(|e| LoadError::corrupt(path, at, format!("{e}")))?;
                tx.send(Decoded::Libraries(libraries))
                    .map_err(|_| stopped())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks of awkward sizes (empty, one byte, stage-sized, larger than a stage, crossing
    /// stage boundaries) come out of both write paths as the same file, in order, whole.
    #[test]
    fn snapshot_out_writes_every_byte_in_order_either_way() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sizes = [
            0,
            1,
            DIRECT_ALIGN - 1,
            DIRECT_STAGE,
            3,
            DIRECT_STAGE - 4,
            2 * DIRECT_STAGE + 17,
            BUFFERED_STAGE + 1,
            5000,
        ];
        let mut want = Vec::new();
        let mut seed = 0x9e37_79b9_u32;
        let chunks: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (seed >> 24) as u8
                    })
                    .collect()
            })
            .collect();
        for c in &chunks {
            want.extend_from_slice(c);
        }
        for mode in [WriteMode::DirectIfSupported, WriteMode::Buffered] {
            let path = dir.path().join(format!("{mode:?}"));
            let mut out = SnapshotOut::create(&path, mode).expect("create");
            if mode == WriteMode::Buffered {
                assert!(!out.is_direct());
            }
            for c in &chunks {
                out.write_all(c).expect("write");
            }
            out.finish().expect("finish");
            out.file.sync_all().expect("fsync");
            assert_eq!(out.offset, want.len() as u64, "{mode:?}");
            let got = std::fs::read(&path).expect("read");
            assert!(
                got == want,
                "{mode:?}: the file differs from what was written"
            );
        }
    }
}
