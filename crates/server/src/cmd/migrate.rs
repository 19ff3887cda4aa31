//! TENANT.MIGRATE* (operators, on the source) and TENANT.IMPORT.* (the source server, on the
//! target). The work happens in `ferrite_tenancy::migration`; this module parses arguments and
//! shapes replies.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferrite_protocol::{Args, ErrorReply, ReplyWriter};
use ferrite_storage::digest::BUCKETS;
use ferrite_tenancy::migration::{BeginRequest, ImportError};
use ferrite_tenancy::{
    Credential, MigrationConfig, MigrationError, MigrationMode, MigrationStatus, Registry,
    TenantLimits,
};

use super::ServerResult;
use crate::connection::ClientState;
use crate::dispatch::Flow;
use crate::errors;
use crate::shared::Shared;
use crate::timefmt::rfc3339_ms;

fn migration_err(e: MigrationError) -> ErrorReply {
    ErrorReply::err(e)
}

fn import_err(e: ImportError) -> ErrorReply {
    ErrorReply::err(e)
}

fn positive(args: &Args<'_>, i: usize, max: i64) -> Result<i64, ErrorReply> {
    match args.int(i)? {
        n if n >= 1 && n <= max => Ok(n),
        _ => Err(ErrorReply::err(format!(
            "{} must be between 1 and {max}",
            args.text(i - 1).to_ascii_uppercase()
        ))),
    }
}

/// Percent with at most one decimal, as the spec shows it ("95%").
fn percent(p: f64) -> String {
    if (p - p.round()).abs() < 0.05 {
        format!("{}%", p.round())
    } else {
        format!("{p:.1}%")
    }
}

fn write_status(w: &mut ReplyWriter<'_>, s: &MigrationStatus) {
    let fields: Vec<(&str, String)> = vec![
        ("migration_id", s.id.clone()),
        ("tenant", s.tenant.clone()),
        ("source", s.source.clone()),
        ("target", s.target.clone()),
        ("mode", s.mode.name().into()),
        ("state", s.state.name().into()),
        ("phase", s.phase.name().into()),
        ("progress", percent(s.progress)),
        ("keys_synced", s.keys_synced.to_string()),
        ("keys_shipped", s.keys_shipped.to_string()),
        ("keys_total", s.keys_total.to_string()),
        ("bytes_synced", s.bytes_synced.to_string()),
        ("lag_keys", s.lag_keys.to_string()),
        ("lag_bytes", s.lag_bytes.to_string()),
        ("lag_seconds", format!("{:.3}", s.lag_seconds)),
        ("lag_trend", s.lag_trend.name().into()),
        ("keys_per_sec", format!("{:.0}", s.keys_per_sec)),
        ("started_at", rfc3339_ms(s.started_at)),
        (
            "estimated_completion",
            s.estimated_completion.map(rfc3339_ms).unwrap_or_default(),
        ),
        ("error", s.error.clone().unwrap_or_default()),
        ("last_error", s.last_error.clone().unwrap_or_default()),
        (
            "last_error_at",
            s.last_error_at.map(rfc3339_ms).unwrap_or_default(),
        ),
        (
            "target_unreachable_seconds",
            format!("{:.1}", s.unreachable_seconds),
        ),
        ("parallel", s.parallel.to_string()),
        ("batch_size", s.batch_size.to_string()),
        (
            "downtime_ms",
            s.downtime_ms.map(|d| format!("{d:.3}")).unwrap_or_default(),
        ),
        ("duration_seconds", format!("{:.3}", s.duration_seconds)),
        ("bytes_sent", s.bytes_sent.to_string()),
        ("reconnects", s.reconnects.to_string()),
        ("import_id", s.import_id.clone().unwrap_or_default()),
        (
            "scheduled_cutover",
            s.scheduled_cutover.map(rfc3339_ms).unwrap_or_default(),
        ),
    ];
    let patterns = !s.patterns.is_empty();
    w.map(fields.len() + usize::from(patterns));
    for (k, v) in fields {
        w.bulk_str(k);
        let numeric = matches!(
            k,
            "keys_synced"
                | "keys_total"
                | "bytes_synced"
                | "lag_keys"
                | "lag_bytes"
                | "parallel"
                | "batch_size"
                | "bytes_sent"
                | "reconnects"
        );
        match v.parse::<i64>() {
            Ok(n) if numeric => w.int(n),
            _ => w.bulk_str(&v),
        }
    }
    if patterns {
        // `MODE incremental`: each pattern and where its keys are served, in order.
        w.bulk_str("patterns");
        w.map(s.patterns.len());
        for (p, owner) in &s.patterns {
            w.bulk_str(p);
            w.bulk_str(owner);
        }
    }
}

