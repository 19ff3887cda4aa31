//! A keyspace: keys → [`Entry`], with expiry, per-key version and last-modified time, memory and
//! digest accounting, and optional change tracking.
//!
//! Every change to a key goes through one funnel: [`Db::entry`] hands out an [`Occupied`] or
//! [`Vacant`] slot, and when an `Occupied` is dropped (or a `Vacant` filled, or a key removed) the
//! keyspace compares the key's digest and size before and after, and only if something changed
//! updates the digest buckets, memory total, expiry index, version, modified time and the change
//! tracker. Nothing else writes to the table, so these can never drift from the content.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hashlink::LinkedHashMap;

use crate::blocking::Blocking;
use crate::digest::{Digest, bucket_of, name_hash_and_bucket};
use crate::effects::{EffectMark, EffectSink, Journal, OwnedArgv, SinkId};
use crate::table::{Pos, ShardedTable};
use crate::value::{StrValue, Value};

pub use crate::entry::{ENTRY_OVERHEAD, Entry, key_heap_bytes};

/// A point-in-time snapshot being taken without stopping writes (see [`Db::open_snapshot`]).
struct SnapshotState {
    /// The keyspace version the snapshot shows: entries with a version up to this one.
    version: u64,
    /// Entries as they were at `version`, saved by the write funnel just before it changed or
    /// deleted them.
    preimages: Vec<(Box<[u8]>, Entry)>,
    /// Keys whose pre-image was saved, so a key written many times is copied once.
    captured: std::collections::HashSet<Box<[u8]>, ahash::RandomState>,
    /// The table a FLUSH emptied while the snapshot was open: the walk goes on there.
    flushed: Option<ShardedTable<Entry>>,
}

/// What [`Db::close_snapshot`] hands back: the last pre-images, and a table replaced by FLUSH
/// during the snapshot (to be dropped outside the lock).
pub struct SnapshotRest {
    pub preimages: Vec<(Box<[u8]>, Entry)>,
    pub flushed: Option<ShardedTable<Entry>>,
}

/// How many entries ahead of the one it reads [`Db::snapshot_walk`] asks for an entry's cache
/// lines: enough misses in flight to keep the memory busy, few enough that the lines are still
/// in the cache when the walk reaches them.
const WALK_PREFETCH_AHEAD: usize = 16;

/// How long [`Keyspace::lock_when_free`] waits for a moment when the lock is free before it
/// queues: a keyspace busy without a break for this long would otherwise starve the walk.
pub const FREE_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Counters readable without taking the keyspace lock (INFO, quotas, metrics).
#[derive(Default, Debug)]
pub struct KeyspaceStats {
    pub keys: AtomicU64,
    pub used_bytes: AtomicU64,
    pub keys_with_expiry: AtomicU64,
    pub expired_total: AtomicU64,
    /// Keys currently waiting in the change tracker.
    pub dirty_keys: AtomicU64,
    /// Estimated bytes of those keys.
    pub dirty_bytes: AtomicU64,
    /// Unix ms of the oldest undrained change (0 = none).
    pub dirty_oldest_ms: AtomicU64,
    /// Flush epoch of the tracker.
    pub flush_epoch: AtomicU64,
    /// Distinct keys somebody waits for (INFO `total_blocking_keys`), kept by
    /// [`Db::block`] / [`Db::unblock`] under the lock.
    pub blocking_keys: AtomicU64,
    /// Of those, keys with a waiter that must be woken even when the key is deleted (a blocked
    /// XREADGROUP; INFO `total_blocking_keys_on_nokey`).
    pub blocking_keys_on_nokey: AtomicU64,
    /// Woken (one permit kept) when change tracking records a change, so a consumer waits for
    /// changes instead of polling.
    pub changes: tokio::sync::Notify,
}

/// Where change tracking stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackingLag {
    /// Distinct keys changed and not yet drained.
    pub keys: u64,
    /// Estimated bytes of those keys (as of their first change).
    pub bytes: u64,
    /// Unix ms of the oldest undrained change, if any.
    pub oldest_ms: Option<u64>,
    /// Incremented by every flush; consumers must treat older reads as void.
    pub flush_epoch: u64,
}

struct DirtyMark {
    since_ms: u64,
    bytes: usize,
}

/// Records which keys changed since tracking started. Memory is bounded by distinct keys: a key
/// changed a million times is one entry, keeping the time of its oldest undrained change.
#[derive(Default)]
struct Tracker {
    dirty: LinkedHashMap<Box<[u8]>, DirtyMark>,
    bytes: usize,
    flush_epoch: u64,
    /// Keys whose changes the consumer ships as their effects rather than whole (a migration's
    /// delta log): they count as changed keys but weigh nothing here, the consumer counts its
    /// own log. Forgotten at a flush (the keys are gone) and when tracking stops.
    by_effects: HashSet<Box<[u8]>>,
}

/// The data of a keyspace, accessed under its lock.
pub struct Db {
    table: ShardedTable<Entry>,
    /// (expire_at, key) for keys with a TTL, soonest first: the active expiry cycle pops from here.
    expires: BTreeSet<(u64, Box<[u8]>)>,
    digest: Digest,
    used: usize,
    next_version: u64,
    /// The write version of the last removal of a key (delete, expiry, flush): a WATCH that
    /// could not read a key's state (a busy script held the lock) learns from it whether the
    /// key may have been removed since (see [`Db::removed_since`]).
    last_removal: u64,
    /// Changes made by writes (not by expiry): a command whose run moved it wrote something.
    writes: u64,
    tracker: Option<Tracker>,
    journal: Journal,
    snapshot: Option<Box<SnapshotState>>,
    /// Clients waiting for keys (see [`crate::blocking`]).
    blocking: Blocking,
    stats: Arc<KeyspaceStats>,
    /// Function libraries and the scripting engine (see [`crate::scripting`]).
    scripting: crate::scripting::Scripting,
    /// Keyspace notifications (see [`crate::notify`]): the setting, shared with the
    /// [`Keyspace`], and the keys the running command changed while it is on.
    pub(crate) key_events: Arc<crate::notify::KeyEvents>,
    pub(crate) key_changes: Vec<(Box<[u8]>, crate::notify::KeyChange)>,
}

/// A keyspace: the data behind one lock, plus lock-free counters.
///
/// One lock per keyspace (not per key shard) keeps multi-key commands and MULTI/EXEC atomic the
/// simple way, like Redis's single thread; separate tenants have separate keyspaces and so run in
/// parallel.
///
/// The lock can be waited for without blocking a thread ([`Keyspace::lock_async`]): a connection
/// waiting for a busy tenant leaves its worker thread to other tenants. Its guard can be owned
/// ([`Keyspace::lock_owned`]) and so moved to a thread of the blocking pool that runs a long
/// command. [`Keyspace::lock`] blocks the calling thread and is for code that is not async
/// (tests, the blocking pool, short background steps).
///
/// A release does not hand the lock to the next waiter: it frees it and wakes that waiter, and
/// whoever runs first takes it; a waiter that has waited more than half a millisecond is served
/// in turn (`async_lock::Mutex`, eventually fair like parking_lot's locks). Why not first come,
/// first served: a lock handed over in arrival order goes to a task that is woken but not
/// running, so every connection that becomes ready meanwhile finds it taken and queues too, and
/// under load the queue never drains (a lock convoy). With tokio's fair `Mutex`, one snapshot
/// step was enough to start one that lasted as long as the load: a BGREWRITEAOF of 1M keys took
/// 2.4–4.4 s instead of 0.2 s under 50 pipelining writers, whose throughput fell by up to a
/// third (docs/benchmarks.md, "The keyspace lock no longer hands over").
pub struct Keyspace {
    db: Arc<async_lock::Mutex<Db>>,
    /// Lock operations waiting for the lock (after a failed try), so that
    /// [`Keyspace::lock_when_free`] never goes ahead of them.
    waiting: AtomicU64,
    stats: Arc<KeyspaceStats>,
    key_events: Arc<crate::notify::KeyEvents>,
}

/// The keyspace's data, locked.
pub type DbGuard<'a> = async_lock::MutexGuard<'a, Db>;

/// The keyspace's data, locked, by a guard that owns a reference to the lock (it can move to
/// another thread).
pub type OwnedDbGuard = async_lock::MutexGuardArc<Db>;

