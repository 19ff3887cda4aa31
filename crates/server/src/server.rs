//! The listener, background work (active expiry, rate sampling) and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ferrite_tenancy::{Registry, TenancySettings, TenantLimits, TenantState};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::shared::{HotConfig, LogLevelSetter, Shared};
use crate::stats::{CommandStats, ServerStats};
use crate::{connection, hooks};

/// Options for starting a server that are not part of the configuration file.
#[derive(Default)]
pub struct StartOptions {
    /// Applies a new log filter (CONFIG SET loglevel).
    pub set_log_level: Option<LogLevelSetter>,
    /// The administrator secret to use instead of `server.admin_secret_file` when there is no
    /// `requirepass` (embedding and in-process tests, which should not write files).
    pub admin_secret: Option<String>,
}

/// A running server.
pub struct ServerHandle {
    /// The address clients connect to.
    pub addr: SocketAddr,
    /// The Prometheus endpoint, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The file holding the administrator secret, when the server uses one (no
    /// `requirepass`), and whether this start created it.
    pub admin_secret_file: Option<(std::path::PathBuf, bool)>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The secret that makes a connection administrator (`AUTH <secret>`).
    pub fn admin_secret(&self) -> Option<String> {
        self.shared.admin_secret()
    }

    /// The tenant registry (for embedding and tests).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.shared.registry
    }

    /// This server's migration manager (outgoing migrations and incoming imports).
    pub fn migrations(&self) -> &ferrite_tenancy::MigrationManager {
        &self.shared.migrations
    }

    /// Begins a graceful shutdown (as SHUTDOWN or SIGTERM would).
    pub fn shutdown(&self) {
        self.shared.begin_shutdown();
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            error!(error = %e, "server task failed");
        }
    }

    /// Shuts down and waits.
    pub async fn stop(self) {
        self.shutdown();
        self.wait().await;
    }
}

/// Binds and starts serving; returns once the listener is bound.
pub async fn start(config: Config, opts: StartOptions) -> anyhow::Result<ServerHandle> {
    // Before listening: a server nobody can administer, or that anybody can, must not start.
    let mut admin_secret_file = None;
    let admin_secret = match (opts.admin_secret, config.requirepass()) {
        (_, Some(_)) => None,
        (Some(s), None) => Some(s),
        (None, None) => {
            let path = config.admin_secret_path();
            let (secret, created) = crate::admin_secret::load_or_create(&path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read or create the administrator secret file {}: {e} (set \
                     server.requirepass, or server.admin_secret_file to a writable path)",
                    path.display()
                )
            })?;
            info!(path = %path.display(), created, "administrator secret file");
            admin_secret_file = Some((path, created));
            Some(secret)
        }
    };
    let listener = TcpListener::bind(config.listen_addr())
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen_addr()))?;
    let addr = listener.local_addr()?;
    let metrics_listener = if config.metrics.addr == "off" {
        None
    } else {
        Some(TcpListener::bind(&config.metrics.addr).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on metrics.addr {}: {e}", config.metrics.addr)
        })?)
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let registry = Arc::new(Registry::new(TenancySettings {
        max_tenants: config.tenancy.max_tenants,
        default_limits: TenantLimits {
            maxmemory: config.tenancy.default_maxmemory,
            maxkeys: config.tenancy.default_maxkeys,
            ops: config.tenancy.default_ops,
            maxclients: config.tenancy.default_maxclients,
        },
        throttle_max_delay_ms: config.tenancy.throttle_max_delay_ms,
    }));
    // The data directory is loaded before anything is served: tenants, their keys, credentials
    // and moved records are all back when the ready line is printed.
    let persistence = if config.persistence.enabled {
        let settings = config.persistence.settings();
        let reg = registry.clone();
        let p = tokio::task::spawn_blocking(move || {
            ferrite_persistence::Persistence::open(settings, &reg)
        })
        .await
        .map_err(|e| anyhow::anyhow!("loading the data directory failed: {e}"))?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Some(p)
    } else {
        None
    };
    let run_id = format!(
        "{:032x}{:08x}",
        rand::random::<u128>(),
        rand::random::<u32>()
    );
    let migrations = ferrite_tenancy::MigrationManager::new(
        registry.clone(),
        config.migration_settings(),
        addr.to_string(),
        run_id.clone(),
    );
    if let Some(p) = &persistence {
        // Every later change of a migration is recorded; those recorded before the restart
        // come back (finished as history, unfinished per `ferrite_tenancy::migration::restart`).
        let store = Arc::new(ferrite_persistence::migrations::MigrationStore::new(
            p.clone(),
        ));
        migrations.set_record_sink(store.clone());
        migrations.restore(store.load());
    }
    let hot = HotConfig::default();
    hot.load(&config);
    let (shutdown, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        hot,
        registry,
        persistence,
        migrations,
        clients: Default::default(),
        client_bytes: Default::default(),
        admitted: Default::default(),
        next_client_id: 1.into(),
        stats: ServerStats::default(),
        cmd_stats: CommandStats::default(),
        diagnostics: Default::default(),
        acl_log: Default::default(),
        pubsub: Default::default(),
        auth_limiter: Default::default(),
        started: Instant::now(),
        run_id,
        local_addr: addr,
        admin_secret_fallback: parking_lot::Mutex::new(admin_secret),
        shutdown,
        shutting_down: false.into(),
        set_log_level: opts.set_log_level,
        long_work: tokio::sync::Semaphore::new(crate::offload::long_work_slots()),
        backup_jobs: Default::default(),
        config: parking_lot::RwLock::new(config),
    });
    hooks::on_start(&shared);
    if let Some(l) = metrics_listener {
        let m = Arc::new(Metrics::new());
        tokio::spawn(metrics::serve(l, shared.clone(), m));
    }
    tokio::spawn(cron(shared.clone()));
    let task = tokio::spawn(accept_loop(listener, shared.clone()));
    info!(%addr, metrics = ?metrics_addr, "ready to accept connections");
    Ok(ServerHandle {
        addr,
        metrics_addr,
        admin_secret_file,
        shared,
        task,
    })
}

