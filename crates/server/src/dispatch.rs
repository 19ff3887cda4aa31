//! Running one command: the single place that decides whether it may run (authentication,
//! administrator rights, MULTI queueing, tenant ownership, throttle, write gate, quotas) and then
//! runs it, recording statistics.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::BytesMut;
use ferrite_commands::quota;
use ferrite_commands::spec::{CommandSpec, flags};
use ferrite_commands::{Ctx, DataFn, Garbage, Handler, cost, lookup_indexed};
use ferrite_protocol::{Args, ErrorReply, OwnedRequest, Protocol, ReplyWriter};
use ferrite_storage::{Db, Keyspace};
use ferrite_tenancy::{Admission, PatternSplit, Placement, Tenant, TenantState, WritePermit};
use rand::rngs::SmallRng;

use crate::acl_log::Context as AclContext;
use crate::cmd;
use crate::connection::{ClientState, Queued};
use crate::errors;
use crate::outline::{cold, outlined};
use crate::shared::Shared;
use crate::stats::CommandTally;

/// What the connection should do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Write pending replies and close.
    Close,
}

/// Runs one request and writes its reply into `out`, unless CLIENT REPLY drops it (as in
/// Redis, the replies of the pub/sub commands are pushes and always go out).
pub async fn execute(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
) -> Flow {
    use crate::connection::ReplyMode;
    let before = out.len();
    let flow = execute_command(st, sh, args, out).await;
    st.batch.ran = true;
    if !std::mem::take(&mut st.error_counted) {
        count_error(st, sh, &out[before..]);
    }
    let drop_reply = match st.reply_mode {
        ReplyMode::On => false,
        ReplyMode::Off => true,
        ReplyMode::Skip => {
            st.reply_mode = ReplyMode::On;
            true
        }
        // CLIENT REPLY SKIP just ran (it has no reply): the next command's is dropped.
        ReplyMode::SkipNext => {
            st.reply_mode = ReplyMode::Skip;
            true
        }
    };
    if drop_reply && !pushes_reply(args.get(0)) {
        out.truncate(before);
        // A command that blocked replies later: that reply is dropped too.
        if let Some(b) = st.blocked.as_mut() {
            b.drop_reply = true;
        }
    }
    flow
}

/// INFO errorstats: counts `reply` if it is an error, by code, for the server and for the
/// tenant of one of its own clients.
pub fn count_error(st: &ClientState, sh: &Shared, reply: &[u8]) {
    if let Some(text) = reply.strip_prefix(b"-") {
        sh.cmd_stats.errors.count(text);
        if st.is_tenant_client() {
            st.tenant.stats.errors.count(text);
        }
    }
}

/// How a command went wrong, as INFO commandstats counts it.
#[derive(Clone, Copy)]
pub enum Outcome {
    /// Refused before running (`rejected_calls`).
    Rejected,
    /// Counted as a call, then answered with an error (`failed_calls`), e.g. a blocking
    /// command whose wait ended in an error.
    Failed,
}

/// Counts `outcome` for command `index`: for the server and, for the tenant's own clients,
/// for the tenant.
pub fn count_outcome(st: &ClientState, sh: &Shared, index: usize, outcome: Outcome) {
    if let Some(s) = sh.cmd_stats.get(index) {
        match outcome {
            Outcome::Rejected => &s.rejected,
            Outcome::Failed => &s.failed,
        }
        .fetch_add(1, Relaxed);
    }
    if st.is_tenant_client() {
        let per_tenant = st
            .tenant
            .stats
            .command_counters(sh.cmd_stats.by_command.len());
        if let Some(c) = per_tenant.get(index) {
            match outcome {
                Outcome::Rejected => &c.rejected,
                Outcome::Failed => &c.failed,
            }
            .fetch_add(1, Relaxed);
        }
    }
}

/// The pub/sub commands, whose replies Redis sends as pushes (never dropped by CLIENT REPLY).
fn pushes_reply(name: &[u8]) -> bool {
    [
        &b"subscribe"[..],
        b"unsubscribe",
        b"psubscribe",
        b"punsubscribe",
        b"ssubscribe",
        b"sunsubscribe",
    ]
    .iter()
    .any(|c| name.eq_ignore_ascii_case(c))
}

async fn execute_command(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
) -> Flow {
    st.batch.commands += 1;
    // Clients mostly repeat one command: comparing the name with the previous one is cheaper
    // than hashing it.
    let found = match st.last_cmd {
        Some((i, spec)) if args.get(0).eq_ignore_ascii_case(spec.name.as_bytes()) => {
            Some((i, spec))
        }
        _ => lookup_indexed(args.get(0)),
    };
    let Some((index, spec)) = found else {
        return unknown_command(st, &args, out);
    };
    // CLIENT LIST shows the last command; a run of one command takes the lock once.
    if st.last_cmd.is_none_or(|(i, _)| i != index) {
        st.info.fields.lock().last_cmd = spec.name;
        st.last_cmd = Some((index, spec));
    }
    // ACL DELUSER removed the user this connection authenticated as: it is closed, as Redis
    // closes such connections.
    if st.acl_user.as_ref().is_some_and(|u| u.is_deleted()) {
        st.closing = true;
        return Flow::Close;
    }
    // The refusals below are rare: their code is kept out of the way (`#[cold]` functions) so
    // that the path every command takes stays short in the instruction cache.
    if let Err(e) = admit(st, sh, index, spec, &args) {
        return refused(st, sh, index, spec, e, out);
    }
    if crate::pubsub::in_resp2_subscribed_mode(st)
        && let Some(flow) = refused_in_subscribed_mode(st, spec, out)
    {
        return flow;
    }
    // While the tenant's script has run past busy-reply-threshold, its other clients may only
    // run what Redis flags allow-busy (SCRIPT KILL, MULTI, ...).
    if let Some(e) = crate::scripting::refuse_while_busy(sh, &st.tenant, spec.name, &args) {
        return refused_while_busy(st, sh, index, spec, e, out);
    }
    if st.multi.is_some()
        && let Some(flow) = queue_in_multi(st, sh, index, spec, &args, out)
    {
        return flow;
    }
    let before = out.len();
    let flow = match spec.handler {
        Handler::Server => {
            // Server commands may wait, or take the tenant's lock themselves (EXEC, WATCH):
            // only those that run like data commands keep it.
            let like_data = cmd::handler(index).is_some_and(|c| c.like_data);
            if !like_data {
                st.held = None;
            }
            // Server commands read and reset the shared counters (INFO, CONFIG RESETSTAT) and
            // may bind another tenant: they see every command that ran before them. Those that
            // run like data commands (PUBLISH, scripts) leave the counts to the batch's end.
            if !like_data {
                st.batch.flush(sh, &st.tenant, st.is_tenant_client());
            }
            // ... and they may bind another tenant or report what ran: the batch so far is
            // settled first (its writes made durable, under `always` what it read too: see
            // `settle_before_replies`). A script needs not (it is settled at the batch's end, as
            // data commands are); PUBLISH does, so that no subscriber hears of a write that is
            // not yet durable. Waiting for durability holds no lock.
            if crate::scripting::script_call(spec.name).is_none()
                && let Some(settle) = settle_before_replies(st)
            {
                st.held = None;
                if let Err(e) = outlined(settle.run()).await {
                    return abandon_batch(st, out, &e);
                }
            }
            // Out of line (as the other rare paths below): the data commands' path stays short.
            match outlined(cmd::run(st, sh, index, args, out)).await {
                Ok(flow) => flow,
                Err(e) => {
                    ReplyWriter::new(out, st.proto).error(&e);
                    Flow::Continue
                }
            }
        }
        Handler::Data(f) => {
            let result = match ferrite_commands::blocking::attempt_for(index, &args) {
                Some(attempt) => {
                    st.held = None;
                    outlined(crate::blocking::run(st, sh, spec, attempt, args, out)).await
                }
                None => run_data(st, sh, index, spec, f, args, out).await,
            };
            if let Err(e) = result {
                ReplyWriter::new(out, st.proto).error(&e);
            }
            Flow::Continue
        }
    };
    crate::pubsub::feed_monitors(sh, st, spec, &args);
    let failed = out.get(before) == Some(&b'-');
    let nanos = st.batch.lap();
    st.batch.tally(index, nanos, failed);
    sh.diagnostics.observe(st, sh, spec, &args, nanos);
    flow
}

