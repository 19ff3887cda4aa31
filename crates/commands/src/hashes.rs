//! Hash commands.

use std::collections::HashSet;
use std::hash::Hash;

use ferrite_protocol::args::parse_i64;
use ferrite_protocol::number::{decimal_add, format_human_double};
use ferrite_protocol::{Args, ErrorReply, ReplyWriter};
use ferrite_storage::{HashRef, HashValue, Slot, Value};
use rand::Rng;

use crate::ctx::Ctx;
use crate::spec::flags::*;
use crate::spec::{CmdResult, CommandSpec, Creates, Handler, KEY1, spec};
use crate::util::{
    as_hash, as_hash_mut, int_bytes, parse_cursor, parse_scan_options, parse_stored_float,
};

const fn cmd(
    name: &'static str,
    arity: i32,
    flags: u32,
    creates: Creates,
    summary: &'static str,
    f: fn(&mut Ctx<'_, '_>, Args<'_>) -> CmdResult,
) -> CommandSpec {
    spec(
        name,
        arity,
        flags,
        KEY1,
        creates,
        "hash",
        summary,
        Handler::Data(f),
    )
}

const W: u32 = WRITE | DENYOOM;
const R: u32 = READONLY;

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "hset",
        -4,
        W | FAST,
        Creates::FirstKey,
        "Sets fields of a hash; returns how many fields were new.",
        hset,
    ),
    cmd(
        "hsetnx",
        4,
        W | FAST,
        Creates::FirstKey,
        "Sets a field of a hash only when it does not exist.",
        hsetnx,
    ),
    cmd(
        "hget",
        3,
        R | FAST,
        Creates::Nothing,
        "Returns the value of a field of a hash.",
        hget,
    ),
    cmd(
        "hmset",
        -4,
        W | FAST,
        Creates::FirstKey,
        "Sets fields of a hash (old form of HSET).",
        hmset,
    ),
    cmd(
        "hmget",
        -3,
        R | FAST,
        Creates::Nothing,
        "Returns the values of several fields of a hash.",
        hmget,
    ),
    cmd(
        "hdel",
        -3,
        WRITE | FAST,
        Creates::Nothing,
        "Deletes fields of a hash.",
        hdel,
    ),
    cmd(
        "hexists",
        3,
        R | FAST,
        Creates::Nothing,
        "Tells whether a field exists in a hash.",
        hexists,
    ),
    cmd(
        "hlen",
        2,
        R | FAST,
        Creates::Nothing,
        "Returns the number of fields of a hash.",
        hlen,
    ),
    cmd(
        "hkeys",
        2,
        R,
        Creates::Nothing,
        "Returns the fields of a hash.",
        hkeys,
    ),
    cmd(
        "hvals",
        2,
        R,
        Creates::Nothing,
        "Returns the values of a hash.",
        hvals,
    ),
    cmd(
        "hgetall",
        2,
        R,
        Creates::Nothing,
        "Returns all fields and values of a hash.",
        hgetall,
    ),
    cmd(
        "hincrby",
        4,
        W | FAST,
        Creates::FirstKey,
        "Increments the integer value of a field of a hash.",
        hincrby,
    ),
    cmd(
        "hincrbyfloat",
        4,
        W | FAST,
        Creates::FirstKey,
        "Increments the floating-point value of a field of a hash.",
        hincrbyfloat,
    ),
    cmd(
        "hstrlen",
        3,
        R | FAST,
        Creates::Nothing,
        "Returns the length of the value of a field of a hash.",
        hstrlen,
    ),
    cmd(
        "hscan",
        -3,
        R,
        Creates::Nothing,
        "Iterates over the fields and values of a hash.",
        hscan,
    ),
    cmd(
        "hrandfield",
        -2,
        R,
        Creates::Nothing,
        "Returns random fields of a hash.",
        hrandfield,
    ),
];

// ---------------------------------------------------------------------------------------------
// Random sampling, shared with the set commands.

/// Largest number of picks a negative (repeating) count may ask for. Redis would try to build
/// any such reply, however large; one request must not be able to make the server buffer
/// gigabytes, so beyond this the count is refused as out of range.
pub(crate) const MAX_RANDOM_REPEATS: u64 = 1 << 24;

