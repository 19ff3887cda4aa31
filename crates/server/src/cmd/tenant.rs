//! TENANT.* management commands.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use ferrite_protocol::args::parse_memory_size;
use ferrite_protocol::{Args, ErrorReply, ReplyWriter};
use ferrite_storage::digest::BUCKETS;
use ferrite_tenancy::{CreateOptions, Credential, Registry, Tenant, TenantLimits, TenantState};

use super::ServerResult;
use crate::connection::ClientState;
use crate::dispatch::Flow;
use crate::errors;
use crate::shared::Shared;

fn tenant_arg(sh: &Shared, args: &Args<'_>, i: usize) -> Result<Arc<Tenant>, ErrorReply> {
    let id = Registry::validate_id(args.get(i)).map_err(|e| errors::tenancy(&e))?;
    sh.registry
        .get(id)
        .ok_or_else(|| ErrorReply::err(format!("no such tenant '{id}'")))
}

fn size_arg(args: &Args<'_>, i: usize) -> Result<u64, ErrorReply> {
    parse_memory_size(args.get(i)).ok_or_else(|| {
        ErrorReply::err(format!(
            "invalid size '{}': use bytes, optionally with a kb/mb/gb suffix",
            args.text(i)
        ))
    })
}

fn count_arg(args: &Args<'_>, i: usize) -> Result<u64, ErrorReply> {
    match args.int(i)? {
        n if n >= 0 => Ok(n as u64),
        _ => Err(ErrorReply::must_be_positive()),
    }
}

/// Parses `[PASSWORD pw] [MAXMEMORY bytes] [MAXKEYS n] [OPS n] [MAXCLIENTS n]` from `from` on.
fn parse_options(args: &Args<'_>, from: usize) -> Result<CreateOptions, ErrorReply> {
    let mut o = CreateOptions::default();
    let mut i = from;
    while i < args.len() {
        if i + 1 >= args.len() {
            return Err(ErrorReply::syntax());
        }
        let word = args.get(i).to_ascii_uppercase();
        match word.as_slice() {
            b"PASSWORD" => {
                if args.get(i + 1).is_empty() {
                    return Err(ErrorReply::err("the password cannot be empty"));
                }
                // Hashed at once: the password itself is never kept.
                o.credential = Some(Credential::from_password(args.get(i + 1)));
            }
            b"MAXMEMORY" => o.maxmemory = Some(size_arg(args, i + 1)?),
            b"MAXKEYS" => o.maxkeys = Some(count_arg(args, i + 1)?),
            b"OPS" => o.ops = Some(count_arg(args, i + 1)?),
            b"MAXCLIENTS" => o.maxclients = Some(count_arg(args, i + 1)?),
            _ => return Err(ErrorReply::syntax()),
        }
        i += 2;
    }
    Ok(o)
}

/// Writes the description of one tenant as a map.
fn describe(w: &mut ReplyWriter<'_>, t: &Tenant) {
    let ks = t.keyspace();
    let l = t.limits();
    let moved = t.moved_to();
    let mut fields: Vec<(&str, String)> = vec![
        ("id", t.id().to_string()),
        ("state", t.state().name().to_string()),
        ("keys", ks.len().to_string()),
        ("memory_used", ks.used_bytes().to_string()),
        ("maxmemory", l.maxmemory.to_string()),
        ("maxkeys", l.maxkeys.to_string()),
        ("ops_limit", l.ops.to_string()),
        ("maxclients", l.maxclients.to_string()),
        ("ops_per_sec", t.stats.ops_per_sec.load(Relaxed).to_string()),
        (
            "connected_clients",
            t.stats.clients.load(Relaxed).to_string(),
        ),
        ("commands_total", t.stats.commands.load(Relaxed).to_string()),
        (
            "throttled_total",
            t.stats.throttled.load(Relaxed).to_string(),
        ),
        ("rejected_total", t.stats.rejected.load(Relaxed).to_string()),
        (
            "password",
            if t.has_password() { "set" } else { "none" }.to_string(),
        ),
        ("created_at", crate::timefmt::rfc3339_ms(t.created_at())),
    ];
    if let Some(addr) = moved {
        fields.push(("moved_to", addr));
    }
    w.map(fields.len());
    for (k, v) in fields {
        w.bulk_str(k);
        match v.parse::<i64>() {
            Ok(n) if k != "id" => w.int(n),
            _ => w.bulk_str(&v),
        }
    }
}