/// The clock and the counters of one batch: the requests that one read delivered.
///
/// Reading the clock costs about 25 ns with `std::time::Instant` on the virtual machines we
/// measured and 10 ns with `quanta`'s (the TSC read directly, calibrated once at startup), a
/// noticeable part of what a pipelined GET costs (0.7 µs), and the shared counters are written
/// by every worker thread, so each update of one moves a cache line between cores. So a batch
/// reads the wall clock once, each command reads the monotonic clock once (its end is the next
/// command's start), and the counters are added to the shared ones when the batch ends, before
/// its replies are written, or before a server command (which may read them) runs.
pub struct Batch {
    /// The wall clock (Unix ms) when the batch started.
    started_ms: u64,
    /// When the running command started: the end of the previous one, or the batch start.
    mark: quanta::Instant,
    /// Nanoseconds from the batch start to `mark` (the sum of the laps: cheaper than subtracting
    /// instants).
    elapsed_nanos: u64,
    /// Commands of this batch not yet added to `commands_processed`.
    commands: u64,
    /// Data commands not yet added to the tenant's `commands`.
    pub(crate) tenant_commands: u64,
    /// A write ran since the last commit: its effects must be durable (per the fsync policy)
    /// before its reply goes out ([`settle_before_replies`]).
    pub wrote: bool,
    /// A command ran since the replies were last settled: under `always` its reply may reflect
    /// other connections' writes not yet on disk ([`settle_before_replies`]). Without it there
    /// is no reply to hold: a read that ended inside a request (its rest not arrived yet) does
    /// not wait for others' fsync before reading on.
    pub ran: bool,
    /// Runs not yet added to `cmd_stats`, by command index (a batch rarely has more than two
    /// distinct commands, so a linear search beats a map).
    tallies: Vec<(usize, CommandTally)>,
}

impl Default for Batch {
    fn default() -> Self {
        let now = quanta::Instant::now();
        Batch {
            started_ms: ferrite_storage::now_ms(),
            mark: now,
            elapsed_nanos: 0,
            commands: 0,
            tenant_commands: 0,
            wrote: false,
            ran: false,
            tallies: Vec::new(),
        }
    }
}

impl Batch {
    /// Starts a batch (data has just been read); returns the time.
    pub fn start(&mut self) -> quanta::Instant {
        let now = quanta::Instant::now();
        self.mark = now;
        self.elapsed_nanos = 0;
        self.started_ms = ferrite_storage::now_ms();
        now
    }

    /// Unix ms at the start of the running command: the batch's wall clock advanced by the
    /// monotonic time since (a wall clock step shows from the next batch on).
    pub(crate) fn now_ms(&self) -> u64 {
        self.started_ms + self.elapsed_nanos / 1_000_000
    }

    /// Counts a data command against the tenant (added to its counter when the batch ends).
    pub(crate) fn count_tenant_command(&mut self) {
        self.tenant_commands += 1;
    }

    /// Ends the running command; returns how long it took in nanoseconds.
    fn lap(&mut self) -> u64 {
        let now = quanta::Instant::now();
        let nanos = now.saturating_duration_since(self.mark).as_nanos() as u64;
        self.mark = now;
        self.elapsed_nanos += nanos;
        nanos
    }

    fn tally(&mut self, index: usize, nanos: u64, failed: bool) {
        tally(&mut self.tallies, index, nanos, failed);
    }

    /// The batch's uncounted runs, lent to a script's [`crate::scripting::Caller`] so its
    /// calls are counted with the batch's (added to the shared counters once per batch, not
    /// once per script). Give them back with [`Batch::return_tallies`].
    pub(crate) fn lend_tallies(&mut self) -> Vec<(usize, CommandTally)> {
        std::mem::take(&mut self.tallies)
    }

    pub(crate) fn return_tallies(&mut self, tallies: Vec<(usize, CommandTally)>) {
        self.tallies = tallies;
    }

    /// Adds the batch's counts to the shared counters. `tenant` is the tenant the batch's data
    /// commands ran for (the connection's; only server commands rebind it, and they flush first);
    /// the per-command counts go to its own counters too when the connection is one of its
    /// clients (`tenant_client`): what an administrator runs inside a tenant is not the
    /// tenant's to see.
    pub fn flush(&mut self, sh: &Shared, tenant: &Tenant, tenant_client: bool) {
        if self.commands > 0 {
            sh.stats
                .commands_processed
                .fetch_add(self.commands, Relaxed);
            self.commands = 0;
        }
        if self.tenant_commands > 0 {
            tenant
                .stats
                .commands
                .fetch_add(self.tenant_commands, Relaxed);
            self.tenant_commands = 0;
        }
        if self.tallies.is_empty() {
            return;
        }
        add_tallies(sh, tenant_client.then_some(tenant), self.tallies.drain(..));
    }
}

/// Counts one run of command `index` in `tallies` (runs counted locally before
/// [`add_tallies`]; a batch or a script rarely runs more than a few distinct commands, so a
/// linear search beats a map).
pub(crate) fn tally(
    tallies: &mut Vec<(usize, CommandTally)>,
    index: usize,
    nanos: u64,
    failed: bool,
) {
    if let Some((_, t)) = tallies.iter_mut().find(|(i, _)| *i == index) {
        t.add(nanos, failed);
        return;
    }
    let mut t = CommandTally::default();
    t.add(nanos, failed);
    tallies.push((index, t));
}

/// Adds runs counted locally to INFO commandstats: the server's, and `tenant`'s when given (the
/// runs were made by one of its own clients).
pub(crate) fn add_tallies(
    sh: &Shared,
    tenant: Option<&Tenant>,
    tallies: impl Iterator<Item = (usize, CommandTally)>,
) {
    let per_tenant = tenant.map(|t| t.stats.command_counters(sh.cmd_stats.by_command.len()));
    for (index, t) in tallies {
        if let Some(s) = sh.cmd_stats.get(index) {
            s.add(&t);
        }
        if let Some(c) = per_tenant.and_then(|p| p.get(index)) {
            c.calls.fetch_add(t.calls, Relaxed);
            c.usec.fetch_add(t.usec, Relaxed);
            if t.failed > 0 {
                c.failed.fetch_add(t.failed, Relaxed);
            }
        }
    }
}

/// The reply to a command name the table does not know.
#[cold]
#[inline(never)]
fn unknown_command(st: &mut ClientState, args: &Args<'_>, out: &mut BytesMut) -> Flow {
    let e = ErrorReply::unknown_command(args.get(0), args.tail(1).iter());
    flag_multi_error(st);
    ReplyWriter::new(out, st.proto).error(&e);
    Flow::Continue
}

/// A command [`admit`] refused.
#[cold]
#[inline(never)]
fn refused(
    st: &mut ClientState,
    sh: &Shared,
    index: usize,
    spec: &CommandSpec,
    e: ErrorReply,
    out: &mut BytesMut,
) -> Flow {
    count_outcome(st, sh, index, Outcome::Rejected);
    // As in Redis, a nested MULTI or a WATCH inside MULTI is answered with an error but
    // does not doom the transaction; other refusals do.
    if !matches!(spec.name, "multi" | "watch") {
        flag_multi_error(st);
    }
    ReplyWriter::new(out, st.proto).error(&e);
    Flow::Continue
}

