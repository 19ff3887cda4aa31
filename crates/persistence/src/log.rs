//! One tenant's append-only log: the keyspace publishes effects into a buffer under its lock
//! ([`EffectSink`]); whoever needs them on disk — the connection that wrote, before it replies,
//! or the periodic tick — hands the buffer to the kernel with one `write`; the fsync thread
//! makes written bytes durable every second (`everysec`). Under `always` the connection that
//! needs an fsync runs it itself, on its own thread, unless one is running already: everything
//! written by then is covered, and the writers that come meanwhile share the next one (group
//! commit), as Redis's event loop fsyncs once per pass before it replies.
//!
//! Positions (`lsn`) count effect bytes since the log was opened; `written` and `synced` say how
//! far the kernel and the disk have them. A snapshot *rotates* the log under the keyspace lock:
//! effects published after that moment go to the next generation's file.
//!
//! A failed write or fsync *breaks* the log: what was not written is dropped from the buffer
//! (the data is still in memory), writes are refused server-wide (`-MISCONF`), and the tick
//! takes a new snapshot of the tenant — which holds everything the log lost — and continues with
//! a fresh generation once that succeeded: writes resume by themselves when the disk is back.

use std::fs::{File, OpenOptions};
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::time::Instant;

use ferrite_storage::{EffectSink, Effects};
use parking_lot::Mutex;

use crate::core::{Core, FsyncPolicy};
use crate::format::{
    FLAG_ZERO_TAIL, FRAME_HEADER, FrameError, FrameReader, Kind, begin_frame, end_frame,
    put_file_header_with, put_frame,
};
use crate::paths;
use crate::record::{FileHeader, put_effects, put_log_header, put_predecessor};

/// After a commit covered by another one's write, this many commits that had to write
/// themselves stop the waiting ([`TenantLog::sharing`]).
const GROUP_WRITE_MAX: u32 = 16;
/// One commit in this many waits for the other queued connections even when that has not
/// paid off lately.
const GROUP_WRITE_PROBE: u32 = 32;
/// The zeros a log keeps ahead of its records (see [`format::FLAG_ZERO_TAIL`]): a sixteenth of
/// what it holds, within these bounds. Small for the many quiet tenants (64 KiB each), and a
/// busy log extends itself once per megabyte: the fsync after an extension writes that
/// megabyte and commits the new size (0.4–0.9 ms here), the others only their records.
///
/// [`format::FLAG_ZERO_TAIL`]: crate::format::FLAG_ZERO_TAIL
const PREALLOC_MIN: u64 = 64 * 1024;
const PREALLOC_MAX: u64 = 1024 * 1024;
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Effects waiting to be written.
struct Pending {
    buf: Vec<u8>,
    /// Generation switches: (offset in `buf`, the generation that starts there).
    switches: Vec<(usize, u64)>,
    /// The generation effects published now belong to.
    generation: u64,
    /// Bytes ever appended (the position after `buf`).
    appended: u64,
    /// Broken: effects are dropped (the recovery snapshot will hold them).
    broken: bool,
    /// A recovery snapshot is being written: effects are kept but not written until it is done,
    /// so the new generation never follows a gap.
    recovering: bool,
    /// Positions in `(lost.0, lost.1]` were dropped by the last failure (a failed write or
    /// fsync, a failed recovery): they are not in the log, even once `written` has passed them.
    lost: (u64, u64),
}

/// An open log file.
struct LogFile {
    file: File,
    /// Where its records end (the next write goes there).
    size: u64,
    /// Its length: zeros from `size` to here.
    allocated: u64,
}

/// The file side, used by one writer at a time.
struct FileSide {
    file: Option<Arc<File>>,
    /// Generation of `file` (or of the file to open on the next write).
    generation: u64,
    /// Bytes of records in the current file: where the next write goes.
    size: u64,
    /// The current file's length; from `size` to here it holds zeros (preallocated).
    allocated: u64,
    /// The next generation's file, created and made durable by the snapshot thread before the
    /// rotation ([`TenantLog::prepare_next`]), so that no writer's commit pays for creating it.
    prepared: Option<(u64, LogFile)>,
    /// The previous generation's file while it may hold writes not yet fsynced: the rotation
    /// no longer fsyncs it under the file lock (every writer of the tenant waited for that).
    /// It is fsynced by the snapshot thread right after the switch ([`TenantLog::sync_retired`])
    /// and, if that has not happened yet, by any fsync of the log before the current file (so
    /// under `always` no reply on the new log precedes the old log's durability). The new log's
    /// first record says how long the old one was ([`record::PREDECESSOR`]): a crash before
    /// that fsync can leave the old log shorter, and the loader stops at the gap.
    retired: Option<Arc<File>>,
}

/// The file side, locked through [`TenantLog::lock_file`] or [`TenantLog::try_lock_file`].
/// Releasing it wakes the connections that found it locked ([`TenantLog::written_notify`]),
/// whichever thread held it and for whatever reason: a connection whose `try_lock` failed
/// waits for exactly that, and a release that did not notify (the snapshot thread's fsync of
/// the retired log used to) left it waiting for the next write of some other connection or
/// for the 100 ms tick.
struct FileLock<'a> {
    /// `Some` until dropped.
    guard: Option<parking_lot::MutexGuard<'a, FileSide>>,
    released: &'a tokio::sync::Notify,
}

