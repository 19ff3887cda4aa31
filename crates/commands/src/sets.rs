//! Set commands.

use std::collections::HashSet;

use ferrite_protocol::{Args, ErrorReply};
use ferrite_storage::{Db, SetRef, SetValue, Slot, Value, ValueRef};

use crate::ctx::Ctx;
use crate::hashes::{check_repeats, parse_random_count, sample_distinct};
use crate::spec::flags::*;
use crate::spec::{ALL_KEYS, CmdResult, CommandSpec, Creates, KEY1, KEYS12};
use crate::util::{as_set, as_set_mut, parse_cursor, parse_scan_options};

crate::command_family!("set");

const R: u32 = READONLY;

/// SINTERCARD's keys follow a count (`SINTERCARD numkeys key... [LIMIT n]`), which a
/// first/last/step triple cannot express (Redis reports 0,0,0 and marks it movablekeys). Starting
/// at 2 and running to the end lists every real key, plus at most the LIMIT words, so checks
/// driven by the key list (ownership, WATCH) always see the keys the command reads.
const SINTERCARD_KEYS: (i32, i32, i32) = (2, -1, 1);

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "sadd",
        -3,
        WRITE | DENYOOM | FAST,
        KEY1,
        Creates::FirstKey,
        "Adds members to a set; returns how many were new.",
        sadd,
    ),
    cmd(
        "srem",
        -3,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Removes members from a set.",
        srem,
    ),
    cmd(
        "smembers",
        2,
        R,
        KEY1,
        Creates::Nothing,
        "Returns all members of a set.",
        smembers,
    ),
    cmd(
        "sismember",
        3,
        R | FAST,
        KEY1,
        Creates::Nothing,
        "Tells whether a member belongs to a set.",
        sismember,
    ),
    cmd(
        "smismember",
        -3,
        R | FAST,
        KEY1,
        Creates::Nothing,
        "Tells whether each of several members belongs to a set.",
        smismember,
    ),
    cmd(
        "scard",
        2,
        R | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the number of members of a set.",
        scard,
    ),
    cmd(
        "spop",
        -2,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Removes and returns random members of a set.",
        spop,
    ),
    cmd(
        "srandmember",
        -2,
        R,
        KEY1,
        Creates::Nothing,
        "Returns random members of a set.",
        srandmember,
    ),
    cmd(
        "smove",
        4,
        WRITE | DENYOOM | FAST,
        KEYS12,
        Creates::SecondKey,
        "Moves a member from one set to another.",
        smove,
    ),
    cmd(
        "sinter",
        -2,
        R,
        ALL_KEYS,
        Creates::Nothing,
        "Returns the intersection of sets.",
        sinter,
    ),
    cmd(
        "sunion",
        -2,
        R,
        ALL_KEYS,
        Creates::Nothing,
        "Returns the union of sets.",
        sunion,
    ),
    cmd(
        "sdiff",
        -2,
        R,
        ALL_KEYS,
        Creates::Nothing,
        "Returns the members of the first set that are in none of the others.",
        sdiff,
    ),
    cmd(
        "sinterstore",
        -3,
        WRITE | DENYOOM,
        ALL_KEYS,
        Creates::FirstKey,
        "Stores the intersection of sets in a key.",
        sinterstore,
    ),
    cmd(
        "sunionstore",
        -3,
        WRITE | DENYOOM,
        ALL_KEYS,
        Creates::FirstKey,
        "Stores the union of sets in a key.",
        sunionstore,
    ),
    cmd(
        "sdiffstore",
        -3,
        WRITE | DENYOOM,
        ALL_KEYS,
        Creates::FirstKey,
        "Stores the difference of sets in a key.",
        sdiffstore,
    ),
    cmd(
        "sintercard",
        -3,
        R,
        SINTERCARD_KEYS,
        Creates::Nothing,
        "Returns the size of the intersection of sets, optionally stopping at a limit.",
        sintercard,
    ),
    cmd(
        "sscan",
        -3,
        R,
        KEY1,
        Creates::Nothing,
        "Iterates over the members of a set.",
        sscan,
    ),
];

fn sadd(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let members = args.tail(2);
    let added = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => {
            let s = as_set_mut(o.get_mut())?;
            members.iter().filter(|m| s.insert(m)).count()
        }
        Slot::Vacant(v) => {
            let mut s = SetValue::default();
            let n = members.iter().filter(|m| s.insert(m)).count();
            v.insert(Value::Set(s), None);
            n
        }
    };
    ctx.w.int(added as i64);
    Ok(())
}

fn srem(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let n = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => {
            let s = as_set_mut(o.get_mut())?;
            args.tail(2).iter().filter(|m| s.remove(m)).count()
        }
        Slot::Vacant(_) => 0,
    };
    ctx.w.int(n as i64);
    Ok(())
}

fn smembers(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let s = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => Some(as_set(e)?),
        None => None,
    };
    ctx.w.set(s.map_or(0, SetRef::len));
    for m in s.into_iter().flat_map(SetRef::iter) {
        ctx.w.bulk(m);
    }
    Ok(())
}

