//! MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! EXEC runs the queued commands under one lock of the tenant's keyspace, so no other client sees
//! a partial transaction; WATCH compares per-key versions taken at WATCH time.

use std::sync::Arc;

use bytes::BytesMut;
use ferrite_commands::spec::{self, flags};
use ferrite_commands::{Ctx, Garbage, Handler};
use ferrite_protocol::{ErrorReply, ReplyWriter};

use super::ServerResult;
use crate::connection::{ClientState, Watched};
use crate::dispatch::{self, Flow};
use crate::errors;
use crate::shared::Shared;

/// Server commands that may be queued in MULTI. They run synchronously inside EXEC and never
/// take a keyspace lock (EXEC holds the tenant's).
pub fn queueable_in_multi(name: &str) -> bool {
    matches!(
        name,
        "ping"
            | "echo"
            | "time"
            | "select"
            | "info"
            | "config"
            | "client"
            | "command"
            | "tenant.current"
            | "tenant.info"
            | "unwatch"
    )
}

pub fn multi(st: &mut ClientState, out: &mut BytesMut) -> ServerResult {
    st.multi = Some((Vec::new(), false));
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

pub fn watch(
    st: &mut ClientState,
    args: ferrite_protocol::Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let ks = st.tenant.keyspace();
    let now = ferrite_storage::now_ms();
    {
        let mut db = ks.lock();
        for key in args.tail(1).iter() {
            let version = db.get(key, now).map(|e| e.version());
            st.watched.push(Watched {
                keyspace: ks.clone(),
                key: key.into(),
                version,
            });
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
    let tenant = st.tenant.clone();
    let all = spec::all();
    let data_commands = queue
        .iter()
        .filter(|q| matches!(all.get(q.index).map(|s| s.handler), Some(Handler::Data(_))))
        .count() as u64;
    let has_data = data_commands > 0;
    let has_write = queue
        .iter()
        .any(|q| all.get(q.index).is_some_and(|s| s.is_write()));
    if has_data {
        dispatch::check_ownership(st, sh, &tenant)?;
        // Each queued command counts against the tenant's rate, as it would outside MULTI.
        dispatch::throttle(sh, &tenant, data_commands).await?;
    }
    let _permit = if has_write {
        let Some(p) = tenant.gate().enter(dispatch::gate_timeout(sh)).await else {
            dispatch::check_ownership(st, sh, &tenant)?;
            return Err(ErrorReply::try_again(format!(
                "tenant '{}' is switching servers; retry shortly",
                tenant.id()
            )));
        };
        dispatch::check_ownership(st, sh, &tenant)?;
        Some(p)
    } else {
        None
    };
    let ks = tenant.keyspace();
    let now = ferrite_storage::now_ms();
    let mut garbage = Garbage::default();
    {
        let mut db = ks.lock();
        let dirty = watched.iter().any(|w| {
            !Arc::ptr_eq(&w.keyspace, &ks) || db.get(&w.key, now).map(|e| e.version()) != w.version
        });
        if dirty {
            ReplyWriter::new(out, st.proto).null_array();
            return Ok(Flow::Continue);
        }
        // Quotas are checked once for the whole transaction, before anything runs, so that a
        // transaction is refused whole rather than left half-applied by a later command.
        if tenant.has_quota() {
            let (new_keys, bytes) = quota_demand(&queue, all, &mut db, now);
            tenant
                .check_quota(new_keys, bytes)
                .map_err(|q| errors::quota(&tenant, &q))?;
        }
        ReplyWriter::new(out, st.proto).array(queue.len());
        // Subscribers (the append-only log) get the whole transaction in one publication.
        db.begin_atomic();
        for q in &queue {
            let proto = st.proto;
            let Some(spec) = all.get(q.index) else {
                ReplyWriter::new(out, proto).error(&ErrorReply::err("unknown command"));
                continue;
            };
            let args = q.request.args();
            tenant
                .stats
                .commands
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let result = match spec.handler {
                Handler::Data(f) => {
                    let mut w = ReplyWriter::new(out, proto);
                    let mut ctx = Ctx {
                        db: &mut db,
                        w: &mut w,
                        now,
                        rng: &mut st.rng,
                        max_bulk: sh
                            .hot
                            .max_bulk_len
                            .load(std::sync::atomic::Ordering::Relaxed)
                            as usize,
                        garbage: &mut garbage,
                    };
                    ctx.run(f, args)
                }
                Handler::Server => super::run_queued(st, sh, spec.name, args, out).map(|_| ()),
            };
            if let Err(e) = result {
                ReplyWriter::new(out, proto).error(&e);
            }
        }
        db.end_atomic(now);
    }
    dispatch::free_later(garbage);
    Ok(Flow::Continue)
}

/// What a transaction's writes ask of the quotas: the distinct keys they may create that do not
/// exist yet, and the bytes of their arguments. It ignores deletes earlier in the same
/// transaction, so it may refuse a transaction that would just fit, never admit one that does not.
fn quota_demand(
    queue: &[crate::connection::Queued],
    all: &[spec::CommandSpec],
    db: &mut ferrite_storage::Db,
    now: u64,
) -> (u64, u64) {
    let mut created: Vec<&[u8]> = Vec::new();
    let mut bytes = 0u64;
    for q in queue {
        let Some(spec) = all.get(q.index) else {
            continue;
        };
        if !spec.has(flags::DENYOOM) {
            continue;
        }
        let args = q.request.args();
        created.extend(spec.created_keys(&args));
        bytes += args.tail(1).byte_len() as u64;
    }
    created.sort_unstable();
    created.dedup();
    let new_keys = created.iter().filter(|k| !db.contains(k, now)).count() as u64;
    (new_keys, bytes)
}