/// Counts one lock operation in [`Keyspace`]'s `waiting` while it exists (a waiting future
/// that is dropped, a cancelled command, stops counting too).
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Keyspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Keyspace {
    /// Change-tracking lag without taking the lock (as of the last change).
    pub fn tracking_lag_relaxed(&self) -> TrackingLag {
        let s = &self.stats;
        let oldest = s.dirty_oldest_ms.load(Ordering::Relaxed);
        TrackingLag {
            keys: s.dirty_keys.load(Ordering::Relaxed),
            bytes: s.dirty_bytes.load(Ordering::Relaxed),
            oldest_ms: (oldest != 0).then_some(oldest),
            flush_epoch: s.flush_epoch.load(Ordering::Relaxed),
        }
    }

    pub fn new() -> Self {
        let stats = Arc::new(KeyspaceStats::default());
        let key_events = Arc::new(crate::notify::KeyEvents::default());
        Keyspace {
            waiting: AtomicU64::new(0),
            db: Arc::new(async_lock::Mutex::new(Db {
                table: ShardedTable::new(),
                expires: BTreeSet::new(),
                digest: Digest::default(),
                used: 0,
                next_version: 1,
                last_removal: 0,
                writes: 0,
                tracker: None,
                journal: Journal::default(),
                snapshot: None,
                blocking: Blocking::default(),
                stats: stats.clone(),
                scripting: Default::default(),
                key_events: key_events.clone(),
                key_changes: Vec::new(),
            })),
            stats,
            key_events,
        }
    }

    /// Keyspace notifications: set without the lock (CONFIG SET notify-keyspace-events).
    pub fn key_events(&self) -> &Arc<crate::notify::KeyEvents> {
        &self.key_events
    }

    /// Locks the keyspace, blocking the calling thread until it is this caller's turn. For
    /// threads that are not the runtime's async workers: tests, the blocking pool, the
    /// persistence and snapshot threads. Async code waits with [`Keyspace::lock_async`] or
    /// [`Keyspace::lock_owned`], which leave the thread to other tasks, or moves its work to the
    /// blocking pool.
    ///
    /// Why async code must not block here: the holder may be a connection's task (or one that
    /// waits in turn, see [`Keyspace`]) that can only run once its worker thread is free.
    /// On the multi-thread scheduler this call gives the worker's other tasks to another thread
    /// while it waits (`block_in_place`), a safety net that costs a thread hand-over; the
    /// current-thread scheduler (one worker, [`mark_async_worker`]) has no other thread, and
    /// blocking its only thread behind a task of that thread never ends. So a contended call
    /// on such a worker is a bug: debug builds panic, release builds log it before waiting.
    pub fn lock(&self) -> DbGuard<'_> {
        if let Some(g) = self.db.try_lock() {
            return g;
        }
        if ASYNC_WORKER.get() {
            debug_assert!(
                false,
                "Keyspace::lock waited on the current-thread runtime's worker"
            );
            tracing::error!(
                "a keyspace lock was waited for on the only async worker thread: this can hang the server"
            );
        }
        let _waiting = Waiting::enter(&self.waiting);
        let wait = || self.db.lock_blocking();
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }

    /// Runs `f` under the lock for a caller that must not wait (a `Drop`, a hook called from
    /// an async task): now if the lock is free, else from a task that waits for it without
    /// holding a thread (on the caller's runtime), else, outside any runtime, by waiting here.
    /// For clean-ups whose moment does not matter (leaving queues, ending a subscription).
    pub fn lock_later(self: &Arc<Self>, f: impl FnOnce(&mut Db) + Send + 'static) {
        if let Some(mut db) = self.try_lock() {
            return f(&mut db);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let ks = self.clone();
                rt.spawn(async move { f(&mut *ks.lock_async().await) });
            }
            Err(_) => f(&mut self.lock()),
        }
    }

    /// Locks the keyspace for a background thread (a snapshot's walk) without ever going ahead
    /// of connections: it takes the lock only when it is free and nobody waits for it, offering
    /// the core in between, and waits like [`Keyspace::lock`] only after [`FREE_WAIT_LIMIT`].
    ///
    /// Why: a connection that waits for the lock is delayed by every step the walk takes
    /// first, and one that waited long enough is served in turn, which may leave the lock
    /// idle until the scheduler runs it (the write p99 during a snapshot, docs/benchmarks.md).
    pub fn lock_when_free(&self) -> DbGuard<'_> {
        let started = std::time::Instant::now();
        loop {
            if self.waiting.load(Ordering::Relaxed) == 0
                && let Some(g) = self.try_lock()
            {
                return g;
            }
            if started.elapsed() >= FREE_WAIT_LIMIT {
                return self.lock();
            }
            std::thread::yield_now();
        }
    }

    /// Waits for the lock without blocking the thread.
    pub async fn lock_async(&self) -> DbGuard<'_> {
        if let Some(g) = self.db.try_lock() {
            return g;
        }
        let _waiting = Waiting::enter(&self.waiting);
        self.db.lock().await
    }

    /// Takes the lock if it is free and no waiter is being served in turn.
    #[inline]
    pub fn try_lock(&self) -> Option<DbGuard<'_>> {
        self.db.try_lock()
    }

    /// Takes the lock like [`Keyspace::try_lock`], returning a guard that can be moved to
    /// another thread (see [`Keyspace::lock_owned`]).
    #[inline]
    pub fn try_lock_owned(&self) -> Option<OwnedDbGuard> {
        self.db.try_lock_arc()
    }

    /// Waits for the lock like [`Keyspace::lock_async`], returning a guard that can be moved to
    /// another thread (a long command runs on the blocking pool with it).
    pub async fn lock_owned(&self) -> OwnedDbGuard {
        if let Some(g) = self.db.try_lock_arc() {
            return g;
        }
        let _waiting = Waiting::enter(&self.waiting);
        self.db.lock_arc().await
    }

    pub fn stats(&self) -> &KeyspaceStats {
        &self.stats
    }

    pub fn len(&self) -> u64 {
        self.stats.keys.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn used_bytes(&self) -> u64 {
        self.stats.used_bytes.load(Ordering::Relaxed)
    }

    /// Notified whenever change tracking records a change (see [`KeyspaceStats::changes`]).
    pub fn changes(&self) -> &tokio::sync::Notify {
        &self.stats.changes
    }
}

/// Snapshot of a key's accounting before a change.
#[derive(Clone, Copy)]
struct Before {
    kd: u64,
    size: usize,
    expire: u64,
}

/// A key that exists; changes are accounted when this is dropped.
pub struct Occupied<'a> {
    db: &'a mut Db,
    idx: Pos,
    /// Element hash of the key's name (see [`name_hash_and_bucket`]).
    name_hash: u64,
    bucket: usize,
    before: Before,
    now: u64,
    preserve_modified: bool,
    finished: bool,
    /// The value was replaced whole: SET of the same value still counts as a write for WATCH,
    /// as in Redis. Other in-place changes that leave the content identical (LREM or SREM that
    /// match nothing, a command failing with WRONGTYPE after taking mutable access) do not.
    replaced: bool,
    /// The element sum the digest before the write hashed a compact collection's elements for
    /// (one that leaves its sum out): the first mutable access opens the entry with it.
    open_sum: Option<u64>,
    /// Offers the key to its blocked clients when dropped (see [`Occupied::unseen_by_waiters`]).
    wakes_waiters: bool,
}

/// A key that does not exist (or has expired).
pub struct Vacant<'a> {
    db: &'a mut Db,
    key: &'a [u8],
    now: u64,
}

/// Result of [`Db::entry`].
pub enum Slot<'a> {
    Occupied(Occupied<'a>),
    Vacant(Vacant<'a>),
}

impl<'a> Slot<'a> {
    /// The existing entry, if any.
    pub fn occupied(self) -> Option<Occupied<'a>> {
        match self {
            Slot::Occupied(o) => Some(o),
            Slot::Vacant(_) => None,
        }
    }
}

