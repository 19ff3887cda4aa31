//! One client connection: read requests, run them in order, write the replies.
//!
//! Requests are parsed straight out of the input buffer; all complete requests of one read are run
//! before the replies are written with one syscall, which is what makes pipelining cheap. A
//! protocol error is answered and the connection closed, like Redis; nothing a client sends can
//! panic the server or affect other clients.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use ferrite_protocol::request::Next;
use ferrite_protocol::{
    Args, ErrorReply, Limits, OwnedRequest, Protocol, ReplyWriter, RequestDecoder,
};
use ferrite_tenancy::Tenant;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{Instrument, debug, info_span};

use crate::client_memory::ClientMemory;
use crate::dispatch::{self, Batch, Flow};
use crate::input::ReadRoom;
use crate::outline::{cold, outlined};
use crate::shared::{ClientFields, ClientInfo, Shared};

const READ_CHUNK: usize = 16 * 1024;

/// A command queued by MULTI.
pub struct Queued {
    pub index: usize,
    pub request: OwnedRequest,
}

/// A key watched by WATCH: the keyspace it was read from and its version then (None = absent).
pub struct Watched {
    pub keyspace: Arc<ferrite_storage::Keyspace>,
    pub key: Box<[u8]>,
    pub version: Option<u64>,
    /// WATCH ran while a busy script held the keyspace (WATCH is allow-busy, as in Redis), so
    /// the key's state then is unknown: it counts as changed if it was written, or any key was
    /// removed, after the script started at this write version. (Redis would count only the
    /// script's changes after the WATCH; this may abort a transaction Redis would run, never
    /// run one Redis would abort.)
    pub during_script: Option<u64>,
}

impl Watched {
    /// Whether the key changed since it was watched, as EXEC sees it (under the lock of `ks`).
    pub fn changed(
        &self,
        ks: &Arc<ferrite_storage::Keyspace>,
        db: &mut ferrite_storage::Db,
        now: u64,
    ) -> bool {
        if !Arc::ptr_eq(&self.keyspace, ks) {
            return true;
        }
        let current = db.get(&self.key, now).map(|e| e.version());
        match self.during_script {
            None => current != self.version,
            Some(since) => match current {
                Some(v) => v > since,
                None => db.removed_since(since),
            },
        }
    }
}

/// CLIENT REPLY's state, as Redis's CLIENT_REPLY_OFF / _SKIP_NEXT / _SKIP flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    /// CLIENT REPLY OFF: no command replies until CLIENT REPLY ON.
    Off,
    /// CLIENT REPLY SKIP is running: the next command's reply is dropped.
    SkipNext,
    /// The command running now is the one after CLIENT REPLY SKIP: its reply is dropped.
    Skip,
}