impl std::ops::Deref for FileLock<'_> {
    type Target = FileSide;
    fn deref(&self) -> &FileSide {
        self.guard.as_deref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for FileLock<'_> {
    fn deref_mut(&mut self) -> &mut FileSide {
        self.guard.as_deref_mut().expect("held until dropped")
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // Unlocked first: a woken connection that tries the lock at once must find it free.
        drop(self.guard.take());
        self.released.notify_waiters();
    }
}

/// Sizes used by the compaction trigger and INFO.
#[derive(Debug, Default)]
pub struct LogSizes {
    /// Bytes of log files written since the last snapshot (all generations not compacted yet).
    pub since_snapshot: AtomicU64,
    /// Size of the last snapshot file.
    pub snapshot: AtomicU64,
}

/// A tenant's log.
pub struct TenantLog {
    pub tenant: String,
    pub incarnation: u64,
    pub dir: PathBuf,
    core: Arc<Core>,
    pending: Mutex<Pending>,
    file: Mutex<FileSide>,
    written: AtomicU64,
    synced: AtomicU64,
    /// `Pending::appended + Pending::buf.len()` as of the last publish, readable without the
    /// lock ([`ferrite_tenancy::Durability::unsynced_end`]: every reply under `always` asks).
    published_end: AtomicU64,
    /// `Pending::lost.1`, readable without the lock (0: nothing was ever lost).
    lost_upto: AtomicU64,
    /// How much group writes paid off lately: set to [`GROUP_WRITE_MAX`] by a commit another
    /// one's write covered, lowered by one for each commit that had to write.
    sharing: AtomicU32,
    /// Commits so far (every [`GROUP_WRITE_PROBE`]th waits whatever `sharing` says, so that a
    /// load that becomes concurrent is noticed).
    commits: AtomicU32,
    synced_notify: tokio::sync::Notify,
    /// An fsync of the log for waiting writers is running (`always`): the others wait for it
    /// instead of starting one of their own ([`TenantLog::sync_here`]).
    syncing: AtomicBool,
    /// Notified whenever the file side is unlocked ([`FileLock`]: after every write of the log,
    /// and after anything else that held the file), and when the log breaks or closes:
    /// connections whose records another thread was writing, or that found the file locked,
    /// wait here ([`TenantLog::flush_unless_busy`], [`SyncHere::FileBusy`]).
    written_notify: tokio::sync::Notify,
    broken: AtomicBool,
    /// The log is closed (tenant deleted, moved away, server stopping): nothing more is written.
    closed: AtomicBool,
    pub sizes: LogSizes,
    /// A snapshot of this tenant is running.
    pub snapshotting: AtomicBool,
}

impl TenantLog {
    /// A log that appends to generation `generation` (existing file or new), with `size` bytes
    /// of records in that file already (zeros may follow them: [`FLAG_ZERO_TAIL`]).
    pub fn new(
        core: Arc<Core>,
        tenant: &str,
        incarnation: u64,
        dir: PathBuf,
        generation: u64,
        existing: Option<(File, u64)>,
    ) -> Arc<TenantLog> {
        let (file, size, allocated) = match existing {
            Some((f, size)) => {
                let allocated = f.metadata().map_or(size, |m| m.len().max(size));
                (Some(Arc::new(f)), size, allocated)
            }
            None => (None, 0, 0),
        };
        Arc::new(TenantLog {
            tenant: tenant.to_string(),
            incarnation,
            dir,
            core,
            pending: Mutex::new(Pending {
                buf: Vec::with_capacity(64 * 1024),
                switches: Vec::new(),
                generation,
                appended: 0,
                broken: false,
                recovering: false,
                lost: (0, 0),
            }),
            file: Mutex::new(FileSide {
                file,
                generation,
                size,
                allocated,
                prepared: None,
                retired: None,
            }),
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            published_end: AtomicU64::new(0),
            lost_upto: AtomicU64::new(0),
            sharing: AtomicU32::new(0),
            commits: AtomicU32::new(0),
            synced_notify: tokio::sync::Notify::new(),
            syncing: AtomicBool::new(false),
            written_notify: tokio::sync::Notify::new(),
            broken: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            sizes: LogSizes::default(),
            snapshotting: AtomicBool::new(false),
        })
    }

