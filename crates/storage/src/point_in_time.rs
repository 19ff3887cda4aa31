//! A point-in-time copy of one keyspace, read without fork and without pausing writes: the one
//! copy mechanism behind persistence snapshots and backups.
//!
//! [`PointInTimeCopy::open`] fixes a version V of the keyspace; [`PointInTimeCopy::step`] then
//! hands out every entry the keyspace held at V, a step at a time, holding the keyspace lock for
//! one step of the walk only. Writers keep running: before changing or deleting an entry of
//! version ≤ V, the write funnel saves its pre-image for the copy, and a FLUSH hands its old
//! table over ([`Db::open_snapshot`]). Walk ∪ pre-images is exactly the keyspace at V; an entry
//! may be handed out twice (once walked, once as a pre-image), always with the same content, so
//! a consumer keeps either. Entries are the physical content: a key whose expiry has passed but
//! that was not reclaimed yet is handed out with its expiry (a loader drops it).
//!
//! One copy can be open per keyspace at a time: `open` returns `None` while another (a
//! compaction, another backup) is open; retry later. Dropping the copy closes it.

use std::sync::Arc;

use crate::entry::CompactCopy;
use crate::keyspace::{Db, Entry, Keyspace};

/// The entries of steps of a copy copied out of the keyspace, to be read after its lock is
/// released ([`PointInTimeCopy::step_copied`]): each compact entry (one allocation: a short
/// string, a small collection) as its bytes, so that copying it under the lock is a `memcpy`
/// and encoding it happens outside. Reused from step to step ([`CopiedEntries::clear`]).
#[derive(Default)]
pub struct CopiedEntries {
    /// The copied forms, one after another.
    bytes: Vec<u8>,
    /// Where each form ends in `bytes`.
    ends: Vec<usize>,
}

impl CopiedEntries {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The copied entries, in the order they were copied.
    pub fn iter(&self) -> impl Iterator<Item = CompactCopy<'_>> {
        let mut start = 0;
        self.ends.iter().filter_map(move |&end| {
            let form = &self.bytes[start..end];
            start = end;
            // Always `Some`: `push` appends exact copies of compact forms.
            CompactCopy::parse(form)
        })
    }

    fn push(&mut self, form: &[u8]) {
        self.bytes.extend_from_slice(form);
        self.ends.push(self.bytes.len());
    }
}

/// An open point-in-time copy of a keyspace (see the module documentation).
pub struct PointInTimeCopy {
    ks: Arc<Keyspace>,
    version: u64,
    cursor: u64,
    open: bool,
    pre_images: u64,
}

impl PointInTimeCopy {
    /// Opens a copy of `ks` as it is now; `None` if a copy of it is open already.
    pub fn open(ks: &Arc<Keyspace>) -> Option<PointInTimeCopy> {
        PointInTimeCopy::open_with(ks, |_| ()).map(|(c, ())| c)
    }

    /// Like [`PointInTimeCopy::open`], running `f` in the same critical section, for anything
    /// that must line up exactly with the copy's version (a log rotation: the copy + the log
    /// from then on is the keyspace, with no overlap and no gap). Blocking, for a thread that
    /// is not an async worker: like each step, it takes the lock only when it is free
    /// ([`Keyspace::lock_when_free`]), never queued ahead of the tenant's connections.
    pub fn open_with<R>(
        ks: &Arc<Keyspace>,
        f: impl FnOnce(&mut Db) -> R,
    ) -> Option<(PointInTimeCopy, R)> {
        let mut db = ks.lock_when_free();
        let version = db.open_snapshot()?;
        let r = f(&mut db);
        drop(db);
        Some((
            PointInTimeCopy {
                ks: ks.clone(),
                version,
                cursor: 0,
                open: true,
                pre_images: 0,
            },
            r,
        ))
    }

    /// The keyspace version the copy shows (entries with a version ≤ this).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// How many pre-images (entries writers changed while the copy was open) were handed out
    /// so far: the copy's extra memory came from these.
    pub fn pre_images(&self) -> u64 {
        self.pre_images
    }

