//! Sorted-set commands over several keys or random picks: ZUNION, ZINTER, ZDIFF and their STORE
//! forms, ZINTERCARD, ZRANDMEMBER, ZMPOP. Built only on [`ZSetValue`]'s public API. Sources may be
//! plain sets, whose members count with score 1 (as in Redis).

use std::collections::HashMap;

use ferrite_protocol::args::parse_f64;
use ferrite_protocol::{Args, ErrorReply, ReplyWriter};
use ferrite_storage::{Slot, Value, ValueRef, ZSetValue};
use rand::Rng;

use crate::ctx::Ctx;
use crate::spec::flags::*;
use crate::spec::{CmdResult, CommandSpec, Creates, KEY1, NO_KEYS};
use crate::util::{as_zset, as_zset_mut};

crate::command_family!("sorted-set");

const W: u32 = WRITE | DENYOOM;

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "zunion",
        -3,
        READONLY,
        NO_KEYS,
        Creates::Nothing,
        "Returns the union of multiple sorted sets.",
        zunion,
    ),
    cmd(
        "zinter",
        -3,
        READONLY,
        NO_KEYS,
        Creates::Nothing,
        "Returns the intersect of multiple sorted sets.",
        zinter,
    ),
    cmd(
        "zdiff",
        -3,
        READONLY,
        NO_KEYS,
        Creates::Nothing,
        "Returns the difference between multiple sorted sets.",
        zdiff,
    ),
    cmd(
        "zunionstore",
        -4,
        W,
        KEY1,
        Creates::FirstKey,
        "Stores the union of multiple sorted sets in a key.",
        zunionstore,
    ),
    cmd(
        "zinterstore",
        -4,
        W,
        KEY1,
        Creates::FirstKey,
        "Stores the intersect of multiple sorted sets in a key.",
        zinterstore,
    ),
    cmd(
        "zdiffstore",
        -4,
        W,
        KEY1,
        Creates::FirstKey,
        "Stores the difference of multiple sorted sets in a key.",
        zdiffstore,
    ),
    cmd(
        "zintercard",
        -3,
        READONLY,
        NO_KEYS,
        Creates::Nothing,
        "Returns the number of members of the intersect of multiple sorted sets.",
        zintercard,
    ),
    cmd(
        "zrandmember",
        -2,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns one or more random members from a sorted set.",
        zrandmember,
    ),
    cmd(
        "zmpop",
        -4,
        WRITE,
        NO_KEYS,
        Creates::Nothing,
        "Returns the highest- or lowest-scoring members from one or more sorted sets after removing them.",
        zmpop,
    ),
];

#[derive(Clone, Copy, PartialEq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

#[derive(Clone, Copy, PartialEq)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

/// One input: its members and scores (plain sets score 1), and its weight.
struct Source {
    members: Vec<(Box<[u8]>, f64)>,
    lookup: HashMap<Box<[u8]>, f64>,
    weight: f64,
}

impl Source {
    fn score(&self, m: &[u8]) -> Option<f64> {
        self.lookup.get(m).copied()
    }
}

/// Reads a source key: a sorted set, a set, or nothing.
fn read_source(ctx: &mut Ctx<'_, '_>, key: &[u8], index: bool) -> Result<Source, ErrorReply> {
    let members: Vec<(Box<[u8]>, f64)> = match ctx.db.get(key, ctx.now).map(|e| e.value()) {
        None => Vec::new(),
        Some(ValueRef::ZSet(z)) => z.iter().map(|(m, s)| (Box::from(m), s)).collect(),
        Some(ValueRef::Set(s)) => s.iter().map(|m| (Box::from(m), 1.0)).collect(),
        Some(_) => return Err(ErrorReply::wrong_type()),
    };
    let lookup = if index {
        members.iter().map(|(m, s)| (m.clone(), *s)).collect()
    } else {
        HashMap::new()
    };
    Ok(Source {
        members,
        lookup,
        weight: 1.0,
    })
}

fn aggregate(acc: &mut f64, v: f64, how: Aggregate) {
    match how {
        Aggregate::Sum => {
            *acc += v;
            // inf + -inf: Redis stores 0 rather than NaN.
            if acc.is_nan() {
                *acc = 0.0;
            }
        }
        Aggregate::Min => *acc = acc.min(v),
        Aggregate::Max => *acc = acc.max(v),
    }
}

/// What a ZUNION/ZINTER/ZDIFF/ZINTERCARD request produced.
enum Outcome {
    Set(ZSetValue),
    Cardinality(u64),
}

