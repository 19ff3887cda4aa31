//! Generic key commands: existence, type, iteration, renaming, copying, expiry, flushing.

use ferrite_protocol::{Args, ErrorReply};
use ferrite_storage::glob::Glob;
use ferrite_storage::{Slot, ValueType};

use crate::ctx::Ctx;
use crate::spec::flags::*;
use crate::spec::{ALL_KEYS, CmdResult, CommandSpec, Creates, KEY1, KEYS12, NO_KEYS};
use crate::util::{parse_cursor, parse_scan_options};

crate::command_family!("generic");

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "del",
        -2,
        WRITE,
        ALL_KEYS,
        Creates::Nothing,
        "Deletes keys.",
        del,
    ),
    cmd(
        "unlink",
        -2,
        WRITE | FAST,
        ALL_KEYS,
        Creates::Nothing,
        "Deletes keys, freeing large values in the background.",
        del,
    ),
    cmd(
        "exists",
        -2,
        READONLY | FAST,
        ALL_KEYS,
        Creates::Nothing,
        "Counts how many of the given keys exist.",
        exists,
    ),
    cmd(
        "type",
        2,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the type of the value stored at a key.",
        type_cmd,
    ),
    cmd(
        "keys",
        2,
        READONLY,
        NO_KEYS,
        Creates::Nothing,
        "Returns all key names that match a pattern.",
        keys,
    ),
    cmd(
        "scan",
        -2,
        READONLY,
        NO_KEYS,
        Creates::Nothing,
        "Iterates over the key names.",
        scan,
    ),
    cmd(
        "rename",
        3,
        WRITE,
        KEYS12,
        // The source disappears as the destination appears: never more keys, so no
        // quota applies (Redis does not flag RENAME denyoom either).
        Creates::Nothing,
        "Renames a key, overwriting the destination.",
        rename,
    ),
    cmd(
        "renamenx",
        3,
        WRITE | FAST,
        KEYS12,
        // The source disappears as the destination appears: never more keys, so no
        // quota applies (Redis does not flag RENAME denyoom either).
        Creates::Nothing,
        "Renames a key only when the destination does not exist.",
        renamenx,
    ),
    cmd(
        "randomkey",
        1,
        READONLY,
        NO_KEYS,
        Creates::Nothing,
        "Returns a random key name.",
        randomkey,
    ),
    cmd(
        "copy",
        -3,
        WRITE | DENYOOM,
        KEYS12,
        Creates::SecondKey,
        "Copies the value of a key to a new key.",
        copy,
    ),
    cmd(
        "expire",
        -3,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Sets the expiry of a key in seconds.",
        expire,
    ),
    cmd(
        "pexpire",
        -3,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Sets the expiry of a key in milliseconds.",
        pexpire,
    ),
    cmd(
        "expireat",
        -3,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Sets the expiry of a key to a Unix time in seconds.",
        expireat,
    ),
    cmd(
        "pexpireat",
        -3,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Sets the expiry of a key to a Unix time in milliseconds.",
        pexpireat,
    ),
    cmd(
        "ttl",
        2,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the time to live of a key in seconds.",
        ttl,
    ),
    cmd(
        "pttl",
        2,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the time to live of a key in milliseconds.",
        pttl,
    ),
    cmd(
        "expiretime",
        2,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the expiry of a key as a Unix time in seconds.",
        expiretime,
    ),
    cmd(
        "pexpiretime",
        2,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the expiry of a key as a Unix time in milliseconds.",
        pexpiretime,
    ),
    cmd(
        "persist",
        2,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Removes the expiry of a key.",
        persist,
    ),
    cmd(
        "touch",
        -2,
        READONLY | FAST,
        ALL_KEYS,
        Creates::Nothing,
        "Counts how many of the given keys exist (and marks them used).",
        exists,
    ),
    cmd(
        "dbsize",
        1,
        READONLY | FAST,
        NO_KEYS,
        Creates::Nothing,
        "Returns the number of keys.",
        dbsize,
    ),
    cmd(
        "flushdb",
        -1,
        WRITE,
        NO_KEYS,
        Creates::Nothing,
        "Removes every key of the tenant.",
        flushdb,
    ),
    cmd(
        "flushall",
        -1,
        WRITE,
        NO_KEYS,
        Creates::Nothing,
        "Removes every key of the tenant (tenants are isolated, so this equals FLUSHDB).",
        flushdb,
    ),
];

fn del(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut n = 0;
    for key in args.tail(1).iter() {
        if let Some(e) = ctx.db.remove(key, ctx.now) {
            ctx.garbage.defer(e.value().elements(), e);
            n += 1;
        }
    }
    ctx.w.int(n);
    Ok(())
}

fn exists(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let now = ctx.now;
    let n = args
        .tail(1)
        .iter()
        .filter(|k| ctx.db.contains(k, now))
        .count();
    ctx.w.int(n as i64);
    Ok(())
}

