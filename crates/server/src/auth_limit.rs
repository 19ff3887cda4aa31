//! Failed AUTH attempts, limited per client address: online password guessing is what a salted
//! hash cannot slow down (docs/security.md).
//!
//! Failures are counted per client address (an IPv4 address, or the /64 network of an IPv6
//! address, which one host usually owns whole) and user name (`default` for the administrator
//! secret, the tenant's id, `ferrite-migration`). After `server.auth_failure_limit` failures for
//! one user from one address, each further failure refuses that user's AUTH from that address for
//! a while, 100 ms after the first and twice as long after each next one, up to
//! `server.auth_block_max_ms`. An address that fails [`SPRAY_FACTOR`] times as often over all
//! user names (one password tried against many tenants) is blocked the same way for every user.
//! While refused, an attempt is answered at once without its password being checked, so neither
//! a loop on one connection nor many connections in parallel can test passwords faster than the
//! blocks allow. A success does not clear the count: a tenant that knows its own password must
//! not be able to reset its budget for guessing another's. Counts are forgotten after
//! [`FORGET_AFTER`] without a failure.
//!
//! Why per user and bounded: tenants' applications often share the administrator's host (and
//! address); somebody guessing a tenant's password there must not lock the administrator out,
//! and nobody can lock anybody out for longer than `auth_block_max_ms` after their last failure.
//!
//! The map is touched only by AUTH (and HELLO ... AUTH), never by other commands, so one mutex
//! costs nothing on the data path; it holds at most [`MAX_ENTRIES`] entries (beyond that, new
//! ones are not tracked, and a warning says so). User names are kept as keyed hashes, so a
//! stranger's long or many user names cost a fixed size each.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The first block; each later one doubles.
pub const FIRST_BLOCK: Duration = Duration::from_millis(100);
/// An address with no failed attempt for this long starts again from zero.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Entries (address and user, or address) tracked at most.
pub const MAX_ENTRIES: usize = 100_000;
/// An address may fail this many times `auth_failure_limit` over all user names together.
pub const SPRAY_FACTOR: u32 = 10;

/// Where the failures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    /// The upper 64 bits (the network) of an IPv6 address.
    V6Net(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => Source::V6Net((u128::from(v6) >> 64) as u64),
        }
    }
}

/// What failures are counted against: one user from one address, or the address as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    source: Source,
    /// Keyed hash of the user name; None for the address-wide count.
    user: Option<u64>,
}

#[derive(Debug)]
struct Strikes {
    failures: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

/// The failed-AUTH limiter of one server, with the counters INFO and the metrics show.
#[derive(Debug, Default)]
pub struct AuthLimiter {
    entries: Mutex<HashMap<Key, Strikes>>,
    /// Hashes user names (random keys per process: names cannot be chosen to collide).
    user_hasher: RandomState,
    /// AUTH attempts whose credential was wrong.
    pub failures: AtomicU64,
    /// AUTH attempts refused unchecked because their address was blocked.
    pub refused: AtomicU64,
    /// Addresses that started a block.
    pub blocks: AtomicU64,
    warned_full: AtomicBool,
}

impl AuthLimiter {
    fn keys(&self, ip: IpAddr, user: &[u8]) -> [Key; 2] {
        let source = Source::of(ip);
        [
            Key {
                source,
                user: Some(self.user_hasher.hash_one(user)),
            },
            Key { source, user: None },
        ]
    }

    /// Whether an attempt as `user` from `ip` may be checked now; otherwise how long it stays
    /// refused (the attempt is counted as refused).
    pub fn admit(&self, ip: IpAddr, user: &[u8], now: Instant) -> Result<(), Duration> {
        let keys = self.keys(ip, user);
        let entries = self.entries.lock();
        let until = keys
            .iter()
            .filter_map(|k| entries.get(k).and_then(|s| s.blocked_until))
            .filter(|&until| until > now)
            .max();
        drop(entries);
        match until {
            Some(until) => {
                self.refused.fetch_add(1, Relaxed);
                Err(until - now)
            }
            None => Ok(()),
        }
    }

    /// Records a failed attempt as `user` from `ip`; returns the block it starts, if any.
    pub fn failed(
        &self,
        ip: IpAddr,
        user: &[u8],
        limit: u32,
        max_block: Duration,
        now: Instant,
    ) -> Option<Duration> {
        self.failures.fetch_add(1, Relaxed);
        if limit == 0 {
            return None;
        }
        let [per_user, per_address] = self.keys(ip, user);
        let mut entries = self.entries.lock();
        let mut block = None;
        for (key, limit) in [
            (per_user, limit),
            (per_address, limit.saturating_mul(SPRAY_FACTOR)),
        ] {
            if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
                entries.retain(|_, s| keep(s, now));
                if entries.len() >= MAX_ENTRIES {
                    if !self.warned_full.swap(true, Relaxed) {
                        tracing::warn!(
                            entries = MAX_ENTRIES,
                            "failed AUTH attempts come from too many addresses to track; new ones are not limited"
                        );
                    }
                    continue;
                }
            }
            let s = entries.entry(key).or_insert(Strikes {
                failures: 0,
                last_failure: now,
                blocked_until: None,
            });
            if let Some(b) = s.fail(limit, max_block, now) {
                block = block.max(Some(b));
            }
        }
        drop(entries);
        if block.is_some() {
            self.blocks.fetch_add(1, Relaxed);
        }
        block
    }

