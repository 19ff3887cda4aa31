//! Sorted set commands.

use std::cmp::Ordering;
use std::ops::Bound;

use ferrite_protocol::args::parse_f64;
use ferrite_protocol::number::{format_double, format_g17};
use ferrite_protocol::{Args, ErrorReply, ReplyWriter};
use ferrite_storage::{Encoding, Slot, Value, ZSetRef, ZSetValue};

use crate::ctx::Ctx;
use crate::spec::flags::*;
use crate::spec::{CmdResult, CommandSpec, Creates, KEY1, KEYS12};
use crate::util::{as_zset, as_zset_mut, index_range, parse_cursor, parse_scan_options};

crate::command_family!("sorted-set");

const W: u32 = WRITE | DENYOOM;

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "zadd",
        -4,
        W | FAST,
        KEY1,
        Creates::FirstKey,
        "Adds members to a sorted set, or updates their scores.",
        zadd,
    ),
    cmd(
        "zincrby",
        4,
        W | FAST,
        KEY1,
        Creates::FirstKey,
        "Increments the score of a member of a sorted set.",
        zincrby,
    ),
    cmd(
        "zrem",
        -3,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Removes members from a sorted set.",
        zrem,
    ),
    cmd(
        "zscore",
        3,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the score of a member of a sorted set.",
        zscore,
    ),
    cmd(
        "zmscore",
        -3,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the scores of several members of a sorted set.",
        zmscore,
    ),
    cmd(
        "zcard",
        2,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the number of members of a sorted set.",
        zcard,
    ),
    cmd(
        "zcount",
        4,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Counts the members of a sorted set within a score range.",
        zcount,
    ),
    cmd(
        "zlexcount",
        4,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Counts the members of a sorted set within a lexicographical range.",
        zlexcount,
    ),
    cmd(
        "zrange",
        -4,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns members of a sorted set by index, score or lexicographical range.",
        zrange,
    ),
    cmd(
        "zrangestore",
        -5,
        W,
        KEYS12,
        Creates::FirstKey,
        "Stores a range of a sorted set in another key.",
        zrangestore,
    ),
    cmd(
        "zrangebyscore",
        -4,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns members of a sorted set within a score range.",
        zrangebyscore,
    ),
    cmd(
        "zrevrange",
        -4,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns members of a sorted set by index, highest score first.",
        zrevrange,
    ),
    cmd(
        "zrevrangebyscore",
        -4,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns members of a sorted set within a score range, highest score first.",
        zrevrangebyscore,
    ),
    cmd(
        "zrangebylex",
        -4,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns members of a sorted set within a lexicographical range.",
        zrangebylex,
    ),
    cmd(
        "zrevrangebylex",
        -4,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns members of a sorted set within a lexicographical range, in reverse order.",
        zrevrangebylex,
    ),
    cmd(
        "zrank",
        -3,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the index of a member in a sorted set ordered by ascending score.",
        zrank,
    ),
    cmd(
        "zrevrank",
        -3,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the index of a member in a sorted set ordered by descending score.",
        zrevrank,
    ),
    cmd(
        "zremrangebyrank",
        4,
        WRITE,
        KEY1,
        Creates::Nothing,
        "Removes the members of a sorted set within a range of indexes.",
        zremrangebyrank,
    ),
    cmd(
        "zremrangebyscore",
        4,
        WRITE,
        KEY1,
        Creates::Nothing,
        "Removes the members of a sorted set within a score range.",
        zremrangebyscore,
    ),
    cmd(
        "zremrangebylex",
        4,
        WRITE,
        KEY1,
        Creates::Nothing,
        "Removes the members of a sorted set within a lexicographical range.",
        zremrangebylex,
    ),
    cmd(
        "zpopmin",
        -2,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Removes and returns the members with the lowest scores.",
        zpopmin,
    ),
    cmd(
        "zpopmax",
        -2,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Removes and returns the members with the highest scores.",
        zpopmax,
    ),
    cmd(
        "zscan",
        -3,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Iterates over the members and scores of a sorted set.",
        zscan,
    ),
];

// ---------------------------------------------------------------------------------------------
// Argument parsing

fn not_float_range() -> ErrorReply {
    ErrorReply::err("min or max is not a float")
}

fn not_lex_range() -> ErrorReply {
    ErrorReply::err("min or max not valid string range item")
}

fn nan_score() -> ErrorReply {
    ErrorReply::err("resulting score is not a number (NaN)")
}

/// A score argument of ZADD/ZINCRBY. Redis also refuses decimal text that overflows to infinity
/// or underflows to zero (strtod's ERANGE), which a plain parse would silently accept.
fn parse_score(s: &[u8]) -> Result<f64, ErrorReply> {
    let v = parse_f64(s).ok_or_else(ErrorReply::not_float)?;
    let mantissa = s.split(|&c| c == b'e' || c == b'E').next().unwrap_or(b"");
    let spelled_inf = s.iter().any(|c| c.eq_ignore_ascii_case(&b'i'));
    let overflowed = v.is_infinite() && !spelled_inf;
    let underflowed = v == 0.0 && mantissa.iter().any(|c| (b'1'..=b'9').contains(c));
    if overflowed || underflowed {
        return Err(ErrorReply::not_float());
    }
    Ok(v)
}

/// A bound of a score range: Redis runs `strtod` over it without range checks, so leading spaces
/// are allowed and an empty string reads as 0.
fn parse_score_bound(arg: &[u8]) -> Option<Bound<f64>> {
    let (text, exclusive) = match arg.strip_prefix(b"(") {
        Some(rest) => (rest, true),
        None => (arg, false),
    };
    let v = if text.is_empty() {
        0.0
    } else {
        let t = text.trim_ascii_start();
        if t.is_empty() {
            return None;
        }
        parse_f64(t)?
    };
    Some(if exclusive {
        Bound::Excluded(v)
    } else {
        Bound::Included(v)
    })
}

fn parse_score_range(min: &[u8], max: &[u8]) -> Result<(Bound<f64>, Bound<f64>), ErrorReply> {
    match (parse_score_bound(min), parse_score_bound(max)) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(not_float_range()),
    }
}

/// A bound of a lexicographical range: `-`, `+`, `[incl` or `(excl`.
#[derive(Debug, Clone, Copy)]
enum Lex<'a> {
    Min,
    Max,
    Incl(&'a [u8]),
    Excl(&'a [u8]),
}

impl Lex<'_> {
    fn parse(arg: &[u8]) -> Option<Lex<'_>> {
        match arg.split_first() {
            Some((b'-', [])) => Some(Lex::Min),
            Some((b'+', [])) => Some(Lex::Max),
            Some((b'[', rest)) => Some(Lex::Incl(rest)),
            Some((b'(', rest)) => Some(Lex::Excl(rest)),
            _ => None,
        }
    }

    fn exclusive(self) -> bool {
        !matches!(self, Lex::Incl(_))
    }

    /// Orders the bound values alone (`-` below every string, `+` above).
    fn cmp_value(self, other: Lex<'_>) -> Ordering {
        let rank = |l: Lex<'_>| match l {
            Lex::Min => 0,
            Lex::Incl(_) | Lex::Excl(_) => 1,
            Lex::Max => 2,
        };
        match (self, other) {
            (Lex::Incl(a) | Lex::Excl(a), Lex::Incl(b) | Lex::Excl(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }

    fn below(self, m: &[u8]) -> bool {
        match self {
            Lex::Min => true,
            Lex::Max => false,
            Lex::Incl(b) => m >= b,
            Lex::Excl(b) => m > b,
        }
    }

    fn above(self, m: &[u8]) -> bool {
        match self {
            Lex::Min => false,
            Lex::Max => true,
            Lex::Incl(b) => m <= b,
            Lex::Excl(b) => m < b,
        }
    }
}

fn parse_lex_range<'a>(min: &'a [u8], max: &'a [u8]) -> Result<(Lex<'a>, Lex<'a>), ErrorReply> {
    match (Lex::parse(min), Lex::parse(max)) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(not_lex_range()),
    }
}

// ---------------------------------------------------------------------------------------------
// Range selection

/// Rank bounds `[start, end)` of the members within a lexicographical range, walking in the
/// given direction. Lex ranges assume all scores are equal; then this is exactly the members
/// inside the range. With mixed scores Redis's result depends on the encoding, and so does this
/// one's, the same way: a packed set (listpack) is walked from the near end (the first member
/// inside the near bound up to the first one past the far bound), a skiplist is searched for
/// both bounds by descents, O(log n).
fn lex_ranks(z: ZSetRef<'_>, min: Lex<'_>, max: Lex<'_>, rev: bool) -> (usize, usize) {
    let order = min.cmp_value(max);
    let empty = order == Ordering::Greater
        || (order == Ordering::Equal && (min.exclusive() || max.exclusive()));
    let ends_fit = match (z.iter().next(), z.iter().next_back()) {
        (Some((first, _)), Some((last, _))) => min.below(last) && max.above(first),
        _ => false,
    };
    if empty || !ends_fit {
        return (0, 0);
    }
    if z.encoding() == Encoding::Listpack {
        let items: Vec<&[u8]> = z.iter().map(|(m, _)| m).collect();
        if rev {
            let Some(last) = items.iter().rposition(|m| max.above(m)) else {
                return (0, 0);
            };
            let inside = items[..=last]
                .iter()
                .rev()
                .take_while(|m| min.below(m))
                .count();
            (last + 1 - inside, last + 1)
        } else {
            let start = items
                .iter()
                .position(|m| min.below(m))
                .unwrap_or(items.len());
            let inside = items[start..].iter().take_while(|m| max.above(m)).count();
            (start, start + inside)
        }
    } else {
        let start = z.count_before(|_, m| !min.below(m));
        let end = z.count_before(|_, m| max.above(m));
        (start, end.max(start))
    }
}