/// Drops what the server keeps about a tenant by its name besides its record: its slow log,
/// latency events and ACL log (a new tenant of the same name must not see them).
fn forget_diagnostics(sh: &Shared, id: &str) {
    sh.diagnostics.forget(id);
    sh.acl_log.forget(id);
}

pub fn run(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    name: &str,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let proto = st.proto;
    match name {
        "tenant.create" => {
            let id = Registry::validate_id(args.get(1)).map_err(|e| errors::tenancy(&e))?;
            let opts = parse_options(&args, 2)?;
            sh.registry
                .create(id, opts)
                .map_err(|e| errors::tenancy(&e))?;
            // A command of a deleted tenant of the same name that finished after TENANT.DELETE
            // may have logged something since: the new tenant starts with empty logs.
            forget_diagnostics(sh, id);
            tracing::info!(tenant = id, "tenant created");
            ReplyWriter::new(out, proto).ok();
        }
        "tenant.delete" => {
            let force = match args.len() {
                2 => false,
                3 if args.is(2, "FORCE") => true,
                _ => return Err(ErrorReply::syntax()),
            };
            let id = Registry::validate_id(args.get(1)).map_err(|e| errors::tenancy(&e))?;
            // A staged import counts as a running migration too: deleting it under the source's
            // feet breaks the migration (its cutover would then refuse on a digest mismatch).
            let migrating = crate::hooks::running_migration(sh, id);
            let importing = sh
                .registry
                .get(id)
                .is_some_and(|t| t.state() == TenantState::Importing);
            let busy = match &migrating {
                Some(m) => Some(m.clone()),
                None if importing => Some("an import to this server".to_string()),
                None => None,
            };
            let t = sh
                .registry
                .delete(id, force, busy)
                .map_err(|e| errors::tenancy(&e))?;
            if let Some(mid) = migrating {
                // FORCE while migrating: the migration is cancelled (the target drops what it
                // staged); it cannot outlive its tenant.
                let mgr = sh.migrations.clone();
                tokio::spawn(async move {
                    if let Err(e) = mgr.cancel(&mid).await {
                        tracing::warn!(migration = %mid, error = %e, "cancel after TENANT.DELETE FORCE failed");
                    }
                });
            }
            // Connections bound to it are closed (FORCE); their next command would fail anyway.
            for c in sh.clients.lock().values() {
                if *c.fields.lock().tenant == *id && c.id != st.id {
                    c.kill();
                }
            }
            if Arc::ptr_eq(&st.tenant, &t) {
                st.visit_tenant(sh.registry.default_tenant());
            }
            let ks = t.replace_keyspace(Arc::new(ferrite_storage::Keyspace::new()));
            tokio::task::spawn_blocking(move || drop(ks));
            forget_diagnostics(sh, id);
            tracing::info!(tenant = id, force, "tenant deleted");
            ReplyWriter::new(out, proto).ok();
        }
        "tenant.list" => {
            let all = sh.registry.list();
            let mut w = ReplyWriter::new(out, proto);
            w.array(all.len());
            for t in all {
                describe(&mut w, &t);
            }
        }
        "tenant.info" => {
            let t = tenant_arg(sh, &args, 1)?;
            if !st.admin && !Arc::ptr_eq(&t, &st.tenant) {
                // Do not reveal whether another tenant exists.
                return Err(ErrorReply::err(format!(
                    "no such tenant '{}'",
                    args.text(1)
                )));
            }
            describe(&mut ReplyWriter::new(out, proto), &t);
        }
        "tenant.use" => {
            let t = tenant_arg(sh, &args, 1)?;
            // The administrator acts inside the tenant without becoming one of its clients:
            // not counted against its maxclients, not in its CLIENT LIST, not killable by it.
            st.visit_tenant(t);
            ReplyWriter::new(out, proto).ok();
        }
        "tenant.current" => ReplyWriter::new(out, proto).bulk_str(st.tenant.id()),
        "tenant.throttle" => {
            let t = tenant_arg(sh, &args, 1)?;
            if !args.is(2, "OPS") {
                return Err(ErrorReply::syntax());
            }
            let ops = count_arg(&args, 3)?;
            t.set_ops_limit(ops);
            sh.registry.persist(&t).map_err(|e| errors::tenancy(&e))?;
            ReplyWriter::new(out, proto).ok();
        }
        "tenant.limits" => {
            let t = tenant_arg(sh, &args, 1)?;
            let o = parse_options(&args, 2)?;
            let l = t.limits();
            t.set_limits(TenantLimits {
                maxmemory: o.maxmemory.unwrap_or(l.maxmemory),
                maxkeys: o.maxkeys.unwrap_or(l.maxkeys),
                ops: o.ops.unwrap_or(l.ops),
                maxclients: o.maxclients.unwrap_or(l.maxclients),
            });
            if o.credential.is_some() {
                t.set_credential(o.credential);
            }
            sh.registry.persist(&t).map_err(|e| errors::tenancy(&e))?;
            ReplyWriter::new(out, proto).ok();
        }
        "tenant.suspend" | "tenant.resume" => {
            let t = tenant_arg(sh, &args, 1)?;
            let (from, to) = if name == "tenant.suspend" {
                (TenantState::Active, TenantState::Suspended)
            } else {
                (TenantState::Suspended, TenantState::Active)
            };
            if t.state() != from {
                return Err(ErrorReply::err(format!(
                    "tenant '{}' is {}, not {}",
                    t.id(),
                    t.state().name(),
                    from.name()
                )));
            }
            t.set_state(to);
            if let Err(e) = sh.registry.persist(&t) {
                // Not durable: not done (a restart would bring the old state back).
                t.set_state(from);
                return Err(errors::tenancy(&e));
            }
            ReplyWriter::new(out, proto).ok();
        }
        _ => return Err(ErrorReply::err(format!("unknown tenancy command '{name}'"))),
    }
    Ok(Flow::Continue)
}

