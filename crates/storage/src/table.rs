//! A chained hash table whose cursor survives writes, used for the keyspace and for the members of
//! hashes, sets and sorted sets.
//!
//! SCAN must return every key that is present for the whole iteration, even when the table grows or
//! shrinks between calls. Like Redis's `dict`, the table has a power-of-two number of buckets, each
//! entry lives in bucket `hash & mask`, and the cursor walks buckets in reverse-binary order: when
//! the table doubles, bucket `b` splits into `b` and `b | old_size`, which the reversed increment
//! visits next; when it halves, the visited buckets fold into visited buckets. Entries may be
//! returned twice around a resize, never missed.
//!
//! Nodes live in one `Vec` and chain by index, so a resize relinks `u32`s without moving entries.
//! A node holds its key beside its value ([`TableKey`], for the members of hashes, sets and
//! sorted sets).
//!
//! The keyspace uses [`ShardedTable`] instead: 64 sub-tables of buckets that point straight at
//! the entries, which own their keys ([`OwnsKey`]); see `buckets` for their layout and why.

use std::sync::OnceLock;

mod buckets;
use buckets::BucketTable;

const MIN_BUCKETS: usize = 4;
const NIL: u32 = u32::MAX;

fn hasher() -> &'static ahash::RandomState {
    static STATE: OnceLock<ahash::RandomState> = OnceLock::new();
    STATE.get_or_init(ahash::RandomState::new)
}

/// The in-process hash of a key (seeded per process; never sent anywhere).
#[inline]
pub fn hash_key(key: &[u8]) -> u64 {
    hasher().hash_one(key)
}

/// Longest key a node holds inside itself.
pub const INLINE_KEY: usize = 22;

/// A key as a table node holds it: up to [`INLINE_KEY`] bytes inside the node (most keys, fields
/// and members are that short, and an allocation of their own would cost a 32-byte malloc chunk
/// where the node grows by 8), longer ones in their own allocation. Both forms are 24 bytes.
pub enum TableKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl TableKey {
    /// The empty key (a placeholder in fixed arrays of keys; allocates nothing).
    pub const EMPTY: TableKey = TableKey::Inline {
        len: 0,
        bytes: [0; INLINE_KEY],
    };

    pub fn new(key: &[u8]) -> TableKey {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0u8; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            TableKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            TableKey::Heap(key.into())
        }
    }

    /// Keeps a long key's allocation; copies a short one into the node.
    pub fn from_boxed(key: Box<[u8]>) -> TableKey {
        if key.len() <= INLINE_KEY {
            TableKey::new(&key)
        } else {
            TableKey::Heap(key)
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            TableKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            TableKey::Heap(b) => b,
        }
    }

    /// Whether the key has no allocation of its own (memory estimates).
    pub fn is_inline(key: &[u8]) -> bool {
        key.len() <= INLINE_KEY
    }
}

impl std::ops::Deref for TableKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl From<&[u8]> for TableKey {
    fn from(k: &[u8]) -> TableKey {
        TableKey::new(k)
    }
}

impl From<Box<[u8]>> for TableKey {
    fn from(k: Box<[u8]>) -> TableKey {
        TableKey::from_boxed(k)
    }
}

impl From<TableKey> for Box<[u8]> {
    fn from(k: TableKey) -> Box<[u8]> {
        match k {
            TableKey::Heap(b) => b,
            inline => inline.as_bytes().into(),
        }
    }
}

/// Where a table node finds its key (beside the value: [`TableKey`]).
pub trait NodeKey<V> {
    fn of<'a>(&'a self, value: &'a V) -> &'a [u8];
}

impl<V> NodeKey<V> for TableKey {
    #[inline]
    fn of<'a>(&'a self, _: &'a V) -> &'a [u8] {
        self.as_bytes()
    }
}

/// A value that holds its own key (a keyspace entry: key and value in one allocation). The key
/// must never change while the value is in a table (its hash placed it).
pub trait OwnsKey {
    fn key(&self) -> &[u8];

    /// Where the value's own memory starts (its key's bytes are found from there): what
    /// [`ShardedTable::warm`] brings into the cache last. A value held inline has none apart
    /// from its bucket.
    #[inline]
    fn home(&self) -> *const u8 {
        (self as *const Self).cast()
    }
}

/// Asks the processor to bring the cache line at `p` into its caches, without waiting for it.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults and reads nothing the program sees, whatever
    // the address (SSE, which provides it, is part of the x86_64 baseline).
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

