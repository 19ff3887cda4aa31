//! Values of every type. Each collection keeps its own byte estimate and content digest up to date
//! on every change, so the keyspace can account a write in O(1) whatever the value's size.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::ops::Bound;

use crate::digest::{hash_bytes, hash_pair, hash_scored, mix64, poly, type_tag};
use crate::skiplist::SkipList;
use crate::table::Table;

/// Rough per-element bookkeeping cost (allocator headers, pointers, table nodes), so that memory
/// quotas see collections of many tiny elements as the memory they really take.
const ELEM_OVERHEAD: usize = 40;

/// The data types a key can hold.
pub enum Value {
    Str(StrValue),
    List(Box<ListValue>),
    Hash(Box<HashValue>),
    Set(Box<SetValue>),
    ZSet(Box<ZSetValue>),
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}({} elements)",
            self.value_type().name(),
            self.elements()
        )
    }
}

/// The type of a value, as TYPE names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    String,
    List,
    Hash,
    Set,
    ZSet,
}

impl ValueType {
    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::List => "list",
            ValueType::Hash => "hash",
            ValueType::Set => "set",
            ValueType::ZSet => "zset",
        }
    }

    pub fn from_name(name: &[u8]) -> Option<ValueType> {
        Some(match name.to_ascii_lowercase().as_slice() {
            b"string" => ValueType::String,
            b"list" => ValueType::List,
            b"hash" => ValueType::Hash,
            b"set" => ValueType::Set,
            b"zset" => ValueType::ZSet,
            _ => return None,
        })
    }

    /// Stable tag used in digests and on the migration wire.
    pub fn tag(self) -> u64 {
        match self {
            ValueType::String => type_tag::STRING,
            ValueType::List => type_tag::LIST,
            ValueType::Hash => type_tag::HASH,
            ValueType::Set => type_tag::SET,
            ValueType::ZSet => type_tag::ZSET,
        }
    }

    pub fn from_tag(tag: u64) -> Option<ValueType> {
        Some(match tag {
            type_tag::STRING => ValueType::String,
            type_tag::LIST => ValueType::List,
            type_tag::HASH => ValueType::Hash,
            type_tag::SET => ValueType::Set,
            type_tag::ZSET => ValueType::ZSet,
            _ => return None,
        })
    }

    /// An empty value of this type (collections are only empty transiently, e.g. while a
    /// migration streams a large value in chunks).
    pub fn empty_value(self) -> Value {
        match self {
            ValueType::String => Value::Str(StrValue::new(Vec::new())),
            ValueType::List => Value::List(Box::default()),
            ValueType::Hash => Value::Hash(Box::default()),
            ValueType::Set => Value::Set(Box::default()),
            ValueType::ZSet => Value::ZSet(Box::default()),
        }
    }
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Str(_) => ValueType::String,
            Value::List(_) => ValueType::List,
            Value::Hash(_) => ValueType::Hash,
            Value::Set(_) => ValueType::Set,
            Value::ZSet(_) => ValueType::ZSet,
        }
    }

    pub fn string(data: impl Into<Vec<u8>>) -> Value {
        Value::Str(StrValue::new(data.into()))
    }

    /// Digest of the content (without the key name, type or expiry).
    pub fn digest(&self) -> u64 {
        match self {
            Value::Str(s) => s.digest(),
            Value::List(l) => l.digest(),
            Value::Hash(h) => h.digest(),
            Value::Set(s) => s.digest(),
            Value::ZSet(z) => z.digest(),
        }
    }

    /// Estimated heap bytes.
    pub fn mem_size(&self) -> usize {
        match self {
            Value::Str(s) => s.mem_size(),
            Value::List(l) => l.bytes + 64,
            Value::Hash(h) => h.bytes + 64,
            Value::Set(s) => s.bytes + 64,
            Value::ZSet(z) => z.bytes + 96,
        }
    }

    /// Number of elements (1 for strings).
    pub fn elements(&self) -> usize {
        match self {
            Value::Str(_) => 1,
            Value::List(l) => l.len(),
            Value::Hash(h) => h.len(),
            Value::Set(s) => s.len(),
            Value::ZSet(z) => z.len(),
        }
    }

    /// True for a collection with no elements; Redis deletes such keys.
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::List(l) => l.is_empty(),
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
        }
    }

    /// Deep copy (COPY, and reading a value out for a migration batch).
    pub fn deep_clone(&self) -> Value {
        match self {
            Value::Str(s) => Value::Str(s.clone()),
            Value::List(l) => Value::List(Box::new((**l).clone())),
            Value::Hash(h) => {
                let mut n = HashValue::default();
                for (f, v) in h.iter() {
                    n.insert(f, v);
                }
                Value::Hash(Box::new(n))
            }
            Value::Set(s) => {
                let mut n = SetValue::default();
                for m in s.iter() {
                    n.insert(m);
                }
                Value::Set(Box::new(n))
            }
            Value::ZSet(z) => {
                let mut n = ZSetValue::default();
                for (m, sc) in z.iter() {
                    n.insert(m, sc);
                }
                Value::ZSet(Box::new(n))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strings

/// A string value with its CRC kept current.
#[derive(Clone)]
pub struct StrValue {
    data: Vec<u8>,
    crc: u32,
}

impl StrValue {
    pub fn new(data: Vec<u8>) -> Self {
        let crc = crc32fast::hash(&data);
        StrValue { data, crc }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn set(&mut self, data: Vec<u8>) {
        *self = StrValue::new(data);
    }

    /// Appends in place; the CRC is extended, not recomputed.
    pub fn append(&mut self, more: &[u8]) {
        let mut h = crc32fast::Hasher::new_with_initial_len(self.crc, self.data.len() as u64);
        let mut tail = crc32fast::Hasher::new();
        tail.update(more);
        h.combine(&tail);
        self.crc = h.finalize();
        self.data.extend_from_slice(more);
    }

    /// Overwrites from `offset`, zero-padding as SETRANGE does.
    pub fn set_range(&mut self, offset: usize, data: &[u8]) {
        let end = offset + data.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset..end].copy_from_slice(data);
        self.crc = crc32fast::hash(&self.data);
    }

    pub fn digest(&self) -> u64 {
        mix64((u64::from(self.crc) << 32) ^ self.data.len() as u64 ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn mem_size(&self) -> usize {
        self.data.capacity() + 16
    }
}

// ---------------------------------------------------------------------------------------------
// Lists

/// A list with its ordered polynomial digest.
#[derive(Clone)]
pub struct ListValue {
    items: VecDeque<Box<[u8]>>,
    bytes: usize,
    /// Σ h(eᵢ)·Bⁱ mod P over positions i from the head.
    poly: u64,
    /// Bⁿ mod P for n = len.
    pow: u64,
}

impl Default for ListValue {
    fn default() -> Self {
        ListValue {
            items: VecDeque::new(),
            bytes: 0,
            poly: 0,
            pow: 1,
        }
    }
}

#[inline]
fn elem_poly(e: &[u8]) -> u64 {
    poly::reduce(hash_bytes(e))
}

impl ListValue {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.items.get(i).map(|b| &**b)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &[u8]> + ExactSizeIterator {
        self.items.iter().map(|b| &**b)
    }

    /// Elements in `[start, end)`.
    pub fn range(&self, start: usize, end: usize) -> impl DoubleEndedIterator<Item = &[u8]> {
        let end = end.min(self.items.len());
        let start = start.min(end);
        self.items.range(start..end).map(|b| &**b)
    }

    pub fn push_back(&mut self, e: &[u8]) {
        self.poly = poly::add(self.poly, poly::mul(elem_poly(e), self.pow));
        self.pow = poly::mul(self.pow, poly::B);
        self.bytes += e.len() + ELEM_OVERHEAD;
        self.items.push_back(e.into());
    }

    pub fn push_front(&mut self, e: &[u8]) {
        self.poly = poly::add(elem_poly(e), poly::mul(self.poly, poly::B));
        self.pow = poly::mul(self.pow, poly::B);
        self.bytes += e.len() + ELEM_OVERHEAD;
        self.items.push_front(e.into());
    }

    pub fn pop_front(&mut self) -> Option<Box<[u8]>> {
        let e = self.items.pop_front()?;
        self.poly = poly::mul(poly::sub(self.poly, elem_poly(&e)), poly::B_INV);
        self.pow = poly::mul(self.pow, poly::B_INV);
        self.bytes -= e.len() + ELEM_OVERHEAD;
        Some(e)
    }

    pub fn pop_back(&mut self) -> Option<Box<[u8]>> {
        let e = self.items.pop_back()?;
        self.pow = poly::mul(self.pow, poly::B_INV);
        self.poly = poly::sub(self.poly, poly::mul(elem_poly(&e), self.pow));
        self.bytes -= e.len() + ELEM_OVERHEAD;
        Some(e)
    }

    /// Replaces element `i` (which must exist).
    pub fn set(&mut self, i: usize, e: &[u8]) {
        let old = std::mem::replace(&mut self.items[i], e.into());
        let delta = poly::sub(elem_poly(e), elem_poly(&old));
        self.poly = poly::add(self.poly, poly::mul(delta, poly::pow(poly::B, i as u64)));
        self.bytes = self.bytes + e.len() - old.len();
    }

    /// Arbitrary edits (LINSERT, LREM, LTRIM): O(n), like the commands themselves.
    pub fn edit<R>(&mut self, f: impl FnOnce(&mut VecDeque<Box<[u8]>>) -> R) -> R {
        let r = f(&mut self.items);
        self.recompute();
        r
    }

    fn recompute(&mut self) {
        let mut p = 0u64;
        let mut pw = 1u64;
        let mut bytes = 0;
        for e in &self.items {
            p = poly::add(p, poly::mul(elem_poly(e), pw));
            pw = poly::mul(pw, poly::B);
            bytes += e.len() + ELEM_OVERHEAD;
        }
        self.poly = p;
        self.pow = pw;
        self.bytes = bytes;
    }

    pub fn digest(&self) -> u64 {
        mix64(self.poly ^ (self.items.len() as u64).rotate_left(40) ^ 0x2545_f491_4f6c_dd1d)
    }
}

// ---------------------------------------------------------------------------------------------
// Hashes

/// A hash (field → value) with its digest.
#[derive(Default)]
pub struct HashValue {
    table: Table<Box<[u8]>>,
    bytes: usize,
    sum: u64,
}

impl HashValue {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        self.table.get(field).map(|v| &**v)
    }

    pub fn contains(&self, field: &[u8]) -> bool {
        self.table.contains(field)
    }

    /// Sets a field; returns true when the field is new.
    pub fn insert(&mut self, field: &[u8], value: &[u8]) -> bool {
        match self.table.find(field) {
            Some(i) => {
                let old = self.table.value_at_mut(i);
                self.sum = self
                    .sum
                    .wrapping_sub(hash_pair(field, old))
                    .wrapping_add(hash_pair(field, value));
                self.bytes = self.bytes + value.len() - old.len();
                *old = value.into();
                false
            }
            None => {
                self.sum = self.sum.wrapping_add(hash_pair(field, value));
                self.bytes += field.len() + value.len() + ELEM_OVERHEAD;
                self.table.insert_new(field.into(), value.into());
                true
            }
        }
    }

    pub fn remove(&mut self, field: &[u8]) -> bool {
        match self.table.remove(field) {
            Some((f, v)) => {
                self.sum = self.sum.wrapping_sub(hash_pair(&f, &v));
                self.bytes -= f.len() + v.len() + ELEM_OVERHEAD;
                true
            }
            None => false,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.table.iter().map(|(k, v)| (k, &**v))
    }

    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&[u8], &[u8])) -> u64 {
        self.table.scan(cursor, count, |k, v| f(k, v))
    }

    pub fn random(&self, rng: &mut impl rand::Rng) -> Option<(&[u8], &[u8])> {
        let i = self.table.random_index(rng)?;
        Some((self.table.key_at(i), self.table.value_at(i)))
    }

    pub fn digest(&self) -> u64 {
        mix64(self.sum ^ (self.table.len() as u64).rotate_left(40) ^ 0x3c6e_f372_fe94_f82b)
    }
}

// ---------------------------------------------------------------------------------------------
// Sets

/// A set of byte strings with its digest.
#[derive(Default)]
pub struct SetValue {
    table: Table<()>,
    bytes: usize,
    sum: u64,
}

impl SetValue {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn contains(&self, m: &[u8]) -> bool {
        self.table.contains(m)
    }

    /// Adds a member; returns true when it was new.
    pub fn insert(&mut self, m: &[u8]) -> bool {
        if self.table.contains(m) {
            return false;
        }
        self.sum = self.sum.wrapping_add(hash_bytes(m));
        self.bytes += m.len() + ELEM_OVERHEAD;
        self.table.insert_new(m.into(), ());
        true
    }

    pub fn remove(&mut self, m: &[u8]) -> bool {
        match self.table.remove(m) {
            Some((k, ())) => {
                self.sum = self.sum.wrapping_sub(hash_bytes(&k));
                self.bytes -= k.len() + ELEM_OVERHEAD;
                true
            }
            None => false,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.table.iter().map(|(k, ())| k)
    }

    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&[u8])) -> u64 {
        self.table.scan(cursor, count, |k, ()| f(k))
    }

    pub fn random(&self, rng: &mut impl rand::Rng) -> Option<&[u8]> {
        let i = self.table.random_index(rng)?;
        Some(self.table.key_at(i))
    }

    /// Removes and returns a random member.
    pub fn pop_random(&mut self, rng: &mut impl rand::Rng) -> Option<Box<[u8]>> {
        let i = self.table.random_index(rng)?;
        let (k, ()) = self.table.remove_at(i);
        self.sum = self.sum.wrapping_sub(hash_bytes(&k));
        self.bytes -= k.len() + ELEM_OVERHEAD;
        Some(k)
    }

    pub fn digest(&self) -> u64 {
        mix64(self.sum ^ (self.table.len() as u64).rotate_left(40) ^ 0xa54f_f53a_5f1d_36f1)
    }
}

// ---------------------------------------------------------------------------------------------
// Sorted sets

/// A score with a total order (NaN is never stored; commands refuse it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        // -0.0 and 0.0 compare equal, as in Redis.
        self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal)
    }
}

