//! Blocked clients: BLPOP and the other blocking pops, XREAD / XREADGROUP with BLOCK
//! (`ferrite_commands::blocking`).
//!
//! A blocking command runs like any data command (admitted by [`dispatch::admit_work`], under
//! its tenant's lock). When it finds nothing to serve, a [`BlockedClient`] is registered with
//! the keyspace (`ferrite_storage::blocking`) while the lock is still held, so no write can slip
//! in between; then the lock and the write gate's permit are given back and the connection task
//! waits ([`Blocked`], in `connection::run`) holding nothing: no lock, no worker thread, no
//! permit (a cutover never waits for a blocked client).
//!
//! A write that makes one of its keys ready serves it on the writer's side, under the lock, in
//! blocking order: the attempt runs again (a pop for that key, XREAD / XREADGROUP over all
//! their keys, as Redis 7.2 re-runs them) and its reply is parked in the
//! [`BlockedClient`], whose connection is woken. When nothing has to be made durable first (the
//! tenant has no log) and the waiting connection has no output pending, the writer sends the
//! reply on the waiter's socket itself, before its own reply, as Redis serves a blocked client
//! inside the command that pushed (a second handle on the socket, [`ReplySocket`]): the
//! waiter's task then only does its bookkeeping, after both replies are out. A timeout, CLIENT UNBLOCK, a cutover (the
//! tenant's state changes: the client gets the redirect), a kill or a closed socket end the
//! wait: the client leaves the queues under the lock, and if a write served it first, that
//! reply is delivered instead (a popped value is never lost).

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::Duration;

use bytes::BytesMut;
use ferrite_commands::blocking::{Attempt, AttemptFn, NullReply};
use ferrite_commands::spec::{CommandSpec, flags};
use ferrite_commands::{Ctx, Garbage};
use ferrite_protocol::{Args, ErrorReply, OwnedRequest, Protocol, ReplyWriter};
use ferrite_storage::{Db, Keyspace, Waiter};
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::Notify;

use crate::connection::ClientState;
use crate::dispatch::{self, Work};
use crate::shared::Shared;

/// How CLIENT UNBLOCK ends a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnblockMode {
    /// As if the timeout had passed (the default).
    Timeout,
    /// `-UNBLOCKED client unblocked via CLIENT UNBLOCK`.
    Error,
}

/// A client waiting for keys, as the keyspace holds it.
pub struct BlockedClient {
    keys: Vec<Box<[u8]>>,
    request: OwnedRequest,
    attempt: AttemptFn,
    /// XREADGROUP: counted by INFO `total_blocking_keys_on_nokey`.
    unblock_on_nokey: bool,
    proto: Protocol,
    max_bulk: usize,
    /// Bytes the reply may take (what was left of the connection's output budget).
    reply_limit: usize,
    /// Its tenant: a write that serves it sends the reply itself only when the tenant has no
    /// log (a reply never goes out before its write is durable).
    tenant: Arc<ferrite_tenancy::Tenant>,
    /// What the write that served it left for the connection.
    served: Mutex<Served>,
    /// Asked by CLIENT UNBLOCK.
    unblock: Mutex<Option<UnblockMode>>,
    /// Wakes the connection (served or asked to unblock); a wake-up before the connection
    /// waits is kept (one permit).
    woken: Notify,
    /// The connection is gone (its task was dropped while it waited): a write that reaches
    /// this waiter before it has left the queues takes it off them without popping for it.
    gone: AtomicBool,
    /// Counted as blocked (INFO `blocked_clients`, CLIENT LIST's `b`, CLIENT UNBLOCK's target)
    /// until served or until its wait ends, whichever comes first: a client that has its reply
    /// (sent by the serving write) is no longer counted, as in Redis.
    counted: AtomicBool,
    shared: Arc<Shared>,
    /// Weak: the connection's info holds this client while it is blocked.
    info: std::sync::Weak<crate::shared::ClientInfo>,
}

impl BlockedClient {
    /// The client is no longer blocked (served, or its wait ended): counted once.
    fn no_longer_blocked(&self) {
        if self
            .counted
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            if let Some(info) = self.info.upgrade() {
                *info.blocked.lock() = None;
            }
            self.shared.stats.blocked_clients.fetch_sub(1, Relaxed);
        }
    }
}