/// `TENANT.DIGEST <id> [FULL]`: waits for the tenant's keyspace without blocking a thread; the
/// full recomputation visits every key, so it runs on the blocking pool.
pub async fn digest(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let proto = st.proto;
    let t = tenant_arg(sh, &args, 1)?;
    let full = match args.len() {
        2 => false,
        3 if args.is(2, "FULL") => true,
        _ => return Err(ErrorReply::syntax()),
    };
    let ks = t.keyspace();
    let (digest, recomputed) = if full {
        crate::offload::run_locked(sh, &ks, |db, _| {
            (db.digest().clone(), Some(db.recompute_digest()))
        })
        .await?
    } else {
        (ks.lock_async().await.digest().clone(), None)
    };
    // The digest may cover writes of the tenant's clients still waiting for their fsync:
    // under `always` it is not shown before they are durable.
    if let Some(settle) = crate::dispatch::settle_read_of(&t) {
        settle
            .run()
            .await
            .map_err(|e| ErrorReply::coded("MISCONF", e))?;
    }
    let mut w = ReplyWriter::new(out, proto);
    w.map(if recomputed.is_some() { 5 } else { 4 });
    w.bulk_str("tenant");
    w.bulk_str(t.id());
    w.bulk_str("keys");
    w.int(digest.keys() as i64);
    w.bulk_str("digest");
    w.bulk_str(&format!("{:016x}", digest.combined()));
    if let Some(r) = &recomputed {
        w.bulk_str("recomputed_match");
        w.boolean(*r == digest);
    }
    w.bulk_str("buckets");
    w.array(BUCKETS);
    for b in 0..BUCKETS {
        w.bulk_str(&format!("{:016x}", digest.bucket(b)));
    }
    Ok(Flow::Continue)
}
