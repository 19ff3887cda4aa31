//! Prometheus metrics: names (all here), the per-server recorder, and the `/metrics` endpoint.
//!
//! Values are read from the counters the server keeps anyway (the same ones INFO shows) right
//! before each scrape, into a recorder of this server's own (not the process-global one, so
//! several embedded servers in one process keep separate metrics). Per-command latency is a fixed
//! bucket histogram kept in atomics on the hot path and rendered here.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use ferrite_commands::spec;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use metrics_util::MetricKindMask;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::shared::Shared;
use crate::stats::LATENCY_BUCKETS;

/// Metric names, kept together so they can be reviewed (and alert rules checked) in one place.
pub mod names {
    pub const UPTIME: &str = "ferrite_uptime_seconds";
    pub const CONNECTED_CLIENTS: &str = "ferrite_connected_clients";
    pub const CONNECTIONS_RECEIVED: &str = "ferrite_connections_received_total";
    pub const CONNECTIONS_REJECTED: &str = "ferrite_connections_rejected_total";
    pub const NET_INPUT: &str = "ferrite_net_input_bytes_total";
    pub const NET_OUTPUT: &str = "ferrite_net_output_bytes_total";
    pub const PROTOCOL_ERRORS: &str = "ferrite_protocol_errors_total";
    pub const AUTH_FAILURES: &str = "ferrite_auth_failures_total";
    pub const AUTH_REFUSED: &str = "ferrite_auth_refused_total";
    pub const METRICS_REJECTED: &str = "ferrite_metrics_connections_rejected_total";
    pub const KEYS: &str = "ferrite_keys";
    pub const MEMORY_USED: &str = "ferrite_memory_used_bytes";
    pub const MEMORY_RSS: &str = "ferrite_memory_rss_bytes";
    pub const TENANTS: &str = "ferrite_tenants";
    pub const EXPIRED_KEYS: &str = "ferrite_expired_keys_total";
    pub const COMMANDS: &str = "ferrite_commands_total";
    pub const COMMAND_FAILED: &str = "ferrite_command_failures_total";
    pub const COMMAND_REJECTED: &str = "ferrite_command_rejections_total";
    pub const COMMAND_DURATION: &str = "ferrite_command_duration_seconds";
    pub const TENANT_KEYS: &str = "ferrite_tenant_keys";
    pub const TENANT_MEMORY: &str = "ferrite_tenant_memory_used_bytes";
    pub const TENANT_COMMANDS: &str = "ferrite_tenant_commands_total";
    pub const TENANT_THROTTLED: &str = "ferrite_tenant_throttled_total";
    pub const TENANT_REJECTED: &str = "ferrite_tenant_rejected_total";
    pub const TENANT_CLIENTS: &str = "ferrite_tenant_connected_clients";
    pub const MIGRATION_PROGRESS: &str = "ferrite_tenant_migration_progress";
    pub const MIGRATION_LAG_KEYS: &str = "ferrite_tenant_migration_lag_keys";
    pub const MIGRATION_LAG_BYTES: &str = "ferrite_tenant_migration_lag_bytes";
    pub const MIGRATION_LAG_SECONDS: &str = "ferrite_tenant_migration_lag_seconds";
    pub const MIGRATION_PHASE: &str = "ferrite_tenant_migration_phase";
    pub const MIGRATION_STATE: &str = "ferrite_tenant_migration_state";
    pub const MIGRATION_MODE: &str = "ferrite_tenant_migration_mode";
    pub const MIGRATION_DURATION: &str = "ferrite_tenant_migration_duration_seconds";
    pub const MIGRATION_KEYS: &str = "ferrite_tenant_migration_keys_total";
    pub const MIGRATION_BYTES: &str = "ferrite_tenant_migration_bytes_total";
    pub const MIGRATION_DOWNTIME: &str = "ferrite_tenant_migration_cutover_downtime_seconds";
    pub const MIGRATION_UNREACHABLE: &str = "ferrite_tenant_migration_target_unreachable_seconds";
    pub const MIGRATION_RECONNECTS: &str = "ferrite_tenant_migration_reconnects_total";
    pub const MIGRATION_CONFLICTS: &str = "ferrite_tenant_migration_conflicts_total";
    pub const MIGRATION_BACKUP_STATE: &str = "ferrite_tenant_migration_backup_state";
    pub const MIGRATION_BACKUP_LAG_SECONDS: &str = "ferrite_tenant_migration_backup_lag_seconds";
    pub const MIGRATIONS_ACTIVE: &str = "ferrite_migrations_active";
    pub const MIGRATIONS_FAILED: &str = "ferrite_migrations_failed";
    pub const MIGRATIONS_KNOWN: &str = "ferrite_migrations_known";
    pub const MIGRATIONS_THROTTLE: &str = "ferrite_migrations_throttle_ratio";
    pub const MIGRATIONS_BY_STATE: &str = "ferrite_migrations";
    pub const MIGRATIONS_KEYS_RATE: &str = "ferrite_migrations_keys_per_second";
    pub const MIGRATIONS_BYTES_RATE: &str = "ferrite_migrations_bytes_per_second";
    pub const MIGRATIONS_KEYS_REMAINING: &str = "ferrite_migrations_keys_remaining";
    pub const MIGRATIONS_ETA: &str = "ferrite_migrations_eta_seconds";
    pub const IMPORTS_ACTIVE: &str = "ferrite_imports_active";
    pub const PERSISTENCE_ENABLED: &str = "ferrite_persistence_enabled";
    pub const PERSISTENCE_WRITE_OK: &str = "ferrite_persistence_log_write_ok";
    pub const PERSISTENCE_FAILING_TENANTS: &str = "ferrite_persistence_failing_tenants";
    pub const PERSISTENCE_WRITE_ERRORS: &str = "ferrite_persistence_write_errors_total";
    pub const PERSISTENCE_LOG_WRITES: &str = "ferrite_persistence_log_writes_total";
    pub const PERSISTENCE_LOG_WRITTEN: &str = "ferrite_persistence_log_written_bytes_total";
    pub const PERSISTENCE_FSYNCS: &str = "ferrite_persistence_fsyncs_total";
    pub const PERSISTENCE_FSYNC_SECONDS: &str = "ferrite_persistence_fsync_seconds_total";
    pub const PERSISTENCE_FSYNC_MAX: &str = "ferrite_persistence_fsync_max_seconds";
    pub const PERSISTENCE_LOG_BYTES: &str = "ferrite_persistence_log_bytes";
    pub const PERSISTENCE_SNAPSHOT_BYTES: &str = "ferrite_persistence_snapshot_bytes";
    pub const PERSISTENCE_SNAPSHOTS: &str = "ferrite_persistence_snapshots_total";
    pub const PERSISTENCE_SNAPSHOT_FAILURES: &str = "ferrite_persistence_snapshot_failures_total";
    pub const PERSISTENCE_LAST_SAVE_OK: &str = "ferrite_persistence_last_save_ok";
    pub const PERSISTENCE_LAST_SAVE: &str = "ferrite_persistence_last_save_timestamp_seconds";
    pub const PERSISTENCE_CHANGES: &str = "ferrite_persistence_changes_since_save";
}

