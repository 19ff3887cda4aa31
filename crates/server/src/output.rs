//! What pending replies may cost: each connection's unsent output is counted against three
//! budgets, and a reply is cut off (and its connection closed) at the first one it would cross.
//!
//! - the connection's own, `limits.client_output_buffer_limit`;
//! - its tenant's, when the tenant has a MAXMEMORY quota: all its connections together may hold
//!   at most `max(MAXMEMORY, TENANT_OUTPUT_FLOOR)` of unsent replies, so a 1 MB tenant cannot
//!   hold gigabytes in replies its clients never read;
//! - the server's, `limits.maxmemory_clients`: every connection's unsent output together.
//!
//! The connection that would cross a budget is the one closed (the one growing pays, not a
//! bystander that happens to hold a large reply), and every connection may hold
//! [`SMALL_OUTPUT`] whatever the shared budgets say, so that while hogs fill them, other clients'
//! ordinary replies still go out. Counts are updated once per batch and after
//! every write to the socket, so the shared counters cost a few atomic adds per batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ferrite_tenancy::Tenant;

use crate::shared::Shared;

/// The least a tenant with a MAXMEMORY quota may hold in unsent replies: enough for pipelines
/// of ordinary replies, however small its quota.
pub const TENANT_OUTPUT_FLOOR: u64 = 16 * 1024 * 1024;

/// What any connection may hold in unsent replies regardless of the tenant and server budgets
/// (the per-connection limit still applies).
pub const SMALL_OUTPUT: u64 = 64 * 1024;

/// Which budget a reply reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Connection,
    Tenant,
    Server,
}

impl Budget {
    pub fn name(self) -> &'static str {
        match self {
            Budget::Connection => "client_output_buffer_limit",
            Budget::Tenant => "the tenant's output budget",
            Budget::Server => "maxmemory_clients",
        }
    }
}

/// One connection's share of the shared output counters.
#[derive(Debug)]
pub struct OutputAccount {
    /// Bytes of this connection's output currently added to the counters.
    reported: u64,
    /// The server-wide counter (`Shared::output_bytes`), held so that dropping releases.
    server: Arc<AtomicU64>,
}

impl OutputAccount {
    pub fn new(sh: &Shared) -> OutputAccount {
        OutputAccount {
            reported: 0,
            server: sh.output_bytes.clone(),
        }
    }

    /// Brings the counters up to date with the connection's `pending` unsent bytes.
    pub fn sync(&mut self, tenant: &Tenant, pending: usize) {
        let pending = pending as u64;
        if pending >= self.reported {
            let d = pending - self.reported;
            if d > 0 {
                self.server.fetch_add(d, Relaxed);
                tenant.stats.output_bytes.fetch_add(d, Relaxed);
            }
        } else {
            let d = self.reported - pending;
            self.server.fetch_sub(d, Relaxed);
            tenant.stats.output_bytes.fetch_sub(d, Relaxed);
        }
        self.reported = pending;
    }

    /// Moves this connection's bytes from one tenant's counter to another's.
    pub fn rebind(&self, from: &Tenant, to: &Tenant) {
        from.stats.output_bytes.fetch_sub(self.reported, Relaxed);
        to.stats.output_bytes.fetch_add(self.reported, Relaxed);
    }

    /// Takes this connection's bytes off the counters (it is closing).
    pub fn release(&mut self, tenant: &Tenant) {
        self.sync(tenant, 0);
    }

    /// The length the output buffer (now `pending` bytes long) may reach while the next
    /// command writes, and which budget sets it.
    pub fn reply_limit(&self, sh: &Shared, tenant: &Tenant, pending: usize) -> (usize, Budget) {
        let pending = pending as u64;
        // Bytes already written this batch and not yet in the counters.
        let unreported = pending.saturating_sub(self.reported);
        let mut best = (u64::MAX, Budget::Connection);
        let conn = sh.hot.client_output_buffer_limit.load(Relaxed);
        if conn > 0 {
            best = (conn, Budget::Connection);
        }
        let server_cap = sh.hot.maxmemory_clients.load(Relaxed);
        if server_cap > 0 {
            let used = self.server.load(Relaxed) + unreported;
            let room = server_cap.saturating_sub(used);
            let limit = (pending + room).max(SMALL_OUTPUT);
            if limit < best.0 {
                best = (limit, Budget::Server);
            }
        }
        // `has_quota` first: reading the limits takes their lock, and most tenants have none.
        let quota = if tenant.has_quota() {
            tenant.limits().maxmemory
        } else {
            0
        };
        if quota > 0 {
            let cap = quota.max(TENANT_OUTPUT_FLOOR);
            let used = tenant.stats.output_bytes.load(Relaxed) + unreported;
            let room = cap.saturating_sub(used);
            let limit = (pending + room).max(SMALL_OUTPUT);
            if limit < best.0 {
                best = (limit, Budget::Tenant);
            }
        }
        (usize::try_from(best.0).unwrap_or(usize::MAX), best.1)
    }
}

impl Drop for OutputAccount {
    fn drop(&mut self) {
        // The tenant's share is released by the connection state, which knows the tenant.
        self.server.fetch_sub(self.reported, Relaxed);
    }
}