impl Occupied<'_> {
    pub fn get(&self) -> &Entry {
        self.db.table.value_at(self.idx)
    }

    pub fn get_mut(&mut self) -> &mut Entry {
        self.db.save_preimage(self.idx);
        let e = self.db.table.value_at_mut(self.idx);
        if let Some(sum) = self.open_sum.take() {
            e.open_with_sum(sum);
        }
        e
    }

    pub fn key(&self) -> &[u8] {
        self.db.table.key_at(self.idx)
    }

    /// Replaces value and expiry together (SET semantics).
    pub fn replace(&mut self, value: Value, expire_at: Option<u64>) {
        self.replaced = true;
        // The old value is not changed but replaced: no need to open it.
        self.open_sum = None;
        self.get_mut().replace(value, expire_at);
    }

    /// SET's write of a string and its expiry over this key's value, the cheapest way the old
    /// value allows: a compact entry is replaced whole ([`Occupied::replace`]: in place when the
    /// lengths are equal); a string of an open entry (longer than the compact form takes) as
    /// long as `data` is overwritten where it lies, with no allocation to make and none to free
    /// (a 16 KiB SET at -P1 spent about 0.5 µs of the server's time per request in glibc's
    /// malloc and free of the two buffers); anything else is swapped out and returned, to be
    /// freed off the lock. Counts as a write for WATCH even when nothing changes, as in Redis.
    pub fn set_str(&mut self, data: &[u8], expire_at: Option<u64>) -> Option<Value> {
        let e = self.db.table.value_at(self.idx);
        if e.is_compact() {
            self.replace(Value::Str(StrValue::from_slice(data)), expire_at);
            return None;
        }
        self.replaced = true;
        let e = self.get_mut();
        let v = e.value_mut();
        let overwritten = matches!(v, Value::Str(s) if s.len() == data.len());
        let old = match v {
            Value::Str(s) if overwritten => {
                s.overwrite(data);
                None
            }
            v => Some(std::mem::replace(v, Value::Str(StrValue::from_slice(data)))),
        };
        e.set_expire_at(expire_at);
        old
    }

    /// Replaces the value, keeping the expiry, and returns the old one (so that a large value
    /// can be freed off the lock). Counts as a write for WATCH even when the value is the same.
    pub fn swap_value(&mut self, value: Value) -> Value {
        self.replaced = true;
        std::mem::replace(self.get_mut().value_mut(), value)
    }

    /// Counts this access as a write for WATCH and keyspace notifications even when the
    /// content ends up identical: Redis signals the key modified on every INCRBY, even by 0.
    pub fn count_as_write(&mut self) {
        self.replaced = true;
    }

    /// This access changes only what no blocked client reads (a stream consumer's seen time,
    /// which the digest leaves out too): unless the content changes after all, the key is not
    /// offered to its blocked clients, who would only look again and go back to waiting.
    pub fn unseen_by_waiters(&mut self) {
        self.wakes_waiters = false;
    }

    /// Keeps the entry's modified time across this change (restoring a migrated key).
    pub fn preserve_modified(&mut self) {
        self.preserve_modified = true;
    }

    /// Sets the modified time explicitly (restoring a migrated key).
    pub fn set_modified(&mut self, ms: u64) {
        self.get_mut().set_modified(ms);
        self.preserve_modified = true;
    }

    /// Deletes the key and returns its entry.
    pub fn remove(mut self) -> Entry {
        self.finished = true;
        self.db.save_preimage(self.idx);
        let entry = self.db.table.remove_at(self.idx);
        self.db
            .account_removed(entry.key(), self.bucket, self.before, self.now);
        entry
    }
}

impl Drop for Occupied<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let db = &mut *self.db;
        // The entry is looked up once: the accounting below reaches the other fields of `db`
        // beside it (each lookup through the sharded table costs a bounds check or two and
        // the key's decoding; there were ten of them on every write).
        let e = db.table.value_at_mut(self.idx);
        if e.value().is_empty_collection() {
            let entry = db.table.remove_at(self.idx);
            db.account_removed(entry.key(), self.bucket, self.before, self.now);
            return;
        }
        // The digest before settling: an open entry's collection keeps its digest sum, which a
        // compact one of a few elements leaves out (and would recompute). Neither depends on
        // the form, nor does the size.
        let (kd, size) = e.digest_and_size(self.name_hash, e.key());
        let same = kd == self.before.kd && size == self.before.size;
        if db.blocking.any() && (self.wakes_waiters || !same || self.replaced) {
            db.blocking.signal(e.key());
        }
        // A writer may have opened a compact entry (`Entry::value_mut`): put it back.
        e.settle();
        if same {
            if self.replaced {
                let version = db.next_version;
                db.next_version += 1;
                db.writes += 1;
                e.set_version(version);
                if db.key_events.active() {
                    let key: Box<[u8]> = e.key().into();
                    db.note_change(&key, crate::notify::KeyChange::Modified);
                }
            }
            return;
        }
        let expire = e.expire_raw();
        db.digest.replace(self.bucket, self.before.kd, kd);
        db.used = db.used + size - self.before.size;
        if expire != self.before.expire {
            let key: Box<[u8]> = e.key().into();
            if self.before.expire != 0 {
                db.expires.remove(&(self.before.expire, key.clone()));
            }
            if expire != 0 {
                db.expires.insert((expire, key));
            }
        }
        let version = db.next_version;
        db.next_version += 1;
        db.writes += 1;
        e.set_version(version);
        if !self.preserve_modified {
            e.set_modified(self.now);
        }
        if let Some(t) = db.tracker.as_mut() {
            t.mark(e.key(), size, self.now);
        }
        if db.key_events.active() {
            let key: Box<[u8]> = e.key().into();
            db.note_change(&key, crate::notify::KeyChange::Modified);
        }
        db.publish_stats();
    }
}

impl<'a> Vacant<'a> {
    pub fn key(&self) -> &[u8] {
        self.key
    }

    /// Creates the key. An empty collection is not stored (Redis never holds one).
    pub fn insert(self, value: Value, expire_at: Option<u64>) {
        let now = self.now;
        self.insert_with_modified(value, expire_at, now);
    }

    /// Creates the key with an explicit modified time (restoring a migrated key).
    pub fn insert_with_modified(self, value: Value, expire_at: Option<u64>, modified: u64) {
        if value.is_empty_collection() {
            return;
        }
        let db = self.db;
        let version = db.next_version;
        db.next_version += 1;
        db.writes += 1;
        let expire = expire_at.map_or(0, |t| t.max(1));
        let entry = Entry::new(self.key, value, expire, modified, version);
        let (name_hash, bucket) = name_hash_and_bucket(self.key);
        let (kd, size) = entry.digest_and_size(name_hash, self.key);
        db.table.insert_new(entry);
        db.digest.add(bucket, kd);
        db.used += size;
        if expire != 0 {
            db.expires.insert((expire, self.key.into()));
        }
        if let Some(t) = db.tracker.as_mut() {
            t.mark(self.key, size, self.now);
        }
        if db.blocking.any() {
            db.blocking.signal(self.key);
        }
        db.note_change(self.key, crate::notify::KeyChange::Created);
        db.publish_stats();
    }
}

impl Tracker {
    fn mark(&mut self, key: &[u8], bytes: usize, now: u64) {
        if self.dirty.contains_key(key) {
            return;
        }
        let bytes = if !self.by_effects.is_empty() && self.by_effects.contains(key) {
            0
        } else {
            bytes
        };
        self.bytes += bytes;
        self.dirty.insert(
            key.into(),
            DirtyMark {
                since_ms: now,
                bytes,
            },
        );
    }
}

impl Db {
    /// Publishes the counters after a change, and wakes the change consumer if tracking.
    fn publish_stats(&self) {
        self.publish_counters();
        if self.tracker.is_some() {
            self.stats.changes.notify_one();
        }
    }

    fn publish_counters(&self) {
        let s = &self.stats;
        s.keys.store(self.table.len() as u64, Ordering::Relaxed);
        s.used_bytes.store(self.used as u64, Ordering::Relaxed);
        s.keys_with_expiry
            .store(self.expires.len() as u64, Ordering::Relaxed);
        let lag = self.tracking_lag().unwrap_or_default();
        s.dirty_keys.store(lag.keys, Ordering::Relaxed);
        s.dirty_bytes.store(lag.bytes, Ordering::Relaxed);
        s.dirty_oldest_ms
            .store(lag.oldest_ms.unwrap_or(0), Ordering::Relaxed);
        s.flush_epoch.store(lag.flush_epoch, Ordering::Relaxed);
    }

    fn account_removed(&mut self, key: &[u8], bucket: usize, before: Before, now: u64) {
        self.writes += 1;
        if self.blocking.any() {
            self.blocking.signal(key);
        }
        self.note_change(key, crate::notify::KeyChange::Deleted);
        self.account_gone(key, bucket, before, now);
    }

    /// Accounting of a key that left the table (deleted or expired).
    fn account_gone(&mut self, key: &[u8], bucket: usize, before: Before, now: u64) {
        self.digest.remove(bucket, before.kd);
        self.used -= before.size;
        if before.expire != 0 {
            self.expires.remove(&(before.expire, key.into()));
        }
        self.last_removal = self.next_version;
        self.next_version += 1;
        if let Some(t) = self.tracker.as_mut() {
            t.mark(key, before.size, now);
        }
        self.publish_stats();
    }

    /// While a snapshot is open, copies the entry at `idx` before the funnel changes it, if the
    /// snapshot must show it as it is (see [`Db::open_snapshot`]).
    #[inline]
    fn save_preimage(&mut self, idx: Pos) {
        let Some(snap) = self.snapshot.as_deref_mut() else {
            return;
        };
        let e = self.table.value_at(idx);
        if e.version() > snap.version {
            return;
        }
        let key = self.table.key_at(idx);
        if snap.captured.contains(key) {
            return;
        }
        snap.captured.insert(key.into());
        snap.preimages.push((key.into(), e.clone_deep()));
    }

