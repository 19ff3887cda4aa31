//! String commands.

use ferrite_protocol::args::parse_i64;
use ferrite_protocol::number::{decimal_add, format_human_double};
use ferrite_protocol::{Args, ErrorReply};
use ferrite_storage::{Entry, Slot, StrValue, Value, ValueRef};

use crate::ctx::Ctx;
use crate::spec::flags::*;
use crate::spec::{CmdResult, CommandSpec, Creates, KEY1};
use crate::util::{as_str, as_str_mut, parse_stored_float};

crate::command_family!("string");

const W: u32 = WRITE | DENYOOM;

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "get",
        2,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the string value of a key.",
        get,
    ),
    cmd(
        "set",
        -3,
        W,
        KEY1,
        Creates::FirstKey,
        "Sets the string value of a key, with optional expiry and conditions.",
        set,
    ),
    cmd(
        "setnx",
        3,
        W | FAST,
        KEY1,
        Creates::FirstKey,
        "Sets the value of a key only when it does not exist.",
        setnx,
    ),
    cmd(
        "setex",
        4,
        W,
        KEY1,
        Creates::FirstKey,
        "Sets the value and expiry (seconds) of a key.",
        setex,
    ),
    cmd(
        "psetex",
        4,
        W,
        KEY1,
        Creates::FirstKey,
        "Sets the value and expiry (milliseconds) of a key.",
        psetex,
    ),
    cmd(
        "getset",
        3,
        W | FAST,
        KEY1,
        Creates::FirstKey,
        "Sets a key and returns its previous value.",
        getset,
    ),
    cmd(
        "getdel",
        2,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the value of a key and deletes it.",
        getdel,
    ),
    cmd(
        "getex",
        -2,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the value of a key and changes its expiry.",
        getex,
    ),
    cmd(
        "mget",
        -2,
        READONLY | FAST,
        (1, -1, 1),
        Creates::Nothing,
        "Returns the values of several keys.",
        mget,
    ),
    cmd(
        "mset",
        -3,
        W,
        (1, -1, 2),
        Creates::AllKeys,
        "Sets several keys.",
        mset,
    ),
    cmd(
        "msetnx",
        -3,
        W,
        (1, -1, 2),
        Creates::AllKeys,
        "Sets several keys only when none of them exists.",
        msetnx,
    ),
    cmd(
        "incr",
        2,
        W | FAST,
        KEY1,
        Creates::FirstKey,
        "Increments the integer value of a key by one.",
        incr,
    ),
    cmd(
        "decr",
        2,
        W | FAST,
        KEY1,
        Creates::FirstKey,
        "Decrements the integer value of a key by one.",
        decr,
    ),
    cmd(
        "incrby",
        3,
        W | FAST,
        KEY1,
        Creates::FirstKey,
        "Increments the integer value of a key.",
        incrby,
    ),
    cmd(
        "decrby",
        3,
        W | FAST,
        KEY1,
        Creates::FirstKey,
        "Decrements the integer value of a key.",
        decrby,
    ),
    cmd(
        "incrbyfloat",
        3,
        W | FAST,
        KEY1,
        Creates::FirstKey,
        "Increments the floating-point value of a key.",
        incrbyfloat,
    ),
    cmd(
        "append",
        3,
        W | FAST,
        KEY1,
        Creates::FirstKey,
        "Appends a string to the value of a key.",
        append,
    ),
    cmd(
        "strlen",
        2,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the length of a string value.",
        strlen,
    ),
    cmd(
        "getrange",
        4,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns a substring of a string value.",
        getrange,
    ),
    cmd(
        "substr",
        4,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns a substring of a string value (old name of GETRANGE).",
        getrange,
    ),
    cmd(
        "setrange",
        4,
        W,
        KEY1,
        Creates::FirstKey,
        "Overwrites part of a string value from an offset.",
        setrange,
    ),
    cmd(
        "lcs",
        -3,
        READONLY,
        (1, 2, 1),
        Creates::Nothing,
        "Finds the longest common substring.",
        lcs,
    ),
];

/// Expiry options shared by SET and GETEX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpireOpt {
    None,
    /// Absolute Unix ms.
    At(u64),
    KeepTtl,
    Persist,
}

/// The expiry words of SET and GETEX, parsed the way Redis does: a unit may be repeated (the last
/// number wins), while two different units, or a unit with KEEPTTL or PERSIST, are a syntax
/// error. The number itself is only read by [`ExpiryWords::resolve`], when the command uses it.
#[derive(Debug, Clone, Copy, Default)]
struct ExpiryWords {
    /// The unit word and the position of its number.
    unit: Option<(&'static str, usize)>,
    keepttl: bool,
    persist: bool,
}

impl ExpiryWords {
    /// Takes the expiry option at `i` if there is one; returns how many arguments it used (0: not
    /// an expiry option of this command, or not allowed after the options already seen).
    fn take(&mut self, args: &Args<'_>, i: usize, word: &[u8], for_getex: bool) -> usize {
        let unit = match word {
            b"EX" => Some("EX"),
            b"PX" => Some("PX"),
            b"EXAT" => Some("EXAT"),
            b"PXAT" => Some("PXAT"),
            _ => None,
        };
        if let Some(unit) = unit {
            let same_unit = self.unit.is_none_or(|(u, _)| u == unit);
            if same_unit && !self.keepttl && !self.persist && i + 1 < args.len() {
                self.unit = Some((unit, i + 1));
                return 2;
            }
            return 0;
        }
        match word {
            b"KEEPTTL" if !for_getex && self.unit.is_none() => {
                self.keepttl = true;
                1
            }
            b"PERSIST" if for_getex && self.unit.is_none() => {
                self.persist = true;
                1
            }
            _ => 0,
        }
    }