/// This server's metrics recorder.
pub struct Metrics {
    recorder: PrometheusRecorder,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            // Series not refreshed for a while (a deleted tenant) disappear.
            .idle_timeout(MetricKindMask::ALL, Some(Duration::from_secs(120)))
            .build_recorder();
        metrics::with_local_recorder(&recorder, describe);
        Metrics { recorder }
    }

    /// Records into this server's recorder.
    pub fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// The full `/metrics` page.
    pub fn render(&self, sh: &Shared) -> String {
        self.with(|| refresh(sh));
        let mut text = self.recorder.handle().render();
        render_commands(sh, &mut text);
        render_tenants(sh, &mut text);
        render_migration_counters(sh, &mut text);
        render_persistence_counters(sh, &mut text);
        text
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_gauge!(
        names::UPTIME,
        Unit::Seconds,
        "Seconds since the server started."
    );
    describe_gauge!(
        names::CONNECTED_CLIENTS,
        "Client connections currently open."
    );
    describe_counter!(names::CONNECTIONS_RECEIVED, "Client connections accepted.");
    describe_counter!(
        names::CONNECTIONS_REJECTED,
        "Client connections refused because maxclients was reached."
    );
    describe_counter!(
        names::AUTH_FAILURES,
        "AUTH attempts with a wrong password, secret or token."
    );
    describe_counter!(
        names::AUTH_REFUSED,
        "AUTH attempts refused unchecked because their address failed too often."
    );
    describe_counter!(
        names::METRICS_REJECTED,
        "Metrics endpoint connections closed at once because metrics.max_connections were served."
    );
    describe_counter!(names::NET_INPUT, Unit::Bytes, "Bytes read from clients.");
    describe_counter!(names::NET_OUTPUT, Unit::Bytes, "Bytes written to clients.");
    describe_counter!(
        names::PROTOCOL_ERRORS,
        "Connections closed because of a malformed or oversized request."
    );
    describe_gauge!(names::KEYS, "Keys held, over all tenants.");
    describe_gauge!(
        names::MEMORY_USED,
        Unit::Bytes,
        "Estimated bytes of data held, over all tenants."
    );
    describe_gauge!(
        names::MEMORY_RSS,
        Unit::Bytes,
        "Resident set size of the process."
    );
    describe_gauge!(names::TENANTS, "Tenants on this server (any state).");
    describe_counter!(
        names::EXPIRED_KEYS,
        "Keys removed because their TTL passed."
    );
    describe_gauge!(
        names::MIGRATION_PROGRESS,
        "Progress of the tenant's latest migration, 0 to 1."
    );
    describe_gauge!(
        names::MIGRATION_LAG_KEYS,
        "Changed keys of the tenant not yet shipped to the migration target."
    );
    describe_gauge!(
        names::MIGRATION_LAG_BYTES,
        Unit::Bytes,
        "Estimated bytes of the changed keys not yet shipped."
    );
    describe_gauge!(
        names::MIGRATION_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest change not yet shipped."
    );
    describe_gauge!(
        names::MIGRATION_PHASE,
        "1 for the phase the tenant's latest migration is in, 0 for the others."
    );
    describe_gauge!(
        names::MIGRATION_STATE,
        "1 for the state of the tenant's latest migration, 0 for the others."
    );
    describe_gauge!(
        names::MIGRATION_MODE,
        "1 for the mode of the tenant's latest migration (live, fast, continuous, incremental), 0 for the others."
    );
    describe_gauge!(
        names::MIGRATION_DURATION,
        Unit::Seconds,
        "How long the tenant's latest migration has run (or ran)."
    );
    describe_gauge!(
        names::MIGRATION_DOWNTIME,
        Unit::Seconds,
        "Write pause measured at the tenant's last cutover."
    );
    describe_gauge!(
        names::MIGRATION_UNREACHABLE,
        Unit::Seconds,
        "How long the target of the tenant's running migration has been unreachable (0 while every link works)."
    );
    describe_gauge!(
        names::MIGRATION_BACKUP_STATE,
        "On the old source after a cutover: 1 for the state of the backup the new owner keeps up to date (starting, streaming, broken, ended, rolled_back), 0 for the others."
    );
    describe_gauge!(
        names::MIGRATION_BACKUP_LAG_SECONDS,
        Unit::Seconds,
        "On the old source after a cutover: age of the oldest change of the new owner not yet in the backup."
    );
    describe_gauge!(
        names::MIGRATIONS_ACTIVE,
        "Migrations running (not queued, not finished)."
    );
    describe_gauge!(names::MIGRATIONS_FAILED, "Migrations in state failed.");
    describe_gauge!(
        names::MIGRATIONS_KNOWN,
        "Migrations this server knows (every state, history included)."
    );
    describe_gauge!(
        names::MIGRATIONS_THROTTLE,
        "Share of their speed contention management leaves running migrations, by priority (1: not slowed down)."
    );
    describe_gauge!(
        names::MIGRATIONS_BY_STATE,
        "Migrations in each state (label state)."
    );
    describe_gauge!(
        names::MIGRATIONS_KEYS_RATE,
        "Keys per second all running migrations ship together."
    );
    describe_gauge!(
        names::MIGRATIONS_BYTES_RATE,
        Unit::Bytes,
        "Bytes per second all running migrations send together."
    );
    describe_gauge!(
        names::MIGRATIONS_KEYS_REMAINING,
        "Keys the queued and running migrations have yet to copy."
    );
    describe_gauge!(
        names::MIGRATIONS_ETA,
        Unit::Seconds,
        "Seconds until the queued and running migrations have copied everything at the current total rate (-1: unknown, nothing moves; 0: nothing left)."
    );
    describe_gauge!(
        names::IMPORTS_ACTIVE,
        "Imports being received from other servers."
    );
    describe_gauge!(
        names::PERSISTENCE_ENABLED,
        "1 when data is kept on disk (persistence.enabled), else 0."
    );
    describe_gauge!(
        names::PERSISTENCE_WRITE_OK,
        "1 while every tenant's log can be written; 0 while one cannot (writes are refused with MISCONF)."
    );
    describe_gauge!(
        names::PERSISTENCE_FAILING_TENANTS,
        "Tenants whose log cannot be written right now."
    );
    describe_counter!(
        names::PERSISTENCE_WRITE_ERRORS,
        "Failed writes or fsyncs of logs and the catalog."
    );
    describe_counter!(
        names::PERSISTENCE_LOG_WRITES,
        "write() calls that handed log records to the kernel."
    );
    describe_counter!(
        names::PERSISTENCE_LOG_WRITTEN,
        Unit::Bytes,
        "Bytes of log records written."
    );
    describe_counter!(names::PERSISTENCE_FSYNCS, "fdatasync() calls on logs.");
    describe_gauge!(
        names::PERSISTENCE_FSYNC_MAX,
        Unit::Seconds,
        "Longest fdatasync() of a log since the server started."
    );
    describe_gauge!(
        names::PERSISTENCE_LOG_BYTES,
        Unit::Bytes,
        "Bytes of logs not compacted into a snapshot yet, over all tenants."
    );
    describe_gauge!(
        names::PERSISTENCE_SNAPSHOT_BYTES,
        Unit::Bytes,
        "Bytes of the newest snapshots, over all tenants."
    );
    describe_counter!(
        names::PERSISTENCE_SNAPSHOTS,
        "Tenant snapshots written (SAVE, BGSAVE, BGREWRITEAOF, the save schedule, compaction)."
    );
    describe_counter!(
        names::PERSISTENCE_SNAPSHOT_FAILURES,
        "Tenant snapshots that failed."
    );
    describe_gauge!(
        names::PERSISTENCE_LAST_SAVE_OK,
        "1 when the last snapshot of every tenant (SAVE/BGSAVE/BGREWRITEAOF/schedule) and the last automatic compaction of a tenant's log succeeded, else 0."
    );
    describe_gauge!(
        names::PERSISTENCE_LAST_SAVE,
        Unit::Seconds,
        "Unix time of the last successful snapshot of every tenant (LASTSAVE)."
    );
    describe_gauge!(
        names::PERSISTENCE_CHANGES,
        "Writes since the last snapshot of every tenant (rdb_changes_since_last_save)."
    );
}

