//! An in-process [`Target`]: a second registry and [`ImportManager`] called directly, with
//! network faults a test switches on at an exact moment (refused connections, a silent
//! partition, a slow link, connections cut, a restart that loses every import). The state
//! machine, checkpoints, retries and each cutover step are unit-tested against it, without
//! sockets and, under tokio's paused clock, with the real default timeouts.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;

use super::import::{BeginRequest, Fetched, ImportError, ImportManager, PatternActivation};
use super::target::{
    BatchLink, Connector, ImportReport, Prepared, Target, TargetAuth, TargetCheck, TargetError,
    TargetFuture,
};
use crate::registry::{Registry, TenancySettings};

/// A network fault between the source and an in-process target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Nothing listens: every call fails at once ("connection refused").
    Refuse,
    /// Packets vanish: every call waits forever (until the caller's own timeout).
    Partition,
    /// Every call takes this long first.
    Delay(Duration),
}

/// The target server's side: its tenants and imports.
pub struct LocalServer {
    pub registry: Arc<Registry>,
    pub imports: Arc<ImportManager>,
    pub run_id: String,
}

impl LocalServer {
    fn new(n: u64) -> LocalServer {
        let registry = Arc::new(Registry::new(TenancySettings::default()));
        // Import ids start with the run id: a restarted target must not reuse them.
        let run_id = format!("{n:08x}{:032x}", 0xfe77_17e0_u64);
        LocalServer {
            imports: Arc::new(ImportManager::new(registry.clone(), run_id.clone())),
            registry,
            run_id,
        }
    }
}

struct Shared {
    server: Mutex<Arc<LocalServer>>,
    fault: Mutex<Fault>,
    /// Bumped by [`LocalTarget::cut`] and [`LocalTarget::restart`]: links opened before fail.
    generation: AtomicU64,
    /// Connection attempts (control calls count one each, like a request on a connection).
    attempts: AtomicU64,
    stream_opens: AtomicU64,
    restarts: AtomicU64,
}

/// An in-process target.
pub struct LocalTarget {
    addr: String,
    shared: Arc<Shared>,
}

static SERVERS: AtomicU64 = AtomicU64::new(1);

impl LocalTarget {
    pub fn new(addr: &str) -> Arc<LocalTarget> {
        Arc::new(LocalTarget {
            addr: addr.to_string(),
            shared: Arc::new(Shared {
                server: Mutex::new(Arc::new(LocalServer::new(SERVERS.fetch_add(1, Relaxed)))),
                fault: Mutex::new(Fault::None),
                generation: AtomicU64::new(0),
                attempts: AtomicU64::new(0),
                stream_opens: AtomicU64::new(0),
                restarts: AtomicU64::new(0),
            }),
        })
    }

    /// The target server as it is now.
    pub fn server(&self) -> Arc<LocalServer> {
        self.shared.server.lock().clone()
    }

    pub fn set_fault(&self, f: Fault) {
        *self.shared.fault.lock() = f;
    }

    /// Closes every open connection (streams reconnect).
    pub fn cut(&self) {
        self.shared.generation.fetch_add(1, Relaxed);
    }

    /// The target restarts: every connection closes and every import is lost.
    pub fn restart(&self) {
        let n = SERVERS.fetch_add(1, Relaxed);
        *self.shared.server.lock() = Arc::new(LocalServer::new(n));
        self.shared.restarts.fetch_add(1, Relaxed);
        self.cut();
    }

    /// Connection attempts so far (stream opens and control calls).
    pub fn attempts(&self) -> u64 {
        self.shared.attempts.load(Relaxed)
    }

    /// Attempts to open a stream so far.
    pub fn stream_opens(&self) -> u64 {
        self.shared.stream_opens.load(Relaxed)
    }
}

/// Lets a call through the current fault. A call on a link opened at `generation` fails once
/// the link was cut. A partition holds calls until it heals (or the link is cut), as TCP would.
async fn pass(shared: &Shared, generation: Option<u64>) -> Result<(), TargetError> {
    loop {
        if generation.is_some_and(|g| g != shared.generation.load(Relaxed)) {
            return Err(TargetError::Unreachable(
                "Connection reset by peer (os error 104)".into(),
            ));
        }
        let fault = *shared.fault.lock();
        match fault {
            Fault::None => return Ok(()),
            Fault::Refuse => {
                return Err(TargetError::Unreachable(
                    "Connection refused (os error 111)".into(),
                ));
            }
            Fault::Partition => tokio::time::sleep(Duration::from_millis(50)).await,
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                return Ok(());
            }
        }
    }
}

