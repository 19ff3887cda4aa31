//! What a write may add to a keyspace, bounded before it runs, so that a tenant's memory and key
//! quotas are checked against what the command will create rather than against its request.
//!
//! The bound is in the keyspace's own accounting (`Db::used_bytes`: entry overhead, key name and
//! each value's estimate), and it is an upper bound for every command: SETRANGE and SETBIT count
//! the offset they write at, APPEND a string's reallocation, RENAME and COPY what they move or
//! copy, the STORE commands their sources, a write to a packed (listpack, intset) collection its
//! conversion to the full encoding. A unit test runs every write command of the table and checks
//! that the memory it really added never exceeds its bound.
//!
//! A transaction is bounded as a whole before anything runs ([`Plan`]): each command is bounded
//! against the keyspace as the earlier commands may have left it (an upper bound of the size of
//! every key they wrote), so that it is refused whole or runs whole. A script checks each
//! `redis.call` before it runs, against the keyspace as the script has left it so far (the server's
//! `dispatch::check_quota` with one command), so it can never take its tenant past the quota
//! either; as in Redis, the calls before a refused one stay applied.

use std::collections::HashMap;

use ferrite_protocol::Args;
use ferrite_protocol::args::parse_i64;
use ferrite_storage::keyspace::{ENTRY_OVERHEAD, key_heap_bytes};
use ferrite_storage::value::{ELEMENT_OVERHEAD, VALUE_HEADER_MAX};
use ferrite_storage::{Db, Encoding, ValueRef};

use crate::cost::numkeys_keys;
use crate::spec::{CommandSpec, flags};

/// What creating one key costs besides its name and content: the entry, a long key's allocation
/// header (`key_heap_bytes` is at most `key.len() + 16`) and the value header.
pub const KEY_OVERHEAD: u64 = (ENTRY_OVERHEAD + 16 + VALUE_HEADER_MAX) as u64;

/// Per element of a collection: the element's bookkeeping (a packed value converting to the
/// full encoding pays it for every element it holds; a sorted set stores members twice).
const ELEMENT: u64 = 2 * ELEMENT_OVERHEAD as u64;

/// The largest a HyperLogLog gets (dense: 12304 bytes), with room for its buffer's growth.
const HLL_MAX: u64 = 32 * 1024;

/// The longest number INCRBYFLOAT and HINCRBYFLOAT write (Redis's long-double formatting of the
/// largest doubles is ~330 characters).
const FLOAT_TEXT: u64 = 512;

/// Bytes of decoded value per byte of a RESTORE payload at most (LZF expands ~132x; packed
/// encodings decode into elements with their overhead).
const RESTORE_EXPANSION: u64 = 140;

/// What a write may add at most.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    /// Bytes of the keyspace's accounting.
    pub bytes: u64,
    /// Keys that do not exist yet and may be created.
    pub keys: u64,
}

/// An upper bound of a key's size, as a transaction's earlier commands may have left it.
#[derive(Debug, Clone, Copy)]
struct Bound {
    bytes: u64,
    elements: u64,
}

/// The bound of a command or of a transaction, built command by command.
pub struct Plan<'d, 'a> {
    db: &'d Db,
    now: u64,
    /// Keys written by the commands planned so far, with an upper bound of their size (a
    /// transaction only; a single command needs none).
    written: Option<HashMap<&'a [u8], Bound>>,
    created: Vec<&'a [u8]>,
    bytes: u64,
}

impl<'d, 'a> Plan<'d, 'a> {
    /// A plan for one command.
    pub fn single(db: &'d Db, now: u64) -> Self {
        Plan {
            db,
            now,
            written: None,
            created: Vec::new(),
            bytes: 0,
        }
    }

    /// A plan for a sequence of commands run together (a transaction).
    pub fn transaction(db: &'d Db, now: u64) -> Self {
        Plan {
            written: Some(HashMap::new()),
            ..Plan::single(db, now)
        }
    }

    /// Adds a command (read-only commands add nothing).
    pub fn add(&mut self, spec: &CommandSpec, args: Args<'a>) {
        if !spec.is_write() {
            return;
        }
        self.created.extend(spec.created_keys(&args));
        let (bytes, dests) = self.bound(spec, &args);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.written.is_some() {
            for (key, bound) in dests {
                if let Some(w) = self.written.as_mut() {
                    w.insert(key, bound);
                }
            }
        }
    }