/// Copies current values into the recorder.
fn refresh(sh: &Shared) {
    let s = &sh.stats;
    gauge!(names::UPTIME).set(sh.started.elapsed().as_secs_f64());
    gauge!(names::CONNECTED_CLIENTS).set(sh.client_count() as f64);
    counter!(names::CONNECTIONS_RECEIVED).absolute(s.connections_received.load(Relaxed));
    counter!(names::CONNECTIONS_REJECTED).absolute(s.connections_rejected.load(Relaxed));
    counter!(names::NET_INPUT).absolute(s.net_input_bytes.load(Relaxed));
    counter!(names::NET_OUTPUT).absolute(s.net_output_bytes.load(Relaxed));
    counter!(names::PROTOCOL_ERRORS).absolute(s.protocol_errors.load(Relaxed));
    counter!(names::AUTH_FAILURES).absolute(sh.auth_limiter.failures.load(Relaxed));
    counter!(names::AUTH_REFUSED).absolute(sh.auth_limiter.refused.load(Relaxed));
    counter!(names::METRICS_REJECTED).absolute(s.metrics_connections_refused.load(Relaxed));
    gauge!(names::MEMORY_RSS).set(rss_bytes() as f64);

    let tenants = sh.registry.list();
    gauge!(names::TENANTS).set(tenants.len() as f64);
    let cap = sh.config.read().metrics.max_labelled_tenants;
    let (mut keys, mut mem, mut expired) = (0u64, 0u64, 0u64);
    for t in &tenants {
        let ks = t.keyspace();
        keys += ks.len();
        mem += ks.used_bytes();
        expired += ks.stats().expired_total.load(Relaxed);
    }
    gauge!(names::KEYS).set(keys as f64);
    gauge!(names::MEMORY_USED).set(mem as f64);
    counter!(names::EXPIRED_KEYS).absolute(expired);
    refresh_migrations(sh, cap);
    refresh_persistence(sh);
}