struct Node<V, K> {
    /// The low half of the key's hash: enough to pick a bucket (a table never has 2^32 of them)
    /// and to skip most non-matching keys; with `next` it fills 8 bytes.
    hash: u32,
    next: u32,
    key: K,
    value: V,
}

impl<V, K: NodeKey<V>> Node<V, K> {
    #[inline]
    fn key(&self) -> &[u8] {
        self.key.of(&self.value)
    }
}

enum Slot<V, K> {
    Used(Node<V, K>),
    /// A free slot, linking to the next free one.
    Free(u32),
}

/// Chained hash table keyed by byte strings. See the module docs for the cursor guarantee.
pub struct Table<V, K = TableKey> {
    /// Head node index per bucket (`NIL` when empty). Length is a power of two.
    buckets: Vec<u32>,
    nodes: Vec<Slot<V, K>>,
    /// Head of the free-slot list inside `nodes`.
    free: u32,
    len: usize,
}

impl<V, K: NodeKey<V>> Default for Table<V, K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Table<V, TableKey> {
    /// Inserts or replaces; returns the previous value.
    pub fn insert(&mut self, key: &[u8], value: V) -> Option<V> {
        let hash = hash_key(key);
        if let Some(i) = self.find_hashed(key, hash) {
            return Some(std::mem::replace(&mut self.node_mut(i).value, value));
        }
        self.insert_new_hashed(TableKey::new(key), hash, value);
        None
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&[u8], &mut V)> {
        self.nodes.iter_mut().filter_map(|s| match s {
            Slot::Used(n) => Some((&*n.key, &mut n.value)),
            Slot::Free(_) => None,
        })
    }
}

impl<V, K: NodeKey<V>> Table<V, K> {
    pub fn new() -> Self {
        Table {
            buckets: vec![NIL; MIN_BUCKETS],
            nodes: Vec::new(),
            free: NIL,
            len: 0,
        }
    }

    pub fn with_capacity(n: usize) -> Self {
        let mut t = Self::new();
        t.buckets = vec![NIL; n.next_power_of_two().max(MIN_BUCKETS)];
        t.nodes.reserve(n);
        t
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes room for `additional` more keys at once: one bucket array and one node array of
    /// the final size instead of a doubling (a copy of every node) each time it fills.
    pub fn reserve(&mut self, additional: usize) {
        let want = self.len + additional;
        self.nodes.reserve(want.saturating_sub(self.nodes.len()));
        if want > self.buckets.len() {
            self.resize(want.next_power_of_two());
        }
    }

    #[inline]
    fn mask(&self) -> u64 {
        self.buckets.len() as u64 - 1
    }

    fn node(&self, idx: u32) -> &Node<V, K> {
        match &self.nodes[idx as usize] {
            Slot::Used(n) => n,
            Slot::Free(_) => unreachable!("table chain points at a free slot"),
        }
    }

    fn node_mut(&mut self, idx: u32) -> &mut Node<V, K> {
        match &mut self.nodes[idx as usize] {
            Slot::Used(n) => n,
            Slot::Free(_) => unreachable!("table chain points at a free slot"),
        }
    }

    /// Position of `key`, if present. Positions stay valid until the next insert or remove.
    #[inline]
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        self.find_hashed(key, hash_key(key))
    }

