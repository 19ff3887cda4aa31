//! `ferrite.toml`: the configuration file, its embedded defaults, validation with errors that
//! name the key and line, and command-line overrides.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration. Every field has a default, so an empty file (or none) is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub tenancy: TenancyConfig,
    pub persistence: PersistenceConfig,
    pub backup: BackupConfig,
    pub encoding: EncodingConfig,
    pub commands: CommandsConfig,
}

/// How commands are run and observed: Redis's slow log, latency monitor and the HyperLogLog and
/// scripting parameters of the same names (with `_` for `-`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// Commands that take at least this many microseconds are recorded in the tenant's slow
    /// log; 0 records every command, a negative value none (Redis: slowlog-log-slower-than).
    pub slowlog_log_slower_than: i64,
    /// Entries each tenant's slow log keeps (Redis: slowlog-max-len).
    pub slowlog_max_len: u64,
    /// Entries each tenant's ACL log keeps (Redis: acllog-max-len); 0 keeps none.
    pub acllog_max_len: u64,
    /// Commands that take at least this many milliseconds are recorded by the latency monitor;
    /// 0 disables it (Redis: latency-monitor-threshold).
    pub latency_monitor_threshold: u64,
    /// A sparse HyperLogLog larger than this many bytes becomes dense (Redis:
    /// hll-sparse-max-bytes).
    pub hll_sparse_max_bytes: u64,
    /// Milliseconds a script may run before other clients get -BUSY (Redis:
    /// busy-reply-threshold, alias lua-time-limit).
    pub busy_reply_threshold: u64,
    /// Redis's min-replicas-to-write: writes need this many connected replicas. Ferrite has
    /// none, so any value above 0 refuses writes with `-NOREPLICAS` (as a Redis primary whose
    /// replicas are all gone); 0, the default, never does.
    pub min_replicas_to_write: u64,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            slowlog_log_slower_than: 10_000,
            slowlog_max_len: 128,
            acllog_max_len: 128,
            latency_monitor_threshold: 0,
            hll_sparse_max_bytes: ferrite_commands::settings::DEFAULT_HLL_SPARSE_MAX_BYTES as u64,
            busy_reply_threshold: 5000,
            min_replicas_to_write: 0,
        }
    }
}

/// Thresholds of the compact encodings (Redis's parameters of the same names, with `_` for
/// `-`): a hash, set or sorted set past them is converted to its full structure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncodingConfig {
    pub hash_max_listpack_entries: i64,
    pub hash_max_listpack_value: i64,
    pub set_max_intset_entries: i64,
    pub set_max_listpack_entries: i64,
    pub set_max_listpack_value: i64,
    pub zset_max_listpack_entries: i64,
    pub zset_max_listpack_value: i64,
    pub list_max_listpack_size: i64,
    pub list_compress_depth: i64,
    pub stream_node_max_bytes: i64,
    pub stream_node_max_entries: i64,
}

impl Default for EncodingConfig {
    fn default() -> Self {
        let d = |name| ferrite_storage::encoding::limit(name).map_or(0, |l| l.default);
        EncodingConfig {
            hash_max_listpack_entries: d("hash-max-listpack-entries"),
            hash_max_listpack_value: d("hash-max-listpack-value"),
            set_max_intset_entries: d("set-max-intset-entries"),
            set_max_listpack_entries: d("set-max-listpack-entries"),
            set_max_listpack_value: d("set-max-listpack-value"),
            zset_max_listpack_entries: d("zset-max-listpack-entries"),
            zset_max_listpack_value: d("zset-max-listpack-value"),
            list_max_listpack_size: d("list-max-listpack-size"),
            list_compress_depth: d("list-compress-depth"),
            stream_node_max_bytes: d("stream-node-max-bytes"),
            stream_node_max_entries: d("stream-node-max-entries"),
        }
    }
}