    /// Removes an expired key found at `idx`.
    fn expire_at_index(&mut self, idx: Pos, now: u64) {
        self.save_preimage(idx);
        let key = self.table.key_at(idx);
        let e = self.table.value_at(idx);
        let (name_hash, bucket) = name_hash_and_bucket(key);
        let (kd, size) = e.digest_and_size(name_hash, key);
        let before = Before {
            kd,
            size,
            expire: e.expire_raw(),
        };
        let entry = self.table.remove_at(idx);
        let key = entry.key();
        self.account_gone(key, bucket, before, now);
        self.stats.expired_total.fetch_add(1, Ordering::Relaxed);
        if self.journal.active() {
            self.journal.record_expiry(key, now);
        }
        if self.key_events.active() {
            self.key_events
                .emit(crate::notify::class::EXPIRED, "expired", key);
        }
    }

    /// Looks a key up, deleting it first if it has expired.
    fn find_live(&mut self, key: &[u8], now: u64) -> Option<Pos> {
        let idx = self.table.find(key)?;
        if self.table.value_at(idx).is_expired(now) {
            self.expire_at_index(idx, now);
            return None;
        }
        Some(idx)
    }

    /// Reads a key (expired keys are deleted and reported absent).
    pub fn get(&mut self, key: &[u8], now: u64) -> Option<&Entry> {
        let idx = self.find_live(key, now)?;
        Some(self.table.value_at(idx))
    }

    pub fn contains(&mut self, key: &[u8], now: u64) -> bool {
        self.find_live(key, now).is_some()
    }

    /// The write funnel: the key's slot, for reading and changing it.
    pub fn entry<'a>(&'a mut self, key: &'a [u8], now: u64) -> Slot<'a> {
        let idx = self.find_live(key, now);
        self.slot(idx, key, now)
    }

    /// The write funnel without lazy expiry: restoring migrated keys mirrors the source's
    /// physical content, expired-but-unreclaimed keys included.
    pub fn entry_physical<'a>(&'a mut self, key: &'a [u8], now: u64) -> Slot<'a> {
        let idx = self.table.find(key);
        self.slot(idx, key, now)
    }

    fn slot<'a>(&'a mut self, idx: Option<Pos>, key: &'a [u8], now: u64) -> Slot<'a> {
        match idx {
            Some(idx) => {
                let e = self.table.value_at(idx);
                let (name_hash, bucket) = name_hash_and_bucket(key);
                let (kd, size, open_sum) = e.digest_size_and_sum(name_hash, key);
                let before = Before {
                    kd,
                    size,
                    expire: e.expire_raw(),
                };
                Slot::Occupied(Occupied {
                    db: self,
                    idx,
                    name_hash,
                    bucket,
                    before,
                    now,
                    preserve_modified: false,
                    finished: false,
                    replaced: false,
                    open_sum,
                    wakes_waiters: true,
                })
            }
            None => Slot::Vacant(Vacant { db: self, key, now }),
        }
    }

    /// Deletes a key; returns its entry if it existed (and had not expired).
    pub fn remove(&mut self, key: &[u8], now: u64) -> Option<Entry> {
        self.entry(key, now).occupied().map(Occupied::remove)
    }

    /// Creates or replaces a key.
    pub fn set(&mut self, key: &[u8], value: Value, expire_at: Option<u64>, now: u64) {
        match self.entry(key, now) {
            Slot::Occupied(mut o) => o.replace(value, expire_at),
            Slot::Vacant(v) => v.insert(value, expire_at),
        }
    }

    /// Number of keys held (including expired keys not yet reclaimed, as Redis's DBSIZE).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Makes room for `additional` more keys (a bulk load that knows how many are coming).
    pub fn reserve(&mut self, additional: usize) {
        self.table.reserve(additional);
    }