/// A RESP2 connection with subscriptions may only run the pub/sub commands, PING, QUIT and
/// RESET: the refusal of anything else (None: the command may run).
#[cold]
#[inline(never)]
fn refused_in_subscribed_mode(
    st: &mut ClientState,
    spec: &CommandSpec,
    out: &mut BytesMut,
) -> Option<Flow> {
    if matches!(
        spec.name,
        "subscribe"
            | "psubscribe"
            | "ssubscribe"
            | "unsubscribe"
            | "punsubscribe"
            | "sunsubscribe"
            | "ping"
            | "quit"
            | "reset"
    ) {
        return None;
    }
    ReplyWriter::new(out, st.proto)
        .error(&crate::pubsub::not_allowed_in_subscribed_mode(spec.name));
    Some(Flow::Continue)
}

/// A command refused while the tenant's script is busy: refused commands doom a transaction
/// being queued, and a refused EXEC discards it (Redis's rejectCommand).
#[cold]
#[inline(never)]
fn refused_while_busy(
    st: &mut ClientState,
    sh: &Shared,
    index: usize,
    spec: &CommandSpec,
    e: ErrorReply,
    out: &mut BytesMut,
) -> Flow {
    count_outcome(st, sh, index, Outcome::Rejected);
    let e = if spec.name == "exec" {
        st.multi = None;
        st.watched.clear();
        st.info.fields.lock().multi = -1;
        ErrorReply::coded(
            "EXECABORT",
            format_args!("Transaction discarded because of: {}", e.text()),
        )
    } else {
        flag_multi_error(st);
        e
    };
    ReplyWriter::new(out, st.proto).error(&e);
    Flow::Continue
}

/// Inside MULTI: queues the command (or refuses one that may not be queued); None for the
/// commands that run at once (EXEC, DISCARD, MULTI, WATCH, QUIT, RESET).
#[cold]
#[inline(never)]
fn queue_in_multi(
    st: &mut ClientState,
    sh: &Shared,
    index: usize,
    spec: &CommandSpec,
    args: &Args<'_>,
    out: &mut BytesMut,
) -> Option<Flow> {
    st.multi.as_ref()?;
    if matches!(
        spec.name,
        "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
    ) {
        return None;
    }
    if matches!(spec.handler, Handler::Server)
        && !cmd::handler(index).is_some_and(|c| c.in_multi)
        && crate::scripting::script_call(spec.name).is_none()
    {
        flag_multi_error(st);
        ReplyWriter::new(out, st.proto)
            .error(&ErrorReply::err("Command not allowed inside a transaction"));
        return Some(Flow::Continue);
    }
    let request = OwnedRequest::from_args(args);
    let queued = st.multi_bytes + request.mem_size() as u64;
    if let Err(e) = admit_queued(sh, &st.tenant, queued) {
        return Some(refused(st, sh, index, spec, e, out));
    }
    if let Some((queue, _)) = st.multi.as_mut() {
        queue.push(Queued { index, request });
    }
    st.multi_bytes = queued;
    ReplyWriter::new(out, st.proto).simple("QUEUED");
    Some(Flow::Continue)
}

fn flag_multi_error(st: &mut ClientState) {
    if let Some((_, err)) = st.multi.as_mut() {
        *err = true;
    }
}

/// Checks that hold for every command regardless of tenant state.
fn admit(
    st: &ClientState,
    sh: &Shared,
    index: usize,
    spec: &CommandSpec,
    args: &Args<'_>,
) -> Result<(), ErrorReply> {
    if !spec.arity_ok(args.len()) {
        return Err(ErrorReply::wrong_arity(spec.name));
    }
    if !st.authenticated && !spec.has(flags::NO_AUTH) {
        return Err(ErrorReply::no_auth());
    }
    if spec.has(flags::ADMIN)
        && !st.admin
        && !(spec.name == "config" && cmd::tenant_may_config(args))
    {
        return Err(errors::no_permission(spec.name));
    }
    if st.migration_peer && !migration_peer_may_run(spec) {
        return Err(errors::migration_peer_only(spec.name));
    }
    if let Some(user) = &st.acl_user {
        let context = if st.multi.is_some() {
            AclContext::Multi
        } else {
            AclContext::Toplevel
        };
        check_acl(user, index, spec, args, Audit::of(st, sh, context))?;
    }
    if st.multi.is_some() && spec.has(flags::NO_MULTI) {
        return Err(match spec.name {
            "multi" => ErrorReply::err("MULTI calls can not be nested"),
            "watch" => ErrorReply::err("WATCH inside MULTI is not allowed"),
            "exec" | "discard" | "quit" | "reset" => return Ok(()),
            _ => ErrorReply::err("Command not allowed inside a transaction"),
        });
    }
    Ok(())
}

/// Where an ACL denial is logged (ACL LOG): the tenant's log, the connection, and whether it was
/// a request, a command of a transaction or a script's call.
#[derive(Clone, Copy)]
pub struct Audit<'a> {
    pub shared: &'a Shared,
    pub tenant: &'a str,
    pub client: &'a crate::shared::ClientInfo,
    pub context: AclContext,
}

impl<'a> Audit<'a> {
    pub fn of(st: &'a ClientState, sh: &'a Shared, context: AclContext) -> Self {
        Audit {
            shared: sh,
            tenant: st.tenant.id(),
            client: &st.info,
            context,
        }
    }

    fn record(&self, user: &str, denied: &ferrite_tenancy::acl::Denied) {
        crate::acl_log::log_denied(
            self.shared,
            self.tenant,
            self.client,
            user,
            denied,
            self.context,
        );
    }
}

/// The rules of an ACL user (ACL SETUSER inside a tenant) for one command: a request, a command
/// queued by MULTI (checked when queued and again at EXEC, as in Redis) and each call of a
/// script. They only narrow what the connection may do anyway (its tenant's data, no
/// administration: checked before). AUTH, HELLO and RESET are always allowed (Redis's
/// `no-auth` commands), so a user can always log in as somebody else. A refusal is logged in
/// the tenant's ACL log.
#[inline]
pub fn check_acl(
    user: &ferrite_tenancy::acl::AclUser,
    index: usize,
    spec: &CommandSpec,
    args: &Args<'_>,
    audit: Audit<'_>,
) -> Result<(), ErrorReply> {
    acl_rules(user, index, spec, args).map_err(|d| {
        audit.record(user.name(), &d);
        errors::acl_denied(user.name(), &d)
    })
}

/// [`check_acl`] for a command queued in MULTI, at EXEC (Redis's wording for rules that
/// changed since it was queued).
pub fn check_acl_at_exec(
    user: &ferrite_tenancy::acl::AclUser,
    index: usize,
    spec: &CommandSpec,
    args: &Args<'_>,
    audit: Audit<'_>,
) -> Result<(), ErrorReply> {
    acl_rules(user, index, spec, args).map_err(|d| {
        audit.record(user.name(), &d);
        errors::acl_denied_at_exec(&d)
    })
}

/// The one rule check behind both (and `redis.acl_check_cmd`, which logs nothing): Redis's
/// `no-auth` commands always pass.
#[inline]
pub fn acl_rules(
    user: &ferrite_tenancy::acl::AclUser,
    index: usize,
    spec: &CommandSpec,
    args: &Args<'_>,
) -> Result<(), ferrite_tenancy::acl::Denied> {
    if spec.has(flags::NO_AUTH) {
        return Ok(());
    }
    user.rules().check(index, spec, args)
}

/// A peer server logged in with the migration token may run the import commands and manage its
/// own connection, nothing else: no tenant's data, not even the `default` tenant's.
fn migration_peer_may_run(spec: &CommandSpec) -> bool {
    spec.has(flags::NO_AUTH)
        || spec.name.starts_with("tenant.import.")
        || matches!(spec.name, "ping" | "echo" | "client" | "command")
}

/// Refuses a command on a tenant that is not served here right now.
pub fn check_ownership(st: &ClientState, sh: &Shared, tenant: &Tenant) -> Result<(), ErrorReply> {
    // The usual answer (active, not deleted) first; the refusals are built out of line.
    if tenant.state() == TenantState::Active && !tenant.is_deleted() {
        return Ok(());
    }
    not_served_here(st, sh, tenant)
}