/// Parses the count of HRANDFIELD/SRANDMEMBER: any i64 but i64::MIN, whose magnitude Redis
/// cannot negate.
pub(crate) fn parse_random_count(args: &Args<'_>, i: usize) -> Result<i64, ErrorReply> {
    let n = args.int(i)?;
    if n == i64::MIN {
        return Err(ErrorReply::err(
            "value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        ));
    }
    Ok(n)
}

/// Refuses a repeating count beyond [`MAX_RANDOM_REPEATS`] (checked after Redis's own checks).
pub(crate) fn check_repeats(count: i64) -> Result<(), ErrorReply> {
    if count < 0 && count.unsigned_abs() > MAX_RANDOM_REPEATS {
        return Err(ErrorReply::err("value is out of range"));
    }
    Ok(())
}

/// Picks `count` distinct elements out of `len` (`count < len`), in random order. When most
/// elements are wanted, shuffling a full copy is cheaper than rejecting duplicate picks; when
/// few are, picking at random until enough distinct ones are found avoids copying everything.
pub(crate) fn sample_distinct<T: Copy + Eq + Hash, G: Rng>(
    count: usize,
    len: usize,
    rng: &mut G,
    all: impl Iterator<Item = T>,
    mut pick: impl FnMut(&mut G) -> Option<T>,
) -> Vec<T> {
    if count.saturating_mul(3) > len {
        let mut v: Vec<T> = all.collect();
        let n = count.min(v.len());
        for i in 0..n {
            let j = rng.random_range(i..v.len());
            v.swap(i, j);
        }
        v.truncate(n);
        v
    } else {
        let mut seen = HashSet::with_capacity(count);
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let Some(x) = pick(rng) else { break };
            if seen.insert(x) {
                out.push(x);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------

/// Sets field/value pairs from argument 2 on, creating the hash; returns how many were new.
fn set_pairs(ctx: &mut Ctx<'_, '_>, args: Args<'_>, name: &str) -> Result<i64, ErrorReply> {
    if !args.len().is_multiple_of(2) {
        return Err(ErrorReply::wrong_arity(name));
    }
    let pairs = (2..args.len())
        .step_by(2)
        .map(|i| (args.get(i), args.get(i + 1)));
    let added = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => {
            let h = as_hash_mut(o.get_mut())?;
            pairs.filter(|(f, v)| h.insert(f, v)).count()
        }
        Slot::Vacant(v) => {
            let mut h = HashValue::default();
            let n = pairs.filter(|(f, v)| h.insert(f, v)).count();
            v.insert(Value::Hash(h), None);
            n
        }
    };
    Ok(added as i64)
}

fn hset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let n = set_pairs(ctx, args, "hset")?;
    ctx.w.int(n);
    Ok(())
}

fn hmset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    set_pairs(ctx, args, "hmset")?;
    ctx.w.ok();
    Ok(())
}

fn hsetnx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (field, value) = (args.get(2), args.get(3));
    let done = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => {
            let h = as_hash_mut(o.get_mut())?;
            !h.contains(field) && h.insert(field, value)
        }
        Slot::Vacant(v) => {
            let mut h = HashValue::default();
            h.insert(field, value);
            v.insert(Value::Hash(h), None);
            true
        }
    };
    ctx.w.int(i64::from(done));
    Ok(())
}

/// The hash at `key`, None when missing, WRONGTYPE for another type.
fn read<'d>(ctx: &'d mut Ctx<'_, '_>, key: &[u8]) -> Result<Option<HashRef<'d>>, ErrorReply> {
    ctx.db.get(key, ctx.now).map(as_hash).transpose()
}

fn hget(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let v = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => as_hash(e)?.get(args.get(2)),
        None => None,
    };
    ctx.w.opt_bulk(v);
    Ok(())
}

fn hmget(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let h = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => Some(as_hash(e)?),
        None => None,
    };
    ctx.w.array(args.len() - 2);
    for f in args.tail(2).iter() {
        ctx.w.opt_bulk(h.and_then(|h| h.get(f)));
    }
    Ok(())
}

fn hdel(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let n = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => {
            let h = as_hash_mut(o.get_mut())?;
            args.tail(2).iter().filter(|f| h.remove(f)).count()
        }
        Slot::Vacant(_) => 0,
    };
    ctx.w.int(n as i64);
    Ok(())
}

fn hexists(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let yes = read(ctx, args.get(1))?.is_some_and(|h| h.contains(args.get(2)));
    ctx.w.int(i64::from(yes));
    Ok(())
}

