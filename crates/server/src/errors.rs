//! The one place where typed errors from the library crates become RESP error text.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ferrite_protocol::ErrorReply;
use ferrite_tenancy::{PatternSplit, QuotaExceeded, TenancyError, Tenant};

use crate::connection::ClientState;
use crate::shared::Shared;

/// A migration-token login ran something other than TENANT.IMPORT.*.
pub fn migration_peer_only(cmd: &str) -> ErrorReply {
    ErrorReply::coded(
        "NOPERM",
        format!(
            "this connection has no permission to run the '{cmd}' command (migration peers may only run TENANT.IMPORT.*)"
        ),
    )
}

pub fn no_permission(cmd: &str) -> ErrorReply {
    ErrorReply::coded(
        "NOPERM",
        format!(
            "this connection has no permission to run the '{cmd}' command (administrators only)"
        ),
    )
}

/// The answer to a command for a tenant that now lives on another server.
pub fn moved(st: &ClientState, sh: &Shared, tenant: &Tenant) -> ErrorReply {
    let addr = tenant.moved_to().unwrap_or_else(|| "unknown".into());
    if sh.hot.redirect_as_error.load(Relaxed) {
        return ErrorReply::err(format!("tenant '{}' has moved to {addr}", tenant.id()));
    }
    if st.capa_redirect {
        ErrorReply::redirect(&addr)
    } else {
        ErrorReply::moved_tenant(tenant.id(), &addr)
    }
}

/// The answer to a command whose keys all belong to patterns an incremental migration has
/// moved to the other server: `-MOVED tenant:<id>:key <addr>`, a redirect for this command only
/// (ferrite-client sends it there and stays where it is; the tenant's other keys are still
/// served here). Clients that do not know the form see a plain error naming the address.
pub fn key_moved(
    st: &ClientState,
    sh: &Shared,
    tenant: &Tenant,
    split: &PatternSplit,
    key: &[u8],
) -> ErrorReply {
    let addr = &split.peer;
    if sh.hot.redirect_as_error.load(Relaxed) {
        return ErrorReply::err(format!(
            "key '{}' of tenant '{}' is served by {addr} (pattern '{}' has moved there)",
            printable(key),
            tenant.id(),
            split.name(split.pattern_of(key))
        ));
    }
    if st.capa_redirect {
        ErrorReply::redirect(addr)
    } else {
        ErrorReply::moved_key(tenant.id(), addr)
    }
}

/// Keys on both servers of an incremental migration (Redis's `-CROSSSLOT`, per server).
pub fn cross_server(
    tenant: &Tenant,
    split: &PatternSplit,
    here: usize,
    there: usize,
) -> ErrorReply {
    ErrorReply::coded(
        "CROSSSLOT",
        format!(
            "Keys in request don't belong to the same server: tenant '{}' is migrating pattern by pattern ({}); pattern '{}' is served by {} and pattern '{}' by this server",
            tenant.id(),
            split.migration,
            split.name(there),
            split.peer,
            split.name(here)
        ),
    )
}

/// A command without keys (KEYS, SCAN, DBSIZE, FLUSHDB...) while the keyspace is split.
pub fn whole_keyspace_split(command: &str, tenant: &Tenant, split: &PatternSplit) -> ErrorReply {
    ErrorReply::coded(
        "CROSSSLOT",
        format!(
            "'{command}' needs the whole keyspace, which is split between this server and {} while tenant '{}' migrates pattern by pattern ({}); run it after the migration completes",
            split.peer,
            tenant.id(),
            split.migration
        ),
    )
}

/// A script reached (without declaring it) a key served by the other server.
pub fn script_key_elsewhere(tenant: &Tenant, split: &PatternSplit, pattern: usize) -> ErrorReply {
    ErrorReply::err(format!(
        "Script attempted to access a key of tenant '{}' served by {} (pattern '{}' has moved there, {}); declare the keys the script uses",
        tenant.id(),
        split.peer,
        split.name(pattern),
        split.migration
    ))
}

