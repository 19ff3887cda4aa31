//! A bounded pool of [`Client`]s that share one tenant's credentials.
//!
//! - At most `max_size` connections exist at once; [`Pool::get`] waits up to
//!   `checkout_timeout` for one to be free, then fails with [`ClientError::PoolTimeout`].
//! - Connections are made on demand, so the pool starts empty and refills itself after a server
//!   restart: an idle connection the server closed is dropped at checkout and replaced by a new
//!   one, without the application doing anything.
//! - A connection goes back to the pool when its [`PooledClient`] guard is dropped, unless it is
//!   broken (its last command failed on the connection), out of step (the guard was dropped
//!   in the middle of a command) or inside a transaction (MULTI or WATCH not ended); those are
//!   discarded.
//! - Every pooled connection is a [`Client`], so it follows `-MOVED`/`-REDIRECT` and retries
//!   `-TRYAGAIN` on its own; once one of them has followed the tenant, new connections go
//!   straight to the new home.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client::{Client, RedirectPolicy};
use crate::connection::ConnectOptions;
use crate::error::{ClientError, command_name};
use ferrite_protocol::frame::Frame;

/// Pool settings (connection and redirect settings come with the [`ConnectOptions`] and
/// [`RedirectPolicy`]; the builder methods here override them).
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most connections open at once (checked out plus idle).
    pub max_size: usize,
    /// How long [`Pool::get`] waits for a free connection.
    pub checkout_timeout: Duration,
    pub policy: RedirectPolicy,
    connect_timeout: Option<Duration>,
    command_timeout: Option<Duration>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_size: 16,
            checkout_timeout: Duration::from_secs(5),
            policy: RedirectPolicy::default(),
            connect_timeout: None,
            command_timeout: None,
        }
    }
}

impl PoolOptions {
    pub fn new() -> PoolOptions {
        PoolOptions::default()
    }

    /// At least 1.
    pub fn max_size(mut self, n: usize) -> Self {
        self.max_size = n.max(1);
        self
    }

    pub fn checkout_timeout(mut self, t: Duration) -> Self {
        self.checkout_timeout = t;
        self
    }

    /// Bound on opening one connection (TCP connect and handshake; overrides the
    /// [`ConnectOptions`] value).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = Some(t);
        self
    }

    /// Bound on each command's round trip (overrides the [`ConnectOptions`] value).
    pub fn command_timeout(mut self, t: Duration) -> Self {
        self.command_timeout = Some(t);
        self
    }

    /// How long one command may spend following redirects and retrying TRYAGAIN.
    pub fn redirect_timeout(mut self, t: Duration) -> Self {
        self.policy.redirect_timeout = t;
        self
    }

    pub fn policy(mut self, p: RedirectPolicy) -> Self {
        self.policy = p;
        self
    }
}

/// Counters of a pool, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// Where new connections go (the tenant's latest known home).
    pub addr: String,
    pub max_size: usize,
    /// Connections checked out right now.
    pub in_use: usize,
    /// Open connections waiting in the pool.
    pub idle: usize,
    /// Connections opened since the pool was created.
    pub created: u64,
    /// Connections dropped because they were broken, closed by the server, or out of step.
    pub discarded: u64,
    /// Redirects followed by all pooled connections (counted when they are returned).
    pub redirects: u64,
}

struct Inner {
    /// Options for new connections. The address moves with the tenant: a connection that
    /// followed a redirect updates it when it is returned. parking_lot: never held across await.
    opts: Mutex<ConnectOptions>,
    policy: RedirectPolicy,
    /// Open connections not in use, most recently returned last (reused first, so that the
    /// rest can be the ones the server times out).
    idle: Mutex<Vec<Client>>,
    /// One permit per connection that may exist; held by each [`PooledClient`].
    permits: Arc<Semaphore>,
    max_size: usize,
    checkout_timeout: Duration,
    created: AtomicU64,
    discarded: AtomicU64,
    redirects: AtomicU64,
}

/// A pool of tenant connections. Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("status", &self.status())
            .finish()
    }
}