    /// Brings into the cache where each of `keys` would be (see
    /// [`crate::table::ShardedTable::warm`]): a bulk loader calls it for a batch of keys before
    /// inserting them, a connection for the keys of a pipelined batch before running it, so
    /// that the batch's cache misses overlap.
    pub fn warm<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) {
        self.table.warm(keys);
    }

    pub fn used_bytes(&self) -> usize {
        self.used
    }

    pub fn keys_with_expiry(&self) -> usize {
        self.expires.len()
    }

    /// Largest write version handed out so far.
    pub fn current_version(&self) -> u64 {
        self.next_version - 1
    }

    /// Whether any key was removed (deleted, expired, flushed) after write version `version`.
    pub fn removed_since(&self, version: u64) -> bool {
        self.last_removal > version
    }

    /// One step of a cursor walk over live keys; see [`Table::scan`] for the guarantee.
    pub fn scan(
        &self,
        cursor: u64,
        count: usize,
        now: u64,
        mut f: impl FnMut(&[u8], &Entry),
    ) -> u64 {
        self.table.scan(cursor, count, |k, e| {
            if !e.is_expired(now) {
                f(k, e)
            }
        })
    }

    /// Like [`Db::scan`] but also shows expired-but-unreclaimed keys (physical content, for
    /// migration snapshots that must mirror the source exactly).
    pub fn scan_physical(&self, cursor: u64, count: usize, f: impl FnMut(&[u8], &Entry)) -> u64 {
        self.table.scan(cursor, count, f)
    }

    /// Physical lookup without expiring (migration reads).
    pub fn peek(&self, key: &[u8]) -> Option<&Entry> {
        self.table.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Entry)> {
        self.table.iter()
    }

    /// A random live key.
    pub fn random_key(&mut self, now: u64, rng: &mut impl rand::Rng) -> Option<Box<[u8]>> {
        for _ in 0..100 {
            let idx = self.table.random_index(rng)?;
            if self.table.value_at(idx).is_expired(now) {
                self.expire_at_index(idx, now);
                continue;
            }
            return Some(self.table.key_at(idx).into());
        }
        None
    }

    /// Empties the keyspace and returns the old table so the caller can free it outside the lock.
    /// While a snapshot is open the old table goes to the snapshot instead (its walk continues
    /// there) and an empty one is returned.
    pub fn flush(&mut self) -> ShardedTable<Entry> {
        let old = self.table.take();
        let old = match self.snapshot.as_deref_mut() {
            Some(snap) if snap.flushed.is_none() => {
                snap.flushed = Some(old);
                ShardedTable::new()
            }
            // A second FLUSH only drops keys written after the snapshot's version.
            _ => old,
        };
        self.expires.clear();
        if self.blocking.any() {
            self.blocking.signal_all();
        }
        // FLUSHALL keeps function libraries (FUNCTION FLUSH removes them), as in Redis.
        self.digest = Digest {
            libraries: self.digest.libraries,
            ..Digest::default()
        };
        self.used = 0;
        self.last_removal = self.next_version;
        self.next_version += 1;
        self.writes += 1;
        if let Some(t) = self.tracker.as_mut() {
            t.dirty.clear();
            t.bytes = 0;
            t.flush_epoch += 1;
            t.by_effects.clear();
        }
        self.publish_stats();
        old
    }

    /// Replaces every key and function library with `fresh`'s, as one change (a restore from a
    /// backup): whoever holds the lock next sees the new contents whole. `fresh` is left empty;
    /// the old table is returned, to be dropped outside the lock.
    ///
    /// Like [`Db::flush`] followed by the loads, but in one step: an open point-in-time copy
    /// keeps the old table (the copy still shows the keyspace at its version); the new entries
    /// get one version newer than anything handed out before, so a `WATCH` taken before the
    /// replace fails its `EXEC` and no copy opened before counts them; subscribers get no
    /// effects (there is no command to replay: whoever journals this keyspace must save the new
    /// contents themselves, in the same critical section — persistence does, see
    /// `ferrite_persistence::Persistence::replace_data`); clients blocked on keys the new contents
    /// hold are served.
    pub fn replace_contents(&mut self, fresh: &mut Db, now: u64) -> ShardedTable<Entry> {
        let old = self.flush();
        let version = self.next_version;
        self.next_version += 1;
        let mut table = fresh.table.take();
        for e in table.values_mut() {
            e.set_version(version);
        }
        self.table = table;
        self.expires = std::mem::take(&mut fresh.expires);
        self.used = std::mem::take(&mut fresh.used);
        let libraries = fresh.scripting.libraries().clone();
        fresh.set_libraries(Default::default());
        self.scripting.set_libraries(libraries);
        // The digest of the contents moved in, libraries included.
        self.digest = std::mem::take(&mut fresh.digest);
        self.digest.libraries = self.scripting.digest();
        fresh.publish_stats();
        if self.blocking.any() {
            let waited: Vec<Box<[u8]>> = self
                .blocking
                .waited_keys()
                .filter(|k| self.table.get(k).is_some())
                .cloned()
                .collect();
            for k in waited {
                self.blocking.signal(&k);
            }
        }
        self.publish_stats();
        if !self.journal.in_atomic() {
            self.serve_blocked(now);
        }
        old
    }

    /// Deletes up to `max` keys whose time has come; returns how many.
    pub fn expire_cycle(&mut self, now: u64, max: usize) -> usize {
        // One publication for the round rather than one per key.
        self.journal.begin_atomic();
        let mut n = 0;
        while n < max {
            let Some((at, key)) = self.expires.first() else {
                break;
            };
            if *at > now {
                break;
            }
            let key = key.clone();
            match self.table.find(&key) {
                Some(idx) => self.expire_at_index(idx, now),
                None => {
                    // Cannot happen (the funnel keeps the index exact); heal rather than spin.
                    self.expires.pop_first();
                }
            }
            n += 1;
        }
        self.journal.end_atomic(now);
        n
    }

    /// The digest of the whole keyspace (maintained incrementally).
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Recomputes the digest from the content, O(keys). Equal to [`Db::digest`] unless the
    /// incremental accounting is broken; exposed so that operators and tests can check exactly that.
    pub fn recompute_digest(&self) -> Digest {
        let mut d = Digest::default();
        for (k, e) in self.table.iter() {
            d.add(bucket_of(k), e.key_digest(k));
        }
        d.libraries = self.scripting.digest();
        d
    }

    // -- point-in-time snapshots ---------------------------------------------------------------

    /// Opens a snapshot of the keyspace as it is now, without copying it and without stopping
    /// writes: returns its version V (None if one is open already). Walk it with
    /// [`Db::snapshot_walk`], which shows the entries whose version is at most V; until
    /// [`Db::close_snapshot`], the write funnel saves the pre-image of any such entry before
    /// changing or deleting it ([`Db::take_preimages`]), and a FLUSH hands its old table to the
    /// walk. Walk ∪ pre-images is exactly the keyspace at V (an entry may appear twice, with the
    /// same content). Open it in the same critical section as anything that must line up with V
    /// (the log rotation of a compaction).
    pub fn open_snapshot(&mut self) -> Option<u64> {
        if self.snapshot.is_some() {
            return None;
        }
        let version = self.current_version();
        self.snapshot = Some(Box::new(SnapshotState {
            version,
            preimages: Vec::new(),
            captured: Default::default(),
            flushed: None,
        }));
        Some(version)
    }

    pub fn snapshot_open(&self) -> bool {
        self.snapshot.is_some()
    }

    /// One step of the snapshot's walk (physical content: expired-but-unreclaimed keys too, with
    /// their expiry); returns the next cursor, 0 when done. Does nothing without a snapshot.
    pub fn snapshot_walk(
        &self,
        cursor: u64,
        count: usize,
        mut f: impl FnMut(&[u8], &Entry),
    ) -> u64 {
        let Some(snap) = self.snapshot.as_deref() else {
            return 0;
        };
        let v = snap.version;
        let table = snap.flushed.as_ref().unwrap_or(&self.table);
        // The step's entries are gathered first (reading only the table's buckets), then read
        // with each one's cache lines asked for WALK_PREFETCH_AHEAD entries ahead: every entry
        // is its own allocation, a cache miss, and the walk holds the tenant's lock while it
        // waits for them; overlapped, the misses cost a fraction of their sum.
        let mut step: Vec<&Entry> = Vec::with_capacity(count.saturating_add(16).min(4096));
        let next = table.scan_values(cursor, count, |e| step.push(e));
        for e in step.iter().take(WALK_PREFETCH_AHEAD) {
            e.prefetch();
        }
        for (i, e) in step.iter().enumerate() {
            if let Some(ahead) = step.get(i + WALK_PREFETCH_AHEAD) {
                ahead.prefetch();
            }
            if e.version() <= v {
                f(e.key(), e)
            }
        }
        next
    }

    /// Takes the pre-images saved since the last call.
    pub fn take_preimages(&mut self) -> Vec<(Box<[u8]>, Entry)> {
        match self.snapshot.as_deref_mut() {
            Some(s) => std::mem::take(&mut s.preimages),
            None => Vec::new(),
        }
    }

    /// Ends the snapshot; returns the pre-images not taken yet and the table a FLUSH handed over.
    pub fn close_snapshot(&mut self) -> SnapshotRest {
        match self.snapshot.take() {
            Some(s) => SnapshotRest {
                preimages: s.preimages,
                flushed: s.flushed,
            },
            None => SnapshotRest {
                preimages: Vec::new(),
                flushed: None,
            },
        }
    }

    // -- write effects -----------------------------------------------------------------------

    /// Subscribes to this keyspace's write effects (see [`crate::effects`]).
    pub fn subscribe(&mut self, sink: Arc<dyn EffectSink>) -> SinkId {
        self.journal.subscribe(sink)
    }

    /// Ends a subscription; returns whether it existed.
    pub fn unsubscribe(&mut self, id: SinkId) -> bool {
        self.journal.unsubscribe(id)
    }

    /// Someone listens to effects: commands that rewrite their effects need only build them then.
    #[inline]
    pub fn wants_effects(&self) -> bool {
        self.journal.active()
    }

    /// Changes made by writes so far (expiries excluded): a command that moved it wrote.
    #[inline]
    pub fn write_count(&self) -> u64 {
        self.writes
    }

    /// Starts a command: its effects are collected until [`Db::effects_end`].
    #[inline]
    pub fn effects_begin(&mut self) -> EffectMark {
        self.journal.begin(self.writes)
    }

    /// Ends a command started with [`Db::effects_begin`] and publishes its effects: what it
    /// recorded with [`Db::propagate`], else `request` if it changed anything; expiries it caused
    /// come first, in the order they happened.
    #[inline]
    pub fn effects_end(&mut self, mark: EffectMark, now: u64, request: &[&[u8]]) {
        self.journal.end(mark, self.writes, now, request);
        // After the command's own effects, the clients it made ready (not inside a
        // transaction: after it, see `end_atomic`).
        if !self.journal.in_atomic() {
            self.serve_blocked(now);
        }
    }

    /// Drops what the running command recorded so far (its rewrites with [`Db::propagate`], the
    /// expiries it caused), so that [`Db::effects_end`] publishes its request: for a command
    /// that runs other commands as a whole (a migration batch replaying effects), whose request
    /// alone reproduces all of it.
    pub fn discard_propagated(&mut self) {
        self.journal.discard_pending();
    }

    /// Records an effect of the running command in place of its request: a command whose outcome
    /// depends on the clock, randomness or float formatting describes what it did as
    /// deterministic commands (one call per command, in order). Ignored without subscribers.
    pub fn propagate(&mut self, argv: OwnedArgv) {
        if self.journal.active() {
            self.journal.propagate(argv);
        }
    }

    /// Function libraries (tenant data) and the scripting engine.
    pub fn scripting(&self) -> &crate::scripting::Scripting {
        &self.scripting
    }

    /// The scripting part, to take and give back the engine. Libraries change only through
    /// [`Db::set_libraries`], [`Db::put_library`] and [`Db::remove_library`] (they keep the
    /// digest).
    pub fn scripting_mut(&mut self) -> &mut crate::scripting::Scripting {
        &mut self.scripting
    }

    /// Replaces every function library (name → code).
    pub fn set_libraries(&mut self, libraries: std::collections::BTreeMap<String, Vec<u8>>) {
        self.scripting.set_libraries(libraries);
        self.digest.libraries = self.scripting.digest();
    }

    /// Adds or replaces the library `code` declares; false if it declares no name.
    pub fn put_library(&mut self, code: &[u8]) -> bool {
        let done = self.scripting.put_library(code);
        self.digest.libraries = self.scripting.digest();
        done
    }

    /// Removes a library; false if there was none of that name.
    pub fn remove_library(&mut self, name: &str) -> bool {
        let done = self.scripting.remove_library(name);
        self.digest.libraries = self.scripting.digest();
        done
    }

    /// Starts a transaction: the effects of its commands are published together by
    /// [`Db::end_atomic`], so subscribers never see half of it.
    pub fn begin_atomic(&mut self) {
        self.journal.begin_atomic();
    }

    /// Ends a transaction started with [`Db::begin_atomic`]; at the outermost level, publishes
    /// its effects and serves the clients waiting for keys it made ready.
    pub fn end_atomic(&mut self, now: u64) {
        self.journal.end_atomic(now);
        if !self.journal.in_atomic() {
            self.serve_blocked(now);
        }
    }

    /// A transaction (or script) is running: blocked clients are served when it ends.
    #[inline]
    pub fn in_atomic(&self) -> bool {
        self.journal.in_atomic()
    }

    pub(crate) fn blocking(&self) -> &Blocking {
        &self.blocking
    }

    pub(crate) fn blocking_mut(&mut self) -> &mut Blocking {
        &mut self.blocking
    }

    /// The waiters and the counters INFO reads without the lock.
    pub(crate) fn blocking_and_stats(&mut self) -> (&mut Blocking, &KeyspaceStats) {
        (&mut self.blocking, &self.stats)
    }

    // -- change tracking ---------------------------------------------------------------------

    /// Starts recording changed keys (a no-op if already tracking).
    pub fn start_tracking(&mut self) {
        if self.tracker.is_none() {
            self.tracker = Some(Tracker::default());
        }
        self.publish_stats();
    }

    /// Stops recording and forgets undrained changes.
    pub fn stop_tracking(&mut self) {
        self.tracker = None;
        self.publish_stats();
    }

    pub fn is_tracking(&self) -> bool {
        self.tracker.is_some()
    }

    pub fn tracking_lag(&self) -> Option<TrackingLag> {
        let t = self.tracker.as_ref()?;
        Some(TrackingLag {
            keys: t.dirty.len() as u64,
            bytes: t.bytes as u64,
            oldest_ms: t.dirty.front().map(|(_, m)| m.since_ms),
            flush_epoch: t.flush_epoch,
        })
    }

    /// Takes up to `max` changed keys, oldest first, showing each with its current physical entry
    /// (`None` when it was deleted). Returns how many were taken. Reading happens under the same
    /// lock as the removal from the tracker, so a later change re-marks the key.
    pub fn drain_changes(&mut self, max: usize, mut f: impl FnMut(&[u8], Option<&Entry>)) -> usize {
        let Some(t) = self.tracker.as_mut() else {
            return 0;
        };
        let mut n = 0;
        while n < max {
            let Some((key, mark)) = t.dirty.pop_front() else {
                break;
            };
            t.bytes -= mark.bytes;
            f(&key, self.table.get(&key));
            n += 1;
        }
        self.publish_counters();
        n
    }

    /// Says whether changes of `key` are shipped as their effects: a changed key then weighs
    /// nothing in [`TrackingLag::bytes`] (the consumer counts its effect log instead). A no-op
    /// when not tracking; forgotten at a flush and when tracking stops.
    pub fn count_changes_by_effects(&mut self, key: &[u8], on: bool) {
        let Some(t) = self.tracker.as_mut() else {
            return;
        };
        if on {
            t.by_effects.insert(key.into());
        } else {
            t.by_effects.remove(key);
        }
    }

    /// Since when `key` has been marked changed (its oldest change not drained or unmarked), if
    /// it is.
    pub fn changed_since(&self, key: &[u8]) -> Option<u64> {
        self.tracker
            .as_ref()
            .and_then(|t| t.dirty.get(key).map(|m| m.since_ms))
    }

    /// Forgets that `key` changed (its consumer just read it whole, in the same lock hold).
    pub fn unmark_changed(&mut self, key: &[u8]) {
        if let Some(t) = self.tracker.as_mut()
            && let Some(m) = t.dirty.remove(key)
        {
            t.bytes -= m.bytes;
        }
        self.publish_counters();
    }

    /// Marks a key changed without changing it (so a consumer re-reads it).
    pub fn mark_changed(&mut self, key: &[u8], now: u64) {
        let size = self.table.get(key).map_or(0, |e| e.size(key));
        if let Some(t) = self.tracker.as_mut() {
            t.mark(key, size, now);
        }
        self.publish_stats();
    }
}

