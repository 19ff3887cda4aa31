//! What a connection's buffers may cost: its unsent replies and the requests it has not finished
//! sending are counted against budgets, and a connection is closed at the first one it would
//! cross.
//!
//! Replies (as Redis's `client-output-buffer-limit` and `maxmemory-clients`):
//! - the connection's own, `limits.client_output_buffer_limit`;
//! - its tenant's, when the tenant has a MAXMEMORY quota: all its connections' buffers together
//!   may hold at most `max(MAXMEMORY, TENANT_FLOOR)`, so a 1 MB tenant cannot hold
//!   gigabytes in replies its clients never read;
//! - the server's, `limits.maxmemory_clients`: every connection's buffers together.
//!
//! Requests: a request is read whole before it runs, so a client can make the server hold as
//! much as it sends (`*8` arguments of 400 MB each took a server to 3 GB and the allocation
//! aborted it). A connection whose unfinished request is longer than
//! `limits.client_query_buffer_limit` (Redis's `client-query-buffer-limit`) is closed, and an
//! input buffer larger than a new connection's ([`COUNTED_INPUT`]) is counted in the same tenant
//! and server budgets as replies (Redis's `maxmemory-clients` counts query buffers too).
//!
//! The connection that would cross a budget is the one closed (the one growing pays, not a
//! bystander that happens to hold a large reply), and every connection may hold
//! [`SMALL_OUTPUT`] of replies and [`SMALL_INPUT`] of requests whatever the shared budgets say,
//! so that while hogs fill them, other clients' ordinary requests and replies still go through.
//! Counts are updated once per batch and after every write to the socket, so the shared
//! counters cost a few atomic adds per batch; input is looked at only when a buffer is past
//! [`COUNTED_INPUT`] or an unfinished request past the smallest query-buffer limit, and the
//! counters change only when a buffer's size does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ferrite_tenancy::Tenant;

use crate::shared::Shared;

/// The least a tenant with a MAXMEMORY quota may hold in its connections' buffers: enough for
/// pipelines of ordinary requests and replies, however small its quota.
pub const TENANT_FLOOR: u64 = 16 * 1024 * 1024;

/// What any connection may hold in unsent replies regardless of the tenant and server budgets
/// (the per-connection limit still applies).
pub const SMALL_OUTPUT: u64 = 64 * 1024;

/// An input buffer (with the decoder's scratch space) up to this size is not counted: a new
/// connection's (see [`crate::input::MIN_READ`]), which every connection has.
pub const COUNTED_INPUT: usize = 2 * crate::input::MIN_READ;

/// What any connection may hold in its input buffer regardless of the tenant and server
/// budgets (its query-buffer limit still applies): so many connections each just under it are
/// at most `maxclients` × 64 KB past the budgets.
pub const SMALL_INPUT: u64 = 64 * 1024;

/// The smallest `client-query-buffer-limit` there can be (Redis's minimum, enforced when it is
/// set): an unfinished request no longer than this needs no look at the setting.
pub const MIN_QUERY_BUFFER_LIMIT: u64 = 1024 * 1024;

/// Which budget a connection reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// `client_output_buffer_limit`: this connection's unsent replies.
    Connection,
    /// `client_query_buffer_limit`: this connection's unfinished request.
    Query,
    Tenant,
    Server,
}

impl Budget {
    pub fn name(self) -> &'static str {
        match self {
            Budget::Connection => "client_output_buffer_limit",
            Budget::Query => "client_query_buffer_limit",
            Budget::Tenant => "the tenant's client memory budget",
            Budget::Server => "maxmemory_clients",
        }
    }
}

/// One connection's share of the shared client-memory counters.
#[derive(Debug)]
pub struct ClientMemory {
    /// Bytes of this connection's unsent replies currently added to the counters.
    output: u64,
    /// Bytes of this connection's input buffer currently added to the counters: 0 while it is
    /// within [`COUNTED_INPUT`].
    input: u64,
    /// The server-wide counter (`Shared::client_bytes`), held so that dropping releases.
    server: Arc<AtomicU64>,
}