/// The option names of TENANT.MIGRATE, where a PATTERNS list ends.
fn is_migrate_option(arg: &[u8]) -> bool {
    [
        &b"MODE"[..],
        b"PARALLEL",
        b"BATCH_SIZE",
        b"TIMEOUT",
        b"AUTH",
        b"REDIRECT",
        b"RATE",
        b"PATTERNS",
    ]
    .iter()
    .any(|o| arg.eq_ignore_ascii_case(o))
}

pub async fn run(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    name: &str,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    if name.starts_with("tenant.import.") {
        if !(st.admin || st.migration_peer) {
            return Err(errors::no_permission(name));
        }
        return import(st, sh, name, args, out).await;
    }
    let mgr = &sh.migrations;
    let proto = st.proto;
    match name {
        "tenant.migrate" => {
            let tenant = Registry::validate_id(args.get(1)).map_err(|e| errors::tenancy(&e))?;
            if !args.is(2, "TARGET") {
                return Err(ErrorReply::syntax());
            }
            let target = args.text(3);
            let mut cfg = MigrationConfig::default();
            {
                let c = sh.config.read();
                let m = &c.tenancy.migration;
                cfg.parallel = m.parallel_sync;
                cfg.batch_size = m.batch_size;
                cfg.mode = MigrationMode::parse(&m.default_mode).unwrap_or_default();
            }
            let mut i = 4;
            while i < args.len() {
                if i + 1 >= args.len() {
                    return Err(ErrorReply::syntax());
                }
                match args.get(i).to_ascii_uppercase().as_slice() {
                    // PATTERNS takes every argument up to the next option name.
                    b"PATTERNS" => {
                        let mut j = i + 1;
                        while j < args.len() && !is_migrate_option(args.get(j)) {
                            cfg.patterns.push(args.get(j).to_vec());
                            j += 1;
                        }
                        if j == i + 1 {
                            return Err(ErrorReply::syntax());
                        }
                        i = j;
                        continue;
                    }
                    b"MODE" => {
                        cfg.mode = MigrationMode::parse(&args.text(i + 1)).ok_or_else(|| {
                            ErrorReply::err(format!(
                                "invalid MODE '{}': use live, fast or incremental",
                                args.text(i + 1)
                            ))
                        })?;
                    }
                    b"PARALLEL" => cfg.parallel = positive(&args, i + 1, 64)? as usize,
                    b"BATCH_SIZE" => cfg.batch_size = positive(&args, i + 1, 100_000)? as usize,
                    b"TIMEOUT" => {
                        cfg.timeout = Some(Duration::from_secs(
                            positive(&args, i + 1, 86_400 * 30)? as u64,
                        ))
                    }
                    b"AUTH" => cfg.auth = Some(args.text(i + 1)),
                    b"REDIRECT" => cfg.redirect = Some(args.text(i + 1)),
                    b"RATE" => {
                        let r = args.int(i + 1)?;
                        if r < 0 {
                            return Err(ErrorReply::must_be_positive());
                        }
                        cfg.rate_bytes_per_sec = r as u64;
                    }
                    _ => return Err(ErrorReply::syntax()),
                }
                i += 2;
            }
            let h = mgr
                .migrate(tenant, &target, cfg)
                .await
                .map_err(migration_err)?;
            let mut w = ReplyWriter::new(out, proto);
            w.map(3);
            w.bulk_str("migration_id");
            w.bulk_str(&h.id);
            w.bulk_str("state");
            w.bulk_str(h.state.name());
            w.bulk_str("progress");
            w.bulk_str(&percent(h.progress));
        }
        "tenant.migrate.status" => {
            let mut w = ReplyWriter::new(out, proto);
            if args.is(1, "ALL") {
                let all = mgr.status_all();
                w.array(all.len());
                for s in &all {
                    write_status(&mut w, s);
                }
            } else {
                let s = mgr.status(&args.text(1)).await.map_err(migration_err)?;
                write_status(&mut w, &s);
            }
        }
        "tenant.migrate.pause" => {
            mgr.pause(&args.text(1)).await.map_err(migration_err)?;
            ReplyWriter::new(out, proto).ok();
        }
        "tenant.migrate.resume" => {
            mgr.resume(&args.text(1)).await.map_err(migration_err)?;
            ReplyWriter::new(out, proto).ok();
        }
        "tenant.migrate.cancel" => {
            mgr.cancel(&args.text(1)).await.map_err(migration_err)?;
            ReplyWriter::new(out, proto).ok();
        }
        "tenant.migrate.cutover" => {
            let id = args.text(1);
            let force_at = |i: usize| -> Result<bool, ErrorReply> {
                match args.len() {
                    n if n == i => Ok(false),
                    n if n == i + 1 && args.is(i, "FORCE") => Ok(true),
                    _ => Err(ErrorReply::syntax()),
                }
            };
            let r = if args.len() >= 4 && args.is(2, "PATTERN") {
                mgr.cutover_pattern(&id, args.get(3), force_at(4)?).await
            } else if args.len() >= 3 && args.is(2, "RETRY") {
                mgr.cutover_retry(&id, force_at(3)?).await
            } else if args.len() >= 3 && args.is(2, "SCHEDULED") {
                if args.len() < 4 {
                    return Err(ErrorReply::syntax());
                }
                let at = crate::timefmt::parse_rfc3339_ms(&args.text(3)).ok_or_else(|| {
                    ErrorReply::err(format!(
                        "invalid time '{}': use RFC 3339, e.g. 2026-01-16T02:00:00Z",
                        args.text(3)
                    ))
                })?;
                mgr.schedule_cutover(&id, at, force_at(4)?)
                    .await
                    .map_err(migration_err)?;
                let mut w = ReplyWriter::new(out, proto);
                w.map(2);
                w.bulk_str("status");
                w.bulk_str("scheduled");
                w.bulk_str("scheduled_cutover");
                w.bulk_str(&rfc3339_ms(at));
                return Ok(Flow::Continue);
            } else if args.len() == 3 && args.is(2, "UNSCHEDULE") {
                mgr.unschedule_cutover(&id).await.map_err(migration_err)?;
                ReplyWriter::new(out, proto).ok();
                return Ok(Flow::Continue);
            } else {
                mgr.cutover_with(&id, force_at(2)?).await
            };
            let r = r.map_err(migration_err)?;
            let mut w = ReplyWriter::new(out, proto);
            w.map(3);
            w.bulk_str("status");
            w.bulk_str(r.status);
            w.bulk_str("downtime_ms");
            w.bulk_str(&format!("{:.3}", r.downtime_ms));
            w.bulk_str("keys_migrated");
            w.int(r.keys_migrated as i64);
        }
        "tenant.migrate.validate" => {
            let tenant = Registry::validate_id(args.get(1)).map_err(|e| errors::tenancy(&e))?;
            if !args.is(2, "TARGET") {
                return Err(ErrorReply::syntax());
            }
            let mut cfg = MigrationConfig::default();
            match args.len() {
                4 => {}
                6 if args.is(4, "AUTH") => cfg.auth = Some(args.text(5)),
                _ => return Err(ErrorReply::syntax()),
            }
            let report = mgr
                .validate(tenant, &args.text(3), &cfg)
                .await
                .map_err(migration_err)?;
            let mut w = ReplyWriter::new(out, proto);
            w.map(report.checks.len() + 1);
            for c in &report.checks {
                w.bulk_str(c.name);
                w.bulk_str(&c.detail);
            }
            w.bulk_str("result");
            w.bulk_str(if report.ok() { "ok" } else { "failed" });
        }
        "tenant.migrate.debug" => {
            let op = args.text(2).to_ascii_lowercase();
            let point = (args.len() > 3).then(|| args.text(3));
            let parked = mgr
                .debug(&args.text(1), &op, point.as_deref())
                .await
                .map_err(migration_err)?;
            let mut w = ReplyWriter::new(out, proto);
            match op.as_str() {
                "waiting" => w.bulk_str(parked.unwrap_or("")),
                "break" | "continue" => w.ok(),
                _ => return Err(ErrorReply::syntax()),
            }
        }
        "tenant.migrate.verify" => {
            let r = match args.len() {
                2 => mgr.verify(&args.text(1)).await,
                4 if args.is(2, "PATTERN") => mgr.verify_pattern(&args.text(1), args.get(3)).await,
                _ => return Err(ErrorReply::syntax()),
            }
            .map_err(migration_err)?;
            let mut w = ReplyWriter::new(out, proto);
            w.map(8);
            w.bulk_str("keys_source");
            w.int(r.keys_source as i64);
            w.bulk_str("keys_target");
            w.int(r.keys_target as i64);
            w.bulk_str("checksum_match");
            w.boolean(r.checksum_match);
            w.bulk_str("sample_verified");
            w.bulk_str(&format!("{}/{}", r.sample_matched, r.sample_compared));
            w.bulk_str("sample_skipped");
            w.int(r.sample_skipped as i64);
            w.bulk_str("mismatched_buckets");
            w.array(r.mismatched_buckets.len());
            for b in &r.mismatched_buckets {
                w.int(*b as i64);
            }
            w.bulk_str("mismatched_patterns");
            w.array(r.mismatched_patterns.len());
            for p in &r.mismatched_patterns {
                w.bulk_str(p);
            }
            w.bulk_str("status");
            w.bulk_str(r.status);
        }
        "tenant.migrate.update" => {
            let (mut parallel, mut batch, mut rate) = (None, None, None);
            let mut i = 2;
            while i < args.len() {
                if i + 1 >= args.len() {
                    return Err(ErrorReply::syntax());
                }
                match args.get(i).to_ascii_uppercase().as_slice() {
                    b"PARALLEL" => parallel = Some(positive(&args, i + 1, 64)? as usize),
                    b"BATCH_SIZE" => batch = Some(positive(&args, i + 1, 100_000)? as usize),
                    b"RATE" => {
                        let r = args.int(i + 1)?;
                        if r < 0 {
                            return Err(ErrorReply::must_be_positive());
                        }
                        rate = Some(r as u64);
                    }
                    _ => return Err(ErrorReply::syntax()),
                }
                i += 2;
            }
            mgr.update(&args.text(1), parallel, batch, rate)
                .await
                .map_err(migration_err)?;
            ReplyWriter::new(out, proto).ok();
        }
        _ => {
            return Err(ErrorReply::err(format!(
                "unknown migration command '{name}'"
            )));
        }
    }
    Ok(Flow::Continue)
}