/// Redis's zunionInterDiffGenericCommand: `numkeys` at `numkeys_at`, then keys, then options.
fn set_operation(
    ctx: &mut Ctx<'_, '_>,
    args: &Args<'_>,
    numkeys_at: usize,
    op: SetOp,
    store: bool,
    cardinality_only: bool,
) -> Result<(Outcome, bool), ErrorReply> {
    let numkeys = args.int(numkeys_at)?;
    if numkeys < 1 {
        return Err(ErrorReply::err(format!(
            "at least 1 input key is needed for '{}' command",
            args.text(0).to_ascii_lowercase()
        )));
    }
    let first = numkeys_at + 1;
    if numkeys as u64 > (args.len() - first) as u64 {
        return Err(ErrorReply::syntax());
    }
    let numkeys = numkeys as usize;
    let mut sources = Vec::with_capacity(numkeys);
    for key in args.slice(first, first + numkeys).iter() {
        sources.push(read_source(ctx, key, op != SetOp::Union)?);
    }
    let (mut how, mut withscores, mut limit) = (Aggregate::Sum, false, 0u64);
    let mut j = first + numkeys;
    while j < args.len() {
        let remaining = args.len() - j;
        if op != SetOp::Diff && !cardinality_only && remaining > numkeys && args.is(j, "WEIGHTS") {
            for (i, s) in sources.iter_mut().enumerate() {
                s.weight = parse_f64(args.get(j + 1 + i))
                    .ok_or_else(|| ErrorReply::err("weight value is not a float"))?;
            }
            j += 1 + numkeys;
        } else if op != SetOp::Diff
            && !cardinality_only
            && remaining >= 2
            && args.is(j, "AGGREGATE")
        {
            how = match args.get(j + 1).to_ascii_uppercase().as_slice() {
                b"SUM" => Aggregate::Sum,
                b"MIN" => Aggregate::Min,
                b"MAX" => Aggregate::Max,
                _ => return Err(ErrorReply::syntax()),
            };
            j += 2;
        } else if !store && !cardinality_only && args.is(j, "WITHSCORES") {
            withscores = true;
            j += 1;
        } else if cardinality_only && remaining >= 2 && args.is(j, "LIMIT") {
            let n = args
                .int(j + 1)
                .map_err(|_| ErrorReply::err("LIMIT can't be negative"))?;
            if n < 0 {
                return Err(ErrorReply::err("LIMIT can't be negative"));
            }
            limit = n as u64;
            j += 2;
        } else {
            return Err(ErrorReply::syntax());
        }
    }
    let weighted = |s: &Source, v: f64| {
        let x = s.weight * v;
        if x.is_nan() { 0.0 } else { x }
    };
    let mut out = ZSetValue::default();
    match op {
        SetOp::Inter => {
            // Walk the smallest input, look the members up in the others.
            sources.sort_by_key(|s| s.members.len());
            let mut count = 0u64;
            if let Some((smallest, others)) = sources.split_first() {
                for (m, v) in &smallest.members {
                    let mut score = weighted(smallest, *v);
                    let mut in_all = true;
                    for o in others {
                        match o.score(m) {
                            Some(v) => aggregate(&mut score, weighted(o, v), how),
                            None => {
                                in_all = false;
                                break;
                            }
                        }
                    }
                    if !in_all {
                        continue;
                    }
                    if cardinality_only {
                        count += 1;
                        if limit > 0 && count >= limit {
                            break;
                        }
                    } else {
                        out.insert(m, score);
                    }
                }
            }
            if cardinality_only {
                return Ok((Outcome::Cardinality(count), false));
            }
        }
        SetOp::Union => {
            let mut acc: HashMap<&[u8], f64> = HashMap::new();
            for s in &sources {
                for (m, v) in &s.members {
                    let score = weighted(s, *v);
                    acc.entry(m)
                        .and_modify(|a| aggregate(a, score, how))
                        .or_insert(score);
                }
            }
            for (m, score) in acc {
                out.insert(m, score);
            }
        }
        SetOp::Diff => {
            if let Some((first, others)) = sources.split_first() {
                for (m, v) in &first.members {
                    if others.iter().all(|o| o.score(m).is_none()) {
                        out.insert(m, *v);
                    }
                }
            }
        }
    }
    Ok((Outcome::Set(out), withscores))
}