/// [`check_ownership`]'s refusals.
#[cold]
#[inline(never)]
fn not_served_here(st: &ClientState, sh: &Shared, tenant: &Tenant) -> Result<(), ErrorReply> {
    match tenant.state() {
        TenantState::Active => {
            if tenant.is_deleted() {
                return Err(ErrorReply::err(format!(
                    "tenant '{}' was deleted",
                    tenant.id()
                )));
            }
            Ok(())
        }
        TenantState::Moved => Err(errors::moved(st, sh, tenant)),
        TenantState::Importing => Err(ErrorReply::try_again(format!(
            "tenant '{}' is being imported; retry shortly",
            tenant.id()
        ))),
        TenantState::Suspended => Err(ErrorReply::err(format!(
            "tenant '{}' is suspended",
            tenant.id()
        ))),
    }
}

/// What a unit of work on a tenant's data asks of the tenant: a single data command, or a whole
/// transaction (later a script), admitted once.
#[derive(Clone, Copy)]
pub struct Work<'k> {
    /// Data commands it runs: each counts against the tenant's throttle, as it would alone.
    pub commands: u64,
    /// One of them writes: the work holds the tenant's write gate while it runs.
    pub writes: bool,
    /// The keys it names, placed on a server while an incremental migration has split the
    /// tenant's keyspace (looked at only then).
    pub keys: Keys<'k>,
}

/// The keys a unit of work names.
#[derive(Clone, Copy)]
pub enum Keys<'k> {
    /// One data command: its keys by the command table's key positions; a command without key
    /// positions (KEYS, SCAN, DBSIZE, FLUSHDB...) sees or changes the whole keyspace.
    Command(&'k CommandSpec, Args<'k>),
    /// Exactly these keys (a script's declared keys).
    Listed(&'k [&'k [u8]]),
    /// A transaction's queued commands, all of them.
    Queued(&'k [Queued]),
    /// The whole keyspace (a change of the tenant's function libraries).
    Whole,
}

impl Keys<'_> {
    /// Where the work runs while the tenant's keyspace is split (see
    /// `ferrite_tenancy::patterns`): a command without keys counts as the whole keyspace.
    pub(crate) fn place(&self, split: &PatternSplit, write: bool) -> Placement {
        let (whole, keys): (bool, Vec<&[u8]>) = match *self {
            Keys::Command(spec, _) if spec.first_key <= 0 => (true, Vec::new()),
            Keys::Command(spec, args) => (false, spec.keys(&args).collect()),
            Keys::Listed(keys) => (false, keys.to_vec()),
            Keys::Whole => (true, Vec::new()),
            Keys::Queued(queue) => {
                let all = ferrite_commands::spec::all();
                let mut whole = false;
                let mut keys = Vec::new();
                for q in queue {
                    let Some(spec) = all.get(q.index) else {
                        continue;
                    };
                    let args = q.request.args();
                    if crate::scripting::script_call(spec.name).is_some() {
                        keys.extend(crate::scripting::declared_keys(&args));
                    } else if matches!(spec.handler, Handler::Data(_)) {
                        whole |= spec.first_key <= 0;
                        keys.extend(spec.keys(&args));
                    }
                }
                (whole, keys)
            }
        };
        if whole {
            match split.place(None, write) {
                Placement::Here => {}
                other => return other,
            }
        }
        split.place(Some(&mut keys.into_iter()), write)
    }
}

/// Work a tenant has admitted. Holds the write gate's permit (for writes) until dropped, so a
/// cutover that closes the gate waits for this work to finish.
pub struct Admitted<'t> {
    _permit: Option<WritePermit<'t>>,
    /// The throttle or the gate made the work wait: the batch's clock is stale.
    pub waited: bool,
}

/// The one admission path for work on a tenant's data (single commands and EXEC alike):
/// ownership (`-MOVED`, `-TRYAGAIN`), the throttle (wait, then refuse), the write gate, and
/// while an incremental migration splits the tenant, the ownership of each key
/// ([`admit_keys`]: `-MOVED tenant:<id>:key`, `-CROSSSLOT`, a wait during a pattern's cutover). The
/// memory and key quotas are checked by [`check_quota`] under the keyspace lock.
#[inline]
pub async fn admit_work<'t>(
    st: &ClientState,
    sh: &Shared,
    tenant: &'t Tenant,
    work: Work<'_>,
) -> Result<Admitted<'t>, ErrorReply> {
    let step = admit_at_once(st, sh, tenant, work)?;
    finish_admission(st, sh, tenant, work, step).await
}

/// How far admission got without waiting ([`admit_at_once`]).
enum Step<'t> {
    /// Admitted.
    Done(Admitted<'t>),
    /// The throttle asks to wait this long before the rest of admission.
    Throttled(Duration),
    /// A write found the gate closed (a cutover): it waits for it to open.
    GateClosed,
    /// The tenant is split between two servers: the keys' placement decides (and may wait).
    Keys {
        permit: Option<WritePermit<'t>>,
        waited: bool,
    },
}

/// The part of admission that never waits: what almost every command needs (an active tenant,
/// no throttle, an open gate, no split), answered without building the future of the waiting
/// part ([`finish_admission`]), which cost more than the checks themselves.
#[inline]
fn admit_at_once<'t>(
    st: &ClientState,
    sh: &Shared,
    tenant: &'t Tenant,
    work: Work<'_>,
) -> Result<Step<'t>, ErrorReply> {
    check_ownership(st, sh, tenant)?;
    // A log that cannot be written refuses writes until it works again; reads go on.
    if work.writes && !sh.persistence_ok() {
        return Err(errors::misconf(sh));
    }
    // The throttle, inline: an unthrottled tenant costs one load here.
    let max_delay = Duration::from_millis(sh.hot.throttle_max_delay_ms.load(Relaxed));
    match tenant.admit_n(work.commands, max_delay) {
        Admission::Now => past_throttle(st, sh, tenant, work, false),
        Admission::After(d) => Ok(Step::Throttled(d)),
        Admission::Refused(d) => Err(errors::throttled(tenant, d, max_delay)),
    }
}

/// Admission after the throttle let the work through (`waited`: after a delay).
#[inline]
fn past_throttle<'t>(
    st: &ClientState,
    sh: &Shared,
    tenant: &'t Tenant,
    work: Work<'_>,
    waited: bool,
) -> Result<Step<'t>, ErrorReply> {
    if !work.writes {
        if tenant.active_split().is_some() {
            return Ok(Step::Keys {
                permit: None,
                waited,
            });
        }
        return Ok(Step::Done(Admitted {
            _permit: None,
            waited,
        }));
    }
    // Writes hold a permit of the tenant's gate while they run, so that a cutover can pause
    // them and know when the last one finished. The ownership check is repeated after the
    // permit is granted: the cutover may have moved the tenant meanwhile.
    let Some(permit) = tenant.gate().try_enter() else {
        return Ok(Step::GateClosed);
    };
    check_ownership(st, sh, tenant)?;
    // Read after the permit was granted (the gate's handshake): a pattern cutover that gated
    // these keys afterwards waits for this write at its barrier.
    if tenant.active_split().is_some() {
        return Ok(Step::Keys {
            permit: Some(permit),
            waited,
        });
    }
    Ok(Step::Done(Admitted {
        _permit: Some(permit),
        waited,
    }))
}

/// The part of admission that may wait: the throttle's delay, a closed write gate, a split
/// tenant's key placement.
async fn finish_admission<'t>(
    st: &ClientState,
    sh: &Shared,
    tenant: &'t Tenant,
    work: Work<'_>,
    mut step: Step<'t>,
) -> Result<Admitted<'t>, ErrorReply> {
    loop {
        match step {
            Step::Done(admitted) => return Ok(admitted),
            Step::Throttled(d) => {
                tokio::time::sleep(d).await;
                step = past_throttle(st, sh, tenant, work, true)?;
            }
            Step::GateClosed => {
                let Some(permit) = tenant.gate().enter(gate_timeout(sh)).await else {
                    check_ownership(st, sh, tenant)?;
                    return Err(ErrorReply::try_again(format!(
                        "tenant '{}' is switching servers; retry shortly",
                        tenant.id()
                    )));
                };
                check_ownership(st, sh, tenant)?;
                step = if tenant.active_split().is_some() {
                    Step::Keys {
                        permit: Some(permit),
                        waited: true,
                    }
                } else {
                    Step::Done(Admitted {
                        _permit: Some(permit),
                        waited: true,
                    })
                };
            }
            Step::Keys { permit, waited } => {
                return admit_keys(st, sh, tenant, work, permit, waited).await;
            }
        }
    }
}

