//! Encodings of values and the thresholds that choose them (Redis's `*-max-listpack-*` and
//! `set-max-intset-entries` parameters).
//!
//! Small collections are kept in a compact *packed* form (one byte buffer: Redis's `listpack`;
//! integer-only sets as a sorted fixed-width array: Redis's `intset`) and converted to the full
//! structure (hash table; for sorted sets a table plus an order-statistics tree, which OBJECT
//! ENCODING calls `skiplist` as Redis does) once they pass a threshold. Like Redis, a hash, set
//! or sorted set never converts back to the compact form when it shrinks; a list does, as in
//! Redis 7.2, once it is one quicklist node within half of `list-max-listpack-size`. The thresholds are server-wide
//! (CONFIG SET changes them for values converted from then on), read with relaxed loads on each
//! insert.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

/// The encoding a value is kept in, named as Redis's OBJECT ENCODING names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A string holding a canonical 64-bit integer (as Redis would store it).
    Int,
    /// A short string (up to 44 bytes when written whole, as Redis's embedded strings).
    EmbStr,
    /// Any other string.
    Raw,
    /// A packed byte buffer of elements (small hashes, sets, sorted sets, lists).
    Listpack,
    /// A sorted array of integers (small integer-only sets).
    Intset,
    /// A hash table (hashes and sets).
    HashTable,
    /// A hash table plus an order-statistics tree (sorted sets; Redis keeps a skiplist, whose
    /// name OBJECT ENCODING reports).
    Skiplist,
    /// A list past `list-max-listpack-size`.
    Quicklist,
    /// A stream (blocks of packed entries in a B-tree).
    Stream,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Int => "int",
            Encoding::EmbStr => "embstr",
            Encoding::Raw => "raw",
            Encoding::Listpack => "listpack",
            Encoding::Intset => "intset",
            Encoding::HashTable => "hashtable",
            Encoding::Skiplist => "skiplist",
            Encoding::Quicklist => "quicklist",
            Encoding::Stream => "stream",
        }
    }
}

/// One threshold: its Redis name (and older alias), default and current value.
pub struct Limit {
    pub name: &'static str,
    /// The Redis 6 `ziplist` name CONFIG also accepts, if any.
    pub alias: Option<&'static str>,
    pub default: i64,
    /// Smallest and largest accepted values.
    pub min: i64,
    pub max: i64,
    value: AtomicI64,
}

impl Limit {
    const fn new(
        name: &'static str,
        alias: Option<&'static str>,
        default: i64,
        min: i64,
        max: i64,
    ) -> Limit {
        Limit {
            name,
            alias,
            default,
            min,
            max,
            value: AtomicI64::new(default),
        }
    }

    pub fn get(&self) -> i64 {
        self.value.load(Relaxed)
    }

    /// Sets the value if it is within range; returns false (and changes nothing) otherwise.
    pub fn set(&self, v: i64) -> bool {
        if v < self.min || v > self.max {
            return false;
        }
        self.value.store(v, Relaxed);
        true
    }

    #[inline]
    fn get_usize(&self) -> usize {
        usize::try_from(self.get()).unwrap_or(0)
    }
}

/// Every encoding threshold, in the order CONFIG lists them.
pub static LIMITS: [Limit; 11] = [
    Limit::new(
        "hash-max-listpack-entries",
        Some("hash-max-ziplist-entries"),
        128,
        0,
        i64::MAX,
    ),
    Limit::new(
        "hash-max-listpack-value",
        Some("hash-max-ziplist-value"),
        64,
        0,
        i64::MAX,
    ),
    Limit::new("set-max-intset-entries", None, 512, 0, i64::MAX),
    Limit::new("set-max-listpack-entries", None, 128, 0, i64::MAX),
    Limit::new("set-max-listpack-value", None, 64, 0, i64::MAX),
    Limit::new(
        "zset-max-listpack-entries",
        Some("zset-max-ziplist-entries"),
        128,
        0,
        i64::MAX,
    ),
    Limit::new(
        "zset-max-listpack-value",
        Some("zset-max-ziplist-value"),
        64,
        0,
        i64::MAX,
    ),
    // Positive: most entries per packed list; -1..-5: most bytes, 4 KiB · 2^(-n-1).
    Limit::new(
        "list-max-listpack-size",
        Some("list-max-ziplist-size"),
        -2,
        // Redis accepts any int: below -5 counts as -5, 0 as 1 (`list_max_packed`).
        i32::MIN as i64,
        i32::MAX as i64,
    ),
    // Accepted for compatibility: Ferrite does not compress lists.
    Limit::new("list-compress-depth", None, 0, 0, i32::MAX as i64),
    // Bytes and entries of a stream block (0: no limit but the 1 GiB a block can hold / none).
    Limit::new("stream-node-max-bytes", None, 4096, 0, i64::MAX),
    Limit::new("stream-node-max-entries", None, 100, 0, i64::MAX),
];