fn sismember(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let yes = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => as_set(e)?.contains(args.get(2)),
        None => false,
    };
    ctx.w.int(i64::from(yes));
    Ok(())
}

fn smismember(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let s = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => Some(as_set(e)?),
        None => None,
    };
    ctx.w.array(args.len() - 2);
    for m in args.tail(2).iter() {
        ctx.w.int(i64::from(s.is_some_and(|s| s.contains(m))));
    }
    Ok(())
}

fn scard(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let n = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => as_set(e)?.len(),
        None => 0,
    };
    ctx.w.int(n as i64);
    Ok(())
}

fn spop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len() > 3 {
        return Err(ErrorReply::syntax());
    }
    let key = args.get(1);
    if args.len() == 2 {
        let popped = match ctx.db.entry(key, ctx.now) {
            Slot::Occupied(mut o) => as_set_mut(o.get_mut())?.pop_random(ctx.rng),
            Slot::Vacant(_) => None,
        };
        ctx.w.opt_bulk(popped.as_deref());
        // Random: journaled as the member it removed.
        if let Some(m) = popped {
            ctx.propagate(&[b"SREM", key, &m]);
        }
        return Ok(());
    }
    // Redis reads the count as a non-negative long and reports any failure the same way.
    let count = args
        .int(2)
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(ErrorReply::must_be_positive)? as u64;
    let journal = ctx.wants_effects();
    let mut o = match ctx.db.entry(key, ctx.now) {
        Slot::Occupied(o) => o,
        Slot::Vacant(_) => {
            ctx.w.set(0);
            return Ok(());
        }
    };
    let s = as_set_mut(o.get_mut())?;
    if count >= s.len() as u64 {
        let e = o.remove();
        let s = as_set(&e)?;
        ctx.w.set(s.len());
        for m in s.iter() {
            ctx.w.bulk(m);
        }
        ctx.garbage.defer(s.len(), e);
        ctx.propagate(&[b"DEL", key]);
        return Ok(());
    }
    ctx.w.set(count as usize);
    let mut popped: Vec<Box<[u8]>> = Vec::new();
    for _ in 0..count {
        // count < len, so the set never runs dry here.
        let m = s.pop_random(ctx.rng);
        ctx.w.bulk(m.as_deref().unwrap_or_default());
        if let (true, Some(m)) = (journal, m) {
            popped.push(m);
        }
    }
    drop(o);
    // Random: journaled as the members it removed.
    if !popped.is_empty() {
        let mut argv: Vec<&[u8]> = Vec::with_capacity(popped.len() + 2);
        argv.push(b"SREM");
        argv.push(key);
        argv.extend(popped.iter().map(|m| &m[..]));
        ctx.propagate(&argv);
    }
    Ok(())
}

fn srandmember(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len() > 3 {
        return Err(ErrorReply::syntax());
    }
    let key = args.get(1);
    if args.len() == 2 {
        let m = match ctx.db.get(key, ctx.now) {
            Some(e) => as_set(e)?.random(ctx.rng),
            None => None,
        };
        ctx.w.opt_bulk(m);
        return Ok(());
    }
    let count = parse_random_count(&args, 2)?;
    check_repeats(count)?;
    let Some(e) = ctx.db.get(key, ctx.now) else {
        ctx.w.array(0);
        return Ok(());
    };
    let s = as_set(e)?;
    let rng = &mut *ctx.rng;
    let w = &mut *ctx.w;
    if count < 0 {
        // Streamed rather than collected: repeats may far outnumber the members.
        let n = count.unsigned_abs() as usize;
        w.array(n);
        for _ in 0..n {
            // The reply outgrew the connection's output budget: it will not be sent.
            if w.is_full() {
                break;
            }
            // A stored set is never empty, so a pick always exists.
            w.bulk(s.random(rng).unwrap_or_default());
        }
        return Ok(());
    }
    let picks: Vec<&[u8]> = if count as u64 >= s.len() as u64 {
        s.iter().collect()
    } else {
        sample_distinct(count as usize, s.len(), rng, s.iter(), |r| s.random(r))
    };
    w.array(picks.len());
    for m in picks {
        w.bulk(m);
    }
    Ok(())
}

fn smove(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (src, dst, member) = (args.get(1), args.get(2), args.get(3));
    let now = ctx.now;
    // Redis answers 0 for a missing source without looking at the destination's type.
    let in_src = match ctx.db.get(src, now) {
        Some(e) => as_set(e)?.contains(member),
        None => {
            ctx.w.int(0);
            return Ok(());
        }
    };
    if let Some(e) = ctx.db.get(dst, now) {
        as_set(e)?;
    }
    if src == dst || !in_src {
        ctx.w.int(i64::from(in_src));
        return Ok(());
    }
    if let Slot::Occupied(mut o) = ctx.db.entry(src, now) {
        as_set_mut(o.get_mut())?.remove(member);
    }
    match ctx.db.entry(dst, now) {
        Slot::Occupied(mut o) => {
            as_set_mut(o.get_mut())?.insert(member);
        }
        Slot::Vacant(v) => {
            let mut s = SetValue::default();
            s.insert(member);
            v.insert(Value::Set(s), None);
        }
    }
    ctx.w.int(1);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Inter,
    Union,
    Diff,
}