/// The per-key ownership check, while an incremental migration has split the tenant's keyspace
/// between two servers: run here, wait while the keys' pattern is being cut over (without the
/// gate's permit, which the cutover's barrier waits for), redirect when every key has moved, or
/// refuse keys on both servers.
async fn admit_keys<'t>(
    st: &ClientState,
    sh: &Shared,
    tenant: &'t Tenant,
    work: Work<'_>,
    mut permit: Option<WritePermit<'t>>,
    mut waited: bool,
) -> Result<Admitted<'t>, ErrorReply> {
    let deadline = tokio::time::Instant::now() + gate_timeout(sh);
    loop {
        let changed = tenant.split_changed().notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let Some(split) = tenant.active_split() else {
            return Ok(Admitted {
                _permit: permit,
                waited,
            });
        };
        match work.keys.place(&split, work.writes) {
            Placement::Here => {
                return Ok(Admitted {
                    _permit: permit,
                    waited,
                });
            }
            Placement::There { key } => {
                return Err(errors::key_moved(st, sh, tenant, &split, &key));
            }
            Placement::Cross { here, there } => {
                return Err(errors::cross_server(tenant, &split, here, there));
            }
            Placement::Whole => {
                let name = match work.keys {
                    Keys::Command(spec, _) => spec.name,
                    _ => "the transaction",
                };
                return Err(errors::whole_keyspace_split(name, tenant, &split));
            }
            Placement::Wait => {
                drop(permit.take());
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    return Err(ErrorReply::try_again(format!(
                        "tenant '{}': the keys' pattern is being handed over to {}; retry shortly",
                        tenant.id(),
                        split.peer
                    )));
                }
                waited = true;
                check_ownership(st, sh, tenant)?;
                if work.writes {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match tenant.gate().enter(left).await {
                        Some(p) => permit = Some(p),
                        None => {
                            return Err(ErrorReply::try_again(format!(
                                "tenant '{}' is switching servers; retry shortly",
                                tenant.id()
                            )));
                        }
                    }
                    check_ownership(st, sh, tenant)?;
                }
            }
        }
    }
}

/// A call a script makes while an incremental migration splits its tenant: the script was
/// admitted on its declared keys, so a key it did not declare is placed here. It cannot be
/// redirected or wait under the lock: a key on the other server, or being cut over, fails the
/// call (as Redis Cluster fails a script that reaches a key of another node).
pub fn place_script_call(
    tenant: &Tenant,
    split: &PatternSplit,
    spec: &CommandSpec,
    args: Args<'_>,
) -> Result<(), ErrorReply> {
    match Keys::Command(spec, args).place(split, spec.is_write()) {
        Placement::Here => Ok(()),
        Placement::Wait => Err(ErrorReply::try_again(format!(
            "Script attempted to access a key whose pattern is being handed over to {} (tenant '{}'); declare the keys the script uses, or retry shortly",
            split.peer,
            tenant.id()
        ))),
        Placement::There { key } => Err(errors::script_key_elsewhere(
            tenant,
            split,
            split.pattern_of(&key),
        )),
        Placement::Cross { there, .. } => Err(errors::script_key_elsewhere(tenant, split, there)),
        Placement::Whole => Err(errors::whole_keyspace_split(spec.name, tenant, split)),
    }
}

/// How long a write may wait at a closed gate.
pub fn gate_timeout(sh: &Shared) -> Duration {
    Duration::from_millis(sh.hot.redirect_timeout_ms.load(Relaxed))
}

/// Whether writes must have what they add counted ([`check_quota`]): the tenant has a quota, or
/// the server has a `maxmemory`. Counting costs lookups, so only then is it done.
#[inline]
pub fn quota_applies(sh: &Shared, tenant: &Tenant) -> bool {
    tenant.has_quota() || sh.hot.maxmemory.load(Relaxed) != 0
}

/// What the server-wide `maxmemory` caps: the data of every tenant together, with the locked
/// tenant's counted exactly (`db`: its keyspace, whose published counters lag until the lock
/// is released), plus every connection's unsent replies (INFO `mem_clients_normal`), so that
/// clients that do not read their large replies cannot take the memory writes are refused.
fn server_used_bytes(sh: &Shared, tenant: &Tenant, db: &Db) -> u64 {
    published_used_bytes(sh)
        .saturating_sub(tenant.used_bytes())
        .saturating_add(db.used_bytes() as u64)
}

/// [`server_used_bytes`] as the tenants' published counters give it, for checks made without
/// a keyspace lock.
fn published_used_bytes(sh: &Shared) -> u64 {
    sh.registry
        .used_bytes()
        .saturating_add(sh.client_bytes.load(Relaxed))
}

/// The server-wide `maxmemory` (policy `noeviction`): refuses a write that brings `incoming`
/// bytes when the data of all tenants together would exceed it.
fn check_server_memory(
    sh: &Shared,
    tenant: &Tenant,
    used: impl FnOnce() -> u64,
    incoming: u64,
) -> Result<(), ErrorReply> {
    let cap = sh.hot.maxmemory.load(Relaxed);
    if cap == 0 || used().saturating_add(incoming) <= cap {
        return Ok(());
    }
    tenant.stats.rejected.fetch_add(1, Relaxed);
    Err(errors::out_of_memory())
}

/// A command being queued in MULTI, whose copy brings the transaction's queue to `queued`
/// bytes: refused (and the transaction doomed) when the queue would take the tenant past its
/// memory quota, or the server past `maxmemory`, with the tenant's data. A queue can grow
/// without bound, so Redis refuses every queued command once memory is over `maxmemory`; here
/// the queue itself counts, so that a tenant cannot hold more than its quota in a transaction
/// it never executes.
fn admit_queued(sh: &Shared, tenant: &Tenant, queued: u64) -> Result<(), ErrorReply> {
    if !quota_applies(sh, tenant) {
        return Ok(());
    }
    tenant
        .check_quota(0, queued)
        .map_err(|q| errors::quota(tenant, &q))?;
    check_server_memory(sh, tenant, || published_used_bytes(sh), queued)
}

/// Redis's check before a script that may write starts (`deny-oom` scripts): is the tenant at
/// or past its quota, or the server past its `maxmemory`?
pub fn out_of_memory(sh: &Shared, tenant: &Tenant, db: &Db) -> bool {
    let cap = sh.hot.maxmemory.load(Relaxed);
    tenant.check_quota(0, 0).is_err() || (cap != 0 && server_used_bytes(sh, tenant, db) > cap)
}

/// The quota check of every write (single commands, EXEC, and each call of a script), under
/// the keyspace lock, against the tenant's quotas and the server-wide `maxmemory`: the keys the commands may create that do not exist yet, and an upper bound
/// of the bytes they may add (`ferrite_commands::quota`: SETRANGE/SETBIT offsets, STORE
/// destinations, RENAME/COPY, APPEND, RESTORE, packed values converting...), so that no command
/// takes a tenant past its quota, whatever its request size. A transaction is checked as a
/// whole before any of it runs, so it is refused whole rather than left half-applied by a later
/// command. Writes that add nothing (DEL, EXPIRE...) are never refused, so a tenant over its
/// quota can always free memory. Only called when [`quota_applies`].
pub fn check_quota<'a>(
    sh: &Shared,
    tenant: &Tenant,
    db: &mut Db,
    now: u64,
    commands: impl IntoIterator<Item = (&'a CommandSpec, Args<'a>)>,
) -> Result<(), ErrorReply> {
    let mut commands = commands.into_iter().peekable();
    let first = commands.next();
    let mut plan = if commands.peek().is_none() {
        quota::Plan::single(db, now)
    } else {
        quota::Plan::transaction(db, now)
    };
    for (spec, args) in first.into_iter().chain(commands) {
        plan.add(spec, args);
    }
    let demand = plan.demand();
    if demand == quota::Demand::default() {
        return Ok(());
    }
    tenant
        .check_quota(demand.keys, demand.bytes)
        .map_err(|q| errors::quota(tenant, &q))?;
    check_server_memory(
        sh,
        tenant,
        || server_used_bytes(sh, tenant, db),
        demand.bytes,
    )
}

