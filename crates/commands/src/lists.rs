//! List commands.

use std::collections::VecDeque;

use ferrite_protocol::args::parse_i64;
use ferrite_protocol::{Args, ErrorReply, ReplyWriter};
use ferrite_storage::{ListValue, Slot, Value};

use crate::ctx::Ctx;
use crate::spec::flags::*;
use crate::spec::{CmdResult, CommandSpec, Creates, KEY1, KEYS12};
use crate::util::{as_list, as_list_mut, index_range};

crate::command_family!("list");

const W: u32 = WRITE | DENYOOM;

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "lpush",
        -3,
        W | FAST,
        KEY1,
        Creates::FirstKey,
        "Prepends one or more elements to a list. Creates the key if it doesn't exist.",
        lpush,
    ),
    cmd(
        "rpush",
        -3,
        W | FAST,
        KEY1,
        Creates::FirstKey,
        "Appends one or more elements to a list. Creates the key if it doesn't exist.",
        rpush,
    ),
    cmd(
        "lpushx",
        -3,
        W | FAST,
        KEY1,
        Creates::Nothing,
        "Prepends one or more elements to a list only when the list exists.",
        lpushx,
    ),
    cmd(
        "rpushx",
        -3,
        W | FAST,
        KEY1,
        Creates::Nothing,
        "Appends one or more elements to a list only when the list exists.",
        rpushx,
    ),
    cmd(
        "lpop",
        -2,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the first elements in a list after removing them. Deletes the list if the last \
         element was popped.",
        lpop,
    ),
    cmd(
        "rpop",
        -2,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Returns and removes the last elements of a list. Deletes the list if the last element \
         was popped.",
        rpop,
    ),
    cmd(
        "llen",
        2,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the length of a list.",
        llen,
    ),
    cmd(
        "lrange",
        4,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns a range of elements from a list.",
        lrange,
    ),
    cmd(
        "lindex",
        3,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns an element from a list by its index.",
        lindex,
    ),
    cmd(
        "lset",
        4,
        W,
        KEY1,
        Creates::Nothing,
        "Sets the value of an element in a list by its index.",
        lset,
    ),
    cmd(
        "lrem",
        4,
        WRITE,
        KEY1,
        Creates::Nothing,
        "Removes elements from a list. Deletes the list if the last element was removed.",
        lrem,
    ),
    cmd(
        "ltrim",
        4,
        WRITE,
        KEY1,
        Creates::Nothing,
        "Removes elements from both ends of a list. Deletes the list if all elements were \
         trimmed.",
        ltrim,
    ),
    cmd(
        "linsert",
        5,
        W,
        KEY1,
        Creates::Nothing,
        "Inserts an element before or after another element in a list.",
        linsert,
    ),
    cmd(
        "lpos",
        -3,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns the index of matching elements in a list.",
        lpos,
    ),
    cmd(
        "lmove",
        5,
        W,
        KEYS12,
        Creates::SecondKey,
        "Returns an element after popping it from one list and pushing it to another. Deletes \
         the list if the last element was moved.",
        lmove,
    ),
    cmd(
        "rpoplpush",
        3,
        W,
        KEYS12,
        Creates::SecondKey,
        "Returns the last element of a list after removing and pushing it to another list. \
         Deletes the list if the last element was popped.",
        rpoplpush,
    ),
    cmd(
        "lmpop",
        -4,
        WRITE,
        crate::spec::NO_KEYS,
        Creates::Nothing,
        "Returns multiple elements from a list after removing them. Deletes the list if the last element was popped.",
        lmpop,
    ),
];

/// Which end of a list an operation works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Left,
    Right,
}

impl End {
    fn parse(args: &Args<'_>, i: usize) -> Result<End, ErrorReply> {
        if args.is(i, "LEFT") {
            Ok(End::Left)
        } else if args.is(i, "RIGHT") {
            Ok(End::Right)
        } else {
            Err(ErrorReply::syntax())
        }
    }
}

fn push(l: &mut ListValue, end: End, e: &[u8]) {
    match end {
        End::Left => l.push_front(e),
        End::Right => l.push_back(e),
    }
}

fn pop(l: &mut ListValue, end: End) -> Option<Box<[u8]>> {
    match end {
        End::Left => l.pop_front(),
        End::Right => l.pop_back(),
    }
}

/// Pops an element straight into the reply, from where it lies in the list (no copy of its
/// own); false when the list is empty.
fn pop_into_reply(l: &mut ListValue, end: End, w: &mut ReplyWriter<'_>) -> bool {
    match end {
        End::Left => l.pop_front_with(|e| w.bulk(e)),
        End::Right => l.pop_back_with(|e| w.bulk(e)),
    }
    .is_some()
}

/// Resolves a Redis index (negative counts from the tail) to a position, if it is in range.
fn resolve_index(index: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if index < 0 { len + index } else { index };
    (0..len).contains(&i).then_some(i as usize)
}

/// LPUSH, RPUSH, LPUSHX, RPUSHX.
fn push_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, end: End, only_existing: bool) -> CmdResult {
    let elements = args.tail(2);
    let len = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => {
            let l = as_list_mut(o.get_mut())?;
            for e in elements.iter() {
                push(l, end, e);
            }
            l.len()
        }
        Slot::Vacant(_) if only_existing => 0,
        Slot::Vacant(v) => {
            let mut l = ListValue::default();
            for e in elements.iter() {
                push(&mut l, end, e);
            }
            let n = l.len();
            v.insert(Value::List(l), None);
            n
        }
    };
    ctx.w.int(len as i64);
    Ok(())
}

fn lpush(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    push_generic(ctx, args, End::Left, false)
}

fn rpush(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    push_generic(ctx, args, End::Right, false)
}

fn lpushx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    push_generic(ctx, args, End::Left, true)
}

fn rpushx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    push_generic(ctx, args, End::Right, true)
}

