//! One tenant: its keyspace, credentials, ownership state, quotas, throttle and write gate.

use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::time::Duration;

use ferrite_storage::Keyspace;
use parking_lot::RwLock;

use crate::credential::Credential;
use crate::gate::WriteGate;
use crate::patterns::PatternSplit;
use crate::throttle::{Admission, Throttle};

/// Where a tenant's data is served from, as seen by this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TenantState {
    /// Served here.
    Active = 0,
    /// A migration is writing it here; clients get `-TRYAGAIN` until it is activated.
    Importing = 1,
    /// Served by another server; clients get `-MOVED tenant:<id> <addr>`.
    Moved = 2,
    /// Administratively suspended; commands are refused.
    Suspended = 3,
}

impl TenantState {
    pub fn name(self) -> &'static str {
        match self {
            TenantState::Active => "active",
            TenantState::Importing => "importing",
            TenantState::Moved => "moved",
            TenantState::Suspended => "suspended",
        }
    }

    #[inline]
    fn from_u8(v: u8) -> TenantState {
        match v {
            1 => TenantState::Importing,
            2 => TenantState::Moved,
            3 => TenantState::Suspended,
            _ => TenantState::Active,
        }
    }
}

/// Quotas of a tenant; 0 means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantLimits {
    pub maxmemory: u64,
    pub maxkeys: u64,
    /// Commands per second (the throttle).
    pub ops: u64,
    /// Connections that may be bound to the tenant as its own clients at once (Redis's
    /// `maxclients`, per tenant). Administrators visiting with TENANT.USE are not counted.
    pub maxclients: u64,
}

/// Why a write was refused by a quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaExceeded {
    /// `incoming` is the size of the refused request's arguments.
    Memory {
        used: u64,
        incoming: u64,
        limit: u64,
    },
    Keys {
        keys: u64,
        limit: u64,
    },
}

/// Counters of a tenant, exported as metrics with a `tenant` label.
#[derive(Debug, Default)]
pub struct TenantStats {
    pub commands: AtomicU64,
    pub throttled: AtomicU64,
    pub rejected: AtomicU64,
    /// Connections bound to the tenant as its own clients (see [`Tenant::try_add_client`]).
    pub clients: AtomicU64,
    /// Connections that became the tenant's clients since the server started. A tenant
    /// connection's client id, as the tenant sees it, is this count when it joined, so ids
    /// say nothing about other tenants' connections.
    pub connections_received: AtomicU64,
    /// AUTHs refused because the tenant had `maxclients` clients already.
    pub rejected_connections: AtomicU64,
    /// The tenant's connections' unsent replies and large input buffers, in bytes (counted by
    /// the server's `client_memory`).
    pub client_bytes: AtomicU64,
    /// Commands per second over the last sampling period (see [`Tenant::sample_ops`]).
    pub ops_per_sec: AtomicU64,
    last_sample: parking_lot::Mutex<(u64, Option<std::time::Instant>)>,
    /// Per-command counters of the tenant's own clients, indexed like the server's command
    /// table; allocated when the tenant's clients first run a command (INFO commandstats).
    by_command: std::sync::OnceLock<Box<[CommandCounters]>>,
    /// Error replies to the tenant's own clients by error code (INFO errorstats).
    pub errors: ErrorCounts,
}

/// Error replies counted by their code (`ERR`, `WRONGTYPE`, ...), as Redis's INFO errorstats.
/// At most [`ErrorCounts::MAX_CODES`] distinct codes are kept (a script can make up any code
/// with `redis.error_reply`); replies with further codes are not counted by code.
#[derive(Debug, Default)]
pub struct ErrorCounts {
    by_code: parking_lot::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Every error reply counted, also those past [`ErrorCounts::MAX_CODES`] codes (INFO
    /// `total_error_replies`, Redis's stat_total_error_replies).
    total: AtomicU64,
}

impl ErrorCounts {
    pub const MAX_CODES: usize = 128;