    /// Forgets entries that are neither blocked nor failed recently (the server cron).
    pub fn prune(&self, now: Instant) {
        let mut entries = self.entries.lock();
        entries.retain(|_, s| keep(s, now));
        if entries.len() < MAX_ENTRIES / 2 {
            self.warned_full.store(false, Relaxed);
        }
    }

    /// Entries tracked now.
    pub fn tracked(&self) -> usize {
        self.entries.lock().len()
    }
}

impl Strikes {
    /// Counts one failure; the block it starts past `limit`, if any.
    fn fail(&mut self, limit: u32, max_block: Duration, now: Instant) -> Option<Duration> {
        if now.saturating_duration_since(self.last_failure) > FORGET_AFTER {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = now;
        if self.failures <= limit {
            return None;
        }
        let doublings = (self.failures - limit - 1).min(30);
        let block = FIRST_BLOCK.saturating_mul(1 << doublings).min(max_block);
        if block.is_zero() {
            return None;
        }
        self.blocked_until = Some(now + block);
        Some(block)
    }
}

fn keep(s: &Strikes, now: Instant) -> bool {
    s.blocked_until.is_some_and(|u| u > now)
        || now.saturating_duration_since(s.last_failure) <= FORGET_AFTER
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(10);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_start_after_the_limit_and_double_up_to_the_maximum() {
        let l = AuthLimiter::default();
        let a = ip("10.0.0.1");
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(l.admit(a, b"t", t0).is_ok());
            assert_eq!(l.failed(a, b"t", 10, MAX, t0), None);
        }
        let mut now = t0;
        let mut blocks = Vec::new();
        for _ in 0..10 {
            assert!(l.admit(a, b"t", now).is_ok());
            let b = l.failed(a, b"t", 10, MAX, now).expect("a block");
            // Refused for exactly that long, not a moment more.
            assert_eq!(
                l.admit(a, b"t", now + b - Duration::from_millis(1))
                    .unwrap_err(),
                Duration::from_millis(1)
            );
            now += b;
            blocks.push(b.as_millis());
        }
        assert_eq!(
            blocks,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        assert_eq!(l.failures.load(Relaxed), 20);
        assert_eq!(l.blocks.load(Relaxed), 10);
        assert_eq!(l.refused.load(Relaxed), 10);
        // Another address is not affected, nor another user from the same address (the
        // administrator next to a tenant guessing passwords).
        assert!(
            l.admit(ip("10.0.0.2"), b"t", now - Duration::from_secs(5))
                .is_ok()
        );
        assert!(l.admit(a, b"default", now - Duration::from_secs(5)).is_ok());
    }

    #[test]
    fn spraying_one_password_over_many_users_blocks_the_address() {
        let l = AuthLimiter::default();
        let a = ip("10.0.0.1");
        let t0 = Instant::now();
        // 100 = limit x SPRAY_FACTOR failures, each against a fresh user: nothing blocked yet.
        for i in 0..100 {
            assert_eq!(l.failed(a, format!("u{i}").as_bytes(), 10, MAX, t0), None);
        }
        assert!(l.failed(a, b"another", 10, MAX, t0).is_some());
        assert!(l.admit(a, b"default", t0).is_err());
        assert!(l.admit(ip("10.0.0.9"), b"default", t0).is_ok());
    }

    #[test]
    fn an_address_is_forgotten_after_a_quiet_while_and_zero_disables() {
        let l = AuthLimiter::default();
        let a = ip("192.0.2.7");
        let t0 = Instant::now();
        for _ in 0..11 {
            l.failed(a, b"t", 10, MAX, t0);
        }
        assert!(l.admit(a, b"t", t0).is_err());
        let later = t0 + FORGET_AFTER + Duration::from_secs(1);
        l.prune(later);
        assert_eq!(l.tracked(), 0);
        assert_eq!(
            l.failed(a, b"t", 10, MAX, later),
            None,
            "counting starts again"
        );
        let off = AuthLimiter::default();
        for _ in 0..100 {
            assert_eq!(off.failed(a, b"t", 0, MAX, t0), None);
        }
        assert!(off.admit(a, b"t", t0).is_ok());
        assert_eq!(off.tracked(), 0);
    }

    #[test]
    fn ipv6_hosts_are_limited_by_their_network_and_mapped_ipv4_as_ipv4() {
        let l = AuthLimiter::default();
        let t0 = Instant::now();
        for i in 0..11 {
            l.failed(ip(&format!("2001:db8:1:2::{i:x}")), b"t", 10, MAX, t0);
        }
        assert!(l.admit(ip("2001:db8:1:2:ffff::1"), b"t", t0).is_err());
        assert!(l.admit(ip("2001:db8:1:3::1"), b"t", t0).is_ok());
        for _ in 0..11 {
            l.failed(ip("::ffff:10.1.1.1"), b"t", 10, MAX, t0);
        }
        assert!(l.admit(ip("10.1.1.1"), b"t", t0).is_err());
    }
}