/// Persistence series (all server-wide; INFO persistence shows the same values).
fn refresh_persistence(sh: &Shared) {
    let Some(p) = &sh.persistence else {
        gauge!(names::PERSISTENCE_ENABLED).set(0.0);
        return;
    };
    let st = p.status();
    let stats = p.stats();
    let (log_bytes, snapshot_bytes) = p.sizes();
    gauge!(names::PERSISTENCE_ENABLED).set(1.0);
    gauge!(names::PERSISTENCE_WRITE_OK).set(if p.writable() { 1.0 } else { 0.0 });
    gauge!(names::PERSISTENCE_FAILING_TENANTS).set(p.failing().len() as f64);
    counter!(names::PERSISTENCE_WRITE_ERRORS).absolute(stats.write_errors.load(Relaxed));
    counter!(names::PERSISTENCE_LOG_WRITES).absolute(stats.writes.load(Relaxed));
    counter!(names::PERSISTENCE_LOG_WRITTEN).absolute(stats.write_bytes.load(Relaxed));
    counter!(names::PERSISTENCE_FSYNCS).absolute(stats.fsyncs.load(Relaxed));
    gauge!(names::PERSISTENCE_FSYNC_MAX).set(stats.fsync_max_nanos.load(Relaxed) as f64 / 1e9);
    gauge!(names::PERSISTENCE_LOG_BYTES).set(log_bytes as f64);
    gauge!(names::PERSISTENCE_SNAPSHOT_BYTES).set(snapshot_bytes as f64);
    counter!(names::PERSISTENCE_SNAPSHOTS).absolute(st.snapshots);
    counter!(names::PERSISTENCE_SNAPSHOT_FAILURES).absolute(st.snapshot_failures);
    gauge!(names::PERSISTENCE_LAST_SAVE_OK).set(if st.last_save_ok && st.last_rewrite_ok {
        1.0
    } else {
        0.0
    });
    gauge!(names::PERSISTENCE_LAST_SAVE).set(st.last_save_unix as f64);
    gauge!(names::PERSISTENCE_CHANGES).set(p.changes_since_save() as f64);
}

