//! MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! EXEC runs the queued commands under one lock of the tenant's keyspace, so no other client sees
//! a partial transaction; WATCH compares per-key versions taken at WATCH time.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use ferrite_commands::{Garbage, Handler, cost, spec};
use ferrite_protocol::{ErrorReply, ReplyWriter};

use super::ServerResult;
use crate::acl_log::Context as AclContext;
use crate::connection::{ClientState, Queued, Watched};
use crate::dispatch::{self, Flow};
use crate::offload;
use crate::shared::Shared;

pub fn multi(st: &mut ClientState, out: &mut BytesMut) -> ServerResult {
    st.multi = Some((Vec::new(), false));
    st.multi_bytes = 0;
    st.info.fields.lock().multi = 0;
    ReplyWriter::new(out, st.proto).ok();
    Ok(Flow::Continue)
}

pub fn discard(st: &mut ClientState, out: &mut BytesMut) -> ServerResult {
    if st.multi.take().is_none() {
        return Err(ErrorReply::err("DISCARD without MULTI"));
    }
    st.watched.clear();
    st.info.fields.lock().multi = -1;
    ReplyWriter::new(out, st.proto).ok();
    Ok(Flow::Continue)
}

pub async fn watch(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: ferrite_protocol::Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let ks = st.tenant.keyspace();
    match crate::scripting::or_busy(sh, &st.tenant, ks.lock_async()).await {
        Ok(mut db) => {
            let now = ferrite_storage::now_ms();
            for key in args.tail(1).iter() {
                let version = db.get(key, now).map(|e| e.version());
                st.watched.push(Watched {
                    keyspace: ks.clone(),
                    key: key.into(),
                    version,
                    during_script: None,
                });
            }
        }
        // A busy script holds the keyspace: WATCH is allowed anyway (allow-busy in Redis), and
        // judged at EXEC against the keyspace's version when the script started.
        Err(busy) => {
            let Some(version) = st.tenant.scripts().running_keyspace_version() else {
                return Err(busy);
            };
            for key in args.tail(1).iter() {
                st.watched.push(Watched {
                    keyspace: ks.clone(),
                    key: key.into(),
                    version: None,
                    during_script: Some(version),
                });
            }
        }
    }
    ReplyWriter::new(out, st.proto).ok();
    Ok(Flow::Continue)
}

pub fn unwatch(st: &mut ClientState, out: &mut BytesMut) -> ServerResult {
    st.watched.clear();
    ReplyWriter::new(out, st.proto).ok();
    Ok(Flow::Continue)
}

