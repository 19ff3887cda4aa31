//! INFO: sections of `field:value` lines. Administrators see the whole server. Anybody else
//! (tenant connections, anonymous users of `default`) sees its tenant only, under Redis's field
//! names: its clients, its memory, its keyspace, its commands (`stats`, `commandstats`), and
//! nothing that depends on other tenants — no process RSS or CPU, no server-wide counters, no
//! persistence sizes. Fields without a per-tenant value are left out rather than filled with
//! the server's (docs/security.md lists what a tenant sees).

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use ferrite_commands::spec;

use crate::cmd::COMPAT_VERSION;
use crate::connection::ClientState;
use crate::shared::Shared;

const DEFAULT_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "keyspace",
    "tenancy",
];

/// Renders the requested sections (`[]` = the default set; `all`/`everything` = every section).
pub fn render(st: &ClientState, sh: &Shared, requested: &[String]) -> String {
    let mut wanted: Vec<&str> = Vec::new();
    if requested.is_empty() || requested.iter().any(|s| s == "default") {
        wanted.extend(DEFAULT_SECTIONS);
    }
    if requested.iter().any(|s| s == "all" || s == "everything") {
        wanted.extend(DEFAULT_SECTIONS);
        wanted.push("commandstats");
        wanted.push("errorstats");
    }
    for s in requested {
        if !matches!(s.as_str(), "default" | "all" | "everything") {
            wanted.push(s.as_str());
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = String::new();
    for s in wanted {
        if !seen.insert(s) {
            continue;
        }
        let body = section(st, sh, s);
        if let Some(body) = body {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            out.push_str(&body);
        }
    }
    out
}

fn used_memory(st: &ClientState, sh: &Shared) -> u64 {
    if st.admin {
        sh.registry.used_bytes()
    } else {
        st.tenant.keyspace().used_bytes()
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

/// INFO memory's process-wide lines, in Redis's names: the resident set and
/// `mem_fragmentation_*`, the resident set against `used_memory` (Redis's formula with
/// Ferrite's estimate). glibc's malloc keeps no statistics of its own to report as Redis's
/// `allocator_*` lines.
fn process_memory(s: &mut String, used: u64) {
    let rss = rss_bytes();
    let _ = write!(
        s,
        "used_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\n",
        human(rss)
    );
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let diff = |a: u64, b: u64| a as i128 - b as i128;
    let _ = write!(
        s,
        "mem_fragmentation_ratio:{:.2}\r\nmem_fragmentation_bytes:{}\r\n",
        ratio(rss, used),
        diff(rss, used)
    );
}

/// The process runs on the system's malloc (glibc), which Redis reports as `libc`. jemalloc and
/// mimalloc were measured as the global allocator and not kept (docs/benchmarks.md, "The
/// allocator": both cost memory on 100-byte strings and CPU on 16 KiB values).
const MEM_ALLOCATOR: &str = "libc";

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}G", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2}M", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else {
        format!("{bytes}B")
    }
}

fn cpu_seconds() -> (f64, f64) {
    // Fields 14 and 15 of /proc/self/stat are utime and stime in clock ticks (100 Hz on Linux).
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else {
        return (0.0, 0.0);
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    (ticks(11), ticks(12))
}

fn section(st: &ClientState, sh: &Shared, name: &str) -> Option<String> {
    let mut s = String::new();
    match name {
        "server" => {
            let up = sh.started.elapsed().as_secs();
            // The process id is the host's business: administrators only (a tenant's clients
            // can still tell the server by run_id).
            let pid = if st.admin {
                format!("process_id:{}\r\n", std::process::id())
            } else {
                String::new()
            };
            let _ = write!(
                s,
                "# Server\r\nredis_version:{COMPAT_VERSION}\r\nferrite_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\n{pid}run_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH,
                sh.run_id,
                sh.local_addr.port(),
                up / 86400,
            );
        }
        "clients" => {
            let server_max = sh.config.read().server.maxclients as u64;
            // A tenant counts its own clients only, as CLIENT LIST shows them, against the
            // limit that applies to it.
            let (connected, max) = if st.admin {
                (sh.client_count() as u64, server_max)
            } else {
                let own = st.tenant.limits().maxclients;
                (
                    st.tenant.stats.clients.load(Relaxed),
                    if own == 0 {
                        server_max
                    } else {
                        own.min(server_max)
                    },
                )
            };
            // Keys clients wait for: a tenant's own keyspace, or every tenant's for the
            // administrator (a key is one tenant's, so the sums count distinct keys).
            let (blocking_keys, on_nokey) = if st.admin {
                sh.registry.list().iter().fold((0, 0), |(k, n), t| {
                    let ks = t.keyspace();
                    let ks = ks.stats();
                    (
                        k + ks.blocking_keys.load(Relaxed),
                        n + ks.blocking_keys_on_nokey.load(Relaxed),
                    )
                })
            } else {
                let ks = st.tenant.keyspace();
                let ks = ks.stats();
                (
                    ks.blocking_keys.load(Relaxed),
                    ks.blocking_keys_on_nokey.load(Relaxed),
                )
            };
            let _ = write!(
                s,
                "# Clients\r\nconnected_clients:{connected}\r\nmaxclients:{max}\r\nblocked_clients:{}\r\ntracking_clients:0\r\ntotal_blocking_keys:{blocking_keys}\r\ntotal_blocking_keys_on_nokey:{on_nokey}\r\n",
                // A tenant counts its own blocked clients only.
                if st.admin {
                    sh.stats.blocked_clients.load(Relaxed)
                } else {
                    sh.clients
                        .lock()
                        .values()
                        .filter(|c| {
                            c.blocked.lock().is_some() && *c.fields.lock().tenant == *st.tenant.id()
                        })
                        .count() as u64
                },
            );
        }
        "memory" => {
            let used = used_memory(st, sh);
            let _ = write!(
                s,
                "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\n",
                human(used)
            );
            // The process's resident memory and the allocator's figures are everybody's:
            // administrators only.
            if st.admin {
                process_memory(&mut s, used);
            }
            let clients_output = if st.admin {
                sh.client_bytes.load(Relaxed)
            } else {
                st.tenant.stats.client_bytes.load(Relaxed)
            };
            let _ = write!(
                s,
                "maxmemory:{}\r\nmaxmemory_policy:noeviction\r\nmem_clients_normal:{clients_output}\r\nmem_allocator:{}\r\nnumber_of_cached_scripts:{}\r\n",
                // The administrator's is the server-wide cap; a tenant's, its own quota.
                if st.admin {
                    sh.hot.maxmemory.load(Relaxed)
                } else {
                    st.tenant.limits().maxmemory
                },
                MEM_ALLOCATOR,
                st.tenant.scripts().cached_scripts(),
            );
        }
        "persistence" => persistence(sh, &mut s, st.admin),
        "stats" if !st.admin => tenant_stats(st, &mut s),
        "stats" => {
            let t = &sh.stats;
            let expired: u64 = sh
                .registry
                .list()
                .iter()
                .map(|t| t.keyspace().stats().expired_total.load(Relaxed))
                .sum();
            // Every error reply, as errorstats counts them (also those of unknown commands, and
            // those inside EXEC's reply and of a script's calls), as Redis counts them.
            let errors: u64 = sh.cmd_stats.errors.total();
            let _ = write!(
                s,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nexpired_keys:{expired}\r\nevicted_keys:0\r\ntotal_error_replies:{errors}\r\ntotal_protocol_errors:{}\r\nclient_output_buffer_limit_disconnections:{}\r\nclient_query_buffer_limit_disconnections:{}\r\nauth_failures:{}\r\nauth_refused:{}\r\nauth_blocks:{}\r\nmetrics_connections_rejected:{}\r\n",
                t.connections_received.load(Relaxed),
                t.commands_processed.load(Relaxed),
                t.ops_per_sec.load(Relaxed),
                t.net_input_bytes.load(Relaxed),
                t.net_output_bytes.load(Relaxed),
                t.connections_rejected.load(Relaxed),
                t.protocol_errors.load(Relaxed),
                t.output_limit_disconnects.load(Relaxed),
                t.query_limit_disconnects.load(Relaxed),
                sh.auth_limiter.failures.load(Relaxed),
                sh.auth_limiter.refused.load(Relaxed),
                sh.auth_limiter.blocks.load(Relaxed),
                t.metrics_connections_refused.load(Relaxed),
            );
        }
        "replication" => {
            let _ = write!(
                s,
                "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_replid:{}\r\nmaster_repl_offset:0\r\n",
                sh.run_id
            );
            for line in crate::migration_info::lines(st, sh) {
                s.push_str(&line);
                s.push_str("\r\n");
            }
        }
        // The process's CPU time moves with every tenant's load: administrators only.
        "cpu" if !st.admin => return None,
        "cpu" => {
            let (user, sys) = cpu_seconds();
            let _ = write!(
                s,
                "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\n"
            );
        }
        "keyspace" => {
            s.push_str("# Keyspace\r\n");
            let ks = st.tenant.keyspace();
            let keys = ks.len();
            if keys > 0 {
                let _ = write!(
                    s,
                    "db0:keys={keys},expires={},avg_ttl=0\r\n",
                    ks.stats().keys_with_expiry.load(Relaxed)
                );
            }
        }
        "tenancy" => {
            let _ = write!(
                s,
                "# Tenancy\r\ncurrent_tenant:{}\r\ntenant_state:{}\r\n",
                st.tenant.id(),
                st.tenant.state().name()
            );
            if st.admin {
                let _ = write!(s, "tenants:{}\r\n", sh.registry.len());
            }
        }
        "commandstats" if !st.admin => {
            s.push_str("# Commandstats\r\n");
            let counters = st
                .tenant
                .stats
                .command_counters_if_any()
                .unwrap_or_default();
            for (spec, c) in spec::all().iter().zip(counters) {
                let calls = c.calls.load(Relaxed);
                let rejected = c.rejected.load(Relaxed);
                if calls == 0 && rejected == 0 {
                    continue;
                }
                write_cmdstat(
                    &mut s,
                    spec.name,
                    calls,
                    c.usec.load(Relaxed),
                    rejected,
                    c.failed.load(Relaxed),
                );
            }
        }
        "commandstats" => {
            s.push_str("# Commandstats\r\n");
            for (spec, stat) in spec::all().iter().zip(&sh.cmd_stats.by_command) {
                let calls = stat.calls.load(Relaxed);
                let rejected = stat.rejected.load(Relaxed);
                if calls == 0 && rejected == 0 {
                    continue;
                }
                write_cmdstat(
                    &mut s,
                    spec.name,
                    calls,
                    stat.usec.load(Relaxed),
                    rejected,
                    stat.failed.load(Relaxed),
                );
            }
        }
        "errorstats" => {
            // A tenant's clients see their own errors only, as for commandstats.
            s.push_str("# Errorstats\r\n");
            let counts = if st.admin {
                sh.cmd_stats.errors.snapshot()
            } else {
                st.tenant.stats.errors.snapshot()
            };
            for (code, n) in counts {
                let _ = write!(s, "errorstat_{code}:count={n}\r\n");
            }
        }
        _ => return None,
    }
    Some(s)
}

fn write_cmdstat(s: &mut String, name: &str, calls: u64, usec: u64, rejected: u64, failed: u64) {
    let per = if calls > 0 {
        usec as f64 / calls as f64
    } else {
        0.0
    };
    let _ = write!(
        s,
        "cmdstat_{name}:calls={calls},usec={usec},usec_per_call={per:.2},rejected_calls={rejected},failed_calls={failed}\r\n",
    );
}

/// `# Stats` for a tenant connection: its own counters under Redis's names.
fn tenant_stats(st: &ClientState, s: &mut String) {
    let t = &st.tenant;
    let mut commands = 0u64;
    for c in t.stats.command_counters_if_any().unwrap_or_default() {
        commands += c.calls.load(Relaxed);
    }
    let errors = t.stats.errors.total();
    let _ = write!(
        s,
        "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{commands}\r\ninstantaneous_ops_per_sec:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:0\r\ntotal_error_replies:{errors}\r\n",
        t.stats.connections_received.load(Relaxed),
        t.stats.ops_per_sec.load(Relaxed),
        t.stats.rejected_connections.load(Relaxed),
        t.keyspace().stats().expired_total.load(Relaxed),
    );
}

/// `# Persistence`, with Redis's field names where they mean the same thing (a snapshot here is
/// both Redis's RDB save and its AOF rewrite: it is reported under both names, as what ran).
/// The data directory is loaded before the server accepts connections, so `loading` is 0.
/// Tenants see whether persistence is on and working; sizes, change counts and history are
/// everybody's data together, for administrators.
fn persistence(sh: &Shared, s: &mut String, admin: bool) {
    s.push_str("# Persistence\r\nloading:0\r\nasync_loading:0\r\n");
    let Some(p) = &sh.persistence else {
        let started = ferrite_storage::now_ms() / 1000 - sh.started.elapsed().as_secs();
        let _ = write!(
            s,
            "rdb_changes_since_last_save:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:{started}\r\nrdb_last_bgsave_status:ok\r\naof_enabled:0\r\naof_rewrite_in_progress:0\r\naof_last_write_status:ok\r\n"
        );
        return;
    };
    let st = p.status();
    if !admin {
        let ok = |b: bool| if b { "ok" } else { "err" };
        let _ = write!(
            s,
            "aof_enabled:1\r\nrdb_last_bgsave_status:{}\r\naof_last_write_status:{}\r\nappendfsync:{}\r\n",
            ok(st.last_save_ok),
            ok(p.writable()),
            p.policy().name(),
        );
        return;
    }
    let running = |k: ferrite_persistence::SaveKind| {
        st.save_in_progress
            .filter(|(kind, _)| *kind == k)
            .map_or(-1, |(_, t)| t.elapsed().as_secs() as i64)
    };
    let ok = |b: bool| if b { "ok" } else { "err" };
    let (log_bytes, snapshot_bytes) = p.sizes();
    let stats = p.stats();
    let _ = write!(
        s,
        "rdb_changes_since_last_save:{}\r\nrdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:{}\r\nrdb_last_bgsave_time_sec:{}\r\nrdb_current_bgsave_time_sec:{}\r\nrdb_saves:{}\r\nrdb_last_load_keys_expired:{}\r\nrdb_last_load_keys_loaded:{}\r\naof_enabled:1\r\naof_rewrite_in_progress:{}\r\naof_rewrite_scheduled:{}\r\naof_last_rewrite_time_sec:{}\r\naof_current_rewrite_time_sec:{}\r\naof_last_bgrewrite_status:{}\r\naof_rewrites:{}\r\naof_rewrites_consecutive_failures:{}\r\naof_last_write_status:{}\r\naof_current_size:{}\r\naof_base_size:{}\r\naof_buffer_length:{}\r\n",
        p.changes_since_save(),
        u8::from(running(ferrite_persistence::SaveKind::Snapshot) >= 0),
        st.last_save_unix,
        ok(st.last_save_ok),
        st.last_save_secs,
        running(ferrite_persistence::SaveKind::Snapshot),
        st.saves,
        st.load.expired,
        st.load.keys,
        u8::from(running(ferrite_persistence::SaveKind::Rewrite) >= 0),
        u8::from(st.rewrite_scheduled),
        st.last_rewrite_secs,
        running(ferrite_persistence::SaveKind::Rewrite),
        ok(st.last_rewrite_ok),
        st.rewrites,
        st.rewrite_failures_in_a_row,
        ok(p.writable()),
        log_bytes + snapshot_bytes,
        snapshot_bytes,
        p.buffered(),
    );
    // Ferrite's own.
    let _ = write!(
        s,
        "appendfsync:{}\r\naof_fsyncs:{}\r\naof_fsync_max_usec:{}\r\nsnapshots:{}\r\nsnapshot_failures:{}\r\ncompactions:{}\r\nload_time_ms:{}\r\nload_torn_tails:{}\r\naof_write_errors:{}\r\n",
        p.policy().name(),
        stats.fsyncs.load(Relaxed),
        stats.fsync_max_nanos.load(Relaxed) / 1000,
        st.snapshots,
        st.snapshot_failures,
        st.compactions,
        st.load.took_ms,
        st.load.torn.len(),
        stats.write_errors.load(Relaxed),
    );
    if let Some(e) = p.last_error() {
        let _ = write!(
            s,
            "aof_last_write_error:{}\r\n",
            e.replace(['\r', '\n'], " ")
        );
    }
}
