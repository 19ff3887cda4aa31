//! Clients waiting for keys (BLPOP, BZPOPMIN, BLMOVE, XREAD BLOCK, ...), per keyspace.
//!
//! A command that finds nothing to serve registers a [`Waiter`] on its keys with
//! [`crate::Db::block`] and its connection waits holding nothing: no lock, no thread. Every
//! write that changes a key somebody waits for marks the key *ready* (the write funnel does it,
//! so no command can forget; only an access that changes what no waiter reads, a stream
//! consumer's seen time, says so with `Occupied::unseen_by_waiters`), and before the lock is released after that command — after the
//! whole transaction or script when one is running — [`crate::Db::serve_blocked`] offers each
//! ready key to its waiters in the order they blocked (Redis's fairness: first blocked, first
//! served). A waiter runs its command against the keyspace right there, under the same lock, so
//! a pushed value is popped by exactly one waiter and nobody else can see it in between; what a
//! waiter changes may make other keys ready (BLMOVE pushes), and those are served in the same
//! round.
//!
//! The keyspace knows nothing of what a waiter is: the server implements the trait (it runs the
//! waiting command and hands the reply to the waiting connection).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::keyspace::Db;

/// A client waiting for keys, as the keyspace sees it.
pub trait Waiter: Send + Sync {
    /// The keys it waits for.
    fn keys(&self) -> &[Box<[u8]>];

    /// Called under the keyspace lock, in blocking order, after a write changed `key` (created,
    /// modified or deleted it). Runs the waiting command if it can be served now. Returns `true`
    /// when the waiter is done — served, or gone (its connection closed) — and leaves every
    /// queue; `false` leaves it waiting in its place.
    fn serve(&self, db: &mut Db, key: &[u8], now: u64) -> bool;

    /// Must be woken when a key of its is deleted or given another type, not only when one is
    /// written as the type it waits for (Redis 7.2's `unblock_on_nokey`: a blocked XREADGROUP,
    /// which then answers `-NOGROUP` / `-WRONGTYPE`). Counted by INFO
    /// `total_blocking_keys_on_nokey`; every waiter is offered every change either way.
    fn unblock_on_nokey(&self) -> bool {
        false
    }
}

/// The waiters of one key, first blocked first.
#[derive(Default)]
struct Queue {
    waiters: VecDeque<Arc<dyn Waiter>>,
    /// How many of them are [`Waiter::unblock_on_nokey`].
    nokey: usize,
    /// The key is in [`Blocking::ready`] (marked once however often it is written).
    ready: bool,
    /// Its waiters are being served: their own changes to the key do not make it ready again
    /// (the round goes on through the queue anyway).
    serving: bool,
}

/// The waiters of one keyspace, by key, and the keys made ready since the last serving round.
#[derive(Default)]
pub(crate) struct Blocking {
    queues: HashMap<Box<[u8]>, Queue, ahash::RandomState>,
    ready: VecDeque<Box<[u8]>>,
    waiters: usize,
    /// A serving round is running: waiters' own commands run inside it and must not start
    /// another.
    serving: bool,
}

fn same(a: &Arc<dyn Waiter>, b: &Arc<dyn Waiter>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

impl Blocking {
    /// Somebody waits for some key (the write funnel's cheap check).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        !self.queues.is_empty()
    }

    /// The keys somebody waits for.
    pub(crate) fn waited_keys(&self) -> impl Iterator<Item = &Box<[u8]>> {
        self.queues.keys()
    }

    /// Marks `key` ready if somebody waits for it.
    pub(crate) fn signal(&mut self, key: &[u8]) {
        if let Some(q) = self.queues.get_mut(key)
            && !q.ready
            && !q.serving
        {
            q.ready = true;
            self.ready.push_back(key.into());
        }
    }

    /// Marks every waited-for key ready (FLUSHALL deleted them all: a blocked XREADGROUP must
    /// learn that its stream is gone).
    pub(crate) fn signal_all(&mut self) {
        let keys: Vec<Box<[u8]>> = self.queues.keys().cloned().collect();
        for key in keys {
            self.signal(&key);
        }
    }
}

impl Db {
    /// Registers a waiter on each of its keys (a key named twice counts once), at the end of
    /// each key's queue.
    pub fn block(&mut self, w: Arc<dyn Waiter>) {
        let nokey = w.unblock_on_nokey();
        let (b, stats) = self.blocking_and_stats();
        for key in w.keys() {
            let q = match b.queues.get_mut(&**key) {
                Some(q) => q,
                None => b.queues.entry(key.clone()).or_default(),
            };
            // A key named again finds the waiter already at the end of its queue.
            if !q.waiters.back().is_some_and(|x| same(x, &w)) {
                if q.waiters.is_empty() {
                    stats.blocking_keys.fetch_add(1, Relaxed);
                }
                q.waiters.push_back(w.clone());
                if nokey {
                    if q.nokey == 0 {
                        stats.blocking_keys_on_nokey.fetch_add(1, Relaxed);
                    }
                    q.nokey += 1;
                }
            }
        }
        b.waiters += 1;
    }