fn import_error(e: ImportError) -> TargetError {
    match e {
        ImportError::Unknown(_) => TargetError::ImportGone(e.to_string()),
        ImportError::WrongState {
            state: "aborted", ..
        } => TargetError::ImportGone(e.to_string()),
        ImportError::WrongState {
            state: "active", ..
        } => TargetError::ImportActive(e.to_string()),
        other => TargetError::Refused(format!("ERR {other}")),
    }
}

impl LocalTarget {
    async fn enter(&self) -> Result<Arc<LocalServer>, TargetError> {
        self.shared.attempts.fetch_add(1, Relaxed);
        pass(&self.shared, None).await?;
        Ok(self.server())
    }
}

impl Target for LocalTarget {
    fn addr(&self) -> &str {
        &self.addr
    }

    fn check<'a>(
        &'a self,
        tenant: &'a str,
        source_run_id: &'a str,
    ) -> TargetFuture<'a, TargetCheck> {
        Box::pin(async move {
            let s = self.enter().await?;
            if source_run_id == s.run_id {
                return Err(TargetError::Refused(format!(
                    "ERR {}",
                    ImportError::SameServer
                )));
            }
            if let Some(state) = s.imports.blocking_state(tenant) {
                return Err(TargetError::Refused(format!(
                    "ERR {}",
                    ImportError::TenantExists {
                        tenant: tenant.into(),
                        state
                    }
                )));
            }
            Ok(TargetCheck::default())
        })
    }

    fn begin<'a>(&'a self, req: &'a BeginRequest) -> TargetFuture<'a, String> {
        Box::pin(async move {
            let s = self.enter().await?;
            s.imports
                .begin(req.clone())
                .map(|i| i.id.clone())
                .map_err(import_error)
        })
    }

    fn open_stream<'a>(
        &'a self,
        import: &'a str,
        index: u16,
    ) -> TargetFuture<'a, Box<dyn BatchLink>> {
        Box::pin(async move {
            self.shared.stream_opens.fetch_add(1, Relaxed);
            let s = self.enter().await?;
            let generation = self.shared.generation.load(Relaxed);
            let points = s.imports.resume(import).map_err(import_error)?;
            let last = points
                .iter()
                .find(|(i, _)| *i == index)
                .map_or(0, |(_, seq)| *seq);
            Ok(Box::new(LocalLink {
                shared: self.shared.clone(),
                server: s,
                import: import.to_string(),
                generation,
                resume_point: last,
                acks: VecDeque::new(),
            }) as Box<dyn BatchLink>)
        })
    }

    fn resume<'a>(&'a self, import: &'a str) -> TargetFuture<'a, Vec<(u16, u64)>> {
        Box::pin(async move {
            let s = self.enter().await?;
            s.imports.resume(import).map_err(import_error)
        })
    }

    fn prepare<'a>(&'a self, import: &'a str) -> TargetFuture<'a, Prepared> {
        Box::pin(async move {
            let s = self.enter().await?;
            let (keys, digest) = s.imports.prepare(import).map_err(import_error)?;
            Ok(Prepared {
                keys,
                digest: digest.combined(),
            })
        })
    }

    fn activate<'a>(&'a self, import: &'a str) -> TargetFuture<'a, ()> {
        Box::pin(async move {
            let s = self.enter().await?;
            s.imports.activate(import).map(|_| ()).map_err(import_error)
        })
    }

    fn pattern_prepare<'a>(
        &'a self,
        import: &'a str,
        patterns: &'a [Vec<u8>],
        index: usize,
        alive_after: u64,
    ) -> TargetFuture<'a, Prepared> {
        Box::pin(async move {
            let s = self.enter().await?;
            let (keys, digest) = s
                .imports
                .pattern_digest(import, patterns, index, alive_after)
                .map_err(import_error)?;
            Ok(Prepared { keys, digest })
        })
    }

    fn pattern_activate<'a>(
        &'a self,
        import: &'a str,
        patterns: &'a [Vec<u8>],
        index: usize,
    ) -> TargetFuture<'a, PatternActivation> {
        Box::pin(async move {
            let s = self.enter().await?;
            s.imports
                .activate_pattern(import, patterns, index)
                .map_err(import_error)
        })
    }

    fn pattern_hold<'a>(
        &'a self,
        import: &'a str,
        patterns: &'a [Vec<u8>],
        index: usize,
        hold: bool,
    ) -> TargetFuture<'a, ()> {
        Box::pin(async move {
            let s = self.enter().await?;
            s.imports
                .hold_pattern(import, patterns, index, hold)
                .map_err(import_error)
        })
    }

    fn pattern_report<'a>(
        &'a self,
        import: &'a str,
        index: usize,
    ) -> TargetFuture<'a, PatternActivation> {
        Box::pin(async move {
            let s = self.enter().await?;
            s.imports
                .pattern_activation(import, index)
                .map_err(import_error)
        })
    }

    fn abort<'a>(&'a self, import: &'a str) -> TargetFuture<'a, ()> {
        Box::pin(async move {
            let s = self.enter().await?;
            s.imports.abort(import).map_err(import_error)
        })
    }

    fn stop<'a>(&'a self, import: &'a str) -> TargetFuture<'a, ()> {
        Box::pin(async move {
            let s = self.enter().await?;
            s.imports.stop(import).map_err(import_error)
        })
    }

    fn report<'a>(&'a self, import: &'a str) -> TargetFuture<'a, ImportReport> {
        Box::pin(async move {
            let s = self.enter().await?;
            let i = s.imports.get(import).map_err(import_error)?;
            let mut report = match i.activation() {
                Some(a) => ImportReport {
                    activation_keys: Some(a.keys),
                    activated_at_ms: a.at_ms,
                    buckets: (0..ferrite_storage::digest::BUCKETS)
                        .map(|b| a.digest.bucket(b))
                        .collect(),
                    ..Default::default()
                },
                None => ImportReport::default(),
            };
            report.conflicts = i.conflicts.count();
            report.conflict_sample = i.conflicts.sample();
            Ok(report)
        })
    }

    fn fetch<'a>(
        &'a self,
        import: &'a str,
        keys: &'a [Vec<u8>],
    ) -> TargetFuture<'a, Vec<Option<Fetched>>> {
        Box::pin(async move {
            let s = self.enter().await?;
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            s.imports.fetch(import, &keys).map_err(import_error)
        })
    }
}