/// Moves a share of the counters from `from` to `to` bytes.
fn adjust(server: &AtomicU64, tenant: &Tenant, from: u64, to: u64) {
    if to > from {
        server.fetch_add(to - from, Relaxed);
        tenant.stats.client_bytes.fetch_add(to - from, Relaxed);
    } else if from > to {
        server.fetch_sub(from - to, Relaxed);
        tenant.stats.client_bytes.fetch_sub(from - to, Relaxed);
    }
}

/// The length a buffer may reach given a shared budget of `cap` bytes of which `used` are
/// taken, this buffer's counted share being `pending` of them, and `floor` being what it may
/// hold whatever the budget says.
fn within(cap: u64, used: u64, pending: u64, floor: u64) -> u64 {
    (pending + cap.saturating_sub(used)).max(floor)
}

/// The tenant's budget for its connections' buffers: 0 when it has no MAXMEMORY quota.
fn tenant_cap(tenant: &Tenant) -> u64 {
    // `has_quota` first: reading the limits takes their lock, and most tenants have none.
    let quota = if tenant.has_quota() {
        tenant.limits().maxmemory
    } else {
        0
    };
    if quota > 0 {
        quota.max(TENANT_FLOOR)
    } else {
        0
    }
}

impl ClientMemory {
    pub fn new(sh: &Shared) -> ClientMemory {
        ClientMemory {
            output: 0,
            input: 0,
            server: sh.client_bytes.clone(),
        }
    }

    /// Brings the counters up to date with the connection's `pending` unsent bytes.
    pub fn sync(&mut self, tenant: &Tenant, pending: usize) {
        let pending = pending as u64;
        if pending != self.output {
            adjust(&self.server, tenant, self.output, pending);
            self.output = pending;
        }
    }

    /// Whether the input side must be looked at after a batch that left `held` bytes allocated
    /// for input and an unfinished request of `unfinished` bytes: a cheap test for the loop.
    #[inline]
    pub fn input_needs_check(&self, held: usize, unfinished: usize) -> bool {
        held > COUNTED_INPUT || self.input > 0 || unfinished as u64 > MIN_QUERY_BUFFER_LIMIT
    }

    /// Counts the connection's input buffer, `held` bytes allocated of which `unfinished` are an
    /// unfinished request, and says which budget it is past, if any (the connection must then
    /// be closed): its own query-buffer limit, or a shared budget the buffer has just grown
    /// past (beyond [`SMALL_INPUT`]). A buffer within [`COUNTED_INPUT`] is not counted.
    pub fn check_input(
        &mut self,
        sh: &Shared,
        tenant: &Tenant,
        held: usize,
        unfinished: usize,
    ) -> Option<Budget> {
        let counted = if held > COUNTED_INPUT { held as u64 } else { 0 };
        let grew = counted > self.input.max(SMALL_INPUT);
        if counted != self.input {
            adjust(&self.server, tenant, self.input, counted);
            self.input = counted;
        }
        if !grew && (unfinished as u64) <= MIN_QUERY_BUFFER_LIMIT {
            // The usual case: a buffer of a steady size and no long request.
            return None;
        }
        input_verdict(&InputCheck {
            unfinished: unfinished as u64,
            query_limit: sh.hot.client_query_buffer_limit.load(Relaxed),
            grew,
            server: (
                sh.hot.maxmemory_clients.load(Relaxed),
                self.server.load(Relaxed),
            ),
            // Read only when it can matter: the tenant's limits take a lock.
            tenant: if grew {
                (tenant_cap(tenant), tenant.stats.client_bytes.load(Relaxed))
            } else {
                (0, 0)
            },
        })
    }

    /// Moves this connection's bytes from one tenant's counter to another's.
    pub fn rebind(&self, from: &Tenant, to: &Tenant) {
        let mine = self.output + self.input;
        from.stats.client_bytes.fetch_sub(mine, Relaxed);
        to.stats.client_bytes.fetch_add(mine, Relaxed);
    }

    /// Takes this connection's bytes off the counters (it is closing).
    pub fn release(&mut self, tenant: &Tenant) {
        adjust(&self.server, tenant, self.output + self.input, 0);
        self.output = 0;
        self.input = 0;
    }

