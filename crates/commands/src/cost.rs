//! How much work a command will do, estimated before it runs, so that the server can run long
//! commands off the threads that serve connections (docs/ARCHITECTURE.md, "Execution model").
//!
//! The unit is roughly one element visited (a key, a member, a list item, 64 bytes of a string):
//! about 20–100 ns of work. Most commands cost about their number of arguments and are never
//! looked at further ([`depends_on_data`] is false for them); the others are estimated from the
//! sizes of the values they read, under the keyspace lock, by [`estimate`].

use std::sync::OnceLock;

use ferrite_protocol::Args;
use ferrite_protocol::args::parse_i64;
use ferrite_storage::{Db, ValueRef};

use crate::spec::{CommandSpec, all, flags};

/// Work above which a command is long: it runs on the blocking pool rather than on a thread that
/// serves connections. About a millisecond of work.
pub const LONG_WORK: u64 = 10_000;

/// Bytes of a string that count as one unit of work.
const BYTES_PER_UNIT: u64 = 64;

/// Commands that are not flagged `fast` but do work proportional to their arguments only.
const ARGUMENT_BOUND: &[&str] = &[
    "set",
    "setex",
    "psetex",
    "mset",
    "msetnx",
    "del",
    "rename",
    "randomkey",
    "geoadd",
    "pfdebug",
    "pfselftest",
    "lset",
    "lindex",
];

/// `fast` commands whose COUNT (or count argument) lets them do much more work than their
/// arguments suggest.
const COUNTED: &[&str] = &[
    "lpop",
    "rpop",
    "spop",
    "zpopmin",
    "zpopmax",
    "lmpop",
    "zmpop",
    "srandmember",
    "hrandfield",
    "zrandmember",
];

/// Whether the command at `index` of the command table can do more work than its arguments
/// suggest (so [`estimate`] must look at the data). Precomputed: the dispatcher asks on every
/// command.
#[inline]
pub fn depends_on_data(index: usize) -> bool {
    static BY_INDEX: OnceLock<Vec<bool>> = OnceLock::new();
    BY_INDEX
        .get_or_init(|| all().iter().map(data_dependent).collect())
        .get(index)
        .copied()
        .unwrap_or(false)
}

fn data_dependent(spec: &CommandSpec) -> bool {
    match spec.handler {
        crate::Handler::Server => false,
        crate::Handler::Data(_) => {
            COUNTED.contains(&spec.name)
                || !(spec.has(flags::FAST) || ARGUMENT_BOUND.contains(&spec.name))
        }
    }
}

/// The work of running `args` now: its arguments plus, for commands that [`depends_on_data`],
/// what it will visit of the keyspace. Reads sizes only (no expiry, no change).
pub fn estimate(spec: &CommandSpec, args: &Args<'_>, db: &Db) -> u64 {
    let argc = args.len() as u64;
    let data = match spec.name {
        "keys" | "flushdb" | "flushall" => db.len() as u64,
        "scan" | "hscan" | "sscan" | "zscan" => {
            // COUNT buckets are visited per call (default 10).
            option_value(args, "COUNT").unwrap_or(10)
        }
        "lpop" | "rpop" | "spop" | "zpopmin" | "zpopmax" => {
            let count = arg(args, 2).and_then(parse_count).unwrap_or(1);
            count.min(elements(db, args.get(1)))
        }
        "lmpop" | "zmpop" => option_value(args, "COUNT")
            .unwrap_or(1)
            .min(numkeys_keys(args, 1).map(|k| elements(db, k)).sum()),
        "srandmember" | "hrandfield" | "zrandmember" => {
            // A negative count repeats elements: as many as asked, whatever the size.
            let count = arg(args, 2).and_then(parse_i64).unwrap_or(1);
            if count < 0 {
                count.unsigned_abs()
            } else {
                (count as u64).min(elements(db, args.get(1)))
            }
        }
        "lrange" => rank_range(args, 2, elements(db, args.get(1))),
        "zrange" | "zrevrange" | "zrangestore" => {
            let (key, from) = if spec.name == "zrangestore" {
                (args.get(2), 3)
            } else {
                (args.get(1), 2)
            };
            let n = elements(db, key);
            let by_rank = !args
                .iter()
                .skip(from + 2)
                .any(|a| a.eq_ignore_ascii_case(b"BYSCORE") || a.eq_ignore_ascii_case(b"BYLEX"));
            let limit = limit_count(args);
            if by_rank {
                rank_range(args, from, n)
            } else {
                limit.map_or(n, |l| l.min(n))
            }
        }
        "setrange" => string_end(args, 2, 3, 1),
        "setbit" => string_end(args, 2, 0, 8),
        "lcs" => {
            let (a, b) = (string_len(db, args.get(1)), string_len(db, args.get(2)));
            a.saturating_mul(b) / BYTES_PER_UNIT
        }
        "zunionstore" | "zinterstore" | "zdiffstore" => {
            elements_of(db, numkeys_keys(args, 2)) + elements(db, args.get(1))
        }
        "zunion" | "zinter" | "zdiff" | "zintercard" | "sintercard" => {
            elements_of(db, numkeys_keys(args, 1))
        }
        _ => elements_of(db, spec.keys(args)),
    };
    argc.saturating_add(data)
}