struct LocalLink {
    shared: Arc<Shared>,
    server: Arc<LocalServer>,
    import: String,
    generation: u64,
    resume_point: u64,
    /// Outcomes of batches written and not yet acknowledged, in order.
    acks: VecDeque<Result<u64, TargetError>>,
}

impl LocalLink {
    async fn alive(&self) -> Result<(), TargetError> {
        pass(&self.shared, Some(self.generation)).await
    }
}

impl BatchLink for LocalLink {
    fn resume_point(&self) -> u64 {
        self.resume_point
    }

    fn batch<'a>(&'a mut self, payload: &'a [u8]) -> TargetFuture<'a, ()> {
        Box::pin(async move {
            self.alive().await?;
            let r = self
                .server
                .imports
                .apply_batch(&self.import, payload)
                .map_err(import_error);
            self.acks.push_back(r);
            Ok(())
        })
    }

    fn is_open(&mut self) -> bool {
        self.shared.generation.load(Relaxed) == self.generation
    }

    fn ack(&mut self) -> TargetFuture<'_, u64> {
        Box::pin(async move {
            if self.acks.is_empty() {
                return std::future::pending().await;
            }
            self.alive().await?;
            self.acks
                .pop_front()
                .unwrap_or_else(|| Err(TargetError::Refused("no batch to acknowledge".into())))
        })
    }
}

/// Hands out in-process targets by address; an address nobody registered refuses connections.
#[derive(Default)]
pub struct LocalConnector {
    targets: Mutex<HashMap<String, Arc<LocalTarget>>>,
}

impl LocalConnector {
    pub fn add(&self, target: Arc<LocalTarget>) {
        self.targets.lock().insert(target.addr.clone(), target);
    }
}

impl Connector for LocalConnector {
    fn connect(&self, addr: &str, _auth: TargetAuth) -> Arc<dyn Target> {
        match self.targets.lock().get(addr) {
            Some(t) => t.clone(),
            None => {
                let t = LocalTarget::new(addr);
                t.set_fault(Fault::Refuse);
                t
            }
        }
    }
}