    pub(crate) fn find_hashed(&self, key: &[u8], hash: u64) -> Option<u32> {
        let mut idx = self.buckets[(hash & self.mask()) as usize];
        while idx != NIL {
            let n = self.node(idx);
            if n.hash == hash as u32 && n.key() == key {
                return Some(idx);
            }
            idx = n.next;
        }
        None
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.find(key).map(|i| &self.node(i).value)
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let i = self.find(key)?;
        Some(&mut self.node_mut(i).value)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    pub fn key_at(&self, idx: u32) -> &[u8] {
        self.node(idx).key()
    }

    pub fn value_at(&self, idx: u32) -> &V {
        &self.node(idx).value
    }

    pub fn value_at_mut(&mut self, idx: u32) -> &mut V {
        &mut self.node_mut(idx).value
    }

    /// Inserts a key known to be absent; returns its position.
    pub fn insert_new(&mut self, key: K, value: V) -> u32 {
        let hash = hash_key(key.of(&value));
        self.insert_new_hashed(key, hash, value)
    }

    pub(crate) fn insert_new_hashed(&mut self, key: K, hash: u64, value: V) -> u32 {
        if self.len >= self.buckets.len() {
            self.resize(self.buckets.len() * 2);
        }
        let b = (hash & self.mask()) as usize;
        let node = Node {
            hash: hash as u32,
            next: self.buckets[b],
            key,
            value,
        };
        let idx = if self.free != NIL {
            let idx = self.free;
            if let Slot::Free(next) = self.nodes[idx as usize] {
                self.free = next;
            }
            self.nodes[idx as usize] = Slot::Used(node);
            idx
        } else {
            assert!(self.nodes.len() < NIL as usize, "table is full");
            if self.nodes.len() == self.nodes.capacity() {
                // Grow by a quarter, not double: the node array is most of a keyspace's own
                // memory, and doubling leaves it up to half unused. Growth stays geometric, so
                // pushes stay O(1) amortized (and large reallocations are page remaps).
                self.nodes.reserve_exact((self.nodes.len() / 4).max(4));
            }
            self.nodes.push(Slot::Used(node));
            (self.nodes.len() - 1) as u32
        };
        self.buckets[b] = idx;
        self.len += 1;
        idx
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<(K, V)> {
        let i = self.find(key)?;
        Some(self.remove_at(i))
    }

    /// Removes the entry at a position returned by [`Table::find`].
    pub fn remove_at(&mut self, idx: u32) -> (K, V) {
        let hash = self.node(idx).hash;
        let b = (u64::from(hash) & self.mask()) as usize;
        let next = self.node(idx).next;
        if self.buckets[b] == idx {
            self.buckets[b] = next;
        } else {
            let mut p = self.buckets[b];
            while p != NIL {
                let pn = self.node(p).next;
                if pn == idx {
                    self.node_mut(p).next = next;
                    break;
                }
                p = pn;
            }
        }
        let slot = std::mem::replace(&mut self.nodes[idx as usize], Slot::Free(self.free));
        self.free = idx;
        self.len -= 1;
        let Slot::Used(node) = slot else {
            unreachable!("removed a free slot")
        };
        if self.len * 8 < self.buckets.len() && self.buckets.len() > MIN_BUCKETS {
            self.resize(self.buckets.len() / 2);
        }
        if self.len == 0 {
            // Give back node memory once empty; positions are all invalid anyway.
            self.nodes = Vec::new();
            self.free = NIL;
        } else if self.nodes.len() > 64 && self.len * 4 < self.nodes.len() {
            self.compact();
        }
        (node.key, node.value)
    }

    fn resize(&mut self, n: usize) {
        let n = n.max(MIN_BUCKETS);
        self.buckets.clear();
        self.buckets.resize(n, NIL);
        let mask = n as u64 - 1;
        for (i, slot) in self.nodes.iter_mut().enumerate() {
            if let Slot::Used(node) = slot {
                let b = (u64::from(node.hash) & mask) as usize;
                node.next = self.buckets[b];
                self.buckets[b] = i as u32;
            }
        }
    }

    /// Packs live nodes to the front after mass deletion so memory is returned.
    fn compact(&mut self) {
        let old = std::mem::take(&mut self.nodes);
        self.nodes = Vec::with_capacity(self.len.max(4) * 2);
        for slot in old {
            if let Slot::Used(node) = slot {
                self.nodes.push(Slot::Used(node));
            }
        }
        self.free = NIL;
        let n = self.buckets.len();
        self.resize(n);
    }

    /// Removes everything, returning the old contents so the caller can drop them outside a lock.
    pub fn take(&mut self) -> Table<V, K> {
        std::mem::take(self)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.nodes.iter().filter_map(|s| match s {
            Slot::Used(n) => Some((n.key(), &n.value)),
            Slot::Free(_) => None,
        })
    }

    /// The values, to change what is not the key.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.nodes.iter_mut().filter_map(|s| match s {
            Slot::Used(n) => Some(&mut n.value),
            Slot::Free(_) => None,
        })
    }

    /// Visits the bucket at `cursor` and returns the next cursor (0 when the walk is complete).
    pub fn scan_step(&self, cursor: u64, mut f: impl FnMut(&[u8], &V)) -> u64 {
        let mask = self.mask();
        let mut idx = self.buckets[(cursor & mask) as usize];
        while idx != NIL {
            let n = self.node(idx);
            f(n.key(), &n.value);
            idx = n.next;
        }
        next_cursor(cursor, mask)
    }

    /// Walks buckets from `cursor` until `f` has been shown at least `count` entries or `count * 10`
    /// buckets were visited; returns the next cursor (0 when done).
    pub fn scan(&self, mut cursor: u64, count: usize, mut f: impl FnMut(&[u8], &V)) -> u64 {
        let mut seen = 0usize;
        let mut visits = 0usize;
        let budget = count.max(1).saturating_mul(10);
        loop {
            cursor = self.scan_step(cursor, |k, v| {
                seen += 1;
                f(k, v)
            });
            visits += 1;
            if cursor == 0 || seen >= count || visits >= budget {
                return cursor;
            }
        }
    }

    /// A uniformly random entry position, using `rand` as the source of randomness.
    pub fn random_index(&self, rng: &mut impl rand::Rng) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        // Slots are at least 1/4 used (see `compact`), so a few tries usually suffice.
        for _ in 0..32 {
            let i = rng.random_range(0..self.nodes.len());
            if matches!(self.nodes[i], Slot::Used(_)) {
                return Some(i as u32);
            }
        }
        let start = rng.random_range(0..self.nodes.len());
        (start..self.nodes.len())
            .chain(0..start)
            .find(|&i| matches!(self.nodes[i], Slot::Used(_)))
            .map(|i| i as u32)
    }
}

