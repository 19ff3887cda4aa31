//! One sub-table of the keyspace's [`super::ShardedTable`]: buckets of one cache line that point
//! straight at the entries (the design of Valkey 8.1's `hashtable.c`, written anew here).
//!
//! A bucket is 64 bytes when a value is a pointer (an `Entry`): seven one-byte *tags* (bits
//! 40..48 of each slot's key hash), a byte holding the number of used slots and a *chained*
//! flag, and seven 8-byte cells. A lookup reads the home bucket (`hash & mask`), compares the
//! tags, and dereferences only the entries whose tag matches (a non-matching entry is skipped
//! with a 1/256 chance of a wasted dereference), so a key that sits in its home bucket costs two
//! cache misses — the bucket and the entry — where the chained node table it replaced cost three
//! (bucket head, node, entry).
//!
//! A full bucket chains to a *child* bucket: its last cell then holds the child's index instead
//! of an entry (a chained bucket holds six entries, its child the seventh onwards). A chain's
//! entries always fill a prefix of its cells (every bucket but the last is full, the last holds
//! its entries first): an insert appends to the chain's last bucket, a removal moves the chain's
//! last entry into the hole and gives back a child bucket left with none or one entry. Child
//! buckets live in segments that never move (numbered after the home buckets); freed ones are
//! reused first.
//!
//! **Fill limit.** The bucket count is a power of two and doubles when the keys reach
//! [`GROW_AT`] = 16 per home bucket (so just after a doubling there are 8 per home bucket and
//! most home buckets have one child); it halves when they fall below [`SHRINK_BELOW`] = 4.
//! Emptied, it gives all its memory back, except a lone home bucket without children, which it
//! keeps (a key created and deleted over and over costs no allocation then).
//! The limit was chosen by the memory arithmetic (keys per home bucket are Poisson-distributed
//! with mean λ; a chain of n buckets holds 6n+1): a 64-byte bucket per key-holding share comes to
//! 12.7 bytes per key at λ = 8, 12.0 at λ = 12.2 and 11.7 at λ = 15.3 — which is where 200,000
//! keys (3,125 per shard, 256 home buckets) and 1,000,000 keys (15,625 per shard, 1,024) land —
//! against 13.4 at λ = 6 and 18.6 at λ = 3.8 for a limit of one bucket's worth (7) per home
//! bucket. The price is lookups that continue into a child: about 20% of keys at λ = 8, 45% at
//! λ = 12, 55% at λ = 15 are in a child (one more cache miss, which [`super::ShardedTable::warm`]
//! overlaps for pipelined batches).
//!
//! **Resizing** is all at once (every entry's key is hashed again and appended to its chain in
//! a new array of home buckets): a shard holds a sixty-fourth of the keys, so one resize is a
//! sixty-fourth of the pause of a whole table, and there is no incremental rehashing with two
//! tables to look in (Valkey's `hashtable.c` rehashes incrementally; we do not need to).
//!
//! **SCAN** walks home buckets in reverse-binary order (a home bucket with its chain at each
//! step), exactly like the chained table: entries never leave their home bucket's chain except
//! in a resize, which splits or folds home buckets the way the cursor expects, so a key present
//! for the whole scan is returned at least once.

use std::mem::ManuallyDrop;

use super::{OwnsKey, hash_key, next_cursor, prefetch};

/// Cells in a bucket: with 8-byte values, the tags and the count byte make a 64-byte line.
pub(super) const CELLS: usize = 7;
/// Keys per home bucket at which the table doubles (see the module docs for why 16).
const GROW_AT: usize = 16;
/// Keys per home bucket below which the table halves (a quarter of [`GROW_AT`], so that a table
/// that just halved is not about to double again).
const SHRINK_BELOW: usize = 4;
/// The bit of [`Bucket::meta`] saying the last cell holds a child bucket's index.
const CHAINED: u8 = 0x80;
/// The bits of [`Bucket::meta`] holding the number of used cells.
const USED: u8 = 0x0f;