    /// What the planned commands may add at most.
    pub fn demand(&mut self) -> Demand {
        self.created.sort_unstable();
        self.created.dedup();
        let (db, now) = (self.db, self.now);
        // A key deleted or renamed away earlier in a transaction may be created again: counting
        // the names that do not exist now never undercounts.
        let keys = self
            .created
            .iter()
            .filter(|k| db.peek(k).is_none_or(|e| e.is_expired(now)))
            .count() as u64;
        Demand {
            bytes: self.bytes,
            keys,
        }
    }

    /// An upper bound of a key's accounted size now (0 when absent).
    fn size(&self, key: &[u8]) -> Bound {
        if let Some(b) = self.written.as_ref().and_then(|w| w.get(key)) {
            return *b;
        }
        match self.db.peek(key) {
            Some(e) => Bound {
                bytes: e.size(key) as u64,
                elements: e.value().elements() as u64,
            },
            None => Bound {
                bytes: 0,
                elements: 0,
            },
        }
    }

    /// The string at `key` as it is now: (length, capacity), or None when not known exactly (a
    /// transaction wrote it) or not a string.
    fn string_shape(&self, key: &[u8]) -> Option<(u64, u64)> {
        if self.written.as_ref().is_some_and(|w| w.contains_key(key)) {
            return None;
        }
        let e = self.db.peek(key)?;
        match e.value() {
            // The entry's size counts a string's buffer as its length + 16, or nothing while
            // the string is kept inside the value (`StrRef::mem_size`): capacity is the length.
            ValueRef::Str(s) => {
                let heap = e
                    .size(key)
                    .saturating_sub(ENTRY_OVERHEAD + key_heap_bytes(key) + 16);
                Some((s.len() as u64, (heap as u64).max(s.len() as u64)))
            }
            _ => None,
        }
    }

    /// What converting `key`'s value to its full encoding may add: a packed value pays every
    /// element's bookkeeping; a value a transaction wrote may be packed.
    fn conversion(&self, key: &[u8]) -> u64 {
        let b = self.size(key);
        let packed = match self.written.as_ref().and_then(|w| w.get(key)) {
            Some(_) => true,
            None => self.db.peek(key).is_some_and(|e| {
                matches!(e.value().encoding(), Encoding::Listpack | Encoding::Intset)
            }),
        };
        if packed {
            b.bytes.saturating_add(b.elements.saturating_mul(ELEMENT))
        } else {
            0
        }
    }

    /// Growth of a string written up to byte `end`: a new string takes `end` bytes; an existing
    /// one reallocates (doubling) only past its capacity.
    fn string_growth(&self, key: &[u8], end: u64) -> u64 {
        let grown = match self.string_shape(key) {
            Some((len, _)) if end <= len => 0,
            Some((_, cap)) => (2 * cap).max(end).saturating_sub(cap),
            None => (2 * self.size(key).bytes).max(end),
        };
        grown + 64 + key.len() as u64 + KEY_OVERHEAD
    }