/// Runs an import step that takes the imported tenant's keyspace lock (blocking) on the blocking
/// pool when that tenant already serves clients here (an incremental migration after its first
/// pattern; VERIFY after activation): its connections wait for the same lock asynchronously,
/// and a worker thread blocked here may be the one that must run the task the lock was handed
/// to. Otherwise it runs here, as it always has.
fn serves_clients(imports: &ferrite_tenancy::ImportManager, id: &str) -> bool {
    imports
        .get(id)
        .is_ok_and(|i| i.tenant().state() == ferrite_tenancy::TenantState::Active)
}

async fn import_step<T: Send + 'static>(
    imports: &Arc<ferrite_tenancy::ImportManager>,
    id: &str,
    f: impl FnOnce(&ferrite_tenancy::ImportManager) -> T + Send + 'static,
) -> Result<T, ErrorReply> {
    if !serves_clients(imports, id) {
        return Ok(f(imports));
    }
    let imports = imports.clone();
    tokio::task::spawn_blocking(move || f(&imports))
        .await
        .map_err(|_| ErrorReply::err("internal error: the import step failed"))
}

async fn import(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    name: &str,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let imports = sh.migrations.imports();
    let proto = st.proto;
    let mut w = ReplyWriter::new(out, proto);
    let id = args.text(1);
    match name {
        "tenant.import.check" => {
            let tenant = args.text(1);
            let version: u16 = args
                .text(2)
                .parse()
                .map_err(|_| ErrorReply::err("invalid wire version"))?;
            if version != ferrite_tenancy::migration::wire::WIRE_VERSION {
                return Err(import_err(ImportError::Version {
                    theirs: version,
                    ours: ferrite_tenancy::migration::wire::WIRE_VERSION,
                }));
            }
            if args.text(3) == sh.run_id {
                return Err(import_err(ImportError::SameServer));
            }
            let state = match sh.registry.get(&tenant) {
                None => "absent",
                Some(t) => t.state().name(),
            };
            if !matches!(state, "absent" | "moved") {
                return Err(import_err(ImportError::TenantExists { tenant, state }));
            }
            let used: u64 = sh
                .registry
                .list()
                .iter()
                .map(|t| t.keyspace().used_bytes())
                .sum();
            w.map(6);
            w.bulk_str("available_memory");
            w.int(available_memory().map_or(-1, |m| m as i64));
            w.bulk_str("server");
            w.bulk_str("ferrite");
            w.bulk_str("version");
            w.int(i64::from(ferrite_tenancy::migration::wire::WIRE_VERSION));
            w.bulk_str("tenant_state");
            w.bulk_str(state);
            w.bulk_str("used_memory");
            w.int(used as i64);
            w.bulk_str("run_id");
            w.bulk_str(&sh.run_id);
        }
        "tenant.import.begin" => {
            let mut req = BeginRequest {
                tenant: args.text(1),
                migration_id: args.text(2),
                version: args
                    .text(3)
                    .parse()
                    .map_err(|_| ErrorReply::err("invalid wire version"))?,
                source_addr: args.text(4),
                source_run_id: args.text(5),
                credential: None,
                limits: TenantLimits::default(),
            };
            let mut i = 6;
            while i + 1 < args.len() {
                match args.get(i).to_ascii_uppercase().as_slice() {
                    b"CREDENTIAL" => {
                        let c = Credential::decode(&args.text(i + 1))
                            .map_err(|e| ErrorReply::err(e.to_string()))?;
                        req.credential = Some(c);
                    }
                    // Sources from before credentials were hashed send the password itself.
                    b"PASSWORD" => {
                        req.credential = Some(Credential::from_password(args.get(i + 1)))
                    }
                    b"MAXMEMORY" => req.limits.maxmemory = args.int(i + 1)?.max(0) as u64,
                    b"MAXKEYS" => req.limits.maxkeys = args.int(i + 1)?.max(0) as u64,
                    b"OPS" => req.limits.ops = args.int(i + 1)?.max(0) as u64,
                    b"MAXCLIENTS" => req.limits.maxclients = args.int(i + 1)?.max(0) as u64,
                    _ => return Err(ErrorReply::syntax()),
                }
                i += 2;
            }
            if i != args.len() {
                return Err(ErrorReply::syntax());
            }
            let imp = imports.begin(req).map_err(import_err)?;
            w.map(3);
            w.bulk_str("import_id");
            w.bulk_str(&imp.id);
            w.bulk_str("version");
            w.int(i64::from(ferrite_tenancy::migration::wire::WIRE_VERSION));
            w.bulk_str("state");
            w.bulk_str(imp.state().name());
        }
        "tenant.import.batch" => {
            let seq = if serves_clients(imports, &id) {
                let payload = args.get(2).to_vec();
                let step = id.clone();
                import_step(imports, &id, move |i| i.apply_batch(&step, &payload)).await?
            } else {
                // The usual case: no copy of the batch, no thread hop.
                imports.apply_batch(&id, args.get(2))
            }
            .map_err(import_err)?;
            w.int(seq as i64);
        }
        "tenant.import.resume" => {
            let points = imports.resume(&args.text(1)).map_err(import_err)?;
            w.map(points.len());
            for (s, seq) in points {
                w.bulk_str(&s.to_string());
                w.int(seq as i64);
            }
        }
        "tenant.import.prepare" => {
            let step = id.clone();
            let (keys, digest) = import_step(imports, &id, move |i| i.prepare(&step))
                .await?
                .map_err(import_err)?;
            w.map(2);
            w.bulk_str("keys");
            w.int(keys as i64);
            w.bulk_str("digest");
            w.bulk_str(&format!("{:016x}", digest.combined()));
        }
        "tenant.import.activate" => {
            let step = id.clone();
            let a = import_step(imports, &id, move |i| i.activate(&step))
                .await?
                .map_err(import_err)?;
            w.map(3);
            w.bulk_str("keys");
            w.int(a.keys as i64);
            w.bulk_str("digest");
            w.bulk_str(&format!("{:016x}", a.digest.combined()));
            w.bulk_str("activated_at_ms");
            w.int(a.at_ms as i64);
        }
        "tenant.import.abort" => {
            imports.abort(&args.text(1)).map_err(import_err)?;
            w.ok();
        }
        "tenant.import.status" => {
            let imp = imports.get(&args.text(1)).map_err(import_err)?;
            let act = imp.activation();
            w.map(11);
            w.bulk_str("import_id");
            w.bulk_str(&imp.id);
            w.bulk_str("tenant");
            w.bulk_str(&imp.tenant_id);
            w.bulk_str("migration_id");
            w.bulk_str(&imp.migration_id);
            w.bulk_str("source");
            w.bulk_str(&imp.source_addr);
            w.bulk_str("state");
            w.bulk_str(imp.state().name());
            w.bulk_str("batches");
            w.int(imp.batches.load(std::sync::atomic::Ordering::Relaxed) as i64);
            w.bulk_str("records");
            w.int(imp.records.load(std::sync::atomic::Ordering::Relaxed) as i64);
            w.bulk_str("activation_keys");
            w.int(act.as_ref().map_or(-1, |a| a.keys as i64));
            w.bulk_str("activated_at_ms");
            w.int(act.as_ref().map_or(0, |a| a.at_ms as i64));
            w.bulk_str("activation_digest");
            w.bulk_str(
                &act.as_ref()
                    .map(|a| format!("{:016x}", a.digest.combined()))
                    .unwrap_or_default(),
            );
            w.bulk_str("activation_buckets");
            match &act {
                Some(a) => {
                    w.array(BUCKETS);
                    for b in 0..BUCKETS {
                        w.bulk_str(&format!("{:016x}", a.digest.bucket(b)));
                    }
                }
                None => w.array(0),
            }
        }
        "tenant.import.pattern" => {
            let import = args.text(1);
            let index = usize::try_from(args.int(3)?)
                .map_err(|_| ErrorReply::err("pattern index out of range"))?;
            let op = args.get(2).to_ascii_uppercase();
            // DIGEST <index> <alive-after-ms> <pattern>...; the others <index> <pattern>...
            let first = if op == b"DIGEST" { 5 } else { 4 };
            let patterns: Vec<Vec<u8>> = args.tail(first).iter().map(<[u8]>::to_vec).collect();
            let (keys, digest, at) = match op.as_slice() {
                b"DIGEST" => {
                    let after =
                        u64::try_from(args.int(4)?).map_err(|_| ErrorReply::err("invalid time"))?;
                    import_step(imports, &id, move |i| {
                        i.pattern_digest(&import, &patterns, index, after)
                            .map(|(k, d)| (k, d, None))
                    })
                    .await?
                }
                b"ACTIVATE" => {
                    import_step(imports, &id, move |i| {
                        i.activate_pattern(&import, &patterns, index)
                            .map(|a| (a.keys, a.digest, Some(a.at_ms)))
                    })
                    .await?
                }
                b"HOLD" | b"RELEASE" => {
                    let hold = op == b"HOLD";
                    import_step(imports, &id, move |i| {
                        i.hold_pattern(&import, &patterns, index, hold)
                            .map(|()| (0, 0, None))
                    })
                    .await?
                }
                b"ACTIVATED" if patterns.is_empty() => imports
                    .pattern_activation(&import, index)
                    .map(|a| (a.keys, a.digest, Some(a.at_ms))),
                _ => return Err(ErrorReply::syntax()),
            }
            .map_err(import_err)?;
            w.map(2 + usize::from(at.is_some()));
            w.bulk_str("keys");
            w.int(keys as i64);
            w.bulk_str("digest");
            w.bulk_str(&format!("{digest:016x}"));
            if let Some(at) = at {
                w.bulk_str("activated_at_ms");
                w.int(at as i64);
            }
        }
        "tenant.import.fetch" => {
            let keys: Vec<Vec<u8>> = args.tail(2).iter().map(<[u8]>::to_vec).collect();
            let step = id.clone();
            let vals = import_step(imports, &id, move |i| {
                let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                i.fetch(&step, &keys)
            })
            .await?
            .map_err(import_err)?;
            w.array(vals.len());
            for v in vals {
                match v {
                    Some((modified, bytes)) => {
                        w.array(2);
                        w.int(modified as i64);
                        w.bulk(&bytes);
                    }
                    None => w.null_array(),
                }
            }
        }
        _ => return Err(ErrorReply::err(format!("unknown import command '{name}'"))),
    }
    Ok(Flow::Continue)
}

/// MemAvailable from /proc/meminfo, in bytes (what the capacity check compares against).
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