/// `count` members from position `skip` (0-based, in the given direction). O(log n + count).
fn by_rank(z: ZSetRef<'_>, skip: usize, count: usize, rev: bool) -> Vec<(&[u8], f64)> {
    let len = z.len();
    let count = count.min(len.saturating_sub(skip));
    if rev {
        z.range_by_rank(len - skip - count, len - skip)
            .rev()
            .collect()
    } else {
        z.range_by_rank(skip, skip + count).collect()
    }
}

/// Applies `LIMIT offset count` to the members with ranks `[start, end)`, walking in the given
/// direction: a negative offset selects nothing and a negative count means all, as in Redis.
fn paginate(
    z: ZSetRef<'_>,
    (start, end): (usize, usize),
    rev: bool,
    offset: i64,
    limit: i64,
) -> Vec<(&[u8], f64)> {
    if offset < 0 {
        return Vec::new();
    }
    let n = end - start;
    let skip = usize::try_from(offset).unwrap_or(usize::MAX).min(n);
    let take = usize::try_from(limit).unwrap_or(usize::MAX).min(n - skip);
    if rev {
        z.range_by_rank(end - skip - take, end - skip)
            .rev()
            .collect()
    } else {
        z.range_by_rank(start + skip, start + skip + take).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeBy {
    Rank,
    Score,
    Lex,
}

#[derive(Debug, Clone, Copy)]
enum RangeSpec<'a> {
    Rank(i64, i64),
    Score(Bound<f64>, Bound<f64>),
    Lex(Lex<'a>, Lex<'a>),
}

/// A parsed ZRANGE-family request.
#[derive(Debug, Clone, Copy)]
struct RangeQuery<'a> {
    spec: RangeSpec<'a>,
    rev: bool,
    withscores: bool,
    offset: i64,
    limit: i64,
}

impl RangeQuery<'_> {
    /// Parses `<key> <min> <max> [options]` starting at `key_at`. `by` and `rev` are fixed by the
    /// legacy commands and left open (None) by ZRANGE and ZRANGESTORE, which take BYSCORE, BYLEX and
    /// REV as options. `store` forbids WITHSCORES (ZRANGESTORE).
    fn parse<'a>(
        args: &Args<'a>,
        key_at: usize,
        store: bool,
        by: Option<RangeBy>,
        rev: Option<bool>,
    ) -> Result<RangeQuery<'a>, ErrorReply> {
        let (mut by_opt, mut rev_opt) = (by, rev);
        let (mut withscores, mut offset, mut limit) = (false, 0i64, -1i64);
        let mut i = key_at + 3;
        while i < args.len() {
            let left = args.len() - i - 1;
            if !store && args.is(i, "WITHSCORES") {
                withscores = true;
            } else if args.is(i, "LIMIT") && left >= 2 {
                offset = args.int(i + 1)?;
                limit = args.int(i + 2)?;
                i += 2;
            } else if rev_opt.is_none() && args.is(i, "REV") {
                rev_opt = Some(true);
            } else if by_opt.is_none() && args.is(i, "BYLEX") {
                by_opt = Some(RangeBy::Lex);
            } else if by_opt.is_none() && args.is(i, "BYSCORE") {
                by_opt = Some(RangeBy::Score);
            } else {
                return Err(ErrorReply::syntax());
            }
            i += 1;
        }
        let by = by_opt.unwrap_or(RangeBy::Rank);
        let rev = rev_opt.unwrap_or(false);
        // Redis only notices LIMIT when its count is not the default -1.
        if limit != -1 && by == RangeBy::Rank {
            return Err(ErrorReply::err(
                "syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
            ));
        }
        if withscores && by == RangeBy::Lex {
            return Err(ErrorReply::err(
                "syntax error, WITHSCORES not supported in combination with BYLEX",
            ));
        }
        let (mut lo, mut hi) = (args.get(key_at + 1), args.get(key_at + 2));
        if rev && by != RangeBy::Rank {
            // Reversed score and lex ranges are written max first.
            std::mem::swap(&mut lo, &mut hi);
        }
        let spec = match by {
            RangeBy::Rank => RangeSpec::Rank(args.int(key_at + 1)?, args.int(key_at + 2)?),
            RangeBy::Score => {
                let (min, max) = parse_score_range(lo, hi)?;
                RangeSpec::Score(min, max)
            }
            RangeBy::Lex => {
                let (min, max) = parse_lex_range(lo, hi)?;
                RangeSpec::Lex(min, max)
            }
        };
        Ok(RangeQuery {
            spec,
            rev,
            withscores,
            offset,
            limit,
        })
    }

    fn select<'s>(&self, z: ZSetRef<'s>) -> Vec<(&'s [u8], f64)>
    where
        Self: 's,
    {
        match self.spec {
            RangeSpec::Rank(start, end) => match index_range(start, end, z.len()) {
                Some((s, e)) => by_rank(z, s, e - s + 1, self.rev),
                None => Vec::new(),
            },
            RangeSpec::Score(min, max) => paginate(
                z,
                z.score_rank_range(min, max),
                self.rev,
                self.offset,
                self.limit,
            ),
            RangeSpec::Lex(min, max) => paginate(
                z,
                lex_ranks(z, min, max, self.rev),
                self.rev,
                self.offset,
                self.limit,
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replies

/// Members, optionally with scores: flat in RESP2, `[member, score]` pairs in RESP3.
fn reply_members(w: &mut ReplyWriter<'_>, items: &[(&[u8], f64)], withscores: bool) {
    if !withscores {
        w.array(items.len());
        for (m, _) in items {
            w.bulk(m);
        }
    } else if w.is_resp3() {
        w.array(items.len());
        for (m, s) in items {
            w.array(2);
            w.bulk(m);
            w.double(*s);
        }
    } else {
        w.array(items.len() * 2);
        for (m, s) in items {
            w.bulk(m);
            w.double(*s);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ZADD / ZINCRBY

#[derive(Debug, Clone, Copy, Default)]
struct AddFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    incr: bool,
}

#[derive(Debug, Default)]
struct AddOutcome {
    added: i64,
    updated: i64,
    processed: i64,
    /// The score of the last processed member (the INCR reply).
    score: f64,
}

/// Applies one score-member pair under the flags (Redis's zsetAdd).
fn add_one(
    z: &mut ZSetValue,
    score: f64,
    m: &[u8],
    f: AddFlags,
    out: &mut AddOutcome,
) -> CmdResult {
    match z.score(m) {
        Some(cur) => {
            if f.nx {
                return Ok(());
            }
            let mut new = score;
            if f.incr {
                new += cur;
                if new.is_nan() {
                    return Err(nan_score());
                }
            }
            if (f.lt && new >= cur) || (f.gt && new <= cur) {
                return Ok(());
            }
            // Compared as numbers, so -0 over 0 is no change (as in Redis).
            if new != cur {
                z.insert(m, new);
                out.updated += 1;
            }
            out.processed += 1;
            out.score = new;
        }
        None if !f.xx => {
            z.insert(m, score);
            out.added += 1;
            out.processed += 1;
            out.score = score;
        }
        None => {}
    }
    Ok(())
}

/// ZADD and ZINCRBY (which Redis runs as ZADD with INCR forced, options included).
fn zadd_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, force_incr: bool) -> CmdResult {
    let mut f = AddFlags {
        incr: force_incr,
        ..AddFlags::default()
    };
    let mut ch = false;
    let mut i = 2;
    while i < args.len() {
        match args.get(i).to_ascii_uppercase().as_slice() {
            b"NX" => f.nx = true,
            b"XX" => f.xx = true,
            b"CH" => ch = true,
            b"INCR" => f.incr = true,
            b"GT" => f.gt = true,
            b"LT" => f.lt = true,
            _ => break,
        }
        i += 1;
    }
    let rest = args.len() - i;
    if rest == 0 || !rest.is_multiple_of(2) {
        return Err(ErrorReply::syntax());
    }
    if f.nx && f.xx {
        return Err(ErrorReply::err(
            "XX and NX options at the same time are not compatible",
        ));
    }
    if [f.gt, f.lt, f.nx].iter().filter(|&&b| b).count() > 1 {
        return Err(ErrorReply::err(
            "GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if f.incr && rest > 2 {
        return Err(ErrorReply::err(
            "INCR option supports a single increment-element pair",
        ));
    }
    let pairs = (i..args.len())
        .step_by(2)
        .map(|j| Ok((parse_score(args.get(j))?, args.get(j + 1))))
        .collect::<Result<Vec<_>, ErrorReply>>()?;

    let mut out = AddOutcome::default();
    match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => {
            let z = as_zset_mut(o.get_mut())?;
            for &(score, m) in &pairs {
                add_one(z, score, m, f, &mut out)?;
            }
        }
        Slot::Vacant(v) => {
            if !f.xx {
                let mut z = ZSetValue::default();
                for &(score, m) in &pairs {
                    add_one(&mut z, score, m, f, &mut out)?;
                }
                v.insert(Value::ZSet(z), None);
            }
        }
    }
    if f.incr {
        if out.processed > 0 {
            ctx.w.double(out.score);
        } else {
            ctx.w.null();
        }
    } else {
        ctx.w.int(out.added + if ch { out.updated } else { 0 });
    }
    Ok(())
}

fn zadd(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    zadd_generic(ctx, args, false)
}

fn zincrby(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    zadd_generic(ctx, args, true)
}

// ---------------------------------------------------------------------------------------------
// Simple reads and removal

fn zrem(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let n = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => {
            let z = as_zset_mut(o.get_mut())?;
            args.tail(2)
                .iter()
                .filter(|m| z.remove(m).is_some())
                .count()
        }
        Slot::Vacant(_) => 0,
    };
    ctx.w.int(n as i64);
    Ok(())
}

fn zscore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let score = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => as_zset(e)?.score(args.get(2)),
        None => None,
    };
    match score {
        Some(s) => ctx.w.double(s),
        None => ctx.w.null(),
    }
    Ok(())
}

fn zmscore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let z = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => Some(as_zset(e)?),
        None => None,
    };
    let members = args.tail(2);
    ctx.w.array(members.len());
    for m in members.iter() {
        match z.and_then(|z| z.score(m)) {
            Some(s) => ctx.w.double(s),
            None => ctx.w.null(),
        }
    }
    Ok(())
}

fn zcard(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let n = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => as_zset(e)?.len(),
        None => 0,
    };
    ctx.w.int(n as i64);
    Ok(())
}