/// Members with scores: flat in RESP2, `[member, score]` pairs in RESP3.
fn reply_scored(w: &mut ReplyWriter<'_>, items: &[(&[u8], f64)], withscores: bool) {
    if withscores && !w.is_resp3() {
        w.array(items.len() * 2);
    } else {
        w.array(items.len());
    }
    for (m, s) in items {
        if withscores && w.is_resp3() {
            w.array(2);
        }
        w.bulk(m);
        if withscores {
            w.double(*s);
        }
    }
}

fn read_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, op: SetOp) -> CmdResult {
    let (outcome, withscores) = set_operation(ctx, &args, 1, op, false, false)?;
    if let Outcome::Set(z) = outcome {
        let items: Vec<(&[u8], f64)> = z.iter().collect();
        reply_scored(ctx.w, &items, withscores);
    }
    Ok(())
}

fn store_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, op: SetOp) -> CmdResult {
    let (outcome, _) = set_operation(ctx, &args, 2, op, true, false)?;
    let Outcome::Set(z) = outcome else {
        return Ok(());
    };
    let n = z.len();
    store_zset(ctx, args.get(1), z);
    ctx.w.int(n as i64);
    Ok(())
}

/// Replaces `dst` with `z` (deleting it when `z` is empty), dropping any TTL.
pub(crate) fn store_zset(ctx: &mut Ctx<'_, '_>, dst: &[u8], z: ZSetValue) {
    let now = ctx.now;
    if z.is_empty() {
        if let Some(old) = ctx.db.remove(dst, now) {
            ctx.garbage.defer(old.value().elements(), old);
        }
        return;
    }
    let value = Value::ZSet(z);
    match ctx.db.entry(dst, now) {
        Slot::Occupied(mut o) => {
            let old = o.swap_value(value);
            o.get_mut().set_expire_at(None);
            ctx.garbage.defer(old.elements(), old);
        }
        Slot::Vacant(v) => v.insert(value, None),
    }
}

fn zunion(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_generic(ctx, args, SetOp::Union)
}

fn zinter(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_generic(ctx, args, SetOp::Inter)
}

fn zdiff(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_generic(ctx, args, SetOp::Diff)
}

fn zunionstore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    store_generic(ctx, args, SetOp::Union)
}

fn zinterstore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    store_generic(ctx, args, SetOp::Inter)
}

fn zdiffstore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    store_generic(ctx, args, SetOp::Diff)
}

fn zintercard(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if let (Outcome::Cardinality(n), _) = set_operation(ctx, &args, 1, SetOp::Inter, false, true)? {
        ctx.w.int(n as i64);
    }
    Ok(())
}

fn zrandmember(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len() > 4 || (args.len() == 4 && !args.is(3, "WITHSCORES")) {
        return Err(ErrorReply::syntax());
    }
    let withscores = args.len() == 4;
    let count = if args.len() >= 3 {
        let n = crate::hashes::parse_random_count(&args, 2)?;
        // Redis refuses counts whose reply size would overflow.
        if withscores && n < -(i64::MAX / 2) {
            return Err(ErrorReply::err("value is out of range"));
        }
        crate::hashes::check_repeats(n)?;
        Some(n)
    } else {
        None
    };
    let now = ctx.now;
    let z = match ctx.db.get(args.get(1), now) {
        Some(e) => Some(as_zset(e)?),
        None => None,
    };
    let Some(count) = count else {
        match z {
            Some(z) => {
                let r = ctx.rng.random_range(0..z.len());
                let m = z.get_by_rank(r).map(|(m, _)| m.to_vec());
                ctx.w.opt_bulk(m.as_deref());
            }
            None => ctx.w.null(),
        }
        return Ok(());
    };
    let Some(z) = z else {
        ctx.w.array(0);
        return Ok(());
    };
    let len = z.len();
    if count < 0 {
        // Streamed rather than collected: repeats may far outnumber the members.
        let n = count.unsigned_abs() as usize;
        let w = &mut *ctx.w;
        w.array(if withscores && !w.is_resp3() {
            2 * n
        } else {
            n
        });
        for _ in 0..n {
            // The reply outgrew the connection's output budget: it will not be sent.
            if w.is_full() {
                break;
            }
            if let Some((m, s)) = z.get_by_rank(ctx.rng.random_range(0..len)) {
                if withscores && w.is_resp3() {
                    w.array(2);
                }
                w.bulk(m);
                if withscores {
                    w.double(s);
                }
            }
        }
        return Ok(());
    }
    let picks: Vec<usize> = if count as usize >= len {
        (0..len).collect()
    } else {
        rand::seq::index::sample(&mut *ctx.rng, len, count as usize).into_vec()
    };
    let items: Vec<(&[u8], f64)> = picks.into_iter().filter_map(|r| z.get_by_rank(r)).collect();
    reply_scored(ctx.w, &items, withscores);
    Ok(())
}

