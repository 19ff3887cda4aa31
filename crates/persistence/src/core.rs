//! State every log shares: the fsync policy, the failure state that refuses writes, counters, and
//! the fsync thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::log::TenantLog;

/// When written data is forced to disk (Redis's `appendfsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before a write is acknowledged; writers waiting together share one fsync.
    Always,
    /// Once a second.
    Everysec,
    /// When the operating system decides.
    No,
}

impl FsyncPolicy {
    pub fn parse(s: &str) -> Option<FsyncPolicy> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Some(FsyncPolicy::Always),
            "everysec" => Some(FsyncPolicy::Everysec),
            "no" => Some(FsyncPolicy::No),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Everysec => "everysec",
            FsyncPolicy::No => "no",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            FsyncPolicy::Always => 0,
            FsyncPolicy::Everysec => 1,
            FsyncPolicy::No => 2,
        }
    }

    fn from_u8(v: u8) -> FsyncPolicy {
        match v {
            0 => FsyncPolicy::Always,
            2 => FsyncPolicy::No,
            _ => FsyncPolicy::Everysec,
        }
    }
}

/// Counters for INFO and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Effects published since the last snapshot of everything (Redis's
    /// `rdb_changes_since_last_save`).
    pub changes: AtomicU64,
    pub writes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_nanos: AtomicU64,
    /// Longest fsync since start, in nanoseconds.
    pub fsync_max_nanos: AtomicU64,
    pub write_errors: AtomicU64,
}

impl Stats {
    pub fn record_write(&self, bytes: usize, _took: Duration) {
        self.writes.fetch_add(1, Relaxed);
        self.write_bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub fn record_fsync(&self, took: Duration) {
        let n = took.as_nanos() as u64;
        self.fsyncs.fetch_add(1, Relaxed);
        self.fsync_nanos.fetch_add(n, Relaxed);
        self.fsync_max_nanos.fetch_max(n, Relaxed);
    }
}

/// What the fsync thread waits on.
struct SyncQueue {
    stop: bool,
}

/// Shared by every log of a data directory.
pub struct Core {
    policy: AtomicU8,
    /// Broken logs: tenant → why. While any is broken, writes are refused.
    failing: Mutex<BTreeMap<String, String>>,
    failing_count: AtomicUsize,
    last_error: Mutex<String>,
    pub stats: Stats,
    queue: Mutex<SyncQueue>,
    wake: Condvar,
    /// Times the fsync thread woke from its wait (for the tests: it must not poll).
    wakeups: AtomicU64,
    logs: Mutex<Vec<Weak<TenantLog>>>,
    /// A test hook: every fsync of a log first sleeps this long (`FERRITE_TEST_FSYNC_DELAY_MS`,
    /// read once at startup; unset in production), so that integration tests can act while a
    /// group commit is in flight (tests/persistence/readers.rs).
    pub test_fsync_delay: Option<Duration>,
}

impl Core {
    pub fn new(policy: FsyncPolicy) -> Arc<Core> {
        Arc::new(Core {
            policy: AtomicU8::new(policy.to_u8()),
            failing: Mutex::new(BTreeMap::new()),
            failing_count: AtomicUsize::new(0),
            last_error: Mutex::new(String::new()),
            stats: Stats::default(),
            queue: Mutex::new(SyncQueue { stop: false }),
            wake: Condvar::new(),
            wakeups: AtomicU64::new(0),
            logs: Mutex::new(Vec::new()),
            test_fsync_delay: std::env::var("FERRITE_TEST_FSYNC_DELAY_MS")
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map(Duration::from_millis),
        })
    }

    pub fn policy(&self) -> FsyncPolicy {
        FsyncPolicy::from_u8(self.policy.load(Relaxed))
    }

    pub fn set_policy(&self, p: FsyncPolicy) {
        {
            // Under the queue's lock, so that the fsync thread, which reads the policy under it
            // before sleeping without a timeout, cannot miss the change.
            let _queue = lock(&self.queue);
            self.policy.store(p.to_u8(), Relaxed);
        }
        self.wake.notify_all();
    }

    /// No log is broken: writes may run.
    #[inline]
    pub fn writable(&self) -> bool {
        self.failing_count.load(Relaxed) == 0
    }

    /// Text of the error refused writes get (after `MISCONF `), as Redis words it.
    pub fn error_text(&self) -> String {
        let why = lock(&self.last_error).clone();
        format!("Errors writing to the AOF file: {why}")
    }

    pub fn last_error(&self) -> Option<String> {
        let e = lock(&self.last_error).clone();
        (!e.is_empty()).then_some(e)
    }

    /// The tenants whose logs are broken, with why.
    pub fn failing(&self) -> Vec<(String, String)> {
        lock(&self.failing)
            .iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect()
    }