fn zcount(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (min, max) = parse_score_range(args.get(2), args.get(3))?;
    let n = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => as_zset(e)?.range_by_score(min, max).len(),
        None => 0,
    };
    ctx.w.int(n as i64);
    Ok(())
}

fn zlexcount(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (min, max) = parse_lex_range(args.get(2), args.get(3))?;
    let n = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => {
            let (start, end) = lex_ranks(as_zset(e)?, min, max, false);
            end - start
        }
        None => 0,
    };
    ctx.w.int(n as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Ranges

fn range_generic(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    by: Option<RangeBy>,
    rev: Option<bool>,
) -> CmdResult {
    let q = RangeQuery::parse(&args, 1, false, by, rev)?;
    match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => {
            let items = q.select(as_zset(e)?);
            reply_members(ctx.w, &items, q.withscores);
        }
        None => ctx.w.array(0),
    }
    Ok(())
}

fn zrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    range_generic(ctx, args, None, None)
}

fn zrangebyscore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    range_generic(ctx, args, Some(RangeBy::Score), Some(false))
}

fn zrevrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    range_generic(ctx, args, Some(RangeBy::Rank), Some(true))
}

fn zrevrangebyscore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    range_generic(ctx, args, Some(RangeBy::Score), Some(true))
}

fn zrangebylex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    range_generic(ctx, args, Some(RangeBy::Lex), Some(false))
}

fn zrevrangebylex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    range_generic(ctx, args, Some(RangeBy::Lex), Some(true))
}

fn zrangestore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let q = RangeQuery::parse(&args, 2, true, None, None)?;
    let (dst, src) = (args.get(1), args.get(2));
    let now = ctx.now;
    // Collected before touching the destination, which may be the source itself.
    let result = match ctx.db.get(src, now) {
        Some(e) => {
            let z = as_zset(e)?;
            let mut out = ZSetValue::default();
            for (m, s) in q.select(z) {
                out.insert(m, s);
            }
            out
        }
        None => ZSetValue::default(),
    };
    let n = result.len();
    if n == 0 {
        if let Some(old) = ctx.db.remove(dst, now) {
            ctx.garbage.defer(old.value().elements(), old);
        }
    } else {
        let value = Value::ZSet(result);
        match ctx.db.entry(dst, now) {
            Slot::Occupied(mut o) => {
                let old = o.swap_value(value);
                o.get_mut().set_expire_at(None);
                ctx.garbage.defer(old.elements(), old);
            }
            Slot::Vacant(v) => v.insert(value, None),
        }
    }
    ctx.w.int(n as i64);
    Ok(())
}

fn rank_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, rev: bool, name: &str) -> CmdResult {
    if args.len() > 4 {
        return Err(ErrorReply::wrong_arity(name));
    }
    let withscore = args.len() == 4;
    if withscore && !args.is(3, "WITHSCORE") {
        return Err(ErrorReply::syntax());
    }
    let found = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => {
            let z = as_zset(e)?;
            let m = args.get(2);
            match (z.rank(m), z.score(m)) {
                (Some(r), Some(s)) => Some((if rev { z.len() - 1 - r } else { r }, s)),
                _ => None,
            }
        }
        None => None,
    };
    match found {
        Some((rank, score)) => {
            if withscore {
                ctx.w.array(2);
            }
            ctx.w.int(rank as i64);
            if withscore {
                ctx.w.double(score);
            }
        }
        None if withscore => ctx.w.null_array(),
        None => ctx.w.null(),
    }
    Ok(())
}

fn zrank(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    rank_generic(ctx, args, false, "zrank")
}

fn zrevrank(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    rank_generic(ctx, args, true, "zrevrank")
}

// ---------------------------------------------------------------------------------------------
// Removal by range and popping

/// Removes the members `pick` selects; replies with how many went.
fn remove_range(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    pick: impl FnOnce(ZSetRef<'_>) -> Vec<Box<[u8]>>,
) -> CmdResult {
    let n = match ctx.db.entry(key, ctx.now) {
        Slot::Occupied(mut o) => {
            let z = as_zset_mut(o.get_mut())?;
            let doomed = pick(z.view());
            for m in &doomed {
                z.remove(m);
            }
            doomed.len()
        }
        Slot::Vacant(_) => 0,
    };
    ctx.w.int(n as i64);
    Ok(())
}

fn owned(items: impl Iterator<Item = (impl AsRef<[u8]>, f64)>) -> Vec<Box<[u8]>> {
    items.map(|(m, _)| Box::from(m.as_ref())).collect()
}

fn zremrangebyrank(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (start, end) = (args.int(2)?, args.int(3)?);
    remove_range(ctx, args.get(1), |z| {
        match index_range(start, end, z.len()) {
            Some((s, e)) => owned(by_rank(z, s, e - s + 1, false).into_iter()),
            None => Vec::new(),
        }
    })
}

fn zremrangebyscore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (min, max) = parse_score_range(args.get(2), args.get(3))?;
    remove_range(ctx, args.get(1), |z| owned(z.range_by_score(min, max)))
}

fn zremrangebylex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (min, max) = parse_lex_range(args.get(2), args.get(3))?;
    remove_range(ctx, args.get(1), |z| {
        let (start, end) = lex_ranks(z, min, max, false);
        owned(z.range_by_rank(start, end))
    })
}

fn pop_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, max: bool) -> CmdResult {
    if args.len() > 3 {
        return Err(ErrorReply::syntax());
    }
    let count = if args.len() == 3 {
        // Redis words a non-number the same as a negative count here.
        match args.int(2) {
            Ok(n) if n >= 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => return Err(ErrorReply::must_be_positive()),
        }
    } else {
        None
    };
    // A COUNT makes RESP3 replies nested [member, score] pairs; otherwise the reply is flat.
    let nested = ctx.w.is_resp3() && count.is_some();
    let w = &mut *ctx.w;
    match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => {
            let z = as_zset_mut(o.get_mut())?;
            pop_into_reply(w, z, max, count.unwrap_or(1), nested);
        }
        Slot::Vacant(_) => w.array(0),
    }
    Ok(())
}

/// How ZPOPMIN/ZPOPMAX and ZMPOP (and so BZMPOP, which runs ZMPOP) pop: up to `count` of the
/// lowest (or, with `max`, highest) elements, each written into the reply from where it lies
/// and then removed (`ZSetValue::pop_with`, which BZPOPMIN/BZPOPMAX use for their one
/// element). The reply is an array of the popped elements, each a `[member, score]` pair when
/// `pairs`, else member and score side by side.
pub(crate) fn pop_into_reply(
    w: &mut ReplyWriter<'_>,
    z: &mut ZSetValue,
    max: bool,
    count: usize,
    pairs: bool,
) {
    let n = count.min(z.len());
    w.array(if pairs { n } else { n * 2 });
    for _ in 0..n {
        z.pop_with(max, |m, s| {
            if pairs {
                w.array(2);
            }
            w.bulk(m);
            w.double(s);
        });
    }
}

fn zpopmin(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    pop_generic(ctx, args, false)
}

fn zpopmax(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    pop_generic(ctx, args, true)
}