fn parse_count_option(args: &Args<'_>, from: usize) -> Result<usize, ErrorReply> {
    let mut count: Option<usize> = None;
    let mut j = from;
    while j < args.len() {
        if count.is_none() && args.is(j, "COUNT") && j + 1 < args.len() {
            let n = args
                .int(j + 1)
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| ErrorReply::err("count should be greater than 0"))?;
            count = Some(usize::try_from(n).unwrap_or(usize::MAX));
            j += 2;
        } else {
            return Err(ErrorReply::syntax());
        }
    }
    Ok(count.unwrap_or(1))
}

/// Parses `numkeys key [key ...] <where> [COUNT n]` (ZMPOP, LMPOP): the keys, the word at the
/// `where` position and the count.
pub(crate) fn parse_mpop<'a>(
    args: &Args<'a>,
    numkeys_at: usize,
) -> Result<(Args<'a>, &'a [u8], usize), ErrorReply> {
    let numkeys = args
        .int(numkeys_at)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| ErrorReply::err("numkeys should be greater than 0"))?;
    let where_at = (numkeys_at as u64)
        .saturating_add(numkeys as u64)
        .saturating_add(1);
    if where_at >= args.len() as u64 {
        return Err(ErrorReply::syntax());
    }
    let where_at = where_at as usize;
    let count = parse_count_option(args, where_at + 1)?;
    Ok((
        args.slice(numkeys_at + 1, where_at),
        args.get(where_at),
        count,
    ))
}