/// LPOP and RPOP. Redis validates the count before looking at the key, and answers a missing key
/// with a null of the shape the caller asked for (bulk without count, array with one).
fn pop_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, end: End, name: &str) -> CmdResult {
    if args.len() > 3 {
        return Err(ErrorReply::wrong_arity(name));
    }
    let count = if args.len() == 3 {
        // Redis reports a non-number count with the same "must be positive" text.
        let n = parse_i64(args.get(2))
            .filter(|n| *n >= 0)
            .ok_or_else(ErrorReply::must_be_positive)?;
        Some(usize::try_from(n).unwrap_or(usize::MAX))
    } else {
        None
    };
    match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Vacant(_) if count.is_some() => ctx.w.null_array(),
        Slot::Vacant(_) => ctx.w.null(),
        Slot::Occupied(mut o) => {
            let l = as_list_mut(o.get_mut())?;
            match count {
                None => {
                    if !pop_into_reply(l, end, ctx.w) {
                        ctx.w.null();
                    }
                }
                Some(n) => {
                    let n = n.min(l.len());
                    ctx.w.array(n);
                    for _ in 0..n {
                        pop_into_reply(l, end, ctx.w);
                    }
                }
            }
        }
    }
    Ok(())
}

fn lpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    pop_generic(ctx, args, End::Left, "lpop")
}

fn rpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    pop_generic(ctx, args, End::Right, "rpop")
}

/// LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT n]: pops from the first existing list (whose
/// type alone is checked, as in Redis).
fn lmpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (keys, word, count) = crate::zset_algebra::parse_mpop(&args, 1)?;
    let end = if word.eq_ignore_ascii_case(b"LEFT") {
        End::Left
    } else if word.eq_ignore_ascii_case(b"RIGHT") {
        End::Right
    } else {
        return Err(ErrorReply::syntax());
    };
    let now = ctx.now;
    for key in keys.iter() {
        let Slot::Occupied(mut o) = ctx.db.entry(key, now) else {
            continue;
        };
        let l = as_list_mut(o.get_mut())?;
        let n = count.min(l.len());
        let popped: Vec<Box<[u8]>> = std::iter::from_fn(|| pop(l, end)).take(n).collect();
        drop(o);
        ctx.w.array(2);
        ctx.w.bulk(key);
        ctx.w.array(popped.len());
        for e in &popped {
            ctx.w.bulk(e);
        }
        return Ok(());
    }
    ctx.w.null_array();
    Ok(())
}

fn llen(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let n = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => as_list(e)?.len(),
        None => 0,
    };
    ctx.w.int(n as i64);
    Ok(())
}

fn lrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (start, end) = (args.int(2)?, args.int(3)?);
    let Some(e) = ctx.db.get(args.get(1), ctx.now) else {
        ctx.w.array(0);
        return Ok(());
    };
    let l = as_list(e)?;
    match index_range(start, end, l.len()) {
        Some((s, e)) => {
            ctx.w.array(e - s + 1);
            for item in l.range(s, e + 1) {
                ctx.w.bulk(item);
            }
        }
        None => ctx.w.array(0),
    }
    Ok(())
}

/// Redis looks the key up before parsing the index, so a missing key answers null even for a
/// malformed index.
fn lindex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let Some(e) = ctx.db.get(args.get(1), ctx.now) else {
        ctx.w.null();
        return Ok(());
    };
    let l = as_list(e)?;
    let index = args.int(2)?;
    ctx.w
        .opt_bulk(resolve_index(index, l.len()).and_then(|i| l.get(i)));
    Ok(())
}

fn lset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let Slot::Occupied(mut o) = ctx.db.entry(args.get(1), ctx.now) else {
        return Err(ErrorReply::no_such_key());
    };
    let l = as_list_mut(o.get_mut())?;
    let index = args.int(2)?;
    let i = resolve_index(index, l.len()).ok_or_else(ErrorReply::index_out_of_range)?;
    l.set(i, args.get(3));
    drop(o);
    ctx.w.ok();
    Ok(())
}

fn lrem(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let count = args.int(2)?;
    let elem = args.get(3);
    let Slot::Occupied(mut o) = ctx.db.entry(args.get(1), ctx.now) else {
        ctx.w.int(0);
        return Ok(());
    };
    let l = as_list_mut(o.get_mut())?;
    // Spare the O(n) digest recomputation of `edit` when nothing matches.
    if !l.iter().any(|e| e == elem) {
        drop(o);
        ctx.w.int(0);
        return Ok(());
    }
    let limit = match count {
        0 => usize::MAX,
        c => usize::try_from(c.unsigned_abs()).unwrap_or(usize::MAX),
    };
    let mut removed: Vec<Box<[u8]>> = Vec::new();
    l.edit(|items| {
        let old = std::mem::take(items);
        let mut kept = VecDeque::with_capacity(old.len());
        let mut take = |e: Box<[u8]>| -> Option<Box<[u8]>> {
            if removed.len() < limit && *e == *elem {
                removed.push(e);
                None
            } else {
                Some(e)
            }
        };
        if count >= 0 {
            kept.extend(old.into_iter().filter_map(&mut take));
        } else {
            for e in old.into_iter().rev() {
                if let Some(e) = take(e) {
                    kept.push_front(e);
                }
            }
        }
        *items = kept;
    });
    drop(o);
    let n = removed.len();
    ctx.garbage.defer(n, removed);
    ctx.w.int(n as i64);
    Ok(())
}

fn ltrim(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (start, end) = (args.int(2)?, args.int(3)?);
    let Slot::Occupied(mut o) = ctx.db.entry(args.get(1), ctx.now) else {
        ctx.w.ok();
        return Ok(());
    };
    let l = as_list_mut(o.get_mut())?;
    let len = l.len();
    match index_range(start, end, len) {
        None => {
            let e = o.remove();
            ctx.garbage.defer(e.value().elements(), e);
        }
        Some((s, e)) => {
            let (front, back, kept) = (s, len - 1 - e, e - s + 1);
            let mut removed: Vec<Box<[u8]>> = Vec::with_capacity(front + back);
            // Popping keeps the digest incrementally (cost ~ removed elements); rebuilding it
            // costs ~ kept elements. Take the cheaper, so capped-list LTRIMs stay O(removed).
            if front + back <= kept {
                removed.extend(std::iter::from_fn(|| l.pop_front()).take(front));
                removed.extend(std::iter::from_fn(|| l.pop_back()).take(back));
            } else {
                l.edit(|items| {
                    removed.extend(items.drain(..front));
                    removed.extend(items.drain(kept..));
                });
            }
            drop(o);
            ctx.garbage.defer(removed.len(), removed);
        }
    }
    ctx.w.ok();
    Ok(())
}