    /// Reads the number (if a unit was given) and turns the options into an [`ExpireOpt`].
    fn resolve(&self, args: &Args<'_>, now: u64, cmd: &str) -> Result<ExpireOpt, ErrorReply> {
        Ok(match self.unit {
            Some((unit, at)) => ExpireOpt::At(absolute_expiry(unit, args.int(at)?, now, cmd)?),
            None if self.keepttl => ExpireOpt::KeepTtl,
            None if self.persist => ExpireOpt::Persist,
            None => ExpireOpt::None,
        })
    }
}

/// Turns EX/PX/EXAT/PXAT and their number into an absolute time, with Redis's checks.
fn absolute_expiry(kind: &str, n: i64, now: u64, cmd: &str) -> Result<u64, ErrorReply> {
    let bad = || ErrorReply::invalid_expire(cmd);
    if n <= 0 {
        return Err(bad());
    }
    let ms = match kind {
        "EX" | "EXAT" => n.checked_mul(1000).ok_or_else(bad)?,
        _ => n,
    };
    let abs = match kind {
        "EX" | "PX" => (now as i64).checked_add(ms).ok_or_else(bad)?,
        _ => ms,
    };
    Ok(abs as u64)
}

fn get(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => ctx.w.bulk(as_str(e)?.as_bytes()),
        None => ctx.w.null(),
    }
    Ok(())
}

fn set(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (mut nx, mut xx, mut get_old) = (false, false, false);
    let mut words = ExpiryWords::default();
    let mut i = 3;
    while i < args.len() {
        let word = args.get(i).to_ascii_uppercase();
        match word.as_slice() {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            b"GET" => get_old = true,
            w => match words.take(&args, i, w, false) {
                0 => return Err(ErrorReply::syntax()),
                used => i += used - 1,
            },
        }
        i += 1;
    }
    // Options first, then the expiry number (as Redis: `SET k v EX abc BOGUS` is a syntax error).
    let expire = words.resolve(&args, ctx.now, "set")?;
    let key = args.get(1);
    let value = args.get(2);
    let now = ctx.now;
    let (old, proceed, removed) = {
        let slot = ctx.db.entry(key, now);
        let old: Option<Option<Vec<u8>>> = match (&slot, get_old) {
            (Slot::Occupied(o), true) => Some(Some(as_str(o.get())?.as_bytes().to_vec())),
            (Slot::Vacant(_), true) => Some(None),
            _ => None,
        };
        let exists = matches!(slot, Slot::Occupied(_));
        let proceed = !(nx && exists || xx && !exists);
        if proceed {
            let new_expire = match expire {
                ExpireOpt::At(t) => Some(t),
                ExpireOpt::KeepTtl => match &slot {
                    Slot::Occupied(o) => o.get().expire_at(),
                    Slot::Vacant(_) => None,
                },
                _ => None,
            };
            let removed = match slot {
                Slot::Occupied(o) if new_expire.is_some_and(|t| t <= now) => {
                    let e = o.remove();
                    ctx.garbage.defer(e.value().elements(), e);
                    true
                }
                Slot::Vacant(_) if new_expire.is_some_and(|t| t <= now) => false,
                // Written in place where the old value allows; a large old value that is not
                // is handed to the garbage list, to be freed off the lock.
                Slot::Occupied(mut o) => {
                    if let Some(old) = o.set_str(value, new_expire) {
                        ctx.garbage.defer(old.elements(), old);
                    }
                    false
                }
                Slot::Vacant(v) => {
                    v.insert(Value::Str(StrValue::from_slice(value)), new_expire);
                    false
                }
            };
            (old, proceed, removed)
        } else {
            drop(slot);
            (old, proceed, false)
        }
    };
    // A relative or second-based expiry is journaled as the absolute millisecond it resolved
    // to, as Redis propagates SET ... PXAT.
    if let (true, ExpireOpt::At(t)) = (proceed, expire) {
        if removed {
            ctx.propagate(&[b"DEL", key]);
        } else if t > now {
            ctx.propagate(&[b"SET", key, value, b"PXAT", t.to_string().as_bytes()]);
        }
    }
    match old {
        Some(v) => ctx.w.opt_bulk(v.as_deref()),
        None if proceed => ctx.w.ok(),
        None => ctx.w.null(),
    }
    Ok(())
}

/// Sets a string unconditionally, discarding any TTL (SETEX, PSETEX, MSET, GETSET).
fn put(ctx: &mut Ctx<'_, '_>, key: &[u8], value: &[u8], expire: Option<u64>) {
    match ctx.db.entry(key, ctx.now) {
        // As SET writes (in place where the old value allows, a large old value freed off
        // the lock).
        Slot::Occupied(mut o) => {
            if let Some(old) = o.set_str(value, expire) {
                ctx.garbage.defer(old.elements(), old);
            }
        }
        Slot::Vacant(v) => v.insert(Value::Str(StrValue::from_slice(value)), expire),
    }
}

fn setnx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if ctx.db.contains(args.get(1), ctx.now) {
        ctx.w.int(0);
    } else {
        put(ctx, args.get(1), args.get(2), None);
        ctx.w.int(1);
    }
    Ok(())
}

fn setex_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, unit: &str, name: &str) -> CmdResult {
    let n = args.int(2)?;
    let at = absolute_expiry(unit, n, ctx.now, name)?;
    put(ctx, args.get(1), args.get(3), Some(at));
    ctx.propagate(&[
        b"SET",
        args.get(1),
        args.get(3),
        b"PXAT",
        at.to_string().as_bytes(),
    ]);
    ctx.w.ok();
    Ok(())
}

fn setex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    setex_generic(ctx, args, "EX", "setex")
}

fn psetex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    setex_generic(ctx, args, "PX", "psetex")
}

fn getset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let old = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => Some(as_str(e)?.as_bytes().to_vec()),
        None => None,
    };
    put(ctx, args.get(1), args.get(2), None);
    ctx.w.opt_bulk(old.as_deref());
    Ok(())
}

