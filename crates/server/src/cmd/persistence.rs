//! SAVE, BGSAVE, BGREWRITEAOF, LASTSAVE, and SHUTDOWN's SAVE/NOSAVE: Redis's commands over
//! ferrite-persistence. A snapshot never forks and never stops writes, so SAVE blocks only the
//! client that asked; BGSAVE and BGREWRITEAOF do the same work (every tenant's snapshot, which
//! also compacts its log) in the background and are reported apart, as Redis reports them.

use std::sync::Arc;

use bytes::BytesMut;
use ferrite_protocol::{Args, ErrorReply, ReplyWriter};

use super::ServerResult;
use crate::connection::ClientState;
use crate::dispatch::Flow;
use crate::shared::Shared;

fn persistence(sh: &Shared) -> Result<Arc<ferrite_persistence::Persistence>, ErrorReply> {
    sh.persistence.clone().ok_or_else(|| {
        ErrorReply::err("persistence is disabled (persistence.enabled = false, or --appendonly no)")
    })
}

/// SAVE: every tenant's snapshot, written before the reply.
pub async fn save(st: &mut ClientState, sh: &Arc<Shared>, out: &mut BytesMut) -> ServerResult {
    let p = persistence(sh)?;
    let r = tokio::task::spawn_blocking(move || p.save_now())
        .await
        .map_err(|e| ErrorReply::err(format!("SAVE failed: {e}")))?;
    r.map_err(ErrorReply::err)?;
    ReplyWriter::new(out, st.proto).ok();
    Ok(Flow::Continue)
}

/// BGSAVE [SCHEDULE].
pub fn bgsave(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let schedule = match args.len() {
        1 => false,
        2 if args.is(1, "SCHEDULE") => true,
        _ => return Err(ErrorReply::syntax()),
    };
    let text = persistence(sh)?.bgsave(schedule).map_err(ErrorReply::err)?;
    ReplyWriter::new(out, st.proto).simple(text);
    Ok(Flow::Continue)
}

/// BGREWRITEAOF: compacts every tenant's log into a new snapshot.
pub fn bgrewriteaof(st: &mut ClientState, sh: &Arc<Shared>, out: &mut BytesMut) -> ServerResult {
    let text = persistence(sh)?.bgrewriteaof().map_err(ErrorReply::err)?;
    ReplyWriter::new(out, st.proto).simple(text);
    Ok(Flow::Continue)
}

/// LASTSAVE: Unix time of the last successful snapshot of everything (startup time before one).
pub fn lastsave(st: &mut ClientState, sh: &Arc<Shared>, out: &mut BytesMut) -> ServerResult {
    let t = match &sh.persistence {
        Some(p) => p.lastsave(),
        None => {
            let up = sh.started.elapsed().as_secs();
            ferrite_storage::now_ms() / 1000 - up
        }
    };
    ReplyWriter::new(out, st.proto).int(t as i64);
    Ok(Flow::Continue)
}

/// What SHUTDOWN does with the data before the server stops: SAVE snapshots every tenant (an
/// error refuses the shutdown, as Redis's "Errors trying to SHUTDOWN"); otherwise — NOSAVE
/// included, as with Redis's append-only file — every log is written and fsynced when the
/// server stops.
pub async fn before_shutdown(sh: &Arc<Shared>, save: bool) -> Result<(), ErrorReply> {
    let Some(p) = sh.persistence.clone() else {
        return Ok(());
    };
    if !save {
        return Ok(());
    }
    let r = tokio::task::spawn_blocking(move || p.save_now())
        .await
        .map_err(|e| ErrorReply::err(format!("Errors trying to SHUTDOWN: {e}")))?;
    r.map_err(|e| {
        tracing::warn!(error = %e, "SHUTDOWN SAVE: the snapshot failed; not shutting down");
        ErrorReply::err("Errors trying to SHUTDOWN. Check logs.")
    })
}
