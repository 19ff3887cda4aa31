//! SORT and SORT_RO: lists, sets and sorted sets sorted numerically or lexicographically, by their
//! elements or by keys a pattern names (`weight_*`, `obj_*->field`), with GET patterns, LIMIT and
//! STORE. Patterns resolve in the tenant's own keyspace, like a standalone Redis database: a
//! tenant never reads another tenant's keys.

use ferrite_protocol::args::parse_f64;
use ferrite_protocol::{Args, ErrorReply};
use ferrite_storage::{Db, ListValue, Value, ValueRef};

use crate::ctx::Ctx;
use crate::spec::flags::*;
use crate::spec::{CmdResult, CommandSpec, Creates, KEY1};

crate::command_family!("generic");

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "sort",
        -2,
        WRITE | DENYOOM,
        KEY1,
        Creates::KeyAfter(&["STORE"]),
        "Sorts the elements in a list, a set, or a sorted set, optionally storing the result.",
        sort,
    ),
    cmd(
        "sort_ro",
        -2,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns the sorted elements of a list, a set, or a sorted set.",
        sort_ro,
    ),
];

/// A value a pattern names: `key` with the first `*` replaced by the element, optionally a hash
/// field after `->` (Redis's lookupKeyByPattern). None when the pattern has no `*` or nothing is
/// there.
fn lookup_pattern(db: &Db, now: u64, pattern: &[u8], element: &[u8]) -> Option<Vec<u8>> {
    if pattern == b"#" {
        return Some(element.to_vec());
    }
    let star = pattern.iter().position(|&c| c == b'*')?;
    // A field, if "->" follows the '*' and names something.
    let arrow = pattern[star + 1..]
        .windows(2)
        .position(|w| w == b"->")
        .map(|i| star + 1 + i)
        .filter(|&i| i + 2 < pattern.len());
    let key_pattern = match arrow {
        Some(i) => &pattern[..i],
        None => pattern,
    };
    let mut key = Vec::with_capacity(key_pattern.len() + element.len());
    key.extend_from_slice(&key_pattern[..star]);
    key.extend_from_slice(element);
    key.extend_from_slice(&key_pattern[star + 1..]);
    let entry = db.peek(&key).filter(|e| !e.is_expired(now))?;
    match (entry.value(), arrow) {
        (ValueRef::Hash(h), Some(i)) => h.get(&pattern[i + 2..]).map(<[u8]>::to_vec),
        (ValueRef::Str(s), None) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

struct Item {
    element: Vec<u8>,
    score: f64,
    /// The BY value for ALPHA sorts by pattern (None: missing, sorts first).
    by: Option<Vec<u8>>,
}

fn sort_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, read_only: bool) -> CmdResult {
    let (mut desc, mut alpha) = (false, false);
    let (mut offset, mut count) = (0i64, -1i64);
    let mut by: Option<&[u8]> = None;
    let mut dontsort = false;
    let mut gets: Vec<&[u8]> = Vec::new();
    let mut store: Option<&[u8]> = None;
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        match args.get(j).to_ascii_uppercase().as_slice() {
            b"ASC" => desc = false,
            b"DESC" => desc = true,
            b"ALPHA" => alpha = true,
            b"LIMIT" if left >= 2 => {
                offset = args.int(j + 1)?;
                count = args.int(j + 2)?;
                j += 2;
            }
            b"STORE" if left >= 1 && !read_only => {
                store = Some(args.get(j + 1));
                j += 1;
            }
            b"BY" if left >= 1 => {
                let p = args.get(j + 1);
                // A pattern without '*' names no key per element: no sorting at all.
                dontsort = !p.contains(&b'*');
                by = Some(p);
                j += 1;
            }
            b"GET" if left >= 1 => {
                gets.push(args.get(j + 1));
                j += 1;
            }
            _ => return Err(ErrorReply::syntax()),
        }
        j += 1;
    }
    let now = ctx.now;
    let key = args.get(1);
    // The elements, in the value's own order.
    let (mut elements, is_set, is_zset): (Vec<Vec<u8>>, bool, bool) =
        match ctx.db.get(key, now).map(|e| e.value()) {
            None => (Vec::new(), false, false),
            Some(ValueRef::List(l)) => (l.iter().map(<[u8]>::to_vec).collect(), false, false),
            Some(ValueRef::Set(s)) => (s.iter().map(<[u8]>::to_vec).collect(), true, false),
            Some(ValueRef::ZSet(z)) => (z.iter().map(|(m, _)| m.to_vec()).collect(), false, true),
            Some(_) => return Err(ErrorReply::wrong_type()),
        };
    // A set has no order of its own: sorting it lexicographically keeps the result (and what a
    // stored copy replays to) deterministic, as Redis does for STORE.
    // Scripts get the same order (Redis: STORE or CLIENT_SCRIPT).
    if dontsort && is_set && (store.is_some() || ctx.from_script) {
        dontsort = false;
        alpha = true;
        by = None;
    }
    // Unsorted sorted sets come out in score order (reversed for DESC).
    if dontsort && is_zset && desc {
        elements.reverse();
    }
    let len = elements.len() as i64;
    let start = offset.clamp(0, len);
    let end = if count < 0 {
        len
    } else {
        start.saturating_add(count).min(len)
    };
    if !dontsort {
        let db: &Db = ctx.db;
        let mut items = Vec::with_capacity(elements.len());
        for element in elements {
            let by_value = by.map(|p| lookup_pattern(db, now, p, &element));
            let mut item = Item {
                element,
                score: 0.0,
                by: None,
            };
            if alpha {
                item.by = by_value.flatten();
            } else {
                let text = match &by_value {
                    Some(v) => v.as_deref(),
                    None => Some(item.element.as_slice()),
                };
                if let Some(t) = text {
                    item.score = parse_f64(t).filter(|v| !v.is_nan()).ok_or_else(|| {
                        ErrorReply::err("One or more scores can't be converted into double")
                    })?;
                }
            }
            items.push(item);
        }
        let by_pattern = by.is_some();
        items.sort_by(|a, b| {
            let ord = if alpha {
                if by_pattern {
                    a.by.cmp(&b.by)
                } else {
                    a.element.cmp(&b.element)
                }
            } else {
                a.score
                    .partial_cmp(&b.score)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then_with(|| a.element.cmp(&b.element))
            };
            if desc { ord.reverse() } else { ord }
        });
        elements = items.into_iter().map(|i| i.element).collect();
    }
    let picked = &elements[start as usize..end.max(start) as usize];
    // The reply (or stored list): the elements, or for each element one value per GET pattern.
    let db: &Db = ctx.db;
    let out: Vec<Option<Vec<u8>>> = if gets.is_empty() {
        picked.iter().map(|e| Some(e.clone())).collect()
    } else {
        picked
            .iter()
            .flat_map(|e| gets.iter().map(move |p| lookup_pattern(db, now, p, e)))
            .collect()
    };
    match store {
        None => {
            ctx.w.array(out.len());
            for v in &out {
                ctx.w.opt_bulk(v.as_deref());
            }
        }
        Some(dst) => {
            let n = out.len();
            if n == 0 {
                if let Some(old) = ctx.db.remove(dst, now) {
                    ctx.garbage.defer(old.value().elements(), old);
                }
            } else {
                let mut l = ListValue::default();
                for v in &out {
                    l.push_back(v.as_deref().unwrap_or_default());
                }
                ctx.db.set(dst, Value::List(l), None, now);
            }
            ctx.w.int(n as i64);
        }
    }
    Ok(())
}