fn getdel(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let removed = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(o) => {
            as_str(o.get())?;
            let e = o.remove();
            ctx.w.bulk(as_str(&e)?.as_bytes());
            true
        }
        Slot::Vacant(_) => {
            ctx.w.null();
            false
        }
    };
    if removed {
        ctx.propagate(&[b"DEL", args.get(1)]);
    }
    Ok(())
}

/// GETEX. Like Redis, only the option words are checked up front; the expiry number is read
/// after the key was found and type-checked, so a missing key answers nil and a non-string
/// WRONGTYPE whatever the number says.
fn getex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut words = ExpiryWords::default();
    let mut i = 2;
    while i < args.len() {
        let word = args.get(i).to_ascii_uppercase();
        match words.take(&args, i, &word, true) {
            0 => return Err(ErrorReply::syntax()),
            used => i += used,
        }
    }
    let now = ctx.now;
    let key = args.get(1);
    // What to journal: the expiry resolved to an absolute time, as Redis propagates GETEX.
    let effect: Option<Vec<Vec<u8>>> = match ctx.db.entry(key, now) {
        Slot::Occupied(mut o) => {
            let value = as_str(o.get())?.as_bytes().to_vec();
            let opt = words.resolve(&args, now, "getex")?;
            let had_ttl = o.get().expire_at().is_some();
            let effect = match opt {
                ExpireOpt::At(t) if t <= now => {
                    o.remove();
                    Some(vec![b"DEL".to_vec(), key.to_vec()])
                }
                ExpireOpt::At(t) => {
                    o.get_mut().set_expire_at(Some(t));
                    Some(vec![
                        b"PEXPIREAT".to_vec(),
                        key.to_vec(),
                        t.to_string().into_bytes(),
                    ])
                }
                ExpireOpt::Persist => {
                    o.get_mut().set_expire_at(None);
                    had_ttl.then(|| vec![b"PERSIST".to_vec(), key.to_vec()])
                }
                _ => None,
            };
            ctx.w.bulk(&value);
            effect
        }
        Slot::Vacant(_) => {
            ctx.w.null();
            None
        }
    };
    if let Some(argv) = effect {
        let parts: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        ctx.propagate(&parts);
    }
    Ok(())
}

fn mget(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ctx.w.array(args.len() - 1);
    for key in args.tail(1).iter() {
        // One key repeated a million times must not build a reply past the output budget.
        if ctx.w.is_full() {
            break;
        }
        match ctx.db.get(key, ctx.now).map(|e| e.value()) {
            Some(ValueRef::Str(s)) => ctx.w.bulk(s.as_bytes()),
            _ => ctx.w.null(),
        }
    }
    Ok(())
}

fn mset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len().is_multiple_of(2) {
        return Err(ErrorReply::wrong_arity("mset"));
    }
    for i in (1..args.len()).step_by(2) {
        put(ctx, args.get(i), args.get(i + 1), None);
    }
    ctx.w.ok();
    Ok(())
}

fn msetnx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len().is_multiple_of(2) {
        return Err(ErrorReply::wrong_arity("msetnx"));
    }
    let now = ctx.now;
    if (1..args.len())
        .step_by(2)
        .any(|i| ctx.db.contains(args.get(i), now))
    {
        ctx.w.int(0);
        return Ok(());
    }
    for i in (1..args.len()).step_by(2) {
        put(ctx, args.get(i), args.get(i + 1), None);
    }
    ctx.w.int(1);
    Ok(())
}

fn incr_by(ctx: &mut Ctx<'_, '_>, key: &[u8], delta: i64) -> CmdResult {
    let mut text = itoa::Buffer::new();
    let new = match ctx.db.entry(key, ctx.now) {
        Slot::Occupied(mut o) => {
            // Read before taking mutable access: an error changes nothing and opens nothing.
            let cur = parse_i64(as_str(o.get())?.as_bytes()).ok_or_else(ErrorReply::not_integer)?;
            let new = cur.checked_add(delta).ok_or_else(ErrorReply::overflow)?;
            let digits = text.format(new).as_bytes();
            overwrite_str(o.get_mut(), digits)?;
            o.count_as_write();
            new
        }
        Slot::Vacant(v) => {
            let digits = text.format(delta).as_bytes();
            v.insert(Value::Str(StrValue::from_slice(digits)), None);
            delta
        }
    };
    ctx.w.int(new);
    Ok(())
}

fn incr(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    incr_by(ctx, args.get(1), 1)
}

fn decr(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    incr_by(ctx, args.get(1), -1)
}

fn incrby(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let d = args.int(2)?;
    incr_by(ctx, args.get(1), d)
}

fn decrby(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let d = args.int(2)?;
    // Negating i64::MIN overflows; Redis refuses it up front with its own text.
    let d = d
        .checked_neg()
        .ok_or_else(|| ErrorReply::err("decrement would overflow"))?;
    incr_by(ctx, args.get(1), d)
}

/// Sets a counter's new text: a result as long as the old value is rewritten in its compact
/// entry (no allocation); otherwise the entry is opened and settled again by the write funnel.
fn overwrite_str(e: &mut Entry, data: &[u8]) -> Result<(), ErrorReply> {
    if !e.set_str_in_place(data) {
        *as_str_mut(e)? = StrValue::from_slice(data);
    }
    Ok(())
}

