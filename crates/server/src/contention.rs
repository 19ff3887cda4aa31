//! What contention management measures on this server: the p99 of command latency over a
//! window, from the same per-command histogram the metrics endpoint exports, and this process's
//! CPU use. The server cron samples it once a second and hands it to
//! `MigrationManager::observe_load`, which slows migrations down or speeds them up.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ferrite_tenancy::migration::Load;

use crate::shared::Shared;
use crate::stats::LATENCY_BUCKETS;

/// Fewer commands than this in a window say nothing about a p99 (None: not over).
const MIN_COMMANDS: u64 = 100;

/// Clock ticks per second of `/proc/self/stat` (Linux's USER_HZ, the same on every
/// architecture the kernel exports to user space).
const USER_HZ: f64 = 100.0;

/// Histogram bucket counts (+Inf last) and CPU ticks at one moment.
#[derive(Clone)]
struct Sample {
    at: Instant,
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    cpu_ticks: Option<u64>,
}

/// Samples taken about once a second, kept over the window.
#[derive(Default)]
pub struct LoadSampler {
    samples: VecDeque<Sample>,
}

impl LoadSampler {
    /// Takes a sample now and returns the load over (about) the last `window`.
    pub fn sample(&mut self, sh: &Shared, window: Duration) -> Load {
        let mut buckets = [0u64; LATENCY_BUCKETS.len() + 1];
        let specs = ferrite_commands::spec::all();
        for (spec, s) in specs.iter().zip(&sh.cmd_stats.by_command) {
            // The operators' own commands (a CUTOVER takes seconds by design) are not what
            // contention management protects.
            if spec.name.starts_with("tenant.") {
                continue;
            }
            for (b, n) in buckets.iter_mut().zip(&s.buckets) {
                *b += n.load(Relaxed);
            }
        }
        let now = Sample {
            at: Instant::now(),
            buckets,
            cpu_ticks: cpu_ticks(),
        };
        while self
            .samples
            .front()
            .is_some_and(|s| now.at.duration_since(s.at) > window)
        {
            self.samples.pop_front();
        }
        let load = match self.samples.front() {
            Some(old) => between(old, &now),
            None => Load::default(),
        };
        self.samples.push_back(now);
        load
    }
}

fn between(old: &Sample, now: &Sample) -> Load {
    let mut delta = [0u64; LATENCY_BUCKETS.len() + 1];
    for (d, (n, o)) in delta.iter_mut().zip(now.buckets.iter().zip(&old.buckets)) {
        *d = n.saturating_sub(*o);
    }
    let secs = now.at.duration_since(old.at).as_secs_f64();
    let cpu = match (old.cpu_ticks, now.cpu_ticks) {
        (Some(a), Some(b)) if secs > 0.0 => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            b.saturating_sub(a) as f64 / USER_HZ / secs / cores
        }
        _ => 0.0,
    };
    Load {
        p99: p99(&delta),
        cpu,
    }
}

/// The upper bound of the bucket holding the 99th percentile (twice the last bound for +Inf).
fn p99(buckets: &[u64; LATENCY_BUCKETS.len() + 1]) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total < MIN_COMMANDS {
        return None;
    }
    let rank = total - total / 100;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(
                LATENCY_BUCKETS
                    .get(i)
                    .copied()
                    .unwrap_or(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1] * 2.0),
            );
        }
    }
    None
}

/// utime + stime of this process, in clock ticks (None where /proc is not there).
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after it follow its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line: 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_the_bound_of_its_bucket() {
        let mut b = [0u64; LATENCY_BUCKETS.len() + 1];
        assert_eq!(p99(&b), None, "no commands");
        b[0] = 99;
        assert_eq!(p99(&b), None, "too few to say");
        b[0] = 990;
        b[8] = 10; // 5 ms
        assert_eq!(p99(&b), Some(LATENCY_BUCKETS[0]));
        b[8] = 11;
        assert_eq!(p99(&b), Some(0.005));
        b[LATENCY_BUCKETS.len()] = 1000;
        assert_eq!(p99(&b), Some(2.0), "+Inf");
    }

    #[test]
    fn cpu_ticks_are_read_from_proc() {
        if std::path::Path::new("/proc/self/stat").exists() {
            let a = cpu_ticks().expect("ticks");
            let mut x = 0u64;
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(60) {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            assert!(cpu_ticks().expect("ticks") >= a, "{x}");
        }
    }
}