thread_local! {
    /// This thread is the only worker of a current-thread runtime (see [`mark_async_worker`]).
    static ASYNC_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as the only worker of a current-thread runtime (the thread that
/// runs its `block_on`), so [`Keyspace::lock`] can tell a wait that may never end from a wait
/// of the blocking pool or of a background thread.
pub fn mark_async_worker() {
    ASYNC_WORKER.set(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::HashValue;

    /// A current-thread runtime: every task on one thread, as on the one-worker server.
    fn one_worker_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// The snapshot's walk never takes the lock ahead of a connection waiting for it, even one
    /// that came after the walk started waiting (a queued walk would), and still gets it once
    /// the keyspace has a free moment.
    #[test]
    fn lock_later_runs_at_once_when_free_and_after_the_holder_without_blocking() {
        use std::sync::atomic::AtomicUsize;
        let ks = Arc::new(Keyspace::new());
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        ks.lock_later(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(ran.load(Ordering::SeqCst), 1, "free: ran at once");
        // One thread: the holder is a task of the same thread, as on the one-worker runtime.
        // A blocking wait here would never end; `lock_later` must leave it to a task.
        let rt = one_worker_runtime();
        rt.block_on(async {
            let held = ks.lock_async().await;
            let (r, k) = (ran.clone(), ks.clone());
            let waiter = tokio::spawn(async move {
                let _g = k.lock_async().await;
                r.fetch_add(10, Ordering::SeqCst);
            });
            tokio::task::yield_now().await;
            let r = ran.clone();
            ks.lock_later(move |_| {
                r.fetch_add(100, Ordering::SeqCst);
            });
            assert_eq!(
                ran.load(Ordering::SeqCst),
                1,
                "busy: not run yet, and not blocked"
            );
            drop(held);
            waiter.await.unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while ran.load(Ordering::SeqCst) != 111 && std::time::Instant::now() < deadline {
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(
            ran.load(Ordering::SeqCst),
            111,
            "ran after the queued waiter"
        );
    }

    /// A release frees the lock rather than handing it to the first waiter: a connection that
    /// runs before the woken waiter takes it at once. Handed over in arrival order, the lock
    /// would be taken by the waiter that is not running yet, and the connection would have to
    /// queue too (the convoy in `Keyspace`'s comment).
    #[test]
    fn a_release_frees_the_lock_for_whoever_runs_first() {
        let ks = Arc::new(Keyspace::new());
        let rt = one_worker_runtime();
        rt.block_on(async {
            let held = ks.lock_async().await;
            let k = ks.clone();
            let waiter = tokio::spawn(async move {
                let _g = k.lock_async().await;
            });
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished(), "the waiter waits for the holder");
            drop(held);
            // The waiter is woken, but this task still runs.
            assert!(
                ks.try_lock().is_some(),
                "the lock is free for the task that runs first"
            );
            waiter.await.unwrap();
        });
    }

    #[test]
    fn lock_when_free_never_goes_ahead_of_a_queued_waiter() {
        use std::sync::Mutex as StdMutex;
        use std::time::Duration;
        let ks = std::sync::Arc::new(Keyspace::new());
        let order = std::sync::Arc::new(StdMutex::new(Vec::new()));
        let held = ks.lock();
        let walk = {
            let (ks, order) = (ks.clone(), order.clone());
            std::thread::spawn(move || {
                let _g = ks.lock_when_free();
                order.lock().unwrap().push("walk");
            })
        };
        std::thread::sleep(Duration::from_millis(5));
        let queued = {
            let (ks, order) = (ks.clone(), order.clone());
            std::thread::spawn(move || {
                let _g = ks.lock();
                order.lock().unwrap().push("queued");
                std::thread::sleep(Duration::from_millis(5));
            })
        };
        // Time for the waiter to queue, within FREE_WAIT_LIMIT (the walk is still only trying).
        std::thread::sleep(Duration::from_millis(35));
        drop(held);
        queued.join().unwrap();
        walk.join().unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["queued", "walk"]);
    }

    fn hash_of(pairs: &[(&str, &str)]) -> Value {
        let mut h = HashValue::default();
        for (f, v) in pairs {
            h.insert(f.as_bytes(), v.as_bytes());
        }
        Value::Hash(h)
    }

    #[test]
    fn accounting_follows_changes() {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        db.set(b"a", Value::string("1"), None, 10);
        db.set(b"b", hash_of(&[("f", "v")]), Some(1000), 10);
        assert_eq!(ks.len(), 2);
        assert_eq!(db.keys_with_expiry(), 1);
        assert_eq!(*db.digest(), db.recompute_digest());
        if let Slot::Occupied(mut o) = db.entry(b"b", 20)
            && let Value::Hash(h) = o.get_mut().value_mut()
        {
            h.insert(b"g", b"w");
        }
        assert_eq!(*db.digest(), db.recompute_digest());
        assert_eq!(db.get(b"b", 20).unwrap().modified_ms(), 20);
        // Emptying a collection deletes the key.
        if let Slot::Occupied(mut o) = db.entry(b"b", 30)
            && let Value::Hash(h) = o.get_mut().value_mut()
        {
            h.remove(b"f");
            h.remove(b"g");
        }
        assert!(db.get(b"b", 30).is_none());
        assert_eq!(db.keys_with_expiry(), 0);
        assert_eq!(*db.digest(), db.recompute_digest());
        let used_one = db.used_bytes();
        db.remove(b"a", 40);
        assert!(used_one > 0);
        assert_eq!(db.used_bytes(), 0);
        assert_eq!(db.digest().combined(), Digest::default().combined());
    }

    /// Writers open compact entries (`Entry::value_mut`); the funnel settles them back, and the
    /// memory total is always the sum of the entries' estimates, whatever form each is in.
    #[test]
    fn writes_leave_small_keys_compact_and_memory_exact() {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        let total = |db: &Db| -> usize { db.iter().map(|(k, e)| e.size(k)).sum() };
        db.set(b"s", Value::string("abc"), None, 1);
        db.set(b"h", hash_of(&[("f", "v")]), Some(1000), 1);
        db.set(b"long", Value::string(vec![b'x'; 5000]), None, 1);
        let mut z = crate::value::ZSetValue::default();
        z.insert(b"m0", 1.0);
        db.set(b"z", Value::ZSet(z), None, 1);
        db.set(b"h5", hash_of(&[("x", "y")]), None, 1);
        for (i, now) in (2..40u64).enumerate() {
            // A small sorted set (integer and fractional scores, up to 12 members: with and
            // without its digest sum in the compact form) written, re-expired and replaced
            // through the funnel, which opens it with the sum the digest before computed.
            if let Slot::Occupied(mut o) = db.entry(b"z", now)
                && let Value::ZSet(z) = o.get_mut().value_mut()
            {
                z.insert(
                    format!("m{}", i % 12).as_bytes(),
                    i as f64 * 3.0 - 20.5 + (i % 2) as f64 / 2.0,
                );
                if i % 3 == 0 {
                    z.remove(format!("m{}", (i + 5) % 12).as_bytes());
                }
            }
            if i % 7 == 0
                && let Slot::Occupied(mut o) = db.entry(b"z", now)
            {
                o.get_mut().set_expire_at(Some(20_000 + now));
            }
            if i % 4 == 0
                && let Slot::Occupied(mut o) = db.entry(b"h5", now)
            {
                let fields: Vec<(String, String)> =
                    (0..=i).map(|j| (format!("f{j}"), format!("{j}"))).collect();
                let fields: Vec<(&str, &str)> = fields
                    .iter()
                    .map(|(f, v)| (f.as_str(), v.as_str()))
                    .collect();
                o.replace(hash_of(&fields), None);
            }
            if let Slot::Occupied(mut o) = db.entry(b"h", now)
                && let Value::Hash(h) = o.get_mut().value_mut()
            {
                h.insert(format!("f{i}").as_bytes(), b"value");
            }
            if let Slot::Occupied(mut o) = db.entry(b"s", now) {
                if let Value::Str(s) = o.get_mut().value_mut() {
                    s.append(b"+");
                }
                if i % 5 == 0 {
                    o.get_mut().set_expire_at(Some(10_000 + now));
                }
            }
            db.set(b"s2", Value::string(format!("{i:03}")), None, now);
            assert_eq!(db.used_bytes(), total(&db), "after write {i}");
            assert_eq!(*db.digest(), db.recompute_digest());
        }
        for k in [&b"s"[..], b"h", b"s2", b"z", b"h5"] {
            assert!(db.peek(k).unwrap().is_compact(), "{k:?}");
        }
        assert!(!db.peek(b"long").unwrap().is_compact());
        assert_eq!(db.get(b"s", 50).unwrap().value().digest(), {
            Value::string(format!("abc{}", "+".repeat(38))).digest()
        });
        assert_eq!(db.get(b"h", 50).unwrap().value().elements(), 39);
        assert!(db.get(b"h", 50).unwrap().expire_at().is_some());
    }

    #[test]
    fn expiry_is_lazy_and_active() {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        db.set(b"x", Value::string("1"), Some(100), 0);
        db.set(b"y", Value::string("1"), Some(200), 0);
        db.set(b"z", Value::string("1"), None, 0);
        assert!(db.get(b"x", 99).is_some());
        assert!(db.get(b"x", 100).is_none());
        assert_eq!(db.len(), 2);
        assert_eq!(db.expire_cycle(150, 10), 0);
        assert_eq!(db.expire_cycle(250, 10), 1);
        assert_eq!(db.len(), 1);
        assert_eq!(ks.stats().expired_total.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn unchanged_writes_keep_content_metadata_but_count_for_watch() {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        db.start_tracking();
        db.set(b"k", Value::string("v"), None, 1);
        db.drain_changes(10, |_, _| {});
        let v1 = db.get(b"k", 1).unwrap().version();
        db.set(b"k", Value::string("v"), None, 5);
        let e = db.get(b"k", 5).unwrap();
        assert!(e.version() > v1, "a write is a write for WATCH");
        assert_eq!(e.modified_ms(), 1, "content did not change");
        assert_eq!(db.tracking_lag().unwrap().keys, 0, "nothing to ship");
        // Reading through the funnel, even with mutable access, changes nothing.
        let v2 = db.get(b"k", 5).unwrap().version();
        drop(db.entry(b"k", 6));
        assert_eq!(db.get(b"k", 6).unwrap().version(), v2);
        if let Slot::Occupied(mut o) = db.entry(b"k", 6) {
            let _ = o.get_mut();
        }
        assert_eq!(
            db.get(b"k", 6).unwrap().version(),
            v2,
            "no-op in-place write"
        );
    }

    #[test]
    fn keys_changed_by_effects_weigh_nothing_and_a_whole_read_clears_their_mark() {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        db.start_tracking();
        db.set(b"big", Value::string("x".repeat(1000)), None, 10);
        assert!(db.tracking_lag().unwrap().bytes >= 1000);
        // Read whole (a migration's copy): its mark goes.
        db.unmark_changed(b"big");
        assert_eq!(db.tracking_lag().unwrap().keys, 0);
        assert_eq!(db.tracking_lag().unwrap().bytes, 0);
        db.count_changes_by_effects(b"big", true);
        db.set(b"big", Value::string("y".repeat(1000)), None, 11);
        let lag = db.tracking_lag().unwrap();
        assert_eq!(
            (lag.keys, lag.bytes),
            (1, 0),
            "its effects are counted elsewhere"
        );
        db.drain_changes(10, |_, _| {});
        db.count_changes_by_effects(b"big", false);
        db.set(b"big", Value::string("z".repeat(1000)), None, 12);
        assert!(db.tracking_lag().unwrap().bytes >= 1000);
        db.drain_changes(10, |_, _| {});
        // A flush forgets them.
        db.count_changes_by_effects(b"big", true);
        db.flush();
        db.set(b"big", Value::string("w".repeat(1000)), None, 13);
        assert!(db.tracking_lag().unwrap().bytes >= 1000);
    }

    #[test]
    fn tracking_records_distinct_keys_oldest_first() {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        db.set(b"before", Value::string("1"), None, 1);
        db.start_tracking();
        db.set(b"a", Value::string("1"), None, 10);
        db.set(b"b", Value::string("1"), None, 11);
        db.set(b"a", Value::string("2"), None, 12);
        db.remove(b"before", 13);
        let lag = db.tracking_lag().unwrap();
        assert_eq!((lag.keys, lag.oldest_ms), (3, Some(10)));
        let mut seen = Vec::new();
        db.drain_changes(10, |k, e| {
            seen.push((
                String::from_utf8_lossy(k).into_owned(),
                e.map(|e| e.value().digest()),
            ))
        });
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].0, "a");
        assert_eq!(seen[2], ("before".to_string(), None));
        assert_eq!(db.tracking_lag().unwrap().keys, 0);
        db.flush();
        assert_eq!(db.tracking_lag().unwrap().flush_epoch, 1);
    }

    #[test]
    fn effects_reach_subscribers_in_order_and_stop_after_unsubscribe() {
        use crate::effects::EffectRecorder;
        let ks = Keyspace::new();
        let mut db = ks.lock();
        let rec = Arc::new(EffectRecorder::default());
        let id = db.subscribe(rec.clone());
        assert!(db.wants_effects());
        // A command that writes is published as its request.
        let mark = db.effects_begin();
        db.set(b"k", Value::string("v"), Some(100), 10);
        db.effects_end(mark, 10, &[b"SET", b"k", b"v"]);
        // A read that changes nothing publishes nothing.
        let mark = db.effects_begin();
        let _ = db.get(b"k", 20);
        db.effects_end(mark, 20, &[b"GET", b"k"]);
        // An expiry outside any command is published at once, as DEL.
        assert!(db.get(b"k", 200).is_none());
        let got = rec.take();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].1,
            vec![vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]]
        );
        assert_eq!(
            (got[1].0, got[1].1.clone()),
            (200, vec![vec![b"DEL".to_vec(), b"k".to_vec()]])
        );
        assert!(db.unsubscribe(id));
        assert!(!db.wants_effects());
        db.set(b"x", Value::string("1"), Some(5), 0);
        assert!(db.get(b"x", 10).is_none());
        assert!(rec.take().is_empty());
    }

    /// The content as (key → canonical value and expiry), for comparing snapshots.
    fn content_of<'a>(
        entries: impl Iterator<Item = (&'a [u8], &'a Entry)>,
    ) -> std::collections::BTreeMap<Vec<u8>, (u64, u64)> {
        entries
            .map(|(k, e)| (k.to_vec(), (e.key_digest(k), e.expire_raw())))
            .collect()
    }

    /// SET's write ([`Occupied::set_str`]) over each kind of old value: a compact string (same
    /// length and not), an open one of the same length (overwritten in place: no old value
    /// comes back), of another length, and another type. Each leaves the digest and the memory
    /// total exact, gives the key a new version (WATCH) and sets the expiry asked for.
    #[test]
    fn set_str_writes_in_place_where_it_can_and_keeps_the_funnel_exact() {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        // A hash past the packed form's 128 fields: an open entry.
        let fields: Vec<String> = (0..200).map(|i| format!("f{i}")).collect();
        let pairs: Vec<(&str, &str)> = fields.iter().map(|f| (f.as_str(), "v")).collect();
        db.set(b"h", hash_of(&pairs), None, 1);
        assert!(!db.get(b"h", 1).expect("h exists").is_compact());
        let big = |c: u8| vec![c; 3000];
        // (value, expiry, whether the old value comes back to be freed off the lock)
        let steps: Vec<(Vec<u8>, Option<u64>, bool)> = vec![
            (b"abc".to_vec(), None, false),     // new key
            (b"xyz".to_vec(), Some(50), false), // compact, same length
            (big(b'a'), None, false),           // compact to open: replaced whole
            (big(b'b'), Some(90), false),       // open, same length: in place
            (big(b'b'), None, false),           // the same bytes again: still a write
            (vec![b'c'; 2999], None, true),     // open, another length: swapped out
            (b"short".to_vec(), None, true),    // open to compact
        ];
        let mut version = 0;
        for (i, (data, expire, gives_old)) in steps.iter().enumerate() {
            let old = match db.entry(b"k", 10) {
                Slot::Occupied(mut o) => o.set_str(data, *expire),
                Slot::Vacant(v) => {
                    v.insert(Value::Str(StrValue::from_slice(data)), *expire);
                    None
                }
            };
            assert_eq!(old.is_some(), *gives_old, "step {i}");
            let e = db.get(b"k", 10).expect("k exists");
            assert_eq!(
                e.value().digest(),
                Value::string(data.clone()).digest(),
                "step {i}"
            );
            assert_eq!(e.expire_at(), *expire, "step {i}");
            assert!(e.version() > version, "step {i}: WATCH sees the write");
            version = e.version();
            assert_eq!(e.is_compact(), data.len() <= 1024, "step {i}");
            assert_eq!(db.digest(), &db.recompute_digest(), "step {i}");
            let total: usize = db.iter().map(|(k, e)| e.size(k)).sum();
            assert_eq!(db.used_bytes(), total, "step {i}");
        }
        // Over another type in an open entry the old value is handed back whole.
        let old = match db.entry(b"h", 10) {
            Slot::Occupied(mut o) => o.set_str(&big(b'd'), None),
            Slot::Vacant(_) => panic!("h exists"),
        };
        assert!(matches!(old, Some(Value::Hash(_))));
        assert_eq!(db.digest(), &db.recompute_digest());
    }

    #[derive(Debug, Clone)]
    enum SnapOp {
        Set(u8, u8),
        /// SET's write of a string of 2000 bytes (`true`: an open entry, overwritten in place
        /// by the next one) or of one byte, through [`Occupied::set_str`].
        SetStr(u8, u8, bool),
        Del(u8),
        HashAdd(u8, u8),
        Expire(u8, u64),
        Flush,
        Walk(usize),
        Advance(u64),
    }

    fn snap_op() -> impl proptest::strategy::Strategy<Value = SnapOp> {
        use proptest::prelude::*;
        prop_oneof![
            8 => (0..200u8, any::<u8>()).prop_map(|(k, v)| SnapOp::Set(k, v)),
            4 => (0..200u8, any::<u8>(), any::<bool>()).prop_map(|(k, v, l)| SnapOp::SetStr(k, v, l)),
            3 => (0..200u8).prop_map(SnapOp::Del),
            3 => (0..200u8, any::<u8>()).prop_map(|(k, v)| SnapOp::HashAdd(k, v)),
            2 => (0..200u8, 1..50u64).prop_map(|(k, t)| SnapOp::Expire(k, t)),
            1 => Just(SnapOp::Flush),
            6 => (1..40usize).prop_map(SnapOp::Walk),
            2 => (1..30u64).prop_map(SnapOp::Advance),
        ]
    }

    proptest::proptest! {
        /// Walk plus pre-images is exactly the keyspace at the version the snapshot was opened,
        /// whatever writes, deletes, expiries and flushes run between the walk's steps.
        #[test]
        fn snapshot_shows_the_keyspace_at_its_version(
            setup in proptest::collection::vec(snap_op(), 0..300),
            during in proptest::collection::vec(snap_op(), 0..300),
        ) {
            let ks = Keyspace::new();
            let mut db = ks.lock();
            let mut now = 1000u64;
            let apply = |db: &mut Db, op: &SnapOp, now: &mut u64| match op {
                SnapOp::Set(k, v) => db.set(&[*k], Value::string(vec![*v]), None, *now),
                SnapOp::SetStr(k, v, long) => {
                    let data = vec![*v; if *long { 2000 } else { 1 }];
                    match db.entry(&[*k], *now) {
                        Slot::Occupied(mut o) => drop(o.set_str(&data, None)),
                        Slot::Vacant(slot) => slot.insert(Value::string(data), None),
                    }
                }
                SnapOp::Del(k) => {
                    db.remove(&[*k], *now);
                }
                SnapOp::HashAdd(k, v) => match db.entry(&[*k], *now) {
                    Slot::Occupied(mut o) => {
                        if let Value::Hash(h) = o.get_mut().value_mut() {
                            h.insert(&[*v], b"x");
                        }
                    }
                    Slot::Vacant(slot) => slot.insert(hash_of(&[("f", "v")]), None),
                },
                SnapOp::Expire(k, t) => {
                    if let Slot::Occupied(mut o) = db.entry(&[*k], *now) {
                        o.get_mut().set_expire_at(Some(*now + t));
                    }
                }
                SnapOp::Flush => drop(db.flush()),
                SnapOp::Advance(ms) => {
                    *now += ms;
                    db.expire_cycle(*now, 5);
                }
                SnapOp::Walk(_) => {}
            };
            for op in &setup {
                apply(&mut db, op, &mut now);
            }
            let expected = content_of(db.iter());
            proptest::prop_assert!(db.open_snapshot().is_some());
            proptest::prop_assert!(db.open_snapshot().is_none(), "one snapshot at a time");
            let mut seen: std::collections::BTreeMap<Vec<u8>, (u64, u64)> = Default::default();
            let mut cursor = 0u64;
            let mut started = false;
            let record = |seen: &mut std::collections::BTreeMap<Vec<u8>, (u64, u64)>, k: &[u8], e: &Entry| {
                let v = (e.key_digest(k), e.expire_raw());
                if let Some(old) = seen.insert(k.to_vec(), v) {
                    assert_eq!(old, v, "duplicates must be equal");
                }
            };
            for op in &during {
                if let SnapOp::Walk(n) = op
                    && (!started || cursor != 0) {
                        started = true;
                        cursor = db.snapshot_walk(cursor, *n, |k, e| record(&mut seen, k, e));
                    }
                apply(&mut db, op, &mut now);
                for (k, e) in db.take_preimages() {
                    record(&mut seen, &k, &e);
                }
            }
            while !started || cursor != 0 {
                started = true;
                cursor = db.snapshot_walk(cursor, 16, |k, e| record(&mut seen, k, e));
            }
            let rest = db.close_snapshot();
            for (k, e) in rest.preimages {
                record(&mut seen, &k, &e);
            }
            proptest::prop_assert_eq!(seen, expected);
            proptest::prop_assert!(!db.snapshot_open());
        }
    }
}