fn sort(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    sort_generic(ctx, args, false)
}

fn sort_ro(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    sort_generic(ctx, args, true)
}

#[cfg(test)]
mod tests {
    use crate::testing::TestDb;

    fn bulks(items: &[&str]) -> String {
        let mut s = format!("*{}\r\n", items.len());
        for i in items {
            s.push_str(&format!("${}\r\n{i}\r\n", i.len()));
        }
        s
    }

    #[test]
    fn sort_options() {
        let mut t = TestDb::new();
        t.run(&["RPUSH", "l", "3", "1", "2", "10"]);
        t.run(&["MSET", "w_1", "30", "w_2", "20", "w_3", "10", "w_10", "5"]);
        t.run(&["HSET", "o_1", "name", "one"]);
        t.run(&["HSET", "o_2", "name", "two"]);
        t.check(&[
            (&["SORT", "l"], &bulks(&["1", "2", "3", "10"])),
            (&["SORT", "l", "DESC"], &bulks(&["10", "3", "2", "1"])),
            (&["SORT", "l", "ALPHA"], &bulks(&["1", "10", "2", "3"])),
            (&["SORT", "l", "LIMIT", "1", "2"], &bulks(&["2", "3"])),
            (&["SORT", "l", "LIMIT", "-5", "2"], &bulks(&["1", "2"])),
            (&["SORT", "l", "BY", "w_*"], &bulks(&["10", "3", "2", "1"])),
            (&["SORT", "l", "BY", "nosort"], &bulks(&["3", "1", "2", "10"])),
            (
                &["SORT", "l", "GET", "#", "GET", "o_*->name"],
                "*8\r\n$1\r\n1\r\n$3\r\none\r\n$1\r\n2\r\n$3\r\ntwo\r\n$1\r\n3\r\n$-1\r\n$2\r\n10\r\n$-1\r\n",
            ),
            (&["SORT", "l", "GET", "w_*", "LIMIT", "0", "1"], &bulks(&["30"])),
            (&["SORT", "l", "STORE", "dst"], ":4\r\n"),
            (&["LRANGE", "dst", "0", "-1"], &bulks(&["1", "2", "3", "10"])),
            (&["SORT_RO", "l", "STORE", "dst"], "-ERR syntax error\r\n"),
            (&["SORT", "l", "LIMIT", "1"], "-ERR syntax error\r\n"),
            (&["SORT", "none"], "*0\r\n"),
            (&["SORT", "none", "STORE", "dst"], ":0\r\n"),
            (&["EXISTS", "dst"], ":0\r\n"),
        ]);
        t.run(&["RPUSH", "words", "b", "a"]);
        t.check(&[
            (
                &["SORT", "words"],
                "-ERR One or more scores can't be converted into double\r\n",
            ),
            (&["SET", "s", "x"], "+OK\r\n"),
            (
                &["SORT", "s"],
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            ),
        ]);
        t.run(&["SADD", "set", "c", "a", "b"]);
        t.run(&["ZADD", "z", "1", "x", "2", "y", "3", "w"]);
        t.check(&[
            (&["SORT", "set", "ALPHA"], &bulks(&["a", "b", "c"])),
            (&["SORT", "set", "BY", "nosort", "STORE", "d2"], ":3\r\n"),
            (&["LRANGE", "d2", "0", "-1"], &bulks(&["a", "b", "c"])),
            (
                &["SORT", "z", "BY", "nosort", "DESC"],
                &bulks(&["w", "y", "x"]),
            ),
            (
                &["SORT", "z", "BY", "nosort", "LIMIT", "1", "1"],
                &bulks(&["y"]),
            ),
        ]);
        t.assert_digest_consistent();
    }
}