/// A tenant's keyspace lock kept between the data commands (and scripts) of one batch.
///
/// With several worker threads, the connections of one busy tenant take turns at its lock: each
/// release with a waiter wakes that waiter, whose thread must wake up before it runs, and one
/// that waited half a millisecond is served in turn (see `Keyspace`). Taking the lock once for
/// a run of pipelined commands turns a hand-off per command into one per batch (the work of
/// Redis's event loop turn). It is given back at the end of the batch,
/// after [`Held::MAX_COMMANDS`] commands, before any command that is not a data command or a
/// script, and before any wait (throttle, write gate): no connection ever waits for anything
/// while it holds a tenant's lock.
pub struct Held {
    /// The tenant's keyspace epoch when the lock was taken (a replaced keyspace is not kept).
    epoch: u64,
    /// In a mutex only so that `ClientState` stays `Sync` (commands' futures hold a
    /// `&ClientState` across awaits; `Db` is not `Sync`): the guard is only ever moved in and
    /// out whole, never locked.
    guard: parking_lot::Mutex<ferrite_storage::OwnedDbGuard>,
    /// Commands run under this hold.
    commands: u32,
}

impl Held {
    /// Commands one hold may serve before the lock is given back (other connections of the
    /// tenant queue meanwhile; a batch is usually 1-16 commands).
    pub const MAX_COMMANDS: u32 = 32;

    /// The kept lock, if it is still the tenant's current keyspace's.
    pub fn take(held: &mut Option<Held>, epoch: u64) -> Option<Held> {
        held.take().filter(|h| h.epoch == epoch)
    }

    /// Keeps `guard` for the next command of the batch, unless this hold served its share.
    pub fn keep(
        slot: &mut Option<Held>,
        epoch: u64,
        guard: ferrite_storage::OwnedDbGuard,
        previous: Option<u32>,
    ) {
        let commands = previous.unwrap_or(0) + 1;
        if commands < Self::MAX_COMMANDS {
            *slot = Some(Held {
                epoch,
                guard: parking_lot::Mutex::new(guard),
                commands,
            });
        }
    }

    pub fn commands(&self) -> u32 {
        self.commands
    }

    pub fn into_guard(self) -> ferrite_storage::OwnedDbGuard {
        self.guard.into_inner()
    }
}

/// Most keys one round warms (a round is at most 32 requests).
const WARM_KEYS: usize = 64;

/// What [`warm_batch`] remembers between rounds: the key of the last round whose requests all
/// named one key (a pipeline of LPUSHes to one list, HSETs to one hash). Such a round has
/// nothing to warm but that key, which the previous round brought into the cache; collecting
/// the keys of every request to find that out cost about 130 instructions per request
/// (callgrind, LPUSH -P16: 3% of the request). So a round that starts with the remembered key
/// warms only it, and every [`WarmMemo::RECHECK`]th such round collects all its keys again, so
/// a pipeline that moves on to other keys is warmed again within a few rounds.
#[derive(Default)]
pub struct WarmMemo {
    /// The one key of the last fully collected round, when it had one key (empty otherwise;
    /// an empty key is never remembered, so it never matches).
    key: Vec<u8>,
    /// Rounds warmed by the remembered key since the last full collection.
    skipped: u8,
}

impl WarmMemo {
    /// Rounds warmed by the remembered key between two full collections.
    const RECHECK: u8 = 8;

    /// Whether a round starting with `key` may be warmed by `key` alone.
    fn covers(&mut self, key: &[u8]) -> bool {
        if self.key.is_empty() || self.skipped >= Self::RECHECK || self.key != key {
            return false;
        }
        self.skipped += 1;
        true
    }

    /// A fully collected round found `keys` (in order, runs of one key counted once) in
    /// `requests` requests.
    fn learn(&mut self, keys: &[&[u8]], requests: usize) {
        self.skipped = 0;
        self.key.clear();
        if let [one] = keys
            && requests > 1
            && one.len() <= 256
        {
            self.key.extend_from_slice(one);
        }
    }
}

/// Brings the keys of a pipelined batch's data commands into the cache before the batch runs
/// (see `ferrite_storage::table::ShardedTable::warm`): with random keys, each lookup would
/// otherwise wait for its bucket (sometimes a child bucket too) and its entry in turn, two or
/// three cache misses per command, one after another. The warming reads
/// the table, so it takes the tenant's keyspace lock — only if it is free — and keeps it for
/// the batch's first command ([`Held`], with the same budget and the same release before any
/// wait: admission gives it back before the throttle or the write gate makes the command wait).
/// A batch that starts with anything but a data command with keys is not warmed, nor one
/// queued by MULTI or sent before AUTH. Rounds that keep naming one key are warmed by it
/// alone ([`WarmMemo`]).
pub fn warm_batch<'a>(st: &mut ClientState, requests: impl Iterator<Item = Args<'a>>) {
    if st.multi.is_some() || !st.authenticated {
        return;
    }
    let mut requests = requests.peekable();
    let Some(first) = requests.next() else {
        return;
    };
    // A lone request is worth warming only for several keys (their misses then overlap).
    let alone = requests.peek().is_none();
    let name = first.get(0);
    let spec = match st.last_cmd {
        Some((_, spec)) if name.eq_ignore_ascii_case(spec.name.as_bytes()) => spec,
        _ => match lookup_indexed(name) {
            Some((_, spec)) => spec,
            None => return,
        },
    };
    if crate::scripting::script_call(spec.name).is_some() {
        if alone {
            return;
        }
        // EVALSHA, FCALL...: keys after a count; each request's first key is warmed (a round of
        // one script on random keys otherwise waits for each lookup's cache misses in turn).
        let mut keys: [&[u8]; WARM_KEYS] = [&[]; WARM_KEYS];
        let mut n = 0;
        for key in std::iter::once(first)
            .chain(requests)
            .filter_map(|args| crate::scripting::first_declared_key(&args))
            .take(WARM_KEYS)
        {
            keys[n] = key;
            n += 1;
        }
        warm_keys(st, keys[..n].iter().copied());
        return;
    }
    if !matches!(spec.handler, Handler::Data(_)) || spec.first_key <= 0 {
        return;
    }
    if alone && spec.keys(&first).nth(1).is_none() {
        return;
    }
    // A round that starts with the key the last rounds kept naming is warmed by it alone.
    let mut first_keys = spec.keys(&first);
    if let Some(only) = first_keys.next()
        && first_keys.next().is_none()
        && st.warm_memo.covers(only)
    {
        warm_keys(st, std::iter::once(only));
        return;
    }
    // The first request's keys, then each later request's second argument: the key of almost
    // every data command, found without looking the command up (which would cost more than
    // the warming saves). Where it is not a key, an unrelated bucket is prefetched, which
    // costs a prefetch and changes nothing. Runs of one key (a pipeline of LPUSHes to one
    // list) are warmed once.
    let mut keys: [&[u8]; WARM_KEYS] = [&[]; WARM_KEYS];
    let mut n = 0;
    for key in spec.keys(&first).take(WARM_KEYS) {
        keys[n] = key;
        n += 1;
    }
    let mut requests_seen = 1;
    for args in requests {
        requests_seen += 1;
        if n == WARM_KEYS {
            break;
        }
        if args.len() < 2 {
            continue;
        }
        let key = args.get(1);
        if n > 0 && keys[n - 1] == key {
            continue;
        }
        keys[n] = key;
        n += 1;
    }
    st.warm_memo.learn(&keys[..n], requests_seen);
    warm_keys(st, keys[..n].iter().copied());
}