fn incrbyfloat(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let key = args.get(1);
    // Redis checks the key's type before it reads the increment.
    if let Some(e) = ctx.db.get(key, ctx.now) {
        as_str(e)?;
    }
    let delta = args.float(2)?;
    let delta_text = std::str::from_utf8(args.get(2)).unwrap_or_default();
    let compute = |cur: f64, cur_text: &str| -> Result<(f64, Vec<u8>), ErrorReply> {
        let v = cur + delta;
        if v.is_nan() || v.is_infinite() {
            return Err(ErrorReply::nan_or_inf());
        }
        // Exact decimal addition matches Redis's long double results (0.1 + 0.2 = 0.3).
        let text = decimal_add(cur_text, delta_text).unwrap_or_else(|| format_human_double(v));
        Ok((v, text.into_bytes()))
    };
    let text = match ctx.db.entry(key, ctx.now) {
        Slot::Occupied(mut o) => {
            let s = as_str(o.get())?;
            let cur = parse_stored_float(s.as_bytes()).ok_or_else(ErrorReply::not_float)?;
            let cur_text = String::from_utf8_lossy(s.as_bytes()).into_owned();
            let (_, text) = compute(cur, &cur_text)?;
            overwrite_str(o.get_mut(), &text)?;
            o.count_as_write();
            text
        }
        Slot::Vacant(v) => {
            let (_, text) = compute(0.0, "0")?;
            v.insert(Value::string(text.clone()), None);
            text
        }
    };
    // Float formatting may differ elsewhere: journal the result, as Redis does.
    ctx.propagate(&[b"SET", key, &text, b"KEEPTTL"]);
    ctx.w.bulk(&text);
    Ok(())
}

fn append(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let more = args.get(2);
    let max = ctx.max_bulk;
    let len = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => {
            let s = as_str_mut(o.get_mut())?;
            if s.len() + more.len() > max {
                return Err(ErrorReply::string_too_long());
            }
            s.append(more);
            s.len()
        }
        Slot::Vacant(v) => {
            v.insert(Value::string(more.to_vec()), None);
            more.len()
        }
    };
    ctx.w.int(len as i64);
    Ok(())
}

fn strlen(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let n = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => as_str(e)?.len(),
        None => 0,
    };
    ctx.w.int(n as i64);
    Ok(())
}

fn getrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (start, end) = (args.int(2)?, args.int(3)?);
    let Some(e) = ctx.db.get(args.get(1), ctx.now) else {
        ctx.w.bulk(b"");
        return Ok(());
    };
    let s = as_str(e)?.as_bytes();
    let len = s.len() as i64;
    // Both from the end and the start after the end: empty, even where clamping both to the
    // first byte would select it (Redis: GETRANGE "abc" -1 -5 is "", not "a").
    if start < 0 && end < 0 && start > end {
        ctx.w.bulk(b"");
        return Ok(());
    }
    let norm = |i: i64| {
        let i = if i < 0 { len + i } else { i };
        i.max(0)
    };
    let (start, mut end) = (norm(start), norm(end));
    if end >= len {
        end = len - 1;
    }
    if len == 0 || start > end {
        ctx.w.bulk(b"");
    } else {
        ctx.w.bulk(&s[start as usize..=end as usize]);
    }
    Ok(())
}

fn setrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let offset = args.int(2)?;
    if offset < 0 {
        return Err(ErrorReply::err("offset is out of range"));
    }
    let offset = offset as usize;
    let data = args.get(3);
    let max = ctx.max_bulk;
    // As in Redis, the type is checked before the size: a non-string key is WRONGTYPE even for
    // an offset past the limit.
    let too_long = || offset.saturating_add(data.len()) > max;
    let len = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => {
            let s = as_str_mut(o.get_mut())?;
            if !data.is_empty() {
                if too_long() {
                    return Err(ErrorReply::string_too_long());
                }
                s.set_range(offset, data);
            }
            s.len()
        }
        Slot::Vacant(v) => {
            if data.is_empty() {
                0
            } else {
                if too_long() {
                    return Err(ErrorReply::string_too_long());
                }
                let mut s = StrValue::new(Vec::new());
                s.set_range(offset, data);
                let n = s.len();
                v.insert(Value::Str(s), None);
                n
            }
        }
    };
    ctx.w.int(len as i64);
    Ok(())
}

