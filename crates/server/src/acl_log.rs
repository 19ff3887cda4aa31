//! The ACL log (ACL LOG), kept per tenant as Redis 7.2 keeps its one log: commands, keys and
//! channels an ACL user was refused, and failed logins. A tenant sees only its own entries.
//!
//! Failed logins are logged for the tenant they tried: `AUTH <tenant> <wrong>` and
//! `AUTH <tenant>:<user> <wrong>` for that tenant, `AUTH <user> <wrong>` (a user of `default`)
//! for `default` when `default` has that user. Failed logins that name no tenant's user — the
//! administrator's secret, the migration peer's token, `<unknown-tenant>:<user>`, a plain name
//! that is nobody's (perhaps a password typed in the wrong field) — are logged in `default`'s
//! log as well but shown only to administrators (they reveal who probes the server, and a
//! client of `default` is no administrator). Failed logins are rate-limited per address before
//! they reach the log ([`crate::auth_limit`]): an address past its limit is refused unchecked,
//! and nothing is logged.
//!
//! The log is in memory only (as Redis's) and bounded: at most `acllog-max-len` entries per
//! tenant, each field at most [`MAX_FIELD`] bytes, and only tenants that exist have one
//! (TENANT.DELETE drops it). Similar entries within 60 s are merged (their count grows).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use std::sync::atomic::Ordering::Relaxed;

use ferrite_tenancy::acl::Denied;
use parking_lot::Mutex;

use crate::shared::{ClientInfo, Shared, Viewer};

/// Redis's ACL_LOG_GROUPING_MAX_TIME_DELTA: entries this close (ms) may be merged.
const GROUPING_MS: u64 = 60_000;
/// Redis looks for a similar entry among the newest 10 only.
const SCANNED: usize = 10;
/// Longest object, user name or client description kept (a user name is whatever a client typed
/// in AUTH, a key can be as long as a request allows): longer ones are cut.
pub const MAX_FIELD: usize = 512;

/// Why an entry was logged (`reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Command,
    Key,
    Channel,
    Auth,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Command => "command",
            Reason::Key => "key",
            Reason::Channel => "channel",
            Reason::Auth => "auth",
        }
    }

    pub fn of(denied: &Denied) -> (Reason, &[u8]) {
        match denied {
            Denied::Command(name) => (Reason::Command, name.as_bytes()),
            Denied::Key(k) => (Reason::Key, k),
            Denied::Channel(c) => (Reason::Channel, c),
        }
    }
}

/// Where the refused command came from (`context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Toplevel,
    /// Queued in MULTI, or checked again at EXEC.
    Multi,
    /// A script's `redis.call` / `redis.pcall`.
    Lua,
}

impl Context {
    pub fn name(self) -> &'static str {
        match self {
            Context::Toplevel => "toplevel",
            Context::Multi => "multi",
            Context::Lua => "lua",
        }
    }
}

/// What to log.
#[derive(Debug, Clone)]
pub struct Denial {
    pub reason: Reason,
    pub context: Context,
    /// The command (`config|get` for a subcommand), key or channel; for a failed login the
    /// command that tried (AUTH or HELLO, as the client typed it).
    pub object: Vec<u8>,
    pub username: String,
    /// The connection as CLIENT LIST describes it to whoever may read the entry.
    pub client_info: String,
    /// Shown to administrators only (see the module's documentation).
    pub admin_only: bool,
}