    /// Locks the file side (see [`FileLock`]: its release wakes whoever found it locked).
    fn lock_file(&self) -> FileLock<'_> {
        FileLock {
            guard: Some(self.file.lock()),
            released: &self.written_notify,
        }
    }

    /// [`TenantLog::lock_file`] unless another thread holds it.
    fn try_lock_file(&self) -> Option<FileLock<'_>> {
        Some(FileLock {
            guard: Some(self.file.try_lock()?),
            released: &self.written_notify,
        })
    }

    pub fn is_broken(&self) -> bool {
        self.broken.load(SeqCst)
    }

    pub fn written(&self) -> u64 {
        self.written.load(SeqCst)
    }

    pub fn synced(&self) -> u64 {
        self.synced.load(SeqCst)
    }

    /// Bytes published but not yet written.
    pub fn buffered(&self) -> u64 {
        self.pending.lock().buf.len() as u64
    }

    pub fn generation(&self) -> u64 {
        self.pending.lock().generation
    }

    /// Creates the file of the generation the next [`TenantLog::rotate_locked`] starts, with its
    /// header, and makes it and its name durable — the two fsyncs that a writer's commit would
    /// otherwise do at the first write after the rotation (outside any lock; the snapshot
    /// thread calls it). A file of a generation that never starts is harmless: the loader skips
    /// empty logs and the next snapshot's cleanup deletes it.
    pub fn prepare_next(&self) -> std::io::Result<()> {
        let next = self.pending.lock().generation + 1;
        let file = self.open_generation(next)?;
        self.lock_file().prepared = Some((next, file));
        Ok(())
    }

    /// Starts the next generation: effects published from now on go to its file. Call it under
    /// the keyspace lock, in the same critical section that opens the snapshot. A broken log
    /// enters recovery: what comes after this point is kept, and written once the snapshot that
    /// holds everything before it is on disk ([`TenantLog::snapshot_done`]).
    pub fn rotate_locked(&self) -> u64 {
        let mut p = self.pending.lock();
        p.generation += 1;
        let g = p.generation;
        if p.broken {
            p.broken = false;
            p.recovering = true;
            p.buf.clear();
            p.switches.clear();
        }
        if !p.recovering {
            let at = p.buf.len();
            p.switches.push((at, g));
        }
        g
    }

    /// The snapshot of generation `g` is durable. A recovering log now continues in generation
    /// `g`; returns false if that failed (the log is broken again).
    pub fn snapshot_done(&self, g: u64, snapshot_bytes: u64) -> bool {
        self.sizes.snapshot.store(snapshot_bytes, Relaxed);
        self.sizes.since_snapshot.store(0, Relaxed);
        let recovered = {
            let mut p = self.pending.lock();
            if p.recovering {
                p.recovering = false;
                // The effects kept since the rotation start generation `g`.
                p.switches.insert(0, (0, g));
                true
            } else {
                false
            }
        };
        if recovered {
            {
                // Forget the file of the broken generation: the next write opens `g`'s (the
                // flush below tells the connections that found the file locked).
                let mut f = self.lock_file();
                f.file = None;
            }
            match self.flush() {
                Ok(()) => {
                    self.broken.store(false, SeqCst);
                    self.core.recovered(&self.tenant);
                    true
                }
                Err(_) => false,
            }
        } else {
            true
        }
    }

    /// A snapshot failed: a recovering log goes back to broken (the next attempt starts over).
    pub fn snapshot_failed(&self) {
        let mut p = self.pending.lock();
        if p.recovering {
            p.recovering = false;
            p.broken = true;
            let from = p.appended;
            self.drop_pending(&mut p, from);
        }
    }

    /// Drops the effects not written yet, and remembers that the positions from `from` to the
    /// end of them are lost (a connection waiting for one of them gets an error, not a reply).
    fn drop_pending(&self, p: &mut Pending, from: u64) {
        p.appended += p.buf.len() as u64;
        p.buf.clear();
        p.switches.clear();
        p.lost = (from.min(p.appended), p.appended);
        self.lost_upto.store(p.appended, SeqCst);
    }

    /// The position just past everything published so far.
    pub fn journaled(&self) -> u64 {
        let p = self.pending.lock();
        p.appended + p.buf.len() as u64
    }

    /// Whether the log holds everything up to `position`, as far as the kernel is concerned.
    fn covers(&self, position: u64) -> bool {
        if self.written() < position {
            return false;
        }
        if position <= self.lost_upto.load(SeqCst) {
            let (from, upto) = self.pending.lock().lost;
            return !(from < position && position <= upto);
        }
        true
    }

    /// Hands everything published so far to the kernel (one `write` per generation touched).
    pub fn flush(&self) -> Result<(), String> {
        if self.closed.load(Relaxed) {
            return Ok(());
        }
        self.flush_locked(&mut self.lock_file())
    }

    /// [`TenantLog::flush`], unless another thread is writing the log right now: `None` then
    /// (wait for [`TenantLog::written_notify`] and look again). A connection must not block its
    /// worker thread on the file lock: behind a `write` the disk makes slow, every connection
    /// of that worker would wait — and on a busy machine the
    /// lock's spinning gives the core away (`sched_yield`) for a whole time slice.
    fn flush_unless_busy(&self) -> Option<Result<(), String>> {
        if self.closed.load(Relaxed) {
            return Some(Ok(()));
        }
        let mut fs = self.try_lock_file()?;
        Some(self.flush_locked(&mut fs))
    }

    fn flush_locked(&self, fs: &mut FileSide) -> Result<(), String> {
        let (buf, switches, end) = {
            let mut p = self.pending.lock();
            if p.broken {
                return Err(self.core.error_text());
            }
            if p.recovering || (p.buf.is_empty() && p.switches.is_empty()) {
                return if p.recovering {
                    Err(self.core.error_text())
                } else {
                    Ok(())
                };
            }
            let cap = p.buf.capacity().min(1 << 20);
            let buf = std::mem::replace(&mut p.buf, Vec::with_capacity(cap));
            let switches = std::mem::take(&mut p.switches);
            p.appended += buf.len() as u64;
            (buf, switches, p.appended)
        };
        let started = Instant::now();
        let result = self.write_out(fs, &buf, &switches, end - buf.len() as u64);
        self.core.stats.record_write(buf.len(), started.elapsed());
        match result {
            Ok(()) => {
                self.written.store(end, SeqCst);
                Ok(())
            }
            Err(e) => {
                // Nothing of this buffer can be trusted to be in the file (a part may be).
                let from = end - buf.len() as u64;
                self.fail_locked(fs, from, &format!("write: {e}"));
                Err(self.core.error_text())
            }
        }
    }

    /// Writes `buf` (log positions from `start`), switching files where `switches` say.
    fn write_out(
        &self,
        fs: &mut FileSide,
        buf: &[u8],
        switches: &[(usize, u64)],
        start: u64,
    ) -> std::io::Result<()> {
        let mut pos = 0usize;
        for &(at, generation) in switches {
            self.write_segment(fs, &buf[pos..at])?;
            pos = at;
            let old = (fs.generation, fs.size);
            fs.generation = generation;
            fs.size = 0;
            fs.allocated = 0;
            let Some(f) = fs.file.take() else {
                continue;
            };
            // The old log is fsynced off this path (see `FileSide::retired`) unless an fsync
            // already covers all of it.
            if self.synced() < start + at as u64
                && let Some(older) = fs.retired.replace(f)
            {
                // Two switches before any fsync (not seen in practice: the snapshot thread
                // fsyncs the old log right after its switch): the older one first.
                older.sync_data()?;
            }
            let mut record = Vec::with_capacity(32);
            let frame = begin_frame(&mut record);
            put_predecessor(&mut record, old.0, old.1);
            end_frame(&mut record, frame);
            self.write_segment(fs, &record)?;
        }
        self.write_segment(fs, &buf[pos..])
    }

    /// Fsyncs the previous generation's file if it may still hold writes that are not durable
    /// (the snapshot thread calls it right after the rotation's switch, so that the window in
    /// which a crash can cut the old log short stays one fsync long).
    pub fn sync_retired(&self) {
        let retired = self.lock_file().retired.clone();
        if let Some(f) = retired {
            self.sync_retired_file(&f);
        }
    }

    /// Fsyncs `f`, the retired file; forgets it once durable, breaks the log if that failed.
    /// Returns whether it succeeded.
    fn sync_retired_file(&self, f: &Arc<File>) -> bool {
        let started = Instant::now();
        let result = f.sync_data();
        self.core.stats.record_fsync(started.elapsed());
        let mut fs = self.lock_file();
        match result {
            Ok(()) => {
                if fs.retired.as_ref().is_some_and(|r| Arc::ptr_eq(r, f)) {
                    fs.retired = None;
                }
                true
            }
            Err(e) => {
                self.fail_locked(&mut fs, self.synced(), &format!("fsync: {e}"));
                false
            }
        }
    }

    fn write_segment(&self, fs: &mut FileSide, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if fs.file.is_none() {
            let opened = match fs.prepared.take() {
                Some((g, file)) if g == fs.generation => file,
                _ => self.open_generation(fs.generation)?,
            };
            fs.file = Some(Arc::new(opened.file));
            fs.size = opened.size;
            fs.allocated = opened.allocated;
        }
        // Borrowed field by field: no reference count touched per write.
        if let Some(f) = fs.file.as_deref() {
            f.write_all_at(data, fs.size)?;
            fs.size += data.len() as u64;
            self.sizes
                .since_snapshot
                .fetch_add(data.len() as u64, Relaxed);
            // Room for the next frame's header at least, so that the tail after the last
            // record is always a whole zero header and reads as the clean end it is.
            if fs.size + FRAME_HEADER as u64 > fs.allocated {
                // A failed extension loses nothing (the next write goes past the end, as an
                // append would): only the next fsyncs are slower. A full disk shows at the
                // next write.
                if let Ok(end) = preallocate(f, fs.size, fs.allocated) {
                    fs.allocated = end;
                }
            }
        }
        Ok(())
    }

    /// Opens (creating it with its header and preallocated zeros if needed) the file of a
    /// generation.
    fn open_generation(&self, generation: u64) -> std::io::Result<LogFile> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(paths::log_file(generation));
        let f = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            // An existing file is continued after its last good record (below).
            .truncate(false)
            .open(&path)?;
        let allocated = f.metadata()?.len();
        if allocated > 0 {
            // Prepared before and not started (or reopened after a failure): continue after
            // its last good record, dropping anything after it so that no old bytes follow
            // new records (and starting it over if not even its header is whole).
            let size = records_end(&f, &path, allocated)?;
            if size < allocated {
                f.set_len(size)?;
                f.sync_all()?;
            }
            if size > 0 {
                return Ok(LogFile {
                    file: f,
                    size,
                    allocated: size,
                });
            }
        }
        let mut head = Vec::with_capacity(64);
        put_file_header_with(&mut head, Kind::Log, FLAG_ZERO_TAIL);
        let mut h = Vec::new();
        put_log_header(
            &mut h,
            &FileHeader {
                tenant: self.tenant.clone(),
                incarnation: self.incarnation,
                generation,
                version: 0,
                created_ms: ferrite_storage::now_ms(),
                keys: None,
            },
        );
        put_frame(&mut head, &h);
        f.write_all_at(&head, 0)?;
        let size = head.len() as u64;
        let allocated = preallocate(&f, size, size)?;
        // The new file must survive a power loss as a whole: its data, its length and its name.
        f.sync_all()?;
        paths::sync_dir(&self.dir)?;
        Ok(LogFile {
            file: f,
            size,
            allocated,
        })
    }

    /// Makes what was written durable (the fsync thread calls it, and snapshots and shutdown).
    pub fn sync(&self) {
        let (target, file, retired) = {
            let fs = self.lock_file();
            (
                self.written.load(SeqCst),
                fs.file.clone(),
                fs.retired.clone(),
            )
        };
        self.sync_upto(target, file, retired);
        self.synced_notify.notify_waiters();
    }

    /// Under `always`, makes what was written durable on the calling thread — a connection's
    /// worker, as Redis fsyncs in its event loop — unless another fsync of the log is running
    /// or the file is being written (see [`SyncHere`] for what to wait for then). Blocking the
    /// worker for the fsync is the price of `always`: handing it to the fsync thread instead
    /// cost two thread hand-offs per fsync (the writer waking the thread, the thread waking the
    /// parked workers), 1–2 context switches per SET at -P1 against Redis's 0.2.
    fn sync_here(&self) -> SyncHere {
        if self
            .syncing
            .compare_exchange(false, true, SeqCst, SeqCst)
            .is_err()
        {
            return SyncHere::Running;
        }
        let Some(fs) = self.try_lock_file() else {
            self.syncing.store(false, SeqCst);
            // A writer that found `syncing` set meanwhile waits for this.
            self.synced_notify.notify_waiters();
            return SyncHere::FileBusy;
        };
        let (target, file, retired) = (
            self.written.load(SeqCst),
            fs.file.clone(),
            fs.retired.clone(),
        );
        drop(fs);
        self.sync_upto(target, file, retired);
        self.syncing.store(false, SeqCst);
        self.synced_notify.notify_waiters();
        SyncHere::Done
    }

    /// `fdatasync`s `file`, which holds the log up to `target` (both read under the file lock),
    /// and records it; a failure breaks the log. The caller notifies `synced_notify`. The
    /// previous generation's file, if it was not fsynced since the switch (`retired`), goes
    /// first: a position in the new log is durable only once everything before it is.
    fn sync_upto(&self, target: u64, file: Option<Arc<File>>, retired: Option<Arc<File>>) {
        if let Some(old) = &retired
            && !self.sync_retired_file(old)
        {
            return;
        }
        if target <= self.synced.load(SeqCst) {
            return;
        }
        let started = Instant::now();
        if let Some(delay) = self.core.test_fsync_delay {
            std::thread::sleep(delay);
        }
        let result = match &file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        };
        self.core.stats.record_fsync(started.elapsed());
        match result {
            Ok(()) => {
                self.synced.fetch_max(target, SeqCst);
            }
            Err(e) => {
                // After a failed fsync the kernel may have dropped the dirty pages: nothing
                // written since the last good fsync can be trusted. The recovery snapshot
                // rewrites it all from memory.
                let mut fs = self.lock_file();
                self.fail_locked(&mut fs, self.synced(), &format!("fsync: {e}"));
            }
        }
    }

    /// Breaks the log after a failed write or fsync: positions from `from` on are lost. Called
    /// with the file side locked, so no other write goes to the file after the failed one.
    fn fail_locked(&self, fs: &mut FileSide, from: u64, why: &str) {
        {
            let mut p = self.pending.lock();
            p.broken = true;
            p.recovering = false;
            self.drop_pending(&mut p, from);
        }
        fs.file = None;
        if !self.broken.swap(true, SeqCst) {
            self.core.failed(&self.tenant, why);
        }
        self.synced_notify.notify_waiters();
        self.written_notify.notify_waiters();
    }

    /// Stops writing (tenant deleted or handed over, server stopping).
    pub fn close(&self) {
        self.closed.store(true, Relaxed);
        self.synced_notify.notify_waiters();
        self.written_notify.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// Writes and fsyncs everything now (shutdown, activation of an import).
    pub fn flush_and_sync(&self) -> Result<(), String> {
        self.flush()?;
        self.sync();
        if self.is_broken() {
            return Err(self.core.error_text());
        }
        Ok(())
    }
}