/// Takes the tenant's keyspace lock if it is free (or uses the one the batch holds) and warms
/// `keys` under it; the lock is kept for the batch ([`Held`]).
fn warm_keys<'k>(st: &mut ClientState, keys: impl Iterator<Item = &'k [u8]>) {
    let tenant = &st.tenant;
    let epoch = tenant.keyspace_epoch();
    let ks = match st.keyspace {
        Some((e, ref ks)) if e == epoch => ks,
        _ => &st.keyspace.insert((epoch, tenant.keyspace())).1,
    };
    // A round after the first of a long pipeline may still hold the lock.
    if let Some(held) = st.held.as_ref().filter(|h| h.epoch == epoch) {
        held.guard.lock().warm(keys);
        return;
    }
    let Some(db) = ks.try_lock_owned() else {
        return;
    };
    db.warm(keys);
    st.held = Some(Held {
        epoch,
        guard: parking_lot::Mutex::new(db),
        commands: 0,
    });
}

/// [`admit_work`] for a connection that may hold its tenant's lock (`held`): if admission has
/// to wait (throttle, closed write gate, a split tenant's keys), the lock is released first, so
/// a cutover waiting for that lock is never held up by a connection that waits for the cutover.
#[inline]
pub async fn admit_holding<'t>(
    st: &ClientState,
    sh: &Shared,
    tenant: &'t Tenant,
    work: Work<'_>,
    held: &mut Option<Held>,
) -> Result<Admitted<'t>, ErrorReply> {
    match admit_at_once(st, sh, tenant, work)? {
        Step::Done(admitted) => Ok(admitted),
        step => {
            *held = None;
            // Boxed: waiting is rare, and the futures built around this one (a script run's,
            // boxed per call by the command table) would otherwise carry its timer and waits;
            // polled cold so its code stays out of the hot path's.
            cold(Box::pin(finish_admission(st, sh, tenant, work, step))).await
        }
    }
}

/// What data commands run with besides their arguments: the locked keyspace, the clock, the
/// connection's random generator and reply protocol, and the values to free after the lock.
pub struct Exec<'a> {
    pub db: &'a mut Db,
    pub now: u64,
    pub rng: &'a mut SmallRng,
    pub proto: Protocol,
    pub max_bulk: usize,
    pub garbage: &'a mut Garbage,
    /// Length the output buffer may reach; past it the reply is dropped (see
    /// [`crate::client_memory`]).
    pub reply_limit: usize,
    /// The command is a script's `redis.call` (see `Ctx::from_script`).
    pub from_script: bool,
}

impl Exec<'_> {
    /// Runs one data command and writes its reply into `out`. Every data command runs here,
    /// alone or inside EXEC (next, inside scripts), while its tenant's keyspace is locked: after
    /// `f` returns, the command's changes are in the keyspace and no other command has run.
    #[inline]
    pub fn run(
        &mut self,
        spec: &CommandSpec,
        f: DataFn,
        args: Args<'_>,
        out: &mut BytesMut,
    ) -> ferrite_commands::CmdResult {
        let _ = spec;
        let mut w = ReplyWriter::limited(out, self.proto, self.reply_limit);
        let mut ctx = Ctx {
            db: self.db,
            w: &mut w,
            now: self.now,
            rng: self.rng,
            max_bulk: self.max_bulk,
            garbage: self.garbage,
            from_script: self.from_script,
        };
        // Runs the command and hands the keyspace's subscribers its effects (write-effects
        // journal), still under the lock.
        ctx.run(f, args)
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_data(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    index: usize,
    spec: &'static CommandSpec,
    f: DataFn,
    args: Args<'_>,
    out: &mut BytesMut,
) -> Result<(), ErrorReply> {
    // Borrowed, not cloned: a refcount update per command is a write to a cache line that every
    // worker serving this tenant shares.
    let tenant = &st.tenant;
    let work = Work {
        commands: 1,
        writes: spec.is_write(),
        keys: Keys::Command(spec, args),
    };
    if work.writes {
        sh.check_replicas()?;
    }
    let epoch = tenant.keyspace_epoch();
    let mut held = Held::take(&mut st.held, epoch);
    let admitted = admit_holding(st, sh, tenant, work, &mut held).await?;
    st.batch.tenant_commands += 1;
    // The keyspace fetched earlier in this batch is still the tenant's unless it was replaced
    // since (the epoch says); the cache is dropped at the end of the batch so that an idle
    // connection never keeps a replaced keyspace alive.
    let ks = match st.keyspace {
        Some((e, ref ks)) if e == epoch => ks,
        _ => &st.keyspace.insert((epoch, tenant.keyspace())).1,
    };
    let mut garbage = Garbage::default();
    {
        let previous = held.as_ref().map(Held::commands);
        let (mut db, waited) = match held {
            Some(h) => (h.into_guard(), admitted.waited),
            None => match ks.try_lock_owned() {
                Some(db) => (db, admitted.waited),
                // Waiting for a tenant that runs a script ends in -BUSY after
                // busy-reply-threshold.
                None => (
                    cold(crate::scripting::or_busy(sh, tenant, ks.lock_owned())).await?,
                    true,
                ),
            },
        };
        // Commands that may do more work than their request suggests are estimated first (a
        // few lookups); a long one gives the lock back and runs on the blocking pool.
        let long = args.len() as u64 > cost::LONG_WORK
            || (cost::depends_on_data(index) && cost::estimate(spec, &args, &db) > cost::LONG_WORK);
        st.batch.wrote |= work.writes;
        if !long {
            let now = if waited {
                ferrite_storage::now_ms()
            } else {
                st.batch.now_ms()
            };
            // Only writes can grow a tenant; counting what they would add costs lookups, so
            // only tenants with a quota pay for it.
            if spec.is_write() && quota_applies(sh, tenant) {
                check_quota(sh, tenant, &mut db, now, [(spec, args)])?;
            }
            let mut exec = Exec {
                db: &mut db,
                now,
                rng: &mut st.rng,
                proto: st.proto,
                max_bulk: sh.hot.max_bulk_len.load(Relaxed) as usize,
                garbage: &mut garbage,
                reply_limit: st.reply_limit,
                from_script: false,
            };
            let result = exec.run(spec, f, args, out);
            // Kept for the batch's next command (given back when the batch ends).
            Held::keep(&mut st.held, epoch, db, previous);
            result?;
        } else {
            drop(db);
            let ks = ks.clone();
            let limit = st.reply_limit;
            cold(run_long(
                sh,
                tenant,
                &ks,
                &mut st.rng,
                st.proto,
                limit,
                spec,
                f,
                args,
                out,
            ))
            .await?;
        }
    }
    drop(admitted);
    free_later(garbage);
    Ok(())
}

/// Runs a long data command on the blocking pool (see [`crate::offload`]); its admission is the
/// caller's. The request and the reply buffer move to the job and back.
#[allow(clippy::too_many_arguments)]
async fn run_long(
    sh: &Arc<Shared>,
    tenant: &Arc<Tenant>,
    ks: &Arc<Keyspace>,
    conn_rng: &mut SmallRng,
    proto: Protocol,
    reply_limit: usize,
    spec: &'static CommandSpec,
    f: DataFn,
    args: Args<'_>,
    out: &mut BytesMut,
) -> Result<(), ErrorReply> {
    let tenant = tenant.clone();
    let request = OwnedRequest::from_args(&args);
    let mut reply = std::mem::take(out);
    let mut rng = conn_rng.clone();
    let max_bulk = sh.hot.max_bulk_len.load(Relaxed) as usize;
    let shared = sh.clone();
    let job = move |db: &mut Db, garbage: &mut Garbage| {
        let args = request.args();
        // The clock and the quota are read now that the command's turn has come.
        let now = ferrite_storage::now_ms();
        let result = if spec.is_write() && quota_applies(&shared, &tenant) {
            check_quota(&shared, &tenant, db, now, [(spec, args)])
        } else {
            Ok(())
        };
        let result = result.and_then(|()| {
            // The reply buffer holds the batch's earlier replies: it must come back even if the
            // command panics (a bug), so the panic is caught here and answered as an error.
            let before = reply.len();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut exec = Exec {
                    db,
                    now,
                    rng: &mut rng,
                    proto,
                    max_bulk,
                    garbage,
                    reply_limit,
                    from_script: false,
                };
                exec.run(spec, f, args, &mut reply)
            }))
            .unwrap_or_else(|_| {
                reply.truncate(before);
                Err(ErrorReply::err("internal error while running the command"))
            })
        });
        (reply, rng, result)
    };
    let (reply, rng, result) = crate::offload::run_locked(sh, ks, job).await?;
    *out = reply;
    *conn_rng = rng;
    result
}