/// Looks up every key (reclaiming expired ones) and fails with WRONGTYPE if any holds something
/// other than a set, so that [`sets_of`] can then borrow them all at once.
fn check_sets<'a>(
    ctx: &mut Ctx<'_, '_>,
    keys: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), ErrorReply> {
    for k in keys {
        if let Some(e) = ctx.db.get(k, ctx.now) {
            as_set(e)?;
        }
    }
    Ok(())
}

/// The sets at `keys` (None for a missing key), after [`check_sets`].
fn sets_of<'d>(db: &'d Db, keys: &[&[u8]]) -> Vec<Option<SetRef<'d>>> {
    keys.iter()
        .map(|k| match db.peek(k).map(|e| e.value()) {
            Some(ValueRef::Set(s)) => Some(s),
            _ => None,
        })
        .collect()
}

/// Members of the intersection, walking the smallest set and probing the others.
fn intersection<'d>(sets: &[Option<SetRef<'d>>]) -> impl Iterator<Item = &'d [u8]> {
    let mut present: Vec<SetRef<'d>> = sets.iter().flatten().copied().collect();
    if present.len() < sets.len() {
        // A missing key is an empty set.
        present.clear();
    }
    present.sort_by_key(|s| s.len());
    let first = present.first().copied();
    let rest: Vec<SetRef<'d>> = present.into_iter().skip(1).collect();
    first
        .into_iter()
        .flat_map(SetRef::iter)
        .filter(move |m| rest.iter().all(|s| s.contains(m)))
}

/// The result of `op` over `sets`, borrowing members from them.
fn combine<'d>(sets: &[Option<SetRef<'d>>], op: Op) -> Vec<&'d [u8]> {
    match op {
        Op::Inter => intersection(sets).collect(),
        Op::Union => {
            let mut seen = HashSet::new();
            sets.iter()
                .flatten()
                .flat_map(|s| s.iter())
                .filter(|m| seen.insert(*m))
                .collect()
        }
        Op::Diff => {
            let Some(Some(first)) = sets.first() else {
                return Vec::new();
            };
            let others: Vec<SetRef<'_>> = sets.iter().skip(1).flatten().copied().collect();
            first
                .iter()
                .filter(|m| !others.iter().any(|s| s.contains(m)))
                .collect()
        }
    }
}

fn reply_op(ctx: &mut Ctx<'_, '_>, args: Args<'_>, op: Op) -> CmdResult {
    let keys: Vec<&[u8]> = args.tail(1).iter().collect();
    check_sets(ctx, keys.iter().copied())?;
    let sets = sets_of(ctx.db, &keys);
    let members = combine(&sets, op);
    ctx.w.set(members.len());
    for m in members {
        ctx.w.bulk(m);
    }
    Ok(())
}

fn sinter(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    reply_op(ctx, args, Op::Inter)
}

fn sunion(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    reply_op(ctx, args, Op::Union)
}

fn sdiff(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    reply_op(ctx, args, Op::Diff)
}

/// The *STORE forms: the destination is replaced by the result (losing any TTL and whatever
/// type it held), or deleted when the result is empty.
fn store_op(ctx: &mut Ctx<'_, '_>, args: Args<'_>, op: Op) -> CmdResult {
    let dst = args.get(1);
    let keys: Vec<&[u8]> = args.tail(2).iter().collect();
    check_sets(ctx, keys.iter().copied())?;
    let mut result = SetValue::default();
    for m in combine(&sets_of(ctx.db, &keys), op) {
        result.insert(m);
    }
    let n = result.len();
    match ctx.db.entry(dst, ctx.now) {
        Slot::Occupied(o) if n == 0 => {
            let e = o.remove();
            ctx.garbage.defer(e.value().elements(), e);
        }
        Slot::Occupied(mut o) => {
            let old = o.swap_value(Value::Set(result));
            o.get_mut().set_expire_at(None);
            ctx.garbage.defer(old.elements(), old);
        }
        Slot::Vacant(v) => v.insert(Value::Set(result), None),
    }
    ctx.w.int(n as i64);
    Ok(())
}

fn sinterstore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    store_op(ctx, args, Op::Inter)
}

fn sunionstore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    store_op(ctx, args, Op::Union)
}

fn sdiffstore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    store_op(ctx, args, Op::Diff)
}

fn sintercard(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let numkeys = args
        .int(1)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ErrorReply::err("numkeys should be greater than 0"))?;
    if numkeys > args.len() as i64 - 2 {
        return Err(ErrorReply::err(
            "Number of keys can't be greater than number of args",
        ));
    }
    let end = 2 + numkeys as usize;
    let mut limit = 0usize;
    let mut i = end;
    while i < args.len() {
        if args.is(i, "LIMIT") && i + 1 < args.len() {
            let n = args
                .int(i + 1)
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ErrorReply::err("LIMIT can't be negative"))?;
            limit = usize::try_from(n).unwrap_or(usize::MAX);
            i += 2;
        } else {
            return Err(ErrorReply::syntax());
        }
    }
    let keys: Vec<&[u8]> = args.slice(2, end).iter().collect();
    check_sets(ctx, keys.iter().copied())?;
    let sets = sets_of(ctx.db, &keys);
    let all = intersection(&sets);
    // LIMIT 0 means no limit.
    let n = if limit == 0 {
        all.count()
    } else {
        all.take(limit).count()
    };
    ctx.w.int(n as i64);
    Ok(())
}

