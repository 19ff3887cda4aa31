//! State shared by every connection of one server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use ferrite_tenancy::Registry;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::config::Config;
use crate::stats::{CommandStats, ServerStats};

/// `client-output-buffer-limit pubsub` (bytes; 0 = no limit), read by every subscriber's
/// mailbox at each delivery, so that CONFIG SET applies to existing subscribers as in Redis.
#[derive(Debug, Default)]
pub struct PubsubLimits {
    pub hard: AtomicU64,
    pub soft: AtomicU64,
    pub soft_seconds: AtomicU64,
}

/// Settings read on every command, kept in atomics so the hot path takes no lock.
#[derive(Debug, Default)]
pub struct HotConfig {
    pub max_bulk_len: AtomicU64,
    pub client_output_buffer_limit: AtomicU64,
    /// `maxmemory`: the server-wide cap on all tenants' data together; 0 = no cap.
    pub maxmemory: AtomicU64,
    /// All connections' unsent replies and large input buffers together (Redis's
    /// `maxmemory-clients`); 0 = no limit.
    pub maxmemory_clients: AtomicU64,
    /// The longest unfinished request a connection may send (`client-query-buffer-limit`).
    pub client_query_buffer_limit: AtomicU64,
    /// A subscriber's undelivered messages: `client-output-buffer-limit pubsub`.
    pub pubsub_limits: Arc<PubsubLimits>,
    pub throttle_max_delay_ms: AtomicU64,
    pub redirect_timeout_ms: AtomicU64,
    /// `redirect_mode = "error"`: moved tenants get a plain error instead of -MOVED.
    pub redirect_as_error: AtomicBool,
    /// `commands.slowlog_log_slower_than` (µs; negative: off).
    pub slowlog_slower_than_us: AtomicI64,
    pub slowlog_max_len: AtomicU64,
    /// `commands.acllog_max_len`: entries each tenant's ACL log keeps.
    pub acllog_max_len: AtomicU64,
    /// `commands.latency_monitor_threshold` (ms; 0: off).
    pub latency_threshold_ms: AtomicU64,
    /// `busy-reply-threshold` (ms): a tenant's other connections get -BUSY once its script has
    /// run this long.
    pub busy_reply_threshold_ms: AtomicU64,
    /// `min-replicas-to-write`: above 0, writes are refused (Ferrite has no replicas).
    pub min_replicas_to_write: AtomicU64,
}

impl HotConfig {
    pub fn load(&self, c: &Config) {
        self.max_bulk_len.store(c.limits.max_bulk_len, Relaxed);
        self.client_output_buffer_limit
            .store(c.limits.client_output_buffer_limit, Relaxed);
        self.maxmemory_clients
            .store(c.limits.maxmemory_clients, Relaxed);
        self.client_query_buffer_limit
            .store(c.limits.client_query_buffer_limit, Relaxed);
        self.maxmemory.store(c.limits.maxmemory, Relaxed);
        let l = &c.limits;
        self.pubsub_limits
            .hard
            .store(l.pubsub_output_buffer_limit, Relaxed);
        self.pubsub_limits
            .soft
            .store(l.pubsub_output_buffer_soft_limit, Relaxed);
        self.pubsub_limits
            .soft_seconds
            .store(l.pubsub_output_buffer_soft_seconds, Relaxed);
        self.throttle_max_delay_ms
            .store(c.tenancy.throttle_max_delay_ms, Relaxed);
        let ch = &c.tenancy.migration.client_handling;
        self.redirect_timeout_ms
            .store(ch.redirect_timeout_ms, Relaxed);
        self.redirect_as_error
            .store(ch.redirect_mode == "error", Relaxed);
        c.encoding.apply();
        let cmds = &c.commands;
        self.slowlog_slower_than_us
            .store(cmds.slowlog_log_slower_than, Relaxed);
        self.slowlog_max_len.store(cmds.slowlog_max_len, Relaxed);
        self.acllog_max_len.store(cmds.acllog_max_len, Relaxed);
        self.latency_threshold_ms
            .store(cmds.latency_monitor_threshold, Relaxed);
        self.busy_reply_threshold_ms
            .store(cmds.busy_reply_threshold, Relaxed);
        self.min_replicas_to_write
            .store(cmds.min_replicas_to_write, Relaxed);
        ferrite_commands::settings::set_hll_sparse_max_bytes(
            usize::try_from(cmds.hll_sparse_max_bytes).unwrap_or(usize::MAX),
        );
    }
}

