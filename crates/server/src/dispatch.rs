//! Running one command: the single place that decides whether it may run (authentication,
//! administrator rights, MULTI queueing, tenant ownership, throttle, write gate, quotas) and then
//! runs it, recording statistics.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferrite_commands::spec::{CommandSpec, flags};
use ferrite_commands::{Ctx, Garbage, Handler, lookup_indexed};
use ferrite_protocol::{Args, ErrorReply, OwnedRequest, ReplyWriter};
use ferrite_tenancy::{Admission, Tenant, TenantState};

use crate::cmd;
use crate::connection::{ClientState, Queued};
use crate::errors;
use crate::shared::Shared;
use crate::stats::CommandTally;

/// What the connection should do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Write pending replies and close.
    Close,
}

/// Runs one request and writes its reply into `out`.
pub async fn execute(
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
        let e = ErrorReply::unknown_command(args.get(0), args.tail(1).iter());
        flag_multi_error(st);
        ReplyWriter::new(out, st.proto).error(&e);
        return Flow::Continue;
    };
    // CLIENT LIST shows the last command; a run of one command takes the lock once.
    if st.last_cmd.is_none_or(|(i, _)| i != index) {
        st.info.fields.lock().last_cmd = spec.name;
        st.last_cmd = Some((index, spec));
    }
    if let Err(e) = admit(st, sh, spec, &args) {
        if let Some(s) = sh.cmd_stats.get(index) {
            s.rejected.fetch_add(1, Relaxed);
        }
        // As in Redis, a nested MULTI or a WATCH inside MULTI is answered with an error but
        // does not doom the transaction; other refusals do.
        if !matches!(spec.name, "multi" | "watch") {
            flag_multi_error(st);
        }
        ReplyWriter::new(out, st.proto).error(&e);
        return Flow::Continue;
    }
    if let Some((queue, _)) = st.multi.as_mut() {
        if !matches!(
            spec.name,
            "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
        ) {
            if matches!(spec.handler, Handler::Server) && !cmd::queueable_in_multi(spec.name) {
                flag_multi_error(st);
                ReplyWriter::new(out, st.proto)
                    .error(&ErrorReply::err("Command not allowed inside a transaction"));
                return Flow::Continue;
            }
            queue.push(Queued {
                index,
                request: OwnedRequest::from_args(&args),
            });
            ReplyWriter::new(out, st.proto).simple("QUEUED");
            return Flow::Continue;
        }
    }
    let before = out.len();
    let flow = match spec.handler {
        Handler::Server => {
            // Server commands read and reset the shared counters (INFO, CONFIG RESETSTAT) and
            // may bind another tenant: they see every command that ran before them.
            st.batch.flush(sh, &st.tenant);
            cmd::run_server_command(st, sh, spec, args, out).await
        }
        Handler::Data(f) => {
            if let Err(e) = run_data(st, sh, spec, f, args, out).await {
                ReplyWriter::new(out, st.proto).error(&e);
            }
            Flow::Continue
        }
    };
    let failed = out.get(before) == Some(&b'-');
    let nanos = st.batch.lap();
    st.batch.tally(index, nanos, failed);
    flow
}

/// The clock and the counters of one batch: the requests that one read delivered.
///
/// Reading the clock costs about 50 ns on the virtual machines we measured (docs/benchmarks.md),
/// a large part of what a GET costs, and the shared counters are written by every worker thread,
/// so each update of one moves a cache line between cores. So a batch reads the wall clock once, each command reads the
/// monotonic clock once (its end is the next command's start), and the counters are added to the
/// shared ones when the batch ends, before its replies are written, or before a server command
/// (which may read them) runs.
pub struct Batch {
    /// The wall clock (Unix ms) when the batch started.
    started_ms: u64,
    /// When the running command started: the end of the previous one, or the batch start.
    mark: Instant,
    /// Nanoseconds from the batch start to `mark` (the sum of the laps: cheaper than subtracting
    /// instants).
    elapsed_nanos: u64,
    /// Commands of this batch not yet added to `commands_processed`.
    commands: u64,
    /// Data commands not yet added to the tenant's `commands`.
    tenant_commands: u64,
    /// Runs not yet added to `cmd_stats`, by command index (a batch rarely has more than two
    /// distinct commands, so a linear search beats a map).
    tallies: Vec<(usize, CommandTally)>,
}

impl Default for Batch {
    fn default() -> Self {
        let now = Instant::now();
        Batch {
            started_ms: ferrite_storage::now_ms(),
            mark: now,
            elapsed_nanos: 0,
            commands: 0,
            tenant_commands: 0,
            tallies: Vec::new(),
        }
    }
}

impl Batch {
    /// Starts a batch (data has just been read); returns the time.
    pub fn start(&mut self) -> Instant {
        let now = Instant::now();
        self.mark = now;
        self.elapsed_nanos = 0;
        self.started_ms = ferrite_storage::now_ms();
        now
    }

    /// Unix ms at the start of the running command: the batch's wall clock advanced by the
    /// monotonic time since (a wall clock step shows from the next batch on).
    fn now_ms(&self) -> u64 {
        self.started_ms + self.elapsed_nanos / 1_000_000
    }

    /// Ends the running command; returns how long it took in nanoseconds.
    fn lap(&mut self) -> u64 {
        let now = Instant::now();
        let nanos = now.saturating_duration_since(self.mark).as_nanos() as u64;
        self.mark = now;
        self.elapsed_nanos += nanos;
        nanos
    }

    fn tally(&mut self, index: usize, nanos: u64, failed: bool) {
        if let Some((_, t)) = self.tallies.iter_mut().find(|(i, _)| *i == index) {
            t.add(nanos, failed);
            return;
        }
        self.tallies.push((index, CommandTally::default()));
        if let Some((_, t)) = self.tallies.last_mut() {
            t.add(nanos, failed);
        }
    }