/// The byte of a key's hash kept beside its cell. Bits 40..48: the bucket index takes the low
/// bits (never 40 of them) and the shard the top 6.
#[inline]
fn tag_of(hash: u64) -> u8 {
    (hash >> 40) as u8
}

/// A cell: an entry, or in a chained bucket's last cell the child bucket's index.
union Cell<V> {
    value: ManuallyDrop<V>,
    child: u32,
}

impl<V> Cell<V> {
    const EMPTY: u32 = 0;

    fn empty() -> Self {
        Cell { child: Self::EMPTY }
    }
}

/// One cache line of the table (for 8-byte values).
///
/// Invariant, kept by every method below and relied on by each `unsafe` block: the cells
/// `0..used()` hold initialized values (their `value` field); when [`CHAINED`] is set,
/// `used() <= CELLS - 1` and the last cell holds a child index (its `child` field); every other
/// cell holds nothing that needs dropping.
#[repr(C, align(64))]
struct Bucket<V> {
    tags: [u8; CELLS],
    meta: u8,
    cells: [Cell<V>; CELLS],
}

impl<V> Bucket<V> {
    fn new() -> Self {
        Bucket {
            tags: [0; CELLS],
            meta: 0,
            cells: std::array::from_fn(|_| Cell::empty()),
        }
    }

    #[inline]
    fn used(&self) -> usize {
        usize::from(self.meta & USED)
    }

    /// Entries this bucket can hold: six when its last cell links a child.
    #[inline]
    fn capacity(&self) -> usize {
        if self.meta & CHAINED != 0 {
            CELLS - 1
        } else {
            CELLS
        }
    }

    #[inline]
    fn child(&self) -> Option<usize> {
        if self.meta & CHAINED != 0 {
            // SAFETY: a chained bucket's last cell holds a child index (the invariant above).
            Some(unsafe { self.cells[CELLS - 1].child } as usize)
        } else {
            None
        }
    }

    #[inline]
    fn value(&self, cell: usize) -> &V {
        assert!(cell < self.used(), "table position past a bucket's entries");
        // SAFETY: cells below `used()` hold initialized values (the invariant above).
        unsafe { &self.cells[cell].value }
    }

    #[inline]
    fn value_mut(&mut self, cell: usize) -> &mut V {
        assert!(cell < self.used(), "table position past a bucket's entries");
        // SAFETY: as in `value`.
        unsafe { &mut self.cells[cell].value }
    }

    /// The used cells whose tag is `tag`, as a mask with bit `8 * c + 7` set for cell `c`
    /// (compared all at once, as bytes of one word; a cell just above a matching one may be
    /// reported too, which the caller's check of the tag itself weeds out).
    #[inline]
    fn tag_matches(&self, tag: u8) -> u64 {
        const ONES: u64 = 0x0101_0101_0101_0101;
        let t = self.tags;
        let word = u64::from_le_bytes([t[0], t[1], t[2], t[3], t[4], t[5], t[6], 0]);
        let x = word ^ (u64::from(tag) * ONES);
        let zero_bytes = x.wrapping_sub(ONES) & !x & (ONES << 7);
        zero_bytes & ((1u64 << (8 * self.used())) - 1)
    }

    /// The values, in cell order.
    fn values(&self) -> impl Iterator<Item = &V> {
        (0..self.used()).map(|c| self.value(c))
    }

    /// Appends a value after the used cells; the caller made sure there is room.
    #[inline]
    fn push(&mut self, tag: u8, value: V) -> usize {
        let c = self.used();
        assert!(c < self.capacity(), "push into a full bucket");
        self.tags[c] = tag;
        self.cells[c] = Cell {
            value: ManuallyDrop::new(value),
        };
        self.meta += 1;
        c
    }