fn sscan(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let cursor = parse_cursor(args.get(2))?;
    // Redis checks the key before the options: a missing key gives an empty page even with
    // options it would otherwise refuse.
    let s = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => as_set(e)?,
        None => {
            crate::util::empty_scan_page(ctx.w);
            return Ok(());
        }
    };
    let opts = parse_scan_options(&args, 3, false, false)?;
    // The scan callback's borrows end with each call, so the page is copied out.
    let mut found: Vec<Vec<u8>> = Vec::new();
    let next = s.scan(cursor, opts.count, |m| {
        if opts.matches(m) {
            found.push(m.to_vec());
        }
    });
    ctx.w.array(2);
    ctx.w.bulk(itoa::Buffer::new().format(next).as_bytes());
    ctx.w.array(found.len());
    for m in &found {
        ctx.w.bulk(m);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use ferrite_protocol::{OwnedRequest, Protocol};

    use crate::testing::TestDb;

    const WRONGTYPE: &str =
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";

    fn arity(cmd: &str) -> String {
        format!("-ERR wrong number of arguments for '{cmd}' command\r\n")
    }

    /// The bulk strings of a flat reply, in order.
    fn bulks(reply: &str) -> Vec<String> {
        reply
            .split("\r\n")
            .skip(2)
            .step_by(2)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The members of a set-valued reply, order ignored.
    fn members(reply: &str) -> HashSet<String> {
        bulks(reply).into_iter().collect()
    }

    fn set_of(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn add_remove_query() {
        let mut t = TestDb::new();
        t.check(&[
            (&["SADD", "s", "a", "b", "c", "a"], ":3\r\n"),
            (&["SADD", "s", "a", "d"], ":1\r\n"),
            (&["SADD", "s", ""], ":1\r\n"),
            (&["SADD", "s"], &arity("sadd")),
            (&["SCARD", "s"], ":5\r\n"),
            (&["SCARD", "none"], ":0\r\n"),
            (&["SISMEMBER", "s", "a"], ":1\r\n"),
            (&["SISMEMBER", "s", ""], ":1\r\n"),
            (&["SISMEMBER", "s", "z"], ":0\r\n"),
            (&["SISMEMBER", "none", "a"], ":0\r\n"),
            (
                &["SMISMEMBER", "s", "a", "z", "d"],
                "*3\r\n:1\r\n:0\r\n:1\r\n",
            ),
            (&["SMISMEMBER", "none", "a", "b"], "*2\r\n:0\r\n:0\r\n"),
            (&["SMISMEMBER", "s"], &arity("smismember")),
            (&["SREM", "s", "z", "d", "", "d"], ":2\r\n"),
            (&["SREM", "none", "a"], ":0\r\n"),
            (&["SREM", "s"], &arity("srem")),
            (
                &["SMEMBERS", "s"],
                "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
            ),
            (&["SMEMBERS", "none"], "*0\r\n"),
            (&["SMEMBERS", "s", "x"], &arity("smembers")),
            (&["SREM", "s", "a", "b", "c"], ":3\r\n"),
            (&["EXISTS", "s"], ":0\r\n"),
        ]);
        t.assert_digest_consistent();
        t.run(&["SADD", "s", "x"]);
        t.proto = Protocol::Resp3;
        t.check(&[
            (&["SMEMBERS", "s"], "~1\r\n$1\r\nx\r\n"),
            (&["SMEMBERS", "none"], "~0\r\n"),
            (&["SISMEMBER", "s", "x"], ":1\r\n"),
            (&["SMISMEMBER", "s", "x", "y"], "*2\r\n:1\r\n:0\r\n"),
        ]);
    }

    #[test]
    fn pop() {
        let mut t = TestDb::new();
        t.run(&["SADD", "s", "a", "b", "c", "d", "e"]);
        let mut left = set_of(&["a", "b", "c", "d", "e"]);
        let one = bulks(&format!("*1\r\n{}", t.run(&["SPOP", "s"])));
        assert_eq!(one.len(), 1);
        assert!(left.remove(&one[0]));
        let two = bulks(&t.run(&["SPOP", "s", "2"]));
        assert_eq!(two.len(), 2);
        for m in &two {
            assert!(left.remove(m), "{m} popped twice");
        }
        assert_eq!(members(&t.run(&["SMEMBERS", "s"])), left);
        t.assert_digest_consistent();
        t.check(&[
            (&["SPOP", "s", "0"], "*0\r\n"),
            (
                &["SPOP", "s", "-1"],
                "-ERR value is out of range, must be positive\r\n",
            ),
            (
                &["SPOP", "s", "x"],
                "-ERR value is out of range, must be positive\r\n",
            ),
            (&["SPOP", "s", "1", "2"], "-ERR syntax error\r\n"),
            (&["SPOP", "s", "x", "2"], "-ERR syntax error\r\n"),
            (&["SPOP", "none"], "$-1\r\n"),
            (&["SPOP", "none", "3"], "*0\r\n"),
            (&["SPOP"], &arity("spop")),
            (&["SCARD", "s"], ":2\r\n"),
        ]);
        let rest = members(&t.run(&["SPOP", "s", "9223372036854775807"]));
        assert_eq!(rest, left);
        t.check(&[(&["EXISTS", "s"], ":0\r\n")]);
        t.run(&["SADD", "s", "only"]);
        t.check(&[
            (&["SPOP", "s"], "$4\r\nonly\r\n"),
            (&["EXISTS", "s"], ":0\r\n"),
        ]);
        t.assert_digest_consistent();
        t.run(&["SADD", "s", "x", "y"]);
        t.proto = Protocol::Resp3;
        t.check(&[
            (&["SPOP", "none"], "_\r\n"),
            (&["SPOP", "none", "2"], "~0\r\n"),
            (&["SPOP", "s", "0"], "~0\r\n"),
        ]);
        let r = t.run(&["SPOP", "s", "1"]);
        assert!(r.starts_with("~1\r\n"), "{r}");
        let r = t.run(&["SPOP", "s", "5"]);
        assert!(r.starts_with("~1\r\n"), "{r}");
        t.assert_digest_consistent();
    }

    #[test]
    fn pop_large() {
        let mut t = TestDb::new();
        let mut argv = vec!["SADD".to_string(), "s".to_string()];
        argv.extend((0..300).map(|i| format!("m{i}")));
        t.run(&argv);
        let got = bulks(&t.run(&["SPOP", "s", "250"]));
        let distinct: HashSet<_> = got.iter().collect();
        assert_eq!((got.len(), distinct.len()), (250, 250));
        t.check(&[(&["SCARD", "s"], ":50\r\n")]);
        let rest = members(&t.run(&["SMEMBERS", "s"]));
        assert!(rest.iter().all(|m| !distinct.contains(m)));
        t.assert_digest_consistent();
        let got = members(&t.run(&["SPOP", "s", "100"]));
        assert_eq!(got, rest);
        t.check(&[(&["EXISTS", "s"], ":0\r\n")]);
        t.assert_digest_consistent();
    }

    #[test]
    fn randmember() {
        let mut t = TestDb::new();
        t.run(&["SADD", "s", "a", "b", "c"]);
        let all = set_of(&["a", "b", "c"]);
        let one = t.run(&["SRANDMEMBER", "s"]);
        assert!(all.contains(&bulks(&format!("*1\r\n{one}"))[0]));
        for n in 1..=3 {
            let got = bulks(&t.run(&["SRANDMEMBER", "s", &n.to_string()]));
            let distinct: HashSet<_> = got.iter().cloned().collect();
            assert_eq!((got.len(), distinct.len()), (n, n));
            assert!(distinct.is_subset(&all));
        }
        assert_eq!(bulks(&t.run(&["SRANDMEMBER", "s", "10"])), ["a", "b", "c"]);
        let rep = bulks(&t.run(&["SRANDMEMBER", "s", "-50"]));
        assert_eq!(rep.len(), 50);
        assert!(rep.iter().all(|m| all.contains(m)));
        let mut argv = vec!["SADD".to_string(), "big".to_string()];
        argv.extend((0..100).map(|i| format!("m{i}")));
        t.run(&argv);
        for n in [5, 40, 99] {
            let got = bulks(&t.run(&["SRANDMEMBER", "big", &n.to_string()]));
            let distinct: HashSet<_> = got.iter().collect();
            assert_eq!((got.len(), distinct.len()), (n, n));
        }
        t.check(&[
            (&["SRANDMEMBER", "none"], "$-1\r\n"),
            (&["SRANDMEMBER", "none", "3"], "*0\r\n"),
            (&["SRANDMEMBER", "none", "-3"], "*0\r\n"),
            (&["SRANDMEMBER", "s", "0"], "*0\r\n"),
            (
                &["SRANDMEMBER", "s", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["SRANDMEMBER", "s", "1", "2"], "-ERR syntax error\r\n"),
            (
                &["SRANDMEMBER", "s", "-9223372036854775808"],
                "-ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807\r\n",
            ),
            // Deviation: huge repeating counts are refused instead of building a giant reply.
            (
                &["SRANDMEMBER", "s", "-9223372036854775807"],
                "-ERR value is out of range\r\n",
            ),
            (
                &["SRANDMEMBER", "s", "9223372036854775807"],
                "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
            ),
            (&["SRANDMEMBER"], &arity("srandmember")),
            (&["SCARD", "s"], ":3\r\n"),
        ]);
        // An array, not a set, even in RESP3 (a negative count repeats members).
        t.proto = Protocol::Resp3;
        t.check(&[
            (&["SRANDMEMBER", "none"], "_\r\n"),
            (&["SRANDMEMBER", "none", "2"], "*0\r\n"),
            (
                &["SRANDMEMBER", "s", "5"],
                "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
            ),
        ]);
        assert!(t.run(&["SRANDMEMBER", "s", "-4"]).starts_with("*4\r\n"));
    }

    #[test]
    fn move_member() {
        let mut t = TestDb::new();
        t.run(&["SADD", "src", "a", "b"]);
        t.run(&["SADD", "dst", "x"]);
        t.run(&["SET", "str", "v"]);
        t.check(&[
            (&["SMOVE", "src", "dst", "a"], ":1\r\n"),
            (&["SMOVE", "src", "dst", "zz"], ":0\r\n"),
            (&["SISMEMBER", "dst", "a"], ":1\r\n"),
            (&["SISMEMBER", "src", "a"], ":0\r\n"),
            (&["SMOVE", "src", "src", "b"], ":1\r\n"),
            (&["SMOVE", "src", "src", "zz"], ":0\r\n"),
            (&["SMOVE", "src", "new", "b"], ":1\r\n"),
            (&["EXISTS", "src"], ":0\r\n"),
            (&["SMEMBERS", "new"], "*1\r\n$1\r\nb\r\n"),
            // Already in the destination: still moved out of the source.
            (&["SADD", "src", "x"], ":1\r\n"),
            (&["SMOVE", "src", "dst", "x"], ":1\r\n"),
            (&["EXISTS", "src"], ":0\r\n"),
            (&["SCARD", "dst"], ":2\r\n"),
            (&["SMOVE", "none", "str", "a"], ":0\r\n"),
            (&["SMOVE", "dst", "str", "a"], WRONGTYPE),
            (&["SMOVE", "str", "dst", "a"], WRONGTYPE),
            (&["SISMEMBER", "dst", "a"], ":1\r\n"),
            (&["SMOVE", "dst", "new"], &arity("smove")),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn algebra() {
        let mut t = TestDb::new();
        t.run(&["SADD", "s1", "a", "b", "c", "d"]);
        t.run(&["SADD", "s2", "c", "d", "e"]);
        t.run(&["SADD", "s3", "d", "e", "f"]);
        let cases: &[(&[&str], &[&str])] = &[
            (&["SINTER", "s1", "s2"], &["c", "d"]),
            (&["SINTER", "s1", "s2", "s3"], &["d"]),
            (&["SINTER", "s1"], &["a", "b", "c", "d"]),
            (&["SINTER", "s1", "none"], &[]),
            (&["SINTER", "none"], &[]),
            (&["SUNION", "s1", "s2"], &["a", "b", "c", "d", "e"]),
            (
                &["SUNION", "s1", "none", "s3"],
                &["a", "b", "c", "d", "e", "f"],
            ),
            (&["SUNION", "none"], &[]),
            (&["SDIFF", "s1", "s2"], &["a", "b"]),
            (&["SDIFF", "s1", "s2", "s3"], &["a", "b"]),
            (&["SDIFF", "s3", "s1"], &["e", "f"]),
            (&["SDIFF", "s1", "none"], &["a", "b", "c", "d"]),
            (&["SDIFF", "none", "s1"], &[]),
            (&["SDIFF", "s1", "s1"], &[]),
        ];
        for (argv, want) in cases {
            let got = t.run(argv);
            assert!(
                got.starts_with(&format!("*{}\r\n", want.len())),
                "{argv:?}: {got}"
            );
            assert_eq!(members(&got), set_of(want), "{argv:?}");
        }
        t.check(&[
            (&["SINTER"], &arity("sinter")),
            (&["SUNION"], &arity("sunion")),
            (&["SDIFF"], &arity("sdiff")),
        ]);
        t.proto = Protocol::Resp3;
        t.check(&[
            (&["SINTER", "s1", "s2", "s3"], "~1\r\n$1\r\nd\r\n"),
            (&["SINTER", "s1", "none"], "~0\r\n"),
            (&["SDIFF", "none", "s1"], "~0\r\n"),
            (&["SUNION", "none"], "~0\r\n"),
        ]);
        assert!(t.run(&["SUNION", "s1", "s2"]).starts_with("~5\r\n"));
    }

    #[test]
    fn algebra_store() {
        let mut t = TestDb::new();
        t.run(&["SADD", "s1", "a", "b", "c", "d"]);
        t.run(&["SADD", "s2", "c", "d", "e"]);
        t.run(&["SET", "str", "v"]);
        t.check(&[
            (&["SINTERSTORE", "d", "s1", "s2"], ":2\r\n"),
            (&["SMEMBERS", "d"], "*2\r\n$1\r\nc\r\n$1\r\nd\r\n"),
            (&["SUNIONSTORE", "d", "s1", "s2"], ":5\r\n"),
            (&["SCARD", "d"], ":5\r\n"),
            (&["SDIFFSTORE", "d", "s1", "s2"], ":2\r\n"),
            (&["SMEMBERS", "d"], "*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
            // An empty result deletes the destination.
            (&["SINTERSTORE", "d", "s1", "none"], ":0\r\n"),
            (&["EXISTS", "d"], ":0\r\n"),
            (&["SDIFFSTORE", "d", "none"], ":0\r\n"),
            (&["EXISTS", "d"], ":0\r\n"),
            // The destination may hold any type, and loses its TTL.
            (&["SET", "d", "x", "EX", "100"], "+OK\r\n"),
            (&["SUNIONSTORE", "d", "s2"], ":3\r\n"),
            (&["TYPE", "d"], "+set\r\n"),
            (&["TTL", "d"], ":-1\r\n"),
            (&["SET", "d", "x"], "+OK\r\n"),
            (&["SDIFFSTORE", "d", "s2", "s2"], ":0\r\n"),
            (&["EXISTS", "d"], ":0\r\n"),
            // The destination may also be a source.
            (&["SINTERSTORE", "s1", "s1", "s2"], ":2\r\n"),
            (&["SMEMBERS", "s1"], "*2\r\n$1\r\nc\r\n$1\r\nd\r\n"),
            (&["SUNIONSTORE", "s2", "s2"], ":3\r\n"),
            (&["SINTERSTORE", "d"], &arity("sinterstore")),
            (&["SUNIONSTORE", "d"], &arity("sunionstore")),
            (&["SDIFFSTORE", "d"], &arity("sdiffstore")),
            // Source types are checked; the destination is untouched on error.
            (&["SET", "d", "keep"], "+OK\r\n"),
            (&["SINTERSTORE", "d", "none", "str"], WRONGTYPE),
            (&["SUNIONSTORE", "d", "s1", "str"], WRONGTYPE),
            (&["SDIFFSTORE", "d", "s1", "str"], WRONGTYPE),
            (&["GET", "d"], "$4\r\nkeep\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn intercard() {
        let mut t = TestDb::new();
        t.run(&["SADD", "s1", "a", "b", "c", "d"]);
        t.run(&["SADD", "s2", "b", "c", "d", "e"]);
        t.run(&["SET", "str", "v"]);
        t.check(&[
            (&["SINTERCARD", "2", "s1", "s2"], ":3\r\n"),
            (&["SINTERCARD", "1", "s1"], ":4\r\n"),
            (&["SINTERCARD", "2", "s1", "s2", "LIMIT", "2"], ":2\r\n"),
            (&["SINTERCARD", "2", "s1", "s2", "limit", "0"], ":3\r\n"),
            (&["SINTERCARD", "2", "s1", "s2", "LIMIT", "100"], ":3\r\n"),
            (
                &["SINTERCARD", "1", "s1", "LIMIT", "1", "LIMIT", "3"],
                ":3\r\n",
            ),
            (&["SINTERCARD", "2", "s1", "none"], ":0\r\n"),
            (&["SINTERCARD", "1", "none"], ":0\r\n"),
            (&["SINTERCARD", "2", "none", "str"], WRONGTYPE),
            (&["SINTERCARD", "2", "s1", "str"], WRONGTYPE),
            (
                &["SINTERCARD", "0", "s1"],
                "-ERR numkeys should be greater than 0\r\n",
            ),
            (
                &["SINTERCARD", "-1", "s1"],
                "-ERR numkeys should be greater than 0\r\n",
            ),
            (
                &["SINTERCARD", "x", "s1"],
                "-ERR numkeys should be greater than 0\r\n",
            ),
            (
                &["SINTERCARD", "3", "s1", "s2"],
                "-ERR Number of keys can't be greater than number of args\r\n",
            ),
            (
                &["SINTERCARD", "9223372036854775807", "s1"],
                "-ERR Number of keys can't be greater than number of args\r\n",
            ),
            (
                &["SINTERCARD", "2", "s1", "s2", "LIMIT", "-1"],
                "-ERR LIMIT can't be negative\r\n",
            ),
            (
                &["SINTERCARD", "2", "s1", "s2", "LIMIT", "x"],
                "-ERR LIMIT can't be negative\r\n",
            ),
            (
                &["SINTERCARD", "2", "s1", "s2", "LIMIT"],
                "-ERR syntax error\r\n",
            ),
            (
                &["SINTERCARD", "1", "s1", "LIMIT", "1", "foo"],
                "-ERR syntax error\r\n",
            ),
            (&["SINTERCARD", "1"], &arity("sintercard")),
        ]);
    }

    #[test]
    fn scan() {
        let mut t = TestDb::new();
        let mut argv = vec!["SADD".to_string(), "s".to_string()];
        argv.extend((0..250).map(|i| format!("m{i}")));
        t.run(&argv);
        let mut cursor = "0".to_string();
        let mut seen = HashSet::new();
        for round in 0..10_000 {
            assert!(round < 9_999, "SSCAN did not finish");
            let reply = t.run(&["SSCAN", "s", &cursor, "COUNT", "9"]);
            let parts: Vec<&str> = reply.split("\r\n").collect();
            cursor = parts[2].to_string();
            seen.extend(parts.iter().skip(5).step_by(2).map(|s| s.to_string()));
            if cursor == "0" {
                break;
            }
        }
        seen.remove("");
        assert_eq!(seen.len(), 250);
        let reply = t.run(&["SSCAN", "s", "0", "MATCH", "m1?", "COUNT", "1000"]);
        assert!(reply.starts_with("*2\r\n$1\r\n0\r\n*10\r\n"), "{reply}");
        let matched: HashSet<String> = reply
            .split("\r\n")
            .filter(|p| p.starts_with('m'))
            .map(str::to_string)
            .collect();
        let want: HashSet<String> = (10..20).map(|i| format!("m{i}")).collect();
        assert_eq!(matched, want);
        t.run(&["SADD", "one", "x"]);
        t.run(&["SET", "str", "v"]);
        t.check(&[
            (&["SSCAN", "one", "0"], "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nx\r\n"),
            (&["SSCAN", "none", "0"], "*2\r\n$1\r\n0\r\n*0\r\n"),
            (&["SSCAN", "none", "0", "BOGUS"], "*2\r\n$1\r\n0\r\n*0\r\n"),
            (&["SSCAN", "one", "x"], "-ERR invalid cursor\r\n"),
            (
                &["SSCAN", "one", "0", "COUNT", "0"],
                "-ERR syntax error\r\n",
            ),
            (&["SSCAN", "one", "0", "NOVALUES"], "-ERR syntax error\r\n"),
            (&["SSCAN", "one", "0", "MATCH"], "-ERR syntax error\r\n"),
            (&["SSCAN", "str", "0"], WRONGTYPE),
            (&["SSCAN", "str", "0", "COUNT", "0"], WRONGTYPE),
            (&["SSCAN", "one"], &arity("sscan")),
        ]);
    }

    #[test]
    fn wrong_type() {
        let mut t = TestDb::new();
        t.run(&["SET", "str", "v"]);
        t.run(&["HSET", "h", "f", "v"]);
        for argv in [
            &["SADD", "str", "a"][..],
            &["SREM", "str", "a"],
            &["SMEMBERS", "str"],
            &["SISMEMBER", "str", "a"],
            &["SMISMEMBER", "str", "a"],
            &["SCARD", "h"],
            &["SPOP", "str"],
            &["SPOP", "str", "0"],
            &["SRANDMEMBER", "str"],
            &["SRANDMEMBER", "str", "0"],
            &["SINTER", "none", "str"],
            &["SUNION", "h"],
            &["SDIFF", "none", "h"],
            &["SSCAN", "h", "0"],
        ] {
            assert_eq!(t.run(argv), WRONGTYPE, "{argv:?}");
        }
        t.check(&[
            (
                &["SPOP", "str", "x"],
                "-ERR value is out of range, must be positive\r\n",
            ),
            (
                &["SRANDMEMBER", "str", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["GET", "str"], "$1\r\nv\r\n"),
            (&["HGET", "h", "f"], "$1\r\nv\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn expired_set_is_missing() {
        let mut t = TestDb::new();
        t.run(&["SADD", "s", "a"]);
        t.run(&["SADD", "t", "a"]);
        t.run(&["PEXPIRE", "s", "10"]);
        t.now += 10;
        t.check(&[
            (&["SINTER", "s", "t"], "*0\r\n"),
            (&["SUNION", "s", "t"], "*1\r\n$1\r\na\r\n"),
            (&["SMOVE", "s", "t", "a"], ":0\r\n"),
            (&["SADD", "s", "b"], ":1\r\n"),
            (&["SMEMBERS", "s"], "*1\r\n$1\r\nb\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn key_specs() {
        let keys = |argv: &[&str]| -> Vec<String> {
            let req = OwnedRequest::from_parts(argv.iter().copied());
            let spec = crate::lookup(argv[0].as_bytes()).unwrap();
            spec.keys(&req.args())
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect()
        };
        let created = |argv: &[&str]| -> Vec<String> {
            let req = OwnedRequest::from_parts(argv.iter().copied());
            let spec = crate::lookup(argv[0].as_bytes()).unwrap();
            spec.created_keys(&req.args())
                .into_iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect()
        };
        assert_eq!(keys(&["SINTER", "a", "b"]), ["a", "b"]);
        assert_eq!(keys(&["SDIFFSTORE", "d", "a", "b"]), ["d", "a", "b"]);
        assert_eq!(created(&["SDIFFSTORE", "d", "a", "b"]), ["d"]);
        assert_eq!(keys(&["SMOVE", "a", "b", "m"]), ["a", "b"]);
        assert_eq!(created(&["SMOVE", "a", "b", "m"]), ["b"]);
        assert_eq!(created(&["SADD", "s", "m"]), ["s"]);
        assert!(created(&["SREM", "s", "m"]).is_empty());
        // SINTERCARD: a superset of the real keys, never fewer.
        let k = keys(&["SINTERCARD", "2", "a", "b", "LIMIT", "1"]);
        assert_eq!(&k[..2], ["a", "b"]);
        assert_eq!(keys(&["SINTERCARD", "1"]), Vec::<String>::new());
        assert_eq!(created(&["HSET", "h", "f", "v"]), ["h"]);
        assert_eq!(created(&["HINCRBYFLOAT", "h", "f", "1"]), ["h"]);
        assert!(created(&["HDEL", "h", "f"]).is_empty());
    }
}
