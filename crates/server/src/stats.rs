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

impl CommandStat {
    pub fn record(&self, nanos: u64, failed: bool) {
        self.calls.fetch_add(1, Relaxed);
        self.usec.fetch_add(nanos / 1000, Relaxed);
        self.nanos.fetch_add(nanos, Relaxed);
        if failed {
            self.failed.fetch_add(1, Relaxed);
        }
        let secs = nanos as f64 / 1e9;
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
    }
}

/// One [`CommandStat`] per entry of the command table, in the same order.
#[derive(Debug)]
pub struct CommandStats {
    pub by_command: Vec<CommandStat>,
}

impl Default for CommandStats {
    fn default() -> Self {
        CommandStats {
            by_command: spec::all().iter().map(|_| CommandStat::default()).collect(),
        }
    }
}

impl CommandStats {
    pub fn get(&self, idx: usize) -> Option<&CommandStat> {
        self.by_command.get(idx)
    }

    pub fn reset(&self) {
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