/// What a batch's replies wait for before they go out ([`settle_before_replies`]).
pub enum Settle {
    /// The batch wrote: its writes are committed ([`commit_to`]).
    Commit(Arc<dyn ferrite_tenancy::Durability>),
    /// The batch did not write, but under `always` the log held writes of other connections
    /// that were not on disk yet when it had run: it may have read them, so its replies wait
    /// until the log is on disk up to this position.
    AwaitSynced(Arc<dyn ferrite_tenancy::Durability>, u64),
}

impl Settle {
    pub async fn run(self) -> Result<(), String> {
        match self {
            Settle::Commit(d) => commit_to(d).await,
            Settle::AwaitSynced(d, end) => {
                // The writers queued on this worker run first: the one whose write this batch
                // read then commits everything they journaled with one fsync. A reader that
                // fsynced at once would split that group (measured: a fifth fewer SETs/s with
                // 25 writers and 25 readers under `always`).
                RunQueuedFirst(false).await;
                d.wait_synced(end).await
            }
        }
    }
}

/// The one rule for when a batch's replies may go out: a batch that wrote commits its writes
/// (durable as the fsync policy says; consumes the batch's "wrote" mark). Under `always` a
/// batch that did not write — GET, MGET, EXISTS, SCAN, EXEC, a script, TENANT.DIGEST... —
/// waits until the log is on disk up to where it was when the batch had run, since its
/// replies may reflect other connections' writes whose own replies still wait for their
/// group commit: no client sees a write that a crash could lose, as in Redis, where every
/// reply of an event-loop pass follows that pass's AOF fsync. `None`: the replies go out now
/// (no log, `everysec` or `no`, or everything journaled on disk — the common case, a few
/// atomic loads, or no command ran since the last settle: no reply to hold). Synchronous, for
/// the connection loop: a batch with nothing to wait for does not build the future.
#[inline]
pub fn settle_before_replies(st: &mut ClientState) -> Option<Settle> {
    let wrote = std::mem::take(&mut st.batch.wrote);
    let ran = std::mem::take(&mut st.batch.ran);
    let log = st.tenant.durability()?;
    if wrote {
        return Some(Settle::Commit(log.clone()));
    }
    if !ran {
        return None;
    }
    settle_read_of(&st.tenant)
}

/// Under `always`, what a reply that read `tenant`'s keyspace waits for: the log on disk up to
/// its end now ([`settle_before_replies`]'s rule for a batch without writes; also for an
/// administrator's command that reads another tenant, such as TENANT.DIGEST).
#[inline]
pub fn settle_read_of(tenant: &ferrite_tenancy::Tenant) -> Option<Settle> {
    let log = tenant.durability()?;
    let end = log.unsynced_end()?;
    Some(Settle::AwaitSynced(log.clone(), end))
}

/// Makes the writes the connection ran since the last call durable, as the fsync policy says,
/// before their replies are sent: handed to the kernel, and with `always` on disk — the wait is
/// shared with every writer whose data the same fsync covers. An error means they are not in
/// the log: their replies must not go out.
///
/// Group write: before writing, the connection lets the connections already queued on its
/// worker run their batches ([`RunQueuedFirst`]); the first of them to go on then hands
/// everything journaled meanwhile to the kernel in one `write`, and the others find theirs
/// written. Redis writes its AOF buffer once per event-loop pass the same way; without it, each
/// SET at -P1 paid a `write` of its own. The log says when the wait is worth it
/// (`Durability::group_write`): a lone writer would pay a task switch (and tokio waking the
/// other worker, a futex call per SET) for nothing. Connections that waited for the tenant's
/// keyspace lock (behind a snapshot's step, a long command) are among those queued: a release
/// frees the lock and wakes its next waiter instead of handing it over (see `Keyspace`), so no
/// convoy of waiters keeps them out of the run queue (under `always` it left one pipeline per
/// fsync after a compaction: docs/benchmarks.md).
pub async fn commit_to(d: Arc<dyn ferrite_tenancy::Durability>) -> Result<(), String> {
    let position = d.journaled();
    if d.group_write() {
        RunQueuedFirst(false).await;
    }
    match d.commit(position)? {
        None => Ok(()),
        Some(position) => d.wait_synced(position).await,
    }
}

/// Resumes the task after the tasks already queued on its worker have run (those whose sockets
/// were ready at the runtime's last poll), and at once when there are none. Unlike
/// `tokio::task::yield_now`, which resumes a task only after the runtime's next poll of the
/// sockets, it costs no `epoll_wait` — and replies held back until then would have left the
/// clients nothing to send, so that poll would find little.
struct RunQueuedFirst(bool);

impl std::future::Future for RunQueuedFirst {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        // A task woken while it runs goes to the back of its worker's queue.
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Writes of this batch could not be made durable: none of its replies is sent and the
/// connection is closed, so no client takes an unlogged write as acknowledged (the outcome is
/// unknown to it, as after a crash). Later writes are refused with `-MISCONF` until the log
/// works again.
pub fn abandon_batch(st: &mut ClientState, out: &mut BytesMut, why: &str) -> Flow {
    tracing::warn!(
        error = why,
        "writes could not be persisted; closing the connection without replying"
    );
    out.clear();
    st.closing = true;
    Flow::Close
}

/// Frees large removed values off the async workers.
pub fn free_later(garbage: Garbage) {
    if !garbage.is_empty() {
        tokio::task::spawn_blocking(move || drop(garbage));
    }
}

#[cfg(test)]
mod tests {
    use super::WarmMemo;

    /// A round of one key is remembered only when it had several requests; the rounds that
    /// start with it are warmed by it alone, but never more than `RECHECK` in a row, and a
    /// round that names several keys (or another first key) is collected whole again.
    #[test]
    fn the_warming_memo_covers_only_rounds_of_its_one_key_and_rechecks() {
        let mut memo = WarmMemo::default();
        assert!(!memo.covers(b"mylist"), "nothing learnt yet");
        memo.learn(&[b"mylist"], 1);
        assert!(!memo.covers(b"mylist"), "a lone request is not a pipeline");
        memo.learn(&[b"mylist"], 16);
        for _ in 0..WarmMemo::RECHECK {
            assert!(memo.covers(b"mylist"));
        }
        assert!(
            !memo.covers(b"mylist"),
            "every RECHECK-th round is collected whole"
        );
        memo.learn(&[b"mylist"], 16);
        assert!(!memo.covers(b"other"));
        assert!(memo.covers(b"mylist"));
        memo.learn(&[b"mylist", b"other"], 16);
        assert!(!memo.covers(b"mylist"), "a round of two keys is forgotten");
        memo.learn(&[&[]], 16);
        assert!(!memo.covers(b""), "an empty key is never remembered");
        memo.learn(&[&[b'k'; 300][..]], 16);
        assert!(!memo.covers(&[b'k'; 300]), "a long key is not copied");
    }
}