/// The per-connection state commands read and change.
pub struct ClientState {
    pub id: u64,
    pub proto: Protocol,
    /// Passed AUTH, or may use the `default` tenant without it (see
    /// [`crate::cmd::anonymous_access`]).
    pub authenticated: bool,
    /// May run administrative commands: only after AUTH with the administrator secret.
    pub admin: bool,
    /// Authenticated as another server of the cluster with the migration token: may run the
    /// internal TENANT.IMPORT.* commands (and nothing administrative).
    pub migration_peer: bool,
    /// The tenant every key command is scoped to.
    pub tenant: Arc<Tenant>,
    /// Authenticated as one of the tenant's ACL users (ACL SETUSER): every command, queued
    /// command and script call is checked against its rules as well (see
    /// [`crate::dispatch::check_acl`]). None for the tenant itself, administrators and
    /// anonymous users, which the rules do not limit.
    pub acl_user: Option<Arc<ferrite_tenancy::acl::AclUser>>,
    /// The running command's error reply was counted for INFO errorstats already (a script
    /// that ends with the error of a call it made, counted when the call failed).
    pub error_counted: bool,
    /// Declared `CLIENT CAPA redirect`: gets `-REDIRECT host:port` instead of tenant MOVED.
    pub capa_redirect: bool,
    /// Commands queued since MULTI, and whether one of them was refused while queuing.
    pub multi: Option<(Vec<Queued>, bool)>,
    /// Bytes held by the copies of the commands queued since MULTI: they count against the
    /// tenant's memory quota and the server's `maxmemory` while queued
    /// ([`crate::dispatch::admit_queued`]).
    pub multi_bytes: u64,
    pub watched: Vec<Watched>,
    /// A server command queued in MULTI is running inside EXEC: its reply is one element of
    /// EXEC's array, so pub/sub messages must not be moved to the output now.
    pub inside_exec: bool,
    /// Close after writing the pending replies.
    pub closing: bool,
    pub info: Arc<ClientInfo>,
    pub rng: SmallRng,
    /// The last command found in the command table (with its index there): looked up again
    /// only when the name differs, and written to `info.fields.last_cmd` only when it changes.
    pub last_cmd: Option<(usize, &'static ferrite_commands::spec::CommandSpec)>,
    /// Clock and counters of the batch being run.
    pub batch: Batch,
    /// The tenant's keyspace as fetched during this batch, with the tenant's keyspace epoch then.
    pub keyspace: Option<(u64, Arc<ferrite_storage::Keyspace>)>,
    /// The tenant's keyspace lock, kept from one data command (or script) of a batch to the
    /// next (see [`crate::dispatch::Held`]); released at the end of the batch and before
    /// anything that may wait or take the lock itself.
    pub held: Option<crate::dispatch::Held>,
    /// What the last rounds' warming learnt: whose keys were all one key (see
    /// [`crate::dispatch::warm_batch`]).
    pub warm_memo: crate::dispatch::WarmMemo,
    /// This connection's unsent replies and input buffer as counted against the tenant's and
    /// the server's client-memory budgets.
    pub memory: ClientMemory,
    /// How long the output buffer may grow while the running command writes (see
    /// [`crate::client_memory`]); data commands write through a writer limited to it.
    pub reply_limit: usize,
    /// Waiting in a blocking command (BLPOP...): the connection runs nothing else until the
    /// wait ends (see [`crate::blocking`]).
    pub blocked: Option<crate::blocking::Blocked>,
    /// A second handle on the socket, made when the connection first blocks: the write that
    /// serves a wait sends the reply on it (see [`crate::blocking::ReplySocket`]).
    pub reply_socket: Option<Arc<crate::blocking::ReplySocket>>,
    /// Pub/sub subscriptions and the mailbox their messages arrive in.
    pub subs: Option<Box<crate::pubsub::Subscriptions>>,
    /// The tenant's channels as PUBLISH last found them in the server's hub (which keeps a
    /// tenant's channels for good once created); forgotten when the connection binds another
    /// tenant.
    pub channels: Option<Arc<crate::pubsub::TenantChannels>>,
    /// CLIENT REPLY: which command replies are dropped (pub/sub messages never are).
    pub reply_mode: ReplyMode,
    /// This connection's id within its tenant while it is one of the tenant's clients (see
    /// [`ClientState::join_tenant`]); mirrored in `info.fields` for CLIENT LIST.
    tenant_client_id: Option<u64>,
}

impl ClientState {
    /// Makes the connection one of `t`'s own clients (AUTH as the tenant; an anonymous user of
    /// `default`): it takes one of the tenant's client slots and gets an id within the tenant.
    /// False, and nothing changed, when the tenant has `maxclients` clients already. A
    /// connection that is one of `t`'s clients already keeps its slot and id.
    #[must_use]
    pub fn join_tenant(&mut self, t: Arc<Tenant>) -> bool {
        if self.is_tenant_client() && Arc::ptr_eq(&t, &self.tenant) {
            return true;
        }
        if !t.try_add_client() {
            return false;
        }
        let id = t.stats.connections_received.fetch_add(1, Relaxed) + 1;
        self.leave_tenant();
        self.bind(t);
        self.tenant_client_id = Some(id);
        self.info.fields.lock().tenant_client_id = Some(id);
        true
    }

    /// Binds the connection to `t` without making it one of the tenant's clients: an
    /// administrator's TENANT.USE, a migration peer, a connection that has not authenticated.
    /// It takes no slot and the tenant does not see it.
    pub fn visit_tenant(&mut self, t: Arc<Tenant>) {
        self.leave_tenant();
        self.bind(t);
    }

    /// Whether the connection is one of its tenant's own clients (see [`ClientState::join_tenant`]).
    #[inline]
    pub fn is_tenant_client(&self) -> bool {
        self.tenant_client_id.is_some()
    }

    /// Gives back the tenant client slot, if the connection holds one.
    fn leave_tenant(&mut self) {
        if self.tenant_client_id.take().is_some() {
            self.info.fields.lock().tenant_client_id = None;
            self.tenant.remove_client();
        }
    }

    fn bind(&mut self, t: Arc<Tenant>) {
        if Arc::ptr_eq(&t, &self.tenant) {
            return;
        }
        self.memory.rebind(&self.tenant, &t);
        self.info.fields.lock().tenant = t.id().into();
        self.tenant = t;
        self.keyspace = None;
        self.held = None;
        self.watched.clear();
        // Channels are per tenant: another tenant's connection starts unsubscribed.
        self.subs = None;
        self.channels = None;
    }

    /// Authenticates the connection as one of its tenant's ACL users (or as none of them);
    /// mirrored in `info.fields` for CLIENT LIST's `user=`.
    pub fn set_acl_user(&mut self, user: Option<Arc<ferrite_tenancy::acl::AclUser>>) {
        if self.acl_user.is_none() && user.is_none() {
            return;
        }
        self.info.fields.lock().acl_user = user.as_ref().map(|u| u.name().into());
        self.acl_user = user;
    }

    /// How this connection sees others in CLIENT LIST / KILL.
    pub fn viewer(&self) -> crate::shared::Viewer<'_> {
        crate::shared::Viewer {
            admin: self.admin,
            tenant: self.tenant.id(),
            id: self.id,
        }
    }

    /// The connection's own id as it knows it (CLIENT ID, HELLO): within its tenant when it
    /// is one of the tenant's clients, else the server-wide one.
    pub fn visible_id(&self) -> u64 {
        match self.tenant_client_id {
            Some(id) if !self.admin => id,
            _ => self.id,
        }
    }

    pub fn set_proto(&mut self, p: Protocol) {
        self.proto = p;
        self.info.fields.lock().resp = match p {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        };
    }
}

impl Drop for ClientState {
    fn drop(&mut self) {
        self.leave_tenant();
        self.memory.release(&self.tenant);
    }
}