    /// Hands `f` up to `count` entries of the walk (under the keyspace lock: copy what you need,
    /// do slow work such as I/O outside `f` where you can), then the pre-images writers saved
    /// since the previous step (outside the lock). Returns `true` while there is more; after
    /// the step that returns `false` every entry at the version has been handed out and the
    /// copy is closed (writers stop saving pre-images).
    pub fn step(&mut self, count: usize, f: impl FnMut(&[u8], &Entry)) -> bool {
        self.step_inner(count, None, f)
    }

    /// Like [`PointInTimeCopy::step`], but the walk's compact entries (one allocation each: short
    /// strings, small collections — most keys) are appended to `copied` as their bytes instead of
    /// handed to `f` under the lock: the lock is held for the walk and a `memcpy` per entry, and
    /// the caller encodes them after. Open entries (long strings, big collections: copying them
    /// would cost what encoding does) and the pre-images go to `f` as in `step`.
    pub fn step_copied(
        &mut self,
        count: usize,
        copied: &mut CopiedEntries,
        f: impl FnMut(&[u8], &Entry),
    ) -> bool {
        self.step_inner(count, Some(copied), f)
    }

    fn step_inner(
        &mut self,
        count: usize,
        mut copied: Option<&mut CopiedEntries>,
        mut f: impl FnMut(&[u8], &Entry),
    ) -> bool {
        if !self.open {
            return false;
        }
        let (next, pre) = {
            // Offer the core first (`sched_yield`): when the thread gets it back it starts a
            // fresh time slice, so the scheduler is unlikely to take the core from it during the
            // few µs it then holds the lock — when it does, every writer of the tenant waits
            // until the thread runs again (milliseconds on a busy machine). One system call per
            // step, on this thread, not the writers'; docs/benchmarks.md has the measure.
            std::thread::yield_now();
            // Never queued ahead of the tenant's connections (see `lock_when_free`).
            let mut db = self.ks.lock_when_free();
            let next = db.snapshot_walk(self.cursor, count.max(1), |k, e| {
                match (copied.as_deref_mut(), e.compact_form()) {
                    (Some(copied), Some(form)) => copied.push(form),
                    _ => f(k, e),
                }
            });
            (next, db.take_preimages())
        };
        self.pre_images += pre.len() as u64;
        for (k, e) in &pre {
            f(k, e);
        }
        drop(pre);
        self.cursor = next;
        if next != 0 {
            return true;
        }
        let rest = self.ks.lock().close_snapshot();
        self.open = false;
        self.pre_images += rest.preimages.len() as u64;
        for (k, e) in &rest.preimages {
            f(k, e);
        }
        // The table a FLUSH handed over is dropped here, outside the lock.
        drop(rest);
        false
    }
}