fn zmpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (keys, word, count) = parse_mpop(&args, 1)?;
    let max = if word.eq_ignore_ascii_case(b"MAX") {
        true
    } else if word.eq_ignore_ascii_case(b"MIN") {
        false
    } else {
        return Err(ErrorReply::syntax());
    };
    let now = ctx.now;
    // The first existing key is the candidate; its type decides (later keys are not looked at).
    for key in keys.iter() {
        let Slot::Occupied(mut o) = ctx.db.entry(key, now) else {
            continue;
        };
        let z = as_zset_mut(o.get_mut())?;
        let w = &mut *ctx.w;
        w.array(2);
        w.bulk(key);
        crate::zsets::pop_into_reply(w, z, max, count, true);
        return Ok(());
    }
    ctx.w.null_array();
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testing::TestDb;
    use ferrite_protocol::Protocol;

    #[test]
    fn union_inter_diff() {
        let mut t = TestDb::new();
        t.run(&["ZADD", "a", "1", "x", "2", "y", "3", "z"]);
        t.run(&["ZADD", "b", "10", "y", "20", "z", "30", "w"]);
        t.run(&["SADD", "s", "x", "w"]);
        t.check(&[
            (
                &["ZUNION", "2", "a", "b", "WITHSCORES"],
                "*8\r\n$1\r\nx\r\n$1\r\n1\r\n$1\r\ny\r\n$2\r\n12\r\n$1\r\nz\r\n$2\r\n23\r\n$1\r\nw\r\n$2\r\n30\r\n",
            ),
            (
                &["ZINTER", "2", "a", "b", "WEIGHTS", "2", "1", "AGGREGATE", "MAX"],
                "*2\r\n$1\r\ny\r\n$1\r\nz\r\n",
            ),
            (
                &["ZINTER", "2", "a", "b", "AGGREGATE", "MIN", "WITHSCORES"],
                "*4\r\n$1\r\ny\r\n$1\r\n2\r\n$1\r\nz\r\n$1\r\n3\r\n",
            ),
            (&["ZDIFF", "2", "a", "b"], "*1\r\n$1\r\nx\r\n"),
            (&["ZINTER", "2", "a", "s", "WITHSCORES"], "*2\r\n$1\r\nx\r\n$1\r\n2\r\n"),
            (&["ZUNIONSTORE", "d", "3", "a", "b", "s"], ":4\r\n"),
            (&["ZSCORE", "d", "w"], "$2\r\n31\r\n"),
            (&["ZINTERSTORE", "d", "2", "a", "nothing"], ":0\r\n"),
            (&["EXISTS", "d"], ":0\r\n"),
            (&["ZDIFFSTORE", "d", "1", "a"], ":3\r\n"),
            (&["ZINTERCARD", "2", "a", "b"], ":2\r\n"),
            (&["ZINTERCARD", "2", "a", "b", "LIMIT", "1"], ":1\r\n"),
            (&["ZINTERCARD", "2", "a", "b", "LIMIT", "-1"], "-ERR LIMIT can't be negative\r\n"),
            (
                &["ZUNION", "0", "a"],
                "-ERR at least 1 input key is needed for 'zunion' command\r\n",
            ),
            (&["ZUNION", "3", "a", "b"], "-ERR syntax error\r\n"),
            (&["ZDIFF", "2", "a", "b", "WEIGHTS", "1", "2"], "-ERR syntax error\r\n"),
            (&["ZUNIONSTORE", "d", "2", "a", "b", "WITHSCORES"], "-ERR syntax error\r\n"),
            (
                &["ZUNION", "2", "a", "b", "WEIGHTS", "1", "x"],
                "-ERR weight value is not a float\r\n",
            ),
            (&["SET", "str", "v"], "+OK\r\n"),
            (
                &["ZUNION", "2", "a", "str"],
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            ),
        ]);
        t.proto = Protocol::Resp3;
        t.check(&[(
            &["ZINTER", "2", "a", "b", "WITHSCORES"],
            "*2\r\n*2\r\n$1\r\ny\r\n,12\r\n*2\r\n$1\r\nz\r\n,23\r\n",
        )]);
        t.assert_digest_consistent();
    }

    #[test]
    fn sum_of_opposite_infinities_is_zero() {
        let mut t = TestDb::new();
        t.run(&["ZADD", "a", "inf", "x"]);
        t.run(&["ZADD", "b", "-inf", "x"]);
        t.check(&[(
            &["ZUNION", "2", "a", "b", "WITHSCORES"],
            "*2\r\n$1\r\nx\r\n$1\r\n0\r\n",
        )]);
    }

    #[test]
    fn randmember_and_mpop() {
        let mut t = TestDb::new();
        t.run(&["ZADD", "z", "1", "a", "2", "b", "3", "c"]);
        assert!(t.run(&["ZRANDMEMBER", "z"]).starts_with("$1\r\n"));
        assert_eq!(t.run(&["ZRANDMEMBER", "z", "0"]), "*0\r\n");
        assert_eq!(t.run(&["ZRANDMEMBER", "z", "5"]).lines().next(), Some("*3"));
        assert_eq!(
            t.run(&["ZRANDMEMBER", "z", "-5"]).lines().next(),
            Some("*5")
        );
        assert_eq!(
            t.run(&["ZRANDMEMBER", "z", "-2", "WITHSCORES"])
                .lines()
                .next(),
            Some("*4")
        );
        let two = t.run(&["ZRANDMEMBER", "z", "2"]);
        let lines: Vec<_> = two.lines().collect();
        assert_ne!(lines[2], lines[4], "distinct members");
        t.check(&[
            (&["ZRANDMEMBER", "none"], "$-1\r\n"),
            (&["ZRANDMEMBER", "none", "3"], "*0\r\n"),
            (&["ZRANDMEMBER", "z", "1", "X"], "-ERR syntax error\r\n"),
            (
                &["ZRANDMEMBER", "z", "-9223372036854775807", "WITHSCORES"],
                "-ERR value is out of range\r\n",
            ),
            (
                &["ZRANDMEMBER", "z", "-9223372036854775808"],
                "-ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807\r\n",
            ),
            (
                &["ZMPOP", "2", "none", "z", "MIN", "COUNT", "2"],
                "*2\r\n$1\r\nz\r\n*2\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$1\r\nb\r\n$1\r\n2\r\n",
            ),
            (
                &["ZMPOP", "1", "z", "MAX"],
                "*2\r\n$1\r\nz\r\n*1\r\n*2\r\n$1\r\nc\r\n$1\r\n3\r\n",
            ),
            (&["ZMPOP", "1", "z", "MAX"], "*-1\r\n"),
            (&["ZMPOP", "0", "z", "MAX"], "-ERR numkeys should be greater than 0\r\n"),
            (&["ZMPOP", "2", "z", "MAX"], "-ERR syntax error\r\n"),
            (&["ZMPOP", "1", "z", "MID"], "-ERR syntax error\r\n"),
            (
                &["ZMPOP", "1", "z", "MIN", "COUNT", "0"],
                "-ERR count should be greater than 0\r\n",
            ),
            (&["ZMPOP", "1", "z", "MIN", "COUNT", "1", "COUNT", "2"], "-ERR syntax error\r\n"),
        ]);
        t.assert_digest_consistent();
    }
}