async fn accept_loop(listener: TcpListener, sh: Arc<Shared>) {
    let mut shutdown = sh.shutdown.subscribe();
    // Each connection holds a clone; when only ours is left, all have finished.
    let alive = Arc::new(());
    loop {
        let (mut stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = crate::shared::wait_shutdown(&mut shutdown) => break,
        };
        sh.stats.connections_received.fetch_add(1, Relaxed);
        let maxclients = sh.config.read().server.maxclients;
        // The slot is taken here, in the accept loop, not when the connection's task registers
        // itself: counting registered clients let a burst of connects in before any registered.
        let slot = AdmittedSlot::take(&sh.admitted);
        if slot.count > maxclients {
            sh.stats.connections_rejected.fetch_add(1, Relaxed);
            warn!(%peer, maxclients, "refusing connection: max number of clients reached");
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        }
        let sh = sh.clone();
        let token = alive.clone();
        tokio::spawn(async move {
            connection::serve(stream, sh).await;
            drop(slot);
            drop(token);
        });
    }
    drop(listener);
    let timeout = Duration::from_millis(sh.config.read().server.shutdown_timeout_ms);
    info!("shutting down: no longer accepting connections, finishing in-flight replies");
    // A running Lua script would keep its connection (and the runtime's blocking pool) alive
    // forever: stop it, as Redis's SHUTDOWN NOSAVE does (its writes so far stay).
    for tenant in sh.registry.list() {
        tenant.scripts().force_kill();
    }
    let deadline = Instant::now() + timeout;
    while Arc::strong_count(&alive) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left = Arc::strong_count(&alive) - 1;
    if left > 0 {
        warn!(
            connections = left,
            "shutdown timeout reached with connections still open"
        );
    }
    hooks::on_stop(&sh).await;
    info!("server stopped");
}

/// Closes connections that sent nothing for `timeout` seconds (Redis's clientsCron does the
/// same), so idle connections cannot hold `maxclients` slots forever.
fn close_idle_clients(sh: &Shared) {
    let timeout = sh.config.read().server.timeout;
    if timeout == 0 {
        return;
    }
    let limit = Duration::from_secs(timeout);
    let idle: Vec<_> = sh
        .clients
        .lock()
        .values()
        .filter(|c| c.last_active.lock().elapsed() > limit)
        .cloned()
        .collect();
    for c in idle {
        tracing::debug!(client = c.id, "closing idle connection (timeout)");
        c.kill();
    }
}

/// One admitted connection's place in `Shared::admitted`, given back on drop.
struct AdmittedSlot {
    counter: Arc<std::sync::atomic::AtomicUsize>,
    /// Admitted connections including this one, when it was taken.
    count: usize,
}

impl AdmittedSlot {
    fn take(counter: &Arc<std::sync::atomic::AtomicUsize>) -> AdmittedSlot {
        let count = counter.fetch_add(1, Relaxed) + 1;
        AdmittedSlot {
            counter: counter.clone(),
            count,
        }
    }
}

impl Drop for AdmittedSlot {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Relaxed);
    }
}

/// Periodic work: active expiry every 100 ms, rate sampling every second.
async fn cron(sh: Arc<Shared>) {
    let mut shutdown = sh.shutdown.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sample = Instant::now();
    let mut last_commands = 0u64;
    let mut load = crate::contention::LoadSampler::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::shared::wait_shutdown(&mut shutdown) => return,
        }
        let now = ferrite_storage::now_ms();
        if let Some(p) = &sh.persistence {
            // Writes what no connection wrote (expiries, imports), schedules snapshots.
            p.tick();
        }
        for t in sh.registry.list() {
            // Only tenants served here expire keys: an import mirrors its source exactly, a moved
            // tenant's frozen copy must stay as it was at cutover, and a tenant whose writes are
            // gated for a cutover must not change under the drain.
            if t.state() != TenantState::Active || t.gate().is_closed() {
                continue;
            }
            let ks = t.keyspace();
            if ks.stats().keys_with_expiry.load(Relaxed) == 0 {
                continue;
            }
            // Bounded work per tick so one tenant's mass expiry cannot stall the others; a tenant
            // busy with a long command is skipped this time rather than waited for (this task runs
            // on a worker thread that serves connections).
            let Some(mut db) = ks.try_lock() else {
                continue;
            };
            let n = db.expire_cycle(now, 1000);
            drop(db);
            if n == 1000 {
                tokio::task::yield_now().await;
            }
        }
        if last_sample.elapsed() >= Duration::from_secs(1) {
            let secs = last_sample.elapsed().as_secs_f64();
            let c = sh.stats.commands_processed.load(Relaxed);
            sh.stats
                .ops_per_sec
                .store(((c - last_commands) as f64 / secs).round() as u64, Relaxed);
            last_commands = c;
            last_sample = Instant::now();
            for t in sh.registry.list() {
                t.sample_ops();
            }
            close_idle_clients(&sh);
            sh.auth_limiter.prune(Instant::now());
            let window = sh.migrations.settings().contention.window;
            sh.migrations.observe_load(load.sample(&sh, window));
            // Imports whose source went away for longer than the sync timeout are dropped.
            let idle = sh.migrations.settings().sync_timeout;
            sh.migrations.imports().reap(idle);
        }
    }
}