impl Drop for PointInTimeCopy {
    fn drop(&mut self) {
        if self.open {
            let rest = self.ks.lock().close_snapshot();
            drop(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{StrValue, Value, ValueType};
    use std::collections::BTreeMap;

    fn set(ks: &Keyspace, k: &str, v: &str) {
        ks.lock().set(
            k.as_bytes(),
            Value::Str(StrValue::new(v.as_bytes().to_vec())),
            None,
            0,
        );
    }

    fn copy_all(c: &mut PointInTimeCopy, between: impl Fn(usize)) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut steps = 0;
        loop {
            let more = c.step(3, |k, e| {
                if let Value::Str(s) = e.value().to_value() {
                    out.insert(k.to_vec(), s.as_bytes().to_vec());
                }
            });
            if !more {
                return out;
            }
            between(steps);
            steps += 1;
        }
    }

    #[test]
    fn the_copy_is_the_keyspace_at_open_whatever_writers_do_meanwhile() {
        let ks = Arc::new(Keyspace::new());
        for i in 0..50 {
            set(&ks, &format!("k{i}"), "old");
        }
        let expected: BTreeMap<Vec<u8>, Vec<u8>> = (0..50)
            .map(|i| (format!("k{i}").into_bytes(), b"old".to_vec()))
            .collect();
        let mut c = PointInTimeCopy::open(&ks).expect("open");
        assert!(PointInTimeCopy::open(&ks).is_none(), "one copy at a time");
        let got = copy_all(&mut c, |step| {
            // Writers keep going between steps: overwrite, delete, add, and one FLUSH.
            set(&ks, &format!("k{step}"), "new");
            ks.lock().remove(format!("k{}", 49 - step).as_bytes(), 0);
            set(&ks, &format!("added{step}"), "new");
            if step == 5 {
                ks.lock().flush();
            }
        });
        assert_eq!(got, expected);
        // Closed: a new copy can be opened, and it shows the keyspace as it is now.
        let mut again = PointInTimeCopy::open(&ks).expect("reopen");
        let now = copy_all(&mut again, |_| ());
        let live: BTreeMap<Vec<u8>, Vec<u8>> = ks
            .lock()
            .iter()
            .filter_map(|(k, e)| match e.value().to_value() {
                Value::Str(s) => Some((k.to_vec(), s.as_bytes().to_vec())),
                _ => None,
            })
            .collect();
        assert!(!live.is_empty());
        assert_eq!(now, live);
    }

    #[test]
    fn a_replace_during_a_copy_leaves_the_copy_at_its_version_and_bumps_every_version() {
        let ks = Arc::new(Keyspace::new());
        for i in 0..40 {
            set(&ks, &format!("k{i}"), "old");
        }
        let expected: BTreeMap<Vec<u8>, Vec<u8>> = (0..40)
            .map(|i| (format!("k{i}").into_bytes(), b"old".to_vec()))
            .collect();
        let watched = ks.lock().peek(b"k1").map(|e| e.version());
        let fresh = Keyspace::new();
        for i in 0..25 {
            set(&fresh, &format!("k{i}"), "new");
        }
        fresh.lock().set(
            b"ttl",
            Value::Str(StrValue::new(b"t".to_vec())),
            Some(u64::MAX / 2),
            0,
        );
        let fresh_digest = fresh.lock().digest().clone();
        let mut c = PointInTimeCopy::open(&ks).expect("open");
        let got = copy_all(&mut c, |step| {
            if step == 2 {
                let mut f = fresh.lock();
                let old = ks.lock().replace_contents(&mut f, 0);
                assert_eq!(old.len(), 0, "an open copy keeps the old table");
            }
        });
        assert_eq!(got, expected, "the copy shows the keyspace at its version");
        let db = ks.lock();
        assert_eq!(db.len(), 26);
        assert_eq!(*db.digest(), fresh_digest);
        assert_eq!(db.recompute_digest(), fresh_digest);
        assert_eq!(db.keys_with_expiry(), 1);
        assert!(
            db.peek(b"k1").map(|e| e.version()) > watched,
            "WATCH sees a change"
        );
        drop(db);
        let emptied = fresh.lock();
        assert!(emptied.is_empty());
        assert_eq!(emptied.recompute_digest(), *emptied.digest());
    }

    /// Keys of every type, in both entry forms: short strings (with and without expiry),
    /// long strings and big collections (open), small collections (compact).
    fn mixed_keyspace() -> Arc<Keyspace> {
        use crate::list::ListValue;
        use crate::value::{HashValue, SetValue, ZSetValue};
        let ks = Arc::new(Keyspace::new());
        let mut db = ks.lock();
        let later = crate::now_ms() + 3_600_000;
        for i in 0..40u32 {
            let k = |kind: &str| format!("{kind}{i}").into_bytes();
            db.set(&k("s"), Value::string(format!("v{i}")), None, 0);
            db.set(&k("t"), Value::string(vec![b'x'; 100]), Some(later), 0);
            db.set(&k("n"), Value::string(format!("{}", i * 1000)), None, 0);
            db.set(&k("long"), Value::string(vec![b'y'; 3000]), None, 0);
            let n = if i % 2 == 0 { 3 } else { 600 };
            let items: Vec<String> = (0..n).map(|j| format!("e{j}")).collect();
            db.set(
                &k("l"),
                Value::List(ListValue::from_elements(&items)),
                None,
                0,
            );
            let mut h = HashValue::default();
            let mut z = ZSetValue::default();
            for item in &items {
                h.insert(item.as_bytes(), b"v");
                z.insert(item.as_bytes(), f64::from(i));
            }
            db.set(&k("h"), Value::Hash(h), Some(later), 0);
            db.set(&k("z"), Value::ZSet(z), None, 0);
            let ints: Vec<String> = (0..n).map(|j| j.to_string()).collect();
            db.set(&k("i"), Value::Set(SetValue::from_members(&ints)), None, 0);
            db.set(&k("m"), Value::Set(SetValue::from_members(&items)), None, 0);
        }
        drop(db);
        ks
    }

    /// What a copy must reproduce of an entry: type, expiry, modified time, content digest.
    type Content = (ValueType, Option<u64>, u64, u64);

    fn content_of(e: &Entry) -> Content {
        (
            e.value_type(),
            e.expire_at(),
            e.modified_ms(),
            e.value().digest(),
        )
    }

    #[test]
    fn step_copied_hands_out_the_keyspace_at_open_copied_or_through_f() {
        let ks = mixed_keyspace();
        let expected: BTreeMap<Vec<u8>, Content> = ks
            .lock()
            .iter()
            .map(|(k, e)| (k.to_vec(), content_of(e)))
            .collect();
        let mut c = PointInTimeCopy::open(&ks).expect("open");
        let mut got = BTreeMap::new();
        let (mut through_f, mut through_copies) = (0, 0);
        let mut copied = CopiedEntries::default();
        let mut step = 0u32;
        loop {
            copied.clear();
            let more = c.step_copied(7, &mut copied, |k, e| {
                through_f += 1;
                let old = got.insert(k.to_vec(), content_of(e));
                assert!(old.is_none() || old == Some(content_of(e)));
            });
            for e in copied.iter() {
                through_copies += 1;
                let content = (
                    e.value_type(),
                    e.expire_at(),
                    e.modified_ms(),
                    e.value().digest(),
                );
                let old = got.insert(e.key().to_vec(), content);
                assert!(old.is_none() || old == Some(content));
            }
            if !more {
                break;
            }
            // Writers keep going: change and delete keys of both forms, add new ones.
            let mut db = ks.lock();
            let i = step % 40;
            db.set(format!("s{i}").as_bytes(), Value::string("new"), None, 5);
            db.set(
                format!("long{i}").as_bytes(),
                Value::string("short now"),
                None,
                5,
            );
            db.remove(format!("h{}", 39 - i).as_bytes(), 5);
            db.remove(format!("l{i}").as_bytes(), 5);
            db.set(
                format!("added{step}").as_bytes(),
                Value::string("new"),
                None,
                5,
            );
            step += 1;
        }
        assert_eq!(got, expected);
        assert!(
            through_f > 0 && through_copies > 0,
            "both paths ran: {through_f} through f, {through_copies} copied"
        );
    }

    #[test]
    fn a_copied_entry_reads_as_its_entry_and_a_cut_copy_is_refused() {
        let ks = mixed_keyspace();
        let db = ks.lock();
        let mut compact = 0;
        for (k, e) in db.iter() {
            let Some(form) = e.compact_form() else {
                continue;
            };
            compact += 1;
            let c = CompactCopy::parse(form).expect("a compact form parses");
            assert_eq!(c.key(), k);
            assert_eq!(
                (
                    c.value_type(),
                    c.expire_at(),
                    c.modified_ms(),
                    c.value().digest()
                ),
                content_of(e)
            );
            for cut in 0..form.len() {
                assert!(CompactCopy::parse(&form[..cut]).is_none(), "cut at {cut}");
            }
        }
        assert!(compact > 100, "{compact} compact entries");
    }

    #[test]
    fn dropping_an_unfinished_copy_closes_it() {
        let ks = Arc::new(Keyspace::new());
        for i in 0..20 {
            set(&ks, &format!("k{i}"), "v");
        }
        let (mut c, rotated) = PointInTimeCopy::open_with(&ks, |db| db.snapshot_open()).unwrap();
        assert!(rotated, "f runs with the copy open");
        assert!(c.step(2, |_, _| {}));
        drop(c);
        assert!(!ks.lock().snapshot_open());
        assert!(PointInTimeCopy::open(&ks).is_some());
    }
}