/// A blocked client's reply, as the write that served it left it.
#[derive(Default)]
struct Served {
    /// The reply (or what a direct write left of it) for the connection to write.
    reply: Option<BytesMut>,
    /// The write sent the whole reply on the socket: the connection has nothing to write.
    delivered: bool,
    /// Bytes the write sent on the socket (the connection counts them as its output).
    sent: usize,
    /// Set while the connection waits with no output pending and its reply is to be sent (not
    /// CLIENT REPLY OFF): the serving write may send the reply on it. Taken by that write, and
    /// cleared by the connection before it writes anything itself, so the two never write at
    /// once and the reply keeps its place in the output.
    socket: Option<Arc<ReplySocket>>,
}

impl Served {
    fn has_reply(&self) -> bool {
        self.reply.is_some() || self.delivered
    }
}

/// A second handle on a connection's socket (a duplicated descriptor, made once per connection
/// that blocks), for the writes that serve it to send its reply. The connection keeps it for
/// its lifetime and lends it to its waits ([`Blocked::reply_directly`]); a wait that ends takes
/// it back, so the descriptor never outlives the connection by more than a serving write.
pub struct ReplySocket(std::net::TcpStream);

impl ReplySocket {
    /// The handle for `socket`; `None` if the descriptor cannot be duplicated (out of files):
    /// the connection then writes its replies itself.
    pub fn new(socket: &tokio::net::TcpStream) -> Option<Arc<ReplySocket>> {
        use std::os::fd::AsFd;
        let fd = socket.as_fd().try_clone_to_owned().ok()?;
        Some(Arc::new(ReplySocket(std::net::TcpStream::from(fd))))
    }
}

impl std::fmt::Debug for BlockedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockedClient")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Waiter for BlockedClient {
    fn keys(&self) -> &[Box<[u8]>] {
        &self.keys
    }

    fn unblock_on_nokey(&self) -> bool {
        self.unblock_on_nokey
    }

    fn serve(&self, db: &mut Db, key: &[u8], now: u64) -> bool {
        if self.gone.load(Acquire) {
            return true;
        }
        // Room for a usual reply (BLPOP's key and value) without growing.
        let mut out = BytesMut::with_capacity(128);
        let mut w = ReplyWriter::limited(&mut out, self.proto, self.reply_limit);
        // Pops use no randomness; a generator is required by the context.
        let mut rng = SmallRng::seed_from_u64(now);
        let mut garbage = Garbage::default();
        let mut ctx = Ctx {
            db,
            w: &mut w,
            now,
            rng: &mut rng,
            max_bulk: self.max_bulk,
            garbage: &mut garbage,
            from_script: false,
        };
        let mut served = false;
        let result = ctx.run_with(self.request.args(), |ctx, args| {
            served = matches!((self.attempt)(ctx, args, Some(key))?, Attempt::Served);
            Ok(())
        });
        match result {
            Ok(()) if !served => return false,
            Ok(()) => {}
            // An error now (LMOVE's destination holds another type) ends the wait with it,
            // as in Redis.
            Err(e) => {
                out.clear();
                ReplyWriter::new(&mut out, self.proto).error(&e);
            }
        }
        self.no_longer_blocked();
        let mut served = self.served.lock();
        // Sent now, under the lock, ahead of the serving write's own reply, when nothing must
        // be made durable first: one non-blocking send, as Redis's one thread makes it. An
        // error (rare) or a reply cut at the output limit is left to the connection.
        if let Some(socket) = served.socket.take()
            && out.first() != Some(&b'-')
            && out.len() < self.reply_limit
            && self.tenant.durability().is_none()
        {
            // The socket is non-blocking: a full one takes part or nothing, and the rest waits
            // for the connection.
            if let Ok(n) = (&socket.0).write(&out) {
                served.sent = n;
                bytes::Buf::advance(&mut out, n);
            }
        }
        if out.is_empty() {
            served.delivered = true;
        } else {
            served.reply = Some(out);
        }
        drop(served);
        // Woken either way: the connection ends its wait (and runs what its client sent next).
        self.woken.notify_one();
        true
    }
}