/// Migration series, per tenant (its latest migration), capped like the tenant series.
fn refresh_migrations(sh: &Shared, cap: usize) {
    use ferrite_tenancy::{MigrationMode, MigrationPhase, MigrationState};
    let all = sh.migrations.status_all();
    gauge!(names::MIGRATIONS_ACTIVE).set(all.iter().filter(|m| m.state.is_active()).count() as f64);
    let totals = ferrite_tenancy::migration::Totals::of(&all);
    gauge!(names::MIGRATIONS_KNOWN).set(totals.migrations as f64);
    let (_, factors) = sh.migrations.contention();
    for (p, f) in ferrite_tenancy::Priority::ALL.iter().zip(factors) {
        gauge!(names::MIGRATIONS_THROTTLE, "priority" => p.name()).set(f);
    }
    for (state, n) in &totals.by_state {
        gauge!(names::MIGRATIONS_BY_STATE, "state" => state.name()).set(*n as f64);
    }
    gauge!(names::MIGRATIONS_KEYS_RATE).set(totals.keys_per_sec);
    gauge!(names::MIGRATIONS_BYTES_RATE).set(totals.bytes_per_sec);
    gauge!(names::MIGRATIONS_KEYS_REMAINING).set(totals.keys_remaining as f64);
    let unfinished = totals
        .by_state
        .iter()
        .any(|(s, n)| *n > 0 && (s.is_active() || s.is_pending()));
    gauge!(names::MIGRATIONS_ETA).set(match totals.estimated_completion {
        Some(at) => at.saturating_sub(ferrite_storage::now_ms()) as f64 / 1000.0,
        None if unfinished => -1.0,
        None => 0.0,
    });
    gauge!(names::MIGRATIONS_FAILED).set(
        all.iter()
            .filter(|m| m.state == MigrationState::Failed)
            .count() as f64,
    );
    let receiving = sh
        .migrations
        .imports()
        .list()
        .iter()
        .filter(|i| i.state() == ferrite_tenancy::migration::ImportState::Receiving)
        .count();
    gauge!(names::IMPORTS_ACTIVE).set(receiving as f64);
    let mut latest: std::collections::BTreeMap<String, &ferrite_tenancy::MigrationStatus> =
        std::collections::BTreeMap::new();
    for m in &all {
        let e = latest.entry(m.tenant.clone()).or_insert(m);
        if m.started_at >= e.started_at {
            *e = m;
        }
    }
    const MODES: [MigrationMode; 4] = [
        MigrationMode::Live,
        MigrationMode::Fast,
        MigrationMode::Continuous,
        MigrationMode::Incremental,
    ];
    for (tenant, m) in latest.into_iter().take(cap) {
        gauge!(names::MIGRATION_PROGRESS, "tenant" => tenant.clone()).set(m.progress / 100.0);
        gauge!(names::MIGRATION_LAG_KEYS, "tenant" => tenant.clone()).set(m.lag_keys as f64);
        gauge!(names::MIGRATION_LAG_BYTES, "tenant" => tenant.clone()).set(m.lag_bytes as f64);
        gauge!(names::MIGRATION_LAG_SECONDS, "tenant" => tenant.clone()).set(m.lag_seconds);
        gauge!(names::MIGRATION_DURATION, "tenant" => tenant.clone()).set(m.duration_seconds);
        gauge!(names::MIGRATION_UNREACHABLE, "tenant" => tenant.clone()).set(m.unreachable_seconds);
        if let Some(d) = m.downtime_ms {
            gauge!(names::MIGRATION_DOWNTIME, "tenant" => tenant.clone()).set(d / 1000.0);
        }
        for p in MigrationPhase::ALL {
            let v = if p == m.phase { 1.0 } else { 0.0 };
            gauge!(names::MIGRATION_PHASE, "tenant" => tenant.clone(), "phase" => p.name()).set(v);
        }
        for s in MigrationState::ALL {
            let v = if s == m.state { 1.0 } else { 0.0 };
            gauge!(names::MIGRATION_STATE, "tenant" => tenant.clone(), "state" => s.name()).set(v);
        }
        for mode in MODES {
            let v = if mode == m.mode { 1.0 } else { 0.0 };
            gauge!(names::MIGRATION_MODE, "tenant" => tenant.clone(), "mode" => mode.name()).set(v);
        }
        if let Some(b) = &m.backup {
            for state in ferrite_tenancy::BackupStatus::STATES {
                let v = if state == b.state { 1.0 } else { 0.0 };
                gauge!(names::MIGRATION_BACKUP_STATE, "tenant" => tenant.clone(), "state" => state)
                    .set(v);
            }
            gauge!(names::MIGRATION_BACKUP_LAG_SECONDS, "tenant" => tenant.clone())
                .set(b.lag_seconds);
        }
    }
}