    /// Takes a waiter off every queue. Returns whether it was waiting (false: it was served or
    /// dropped as gone before).
    pub fn unblock(&mut self, w: &Arc<dyn Waiter>) -> bool {
        let nokey = w.unblock_on_nokey();
        let (b, stats) = self.blocking_and_stats();
        let mut found = false;
        for key in w.keys() {
            let Some(q) = b.queues.get_mut(&**key) else {
                continue;
            };
            // Usually the first (served first blocked first): found without a scan.
            let removed = if q.waiters.front().is_some_and(|x| same(x, w)) {
                q.waiters.pop_front();
                1
            } else {
                let before = q.waiters.len();
                q.waiters.retain(|x| !same(x, w));
                before - q.waiters.len()
            };
            if removed > 0 {
                found = true;
                if q.waiters.is_empty() {
                    stats.blocking_keys.fetch_sub(1, Relaxed);
                }
                if nokey {
                    q.nokey -= removed;
                    if q.nokey == 0 {
                        stats.blocking_keys_on_nokey.fetch_sub(1, Relaxed);
                    }
                }
            }
            // A queue being served stays until its round is over (the round looks it up).
            if q.waiters.is_empty() && !q.serving {
                b.queues.remove(&**key);
            }
        }
        if found {
            b.waiters -= 1;
        }
        found
    }

    /// How many waiters this keyspace has.
    pub fn blocked_waiters(&self) -> usize {
        self.blocking().waiters
    }

    /// How many distinct keys somebody waits for.
    pub fn blocked_keys(&self) -> usize {
        self.blocking()
            .queues
            .values()
            .filter(|q| !q.waiters.is_empty())
            .count()
    }

    /// Serves the waiters of every key made ready since the last round, first blocked first,
    /// until no key is ready any more. The execution path calls this after each command and
    /// after each transaction (never inside one), under the lock; it costs one check when no key
    /// is ready.
    #[inline]
    pub fn serve_blocked(&mut self, now: u64) {
        let b = self.blocking();
        if b.ready.is_empty() || b.serving {
            return;
        }
        self.serve_round(now);
    }