/// Writes the zeros that keep a log ahead of its records (see [`PREALLOC_MIN`]): from
/// `allocated` (or from `size` if records went past it) on. Returns the file's new length.
fn preallocate(f: &File, size: u64, allocated: u64) -> std::io::Result<u64> {
    let from = allocated.max(size);
    let step = (size / 16).clamp(PREALLOC_MIN, PREALLOC_MAX);
    // Whole pages: the next extension starts on a page boundary.
    let end = (size + step).next_multiple_of(4096).max(from);
    let mut at = from;
    while at < end {
        let n = (end - at).min(ZEROS.len() as u64) as usize;
        f.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(end)
}

/// Where the good records of an existing log end (a torn tail is left out); 0 when not even
/// its header frame is whole.
pub fn records_end(f: &File, path: &Path, len: u64) -> std::io::Result<u64> {
    let mut r = match FrameReader::open(BufReader::new(f), len, Kind::Log) {
        Ok(r) => r,
        Err(FrameError::Torn { .. }) => return Ok(0),
        Err(FrameError::Io(e)) => return Err(e),
        Err(e) => return Err(std::io::Error::other(format!("{}: {e}", path.display()))),
    };
    let mut buf = Vec::new();
    let mut frames = 0u64;
    loop {
        match r.next_frame(&mut buf) {
            Ok(Some(_)) => frames += 1,
            Ok(None) if frames == 0 => return Ok(0),
            Ok(None) => return Ok(r.data_end()),
            Err(FrameError::Torn { .. }) if frames == 0 => return Ok(0),
            Err(FrameError::Torn { offset, .. }) => return Ok(offset),
            Err(FrameError::Io(e)) => return Err(e),
            Err(e) => return Err(std::io::Error::other(format!("{}: {e}", path.display()))),
        }
    }
}

impl EffectSink for TenantLog {
    fn publish(&self, effects: &Effects<'_>) {
        let mut p = self.pending.lock();
        // Closed: detached from its tenant, which may still publish until its keyspace lock
        // is free to unsubscribe (`Persistence::detach`).
        if p.broken || self.is_closed() {
            return;
        }
        let start = begin_frame(&mut p.buf);
        put_effects(&mut p.buf, effects.now, effects.len(), effects.iter());
        end_frame(&mut p.buf, start);
        self.published_end
            .store(p.appended + p.buf.len() as u64, SeqCst);
        drop(p);
        self.core.stats.changes.fetch_add(1, Relaxed);
    }
}

impl ferrite_tenancy::Durability for TenantLog {
    fn journaled(&self) -> u64 {
        TenantLog::journaled(self)
    }

    fn unsynced_end(&self) -> Option<u64> {
        // `published_end` first: `synced` only grows, so a `synced` read after it that covers
        // it covers everything the caller can have seen (its reads ran under the keyspace lock
        // the writers publish under, before this call).
        if self.core.policy() != FsyncPolicy::Always {
            return None;
        }
        let end = self.published_end.load(SeqCst);
        if end <= self.synced.load(SeqCst) || self.is_broken() || self.is_closed() {
            return None;
        }
        Some(end)
    }

    fn group_write(&self) -> bool {
        self.sharing.load(Relaxed) > 0
            || self
                .commits
                .fetch_add(1, Relaxed)
                .is_multiple_of(GROUP_WRITE_PROBE)
    }

    fn commit(&self, position: u64) -> Result<Option<u64>, String> {
        if self.is_closed() {
            return Ok(None);
        }
        if self.written() < position {
            let _ = self
                .sharing
                .fetch_update(Relaxed, Relaxed, |s| s.checked_sub(1));
            match self.flush_unless_busy() {
                Some(result) => result?,
                // Another connection is writing (perhaps these records too): wait for it in
                // `wait_synced` without holding up the worker thread.
                None => return Ok(Some(position)),
            }
        } else if self.sharing.load(Relaxed) < GROUP_WRITE_MAX {
            self.sharing.store(GROUP_WRITE_MAX, Relaxed);
        }
        // Another connection's write may have taken these effects and failed.
        if !self.covers(position) {
            return Err(self.core.error_text());
        }
        if !self.needs_sync(position) {
            return Ok(None);
        }
        // The fsync right away, on this thread, when no other is running (group commit: the
        // connections queued before this one already wrote, see `group_write`).
        match self.sync_here() {
            SyncHere::Done if !self.needs_sync(position) => {
                if self.covers(position) {
                    Ok(None)
                } else {
                    Err(self.core.error_text())
                }
            }
            _ => Ok(Some(position)),
        }
    }

    fn wait_synced(
        &self,
        position: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            // Handed to the kernel: by the write under way when `commit` was called, or else by
            // this connection once the file is free.
            while self.written() < position {
                let written = self.written_notify.notified();
                tokio::pin!(written);
                written.as_mut().enable();
                if self.is_broken() {
                    return Err(self.core.error_text());
                }
                if self.is_closed() {
                    return Err("the log was closed before the write was durable".into());
                }
                if self.written() >= position {
                    break;
                }
                match self.flush_unless_busy() {
                    Some(result) => result?,
                    None => written.await,
                }
            }
            if !self.covers(position) {
                return Err(self.core.error_text());
            }
            loop {
                let synced = self.synced_notify.notified();
                tokio::pin!(synced);
                synced.as_mut().enable();
                let written = self.written_notify.notified();
                tokio::pin!(written);
                written.as_mut().enable();
                if !self.needs_sync(position) {
                    return if self.covers(position) {
                        Ok(())
                    } else {
                        Err(self.core.error_text())
                    };
                }
                if self.is_broken() {
                    return Err(self.core.error_text());
                }
                if self.is_closed() {
                    return Err("the log was closed before the write was durable".into());
                }
                match self.sync_here() {
                    // Look again: the records may have come after what that fsync covered.
                    SyncHere::Done => {}
                    SyncHere::Running => synced.await,
                    SyncHere::FileBusy => written.await,
                }
            }
        })
    }
}