/// The connection's side of a wait.
pub struct Blocked {
    client: Arc<BlockedClient>,
    waiter: Arc<dyn Waiter>,
    keyspace: Arc<Keyspace>,
    deadline: Option<tokio::time::Instant>,
    on_timeout: NullReply,
    /// The command: an incremental migration may move its keys' pattern while the client
    /// waits (it then gets the redirect, as for a cutover); its keys are those of the request
    /// the client keeps.
    spec: &'static CommandSpec,
    /// Left the queues already (no need to take the lock again when dropped).
    done: bool,
    /// CLIENT REPLY OFF (or SKIP) was in force when the command blocked: its late reply is
    /// dropped like any other reply of that command.
    pub drop_reply: bool,
}

/// Why a wait ended.
pub enum Woken {
    /// A write served it, or CLIENT UNBLOCK asked (look at the client to know which).
    Notified,
    TimedOut,
    /// The tenant is not served here any more (cutover, deletion...): the error to answer.
    Refused(ErrorReply),
}

impl Blocked {
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }

    /// The answer for a client whose keys' pattern an incremental migration moved to the other
    /// server while it waited (`None`: its keys are still served here).
    pub fn refused_by_split(
        &self,
        st: &ClientState,
        sh: &Shared,
        tenant: &ferrite_tenancy::Tenant,
    ) -> Option<ErrorReply> {
        let split = tenant.active_split()?;
        let mut keys = self.spec.keys(&self.client.request.args());
        match split.place(Some(&mut keys), false) {
            ferrite_tenancy::Placement::There { key } => {
                Some(crate::errors::key_moved(st, sh, tenant, &split, &key))
            }
            ferrite_tenancy::Placement::Cross { here, there } => {
                Some(crate::errors::cross_server(tenant, &split, here, there))
            }
            _ => None,
        }
    }

    /// Resolves when a write served the client or CLIENT UNBLOCK asked it to stop.
    pub async fn woken(&self) {
        self.client.woken.notified().await
    }

    /// Lets the write that serves the client send its reply on `socket` (the connection has no
    /// output pending and waits).
    pub fn reply_directly(&self, socket: &Arc<ReplySocket>) {
        if self.drop_reply {
            return;
        }
        let mut served = self.client.served.lock();
        if served.socket.is_none() && !served.has_reply() {
            served.socket = Some(socket.clone());
        }
    }

    /// The wait is over for `why`: leaves the queues (under the lock, waited for without
    /// holding the thread) and writes the reply: the served one if a write got there first,
    /// else the one `why` calls for. Returns whether the connection is still blocked (a
    /// spurious wake-up).
    pub async fn finish(&mut self, why: Woken, proto: Protocol, out: &mut BytesMut) -> bool {
        let unblock = match why {
            Woken::Notified => {
                let unblock = *self.client.unblock.lock();
                if !self.client.served.lock().has_reply() && unblock.is_none() {
                    return true;
                }
                unblock
            }
            _ => None,
        };
        if !self.done {
            // A write that served the client took it off every queue already (`Waiter::serve`
            // returned true): only a wait that ended otherwise takes the lock to leave them.
            if !self.client.served.lock().has_reply() {
                self.keyspace.lock_async().await.unblock(&self.waiter);
            }
            self.left();
        }
        // Off the queues: no write serves the client any more, and the socket is the
        // connection's alone again.
        let served = std::mem::take(&mut *self.client.served.lock());
        if served.sent > 0 {
            self.client
                .shared
                .stats
                .net_output_bytes
                .fetch_add(served.sent as u64, Relaxed);
        }
        if let Some(reply) = served.reply {
            out.extend_from_slice(&reply);
            return false;
        }
        if served.delivered {
            return false;
        }
        let mut w = ReplyWriter::new(out, proto);
        match why {
            Woken::Refused(e) => w.error(&e),
            Woken::TimedOut => self.on_timeout.write(&mut w),
            Woken::Notified => match unblock {
                Some(UnblockMode::Error) => w.error(&ErrorReply::coded(
                    "UNBLOCKED",
                    "client unblocked via CLIENT UNBLOCK",
                )),
                _ => self.on_timeout.write(&mut w),
            },
        }
        false
    }

    /// The client is no longer blocked (it left the queues, or will without it).
    fn left(&mut self) {
        self.done = true;
        self.client.no_longer_blocked();
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // However the connection ends, the client leaves the queues: no write may serve (pop
        // for) a connection that is gone. Drop cannot wait for the lock, and a blocking wait
        // could hang the only worker thread (`Keyspace::lock`): marked gone, the waiter is
        // taken off its queues by the next write to one of its keys without popping for it,
        // or by `lock_later` (at once when the lock is free, else by a task that waits).
        if self.done {
            return;
        }
        // No write may send on the socket of a connection that is gone.
        self.client.served.lock().socket = None;
        self.client.gone.store(true, Release);
        self.left();
        let waiter = self.waiter.clone();
        self.keyspace.lock_later(move |db| {
            db.unblock(&waiter);
        });
    }
}