/// One entry of a tenant's log.
#[derive(Debug, Clone)]
pub struct Entry {
    pub denial: Denial,
    pub count: u64,
    /// Counts the tenant's entries from 0 (Redis 7.2's `entry-id`).
    pub entry_id: u64,
    /// Unix ms of the first and the latest occurrence.
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl Entry {
    /// Redis's ACLLogMatchEntry: same reason, context, object and user, within 60 s; entries
    /// shown to different audiences are never merged.
    fn matches(&self, d: &Denial, now_ms: u64) -> bool {
        let e = &self.denial;
        e.reason == d.reason
            && e.context == d.context
            && e.admin_only == d.admin_only
            && now_ms.abs_diff(self.updated_ms) <= GROUPING_MS
            && e.object == d.object
            && e.username == d.username
    }
}

#[derive(Default)]
struct TenantLog {
    /// Newest first.
    entries: VecDeque<Entry>,
    next_id: u64,
}

/// Every tenant's ACL log, by tenant id.
#[derive(Default)]
pub struct AclLog {
    logs: Mutex<HashMap<Arc<str>, TenantLog>>,
}

/// `s` cut to at most [`MAX_FIELD`] bytes (on a character boundary).
fn bounded(mut s: String) -> String {
    if s.len() > MAX_FIELD {
        let mut end = MAX_FIELD;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl AclLog {
    /// Logs `d` for `tenant`: merged into a similar recent entry (which becomes the newest), or
    /// added, the oldest entries beyond `max_len` dropped. `max_len` 0 logs nothing.
    pub fn record(&self, tenant: &str, mut d: Denial, max_len: usize, now_ms: u64) {
        if max_len == 0 {
            self.forget(tenant);
            return;
        }
        d.object.truncate(MAX_FIELD);
        d.username = bounded(std::mem::take(&mut d.username));
        d.client_info = bounded(std::mem::take(&mut d.client_info));
        let mut logs = self.logs.lock();
        let log = match logs.get_mut(tenant) {
            Some(l) => l,
            None => logs.entry(Arc::from(tenant)).or_default(),
        };
        let similar = log
            .entries
            .iter()
            .take(SCANNED)
            .position(|e| e.matches(&d, now_ms));
        if let Some(mut e) = similar.and_then(|i| log.entries.remove(i)) {
            e.count += 1;
            e.updated_ms = now_ms;
            e.denial.client_info = d.client_info;
            log.entries.push_front(e);
        } else {
            let entry_id = log.next_id;
            log.next_id += 1;
            log.entries.push_front(Entry {
                denial: d,
                count: 1,
                entry_id,
                created_ms: now_ms,
                updated_ms: now_ms,
            });
        }
        log.entries.truncate(max_len);
    }

    /// The newest `count` entries of `tenant` that the reader may see (administrators: all),
    /// at most `max_len` (a smaller `acllog-max-len` applies at once).
    pub fn entries(&self, tenant: &str, count: usize, admin: bool, max_len: usize) -> Vec<Entry> {
        let mut logs = self.logs.lock();
        let Some(log) = logs.get_mut(tenant) else {
            return Vec::new();
        };
        log.entries.truncate(max_len);
        log.entries
            .iter()
            .filter(|e| admin || !e.denial.admin_only)
            .take(count)
            .cloned()
            .collect()
    }

    /// ACL LOG RESET: empties the entries the reader may see (a tenant's client cannot erase
    /// what only administrators see). Entry ids keep counting, as Redis's do.
    pub fn reset(&self, tenant: &str, admin: bool) {
        if let Some(log) = self.logs.lock().get_mut(tenant) {
            log.entries.retain(|e| !admin && e.denial.admin_only);
        }
    }

    /// Drops a tenant's log (TENANT.DELETE; a new tenant of the same name starts empty).
    pub fn forget(&self, tenant: &str) {
        self.logs.lock().remove(tenant);
    }
}

fn max_len(sh: &Shared) -> usize {
    usize::try_from(sh.hot.acllog_max_len.load(Relaxed)).unwrap_or(usize::MAX)
}

/// Logs the command, key or channel an ACL user of `tenant` was refused.
pub fn log_denied(
    sh: &Shared,
    tenant: &str,
    client: &ClientInfo,
    user: &str,
    denied: &Denied,
    context: Context,
) {
    let (reason, object) = Reason::of(denied);
    let d = Denial {
        reason,
        context,
        object: object.to_vec(),
        username: user.to_string(),
        client_info: client.describe_to_tenant(tenant),
        admin_only: false,
    };
    sh.acl_log
        .record(tenant, d, max_len(sh), ferrite_storage::now_ms());
}

/// Logs a failed login (a wrong password, or a user that does not exist or is disabled) for
/// the tenant it tried, or for administrators only (see the module's documentation).
pub fn log_failed_login(
    sh: &Shared,
    tenant: &str,
    admin_only: bool,
    client: &ClientInfo,
    username: &[u8],
    command: &[u8],
    context: Context,
) {
    let client_info = if admin_only {
        client.describe(&Viewer {
            admin: true,
            tenant,
            id: client.id,
        })
    } else {
        client.describe_to_tenant(tenant)
    };
    let d = Denial {
        reason: Reason::Auth,
        context,
        object: command.to_vec(),
        username: String::from_utf8_lossy(&username[..username.len().min(MAX_FIELD)]).into_owned(),
        client_info,
        admin_only,
    };
    sh.acl_log
        .record(tenant, d, max_len(sh), ferrite_storage::now_ms());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(object: &str, user: &str) -> Denial {
        Denial {
            reason: Reason::Command,
            context: Context::Toplevel,
            object: object.as_bytes().to_vec(),
            username: user.into(),
            client_info: "id=1".into(),
            admin_only: false,
        }
    }

    #[test]
    fn similar_entries_merge_within_a_minute_only() {
        let log = AclLog::default();
        log.record("t", denial("get", "u"), 128, 1_000);
        log.record("t", denial("get", "u"), 128, 50_000);
        let e = log.entries("t", 10, false, 128);
        assert_eq!((e.len(), e[0].count, e[0].created_ms), (1, 2, 1_000));
        // 60 s after the last occurrence: merged; past that, a new entry.
        log.record("t", denial("get", "u"), 128, 110_000);
        log.record("t", denial("get", "u"), 128, 170_001);
        let e = log.entries("t", 10, false, 128);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].count, e[0].entry_id), (1, 1));
        assert_eq!((e[1].count, e[1].entry_id), (3, 0));
        // A different object, user or context is a different entry.
        log.record("t", denial("set", "u"), 128, 170_002);
        log.record("t", denial("set", "v"), 128, 170_003);
        let mut lua = denial("set", "v");
        lua.context = Context::Lua;
        log.record("t", lua, 128, 170_004);
        assert_eq!(log.entries("t", 100, false, 128).len(), 5);
    }