fn linsert(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let after = if args.is(2, "AFTER") {
        true
    } else if args.is(2, "BEFORE") {
        false
    } else {
        return Err(ErrorReply::syntax());
    };
    let (pivot, elem) = (args.get(3), args.get(4));
    let Slot::Occupied(mut o) = ctx.db.entry(args.get(1), ctx.now) else {
        ctx.w.int(0);
        return Ok(());
    };
    let l = as_list_mut(o.get_mut())?;
    let found = l.iter().position(|e| e == pivot);
    let reply = match found {
        None => -1,
        Some(p) => {
            l.insert(p + usize::from(after), elem);
            l.len() as i64
        }
    };
    drop(o);
    ctx.w.int(reply);
    Ok(())
}

fn lpos(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let elem = args.get(2);
    let (mut rank, mut count, mut maxlen) = (1i64, None::<i64>, 0i64);
    let mut i = 3;
    while i < args.len() {
        let has_value = i + 1 < args.len();
        if args.is(i, "RANK") && has_value {
            rank = args.int(i + 1)?;
            if rank == i64::MIN {
                // Its absolute value does not fit; Redis 7.2+ refuses it with this text.
                return Err(ErrorReply::err(
                    "value is out of range, value must between -9223372036854775807 and \
                     9223372036854775807",
                ));
            }
            if rank == 0 {
                return Err(ErrorReply::err(
                    "RANK can't be zero: use 1 to start from the first match, 2 from the second \
                     ... or use negative to start from the end of the list",
                ));
            }
        } else if args.is(i, "COUNT") && has_value {
            // Like Redis, a non-number gets the "negative" text too.
            let n = parse_i64(args.get(i + 1)).filter(|n| *n >= 0);
            count = Some(n.ok_or_else(|| ErrorReply::err("COUNT can't be negative"))?);
        } else if args.is(i, "MAXLEN") && has_value {
            let n = parse_i64(args.get(i + 1)).filter(|n| *n >= 0);
            maxlen = n.ok_or_else(|| ErrorReply::err("MAXLEN can't be negative"))?;
        } else {
            return Err(ErrorReply::syntax());
        }
        i += 2;
    }
    let Some(e) = ctx.db.get(args.get(1), ctx.now) else {
        match count {
            Some(_) => ctx.w.array(0),
            None => ctx.w.null(),
        }
        return Ok(());
    };
    let l = as_list(e)?;
    let len = l.len();
    let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    // Matches to pass over before reporting (RANK n reports from the n-th match on).
    let skip = to_usize(rank.unsigned_abs() - 1);
    let scan = match maxlen {
        0 => len,
        m => to_usize(m.unsigned_abs()).min(len),
    };
    let want = match count {
        None => 1,
        Some(0) => usize::MAX,
        Some(c) => to_usize(c.unsigned_abs()),
    };
    let mut found = Vec::new();
    let mut seen = 0usize;
    let mut visit = |pos: usize, e: &[u8]| -> bool {
        if e == elem {
            seen += 1;
            if seen > skip {
                found.push(pos);
            }
        }
        found.len() < want
    };
    if rank > 0 {
        for (pos, e) in l.iter().enumerate().take(scan) {
            if !visit(pos, e) {
                break;
            }
        }
    } else {
        for (k, e) in l.iter().rev().enumerate().take(scan) {
            if !visit(len - 1 - k, e) {
                break;
            }
        }
    }
    match count {
        Some(_) => {
            ctx.w.array(found.len());
            for p in found {
                ctx.w.int(p as i64);
            }
        }
        None => match found.first() {
            Some(&p) => ctx.w.int(p as i64),
            None => ctx.w.null(),
        },
    }
    Ok(())
}

/// LMOVE and RPOPLPUSH. Both keys are type-checked before anything moves, so a WRONGTYPE
/// destination leaves the source untouched.
fn move_generic(ctx: &mut Ctx<'_, '_>, src: &[u8], dst: &[u8], from: End, to: End) -> CmdResult {
    let now = ctx.now;
    match ctx.db.get(src, now) {
        None => {
            ctx.w.null();
            return Ok(());
        }
        Some(e) => {
            as_list(e)?;
        }
    }
    if src == dst {
        // Rotation: pop and push on the same value, so a one-element list never becomes empty
        // (and so is never deleted) in between.
        let Some(mut o) = ctx.db.entry(src, now).occupied() else {
            ctx.w.null();
            return Ok(());
        };
        let l = as_list_mut(o.get_mut())?;
        let Some(e) = pop(l, from) else {
            drop(o);
            ctx.w.null();
            return Ok(());
        };
        push(l, to, &e);
        drop(o);
        ctx.w.bulk(&e);
        return Ok(());
    }
    if let Some(e) = ctx.db.get(dst, now) {
        as_list(e)?;
    }
    let popped = match ctx.db.entry(src, now).occupied() {
        Some(mut o) => pop(as_list_mut(o.get_mut())?, from),
        None => None,
    };
    let Some(e) = popped else {
        ctx.w.null();
        return Ok(());
    };
    match ctx.db.entry(dst, now) {
        Slot::Occupied(mut o) => push(as_list_mut(o.get_mut())?, to, &e),
        Slot::Vacant(v) => {
            let mut l = ListValue::default();
            l.push_back(&e);
            v.insert(Value::List(l), None);
        }
    }
    ctx.w.bulk(&e);
    Ok(())
}

fn lmove(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let from = End::parse(&args, 3)?;
    let to = End::parse(&args, 4)?;
    move_generic(ctx, args.get(1), args.get(2), from, to)
}

