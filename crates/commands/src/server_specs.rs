//! Connection- and server-level commands. They are run by the server (they touch connection
//! state, configuration or tenancy); the table entries here give them arity, flags and help.

use crate::spec::flags::*;
use crate::spec::{ALL_KEYS, CommandSpec, Creates, Handler, NO_KEYS, spec};

const fn srv(
    name: &'static str,
    arity: i32,
    flags: u32,
    group: &'static str,
    summary: &'static str,
) -> CommandSpec {
    spec(
        name,
        arity,
        flags,
        NO_KEYS,
        Creates::Nothing,
        group,
        summary,
        Handler::Server,
    )
}

#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    srv("ping", -1, FAST | CONNECTION | STALE, "connection", "Returns the server's liveliness response."),
    srv("echo", 2, FAST | CONNECTION, "connection", "Returns the given string."),
    srv("quit", -1, NO_AUTH | CONNECTION | FAST, "connection", "Closes the connection."),
    srv("hello", -1, NO_AUTH | CONNECTION | FAST | NO_MULTI, "connection", "Handshakes with the server: protocol version, authentication, client name."),
    srv("auth", -2, NO_AUTH | CONNECTION | FAST | NO_MULTI, "connection", "Authenticates the connection, binding it to a tenant when a tenant name is given."),
    srv("select", 2, FAST | CONNECTION, "connection", "Changes the selected database (only database 0 exists)."),
    srv("client", -2, CONNECTION, "connection", "Connection management: ID, SETNAME, GETNAME, SETINFO, LIST, KILL, CAPA, INFO."),
    srv("reset", 1, NO_AUTH | CONNECTION | FAST | NO_MULTI, "connection", "Resets the connection."),
    srv("command", -1, CONNECTION | LOADING | STALE, "server", "Returns information about commands: COUNT, INFO, DOCS, LIST."),
    srv("config", -2, ADMIN | CONNECTION, "server", "Gets or sets configuration parameters."),
    srv("info", -1, CONNECTION | LOADING | STALE, "server", "Returns information and statistics about the server."),
    srv("time", 1, FAST | CONNECTION | LOADING | STALE, "server", "Returns the server time."),
    srv("shutdown", -1, ADMIN | CONNECTION | NO_MULTI | LOADING | STALE, "server", "Stops accepting connections, finishes in-flight replies and exits."),
    srv("multi", 1, FAST | NO_MULTI, "transactions", "Starts a transaction."),
    srv("exec", 1, NO_MULTI, "transactions", "Executes all commands in a transaction."),
    srv("discard", 1, FAST | NO_MULTI, "transactions", "Discards a transaction."),
    spec("watch", -2, FAST | NO_MULTI, ALL_KEYS, Creates::Nothing, "transactions", "Monitors changes to keys to determine the execution of a transaction.", Handler::Server),
    srv("unwatch", 1, FAST, "transactions", "Forgets about watched keys of a transaction."),
    srv("tenant.create", -2, ADMIN | CONNECTION | NO_MULTI, "tenancy", "Creates a tenant: TENANT.CREATE <id> [PASSWORD pw] [MAXMEMORY bytes] [MAXKEYS n] [OPS n]."),
    srv("tenant.delete", -2, ADMIN | CONNECTION | NO_MULTI, "tenancy", "Deletes a tenant and frees its data: TENANT.DELETE <id> [FORCE]."),
    srv("tenant.list", 1, ADMIN | CONNECTION, "tenancy", "Lists tenants with their state, size, limits and clients."),
    srv("tenant.info", 2, CONNECTION, "tenancy", "Describes one tenant (a tenant connection may describe only its own)."),
    srv("tenant.use", 2, ADMIN | CONNECTION | NO_MULTI, "tenancy", "Binds this administrator connection to a tenant."),
    srv("tenant.current", 1, CONNECTION | FAST, "tenancy", "Returns the tenant this connection is bound to."),
    srv("tenant.throttle", 4, ADMIN | CONNECTION, "tenancy", "Limits a tenant's commands per second: TENANT.THROTTLE <id> OPS <n> (0 lifts it)."),
    srv("tenant.limits", -2, ADMIN | CONNECTION, "tenancy", "Changes a tenant's quotas: TENANT.LIMITS <id> [MAXMEMORY bytes] [MAXKEYS n] [OPS n] [PASSWORD pw]."),
    srv("tenant.suspend", 2, ADMIN | CONNECTION, "tenancy", "Suspends a tenant: its commands are refused until TENANT.RESUME."),
    srv("tenant.resume", 2, ADMIN | CONNECTION, "tenancy", "Resumes a suspended tenant."),
    srv("tenant.digest", -2, ADMIN | CONNECTION, "tenancy", "Order-independent checksum of a tenant's content, per bucket and combined: TENANT.DIGEST <id> [FULL]."),
    srv("tenant.migrate", -4, ADMIN | CONNECTION | NO_MULTI, "migration", "Starts moving a tenant to another server: TENANT.MIGRATE <tenant> TARGET <host:port> [MODE live|fast] [PARALLEL n] [BATCH_SIZE n] [TIMEOUT s] [RATE bytes-per-sec] [AUTH password] [REDIRECT client-facing-host:port]."),
    srv("tenant.migrate.status", 2, ADMIN | CONNECTION, "migration", "Progress, lag and phase of a migration: TENANT.MIGRATE.STATUS <id>|ALL."),
    srv("tenant.migrate.pause", 2, ADMIN | CONNECTION, "migration", "Stops shipping changes (they are still captured): TENANT.MIGRATE.PAUSE <id>."),
    srv("tenant.migrate.resume", 2, ADMIN | CONNECTION, "migration", "Resumes a paused migration: TENANT.MIGRATE.RESUME <id>."),
    srv("tenant.migrate.cancel", 2, ADMIN | CONNECTION | NO_MULTI, "migration", "Cancels a migration before cutover; the target drops what it staged: TENANT.MIGRATE.CANCEL <id>."),
    srv("tenant.migrate.cutover", -2, ADMIN | CONNECTION | NO_MULTI, "migration", "Switches the tenant to the target after a brief write pause: TENANT.MIGRATE.CUTOVER <id> [FORCE] | RETRY [FORCE] | SCHEDULED <RFC3339> [FORCE] | UNSCHEDULE."),
    srv("tenant.migrate.validate", -4, ADMIN | CONNECTION | NO_MULTI, "migration", "Checks a target before migrating: TENANT.MIGRATE.VALIDATE <tenant> TARGET <host:port> [AUTH password]."),
    srv("tenant.migrate.debug", -3, ADMIN | CONNECTION, "migration", "Fault injection for tests (needs tenancy.migration.fault_injection): TENANT.MIGRATE.DEBUG <id> BREAK <point> | CONTINUE | WAITING."),
    srv("tenant.migrate.verify", 2, ADMIN | CONNECTION | NO_MULTI, "migration", "Compares source and target by digest and by a sample of keys: TENANT.MIGRATE.VERIFY <id>."),
    srv("tenant.migrate.update", -4, ADMIN | CONNECTION, "migration", "Changes a running migration: TENANT.MIGRATE.UPDATE <id> [PARALLEL n] [BATCH_SIZE n] [RATE bytes-per-sec]."),
    srv("tenant.import.check", 4, CONNECTION | NO_MULTI, "migration", "Internal: checks that this server can take a tenant."),
    srv("tenant.import.begin", -6, CONNECTION | NO_MULTI, "migration", "Internal: opens an import of a migrating tenant."),
    srv("tenant.import.batch", 3, CONNECTION | NO_MULTI, "migration", "Internal: applies one checksummed batch of a migration."),
    srv("tenant.import.resume", 2, CONNECTION | NO_MULTI, "migration", "Internal: last applied batch per stream of an import."),
    srv("tenant.import.prepare", 2, CONNECTION | NO_MULTI, "migration", "Internal: key count and digest of a staged import."),
    srv("tenant.import.activate", 2, CONNECTION | NO_MULTI, "migration", "Internal: makes an imported tenant live here."),
    srv("tenant.import.abort", 2, CONNECTION | NO_MULTI, "migration", "Internal: drops a staged import."),
    srv("tenant.import.status", 2, CONNECTION | NO_MULTI, "migration", "Internal: state and activation digest of an import."),
    srv("tenant.import.fetch", -3, CONNECTION | NO_MULTI, "migration", "Internal: canonical values of keys of an import, for VERIFY."),
];