/// Keys [`ShardedTable::warm`] prefetches together: enough to overlap the misses of a
/// pipelined batch (redis-benchmark -P16), few enough that the first prefetches have not been
/// evicted when the batch runs.
const WARM_GROUP: usize = 16;

/// Sub-tables of a [`ShardedTable`] (a power of two; the top bits of a key's hash pick one).
const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;
/// Low cursor bits used by a sub-table's own cursor; the top bits name the sub-table.
const INNER_BITS: u32 = 64 - SHARD_BITS;

/// Where an entry of a [`ShardedTable`] is. Valid until the next insert or remove (a removal
/// moves another entry of the same chain into the hole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    shard: u16,
    cell: u8,
    bucket: u32,
}

impl Pos {
    #[inline]
    fn new(shard: usize, (bucket, cell): buckets::Spot) -> Pos {
        Pos {
            shard: shard as u16,
            cell,
            bucket,
        }
    }

    #[inline]
    fn spot(self) -> buckets::Spot {
        (self.bucket, self.cell)
    }
}

/// The keyspace's table: split into independent sub-tables by the top bits of each key's hash,
/// each a table of 64-byte buckets of seven pointers to entries (see `buckets`: about 12 bytes
/// per key, and a lookup reads its bucket and then its entry). Each sub-table grows and shrinks
/// on its own, so a resize (a pass over one sub-table's entries) stalls its owner for a
/// sixty-fourth of what resizing one big table would. The cursor is the sub-table's number in
/// the top bits and that sub-table's own reverse-binary cursor below, so SCAN keeps its
/// guarantee. Its values own their keys ([`OwnsKey`]).
pub struct ShardedTable<V> {
    shards: Vec<BucketTable<V>>,
    len: usize,
}

impl<V: OwnsKey> Default for ShardedTable<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: OwnsKey> ShardedTable<V> {
    pub fn new() -> Self {
        ShardedTable {
            shards: (0..SHARDS).map(|_| BucketTable::default()).collect(),
            len: 0,
        }
    }

    #[inline]
    fn shard_of(hash: u64) -> usize {
        (hash >> INNER_BITS) as usize
    }

