//! MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! EXEC runs the queued commands under one lock of the tenant's keyspace, so no other client sees
//! a partial transaction; WATCH compares per-key versions taken at WATCH time.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use ferrite_commands::spec;
use ferrite_commands::{Garbage, Handler};
use ferrite_protocol::{ErrorReply, ReplyWriter};

use super::ServerResult;
use crate::connection::{ClientState, Watched};
use crate::dispatch::{self, Flow};
use crate::shared::Shared;

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

pub async fn watch(
    st: &mut ClientState,
    _sh: &Arc<Shared>,
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
    let all = spec::all();
    let work = dispatch::Work {
        commands: queue
            .iter()
            .filter(|q| matches!(all.get(q.index).map(|s| s.handler), Some(Handler::Data(_))))
            .count() as u64,
        writes: queue
            .iter()
            .any(|q| all.get(q.index).is_some_and(|s| s.is_write())),
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
        if work.writes && tenant.has_quota() {
            let commands = queue
                .iter()
                .filter_map(|q| Some((all.get(q.index)?, q.request.args())));
            dispatch::check_quota(&tenant, &mut db, now, commands)?;
        }
        ReplyWriter::new(out, st.proto).array(queue.len());
        let max_bulk = sh.hot.max_bulk_len.load(Relaxed) as usize;
        let reply_limit = st.reply_limit;
        // Subscribers (the append-only log) get the whole transaction in one publication.
        db.begin_atomic();
        for q in &queue {
            let proto = st.proto;
            let Some(spec) = all.get(q.index) else {
                ReplyWriter::new(out, proto).error(&ErrorReply::err("unknown command"));
                continue;
            };
            let args = q.request.args();
            let result = match spec.handler {
                Handler::Data(f) => {
                    tenant.stats.commands.fetch_add(1, Relaxed);
                    let mut exec = dispatch::Exec {
                        db: &mut db,
                        now,
                        rng: &mut st.rng,
                        proto,
                        max_bulk,
                        garbage: &mut garbage,
                        reply_limit,
                    };
                    exec.run(spec, f, args, out)
                }
                Handler::Server => super::run_queued(st, sh, q.index, args, out).map(|_| ()),
            };
            if let Err(e) = result {
                ReplyWriter::new(out, proto).error(&e);
            }
        }
        db.end_atomic(now);
    }
    drop(admitted);
    dispatch::free_later(garbage);
    Ok(Flow::Continue)
}