    #[test]
    fn bounded_per_tenant_and_in_field_size() {
        let log = AclLog::default();
        for i in 0..1000 {
            log.record("t", denial(&format!("k{i}"), &"u".repeat(10_000)), 3, i);
        }
        let e = log.entries("t", usize::MAX, false, 3);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].denial.object, b"k999");
        assert_eq!(e[0].denial.username.len(), MAX_FIELD);
        assert!(log.entries("other", 10, true, 3).is_empty());
        // A lower limit applies at once; 0 keeps nothing.
        assert_eq!(log.entries("t", 10, false, 2).len(), 2);
        log.record("t", denial("x", "u"), 0, 2000);
        assert!(log.entries("t", 10, true, 128).is_empty());
    }

    #[test]
    fn admin_only_entries_are_hidden_and_kept_from_tenants() {
        let log = AclLog::default();
        let mut probe = denial("AUTH", "nosuch:bob");
        probe.admin_only = true;
        log.record("default", probe, 128, 1);
        log.record("default", denial("get", "u"), 128, 2);
        assert_eq!(log.entries("default", 10, false, 128).len(), 1);
        assert_eq!(log.entries("default", 10, true, 128).len(), 2);
        log.reset("default", false);
        assert!(log.entries("default", 10, false, 128).is_empty());
        assert_eq!(log.entries("default", 10, true, 128).len(), 1);
        log.reset("default", true);
        assert!(log.entries("default", 10, true, 128).is_empty());
    }
}
