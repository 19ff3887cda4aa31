//! Hot large values converge: once a large value has been copied to the target (read in one
//! consistent go, see `source::ship_large`), the writes that change it are shipped as their
//! effects — the deterministic argv the keyspace publishes for each command
//! (`ferrite_storage::effects`), in lock order, each with the clock it ran with — and the target
//! replays them on its copy, instead of receiving the whole value again after every change.
//!
//! [`DeltaLog`] subscribes to the tenant's keyspace for the whole migration. For each key it
//! tracks (the large ones already copied, or being copied) it keeps the effects since the key was
//! last shipped. A key falls back to being shipped whole (`Pending::Whole`) when that is cheaper
//! (its log outgrew the value), or whenever its log might not reproduce it on the target by
//! itself:
//! - an effect that may involve another key too (RENAME, SMOVE, LMOVE, MSET, DEL of several
//!   keys, SUNIONSTORE...: the other key's records may travel on another stream, or not as
//!   effects at all). Any argument equal to a tracked key counts, so this over-approximates;
//! - an effect whose keys cannot be told from its arguments (an unknown command, SWAPDB): every
//!   tracked key;
//! - a change that published no effect at all (a write outside the command path): its key is
//!   drained with an empty log.
//!
//! A flush (FLUSHALL/FLUSHDB, or a restore replacing the keyspace, seen by the source as a new
//! flush epoch) forgets every tracked key: the target flushes too, and keys written later are
//! new keys. When in doubt, the whole value is shipped; the cutover's digest comparison is the
//! last check, and a mismatch also sends every tracked key whole.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ferrite_storage::{Argv, EffectSink, Effects, OwnedArgv};
use parking_lot::Mutex;

/// What to ship for a changed key.
#[derive(Debug, PartialEq)]
pub(super) enum Pending {
    /// Its effects since it was last shipped, in order, with their clocks.
    Effects(Vec<(u64, OwnedArgv)>),
    /// The whole value (a consistent copy if large).
    Whole,
    /// Not a tracked key: whatever its size says.
    Untracked,
}

#[derive(Default)]
struct DeltaKey {
    log: Vec<(u64, OwnedArgv)>,
    log_bytes: usize,
    /// The log cannot bring the target's copy up to date: ship the value whole next time.
    invalid: bool,
    /// The value's size when last copied: the log's cap, and an invalid key's lag.
    size: usize,
}

impl DeltaKey {
    fn pending_bytes(&self) -> usize {
        if self.invalid {
            self.size
        } else {
            self.log_bytes
        }
    }

    fn invalidate(&mut self) {
        self.invalid = true;
        self.log = Vec::new();
        self.log_bytes = 0;
    }
}

/// The effects of writes to the large keys a migration tracks (see the module documentation).
#[derive(Default)]
pub(super) struct DeltaLog {
    keys: Mutex<HashMap<Box<[u8]>, DeltaKey>>,
    /// What the tracked keys have left to ship, in bytes (read lock-free by STATUS).
    pending: AtomicU64,
}

/// Bytes an effect takes on the wire (about: its arguments with their lengths, a clock, a tag).
fn argv_bytes(argv: &OwnedArgv) -> usize {
    argv.iter().map(|a| a.len() + 4).sum::<usize>() + 16
}

/// A log never grows past this, however large its value (a whole copy costs the value's size,
/// a log this long costs more to replay than it saves).
const MAX_LOG_BYTES: usize = 64 << 20;

/// What an effect does to the tracked keys.
#[derive(Debug, PartialEq)]
enum Reach<'a> {
    /// Touches its first argument only (a single-key command that creates no other key).
    One(&'a [u8]),
    /// May touch any key among its arguments.
    Args,
    /// Removes every key (FLUSHALL, FLUSHDB).
    Flush,
    /// Touches no key (FUNCTION).
    Nothing,
    /// Cannot tell which keys.
    Unknown,
}