    /// The length the output buffer (now `pending` bytes long) may reach while the next
    /// command writes, and which budget sets it.
    pub fn reply_limit(&self, sh: &Shared, tenant: &Tenant, pending: usize) -> (usize, Budget) {
        let pending = pending as u64;
        // Bytes already written this batch and not yet in the counters.
        let unreported = pending.saturating_sub(self.output);
        let mut best = (u64::MAX, Budget::Connection);
        let conn = sh.hot.client_output_buffer_limit.load(Relaxed);
        if conn > 0 {
            best = (conn, Budget::Connection);
        }
        let server_cap = sh.hot.maxmemory_clients.load(Relaxed);
        if server_cap > 0 {
            let used = self.server.load(Relaxed) + unreported;
            let limit = within(server_cap, used, pending, SMALL_OUTPUT);
            if limit < best.0 {
                best = (limit, Budget::Server);
            }
        }
        let cap = tenant_cap(tenant);
        if cap > 0 {
            let used = tenant.stats.client_bytes.load(Relaxed) + unreported;
            let limit = within(cap, used, pending, SMALL_OUTPUT);
            if limit < best.0 {
                best = (limit, Budget::Tenant);
            }
        }
        (usize::try_from(best.0).unwrap_or(usize::MAX), best.1)
    }
}

/// What [`input_verdict`] decides from, the connection's input already counted.
#[derive(Debug, Clone, Copy)]
struct InputCheck {
    /// Bytes of the unfinished request.
    unfinished: u64,
    /// `client-query-buffer-limit`.
    query_limit: u64,
    /// The counted input buffer has just grown.
    grew: bool,
    /// The server's budget and what all connections hold (0 = no budget).
    server: (u64, u64),
    /// The tenant's budget and what its connections hold (0 = no budget).
    tenant: (u64, u64),
}

/// Which budget an input buffer is past: the connection's query-buffer limit, or a shared
/// budget its buffer has just grown past (a buffer that did not grow is not closed for what
/// others hold).
fn input_verdict(c: &InputCheck) -> Option<Budget> {
    if c.query_limit > 0 && c.unfinished > c.query_limit {
        return Some(Budget::Query);
    }
    if !c.grew {
        return None;
    }
    let over = |(cap, used): (u64, u64)| cap > 0 && used > cap;
    if over(c.server) {
        return Some(Budget::Server);
    }
    if over(c.tenant) {
        return Some(Budget::Tenant);
    }
    None
}

impl Drop for ClientMemory {
    fn drop(&mut self) {
        // The tenant's share is released by the connection state, which knows the tenant.
        self.server.fetch_sub(self.output + self.input, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1024 * 1024;

    fn check() -> InputCheck {
        InputCheck {
            unfinished: 0,
            query_limit: 1024 * MB,
            grew: true,
            server: (1024 * MB, 0),
            tenant: (0, 0),
        }
    }

    #[test]
    fn an_unfinished_request_past_the_query_limit_is_refused_whatever_else_holds() {
        let c = InputCheck {
            unfinished: 1024 * MB + 1,
            grew: false,
            ..check()
        };
        assert_eq!(input_verdict(&c), Some(Budget::Query));
        let at_limit = InputCheck {
            unfinished: 1024 * MB,
            ..c
        };
        assert_eq!(input_verdict(&at_limit), None);
    }

    #[test]
    fn the_buffer_that_grows_past_a_shared_budget_pays_and_a_steady_one_does_not() {
        let over_server = InputCheck {
            server: (64 * MB, 64 * MB + 1),
            ..check()
        };
        assert_eq!(input_verdict(&over_server), Some(Budget::Server));
        assert_eq!(
            input_verdict(&InputCheck {
                grew: false,
                ..over_server
            }),
            None
        );
        let over_tenant = InputCheck {
            tenant: (16 * MB, 17 * MB),
            ..check()
        };
        assert_eq!(input_verdict(&over_tenant), Some(Budget::Tenant));
        // No budget (0) is never over.
        let unlimited = InputCheck {
            query_limit: 0,
            unfinished: u64::MAX,
            server: (0, u64::MAX),
            tenant: (0, u64::MAX),
            ..check()
        };
        assert_eq!(input_verdict(&unlimited), None);
    }

    #[test]
    fn a_reply_may_use_the_room_left_in_a_budget_and_always_its_floor() {
        assert_eq!(within(100, 40, 10, 0), 70);
        assert_eq!(within(100, 140, 10, 5), 10);
        assert_eq!(within(100, 140, 0, 5), 5);
    }
}