/// The argument at `i`, if there is one.
fn arg<'a>(args: &Args<'a>, i: usize) -> Option<&'a [u8]> {
    (i < args.len()).then(|| args.get(i))
}

/// Units of a key's value: its elements, or its bytes for a string (0 when absent).
fn elements(db: &Db, key: &[u8]) -> u64 {
    match db.peek(key).map(|e| e.value()) {
        None => 0,
        Some(ValueRef::Str(s)) => s.len() as u64 / BYTES_PER_UNIT + 1,
        Some(v) => v.elements() as u64,
    }
}

fn elements_of<'a>(db: &Db, keys: impl Iterator<Item = &'a [u8]>) -> u64 {
    keys.map(|k| elements(db, k)).fold(0, u64::saturating_add)
}

fn string_len(db: &Db, key: &[u8]) -> u64 {
    match db.peek(key).map(|e| e.value()) {
        Some(ValueRef::Str(s)) => s.len() as u64,
        _ => 0,
    }
}

/// The keys of a command with a `numkeys` argument at `at` (ZUNION, LMPOP, ...).
pub fn numkeys_keys<'a>(args: &Args<'a>, at: usize) -> impl Iterator<Item = &'a [u8]> + use<'a> {
    let n = arg(args, at)
        .and_then(parse_i64)
        .filter(|n| *n > 0)
        .map_or(0, |n| n as usize);
    let args = *args;
    let end = (at + 1).saturating_add(n).min(args.len());
    (at + 1..end).map(move |i| args.get(i))
}

/// The value after a named option (`COUNT 100`), as a non-negative count.
fn option_value(args: &Args<'_>, name: &str) -> Option<u64> {
    let i = (1..args.len()).find(|&i| args.get(i).eq_ignore_ascii_case(name.as_bytes()))?;
    arg(args, i + 1).and_then(parse_count)
}

/// `LIMIT offset count`: offset + count elements are visited (a negative count means all).
fn limit_count(args: &Args<'_>) -> Option<u64> {
    let i = (1..args.len()).find(|&i| args.get(i).eq_ignore_ascii_case(b"LIMIT"))?;
    let offset = arg(args, i + 1).and_then(parse_count)?;
    let count = arg(args, i + 2).and_then(parse_i64)?;
    (count >= 0).then(|| offset.saturating_add(count as u64))
}

fn parse_count(a: &[u8]) -> Option<u64> {
    parse_i64(a).filter(|n| *n >= 0).map(|n| n as u64)
}

/// Elements in a `start stop` rank range (at `at`, `at + 1`) of a collection of `n`.
fn rank_range(args: &Args<'_>, at: usize, n: u64) -> u64 {
    let (Some(start), Some(stop)) = (
        arg(args, at).and_then(parse_i64),
        arg(args, at + 1).and_then(parse_i64),
    ) else {
        return n;
    };
    let n = n as i64;
    let norm = |i: i64| if i < 0 { (n + i).max(0) } else { i.min(n) };
    let (start, stop) = (norm(start), norm(stop).min(n - 1));
    if stop < start {
        0
    } else {
        (stop - start + 1) as u64
    }
}