impl EncodingConfig {
    /// Each threshold with its Redis name, for validation and for applying them.
    pub fn by_name(&self) -> [(&'static str, i64); 11] {
        [
            ("hash-max-listpack-entries", self.hash_max_listpack_entries),
            ("hash-max-listpack-value", self.hash_max_listpack_value),
            ("set-max-intset-entries", self.set_max_intset_entries),
            ("set-max-listpack-entries", self.set_max_listpack_entries),
            ("set-max-listpack-value", self.set_max_listpack_value),
            ("zset-max-listpack-entries", self.zset_max_listpack_entries),
            ("zset-max-listpack-value", self.zset_max_listpack_value),
            ("list-max-listpack-size", self.list_max_listpack_size),
            ("list-compress-depth", self.list_compress_depth),
            ("stream-node-max-bytes", self.stream_node_max_bytes),
            ("stream-node-max-entries", self.stream_node_max_entries),
        ]
    }

    /// The field behind a Redis name (or its `ziplist` alias).
    pub fn field_mut(&mut self, name: &str) -> Option<&mut i64> {
        let canonical = ferrite_storage::encoding::limit(name)?.name;
        Some(match canonical {
            "hash-max-listpack-entries" => &mut self.hash_max_listpack_entries,
            "hash-max-listpack-value" => &mut self.hash_max_listpack_value,
            "set-max-intset-entries" => &mut self.set_max_intset_entries,
            "set-max-listpack-entries" => &mut self.set_max_listpack_entries,
            "set-max-listpack-value" => &mut self.set_max_listpack_value,
            "zset-max-listpack-entries" => &mut self.zset_max_listpack_entries,
            "zset-max-listpack-value" => &mut self.zset_max_listpack_value,
            "list-max-listpack-size" => &mut self.list_max_listpack_size,
            "list-compress-depth" => &mut self.list_compress_depth,
            "stream-node-max-bytes" => &mut self.stream_node_max_bytes,
            "stream-node-max-entries" => &mut self.stream_node_max_entries,
            _ => return None,
        })
    }

    /// Makes these thresholds the ones values convert by (process-wide, like Redis's).
    pub fn apply(&self) {
        for (name, v) in self.by_name() {
            if let Some(l) = ferrite_storage::encoding::limit(name) {
                l.set(v);
            }
        }
    }
}

// Debug by hand (below): it must never print `requirepass`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: String,
    pub port: u16,
    /// Password of the administrator (`AUTH <pw>` / `AUTH default <pw>`). When set, every
    /// connection must authenticate (as administrator or as a tenant), as in Redis. Empty: the
    /// administrator secret is the one in `admin_secret_file`, and unauthenticated connections
    /// from loopback addresses may use the `default` tenant (never administer).
    pub requirepass: String,
    /// Where the generated administrator secret is kept when `requirepass` is empty: created at
    /// first start (random, mode 0600), read on later starts. Empty = `admin.secret` in the data
    /// directory.
    pub admin_secret_file: String,
    pub maxclients: usize,
    /// Close a connection idle (nothing received) for this many seconds; 0 = never (Redis's
    /// `timeout`).
    pub timeout: u64,
    /// Worker threads; 0 = automatic: all cores but one, at least one ([`Config::worker_threads`]).
    pub threads: usize,
    /// Microseconds a worker spins before it sleeps waiting for the network, backing off while
    /// the spins do not pay ([`crate::idle_spin`]); 0 = sleep at once.
    pub idle_spin_us: u64,
    /// How long SHUTDOWN/SIGTERM waits for connections to finish their replies.
    pub shutdown_timeout_ms: u64,
    /// Failed AUTH attempts (wrong password, secret or token) one client address may make
    /// before its attempts are refused for a while: 100 ms after the next failure, doubling
    /// with each further one up to `auth_block_max_ms` (see [`crate::auth_limit`]). 0 = no
    /// limit.
    pub auth_failure_limit: u32,
    /// The longest an address's AUTH attempts are refused after a failure.
    pub auth_block_max_ms: u64,
}