/// Serves one accepted connection until it closes, is killed, or the server shuts down.
pub async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let (Ok(addr), Ok(laddr)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let id = shared.next_client_id.fetch_add(1, Relaxed);
    let tenant = shared.registry.default_tenant();
    let info = Arc::new(ClientInfo {
        id,
        addr,
        laddr,
        created: Instant::now(),
        fields: parking_lot::Mutex::new(ClientFields {
            name: String::new(),
            lib_name: String::new(),
            lib_ver: String::new(),
            tenant: tenant.id().into(),
            resp: 2,
            last_cmd: "NULL",
            multi: -1,
            tenant_client_id: None,
            acl_user: None,
        }),
        last_active: parking_lot::Mutex::new(quanta::Instant::now()),
        killed: false.into(),
        interrupt: Default::default(),
        blocked: parking_lot::Mutex::new(None),
    });
    shared.clients.lock().insert(id, info.clone());
    let mut state = ClientState {
        id,
        proto: Protocol::Resp2,
        authenticated: false,
        admin: false,
        migration_peer: false,
        tenant,
        capa_redirect: false,
        multi: None,
        multi_bytes: 0,
        watched: Vec::new(),
        inside_exec: false,
        closing: false,
        info: info.clone(),
        rng: SmallRng::from_rng(&mut rand::rng()),
        last_cmd: None,
        batch: Batch::default(),
        keyspace: None,
        held: None,
        warm_memo: Default::default(),
        memory: ClientMemory::new(&shared),
        reply_limit: usize::MAX,
        blocked: None,
        reply_socket: None,
        subs: None,
        channels: None,
        reply_mode: ReplyMode::On,
        acl_user: None,
        error_counted: false,
        tenant_client_id: None,
    };
    let span = info_span!("conn", id, %addr);
    if crate::cmd::anonymous_access(&shared, &addr) {
        // An anonymous user of the `default` tenant is one of its clients, within its
        // maxclients like any other (Redis refuses connections past maxclients the same way).
        let default = state.tenant.clone();
        if !state.join_tenant(default) {
            drop(state);
            shared.clients.lock().remove(&id);
            shared.stats.connections_rejected.fetch_add(1, Relaxed);
            let mut stream = stream;
            let _ = stream
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
            return;
        }
        state.authenticated = true;
    }
    run(stream, shared.clone(), state).instrument(span).await;
    shared.clients.lock().remove(&id);
}

/// Replies written once per turn of the runtime, as Redis writes them once per turn of its event
/// loop (`beforeSleep`): after a batch, a connection lets the other connections that are ready
/// now run theirs before it writes its replies (`tokio::task::yield_now` defers the task until
/// the runtime has run out of ready tasks and polled the sockets again). Writing each
/// connection's replies as soon as its batch ends wakes a client that went back to sleep after
/// the previous write: redis-benchmark -P16 EVALSHA with 50 connections, client and server
/// pinned to their own cores, was woken 0.35 times per batch against Redis's 0.07, each wakeup
/// costing the server's `sendto` a trip through the scheduler (docs/benchmarks.md, issue 14,
/// "EVALSHA's cycles").
///
/// A pipelined batch (more than one request) waits, and so does a batch of one large request
/// (4 KB or more read): at -P1 with small requests (50 connections, one request each per batch)
/// waiting changed no wakeup count (the client, busier than the server there, was woken as
/// often as by Redis either way) and cost about 365 instructions per request (the task's second
/// poll, the deferred wake); at -P16 it costs about 52 per request. With 16 KB SETs at -P1,
/// replies written as soon as each batch ended had redis-benchmark call `epoll_wait` 0.24–0.60
/// times per request against Redis's 0.09–0.13; waiting brought it to 0.12–0.17, and 365
/// instructions are little next to a 16 KB request (docs/benchmarks.md). A lone request whose
/// replies are large (GET of 16 KB at -P1) waits for the same reason: written at once, they had
/// redis-benchmark call `epoll_wait` 0.16–0.31 times per request against Redis's 0.09–0.16, and
/// 0.10–0.16 waiting in seven runs of eight (docs/benchmarks.md, "The -P1 rows against a
/// control"). Waiting also costs one more poll of the sockets (`epoll_wait` without blocking)
/// per turn, which a connection alone on the server pays per batch for nothing: a connection
/// whose wait saw no other batch run stops waiting, and tries again every 64th turn of its loop.
struct TurnWait;