/// What an effect does to keys, from its name alone: `None` when it touches keys among its
/// arguments (see [`reach`]).
fn reach_by_name(name: &[u8]) -> Option<Reach<'static>> {
    if name.eq_ignore_ascii_case(b"flushall") || name.eq_ignore_ascii_case(b"flushdb") {
        Some(Reach::Flush)
    } else if name.eq_ignore_ascii_case(b"function") {
        Some(Reach::Nothing)
    } else if name.eq_ignore_ascii_case(b"swapdb") || ferrite_commands::spec::lookup(name).is_none()
    {
        Some(Reach::Unknown)
    } else {
        None
    }
}

fn reach<'a>(argv: &Argv<'a>) -> Reach<'a> {
    if let Some(r) = reach_by_name(argv.name()) {
        return r;
    }
    let Some(spec) = ferrite_commands::spec::lookup(argv.name()) else {
        return Reach::Unknown;
    };
    let Some(key) = argv.get(1) else {
        return Reach::Args;
    };
    // SORT ... STORE reads other keys (BY/GET patterns): its result depends on them, and they
    // may not have reached the target in the same state yet.
    if spec.first_key != 1 || spec.last_key != 1 || spec.name.starts_with("sort") {
        return Reach::Args;
    }
    // GEORADIUS ... STORE other: the spec's one key, plus a key it creates.
    let parts: Vec<&[u8]> = argv.iter().collect();
    let mut data = Vec::new();
    let mut ranges = Vec::with_capacity(parts.len());
    for p in &parts {
        let start = data.len();
        data.extend_from_slice(p);
        ranges.push((start, data.len()));
    }
    let args = ferrite_protocol::Args::new(&data, &ranges);
    if spec.created_keys(&args).iter().any(|k| *k != key) {
        return Reach::Args;
    }
    Reach::One(key)
}

impl DeltaLog {
    fn publish_pending(&self, keys: &HashMap<Box<[u8]>, DeltaKey>) {
        let total: usize = keys.values().map(DeltaKey::pending_bytes).sum();
        self.pending.store(total as u64, Relaxed);
    }

    /// Starts (or restarts) tracking `key` from a copy of `size` bytes just read. Call under the
    /// keyspace lock, in the same hold as the read, so no effect is missed or counted twice.
    pub fn track(&self, key: &[u8], size: usize) {
        let mut keys = self.keys.lock();
        keys.insert(
            key.into(),
            DeltaKey {
                size,
                ..Default::default()
            },
        );
        self.publish_pending(&keys);
    }

    /// Stops tracking `key` (deleted, shipped whole as a small value, or its copy abandoned).
    pub fn forget(&self, key: &[u8]) -> bool {
        let mut keys = self.keys.lock();
        let had = keys.remove(key).is_some();
        if had {
            self.publish_pending(&keys);
        }
        had
    }

    /// Forgets every key (a new import, a flush: the target has none of them); returns them.
    pub fn clear(&self) -> Vec<Box<[u8]>> {
        let mut keys = self.keys.lock();
        let gone = keys.drain().map(|(k, _)| k).collect();
        self.publish_pending(&keys);
        gone
    }

    /// Marks every tracked key to be shipped whole (the target's copy is in doubt); returns
    /// them.
    pub fn invalidate_all(&self) -> Vec<Vec<u8>> {
        let mut keys = self.keys.lock();
        for d in keys.values_mut() {
            d.invalidate();
        }
        self.publish_pending(&keys);
        keys.keys().map(|k| k.to_vec()).collect()
    }

    /// Number of tracked keys.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.lock().len()
    }

    /// What to ship for `key`, whose value now takes `value_size` bytes; takes its log. A key
    /// that goes whole stays tracked (invalid, weighing its size) until its copy restarts the
    /// log ([`DeltaLog::track`]) or the caller forgets it. Call under the keyspace lock (while
    /// draining changes).
    pub fn take(&self, key: &[u8], value_size: usize) -> Pending {
        let mut keys = self.keys.lock();
        let Some(d) = keys.get_mut(key) else {
            return Pending::Untracked;
        };
        // Not reproducible from the log, cheaper whole, or a change that published no effect
        // (a write outside the command path): ship the value itself.
        let whole = d.invalid || d.log.is_empty() || d.log_bytes >= value_size;
        let out = if whole {
            d.invalidate();
            d.size = value_size;
            Pending::Whole
        } else {
            d.log_bytes = 0;
            d.size = value_size;
            Pending::Effects(std::mem::take(&mut d.log))
        };
        self.publish_pending(&keys);
        out
    }

    /// Bytes the tracked keys have left to ship (log bytes, or the size of a key that must go
    /// whole).
    pub fn pending_bytes(&self) -> u64 {
        self.pending.load(Relaxed)
    }
}

