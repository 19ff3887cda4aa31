//! The slow log and the latency monitor, kept per tenant: a tenant's connections see only what
//! its own commands did (SLOWLOG, LATENCY). Commands are observed once they finished, by the
//! dispatcher; the locks here are taken only for commands past a threshold.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use ferrite_commands::spec::{CommandSpec, flags};
use ferrite_protocol::Args;
use parking_lot::Mutex;

use crate::connection::ClientState;
use crate::shared::Shared;

/// Redis keeps at most 32 arguments and 128 bytes of each in a slow-log entry.
const MAX_ARGS: usize = 32;
const MAX_ARG_LEN: usize = 128;
/// Samples a latency event keeps (Redis: LATENCY_TS_LEN).
const LATENCY_SAMPLES: usize = 160;

#[derive(Debug, Clone)]
pub struct SlowEntry {
    pub id: u64,
    /// Unix seconds when the command ran.
    pub time: u64,
    pub micros: u64,
    pub args: Vec<Vec<u8>>,
    pub client_addr: String,
    pub client_name: String,
    /// Run by a connection that is not one of the tenant's own clients (an administrator after
    /// TENANT.USE): the tenant sees the command, not who ran it.
    pub by_visitor: bool,
}

/// One latency event's history: the worst latency of each second (ms), newest last, and the
/// all-time maximum.
#[derive(Debug, Clone, Default)]
pub struct LatencyEvent {
    pub samples: VecDeque<(u64, u64)>,
    pub max: u64,
}

/// One tenant's slow log. Ids count that tenant's slow commands only: a server-wide counter
/// would let a tenant see, from the gaps between its ids, how many slow commands the others ran.
#[derive(Default)]
struct TenantSlowLog {
    entries: VecDeque<SlowEntry>,
    next_id: u64,
}

#[derive(Default)]
pub struct Diagnostics {
    slowlog: Mutex<HashMap<Arc<str>, TenantSlowLog>>,
    latency: Mutex<HashMap<Arc<str>, HashMap<&'static str, LatencyEvent>>>,
}

/// Commands whose arguments may carry secrets: logged by name only.
fn redacted(name: &str) -> bool {
    matches!(name, "auth" | "hello" | "config" | "acl")
        || name.starts_with("tenant.create")
        || name.starts_with("tenant.limits")
        || name.starts_with("tenant.migrate")
        || name.starts_with("tenant.import")
}

fn entry_args(spec: &CommandSpec, args: &Args<'_>) -> Vec<Vec<u8>> {
    if redacted(spec.name) {
        let mut v = vec![args.get(0).to_vec()];
        if args.len() > 1 {
            v.push(b"(redacted)".to_vec());
        }
        return v;
    }
    let n = args.len();
    let kept = if n > MAX_ARGS { MAX_ARGS - 1 } else { n };
    let mut v: Vec<Vec<u8>> = args
        .iter()
        .take(kept)
        .map(|a| {
            if a.len() > MAX_ARG_LEN {
                let mut s = a[..MAX_ARG_LEN].to_vec();
                s.extend_from_slice(
                    format!("... ({} more bytes)", a.len() - MAX_ARG_LEN).as_bytes(),
                );
                s
            } else {
                a.to_vec()
            }
        })
        .collect();
    if n > MAX_ARGS {
        v.push(format!("... ({} more arguments)", n - kept).into_bytes());
    }
    v
}

impl Diagnostics {
    /// Records a finished command if it was slow enough for the slow log or the latency monitor.
    pub fn observe(
        &self,
        st: &ClientState,
        sh: &Shared,
        spec: &CommandSpec,
        args: &Args<'_>,
        nanos: u64,
    ) {
        let micros = nanos / 1000;
        let slower_than = sh.hot.slowlog_slower_than_us.load(Relaxed);
        let latency_ms = sh.hot.latency_threshold_ms.load(Relaxed);
        let slow = slower_than >= 0 && micros >= slower_than as u64;
        let late = latency_ms > 0 && micros / 1000 >= latency_ms;
        // Every command passes here, and almost none is slow: the recording is out of line.
        if slow || late {
            self.record(st, sh, spec, args, micros, slow, late);
        }
    }

    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        st: &ClientState,
        sh: &Shared,
        spec: &CommandSpec,
        args: &Args<'_>,
        micros: u64,
        slow: bool,
        late: bool,
    ) {
        let tenant: Arc<str> = st.tenant.id().into();
        let now = ferrite_storage::now_ms() / 1000;
        if slow {
            let max = sh.hot.slowlog_max_len.load(Relaxed) as usize;
            let (addr, name) = (st.info.addr.to_string(), st.info.fields.lock().name.clone());
            let mut log = self.slowlog.lock();
            let q = log.entry(tenant.clone()).or_default();
            let entry = SlowEntry {
                id: q.next_id,
                time: now,
                micros,
                args: entry_args(spec, args),
                client_addr: addr,
                client_name: name,
                by_visitor: !st.is_tenant_client(),
            };
            q.next_id += 1;
            q.entries.push_front(entry);
            q.entries.truncate(max);
        }
        if late {
            let event = if spec.has(flags::FAST) {
                "fast-command"
            } else {
                "command"
            };
            let ms = micros / 1000;
            let mut all = self.latency.lock();
            let e = all.entry(tenant).or_default().entry(event).or_default();
            match e.samples.back_mut() {
                Some((t, worst)) if *t == now => *worst = (*worst).max(ms),
                _ => {
                    e.samples.push_back((now, ms));
                    if e.samples.len() > LATENCY_SAMPLES {
                        e.samples.pop_front();
                    }
                }
            }
            e.max = e.max.max(ms);
        }
    }

    /// The newest `count` slow-log entries of a tenant (all with None).
    pub fn slowlog(&self, tenant: &str, count: Option<usize>) -> Vec<SlowEntry> {
        let log = self.slowlog.lock();
        let Some(q) = log.get(tenant) else {
            return Vec::new();
        };
        q.entries
            .iter()
            .take(count.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    pub fn slowlog_len(&self, tenant: &str) -> usize {
        self.slowlog
            .lock()
            .get(tenant)
            .map_or(0, |q| q.entries.len())
    }

    /// Empties a tenant's slow log; its ids keep counting (as Redis's do after SLOWLOG RESET).
    pub fn slowlog_reset(&self, tenant: &str) {
        if let Some(q) = self.slowlog.lock().get_mut(tenant) {
            q.entries.clear();
        }
    }

    /// Drops a tenant's slow log and latency events (TENANT.DELETE).
    pub fn forget(&self, tenant: &str) {
        self.slowlog.lock().remove(tenant);
        self.latency.lock().remove(tenant);
    }

    /// A tenant's latency events, by name.
    pub fn latency(&self, tenant: &str) -> Vec<(&'static str, LatencyEvent)> {
        let all = self.latency.lock();
        let mut v: Vec<_> = all
            .get(tenant)
            .map(|m| m.iter().map(|(k, e)| (*k, e.clone())).collect())
            .unwrap_or_default();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Resets the named events (all when empty); returns how many there were.
    pub fn latency_reset(&self, tenant: &str, events: &[String]) -> usize {
        let mut all = self.latency.lock();
        let Some(m) = all.get_mut(tenant) else {
            return 0;
        };
        if events.is_empty() {
            let n = m.len();
            m.clear();
            return n;
        }
        events
            .iter()
            .filter(|e| m.remove(e.as_str()).is_some())
            .count()
    }
}