pub async fn exec(st: &mut ClientState, sh: &Arc<Shared>, out: &mut BytesMut) -> ServerResult {
    let Some((queue, refused)) = st.multi.take() else {
        return Err(ErrorReply::err("EXEC without MULTI"));
    };
    st.info.fields.lock().multi = -1;
    let watched = std::mem::take(&mut st.watched);
    if refused {
        return Err(ErrorReply::exec_abort());
    }
    let all = spec::all();
    // min-replicas-to-write refuses a transaction with a write command, discarding it (Redis
    // refuses such an EXEC).
    if queue
        .iter()
        .any(|q| is_data(q) && all.get(q.index).is_some_and(|s| s.is_write()))
        && let Err(e) = sh.check_replicas()
    {
        return Err(ErrorReply::coded(
            "EXECABORT",
            format_args!("Transaction discarded because of: {}", e.text()),
        ));
    }
    let work = dispatch::Work {
        commands: queue.iter().filter(|q| under_lock(q)).count() as u64,
        // A script that may write (not _RO) holds the write gate, as when sent alone.
        writes: queue.iter().any(|q| {
            all.get(q.index).is_some_and(|s| {
                s.is_write() || script_of(q).is_some_and(|(_, read_only)| !read_only)
            })
        }),
        keys: dispatch::Keys::Queued(&queue),
    };
    // The transaction is admitted once, as a whole, by the same code as a single command: a
    // transaction of server commands only (PING, INFO...) does not touch the tenant's data.
    let tenant = st.tenant.clone();
    let admitted = if work.commands > 0 {
        Some(dispatch::admit_work(st, sh, &tenant, work).await?)
    } else {
        None
    };
    st.batch.wrote |= work.writes;
    let ks = tenant.keyspace();
    // A long transaction runs its data commands on the blocking pool. It learns that it is long
    // under the lock; it then gives the lock back, waits for a slot, and starts again (WATCH and
    // quotas are checked when the transaction really runs).
    let mut slot = None;
    let (mut db, now) = loop {
        let mut db = crate::scripting::or_busy(sh, &tenant, ks.lock_owned()).await?;
        let now = ferrite_storage::now_ms();
        let dirty = watched.iter().any(|w| w.changed(&ks, &mut db, now));
        if dirty {
            ReplyWriter::new(out, st.proto).null_array();
            return Ok(Flow::Continue);
        }
        if work.writes && dispatch::quota_applies(sh, &tenant) {
            let commands = queue
                .iter()
                .filter_map(|q| Some((all.get(q.index)?, q.request.args())));
            // Refused whole, before any of it runs; Redis answers a refused EXEC this way.
            dispatch::check_quota(sh, &tenant, &mut db, now, commands).map_err(|e| {
                ErrorReply::coded(
                    "EXECABORT",
                    format_args!("Transaction discarded because of: {}", e.text()),
                )
            })?;
        }
        if slot.is_none() && transaction_work(&queue, &db) > cost::LONG_WORK {
            drop(db);
            slot = Some(offload::slot(sh).await?);
            continue;
        }
        break (db, now);
    };
    ReplyWriter::new(out, st.proto).array(queue.len());
    // Subscribers (the append-only log) get the whole transaction in one publication.
    db.begin_atomic();
    let mut segment = Segment {
        queue,
        tenant: tenant.clone(),
        now,
        proto: st.proto,
        max_bulk: sh.hot.max_bulk_len.load(Relaxed) as usize,
        reply_limit: st.reply_limit,
        rng: st.rng.clone(),
        caller: crate::scripting::Caller::of(st, sh),
    };
    let mut i = 0;
    while i < segment.queue.len() {
        let q = &segment.queue[i];
        if !under_lock(q) {
            // Server commands queued in MULTI run here, on the connection's task; they take no
            // keyspace lock (this transaction holds its tenant's).
            let before = out.len();
            let result = match all.get(q.index) {
                Some(s) => match &st.acl_user {
                    // The user's rules may have changed since the command was queued.
                    Some(user) => dispatch::check_acl_at_exec(
                        user,
                        q.index,
                        s,
                        &q.request.args(),
                        dispatch::Audit::of(st, sh, AclContext::Multi),
                    ),
                    None => Ok(()),
                }
                .and_then(|()| super::run_queued(st, sh, q.index, q.request.args(), out)),
                None => Err(ErrorReply::err("unknown command")),
            };
            if let Err(e) = result {
                ReplyWriter::new(out, st.proto).error(&e);
            }
            // INFO errorstats counts the errors inside EXEC's reply, as Redis does.
            dispatch::count_error(st, sh, &out[before..]);
            i += 1;
            continue;
        }
        let end = (i..segment.queue.len())
            .find(|&j| !under_lock(&segment.queue[j]))
            .unwrap_or(segment.queue.len());
        if slot.is_some() {
            let mut reply = std::mem::take(out);
            let job = move |db: &mut ferrite_storage::Db, garbage: &mut Garbage| {
                segment.run(db, i..end, &mut reply, garbage);
                (segment, reply)
            };
            let (guard, (back, reply), garbage) = offload::run_with(db, job).await?;
            db = guard;
            segment = back;
            *out = reply;
            dispatch::free_later(garbage);
        } else {
            let mut garbage = Garbage::default();
            segment.run(&mut db, i..end, out, &mut garbage);
            dispatch::free_later(garbage);
        }
        i = end;
    }
    db.end_atomic(now);
    drop(db);
    st.rng = segment.rng;
    drop(slot);
    drop(admitted);
    Ok(Flow::Continue)
}

fn is_data(q: &Queued) -> bool {
    matches!(
        spec::all().get(q.index).map(|s| s.handler),
        Some(Handler::Data(_))
    )
}

/// EVAL, EVALSHA, FCALL (and _RO) queued in MULTI: how it runs.
fn script_of(q: &Queued) -> Option<(crate::scripting::Call, bool)> {
    crate::scripting::script_call(spec::all().get(q.index)?.name)
}

