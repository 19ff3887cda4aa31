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
    sh.stats.commands_processed.fetch_add(1, Relaxed);
    let Some((index, spec)) = lookup_indexed(args.get(0)) else {
        let e = ErrorReply::unknown_command(args.get(0), args.tail(1).iter());
        flag_multi_error(st);
        ReplyWriter::new(out, st.proto).error(&e);
        return Flow::Continue;
    };
    st.info.fields.lock().last_cmd = spec.name;
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
    let started = Instant::now();
    let before = out.len();
    let flow = match spec.handler {
        Handler::Server => cmd::run_server_command(st, sh, spec, args, out).await,
        Handler::Data(f) => {
            run_data(st, sh, spec, f, args, out).await;
            Flow::Continue
        }
    };
    let failed = out.get(before) == Some(&b'-');
    if let Some(s) = sh.cmd_stats.get(index) {
        s.record(started.elapsed().as_nanos() as u64, failed);
    }
    flow
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

/// Applies the tenant's throttle: waits when allowed, refuses past the configured bound.
pub async fn throttle(sh: &Shared, tenant: &Tenant) -> Result<(), ErrorReply> {
    let max = Duration::from_millis(sh.hot.throttle_max_delay_ms.load(Relaxed));
    match tenant.admit(max) {
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
) {
    let tenant = st.tenant.clone();
    let result = run_data_checked(st, sh, &tenant, spec, f, args, out).await;
    if let Err(e) = result {
        ReplyWriter::new(out, st.proto).error(&e);
    }
}

async fn run_data_checked(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    tenant: &Arc<Tenant>,
    spec: &CommandSpec,
    f: fn(&mut Ctx<'_, '_>, Args<'_>) -> ferrite_commands::CmdResult,
    args: Args<'_>,
    out: &mut BytesMut,
) -> Result<(), ErrorReply> {
    check_ownership(st, sh, tenant)?;
    throttle(sh, tenant).await?;
    // Writes hold a permit of the tenant's gate while they run, so that a cutover can pause
    // them and know when the last one finished. The ownership check is repeated after the
    // permit is granted: the cutover may have moved the tenant while we waited.
    let _permit = if spec.is_write() {
        let gate = tenant.gate();
        let permit = match gate.try_enter() {
            Some(p) => p,
            None => match gate.enter(gate_timeout(sh)).await {
                Some(p) => p,
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
    tenant.stats.commands.fetch_add(1, Relaxed);
    let ks = tenant.keyspace();
    let mut garbage = Garbage::default();
    {
        let now = ferrite_storage::now_ms();
        let mut db = ks.lock();
        if spec.has(flags::DENYOOM) {
            let created = spec.created_keys(&args);
            let new_keys = created.iter().filter(|k| !db.contains(k, now)).count() as u64;
            tenant
                .check_quota(new_keys)
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
        f(&mut ctx, args)?;
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