    /// Adds the batch's counts to the shared counters. `tenant` is the tenant the batch's data
    /// commands ran for (the connection's; only server commands rebind it, and they flush first).
    pub fn flush(&mut self, sh: &Shared, tenant: &Tenant) {
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
        for (index, t) in self.tallies.drain(..) {
            if let Some(s) = sh.cmd_stats.get(index) {
                s.add(&t);
            }
        }
    }
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
    spec: &CommandSpec,
    args: &Args<'_>,
) -> Result<(), ErrorReply> {
    if !spec.arity_ok(args.len()) {
        return Err(ErrorReply::wrong_arity(spec.name));
    }
    if !st.authenticated && !spec.has(flags::NO_AUTH) {
        return Err(ErrorReply::no_auth());
    }
    if spec.has(flags::ADMIN) && !st.admin {
        return Err(errors::no_permission(spec.name));
    }
    if st.multi.is_some() && spec.has(flags::NO_MULTI) {
        return Err(match spec.name {
            "multi" => ErrorReply::err("MULTI calls can not be nested"),
            "watch" => ErrorReply::err("WATCH inside MULTI is not allowed"),
            "exec" | "discard" | "quit" | "reset" => return Ok(()),
            _ => ErrorReply::err("Command not allowed inside a transaction"),
        });
    }
    let _ = sh;
    Ok(())
}

/// Refuses a command on a tenant that is not served here right now.
pub fn check_ownership(st: &ClientState, sh: &Shared, tenant: &Tenant) -> Result<(), ErrorReply> {
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

/// Applies the tenant's throttle to `n` operations (a transaction's data commands): waits when
/// allowed, refuses past the configured bound.
pub async fn throttle(sh: &Shared, tenant: &Tenant, n: u64) -> Result<(), ErrorReply> {
    let max = Duration::from_millis(sh.hot.throttle_max_delay_ms.load(Relaxed));
    match tenant.admit_n(n, max) {
        Admission::Now => Ok(()),
        Admission::After(d) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
        Admission::Refused(d) => Err(errors::throttled(tenant, d, max)),
    }
}

/// How long a write may wait at a closed gate.
pub fn gate_timeout(sh: &Shared) -> Duration {
    Duration::from_millis(sh.hot.redirect_timeout_ms.load(Relaxed))
}

async fn run_data(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    spec: &CommandSpec,
    f: fn(&mut Ctx<'_, '_>, Args<'_>) -> ferrite_commands::CmdResult,
    args: Args<'_>,
    out: &mut BytesMut,
) -> Result<(), ErrorReply> {
    // Borrowed, not cloned: a refcount update per command is a write to a cache line that every
    // worker serving this tenant shares.
    let tenant = &st.tenant;
    check_ownership(st, sh, tenant)?;
    // The throttle, inline: an unthrottled tenant costs one load here.
    let max_delay = Duration::from_millis(sh.hot.throttle_max_delay_ms.load(Relaxed));
    let mut waited = match tenant.admit(max_delay) {
        Admission::Now => false,
        Admission::After(d) => {
            tokio::time::sleep(d).await;
            true
        }
        Admission::Refused(d) => return Err(errors::throttled(tenant, d, max_delay)),
    };
    // Writes hold a permit of the tenant's gate while they run, so that a cutover can pause
    // them and know when the last one finished. The ownership check is repeated after the
    // permit is granted: the cutover may have moved the tenant while we waited.
    let _permit = if spec.is_write() {
        let gate = tenant.gate();
        let permit = match gate.try_enter() {
            Some(p) => p,
            None => match gate.enter(gate_timeout(sh)).await {
                Some(p) => {
                    waited = true;
                    p
                }
                None => {
                    check_ownership(st, sh, tenant)?;
                    return Err(ErrorReply::try_again(format!(
                        "tenant '{}' is switching servers; retry shortly",
                        tenant.id()
                    )));
                }
            },
        };
        check_ownership(st, sh, tenant)?;
        Some(permit)
    } else {
        None
    };
    st.batch.tenant_commands += 1;
    // The keyspace fetched earlier in this batch is still the tenant's unless it was replaced
    // since (the epoch says); the cache is dropped at the end of the batch so that an idle
    // connection never keeps a replaced keyspace alive.
    let epoch = tenant.keyspace_epoch();
    let ks = match st.keyspace {
        Some((e, ref ks)) if e == epoch => ks,
        _ => &st.keyspace.insert((epoch, tenant.keyspace())).1,
    };
    let now = if waited {
        ferrite_storage::now_ms()
    } else {
        st.batch.now_ms()
    };
    let mut garbage = Garbage::default();
    {
        let mut db = ks.lock();
        // Counting the keys a write would create costs a lookup; only quotas need it.
        if spec.has(flags::DENYOOM) && tenant.has_quota() {
            let created = spec.created_keys(&args);
            let new_keys = created.iter().filter(|k| !db.contains(k, now)).count() as u64;
            tenant
                .check_quota(new_keys, args.tail(1).byte_len() as u64)
                .map_err(|q| errors::quota(tenant, &q))?;
        }
        let mut w = ReplyWriter::new(out, st.proto);
        let mut ctx = Ctx {
            db: &mut db,
            w: &mut w,
            now,
            rng: &mut st.rng,
            max_bulk: sh.hot.max_bulk_len.load(Relaxed) as usize,
            garbage: &mut garbage,
        };
        ctx.run(f, args)?;
    }
    free_later(garbage);
    Ok(())
}

/// Frees large removed values off the async workers.
pub fn free_later(garbage: Garbage) {
    if !garbage.is_empty() {
        tokio::task::spawn_blocking(move || drop(garbage));
    }
}