/// What CLIENT LIST / CLIENT KILL see of a connection.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub created: Instant,
    pub fields: Mutex<ClientFields>,
    /// When its last request arrived (`quanta`'s clock: set once per read, see `Batch`).
    pub last_active: Mutex<quanta::Instant>,
    /// Set (and `interrupt` woken) by CLIENT KILL and the idle timeout.
    pub killed: AtomicBool,
    /// Wakes the connection's task when it is killed or the server shuts down.
    pub interrupt: Interrupt,
    /// The blocking command it waits in (CLIENT UNBLOCK, CLIENT LIST flags=b).
    pub blocked: Mutex<Option<Arc<crate::blocking::BlockedClient>>>,
}

/// The mutable, descriptive part of a connection.
#[derive(Debug, Clone)]
pub struct ClientFields {
    pub name: String,
    pub lib_name: String,
    pub lib_ver: String,
    pub tenant: Arc<str>,
    pub resp: u8,
    pub last_cmd: &'static str,
    pub multi: i64,
    /// The connection's id as its tenant sees it, when it is one of the tenant's own clients
    /// (authenticated as the tenant, or an anonymous user of `default`): it holds one of the
    /// tenant's client slots and the tenant sees it in CLIENT LIST. None for administrators
    /// (also after TENANT.USE), migration peers and connections that have not authenticated:
    /// no tenant sees those.
    pub tenant_client_id: Option<u64>,
    /// The tenant's ACL user it authenticated as (CLIENT LIST `user=`; else the tenant's name).
    pub acl_user: Option<Arc<str>>,
}

/// Who looks at a connection (CLIENT LIST, CLIENT KILL, CLIENT ID): an administrator sees every
/// connection by its server-wide id; anybody else only the clients of its own tenant (and
/// itself), by their ids within that tenant, so nothing reveals how many connections other
/// tenants have or that an administrator is looking.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    pub admin: bool,
    pub tenant: &'a str,
    /// The viewer's own server-wide id.
    pub id: u64,
}

impl ClientInfo {
    /// Whether `viewer` may see (and kill) this connection.
    pub fn visible_to(&self, f: &ClientFields, viewer: &Viewer<'_>) -> bool {
        viewer.admin
            || self.id == viewer.id
            || (f.tenant_client_id.is_some() && *f.tenant == *viewer.tenant)
    }

    /// The id `viewer` knows this connection by.
    pub fn id_for(&self, f: &ClientFields, viewer: &Viewer<'_>) -> u64 {
        if viewer.admin {
            self.id
        } else {
            f.tenant_client_id.unwrap_or(self.id)
        }
    }