/// A key as error text: one line, printable, bounded.
fn printable(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[..key.len().min(128)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub fn throttled(tenant: &Tenant, wait: Duration, max: Duration) -> ErrorReply {
    ErrorReply::coded(
        "THROTTLED",
        format!(
            "tenant '{}' exceeds its limit of {} ops/s: the command would wait {} ms (limit {} ms)",
            tenant.id(),
            tenant.limits().ops,
            wait.as_millis(),
            max.as_millis()
        ),
    )
}

/// Redis's own words for a write refused by a memory limit (clients and tools match on them);
/// the numbers are in TENANT.INFO and INFO memory.
pub fn out_of_memory() -> ErrorReply {
    ErrorReply::coded("OOM", "command not allowed when used memory > 'maxmemory'.")
}

pub fn quota(tenant: &Tenant, q: &QuotaExceeded) -> ErrorReply {
    match q {
        QuotaExceeded::Memory { .. } => out_of_memory(),
        QuotaExceeded::Keys { keys, limit } => ErrorReply::coded(
            "OOM",
            format!(
                "command not allowed: tenant '{}' would exceed its key limit (keys {keys}, maxkeys {limit})",
                tenant.id()
            ),
        ),
    }
}

pub fn tenancy(e: &TenancyError) -> ErrorReply {
    match e {
        TenancyError::WrongPass => ErrorReply::wrong_pass(),
        // A change that could not be made durable was not made (Redis's MISCONF family).
        TenancyError::Persist(_) => ErrorReply::coded("MISCONF", e),
        other => ErrorReply::err(other),
    }
}

/// Writes refused while persistence cannot write (Redis's `-MISCONF` for AOF errors).
pub fn misconf(sh: &Shared) -> ErrorReply {
    let why = sh
        .persistence
        .as_ref()
        .map_or_else(|| "persistence failed".to_string(), |p| p.error_text());
    ErrorReply::coded("MISCONF", why)
}

/// A command refused by the connection's ACL user's rules (Redis 7.2's texts; 7.0's suite
/// matches `*NOPERM*<command>*`, `*NOPERM*key*`, `*NOPERM*channel*`).
pub fn acl_denied(user: &str, denied: &ferrite_tenancy::acl::Denied) -> ErrorReply {
    use ferrite_tenancy::acl::Denied;
    match denied {
        Denied::Command(cmd) => ErrorReply::coded(
            "NOPERM",
            format!("User {user} has no permissions to run the '{cmd}' command"),
        ),
        Denied::Key(_) => ErrorReply::coded("NOPERM", "No permissions to access a key"),
        Denied::Channel(_) => ErrorReply::coded("NOPERM", "No permissions to access a channel"),
    }
}

/// A queued command the user's rules refuse at EXEC (they changed since it was queued):
/// Redis's text.
pub fn acl_denied_at_exec(denied: &ferrite_tenancy::acl::Denied) -> ErrorReply {
    use ferrite_tenancy::acl::Denied;
    let reason = match denied {
        Denied::Command(_) => "no permission to execute the command or subcommand",
        Denied::Key(_) => "no permission to touch the specified keys",
        Denied::Channel(_) => "no permission to access one of the channels used as arguments",
    };
    ErrorReply::coded(
        "NOPERM",
        format!(
            "ACLs rules changed between the moment the transaction was accumulated and the EXEC call. This command is no longer allowed for the following reason: {reason}"
        ),
    )
}

/// ACL DRYRUN's answer for a refused command (Redis's verbose texts, a plain string).
pub fn acl_denied_verbose(denied: &ferrite_tenancy::acl::Denied) -> String {
    use ferrite_tenancy::acl::Denied;
    match denied {
        Denied::Command(cmd) => format!("This user has no permissions to run the '{cmd}' command"),
        Denied::Key(k) => format!(
            "This user has no permissions to access the '{}' key",
            String::from_utf8_lossy(k)
        ),
        Denied::Channel(c) => format!(
            "This user has no permissions to access the '{}' channel",
            String::from_utf8_lossy(c)
        ),
    }
}

/// ACL SETUSER/DELUSER refusals.
pub fn acl(e: &ferrite_tenancy::acl::AclError) -> ErrorReply {
    ErrorReply::err(e)
}