    /// The bytes a command may add and the size bounds of the keys it writes.
    fn bound(&self, spec: &CommandSpec, args: &Args<'a>) -> (u64, Vec<(&'a [u8], Bound)>) {
        let argc = args.len() as u64;
        // Every argument as a stored element (name, value, field, member...) with bookkeeping.
        let payload = args.tail(1).byte_len() as u64 + argc * ELEMENT;
        let key = args.get(1);
        let grow = |b: Bound, by: u64, elements: u64| Bound {
            bytes: b.bytes.saturating_add(by),
            elements: b.elements.saturating_add(elements),
        };
        let fresh = |bytes: u64, elements: u64| Bound { bytes, elements };
        match spec.name {
            // Writes that only remove or change metadata.
            _ if !spec.has(flags::DENYOOM) && !matches!(spec.name, "rename" | "renamenx") => {
                (0, Vec::new())
            }
            "rename" | "renamenx" => {
                let (src, dst) = (args.get(1), args.get(2));
                let moved = self.size(src);
                // The entry keeps its node and value; only the name changes: a long name takes an
                // allocation of its own (the source's, if it had one, is freed).
                let bytes = key_heap_bytes(dst) as u64;
                (
                    bytes,
                    vec![(dst, grow(moved, bytes, 0)), (src, fresh(0, 0))],
                )
            }
            "copy" => {
                let (src, dst) = (args.get(1), args.get(2));
                let copied = self.size(src);
                let bytes = copied.bytes + dst.len() as u64 + KEY_OVERHEAD;
                (bytes, vec![(dst, fresh(bytes, copied.elements))])
            }
            "append" => {
                let end = self
                    .string_shape(key)
                    .map_or(0, |(len, _)| len)
                    .saturating_add(args.get(2).len() as u64);
                let bytes = self.string_growth(key, end) + args.get(2).len() as u64;
                (bytes, vec![(key, grow(self.size(key), bytes, 1))])
            }
            "setrange" => {
                let value = args.get(3).len() as u64;
                if value == 0 {
                    return (0, Vec::new());
                }
                let offset = count(args.get(2));
                let bytes = self.string_growth(key, offset.saturating_add(value));
                (bytes, vec![(key, grow(self.size(key), bytes, 1))])
            }
            "setbit" => {
                let end = count(args.get(2)) / 8 + 1;
                let bytes = self.string_growth(key, end);
                (bytes, vec![(key, grow(self.size(key), bytes, 1))])
            }
            "bitfield" => {
                let end = bitfield_end(args);
                let bytes = self.string_growth(key, end);
                (bytes, vec![(key, grow(self.size(key), bytes, 1))])
            }
            "bitop" => {
                let dst = args.get(2);
                let largest = (3..args.len())
                    .map(|i| self.size(args.get(i)).bytes)
                    .max()
                    .unwrap_or(0);
                let bytes = largest + dst.len() as u64 + KEY_OVERHEAD;
                (bytes, vec![(dst, fresh(bytes, 1))])
            }
            "pfadd" | "pfmerge" | "pfdebug" => {
                let k = if spec.name == "pfdebug" {
                    args.get(2)
                } else {
                    key
                };
                let bytes = HLL_MAX + k.len() as u64 + KEY_OVERHEAD;
                (bytes, vec![(k, grow(self.size(k), bytes, 1))])
            }
            "incrbyfloat" | "hincrbyfloat" => {
                let bytes = payload + FLOAT_TEXT + KEY_OVERHEAD + self.conversion(key);
                (bytes, vec![(key, grow(self.size(key), bytes, 1))])
            }
            "lmove" | "rpoplpush" | "blmove" => {
                // One element moves: the destination grows by what the source loses (plus the
                // destination's creation or conversion).
                let (src, dst) = (args.get(1), args.get(2));
                let moved = self.size(src);
                let bytes = dst.len() as u64 + KEY_OVERHEAD + ELEMENT + self.conversion(dst);
                (
                    bytes,
                    vec![(dst, grow(self.size(dst), moved.bytes + bytes, 1))],
                )
            }
            "sinterstore" | "sunionstore" | "sdiffstore" => {
                let dst = key;
                let sources: Vec<Bound> = (2..args.len()).map(|i| self.size(args.get(i))).collect();
                self.store(dst, &sources, 1)
            }
            "zunionstore" | "zinterstore" | "zdiffstore" => {
                // Sets count as sorted sets with score 1: a member stored twice.
                let sources: Vec<Bound> = numkeys_keys(args, 2).map(|k| self.size(k)).collect();
                self.store(key, &sources, 2)
            }
            "zrangestore" => self.store(key, &[self.size(args.get(2))], 1),
            "geosearchstore" => self.store(key, &[self.size(args.get(2))], 1),
            "georadius" | "georadiusbymember" => match spec.created_keys(args).first() {
                Some(dst) => self.store(dst, &[self.size(key)], 1),
                None => (0, Vec::new()),
            },
            "sort" => match spec.created_keys(args).first() {
                Some(dst) => self.sort_store(dst, args),
                None => (0, Vec::new()),
            },
            "restore" => {
                let payload_len = args.get(3).len() as u64;
                let bytes =
                    payload_len.saturating_mul(RESTORE_EXPANSION) + key.len() as u64 + KEY_OVERHEAD;
                (bytes, vec![(key, fresh(bytes, payload_len))])
            }
            // Sorted-set members are stored twice (member table and order-statistics tree).
            "zadd" | "zincrby" | "geoadd" => {
                let bytes = 2 * payload + KEY_OVERHEAD + self.conversion(key);
                (bytes, vec![(key, grow(self.size(key), bytes, argc))])
            }
            // Every other write that may grow memory stores (at most) its arguments.
            _ => {
                let keys: Vec<&'a [u8]> = spec.keys(args).collect();
                let conversion: u64 = keys
                    .iter()
                    .map(|k| self.conversion(k))
                    .fold(0, u64::saturating_add);
                let created = spec.created_keys(args).len().max(1) as u64;
                let bytes = payload
                    .saturating_add(created * KEY_OVERHEAD)
                    .saturating_add(conversion);
                let dests = keys
                    .into_iter()
                    .map(|k| (k, grow(self.size(k), bytes, argc)))
                    .collect();
                (bytes, dests)
            }
        }
    }

    /// A STORE destination holding at most the sources' elements, each at most `factor` times
    /// as large as in its source.
    fn store(
        &self,
        dst: &'a [u8],
        sources: &[Bound],
        factor: u64,
    ) -> (u64, Vec<(&'a [u8], Bound)>) {
        let (bytes, elements) = sources.iter().fold((0u64, 0u64), |(b, e), s| {
            (b.saturating_add(s.bytes), e.saturating_add(s.elements))
        });
        let bytes = bytes
            .saturating_mul(factor)
            .saturating_add(elements.saturating_mul(ELEMENT))
            .saturating_add(dst.len() as u64 + KEY_OVERHEAD);
        (bytes, vec![(dst, Bound { bytes, elements })])
    }

    /// SORT ... STORE: a list of the source's elements, or of what the GET patterns fetch for
    /// each (any value of the keyspace: bounded by all the memory in use).
    fn sort_store(&self, dst: &'a [u8], args: &Args<'a>) -> (u64, Vec<(&'a [u8], Bound)>) {
        let src = self.size(args.get(1));
        let gets: Vec<&[u8]> = (2..args.len().saturating_sub(1))
            .filter(|&i| args.get(i).eq_ignore_ascii_case(b"GET"))
            .map(|i| args.get(i + 1))
            .collect();
        let per_element = if gets.is_empty() {
            return self.store(dst, &[src], 1);
        } else if gets.iter().all(|g| *g == b"#") {
            src.bytes
        } else {
            // Each GET may fetch any string or hash field: none is larger than all memory in use
            // plus what earlier commands of a transaction may have added.
            (self.db.used_bytes() as u64).saturating_add(self.bytes)
        };
        let bytes = src
            .elements
            .saturating_mul(gets.len() as u64)
            .saturating_mul(per_element.saturating_add(ELEMENT))
            .saturating_add(dst.len() as u64 + KEY_OVERHEAD);
        (
            bytes,
            vec![(
                dst,
                Bound {
                    bytes,
                    elements: src.elements.saturating_mul(gets.len() as u64),
                },
            )],
        )
    }
}

/// A non-negative integer argument (0 when it is not one: the command will refuse it).
fn count(a: &[u8]) -> u64 {
    parse_i64(a).map_or(0, |n| n.max(0) as u64)
}

/// The byte after the last bit BITFIELD may write (SET and INCRBY; `#n` offsets count in
/// fields). An offset that cannot be read counts as the largest string, so that a form this
/// parser does not know is never under-counted.
fn bitfield_end(args: &Args<'_>) -> u64 {
    const MAX: u64 = 512 * 1024 * 1024;
    let mut end = 0u64;
    let mut i = 2;
    while i < args.len() {
        let op = args.get(i);
        if op.eq_ignore_ascii_case(b"SET") || op.eq_ignore_ascii_case(b"INCRBY") {
            let ty = args.get(i + 1);
            let bits = ty
                .get(1..)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|b| b.parse::<u64>().ok());
            let offset = args.get(i + 2);
            let at = match (bits, offset.strip_prefix(b"#")) {
                (Some(bits), Some(n)) => parse_i64(n).map(|n| n.max(0) as u64 * bits),
                (Some(_), None) => parse_i64(offset).map(|n| n.max(0) as u64),
                _ => None,
            };
            match (at, bits) {
                (Some(at), Some(bits)) => end = end.max((at + bits).div_ceil(8)),
                _ => return MAX,
            }
            i += 4;
        } else if op.eq_ignore_ascii_case(b"GET") {
            i += 3;
        } else if op.eq_ignore_ascii_case(b"OVERFLOW") {
            i += 2;
        } else {
            return MAX;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::lookup;
    use crate::testing::TestDb;

    /// A keyspace with small (packed) and large values of every type.
    fn populated() -> TestDb {
        let mut t = TestDb::new();
        let many =
            |n: usize, w: usize| -> Vec<String> { (0..n).map(|i| format!("{i:0w$}")).collect() };
        t.run(&["SET", "s", &"x".repeat(200)]);
        t.run(&["SET", "n", "10"]);
        t.run(&["SET", "big", &"y".repeat(5000)]);
        t.run(&["RPUSH", "l", "a", "b", "c"]);
        let mut argv = vec!["RPUSH".to_string(), "L".into()];
        argv.extend(many(300, 20));
        t.run(&argv);
        t.run(&["HSET", "h", "f1", "v1", "f2", "v2"]);
        let mut argv = vec!["HSET".to_string(), "H".into()];
        for m in many(300, 20) {
            argv.push(m.clone());
            argv.push(m);
        }
        t.run(&argv);
        t.run(&["SADD", "ints", "1", "2", "3"]);
        t.run(&["SADD", "ss", "a", "b", "c"]);
        let mut argv = vec!["SADD".to_string(), "S".into()];
        argv.extend(many(300, 20));
        t.run(&argv);
        t.run(&["ZADD", "z", "1", "a", "2", "b"]);
        let mut argv = vec!["ZADD".to_string(), "Z".into()];
        for (i, m) in many(300, 20).into_iter().enumerate() {
            argv.push(i.to_string());
            argv.push(m);
        }
        t.run(&argv);
        t.run(&[
            "GEOADD", "g", "13.36", "38.11", "palermo", "15.08", "37.50", "catania",
        ]);
        t.run(&["PFADD", "p", "a", "b", "c"]);
        t
    }

    fn demand(t: &TestDb, argv: &[&str]) -> Demand {
        let req = ferrite_protocol::OwnedRequest::from_parts(argv.iter().map(|a| a.as_bytes()));
        let spec = lookup(argv[0].as_bytes()).expect("a command");
        let db = t.keyspace.lock();
        let mut plan = Plan::single(&db, t.now);
        plan.add(spec, req.args());
        plan.demand()
    }

    /// Every write that can grow a keyspace, run against small and large values: what it really
    /// adds (bytes and keys) never exceeds its bound.
    #[test]
    fn bounds_are_upper_bounds() {
        let big_member = "m".repeat(3000);
        let cases: Vec<Vec<&str>> = vec![
            vec!["SET", "new", "v"],
            vec!["SET", "s", &big_member],
            vec!["SETNX", "new2", "v"],
            vec!["SETEX", "new3", "100", "v"],
            vec!["GETSET", "s", "short"],
            vec!["MSET", "m1", "a", "m2", "b", "m1", "c"],
            vec!["MSETNX", "m3", "a", "m4", "b"],
            vec!["APPEND", "s", "tail"],
            vec!["APPEND", "big", "tail"],
            vec!["APPEND", "newa", &big_member],
            vec!["SETRANGE", "s", "1000", "x"],
            vec!["SETRANGE", "newr", "5000", "x"],
            vec!["SETBIT", "s", "20000", "1"],
            vec!["SETBIT", "newb", "80000", "1"],
            vec![
                "BITFIELD", "newf", "SET", "u8", "#3000", "1", "INCRBY", "i16", "90000", "3",
            ],
            vec!["INCR", "n"],
            vec!["INCRBY", "newi", "5"],
            vec!["INCRBYFLOAT", "n", "1.5e300"],
            vec!["LPUSH", "l", &big_member, "x"],
            vec!["RPUSH", "L", "x", "y"],
            vec!["LINSERT", "l", "BEFORE", "a", &big_member],
            vec!["LSET", "L", "0", &big_member],
            vec!["LMOVE", "L", "l", "LEFT", "RIGHT"],
            vec!["RPOPLPUSH", "L", "newl"],
            vec!["HSET", "h", "f3", &big_member],
            vec!["HSET", "H", "f3", "v"],
            vec!["HSETNX", "newh", "f", "v"],
            vec!["HINCRBY", "h", "n", "3"],
            vec!["HINCRBYFLOAT", "h", "fl", "1.5e300"],
            vec!["SADD", "ints", "notanint"],
            vec!["SADD", "ss", &big_member],
            vec!["SADD", "S", "x"],
            vec!["SMOVE", "S", "ints", "00000000000000000001"],
            vec!["SUNIONSTORE", "d1", "S", "ss"],
            vec!["SINTERSTORE", "d2", "S", "S"],
            vec!["SDIFFSTORE", "d3", "S", "ss"],
            vec!["ZADD", "z", "3", &big_member],
            vec!["ZADD", "Z", "3", "x"],
            vec!["ZINCRBY", "z", "1", "new"],
            vec!["ZUNIONSTORE", "d4", "2", "Z", "S"],
            vec!["ZINTERSTORE", "d5", "2", "Z", "Z"],
            vec!["ZDIFFSTORE", "d6", "1", "Z"],
            vec!["ZRANGESTORE", "d7", "Z", "0", "-1"],
            vec!["GEOADD", "g", "2.35", "48.85", "paris"],
            vec![
                "GEOSEARCHSTORE",
                "d8",
                "g",
                "FROMLONLAT",
                "14",
                "38",
                "BYRADIUS",
                "500",
                "km",
            ],
            vec!["PFADD", "p", "d", "e"],
            vec!["PFADD", "newp", "a"],
            vec!["PFMERGE", "d9", "p"],
            vec!["BITOP", "OR", "d10", "big", "s"],
            vec!["BITOP", "NOT", "d11", "big"],
            vec!["COPY", "L", "c1"],
            vec!["COPY", "Z", "c2"],
            vec!["COPY", "big", "c3"],
            vec!["RENAME", "H", &big_member],
            vec!["RENAMENX", "h", "h-renamed"],
            // Names around the longest a table node holds inline (22 bytes).
            vec!["RENAME", "h-renamed", "a-name-of-23-bytes-long"],
            vec![
                "RENAME",
                "a-name-of-23-bytes-long",
                "a-name-of-22-bytes-lon",
            ],
            vec!["SET", "a-new-key-of-23-bytes-l", "v"],
            vec!["SORT", "L", "ALPHA", "STORE", "d12"],
            vec!["SORT", "S", "ALPHA", "GET", "#", "GET", "#", "STORE", "d13"],
        ];
        let mut t = populated();
        for argv in &cases {
            let d = demand(&t, argv);
            let (bytes0, keys0) = {
                let db = t.keyspace.lock();
                (db.used_bytes() as i64, db.len() as i64)
            };
            let reply = t.run(argv);
            assert!(!reply.starts_with('-'), "{argv:?}: {reply}");
            let (bytes1, keys1) = {
                let db = t.keyspace.lock();
                (db.used_bytes() as i64, db.len() as i64)
            };
            let short: Vec<&str> = argv
                .iter()
                .map(|a| if a.len() > 30 { "<long>" } else { a })
                .collect();
            assert!(
                bytes1 - bytes0 <= d.bytes as i64,
                "{short:?} added {} bytes, bound {}",
                bytes1 - bytes0,
                d.bytes
            );
            assert!(
                keys1 - keys0 <= d.keys as i64,
                "{short:?} created {} keys, bound {}",
                keys1 - keys0,
                d.keys
            );
        }
    }

    /// A transaction's bound covers what its commands add together, each counted against the
    /// keys the earlier ones wrote.
    #[test]
    fn a_transaction_bound_covers_the_whole() {
        let mut t = populated();
        let value = "v".repeat(4000);
        let commands: Vec<Vec<&str>> = vec![
            vec!["SET", "a", &value],
            vec!["COPY", "a", "b"],
            vec!["APPEND", "b", &value],
            vec!["SUNIONSTORE", "u", "S", "ss"],
            vec!["COPY", "u", "u2"],
            vec!["RENAME", "u2", "u3"],
            vec!["SETRANGE", "a", "10000", "x"],
        ];
        let d = {
            let reqs: Vec<_> = commands
                .iter()
                .map(|argv| {
                    ferrite_protocol::OwnedRequest::from_parts(argv.iter().map(|a| a.as_bytes()))
                })
                .collect();
            let db = t.keyspace.lock();
            let mut plan = Plan::transaction(&db, t.now);
            for (argv, req) in commands.iter().zip(&reqs) {
                plan.add(lookup(argv[0].as_bytes()).unwrap(), req.args());
            }
            plan.demand()
        };
        let before = t.keyspace.lock().used_bytes();
        let replies = t.run_transaction(&commands);
        assert!(replies.iter().all(|r| !r.starts_with('-')), "{replies:?}");
        let added = t.keyspace.lock().used_bytes() - before;
        assert!(added as u64 <= d.bytes, "added {added}, bound {}", d.bytes);
        assert!(d.keys >= 4, "{d:?}");
    }
}
