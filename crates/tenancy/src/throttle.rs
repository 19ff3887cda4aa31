//! Per-tenant operation rate limits. Excess commands are delayed (never dropped) up to a bound.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A GCRA-style limiter: each operation is due one interval after the previous one; up to one
/// second of operations may be taken as a burst.
#[derive(Debug)]
pub struct Throttle {
    inner: Mutex<State>,
    /// A rate is set. Read without the lock so that unthrottled tenants (the common case) do
    /// not serialize every command of every connection on one mutex.
    limited: AtomicBool,
}

#[derive(Debug)]
struct State {
    /// Operations per second; 0 = unlimited.
    rate: u64,
    /// When the next operation is due (theoretical arrival time).
    tat: Instant,
}

/// Outcome of asking the throttle for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Now,
    /// Proceed after waiting this long.
    After(Duration),
    /// Would have to wait longer than allowed.
    Refused(Duration),
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(0)
    }
}

impl Throttle {
    pub fn new(rate: u64) -> Self {
        Throttle {
            inner: Mutex::new(State {
                rate,
                tat: Instant::now(),
            }),
            limited: AtomicBool::new(rate > 0),
        }
    }

    pub fn rate(&self) -> u64 {
        self.inner.lock().rate
    }

    pub fn set_rate(&self, rate: u64) {
        let mut s = self.inner.lock();
        s.rate = rate;
        s.tat = Instant::now();
        self.limited.store(rate > 0, Relaxed);
    }

    /// Reserves one operation, waiting at most `max_delay`.
    #[inline]
    pub fn admit(&self, max_delay: Duration) -> Admission {
        self.admit_n(1, max_delay)
    }

    /// Reserves `n` operations at once (a transaction's queued commands), waiting at most
    /// `max_delay` for the last of them to be due.
    #[inline]
    pub fn admit_n(&self, n: u64, max_delay: Duration) -> Admission {
        if !self.limited.load(Relaxed) {
            return Admission::Now;
        }
        self.admit_limited(n.max(1), max_delay)
    }

    fn admit_limited(&self, n: u64, max_delay: Duration) -> Admission {
        let mut s = self.inner.lock();
        if s.rate == 0 {
            return Admission::Now;
        }
        let now = Instant::now();
        let interval = Duration::from_nanos(1_000_000_000 / s.rate.max(1));
        // Burst tolerance: one second's worth of operations may arrive at once.
        let tolerance = Duration::from_secs(1).saturating_sub(interval);
        let tat = s.tat.max(now);
        let cost = interval.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
        // The last of the n operations is due one interval before the new theoretical time.
        let ahead = (tat + cost - interval) - now;
        if ahead <= tolerance {
            s.tat = tat + cost;
            return Admission::Now;
        }
        let wait = ahead - tolerance;
        if wait > max_delay {
            return Admission::Refused(wait);
        }
        s.tat = tat + cost;
        Admission::After(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_by_default() {
        let t = Throttle::default();
        for _ in 0..10_000 {
            assert_eq!(t.admit(Duration::ZERO), Admission::Now);
        }
    }

    #[test]
    fn delays_then_refuses() {
        let t = Throttle::new(100);
        let mut now = 0;
        let mut delayed = 0;
        let mut refused = 0;
        for _ in 0..400 {
            match t.admit(Duration::from_millis(500)) {
                Admission::Now => now += 1,
                Admission::After(_) => delayed += 1,
                Admission::Refused(_) => refused += 1,
            }
        }
        // One second of burst (100) now, then up to 0.5 s of queueing (50) delayed, rest refused.
        assert!((95..=105).contains(&now), "now={now}");
        assert!((45..=55).contains(&delayed), "delayed={delayed}");
        assert!(refused >= 240, "refused={refused}");
    }

    #[test]
    fn a_batch_costs_its_size() {
        let t = Throttle::new(100);
        // A second's burst at once, then the next 50 need about half a second.
        assert_eq!(t.admit_n(100, Duration::ZERO), Admission::Now);
        match t.admit_n(50, Duration::from_secs(1)) {
            Admission::After(d) => assert!(
                d >= Duration::from_millis(450) && d <= Duration::from_millis(510),
                "{d:?}"
            ),
            other => panic!("{other:?}"),
        }
        // A batch larger than the burst plus the allowed delay is refused and reserves nothing.
        assert!(matches!(
            t.admit_n(1000, Duration::from_secs(1)),
            Admission::Refused(_)
        ));
        assert!(matches!(
            t.admit_n(1, Duration::from_secs(1)),
            Admission::After(_)
        ));
    }
}