/// LCS: the longest common subsequence of two strings, by dynamic programming over a table of
/// (len(a)+1)·(len(b)+1) counters, which may not exceed `proto-max-bulk-len` bytes (as in Redis).
fn lcs(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let now = ctx.now;
    let mut strings: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for (i, s) in strings.iter_mut().enumerate() {
        match ctx.db.get(args.get(i + 1), now).map(|e| e.value()) {
            Some(ValueRef::Str(v)) => *s = v.as_bytes().to_vec(),
            Some(_) => {
                return Err(ErrorReply::err(
                    "The specified keys must contain string values",
                ));
            }
            None => {}
        }
    }
    let (mut get_len, mut get_idx, mut with_len, mut min_len) = (false, false, false, 0i64);
    let mut j = 3;
    while j < args.len() {
        let more = args.len() - 1 - j;
        match args.get(j).to_ascii_uppercase().as_slice() {
            b"IDX" => get_idx = true,
            b"LEN" => get_len = true,
            b"WITHMATCHLEN" => with_len = true,
            b"MINMATCHLEN" if more > 0 => {
                min_len = args.int(j + 1)?.max(0);
                j += 1;
            }
            _ => return Err(ErrorReply::syntax()),
        }
        j += 1;
    }
    if get_len && get_idx {
        return Err(ErrorReply::err(
            "If you want both the length and indexes, please just use IDX.",
        ));
    }
    let [a, b] = &strings;
    let (alen, blen) = (a.len(), b.len());
    let cells = (alen as u128 + 1) * (blen as u128 + 1);
    if cells * 4 > ctx.max_bulk as u128 {
        return Err(ErrorReply::err(
            "Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        ));
    }
    let width = blen + 1;
    let mut t = vec![0u32; cells as usize];
    for i in 1..=alen {
        for k in 1..=blen {
            t[i * width + k] = if a[i - 1] == b[k - 1] {
                t[(i - 1) * width + k - 1] + 1
            } else {
                t[(i - 1) * width + k].max(t[i * width + k - 1])
            };
        }
    }
    let total = t[alen * width + blen] as usize;
    if get_len {
        ctx.w.int(total as i64);
        return Ok(());
    }
    // Walk back from the end, collecting the subsequence and the ranges of matching runs
    // (Redis's traceback, ranges emitted from the end of the strings).
    let mut result = vec![0u8; total];
    let mut idx = total;
    let mut ranges: Vec<[usize; 4]> = Vec::new();
    let (mut i, mut k) = (alen, blen);
    let none = alen;
    let (mut a_start, mut a_end, mut b_start, mut b_end) = (none, 0, 0, 0);
    while i > 0 && k > 0 {
        let mut emit = false;
        if a[i - 1] == b[k - 1] {
            result[idx - 1] = a[i - 1];
            if a_start == none {
                (a_start, a_end, b_start, b_end) = (i - 1, i - 1, k - 1, k - 1);
            } else if a_start == i && b_start == k {
                a_start -= 1;
                b_start -= 1;
            } else {
                emit = true;
            }
            if a_start == 0 || b_start == 0 {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            k -= 1;
        } else {
            if t[(i - 1) * width + k] > t[i * width + k - 1] {
                i -= 1;
            } else {
                k -= 1;
            }
            if a_start != none {
                emit = true;
            }
        }
        if emit {
            let match_len = a_end - a_start + 1;
            if min_len == 0 || match_len as i64 >= min_len {
                ranges.push([a_start, a_end, b_start, b_end]);
            }
            a_start = none;
        }
    }
    if !get_idx {
        ctx.w.bulk(&result);
        return Ok(());
    }
    let w = &mut *ctx.w;
    w.map(2);
    w.bulk(b"matches");
    w.array(ranges.len());
    for [a0, a1, b0, b1] in ranges {
        w.array(2 + usize::from(with_len));
        w.array(2);
        w.int(a0 as i64);
        w.int(a1 as i64);
        w.array(2);
        w.int(b0 as i64);
        w.int(b1 as i64);
        if with_len {
            w.int((a1 - a0 + 1) as i64);
        }
    }
    w.bulk(b"len");
    w.int(total as i64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testing::TestDb;

    const WRONGTYPE: &str =
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";

    #[test]
    fn set_get_and_options() {
        let mut t = TestDb::new();
        t.check(&[
            (&["SET", "k", "v"], "+OK\r\n"),
            (&["GET", "k"], "$1\r\nv\r\n"),
            (&["SET", "k", "w", "NX"], "$-1\r\n"),
            (&["SET", "k", "w", "XX", "GET"], "$1\r\nv\r\n"),
            (&["SET", "n", "w", "XX"], "$-1\r\n"),
            (&["SET", "k", "x", "NX", "XX"], "-ERR syntax error\r\n"),
            (
                &["SET", "k", "x", "EX", "0"],
                "-ERR invalid expire time in 'set' command\r\n",
            ),
            (
                &["SET", "k", "x", "EX", "abc"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["SET", "k", "x", "EX", "9223372036854775807"],
                "-ERR invalid expire time in 'set' command\r\n",
            ),
            (
                &["SET", "k", "x", "PX", "100", "EX", "1"],
                "-ERR syntax error\r\n",
            ),
            (&["GET", "k"], "$1\r\nw\r\n"),
            (
                &["SET"],
                "-ERR wrong number of arguments for 'set' command\r\n",
            ),
            (&["GET", "nope"], "$-1\r\n"),
        ]);
    }

    #[test]
    fn expiry_via_set() {
        let mut t = TestDb::new();
        t.check(&[(&["SET", "k", "v", "PX", "100"], "+OK\r\n")]);
        t.now += 99;
        t.check(&[(&["GET", "k"], "$1\r\nv\r\n")]);
        t.check(&[(&["SET", "k", "v2", "KEEPTTL"], "+OK\r\n")]);
        t.now += 1;
        t.check(&[(&["GET", "k"], "$-1\r\n")]);
        let past = (t.now / 1000 - 10).to_string();
        t.check(&[
            (&["SET", "p", "v", "EXAT", &past], "+OK\r\n"),
            (&["GET", "p"], "$-1\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn counters() {
        let mut t = TestDb::new();
        t.check(&[
            (&["INCR", "c"], ":1\r\n"),
            (&["INCRBY", "c", "10"], ":11\r\n"),
            (&["DECRBY", "c", "20"], ":-9\r\n"),
            (&["DECR", "c"], ":-10\r\n"),
            (&["SET", "big", "9223372036854775807"], "+OK\r\n"),
            (
                &["INCR", "big"],
                "-ERR increment or decrement would overflow\r\n",
            ),
            (&["SET", "s", "abc"], "+OK\r\n"),
            (
                &["INCR", "s"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["INCRBYFLOAT", "f", "10.5"], "$4\r\n10.5\r\n"),
            (&["INCRBYFLOAT", "f", "0.1"], "$4\r\n10.6\r\n"),
            (
                &["INCRBYFLOAT", "s", "1"],
                "-ERR value is not a valid float\r\n",
            ),
            (
                &["INCRBYFLOAT", "f", "inf"],
                "-ERR increment would produce NaN or Infinity\r\n",
            ),
            (
                &["DECRBY", "c", "-9223372036854775808"],
                "-ERR decrement would overflow\r\n",
            ),
            (
                &["DECRBY", "s", "-9223372036854775808"],
                "-ERR decrement would overflow\r\n",
            ),
            (&["SET", "c", "0"], "+OK\r\n"),
            (
                &["DECRBY", "c", "9223372036854775807"],
                ":-9223372036854775807\r\n",
            ),
            (
                &["DECRBY", "c", "2"],
                "-ERR increment or decrement would overflow\r\n",
            ),
        ]);
        t.assert_digest_consistent();
    }

    /// INCR of a counter whose length does not change rewrites its compact entry in place;
    /// one that changes length goes through the opened value. Either way the write funnel's
    /// accounting is what a fresh SET of the result would give: digest, size, a new version
    /// (WATCH), the change captured for migration and the append-only log, the TTL kept.
    #[test]
    fn counters_in_place_and_not_keep_the_funnel_exact() {
        let mut t = TestDb::new();
        t.check(&[
            (&["SET", "c", "7"], "+OK\r\n"),
            (&["PEXPIRE", "c", "100000"], ":1\r\n"),
            (&["SET", "f", "1.5"], "+OK\r\n"),
        ]);
        t.keyspace.lock().start_tracking();
        let steps: &[(&[&str], &str, &str)] = &[
            (&["INCR", "c"], ":8\r\n", "8"),                      // in place
            (&["INCRBY", "c", "1"], ":9\r\n", "9"),               // in place
            (&["INCR", "c"], ":10\r\n", "10"),                    // longer: opened and settled
            (&["DECRBY", "c", "20"], ":-10\r\n", "-10"),          // in place (3 bytes)
            (&["INCRBY", "c", "0"], ":-10\r\n", "-10"),           // same content
            (&["DECR", "c"], ":-11\r\n", "-11"),                  // in place
            (&["INCRBYFLOAT", "f", "1"], "$3\r\n2.5\r\n", "2.5"), // in place
        ];
        for (argv, reply, stored) in steps {
            let key = argv[1].as_bytes();
            let (version, used) = {
                let mut db = t.keyspace.lock();
                db.drain_changes(100, |_, _| {});
                let v = db.get(key, t.now).map(|e| e.version());
                (v, db.used_bytes())
            };
            let old_size = {
                let mut db = t.keyspace.lock();
                db.get(key, t.now).map(|e| e.size(key)).unwrap_or(0)
            };
            assert_eq!(t.run(argv), *reply, "{argv:?}");
            let mut db = t.keyspace.lock();
            let mut changed = Vec::new();
            db.drain_changes(100, |k, _| changed.push(k.to_vec()));
            let e = db.get(key, t.now).expect("the key exists");
            assert_eq!(
                e.value().digest(),
                ferrite_storage::Value::string(*stored).digest()
            );
            assert!(e.is_compact(), "{argv:?}");
            let size = e.size(key);
            let new_version = e.version();
            let ttl_kept = key != b"c" || e.expire_at() == Some(t.now + 100_000);
            assert!(ttl_kept, "{argv:?}: {:?}", e.expire_at());
            assert_eq!(db.used_bytes(), used + size - old_size, "{argv:?}");
            // Every call is a write WATCH sees, INCRBY 0 too (Redis signals the key modified).
            assert!(
                Some(new_version) > version,
                "{argv:?}: WATCH sees the write"
            );
            if argv[2..] == ["0"] {
                // INCRBY 0 changes no content: nothing to capture, as a SET of the same value.
                assert_eq!(changed.len(), 0, "{argv:?}");
            } else {
                assert_eq!(changed, vec![key.to_vec()], "{argv:?}");
            }
            drop(db);
            t.assert_digest_consistent();
        }
    }

    /// SET over a small (compact) value replaces the entry whole, in place when the lengths
    /// match; over a large one it writes the bytes in place when the lengths match and swaps
    /// the value out when they do not. Each is a write WATCH sees, even with the same value,
    /// and the funnel's digest, memory total, expiry and change capture stay exact.
    #[test]
    fn set_over_small_and_large_values_keeps_the_funnel_exact() {
        let mut t = TestDb::new();
        let big = "b".repeat(2000);
        let other = "c".repeat(2000);
        let longer = "d".repeat(2001);
        t.keyspace.lock().start_tracking();
        let steps: &[&[&str]] = &[
            &["SET", "k", "abc"],
            &["SET", "k", "abc"],                // same value, in place
            &["SET", "k", "xyz", "PX", "5000"],  // gains a TTL: rebuilt
            &["SET", "k", "uvw", "KEEPTTL"],     // in place, TTL kept
            &["SET", "k", "uv"],                 // shorter, TTL dropped
            &["SET", "k", &big],                 // grows past the compact limit
            &["SET", "k", &big],                 // large, same length: in place
            &["SET", "k", &other, "PX", "5000"], // in place, with a TTL
            &["SET", "k", &big, "KEEPTTL"],      // in place, TTL kept
            &["MSET", "k", &other],              // MSET writes as SET: in place, TTL dropped
            &["SET", "k", &longer],              // another length: swapped out
            &["SET", "k", "small", "GET"],
        ];
        let mut last_version = 0;
        for (i, argv) in steps.iter().enumerate() {
            let reply = t.run(argv);
            assert!(
                reply == "+OK\r\n" || argv.last() == Some(&"GET"),
                "{argv:?}: {reply}"
            );
            let mut db = t.keyspace.lock();
            let mut changed = Vec::new();
            db.drain_changes(100, |k, _| changed.push(k.to_vec()));
            // The same content again has nothing new to capture (the funnel marks changes).
            let same = i > 0 && steps[i - 1][2..] == argv[2..];
            let want: Vec<Vec<u8>> = if same { vec![] } else { vec![b"k".to_vec()] };
            assert_eq!(changed, want, "{argv:?}");
            let total: usize = db.iter().map(|(k, e)| e.size(k)).sum();
            assert_eq!(db.used_bytes(), total, "{argv:?}");
            let e = db.get(b"k", t.now).expect("k exists");
            assert_eq!(
                e.value().digest(),
                ferrite_storage::Value::string(argv[2]).digest()
            );
            assert!(e.version() > last_version, "{argv:?}: WATCH sees the write");
            last_version = e.version();
            let want_ttl = match argv.get(3) {
                Some(&"PX") | Some(&"KEEPTTL") => Some(t.now + 5000),
                _ => None,
            };
            assert_eq!(e.expire_at(), want_ttl, "{argv:?}");
            assert_eq!(e.is_compact(), argv[2].len() <= 1024, "{argv:?}");
            drop(db);
            t.assert_digest_consistent();
        }
    }

    #[test]
    fn ranges_and_append() {
        let mut t = TestDb::new();
        t.check(&[
            (&["APPEND", "s", "Hello"], ":5\r\n"),
            (&["APPEND", "s", " World"], ":11\r\n"),
            (&["GETRANGE", "s", "0", "4"], "$5\r\nHello\r\n"),
            (&["GETRANGE", "s", "-5", "-1"], "$5\r\nWorld\r\n"),
            (&["GETRANGE", "s", "5", "2"], "$0\r\n\r\n"),
            (&["GETRANGE", "s", "0", "100"], "$11\r\nHello World\r\n"),
            (&["SETRANGE", "s", "6", "Redis"], ":11\r\n"),
            (&["GET", "s"], "$11\r\nHello Redis\r\n"),
            (&["SETRANGE", "z", "3", "x"], ":4\r\n"),
            (&["GET", "z"], "$4\r\n\0\0\0x\r\n"),
            (
                &["SETRANGE", "z", "-1", "x"],
                "-ERR offset is out of range\r\n",
            ),
            (&["SETRANGE", "e", "0", ""], ":0\r\n"),
            (&["STRLEN", "s"], ":11\r\n"),
            (&["STRLEN", "none"], ":0\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn expiry_options_repeat_like_redis() {
        let mut t = TestDb::new();
        t.check(&[
            // The same unit twice: the last number wins.
            (&["SET", "k", "v", "EX", "10", "EX", "20"], "+OK\r\n"),
            (&["TTL", "k"], ":20\r\n"),
            (&["SET", "k", "v", "EX", "abc", "EX", "30"], "+OK\r\n"),
            (&["TTL", "k"], ":30\r\n"),
            (
                &["SET", "k", "v", "KEEPTTL", "KEEPTTL", "GET", "GET"],
                "$1\r\nv\r\n",
            ),
            (&["TTL", "k"], ":30\r\n"),
            (&["SET", "k", "v", "NX", "NX"], "$-1\r\n"),
            // Different units, or a unit with KEEPTTL: syntax errors, before any number.
            (
                &["SET", "k", "v", "EX", "10", "PX", "100"],
                "-ERR syntax error\r\n",
            ),
            (
                &["SET", "k", "v", "PX", "10", "KEEPTTL"],
                "-ERR syntax error\r\n",
            ),
            (
                &["SET", "k", "v", "KEEPTTL", "EX", "1"],
                "-ERR syntax error\r\n",
            ),
            (
                &["SET", "k", "v", "EX", "abc", "BOGUS"],
                "-ERR syntax error\r\n",
            ),
            (&["SET", "k", "v", "PERSIST"], "-ERR syntax error\r\n"),
            (
                &["SET", "k", "v", "EX", "1", "EX", "abc"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["TTL", "k"], ":30\r\n"),
            // GETEX: PERSIST may repeat too, but not mix with a unit; no KEEPTTL.
            (&["GETEX", "k", "PX", "5000", "PX", "9000"], "$1\r\nv\r\n"),
            (&["PTTL", "k"], ":9000\r\n"),
            (&["GETEX", "k", "PERSIST", "PERSIST"], "$1\r\nv\r\n"),
            (&["TTL", "k"], ":-1\r\n"),
            (
                &["GETEX", "k", "PERSIST", "EX", "1"],
                "-ERR syntax error\r\n",
            ),
            (&["GETEX", "k", "KEEPTTL"], "-ERR syntax error\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn incrbyfloat_reads_back_the_long_decimals_it_writes() {
        let mut t = TestDb::new();
        let big = format!("1{}", "0".repeat(300));
        let big_plus = format!("2{}", "0".repeat(300));
        t.check(&[
            (
                &["INCRBYFLOAT", "f", "1e300"],
                &format!("${}\r\n{big}\r\n", big.len()),
            ),
            (
                &["INCRBYFLOAT", "f", "1e300"],
                &format!("${}\r\n{big_plus}\r\n", big.len()),
            ),
            (&["SET", "g", &big], "+OK\r\n"),
            (
                &["INCRBYFLOAT", "g", "1e300"],
                &format!("${}\r\n{big_plus}\r\n", big.len()),
            ),
            (&["SET", "h", &format!("1{}", "0".repeat(6000))], "+OK\r\n"),
            (
                &["INCRBYFLOAT", "h", "1"],
                "-ERR value is not a valid float\r\n",
            ),
        ]);
    }

    #[test]
    fn getrange_with_both_ends_negative_and_crossed_is_empty() {
        let mut t = TestDb::new();
        t.check(&[
            (&["SET", "s", "abc"], "+OK\r\n"),
            (&["GETRANGE", "s", "-1", "-5"], "$0\r\n\r\n"),
            (&["GETRANGE", "s", "-1", "-2"], "$0\r\n\r\n"),
            (&["GETRANGE", "s", "-100", "-50"], "$1\r\na\r\n"),
            (&["GETRANGE", "s", "-2", "-2"], "$1\r\nb\r\n"),
            (&["GETRANGE", "s", "-5", "-1"], "$3\r\nabc\r\n"),
            (&["GETRANGE", "s", "2", "-5"], "$0\r\n\r\n"),
            (&["GETRANGE", "s", "-1", "0"], "$0\r\n\r\n"),
            (&["SET", "one", "x"], "+OK\r\n"),
            (&["GETRANGE", "one", "-1", "-5"], "$0\r\n\r\n"),
            (&["GETRANGE", "one", "0", "-5"], "$1\r\nx\r\n"),
        ]);
    }

    #[test]
    fn type_checks_come_before_argument_checks() {
        let mut t = TestDb::new();
        t.run(&["RPUSH", "l", "x"]);
        t.check(&[
            // GETEX reads its number only for an existing string.
            (&["GETEX", "l", "EX", "0"], WRONGTYPE),
            (&["GETEX", "l", "EX", "abc"], WRONGTYPE),
            (&["GETEX", "none", "EX", "abc"], "$-1\r\n"),
            (&["GETEX", "none", "PX", "0"], "$-1\r\n"),
            // ... but the option words are checked first.
            (&["GETEX", "none", "BOGUS"], "-ERR syntax error\r\n"),
            (&["GETEX", "none", "EX"], "-ERR syntax error\r\n"),
            (
                &["GETEX", "none", "EX", "1", "PERSIST"],
                "-ERR syntax error\r\n",
            ),
            (&["SET", "s", "v"], "+OK\r\n"),
            (
                &["GETEX", "s", "EX", "abc"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["GETEX", "s", "PX", "0"],
                "-ERR invalid expire time in 'getex' command\r\n",
            ),
            (&["TTL", "s"], ":-1\r\n"),
            (&["GETEX", "s", "exat", "1"], "$1\r\nv\r\n"),
            (&["EXISTS", "s"], ":0\r\n"),
            // SETRANGE: type before size.
            (&["SETRANGE", "l", "536870912", "x"], WRONGTYPE),
            (&["SETRANGE", "l", "0", ""], WRONGTYPE),
            (
                &["SETRANGE", "n", "536870912", "x"],
                "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n",
            ),
            (&["SETRANGE", "n", "536870912", ""], ":0\r\n"),
            (&["SET", "s", "abc"], "+OK\r\n"),
            (&["SETRANGE", "s", "536870912", ""], ":3\r\n"),
            (
                &["SETRANGE", "s", "536870911", "xy"],
                "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n",
            ),
            (&["GET", "s"], "$3\r\nabc\r\n"),
            // INCRBYFLOAT: type before the increment.
            (&["INCRBYFLOAT", "l", "abc"], WRONGTYPE),
            (
                &["INCRBYFLOAT", "s", "1"],
                "-ERR value is not a valid float\r\n",
            ),
            (
                &["INCRBYFLOAT", "f", "abc"],
                "-ERR value is not a valid float\r\n",
            ),
            (&["EXISTS", "f", "n"], ":0\r\n"),
            (&["LRANGE", "l", "0", "-1"], "*1\r\n$1\r\nx\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn multi_key_and_getters() {
        let mut t = TestDb::new();
        t.check(&[
            (&["MSET", "a", "1", "b", "2"], "+OK\r\n"),
            (
                &["MSET", "a", "1", "b"],
                "-ERR wrong number of arguments for 'mset' command\r\n",
            ),
            (
                &["MGET", "a", "b", "c"],
                "*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n",
            ),
            (&["MSETNX", "a", "x", "c", "3"], ":0\r\n"),
            (&["MSETNX", "c", "3", "d", "4"], ":1\r\n"),
            (&["GETSET", "a", "new"], "$1\r\n1\r\n"),
            (&["GETDEL", "a"], "$3\r\nnew\r\n"),
            (&["GETDEL", "a"], "$-1\r\n"),
            (&["SETNX", "b", "x"], ":0\r\n"),
            (&["SETEX", "e", "10", "v"], "+OK\r\n"),
            (
                &["SETEX", "e", "-1", "v"],
                "-ERR invalid expire time in 'setex' command\r\n",
            ),
            (&["GETEX", "e", "PERSIST"], "$1\r\nv\r\n"),
            (
                &["GETEX", "e", "EX", "5", "PX", "1"],
                "-ERR syntax error\r\n",
            ),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn lcs() {
        let mut t = TestDb::new();
        t.check(&[
            (&["MSET", "key1", "ohmytext", "key2", "mynewtext"], "+OK\r\n"),
            (&["LCS", "key1", "key2"], "$6\r\nmytext\r\n"),
            (&["LCS", "key1", "key2", "LEN"], ":6\r\n"),
            (
                &["LCS", "key1", "key2", "IDX"],
                "*4\r\n$7\r\nmatches\r\n*2\r\n*2\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n*2\r\n*2\r\n:2\r\n:3\r\n*2\r\n:0\r\n:1\r\n$3\r\nlen\r\n:6\r\n",
            ),
            (
                &["LCS", "key1", "key2", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"],
                "*4\r\n$7\r\nmatches\r\n*1\r\n*3\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n:4\r\n$3\r\nlen\r\n:6\r\n",
            ),
            (
                &["LCS", "key1", "key2", "LEN", "IDX"],
                "-ERR If you want both the length and indexes, please just use IDX.\r\n",
            ),
            (&["LCS", "key1", "none"], "$0\r\n\r\n"),
            (&["LCS", "key1", "key2", "BOGUS"], "-ERR syntax error\r\n"),
            (&["RPUSH", "l", "x"], ":1\r\n"),
            (
                &["LCS", "key1", "l"],
                "-ERR The specified keys must contain string values\r\n",
            ),
        ]);
    }

    #[test]
    fn wrong_type() {
        let mut t = TestDb::new();
        t.run(&["RPUSH", "l", "x"]);
        for argv in [
            &["GET", "l"][..],
            &["INCR", "l"],
            &["APPEND", "l", "x"],
            &["GETRANGE", "l", "0", "1"],
            &["SET", "l", "x", "GET"],
            &["GETDEL", "l"],
            &["STRLEN", "l"],
        ] {
            if crate::lookup(b"rpush").is_some() {
                assert_eq!(t.run(argv), WRONGTYPE, "{argv:?}");
            }
        }
        if crate::lookup(b"rpush").is_some() {
            assert_eq!(t.run(&["MGET", "l"]), "*1\r\n$-1\r\n");
        }
    }
}