fn type_cmd(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let t = ctx
        .db
        .get(args.get(1), ctx.now)
        .map_or("none", |e| e.value_type().name());
    ctx.w.simple(t);
    Ok(())
}

fn keys(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let glob = Glob::new(args.get(1), false);
    let now = ctx.now;
    let found: Vec<&[u8]> = ctx
        .db
        .iter()
        .filter(|(k, e)| !e.is_expired(now) && glob.matches(k))
        .map(|(k, _)| k)
        .collect();
    ctx.w.array(found.len());
    for k in found {
        ctx.w.bulk(k);
    }
    Ok(())
}

fn scan(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let cursor = parse_cursor(args.get(1))?;
    let opts = parse_scan_options(&args, 2, true, false)?;
    // Redis accepts unknown type names and simply matches nothing.
    let type_filter = opts.type_filter.map(ValueType::from_name);
    let mut found = Vec::new();
    let next = ctx.db.scan(cursor, opts.count, ctx.now, |k, e| {
        if opts.matches(k) && type_filter.is_none_or(|t| t == Some(e.value_type())) {
            found.push(k.to_vec());
        }
    });
    ctx.w.array(2);
    ctx.w.bulk(itoa::Buffer::new().format(next).as_bytes());
    ctx.w.array(found.len());
    for k in &found {
        ctx.w.bulk(k);
    }
    Ok(())
}

fn rename_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, nx: bool) -> Result<bool, ErrorReply> {
    let (src, dst) = (args.get(1), args.get(2));
    let now = ctx.now;
    if !ctx.db.contains(src, now) {
        return Err(ErrorReply::no_such_key());
    }
    if src == dst {
        return Ok(!nx);
    }
    if nx && ctx.db.contains(dst, now) {
        return Ok(false);
    }
    let Some(entry) = ctx.db.remove(src, now) else {
        return Err(ErrorReply::no_such_key());
    };
    let (value, expire) = entry.into_parts();
    match ctx.db.entry(dst, now) {
        Slot::Occupied(mut o) => {
            let old = o.swap_value(value);
            o.get_mut().set_expire_at(expire);
            ctx.garbage.defer(old.elements(), old);
        }
        Slot::Vacant(v) => v.insert(value, expire),
    }
    Ok(true)
}

fn rename(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    rename_generic(ctx, args, false)?;
    ctx.w.ok();
    Ok(())
}

fn renamenx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let done = rename_generic(ctx, args, true)?;
    ctx.w.int(i64::from(done));
    Ok(())
}

fn randomkey(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    match ctx.db.random_key(ctx.now, ctx.rng) {
        Some(k) => ctx.w.bulk(&k),
        None => ctx.w.null(),
    }
    Ok(())
}

fn copy(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (src, dst) = (args.get(1), args.get(2));
    let mut replace = false;
    let mut i = 3;
    while i < args.len() {
        if args.is(i, "REPLACE") {
            replace = true;
        } else if args.is(i, "DB") && i + 1 < args.len() {
            if args.int(i + 1)? != 0 {
                return Err(ErrorReply::err("DB index is out of range"));
            }
            i += 1;
        } else {
            return Err(ErrorReply::syntax());
        }
        i += 1;
    }
    // Redis compares the names before looking the source up: copying a missing key onto itself
    // is the same error, not 0.
    if src == dst {
        return Err(ErrorReply::err(
            "source and destination objects are the same",
        ));
    }
    let now = ctx.now;
    let Some(e) = ctx.db.get(src, now) else {
        ctx.w.int(0);
        return Ok(());
    };
    let (value, expire) = (e.value().to_value(), e.expire_at());
    let done = match ctx.db.entry(dst, now) {
        Slot::Occupied(_) if !replace => false,
        Slot::Occupied(mut o) => {
            let old = o.swap_value(value);
            o.get_mut().set_expire_at(expire);
            ctx.garbage.defer(old.elements(), old);
            true
        }
        Slot::Vacant(v) => {
            v.insert(value, expire);
            true
        }
    };
    ctx.w.int(i64::from(done));
    Ok(())
}

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT with NX/XX/GT/LT.
fn expire_generic(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    unit_ms: i64,
    absolute: bool,
    name: &str,
) -> CmdResult {
    let n = args.int(2)?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for i in 3..args.len() {
        match args.get(i).to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Err(ErrorReply::err(format!(
                    "Unsupported option {}",
                    args.text(i)
                )));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(ErrorReply::err(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(ErrorReply::err(
            "GT and LT options at the same time are not compatible",
        ));
    }
    let bad = || ErrorReply::invalid_expire(name);
    let mut when = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if !absolute {
        when = when.checked_add(ctx.now as i64).ok_or_else(bad)?;
    }
    let now = ctx.now;
    let Slot::Occupied(mut o) = ctx.db.entry(args.get(1), now) else {
        ctx.w.int(0);
        return Ok(());
    };
    let current = o.get().expire_at();
    let allowed = match current {
        // No TTL counts as an infinite one for GT/LT.
        None => !xx && !gt,
        Some(cur) => !nx && (!gt || when > cur as i64) && (!lt || when < cur as i64),
    };
    if !allowed {
        drop(o);
        ctx.w.int(0);
        return Ok(());
    }
    let key = args.get(1);
    if when <= now as i64 {
        let e = o.remove();
        ctx.garbage.defer(e.value().elements(), e);
        ctx.propagate(&[b"DEL", key]);
    } else {
        o.get_mut().set_expire_at(Some(when as u64));
        drop(o);
        // Journaled as the absolute millisecond, whatever the unit and flags were.
        ctx.propagate(&[b"PEXPIREAT", key, when.to_string().as_bytes()]);
    }
    ctx.w.int(1);
    Ok(())
}

fn expire(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1000, false, "expire")
}

fn pexpire(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1, false, "pexpire")
}