/// Runs under the transaction's keyspace lock: a data command or a script.
fn under_lock(q: &Queued) -> bool {
    is_data(q) || script_of(q).is_some()
}

/// The estimated work of a transaction's data commands (see `ferrite_commands::cost`).
fn transaction_work(queue: &[Queued], db: &ferrite_storage::Db) -> u64 {
    let all = spec::all();
    queue
        .iter()
        .filter(|q| under_lock(q))
        .map(|q| {
            let args = q.request.args();
            // A script may run for any time: the transaction leaves the I/O threads.
            if script_of(q).is_some() {
                return cost::LONG_WORK + 1;
            }
            match all.get(q.index) {
                Some(spec) if cost::depends_on_data(q.index) => cost::estimate(spec, &args, db),
                _ => args.len() as u64,
            }
        })
        .fold(0, u64::saturating_add)
}

/// A transaction's queued commands and what its data commands run with; it moves to the
/// blocking pool and back when the transaction is long.
struct Segment {
    queue: Vec<Queued>,
    tenant: Arc<ferrite_tenancy::Tenant>,
    now: u64,
    proto: ferrite_protocol::Protocol,
    max_bulk: usize,
    reply_limit: usize,
    rng: rand::rngs::SmallRng,
    /// The connection's ACL user (each command is checked again at EXEC, as in Redis) and
    /// where error replies are counted.
    caller: crate::scripting::Caller,
}

impl Segment {
    /// Runs the data commands `range` of the queue, each reply (or error) into `out`.
    fn run(
        &mut self,
        db: &mut ferrite_storage::Db,
        range: std::ops::Range<usize>,
        out: &mut BytesMut,
        garbage: &mut Garbage,
    ) {
        let all = spec::all();
        // Taken out while its commands run with `self`, and put back.
        let queue = std::mem::take(&mut self.queue);
        for q in &queue[range] {
            let Some(spec) = all.get(q.index) else {
                continue;
            };
            let before = out.len();
            self.run_one(db, q, spec, out, garbage);
            // INFO errorstats counts the errors inside EXEC's reply, as Redis does.
            self.caller.count_exec_reply(&self.tenant, &out[before..]);
        }
        self.queue = queue;
    }

    /// Runs one queued data command or script, its reply (or error) into `out`.
    fn run_one(
        &mut self,
        db: &mut ferrite_storage::Db,
        q: &Queued,
        spec: &'static ferrite_commands::spec::CommandSpec,
        out: &mut BytesMut,
        garbage: &mut Garbage,
    ) {
        {
            if let Some(user) = &self.caller.user {
                // The user's rules may have changed since the command was queued.
                let audit = self.caller.audit(&self.tenant, AclContext::Multi);
                if let Err(e) =
                    dispatch::check_acl_at_exec(user, q.index, spec, &q.request.args(), audit)
                {
                    ReplyWriter::new(out, self.proto).error(&e);
                    return;
                }
            }
            if let Some(call) = script_of(q) {
                self.tenant.stats.commands.fetch_add(1, Relaxed);
                let result = crate::scripting::run_in_transaction(
                    db,
                    &self.tenant,
                    &mut self.rng,
                    self.max_bulk,
                    garbage,
                    self.proto,
                    call,
                    q.request.args(),
                    out,
                    &mut self.caller,
                );
                if let Err(e) = result {
                    ReplyWriter::new(out, self.proto).error(&e);
                }
                return;
            }
            let Handler::Data(f) = spec.handler else {
                return;
            };
            self.tenant.stats.commands.fetch_add(1, Relaxed);
            let before = out.len();
            // A panicking command (a bug) must not take the transaction's other replies, nor
            // the lock it holds, with it: it is answered as an error.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut exec = dispatch::Exec {
                    db: &mut *db,
                    now: self.now,
                    rng: &mut self.rng,
                    proto: self.proto,
                    max_bulk: self.max_bulk,
                    garbage: &mut *garbage,
                    reply_limit: self.reply_limit,
                    from_script: false,
                };
                exec.run(spec, f, q.request.args(), out)
            }))
            .unwrap_or_else(|_| {
                out.truncate(before);
                Err(ErrorReply::err("internal error while running the command"))
            });
            if let Err(e) = result {
                ReplyWriter::new(out, self.proto).error(&e);
            }
        }
    }
}
