//! TENANT.MIGRATE* (operators, on the source) and TENANT.IMPORT.* (the source server, on the
//! target). The work happens in `ferrite_tenancy::migration`; this module parses arguments and
//! shapes replies.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferrite_protocol::{Args, ErrorReply, Protocol, ReplyWriter};
use ferrite_storage::digest::BUCKETS;
use ferrite_tenancy::migration::{BeginRequest, ImportError};
use ferrite_tenancy::{
    ConflictPolicy, Credential, CutoverResult, GroupOp, GroupOutcome, MigrationConfig,
    MigrationError, MigrationMode, MigrationStatus, Priority, Registry, StopMode, StopResult,
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

/// PRIORITY's argument.
fn priority(args: &Args<'_>, i: usize) -> Result<Priority, ErrorReply> {
    Priority::parse(&args.text(i)).ok_or_else(|| {
        ErrorReply::err(format!(
            "invalid PRIORITY '{}': use high, normal or low",
            args.text(i)
        ))
    })
}

/// The options TENANT.MIGRATE and TENANT.MIGRATE.UPDATE know: where the ids of AFTER end.
const OPTION_WORDS: &[&str] = &[
    "MODE",
    "PARALLEL",
    "BATCH_SIZE",
    "TIMEOUT",
    "AUTH",
    "REDIRECT",
    "RATE",
    "PRIORITY",
    "AFTER",
    "GROUP",
    "APPROVAL",
];

/// AFTER's ids, from `i` up to the next option word (at least one).
fn after_ids(args: &Args<'_>, i: usize) -> Result<(Vec<String>, usize), ErrorReply> {
    let mut j = i;
    let mut ids = Vec::new();
    while j < args.len() {
        let word = args.text(j);
        if OPTION_WORDS.iter().any(|o| o.eq_ignore_ascii_case(&word)) {
            break;
        }
        ids.push(word);
        j += 1;
    }
    if ids.is_empty() {
        return Err(ErrorReply::err(
            "AFTER needs at least one migration id".to_string(),
        ));
    }
    Ok((ids, j))
}

/// Who an operator is, for the approval record: the connection's CLIENT SETNAME name (when it
/// set one) and its address.
fn operator(st: &ClientState) -> String {
    let name = st.info.fields.lock().name.clone();
    if name.is_empty() {
        format!("admin@{}", st.info.addr)
    } else {
        format!("{name}@{}", st.info.addr)
    }
}

/// The answer of an operation on a group: each member's id and `OK` (or what it did) or its
/// error.
fn write_group_outcome(w: &mut ReplyWriter<'_>, outcome: &GroupOutcome) {
    w.map(outcome.len());
    for (id, r) in outcome {
        w.bulk_str(id);
        match r {
            Ok(text) => w.bulk_str(text),
            Err(e) => w.bulk_str(&format!("ERR {e}")),
        }
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
        (
            "catch_up_seconds",
            s.catch_up_seconds
                .map(|c| format!("{c:.1}"))
                .unwrap_or_default(),
        ),
        (
            "consistent_as_of",
            s.stop
                .as_ref()
                .and_then(|r| r.consistent_as_of)
                .map(rfc3339_ms)
                .unwrap_or_default(),
        ),
        (
            "conflict_policy",
            s.conflict_policy
                .map(|p| p.name().to_string())
                .unwrap_or_default(),
        ),
        ("conflicts", s.conflicts.to_string()),
        (
            "conflict_sample",
            s.conflict_sample
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "possibly_missing_keys",
            s.stop
                .as_ref()
                .map(|r| r.missing_keys.to_string())
                .unwrap_or_default(),
        ),
        ("dns", s.dns.clone().unwrap_or_default()),
        ("throttle", percent(s.throttle * 100.0)),
        ("priority", s.priority.name().into()),
        (
            "queue_position",
            s.queue_position.map(|n| n.to_string()).unwrap_or_default(),
        ),
        ("group", s.group.clone().unwrap_or_default()),
        ("waiting_for", s.waiting_for.join(" ")),
        ("rate_limit", s.rate_limit.to_string()),
        (
            "approval",
            s.approval
                .as_ref()
                .map(|a| a.decision.to_string())
                .unwrap_or_default(),
        ),
        (
            "approval_by",
            s.approval
                .as_ref()
                .and_then(|a| a.by.clone())
                .unwrap_or_default(),
        ),
        (
            "approval_at",
            s.approval
                .as_ref()
                .and_then(|a| a.at_ms)
                .map(rfc3339_ms)
                .unwrap_or_default(),
        ),
        (
            "approval_reason",
            s.approval
                .as_ref()
                .and_then(|a| a.reason.clone())
                .unwrap_or_default(),
        ),
        (
            "plan",
            s.plan
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        // After a cutover: the old source as a backup (empty when it keeps none).
        (
            "backup_state",
            s.backup
                .as_ref()
                .map(|b| b.state)
                .unwrap_or_default()
                .into(),
        ),
        (
            "backup_migration",
            s.backup
                .as_ref()
                .and_then(|b| b.migration_id.clone())
                .unwrap_or_default(),
        ),
        (
            "backup_lag_seconds",
            s.backup
                .as_ref()
                .map(|b| format!("{:.3}", b.lag_seconds))
                .unwrap_or_default(),
        ),
        (
            "backup_lag_records",
            s.backup
                .as_ref()
                .map(|b| b.lag_records.to_string())
                .unwrap_or_default(),
        ),
        (
            "backup_lag_bytes",
            s.backup
                .as_ref()
                .map(|b| b.lag_bytes.to_string())
                .unwrap_or_default(),
        ),
        (
            "backup_until",
            s.backup
                .as_ref()
                .filter(|b| b.until_ms > 0)
                .map(|b| rfc3339_ms(b.until_ms))
                .unwrap_or_default(),
        ),
        (
            "backup_error",
            s.backup
                .as_ref()
                .and_then(|b| b.error.clone())
                .unwrap_or_default(),
        ),
        ("backup_of", s.backup_of.clone().unwrap_or_default()),
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
                | "possibly_missing_keys"
                | "conflicts"
                | "rate_limit"
                | "backup_lag_records"
                | "backup_lag_bytes"
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
        b"RETENTION",
    ]
    .iter()
    .any(|o| arg.eq_ignore_ascii_case(o))
}

fn conflict_arg(s: &str) -> Result<ConflictPolicy, ErrorReply> {
    ConflictPolicy::parse(s).ok_or_else(|| {
        ErrorReply::err(format!(
            "invalid CONFLICT '{s}': use source_wins, target_wins or newest_wins"
        ))
    })
}

/// STOP's reply: what the target's copy holds.
fn write_stop(w: &mut ReplyWriter<'_>, r: &StopResult) {
    w.map(8);
    w.bulk_str("status");
    w.bulk_str("stopped");
    w.bulk_str("mode");
    w.bulk_str(r.mode.name());
    w.bulk_str("consistent_as_of");
    w.bulk_str(&r.consistent_as_of.map(rfc3339_ms).unwrap_or_default());
    w.bulk_str("keys");
    w.int(r.keys as i64);
    w.bulk_str("digest");
    w.bulk_str(&r.digest.map(|d| format!("{d:016x}")).unwrap_or_default());
    w.bulk_str("possibly_missing_keys");
    w.int(r.missing_keys as i64);
    w.bulk_str("possibly_missing_sample");
    w.array(r.missing_sample.len());
    for k in &r.missing_sample {
        w.bulk(k);
    }
    w.bulk_str("target_copy");
    match &r.target_kept {
        Ok(()) => w.bulk_str("kept"),
        Err(why) => w.bulk_str(&format!("not confirmed: {why}")),
    }
}

/// STATUS GROUP: the group's totals, then every member's STATUS.
fn write_group(w: &mut ReplyWriter<'_>, group: &str, members: &[MigrationStatus]) {
    let totals = ferrite_tenancy::migration::Totals::of(members);
    w.map(2 + totals.fields().len());
    w.bulk_str("group");
    w.bulk_str(group);
    write_totals_fields(w, &totals);
    w.bulk_str("migrations");
    w.array(members.len());
    for s in members {
        write_status(w, s);
    }
}

/// The aggregate fields (of a group, or of every migration).
fn write_totals_fields(w: &mut ReplyWriter<'_>, totals: &ferrite_tenancy::migration::Totals) {
    for (k, v) in totals.fields() {
        w.bulk_str(&k);
        match v {
            ferrite_tenancy::migration::TotalValue::Count(n) => w.int(n as i64),
            ferrite_tenancy::migration::TotalValue::Text(t) => w.bulk_str(&t),
        }
    }
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
                match args.get(i).to_ascii_uppercase().as_slice() {
                    b"APPROVAL" => {
                        cfg.approval = true;
                        i += 1;
                        continue;
                    }
                    b"AFTER" => {
                        let (ids, next) = after_ids(&args, i + 1)?;
                        cfg.after.extend(ids);
                        i = next;
                        continue;
                    }
                    _ => {}
                }
                if i + 1 >= args.len() {
                    return Err(ErrorReply::syntax());
                }
                match args.get(i).to_ascii_uppercase().as_slice() {
                    b"PRIORITY" => cfg.priority = priority(&args, i + 1)?,
                    b"GROUP" => cfg.group = Some(args.text(i + 1)),
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
                                "invalid MODE '{}': use live, fast, continuous or incremental",
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
                    b"CONFLICT" => cfg.conflict = Some(conflict_arg(&args.text(i + 1))?),
                    // 0 turns the backup off; at most 30 days, as TIMEOUT.
                    b"RETENTION" => {
                        let secs = args.int(i + 1)?;
                        if !(0..=86_400 * 30).contains(&secs) {
                            return Err(ErrorReply::err(
                                "RETENTION must be between 0 (no backup) and 2592000 seconds",
                            ));
                        }
                        cfg.retention = Some(Duration::from_secs(secs as u64));
                    }
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
            if args.len() > 3 || (args.len() == 3 && !args.is(1, "GROUP")) {
                return Err(ErrorReply::syntax());
            }
            let mut w = ReplyWriter::new(out, proto);
            if args.is(1, "ALL") && args.len() == 2 {
                let all = mgr.status_all();
                let totals = ferrite_tenancy::migration::Totals::of(&all);
                let (load, factors) = mgr.contention();
                w.map(6 + totals.fields().len());
                write_totals_fields(&mut w, &totals);
                // Contention management: what it measured last and what it did about it.
                w.bulk_str("load_p99_ms");
                w.bulk_str(
                    &load
                        .and_then(|l| l.p99)
                        .map(|p| format!("{:.3}", p * 1000.0))
                        .unwrap_or_default(),
                );
                w.bulk_str("load_cpu_percent");
                w.bulk_str(
                    &load
                        .map(|l| format!("{:.1}", l.cpu * 100.0))
                        .unwrap_or_default(),
                );
                for (name, f) in ["throttle_low", "throttle_normal", "throttle_high"]
                    .iter()
                    .zip(factors)
                {
                    w.bulk_str(name);
                    w.bulk_str(&percent(f * 100.0));
                }
                w.bulk_str("migrations");
                w.array(all.len());
                for s in &all {
                    write_status(&mut w, s);
                }
            } else if args.is(1, "GROUP") {
                if args.len() != 3 {
                    return Err(ErrorReply::syntax());
                }
                let group = args.text(2);
                let members = mgr.status_group(&group).map_err(migration_err)?;
                write_group(&mut w, &group, &members);
            } else {
                let s = mgr.status(&args.text(1)).await.map_err(migration_err)?;
                write_status(&mut w, &s);
            }
        }
        "tenant.migrate.pause" | "tenant.migrate.resume" | "tenant.migrate.cancel" => {
            let op = match name {
                "tenant.migrate.pause" => GroupOp::Pause,
                "tenant.migrate.resume" => GroupOp::Resume,
                _ => GroupOp::Cancel,
            };
            if args.len() == 3 && args.is(1, "GROUP") {
                let outcome = mgr
                    .for_group(&args.text(2), op)
                    .await
                    .map_err(migration_err)?;
                write_group_outcome(&mut ReplyWriter::new(out, proto), &outcome);
                return Ok(Flow::Continue);
            }
            // RESUME|CANCEL <id> AUTH <password>: a migration started with AUTH whose password
            // a restart of this server lost (it is never kept on disk).
            if args.len() == 4 && args.is(2, "AUTH") {
                let (id, password) = (args.text(1), args.text(3));
                match op {
                    GroupOp::Resume => mgr.resume_with_auth(&id, password).await,
                    GroupOp::Cancel => mgr.cancel_with_auth(&id, password).await,
                    GroupOp::Pause => return Err(ErrorReply::syntax()),
                }
                .map_err(migration_err)?;
                ReplyWriter::new(out, proto).ok();
                return Ok(Flow::Continue);
            }
            if args.len() != 2 {
                return Err(ErrorReply::syntax());
            }
            let id = args.text(1);
            match op {
                GroupOp::Pause => mgr.pause(&id).await,
                GroupOp::Resume => mgr.resume(&id).await,
                GroupOp::Cancel => mgr.cancel(&id).await,
            }
            .map_err(migration_err)?;
            ReplyWriter::new(out, proto).ok();
        }
        "tenant.migrate.rollback" => {
            if args.len() != 2 {
                return Err(ErrorReply::syntax());
            }
            let r = mgr.rollback(&args.text(1)).await.map_err(migration_err)?;
            write_cutover_result(out, proto, &r, "keys");
        }
        "tenant.migrate.finalize" => {
            if args.len() != 2 {
                return Err(ErrorReply::syntax());
            }
            mgr.finalize(&args.text(1)).await.map_err(migration_err)?;
            ReplyWriter::new(out, proto).ok();
        }
        "tenant.migrate.approve" => {
            if args.len() != 2 {
                return Err(ErrorReply::syntax());
            }
            mgr.approve(&args.text(1), &operator(st))
                .await
                .map_err(migration_err)?;
            ReplyWriter::new(out, proto).ok();
        }
        "tenant.migrate.stop" => {
            let mode = match args.len() {
                3 if args.is(2, "GRACEFUL") => StopMode::Graceful,
                3 if args.is(2, "IMMEDIATE") => StopMode::Immediate,
                _ => return Err(ErrorReply::syntax()),
            };
            let r = mgr.stop(&args.text(1), mode).await.map_err(migration_err)?;
            write_stop(&mut ReplyWriter::new(out, proto), &r);
        }
        "tenant.migrate.reject" => {
            let reason = match args.len() {
                2 => None,
                3 => Some(args.text(2)),
                _ => return Err(ErrorReply::syntax()),
            };
            mgr.reject(&args.text(1), &operator(st), reason)
                .await
                .map_err(migration_err)?;
            ReplyWriter::new(out, proto).ok();
        }
        "tenant.migrate.cutover" if args.is(1, "GROUP") => {
            let force = match args.len() {
                3 => false,
                4 if args.is(3, "FORCE") => true,
                _ => return Err(ErrorReply::syntax()),
            };
            let outcome = mgr
                .cutover_group(&args.text(2), force)
                .await
                .map_err(migration_err)?;
            write_group_outcome(&mut ReplyWriter::new(out, proto), &outcome);
        }
        "tenant.migrate.cutover" if args.len() >= 4 && args.is(2, "DNS") => {
            let force = match args.len() {
                4 => false,
                5 if args.is(4, "FORCE") => true,
                _ => return Err(ErrorReply::syntax()),
            };
            let (r, dns) = mgr
                .cutover_dns(&args.text(1), &args.text(3), force)
                .await
                .map_err(migration_err)?;
            let mut w = ReplyWriter::new(out, proto);
            w.map(4);
            w.bulk_str("status");
            w.bulk_str(r.status);
            w.bulk_str("downtime_ms");
            w.bulk_str(&format!("{:.3}", r.downtime_ms));
            w.bulk_str("keys_migrated");
            w.int(r.keys_migrated as i64);
            w.bulk_str("dns");
            w.bulk_str(&dns.text());
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
                // RETRY [AUTH <password>] [FORCE]
                let (password, rest) = if args.len() >= 5 && args.is(3, "AUTH") {
                    (Some(args.text(4)), 5)
                } else {
                    (None, 3)
                };
                mgr.cutover_retry_with_auth(&id, force_at(rest)?, password)
                    .await
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
            write_cutover_result(out, proto, &r, "keys_migrated");
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
            let (mut new_priority, mut after) = (None, None);
            let mut i = 2;
            while i < args.len() {
                if args.is(i, "AFTER") {
                    let (ids, next) = after_ids(&args, i + 1)?;
                    after = Some(ids);
                    i = next;
                    continue;
                }
                if i + 1 >= args.len() {
                    return Err(ErrorReply::syntax());
                }
                match args.get(i).to_ascii_uppercase().as_slice() {
                    b"PRIORITY" => new_priority = Some(priority(&args, i + 1)?),
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
            let id = args.text(1);
            // AFTER first: it is the one that can be refused for what it says (a cycle, an
            // unknown id, a migration no longer waiting), and then nothing has changed.
            if let Some(after) = after {
                mgr.set_after(&id, after).await.map_err(migration_err)?;
            }
            if let Some(p) = new_priority {
                mgr.set_priority(&id, p).await.map_err(migration_err)?;
            }
            if parallel.is_some() || batch.is_some() || rate.is_some() {
                mgr.update(&id, parallel, batch, rate)
                    .await
                    .map_err(migration_err)?;
            }
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
/// pool when that wait could be long or endless (`ImportManager::step_may_wait`: the tenant
/// already serves clients here, or its lock is busy): its connections wait for the same lock
/// asynchronously, and a worker thread blocked here may be the one that must run the task the
/// lock was handed to. Otherwise (the usual case) it runs here: no copy, no thread hop.
async fn import_step<T: Send + 'static>(
    imports: &Arc<ferrite_tenancy::ImportManager>,
    id: &str,
    f: impl FnOnce(&ferrite_tenancy::ImportManager) -> T + Send + 'static,
) -> Result<T, ErrorReply> {
    if !imports.step_may_wait(id) {
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
            // A stopped copy (an ended continuous sync) gives way to a new import.
            if let Some(state) = imports.blocking_state(&tenant) {
                return Err(import_err(ImportError::TenantExists { tenant, state }));
            }
            let state = match sh.registry.get(&tenant) {
                Some(t) if imports.stopped_for(&tenant).is_none() => t.state().name(),
                _ => "absent",
            };
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
                acl_users: Vec::new(),
                conflict: None,
                backup: false,
            };
            let mut i = 6;
            while i + 1 < args.len() {
                match args.get(i).to_ascii_uppercase().as_slice() {
                    b"CREDENTIAL" => {
                        let c = Credential::decode(&args.text(i + 1))
                            .map_err(|e| ErrorReply::err(e.to_string()))?;
                        req.credential = Some(c);
                    }
                    b"CONFLICT" => req.conflict = Some(conflict_arg(&args.text(i + 1))?),
                    b"BACKUP" => req.backup = args.is(i + 1, "1"),
                    // Sources from before credentials were hashed send the password itself.
                    b"PASSWORD" => {
                        req.credential = Some(Credential::from_password(args.get(i + 1)))
                    }
                    b"MAXMEMORY" => req.limits.maxmemory = args.int(i + 1)?.max(0) as u64,
                    b"MAXKEYS" => req.limits.maxkeys = args.int(i + 1)?.max(0) as u64,
                    b"OPS" => req.limits.ops = args.int(i + 1)?.max(0) as u64,
                    b"MAXCLIENTS" => req.limits.maxclients = args.int(i + 1)?.max(0) as u64,
                    b"ACLUSER" => req.acl_users.push(
                        ferrite_tenancy::acl::decode_record(&args.text(i + 1))
                            .map_err(|e| ErrorReply::err(e.to_string()))?,
                    ),
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
            let seq = if imports.step_may_wait(&id) {
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
        "tenant.import.stop" => {
            imports.stop(&args.text(1)).map_err(import_err)?;
            w.ok();
        }
        "tenant.import.abort" => {
            imports.abort(&args.text(1)).map_err(import_err)?;
            w.ok();
        }
        "tenant.import.backup" => {
            let mgr = &sh.migrations;
            let r = match (args.len(), args.text(2).to_ascii_uppercase().as_str()) {
                (5, "START") => {
                    let secs = args.int(4)?;
                    if secs <= 0 {
                        return Err(ErrorReply::must_be_positive());
                    }
                    mgr.backup_start(&id, &args.text(3), Duration::from_secs(secs as u64))
                        .await
                }
                (3, "STATUS") => mgr.backup_status(&id),
                (3, "CUTOVER") => mgr.backup_cutover(&id).await,
                (3, "END") => mgr.backup_end(&id).await,
                _ => return Err(ErrorReply::syntax()),
            }
            .map_err(migration_err)?;
            w.map(8);
            w.bulk_str("backup_state");
            w.bulk_str(r.state);
            w.bulk_str("backup_migration");
            w.bulk_str(r.migration_id.as_deref().unwrap_or_default());
            w.bulk_str("backup_lag_seconds");
            w.bulk_str(&format!("{:.3}", r.lag_seconds));
            w.bulk_str("backup_lag_records");
            w.int(r.lag_records as i64);
            w.bulk_str("backup_lag_bytes");
            w.int(r.lag_bytes as i64);
            w.bulk_str("backup_until_ms");
            w.int(r.until_ms as i64);
            w.bulk_str("backup_error");
            w.bulk_str(r.error.as_deref().unwrap_or_default());
            w.bulk_str("downtime_ms");
            w.bulk_str(&r.downtime_ms.map(|d| format!("{d:.3}")).unwrap_or_default());
        }
        "tenant.import.status" => {
            let imp = imports.get(&args.text(1)).map_err(import_err)?;
            let act = imp.activation();
            w.map(14);
            w.bulk_str("conflict_policy");
            w.bulk_str(imp.conflict.map_or("", |p| p.name()));
            w.bulk_str("conflicts");
            w.int(imp.conflicts.count() as i64);
            w.bulk_str("conflict_sample");
            let sample = imp.conflicts.sample();
            w.array(sample.len());
            for k in &sample {
                w.bulk(k);
            }
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

/// A cutover's reply, and a rollback's (the reverse stream's cutover): status, downtime and the
/// keys it moved, under `keys_label` (`keys_migrated` for CUTOVER, `keys` for ROLLBACK).
fn write_cutover_result(out: &mut BytesMut, proto: Protocol, r: &CutoverResult, keys_label: &str) {
    let mut w = ReplyWriter::new(out, proto);
    w.map(3);
    w.bulk_str("status");
    w.bulk_str(r.status);
    w.bulk_str("downtime_ms");
    w.bulk_str(&format!("{:.3}", r.downtime_ms));
    w.bulk_str(keys_label);
    w.int(r.keys_migrated as i64);
}
