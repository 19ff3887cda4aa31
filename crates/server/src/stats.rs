//! Server and per-command counters. INFO and the Prometheus endpoint both read these, so the two
//! can never disagree.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ferrite_commands::spec;

#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections_received: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub commands_processed: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Connections closed because a reply reached an output budget (INFO
    /// `client_output_buffer_limit_disconnections`).
    pub output_limit_disconnects: AtomicU64,
    /// Connections closed because an unfinished request or an input buffer reached a budget
    /// (INFO `client_query_buffer_limit_disconnections`, Redis 7.4's name).
    pub query_limit_disconnects: AtomicU64,
    /// Clients waiting in a blocking command (INFO `blocked_clients`).
    pub blocked_clients: AtomicU64,
    /// Connections to the metrics endpoint closed at once because it served
    /// `metrics.max_connections` already.
    pub metrics_connections_refused: AtomicU64,
    /// Commands per second over the last sampling period.
    pub ops_per_sec: AtomicU64,
}

/// Upper bounds (seconds) of the command latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Counters of one command.
#[derive(Debug, Default)]
pub struct CommandStat {
    pub calls: AtomicU64,
    /// Total time spent running it, in microseconds (INFO commandstats `usec`).
    pub usec: AtomicU64,
    /// Runs that answered with an error.
    pub failed: AtomicU64,
    /// Refused before running (arity, auth, ownership, quota...).
    pub rejected: AtomicU64,
    /// Sum of durations in nanoseconds (histogram `_sum`).
    pub nanos: AtomicU64,
    /// Histogram buckets (non-cumulative), one more than LATENCY_BUCKETS for +Inf.
    pub buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

/// [`LATENCY_BUCKETS`] in nanoseconds, so that recording a duration needs no float arithmetic.
const LATENCY_BUCKETS_NANOS: [u64; LATENCY_BUCKETS.len()] = {
    let mut out = [0u64; LATENCY_BUCKETS.len()];
    let mut i = 0;
    while i < out.len() {
        // Every bound is a whole number of nanoseconds; +0.5 rounds away the binary fraction.
        out[i] = (LATENCY_BUCKETS[i] * 1e9 + 0.5) as u64;
        i += 1;
    }
    out
};

/// The histogram bucket of a duration: the first bound it does not exceed, or +Inf.
pub fn bucket_index(nanos: u64) -> usize {
    LATENCY_BUCKETS_NANOS
        .iter()
        .position(|&b| nanos <= b)
        .unwrap_or(LATENCY_BUCKETS.len())
}

impl CommandStat {
    pub fn record(&self, nanos: u64, failed: bool) {
        let mut b = CommandTally::default();
        b.add(nanos, failed);
        self.add(&b);
    }

    /// Adds what a connection counted over one batch of requests.
    pub fn add(&self, t: &CommandTally) {
        self.calls.fetch_add(t.calls, Relaxed);
        self.usec.fetch_add(t.usec, Relaxed);
        self.nanos.fetch_add(t.nanos, Relaxed);
        if t.failed > 0 {
            self.failed.fetch_add(t.failed, Relaxed);
        }
        let mut used = t.used_buckets;
        while used != 0 {
            let i = used.trailing_zeros() as usize;
            used &= used - 1;
            if let (Some(shared), Some(&n)) = (self.buckets.get(i), t.buckets.get(i)) {
                shared.fetch_add(n, Relaxed);
            }
        }
    }
}

/// Runs of one command counted locally (by one connection, for one batch of requests) before
/// being added to the shared [`CommandStat`] with one atomic update per field instead of one per
/// run: the shared counters sit on cache lines every worker thread writes.
#[derive(Debug, Default, Clone)]
pub struct CommandTally {
    pub calls: u64,
    pub usec: u64,
    pub nanos: u64,
    pub failed: u64,
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Bit i set when `buckets[i]` is not zero (a batch touches one or two buckets).
    pub used_buckets: u32,
}

impl CommandTally {
    pub fn add(&mut self, nanos: u64, failed: bool) {
        self.calls += 1;
        // Truncated per run, as a per-run atomic update would.
        self.usec += nanos / 1000;
        self.nanos += nanos;
        self.failed += u64::from(failed);
        let i = bucket_index(nanos);
        self.buckets[i] += 1;
        self.used_buckets |= 1 << i;
    }
}

/// One [`CommandStat`] per entry of the command table, in the same order.
#[derive(Debug)]
pub struct CommandStats {
    pub by_command: Vec<CommandStat>,
    /// Every error reply by its code (INFO errorstats of an administrator).
    pub errors: ferrite_tenancy::tenant::ErrorCounts,
}

impl Default for CommandStats {
    fn default() -> Self {
        CommandStats {
            by_command: spec::all().iter().map(|_| CommandStat::default()).collect(),
            errors: Default::default(),
        }
    }
}

impl CommandStats {
    pub fn get(&self, idx: usize) -> Option<&CommandStat> {
        self.by_command.get(idx)
    }

    pub fn reset(&self) {
        self.errors.reset();
        for s in &self.by_command {
            s.calls.store(0, Relaxed);
            s.usec.store(0, Relaxed);
            s.failed.store(0, Relaxed);
            s.rejected.store(0, Relaxed);
            s.nanos.store(0, Relaxed);
            for b in &s.buckets {
                b.store(0, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_buckets_match_the_float_bounds() {
        let float_index = |nanos: u64| {
            let secs = nanos as f64 / 1e9;
            LATENCY_BUCKETS
                .iter()
                .position(|&b| secs <= b)
                .unwrap_or(LATENCY_BUCKETS.len())
        };
        for &b in &LATENCY_BUCKETS_NANOS {
            for n in [b - 1, b, b + 1] {
                assert_eq!(bucket_index(n), float_index(n), "{n} ns");
            }
        }
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(u64::MAX), LATENCY_BUCKETS.len());
        assert_eq!(LATENCY_BUCKETS_NANOS[0], 10_000);
        assert_eq!(LATENCY_BUCKETS_NANOS[15], 1_000_000_000);
    }

    #[test]
    fn a_tally_adds_up_like_single_records() {
        let (one_by_one, batched) = (CommandStat::default(), CommandStat::default());
        let mut t = CommandTally::default();
        for (n, failed) in [(1_500, false), (30_000, true), (2_000_000_000, false)] {
            one_by_one.record(n, failed);
            t.add(n, failed);
        }
        batched.add(&t);
        for (a, b) in [
            (&one_by_one.calls, &batched.calls),
            (&one_by_one.usec, &batched.usec),
            (&one_by_one.nanos, &batched.nanos),
            (&one_by_one.failed, &batched.failed),
        ] {
            assert_eq!(a.load(Relaxed), b.load(Relaxed));
        }
        let buckets = |s: &CommandStat| {
            s.buckets
                .iter()
                .map(|b| b.load(Relaxed))
                .collect::<Vec<_>>()
        };
        assert_eq!(buckets(&one_by_one), buckets(&batched));
        assert_eq!(one_by_one.usec.load(Relaxed), 1 + 30 + 2_000_000);
    }
}