fn zscan(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let cursor = parse_cursor(args.get(2))?;
    // As in Redis, a missing key answers an empty scan before the options are looked at.
    let Some(e) = ctx.db.get(args.get(1), ctx.now) else {
        crate::util::empty_scan_page(ctx.w);
        return Ok(());
    };
    let z = as_zset(e)?;
    let opts = parse_scan_options(&args, 3, false, false)?;
    let mut found: Vec<(Vec<u8>, f64)> = Vec::new();
    let next = z.scan(cursor, opts.count, |m, s| {
        if opts.matches(m) {
            found.push((m.to_vec(), s));
        }
    });
    let w = &mut *ctx.w;
    w.array(2);
    w.bulk(itoa::Buffer::new().format(next).as_bytes());
    // Scores are text here even in RESP3, as in Redis 7.2, whose texts depend on the encoding:
    // a listpack's entries are the scores as ZADD stored them (`d2string`, what replies use),
    // a skiplist's are written by `ld2string(LD_STR_AUTO)`, `%.17Lg` (0.1 is
    // 0.10000000000000001 there).
    let skiplist = z.encoding() == Encoding::Skiplist;
    w.array(found.len() * 2);
    for (m, s) in found {
        w.bulk(&m);
        if skiplist {
            w.bulk(format_g17(s).as_bytes());
        } else {
            w.bulk(format_double(s).as_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testing::TestDb;
    use ferrite_protocol::Protocol;

    const WRONGTYPE: &str =
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    const SYNTAX: &str = "-ERR syntax error\r\n";
    const NOT_FLOAT: &str = "-ERR value is not a valid float\r\n";
    const NOT_INT: &str = "-ERR value is not an integer or out of range\r\n";
    const RANGE_NOT_FLOAT: &str = "-ERR min or max is not a float\r\n";
    const RANGE_NOT_LEX: &str = "-ERR min or max not valid string range item\r\n";

    /// `*n` followed by the given bulk strings.
    fn bulks(items: &[&str]) -> String {
        let mut s = format!("*{}\r\n", items.len());
        for i in items {
            s.push_str(&format!("${}\r\n{i}\r\n", i.len()));
        }
        s
    }

    fn abcde() -> TestDb {
        let mut t = TestDb::new();
        t.check(&[(
            &[
                "ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e",
            ],
            ":5\r\n",
        )]);
        t
    }

    #[test]
    fn zadd_flags() {
        let mut t = TestDb::new();
        t.check(&[
            (&["ZADD", "z", "1", "a", "2", "b"], ":2\r\n"),
            (&["ZADD", "z", "1", "a", "3", "b", "4", "c"], ":1\r\n"),
            (&["ZADD", "z", "CH", "1", "a", "5", "b", "6", "d"], ":2\r\n"),
            (&["ZADD", "z", "NX", "9", "a", "7", "e"], ":1\r\n"),
            (&["ZADD", "z", "XX", "9", "a", "8", "f"], ":0\r\n"),
            (&["ZSCORE", "z", "a"], "$1\r\n9\r\n"),
            (&["ZSCORE", "z", "f"], "$-1\r\n"),
            (
                &["ZADD", "z", "GT", "CH", "1", "a", "10", "b", "0", "g"],
                ":2\r\n",
            ),
            (&["ZADD", "z", "LT", "CH", "100", "a", "1", "b"], ":1\r\n"),
            (
                &["ZADD", "z", "xx", "gt", "ch", "50", "a", "1", "zz"],
                ":1\r\n",
            ),
            (
                &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
                &bulks(&["g", "0", "b", "1", "c", "4", "d", "6", "e", "7", "a", "50"]),
            ),
            // Missing key with XX: nothing created.
            (&["ZADD", "n", "XX", "1", "a"], ":0\r\n"),
            (&["EXISTS", "n"], ":0\r\n"),
            // -0 equals 0: no update counted.
            (&["ZADD", "z", "CH", "-0", "g"], ":0\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn zadd_errors() {
        let mut t = TestDb::new();
        t.check(&[
            (
                &["ZADD", "z", "NX", "XX", "1", "a"],
                "-ERR XX and NX options at the same time are not compatible\r\n",
            ),
            (
                &["ZADD", "z", "GT", "LT", "1", "a"],
                "-ERR GT, LT, and/or NX options at the same time are not compatible\r\n",
            ),
            (
                &["ZADD", "z", "NX", "GT", "1", "a"],
                "-ERR GT, LT, and/or NX options at the same time are not compatible\r\n",
            ),
            (
                &["ZADD", "z", "INCR", "1", "a", "2", "b"],
                "-ERR INCR option supports a single increment-element pair\r\n",
            ),
            // Pair-count syntax errors come before the incompatibility checks.
            (&["ZADD", "z", "NX", "XX", "1", "a", "2"], SYNTAX),
            (&["ZADD", "z", "1", "a", "2"], SYNTAX),
            (&["ZADD", "z", "NX", "CH"], SYNTAX),
            (&["ZADD", "z", "nan", "a"], NOT_FLOAT),
            (&["ZADD", "z", "1", "a", "x", "b"], NOT_FLOAT),
            (&["ZADD", "z", "abc", "a", "NX", "XX"], NOT_FLOAT),
            (&["ZADD", "z", " 1", "a"], NOT_FLOAT),
            (&["ZADD", "z", "", "a"], NOT_FLOAT),
            // strtod's ERANGE: overflow and underflow are refused.
            (&["ZADD", "z", "1e400", "a"], NOT_FLOAT),
            (&["ZADD", "z", "-1e400", "a"], NOT_FLOAT),
            (&["ZADD", "z", "1e-400", "a"], NOT_FLOAT),
            (&["EXISTS", "z"], ":0\r\n"),
            (
                &["ZADD", "z"],
                "-ERR wrong number of arguments for 'zadd' command\r\n",
            ),
            (
                &["ZADD", "z", "1"],
                "-ERR wrong number of arguments for 'zadd' command\r\n",
            ),
            (&["ZADD", "z", "4.9e-324", "a", "0.000e-400", "b"], ":2\r\n"),
            (&["ZADD", "z", "+inf", "c", "-Infinity", "d"], ":2\r\n"),
            (
                &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
                &bulks(&["d", "-inf", "b", "0", "a", "5e-324", "c", "inf"]),
            ),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn zadd_incr_and_zincrby() {
        let mut t = TestDb::new();
        t.check(&[
            (&["ZINCRBY", "z", "2.5", "a"], "$3\r\n2.5\r\n"),
            (&["ZINCRBY", "z", "-1", "a"], "$3\r\n1.5\r\n"),
            (&["ZADD", "z", "INCR", "1", "a"], "$3\r\n2.5\r\n"),
            (&["ZADD", "z", "NX", "INCR", "1", "a"], "$-1\r\n"),
            (&["ZADD", "z", "XX", "INCR", "1", "new"], "$-1\r\n"),
            (&["ZADD", "z", "GT", "INCR", "-1", "a"], "$-1\r\n"),
            (&["ZADD", "z", "LT", "INCR", "0", "a"], "$-1\r\n"),
            (&["ZADD", "z", "GT", "INCR", "1", "a"], "$3\r\n3.5\r\n"),
            (&["ZADD", "z", "CH", "INCR", "4", "b"], "$1\r\n4\r\n"),
            (&["ZADD", "n", "XX", "INCR", "1", "a"], "$-1\r\n"),
            (&["EXISTS", "n"], ":0\r\n"),
            (&["ZADD", "z", "inf", "i"], ":1\r\n"),
            (
                &["ZINCRBY", "z", "-inf", "i"],
                "-ERR resulting score is not a number (NaN)\r\n",
            ),
            (
                &["ZADD", "z", "INCR", "-inf", "i"],
                "-ERR resulting score is not a number (NaN)\r\n",
            ),
            (&["ZSCORE", "z", "i"], "$3\r\ninf\r\n"),
            (&["ZINCRBY", "z", "x", "a"], NOT_FLOAT),
            (&["ZINCRBY", "z", "1e400", "a"], NOT_FLOAT),
            // ZINCRBY is ZADD with INCR forced, so option words are options there too.
            (&["ZINCRBY", "z", "nx", "a"], SYNTAX),
            (&["ZINCRBY", "z", "1", "nx"], "$1\r\n1\r\n"),
            (
                &["ZINCRBY", "z", "1"],
                "-ERR wrong number of arguments for 'zincrby' command\r\n",
            ),
        ]);
        t.proto = Protocol::Resp3;
        t.check(&[
            (&["ZINCRBY", "z", "1", "a"], ",4.5\r\n"),
            (&["ZADD", "z", "NX", "INCR", "1", "a"], "_\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn reads_and_zrem() {
        let mut t = abcde();
        t.check(&[
            (&["ZCARD", "z"], ":5\r\n"),
            (&["ZCARD", "none"], ":0\r\n"),
            (&["ZSCORE", "z", "c"], "$1\r\n3\r\n"),
            (&["ZSCORE", "none", "c"], "$-1\r\n"),
            (
                &["ZMSCORE", "z", "a", "x", "e"],
                "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n5\r\n",
            ),
            (&["ZMSCORE", "none", "a", "b"], "*2\r\n$-1\r\n$-1\r\n"),
            (&["ZCOUNT", "z", "-inf", "+inf"], ":5\r\n"),
            (&["ZCOUNT", "z", "(1", "3"], ":2\r\n"),
            (&["ZCOUNT", "z", "3", "1"], ":0\r\n"),
            (&["ZCOUNT", "z", "x", "1"], RANGE_NOT_FLOAT),
            (&["ZCOUNT", "none", "x", "1"], RANGE_NOT_FLOAT),
            (&["ZCOUNT", "none", "0", "1"], ":0\r\n"),
            (&["ZREM", "z", "b", "x", "b"], ":1\r\n"),
            (&["ZREM", "z", "b"], ":0\r\n"),
            (&["ZREM", "none", "a"], ":0\r\n"),
            (&["ZREM", "z", "a", "c", "d", "e"], ":4\r\n"),
            (&["EXISTS", "z"], ":0\r\n"),
        ]);
        t.proto = Protocol::Resp3;
        t.check(&[
            (&["ZADD", "z", "1.5", "a"], ":1\r\n"),
            (&["ZSCORE", "z", "a"], ",1.5\r\n"),
            (&["ZSCORE", "z", "x"], "_\r\n"),
            (&["ZMSCORE", "z", "a", "x"], "*2\r\n,1.5\r\n_\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn zrange_by_index() {
        let mut t = abcde();
        t.check(&[
            (&["ZRANGE", "z", "0", "-1"], &bulks(&["a", "b", "c", "d", "e"])),
            (&["ZRANGE", "z", "-2", "-1"], &bulks(&["d", "e"])),
            (&["ZRANGE", "z", "3", "4"], &bulks(&["d", "e"])),
            (&["ZRANGE", "z", "-100", "1"], &bulks(&["a", "b"])),
            (&["ZRANGE", "z", "3", "2"], "*0\r\n"),
            (&["ZRANGE", "z", "5", "10"], "*0\r\n"),
            (
                &["ZRANGE", "z", "-9223372036854775808", "9223372036854775807"],
                &bulks(&["a", "b", "c", "d", "e"]),
            ),
            (
                &["ZRANGE", "z", "9223372036854775807", "-9223372036854775808"],
                "*0\r\n",
            ),
            (
                &["ZRANGE", "z", "1", "-3", "WITHSCORES"],
                &bulks(&["b", "2", "c", "3"]),
            ),
            (&["ZRANGE", "z", "0", "1", "REV"], &bulks(&["e", "d"])),
            (&["ZRANGE", "z", "3", "4", "REV"], &bulks(&["b", "a"])),
            (&["ZREVRANGE", "z", "0", "-1"], &bulks(&["e", "d", "c", "b", "a"])),
            (
                &["ZREVRANGE", "z", "0", "0", "withscores"],
                &bulks(&["e", "5"]),
            ),
            (&["ZREVRANGE", "z", "-3", "-2"], &bulks(&["c", "b"])),
            (&["ZRANGE", "none", "0", "-1"], "*0\r\n"),
            (&["ZRANGE", "z", "x", "1"], NOT_INT),
            (&["ZRANGE", "none", "x", "1"], NOT_INT),
            // LIMIT's count left at -1 is not noticed, as in Redis.
            (
                &["ZRANGE", "z", "0", "1", "LIMIT", "5", "-1"],
                &bulks(&["a", "b"]),
            ),
            (
                &["ZRANGE", "z", "0", "-1", "LIMIT", "0", "1"],
                "-ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX\r\n",
            ),
            (
                &["ZREVRANGE", "z", "0", "-1", "LIMIT", "0", "1"],
                "-ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX\r\n",
            ),
            (&["ZREVRANGE", "z", "0", "-1", "REV"], SYNTAX),
            (&["ZREVRANGE", "z", "0", "-1", "BYSCORE"], SYNTAX),
            (
                &["ZRANGE", "z", "0"],
                "-ERR wrong number of arguments for 'zrange' command\r\n",
            ),
            (
                &["ZREVRANGE", "z", "0"],
                "-ERR wrong number of arguments for 'zrevrange' command\r\n",
            ),
        ]);
    }

    #[test]
    fn zrange_by_score() {
        let mut t = abcde();
        t.check(&[
            (
                &["ZRANGEBYSCORE", "z", "-inf", "+inf"],
                &bulks(&["a", "b", "c", "d", "e"]),
            ),
            (&["ZRANGEBYSCORE", "z", "(1", "(3"], &bulks(&["b"])),
            (&["ZRANGEBYSCORE", "z", "3", "3"], &bulks(&["c"])),
            (&["ZRANGEBYSCORE", "z", "(3", "3"], "*0\r\n"),
            (&["ZRANGEBYSCORE", "z", "+inf", "-inf"], "*0\r\n"),
            (&["ZRANGEBYSCORE", "z", "(inf", "+inf"], "*0\r\n"),
            (&["ZRANGEBYSCORE", "z", "-inf", "(-inf"], "*0\r\n"),
            (&["ZRANGEBYSCORE", "z", "4", "1e400"], &bulks(&["d", "e"])),
            // strtod semantics: "" reads as 0, leading spaces are allowed, trailing ones are not.
            (&["ZRANGEBYSCORE", "z", "(", "1"], &bulks(&["a"])),
            (&["ZRANGEBYSCORE", "z", "", ""], "*0\r\n"),
            (&["ZRANGEBYSCORE", "z", " 1", "2"], &bulks(&["a", "b"])),
            (&["ZRANGEBYSCORE", "z", "1 ", "2"], RANGE_NOT_FLOAT),
            (&["ZRANGEBYSCORE", "z", " ", "2"], RANGE_NOT_FLOAT),
            (&["ZRANGEBYSCORE", "z", "nan", "2"], RANGE_NOT_FLOAT),
            (&["ZRANGEBYSCORE", "z", "(nan", "2"], RANGE_NOT_FLOAT),
            (&["ZRANGEBYSCORE", "z", "[1", "2"], RANGE_NOT_FLOAT),
            (
                &[
                    "ZRANGEBYSCORE",
                    "z",
                    "-inf",
                    "+inf",
                    "WITHSCORES",
                    "LIMIT",
                    "1",
                    "2",
                ],
                &bulks(&["b", "2", "c", "3"]),
            ),
            (
                &["ZRANGEBYSCORE", "z", "-inf", "+inf", "LIMIT", "1", "-1"],
                &bulks(&["b", "c", "d", "e"]),
            ),
            (
                &["ZRANGEBYSCORE", "z", "-inf", "+inf", "LIMIT", "-1", "2"],
                "*0\r\n",
            ),
            (
                &["ZRANGEBYSCORE", "z", "-inf", "+inf", "LIMIT", "1", "0"],
                "*0\r\n",
            ),
            (
                &["ZRANGEBYSCORE", "z", "-inf", "+inf", "LIMIT", "5", "1"],
                "*0\r\n",
            ),
            (
                &[
                    "ZRANGEBYSCORE",
                    "z",
                    "-inf",
                    "+inf",
                    "LIMIT",
                    "9223372036854775807",
                    "9223372036854775807",
                ],
                "*0\r\n",
            ),
            (
                &["ZRANGEBYSCORE", "z", "-inf", "+inf", "LIMIT", "0"],
                SYNTAX,
            ),
            (
                &["ZRANGEBYSCORE", "z", "-inf", "+inf", "LIMIT", "a", "1"],
                NOT_INT,
            ),
            (&["ZRANGEBYSCORE", "z", "1", "2", "REV"], SYNTAX),
            (&["ZRANGEBYSCORE", "z", "1", "2", "BYLEX"], SYNTAX),
            (
                &["ZREVRANGEBYSCORE", "z", "3", "1"],
                &bulks(&["c", "b", "a"]),
            ),
            (&["ZREVRANGEBYSCORE", "z", "1", "3"], "*0\r\n"),
            (
                &[
                    "ZREVRANGEBYSCORE",
                    "z",
                    "(4",
                    "-inf",
                    "LIMIT",
                    "1",
                    "2",
                    "WITHSCORES",
                ],
                &bulks(&["b", "2", "a", "1"]),
            ),
            (&["ZRANGE", "z", "(1", "3", "BYSCORE"], &bulks(&["b", "c"])),
            (
                &["ZRANGE", "z", "3", "1", "BYSCORE", "REV"],
                &bulks(&["c", "b", "a"]),
            ),
            (
                &[
                    "ZRANGE",
                    "z",
                    "3",
                    "1",
                    "REV",
                    "BYSCORE",
                    "LIMIT",
                    "1",
                    "1",
                    "WITHSCORES",
                ],
                &bulks(&["b", "2"]),
            ),
            (&["ZRANGE", "z", "x", "y", "BYSCORE"], RANGE_NOT_FLOAT),
            (&["ZRANGE", "z", "0", "-1", "BYSCORE", "BYLEX"], SYNTAX),
            (&["ZRANGE", "z", "0", "-1", "BYSCORE", "BYSCORE"], SYNTAX),
            (&["ZRANGE", "z", "0", "-1", "REV", "REV"], SYNTAX),
            (
                &["ZRANGE", "z", "0", "-1", "BOGUS", "LIMIT", "x", "1"],
                SYNTAX,
            ),
            // LIMIT's numbers are read as the options are walked.
            (
                &["ZRANGE", "z", "0", "-1", "LIMIT", "x", "1", "BOGUS"],
                NOT_INT,
            ),
            (&["ZRANGE", "none", "0", "1", "BOGUS"], SYNTAX),
        ]);
    }

    #[test]
    fn zrange_by_lex() {
        let mut t = TestDb::new();
        t.check(&[
            (
                &[
                    "ZADD", "l", "0", "a", "0", "b", "0", "c", "0", "d", "0", "e",
                ],
                ":5\r\n",
            ),
            (
                &["ZRANGEBYLEX", "l", "-", "+"],
                &bulks(&["a", "b", "c", "d", "e"]),
            ),
            (&["ZRANGEBYLEX", "l", "[b", "(d"], &bulks(&["b", "c"])),
            (&["ZRANGEBYLEX", "l", "[bb", "[dd"], &bulks(&["c", "d"])),
            (
                &["ZRANGEBYLEX", "l", "[", "+"],
                &bulks(&["a", "b", "c", "d", "e"]),
            ),
            (&["ZRANGEBYLEX", "l", "(", "["], "*0\r\n"),
            (&["ZRANGEBYLEX", "l", "-", "-"], "*0\r\n"),
            (&["ZRANGEBYLEX", "l", "+", "+"], "*0\r\n"),
            (&["ZRANGEBYLEX", "l", "+", "-"], "*0\r\n"),
            (&["ZRANGEBYLEX", "l", "[c", "[c"], &bulks(&["c"])),
            (&["ZRANGEBYLEX", "l", "(c", "[c"], "*0\r\n"),
            (&["ZRANGEBYLEX", "l", "[d", "[c"], "*0\r\n"),
            (
                &["ZRANGEBYLEX", "l", "-", "+", "LIMIT", "1", "2"],
                &bulks(&["b", "c"]),
            ),
            (
                &["ZRANGEBYLEX", "l", "-", "+", "LIMIT", "-1", "2"],
                "*0\r\n",
            ),
            (&["ZRANGEBYLEX", "l", "+x", "+"], RANGE_NOT_LEX),
            (&["ZRANGEBYLEX", "l", "a", "+"], RANGE_NOT_LEX),
            (&["ZRANGEBYLEX", "l", "", "+"], RANGE_NOT_LEX),
            (&["ZRANGEBYLEX", "none", "a", "+"], RANGE_NOT_LEX),
            (
                &["ZRANGEBYLEX", "l", "-", "+", "WITHSCORES"],
                "-ERR syntax error, WITHSCORES not supported in combination with BYLEX\r\n",
            ),
            (
                &["ZRANGE", "l", "-", "+", "BYLEX", "WITHSCORES"],
                "-ERR syntax error, WITHSCORES not supported in combination with BYLEX\r\n",
            ),
            (&["ZRANGEBYLEX", "l", "-", "+", "REV"], SYNTAX),
            (
                &["ZREVRANGEBYLEX", "l", "+", "-"],
                &bulks(&["e", "d", "c", "b", "a"]),
            ),
            (&["ZREVRANGEBYLEX", "l", "(d", "[b"], &bulks(&["c", "b"])),
            (&["ZREVRANGEBYLEX", "l", "-", "+"], "*0\r\n"),
            (
                &["ZREVRANGEBYLEX", "l", "+", "-", "LIMIT", "1", "1"],
                &bulks(&["d"]),
            ),
            (
                &["ZRANGE", "l", "[b", "[d", "BYLEX"],
                &bulks(&["b", "c", "d"]),
            ),
            (
                &["ZRANGE", "l", "[d", "[b", "BYLEX", "REV", "LIMIT", "1", "5"],
                &bulks(&["c", "b"]),
            ),
            (&["ZLEXCOUNT", "l", "-", "+"], ":5\r\n"),
            (&["ZLEXCOUNT", "l", "(a", "[c"], ":2\r\n"),
            (&["ZLEXCOUNT", "l", "[c", "(a"], ":0\r\n"),
            (&["ZLEXCOUNT", "l", "x", "y"], RANGE_NOT_LEX),
            (&["ZLEXCOUNT", "none", "-", "+"], ":0\r\n"),
            // Mixed scores: walks (score, member) order from the first member inside the near
            // bound to the first one past the far bound, as Redis does for small sets.
            (&["ZADD", "m", "1", "b", "2", "a", "3", "c"], ":3\r\n"),
            (&["ZRANGEBYLEX", "m", "[b", "+"], &bulks(&["b", "a", "c"])),
            (&["ZRANGEBYLEX", "m", "-", "[a"], "*0\r\n"),
            (&["ZREVRANGEBYLEX", "m", "[b", "-"], &bulks(&["a", "b"])),
            (&["ZADD", "m2", "1", "a", "2", "c", "3", "b"], ":3\r\n"),
            (&["ZRANGEBYLEX", "m2", "[c", "[c"], "*0\r\n"),
            (&["ZRANGEBYLEX", "m2", "[b", "[c"], &bulks(&["c", "b"])),
            (&["ZLEXCOUNT", "m2", "[b", "+"], ":2\r\n"),
        ]);
    }

    #[test]
    fn zrangestore() {
        let mut t = abcde();
        t.check(&[
            (&["SET", "d", "x", "EX", "100"], "+OK\r\n"),
            (&["ZRANGESTORE", "d", "z", "0", "1"], ":2\r\n"),
            (&["TYPE", "d"], "+zset\r\n"),
            (&["TTL", "d"], ":-1\r\n"),
            (&["ZRANGE", "d", "0", "-1", "WITHSCORES"], &bulks(&["a", "1", "b", "2"])),
            (
                &["ZRANGESTORE", "d", "z", "(1", "+inf", "BYSCORE", "LIMIT", "1", "2"],
                ":2\r\n",
            ),
            (&["ZRANGE", "d", "0", "-1", "WITHSCORES"], &bulks(&["c", "3", "d", "4"])),
            (&["ZRANGESTORE", "d", "z", "[b", "+", "BYLEX", "REV"], ":0\r\n"),
            (&["EXISTS", "d"], ":0\r\n"),
            // Lex ranges over mixed scores still walk (score, member) order.
            (&["ZRANGESTORE", "d", "z", "+", "[d", "BYLEX", "REV"], ":2\r\n"),
            (&["ZRANGE", "d", "0", "-1"], &bulks(&["d", "e"])),
            (&["ZRANGESTORE", "d", "z", "0", "-1", "REV"], ":5\r\n"),
            (&["ZRANGESTORE", "d", "none", "0", "1"], ":0\r\n"),
            (&["EXISTS", "d"], ":0\r\n"),
            (&["SET", "s", "v"], "+OK\r\n"),
            (&["ZRANGESTORE", "d", "s", "0", "1"], WRONGTYPE),
            // The destination's type does not matter: it is overwritten.
            (&["ZRANGESTORE", "s", "z", "0", "0"], ":1\r\n"),
            (&["TYPE", "s"], "+zset\r\n"),
            (&["ZRANGESTORE", "d", "z", "x", "1"], NOT_INT),
            (&["ZRANGESTORE", "d", "z", "0", "1", "WITHSCORES"], SYNTAX),
            (
                &["ZRANGESTORE", "d", "z", "0", "1", "LIMIT", "0", "1"],
                "-ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX\r\n",
            ),
            (&["ZRANGESTORE", "z", "z", "1", "2"], ":2\r\n"),
            (&["ZRANGE", "z", "0", "-1"], &bulks(&["b", "c"])),
            (
                &["ZRANGESTORE", "d", "z", "0"],
                "-ERR wrong number of arguments for 'zrangestore' command\r\n",
            ),
        ]);
        t.assert_digest_consistent();
        let spec = crate::lookup(b"zrangestore").unwrap();
        let req =
            ferrite_protocol::OwnedRequest::from_parts(["ZRANGESTORE", "dst", "src", "0", "1"]);
        assert_eq!(spec.created_keys(&req.args()), vec![&b"dst"[..]]);
        assert_eq!(spec.keys(&req.args()).count(), 2);
    }

    #[test]
    fn zrank() {
        let mut t = TestDb::new();
        t.check(&[
            (&["ZADD", "z", "1", "a", "2", "b", "3", "c"], ":3\r\n"),
            (&["ZRANK", "z", "a"], ":0\r\n"),
            (&["ZRANK", "z", "c"], ":2\r\n"),
            (&["ZREVRANK", "z", "c"], ":0\r\n"),
            (&["ZREVRANK", "z", "a"], ":2\r\n"),
            (&["ZRANK", "z", "x"], "$-1\r\n"),
            (&["ZRANK", "none", "x"], "$-1\r\n"),
            (&["ZRANK", "z", "b", "withscore"], "*2\r\n:1\r\n$1\r\n2\r\n"),
            (
                &["ZREVRANK", "z", "a", "WITHSCORE"],
                "*2\r\n:2\r\n$1\r\n1\r\n",
            ),
            (&["ZRANK", "z", "x", "WITHSCORE"], "*-1\r\n"),
            (&["ZRANK", "none", "x", "WITHSCORE"], "*-1\r\n"),
            (&["ZRANK", "z", "a", "BOGUS"], SYNTAX),
            (
                &["ZRANK", "z", "a", "WITHSCORE", "x"],
                "-ERR wrong number of arguments for 'zrank' command\r\n",
            ),
            (
                &["ZREVRANK", "z"],
                "-ERR wrong number of arguments for 'zrevrank' command\r\n",
            ),
        ]);
        t.proto = Protocol::Resp3;
        t.check(&[
            (&["ZRANK", "z", "b", "WITHSCORE"], "*2\r\n:1\r\n,2\r\n"),
            (&["ZRANK", "z", "x", "WITHSCORE"], "_\r\n"),
            (&["ZRANK", "z", "x"], "_\r\n"),
        ]);
    }

    #[test]
    fn zremrange() {
        let mut t = abcde();
        t.check(&[
            (&["ZREMRANGEBYRANK", "z", "5", "10"], ":0\r\n"),
            (&["ZREMRANGEBYRANK", "z", "1", "0"], ":0\r\n"),
            (&["ZREMRANGEBYRANK", "z", "-2", "-1"], ":2\r\n"),
            (
                &["ZREMRANGEBYRANK", "z", "-9223372036854775808", "0"],
                ":1\r\n",
            ),
            (&["ZRANGE", "z", "0", "-1"], &bulks(&["b", "c"])),
            (&["ZREMRANGEBYRANK", "z", "x", "1"], NOT_INT),
            (&["ZREMRANGEBYRANK", "none", "0", "1"], ":0\r\n"),
            (&["ZREMRANGEBYRANK", "z", "0", "-1"], ":2\r\n"),
            (&["EXISTS", "z"], ":0\r\n"),
            (
                &["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d"],
                ":4\r\n",
            ),
            (&["ZREMRANGEBYSCORE", "z", "(2", "+inf"], ":2\r\n"),
            (&["ZREMRANGEBYSCORE", "z", "5", "1"], ":0\r\n"),
            (&["ZREMRANGEBYSCORE", "z", "x", "1"], RANGE_NOT_FLOAT),
            (&["ZREMRANGEBYSCORE", "none", "x", "1"], RANGE_NOT_FLOAT),
            (&["ZREMRANGEBYSCORE", "none", "0", "1"], ":0\r\n"),
            (&["ZREMRANGEBYSCORE", "z", "-inf", "+inf"], ":2\r\n"),
            (&["EXISTS", "z"], ":0\r\n"),
            (
                &[
                    "ZADD", "l", "0", "a", "0", "b", "0", "c", "0", "d", "0", "e",
                ],
                ":5\r\n",
            ),
            (&["ZREMRANGEBYLEX", "l", "x", "y"], RANGE_NOT_LEX),
            (&["ZREMRANGEBYLEX", "l", "[b", "(d"], ":2\r\n"),
            (&["ZRANGE", "l", "0", "-1"], &bulks(&["a", "d", "e"])),
            (&["ZREMRANGEBYLEX", "l", "+", "-"], ":0\r\n"),
            (&["ZREMRANGEBYLEX", "l", "-", "+"], ":3\r\n"),
            (&["EXISTS", "l"], ":0\r\n"),
            (&["ZREMRANGEBYLEX", "none", "-", "+"], ":0\r\n"),
            (
                &["ZREMRANGEBYLEX", "l", "-"],
                "-ERR wrong number of arguments for 'zremrangebylex' command\r\n",
            ),
        ]);
        t.assert_digest_consistent();
    }

    /// Past zset-max-listpack-entries (the table + tree form): pops from both ends, with and
    /// without COUNT, whole-number and fractional scores, down to the key's removal.
    #[test]
    fn zpop_full_form() {
        let mut t = TestDb::new();
        let mut argv = vec!["ZADD".to_string(), "z".to_string()];
        for i in 0..200 {
            // Scores 0, 0.5, 1, ... so that both forms of the score's text are written.
            argv.push(format!("{}", f64::from(i) / 2.0));
            argv.push(format!("m{i:03}"));
        }
        assert_eq!(t.run(&argv), ":200\r\n");
        assert_eq!(t.run(&["OBJECT", "ENCODING", "z"]), "$8\r\nskiplist\r\n");
        t.check(&[
            (&["ZPOPMIN", "z"], &bulks(&["m000", "0"])),
            (
                &["ZPOPMIN", "z", "2"],
                &bulks(&["m001", "0.5", "m002", "1"]),
            ),
            (&["ZPOPMAX", "z"], &bulks(&["m199", "99.5"])),
            (&["ZPOPMAX", "z", "1"], &bulks(&["m198", "99"])),
            (&["ZCARD", "z"], ":195\r\n"),
            (
                &["ZRANGE", "z", "0", "0", "WITHSCORES"],
                &bulks(&["m003", "1.5"]),
            ),
        ]);
        t.assert_digest_consistent();
        let all = t.run(&["ZPOPMIN", "z", "1000"]);
        assert!(
            all.starts_with("*390\r\n$4\r\nm003\r\n$3\r\n1.5\r\n"),
            "{all}"
        );
        assert!(all.ends_with("$4\r\nm197\r\n$4\r\n98.5\r\n"), "{all}");
        t.check(&[
            (&["EXISTS", "z"], ":0\r\n"),
            (&["SET", "s", "x"], "+OK\r\n"),
        ]);
        t.check(&[
            (&["ZPOPMIN", "s"], WRONGTYPE),
            (&["GET", "s"], "$1\r\nx\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn zpop() {
        let mut t = TestDb::new();
        t.check(&[
            (
                &["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d"],
                ":4\r\n",
            ),
            (&["ZPOPMIN", "z"], &bulks(&["a", "1"])),
            (&["ZPOPMAX", "z"], &bulks(&["d", "4"])),
            (&["ZPOPMIN", "z", "0"], "*0\r\n"),
            (
                &["ZPOPMIN", "z", "-1"],
                "-ERR value is out of range, must be positive\r\n",
            ),
            (
                &["ZPOPMIN", "z", "x"],
                "-ERR value is out of range, must be positive\r\n",
            ),
            (&["ZPOPMIN", "z", "1", "2"], SYNTAX),
            (&["ZPOPMIN", "none"], "*0\r\n"),
            (&["ZPOPMIN", "none", "2"], "*0\r\n"),
            (
                &["ZPOPMIN", "none", "-1"],
                "-ERR value is out of range, must be positive\r\n",
            ),
            (
                &["ZPOPMAX", "z", "9223372036854775807"],
                &bulks(&["c", "3", "b", "2"]),
            ),
            (&["EXISTS", "z"], ":0\r\n"),
            (
                &["ZPOPMAX"],
                "-ERR wrong number of arguments for 'zpopmax' command\r\n",
            ),
        ]);
        t.proto = Protocol::Resp3;
        t.check(&[
            (&["ZADD", "z", "1", "a", "2", "b", "3", "c"], ":3\r\n"),
            // Without COUNT the reply stays flat; with it, a list of pairs.
            (&["ZPOPMIN", "z"], "*2\r\n$1\r\na\r\n,1\r\n"),
            (&["ZPOPMAX", "z", "1"], "*1\r\n*2\r\n$1\r\nc\r\n,3\r\n"),
            (&["ZPOPMIN", "z", "5"], "*1\r\n*2\r\n$1\r\nb\r\n,2\r\n"),
            (&["ZPOPMIN", "z", "5"], "*0\r\n"),
            (&["ZPOPMIN", "z"], "*0\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn resp3_withscores_pairs() {
        let mut t = abcde();
        t.proto = Protocol::Resp3;
        t.check(&[
            (
                &["ZRANGE", "z", "0", "1", "WITHSCORES"],
                "*2\r\n*2\r\n$1\r\na\r\n,1\r\n*2\r\n$1\r\nb\r\n,2\r\n",
            ),
            (&["ZRANGE", "z", "0", "1"], &bulks(&["a", "b"])),
            (
                &["ZREVRANGEBYSCORE", "z", "+inf", "(4", "WITHSCORES"],
                "*1\r\n*2\r\n$1\r\ne\r\n,5\r\n",
            ),
            (
                &[
                    "ZRANGEBYSCORE",
                    "z",
                    "-inf",
                    "inf",
                    "WITHSCORES",
                    "LIMIT",
                    "0",
                    "1",
                ],
                "*1\r\n*2\r\n$1\r\na\r\n,1\r\n",
            ),
            (&["ZRANGE", "z", "5", "6", "WITHSCORES"], "*0\r\n"),
            (&["ZRANGESTORE", "d", "z", "0", "-1"], ":5\r\n"),
        ]);
    }

    #[test]
    fn zscan() {
        let mut t = TestDb::new();
        t.check(&[
            (&["ZADD", "z", "1.5", "a"], ":1\r\n"),
            (
                &["ZSCAN", "z", "0"],
                "*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$3\r\n1.5\r\n",
            ),
            (&["ZSCAN", "z", "0", "COUNT", "0"], SYNTAX),
            (&["ZSCAN", "z", "0", "MATCH"], SYNTAX),
            (&["ZSCAN", "z", "0", "NOVALUES"], SYNTAX),
            (&["ZSCAN", "z", "0", "TYPE", "zset"], SYNTAX),
            (&["ZSCAN", "z", "x"], "-ERR invalid cursor\r\n"),
            (&["ZSCAN", "none", "x"], "-ERR invalid cursor\r\n"),
            // A missing key answers before its options are looked at, as in Redis.
            (&["ZSCAN", "none", "0", "BOGUS"], "*2\r\n$1\r\n0\r\n*0\r\n"),
            (
                &["ZSCAN", "z"],
                "-ERR wrong number of arguments for 'zscan' command\r\n",
            ),
        ]);
        t.proto = Protocol::Resp3;
        // Scores stay bulk strings in RESP3.
        t.check(&[(
            &["ZSCAN", "z", "0"],
            "*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$3\r\n1.5\r\n",
        )]);
        t.proto = Protocol::Resp2;
        for i in 0..300 {
            let (m, s) = (format!("m{i}"), i.to_string());
            t.run(&["ZADD", "big", &s, &m]);
        }
        // A full walk returns every matching member exactly once with its score.
        let mut seen = std::collections::HashMap::new();
        let mut cursor = "0".to_string();
        loop {
            let reply = t.run(&["ZSCAN", "big", &cursor, "MATCH", "m1*", "COUNT", "7"]);
            let lines: Vec<&str> = reply.split("\r\n").collect();
            cursor = lines[2].to_string();
            let items: Vec<&str> = lines[4..]
                .iter()
                .copied()
                .filter(|l| !l.starts_with('$'))
                .collect();
            for pair in items.chunks(2) {
                if let [m, s] = pair
                    && !m.is_empty()
                {
                    assert!(
                        seen.insert(m.to_string(), s.to_string()).is_none(),
                        "{m} twice"
                    );
                }
            }
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 111);
        assert_eq!(seen["m150"], "150");
    }

    #[test]
    fn wrong_type_everywhere() {
        let mut t = TestDb::new();
        t.run(&["SET", "s", "v"]);
        for argv in [
            &["ZADD", "s", "1", "a"][..],
            &["ZADD", "s", "XX", "1", "a"],
            &["ZINCRBY", "s", "1", "a"],
            &["ZREM", "s", "a"],
            &["ZSCORE", "s", "a"],
            &["ZMSCORE", "s", "a"],
            &["ZCARD", "s"],
            &["ZCOUNT", "s", "0", "1"],
            &["ZLEXCOUNT", "s", "-", "+"],
            &["ZRANGE", "s", "0", "-1"],
            &["ZRANGE", "s", "0", "1", "BYSCORE"],
            &["ZRANGEBYSCORE", "s", "0", "1"],
            &["ZREVRANGE", "s", "0", "1"],
            &["ZREVRANGEBYSCORE", "s", "1", "0"],
            &["ZRANGEBYLEX", "s", "-", "+"],
            &["ZREVRANGEBYLEX", "s", "+", "-"],
            &["ZRANGESTORE", "d", "s", "0", "-1"],
            &["ZRANK", "s", "a"],
            &["ZREVRANK", "s", "a", "WITHSCORE"],
            &["ZREMRANGEBYRANK", "s", "0", "1"],
            &["ZREMRANGEBYSCORE", "s", "0", "1"],
            &["ZREMRANGEBYLEX", "s", "-", "+"],
            &["ZPOPMIN", "s"],
            &["ZPOPMAX", "s", "0"],
            &["ZSCAN", "s", "0"],
        ] {
            assert_eq!(t.run(argv), WRONGTYPE, "{argv:?}");
        }
        // Argument errors come before the type check.
        assert_eq!(t.run(&["ZADD", "s", "x", "a"]), NOT_FLOAT);
        assert_eq!(t.run(&["ZRANGE", "s", "x", "1"]), NOT_INT);
        assert_eq!(
            t.run(&["ZPOPMIN", "s", "-1"]),
            "-ERR value is out of range, must be positive\r\n"
        );
        assert_eq!(t.run(&["GET", "s"]), "$1\r\nv\r\n");
        t.assert_digest_consistent();
    }

    #[test]
    fn expired_key_is_missing() {
        let mut t = TestDb::new();
        t.check(&[
            (&["ZADD", "z", "1", "a"], ":1\r\n"),
            (&["PEXPIRE", "z", "10"], ":1\r\n"),
        ]);
        t.now += 10;
        t.check(&[
            (&["ZCARD", "z"], ":0\r\n"),
            (&["ZADD", "z", "2", "b"], ":1\r\n"),
            (&["ZRANGE", "z", "0", "-1"], &bulks(&["b"])),
            (&["TTL", "z"], ":-1\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn command_table() {
        use crate::spec::flags::*;
        for s in super::COMMANDS {
            assert_eq!(s.group, "sorted-set");
        }
        let zadd = crate::lookup(b"zadd").unwrap();
        assert!(zadd.has(WRITE) && zadd.has(DENYOOM));
        assert_eq!(zadd.creates, crate::Creates::FirstKey);
        assert!(crate::lookup(b"zincrby").unwrap().has(DENYOOM));
        assert!(crate::lookup(b"zrem").unwrap().has(WRITE));
        assert!(crate::lookup(b"zrange").unwrap().has(READONLY));
    }
}

#[cfg(test)]
mod model {
    //! Random operations checked against a plain model, with the digest verified throughout.

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use crate::testing::TestDb;

    #[derive(Debug, Clone)]
    enum Op {
        Add(i8, u8),
        Incr(i8, u8),
        Rem(u8),
        PopMin(u8),
        PopMax(u8),
        RemRank(i8, i8),
        RemScore(i8, i8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (any::<i8>(), 0u8..20).prop_map(|(s, m)| Op::Add(s % 10, m)),
            1 => (any::<i8>(), 0u8..20).prop_map(|(s, m)| Op::Incr(s % 5, m)),
            1 => (0u8..20).prop_map(Op::Rem),
            1 => (0u8..4).prop_map(Op::PopMin),
            1 => (0u8..4).prop_map(Op::PopMax),
            1 => (any::<i8>(), any::<i8>()).prop_map(|(a, b)| Op::RemRank(a % 8, b % 8)),
            1 => (any::<i8>(), any::<i8>()).prop_map(|(a, b)| Op::RemScore(a % 10, b % 10)),
        ]
    }

    /// Members in Redis order: by score, then by member bytes.
    fn ordered(m: &BTreeMap<String, i64>) -> Vec<(String, i64)> {
        let mut v: Vec<_> = m.iter().map(|(k, s)| (k.clone(), *s)).collect();
        v.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    fn expected_range(m: &BTreeMap<String, i64>) -> String {
        let v = ordered(m);
        let mut s = format!("*{}\r\n", v.len() * 2);
        for (k, sc) in v {
            let sc = sc.to_string();
            s.push_str(&format!("${}\r\n{k}\r\n${}\r\n{sc}\r\n", k.len(), sc.len()));
        }
        s
    }

    /// A set larger than the linear-walk limit: ranks, rank ranges, score and lex ranges (with
    /// LIMIT, both directions) and removals by rank and lex, against a model.
    #[test]
    fn large_set_ranges_match_model() {
        let mut t = TestDb::new();
        let n = 1000usize;
        let names: Vec<String> = (0..n).map(|i| format!("m{i:04}")).collect();
        let mut argv = vec!["ZADD".to_string(), "lex".to_string()];
        let mut scored = vec!["ZADD".to_string(), "sc".to_string()];
        for (i, k) in names.iter().enumerate() {
            argv.extend(["0".to_string(), k.clone()]);
            scored.extend([(i % 50).to_string(), k.clone()]);
        }
        t.run(&argv);
        t.run(&scored);
        let mut by_score: Vec<(usize, &String)> =
            names.iter().enumerate().map(|(i, k)| (i % 50, k)).collect();
        by_score.sort();
        let flat = |v: &[&String]| {
            let mut s = format!("*{}\r\n", v.len());
            for k in v {
                s.push_str(&format!("${}\r\n{k}\r\n", k.len()));
            }
            s
        };
        let names_ref: Vec<&String> = names.iter().collect();
        for i in [0usize, 1, 499, 998, 999] {
            assert_eq!(t.run(&["ZRANK", "lex", &names[i]]), format!(":{i}\r\n"));
            assert_eq!(
                t.run(&["ZREVRANK", "lex", &names[i]]),
                format!(":{}\r\n", n - 1 - i)
            );
        }
        let pos = by_score
            .iter()
            .position(|(_, k)| *k == &names[777])
            .unwrap();
        assert_eq!(t.run(&["ZRANK", "sc", &names[777]]), format!(":{pos}\r\n"));
        assert_eq!(
            t.run(&["ZRANGE", "lex", "500", "502"]),
            flat(&names_ref[500..=502])
        );
        assert_eq!(
            t.run(&["ZRANGE", "lex", "-3", "-1", "REV"]),
            flat(&[&names[2], &names[1], &names[0]])
        );
        assert_eq!(
            t.run(&["ZRANGEBYLEX", "lex", "[m0100", "(m0105"]),
            flat(&names_ref[100..105])
        );
        assert_eq!(
            t.run(&["ZREVRANGEBYLEX", "lex", "(m0105", "-", "LIMIT", "2", "3"]),
            flat(&[&names[102], &names[101], &names[100]])
        );
        assert_eq!(t.run(&["ZLEXCOUNT", "lex", "(m0100", "[m0899"]), ":799\r\n");
        let in_score: Vec<&String> = by_score
            .iter()
            .filter(|(s, _)| (10..12).contains(s))
            .map(|(_, k)| *k)
            .collect();
        assert_eq!(
            t.run(&["ZRANGEBYSCORE", "sc", "10", "(12"]),
            flat(&in_score)
        );
        assert_eq!(
            t.run(&["ZRANGEBYSCORE", "sc", "10", "(12", "LIMIT", "5", "3"]),
            flat(&in_score[5..8])
        );
        let mut rev = in_score.clone();
        rev.reverse();
        assert_eq!(
            t.run(&["ZREVRANGEBYSCORE", "sc", "(12", "10", "LIMIT", "1", "2"]),
            flat(&rev[1..3])
        );
        assert_eq!(
            t.run(&["ZCOUNT", "sc", "(10", "12"]),
            format!(":{}\r\n", 40)
        );
        assert_eq!(t.run(&["ZREMRANGEBYRANK", "lex", "10", "19"]), ":10\r\n");
        assert_eq!(t.run(&["ZRANK", "lex", &names[20]]), ":10\r\n");
        assert_eq!(
            t.run(&["ZREMRANGEBYLEX", "lex", "[m0000", "[m0009"]),
            ":10\r\n"
        );
        assert_eq!(t.run(&["ZCARD", "lex"]), ":980\r\n");
        assert_eq!(t.run(&["ZRANGE", "lex", "0", "0"]), flat(&[&names[20]]));
        t.assert_digest_consistent();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_model(ops in proptest::collection::vec(op(), 1..60)) {
            let mut t = TestDb::new();
            let mut m: BTreeMap<String, i64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Add(s, k) => {
                        let k = format!("m{k}");
                        t.run(&["ZADD", "z", &s.to_string(), &k]);
                        m.insert(k, s.into());
                    }
                    Op::Incr(s, k) => {
                        let k = format!("m{k}");
                        t.run(&["ZINCRBY", "z", &s.to_string(), &k]);
                        *m.entry(k).or_insert(0) += i64::from(s);
                    }
                    Op::Rem(k) => {
                        let k = format!("m{k}");
                        t.run(&["ZREM", "z", &k]);
                        m.remove(&k);
                    }
                    Op::PopMin(n) | Op::PopMax(n) => {
                        let max = matches!(op, Op::PopMax(_));
                        t.run(&[if max { "ZPOPMAX" } else { "ZPOPMIN" }, "z", &n.to_string()]);
                        let mut v = ordered(&m);
                        if max {
                            v.reverse();
                        }
                        for (k, _) in v.into_iter().take(n.into()) {
                            m.remove(&k);
                        }
                    }
                    Op::RemRank(a, b) => {
                        t.run(&["ZREMRANGEBYRANK", "z", &a.to_string(), &b.to_string()]);
                        let v = ordered(&m);
                        if let Some((s, e)) = crate::util::index_range(a.into(), b.into(), v.len()) {
                            for (k, _) in &v[s..=e] {
                                m.remove(k);
                            }
                        }
                    }
                    Op::RemScore(a, b) => {
                        t.run(&["ZREMRANGEBYSCORE", "z", &a.to_string(), &format!("({b}")]);
                        m.retain(|_, s| !(*s >= i64::from(a) && *s < i64::from(b)));
                    }
                }
                prop_assert_eq!(t.run(&["ZRANGE", "z", "0", "-1", "WITHSCORES"]), expected_range(&m));
                prop_assert_eq!(t.run(&["ZCARD", "z"]), format!(":{}\r\n", m.len()));
            }
            t.assert_digest_consistent();
        }
    }
}
