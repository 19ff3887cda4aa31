//! Parameters visible to CONFIG GET / CONFIG SET: Redis's names where Redis has the setting (so
//! tools that ask for `save` or `maxclients` get sensible answers) and the dotted `ferrite.toml`
//! paths for Ferrite's own settings.

use ferrite_protocol::{Args, ErrorReply};

use crate::config::Config;
use crate::shared::Shared;

type Getter = fn(&Config) -> String;
type Setter = fn(&mut Config, &str) -> Result<(), String>;

pub struct Param {
    pub name: &'static str,
    pub get: Getter,
    /// None = can only be set in the file (immutable at runtime).
    pub set: Option<Setter>,
}

fn num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| "argument couldn't be parsed into an integer".to_string())
}

/// A size, with Redis's units (`512mb`, `1gb`, `64k`) or plain bytes.
fn bytes<T: TryFrom<u64>>(v: &str) -> Result<T, String> {
    ferrite_protocol::args::parse_memory_size(v.as_bytes())
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| "argument must be a memory value".to_string())
}

fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("argument '{v}' must be 'yes' or 'no'")),
    }
}

/// Redis's `client-output-buffer-limit`: `<class> <hard> <soft> <seconds>` for the classes
/// normal (Ferrite: `limits.client_output_buffer_limit`, a hard limit only), replica/slave
/// (kept, no replicas here) and pubsub (`limits.pubsub_output_buffer_*`).
fn client_output_buffer_limit_get(c: &Config) -> String {
    let l = &c.limits;
    format!(
        "normal {} 0 0 slave {} pubsub {} {} {}",
        l.client_output_buffer_limit,
        l.replica_output_buffer_limit,
        l.pubsub_output_buffer_limit,
        l.pubsub_output_buffer_soft_limit,
        l.pubsub_output_buffer_soft_seconds
    )
}

fn client_output_buffer_limit_set(c: &mut Config, v: &str) -> Result<(), String> {
    let words: Vec<&str> = v.split_whitespace().collect();
    if words.is_empty() || !words.len().is_multiple_of(4) {
        return Err("Wrong number of arguments in buffer limit configuration.".into());
    }
    // Every class is checked before any is changed: a bad one changes nothing.
    let mut limits = c.limits.clone();
    for w in words.chunks_exact(4) {
        let bad = || "Error in hard, soft or soft_seconds setting in buffer limit configuration.";
        let hard: u64 = bytes(w[1]).map_err(|_| bad())?;
        let soft: u64 = bytes(w[2]).map_err(|_| bad())?;
        let seconds: u64 = w[3].parse().map_err(|_| bad())?;
        match w[0].to_ascii_lowercase().as_str() {
            "normal" => {
                if soft != 0 || seconds != 0 {
                    return Err("Ferrite has only a hard limit for normal clients: use 'normal <hard> 0 0'.".into());
                }
                limits.client_output_buffer_limit = hard;
            }
            "slave" | "replica" => {
                limits.replica_output_buffer_limit = format!("{hard} {soft} {seconds}");
            }
            "pubsub" => {
                limits.pubsub_output_buffer_limit = hard;
                limits.pubsub_output_buffer_soft_limit = soft;
                limits.pubsub_output_buffer_soft_seconds = seconds;
            }
            _ => {
                return Err("Invalid client class specified in buffer limit configuration.".into());
            }
        }
    }
    c.limits = limits;
    Ok(())
}

macro_rules! param {
    ($name:expr, $get:expr) => {
        Param {
            name: $name,
            get: $get,
            set: None,
        }
    };
    ($name:expr, $get:expr, $set:expr) => {
        Param {
            name: $name,
            get: $get,
            set: Some($set),
        }
    };
}

/// An encoding threshold (`[encoding]` in ferrite.toml), by its Redis name or `ziplist` alias.
macro_rules! encoding {
    ($name:expr, $field:ident) => {
        param!($name, |c| c.encoding.$field.to_string(), |c, v| {
            let n: i64 = num(v)?;
            if let Some(l) = ferrite_storage::encoding::limit($name)
                && (n < l.min || n > l.max)
            {
                return Err(format!(
                    "argument must be between {} and {} inclusive",
                    l.min, l.max
                ));
            }
            c.encoding.$field = n;
            Ok(())
        })
    };
}