/// What [`TenantLog::sync_here`] did.
enum SyncHere {
    /// It ran an fsync (or found nothing to sync): look at `synced` again.
    Done,
    /// Another fsync of the log is running: wait for `synced_notify`.
    Running,
    /// A write holds the file: wait for `written_notify`.
    FileBusy,
}

impl TenantLog {
    /// Whether a reply for the log up to `position` must still wait for an fsync (`always`).
    fn needs_sync(&self, position: u64) -> bool {
        self.core.policy() == FsyncPolicy::Always && self.synced() < position
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ferrite_storage::{EffectSink, Effects};
    use ferrite_tenancy::Durability;

    use super::*;

    /// A tenant's log in a fresh directory (kept as long as the returned `TempDir` lives).
    fn new_log(policy: FsyncPolicy) -> (tempfile::TempDir, Arc<Core>, Arc<TenantLog>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let core = Core::new(policy);
        let log = TenantLog::new(core.clone(), "t", 1, dir.path().join("t"), 1, None);
        (dir, core, log)
    }

    fn publish_set(log: &TenantLog, key: &str) {
        let argv = vec![vec![
            b"SET".to_vec(),
            key.as_bytes().to_vec(),
            b"v".to_vec(),
        ]];
        log.publish(&Effects::new(1, &argv));
    }

    /// Checks that a writer's `wait_synced` for `position` is still waiting after 50 ms, then runs
    /// `release` (what the wait is held by ends) and checks the wait ends with the records in the
    /// log within 10 s. `messages`: the assertion texts for a wait that ended early and one that
    /// did not end.
    fn wait_held_until(
        log: &TenantLog,
        position: u64,
        messages: (&str, &str),
        release: impl FnOnce(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let wait = Durability::wait_synced(log, position);
            tokio::pin!(wait);
            let early = tokio::time::timeout(Duration::from_millis(50), wait.as_mut()).await;
            assert!(early.is_err(), "{}", messages.0);
            release();
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .expect(messages.1)
                .expect("the records are in the log");
        });
    }