/// The end (in units) of what a write at an offset touches: `args[at] / divisor` bytes plus the
/// length of `args[value]` (0 = none).
fn string_end(args: &Args<'_>, at: usize, value: usize, divisor: u64) -> u64 {
    let offset = arg(args, at).and_then(parse_count).unwrap_or(0) / divisor;
    let len = if value > 0 {
        arg(args, value).map_or(0, |v| v.len() as u64)
    } else {
        1
    };
    offset.saturating_add(len) / BYTES_PER_UNIT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::lookup_indexed;
    use crate::testing::TestDb;
    use ferrite_protocol::OwnedRequest;

    fn work(t: &TestDb, argv: &[&str]) -> u64 {
        let req = OwnedRequest::from_parts(argv.iter().copied());
        let args = req.args();
        let (i, spec) = lookup_indexed(args.get(0)).unwrap();
        let db = t.keyspace.lock();
        if depends_on_data(i) {
            estimate(spec, &args, &db)
        } else {
            args.len() as u64
        }
    }

    #[test]
    fn the_hot_commands_are_not_looked_at() {
        for name in [
            "get", "set", "incr", "lpush", "hset", "sadd", "zadd", "mget", "mset",
        ] {
            let (i, _) = lookup_indexed(name.as_bytes()).unwrap();
            assert!(!depends_on_data(i), "{name}");
        }
        for name in [
            "keys",
            "smembers",
            "lrange",
            "sunionstore",
            "lpop",
            "copy",
            "setrange",
        ] {
            let (i, _) = lookup_indexed(name.as_bytes()).unwrap();
            assert!(depends_on_data(i), "{name}");
        }
    }

    #[test]
    fn estimates_follow_the_data_read() {
        let mut t = TestDb::new();
        let members: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
        let mut sadd = vec!["SADD".to_string(), "big".into()];
        sadd.extend(members.iter().cloned());
        t.run(&sadd);
        let mut rpush = vec!["RPUSH".to_string(), "list".into()];
        rpush.extend(members.iter().cloned());
        t.run(&rpush);
        assert!(work(&t, &["SMEMBERS", "big"]) > LONG_WORK);
        assert!(work(&t, &["SMEMBERS", "nosuch"]) < 10);
        assert!(work(&t, &["SUNIONSTORE", "d", "big", "big"]) > 2 * LONG_WORK);
        assert!(work(&t, &["ZUNIONSTORE", "d", "2", "big", "big"]) > 2 * LONG_WORK);
        assert!(work(&t, &["KEYS", "*"]) < 10);
        assert_eq!(work(&t, &["LRANGE", "list", "0", "9"]), 4 + 10);
        assert_eq!(work(&t, &["LRANGE", "list", "-5", "-1"]), 4 + 5);
        assert!(work(&t, &["LRANGE", "list", "0", "-1"]) > LONG_WORK);
        assert_eq!(work(&t, &["LPOP", "list", "3"]), 3 + 3);
        assert!(work(&t, &["LPOP", "list", "1000000"]) > LONG_WORK);
        assert!(work(&t, &["SRANDMEMBER", "big", "-1000000"]) > LONG_WORK);
        assert_eq!(work(&t, &["SCAN", "0"]), 2 + 10);
        assert!(work(&t, &["SCAN", "0", "COUNT", "1000000"]) > LONG_WORK);
        assert!(work(&t, &["SETRANGE", "s", "536870000", "x"]) > LONG_WORK);
        assert!(work(&t, &["SETBIT", "s", "4294967295", "1"]) > LONG_WORK);
        assert!(work(&t, &["SETRANGE", "s", "10", "x"]) < 10);
        assert!(work(&t, &["COPY", "big", "other"]) > LONG_WORK);
    }
}