    /// Removes the last used cell's value.
    fn pop(&mut self) -> (u8, V) {
        let c = self.used();
        assert!(c > 0, "pop from an empty bucket");
        self.meta -= 1;
        let cell = std::mem::replace(&mut self.cells[c - 1], Cell::empty());
        // SAFETY: cell `c - 1` was below `used()`, so it held an initialized value, and it is
        // outside the used cells now, so nothing reads or drops it again.
        (
            self.tags[c - 1],
            ManuallyDrop::into_inner(unsafe { cell.value }),
        )
    }

    /// Puts `value` into a used cell, returning the value that was there.
    fn replace(&mut self, cell: usize, tag: u8, value: V) -> V {
        assert!(cell < self.used(), "replace past a bucket's entries");
        self.tags[cell] = tag;
        let old = std::mem::replace(
            &mut self.cells[cell],
            Cell {
                value: ManuallyDrop::new(value),
            },
        );
        // SAFETY: the cell was below `used()`: it held an initialized value, now moved out (the
        // cell holds the new one).
        ManuallyDrop::into_inner(unsafe { old.value })
    }

    /// Turns a full bucket into a chained one: its last value moves out (returned) and its last
    /// cell links `child`.
    fn chain_to(&mut self, child: u32) -> (u8, V) {
        assert!(self.meta & CHAINED == 0 && self.used() == CELLS);
        let moved = self.pop();
        self.cells[CELLS - 1] = Cell { child };
        self.meta |= CHAINED;
        moved
    }

    /// Forgets the child link (the child was emptied); the last cell is free again.
    fn unchain(&mut self) {
        assert!(self.meta & CHAINED != 0);
        self.meta &= !CHAINED;
        self.cells[CELLS - 1] = Cell::empty();
    }
}

impl<V> Drop for Bucket<V> {
    fn drop(&mut self) {
        for c in 0..self.used() {
            // SAFETY: cells below `used()` hold initialized values, each dropped once here (the
            // bucket is gone afterwards).
            unsafe { ManuallyDrop::drop(&mut self.cells[c].value) }
        }
    }
}

/// Where a value is in a [`BucketTable`]: its bucket and cell.
pub(super) type Spot = (u32, u8);

/// A hash table of values that own their keys; see the module docs.
pub(super) struct BucketTable<V> {
    /// The home buckets: a power of two of them, none while the table has never held a key.
    home: Box<[Bucket<V>]>,
    /// The child buckets, in segments of `segment` buckets that never move: a new child takes
    /// the next bucket of the last segment or a new segment, so no array is copied and freed
    /// between two resizes (freed arrays left holes in the allocator's heap that small entries
    /// did not fill for a while: 15–35 bytes per key of resident memory at 200,000 keys when
    /// the children were one growing `Vec`).
    children: Vec<Box<[Bucket<V>]>>,
    /// Buckets per child segment: a power of two, a sixteenth of the home buckets (2 to 64),
    /// fixed between two resizes.
    segment: usize,
    /// Child buckets handed out (numbered from `home.len()` on, in segment order).
    issued: usize,
    /// Child buckets that were emptied and not reused yet.
    free: Vec<u32>,
    len: usize,
}

impl<V: OwnsKey> Default for BucketTable<V> {
    fn default() -> Self {
        BucketTable {
            home: Box::default(),
            children: Vec::new(),
            segment: 2,
            issued: 0,
            free: Vec::new(),
            len: 0,
        }
    }
}

/// The buckets a chain needs for `n` entries (the first holds seven, each further one six).
#[cfg(test)]
fn chain_buckets(n: usize) -> usize {
    if n <= CELLS {
        1
    } else {
        (n - 1).div_ceil(CELLS - 1)
    }
}

fn new_buckets<V>(n: usize) -> Box<[Bucket<V>]> {
    (0..n).map(|_| Bucket::new()).collect()
}