    /// Makes room for `additional` more keys spread evenly over the shards (as hashed keys
    /// are), with a little slack for the unevenness; a load that knows its key count (an RDB
    /// file's RESIZEDB) then never resizes a shard.
    pub fn reserve(&mut self, additional: usize) {
        let per_shard = additional / SHARDS;
        // Shard sizes vary by about the square root of their mean; three of those is slack
        // enough.
        let per_shard = per_shard + 3 * per_shard.isqrt() + 1;
        for shard in &mut self.shards {
            shard.reserve(per_shard);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the table itself holds (its buckets, with unused capacity), for memory checks.
    pub fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(BucketTable::heap_bytes)
            .sum::<usize>()
            + self.shards.capacity() * std::mem::size_of::<BucketTable<V>>()
    }

    #[inline]
    pub fn find(&self, key: &[u8]) -> Option<Pos> {
        let hash = hash_key(key);
        let shard = Self::shard_of(hash);
        self.shards[shard]
            .find_hashed(key, hash)
            .map(|spot| Pos::new(shard, spot))
    }

    /// Brings into the cache what looking up each of `keys` will read — its home bucket, then
    /// the entries there whose hash tag matches (or, when none does, the bucket's child) —
    /// without looking anything up. A lookup waits for each of these in turn (the bucket names
    /// the entry), so a batch of lookups of keys that are not in the cache pays two or three
    /// cache misses per key, one after another. Warming the batch first issues each stage's
    /// reads for up to [`WARM_GROUP`] keys at once (software prefetches, which do not wait), so
    /// their misses overlap: a bulk loader calls it before inserting a chunk of keys, a
    /// connection before running a pipelined batch.
    pub fn warm<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) {
        let mut hashes = [0u64; WARM_GROUP];
        let mut next = [None; WARM_GROUP];
        let mut keys = keys.peekable();
        while keys.peek().is_some() {
            let mut n = 0;
            for (slot, key) in hashes.iter_mut().zip(&mut keys) {
                let hash = hash_key(key);
                *slot = hash;
                if let Some(addr) = self.shards[Self::shard_of(hash)].home_addr(hash) {
                    prefetch(addr);
                }
                n += 1;
            }
            for (i, &hash) in hashes[..n].iter().enumerate() {
                let shard = &self.shards[Self::shard_of(hash)];
                next[i] = shard
                    .home_bucket(hash)
                    .and_then(|b| shard.warm_bucket(b, hash));
            }
            for (b, &hash) in next[..n].iter().zip(&hashes[..n]) {
                if let Some(b) = *b {
                    self.shards[Self::shard_of(hash)].warm_bucket(b, hash);
                }
            }
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.find(key).map(|p| self.value_at(p))
    }

    pub fn key_at(&self, p: Pos) -> &[u8] {
        self.value_at(p).key()
    }

    pub fn value_at(&self, p: Pos) -> &V {
        self.shards[usize::from(p.shard)].value_at(p.spot())
    }

    pub fn value_at_mut(&mut self, p: Pos) -> &mut V {
        self.shards[usize::from(p.shard)].value_at_mut(p.spot())
    }

    /// Inserts a value whose key is known to be absent; returns its position.
    pub fn insert_new(&mut self, value: V) -> Pos {
        let hash = hash_key(value.key());
        let shard = Self::shard_of(hash);
        let spot = self.shards[shard].insert_new_hashed(hash, value);
        self.len += 1;
        Pos::new(shard, spot)
    }

    pub fn remove_at(&mut self, p: Pos) -> V {
        let v = self.shards[usize::from(p.shard)].remove_at(p.spot());
        self.len -= 1;
        v
    }

    /// Removes everything, returning the old contents (to be dropped outside a lock).
    pub fn take(&mut self) -> ShardedTable<V> {
        std::mem::take(self)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.shards
            .iter()
            .flat_map(BucketTable::values)
            .map(|v| (v.key(), v))
    }

    /// The values, to change what is not the key.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.shards.iter_mut().flat_map(BucketTable::values_mut)
    }

    /// Walks from `cursor` until `f` has been shown at least `count` entries or `count * 10`
    /// buckets were visited; returns the next cursor (0 when the walk is complete).
    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&[u8], &V)) -> u64 {
        self.scan_values(cursor, count, |v| f(v.key(), v))
    }

    /// [`ShardedTable::scan`] without reading the keys: the walk sees only the table's buckets,
    /// so a caller can gather a step's values first and bring them into the cache together
    /// (the point-in-time copy's walk, `Db::snapshot_walk`).
    pub fn scan_values<'a>(&'a self, cursor: u64, count: usize, mut f: impl FnMut(&'a V)) -> u64 {
        let mut shard = (cursor >> INNER_BITS) as usize;
        let mut inner = cursor & ((1u64 << INNER_BITS) - 1);
        let mut seen = 0usize;
        let mut visits = 0usize;
        let budget = count.max(1).saturating_mul(10);
        while shard < SHARDS {
            let t = &self.shards[shard];
            if t.is_empty() {
                // Nothing to visit (and nothing that could be missed): skip it for free.
                shard += 1;
                inner = 0;
                continue;
            }
            loop {
                inner = t.scan_step(inner, |v| {
                    seen += 1;
                    f(v)
                });
                visits += 1;
                if inner == 0 {
                    break;
                }
                if seen >= count || visits >= budget {
                    return ((shard as u64) << INNER_BITS) | inner;
                }
            }
            shard += 1;
            if seen >= count || visits >= budget {
                return if shard < SHARDS {
                    (shard as u64) << INNER_BITS
                } else {
                    0
                };
            }
        }
        0
    }

    /// A uniformly random entry: a sub-table chosen in proportion to its size, then an entry.
    pub fn random_index(&self, rng: &mut impl rand::Rng) -> Option<Pos> {
        if self.len == 0 {
            return None;
        }
        let mut r = rng.random_range(0..self.len);
        for (i, t) in self.shards.iter().enumerate() {
            if r < t.len() {
                return t.random_index(rng).map(|spot| Pos::new(i, spot));
            }
            r -= t.len();
        }
        None
    }
}