fn expireat(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1000, true, "expireat")
}

fn pexpireat(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1, true, "pexpireat")
}

/// Replies -2 (no key), -1 (no expiry) or `f(expire_at, now)`.
fn ttl_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, f: fn(u64, u64) -> i64) -> CmdResult {
    let now = ctx.now;
    let v = match ctx.db.get(args.get(1), now) {
        None => -2,
        Some(e) => e.expire_at().map_or(-1, |at| f(at, now)),
    };
    ctx.w.int(v);
    Ok(())
}

fn ttl(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, now| ((at - now + 500) / 1000) as i64)
}

fn pttl(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, now| (at - now) as i64)
}

/// Seconds, rounded to the nearest like TTL (Redis computes both as `(ms + 500) / 1000`).
fn expiretime(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, _| (at.saturating_add(500) / 1000) as i64)
}

fn pexpiretime(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, _| at as i64)
}

fn persist(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let done = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) if o.get().expire_at().is_some() => {
            o.get_mut().set_expire_at(None);
            true
        }
        _ => false,
    };
    ctx.w.int(i64::from(done));
    Ok(())
}

fn dbsize(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    ctx.w.int(ctx.db.len() as i64);
    Ok(())
}

fn flushdb(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len() > 2 || (args.len() == 2 && !args.is(1, "ASYNC") && !args.is(1, "SYNC")) {
        return Err(ErrorReply::syntax());
    }
    let old = ctx.db.flush();
    ctx.garbage.defer_always(old);
    ctx.w.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testing::TestDb;

    #[test]
    fn basics() {
        let mut t = TestDb::new();
        t.check(&[
            (&["MSET", "a", "1", "b", "2", "c", "3"], "+OK\r\n"),
            (&["EXISTS", "a", "a", "x"], ":2\r\n"),
            (&["TYPE", "a"], "+string\r\n"),
            (&["TYPE", "x"], "+none\r\n"),
            (&["DEL", "a", "x"], ":1\r\n"),
            (&["DBSIZE"], ":2\r\n"),
            (&["RENAME", "b", "bb"], "+OK\r\n"),
            (&["RENAME", "nope", "z"], "-ERR no such key\r\n"),
            (&["RENAMENX", "bb", "c"], ":0\r\n"),
            (&["GET", "bb"], "$1\r\n2\r\n"),
            (&["COPY", "bb", "c"], ":0\r\n"),
            (&["COPY", "bb", "c", "REPLACE"], ":1\r\n"),
            (&["GET", "c"], "$1\r\n2\r\n"),
            (
                &["COPY", "bb", "d", "DB", "1"],
                "-ERR DB index is out of range\r\n",
            ),
            (&["FLUSHDB"], "+OK\r\n"),
            (&["DBSIZE"], ":0\r\n"),
            (&["RANDOMKEY"], "$-1\r\n"),
            (&["FLUSHDB", "LATER"], "-ERR syntax error\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn copy_onto_itself_is_refused_before_the_lookup() {
        let mut t = TestDb::new();
        let same = "-ERR source and destination objects are the same\r\n";
        t.check(&[
            (&["COPY", "missing", "missing"], same),
            (&["COPY", "missing", "missing", "REPLACE"], same),
            (&["COPY", "missing", "other"], ":0\r\n"),
            // Option errors still come first, as in Redis.
            (
                &["COPY", "missing", "missing", "BOGUS"],
                "-ERR syntax error\r\n",
            ),
            (&["SET", "k", "v"], "+OK\r\n"),
            (&["COPY", "k", "k"], same),
            (&["COPY", "k", "k", "REPLACE"], same),
            (&["GET", "k"], "$1\r\nv\r\n"),
            (&["EXISTS", "missing", "other"], ":0\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn expiretime_rounds_to_the_nearest_second() {
        let mut t = TestDb::new();
        t.check(&[
            (&["SET", "k", "v"], "+OK\r\n"),
            (&["PEXPIREAT", "k", "4102444800499"], ":1\r\n"),
            (&["EXPIRETIME", "k"], ":4102444800\r\n"),
            (&["PEXPIREAT", "k", "4102444800500"], ":1\r\n"),
            (&["EXPIRETIME", "k"], ":4102444801\r\n"),
            (&["PEXPIRETIME", "k"], ":4102444800500\r\n"),
            (&["EXPIREAT", "k", "4102444900"], ":1\r\n"),
            (&["EXPIRETIME", "k"], ":4102444900\r\n"),
            (&["EXPIRETIME", "none"], ":-2\r\n"),
            (&["PERSIST", "k"], ":1\r\n"),
            (&["EXPIRETIME", "k"], ":-1\r\n"),
        ]);
    }

    #[test]
    fn expiry_commands() {
        let mut t = TestDb::new();
        let now_s = (t.now / 1000).to_string();
        let past = (t.now / 1000 - 1).to_string();
        t.check(&[
            (&["SET", "k", "v"], "+OK\r\n"),
            (&["TTL", "k"], ":-1\r\n"),
            (&["TTL", "none"], ":-2\r\n"),
            (&["EXPIRE", "k", "100", "XX"], ":0\r\n"),
            (&["EXPIRE", "k", "100", "GT"], ":0\r\n"),
            (&["EXPIRE", "k", "100", "LT"], ":1\r\n"),
            (&["TTL", "k"], ":100\r\n"),
            (&["PTTL", "k"], ":100000\r\n"),
            (&["EXPIRE", "k", "50", "GT"], ":0\r\n"),
            (&["EXPIRE", "k", "200", "GT"], ":1\r\n"),
            (&["EXPIRE", "k", "300", "NX"], ":0\r\n"),
            (
                &["EXPIRE", "k", "1", "NX", "XX"],
                "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
            ),
            (
                &["EXPIRE", "k", "1", "GT", "LT"],
                "-ERR GT and LT options at the same time are not compatible\r\n",
            ),
            (
                &["EXPIRE", "k", "1", "FOO"],
                "-ERR Unsupported option FOO\r\n",
            ),
            (
                &["EXPIRE", "k", "9223372036854775807"],
                "-ERR invalid expire time in 'expire' command\r\n",
            ),
            (&["PERSIST", "k"], ":1\r\n"),
            (&["PERSIST", "k"], ":0\r\n"),
            (&["EXPIREAT", "k", &now_s], ":1\r\n"),
            (&["EXISTS", "k"], ":0\r\n"),
            (&["SET", "k", "v"], "+OK\r\n"),
            (&["PEXPIRE", "k", "1500"], ":1\r\n"),
            (&["TTL", "k"], ":2\r\n"),
            (
                &["EXPIRETIME", "k"],
                &format!(":{}\r\n", (t.now + 1500 + 500) / 1000),
            ),
            (&["PEXPIRETIME", "k"], &format!(":{}\r\n", t.now + 1500)),
            (&["EXPIRE", "k", "-5"], ":1\r\n"),
            (&["GET", "k"], "$-1\r\n"),
            (&["SET", "k", "v"], "+OK\r\n"),
            (&["EXPIREAT", "k", &past], ":1\r\n"),
            (&["DBSIZE"], ":0\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn scan_and_keys() {
        let mut t = TestDb::new();
        for i in 0..100 {
            t.run(&["SET", &format!("user:{i}"), "x"]);
            t.run(&["SET", &format!("other:{i}"), "x"]);
        }
        let keys = t.run(&["KEYS", "user:*"]);
        assert!(keys.starts_with("*100\r\n"), "{keys}");
        // Walk SCAN to completion with MATCH and count the matches.
        let mut cursor = "0".to_string();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let reply = t.run(&["SCAN", &cursor, "MATCH", "user:*", "COUNT", "7"]);
            let parts: Vec<&str> = reply.split("\r\n").collect();
            cursor = parts[2].to_string();
            for p in parts.iter().skip(5).step_by(2) {
                if p.starts_with("user:") {
                    seen.insert(p.to_string());
                }
            }
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 100);
        t.check(&[
            (&["SCAN", "abc"], "-ERR invalid cursor\r\n"),
            (&["SCAN", "0", "COUNT", "0"], "-ERR syntax error\r\n"),
            (&["SCAN", "0", "BOGUS"], "-ERR syntax error\r\n"),
        ]);
        let typed = t.run(&["SCAN", "0", "TYPE", "list", "COUNT", "1000"]);
        assert_eq!(typed, "*2\r\n$1\r\n0\r\n*0\r\n");
    }
}