/// What a secret shows in `{:?}`: whether it is set, never its value.
fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() { "" } else { "<redacted>" }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so that a new field cannot be forgotten here.
        let ServerConfig {
            bind,
            port,
            requirepass,
            admin_secret_file,
            maxclients,
            timeout,
            threads,
            idle_spin_us,
            shutdown_timeout_ms,
            auth_failure_limit,
            auth_block_max_ms,
        } = self;
        f.debug_struct("ServerConfig")
            .field("bind", bind)
            .field("port", port)
            .field("requirepass", &redacted(requirepass))
            .field("admin_secret_file", admin_secret_file)
            .field("maxclients", maxclients)
            .field("timeout", timeout)
            .field("threads", threads)
            .field("idle_spin_us", idle_spin_us)
            .field("shutdown_timeout_ms", shutdown_timeout_ms)
            .field("auth_failure_limit", auth_failure_limit)
            .field("auth_block_max_ms", auth_block_max_ms)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1".into(),
            port: 6379,
            requirepass: String::new(),
            admin_secret_file: String::new(),
            maxclients: 10_000,
            timeout: 0,
            threads: 0,
            idle_spin_us: 20,
            shutdown_timeout_ms: 10_000,
            auth_failure_limit: 10,
            auth_block_max_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest bulk string in a request (Redis `proto-max-bulk-len`).
    pub max_bulk_len: u64,
    /// Most arguments in one request.
    pub max_args: usize,
    /// The server-wide cap on tenant data (Redis's `maxmemory`, policy `noeviction`): a write
    /// that would take the data of all tenants together past it is refused with Redis's `-OOM`,
    /// on top of each tenant's own quota; reads and deletes keep working. 0 = no cap.
    pub maxmemory: u64,
    /// Redis's `client-query-buffer-limit`: a client that has sent more than this many bytes
    /// of a request it has not finished is disconnected (at least 1 MB, as in Redis).
    pub client_query_buffer_limit: u64,
    /// A client whose pending replies exceed this many bytes is disconnected; 0 = no limit.
    pub client_output_buffer_limit: u64,
    /// All clients' pending replies and input buffers over 32 KB together (Redis's
    /// `maxmemory-clients`): the client whose reply or request would take the total past it
    /// is disconnected; 0 = no limit.
    pub maxmemory_clients: u64,
    /// A subscriber with more undelivered pub/sub messages than this many bytes is
    /// disconnected (Redis's `client-output-buffer-limit pubsub` hard limit); 0 = no limit.
    pub pubsub_output_buffer_limit: u64,
    /// A subscriber that stays above this many undelivered bytes for longer than
    /// `pubsub_output_buffer_soft_seconds` is disconnected (Redis's soft limit); 0 = none.
    pub pubsub_output_buffer_soft_limit: u64,
    pub pubsub_output_buffer_soft_seconds: u64,
    /// The `replica` class of `client-output-buffer-limit` ("hard soft seconds"): kept so that
    /// CONFIG GET answers what CONFIG SET set; Ferrite has no replicas for it to apply to.
    pub replica_output_buffer_limit: String,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_bulk_len: 512 * 1024 * 1024,
            max_args: 4 * 1024 * 1024,
            maxmemory: 0,
            client_query_buffer_limit: 1024 * 1024 * 1024,
            client_output_buffer_limit: 1024 * 1024 * 1024,
            maxmemory_clients: 1024 * 1024 * 1024,
            pubsub_output_buffer_limit: 32 * 1024 * 1024,
            pubsub_output_buffer_soft_limit: 8 * 1024 * 1024,
            pubsub_output_buffer_soft_seconds: 60,
            replica_output_buffer_limit: "268435456 67108864 60".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// trace, debug, info, warn or error (or a tracing filter such as `ferrite_server=debug`).
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` of the Prometheus endpoint (`/metrics`), or `off`.
    pub addr: String,
    /// At most this many tenants get their own `tenant` label; the rest are summed as `_other`.
    pub max_labelled_tenants: usize,
    /// Connections the endpoint serves at once; more are closed as soon as they are accepted,
    /// so that strangers cannot hold its sockets (or the process's file descriptors).
    pub max_connections: usize,
    /// A connection must send its request and take the whole reply within this many
    /// milliseconds, or it is closed (slow HTTP clients cannot hold a slot for longer).
    pub timeout_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            addr: "127.0.0.1:9121".into(),
            max_labelled_tenants: 100,
            max_connections: 16,
            timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersistenceConfig {
    /// Keep data on disk (off: a cache that starts empty).
    pub enabled: bool,
    /// Data directory, relative to the working directory; created when missing.
    pub dir: String,
    /// `always`, `everysec` or `no` (Redis's appendfsync).
    pub appendfsync: String,
    /// Snapshot every tenant after <seconds> if at least <changes> writes happened, as pairs
    /// (Redis's `save`); empty: only on SAVE/BGSAVE and by log size.
    pub save: String,
    /// Compact a tenant's log into a new snapshot once it has grown by this percentage of the
    /// last snapshot (Redis's auto-aof-rewrite-percentage); 0 = never.
    pub auto_compact_percentage: u64,
    /// ... and is at least this many bytes (auto-aof-rewrite-min-size).
    pub auto_compact_min_size: u64,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            enabled: true,
            dir: "data".into(),
            appendfsync: "everysec".into(),
            save: "3600 1 300 100 60 10000".into(),
            auto_compact_percentage: 100,
            auto_compact_min_size: 64 * 1024 * 1024,
        }
    }
}

/// `[backup]`: where TENANT.BACKUP writes, and scheduled backups (docs/backup.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Directory of backup files; empty = `backups` under the data directory.
    pub dir: String,
    /// Back up every tenant every this many seconds (native format); 0 = no scheduled backups.
    pub interval_secs: u64,
    /// Scheduled backups kept per tenant (older ones are deleted); 0 = keep them all. Backups
    /// taken with TENANT.BACKUP are never deleted by the schedule.
    pub retention: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            dir: String::new(),
            interval_secs: 0,
            retention: 7,
        }
    }
}

impl PersistenceConfig {
    /// Parses `save`: pairs of positive numbers.
    pub fn save_points(&self) -> Result<Vec<(u64, u64)>, String> {
        let words: Vec<&str> = self.save.split_whitespace().collect();
        if !words.len().is_multiple_of(2) {
            return Err(format!(
                "'{}' is not pairs of <seconds> <changes>",
                self.save
            ));
        }
        words
            .chunks(2)
            .map(|p| match (p[0].parse::<u64>(), p[1].parse::<u64>()) {
                (Ok(a), Ok(b)) if a > 0 => Ok((a, b)),
                _ => Err(format!(
                    "'{}' is not pairs of <seconds> <changes>",
                    self.save
                )),
            })
            .collect()
    }

    /// The settings the persistence crate runs with.
    pub fn settings(&self) -> ferrite_persistence::Settings {
        ferrite_persistence::Settings {
            dir: std::path::PathBuf::from(&self.dir),
            appendfsync: ferrite_persistence::FsyncPolicy::parse(&self.appendfsync)
                .unwrap_or(ferrite_persistence::FsyncPolicy::Everysec),
            save: self.save_points().unwrap_or_default(),
            auto_compact_percentage: self.auto_compact_percentage,
            auto_compact_min_size: self.auto_compact_min_size,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenancyConfig {
    pub max_tenants: usize,
    /// Defaults for TENANT.CREATE; 0 = unlimited.
    pub default_maxmemory: u64,
    pub default_maxkeys: u64,
    pub default_ops: u64,
    pub default_maxclients: u64,
    /// Longest a throttled command waits before it is refused.
    pub throttle_max_delay_ms: u64,
    pub migration: MigrationConfig,
}

impl Default for TenancyConfig {
    fn default() -> Self {
        TenancyConfig {
            max_tenants: 1000,
            default_maxmemory: 0,
            default_maxkeys: 0,
            default_ops: 0,
            default_maxclients: 0,
            throttle_max_delay_ms: 1000,
            migration: MigrationConfig::default(),
        }
    }
}

// Debug by hand (below): it must never print `token`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationConfig {
    pub enabled: bool,
    pub max_concurrent: usize,
    /// `live`, `fast` or `incremental`.
    pub default_mode: String,
    /// Target side: an import whose source sends nothing (not even its heartbeat) this long is
    /// dropped.
    pub sync_timeout_secs: u64,
    /// Source side: a migration whose target stays unreachable this long fails (its checkpoint
    /// kept for RESUME); `TENANT.MIGRATE ... TIMEOUT` overrides it.
    pub reconnect_timeout_secs: u64,
    /// Most undelivered changed keys a cutover accepts without FORCE.
    pub cutover_max_lag: u64,
    pub parallel_sync: usize,
    pub batch_size: usize,
    /// Shared secret servers present to each other for TENANT.IMPORT.*; empty = use the target's
    /// requirepass given with AUTH, or none.
    pub token: String,
    /// How long the source keeps the frozen copy after a cutover.
    pub retention_secs: u64,
    /// How long the old source stays a backup after a cutover (the new owner streams the
    /// tenant's changes back, so TENANT.MIGRATE.ROLLBACK is instant) unless TENANT.MIGRATE says
    /// RETENTION; 0 turns backups off.
    pub rollback_retention_secs: u64,
    /// How long a cutover keeps asking the target to activate before it reports the cutover
    /// incomplete (the tenant then waits, unwritable, for CUTOVER RETRY or CANCEL).
    pub activation_timeout_ms: u64,
    pub target_validation: TargetValidationConfig,
    pub client_handling: ClientHandlingConfig,
    /// Enables TENANT.MIGRATE.DEBUG breakpoints for fault-injection tests. Never in production.
    pub fault_injection: bool,
    /// Bytes per second all running migrations ship together (0 = no limit), shared by the
    /// weight of their PRIORITY (high 4, normal 2, low 1).
    pub max_bandwidth_bytes_per_sec: u64,
    /// Every migration waits in `awaiting_approval` with its plan until TENANT.MIGRATE.APPROVE.
    pub require_approval: bool,
    /// `completed` or `verified`: what a migration named by AFTER must reach before its
    /// dependents start.
    pub after_requires: String,
    /// Where CUTOVER DNS sends its signed dynamic update.
    pub dns: DnsConfig,
    /// When running migrations slow down for this server's own clients.
    pub contention: ContentionConfig,
    /// Finished migrations whose records are kept (STATUS after a restart); the oldest beyond
    /// are dropped from the catalog. Unfinished ones are always kept.
    pub history_max: usize,
}

impl std::fmt::Debug for MigrationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let MigrationConfig {
            enabled,
            max_concurrent,
            default_mode,
            sync_timeout_secs,
            reconnect_timeout_secs,
            cutover_max_lag,
            parallel_sync,
            batch_size,
            token,
            retention_secs,
            rollback_retention_secs,
            activation_timeout_ms,
            target_validation,
            client_handling,
            fault_injection,
            max_bandwidth_bytes_per_sec,
            require_approval,
            after_requires,
            dns,
            contention,
            history_max,
        } = self;
        f.debug_struct("MigrationConfig")
            .field("enabled", enabled)
            .field("max_concurrent", max_concurrent)
            .field("default_mode", default_mode)
            .field("sync_timeout_secs", sync_timeout_secs)
            .field("reconnect_timeout_secs", reconnect_timeout_secs)
            .field("cutover_max_lag", cutover_max_lag)
            .field("parallel_sync", parallel_sync)
            .field("batch_size", batch_size)
            .field("token", &redacted(token))
            .field("retention_secs", retention_secs)
            .field("rollback_retention_secs", rollback_retention_secs)
            .field("activation_timeout_ms", activation_timeout_ms)
            .field("target_validation", target_validation)
            .field("client_handling", client_handling)
            .field("fault_injection", fault_injection)
            .field("max_bandwidth_bytes_per_sec", max_bandwidth_bytes_per_sec)
            .field("require_approval", require_approval)
            .field("after_requires", after_requires)
            .field("dns", dns)
            .field("contention", contention)
            .field("history_max", history_max)
            .finish()
    }
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            enabled: true,
            max_concurrent: 5,
            default_mode: "live".into(),
            sync_timeout_secs: 3600,
            reconnect_timeout_secs: 60,
            cutover_max_lag: 1000,
            parallel_sync: 4,
            batch_size: 1000,
            token: String::new(),
            retention_secs: 3600,
            rollback_retention_secs: 3600,
            activation_timeout_ms: 30_000,
            target_validation: TargetValidationConfig::default(),
            client_handling: ClientHandlingConfig::default(),
            fault_injection: false,
            max_bandwidth_bytes_per_sec: 0,
            require_approval: false,
            after_requires: "completed".into(),
            dns: DnsConfig::default(),
            contention: ContentionConfig::default(),
            history_max: ferrite_tenancy::migration::DEFAULT_HISTORY_MAX,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetValidationConfig {
    pub verify_connectivity: bool,
    pub verify_authentication: bool,
    pub verify_capacity: bool,
    pub verify_version: bool,
}

impl Default for TargetValidationConfig {
    fn default() -> Self {
        TargetValidationConfig {
            verify_connectivity: true,
            verify_authentication: true,
            verify_capacity: true,
            verify_version: true,
        }
    }
}

/// `[tenancy.migration.dns]`: the DNS server CUTOVER DNS updates (RFC 2136, signed with TSIG).
/// Debug by hand (below): it must never print `key_secret`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// The zone's primary server, an IP address; empty: CUTOVER DNS is refused.
    pub server: String,
    pub port: u16,
    /// The zone the names are in.
    pub zone: String,
    /// The TSIG key's name, algorithm (`hmac-sha256`, `hmac-sha384`, `hmac-sha512`) and secret
    /// (base64, as `tsig-keygen` and `keymgr` print it).
    pub key_name: String,
    pub key_algorithm: String,
    pub key_secret: String,
    /// TTL of the record set, in seconds.
    pub ttl: u32,
    /// `abort`: a failed update stops the cutover before the hand-over; `warn`: the cutover goes
    /// on and the failure is reported.
    pub on_failure: String,
    /// How long to wait for the server's answer (it is asked twice).
    pub timeout_ms: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            server: String::new(),
            port: 53,
            zone: String::new(),
            key_name: String::new(),
            key_algorithm: "hmac-sha256".into(),
            key_secret: String::new(),
            ttl: 60,
            on_failure: "abort".into(),
            timeout_ms: 2000,
        }
    }
}

impl std::fmt::Debug for DnsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let DnsConfig {
            server,
            port,
            zone,
            key_name,
            key_algorithm,
            key_secret,
            ttl,
            on_failure,
            timeout_ms,
        } = self;
        f.debug_struct("DnsConfig")
            .field("server", server)
            .field("port", port)
            .field("zone", zone)
            .field("key_name", key_name)
            .field("key_algorithm", key_algorithm)
            .field("key_secret", &redacted(key_secret))
            .field("ttl", ttl)
            .field("on_failure", on_failure)
            .field("timeout_ms", timeout_ms)
            .finish()
    }
}

impl DnsConfig {
    /// The settings the tenancy crate runs with (checked by `validate` first).
    fn settings(&self) -> ferrite_tenancy::migration::dns::DnsSettings {
        use ferrite_tenancy::migration::dns::{DnsSettings, OnDnsFailure};
        DnsSettings {
            server: self
                .server
                .parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| std::net::SocketAddr::new(ip, self.port)),
            zone: self.zone.clone(),
            key_name: self.key_name.clone(),
            key_algorithm: self.key_algorithm.clone(),
            key_secret: data_encoding::BASE64
                .decode(self.key_secret.trim().as_bytes())
                .unwrap_or_default(),
            ttl: self.ttl,
            on_failure: OnDnsFailure::parse(&self.on_failure).unwrap_or_default(),
            timeout: std::time::Duration::from_millis(self.timeout_ms),
        }
    }

    /// The first thing wrong, as (key, message).
    fn check(&self) -> Result<(), (&'static str, String)> {
        use ferrite_tenancy::migration::dns::{OnDnsFailure, algorithm};
        if OnDnsFailure::parse(&self.on_failure).is_none() {
            return Err((
                "tenancy.migration.dns.on_failure",
                format!("'{}' is not one of: abort, warn", self.on_failure),
            ));
        }
        if algorithm(&self.key_algorithm).is_none() {
            return Err((
                "tenancy.migration.dns.key_algorithm",
                format!(
                    "'{}' is not one of: hmac-sha256, hmac-sha384, hmac-sha512",
                    self.key_algorithm
                ),
            ));
        }
        if self.timeout_ms == 0 {
            return Err((
                "tenancy.migration.dns.timeout_ms",
                "must be at least 1".into(),
            ));
        }
        if self.server.is_empty() {
            return Ok(());
        }
        if self.server.parse::<std::net::IpAddr>().is_err() {
            return Err((
                "tenancy.migration.dns.server",
                format!("'{}' is not an IP address", self.server),
            ));
        }
        if self.port == 0 {
            return Err(("tenancy.migration.dns.port", "must not be 0".into()));
        }
        if self.zone.is_empty() {
            return Err((
                "tenancy.migration.dns.zone",
                "must be set when server is".into(),
            ));
        }
        if self.key_name.is_empty() {
            return Err((
                "tenancy.migration.dns.key_name",
                "must be set when server is: updates are signed with TSIG".into(),
            ));
        }
        match data_encoding::BASE64.decode(self.key_secret.trim().as_bytes()) {
            Ok(k) if !k.is_empty() => Ok(()),
            // Never echo the secret in the error.
            _ => Err((
                "tenancy.migration.dns.key_secret",
                "must be the key's secret in base64 (as tsig-keygen prints it)".into(),
            )),
        }
    }
}

/// `[tenancy.migration.contention]`: automatic contention management.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentionConfig {
    pub enabled: bool,
    /// Threshold on this server's p99 command latency over the window, in milliseconds.
    pub p99_ms: f64,
    /// Threshold on this process's CPU use, in percent of all cores.
    pub cpu_percent: f64,
    /// The window latency and CPU are measured over.
    pub window_secs: u64,
}

impl Default for ContentionConfig {
    fn default() -> Self {
        ContentionConfig {
            enabled: true,
            p99_ms: 10.0,
            cpu_percent: 90.0,
            window_secs: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientHandlingConfig {
    /// `automatic`: after cutover, clients get `-MOVED tenant:<id> <addr>` (or `-REDIRECT <addr>`
    /// after `CLIENT CAPA redirect`). `error`: they get a plain `-ERR` naming the new address.
    pub redirect_mode: String,
    /// How long a write waits at a closed cutover gate before it is answered `-TRYAGAIN`.
    pub redirect_timeout_ms: u64,
}

impl Default for ClientHandlingConfig {
    fn default() -> Self {
        ClientHandlingConfig {
            redirect_mode: "automatic".into(),
            redirect_timeout_ms: 5000,
        }
    }
}

/// A configuration error that says where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = self
            .file
            .as_ref()
            .map_or_else(|| "configuration".to_string(), |p| p.display().to_string());
        match self.line {
            Some(l) => write!(f, "{file}, line {l}: `{}`: {}", self.key, self.message),
            None => write!(f, "{file}: `{}`: {}", self.key, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses TOML text; errors name the key and the line.
    pub fn parse(text: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
        let de = toml::de::Deserializer::parse(text).map_err(|e| ConfigError {
            file: file.map(Path::to_path_buf),
            key: String::new(),
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().trim().to_string(),
        })?;
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            ConfigError {
                file: file.map(Path::to_path_buf),
                line: inner
                    .span()
                    .map(|s| line_of(text, s.start))
                    .or_else(|| locate_key(text, &key)),
                key,
                message: inner.message().trim().to_string(),
            }
        })?;
        cfg.validate().map_err(|(key, message)| ConfigError {
            file: file.map(Path::to_path_buf),
            line: locate_key(text, &key),
            key,
            message,
        })?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            key: String::new(),
            line: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Config::parse(&text, Some(path))
    }

    /// Checks values the types alone cannot; returns (key, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((k.to_string(), m));
        if self.server.bind.parse::<IpAddr>().is_err() && self.server.bind != "localhost" {
            return err(
                "server.bind",
                format!("'{}' is not an IP address", self.server.bind),
            );
        }
        if self.server.maxclients == 0 {
            return err("server.maxclients", "must be at least 1".into());
        }
        if self.metrics.max_connections == 0 {
            return err("metrics.max_connections", "must be at least 1".into());
        }
        if self.metrics.timeout_ms == 0 {
            return err("metrics.timeout_ms", "must be at least 1".into());
        }
        if self.limits.max_bulk_len < 1024 {
            return err("limits.max_bulk_len", "must be at least 1024".into());
        }
        if self.limits.client_query_buffer_limit < crate::client_memory::MIN_QUERY_BUFFER_LIMIT {
            return err(
                "limits.client_query_buffer_limit",
                "must be at least 1048576 (1 MB)".into(),
            );
        }
        if self.limits.max_args < 16 {
            return err("limits.max_args", "must be at least 16".into());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return err(
                "log.format",
                format!("'{}' is not one of: text, json", self.log.format),
            );
        }
        if let Err(e) = log_filter(&self.log.level) {
            return err("log.level", e);
        }
        if self.metrics.addr != "off" && self.metrics.addr.parse::<std::net::SocketAddr>().is_err()
        {
            return err(
                "metrics.addr",
                format!("'{}' is not host:port or off", self.metrics.addr),
            );
        }
        let p = &self.persistence;
        if ferrite_persistence::FsyncPolicy::parse(&p.appendfsync).is_none() {
            return err(
                "persistence.appendfsync",
                format!("'{}' is not one of: always, everysec, no", p.appendfsync),
            );
        }
        if p.dir.is_empty() {
            return err("persistence.dir", "must not be empty".into());
        }
        if let Err(e) = p.save_points() {
            return err("persistence.save", e);
        }
        for (name, v) in self.encoding.by_name() {
            if let Some(l) = ferrite_storage::encoding::limit(name)
                && (v < l.min || v > l.max)
            {
                return err(
                    &format!("encoding.{}", name.replace('-', "_")),
                    format!("must be between {} and {}", l.min, l.max),
                );
            }
        }
        let m = &self.tenancy.migration;
        if !matches!(
            m.default_mode.as_str(),
            "live" | "fast" | "incremental" | "continuous"
        ) {
            return err(
                "tenancy.migration.default_mode",
                format!(
                    "'{}' is not one of: live, fast, incremental, continuous",
                    m.default_mode
                ),
            );
        }
        let c = &m.contention;
        if !(c.p99_ms.is_finite() && c.p99_ms > 0.0) {
            return err(
                "tenancy.migration.contention.p99_ms",
                "must be a number above 0".into(),
            );
        }
        if !(c.cpu_percent.is_finite() && c.cpu_percent > 0.0 && c.cpu_percent <= 100.0) {
            return err(
                "tenancy.migration.contention.cpu_percent",
                "must be above 0 and at most 100".into(),
            );
        }
        if c.window_secs == 0 || c.window_secs > 3600 {
            return err(
                "tenancy.migration.contention.window_secs",
                "must be between 1 and 3600".into(),
            );
        }
        if let Err((key, why)) = m.dns.check() {
            return err(key, why);
        }
        if ferrite_tenancy::AfterRequires::parse(&m.after_requires).is_none() {
            return err(
                "tenancy.migration.after_requires",
                format!("'{}' is not one of: completed, verified", m.after_requires),
            );
        }
        if m.max_concurrent == 0 {
            return err(
                "tenancy.migration.max_concurrent",
                "must be at least 1".into(),
            );
        }
        if m.reconnect_timeout_secs == 0 {
            return err(
                "tenancy.migration.reconnect_timeout_secs",
                "must be at least 1 (a migration would fail at the first dropped connection)"
                    .into(),
            );
        }
        if m.parallel_sync == 0 || m.parallel_sync > 64 {
            return err(
                "tenancy.migration.parallel_sync",
                "must be between 1 and 64".into(),
            );
        }
        if m.batch_size == 0 || m.batch_size > 100_000 {
            return err(
                "tenancy.migration.batch_size",
                "must be between 1 and 100000".into(),
            );
        }
        if !matches!(
            m.client_handling.redirect_mode.as_str(),
            "automatic" | "error"
        ) {
            return err(
                "tenancy.migration.client_handling.redirect_mode",
                format!(
                    "'{}' is not one of: automatic, error",
                    m.client_handling.redirect_mode
                ),
            );
        }
        Ok(())
    }

    /// The migration settings the tenancy crate runs with.
    pub fn migration_settings(&self) -> ferrite_tenancy::MigrationSettings {
        let m = &self.tenancy.migration;
        ferrite_tenancy::MigrationSettings {
            enabled: m.enabled,
            max_concurrent: m.max_concurrent,
            sync_timeout: std::time::Duration::from_secs(m.sync_timeout_secs),
            reconnect_timeout: std::time::Duration::from_secs(m.reconnect_timeout_secs),
            redirect_timeout: std::time::Duration::from_millis(
                m.client_handling.redirect_timeout_ms,
            ),
            cutover_max_lag: m.cutover_max_lag,
            token: (!m.token.is_empty()).then(|| m.token.clone()),
            retention: std::time::Duration::from_secs(m.retention_secs),
            rollback_retention: std::time::Duration::from_secs(m.rollback_retention_secs),
            activation_timeout: std::time::Duration::from_millis(m.activation_timeout_ms),
            fault_injection: m.fault_injection,
            max_bandwidth: m.max_bandwidth_bytes_per_sec,
            require_approval: m.require_approval,
            after_requires: ferrite_tenancy::AfterRequires::parse(&m.after_requires)
                .unwrap_or_default(),
            dns: m.dns.settings(),
            history_max: m.history_max,
            contention: ferrite_tenancy::ContentionSettings {
                enabled: m.contention.enabled,
                p99: m.contention.p99_ms / 1000.0,
                cpu: m.contention.cpu_percent / 100.0,
                window: std::time::Duration::from_secs(m.contention.window_secs),
            },
            validation: ferrite_tenancy::migration::validate::ValidationSettings {
                connectivity: m.target_validation.verify_connectivity,
                authentication: m.target_validation.verify_authentication,
                capacity: m.target_validation.verify_capacity,
                version: m.target_validation.verify_version,
            },
        }
    }

    /// The worker threads to run: `server.threads`, or for 0 [`auto_worker_threads`] of this
    /// machine's cores.
    pub fn worker_threads(&self) -> usize {
        match self.server.threads {
            0 => auto_worker_threads(std::thread::available_parallelism().map_or(1, |n| n.get())),
            n => n,
        }
    }

    /// The directory the server keeps its files in (the administrator secret; persistence's
    /// files): `persistence.dir`.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(&self.persistence.dir)
    }

    /// Where the generated administrator secret lives (used only without `requirepass`).
    pub fn admin_secret_path(&self) -> PathBuf {
        if self.server.admin_secret_file.is_empty() {
            self.data_dir().join("admin.secret")
        } else {
            PathBuf::from(&self.server.admin_secret_file)
        }
    }

    /// The admin password, if one is set.
    pub fn requirepass(&self) -> Option<&str> {
        (!self.server.requirepass.is_empty()).then_some(self.server.requirepass.as_str())
    }

    pub fn listen_addr(&self) -> String {
        let host = if self.server.bind == "localhost" {
            "127.0.0.1"
        } else {
            &self.server.bind
        };
        if host.contains(':') {
            format!("[{host}]:{}", self.server.port)
        } else {
            format!("{host}:{}", self.server.port)
        }
    }
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Finds the line that sets a dotted key (e.g. `tenancy.migration.batch_size`), following
/// `[section]` headers.
fn locate_key(text: &str, key: &str) -> Option<usize> {
    let (section, leaf) = match key.rsplit_once('.') {
        Some((s, l)) => (s, l),
        None => ("", key),
    };
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = h.trim().to_string();
            continue;
        }
        if let Some((k, _)) = line.split_once('=') {
            let k = k.trim();
            let full = if current.is_empty() {
                k.to_string()
            } else {
                format!("{current}.{k}")
            };
            if full == key || (current == section && k == leaf) {
                return Some(i + 1);
            }
        }
    }
    None
}

/// The default worker count for a machine of `cores` cores: all cores but one, at least one.
/// At P=1 most of a request's cost is the kernel's network work, done on the cores of the
/// sending and receiving threads, and a server also runs its fsync, snapshot and blocking-pool
/// threads: a spare core takes those instead of preempting a worker. One worker (2 cores) runs
/// on the current-thread scheduler, which needs less CPU per request than one or two workers
/// on the multi-thread scheduler (docs/benchmarks.md, "What limits each row", 2026-12-04
/// 21:00); long commands, scripts past their slice and migration drains leave the worker, so
/// one busy tenant does not stall the others.
pub fn auto_worker_threads(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

/// Reads a log level as Redis names them (`debug`, `verbose`, `notice`, `warning`, `nothing`) or
/// as tracing does (`trace`, `debug`, `info`, `warn`, `error`, `off`), or a tracing filter whose
/// every directive ends in such a level (`ferrite_tenancy=debug,info`). Returns the tracing
/// filter. A bare word that is not a level is refused: tracing would read `debgu` as a target
/// name and silently log nothing.
pub fn log_filter(level: &str) -> Result<String, String> {
    fn one(l: &str) -> Option<&'static str> {
        Some(match l.to_ascii_lowercase().as_str() {
            "trace" => "trace",
            "debug" | "verbose" => "debug",
            "info" | "notice" => "info",
            "warn" | "warning" => "warn",
            "error" => "error",
            "off" | "nothing" => "off",
            _ => return None,
        })
    }
    let bad = || {
        format!(
            "'{level}' is not a log level (trace, debug, verbose, info, notice, warn, warning, error, off, nothing) or a filter of target=level directives"
        )
    };
    let mut out = Vec::new();
    for d in level.split(',').map(str::trim) {
        let directive = match d.split_once('=') {
            Some((target, l)) if !target.is_empty() => {
                format!("{target}={}", one(l).ok_or_else(bad)?)
            }
            Some(_) => return Err(bad()),
            None => one(d).ok_or_else(bad)?.to_string(),
        };
        out.push(directive);
    }
    let filter = out.join(",");
    tracing_subscriber::EnvFilter::try_new(&filter).map_err(|_| bad())?;
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret() {
        let mut c = Config::default();
        c.server.requirepass = "sekrit-admin-pass".into();
        c.tenancy.migration.token = "sekrit-migration-token".into();
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn shipped_file_equals_embedded_defaults() {
        let text = include_str!("../../../ferrite.toml");
        let cfg = Config::parse(text, None).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn automatic_workers_are_all_cores_but_one_and_never_none() {
        assert_eq!(auto_worker_threads(0), 1);
        assert_eq!(auto_worker_threads(1), 1);
        assert_eq!(
            auto_worker_threads(2),
            1,
            "one worker: the current-thread scheduler"
        );
        assert_eq!(auto_worker_threads(3), 2);
        assert_eq!(auto_worker_threads(64), 63);
        let mut cfg = Config::default();
        assert_eq!(cfg.server.threads, 0, "the default is automatic");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(cfg.worker_threads(), auto_worker_threads(cores));
        cfg.server.threads = 3;
        assert_eq!(cfg.worker_threads(), 3, "a set count is used as given");
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = Config::parse("[server]\nport = 1\nprot = 2\n", None).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("prot"), "{e}");

        let e = Config::parse("[server]\n\nport = \"abc\"\n", None).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("server.port", Some(3)), "{e}");

        let e = Config::parse(
            "[tenancy.migration]\nbatch_size = 0\n",
            Some(Path::new("x.toml")),
        )
        .unwrap_err();
        assert_eq!(e.key, "tenancy.migration.batch_size");
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().starts_with("x.toml, line 2:"), "{e}");

        let e = Config::parse("[server\n", None).unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");

        // tracing would take "debgu" for a target name and log nothing: refused.
        let e = Config::parse("[log]\nlevel = \"debgu\"\n", None).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("log.level", Some(2)), "{e}");

        // Redis's lower bound for client-query-buffer-limit holds in the file too.
        let e = Config::parse("[limits]\nclient_query_buffer_limit = 1000\n", None).unwrap_err();
        assert_eq!(e.key, "limits.client_query_buffer_limit", "{e}");
    }

    #[test]
    fn every_migration_mode_can_be_the_default() {
        for mode in ["live", "fast", "incremental", "continuous"] {
            let text = format!("[tenancy.migration]\ndefault_mode = \"{mode}\"\n");
            let cfg = Config::parse(&text, None).unwrap();
            assert_eq!(cfg.tenancy.migration.default_mode, mode);
        }
        let e = Config::parse("[tenancy.migration]\ndefault_mode = \"slow\"\n", None).unwrap_err();
        assert_eq!(e.key, "tenancy.migration.default_mode");
        assert!(e.message.contains("continuous"), "{e}");
    }

    #[test]
    fn log_levels_in_redis_and_tracing_words() {
        assert_eq!(log_filter("verbose").as_deref(), Ok("debug"));
        assert_eq!(log_filter("warning").as_deref(), Ok("warn"));
        assert_eq!(log_filter("nothing").as_deref(), Ok("off"));
        assert_eq!(
            log_filter("ferrite_tenancy=debug, notice").as_deref(),
            Ok("ferrite_tenancy=debug,info")
        );
        for bad in ["debgu", "loud", "=debug", "x=loud", ""] {
            assert!(log_filter(bad).is_err(), "{bad}");
        }
    }
}