/// Redis's reverse-binary cursor increment.
#[inline]
fn next_cursor(cursor: u64, mask: u64) -> u64 {
    let mut v = cursor | !mask;
    v = v.reverse_bits();
    v = v.wrapping_add(1);
    v.reverse_bits()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// A value owning its key, as a keyspace entry does.
    struct Kv<T>(TableKey, T);

    impl<T> OwnsKey for Kv<T> {
        fn key(&self) -> &[u8] {
            &self.0
        }
    }

    fn kv<T>(key: &[u8], value: T) -> Kv<T> {
        Kv(key.into(), value)
    }

    #[test]
    fn nodes_stay_compact() {
        // A member's node: hash, link and key add 32 to the value, with no padding.
        assert_eq!(std::mem::size_of::<TableKey>(), 24);
        assert_eq!(std::mem::size_of::<Slot<[u64; 7], TableKey>>(), 88);
    }

    #[test]
    fn a_reserved_table_takes_its_keys_without_moving_its_buckets() {
        let n = 100_000;
        let mut t: ShardedTable<Kv<u64>> = ShardedTable::new();
        t.insert_new(kv(b"before", 7));
        t.reserve(n);
        let homes: Vec<usize> = t.shards.iter().map(|s| s.shape().0).collect();
        for i in 0..n as u64 {
            t.insert_new(kv(format!("key:{i}").as_bytes(), i));
        }
        let grown = t
            .shards
            .iter()
            .zip(&homes)
            .filter(|(s, home)| s.shape().0 != **home)
            .count();
        // Hashing spreads keys evenly enough that the slack covers (almost) every shard: no
        // shard is rehashed (its child buckets may still grow their array, a copy).
        assert!(grown * 50 <= SHARDS, "{grown} of {SHARDS} shards grew");
        assert_eq!(t.len(), n + 1);
        for i in (0..n as u64).step_by(997) {
            let pos = t.find(format!("key:{i}").as_bytes()).expect("present");
            assert_eq!(t.value_at(pos).1, i);
        }
        assert!(t.find(b"before").is_some());
    }

    #[test]
    fn basic_ops() {
        let mut t = Table::new();
        for i in 0..1000u32 {
            assert!(t.insert(&i.to_be_bytes(), i).is_none());
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(t.insert(&5u32.to_be_bytes(), 50), Some(5));
        for i in 0..1000u32 {
            if i % 3 == 0 {
                assert!(t.remove(&i.to_be_bytes()).is_some());
            }
        }
        for i in 0..1000u32 {
            let want = if i % 3 == 0 {
                None
            } else if i == 5 {
                Some(50)
            } else {
                Some(i)
            };
            assert_eq!(t.get(&i.to_be_bytes()).copied(), want);
        }
        assert_eq!(t.iter().count(), t.len());
    }

    #[test]
    fn full_scan_sees_everything() {
        let mut t = Table::new();
        for i in 0..5000u32 {
            t.insert(&i.to_le_bytes(), ());
        }
        let mut seen = HashSet::new();
        let mut c = 0;
        loop {
            c = t.scan(c, 10, |k, _| {
                seen.insert(k.to_vec());
            });
            if c == 0 {
                break;
            }
        }
        assert_eq!(seen.len(), 5000);
    }

    #[test]
    fn sharded_scan_and_random_cover_everything() {
        let mut t = ShardedTable::new();
        for i in 0..20_000u32 {
            t.insert_new(kv(&i.to_le_bytes(), i));
        }
        let mut seen = HashSet::new();
        let mut c = 0;
        loop {
            c = t.scan(c, 100, |k, _| {
                seen.insert(k.to_vec());
            });
            if c == 0 {
                break;
            }
        }
        assert_eq!(seen.len(), 20_000);
        assert_eq!(t.iter().count(), 20_000);
        let mut rng = rand::rng();
        for _ in 0..100 {
            let p = t.random_index(&mut rng).unwrap();
            let k: [u8; 4] = t.key_at(p).try_into().unwrap();
            assert_eq!(t.value_at(p).1, u32::from_le_bytes(k));
        }
        for i in 0..20_000u32 {
            let p = t.find(&i.to_le_bytes()).unwrap();
            t.remove_at(p);
        }
        assert!(t.is_empty());
        assert_eq!(t.scan(0, 10, |_, _| panic!("empty")), 0);
    }

    proptest::proptest! {
        /// The SCAN guarantee holds across sub-tables, under inserts and removes.
        #[test]
        fn sharded_scan_guarantee_under_writes(ops in proptest::collection::vec((0u8..3, 0u16..3000), 0..3000), stable in 1u16..600) {
            let mut t = ShardedTable::new();
            for i in 0..stable {
                t.insert_new(kv(format!("stable{}", i).as_bytes(), ()));
            }
            let mut seen = HashSet::new();
            let mut c = 0u64;
            let mut ops = ops.into_iter();
            loop {
                c = t.scan(c, 5, |k, _| { seen.insert(k.to_vec()); });
                for (op, n) in ops.by_ref().take(7) {
                    let k = format!("k{}", n);
                    match (op, t.find(k.as_bytes())) {
                        (0, Some(p)) => { t.remove_at(p); }
                        (0, None) => {}
                        (_, None) => { t.insert_new(kv(k.as_bytes(), ())); }
                        (_, Some(_)) => {}
                    }
                }
                if c == 0 { break; }
            }
            for i in 0..stable {
                let k = format!("stable{}", i);
                proptest::prop_assert!(seen.contains(k.as_bytes()), "missed {}", k);
            }
        }

        /// Keys present for the whole scan are returned even while others are added and removed
        /// (forcing grows and shrinks).
        #[test]
        fn scan_guarantee_under_writes(ops in proptest::collection::vec((0u8..3, 0u16..2000), 0..3000), stable in 1u16..400) {
            let mut t = Table::new();
            let mut model = HashMap::new();
            // Stable keys use a separate key space.
            for i in 0..stable {
                let k = format!("stable{i}");
                t.insert(k.as_bytes(), ());
                model.insert(k, ());
            }
            let mut seen = HashSet::new();
            let mut c = 0u64;
            let mut ops = ops.into_iter();
            loop {
                c = t.scan(c, 5, |k, _| { seen.insert(k.to_vec()); });
                for (op, n) in ops.by_ref().take(7) {
                    let k = format!("k{n}");
                    if op == 0 { t.remove(k.as_bytes()); } else { t.insert(k.as_bytes(), ()); }
                }
                if c == 0 { break; }
            }
            for i in 0..stable {
                let k = format!("stable{}", i);
                proptest::prop_assert!(seen.contains(k.as_bytes()), "missed {}", k);
            }
        }

        #[test]
        fn matches_hashmap(ops in proptest::collection::vec((0u8..3, 0u16..300, proptest::num::u32::ANY), 0..2000)) {
            let mut t = Table::new();
            let mut m = HashMap::new();
            for (op, k, v) in ops {
                let key = k.to_be_bytes();
                match op {
                    0 => { proptest::prop_assert_eq!(t.remove(&key).map(|x| x.1), m.remove(&k)); }
                    _ => { proptest::prop_assert_eq!(t.insert(&key, v), m.insert(k, v)); }
                }
                proptest::prop_assert_eq!(t.len(), m.len());
            }
            for (k, v) in &m {
                proptest::prop_assert_eq!(t.get(&k.to_be_bytes()), Some(v));
            }
            let mut rng = rand::rng();
            if !m.is_empty() {
                let i = t.random_index(&mut rng).unwrap();
                let key: [u8; 2] = t.key_at(i).try_into().unwrap();
                proptest::prop_assert!(m.contains_key(&u16::from_be_bytes(key)));
            }
        }
    }
}

#[cfg(test)]
mod sharded_tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// A keyspace entry's shape: one pointer to an allocation holding the key.
    struct Boxed(Box<(TableKey, u64)>);

    impl OwnsKey for Boxed {
        fn key(&self) -> &[u8] {
            &self.0.0
        }
    }

    fn boxed(key: &[u8], v: u64) -> Boxed {
        Boxed(Box::new((key.into(), v)))
    }

    /// The table's own bytes per key at the sizes bench-memory measures (200,000 and 1,000,000
    /// keys: 256 and 1,024 home buckets per shard) and just after a doubling (the worst case),
    /// inserted one by one and loaded after a `reserve`; `entry::NODE_OVERHEAD` is their
    /// estimate.
    #[test]
    fn a_key_costs_about_twelve_bytes_of_table() {
        for (n, reserve, most) in [
            (200_000, false, 13.0),
            (200_000, true, 13.5),
            (1_000_000, false, 12.3),
            (1_000_000, true, 12.8),
            // 8.0 keys per home bucket: just after the shards doubled.
            (525_000, false, 13.6),
        ] {
            let mut t = ShardedTable::new();
            if reserve {
                t.reserve(n);
            }
            for i in 0..n as u64 {
                t.insert_new(boxed(format!("key:{i:012}").as_bytes(), i));
            }
            let per_key = t.heap_bytes() as f64 / n as f64;
            eprintln!("{n} keys (reserved: {reserve}): {per_key:.2} bytes of table per key");
            assert!(
                (9.0..most).contains(&per_key),
                "{n} keys (reserved: {reserve}): {per_key:.2} bytes per key"
            );
            assert!(
                (per_key - crate::entry::NODE_OVERHEAD as f64).abs() < 2.5,
                "{per_key:.2} vs the estimate"
            );
            for i in (0..n as u64).step_by(7919) {
                let p = t.find(format!("key:{i:012}").as_bytes()).expect("present");
                assert_eq!(t.value_at(p).0.1, i);
            }
        }
    }

    /// RANDOMKEY's sampling stays uniform: every key is drawn about as often, chained or not.
    #[test]
    fn random_index_is_uniform() {
        let n = 2_000u64;
        let mut t = ShardedTable::new();
        for i in 0..n {
            t.insert_new(boxed(&i.to_le_bytes(), i));
        }
        let draws = 400_000u64;
        let mut counts = vec![0u64; n as usize];
        let mut rng = rand::rng();
        for _ in 0..draws {
            let p = t.random_index(&mut rng).expect("not empty");
            counts[t.value_at(p).0.1 as usize] += 1;
        }
        // 200 expected per key, standard deviation about 14: all within 6 of those.
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*lo > 110 && *hi < 290, "min {lo}, max {hi}");
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - 200.0).powi(2) / 200.0)
            .sum();
        // 1999 degrees of freedom: mean 1999, standard deviation about 63.
        assert!(chi2 < 2400.0, "chi-square {chi2}");
    }

    /// Every key present for a whole scan is returned while the table grows from empty to many
    /// times its size and shrinks back (every resize happening between two scan steps).
    #[test]
    fn scan_guarantee_across_growth_and_shrinking() {
        let mut t = ShardedTable::new();
        for i in 0..300u32 {
            t.insert_new(boxed(format!("stable{i}").as_bytes(), 0));
        }
        let mut seen = HashSet::new();
        let mut c = 0;
        let mut next = 0u32;
        let mut steps = 0;
        loop {
            c = t.scan(c, 3, |k, _| {
                seen.insert(k.to_vec());
            });
            steps += 1;
            if steps < 40 {
                for _ in 0..2000 {
                    t.insert_new(boxed(format!("grow{next}").as_bytes(), 0));
                    next += 1;
                }
            } else if next > 0 {
                for _ in 0..2000.min(next) {
                    next -= 1;
                    let p = t.find(format!("grow{next}").as_bytes()).expect("present");
                    t.remove_at(p);
                }
            }
            if c == 0 {
                break;
            }
            assert!(steps < 1_000_000, "scan does not end");
        }
        for i in 0..300u32 {
            assert!(
                seen.contains(format!("stable{i}").as_bytes()),
                "missed stable{i}"
            );
        }
    }

    proptest::proptest! {
        /// The table against a model, with few keys per shard (long chains at small sizes,
        /// every shape of chain removal) and the shards' invariants checked after each step.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec((0u8..3, 0u16..2000), 0..4000)) {
            let mut t: ShardedTable<Boxed> = ShardedTable::new();
            let mut m: HashMap<u16, u64> = HashMap::new();
            for (step, (op, k)) in ops.into_iter().enumerate() {
                let key = k.to_be_bytes();
                match (op, t.find(&key)) {
                    (0, Some(p)) => {
                        let v = t.remove_at(p);
                        proptest::prop_assert_eq!(Some(v.0.1), m.remove(&k));
                    }
                    (0, None) => proptest::prop_assert!(!m.contains_key(&k)),
                    (_, Some(p)) => {
                        t.value_at_mut(p).0.1 += 1;
                        *m.get_mut(&k).expect("in the model") += 1;
                    }
                    (_, None) => {
                        t.insert_new(boxed(&key, 0));
                        m.insert(k, 0);
                    }
                }
                proptest::prop_assert_eq!(t.len(), m.len());
                if step % 64 == 0 {
                    for s in &t.shards {
                        s.check();
                    }
                }
            }
            for s in &t.shards {
                s.check();
            }
            for (k, v) in &m {
                let p = t.find(&k.to_be_bytes());
                proptest::prop_assert!(p.is_some());
                proptest::prop_assert_eq!(t.value_at(p.unwrap()).0.1, *v);
            }
            proptest::prop_assert_eq!(t.iter().count(), m.len());
            let mut seen = HashSet::new();
            let mut c = 0;
            loop {
                c = t.scan(c, 4, |k, _| { seen.insert(k.to_vec()); });
                if c == 0 { break; }
            }
            proptest::prop_assert_eq!(seen.len(), m.len());
        }
    }
}