impl<V: OwnsKey> BucketTable<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn home_of(&self, hash: u64) -> usize {
        (hash as usize) & (self.home.len() - 1)
    }

    #[inline]
    fn bucket(&self, b: usize) -> &Bucket<V> {
        match self.home.get(b) {
            Some(bucket) => bucket,
            None => {
                let c = b - self.home.len();
                &self.children[c >> self.segment.trailing_zeros()][c & (self.segment - 1)]
            }
        }
    }

    #[inline]
    fn bucket_mut(&mut self, b: usize) -> &mut Bucket<V> {
        let home = self.home.len();
        if b < home {
            &mut self.home[b]
        } else {
            let c = b - home;
            &mut self.children[c >> self.segment.trailing_zeros()][c & (self.segment - 1)]
        }
    }

    /// Every bucket there is (home, then children, issued or not).
    fn all_buckets(&self) -> impl Iterator<Item = &Bucket<V>> {
        self.home
            .iter()
            .chain(self.children.iter().flat_map(|s| s.iter()))
    }

    fn bucket_count(&self) -> usize {
        self.home.len() + self.children.len() * self.segment
    }

    /// Bytes the table holds for its buckets (with unused capacity): what a key costs besides
    /// its entry, times the keys.
    pub fn heap_bytes(&self) -> usize {
        self.bucket_count() * std::mem::size_of::<Bucket<V>>()
            + self.children.capacity() * std::mem::size_of::<Box<[Bucket<V>]>>()
            + self.free.capacity() * std::mem::size_of::<u32>()
    }

    pub fn find_hashed(&self, key: &[u8], hash: u64) -> Option<Spot> {
        if self.len == 0 {
            return None;
        }
        let tag = tag_of(hash);
        let mut b = self.home_of(hash);
        loop {
            let bucket = self.bucket(b);
            let mut matches = bucket.tag_matches(tag);
            while matches != 0 {
                let c = matches.trailing_zeros() as usize / 8;
                if bucket.tags[c] == tag && bucket.value(c).key() == key {
                    return Some((b as u32, c as u8));
                }
                matches &= matches - 1;
            }
            b = bucket.child()?;
        }
    }

    /// Where the home bucket of `hash` is, to prefetch it (see [`super::ShardedTable::warm`]).
    #[inline]
    pub fn home_addr(&self, hash: u64) -> Option<*const u8> {
        if self.home.is_empty() {
            return None;
        }
        Some((&self.home[self.home_of(hash)] as *const Bucket<V>).cast())
    }

    /// The second stage of warming (the bucket is expected in the cache): prefetches the
    /// entries whose tag matches in bucket `b` and returns the child to warm next when none did.
    #[inline]
    pub fn warm_bucket(&self, b: usize, hash: u64) -> Option<usize> {
        let bucket = self.bucket(b);
        let tag = tag_of(hash);
        let mut matches = bucket.tag_matches(tag);
        if matches != 0 {
            while matches != 0 {
                let c = matches.trailing_zeros() as usize / 8;
                prefetch(bucket.value(c).home());
                matches &= matches - 1;
            }
            return None;
        }
        let child = bucket.child()?;
        prefetch((self.bucket(child) as *const Bucket<V>).cast());
        Some(child)
    }

    /// The home bucket of `hash` (for [`Self::warm_bucket`]), if the table has any.
    #[inline]
    pub fn home_bucket(&self, hash: u64) -> Option<usize> {
        (!self.home.is_empty()).then(|| self.home_of(hash))
    }

    pub fn value_at(&self, (b, c): Spot) -> &V {
        self.bucket(b as usize).value(usize::from(c))
    }

    pub fn value_at_mut(&mut self, (b, c): Spot) -> &mut V {
        self.bucket_mut(b as usize).value_mut(usize::from(c))
    }

    /// Inserts a value whose key is absent, given its hash; returns where it went.
    pub fn insert_new_hashed(&mut self, hash: u64, value: V) -> Spot {
        if self.len + 1 > self.home.len() * GROW_AT {
            self.rebuild((self.home.len() * 2).max(1));
        }
        self.len += 1;
        self.place(hash, value)
    }

    /// Appends to the chain of `hash`'s home bucket (the table has room for one more key).
    fn place(&mut self, hash: u64, value: V) -> Spot {
        let tag = tag_of(hash);
        let mut b = self.home_of(hash);
        while let Some(child) = self.bucket(b).child() {
            b = child;
        }
        let last = self.bucket_mut(b);
        if last.used() < last.capacity() {
            let c = last.push(tag, value);
            return (b as u32, c as u8);
        }
        // The chain's last bucket is full: its last entry and the new one go to a new child.
        let child = self.new_child();
        let (moved_tag, moved) = self.bucket_mut(b).chain_to(child as u32);
        let bucket = self.bucket_mut(child);
        bucket.push(moved_tag, moved);
        let c = bucket.push(tag, value);
        (child as u32, c as u8)
    }

    /// An empty child bucket: a freed one, the next one of the last segment, or the first of
    /// a new segment.
    fn new_child(&mut self) -> usize {
        if let Some(b) = self.free.pop() {
            return b as usize;
        }
        if self.issued == self.children.len() * self.segment {
            self.children.push(new_buckets(self.segment));
        }
        let b = self.home.len() + self.issued;
        assert!(b < u32::MAX as usize, "table is full");
        self.issued += 1;
        b
    }

    /// Removes the value at `spot` (from [`Self::find_hashed`]). Other positions change.
    pub fn remove_at(&mut self, (b, c): Spot) -> V {
        let (b, c) = (b as usize, usize::from(c));
        // The chain's last bucket from here, and the one before it.
        let mut prev = None;
        let mut last = b;
        while let Some(child) = self.bucket(last).child() {
            prev = Some(last);
            last = child;
        }
        let (tag, value) = self.bucket_mut(last).pop();
        let removed = if (last, self.bucket(last).used()) == (b, c) {
            value
        } else {
            // Fill the hole with the chain's last entry, so the chain stays a prefix.
            self.bucket_mut(b).replace(c, tag, value)
        };
        self.len -= 1;
        if last >= self.home.len() && self.bucket(last).used() <= 1 {
            // A child with none or one entry left goes back; its entry, if any, takes the link's
            // cell in the bucket before it.
            let parent = match prev {
                Some(p) => p,
                None => self.parent_of(last, hash_key(removed.key())),
            };
            let rest = (self.bucket(last).used() == 1).then(|| self.bucket_mut(last).pop());
            let parent = self.bucket_mut(parent);
            parent.unchain();
            if let Some((tag, v)) = rest {
                parent.push(tag, v);
            }
            self.free.push(last as u32);
        }
        let home = self.home.len();
        if self.len == 0 {
            if home > 1 || !self.children.is_empty() {
                // Give the memory back; positions are all invalid anyway.
                *self = Self::default();
            }
            // A table of one home bucket and no children keeps that bucket (64 bytes): a key
            // created and deleted over and over alone in its shard (a job queue's list that a
            // push creates and a blocked pop empties) would otherwise allocate, rebuild and free
            // the table each time: about 860 instructions per BLPOP/LPUSH round trip
            // (docs/benchmarks.md, "The BLPOP ping-pong and EVALSHA at -P1", issue 14).
        } else if home > 1 && self.len < home * SHRINK_BELOW {
            self.rebuild(home / 2);
        } else if self.free.len() > 64 && self.free.len() * 2 > self.issued {
            // Most children were emptied (mass deletion): give their memory back.
            self.rebuild(home);
        }
        removed
    }

    /// The bucket whose link points at `child`, on the chain of `hash`'s home bucket.
    fn parent_of(&self, child: usize, hash: u64) -> usize {
        let mut b = self.home_of(hash);
        loop {
            match self.bucket(b).child() {
                Some(next) if next == child => return b,
                Some(next) => b = next,
                None => unreachable!("a child bucket is not on its key's chain"),
            }
        }
    }

    /// Makes room for `additional` more keys: the home buckets a table of the final size has,
    /// so a load that knows its size never rehashes (children are added as chains need them,
    /// without copying anything).
    pub fn reserve(&mut self, additional: usize) {
        let want = self.len + additional;
        let mut home = self.home.len().max(1);
        while want > home * GROW_AT {
            home *= 2;
        }
        if home != self.home.len() {
            self.rebuild(home);
        }
    }

    /// Rebuilds the table with `home` home buckets: every key hashed again and appended to its
    /// new chain.
    fn rebuild(&mut self, home: usize) {
        let old_home = std::mem::replace(&mut self.home, new_buckets(home));
        let old_children = std::mem::take(&mut self.children);
        self.segment = (home / 16).clamp(2, 64);
        self.issued = 0;
        self.free = Vec::new();
        for mut bucket in old_home
            .into_vec()
            .into_iter()
            .chain(old_children.into_iter().flat_map(|s| s.into_vec()))
        {
            while bucket.used() > 0 {
                let (_, v) = bucket.pop();
                self.place(hash_key(v.key()), v);
            }
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.all_buckets().flat_map(Bucket::values)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.home
            .iter_mut()
            .chain(self.children.iter_mut().flat_map(|s| s.iter_mut()))
            .flat_map(|b| {
                let used = b.used();
                b.cells[..used].iter_mut().map(|cell| {
                    // SAFETY: cells below `used()` hold initialized values.
                    unsafe { &mut *cell.value }
                })
            })
    }

    /// Visits the home bucket at `cursor` with its chain; returns the next cursor (0 when the
    /// walk is complete).
    pub fn scan_step<'a>(&'a self, cursor: u64, mut f: impl FnMut(&'a V)) -> u64 {
        if self.home.is_empty() {
            return 0;
        }
        let mask = self.home.len() as u64 - 1;
        let mut b = (cursor & mask) as usize;
        loop {
            let bucket = self.bucket(b);
            bucket.values().for_each(&mut f);
            match bucket.child() {
                Some(child) => b = child,
                None => break,
            }
        }
        next_cursor(cursor, mask)
    }

    /// A uniformly random entry: a cell chosen uniformly among all cells until one holds an
    /// entry (every entry has the same chance each try).
    pub fn random_index(&self, rng: &mut impl rand::Rng) -> Option<Spot> {
        if self.len == 0 {
            return None;
        }
        let total = self.bucket_count();
        // At least a fifth of the cells are used (the table halves below 4 keys per home
        // bucket: about 4 per 1.3 buckets of 7 cells), so 64 tries all miss about once in 10^6.
        for _ in 0..64 {
            let b = rng.random_range(0..total);
            let c = rng.random_range(0..CELLS);
            if c < self.bucket(b).used() {
                return Some((b as u32, c as u8));
            }
        }
        let start = rng.random_range(0..total);
        (start..total)
            .chain(0..start)
            .find(|&b| self.bucket(b).used() > 0)
            .map(|b| (b as u32, rng.random_range(0..self.bucket(b).used()) as u8))
    }

    /// Home buckets, child buckets in use and all buckets allocated (tests).
    #[cfg(test)]
    pub fn shape(&self) -> (usize, usize, usize) {
        (
            self.home.len(),
            self.issued - self.free.len(),
            self.bucket_count(),
        )
    }

    /// Checks the invariants (tests): every chain a prefix of its cells, every child but the
    /// free ones on exactly one chain and holding at least two entries, every entry on its
    /// home bucket's chain with its tag, the count right, the load within the limits.
    #[cfg(test)]
    pub fn check(&self) {
        let home = self.home.len();
        let mut on_chain = vec![false; home + self.issued];
        let mut count = 0;
        for h in 0..home {
            let mut b = h;
            loop {
                assert!(!on_chain[b], "bucket {b} on two chains");
                on_chain[b] = true;
                let bucket = self.bucket(b);
                count += bucket.used();
                if b >= home {
                    assert!(bucket.used() >= 2, "child {b} holds {}", bucket.used());
                }
                for (c, v) in bucket.values().enumerate() {
                    let hash = hash_key(v.key());
                    assert_eq!(self.home_of(hash), h, "entry off its home chain");
                    assert_eq!(bucket.tags[c], tag_of(hash));
                }
                match bucket.child() {
                    Some(child) => {
                        assert_eq!(bucket.used(), CELLS - 1, "a chained bucket is not full");
                        assert!(child >= home);
                        b = child;
                    }
                    None => break,
                }
            }
        }
        for &f in &self.free {
            assert!(!on_chain[f as usize], "free bucket {f} on a chain");
            assert_eq!(self.bucket(f as usize).used(), 0);
            on_chain[f as usize] = true;
        }
        assert!(
            on_chain.iter().all(|&x| x),
            "a bucket is neither on a chain nor free"
        );
        assert!(
            self.all_buckets()
                .skip(home + self.issued)
                .all(|b| b.used() == 0)
        );
        assert_eq!(count, self.len);
        if self.len > 0 {
            assert!(self.len <= home * GROW_AT);
            assert!(home == 1 || self.len >= home * SHRINK_BELOW);
        }
    }
}