/// The threshold called `name` (Redis name or `ziplist` alias, case-insensitive).
pub fn limit(name: &str) -> Option<&'static Limit> {
    LIMITS.iter().find(|l| {
        l.name.eq_ignore_ascii_case(name) || l.alias.is_some_and(|a| a.eq_ignore_ascii_case(name))
    })
}

pub(crate) fn hash_max_entries() -> usize {
    LIMITS[0].get_usize()
}
pub(crate) fn hash_max_value() -> usize {
    LIMITS[1].get_usize()
}
pub(crate) fn set_max_intset_entries() -> usize {
    LIMITS[2].get_usize()
}
pub(crate) fn set_max_listpack_entries() -> usize {
    LIMITS[3].get_usize()
}
pub(crate) fn set_max_listpack_value() -> usize {
    LIMITS[4].get_usize()
}
pub(crate) fn zset_max_entries() -> usize {
    LIMITS[5].get_usize()
}
pub(crate) fn zset_max_value() -> usize {
    LIMITS[6].get_usize()
}

pub(crate) fn stream_node_max_bytes() -> usize {
    LIMITS[9].get_usize()
}
pub(crate) fn stream_node_max_entries() -> usize {
    LIMITS[10].get_usize()
}

/// `list-max-listpack-size` as (most elements, most bytes) of a packed list: a positive value
/// limits elements (0 counts as 1, as in Redis); -1..-5 limit bytes to 4 KiB · 2^(-n-1), and
/// anything below -5 counts as -5.
pub(crate) fn list_max_packed() -> (usize, usize) {
    let v = LIMITS[7].get();
    if v >= 0 {
        (v.max(1) as usize, usize::MAX)
    } else {
        let shift = (-v).clamp(1, 5) as u32 - 1;
        (usize::MAX, 4096usize << shift)
    }
}

/// Whether `s` is exactly how a 64-bit integer is written (no sign but `-`, no leading zeros,
/// no `-0`): the strings Redis stores as integers, and the only ones an intset may hold, since
/// the set gives back the very bytes it was given.
pub fn canonical_int(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] if !neg => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        let d = i64::from(c - b'0');
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ints_are_exactly_round_trips() {
        for n in [0i64, 1, -1, 42, -42, i64::MAX, i64::MIN, 1_000_000, -9_999] {
            assert_eq!(canonical_int(n.to_string().as_bytes()), Some(n));
        }
        for bad in [
            "",
            "-",
            "-0",
            "01",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "9223372036854775808",
            "-9223372036854775809",
            "abc",
            "00",
        ] {
            assert_eq!(canonical_int(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn limits_by_name_and_alias_with_ranges() {
        assert_eq!(
            limit("HASH-MAX-ZIPLIST-ENTRIES").unwrap().name,
            "hash-max-listpack-entries"
        );
        assert_eq!(limit("zset-max-listpack-value").unwrap().default, 64);
        assert!(limit("nope").is_none());
        let l = limit("list-max-listpack-size").unwrap();
        assert_eq!(l.get(), -2);
        assert_eq!(list_max_packed(), (usize::MAX, 8192));
        assert!(!l.set(i32::MIN as i64 - 1));
        assert_eq!(l.get(), -2, "refused values change nothing");
    }
}