    /// Counts one error reply; `reply` is its text without the leading `-`.
    pub fn count(&self, reply: &[u8]) {
        let end = reply
            .iter()
            .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
            .unwrap_or(reply.len());
        let code = String::from_utf8_lossy(&reply[..end]);
        self.total.fetch_add(1, Relaxed);
        let mut m = self.by_code.lock();
        if let Some(n) = m.get_mut(code.as_ref()) {
            *n += 1;
        } else if m.len() < Self::MAX_CODES {
            m.insert(code.into_owned(), 1);
        }
    }

    /// (code, count) in code order.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.by_code
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Every error reply counted since the last reset.
    pub fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }

    /// CONFIG RESETSTAT.
    pub fn reset(&self) {
        let mut m = self.by_code.lock();
        m.clear();
        self.total.store(0, Relaxed);
    }
}

/// What a tenant's clients did with one command.
#[derive(Debug, Default)]
pub struct CommandCounters {
    pub calls: AtomicU64,
    /// Microseconds spent running it.
    pub usec: AtomicU64,
    /// Runs that answered with an error.
    pub failed: AtomicU64,
    /// Refused before running.
    pub rejected: AtomicU64,
}

impl TenantStats {
    /// The per-command counters (`commands` entries, the size of the command table: the same
    /// for every call in one process), allocated on first use.
    pub fn command_counters(&self, commands: usize) -> &[CommandCounters] {
        self.by_command
            .get_or_init(|| (0..commands).map(|_| CommandCounters::default()).collect())
    }

    /// The per-command counters, if the tenant's clients ran anything yet.
    pub fn command_counters_if_any(&self) -> Option<&[CommandCounters]> {
        self.by_command.get().map(|b| &b[..])
    }

    /// Zeroes the per-command counters and the error counts (CONFIG RESETSTAT).
    pub fn reset_command_counters(&self) {
        self.errors.reset();
        for c in self.command_counters_if_any().unwrap_or_default() {
            c.calls.store(0, Relaxed);
            c.usec.store(0, Relaxed);
            c.failed.store(0, Relaxed);
            c.rejected.store(0, Relaxed);
        }
    }
}

/// Makes a tenant's journaled writes durable before they are acknowledged. Persistence
/// implements it; a connection asks it once per batch of requests that wrote.
pub trait Durability: Send + Sync {
    /// The log position just past everything journaled so far. Writes are journaled under the
    /// keyspace lock while they run, so a connection that asks after its writes ran gets a
    /// position that covers them.
    fn journaled(&self) -> u64;

    /// Under `always`, the position just past everything journaled when that is not yet on
    /// disk: a reply that may reflect those writes (a read of what another connection wrote)
    /// waits for it with [`Durability::wait_synced`] before it goes out, so that no client sees
    /// a write a crash could still lose. `None` under `everysec` and `no` (no such guarantee),
    /// when everything journaled is on disk (the common case: a few atomic loads, no lock), and
    /// while the log is broken or closed (reads keep working; see docs/persistence.md).
    fn unsynced_end(&self) -> Option<u64>;

    /// Whether waiting for the other queued connections before committing has lately paid off
    /// (their commits found their records written by a shared write). A lone writer does not
    /// wait: the wait would cost it a task switch and nothing else.
    fn group_write(&self) -> bool;

    /// Makes sure the log up to `position` (from [`Durability::journaled`]) was handed to the
    /// operating system: by one write of everything pending, unless another connection's write
    /// already covered it (group write). Returns the position to wait for with
    /// [`Durability::wait_synced`] when the fsync policy says replies wait for the disk
    /// (`always`) or when another connection is writing the log right now (it never blocks the
    /// thread for that), else `None`. An error means the writes may not be in the log: they
    /// must not be acknowledged.
    fn commit(&self, position: u64) -> Result<Option<u64>, String>;