    pub fn failed(&self, tenant: &str, why: &str) {
        self.stats.write_errors.fetch_add(1, Relaxed);
        *lock(&self.last_error) = why.to_string();
        let mut f = lock(&self.failing);
        if f.insert(tenant.to_string(), why.to_string()).is_none() {
            self.failing_count.store(f.len(), Relaxed);
        }
        tracing::error!(
            tenant,
            error = why,
            "persistence: log write failed; refusing writes until a snapshot of the tenant succeeds"
        );
    }

    /// A write failure outside any tenant's log (the catalog): counted, not blocking.
    pub fn note_error(&self, why: &str) {
        self.stats.write_errors.fetch_add(1, Relaxed);
        *lock(&self.last_error) = why.to_string();
    }

    pub fn recovered(&self, tenant: &str) {
        let mut f = lock(&self.failing);
        if f.remove(tenant).is_some() {
            self.failing_count.store(f.len(), Relaxed);
            tracing::warn!(
                tenant,
                "persistence: the tenant's log works again (new snapshot written)"
            );
        }
        if f.is_empty() {
            lock(&self.last_error).clear();
        }
    }

    /// Forgets a tenant's failure (its log was closed).
    pub fn forget(&self, tenant: &str) {
        let mut f = lock(&self.failing);
        if f.remove(tenant).is_some() {
            self.failing_count.store(f.len(), Relaxed);
        }
        if f.is_empty() {
            lock(&self.last_error).clear();
        }
    }

    pub fn register(&self, log: &Arc<TenantLog>) {
        let mut logs = lock(&self.logs);
        logs.retain(|w| w.strong_count() > 0);
        logs.push(Arc::downgrade(log));
    }

    pub fn logs(&self) -> Vec<Arc<TenantLog>> {
        lock(&self.logs).iter().filter_map(Weak::upgrade).collect()
    }

    /// Starts the fsync thread: with `everysec`, it syncs every log once a second. (Under
    /// `always` the writers that wait for an fsync run it themselves: `TenantLog::sync_here`.)
    pub fn spawn_sync_thread(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let core = self.clone();
        std::thread::Builder::new()
            .name("ferrite-fsync".into())
            .spawn(move || core.sync_loop())
    }

    fn sync_loop(&self) {
        let mut last_periodic = Instant::now();
        loop {
            let stop = {
                let mut q = lock(&self.queue);
                loop {
                    if q.stop {
                        break;
                    }
                    if self.policy() == FsyncPolicy::Everysec
                        && last_periodic.elapsed() >= Duration::from_secs(1)
                    {
                        break;
                    }
                    // Only `everysec` has a deadline. With `always` and `no` the thread sleeps
                    // until the policy changes or the server stops (both notify): a timeout
                    // there used to wake it every millisecond, a futex call and a context
                    // switch each that the workers paid for on a small machine.
                    q = if self.policy() == FsyncPolicy::Everysec {
                        let wait = Duration::from_secs(1).saturating_sub(last_periodic.elapsed());
                        match self
                            .wake
                            .wait_timeout(q, wait.max(Duration::from_millis(1)))
                        {
                            Ok((g, _)) => g,
                            Err(p) => p.into_inner().0,
                        }
                    } else {
                        self.wake.wait(q).unwrap_or_else(|p| p.into_inner())
                    };
                    self.wakeups.fetch_add(1, Relaxed);
                }
                q.stop
            };
            if stop {
                for l in self.logs() {
                    l.sync();
                }
                return;
            }
            last_periodic = Instant::now();
            for l in self.logs() {
                if !l.is_closed() {
                    l.sync();
                }
            }
        }
    }

    /// Stops the fsync thread after a last sync of every log.
    pub fn stop_sync_thread(&self) {
        lock(&self.queue).stop = true;
        self.wake.notify_all();
    }
}

/// Locks a std mutex, ignoring poisoning (the data is counters and lists).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `cond` every 10 ms for at most `limit`.
    fn eventually(limit: Duration, cond: impl Fn() -> bool) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    }

    #[test]
    fn the_fsync_thread_sleeps_without_work_under_always_and_no_and_hears_a_policy_change() {
        for idle_policy in [FsyncPolicy::Always, FsyncPolicy::No] {
            let core = Core::new(idle_policy);
            let thread = core.spawn_sync_thread().expect("spawn the fsync thread");
            // The old timeout (a second minus the time since the last periodic round, at least
            // a millisecond) woke it once after a second and then every millisecond: about 300
            // times here. Sleeping until asked wakes it never.
            std::thread::sleep(Duration::from_millis(1300));
            assert_eq!(core.wakeups.load(Relaxed), 0, "{idle_policy:?}");
            // A switch to everysec must not be missed: the thread takes up its once-a-second
            // round (woken by the change, then by its own deadline).
            core.set_policy(FsyncPolicy::Everysec);
            assert!(
                eventually(Duration::from_secs(10), || core.wakeups.load(Relaxed) >= 2),
                "{idle_policy:?} -> everysec: {} wakeups",
                core.wakeups.load(Relaxed)
            );
            core.stop_sync_thread();
            thread.join().expect("the fsync thread stops");
        }
    }
}