/// Per-tenant series, rendered directly rather than through the recorder: a deleted tenant's
/// series must vanish at once (the recorder keeps a series until an idle timeout, so tenant churn
/// would break the label cap), and the `_other` sum must be able to go down when a tenant leaves
/// it (a counter reset to Prometheus), which the recorder's monotonic `absolute` cannot express.
fn render_tenants(sh: &Shared, out: &mut String) {
    let cap = sh.config.read().metrics.max_labelled_tenants;
    let mut tenants = sh.registry.list();
    // The oldest tenants hold the labels, so creating a tenant never moves another into `_other`.
    tenants.sort_by(|a, b| (a.created_at(), a.id()).cmp(&(b.created_at(), b.id())));
    let mut rows: Vec<(&str, [u64; 6])> = Vec::with_capacity(tenants.len().min(cap) + 1);
    let mut other = [0u64; 6];
    for (i, t) in tenants.iter().enumerate() {
        let ks = t.keyspace();
        let v = [
            ks.len(),
            ks.used_bytes(),
            t.stats.commands.load(Relaxed),
            t.stats.throttled.load(Relaxed),
            t.stats.rejected.load(Relaxed),
            t.stats.clients.load(Relaxed),
        ];
        if i < cap {
            rows.push((t.id(), v));
        } else {
            for (o, x) in other.iter_mut().zip(v) {
                *o += x;
            }
        }
    }
    if tenants.len() > cap {
        rows.push(("_other", other));
    }
    let series: [(&str, &str, &str); 6] = [
        (names::TENANT_KEYS, "gauge", "Keys held by the tenant."),
        (
            names::TENANT_MEMORY,
            "gauge",
            "Estimated bytes held by the tenant.",
        ),
        (
            names::TENANT_COMMANDS,
            "counter",
            "Data commands run for the tenant.",
        ),
        (
            names::TENANT_THROTTLED,
            "counter",
            "Commands of the tenant delayed by its ops throttle.",
        ),
        (
            names::TENANT_REJECTED,
            "counter",
            "Commands of the tenant refused by a quota or the throttle.",
        ),
        (
            names::TENANT_CLIENTS,
            "gauge",
            "Connections bound to the tenant.",
        ),
    ];
    for (j, (name, kind, help)) in series.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (id, v) in &rows {
            let _ = writeln!(out, "{name}{{tenant=\"{id}\"}} {}", v[j]);
        }
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Per-command counters and the latency histogram, from the hot-path atomics.
fn render_commands(sh: &Shared, out: &mut String) {
    let rows: Vec<_> = spec::all()
        .iter()
        .zip(&sh.cmd_stats.by_command)
        .filter(|(_, s)| s.calls.load(Relaxed) > 0 || s.rejected.load(Relaxed) > 0)
        .collect();
    let _ = writeln!(out, "# HELP {} Commands run, by command.", names::COMMANDS);
    let _ = writeln!(out, "# TYPE {} counter", names::COMMANDS);
    for (spec, s) in &rows {
        let _ = writeln!(
            out,
            "{}{{cmd=\"{}\"}} {}",
            names::COMMANDS,
            spec.name,
            s.calls.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP {} Commands that answered with an error, by command.",
        names::COMMAND_FAILED
    );
    let _ = writeln!(out, "# TYPE {} counter", names::COMMAND_FAILED);
    for (spec, s) in &rows {
        let _ = writeln!(
            out,
            "{}{{cmd=\"{}\"}} {}",
            names::COMMAND_FAILED,
            spec.name,
            s.failed.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP {} Commands refused before running (arity, auth, ownership, quota), by command.",
        names::COMMAND_REJECTED
    );
    let _ = writeln!(out, "# TYPE {} counter", names::COMMAND_REJECTED);
    for (spec, s) in &rows {
        let _ = writeln!(
            out,
            "{}{{cmd=\"{}\"}} {}",
            names::COMMAND_REJECTED,
            spec.name,
            s.rejected.load(Relaxed)
        );
    }
    let h = names::COMMAND_DURATION;
    let _ = writeln!(out, "# HELP {h} Time to run a command, by command.");
    let _ = writeln!(out, "# TYPE {h} histogram");
    for (spec, s) in &rows {
        let mut cumulative = 0u64;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += s.buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "{h}_bucket{{cmd=\"{}\",le=\"{le}\"}} {cumulative}",
                spec.name
            );
        }
        cumulative += s.buckets[LATENCY_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "{h}_bucket{{cmd=\"{}\",le=\"+Inf\"}} {cumulative}",
            spec.name
        );
        let sum = s.nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{h}_sum{{cmd=\"{}\"}} {sum}", spec.name);
        let _ = writeln!(out, "{h}_count{{cmd=\"{}\"}} {cumulative}", spec.name);
    }
}

/// Per-tenant migration counters, rendered directly: they restart from 0 with each new migration
/// of a tenant (a counter reset, which Prometheus handles), which the recorder's monotonic
/// `absolute` cannot express.
/// Counters in seconds (fractional: the recorder's counters are integers).
fn render_persistence_counters(sh: &Shared, out: &mut String) {
    let Some(p) = &sh.persistence else {
        return;
    };
    let name = names::PERSISTENCE_FSYNC_SECONDS;
    let secs = p.stats().fsync_nanos.load(Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "# HELP {name} Time spent in fdatasync() on logs.");
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {secs}");
}

fn render_migration_counters(sh: &Shared, out: &mut String) {
    let cap = sh.config.read().metrics.max_labelled_tenants;
    let mut latest: std::collections::BTreeMap<String, ferrite_tenancy::MigrationStatus> =
        std::collections::BTreeMap::new();
    for m in sh.migrations.status_all() {
        let newer = latest
            .get(&m.tenant)
            .is_none_or(|e| m.started_at >= e.started_at);
        if newer {
            latest.insert(m.tenant.clone(), m);
        }
    }
    type Read = fn(&ferrite_tenancy::MigrationStatus) -> u64;
    let series: [(&str, &str, Read); 4] = [
        (
            names::MIGRATION_KEYS,
            "Keys the tenant's latest migration has shipped and the target acknowledged.",
            |m| m.keys_synced,
        ),
        (
            names::MIGRATION_BYTES,
            "Bytes the tenant's latest migration has shipped and the target acknowledged.",
            |m| m.bytes_synced,
        ),
        (
            names::MIGRATION_RECONNECTS,
            "Reconnections to the target during the tenant's latest migration.",
            |m| m.reconnects,
        ),
        (
            names::MIGRATION_CONFLICTS,
            "Keys both sides changed that the tenant's latest sync resolved by its CONFLICT policy (as of the target's last report).",
            |m| m.conflicts,
        ),
    ];
    for (name, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (tenant, m) in latest.iter().take(cap) {
            let _ = writeln!(
                out,
                "{name}{{tenant=\"{}\"}} {}",
                escape_label(tenant),
                get(m)
            );
        }
    }
}

/// Escapes a label value for the text exposition format.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` until shutdown.
///
/// At most `metrics.max_connections` connections are served at once; one past that gets a
/// `503` (written without waiting) and is closed at once, so strangers opening connections
/// cannot hold the endpoint's sockets or the process's file descriptors. A served connection
/// must send its request head (at most 8 KiB) and take the whole reply within
/// `metrics.timeout_ms`, or it is closed: a slow client holds a slot for that long at most.
pub async fn serve(listener: TcpListener, sh: Arc<Shared>, metrics: Arc<Metrics>) {
    let mut shutdown = sh.shutdown.subscribe();
    let in_flight = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::shared::wait_shutdown(&mut shutdown) => return,
        };
        let (max, timeout) = {
            let c = sh.config.read();
            (
                c.metrics.max_connections,
                Duration::from_millis(c.metrics.timeout_ms),
            )
        };
        // The slot is taken here, in the accept loop, so a burst cannot pass the limit.
        if in_flight
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_err()
        {
            sh.stats.metrics_connections_refused.fetch_add(1, Relaxed);
            let _ = stream.try_write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            continue;
        }
        let slot = Slot(in_flight.clone());
        let sh = sh.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if tokio::time::timeout(timeout, exchange(stream, &sh, &metrics))
                .await
                .is_err()
            {
                debug!(%peer, "metrics connection timed out");
            }
        });
    }
}

/// One served metrics connection's place among `metrics.max_connections`.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Reads one request head, answers it, closes.
async fn exchange(mut stream: TcpStream, sh: &Shared, metrics: &Metrics) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) =
        if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.render(sh),
            )
        } else if method == "GET" && path == "/" {
            (
                "200 OK",
                "text/plain; charset=utf-8",
                "ferrite: see /metrics\n".to_string(),
            )
        } else {
            (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "not found\n".to_string(),
            )
        };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = stream.write_all(resp.as_bytes()).await {
        debug!(error = %e, "metrics write failed");
    }
    let _ = stream.shutdown().await;
}