    /// Resolves once the log holds everything up to `position` as the fsync policy requires:
    /// written (writing it when the file is free), and with `always` on disk (many callers share
    /// one fsync).
    fn wait_synced(
        &self,
        position: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>>;
}

/// A tenant. Connections hold an `Arc<Tenant>`; its keyspace can be swapped (activation of an
/// import, release of a frozen copy) without the connections noticing more than a state change.
pub struct Tenant {
    id: Arc<str>,
    /// The salted hash of the tenant's password; `None`: nobody can AUTH as the tenant.
    credential: RwLock<Option<Credential>>,
    keyspace: RwLock<Arc<Keyspace>>,
    /// Bumped after every keyspace replacement, so a connection may keep the `Arc<Keyspace>` it
    /// fetched and only fetch it again (an `RwLock` read and two refcount updates on cache lines
    /// every worker touches) when this has changed.
    keyspace_epoch: AtomicU64,
    state: AtomicU8,
    /// The server now serving the tenant, when `Moved`.
    moved_to: RwLock<Option<String>>,
    limits: RwLock<TenantLimits>,
    /// A memory or key quota is set: writes without one skip counting the keys they create.
    has_quota: AtomicBool,
    throttle: Throttle,
    gate: WriteGate,
    /// Unix ms (restored from disk at startup).
    created_at: AtomicU64,
    deleted: AtomicBool,
    /// Set once by persistence when the tenant's writes are journaled to disk.
    durability: std::sync::OnceLock<Arc<dyn Durability>>,
    /// Notified whenever the state changes or the tenant is deleted: connections that wait
    /// without running commands (blocked clients, subscribers) learn of a cutover here.
    state_changed: tokio::sync::Notify,
    /// The tenant's running script (busy state, kill requests).
    scripts: crate::scripts::ScriptActivity,
    /// ACL users created inside the tenant (ACL SETUSER); part of its catalog record.
    acl: crate::acl::AclUsers,
    /// Per-key ownership while an incremental migration moves the tenant pattern by pattern
    /// (`None` otherwise). Replaced whole on every change; read only when `split_active`.
    split: RwLock<Option<Arc<PatternSplit>>>,
    /// Some pattern is not served here plainly: the admission must place each command's keys.
    /// One load on the hot path for every other tenant.
    split_active: AtomicBool,
    /// Notified after every change of the split: writes waiting for a pattern's cutover.
    split_changed: tokio::sync::Notify,
    pub stats: TenantStats,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.id)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Checks a tenant id: 1..=64 characters of `[A-Za-z0-9_.-]`.
pub fn valid_tenant_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl Tenant {
    pub fn new(id: &str, credential: Option<Credential>, limits: TenantLimits) -> Tenant {
        Tenant {
            id: id.into(),
            credential: RwLock::new(credential),
            keyspace: RwLock::new(Arc::new(Keyspace::new())),
            keyspace_epoch: AtomicU64::new(0),
            state: AtomicU8::new(TenantState::Active as u8),
            moved_to: RwLock::new(None),
            throttle: Throttle::new(limits.ops),
            has_quota: AtomicBool::new(limits.maxmemory > 0 || limits.maxkeys > 0),
            limits: RwLock::new(limits),
            gate: WriteGate::default(),
            created_at: AtomicU64::new(ferrite_storage::now_ms()),
            deleted: AtomicBool::new(false),
            durability: std::sync::OnceLock::new(),
            state_changed: tokio::sync::Notify::new(),
            scripts: Default::default(),
            acl: Default::default(),
            split: RwLock::new(None),
            split_active: AtomicBool::new(false),
            split_changed: tokio::sync::Notify::new(),
            stats: TenantStats::default(),
        }
    }

    /// The split of an incremental migration, when some pattern is not served here plainly
    /// (one atomic load otherwise).
    #[inline]
    pub fn active_split(&self) -> Option<Arc<PatternSplit>> {
        // SeqCst, as the write gate's handshake: a write that entered the gate and then read
        // "not split" was counted in flight before a cutover's barrier closed the gate.
        if !self.split_active.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        self.split.read().clone()
    }

    /// The split of an incremental migration, whatever its owners (STATUS).
    pub fn split(&self) -> Option<Arc<PatternSplit>> {
        self.split.read().clone()
    }

    /// Installs (or removes) the split and wakes the commands waiting for it to change.
    pub fn set_split(&self, split: Option<PatternSplit>) {
        let active = split.as_ref().is_some_and(PatternSplit::is_split);
        let mut slot = self.split.write();
        *slot = split.map(Arc::new);
        // Under the write lock: a reader that sees the flag set finds the split it goes with.
        self.split_active
            .store(active, std::sync::atomic::Ordering::SeqCst);
        drop(slot);
        self.split_changed.notify_waiters();
        self.state_changed.notify_waiters();
    }

    /// Notified after every change of the split. Register (`enable()`) before placing keys, so
    /// that no change is missed in between.
    pub fn split_changed(&self) -> &tokio::sync::Notify {
        &self.split_changed
    }

    /// The tenant's running script, as its other connections see it.
    pub fn scripts(&self) -> &crate::scripts::ScriptActivity {
        &self.scripts
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tenant's ACL users (ACL SETUSER inside the tenant).
    pub fn acl(&self) -> &crate::acl::AclUsers {
        &self.acl
    }

    /// What makes this tenant's writes durable, if persistence is on.
    #[inline]
    pub fn durability(&self) -> Option<&Arc<dyn Durability>> {
        self.durability.get()
    }

    /// Attaches persistence (once); returns false if something was attached already.
    pub fn set_durability(&self, d: Arc<dyn Durability>) -> bool {
        self.durability.set(d).is_ok()
    }

    pub fn keyspace(&self) -> Arc<Keyspace> {
        self.keyspace.read().clone()
    }

    /// The bytes of the tenant's data (its keyspace's accounting), without cloning the keyspace.
    pub fn used_bytes(&self) -> u64 {
        self.keyspace.read().used_bytes()
    }

    /// Replaces the keyspace (activation of an import; release of a frozen copy).
    pub fn replace_keyspace(&self, ks: Arc<Keyspace>) -> Arc<Keyspace> {
        let mut slot = self.keyspace.write();
        let old = std::mem::replace(&mut *slot, ks);
        // Under the write lock: whoever sees the new epoch also sees the new keyspace.
        self.keyspace_epoch.fetch_add(1, Release);
        old
    }

    /// Changes whenever the keyspace is replaced (see [`Tenant::replace_keyspace`]). A holder of
    /// an `Arc<Keyspace>` fetched under an epoch equal to the current one holds the current
    /// keyspace.
    #[inline]
    pub fn keyspace_epoch(&self) -> u64 {
        self.keyspace_epoch.load(Acquire)
    }

    #[inline]
    pub fn state(&self) -> TenantState {
        TenantState::from_u8(self.state.load(std::sync::atomic::Ordering::SeqCst))
    }

    pub fn set_state(&self, s: TenantState) {
        self.state
            .store(s as u8, std::sync::atomic::Ordering::SeqCst);
        self.state_changed.notify_waiters();
    }

    /// Notified after every state change (and deletion). Register (`enable()` the
    /// `notified()` future) before checking the state, so no change is missed in between.
    pub fn state_changed(&self) -> &tokio::sync::Notify {
        &self.state_changed
    }

    /// Marks the tenant as served elsewhere.
    pub fn set_moved(&self, addr: &str) {
        *self.moved_to.write() = Some(addr.to_string());
        self.set_state(TenantState::Moved);
    }

    pub fn moved_to(&self) -> Option<String> {
        self.moved_to.read().clone()
    }

    /// Checks a password against the stored credential (constant time).
    pub fn check_password(&self, pw: &[u8]) -> bool {
        match &*self.credential.read() {
            Some(c) => c.verify(pw),
            None => false,
        }
    }

    pub fn has_password(&self) -> bool {
        self.credential.read().is_some()
    }

    /// The credential, for persistence and for carrying the tenant to a migration target.
    pub fn credential(&self) -> Option<Credential> {
        self.credential.read().clone()
    }

    pub fn set_credential(&self, c: Option<Credential>) {
        *self.credential.write() = c;
    }

    pub fn limits(&self) -> TenantLimits {
        *self.limits.read()
    }

    pub fn set_limits(&self, l: TenantLimits) {
        let mut limits = self.limits.write();
        *limits = l;
        self.has_quota
            .store(l.maxmemory > 0 || l.maxkeys > 0, Relaxed);
        drop(limits);
        self.throttle.set_rate(l.ops);
    }

    pub fn set_ops_limit(&self, ops: u64) {
        self.limits.write().ops = ops;
        self.throttle.set_rate(ops);
    }

    /// Takes one of the tenant's client slots: false, and nothing taken, when `maxclients` of
    /// its clients are connected already. One atomic step, so a burst of AUTHs cannot pass
    /// the limit. Give the slot back with [`Tenant::remove_client`].
    pub fn try_add_client(&self) -> bool {
        let max = self.limits().maxclients;
        let taken = self
            .stats
            .clients
            .fetch_update(Relaxed, Relaxed, |n| (max == 0 || n < max).then_some(n + 1))
            .is_ok();
        if !taken {
            self.stats.rejected_connections.fetch_add(1, Relaxed);
        }
        taken
    }

    /// Gives back a slot taken with [`Tenant::try_add_client`].
    pub fn remove_client(&self) {
        self.stats.clients.fetch_sub(1, Relaxed);
    }

    /// A memory or key quota is set (read without a lock, for the per-write check).
    #[inline]
    pub fn has_quota(&self) -> bool {
        self.has_quota.load(Relaxed)
    }

    #[inline]
    pub fn gate(&self) -> &WriteGate {
        &self.gate
    }

    pub fn created_at(&self) -> u64 {
        self.created_at.load(Relaxed)
    }

    /// Sets the creation time of a tenant read back from disk.
    pub fn restore_created_at(&self, ms: u64) {
        self.created_at.store(ms, Relaxed);
    }

    #[inline]
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Relaxed)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Relaxed);
        self.state_changed.notify_waiters();
    }

    /// Asks the throttle for one command.
    #[inline]
    pub fn admit(&self, max_delay: Duration) -> Admission {
        self.admit_n(1, max_delay)
    }

    /// Asks the throttle for `n` operations at once (the commands of a transaction).
    pub fn admit_n(&self, n: u64, max_delay: Duration) -> Admission {
        let a = self.throttle.admit_n(n, max_delay);
        match a {
            Admission::Now => {}
            Admission::After(_) => {
                self.stats.throttled.fetch_add(1, Relaxed);
            }
            Admission::Refused(_) => {
                self.stats.rejected.fetch_add(1, Relaxed);
            }
        }
        a
    }

    /// Checks the memory and key quotas before a write that may grow the tenant by `new_keys`
    /// keys and brings `incoming_bytes` of arguments. Counting the arguments refuses the write
    /// that would cross the limit rather than only the writes after it, so one large SET or
    /// RPUSH cannot overshoot MAXMEMORY by up to a request's size. Reads and deletes never call
    /// this.
    pub fn check_quota(&self, new_keys: u64, incoming_bytes: u64) -> Result<(), QuotaExceeded> {
        if !self.has_quota() {
            return Ok(());
        }
        let l = self.limits();
        if l.maxmemory == 0 && l.maxkeys == 0 {
            return Ok(());
        }
        let ks = self.keyspace.read();
        if l.maxmemory > 0 {
            let used = ks.used_bytes();
            if used.saturating_add(incoming_bytes) > l.maxmemory {
                self.stats.rejected.fetch_add(1, Relaxed);
                return Err(QuotaExceeded::Memory {
                    used,
                    incoming: incoming_bytes,
                    limit: l.maxmemory,
                });
            }
        }
        if l.maxkeys > 0 && new_keys > 0 {
            let keys = ks.len();
            if keys + new_keys > l.maxkeys {
                self.stats.rejected.fetch_add(1, Relaxed);
                return Err(QuotaExceeded::Keys {
                    keys,
                    limit: l.maxkeys,
                });
            }
        }
        Ok(())
    }

    /// Updates `ops_per_sec` from the command counter; called about once a second.
    pub fn sample_ops(&self) {
        let now = std::time::Instant::now();
        let count = self.stats.commands.load(Relaxed);
        let mut last = self.stats.last_sample.lock();
        if let Some(t) = last.1 {
            let secs = now.duration_since(t).as_secs_f64();
            if secs > 0.0 {
                let rate = (count.saturating_sub(last.0)) as f64 / secs;
                self.stats.ops_per_sec.store(rate.round() as u64, Relaxed);
            }
        }
        *last = (count, Some(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_free_flags_follow_the_settings() {
        let t = Tenant::new("t", None, TenantLimits::default());
        let epoch = t.keyspace_epoch();
        let old = t.keyspace();
        t.replace_keyspace(Arc::new(Keyspace::new()));
        assert_ne!(t.keyspace_epoch(), epoch);
        assert!(!Arc::ptr_eq(&old, &t.keyspace()));

        assert!(!t.has_quota());
        let keys = TenantLimits {
            maxkeys: 1,
            ..TenantLimits::default()
        };
        t.set_limits(keys);
        assert!(t.has_quota());
        assert!(t.check_quota(2, 0).is_err());
        t.set_limits(TenantLimits {
            ops: 5,
            ..TenantLimits::default()
        });
        assert!(!t.has_quota());
        assert!(t.check_quota(2, 0).is_ok());
        // The throttle is on with a rate and off again without one.
        let throttled = (0..20).any(|_| t.admit(Duration::ZERO) != Admission::Now);
        assert!(throttled);
        t.set_ops_limit(0);
        assert!((0..1000).all(|_| t.admit(Duration::ZERO) == Admission::Now));
    }

    #[test]
    fn ids() {
        assert!(valid_tenant_id(b"acme-corp.eu_1"));
        assert!(!valid_tenant_id(b""));
        assert!(!valid_tenant_id(b"a b"));
        assert!(!valid_tenant_id(b"a:b"));
        assert!(!valid_tenant_id(&[b'a'; 65]));
        assert!(valid_tenant_id(&[b'a'; 64]));
    }

    #[test]
    fn quotas() {
        let t = Tenant::new(
            "t",
            None,
            TenantLimits {
                maxkeys: 2,
                ..Default::default()
            },
        );
        assert!(t.check_quota(2, 0).is_ok());
        assert_eq!(
            t.check_quota(3, 0),
            Err(QuotaExceeded::Keys { keys: 0, limit: 2 })
        );
        assert!(!t.check_password(b"x"));
        t.set_credential(Some(Credential::from_password(b"pw")));
        assert!(t.check_password(b"pw"));
        assert!(!t.check_password(b"pW"));
    }

    #[test]
    fn client_slots_hold_exactly_under_contention() {
        let t = Arc::new(Tenant::new(
            "t",
            None,
            TenantLimits {
                maxclients: 10,
                ..Default::default()
            },
        ));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..100).filter(|_| t.try_add_client()).count())
            })
            .collect();
        let taken: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(taken, 10);
        assert_eq!(t.stats.clients.load(Relaxed), 10);
        assert_eq!(t.stats.rejected_connections.load(Relaxed), 790);
        t.remove_client();
        assert!(t.try_add_client());
        assert!(!t.try_add_client());
        // Unlimited again: anything goes.
        t.set_limits(TenantLimits::default());
        assert!((0..100).all(|_| t.try_add_client()));
    }
}