thread_local! {
    /// Batches run by the connections of this thread: compared across a wait to tell whether
    /// other connections ran meanwhile.
    static BATCHES_RUN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl TurnWait {
    /// A lone request waits too when it is at least this long (bytes read by its batch), or
    /// its replies are (bytes waiting to be written).
    const LARGE: usize = 4096;

    /// Counts a batch of this thread's connections.
    #[inline]
    fn batch_ran() {
        BATCHES_RUN.with(|n| n.set(n.get().wrapping_add(1)));
    }

    /// Lets the connections that are ready run first. Returns whether any batch ran meanwhile
    /// (whether waiting is worth it next time).
    async fn yield_to_ready_connections() -> bool {
        let before = BATCHES_RUN.with(|n| n.get());
        tokio::task::yield_now().await;
        BATCHES_RUN.with(|n| n.get()) != before
    }
}

/// Writes as much pending output as the socket takes without blocking. Returns false when the
/// connection is broken.
fn flush_some(wr: &tokio::net::tcp::WriteHalf<'_>, out: &mut BytesMut, shared: &Shared) -> bool {
    while !out.is_empty() {
        match wr.try_write(out) {
            Ok(0) => return false,
            Ok(n) => {
                shared.stats.net_output_bytes.fetch_add(n as u64, Relaxed);
                consume(out, n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    true
}

/// Drops the first `n` bytes of a buffer. All of them (a whole reply written, every request
/// of a read run: the usual case) only resets its length, so the buffer keeps its start and
/// its whole room; `advance` would move the start on, and the room lost that way must be
/// reclaimed before a later read or reply (about 150 instructions per request at -P1).
#[inline]
fn consume(buf: &mut BytesMut, n: usize) {
    if n >= buf.len() {
        buf.clear();
    } else {
        buf.advance(n);
    }
}

/// The connection loop. Reading and writing are independent: a client that pipelines a huge
/// batch without reading replies is still read from while its replies wait in `out` (bounded by
/// `client_output_buffer_limit`), so neither side can block the other.
async fn run(mut stream: TcpStream, shared: Arc<Shared>, mut state: ClientState) {
    let limits = Limits {
        max_bulk_len: shared.hot.max_bulk_len.load(Relaxed) as usize,
        max_args: shared.config.read().limits.max_args,
    };
    let mut decoder = RequestDecoder::new(limits);
    let mut ahead = Ahead::default();
    let mut room = ReadRoom::default();
    let mut inbuf = room.buffer();
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let info = state.info.clone();
    let (mut rd, wr) = stream.split();
    let mut iterations: u32 = 0;
    // Requests left in `inbuf` when a blocking command ended: run them without waiting for
    // the socket.
    let mut resume = false;
    // Whether this connection's replies wait for the other ready connections' batches (see
    // `TurnWait`): given up while no other connection runs meanwhile, tried again now and then.
    let mut wait_for_turn = true;
    loop {
        if state.subs.is_some() && !deliver_messages(&mut state, &shared, &mut out) {
            return;
        }
        if !flush_some(&wr, &mut out, &shared) {
            return;
        }
        state.memory.sync(&state.tenant, out.len());
        if out.is_empty() && out.capacity() > 4 * 1024 * 1024 {
            // Give back memory after a huge reply instead of keeping it for the connection's life.
            out = BytesMut::with_capacity(READ_CHUNK);
        }
        if state.closing && out.is_empty() {
            let _ = cold(stream.shutdown()).await;
            return;
        }
        room.prepare(&mut inbuf);
        iterations = iterations.wrapping_add(1);
        if iterations.is_multiple_of(64) {
            // The select below is biased towards reading, so a client that keeps its socket
            // readable would never let the kill and shutdown branches be polled: look at their
            // flags now and then instead.
            if info.killed.load(Relaxed) {
                return;
            }
            if shared.is_shutting_down() {
                cold(flush_before_exit(&wr, &mut out, &shared)).await;
                return;
            }
        }
        if let Some(mut blocked) = state.blocked.take() {
            // Blocked clients' code is kept out of the loop's (see `outline`).
            match cold(wait_blocked(
                &mut blocked,
                &mut state,
                &shared,
                &mut rd,
                &wr,
                &mut inbuf,
                &mut out,
            ))
            .await
            {
                Some(why) => {
                    let before = out.len();
                    if cold(blocked.finish(why, state.proto, &mut out)).await {
                        state.blocked = Some(blocked);
                        continue;
                    }
                    // The blocking command's reply (-NOGROUP, -UNBLOCKED...) is written only now.
                    if out.get(before) == Some(&b'-') {
                        dispatch::count_error(&state, &shared, &out[before..]);
                        if let Some((index, _)) = state.last_cmd {
                            dispatch::count_outcome(
                                &state,
                                &shared,
                                index,
                                dispatch::Outcome::Failed,
                            );
                        }
                    }
                    // CLIENT REPLY OFF/SKIP when it blocked: counted, not sent (as in Redis).
                    if blocked.drop_reply {
                        out.truncate(before);
                    }
                    // A served pop is a write: it is durable before the reply goes out.
                    state.batch.wrote = true;
                    *info.last_active.lock() = state.batch.start();
                    resume = true;
                }
                None => return,
            }
        }
        let reading = !state.closing;
        let offered = ReadRoom::offered(&inbuf);
        let mailbox = state.subs.as_ref().map(|s| (s.mailbox.clone(), s.active()));
        if std::mem::take(&mut resume) {
            // Run what was read while blocked (or behind the blocking command).
        } else {
            tokio::select! {
                // With `biased` the socket is polled first and the others only when nothing can
                // be read.
                biased;
                r = rd.read_buf(&mut inbuf), if reading => match r {
                    Ok(0) | Err(_) => {
                        // The peer is gone (or half-closed): deliver what is pending, then stop.
                        let _ = cold(tokio::time::timeout(std::time::Duration::from_secs(1), flush_all(&wr, &mut out, &shared))).await;
                        return;
                    }
                    Ok(n) => {
                        room.observe(offered, n);
                        shared.stats.net_input_bytes.fetch_add(n as u64, Relaxed);
                        *info.last_active.lock() = state.batch.start();
                    }
                },
                w = wr.writable(), if !out.is_empty() => {
                    if w.is_err() {
                        return;
                    }
                    continue;
                }
                _ = interrupted(&info, &shared) => {
                    if !info.killed.load(Relaxed) {
                        cold(flush_before_exit(&wr, &mut out, &shared)).await;
                    }
                    return;
                }
                _ = subscriber_wake(mailbox, &state.tenant) => {
                    // Mail arrived. Like Redis, which writes a subscriber's messages once per
                    // turn of its event loop, let the connections that are ready meanwhile (more
                    // publishers) run first: one write then carries everything they published,
                    // instead of one write per message (perf: 0.7 extra sends per PUBLISH to one
                    // subscriber, against 0.06 for redis-server).
                    tokio::task::yield_now().await;
                    continue;
                }
            }
        }

        let mut consumed = 0;
        // Requests run by this batch (over all its rounds).
        let mut batch_requests = 0usize;
        let mut protocol_error = None;
        let mut stop = false;
        // Decoded a round of requests at a time (see `Ahead`), warmed, then run in order.
        'rounds: loop {
            // Before AUTH, Redis's pre-authentication request limits apply: a round is decoded
            // with the connection's state at its start, and what follows a command that changed
            // it (AUTH, HELLO, RESET) is decoded again.
            let authenticated = state.authenticated;
            decoder.set_authenticated(authenticated);
            let round_error = ahead.decode(&mut decoder, &inbuf, consumed);
            // A lone request is warmed when it may name several keys (MSET k v k v, MGET
            // k k k...): their lookups' misses overlap too. With fewer arguments it names one
            // key at most, whose lookup has nothing to overlap with.
            if ahead.requests.len() > 1
                || ahead
                    .requests
                    .first()
                    .and_then(|r| r.args)
                    .is_some_and(|(from, to)| to - from >= 4)
            {
                dispatch::warm_batch(&mut state, ahead.all(&inbuf));
            }
            let mut ran = 0;
            for &request in &ahead.requests {
                ran += 1;
                batch_requests += 1;
                consumed = request.end;
                let Some(args) = ahead.args(&inbuf, request) else {
                    continue; // an empty request, skipped like Redis
                };
                let (limit, budget) = state.memory.reply_limit(&shared, &state.tenant, out.len());
                state.reply_limit = limit;
                let flow = dispatch::execute(&mut state, &shared, args, &mut out).await;
                // Reaching the limit means the reply was cut short (the writer dropped the
                // rest): it must never be sent. Redis closes such clients too.
                if out.len() >= limit {
                    shared.stats.output_limit_disconnects.fetch_add(1, Relaxed);
                    tracing::warn!(
                        bytes = out.len(),
                        limit = budget.name(),
                        "output buffer limit reached; closing the connection"
                    );
                    stop = true;
                    break 'rounds;
                }
                if let Some(subs) = &state.subs {
                    // As in Redis 7.2, messages that reached a subscribed connection while its
                    // command ran (its own PUBLISH, in EXEC or a script too) follow the
                    // command's reply, before the next command's.
                    if out.len() < crate::client_memory::SMALL_OUTPUT as usize {
                        subs.mailbox.drain_into(&mut out);
                    }
                }
                if flow == Flow::Close || state.closing {
                    state.closing = true;
                    break;
                }
                if info.killed.load(Relaxed) {
                    stop = true;
                    break 'rounds;
                }
                if state.blocked.is_some() {
                    // The rest of the input waits until the blocking command ends.
                    break;
                }
                if state.authenticated != authenticated {
                    break;
                }
            }
            if ran < ahead.requests.len() || state.authenticated != authenticated {
                // What follows the last request run is decoded again: later (the decoder
                // resumes only where its last call stopped), or now under the new limits.
                decoder.reset();
                if state.closing || state.blocked.is_some() {
                    break;
                }
                continue;
            }
            if state.closing || state.blocked.is_some() {
                break;
            }
            match round_error {
                Some(e) => {
                    protocol_error = Some(e);
                    break;
                }
                None if ahead.full() => continue,
                None => break,
            }
        }
        ahead.shrink();
        decoder.shrink(Ahead::KEEP * std::mem::size_of::<(usize, usize)>());
        TurnWait::batch_ran();
        // The batch is over: other connections get their turn at the tenant.
        state.held = None;
        // Writes are durable (per the fsync policy) before their replies go out, and under
        // `always` so is every write a reply may reflect. (Checked here first: a batch with
        // nothing to wait for does not build the future.)
        if let Some(settle) = dispatch::settle_before_replies(&mut state)
            && let Err(e) = outlined(settle.run()).await
        {
            dispatch::abandon_batch(&mut state, &mut out, &e);
            return;
        }
        // Before the replies go out, so that whoever reads a reply also sees it counted.
        let tenant_client = state.is_tenant_client();
        state.batch.flush(&shared, &state.tenant, tenant_client);
        state.memory.sync(&state.tenant, out.len());
        state.keyspace = None;
        if stop {
            return;
        }
        consume(&mut inbuf, consumed);
        // A request is read whole before it runs: what a client has sent of one is bounded
        // like its replies are (see `client_memory`).
        let held = if inbuf.is_empty() {
            0
        } else {
            inbuf.capacity() + decoder.scratch_bytes()
        };
        if state.memory.input_needs_check(held, inbuf.len())
            && let Some(budget) =
                state
                    .memory
                    .check_input(&shared, &state.tenant, held, inbuf.len())
        {
            cold_input_limit(&shared, budget, inbuf.len());
            return;
        }
        if let Some(e) = protocol_error {
            shared.stats.protocol_errors.fetch_add(1, Relaxed);
            debug!(error = %e, "protocol error; closing");
            ReplyWriter::new(&mut out, state.proto).error(&ErrorReply::err(&e));
            state.closing = true;
        }
        if (batch_requests > 1 || consumed >= TurnWait::LARGE || out.len() >= TurnWait::LARGE)
            && !out.is_empty()
            && !state.closing
            && (wait_for_turn || iterations.is_multiple_of(64))
        {
            wait_for_turn = TurnWait::yield_to_ready_connections().await;
        }
    }
}

/// A connection's unfinished request or input buffer reached `budget`: it is closed without a
/// reply (as Redis closes a client past its query buffer limit), and counted.
#[cold]
#[inline(never)]
fn cold_input_limit(shared: &Shared, budget: crate::client_memory::Budget, unfinished: usize) {
    shared.stats.query_limit_disconnects.fetch_add(1, Relaxed);
    tracing::warn!(
        bytes = unfinished,
        limit = budget.name(),
        "input buffer limit reached; closing the connection"
    );
}

/// The requests of a round: up to [`Ahead::ROUND`] complete requests decoded from the input
/// buffer before any of them runs, so that the keys they name can be brought into the cache
/// together ([`dispatch::warm_batch`]) instead of each lookup waiting for its own cache misses
/// (the -P16 rows of issue 13). Their arguments are positions in the input buffer, which does
/// not change while they run.
#[derive(Default)]
struct Ahead {
    /// The round's requests in order.
    requests: Vec<Decoded>,
    /// The arguments of all of them, as positions in the input buffer (or in `inline`).
    ranges: Vec<(usize, usize)>,
    /// The arguments of inline requests (`PING\r\n`), whose quotes and escapes make them
    /// differ from the input.
    inline: Vec<u8>,
}

/// One request of a round.
#[derive(Clone, Copy)]
struct Decoded {
    /// Its arguments: a range of [`Ahead::ranges`]; None for an empty request (skipped, as in
    /// Redis).
    args: Option<(usize, usize)>,
    /// Its arguments are in [`Ahead::inline`], not in the input buffer.
    inline: bool,
    /// Where it ends in the input buffer.
    end: usize,
}

impl Ahead {
    /// Requests decoded per round: about a pipelined batch (redis-benchmark -P16 sends 16),
    /// and what one hold of the keyspace lock serves ([`dispatch::Held::MAX_COMMANDS`]).
    const ROUND: usize = 32;
    /// Argument positions and inline bytes kept between rounds; a request with more gets
    /// memory of its own, given back after its batch.
    const KEEP: usize = 4096;

    /// Decodes the complete requests of `inbuf` from `at` on, up to [`Ahead::ROUND`] of them.
    /// A protocol error ends the round: it is returned, to be answered after the requests
    /// before it have run.
    fn decode(
        &mut self,
        decoder: &mut RequestDecoder,
        inbuf: &[u8],
        mut at: usize,
    ) -> Option<ferrite_protocol::ProtocolError> {
        self.requests.clear();
        self.ranges.clear();
        self.inline.clear();
        while self.requests.len() < Self::ROUND {
            let inline = inbuf.get(at).is_some_and(|&b| b != b'*');
            match decoder.decode(&inbuf[at..]) {
                Ok(Next::Incomplete) => break,
                Ok(Next::Skip(k)) => {
                    at += k;
                    self.requests.push(Decoded {
                        args: None,
                        inline: false,
                        end: at,
                    });
                }
                Ok(Next::Request(p)) => {
                    let first = self.ranges.len();
                    let (data, ranges) = p.args.parts();
                    // Multibulk arguments are in the buffer (from `at` on); inline ones in the
                    // decoder's scratch, which the next request overwrites: copied.
                    let base = if inline {
                        let base = self.inline.len();
                        self.inline.extend_from_slice(data);
                        base
                    } else {
                        at
                    };
                    self.ranges
                        .extend(ranges.iter().map(|&(s, e)| (base + s, base + e)));
                    at += p.consumed;
                    self.requests.push(Decoded {
                        args: Some((first, self.ranges.len())),
                        inline,
                        end: at,
                    });
                }
                Err(e) => return Some(e),
            }
        }
        None
    }

    /// Whether the round stopped at its size rather than at the end of the input.
    fn full(&self) -> bool {
        self.requests.len() == Self::ROUND
    }

    /// The arguments of one of the round's requests.
    fn args<'a>(&'a self, inbuf: &'a [u8], request: Decoded) -> Option<Args<'a>> {
        let (from, to) = request.args?;
        let data = if request.inline { &self.inline } else { inbuf };
        Some(Args::new(data, &self.ranges[from..to]))
    }

    /// The round's requests.
    fn all<'a>(&'a self, inbuf: &'a [u8]) -> impl Iterator<Item = Args<'a>> + Clone {
        self.requests
            .iter()
            .filter_map(move |&r| self.args(inbuf, r))
    }

    /// Gives back the memory of a request with very many arguments.
    fn shrink(&mut self) {
        if self.ranges.capacity() > Self::KEEP {
            self.ranges = Vec::new();
        }
        if self.inline.capacity() > Self::KEEP {
            self.inline = Vec::new();
        }
    }
}

/// Moves a subscriber's messages to its output while that is small (the backlog waits in the
/// mailbox, where the pub/sub limit applies), and ends the subscription with the redirect when
/// its tenant is no longer served here. Returns false when the connection must be closed at
/// once (its mailbox passed the limit).
fn deliver_messages(state: &mut ClientState, shared: &Arc<Shared>, out: &mut BytesMut) -> bool {
    let Some(subs) = state.subs.as_ref() else {
        return true;
    };
    if subs.mailbox.overflowed() {
        shared.stats.output_limit_disconnects.fetch_add(1, Relaxed);
        tracing::warn!("pub/sub output buffer limit reached; closing the subscriber");
        return false;
    }
    if out.len() < crate::client_memory::SMALL_OUTPUT as usize {
        subs.mailbox.drain_into(out);
    }
    if !subs.active() {
        // Unsubscribed from everything: the mailbox goes once it is empty.
        if subs.mailbox.is_empty() {
            state.subs = None;
        }
    } else {
        if let Err(e) = crate::dispatch::check_ownership(state, shared, &state.tenant) {
            // The client must resubscribe on the tenant's new home: tell it where, and close.
            state.subs = None;
            ReplyWriter::new(out, state.proto).error(&e);
            state.closing = true;
        }
    }
    true
}

/// Resolves when a subscriber has mail or (while it is subscribed) its tenant's state changed;
/// never without a mailbox.
async fn subscriber_wake(mailbox: Option<(Arc<crate::pubsub::Mailbox>, bool)>, tenant: &Tenant) {
    let Some((m, subscribed)) = mailbox else {
        return std::future::pending().await;
    };
    if !subscribed {
        return m.wait().await;
    }
    let changed = tenant.state_changed().notified();
    tokio::pin!(changed);
    changed.as_mut().enable();
    if tenant.state() != ferrite_tenancy::TenantState::Active || tenant.is_deleted() {
        return;
    }
    tokio::select! {
        _ = m.wait() => {}
        _ = changed => {}
    }
}

/// Bytes a blocked client may send before it is no longer read (Redis keeps reading a blocked
/// client's socket too; it runs what was sent after the wait).
const BLOCKED_INPUT_LIMIT: usize = 1024 * 1024;

/// Waits until a blocked client's wait ends; meanwhile delivers pending output and reads the
/// socket (a client that closes is noticed at once and leaves the queues). `None`: the
/// connection ends (closed, killed, shutdown; the wait is abandoned when `blocked` drops).
#[allow(clippy::too_many_arguments)]
async fn wait_blocked(
    blocked: &mut crate::blocking::Blocked,
    state: &mut ClientState,
    shared: &Arc<Shared>,
    rd: &mut tokio::net::tcp::ReadHalf<'_>,
    wr: &tokio::net::tcp::WriteHalf<'_>,
    inbuf: &mut BytesMut,
    out: &mut BytesMut,
) -> Option<crate::blocking::Woken> {
    use crate::blocking::Woken;
    let tenant = state.tenant.clone();
    loop {
        if !flush_some(wr, out, shared) {
            return None;
        }
        state.memory.sync(&state.tenant, out.len());
        if out.is_empty() {
            if state.reply_socket.is_none() {
                state.reply_socket = crate::blocking::ReplySocket::new(wr.as_ref());
            }
            if let Some(socket) = &state.reply_socket {
                blocked.reply_directly(socket);
            }
        }
        // Registered before the state is looked at, so a cutover in between is not missed.
        let changed = tenant.state_changed().notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Err(e) = crate::dispatch::check_ownership(state, shared, &tenant) {
            return Some(Woken::Refused(e));
        }
        if let Some(e) = blocked.refused_by_split(state, shared, &tenant) {
            return Some(Woken::Refused(e));
        }
        let deadline = blocked.deadline();
        let reading = inbuf.len() < BLOCKED_INPUT_LIMIT;
        if inbuf.capacity() - inbuf.len() < READ_CHUNK / 2 && reading {
            inbuf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            _ = blocked.woken() => return Some(Woken::Notified),
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                return Some(Woken::TimedOut);
            }
            _ = &mut changed => continue,
            r = rd.read_buf(inbuf), if reading => match r {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    shared.stats.net_input_bytes.fetch_add(n as u64, Relaxed);
                }
            },
            w = wr.writable(), if !out.is_empty() => {
                if w.is_err() {
                    return None;
                }
            }
            _ = interrupted(&state.info, shared) => {
                if !state.info.killed.load(Relaxed) {
                    flush_before_exit(wr, out, shared).await;
                }
                return None;
            }
        }
    }
}

/// Resolves once the connection is killed (CLIENT KILL, the idle timeout) or the server shuts
/// down (see [`crate::shared::Interrupt`]).
fn interrupted<'a>(
    info: &'a ClientInfo,
    shared: &'a Shared,
) -> impl std::future::Future<Output = ()> + 'a {
    std::future::poll_fn(move |cx| info.interrupt.poll(cx, &info.killed, shared))
}