#[cfg(test)]
/// The buckets a home bucket's chain takes on average when keys per home bucket are
/// Poisson-distributed with mean `lambda`.
fn expected_chain_buckets(lambda: f64) -> f64 {
    let mut p = (-lambda).exp();
    let mut sum = 0.0;
    for k in 0..(lambda * 4.0 + 40.0) as usize {
        sum += p * chain_buckets(k) as f64;
        p *= lambda / (k + 1) as f64;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_of_pointers_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket<Box<u64>>>(), 64);
        assert_eq!(std::mem::align_of::<Bucket<Box<u64>>>(), 64);
        assert_eq!(std::mem::size_of::<Bucket<crate::entry::Entry>>(), 64);
    }

    struct Kv(Box<(Vec<u8>, u32)>);

    impl OwnsKey for Kv {
        fn key(&self) -> &[u8] {
            &self.0.0
        }
    }

    fn insert(t: &mut BucketTable<Kv>, i: u32) {
        let key = i.to_le_bytes().to_vec();
        let hash = hash_key(&key);
        assert!(t.find_hashed(&key, hash).is_none());
        t.insert_new_hashed(hash, Kv(Box::new((key, i))));
    }

    fn find(t: &BucketTable<Kv>, i: u32) -> Option<Spot> {
        let key = i.to_le_bytes();
        t.find_hashed(&key, hash_key(&key))
    }

    /// One home bucket takes 16 keys: a full bucket chains to a child (its seventh entry moves
    /// there), the child to another; removals in any order fold the chain back.
    #[test]
    fn full_buckets_chain_and_unchain() {
        for order in 0..3 {
            let mut t = BucketTable::default();
            for i in 0..7 {
                insert(&mut t, i);
            }
            assert_eq!(
                (t.shape().0, t.shape().1),
                (1, 0),
                "seven keys fill one bucket"
            );
            insert(&mut t, 7);
            assert_eq!((t.shape().0, t.shape().1), (1, 1), "the eighth chains");
            t.check();
            for i in 8..16 {
                insert(&mut t, i);
                t.check();
            }
            // 7 + 6 + 3 in three buckets, still one home bucket.
            assert_eq!((t.shape().0, t.shape().1), (1, 2));
            for i in 0..16 {
                let spot = find(&t, i).expect("present");
                assert_eq!(t.value_at(spot).0.1, i);
            }
            let mut keys: Vec<u32> = (0..16).collect();
            match order {
                0 => {}
                1 => keys.reverse(),
                _ => keys.sort_by_key(|&i| (i * 7) % 16),
            }
            for (n, &i) in keys.iter().enumerate() {
                let spot = find(&t, i).expect("present");
                let v = t.remove_at(spot);
                assert_eq!(v.0.1, i);
                if !t.is_empty() {
                    t.check();
                }
                for &j in &keys[n + 1..] {
                    assert_eq!(t.value_at(find(&t, j).expect("kept")).0.1, j);
                }
                assert!(find(&t, i).is_none());
            }
            assert!(t.is_empty());
            assert_eq!(t.shape(), (0, 0, 0), "an emptied table holds no memory");
        }
    }

    /// A table that held a single bucket's keys keeps its home bucket when emptied, and the next
    /// key goes into it without a rebuild; a bigger table gives all its memory back (above).
    #[test]
    fn an_emptied_single_bucket_table_keeps_its_bucket() {
        let mut t = BucketTable::default();
        assert_eq!(t.shape(), (0, 0, 0), "a new table holds no memory");
        for round in 0..3 {
            for i in 0..7 {
                insert(&mut t, round * 10 + i);
            }
            let home = t.home.as_ptr();
            for i in 0..7 {
                let spot = find(&t, round * 10 + i).expect("present");
                assert_eq!(t.remove_at(spot).0.1, round * 10 + i);
            }
            assert!(t.is_empty());
            assert_eq!(t.shape(), (1, 0, 1), "one empty home bucket is kept");
            assert_eq!(t.home.as_ptr(), home, "the same bucket, not a new one");
            assert!(find(&t, round * 10).is_none());
            t.check();
        }
        // Eight keys chain to a child: emptied, the table gives everything back.
        for i in 0..8 {
            insert(&mut t, i);
        }
        for i in 0..8 {
            let spot = find(&t, i).expect("present");
            t.remove_at(spot);
        }
        assert_eq!(
            t.shape(),
            (0, 0, 0),
            "a table that had a child holds no memory once empty"
        );
    }

    /// The 17th key doubles the table; keys spread over both halves and their chains shorten.
    #[test]
    fn the_table_doubles_at_sixteen_keys_per_home_bucket() {
        let mut t = BucketTable::default();
        for i in 0..16 {
            insert(&mut t, i);
        }
        assert_eq!(t.shape().0, 1);
        insert(&mut t, 16);
        assert_eq!(t.shape().0, 2);
        t.check();
        for i in 17..5000 {
            insert(&mut t, i);
        }
        t.check();
        assert_eq!(t.shape().0, 512);
        for i in (0..5000).rev() {
            let spot = find(&t, i).expect("present");
            t.remove_at(spot);
            if i % 97 == 0 && i > 0 {
                t.check();
            }
        }
        assert!(t.is_empty());
    }

    /// The word-wide tag comparison finds exactly the used cells with the tag (and at most a
    /// cell just above one of them, which lookups check again).
    #[test]
    fn tag_matches_finds_every_used_cell_with_the_tag() {
        let mut rng = rand::rng();
        for _ in 0..20_000 {
            let mut b: Bucket<Box<u64>> = Bucket::new();
            let used = rand::Rng::random_range(&mut rng, 0..=CELLS);
            for _ in 0..used {
                let tag = rand::Rng::random_range(&mut rng, 0..4u8);
                b.push(tag.wrapping_sub(1), Box::new(0));
            }
            for tag in [0u8, 1, 2, 255, 254] {
                let m = b.tag_matches(tag);
                for c in 0..CELLS {
                    let reported = m & (0x80 << (8 * c)) != 0;
                    let true_match = c < used && b.tags[c] == tag;
                    if true_match {
                        assert!(reported, "cell {c} missed");
                    }
                    if reported {
                        assert!(c < used, "unused cell {c} reported");
                    }
                }
            }
        }
    }

    #[test]
    fn chains_hold_six_per_bucket_after_the_first_seven() {
        assert_eq!(chain_buckets(0), 1);
        assert_eq!(chain_buckets(7), 1);
        assert_eq!(chain_buckets(8), 2);
        assert_eq!(chain_buckets(13), 2);
        assert_eq!(chain_buckets(14), 3);
        let e = expected_chain_buckets(12.2);
        assert!((1.8..2.6).contains(&e), "{e}");
    }
}