impl EffectSink for DeltaLog {
    fn publish(&self, effects: &Effects<'_>) {
        let mut keys = self.keys.lock();
        if keys.is_empty() {
            return;
        }
        let mut changed = false;
        for argv in effects.iter() {
            // Cheap first: an effect none of whose arguments names a tracked key cannot touch
            // one, unless its keys are not among its arguments at all (a flush).
            let named = argv.iter().skip(1).any(|a| keys.contains_key(a));
            let r = if named {
                reach(&argv)
            } else {
                match reach_by_name(argv.name()) {
                    Some(r) => r,
                    None => continue,
                }
            };
            match r {
                Reach::Flush => {
                    keys.clear();
                    changed = true;
                }
                Reach::Nothing => {}
                Reach::Unknown => {
                    keys.values_mut().for_each(DeltaKey::invalidate);
                    changed = true;
                }
                _ if !named => {}
                Reach::One(k) => {
                    let Some(d) = keys.get_mut(k) else { continue };
                    if d.invalid {
                        continue;
                    }
                    let owned = argv.to_owned_argv();
                    d.log_bytes += argv_bytes(&owned);
                    d.log.push((effects.now, owned));
                    // Grown past the value itself: ship the value whole instead.
                    if d.log_bytes > d.size.clamp(64 << 10, MAX_LOG_BYTES) {
                        d.invalidate();
                    }
                    changed = true;
                }
                Reach::Args => {
                    for a in argv.iter().skip(1) {
                        if let Some(d) = keys.get_mut(a) {
                            d.invalidate();
                            changed = true;
                        }
                    }
                }
            }
        }
        if changed {
            self.publish_pending(&keys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(parts: &[&str]) -> OwnedArgv {
        parts.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    fn publish(log: &DeltaLog, now: u64, list: &[OwnedArgv]) {
        log.publish(&Effects::new(now, list));
    }

    #[test]
    fn reach_is_told_from_the_command_table() {
        let r = |parts: &[&str]| {
            let a = argv(parts);
            match reach(&Argv::Owned(&a)) {
                Reach::One(k) => format!("one {}", String::from_utf8_lossy(k)),
                other => format!("{other:?}"),
            }
        };
        assert_eq!(r(&["HSET", "h", "f", "v"]), "one h");
        assert_eq!(r(&["hset", "h", "f", "v", "g", "w"]), "one h");
        assert_eq!(r(&["ZADD", "z", "1", "m"]), "one z");
        assert_eq!(r(&["RPUSH", "l", "a"]), "one l");
        assert_eq!(r(&["PEXPIREAT", "l", "123"]), "one l");
        assert_eq!(r(&["SMOVE", "a", "b", "m"]), "Args");
        assert_eq!(r(&["MSET", "a", "1", "b", "2"]), "Args");
        assert_eq!(r(&["DEL", "a"]), "Args");
        assert_eq!(r(&["RENAME", "a", "b"]), "Args");
        assert_eq!(r(&["LMOVE", "a", "b", "LEFT", "RIGHT"]), "Args");
        assert_eq!(r(&["LMPOP", "2", "x", "y", "LEFT"]), "Args");
        assert_eq!(
            r(&["GEORADIUS", "g", "0", "0", "1", "km", "STORE", "o"]),
            "Args"
        );
        assert_eq!(r(&["SORT", "l", "BY", "w_*", "STORE", "l"]), "Args");
        assert_eq!(r(&["FLUSHALL"]), "Flush");
        assert_eq!(r(&["flushdb", "ASYNC"]), "Flush");
        assert_eq!(r(&["FUNCTION", "FLUSH"]), "Nothing");
        assert_eq!(r(&["NOSUCHCOMMAND", "k"]), "Unknown");
    }

    #[test]
    fn effects_of_a_tracked_key_are_kept_in_order_until_they_outgrow_the_value() {
        let log = DeltaLog::default();
        log.track(b"big", 1 << 20);
        publish(
            &log,
            5,
            &[
                argv(&["HSET", "big", "f", "1"]),
                argv(&["SET", "other", "x"]),
            ],
        );
        publish(&log, 6, &[argv(&["HDEL", "big", "f"])]);
        // A value equal to a tracked key's name is not that key.
        publish(&log, 7, &[argv(&["SET", "other", "big"])]);
        assert!(log.pending_bytes() > 0);
        match log.take(b"big", 1 << 20) {
            Pending::Effects(list) => {
                assert_eq!(list.len(), 2);
                assert_eq!((list[0].0, list[1].0), (5, 6));
                assert_eq!(list[1].1, argv(&["HDEL", "big", "f"]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(log.pending_bytes(), 0);
        assert_eq!(log.take(b"other", 10), Pending::Untracked);
        // Changed without an effect (a write outside the command path): whole.
        assert_eq!(log.take(b"big", 1 << 20), Pending::Whole);
        assert_eq!(
            log.pending_bytes(),
            1 << 20,
            "a key to copy whole weighs its size"
        );
        // Copied again: effects resume; cheaper whole when the log outgrows the value.
        log.track(b"big", 100);
        publish(&log, 8, &[argv(&["HSET", "big", "f", &"x".repeat(500)])]);
        assert_eq!(log.take(b"big", 100), Pending::Whole);
        // A log past the cap (64 KiB for small values) is dropped at once.
        log.track(b"big", 1000);
        for i in 0..200 {
            publish(&log, i, &[argv(&["HSET", "big", "f", &"y".repeat(1000)])]);
        }
        assert_eq!(log.pending_bytes(), 1000);
        assert_eq!(log.take(b"big", 1000), Pending::Whole);
    }

    #[test]
    fn effects_that_involve_other_keys_or_unknown_keys_fall_back_to_the_whole_value() {
        let log = DeltaLog::default();
        log.track(b"a", 1 << 20);
        log.track(b"b", 1 << 20);
        log.track(b"c", 1 << 20);
        // One transaction: an effect on `a` alone, then one involving `a` and another key.
        publish(
            &log,
            1,
            &[argv(&["SADD", "a", "m"]), argv(&["SMOVE", "a", "x", "m"])],
        );
        assert_eq!(log.take(b"a", 1 << 20), Pending::Whole);
        publish(&log, 2, &[argv(&["RENAME", "x", "b"])]);
        assert_eq!(log.take(b"b", 1 << 20), Pending::Whole);
        publish(&log, 3, &[argv(&["SADD", "c", "m"])]);
        publish(&log, 4, &[argv(&["NOSUCHCOMMAND", "zzz"])]);
        assert_eq!(log.take(b"c", 1 << 20), Pending::Whole);
        assert_eq!(log.pending_bytes(), 3 << 20, "all three must go whole");
        // A flush forgets them all (the target flushes too).
        publish(&log, 5, &[argv(&["FLUSHALL"])]);
        assert_eq!(log.len(), 0);
        assert_eq!(log.pending_bytes(), 0);
        assert_eq!(log.take(b"a", 1 << 20), Pending::Untracked);
    }

    #[test]
    fn invalidate_all_sends_every_tracked_key_whole() {
        let log = DeltaLog::default();
        log.track(b"a", 10_000);
        publish(&log, 1, &[argv(&["RPUSH", "a", "x"])]);
        let mut keys = log.invalidate_all();
        keys.sort();
        assert_eq!(keys, vec![b"a".to_vec()]);
        assert_eq!(log.take(b"a", 10_000), Pending::Whole);
        assert!(log.forget(b"a"));
        assert_eq!(log.pending_bytes(), 0);
    }
}