    /// One CLIENT LIST line (without the newline), as `viewer` sees it.
    pub fn describe(&self, viewer: &Viewer<'_>) -> String {
        let f = self.fields.lock().clone();
        let idle = self.last_active.lock().elapsed().as_secs();
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={} db=0 sub=0 psub=0 ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} library-name={} library-ver={} resp={} tenant={}",
            self.id_for(&f, viewer),
            self.addr,
            self.laddr,
            f.name,
            self.created.elapsed().as_secs(),
            idle,
            if self.blocked.lock().is_some() {
                "b"
            } else {
                "N"
            },
            f.multi,
            f.last_cmd,
            f.acl_user.as_deref().unwrap_or(&f.tenant),
            f.lib_name,
            f.lib_ver,
            f.resp,
            f.tenant,
        )
    }

    /// The connection as an entry of `tenant`'s ACL log shows it: its CLIENT LIST line as the
    /// tenant sees it when it is one of the tenant's clients; otherwise (a failed login from a
    /// connection of another tenant, or not yet authenticated) only its addresses and ages, so
    /// that the entry tells the tenant nothing about other tenants or the server.
    pub fn describe_to_tenant(&self, tenant: &str) -> String {
        let viewer = Viewer {
            admin: false,
            tenant,
            id: self.id,
        };
        let f = self.fields.lock().clone();
        if f.tenant_client_id.is_some() && *f.tenant == *tenant {
            return self.describe(&viewer);
        }
        format!(
            "id=0 addr={} laddr={} fd=-1 name= age={} idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user= library-name= library-ver= resp={} tenant={tenant}",
            self.addr,
            self.laddr,
            self.created.elapsed().as_secs(),
            f.last_cmd,
            f.resp,
        )
    }

    pub fn kill(&self) {
        self.killed.store(true, Relaxed);
        self.interrupt.wake();
    }
}

/// How a connection waiting for its socket learns that it was killed or that the server is
/// shutting down: the waker of its task, which [`ClientInfo::kill`] and
/// [`Shared::begin_shutdown`] wake after setting their flag.
///
/// Why not a `Notify` and the shutdown channel: the connection polls what it waits for every
/// time its socket has nothing more to read, that is once per request without pipelining, and
/// polling a registered `Notified` (and the channel's) takes and releases its waiter lock each
/// time; two of them cost about 230 instructions per request (callgrind, SET at -P1, issue 13).
/// Here a poll is one uncontended lock, a comparison of wakers and two flag loads
/// ([`Interrupt::poll`]). The flags are the truth; the waker only makes a sleeping connection
/// look at them.
#[derive(Debug, Default)]
pub struct Interrupt {
    /// The task to wake: the last one that polled. A mutex, not an atomic waker: it is taken
    /// once per poll by one task and by nobody else but a kill or a shutdown.
    waker: Mutex<Option<std::task::Waker>>,
}