/// A sorted set: member → score, plus members ordered by (score, member) in a skiplist with
/// spans, so ranks and range starts are found in O(log n).
#[derive(Default)]
pub struct ZSetValue {
    dict: Table<f64>,
    list: SkipList,
    bytes: usize,
    sum: u64,
}

impl ZSetValue {
    pub fn len(&self) -> usize {
        self.dict.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dict.is_empty()
    }

    pub fn score(&self, m: &[u8]) -> Option<f64> {
        self.dict.get(m).copied()
    }

    /// Sets a member's score; returns the previous score.
    pub fn insert(&mut self, m: &[u8], score: f64) -> Option<f64> {
        let old = self.dict.get(m).copied();
        match old {
            Some(o) => {
                if o.to_bits() == score.to_bits() {
                    return old;
                }
                self.list.remove(o, m);
                self.sum = self.sum.wrapping_sub(hash_scored(m, o));
                if let Some(s) = self.dict.get_mut(m) {
                    *s = score;
                }
            }
            None => {
                self.dict.insert_new(m.into(), score);
                self.bytes += 2 * m.len() + 2 * ELEM_OVERHEAD;
            }
        }
        self.list.insert(score, m);
        self.sum = self.sum.wrapping_add(hash_scored(m, score));
        old
    }

    pub fn remove(&mut self, m: &[u8]) -> Option<f64> {
        let (_, score) = self.dict.remove(m)?;
        self.list.remove(score, m);
        self.sum = self.sum.wrapping_sub(hash_scored(m, score));
        self.bytes -= 2 * m.len() + 2 * ELEM_OVERHEAD;
        Some(score)
    }

