//! The Ferrite server.
//!
//! Layout:
//! - [`config`]: `ferrite.toml`, defaults, validation, errors naming key and line.
//! - [`server`]: listener, accept loop, maxclients, background work, graceful shutdown;
//!   [`start`] runs a server inside any tokio runtime (the binary, tests, doctests).
//! - `admin_secret`: the generated administrator secret used without `requirepass`.
//! - [`auth_limit`]: failed AUTH attempts limited per client address.
//! - [`connection`]: one client: parse, run in order, write replies; per-connection state.
//! - [`dispatch`]: the one place that decides whether a command may run (auth, admin, MULTI,
//!   ownership → MOVED/TRYAGAIN, throttle, write gate, quotas) and runs it.
//! - [`input`]: how much a connection reads from its socket at a time.
//! - [`blocking`]: clients waiting in BLPOP & co. (they hold no lock and no thread).
//! - [`pubsub`]: per-tenant channels, subscribers' mailboxes, PUBLISH/SUBSCRIBE/PUBSUB.
//! - [`cmd`]: server-level commands (HELLO, AUTH, CLIENT, CONFIG, INFO, MULTI/EXEC, ...).
//! - [`errors`]: the one place where typed errors become RESP error text.
//! - `outline`: awaiting rare futures without inlining their code into the hot paths.
//! - [`info`], [`metrics`], [`stats`]: INFO sections, the Prometheus endpoint, the counters both
//!   read.
//!
//! Data commands and their semantics live in `ferrite-commands`, tenancy in `ferrite-tenancy`.

pub mod acl_log;
mod admin_secret;
pub mod auth_limit;
pub mod backup;
pub mod blocking;
pub mod client_memory;
pub mod cmd;
pub mod config;
pub mod config_params;
pub mod connection;
pub mod contention;
pub mod diagnostics;
pub mod dispatch;
pub mod errors;
mod hooks;
pub mod idle_spin;
pub mod info;
pub mod input;
pub mod metrics;
mod migration_info;
pub mod offload;
mod outline;
pub mod pubsub;
pub mod scripting;
pub mod server;
pub mod shared;
pub mod stats;
pub mod timefmt;

pub use config::Config;
pub use server::{ServerHandle, StartOptions, start};

/// The migration token of servers started by [`start_for_tests`]: they trust each other, as
/// servers of one cluster sharing `tenancy.migration.token` do.
pub const TEST_MIGRATION_TOKEN: &str = "ferrite-in-process-test-token";

/// Starts a server on a free loopback port with default settings and metrics off: for tests,
/// examples and doctests. It writes no file: its administrator secret is random and kept in
/// memory ([`ServerHandle::admin_secret`]), and it shares [`TEST_MIGRATION_TOKEN`] with the
/// other servers started this way so that they can migrate tenants to each other.
pub async fn start_for_tests() -> anyhow::Result<ServerHandle> {
    let mut cfg = Config::default();
    cfg.server.port = 0;
    cfg.metrics.addr = "off".into();
    cfg.tenancy.migration.token = TEST_MIGRATION_TOKEN.into();
    // In-process servers share one working directory: they keep nothing on disk.
    cfg.persistence.enabled = false;
    let opts = StartOptions {
        admin_secret: Some(admin_secret::generate()),
        ..StartOptions::default()
    };
    start(cfg, opts).await
}