fn rpoplpush(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    move_generic(ctx, args.get(1), args.get(2), End::Right, End::Left)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use ferrite_protocol::Protocol;
    use ferrite_storage::{ListValue, Value};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use crate::testing::TestDb;

    const WRONGTYPE: &str =
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";

    /// Keyspace digest plus, for every list, its incremental digest and size against a list
    /// rebuilt from scratch (the keyspace check alone trusts each value's own digest).
    fn assert_consistent(t: &TestDb) {
        t.assert_digest_consistent();
        let db = t.keyspace.lock();
        for (k, e) in db.iter() {
            if let ferrite_storage::ValueRef::List(l) = e.value() {
                assert!(!l.is_empty(), "empty list stored at {k:?}");
                let mut fresh = ListValue::default();
                for x in l.iter() {
                    fresh.push_back(x);
                }
                assert_eq!(l.digest(), fresh.digest(), "list digest of {k:?}");
                assert_eq!(
                    e.value().mem_size(),
                    Value::List(fresh).mem_size(),
                    "list size of {k:?}"
                );
            }
        }
    }

    /// RESP for an array of bulk strings.
    fn bulks(items: &[&str]) -> String {
        let mut s = format!("*{}\r\n", items.len());
        for i in items {
            s.push_str(&format!("${}\r\n{i}\r\n", i.len()));
        }
        s
    }

    fn ints(items: &[i64]) -> String {
        let mut s = format!("*{}\r\n", items.len());
        for i in items {
            s.push_str(&format!(":{i}\r\n"));
        }
        s
    }

    #[test]
    fn push_and_range() {
        let mut t = TestDb::new();
        t.check(&[
            (&["RPUSH", "l", "a", "b"], ":2\r\n"),
            (&["LPUSH", "l", "x", "y"], ":4\r\n"),
            (&["LRANGE", "l", "0", "-1"], &bulks(&["y", "x", "a", "b"])),
            (&["LRANGE", "l", "1", "2"], &bulks(&["x", "a"])),
            (&["LRANGE", "l", "-2", "100"], &bulks(&["a", "b"])),
            (&["LRANGE", "l", "-100", "0"], &bulks(&["y"])),
            (&["LRANGE", "l", "3", "1"], "*0\r\n"),
            (&["LRANGE", "l", "4", "10"], "*0\r\n"),
            (
                &["LRANGE", "l", "-9223372036854775808", "9223372036854775807"],
                &bulks(&["y", "x", "a", "b"]),
            ),
            (&["LRANGE", "none", "0", "-1"], "*0\r\n"),
            (
                &["LRANGE", "none", "0", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["LLEN", "l"], ":4\r\n"),
            (&["LLEN", "none"], ":0\r\n"),
            (&["LPUSHX", "none", "a"], ":0\r\n"),
            (&["RPUSHX", "none", "a", "b"], ":0\r\n"),
            (&["EXISTS", "none"], ":0\r\n"),
            (&["LPUSHX", "l", "p1", "p2"], ":6\r\n"),
            (&["RPUSHX", "l", "q"], ":7\r\n"),
            (
                &["LRANGE", "l", "0", "-1"],
                &bulks(&["p2", "p1", "y", "x", "a", "b", "q"]),
            ),
            (&["RPUSH", "e", ""], ":1\r\n"),
            (&["LRANGE", "e", "0", "0"], "*1\r\n$0\r\n\r\n"),
            (
                &["LPUSH", "l"],
                "-ERR wrong number of arguments for 'lpush' command\r\n",
            ),
            (
                &["RPUSHX", "l"],
                "-ERR wrong number of arguments for 'rpushx' command\r\n",
            ),
            (
                &["LRANGE", "l", "0"],
                "-ERR wrong number of arguments for 'lrange' command\r\n",
            ),
            (
                &["LLEN"],
                "-ERR wrong number of arguments for 'llen' command\r\n",
            ),
        ]);
        assert_consistent(&t);
    }

    #[test]
    fn push_keeps_ttl() {
        let mut t = TestDb::new();
        t.check(&[
            (&["RPUSH", "l", "a"], ":1\r\n"),
            (&["PEXPIRE", "l", "100"], ":1\r\n"),
            (&["RPUSH", "l", "b"], ":2\r\n"),
            (&["PTTL", "l"], ":100\r\n"),
        ]);
        t.now += 100;
        t.check(&[
            (&["LPUSHX", "l", "c"], ":0\r\n"),
            (&["LLEN", "l"], ":0\r\n"),
        ]);
        assert_consistent(&t);
    }

    #[test]
    fn pops() {
        let mut t = TestDb::new();
        t.check(&[
            (&["RPUSH", "l", "a", "b", "c", "d", "e"], ":5\r\n"),
            (&["LPOP", "l"], "$1\r\na\r\n"),
            (&["RPOP", "l"], "$1\r\ne\r\n"),
            (&["LPOP", "l", "0"], "*0\r\n"),
            (&["LPOP", "l", "2"], &bulks(&["b", "c"])),
            (&["RPOP", "l", "5"], &bulks(&["d"])),
            (&["EXISTS", "l"], ":0\r\n"),
            (&["LPOP", "l"], "$-1\r\n"),
            (&["LPOP", "l", "1"], "*-1\r\n"),
            (&["RPOP", "l", "0"], "*-1\r\n"),
            (&["RPUSH", "l", "a", "b", "c"], ":3\r\n"),
            (&["RPOP", "l", "2"], &bulks(&["c", "b"])),
            (&["LPOP", "l", "9223372036854775807"], &bulks(&["a"])),
            (
                &["LPOP", "l", "-1"],
                "-ERR value is out of range, must be positive\r\n",
            ),
            (
                &["LPOP", "l", "x"],
                "-ERR value is out of range, must be positive\r\n",
            ),
            (
                &["RPOP", "l", "9223372036854775808"],
                "-ERR value is out of range, must be positive\r\n",
            ),
            (
                &["LPOP", "l", "1", "2"],
                "-ERR wrong number of arguments for 'lpop' command\r\n",
            ),
            (
                &["RPOP", "l", "1", "2"],
                "-ERR wrong number of arguments for 'rpop' command\r\n",
            ),
            (
                &["RPOP"],
                "-ERR wrong number of arguments for 'rpop' command\r\n",
            ),
        ]);
        assert_consistent(&t);
    }

    #[test]
    fn pops_resp3() {
        let mut t = TestDb::new();
        t.proto = Protocol::Resp3;
        t.check(&[
            (&["LPOP", "none"], "_\r\n"),
            (&["LPOP", "none", "2"], "_\r\n"),
            (&["RPOP", "none", "0"], "_\r\n"),
            (&["RPUSH", "l", "a", "b"], ":2\r\n"),
            (&["RPOP", "l", "0"], "*0\r\n"),
            (&["RPOP", "l", "3"], &bulks(&["b", "a"])),
            (&["LINDEX", "l", "0"], "_\r\n"),
            (&["LPOS", "l", "a"], "_\r\n"),
            (&["LPOS", "l", "a", "COUNT", "0"], "*0\r\n"),
            (&["LMOVE", "l", "m", "LEFT", "LEFT"], "_\r\n"),
        ]);
    }

    #[test]
    fn index_and_set() {
        let mut t = TestDb::new();
        t.check(&[
            (&["RPUSH", "l", "a", "b", "c"], ":3\r\n"),
            (&["LINDEX", "l", "0"], "$1\r\na\r\n"),
            (&["LINDEX", "l", "-1"], "$1\r\nc\r\n"),
            (&["LINDEX", "l", "-3"], "$1\r\na\r\n"),
            (&["LINDEX", "l", "-4"], "$-1\r\n"),
            (&["LINDEX", "l", "3"], "$-1\r\n"),
            (&["LINDEX", "l", "-9223372036854775808"], "$-1\r\n"),
            (&["LINDEX", "none", "0"], "$-1\r\n"),
            // The key is looked up before the index is parsed.
            (&["LINDEX", "none", "x"], "$-1\r\n"),
            (
                &["LINDEX", "l", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["LSET", "l", "1", "B"], "+OK\r\n"),
            (&["LSET", "l", "-1", "C"], "+OK\r\n"),
            (&["LSET", "l", "0", ""], "+OK\r\n"),
            (&["LRANGE", "l", "0", "-1"], &bulks(&["", "B", "C"])),
            (&["LSET", "l", "3", "x"], "-ERR index out of range\r\n"),
            (&["LSET", "l", "-4", "x"], "-ERR index out of range\r\n"),
            (
                &["LSET", "l", "x", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["LSET", "none", "0", "x"], "-ERR no such key\r\n"),
            (&["LSET", "none", "x", "x"], "-ERR no such key\r\n"),
            (&["EXISTS", "none"], ":0\r\n"),
            (
                &["LSET", "l", "0"],
                "-ERR wrong number of arguments for 'lset' command\r\n",
            ),
            (
                &["LINDEX", "l"],
                "-ERR wrong number of arguments for 'lindex' command\r\n",
            ),
        ]);
        assert_consistent(&t);
    }

    #[test]
    fn lrem() {
        let mut t = TestDb::new();
        t.check(&[
            (&["RPUSH", "l", "a", "b", "a", "c", "a", "b", "a"], ":7\r\n"),
            (&["LREM", "l", "2", "a"], ":2\r\n"),
            (
                &["LRANGE", "l", "0", "-1"],
                &bulks(&["b", "c", "a", "b", "a"]),
            ),
            (&["LREM", "l", "-1", "b"], ":1\r\n"),
            (&["LRANGE", "l", "0", "-1"], &bulks(&["b", "c", "a", "a"])),
            (&["LREM", "l", "0", "a"], ":2\r\n"),
            (&["LRANGE", "l", "0", "-1"], &bulks(&["b", "c"])),
            (&["LREM", "l", "0", "zz"], ":0\r\n"),
            (&["LREM", "l", "-9223372036854775808", "c"], ":1\r\n"),
            (&["LREM", "l", "9223372036854775807", "b"], ":1\r\n"),
            (&["EXISTS", "l"], ":0\r\n"),
            (&["LREM", "none", "0", "a"], ":0\r\n"),
            (
                &["LREM", "none", "x", "a"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["LREM", "l", "0"],
                "-ERR wrong number of arguments for 'lrem' command\r\n",
            ),
        ]);
        // Removing from the tail keeps the relative order of what remains.
        t.check(&[
            (&["RPUSH", "m", "x", "1", "x", "2", "x", "3"], ":6\r\n"),
            (&["LREM", "m", "-2", "x"], ":2\r\n"),
            (&["LRANGE", "m", "0", "-1"], &bulks(&["x", "1", "2", "3"])),
        ]);
        assert_consistent(&t);
    }

    #[test]
    fn ltrim() {
        let mut t = TestDb::new();
        t.check(&[
            (&["RPUSH", "l", "a", "b", "c", "d", "e", "f"], ":6\r\n"),
            (&["LTRIM", "l", "1", "-2"], "+OK\r\n"),
            (&["LRANGE", "l", "0", "-1"], &bulks(&["b", "c", "d", "e"])),
            // Removes more than it keeps: exercises the rebuild path.
            (&["LTRIM", "l", "1", "1"], "+OK\r\n"),
            (&["LRANGE", "l", "0", "-1"], &bulks(&["c"])),
            (&["LTRIM", "l", "0", "100"], "+OK\r\n"),
            (&["LRANGE", "l", "0", "-1"], &bulks(&["c"])),
            (&["LTRIM", "l", "1", "0"], "+OK\r\n"),
            (&["EXISTS", "l"], ":0\r\n"),
            (&["RPUSH", "l", "a", "b"], ":2\r\n"),
            (&["LTRIM", "l", "5", "10"], "+OK\r\n"),
            (&["EXISTS", "l"], ":0\r\n"),
            (&["RPUSH", "l", "a", "b", "c"], ":3\r\n"),
            (
                &["LTRIM", "l", "-9223372036854775808", "9223372036854775807"],
                "+OK\r\n",
            ),
            (&["LLEN", "l"], ":3\r\n"),
            (&["LTRIM", "l", "-1", "-1"], "+OK\r\n"),
            (&["LRANGE", "l", "0", "-1"], &bulks(&["c"])),
            (&["LTRIM", "none", "0", "1"], "+OK\r\n"),
            (&["EXISTS", "none"], ":0\r\n"),
            (
                &["LTRIM", "none", "x", "1"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["LTRIM", "l", "0"],
                "-ERR wrong number of arguments for 'ltrim' command\r\n",
            ),
        ]);
        assert_consistent(&t);
        // A capped list (LPUSH + LTRIM) on both paths, against a model.
        let mut model: VecDeque<String> = VecDeque::new();
        for i in 0..300 {
            let v = format!("v{i}");
            t.run(&["LPUSH", "cap", &v]);
            model.push_front(v);
            let keep = if i % 50 == 49 { 3 } else { 100 };
            t.run(&["LTRIM", "cap", "0", &(keep - 1).to_string()]);
            model.truncate(keep);
        }
        let want: Vec<&str> = model.iter().map(String::as_str).collect();
        assert_eq!(t.run(&["LRANGE", "cap", "0", "-1"]), bulks(&want));
        assert_consistent(&t);
    }

    #[test]
    fn linsert() {
        let mut t = TestDb::new();
        t.check(&[
            (&["RPUSH", "l", "a", "c"], ":2\r\n"),
            (&["LINSERT", "l", "BEFORE", "c", "b"], ":3\r\n"),
            (&["LINSERT", "l", "after", "c", "d"], ":4\r\n"),
            (&["LINSERT", "l", "before", "a", "0"], ":5\r\n"),
            (&["LINSERT", "l", "AFTER", "a", "a2"], ":6\r\n"),
            (
                &["LRANGE", "l", "0", "-1"],
                &bulks(&["0", "a", "a2", "b", "c", "d"]),
            ),
            (&["LINSERT", "l", "BEFORE", "zz", "x"], ":-1\r\n"),
            (&["LINSERT", "none", "BEFORE", "a", "x"], ":0\r\n"),
            (&["EXISTS", "none"], ":0\r\n"),
            (
                &["LINSERT", "l", "MIDDLE", "a", "x"],
                "-ERR syntax error\r\n",
            ),
            (
                &["LINSERT", "none", "MIDDLE", "a", "x"],
                "-ERR syntax error\r\n",
            ),
            (
                &["LINSERT", "l", "BEFORE", "a"],
                "-ERR wrong number of arguments for 'linsert' command\r\n",
            ),
        ]);
        // Only the first occurrence of the pivot counts.
        t.check(&[
            (&["RPUSH", "m", "p", "p"], ":2\r\n"),
            (&["LINSERT", "m", "AFTER", "p", "x"], ":3\r\n"),
            (&["LRANGE", "m", "0", "-1"], &bulks(&["p", "x", "p"])),
        ]);
        assert_consistent(&t);
    }

    #[test]
    fn lpos() {
        let mut t = TestDb::new();
        t.run(&["RPUSH", "l", "a", "b", "c", "a", "b", "c", "a"]);
        t.check(&[
            (&["LPOS", "l", "a"], ":0\r\n"),
            (&["LPOS", "l", "c"], ":2\r\n"),
            (&["LPOS", "l", "zz"], "$-1\r\n"),
            (&["LPOS", "l", "a", "RANK", "2"], ":3\r\n"),
            (&["LPOS", "l", "a", "RANK", "4"], "$-1\r\n"),
            (&["LPOS", "l", "a", "RANK", "-1"], ":6\r\n"),
            (&["LPOS", "l", "a", "RANK", "-3"], ":0\r\n"),
            (
                &["LPOS", "l", "a", "RANK", "9223372036854775807"],
                "$-1\r\n",
            ),
            (
                &["LPOS", "l", "a", "RANK", "-9223372036854775807"],
                "$-1\r\n",
            ),
            (&["LPOS", "l", "a", "COUNT", "0"], &ints(&[0, 3, 6])),
            (&["LPOS", "l", "a", "COUNT", "2"], &ints(&[0, 3])),
            (
                &["LPOS", "l", "a", "count", "9223372036854775807"],
                &ints(&[0, 3, 6]),
            ),
            (
                &["LPOS", "l", "a", "RANK", "2", "COUNT", "0"],
                &ints(&[3, 6]),
            ),
            (
                &["LPOS", "l", "a", "RANK", "-1", "COUNT", "2"],
                &ints(&[6, 3]),
            ),
            (&["LPOS", "l", "zz", "COUNT", "1"], "*0\r\n"),
            (
                &["LPOS", "l", "a", "COUNT", "0", "MAXLEN", "3"],
                &ints(&[0]),
            ),
            (&["LPOS", "l", "a", "MAXLEN", "3", "RANK", "2"], "$-1\r\n"),
            (&["LPOS", "l", "a", "RANK", "-2", "MAXLEN", "2"], "$-1\r\n"),
            (&["LPOS", "l", "a", "RANK", "-2", "MAXLEN", "4"], ":3\r\n"),
            (
                &["LPOS", "l", "a", "RANK", "-2", "MAXLEN", "3", "COUNT", "0"],
                "*0\r\n",
            ),
            (&["LPOS", "l", "a", "MAXLEN", "0"], ":0\r\n"),
            (&["LPOS", "l", "a", "RANK", "1", "RANK", "3"], ":6\r\n"),
            (&["LPOS", "none", "a"], "$-1\r\n"),
            (&["LPOS", "none", "a", "COUNT", "1"], "*0\r\n"),
            (
                &["LPOS", "l", "a", "RANK", "0"],
                "-ERR RANK can't be zero: use 1 to start from the first match, 2 from the \
                 second ... or use negative to start from the end of the list\r\n",
            ),
            (
                &["LPOS", "l", "a", "RANK", "-9223372036854775808"],
                "-ERR value is out of range, value must between -9223372036854775807 and \
                 9223372036854775807\r\n",
            ),
            (
                &["LPOS", "l", "a", "RANK", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["LPOS", "l", "a", "COUNT", "-1"],
                "-ERR COUNT can't be negative\r\n",
            ),
            (
                &["LPOS", "l", "a", "COUNT", "x"],
                "-ERR COUNT can't be negative\r\n",
            ),
            (
                &["LPOS", "l", "a", "MAXLEN", "-1"],
                "-ERR MAXLEN can't be negative\r\n",
            ),
            (
                &["LPOS", "none", "a", "MAXLEN", "x"],
                "-ERR MAXLEN can't be negative\r\n",
            ),
            (&["LPOS", "l", "a", "RANK"], "-ERR syntax error\r\n"),
            (&["LPOS", "l", "a", "FOO", "1"], "-ERR syntax error\r\n"),
            (
                &["LPOS", "l"],
                "-ERR wrong number of arguments for 'lpos' command\r\n",
            ),
        ]);
    }

    #[test]
    fn lmove_and_rpoplpush() {
        let mut t = TestDb::new();
        t.check(&[
            (&["RPUSH", "s", "a", "b", "c"], ":3\r\n"),
            (&["LMOVE", "s", "d", "LEFT", "RIGHT"], "$1\r\na\r\n"),
            (&["LMOVE", "s", "d", "right", "left"], "$1\r\nc\r\n"),
            (&["LRANGE", "d", "0", "-1"], &bulks(&["c", "a"])),
            (&["LMOVE", "s", "d", "LEFT", "LEFT"], "$1\r\nb\r\n"),
            (&["EXISTS", "s"], ":0\r\n"),
            (&["LRANGE", "d", "0", "-1"], &bulks(&["b", "c", "a"])),
            (&["LMOVE", "s", "d", "LEFT", "LEFT"], "$-1\r\n"),
            (&["RPOPLPUSH", "d", "n"], "$1\r\na\r\n"),
            (&["RPOPLPUSH", "d", "n"], "$1\r\nc\r\n"),
            (&["LRANGE", "n", "0", "-1"], &bulks(&["c", "a"])),
            (&["RPOPLPUSH", "none", "n"], "$-1\r\n"),
            // Rotation on the same key.
            (&["RPOPLPUSH", "n", "n"], "$1\r\na\r\n"),
            (&["LRANGE", "n", "0", "-1"], &bulks(&["a", "c"])),
            (&["LMOVE", "n", "n", "LEFT", "RIGHT"], "$1\r\na\r\n"),
            (&["LRANGE", "n", "0", "-1"], &bulks(&["c", "a"])),
            (&["LMOVE", "n", "n", "LEFT", "LEFT"], "$1\r\nc\r\n"),
            (&["LRANGE", "n", "0", "-1"], &bulks(&["c", "a"])),
            (&["RPUSH", "one", "x"], ":1\r\n"),
            (&["LMOVE", "one", "one", "RIGHT", "LEFT"], "$1\r\nx\r\n"),
            (&["LRANGE", "one", "0", "-1"], &bulks(&["x"])),
            (&["LMOVE", "none", "none", "LEFT", "LEFT"], "$-1\r\n"),
            (&["LMOVE", "n", "m", "UP", "LEFT"], "-ERR syntax error\r\n"),
            (
                &["LMOVE", "none", "m", "LEFT", "DOWN"],
                "-ERR syntax error\r\n",
            ),
            (
                &["LMOVE", "n", "m", "LEFT"],
                "-ERR wrong number of arguments for 'lmove' command\r\n",
            ),
            (
                &["RPOPLPUSH", "n"],
                "-ERR wrong number of arguments for 'rpoplpush' command\r\n",
            ),
        ]);
        assert_consistent(&t);
    }

    #[test]
    fn move_keeps_ttls() {
        let mut t = TestDb::new();
        t.check(&[
            (&["RPUSH", "s", "a", "b"], ":2\r\n"),
            (&["RPUSH", "d", "x"], ":1\r\n"),
            (&["PEXPIRE", "d", "500"], ":1\r\n"),
            (&["LMOVE", "s", "d", "LEFT", "RIGHT"], "$1\r\na\r\n"),
            (&["PTTL", "d"], ":500\r\n"),
            (&["PTTL", "s"], ":-1\r\n"),
        ]);
        t.now += 500;
        // The expired destination is replaced by a fresh list without a TTL.
        t.check(&[
            (&["LMOVE", "s", "d", "LEFT", "RIGHT"], "$1\r\nb\r\n"),
            (&["PTTL", "d"], ":-1\r\n"),
            (&["LRANGE", "d", "0", "-1"], &bulks(&["b"])),
            (&["EXISTS", "s"], ":0\r\n"),
        ]);
        assert_consistent(&t);
    }

    #[test]
    fn wrong_types() {
        let mut t = TestDb::new();
        t.run(&["SET", "s", "v"]);
        t.run(&["RPUSH", "l", "a"]);
        for argv in [
            &["LPUSH", "s", "a"][..],
            &["RPUSH", "s", "a"],
            &["LPUSHX", "s", "a"],
            &["RPUSHX", "s", "a"],
            &["LPOP", "s"],
            &["RPOP", "s", "0"],
            &["LLEN", "s"],
            &["LRANGE", "s", "0", "-1"],
            &["LINDEX", "s", "0"],
            &["LINDEX", "s", "x"],
            &["LSET", "s", "0", "x"],
            &["LSET", "s", "x", "x"],
            &["LREM", "s", "0", "a"],
            &["LTRIM", "s", "0", "1"],
            &["LINSERT", "s", "BEFORE", "a", "b"],
            &["LPOS", "s", "a"],
            &["LPOS", "s", "a", "COUNT", "0"],
            &["LMOVE", "s", "l", "LEFT", "LEFT"],
            &["LMOVE", "l", "s", "LEFT", "LEFT"],
            &["LMOVE", "s", "s", "LEFT", "LEFT"],
            &["RPOPLPUSH", "s", "l"],
            &["RPOPLPUSH", "l", "s"],
        ] {
            assert_eq!(t.run(argv), WRONGTYPE, "{argv:?}");
        }
        // Argument errors come first where Redis checks them first.
        t.check(&[
            (
                &["LRANGE", "s", "0", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["LPOP", "s", "-1"],
                "-ERR value is out of range, must be positive\r\n",
            ),
            (
                &["LPOS", "s", "a", "COUNT", "-1"],
                "-ERR COUNT can't be negative\r\n",
            ),
            (&["LINSERT", "s", "UP", "a", "b"], "-ERR syntax error\r\n"),
            (&["LMOVE", "l", "s", "UP", "LEFT"], "-ERR syntax error\r\n"),
            // A missing source answers null before the destination's type is looked at.
            (&["LMOVE", "none", "s", "LEFT", "LEFT"], "$-1\r\n"),
            (&["GET", "s"], "$1\r\nv\r\n"),
            (&["LRANGE", "l", "0", "-1"], &bulks(&["a"])),
        ]);
        assert_consistent(&t);
    }

    #[test]
    fn specs() {
        use crate::spec::{Creates, lookup};
        for (name, creates) in [
            ("lpush", Creates::FirstKey),
            ("rpush", Creates::FirstKey),
            ("lpushx", Creates::Nothing),
            ("rpushx", Creates::Nothing),
            ("lset", Creates::Nothing),
            ("linsert", Creates::Nothing),
            ("lmove", Creates::SecondKey),
            ("rpoplpush", Creates::SecondKey),
        ] {
            let s = lookup(name.as_bytes()).expect(name);
            assert_eq!(s.creates, creates, "{name}");
            assert_eq!(s.group, "list");
        }
        let req = ferrite_protocol::OwnedRequest::from_parts(["LMOVE", "a", "b", "LEFT", "LEFT"]);
        let lmove = lookup(b"lmove").expect("lmove");
        assert_eq!(lmove.created_keys(&req.args()), vec![&b"b"[..]]);
        assert_eq!(lmove.keys(&req.args()).count(), 2);
    }

    /// Random operations against a `VecDeque` model: replies, contents and digests must agree.
    #[test]
    fn random_ops_match_model() {
        let mut t = TestDb::new();
        let mut rng = SmallRng::seed_from_u64(42);
        let mut models: [VecDeque<String>; 2] = Default::default();
        let keys = ["k0", "k1"];
        let vals = ["a", "b", "c", ""];
        for step in 0..3000 {
            let ki = rng.random_range(0..2);
            let key = keys[ki];
            let v = vals[rng.random_range(0..vals.len())].to_string();
            let a = rng.random_range(-6i64..8).to_string();
            let b = rng.random_range(-6i64..8).to_string();
            let m = &mut models[ki];
            match rng.random_range(0..9) {
                0 => {
                    t.run(&["LPUSH", key, &v, "x"]);
                    m.push_front(v);
                    m.push_front("x".into());
                }
                1 => {
                    t.run(&["RPUSH", key, &v]);
                    m.push_back(v);
                }
                2 => {
                    let n = rng.random_range(0..4usize);
                    t.run(&["LPOP", key, &n.to_string()]);
                    for _ in 0..n {
                        m.pop_front();
                    }
                }
                3 => {
                    t.run(&["RPOP", key]);
                    m.pop_back();
                }
                4 => {
                    let c: i64 = a.parse().unwrap_or(0);
                    t.run(&["LREM", key, &a, &v]);
                    let limit = if c == 0 {
                        usize::MAX
                    } else {
                        c.unsigned_abs() as usize
                    };
                    let mut removed = 0;
                    let idx: Vec<usize> = if c >= 0 {
                        (0..m.len()).collect()
                    } else {
                        (0..m.len()).rev().collect()
                    };
                    let mut drop_at = Vec::new();
                    for i in idx {
                        if removed < limit && m[i] == v {
                            drop_at.push(i);
                            removed += 1;
                        }
                    }
                    drop_at.sort_unstable();
                    for i in drop_at.into_iter().rev() {
                        m.remove(i);
                    }
                }
                5 => {
                    t.run(&["LTRIM", key, &a, &b]);
                    let kept: VecDeque<String> = match crate::util::index_range(
                        a.parse().unwrap_or(0),
                        b.parse().unwrap_or(0),
                        m.len(),
                    ) {
                        Some((s, e)) => m.range(s..=e).cloned().collect(),
                        None => VecDeque::new(),
                    };
                    *m = kept;
                }
                6 => {
                    let after = rng.random_bool(0.5);
                    let pivot = vals[rng.random_range(0..vals.len())];
                    let word = if after { "AFTER" } else { "BEFORE" };
                    t.run(&["LINSERT", key, word, pivot, "ins"]);
                    if let Some(p) = m.iter().position(|e| e == pivot) {
                        m.insert(p + usize::from(after), "ins".into());
                    }
                }
                7 => {
                    let idx: i64 = a.parse().unwrap_or(0);
                    t.run(&["LSET", key, &a, &v]);
                    let len = m.len() as i64;
                    let i = if idx < 0 { len + idx } else { idx };
                    if (0..len).contains(&i) {
                        m[i as usize] = v;
                    }
                }
                _ => {
                    let other = 1 - ki;
                    let (from, to) = (rng.random_bool(0.5), rng.random_bool(0.5));
                    let dst = if rng.random_bool(0.3) {
                        key
                    } else {
                        keys[other]
                    };
                    t.run(&[
                        "LMOVE",
                        key,
                        dst,
                        if from { "LEFT" } else { "RIGHT" },
                        if to { "LEFT" } else { "RIGHT" },
                    ]);
                    let e = if from {
                        models[ki].pop_front()
                    } else {
                        models[ki].pop_back()
                    };
                    if let Some(e) = e {
                        let d = if dst == key { ki } else { other };
                        if to {
                            models[d].push_front(e);
                        } else {
                            models[d].push_back(e);
                        }
                    }
                }
            }
            for (k, m) in keys.iter().zip(models.iter()) {
                let want: Vec<&str> = m.iter().map(String::as_str).collect();
                assert_eq!(
                    t.run(&["LRANGE", k, "0", "-1"]),
                    bulks(&want),
                    "step {step}"
                );
                let exists = if m.is_empty() { ":0\r\n" } else { ":1\r\n" };
                assert_eq!(t.run(&["EXISTS", k]), exists, "step {step}");
            }
            if step % 100 == 0 {
                assert_consistent(&t);
            }
        }
        assert_consistent(&t);
    }
}