    /// Under `always` a commit runs the fsync itself (no fsync thread is started here), and
    /// only then may the reply go; a commit that finds an fsync running waits for it instead of
    /// running its own; writers on several threads all end with their records on disk.
    #[test]
    fn under_always_the_writer_runs_the_fsync_itself_or_waits_for_the_running_one() {
        let (_dir, core, log) = new_log(FsyncPolicy::Always);
        publish_set(&log, "a");
        let position = Durability::journaled(&*log);
        assert_eq!(Durability::commit(&*log, position), Ok(None));
        assert!(log.synced() >= position, "acknowledged before its fsync");
        assert_eq!(core.stats.fsyncs.load(Relaxed), 1);

        // Another fsync is running: a commit does not start a second one; its wait ends once
        // the running one ended and its records are on disk.
        publish_set(&log, "b");
        let position = Durability::journaled(&*log);
        log.syncing.store(true, SeqCst);
        assert_eq!(Durability::commit(&*log, position), Ok(Some(position)));
        assert!(log.synced() < position);
        wait_held_until(
            &log,
            position,
            (
                "the wait ended while the other fsync ran",
                "the wait ends after the running fsync",
            ),
            || {
                log.syncing.store(false, SeqCst);
                log.synced_notify.notify_waiters();
            },
        );
        assert!(log.synced() >= position);

        let threads = 4;
        let per_thread = 200;
        std::thread::scope(|s| {
            for t in 0..threads {
                let log = &log;
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .expect("runtime");
                    for i in 0..per_thread {
                        publish_set(log, &format!("k{t}-{i}"));
                        let position = Durability::journaled(&**log);
                        let committed = Durability::commit(&**log, position).expect("commit");
                        if let Some(p) = committed {
                            rt.block_on(async {
                                tokio::time::timeout(
                                    Duration::from_secs(10),
                                    Durability::wait_synced(&**log, p),
                                )
                                .await
                                .expect("a wait ends")
                                .expect("the records are in the log")
                            });
                        }
                        assert!(log.synced() >= position, "acknowledged before its fsync");
                    }
                });
            }
        });
    }

    /// A connection that found the file locked by another thread — the snapshot thread's
    /// fsync of the retired log locks it briefly — goes on as soon as the lock is released,
    /// without another write of the log to wake it (none comes in a quiet moment: it waited for
    /// the next connection's write, or the 100 ms tick, when that release did not notify).
    #[test]
    fn a_wait_that_found_the_file_locked_ends_when_it_is_released() {
        let (_dir, _core, log) = new_log(FsyncPolicy::Always);
        publish_set(&log, "a");
        log.flush().expect("write");
        let position = Durability::journaled(&*log);
        // Another thread holds the file, as `sync_retired_file` does after its fsync.
        let mut held = Some(log.lock_file());
        wait_held_until(
            &log,
            position,
            (
                "the wait ended while the file was locked",
                "the wait ends once the file is released",
            ),
            || held = None,
        );
        assert!(log.synced() >= position, "acknowledged before its fsync");
    }

    /// The rotation's switch does not fsync the old log on the writers' path: under
    /// `everysec` it stays to be fsynced (by the snapshot thread's `sync_retired`, or the next
    /// fsync of the log); under `always` the first commit on the new log fsyncs it before its
    /// reply may go.
    /// Writes a SET of `key`, makes the log durable and closes it; then loads the tenant's
    /// directory (`repair`: as the server does) into a fresh keyspace.
    fn last_set_then_load(
        log: Arc<TenantLog>,
        key: &str,
        dir: &Path,
        repair: bool,
    ) -> (ferrite_storage::Keyspace, crate::load::TenantLoad) {
        publish_set(&log, key);
        log.flush().expect("write");
        log.sync();
        drop(log);
        let ks = ferrite_storage::Keyspace::new();
        let loaded = crate::load::load_tenant(&dir.join("t"), "t", 1, &mut ks.lock(), repair)
            .expect("loads");
        (ks, loaded)
    }

    /// The log keeps zeros ahead of its records, so that most writes do not change the file's
    /// length (whose fsync commits metadata), within a sixteenth of what it holds (64 KiB
    /// at least); everything loads back, and the server continues after the last record.
    #[test]
    fn a_log_writes_into_preallocated_zeros_and_loads_back() {
        let (dir, _core, log) = new_log(FsyncPolicy::Everysec);
        let path = dir.path().join("t").join(paths::log_file(1));
        let value = vec![b'x'; 10_000];
        let mut lengths = std::collections::BTreeSet::new();
        let writes = 400;
        for i in 0..writes {
            let argv = vec![vec![
                b"SET".to_vec(),
                format!("k{i}").into_bytes(),
                value.clone(),
            ]];
            log.publish(&Effects::new(1, &argv));
            log.flush().expect("write");
            let len = std::fs::metadata(&path).expect("log").len();
            let records = log.file.lock().size;
            assert!(len >= records + FRAME_HEADER as u64, "{len} {records}");
            assert!(
                len - records <= (records / 16).max(PREALLOC_MIN) + 4096,
                "{len} {records}"
            );
            lengths.insert(len);
        }
        assert!(
            lengths.len() < writes / 10,
            "{} lengths in {writes} writes",
            lengths.len()
        );
        let end = {
            let f = File::open(&path).expect("log");
            let len = f.metadata().expect("log").len();
            records_end(&f, &path, len).expect("good")
        };
        assert_eq!(end, log.file.lock().size);
        log.sync();
        drop(log);

        let ks = ferrite_storage::Keyspace::new();
        let loaded = crate::load::load_tenant(&dir.path().join("t"), "t", 1, &mut ks.lock(), true)
            .expect("loads");
        assert_eq!(loaded.keys, writes as u64);
        assert!(loaded.torn.is_none());
        let (file, size) = loaded.last_log.expect("continued");
        assert_eq!(size, end);
        // The server continues it: the next record goes right after the last one.
        let log = TenantLog::new(
            Core::new(FsyncPolicy::Everysec),
            "t",
            1,
            dir.path().join("t"),
            1,
            Some((file, size)),
        );
        let (ks, loaded) = last_set_then_load(log, "after", dir.path(), true);
        assert_eq!(loaded.keys, writes as u64 + 1);
        assert!(ks.lock().contains(b"after", 1));
    }

    /// A generation's file found on disk when it is opened (prepared before and not started,
    /// or reopened after a failure) is continued after its last good record, and a torn
    /// tail in it is cut off first so that no old bytes follow new records.
    #[test]
    fn an_existing_log_is_continued_after_its_last_good_record() {
        let (dir, _core, log) = new_log(FsyncPolicy::Everysec);
        publish_set(&log, "a");
        log.flush().expect("write");
        let path = dir.path().join("t").join(paths::log_file(1));
        let good = log.file.lock().size;
        // Half a record more (a torn write), inside the preallocated zeros.
        let f = OpenOptions::new().write(true).open(&path).expect("log");
        let mut torn = Vec::new();
        torn.extend_from_slice(&100u32.to_le_bytes());
        torn.extend_from_slice(&(!100u32).to_le_bytes());
        torn.extend_from_slice(&[7; 14]);
        f.write_all_at(&torn, good).expect("write");
        drop(f);
        log.file.lock().file = None;
        let reopened = log.open_generation(1).expect("reopen");
        assert_eq!(reopened.size, good);
        assert_eq!(std::fs::metadata(&path).expect("log").len(), good);
        drop(reopened);
        let (ks, loaded) = last_set_then_load(log, "b", dir.path(), false);
        assert!(loaded.torn.is_none());
        assert!(ks.lock().contains(b"a", 1) && ks.lock().contains(b"b", 1));
    }

    #[test]
    fn the_switch_leaves_the_old_logs_fsync_off_the_writers_path() {
        for policy in [FsyncPolicy::Everysec, FsyncPolicy::Always] {
            let (_dir, core, log) = new_log(policy);
            publish_set(&log, "a");
            log.flush().expect("write");
            log.prepare_next().expect("next log");
            log.rotate_locked();
            publish_set(&log, "b");
            let position = Durability::journaled(&*log);
            let fsyncs = core.stats.fsyncs.load(Relaxed);
            match policy {
                FsyncPolicy::Always => {
                    assert_eq!(Durability::commit(&*log, position), Ok(None));
                    assert!(
                        log.file.lock().retired.is_none(),
                        "replied before the old log's fsync"
                    );
                    assert_eq!(core.stats.fsyncs.load(Relaxed), fsyncs + 2);
                }
                _ => {
                    assert_eq!(Durability::commit(&*log, position), Ok(None));
                    assert_eq!(core.stats.fsyncs.load(Relaxed), fsyncs, "{policy:?}");
                    assert!(log.file.lock().retired.is_some());
                    log.sync_retired();
                    assert!(log.file.lock().retired.is_none());
                    assert_eq!(core.stats.fsyncs.load(Relaxed), fsyncs + 1);
                }
            }
        }
    }

    /// A connection whose records another connection is writing does not block its worker
    /// thread on the file lock: its commit returns at once, and its wait ends when that write
    /// is done (here the write covers its records), with `always` only once the records are on
    /// disk.
    #[test]
    fn a_commit_waits_for_a_write_under_way_without_blocking() {
        for policy in [FsyncPolicy::Everysec, FsyncPolicy::Always] {
            let (_dir, core, log) = new_log(policy);
            let fsync_thread = core.spawn_sync_thread().expect("fsync thread");
            publish_set(&log, "a");
            let position = Durability::journaled(&*log);

            // Another connection is in the middle of a write.
            let mut under_way = Some(log.file.lock());
            let (done, committed) = std::sync::mpsc::channel();
            let result = std::thread::scope(|s| {
                s.spawn(|| done.send(Durability::commit(&*log, position)));
                let result = committed.recv_timeout(Duration::from_secs(10));
                if result.is_err() {
                    // Let the blocked commit go, so that the test fails instead of hanging.
                    under_way = None;
                }
                result
            });
            let result = result.expect("the commit returned while another write was under way");
            assert_eq!(result, Ok(Some(position)), "{policy:?}");
            assert!(log.written() < position);

            let early = format!("{policy:?}: the wait ended before the write");
            wait_held_until(
                &log,
                position,
                (&early, "the wait ends once the write is done"),
                || {
                    // The write under way takes the records and ends.
                    let (buf, end) = {
                        let mut p = log.pending.lock();
                        let buf = std::mem::take(&mut p.buf);
                        p.appended += buf.len() as u64;
                        (buf, p.appended)
                    };
                    {
                        let mut fs = under_way.take().expect("still held");
                        log.write_out(&mut fs, &buf, &[], end - buf.len() as u64)
                            .expect("write");
                        log.written.store(end, SeqCst);
                    }
                    log.written_notify.notify_waiters();
                },
            );
            assert!(log.written() >= position);
            if policy == FsyncPolicy::Always {
                assert!(log.synced() >= position, "replied before the fsync");
            }
            core.stop_sync_thread();
            fsync_thread.join().expect("the fsync thread stops");
        }
    }
}
