//! A worker about to sleep in `epoll_wait` first spins for a few microseconds
//! (`server.idle_spin_us`), so that a request arriving right after its last reply — a client
//! doing one request at a time, the common case — finds the worker awake: no sleep and wake-up
//! on the worker's side, and no wake-up (an inter-processor interrupt, a VM exit on a virtual
//! machine) on the sender's. Dragonfly's and Seastar's event loops poll before sleeping the same
//! way. Measured with 50 clients at -P1 on the project's 2-core VM: GET 91–95k requests/s
//! against 85–87k without, for about 2 µs more server CPU per request (docs/benchmarks.md).
//!
//! The spin adapts: when the worker's sleeps after a spin keep lasting longer than the spin
//! (a quiet server, a client too slow for the spin to catch), it stops spinning for a while and
//! then tries again, so an idle or lightly used server does not burn CPU. It makes no system
//! call (offering the core with `sched_yield` every 5 µs cost as much as the sleeps it saved);
//! on a core other threads want, the kernel preempts it like any other running thread, and the
//! back-off ends it there too, since sleeps after it then outlast it.

use std::cell::Cell;
use std::time::Duration;

// `quanta`'s clock (the TSC) costs 10 ns a read against 25 for `std::time::Instant`: a worker
// parks about once per request at -P1.
use quanta::Instant;

/// Sleeps longer than the spin in a row after which spinning stops.
const MISSES_TO_BACK_OFF: u32 = 8;
/// Parks without a spin after backing off, before spinning is tried again.
const PARKS_BACKED_OFF: u32 = 256;

/// Whether to spin before the next park, from how the last spins went. Per worker thread.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Spins in a row whose sleep outlasted them.
    misses: u32,
    /// Parks left without a spin.
    skip: u32,
}

impl Backoff {
    /// True when this park should spin first.
    pub fn should_spin(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// How a spin went: `hit` when work came within it (or soon enough that a spin would have
    /// caught it).
    pub fn record(&mut self, hit: bool) {
        if hit {
            self.misses = 0;
            return;
        }
        self.misses += 1;
        if self.misses >= MISSES_TO_BACK_OFF {
            self.misses = 0;
            self.skip = PARKS_BACKED_OFF;
        }
    }
}

thread_local! {
    static BACKOFF: Cell<Backoff> = Cell::new(Backoff::default());
    /// When the thread went to sleep after a spin; `None` when the last park did not spin.
    static SLEPT_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The runtime's park hooks (`on_thread_park` / `on_thread_unpark`).
#[derive(Debug, Clone, Copy)]
pub struct IdleSpin {
    limit: Duration,
}

impl IdleSpin {
    /// `None` for 0 (no spin).
    pub fn new(micros: u64) -> Option<IdleSpin> {
        (micros > 0).then(|| IdleSpin {
            limit: Duration::from_micros(micros),
        })
    }

    /// Runs before the worker sleeps: spins up to the limit unless backed off. Work that
    /// arrives meanwhile makes the sleep that follows return at once.
    pub fn before_park(&self) {
        let mut b = BACKOFF.get();
        let spin = b.should_spin();
        BACKOFF.set(b);
        if !spin {
            SLEPT_AT.set(None);
            return;
        }
        let started = Instant::now();
        loop {
            let now = Instant::now();
            if now.duration_since(started) >= self.limit {
                SLEPT_AT.set(Some(now));
                return;
            }
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        }
    }

    /// Runs when the worker wakes: a sleep after a spin that lasted longer than the spin
    /// itself counts as a miss.
    pub fn after_unpark(&self) {
        if let Some(at) = SLEPT_AT.take() {
            let mut b = BACKOFF.get();
            b.record(at.elapsed() < self.limit);
            BACKOFF.set(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_in_a_row_stop_the_spin_for_a_while_and_a_hit_resets_them() {
        let mut b = Backoff::default();
        for _ in 0..MISSES_TO_BACK_OFF - 1 {
            assert!(b.should_spin());
            b.record(false);
        }
        // A hit before the limit: the count starts over.
        assert!(b.should_spin());
        b.record(true);
        for _ in 0..MISSES_TO_BACK_OFF {
            assert!(b.should_spin());
            b.record(false);
        }
        for _ in 0..PARKS_BACKED_OFF {
            assert!(!b.should_spin(), "backed off");
        }
        assert!(b.should_spin(), "tried again after the back-off");
    }

    #[test]
    fn a_spin_lasts_about_its_limit_and_zero_means_none() {
        assert!(IdleSpin::new(0).is_none());
        let spin = IdleSpin::new(200).expect("spin");
        let started = Instant::now();
        spin.before_park();
        let took = started.elapsed();
        assert!(took >= Duration::from_micros(200), "{took:?}");
        // A wake-up right after counts as a hit; a late one as a miss.
        spin.after_unpark();
        assert_eq!(BACKOFF.get(), Backoff::default());
        spin.before_park();
        std::thread::sleep(Duration::from_millis(2));
        spin.after_unpark();
        assert_eq!(BACKOFF.get().misses, 1);
    }
}