impl Interrupt {
    /// Ready once `killed` is set or the server is shutting down; otherwise the task is woken
    /// when either happens. The waker is stored before the flags are read, and the setters
    /// set their flag before they take the waker (the mutex orders both), so no kill is missed.
    pub fn poll(
        &self,
        cx: &mut std::task::Context<'_>,
        killed: &AtomicBool,
        shared: &Shared,
    ) -> std::task::Poll<()> {
        {
            let mut slot = self.waker.lock();
            match &*slot {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        if killed.load(Relaxed) || shared.is_shutting_down() {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }

    /// Wakes the connection's task, if it ever waited.
    pub fn wake(&self) {
        let waker = self.waker.lock().clone();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Everything connections share.
pub struct Shared {
    /// The configuration as last set (CONFIG SET updates it).
    pub config: RwLock<Config>,
    pub hot: HotConfig,
    pub registry: Arc<Registry>,
    /// The data directory in use (None: persistence is off).
    pub persistence: Option<Arc<ferrite_persistence::Persistence>>,
    /// Outgoing migrations and incoming imports.
    pub migrations: ferrite_tenancy::MigrationManager,
    pub clients: Mutex<HashMap<u64, Arc<ClientInfo>>>,
    /// Connections admitted and not yet finished: counted when accepted (before the
    /// connection's task even starts), so a burst of connects cannot pass `maxclients`.
    pub admitted: Arc<std::sync::atomic::AtomicUsize>,
    /// Every connection's unsent replies and large input buffers, in bytes (see
    /// [`crate::client_memory`]).
    pub client_bytes: Arc<AtomicU64>,
    pub next_client_id: AtomicU64,
    pub stats: ServerStats,
    pub cmd_stats: CommandStats,
    /// Every tenant's pub/sub channels.
    pub pubsub: crate::pubsub::Hub,
    /// Per-tenant slow log and latency monitor.
    pub diagnostics: crate::diagnostics::Diagnostics,
    /// Per-tenant ACL log (ACL LOG).
    pub acl_log: crate::acl_log::AclLog,
    /// Failed AUTH attempts per client address.
    pub auth_limiter: crate::auth_limit::AuthLimiter,
    pub started: Instant,
    pub run_id: String,
    /// Address the listener is bound to (after port 0 was resolved).
    pub local_addr: SocketAddr,
    /// The administrator secret used while `requirepass` is empty: from
    /// `server.admin_secret_file` (see [`crate::admin_secret`]) or given by the embedder.
    pub admin_secret_fallback: Mutex<Option<String>>,
    /// Flips to true when the server starts shutting down (background tasks wait on it).
    pub shutdown: watch::Sender<bool>,
    /// The same as a flag: what connections check ([`Shared::is_shutting_down`]), without
    /// the channel's lock.
    pub shutting_down: AtomicBool,
    /// Backups and restores running now, with their progress (see [`crate::backup`]).
    pub backup_jobs: Arc<crate::backup::Jobs>,
    /// Slots for long commands running on the blocking pool (see [`crate::offload`]).
    pub long_work: tokio::sync::Semaphore,
    /// Applies a new log filter (CONFIG SET loglevel); absent in embedded servers.
    pub set_log_level: Option<LogLevelSetter>,
}

impl Shared {
    pub fn requirepass(&self) -> Option<String> {
        self.config.read().requirepass().map(str::to_string)
    }

    /// The secret that makes a connection administrator: `requirepass` when set, else the
    /// generated one (read or created now if the server started with a `requirepass` that was
    /// cleared since). None only when that file cannot be read or created.
    pub fn admin_secret(&self) -> Option<String> {
        if let Some(pw) = self.requirepass() {
            return Some(pw);
        }
        let mut fallback = self.admin_secret_fallback.lock();
        if fallback.is_none() {
            let path = self.config.read().admin_secret_path();
            match crate::admin_secret::load_or_create(&path) {
                Ok((s, _)) => *fallback = Some(s),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot read or create the administrator secret file");
                }
            }
        }
        fallback.clone()
    }

    /// Starts a graceful shutdown: background tasks see the channel, connections the flag
    /// and their [`Interrupt`] (set before the connections are woken, so a connection that
    /// registers afterwards finds the flag set).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Relaxed);
        self.shutdown.send_replace(true);
        let clients: Vec<Arc<ClientInfo>> = self.clients.lock().values().cloned().collect();
        for c in clients {
            c.interrupt.wake();
        }
    }

    #[inline]
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Relaxed)
    }

    /// Writes may run: persistence is off or working. While a log cannot be written, writes
    /// are refused (`-MISCONF`) and reads go on.
    #[inline]
    pub fn persistence_ok(&self) -> bool {
        self.persistence.as_ref().is_none_or(|p| p.writable())
    }

    pub fn client_count(&self) -> usize {
        self.clients.lock().len()
    }

    /// `-NOREPLICAS` when `min-replicas-to-write` asks for replicas: Ferrite has none, so a
    /// write may not run (Redis's checkGoodReplicasStatus).
    #[inline]
    pub fn check_replicas(&self) -> Result<(), ferrite_protocol::ErrorReply> {
        if self.hot.min_replicas_to_write.load(Relaxed) > 0 {
            return Err(ferrite_protocol::ErrorReply::coded(
                "NOREPLICAS",
                "Not enough good replicas to write.",
            ));
        }
        Ok(())
    }

    /// The address clients should use to reach this server.
    pub fn advertised_addr(&self) -> String {
        self.local_addr.to_string()
    }
}

/// Resolves once shutdown has begun (or the server is gone).
pub async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Applies a new log filter; returns why it could not.
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