/// Asks a blocked client to stop waiting (CLIENT UNBLOCK). Returns false if it is not blocked.
pub fn request_unblock(info: &crate::shared::ClientInfo, mode: UnblockMode) -> bool {
    let Some(client) = info.blocked.lock().clone() else {
        return false;
    };
    *client.unblock.lock() = Some(mode);
    client.woken.notify_one();
    true
}

/// Runs a blocking command outside MULTI: serves it now, or registers the client as blocked
/// (`st.blocked`; the connection waits before it reads another request).
pub async fn run(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    spec: &'static CommandSpec,
    attempt: AttemptFn,
    args: Args<'_>,
    out: &mut BytesMut,
) -> Result<(), ErrorReply> {
    let tenant = st.tenant.clone();
    let work = Work {
        commands: 1,
        // XREAD is a read: it waits for no permit of the write gate.
        writes: spec.is_write(),
        keys: dispatch::Keys::Command(spec, args),
    };
    let admitted = dispatch::admit_work(st, sh, &tenant, work).await?;
    st.batch.count_tenant_command();
    let ks = tenant.keyspace();
    let now = if admitted.waited {
        ferrite_storage::now_ms()
    } else {
        st.batch.now_ms()
    };
    // As for any data command: an async wait when the tenant is busy, never a blocked worker,
    // and -BUSY while a script runs past busy-reply-threshold.
    let mut db = match ks.try_lock() {
        Some(db) => db,
        None => crate::scripting::or_busy(sh, &tenant, ks.lock_async()).await?,
    };
    if spec.has(flags::DENYOOM) && dispatch::quota_applies(sh, &tenant) {
        dispatch::check_quota(sh, &tenant, &mut db, now, [(spec, args)])?;
    }
    st.batch.wrote |= work.writes;
    let before = out.len();
    let mut garbage = Garbage::default();
    let mut block = None;
    {
        let mut w = ReplyWriter::limited(out, st.proto, st.reply_limit);
        let mut ctx = Ctx {
            db: &mut db,
            w: &mut w,
            now,
            rng: &mut st.rng,
            max_bulk: sh.hot.max_bulk_len.load(Relaxed) as usize,
            garbage: &mut garbage,
            from_script: false,
        };
        ctx.run_with(args, |ctx, args| {
            if let Attempt::Block(b) = attempt(ctx, args, None)? {
                block = Some(b);
            }
            Ok(())
        })?;
    }
    if let Some(b) = block {
        let client = Arc::new(BlockedClient {
            keys: b.keys,
            request: b.retry.unwrap_or_else(|| OwnedRequest::from_args(&args)),
            attempt,
            unblock_on_nokey: b.unblock_on_nokey,
            proto: st.proto,
            max_bulk: sh.hot.max_bulk_len.load(Relaxed) as usize,
            reply_limit: st.reply_limit.saturating_sub(before),
            tenant: tenant.clone(),
            served: Mutex::new(Served::default()),
            unblock: Mutex::new(None),
            woken: Notify::new(),
            gone: AtomicBool::new(false),
            counted: AtomicBool::new(true),
            shared: sh.clone(),
            info: Arc::downgrade(&st.info),
        });
        let waiter: Arc<dyn Waiter> = client.clone();
        // Counted as blocked before a write can serve it (which uncounts it).
        *st.info.blocked.lock() = Some(client.clone());
        sh.stats.blocked_clients.fetch_add(1, Relaxed);
        // Under the same lock as the attempt: a write that comes after it finds the client
        // in the queue.
        db.block(waiter.clone());
        drop(db);
        st.blocked = Some(Blocked {
            client,
            waiter,
            keyspace: ks.clone(),
            deadline: b.timeout.map(|t| {
                tokio::time::Instant::now() + t.min(Duration::from_secs(100 * 365 * 86400))
            }),
            on_timeout: b.on_timeout,
            spec,
            done: false,
            drop_reply: false,
        });
    } else {
        drop(db);
    }
    drop(admitted);
    dispatch::free_later(garbage);
    Ok(())
}