/// Delivers the replies already produced when the server shuts down, for as long as the server
/// itself waits for its connections (`shutdown_timeout_ms`): a client reading a large pipelined
/// reply slowly still gets all of it.
async fn flush_before_exit(
    wr: &tokio::net::tcp::WriteHalf<'_>,
    out: &mut BytesMut,
    shared: &Shared,
) {
    let limit = std::time::Duration::from_millis(shared.config.read().server.shutdown_timeout_ms);
    let _ = tokio::time::timeout(limit, flush_all(wr, out, shared)).await;
}

/// Writes all pending output (used when stopping).
async fn flush_all(wr: &tokio::net::tcp::WriteHalf<'_>, out: &mut BytesMut, shared: &Shared) {
    while !out.is_empty() {
        if wr.writable().await.is_err() || !flush_some(wr, out, shared) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> RequestDecoder {
        RequestDecoder::new(Limits::default())
    }

    fn words(a: &Ahead, inbuf: &[u8]) -> Vec<Vec<String>> {
        a.requests
            .iter()
            .map(|&r| match a.args(inbuf, r) {
                Some(args) => args
                    .iter()
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect(),
                None => vec![],
            })
            .collect()
    }

    /// A round keeps every request's arguments (multibulk ones as positions in the buffer,
    /// inline ones copied, empty lines as skips) and where each ends; it stops at the first
    /// incomplete request, which the decoder then resumes.
    #[test]
    fn a_round_decodes_every_complete_request_in_order() {
        let inbuf = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\nSET \"b c\" d\r\n\r\n*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET";
        let mut d = decoder();
        let mut a = Ahead::default();
        assert!(a.decode(&mut d, inbuf, 0).is_none());
        assert_eq!(
            words(&a, inbuf),
            vec![
                vec!["GET".to_string(), "a".into()],
                vec!["SET".into(), "b c".into(), "d".into()],
                vec![],
                vec!["PING".into()],
            ]
        );
        let ends: Vec<usize> = a.requests.iter().map(|r| r.end).collect();
        assert_eq!(ends, vec![20, 33, 35, 49]);
        assert!(!a.full());
        // The incomplete GET, completed: decoded from where the round stopped.
        let mut more = inbuf.to_vec();
        more.extend_from_slice(b"\r\n$1\r\nz\r\n");
        assert!(a.decode(&mut d, &more, 49).is_none());
        assert_eq!(words(&a, &more), vec![vec!["GET".to_string(), "z".into()]]);
        assert_eq!(a.requests[0].end, more.len());
    }

    /// A protocol error ends the round after the requests before it, which still run.
    #[test]
    fn a_protocol_error_is_returned_after_the_requests_before_it() {
        let inbuf = b"*1\r\n$4\r\nPING\r\n*1\r\n+PING\r\n*1\r\n$4\r\nPING\r\n";
        let mut a = Ahead::default();
        let e = a.decode(&mut decoder(), inbuf, 0);
        assert_eq!(e.map(|e| e.0), Some("expected '$', got '+'".to_string()));
        assert_eq!(words(&a, inbuf), vec![vec!["PING".to_string()]]);
    }

    /// A round holds at most `ROUND` requests; the rest of a longer pipeline is the next round's.
    #[test]
    fn a_round_stops_at_its_size() {
        let one = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let inbuf = one.repeat(Ahead::ROUND + 3);
        let mut d = decoder();
        let mut a = Ahead::default();
        assert!(a.decode(&mut d, &inbuf, 0).is_none());
        assert!(a.full());
        assert_eq!(a.requests.len(), Ahead::ROUND);
        let end = a.requests[Ahead::ROUND - 1].end;
        assert_eq!(end, one.len() * Ahead::ROUND);
        assert!(a.decode(&mut d, &inbuf, end).is_none());
        assert_eq!(a.requests.len(), 3);
        assert_eq!(a.all(&inbuf).count(), 3);
    }

    /// The memory of a request with very many arguments is given back after its batch.
    #[test]
    fn a_huge_request_does_not_keep_its_memory() {
        let n = Ahead::KEEP + 1;
        let mut inbuf = format!("*{n}\r\n").into_bytes();
        for _ in 0..n {
            inbuf.extend_from_slice(b"$1\r\nx\r\n");
        }
        let mut a = Ahead::default();
        assert!(a.decode(&mut decoder(), &inbuf, 0).is_none());
        assert_eq!(a.all(&inbuf).next().map(|args| args.len()), Some(n));
        a.shrink();
        assert_eq!(a.ranges.capacity(), 0);
    }

    /// A connection's wait for its turn tells whether another connection's batch ran meanwhile:
    /// alone it did not (and the connection stops waiting), with another ready task it did.
    #[test]
    fn a_turn_wait_sees_whether_other_batches_ran() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            assert!(!TurnWait::yield_to_ready_connections().await);
            let other = tokio::spawn(async { TurnWait::batch_ran() });
            assert!(TurnWait::yield_to_ready_connections().await);
            other.await.expect("the other task");
            assert!(!TurnWait::yield_to_ready_connections().await);
        });
    }
}