    /// Members in order of (score, member).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + ExactSizeIterator {
        self.list.iter()
    }

    /// Members with 0-based ranks in `[start, end)`, ascending (reverse the iterator for
    /// descending). O(log n + m).
    pub fn range_by_rank(
        &self,
        start: usize,
        end: usize,
    ) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + ExactSizeIterator {
        self.list.range(start, end)
    }

    /// The member at a 0-based rank. O(log n).
    pub fn get_by_rank(&self, rank: usize) -> Option<(&[u8], f64)> {
        self.list.get(rank).map(|(s, m)| (m, s))
    }

    /// How many leading members (in (score, member) order) satisfy `before`, which must hold for
    /// a prefix of the order and not after it (a range bound). O(log n).
    pub fn count_before(&self, before: impl FnMut(f64, &[u8]) -> bool) -> usize {
        self.list.count_before(before)
    }

    /// Rank bounds `[start, end)` of the members whose score lies within the bounds.
    pub fn score_rank_range(&self, min: Bound<f64>, max: Bound<f64>) -> (usize, usize) {
        let start = self.count_before(|s, _| match min {
            Bound::Included(b) => Score(s) < Score(b),
            Bound::Excluded(b) => Score(s) <= Score(b),
            Bound::Unbounded => false,
        });
        let end = self.count_before(|s, _| match max {
            Bound::Included(b) => Score(s) <= Score(b),
            Bound::Excluded(b) => Score(s) < Score(b),
            Bound::Unbounded => true,
        });
        (start, end.max(start))
    }

    /// Members whose score lies within the bounds, in ascending order. O(log n + m).
    pub fn range_by_score(
        &self,
        min: Bound<f64>,
        max: Bound<f64>,
    ) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + ExactSizeIterator {
        let (start, end) = self.score_rank_range(min, max);
        self.list.range(start, end)
    }

    /// 0-based rank of a member in ascending order. O(log n).
    pub fn rank(&self, m: &[u8]) -> Option<usize> {
        let score = *self.dict.get(m)?;
        self.list.rank(score, m)
    }

    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&[u8], f64)) -> u64 {
        self.dict.scan(cursor, count, |k, s| f(k, *s))
    }

    pub fn digest(&self) -> u64 {
        mix64(self.sum ^ (self.dict.len() as u64).rotate_left(40) ^ 0x1f83_d9ab_fb41_bd6b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list_from(items: &[&str]) -> ListValue {
        let mut l = ListValue::default();
        for i in items {
            l.push_back(i.as_bytes());
        }
        l
    }

    #[test]
    fn list_digest_tracks_every_operation() {
        let mut l = ListValue::default();
        l.push_back(b"b");
        l.push_front(b"a");
        l.push_back(b"c");
        l.push_back(b"d");
        assert_eq!(l.digest(), list_from(&["a", "b", "c", "d"]).digest());
        l.pop_front();
        l.pop_back();
        assert_eq!(l.digest(), list_from(&["b", "c"]).digest());
        l.set(1, b"x");
        assert_eq!(l.digest(), list_from(&["b", "x"]).digest());
        l.edit(|items| items.insert(1, Box::from(&b"m"[..])));
        assert_eq!(l.digest(), list_from(&["b", "m", "x"]).digest());
        assert_ne!(l.digest(), list_from(&["x", "m", "b"]).digest());
        while l.pop_back().is_some() {}
        assert_eq!(l.digest(), ListValue::default().digest());
    }

    #[test]
    fn hash_and_set_digests_ignore_order() {
        let mut a = HashValue::default();
        let mut b = HashValue::default();
        for i in 0..50 {
            a.insert(format!("f{i}").as_bytes(), b"v");
        }
        for i in (0..50).rev() {
            b.insert(format!("f{i}").as_bytes(), b"old");
            b.insert(format!("f{i}").as_bytes(), b"v");
        }
        assert_eq!(a.digest(), b.digest());
        b.insert(b"f3", b"w");
        assert_ne!(a.digest(), b.digest());
        b.insert(b"f3", b"v");
        b.insert(b"extra", b"1");
        b.remove(b"extra");
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.bytes, b.bytes);
    }

    #[test]
    fn zset_ranges() {
        let mut z = ZSetValue::default();
        for (m, s) in [("a", 1.0), ("b", 2.0), ("c", 2.0), ("d", 3.0)] {
            z.insert(m.as_bytes(), s);
        }
        let names = |it: Vec<(&[u8], f64)>| {
            it.into_iter()
                .map(|(m, _)| String::from_utf8_lossy(m).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(
                z.range_by_score(Bound::Excluded(1.0), Bound::Included(2.0))
                    .collect()
            ),
            ["b", "c"]
        );
        assert_eq!(z.rank(b"c"), Some(2));
        z.insert(b"a", 5.0);
        assert_eq!(z.rank(b"a"), Some(3));
        assert_eq!(z.remove(b"b"), Some(2.0));
        assert_eq!(z.len(), 3);
        assert_eq!(
            names(
                z.range_by_score(Bound::Included(3.0), Bound::Excluded(3.0))
                    .collect()
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn string_append_keeps_crc() {
        let mut s = StrValue::new(b"hello ".to_vec());
        s.append(b"world");
        assert_eq!(s.digest(), StrValue::new(b"hello world".to_vec()).digest());
        s.set_range(0, b"J");
        assert_eq!(s.as_bytes(), b"Jello world");
        assert_eq!(s.digest(), StrValue::new(b"Jello world".to_vec()).digest());
    }
}