    fn serve_round(&mut self, now: u64) {
        self.blocking_mut().serving = true;
        while let Some(key) = self.blocking_mut().ready.pop_front() {
            let Some(q) = self.blocking_mut().queues.get_mut(&key) else {
                continue;
            };
            q.ready = false;
            q.serving = true;
            let mut i = 0;
            loop {
                let Some(w) = self
                    .blocking()
                    .queues
                    .get(&key)
                    .and_then(|q| q.waiters.get(i))
                    .cloned()
                else {
                    break;
                };
                let existed = self.peek(&key).is_some();
                if w.serve(self, &key, now) {
                    self.unblock(&w);
                    // The waiter took the last of the key: the others wait for the next write.
                    if existed && self.peek(&key).is_none() {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            let b = self.blocking_mut();
            if let Some(q) = b.queues.get_mut(&key) {
                q.serving = false;
                if q.waiters.is_empty() {
                    b.queues.remove(&key);
                }
            }
        }
        self.blocking_mut().serving = false;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use parking_lot::Mutex;

    use super::*;
    use crate::{Keyspace, ListValue, Slot, Value};

    /// Pops one element of the first key that has one, like BLPOP.
    struct Popper {
        keys: Vec<Box<[u8]>>,
        got: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
        gone: bool,
        nokey: bool,
        tries: AtomicUsize,
    }

    impl Popper {
        fn new(keys: &[&str]) -> Arc<Popper> {
            Arc::new(Popper {
                keys: keys.iter().map(|k| k.as_bytes().into()).collect(),
                got: Mutex::new(None),
                gone: false,
                nokey: false,
                tries: AtomicUsize::new(0),
            })
        }
    }

    impl Waiter for Popper {
        fn keys(&self) -> &[Box<[u8]>] {
            &self.keys
        }

        fn unblock_on_nokey(&self) -> bool {
            self.nokey
        }

        fn serve(&self, db: &mut Db, _key: &[u8], now: u64) -> bool {
            self.tries.fetch_add(1, Ordering::Relaxed);
            if self.gone {
                return true;
            }
            for k in &self.keys {
                if let Slot::Occupied(mut o) = db.entry(k, now)
                    && let Value::List(l) = o.get_mut().value_mut()
                    && let Some(e) = l.pop_front()
                {
                    *self.got.lock() = Some((k.to_vec(), e.to_vec()));
                    return true;
                }
            }
            false
        }
    }

    fn push(db: &mut Db, key: &str, items: &[&str]) {
        match db.entry(key.as_bytes(), 1) {
            Slot::Occupied(mut o) => {
                if let Value::List(l) = o.get_mut().value_mut() {
                    for i in items {
                        l.push_back(i.as_bytes());
                    }
                }
            }
            Slot::Vacant(v) => {
                let mut l = ListValue::default();
                for i in items {
                    l.push_back(i.as_bytes());
                }
                v.insert(Value::List(l), None);
            }
        }
    }

    fn got(p: &Popper) -> Option<(String, String)> {
        p.got.lock().as_ref().map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
    }

    #[test]
    fn first_blocked_first_served_and_one_value_one_waiter() {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        let (a, b, c) = (
            Popper::new(&["k"]),
            Popper::new(&["k"]),
            Popper::new(&["k"]),
        );
        for p in [&a, &b, &c] {
            db.block(p.clone());
        }
        assert_eq!(db.blocked_waiters(), 3);
        push(&mut db, "k", &["x", "y"]);
        db.serve_blocked(1);
        assert_eq!(got(&a), Some(("k".into(), "x".into())));
        assert_eq!(got(&b), Some(("k".into(), "y".into())));
        assert_eq!(got(&c), None);
        // The key was emptied by b: c was not even asked.
        assert_eq!(c.tries.load(Ordering::Relaxed), 0);
        assert_eq!(db.blocked_waiters(), 1);
        assert!(db.peek(b"k").is_none());
        push(&mut db, "k", &["z"]);
        db.serve_blocked(1);
        assert_eq!(got(&c), Some(("k".into(), "z".into())));
        assert_eq!(db.blocked_waiters(), 0);
        assert_eq!(db.blocked_keys(), 0);
    }

    #[test]
    fn waiters_on_several_keys_leave_every_queue() {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        let a: Arc<Popper> = Popper::new(&["k1", "k2", "k1"]);
        let b = Popper::new(&["k2"]);
        db.block(a.clone());
        db.block(b.clone());
        assert_eq!(db.blocked_keys(), 2);
        push(&mut db, "k2", &["v"]);
        db.serve_blocked(1);
        assert_eq!(got(&a), Some(("k2".into(), "v".into())));
        assert_eq!(got(&b), None);
        assert_eq!(db.blocked_keys(), 1, "a left k1's queue too");
        let b_dyn: Arc<dyn Waiter> = b.clone();
        assert!(db.unblock(&b_dyn));
        assert!(!db.unblock(&b_dyn));
        assert_eq!(db.blocked_waiters(), 0);
        assert_eq!(db.blocked_keys(), 0);
    }

    #[test]
    fn nothing_is_served_without_a_write_or_inside_a_round() {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        push(&mut db, "k", &["x"]);
        let a = Popper::new(&["k"]);
        db.block(a.clone());
        // Blocking is not a write: the value pushed before stays until the next change.
        db.serve_blocked(1);
        assert_eq!(a.tries.load(Ordering::Relaxed), 0);
        // A write to another key wakes nobody.
        push(&mut db, "other", &["x"]);
        db.serve_blocked(1);
        assert_eq!(a.tries.load(Ordering::Relaxed), 0);
        push(&mut db, "k", &["y"]);
        db.serve_blocked(1);
        assert_eq!(got(&a), Some(("k".into(), "x".into())));
    }

    #[test]
    fn gone_waiters_are_dropped_when_their_key_is_written() {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        let gone = Arc::new(Popper {
            gone: true,
            ..Arc::into_inner(Popper::new(&["k"])).unwrap()
        });
        let b = Popper::new(&["k"]);
        db.block(gone.clone());
        db.block(b.clone());
        push(&mut db, "k", &["x"]);
        db.serve_blocked(1);
        assert_eq!(got(&b), Some(("k".into(), "x".into())));
        assert_eq!(db.blocked_waiters(), 0);
    }

    /// INFO's `total_blocking_keys` / `total_blocking_keys_on_nokey`, from the registrations:
    /// a key counts once however many wait for it, as "on nokey" while one of its waiters must
    /// be woken by a deletion, and both go back to 0 as waiters are served or leave.
    #[test]
    fn blocking_key_counters_follow_the_registrations() {
        let ks = Keyspace::new();
        let counts = |ks: &Keyspace| {
            let st = ks.stats();
            (
                st.blocking_keys.load(Ordering::Relaxed),
                st.blocking_keys_on_nokey.load(Ordering::Relaxed),
            )
        };
        let mut db = ks.lock();
        let list = Popper::new(&["k"]);
        db.block(list.clone());
        drop(db);
        assert_eq!(counts(&ks), (1, 0));
        let group = Arc::new(Popper {
            nokey: true,
            ..Arc::into_inner(Popper::new(&["k", "other"])).unwrap()
        });
        let group2 = Arc::new(Popper {
            nokey: true,
            ..Arc::into_inner(Popper::new(&["k"])).unwrap()
        });
        let mut db = ks.lock();
        db.block(group.clone());
        db.block(group2.clone());
        drop(db);
        assert_eq!(counts(&ks), (2, 2));
        let mut db = ks.lock();
        let g: Arc<dyn Waiter> = group.clone();
        assert!(db.unblock(&g));
        drop(db);
        assert_eq!(counts(&ks), (1, 1), "group2 still waits on k");
        let mut db = ks.lock();
        // Served (the list waiter pops; group2 pops next), they leave the queues.
        push(&mut db, "k", &["x", "y"]);
        db.serve_blocked(1);
        drop(db);
        assert_eq!(got(&list), Some(("k".into(), "x".into())));
        assert_eq!(got(&group2), Some(("k".into(), "y".into())));
        assert_eq!(counts(&ks), (0, 0));
    }
}