fn hlen(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let n = read(ctx, args.get(1))?.map_or(0, HashRef::len);
    ctx.w.int(n as i64);
    Ok(())
}

fn hstrlen(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let n = read(ctx, args.get(1))?
        .and_then(|h| h.get(args.get(2)))
        .map_or(0, <[u8]>::len);
    ctx.w.int(n as i64);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Fields,
    Values,
    Both,
}

fn getall(ctx: &mut Ctx<'_, '_>, args: Args<'_>, part: Part) -> CmdResult {
    let h = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => Some(as_hash(e)?),
        None => None,
    };
    let n = h.map_or(0, HashRef::len);
    if part == Part::Both {
        ctx.w.map(n);
    } else {
        ctx.w.array(n);
    }
    for (f, v) in h.into_iter().flat_map(HashRef::iter) {
        if part != Part::Values {
            ctx.w.bulk(f);
        }
        if part != Part::Fields {
            ctx.w.bulk(v);
        }
    }
    Ok(())
}

fn hkeys(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    getall(ctx, args, Part::Fields)
}

fn hvals(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    getall(ctx, args, Part::Values)
}

fn hgetall(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    getall(ctx, args, Part::Both)
}

/// Replaces a field's value through `f(old)`, creating the hash or field as needed; returns
/// the stored value. `f` sees `None` when the field does not exist.
fn update_field<T>(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    field: &[u8],
    f: impl FnOnce(Option<&[u8]>) -> Result<(T, Vec<u8>), ErrorReply>,
) -> Result<T, ErrorReply> {
    match ctx.db.entry(key, ctx.now) {
        Slot::Occupied(mut o) => {
            let h = as_hash_mut(o.get_mut())?;
            let (r, new) = f(h.get(field))?;
            h.insert(field, &new);
            Ok(r)
        }
        Slot::Vacant(v) => {
            let (r, new) = f(None)?;
            let mut h = HashValue::default();
            h.insert(field, &new);
            v.insert(Value::Hash(h), None);
            Ok(r)
        }
    }
}

fn hincrby(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let delta = args.int(3)?;
    let n = update_field(ctx, args.get(1), args.get(2), |old| {
        let cur = match old {
            Some(s) => {
                parse_i64(s).ok_or_else(|| ErrorReply::err("hash value is not an integer"))?
            }
            None => 0,
        };
        let n = cur.checked_add(delta).ok_or_else(ErrorReply::overflow)?;
        Ok((n, int_bytes(n)))
    })?;
    ctx.w.int(n);
    Ok(())
}

fn hincrbyfloat(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let delta = args.float(3)?;
    if delta.is_infinite() {
        return Err(ErrorReply::err("value is NaN or Infinity"));
    }
    let delta_text = std::str::from_utf8(args.get(3)).unwrap_or_default();
    let text = update_field(ctx, args.get(1), args.get(2), |old| {
        let (cur, cur_text) = match old {
            Some(s) => (
                parse_stored_float(s)
                    .ok_or_else(|| ErrorReply::err("hash value is not a float"))?,
                String::from_utf8_lossy(s).into_owned(),
            ),
            None => (0.0, "0".to_string()),
        };
        let v = cur + delta;
        if !v.is_finite() {
            return Err(ErrorReply::nan_or_inf());
        }
        // Exact decimal addition matches Redis's long double results (0.1 + 0.2 = 0.3).
        let text = decimal_add(&cur_text, delta_text)
            .unwrap_or_else(|| format_human_double(v))
            .into_bytes();
        Ok((text.clone(), text))
    })?;
    // Float formatting may differ elsewhere: journal the result, as Redis does.
    ctx.propagate(&[b"HSET", args.get(1), args.get(2), &text]);
    ctx.w.bulk(&text);
    Ok(())
}

fn hscan(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let cursor = parse_cursor(args.get(2))?;
    // Redis checks the key before the options: a missing key gives an empty page even with
    // options it would otherwise refuse.
    let h = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => as_hash(e)?,
        None => {
            crate::util::empty_scan_page(ctx.w);
            return Ok(());
        }
    };
    let opts = parse_scan_options(&args, 3, false, true)?;
    // The scan callback's borrows end with each call, so the page is copied out.
    let mut found: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let next = h.scan(cursor, opts.count, |f, v| {
        if opts.matches(f) {
            let v = if opts.novalues {
                Vec::new()
            } else {
                v.to_vec()
            };
            found.push((f.to_vec(), v));
        }
    });
    ctx.w.array(2);
    ctx.w.bulk(itoa::Buffer::new().format(next).as_bytes());
    ctx.w.array(found.len() * if opts.novalues { 1 } else { 2 });
    for (f, v) in found {
        ctx.w.bulk(&f);
        if !opts.novalues {
            ctx.w.bulk(&v);
        }
    }
    Ok(())
}