pub static PARAMS: [Param; 91] = [
    param!("bind", |c| c.server.bind.clone()),
    param!("port", |c| c.server.port.to_string()),
    param!("requirepass", |c| c.server.requirepass.clone(), |c, v| {
        c.server.requirepass = v.to_string();
        Ok(())
    }),
    param!("timeout", |c| c.server.timeout.to_string(), |c, v| {
        c.server.timeout = num(v)?;
        Ok(())
    }),
    param!("maxclients", |c| c.server.maxclients.to_string(), |c, v| {
        c.server.maxclients = num(v)?;
        Ok(())
    }),
    param!(
        "proto-max-bulk-len",
        |c| c.limits.max_bulk_len.to_string(),
        |c, v| {
            c.limits.max_bulk_len = bytes(v)?;
            Ok(())
        }
    ),
    // Redis's bounds (1 MB at least); enforced by `client_memory`.
    param!(
        "client-query-buffer-limit",
        |c| c.limits.client_query_buffer_limit.to_string(),
        |c, v| {
            let n: u64 = bytes(v)?;
            if n < crate::client_memory::MIN_QUERY_BUFFER_LIMIT {
                return Err(
                    "argument must be between 1048576 and 9223372036854775807 inclusive".into(),
                );
            }
            c.limits.client_query_buffer_limit = n;
            Ok(())
        }
    ),
    param!("loglevel", |c| c.log.level.clone(), |c, v| {
        crate::config::log_filter(v)?;
        c.log.level = v.to_string();
        Ok(())
    }),
    param!("databases", |_| "1".into()),
    param!(
        "slowlog-log-slower-than",
        |c| c.commands.slowlog_log_slower_than.to_string(),
        |c, v| {
            c.commands.slowlog_log_slower_than = num(v)?;
            Ok(())
        }
    ),
    param!(
        "slowlog-max-len",
        |c| c.commands.slowlog_max_len.to_string(),
        |c, v| {
            c.commands.slowlog_max_len = num(v)?;
            Ok(())
        }
    ),
    param!(
        "acllog-max-len",
        |c| c.commands.acllog_max_len.to_string(),
        |c, v| {
            c.commands.acllog_max_len = num(v)?;
            Ok(())
        }
    ),
    param!(
        "latency-monitor-threshold",
        |c| c.commands.latency_monitor_threshold.to_string(),
        |c, v| {
            c.commands.latency_monitor_threshold = num(v)?;
            Ok(())
        }
    ),
    param!(
        "hll-sparse-max-bytes",
        |c| c.commands.hll_sparse_max_bytes.to_string(),
        |c, v| {
            c.commands.hll_sparse_max_bytes = bytes(v)?;
            Ok(())
        }
    ),
    param!(
        "busy-reply-threshold",
        |c| c.commands.busy_reply_threshold.to_string(),
        |c, v| {
            c.commands.busy_reply_threshold = num(v)?;
            Ok(())
        }
    ),
    param!(
        "min-replicas-to-write",
        |c| c.commands.min_replicas_to_write.to_string(),
        |c, v| {
            c.commands.min_replicas_to_write = num(v)?;
            Ok(())
        }
    ),
    // Replicas' lag: accepted for tools that set it (Ferrite has no replicas).
    param!("min-replicas-max-lag", |_| "10".into(), |_, v| {
        num::<u64>(v).map(|_| ())
    }),
    // The older name of busy-reply-threshold.
    param!(
        "lua-time-limit",
        |c| c.commands.busy_reply_threshold.to_string(),
        |c, v| {
            c.commands.busy_reply_threshold = num(v)?;
            Ok(())
        }
    ),
    // Tenant quotas and the server-wide maxmemory refuse writes past their limit and never
    // evict: Redis's `noeviction`, the only policy accepted (job-queue libraries check for it).
    param!("maxmemory-policy", |_| "noeviction".into(), |_, v| {
        if v.eq_ignore_ascii_case("noeviction") {
            Ok(())
        } else {
            Err(
                "Ferrite never evicts keys: maxmemory and tenant quotas refuse writes instead (noeviction)"
                    .into(),
            )
        }
    }),
    param!("save", |c| c.persistence.save.clone(), |c, v| {
        c.persistence.save = v.to_string();
        Ok(())
    }),
    param!("appendonly", |c| yes_no(c.persistence.enabled)),
    param!(
        "appendfsync",
        |c| c.persistence.appendfsync.clone(),
        |c, v| {
            c.persistence.appendfsync = v.to_ascii_lowercase();
            Ok(())
        }
    ),
    // Redis answers with the absolute path.
    param!("dir", |c| std::path::absolute(&c.persistence.dir)
        .map_or_else(
            |_| c.persistence.dir.clone(),
            |p| p.display().to_string()
        )),
    param!(
        "auto-aof-rewrite-percentage",
        |c| c.persistence.auto_compact_percentage.to_string(),
        |c, v| {
            c.persistence.auto_compact_percentage = num(v)?;
            Ok(())
        }
    ),
    param!(
        "auto-aof-rewrite-min-size",
        |c| c.persistence.auto_compact_min_size.to_string(),
        |c, v| {
            c.persistence.auto_compact_min_size = bytes(v)?;
            Ok(())
        }
    ),
    param!("persistence.enabled", |c| yes_no(c.persistence.enabled)),
    param!("persistence.dir", |c| c.persistence.dir.clone()),
    param!(
        "persistence.appendfsync",
        |c| c.persistence.appendfsync.clone(),
        |c, v| {
            c.persistence.appendfsync = v.to_ascii_lowercase();
            Ok(())
        }
    ),
    param!(
        "persistence.save",
        |c| c.persistence.save.clone(),
        |c, v| {
            c.persistence.save = v.to_string();
            Ok(())
        }
    ),
    param!(
        "persistence.auto_compact_percentage",
        |c| c.persistence.auto_compact_percentage.to_string(),
        |c, v| {
            c.persistence.auto_compact_percentage = num(v)?;
            Ok(())
        }
    ),
    param!(
        "persistence.auto_compact_min_size",
        |c| c.persistence.auto_compact_min_size.to_string(),
        |c, v| {
            c.persistence.auto_compact_min_size = bytes(v)?;
            Ok(())
        }
    ),
    // The server-wide cap on tenant data (policy noeviction), on top of tenant quotas.
    param!("maxmemory", |c| c.limits.maxmemory.to_string(), |c, v| {
        c.limits.maxmemory = bytes(v)?;
        Ok(())
    }),
    param!(
        "limits.maxmemory",
        |c| c.limits.maxmemory.to_string(),
        |c, v| {
            c.limits.maxmemory = bytes(v)?;
            Ok(())
        }
    ),
    param!("io-threads", |c| c.server.threads.to_string()),
    param!("server.threads", |c| c.server.threads.to_string()),
    param!(
        "server.shutdown_timeout_ms",
        |c| c.server.shutdown_timeout_ms.to_string(),
        |c, v| {
            c.server.shutdown_timeout_ms = num(v)?;
            Ok(())
        }
    ),
    param!(
        "server.auth_failure_limit",
        |c| c.server.auth_failure_limit.to_string(),
        |c, v| {
            c.server.auth_failure_limit = num(v)?;
            Ok(())
        }
    ),
    param!(
        "server.auth_block_max_ms",
        |c| c.server.auth_block_max_ms.to_string(),
        |c, v| {
            c.server.auth_block_max_ms = num(v)?;
            Ok(())
        }
    ),
    param!("limits.max_args", |c| c.limits.max_args.to_string()),
    param!(
        "maxmemory-clients",
        |c| c.limits.maxmemory_clients.to_string(),
        |c, v| {
            c.limits.maxmemory_clients = bytes(v)?;
            Ok(())
        }
    ),
    param!(
        "limits.pubsub_output_buffer_limit",
        |c| c.limits.pubsub_output_buffer_limit.to_string(),
        |c, v| {
            c.limits.pubsub_output_buffer_limit = bytes(v)?;
            Ok(())
        }
    ),
    param!(
        "limits.pubsub_output_buffer_soft_limit",
        |c| c.limits.pubsub_output_buffer_soft_limit.to_string(),
        |c, v| {
            c.limits.pubsub_output_buffer_soft_limit = bytes(v)?;
            Ok(())
        }
    ),
    param!(
        "limits.pubsub_output_buffer_soft_seconds",
        |c| c.limits.pubsub_output_buffer_soft_seconds.to_string(),
        |c, v| {
            c.limits.pubsub_output_buffer_soft_seconds = num(v)?;
            Ok(())
        }
    ),
    param!(
        "client-output-buffer-limit",
        client_output_buffer_limit_get,
        client_output_buffer_limit_set
    ),
    param!(
        "limits.client_output_buffer_limit",
        |c| c.limits.client_output_buffer_limit.to_string(),
        |c, v| {
            c.limits.client_output_buffer_limit = bytes(v)?;
            Ok(())
        }
    ),
    param!("metrics.addr", |c| c.metrics.addr.clone()),
    param!(
        "metrics.max_connections",
        |c| c.metrics.max_connections.to_string(),
        |c, v| {
            c.metrics.max_connections = num(v)?;
            Ok(())
        }
    ),
    param!(
        "metrics.timeout_ms",
        |c| c.metrics.timeout_ms.to_string(),
        |c, v| {
            c.metrics.timeout_ms = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.max_tenants",
        |c| c.tenancy.max_tenants.to_string(),
        |c, v| {
            c.tenancy.max_tenants = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.default_maxmemory",
        |c| c.tenancy.default_maxmemory.to_string(),
        |c, v| {
            c.tenancy.default_maxmemory = bytes(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.default_maxkeys",
        |c| c.tenancy.default_maxkeys.to_string(),
        |c, v| {
            c.tenancy.default_maxkeys = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.default_ops",
        |c| c.tenancy.default_ops.to_string(),
        |c, v| {
            c.tenancy.default_ops = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.default_maxclients",
        |c| c.tenancy.default_maxclients.to_string(),
        |c, v| {
            c.tenancy.default_maxclients = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.throttle_max_delay_ms",
        |c| c.tenancy.throttle_max_delay_ms.to_string(),
        |c, v| {
            c.tenancy.throttle_max_delay_ms = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.enabled",
        |c| yes_no(c.tenancy.migration.enabled),
        |c, v| {
            c.tenancy.migration.enabled = boolean(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.max_concurrent",
        |c| c.tenancy.migration.max_concurrent.to_string(),
        |c, v| {
            c.tenancy.migration.max_concurrent = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.default_mode",
        |c| c.tenancy.migration.default_mode.clone(),
        |c, v| {
            c.tenancy.migration.default_mode = v.to_string();
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.sync_timeout_secs",
        |c| c.tenancy.migration.sync_timeout_secs.to_string(),
        |c, v| {
            c.tenancy.migration.sync_timeout_secs = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.reconnect_timeout_secs",
        |c| c.tenancy.migration.reconnect_timeout_secs.to_string(),
        |c, v| {
            c.tenancy.migration.reconnect_timeout_secs = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.cutover_max_lag",
        |c| c.tenancy.migration.cutover_max_lag.to_string(),
        |c, v| {
            c.tenancy.migration.cutover_max_lag = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.max_bandwidth_bytes_per_sec",
        |c| c.tenancy.migration.max_bandwidth_bytes_per_sec.to_string(),
        |c, v| {
            c.tenancy.migration.max_bandwidth_bytes_per_sec = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.require_approval",
        |c| yes_no(c.tenancy.migration.require_approval),
        |c, v| {
            c.tenancy.migration.require_approval = boolean(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.contention.enabled",
        |c| yes_no(c.tenancy.migration.contention.enabled),
        |c, v| {
            c.tenancy.migration.contention.enabled = boolean(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.contention.p99_ms",
        |c| c.tenancy.migration.contention.p99_ms.to_string(),
        |c, v| {
            c.tenancy.migration.contention.p99_ms = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.contention.cpu_percent",
        |c| c.tenancy.migration.contention.cpu_percent.to_string(),
        |c, v| {
            c.tenancy.migration.contention.cpu_percent = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.dns.on_failure",
        |c| c.tenancy.migration.dns.on_failure.clone(),
        |c, v| {
            c.tenancy.migration.dns.on_failure = v.to_string();
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.after_requires",
        |c| c.tenancy.migration.after_requires.clone(),
        |c, v| {
            c.tenancy.migration.after_requires = v.to_string();
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.parallel_sync",
        |c| c.tenancy.migration.parallel_sync.to_string(),
        |c, v| {
            c.tenancy.migration.parallel_sync = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.batch_size",
        |c| c.tenancy.migration.batch_size.to_string(),
        |c, v| {
            c.tenancy.migration.batch_size = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.activation_timeout_ms",
        |c| c.tenancy.migration.activation_timeout_ms.to_string(),
        |c, v| {
            c.tenancy.migration.activation_timeout_ms = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.history_max",
        |c| c.tenancy.migration.history_max.to_string(),
        |c, v| {
            c.tenancy.migration.history_max = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.retention_secs",
        |c| c.tenancy.migration.retention_secs.to_string(),
        |c, v| {
            c.tenancy.migration.retention_secs = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.rollback_retention_secs",
        |c| c.tenancy.migration.rollback_retention_secs.to_string(),
        |c, v| {
            c.tenancy.migration.rollback_retention_secs = num(v)?;
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.client_handling.redirect_mode",
        |c| c.tenancy.migration.client_handling.redirect_mode.clone(),
        |c, v| {
            c.tenancy.migration.client_handling.redirect_mode = v.to_string();
            Ok(())
        }
    ),
    param!(
        "tenancy.migration.client_handling.redirect_timeout_ms",
        |c| c
            .tenancy
            .migration
            .client_handling
            .redirect_timeout_ms
            .to_string(),
        |c, v| {
            c.tenancy.migration.client_handling.redirect_timeout_ms = num(v)?;
            Ok(())
        }
    ),
    encoding!("hash-max-listpack-entries", hash_max_listpack_entries),
    encoding!("hash-max-ziplist-entries", hash_max_listpack_entries),
    encoding!("hash-max-listpack-value", hash_max_listpack_value),
    encoding!("hash-max-ziplist-value", hash_max_listpack_value),
    encoding!("set-max-intset-entries", set_max_intset_entries),
    encoding!("set-max-listpack-entries", set_max_listpack_entries),
    encoding!("set-max-listpack-value", set_max_listpack_value),
    encoding!("zset-max-listpack-entries", zset_max_listpack_entries),
    encoding!("zset-max-ziplist-entries", zset_max_listpack_entries),
    encoding!("zset-max-listpack-value", zset_max_listpack_value),
    encoding!("zset-max-ziplist-value", zset_max_listpack_value),
    encoding!("list-max-listpack-size", list_max_listpack_size),
    encoding!("list-max-ziplist-size", list_max_listpack_size),
    encoding!("list-compress-depth", list_compress_depth),
    // A memory value in Redis ("4kb" is accepted).
    param!(
        "stream-node-max-bytes",
        |c| c.encoding.stream_node_max_bytes.to_string(),
        |c, v| {
            let n: u64 = bytes(v)?;
            c.encoding.stream_node_max_bytes =
                i64::try_from(n).map_err(|_| "argument must be a memory value".to_string())?;
            Ok(())
        }
    ),
    encoding!("stream-node-max-entries", stream_node_max_entries),
];

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// Applies `CONFIG SET name value [name value ...]` atomically: all or nothing.
pub fn set(sh: &Shared, pairs: Args<'_>) -> Result<(), ErrorReply> {
    let mut cfg = sh.config.read().clone();
    let mut seen: Vec<String> = Vec::new();
    for i in (0..pairs.len()).step_by(2) {
        let name = pairs.text(i).to_ascii_lowercase();
        let value = pairs.text(i + 1);
        if seen.contains(&name) {
            return Err(ErrorReply::err(format!(
                "CONFIG SET failed (possibly related to argument '{name}') - duplicate parameter"
            )));
        }
        seen.push(name.clone());
        let fail = |why: String| {
            ErrorReply::err(format!(
                "CONFIG SET failed (possibly related to argument '{name}') - {why}"
            ))
        };
        let Some(p) = PARAMS.iter().find(|p| p.name == name) else {
            return Err(ErrorReply::err(format!(
                "Unknown option or number of arguments for CONFIG SET - '{name}'"
            )));
        };
        let Some(setter) = p.set else {
            return Err(fail("can't set immutable config".into()));
        };
        setter(&mut cfg, &value).map_err(fail)?;
    }
    if let Err((key, why)) = cfg.validate() {
        return Err(ErrorReply::err(format!(
            "CONFIG SET failed (possibly related to argument '{key}') - {why}"
        )));
    }
    let old_level = sh.config.read().log.level.clone();
    if cfg.log.level != old_level
        && let Some(f) = &sh.set_log_level
    {
        f(&cfg.log.level).map_err(|e| {
            ErrorReply::err(format!(
                "CONFIG SET failed (possibly related to argument 'loglevel') - {e}"
            ))
        })?;
    }
    sh.hot.load(&cfg);
    sh.migrations.update_settings(cfg.migration_settings());
    if let Some(p) = &sh.persistence {
        let next = cfg.persistence.settings();
        p.update_settings(|s| {
            s.appendfsync = next.appendfsync;
            s.save = next.save;
            s.auto_compact_percentage = next.auto_compact_percentage;
            s.auto_compact_min_size = next.auto_compact_min_size;
        });
    }
    sh.registry.update_settings(|s| {
        s.max_tenants = cfg.tenancy.max_tenants;
        s.default_limits.maxmemory = cfg.tenancy.default_maxmemory;
        s.default_limits.maxkeys = cfg.tenancy.default_maxkeys;
        s.default_limits.ops = cfg.tenancy.default_ops;
        s.default_limits.maxclients = cfg.tenancy.default_maxclients;
        s.throttle_max_delay_ms = cfg.tenancy.throttle_max_delay_ms;
    });
    *sh.config.write() = cfg;
    Ok(())
}