impl Pool {
    /// Creates an empty pool; connections are opened on first use.
    pub fn new(opts: ConnectOptions, pool: PoolOptions) -> Pool {
        let mut opts = opts;
        if let Some(t) = pool.connect_timeout {
            opts.connect_timeout = t;
        }
        if let Some(t) = pool.command_timeout {
            opts.command_timeout = t;
        }
        Pool {
            inner: Arc::new(Inner {
                opts: Mutex::new(opts),
                policy: pool.policy,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(pool.max_size.max(1))),
                max_size: pool.max_size.max(1),
                checkout_timeout: pool.checkout_timeout,
                created: AtomicU64::new(0),
                discarded: AtomicU64::new(0),
                redirects: AtomicU64::new(0),
            }),
        }
    }

    /// Creates a pool and opens one connection now, so that a wrong address or password fails
    /// here rather than at the first command.
    pub async fn connect(opts: ConnectOptions, pool: PoolOptions) -> Result<Pool, ClientError> {
        let p = Pool::new(opts, pool);
        drop(p.get().await?);
        Ok(p)
    }

    /// Checks out a connection: an idle one that is still open, or a new one.
    pub async fn get(&self) -> Result<PooledClient, ClientError> {
        let inner = &self.inner;
        let permit = tokio::time::timeout(
            inner.checkout_timeout,
            inner.permits.clone().acquire_owned(),
        )
        .await
        .map_err(|_| ClientError::PoolTimeout {
            addr: inner.opts.lock().addr.clone(),
            waited_ms: inner.checkout_timeout.as_millis(),
            max_size: inner.max_size,
        })?
        .map_err(|_| ClientError::Closed(inner.opts.lock().addr.clone()))?;
        loop {
            let Some(mut c) = inner.idle.lock().pop() else {
                break;
            };
            if c.is_usable() {
                return Ok(self.guard(c, permit));
            }
            tracing::debug!(addr = %c.addr(), "dropping a pooled connection the server closed");
            inner.discarded.fetch_add(1, Relaxed);
        }
        let opts = inner.opts.lock().clone();
        let c = Client::with_policy(opts, inner.policy.clone()).await?;
        inner.created.fetch_add(1, Relaxed);
        Ok(self.guard(c, permit))
    }

    fn guard(&self, c: Client, permit: OwnedSemaphorePermit) -> PooledClient {
        PooledClient {
            redirects_at_checkout: c.redirects(),
            client: Some(c),
            pool: self.inner.clone(),
            _permit: permit,
        }
    }

    /// Runs one command on a pooled connection.
    pub async fn cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Frame, ClientError> {
        let addr = self.inner.opts.lock().addr.clone();
        let mut c = self
            .get()
            .await
            .map_err(|e| e.context(&addr, &command_name(args)))?;
        c.cmd(args).await
    }

    pub fn status(&self) -> PoolStatus {
        let inner = &self.inner;
        PoolStatus {
            addr: inner.opts.lock().addr.clone(),
            max_size: inner.max_size,
            in_use: inner.max_size - inner.permits.available_permits(),
            idle: inner.idle.lock().len(),
            created: inner.created.load(Relaxed),
            discarded: inner.discarded.load(Relaxed),
            redirects: inner.redirects.load(Relaxed),
        }
    }

    /// Closes every idle connection; checked-out ones are not affected and return as usual.
    pub fn clear_idle(&self) {
        let n = std::mem::take(&mut *self.inner.idle.lock()).len();
        self.inner.discarded.fetch_add(n as u64, Relaxed);
    }
}

/// A checked-out connection; derefs to [`Client`] and goes back to the pool when dropped.
pub struct PooledClient {
    client: Option<Client>,
    pool: Arc<Inner>,
    redirects_at_checkout: u64,
    /// Released after the client is back in the idle list (fields drop in declaration order
    /// after `drop` runs), so a waiter woken by it finds the connection.
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for PooledClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PooledClient").field(&self.client).finish()
    }
}

impl std::ops::Deref for PooledClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        // Only `drop` takes the client out.
        self.client
            .as_ref()
            .expect("pooled client present until drop")
    }
}

impl std::ops::DerefMut for PooledClient {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("pooled client present until drop")
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        let Some(mut c) = self.client.take() else {
            return;
        };
        let pool = &self.pool;
        let followed = c.redirects().saturating_sub(self.redirects_at_checkout);
        if followed > 0 {
            pool.redirects.fetch_add(followed, Relaxed);
            let mut opts = pool.opts.lock();
            if opts.addr != c.addr() {
                tracing::debug!(from = %opts.addr, to = %c.addr(), "pool follows its tenant");
                opts.addr = c.addr().to_string();
            }
        }
        // A connection left inside a transaction would queue the next user's commands.
        if c.is_usable() && !c.in_transaction() {
            pool.idle.lock().push(c);
        } else {
            pool.discarded.fetch_add(1, Relaxed);
        }
    }
}