fn hrandfield(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len() == 2 {
        let f = match ctx.db.get(args.get(1), ctx.now) {
            Some(e) => as_hash(e)?.random(ctx.rng).map(|(f, _)| f),
            None => None,
        };
        ctx.w.opt_bulk(f);
        return Ok(());
    }
    let count = parse_random_count(&args, 2)?;
    let withvalues = match args.len() {
        3 => false,
        4 if args.is(3, "WITHVALUES") => true,
        _ => return Err(ErrorReply::syntax()),
    };
    // Redis bounds the count so that twice it (fields and values) still fits a long.
    if withvalues && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count) {
        return Err(ErrorReply::err("value is out of range"));
    }
    check_repeats(count)?;
    let Some(e) = ctx.db.get(args.get(1), ctx.now) else {
        ctx.w.array(0);
        return Ok(());
    };
    let h = as_hash(e)?;
    let rng = &mut *ctx.rng;
    let w = &mut *ctx.w;
    let resp3 = w.is_resp3();
    // RESP3 nests each field/value pair; RESP2 flattens them.
    let per_pick = if withvalues && !resp3 { 2 } else { 1 };
    let emit = |w: &mut ReplyWriter<'_>, (f, v): (&[u8], &[u8])| {
        if withvalues && resp3 {
            w.array(2);
        }
        w.bulk(f);
        if withvalues {
            w.bulk(v);
        }
    };
    if count < 0 {
        // Streamed rather than collected: repeats may far outnumber the fields.
        let n = count.unsigned_abs() as usize;
        w.array(n * per_pick);
        for _ in 0..n {
            // The reply outgrew the connection's output budget: it will not be sent.
            if w.is_full() {
                break;
            }
            // A stored hash is never empty, so a pick always exists.
            emit(w, h.random(rng).unwrap_or((b"", b"")));
        }
        return Ok(());
    }
    let picks: Vec<(&[u8], &[u8])> = if count as u64 >= h.len() as u64 {
        h.iter().collect()
    } else {
        sample_distinct(count as usize, h.len(), rng, h.iter(), |r| h.random(r))
    };
    w.array(picks.len() * per_pick);
    for p in picks {
        emit(w, p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ferrite_protocol::Protocol;

    use crate::testing::TestDb;

    const WRONGTYPE: &str =
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";

    fn arity(cmd: &str) -> String {
        format!("-ERR wrong number of arguments for '{cmd}' command\r\n")
    }

    #[test]
    fn set_get_delete() {
        let mut t = TestDb::new();
        t.check(&[
            (&["HSET", "h", "a", "1", "b", "2"], ":2\r\n"),
            (&["HSET", "h", "a", "x", "c", "3", "c", "4"], ":1\r\n"),
            (&["HGET", "h", "a"], "$1\r\nx\r\n"),
            (&["HGET", "h", "c"], "$1\r\n4\r\n"),
            (&["HGET", "h", "nope"], "$-1\r\n"),
            (&["HGET", "none", "a"], "$-1\r\n"),
            (&["HSET", "h", "a"], &arity("hset")),
            (&["HSET", "h", "a", "1", "b"], &arity("hset")),
            (&["HSET", "h"], &arity("hset")),
            (&["HMSET", "h", "a", "1", "b"], &arity("hmset")),
            (&["HMSET", "h", "a", "1", "d", ""], "+OK\r\n"),
            (&["HGET", "h", "d"], "$0\r\n\r\n"),
            (&["HSETNX", "h", "a", "5"], ":0\r\n"),
            (&["HSETNX", "h", "z", "5"], ":1\r\n"),
            (&["HSETNX", "n", "f", "v"], ":1\r\n"),
            (&["HSETNX", "n", "f"], &arity("hsetnx")),
            (&["HGET", "n", "f"], "$1\r\nv\r\n"),
            (
                &["HMGET", "h", "a", "nope", "z"],
                "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n5\r\n",
            ),
            (&["HMGET", "none", "a", "b"], "*2\r\n$-1\r\n$-1\r\n"),
            (&["HMGET", "h"], &arity("hmget")),
            (&["HLEN", "h"], ":5\r\n"),
            (&["HLEN", "none"], ":0\r\n"),
            (&["HEXISTS", "h", "a"], ":1\r\n"),
            (&["HEXISTS", "h", "q"], ":0\r\n"),
            (&["HEXISTS", "none", "a"], ":0\r\n"),
            (&["HSTRLEN", "h", "c"], ":1\r\n"),
            (&["HSTRLEN", "h", "d"], ":0\r\n"),
            (&["HSTRLEN", "h", "q"], ":0\r\n"),
            (&["HSTRLEN", "none", "q"], ":0\r\n"),
            (&["HDEL", "h", "a", "nope", "z", "a"], ":2\r\n"),
            (&["HDEL", "none", "a"], ":0\r\n"),
            (&["HDEL", "h"], &arity("hdel")),
            (&["HLEN", "h"], ":3\r\n"),
            (&["HDEL", "h", "b", "c", "d"], ":3\r\n"),
            (&["EXISTS", "h"], ":0\r\n"),
            (&["HLEN", "h"], ":0\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn whole_hash_replies() {
        let mut t = TestDb::new();
        t.check(&[
            (&["HSET", "h", "a", "1", "b", "2"], ":2\r\n"),
            (&["HKEYS", "h"], "*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
            (&["HVALS", "h"], "*2\r\n$1\r\n1\r\n$1\r\n2\r\n"),
            (
                &["HGETALL", "h"],
                "*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n",
            ),
            (&["HKEYS", "none"], "*0\r\n"),
            (&["HVALS", "none"], "*0\r\n"),
            (&["HGETALL", "none"], "*0\r\n"),
            (&["HGETALL"], &arity("hgetall")),
            (&["HKEYS", "h", "x"], &arity("hkeys")),
        ]);
        t.proto = Protocol::Resp3;
        t.check(&[
            (
                &["HGETALL", "h"],
                "%2\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n",
            ),
            (&["HGETALL", "none"], "%0\r\n"),
            (&["HKEYS", "h"], "*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
            (&["HMGET", "h", "a", "x"], "*2\r\n$1\r\n1\r\n_\r\n"),
            (&["HGET", "h", "x"], "_\r\n"),
        ]);
    }

    #[test]
    fn hincrbyfloat_reads_back_the_long_decimals_it_writes() {
        let mut t = TestDb::new();
        let big = format!("1{}", "0".repeat(300));
        let big_plus = format!("2{}", "0".repeat(300));
        t.check(&[
            (
                &["HINCRBYFLOAT", "h", "f", "1e300"],
                &format!("${}\r\n{big}\r\n", big.len()),
            ),
            (
                &["HINCRBYFLOAT", "h", "f", "1e300"],
                &format!("${}\r\n{big_plus}\r\n", big.len()),
            ),
            (
                &["HSET", "h", "g", &format!("1{}", "0".repeat(6000))],
                ":1\r\n",
            ),
            (
                &["HINCRBYFLOAT", "h", "g", "1"],
                "-ERR hash value is not a float\r\n",
            ),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn increments() {
        let mut t = TestDb::new();
        t.check(&[
            (&["HINCRBY", "h", "n", "5"], ":5\r\n"),
            (&["HINCRBY", "h", "n", "-7"], ":-2\r\n"),
            (&["HGET", "h", "n"], "$2\r\n-2\r\n"),
            (
                &["HINCRBY", "h", "n", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["HSET", "h", "s", "abc", "f", "1.5", "sp", " 1"], ":3\r\n"),
            (
                &["HINCRBY", "h", "s", "1"],
                "-ERR hash value is not an integer\r\n",
            ),
            (
                &["HINCRBY", "h", "f", "1"],
                "-ERR hash value is not an integer\r\n",
            ),
            (
                &["HINCRBY", "h", "sp", "1"],
                "-ERR hash value is not an integer\r\n",
            ),
            (
                &["HINCRBY", "h", "m", "-9223372036854775808"],
                ":-9223372036854775808\r\n",
            ),
            (
                &["HINCRBY", "h", "m", "-1"],
                "-ERR increment or decrement would overflow\r\n",
            ),
            (
                &["HINCRBY", "h", "p", "9223372036854775807"],
                ":9223372036854775807\r\n",
            ),
            (
                &["HINCRBY", "h", "p", "1"],
                "-ERR increment or decrement would overflow\r\n",
            ),
            (&["HINCRBY", "h", "p", "0"], ":9223372036854775807\r\n"),
            (&["HINCRBY", "h", "n"], &arity("hincrby")),
            (&["HINCRBYFLOAT", "h", "f", "1"], "$3\r\n2.5\r\n"),
            (&["HINCRBYFLOAT", "h", "g", "0.1"], "$3\r\n0.1\r\n"),
            (&["HINCRBYFLOAT", "h", "g", "0.2"], "$3\r\n0.3\r\n"),
            (&["HINCRBYFLOAT", "h", "e", "5.0e3"], "$4\r\n5000\r\n"),
            (&["HGET", "h", "e"], "$4\r\n5000\r\n"),
            (&["HINCRBYFLOAT", "h", "n", "1.5"], "$4\r\n-0.5\r\n"),
            (&["HINCRBYFLOAT", "h", "e", "-5000"], "$1\r\n0\r\n"),
            (
                &["HINCRBYFLOAT", "h", "s", "1"],
                "-ERR hash value is not a float\r\n",
            ),
            (
                &["HINCRBYFLOAT", "h", "f", "abc"],
                "-ERR value is not a valid float\r\n",
            ),
            (
                &["HINCRBYFLOAT", "h", "f", "nan"],
                "-ERR value is not a valid float\r\n",
            ),
            (
                &["HINCRBYFLOAT", "h", "f", "inf"],
                "-ERR value is NaN or Infinity\r\n",
            ),
            (
                &["HINCRBYFLOAT", "h", "f", "-inf"],
                "-ERR value is NaN or Infinity\r\n",
            ),
            (
                &["HSET", "h", "big", "1.7976931348623157e308", "i", "inf"],
                ":2\r\n",
            ),
            (
                &["HINCRBYFLOAT", "h", "big", "1.7976931348623157e308"],
                "-ERR increment would produce NaN or Infinity\r\n",
            ),
            (
                &["HINCRBYFLOAT", "h", "i", "1"],
                "-ERR increment would produce NaN or Infinity\r\n",
            ),
            (&["HINCRBYFLOAT", "h", "f"], &arity("hincrbyfloat")),
            // Failed increments change nothing.
            (&["HGET", "h", "big"], "$22\r\n1.7976931348623157e308\r\n"),
            (&["HINCRBYFLOAT", "new", "f", "-1.25"], "$5\r\n-1.25\r\n"),
            (&["HINCRBY", "new2", "f", "3"], ":3\r\n"),
            (
                &["HINCRBY", "new3", "f", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["EXISTS", "new3"], ":0\r\n"),
        ]);
        t.proto = Protocol::Resp3;
        // A bulk string, not a RESP3 double, as in Redis.
        t.check(&[(&["HINCRBYFLOAT", "h", "f", "1"], "$3\r\n3.5\r\n")]);
        t.assert_digest_consistent();
    }

    #[test]
    fn wrong_type() {
        let mut t = TestDb::new();
        t.run(&["SET", "s", "v"]);
        for argv in [
            &["HSET", "s", "a", "1"][..],
            &["HMSET", "s", "a", "1"],
            &["HSETNX", "s", "a", "1"],
            &["HGET", "s", "a"],
            &["HMGET", "s", "a"],
            &["HDEL", "s", "a"],
            &["HEXISTS", "s", "a"],
            &["HLEN", "s"],
            &["HKEYS", "s"],
            &["HVALS", "s"],
            &["HGETALL", "s"],
            &["HINCRBY", "s", "a", "1"],
            &["HINCRBYFLOAT", "s", "a", "1"],
            &["HSTRLEN", "s", "a"],
            &["HSCAN", "s", "0"],
            &["HSCAN", "s", "0", "COUNT", "0"],
            &["HRANDFIELD", "s"],
            &["HRANDFIELD", "s", "0"],
            &["HRANDFIELD", "s", "-3", "WITHVALUES"],
        ] {
            assert_eq!(t.run(argv), WRONGTYPE, "{argv:?}");
        }
        // Argument errors come before the type check, as in Redis.
        t.check(&[
            (
                &["HINCRBY", "s", "a", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["HINCRBYFLOAT", "s", "a", "inf"],
                "-ERR value is NaN or Infinity\r\n",
            ),
            (&["HSCAN", "s", "x"], "-ERR invalid cursor\r\n"),
            (
                &["HRANDFIELD", "s", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["GET", "s"], "$1\r\nv\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    /// Walks HSCAN to completion and returns every (field, value) seen.
    fn scan_all(t: &mut TestDb, extra: &[&str]) -> Vec<String> {
        let mut cursor = "0".to_string();
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            let mut argv = vec!["HSCAN", "h", &cursor];
            argv.extend_from_slice(extra);
            let reply = t.run(&argv);
            let parts: Vec<&str> = reply.split("\r\n").collect();
            assert_eq!(parts[0], "*2");
            let next = parts[2].to_string();
            for p in parts.iter().skip(5).step_by(2) {
                if !p.is_empty() {
                    seen.push(p.to_string());
                }
            }
            cursor = next;
            if cursor == "0" {
                return seen;
            }
        }
        panic!("HSCAN did not finish");
    }

    #[test]
    fn scan() {
        let mut t = TestDb::new();
        for i in 0..200 {
            t.run(&["HSET", "h", &format!("f{i}"), &format!("v{i}")]);
        }
        let all = scan_all(&mut t, &["COUNT", "7"]);
        let fields: std::collections::HashSet<_> =
            all.iter().filter(|s| s.starts_with('f')).collect();
        let values: std::collections::HashSet<_> =
            all.iter().filter(|s| s.starts_with('v')).collect();
        assert_eq!((fields.len(), values.len()), (200, 200));
        let only: std::collections::HashSet<_> = scan_all(&mut t, &["MATCH", "f1?", "NOVALUES"])
            .into_iter()
            .collect();
        let want: std::collections::HashSet<_> = (10..20).map(|i| format!("f{i}")).collect();
        assert_eq!(only, want);
        t.run(&["HSET", "one", "f", "v"]);
        t.check(&[
            (
                &["HSCAN", "one", "0"],
                "*2\r\n$1\r\n0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
            ),
            (
                &["HSCAN", "one", "0", "NOVALUES"],
                "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nf\r\n",
            ),
            (
                &["HSCAN", "one", "0", "MATCH", "x*"],
                "*2\r\n$1\r\n0\r\n*0\r\n",
            ),
            (&["HSCAN", "none", "0"], "*2\r\n$1\r\n0\r\n*0\r\n"),
            // Redis answers a missing key before looking at the options.
            (&["HSCAN", "none", "0", "BOGUS"], "*2\r\n$1\r\n0\r\n*0\r\n"),
            (&["HSCAN", "one", "x"], "-ERR invalid cursor\r\n"),
            (&["HSCAN", "one", "-1"], "-ERR invalid cursor\r\n"),
            (
                &["HSCAN", "one", "0", "COUNT", "0"],
                "-ERR syntax error\r\n",
            ),
            (
                &["HSCAN", "one", "0", "COUNT", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["HSCAN", "one", "0", "MATCH"], "-ERR syntax error\r\n"),
            (
                &["HSCAN", "one", "0", "TYPE", "hash"],
                "-ERR syntax error\r\n",
            ),
            (&["HSCAN", "one"], &arity("hscan")),
        ]);
        t.proto = Protocol::Resp3;
        t.check(&[(
            &["HSCAN", "one", "0"],
            "*2\r\n$1\r\n0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
        )]);
    }

    /// Splits a flat RESP2 reply of bulk strings into its strings.
    fn bulks(reply: &str) -> Vec<String> {
        reply
            .split("\r\n")
            .skip(2)
            .step_by(2)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn randfield() {
        let mut t = TestDb::new();
        t.run(&["HSET", "h", "a", "1", "b", "2", "c", "3"]);
        let one = t.run(&["HRANDFIELD", "h"]);
        assert!(["$1\r\na\r\n", "$1\r\nb\r\n", "$1\r\nc\r\n"].contains(&one.as_str()));
        for n in ["1", "2", "3"] {
            let got = bulks(&t.run(&["HRANDFIELD", "h", n]));
            let distinct: std::collections::HashSet<_> = got.iter().collect();
            assert_eq!(got.len().to_string(), n);
            assert_eq!(distinct.len(), got.len());
        }
        let all = bulks(&t.run(&["HRANDFIELD", "h", "10"]));
        assert_eq!(all, ["a", "b", "c"]);
        let rep = bulks(&t.run(&["HRANDFIELD", "h", "-20"]));
        assert_eq!(rep.len(), 20);
        assert!(rep.iter().all(|f| ["a", "b", "c"].contains(&f.as_str())));
        let pairs = bulks(&t.run(&["HRANDFIELD", "h", "-5", "WITHVALUES"]));
        assert_eq!(pairs.len(), 10);
        for p in pairs.chunks(2) {
            let want = match p[0].as_str() {
                "a" => "1",
                "b" => "2",
                _ => "3",
            };
            assert_eq!(p[1], want);
        }
        // A large hash with a small count takes the pick-until-distinct path.
        for i in 0..100 {
            t.run(&["HSET", "big", &format!("f{i}"), "v"]);
        }
        let got = bulks(&t.run(&["HRANDFIELD", "big", "10"]));
        let distinct: std::collections::HashSet<_> = got.iter().collect();
        assert_eq!((got.len(), distinct.len()), (10, 10));
        let got = bulks(&t.run(&["HRANDFIELD", "big", "90", "withvalues"]));
        let distinct: std::collections::HashSet<_> = got.iter().step_by(2).collect();
        assert_eq!((got.len(), distinct.len()), (180, 90));
        t.check(&[
            (&["HRANDFIELD", "none"], "$-1\r\n"),
            (&["HRANDFIELD", "none", "3"], "*0\r\n"),
            (&["HRANDFIELD", "none", "-3", "WITHVALUES"], "*0\r\n"),
            (&["HRANDFIELD", "h", "0"], "*0\r\n"),
            (&["HRANDFIELD", "h", "0", "WITHVALUES"], "*0\r\n"),
            (
                &["HRANDFIELD", "h", "10", "WITHVALUES"],
                "*6\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n$1\r\nc\r\n$1\r\n3\r\n",
            ),
            (
                &["HRANDFIELD", "h", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["HRANDFIELD", "h", "1", "WITHVALUE"], "-ERR syntax error\r\n"),
            (
                &["HRANDFIELD", "h", "1", "WITHVALUES", "x"],
                "-ERR syntax error\r\n",
            ),
            (
                &["HRANDFIELD", "h", "-9223372036854775808"],
                "-ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807\r\n",
            ),
            (
                &["HRANDFIELD", "h", "4611686018427387904", "WITHVALUES"],
                "-ERR value is out of range\r\n",
            ),
            (
                &["HRANDFIELD", "h", "-4611686018427387904", "WITHVALUES"],
                "-ERR value is out of range\r\n",
            ),
            (&["HRANDFIELD", "h", "9223372036854775807"], "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"),
            // Deviation: huge repeating counts are refused instead of building a giant reply.
            (
                &["HRANDFIELD", "h", "-9223372036854775807"],
                "-ERR value is out of range\r\n",
            ),
            (&["HRANDFIELD"], &arity("hrandfield")),
        ]);
        t.proto = Protocol::Resp3;
        t.check(&[
            (&["HRANDFIELD", "none"], "_\r\n"),
            (
                &["HRANDFIELD", "h", "10", "WITHVALUES"],
                "*3\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$1\r\nb\r\n$1\r\n2\r\n*2\r\n$1\r\nc\r\n$1\r\n3\r\n",
            ),
            (&["HRANDFIELD", "h", "10"], "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"),
        ]);
        let r = t.run(&["HRANDFIELD", "h", "-2", "WITHVALUES"]);
        assert!(r.starts_with("*2\r\n*2\r\n$1\r\n"), "{r}");
    }

    #[test]
    fn expired_hash_is_missing() {
        let mut t = TestDb::new();
        t.run(&["HSET", "h", "a", "1"]);
        t.run(&["PEXPIRE", "h", "10"]);
        t.now += 10;
        t.check(&[
            (&["HGET", "h", "a"], "$-1\r\n"),
            (&["HSET", "h", "b", "2"], ":1\r\n"),
            (&["HGETALL", "h"], "*2\r\n$1\r\nb\r\n$1\r\n2\r\n"),
            (&["TTL", "h"], ":-1\r\n"),
        ]);
        t.assert_digest_consistent();
    }
}
