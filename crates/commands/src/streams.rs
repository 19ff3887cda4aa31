//! Stream commands: XADD, XRANGE, XREVRANGE, XLEN, XREAD, XDEL, XTRIM, XGROUP, XREADGROUP, XACK,
//! XPENDING, XCLAIM, XAUTOCLAIM, XINFO, XSETID, with Redis 7.0's replies and errors.
//!
//! Effects: commands whose outcome depends on the clock or on how entries are laid out describe
//! what they did as deterministic commands, as Redis propagates them: XADD with the id it
//! generated (and an exact `MAXLEN =` for an approximate trim), XTRIM with an exact
//! trim, XREADGROUP / XCLAIM / XAUTOCLAIM as `XCLAIM ... TIME <ms> RETRYCOUNT <n> FORCE JUSTID
//! LASTID <id>` per pending entry they created or changed, plus `XGROUP SETID ... ENTRIESREAD`
//! for the group's last delivered id and `XGROUP CREATECONSUMER` for a consumer they created.
//! (Redis does not propagate the changes a read of a consumer's own history makes, nor the read
//! counter with XCLAIM; Ferrite does, so a replayed journal gives the same digest.)

use ferrite_protocol::{Args, ErrorReply, ReplyWriter};
use ferrite_storage::stream::{AppendError, EntryRef, IdText, Trim};
use ferrite_storage::{Db, Entry, Slot, StreamId, StreamValue, Value, ValueRef};

use crate::ctx::Ctx;
use crate::spec::flags::*;
use crate::spec::{CmdResult, CommandSpec, Creates, KEY1, NO_KEYS};

crate::command_family!("stream");

const W: u32 = WRITE | DENYOOM;

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "xadd",
        -5,
        W | FAST,
        KEY1,
        Creates::FirstKey,
        "Appends an entry to a stream, creating it if needed.",
        xadd,
    ),
    cmd(
        "xrange",
        -4,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns the entries of a stream within a range of ids.",
        xrange,
    ),
    cmd(
        "xrevrange",
        -4,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns the entries of a stream within a range of ids, newest first.",
        xrevrange,
    ),
    cmd(
        "xlen",
        2,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns the number of entries of a stream.",
        xlen,
    ),
    // Keys follow STREAMS (movable keys, as in Redis's COMMAND INFO).
    cmd(
        "xread",
        -4,
        READONLY | BLOCKING,
        NO_KEYS,
        Creates::Nothing,
        "Returns entries newer than the given ids from streams, optionally waiting for them.",
        xread,
    ),
    // A write that can grow the pending entries lists: refused at the memory quota.
    cmd(
        "xreadgroup",
        -7,
        WRITE | BLOCKING,
        NO_KEYS,
        Creates::Nothing,
        "Delivers entries of streams to a consumer of a group, optionally waiting for them.",
        xreadgroup,
    ),
    cmd(
        "xdel",
        -3,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Deletes entries of a stream.",
        xdel,
    ),
    cmd(
        "xtrim",
        -4,
        WRITE,
        KEY1,
        Creates::Nothing,
        "Trims a stream to a length or a minimum id.",
        xtrim,
    ),
    cmd(
        "xgroup",
        -2,
        W,
        (2, 2, 1),
        Creates::KeyAfter(&["CREATE"]),
        "Manages consumer groups: CREATE, SETID, DESTROY, CREATECONSUMER, DELCONSUMER, HELP.",
        xgroup,
    ),
    cmd(
        "xsetid",
        -3,
        W | FAST,
        KEY1,
        Creates::Nothing,
        "Sets a stream's last id and counters.",
        xsetid,
    ),
    cmd(
        "xack",
        -4,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Acknowledges pending entries of a consumer group.",
        xack,
    ),
    cmd(
        "xpending",
        -3,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns the pending entries of a consumer group.",
        xpending,
    ),
    cmd(
        "xclaim",
        -6,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Changes the owner of pending entries of a consumer group.",
        xclaim,
    ),
    cmd(
        "xautoclaim",
        -6,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "Claims pending entries idle for long enough, scanning from an id.",
        xautoclaim,
    ),
    cmd(
        "xinfo",
        -2,
        READONLY,
        (2, 2, 1),
        Creates::Nothing,
        "Describes a stream, its groups or their consumers: STREAM, GROUPS, CONSUMERS, HELP.",
        xinfo,
    ),
];

// ---------------------------------------------------------------------------------------------
// Ids and common errors

fn invalid_id() -> ErrorReply {
    ErrorReply::err("Invalid stream ID specified as stream command argument")
}

fn no_such_key_or_group(key: &[u8], group: &[u8]) -> ErrorReply {
    ErrorReply::coded(
        "NOGROUP",
        format!(
            "No such key '{}' or consumer group '{}'",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(group)
        ),
    )
}

fn no_such_group_for_key(group: &[u8], key: &[u8]) -> ErrorReply {
    ErrorReply::coded(
        "NOGROUP",
        format!(
            "No such consumer group '{}' for key name '{}'",
            String::from_utf8_lossy(group),
            String::from_utf8_lossy(key)
        ),
    )
}

/// Redis's `string2ull`: the strict integer form first, else what C's `strtoull` accepts on the
/// whole string (leading spaces, a sign, leading zeros; a minus wraps around, as in C).
fn parse_u64(s: &[u8]) -> Option<u64> {
    if let Some(n) = ferrite_protocol::args::parse_i64(s) {
        return u64::try_from(n).ok();
    }
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = &s[i..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

/// Redis's `streamGenericParseIDOrReply`: `ms-seq`, `ms` (the sequence is `missing_seq`), `-`
/// and `+` unless `strict`, and `ms-*` when `star_seq` (then the second value is false).
fn parse_id_full(
    arg: &[u8],
    missing_seq: u64,
    strict: bool,
    star_seq: bool,
) -> Result<(StreamId, bool), ErrorReply> {
    if arg.len() > 127 {
        return Err(invalid_id());
    }
    match arg {
        b"-" if !strict => return Ok((StreamId::MIN, true)),
        b"+" if !strict => return Ok((StreamId::MAX, true)),
        b"-" | b"+" => return Err(invalid_id()),
        _ => {}
    }
    // C strings end at a NUL byte.
    let arg = arg.split(|&b| b == 0).next().unwrap_or(arg);
    let (ms, seq) = match arg.iter().position(|&b| b == b'-') {
        Some(dash) => (&arg[..dash], Some(&arg[dash + 1..])),
        None => (arg, None),
    };
    let ms = parse_u64(ms).ok_or_else(invalid_id)?;
    match seq {
        None => Ok((StreamId::new(ms, missing_seq), true)),
        Some(b"*") if star_seq => Ok((StreamId::new(ms, 0), false)),
        Some(s) => Ok((
            StreamId::new(ms, parse_u64(s).ok_or_else(invalid_id)?),
            true,
        )),
    }
}

fn parse_id(arg: &[u8], missing_seq: u64) -> Result<StreamId, ErrorReply> {
    parse_id_full(arg, missing_seq, false, false).map(|(id, _)| id)
}

fn parse_strict_id(arg: &[u8]) -> Result<StreamId, ErrorReply> {
    parse_id_full(arg, 0, true, false).map(|(id, _)| id)
}

/// An interval bound: `(id` is exclusive (and parsed strictly); returns the id and whether it
/// was exclusive.
fn parse_interval_id(arg: &[u8], missing_seq: u64) -> Result<(StreamId, bool), ErrorReply> {
    if arg.len() > 1 && arg[0] == b'(' {
        Ok((parse_id_full(&arg[1..], missing_seq, true, false)?.0, true))
    } else {
        Ok((parse_id(arg, missing_seq)?, false))
    }
}

/// A range's start, moved past itself when exclusive.
fn interval_start(arg: &[u8]) -> Result<StreamId, ErrorReply> {
    let (id, ex) = parse_interval_id(arg, 0)?;
    if ex {
        return id
            .next()
            .ok_or_else(|| ErrorReply::err("invalid start ID for the interval"));
    }
    Ok(id)
}

fn interval_end(arg: &[u8]) -> Result<StreamId, ErrorReply> {
    let (id, ex) = parse_interval_id(arg, u64::MAX)?;
    if ex {
        return id
            .prev()
            .ok_or_else(|| ErrorReply::err("invalid end ID for the interval"));
    }
    Ok(id)
}

fn id_bytes(id: StreamId) -> Vec<u8> {
    id.to_string().into_bytes()
}

/// An integer argument with Redis's default error text or a command-specific one.
fn int_arg(args: &Args<'_>, i: usize, msg: Option<&'static str>) -> Result<i64, ErrorReply> {
    ferrite_protocol::args::parse_i64(args.get(i)).ok_or_else(|| match msg {
        Some(m) => ErrorReply::err(m),
        None => ErrorReply::not_integer(),
    })
}

// ---------------------------------------------------------------------------------------------
// Replies

fn reply_id(w: &mut ReplyWriter<'_>, id: StreamId) {
    let mut t = IdText::default();
    w.bulk(id.format(&mut t));
}

/// `[id, [field, value, ...]]`.
fn reply_entry(w: &mut ReplyWriter<'_>, e: &EntryRef<'_>) {
    w.array(2);
    reply_id(w, e.id());
    w.array(e.len() * 2);
    for (f, v) in e.fields() {
        w.bulk(f);
        w.bulk(v);
    }
}

fn reply_entries<'a>(w: &mut ReplyWriter<'_>, entries: &[EntryRef<'a>]) {
    w.array(entries.len());
    for e in entries {
        reply_entry(w, e);
    }
}

// ---------------------------------------------------------------------------------------------
// Looking streams up

fn as_stream(e: &Entry) -> Result<&StreamValue, ErrorReply> {
    match e.value() {
        ValueRef::Stream(s) => Ok(s),
        _ => Err(ErrorReply::wrong_type()),
    }
}

fn as_stream_mut(e: &mut Entry) -> Result<&mut StreamValue, ErrorReply> {
    match e.value_mut() {
        Value::Stream(s) => Ok(s),
        _ => Err(ErrorReply::wrong_type()),
    }
}

/// The stream at `key`: None when missing, WRONGTYPE for another type.
fn read<'d>(db: &'d mut Db, key: &[u8], now: u64) -> Result<Option<&'d StreamValue>, ErrorReply> {
    db.get(key, now).map(as_stream).transpose()
}

// ---------------------------------------------------------------------------------------------
// XADD / XTRIM

/// The trimming part of XADD/XTRIM.
struct TrimArgs {
    how: Trim,
    approx: bool,
    /// Entries a trim may remove at most (0: no limit).
    limit: u64,
    /// The argument as given (propagated as is when the trim was exact).
    arg: Vec<u8>,
}

/// What XADD/XTRIM were asked (Redis's streamParseAddOrTrimArgsOrReply).
struct AddTrimArgs {
    trim: Option<TrimArgs>,
    nomkstream: bool,
    /// XADD: the id argument's position, the id and whether its sequence was given; None for `*`.
    id_pos: usize,
    id: Option<(StreamId, bool)>,
}

fn parse_add_trim(args: &Args<'_>, xadd: bool) -> Result<AddTrimArgs, ErrorReply> {
    let mut out = AddTrimArgs {
        trim: None,
        nomkstream: false,
        id_pos: args.len(),
        id: None,
    };
    let mut limit: Option<i64> = None;
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = args.get(i);
        if xadd && opt == b"*" {
            out.id_pos = i;
            break;
        } else if (args.is(i, "MAXLEN") || args.is(i, "MINID")) && more > 0 {
            if out.trim.is_some() {
                return Err(ErrorReply::err(
                    "syntax error, MAXLEN and MINID options at the same time are not compatible",
                ));
            }
            let maxlen = args.is(i, "MAXLEN");
            let mut approx = false;
            let next = args.get(i + 1);
            if more >= 2 && next == b"~" {
                approx = true;
                i += 1;
            } else if more >= 2 && next == b"=" {
                i += 1;
            }
            let arg = args.get(i + 1);
            let how = if maxlen {
                let n = int_arg(args, i + 1, None)?;
                if n < 0 {
                    return Err(ErrorReply::err("The MAXLEN argument must be >= 0."));
                }
                Trim::MaxLen(n as u64)
            } else {
                Trim::MinId(parse_strict_id(arg)?)
            };
            i += 1;
            out.trim = Some(TrimArgs {
                how,
                approx,
                limit: 0,
                arg: arg.to_vec(),
            });
        } else if args.is(i, "LIMIT") && more > 0 {
            let n = int_arg(args, i + 1, None)?;
            if n < 0 {
                return Err(ErrorReply::err("The LIMIT argument must be >= 0."));
            }
            limit = Some(n);
            i += 1;
        } else if xadd && args.is(i, "NOMKSTREAM") {
            out.nomkstream = true;
        } else if xadd {
            out.id = Some(parse_id_full(opt, 0, true, true)?);
            out.id_pos = i;
            break;
        } else {
            return Err(ErrorReply::syntax());
        }
        i += 1;
    }
    if limit.is_some_and(|n| n > 0) && out.trim.is_none() {
        return Err(ErrorReply::err(
            "syntax error, LIMIT cannot be used without specifying a trimming strategy",
        ));
    }
    if !xadd && out.trim.is_none() {
        return Err(ErrorReply::err(
            "syntax error, XTRIM must be called with a trimming strategy",
        ));
    }
    if let Some(t) = out.trim.as_mut() {
        match limit {
            Some(_) if !t.approx => {
                return Err(ErrorReply::err(
                    "syntax error, LIMIT cannot be used without the special ~ option",
                ));
            }
            Some(n) => t.limit = n as u64,
            // At most 100 blocks' worth of work per approximate trim, as Redis.
            None if t.approx => {
                let per_node = ferrite_storage::encoding::limit("stream-node-max-entries")
                    .map_or(100, |l| l.get());
                let n = per_node.saturating_mul(100);
                t.limit = if n <= 0 {
                    10_000
                } else {
                    n.min(1_000_000) as u64
                };
            }
            None => t.limit = 0,
        }
    }
    Ok(out)
}

/// `MAXLEN|MINID = <value>` describing the trim's outcome exactly. An approximate trim of
/// either kind removed entries from the head: `MAXLEN =` what is left says exactly that (a
/// `MINID` of the first entry left would say nothing about a stream it emptied).
fn trim_effect(t: &TrimArgs, s: &StreamValue) -> [Vec<u8>; 3] {
    let (word, value) = match t.how {
        _ if t.approx => ("MAXLEN", s.len().to_string().into_bytes()),
        Trim::MaxLen(_) => ("MAXLEN", t.arg.clone()),
        Trim::MinId(_) => ("MINID", t.arg.clone()),
    };
    [word.as_bytes().to_vec(), b"=".to_vec(), value]
}

fn xadd(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let opts = parse_add_trim(&args, true)?;
    let field_pos = opts.id_pos + 1;
    let nfields = args.len().saturating_sub(field_pos);
    if nfields < 2 || nfields % 2 == 1 {
        return Err(ErrorReply::wrong_arity("xadd"));
    }
    if let Some((id, true)) = opts.id
        && id.is_zero()
    {
        return Err(ErrorReply::err(
            "The ID specified in XADD must be greater than 0-0",
        ));
    }
    let key = args.get(1);
    let fields: Vec<&[u8]> = args.tail(field_pos).iter().collect();
    let Some((id, effect)) = append(ctx.db, ctx.now, key, &opts, &fields)? else {
        // NOMKSTREAM and no stream.
        ctx.w.null();
        return Ok(());
    };
    if let Some(e) = effect {
        ctx.db.propagate(e);
    }
    reply_id(ctx.w, id);
    Ok(())
}

/// XADD's work: appends to the stream at `key` (created unless NOMKSTREAM), trims it, and
/// returns the new id with the command's deterministic form (when effects are wanted).
#[allow(clippy::type_complexity)]
fn append(
    db: &mut Db,
    now: u64,
    key: &[u8],
    opts: &AddTrimArgs,
    fields: &[&[u8]],
) -> Result<Option<(StreamId, Option<Vec<Vec<u8>>>)>, ErrorReply> {
    let wants = db.wants_effects();
    let mut fresh = StreamValue::default();
    let mut slot = db.entry(key, now);
    let s: &mut StreamValue = match &mut slot {
        Slot::Occupied(o) => as_stream_mut(o.get_mut())?,
        Slot::Vacant(_) if opts.nomkstream => return Ok(None),
        Slot::Vacant(_) => &mut fresh,
    };
    if s.last_id() == StreamId::MAX {
        return Err(ErrorReply::err(
            "The stream has exhausted the last possible ID, unable to add more items",
        ));
    }
    let too_small = || {
        ErrorReply::err(
            "The ID specified in XADD is equal or smaller than the target stream top item",
        )
    };
    let id = match opts.id {
        None => s.next_auto_id(now).ok_or_else(too_small)?,
        Some((id, true)) => id,
        Some((id, false)) => {
            let last = s.last_id();
            if last.ms == id.ms {
                last.next()
                    .filter(|n| n.ms == id.ms)
                    .ok_or_else(too_small)?
            } else {
                id
            }
        }
    };
    s.append(id, fields).map_err(|e| match e {
        AppendError::IdTooSmall => too_small(),
        AppendError::TooLarge => ErrorReply::err("Elements are too large to be stored"),
    })?;
    if let Some(t) = &opts.trim {
        s.trim(t.how, t.approx, t.limit);
    }
    let effect = wants.then(|| {
        let mut e: Vec<Vec<u8>> = vec![b"XADD".to_vec(), key.to_vec()];
        if opts.nomkstream {
            e.push(b"NOMKSTREAM".to_vec());
        }
        if let Some(t) = &opts.trim {
            e.extend(trim_effect(t, s));
        }
        e.push(id_bytes(id));
        e.extend(fields.iter().map(|f| f.to_vec()));
        e
    });
    if let Slot::Vacant(v) = slot {
        v.insert(Value::Stream(Box::new(fresh)), None);
    }
    Ok(Some((id, effect)))
}

fn xtrim(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let opts = parse_add_trim(&args, false)?;
    let Some(t) = opts.trim else {
        return Err(ErrorReply::syntax());
    };
    let key = args.get(1);
    let wants = ctx.db.wants_effects();
    let (deleted, effect) = match ctx.db.entry(key, ctx.now) {
        Slot::Occupied(mut o) => {
            let s = as_stream_mut(o.get_mut())?;
            let n = s.trim(t.how, t.approx, t.limit);
            let effect = (wants && n > 0).then(|| {
                let mut e = vec![b"XTRIM".to_vec(), key.to_vec()];
                e.extend(trim_effect(&t, s));
                e
            });
            (n, effect)
        }
        Slot::Vacant(_) => (0, None),
    };
    if let Some(e) = effect {
        ctx.db.propagate(e);
    }
    ctx.w.int(deleted as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// XRANGE / XREVRANGE / XLEN / XDEL

fn range_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, rev: bool) -> CmdResult {
    let (start_arg, end_arg) = if rev {
        (args.get(3), args.get(2))
    } else {
        (args.get(2), args.get(3))
    };
    let start = interval_start(start_arg)?;
    let end = interval_end(end_arg)?;
    let mut count: i64 = -1;
    let mut j = 4;
    while j < args.len() {
        if args.is(j, "COUNT") && j + 1 < args.len() {
            count = int_arg(&args, j + 1, None)?.max(0);
            j += 2;
        } else {
            return Err(ErrorReply::syntax());
        }
    }
    let Some(s) = read(ctx.db, args.get(1), ctx.now)? else {
        ctx.w.array(0);
        return Ok(());
    };
    if count == 0 {
        ctx.w.null_array();
        return Ok(());
    }
    let take = if count < 0 {
        usize::MAX
    } else {
        count as usize
    };
    let entries: Vec<EntryRef<'_>> = if rev {
        s.range_rev(start, end).take(take).collect()
    } else {
        s.range(start, end).take(take).collect()
    };
    reply_entries(ctx.w, &entries);
    Ok(())
}

fn xrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    range_generic(ctx, args, false)
}

fn xrevrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    range_generic(ctx, args, true)
}

fn xlen(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let n = read(ctx.db, args.get(1), ctx.now)?.map_or(0, |s| s.len());
    ctx.w.int(n as i64);
    Ok(())
}

fn xdel(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let n = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => {
            as_stream(o.get())?;
            let ids = args
                .tail(2)
                .iter()
                .map(parse_strict_id)
                .collect::<Result<Vec<_>, _>>()?;
            as_stream_mut(o.get_mut())?.delete(&ids)
        }
        Slot::Vacant(_) => 0,
    };
    ctx.w.int(n as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// XREAD / XREADGROUP

/// What an XREAD/XREADGROUP request asks (Redis's xreadCommand parsing).
struct ReadArgs<'a> {
    /// Milliseconds to wait when nothing is there (None: do not wait; 0: forever).
    block: Option<u64>,
    /// Entries per stream (0: all).
    count: usize,
    streams_at: usize,
    group: Option<(&'a [u8], &'a [u8])>,
    noack: bool,
}

fn parse_read<'a>(args: &Args<'a>, xreadgroup: bool) -> Result<ReadArgs<'a>, ErrorReply> {
    let mut r = ReadArgs {
        block: None,
        count: 0,
        streams_at: 0,
        group: None,
        noack: false,
    };
    let mut i = 1;
    while i < args.len() {
        let more = args.len() - i - 1;
        if args.is(i, "BLOCK") && more > 0 {
            i += 1;
            let t = int_arg(args, i, Some("timeout is not an integer or out of range"))?;
            if t < 0 {
                return Err(ErrorReply::err("timeout is negative"));
            }
            r.block = Some(t as u64);
        } else if args.is(i, "COUNT") && more > 0 {
            i += 1;
            r.count = int_arg(args, i, None)?.max(0) as usize;
        } else if args.is(i, "STREAMS") && more > 0 {
            r.streams_at = i + 1;
            if !(args.len() - r.streams_at).is_multiple_of(2) {
                // Redis 7.2's text, naming the command.
                return Err(ErrorReply::err(if xreadgroup {
                    "Unbalanced 'xreadgroup' list of streams: for each stream key an ID or '>' must be specified."
                } else {
                    "Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified."
                }));
            }
            break;
        } else if args.is(i, "GROUP") && more >= 2 {
            if !xreadgroup {
                return Err(ErrorReply::err(
                    "The GROUP option is only supported by XREADGROUP. You called XREAD instead.",
                ));
            }
            r.group = Some((args.get(i + 1), args.get(i + 2)));
            i += 2;
        } else if args.is(i, "NOACK") {
            if !xreadgroup {
                return Err(ErrorReply::err(
                    "The NOACK option is only supported by XREADGROUP. You called XREAD instead.",
                ));
            }
            r.noack = true;
        } else {
            return Err(ErrorReply::syntax());
        }
        i += 1;
    }
    if r.streams_at == 0 {
        return Err(ErrorReply::syntax());
    }
    if xreadgroup && r.group.is_none() {
        return Err(ErrorReply::err("Missing GROUP option for XREADGROUP"));
    }
    Ok(r)
}

/// Where reading one stream starts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum From {
    /// Entries after this id.
    After(StreamId),
    /// XREADGROUP `>`: entries never delivered to the group.
    New,
}

fn xread(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_or_timeout(ctx, args, false)
}

fn xreadgroup(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_or_timeout(ctx, args, true)
}

/// XREAD / XREADGROUP as the command table runs them: a read that finds nothing answers as if
/// its BLOCK timeout had passed (a null array), as Redis does inside MULTI. Waiting for keys is
/// the server's blocking registry's job, which runs [`read_attempt`] again when a key changes.
fn read_or_timeout(ctx: &mut Ctx<'_, '_>, args: Args<'_>, xreadgroup: bool) -> CmdResult {
    if let ReadOutcome::Wait(_) = read_attempt(ctx, args, xreadgroup)? {
        ctx.w.null_array();
    }
    Ok(())
}

/// What one attempt of XREAD / XREADGROUP did.
#[derive(Debug)]
pub enum ReadOutcome {
    /// The reply is written (and any change made).
    Served,
    /// Nothing to serve and BLOCK was given: nothing was written, and nothing changed but an
    /// XREADGROUP's consumer created where it was missing (as Redis 7.2 does before it blocks,
    /// propagated as XGROUP CREATECONSUMER). The waiter should
    /// run this request (the original, with `$` resolved to the last id seen now, so entries
    /// added meanwhile are not missed) when one of the keys changes.
    Wait(ReadWait),
}

/// What a blocked XREAD / XREADGROUP waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadWait {
    pub keys: Vec<Vec<u8>>,
    pub retry: Vec<Vec<u8>>,
    /// Milliseconds (0: forever).
    pub timeout_ms: u64,
}

/// Runs XREAD (`xreadgroup` false) or XREADGROUP once.
pub fn read_attempt(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    xreadgroup: bool,
) -> Result<ReadOutcome, ErrorReply> {
    let r = parse_read(&args, xreadgroup)?;
    let n = (args.len() - r.streams_at) / 2;
    let keys: Vec<&[u8]> = (0..n).map(|i| args.get(r.streams_at + i)).collect();
    // Check everything before changing anything (Redis replies with the first error).
    let mut froms = Vec::with_capacity(n);
    for (i, key) in keys.iter().enumerate() {
        let s = read(ctx.db, key, ctx.now)?;
        if let Some((group, _)) = r.group
            && s.and_then(|s| s.group(group)).is_none()
        {
            return Err(ErrorReply::coded(
                "NOGROUP",
                format!(
                    "No such key '{}' or consumer group '{}' in XREADGROUP with GROUP option",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(group)
                ),
            ));
        }
        let arg = args.get(r.streams_at + n + i);
        let from = match arg {
            b"$" if xreadgroup => {
                return Err(ErrorReply::err(
                    "The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.",
                ));
            }
            b"$" => From::After(s.map_or(StreamId::MIN, |s| s.last_id())),
            b">" if !xreadgroup => {
                return Err(ErrorReply::err(
                    "The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.",
                ));
            }
            b">" => From::New,
            _ => From::After(parse_strict_id(arg)?),
        };
        froms.push(from);
    }
    // Which streams can be served now.
    let mut served = Vec::with_capacity(n);
    for (i, key) in keys.iter().enumerate() {
        let Some(s) = read(ctx.db, key, ctx.now)? else {
            served.push(false);
            continue;
        };
        let last = s.last_entry_id();
        let yes = match (froms[i], r.group) {
            // A consumer's own history is always served.
            (From::After(_), Some(_)) => true,
            (From::New, Some((g, _))) => {
                let delivered = s.group(g).map_or(StreamId::MAX, |g| g.last_id());
                last.is_some_and(|l| l > delivered)
            }
            (From::After(id), None) => last.is_some_and(|l| l > id),
            (From::New, None) => false,
        };
        served.push(yes);
    }
    let count = served.iter().filter(|&&s| s).count();
    if count == 0 {
        // Redis 7.2 creates the consumer (and marks it seen) even when there is nothing to
        // read. A reader about to wait only creates a missing one: marking an existing one
        // seen would offer the key to every other waiter on it.
        if let Some((group, consumer)) = r.group {
            for key in &keys {
                meet_consumer(ctx, key, group, consumer, r.block.is_none())?;
            }
        }
        if let Some(t) = r.block {
            let mut retry: Vec<Vec<u8>> = args.iter().map(<[u8]>::to_vec).collect();
            for (i, f) in froms.iter().enumerate() {
                if let From::After(id) = f {
                    retry[r.streams_at + n + i] = id_bytes(*id);
                }
            }
            // Wait for a write to one of the keys, then run again with `$` resolved to the last
            // id seen now, so entries added meanwhile are not missed.
            return Ok(ReadOutcome::Wait(ReadWait {
                keys: keys.iter().map(|k| k.to_vec()).collect(),
                retry,
                timeout_ms: t,
            }));
        }
        ctx.w.null_array();
        return Ok(ReadOutcome::Served);
    }
    if ctx.w.is_resp3() {
        ctx.w.map(count);
    } else {
        ctx.w.array(count);
    }
    for (i, key) in keys.iter().enumerate() {
        if !served[i] {
            continue;
        }
        if !ctx.w.is_resp3() {
            ctx.w.array(2);
        }
        ctx.w.bulk(key);
        match r.group {
            None => {
                let From::After(after) = froms[i] else {
                    continue;
                };
                let s = read(ctx.db, key, ctx.now)?;
                let entries: Vec<EntryRef<'_>> = match (s, after.next()) {
                    (Some(s), Some(start)) => {
                        s.range(start, StreamId::MAX).take(limit(r.count)).collect()
                    }
                    _ => Vec::new(),
                };
                reply_entries(ctx.w, &entries);
            }
            Some((group, consumer)) => {
                serve_group(ctx, key, group, consumer, froms[i], r.count, r.noack)?;
            }
        }
    }
    Ok(ReadOutcome::Served)
}

/// Does this XREAD / XREADGROUP ask to wait (BLOCK given)? Requests that do not are plain
/// reads; a malformed one is answered by the read itself.
pub fn read_blocks(args: &Args<'_>, xreadgroup: bool) -> bool {
    parse_read(args, xreadgroup).is_ok_and(|r| r.block.is_some())
}

/// Serves a blocked XREAD / XREADGROUP (`args`: the request [`ReadWait::retry`] gave) after a
/// write made `key` ready, as Redis 7.2 does: the command runs again as if new, over all its
/// keys in the order given (7.2's re-processing of a blocked command), so the reply holds every
/// stream that has entries for it by then (two streams written in one transaction or script
/// come together), not only the one that woke it. Its `$`s were resolved when it blocked.
///
/// XREADGROUP (7.2's `unblock_on_nokey`) runs again whatever happened to the key: deleted,
/// flushed, renamed over by a stream without the group, given another type or without its
/// group, it gets that command's own answer (`-NOGROUP ... in XREADGROUP with GROUP option`,
/// `-WRONGTYPE`). XREAD runs again only when the key is a stream (7.2 wakes it only for its own
/// type): a key deleted or set to another type leaves it waiting. Either way, if there is
/// nothing to read the caller keeps waiting, in its place and with its original deadline.
pub fn serve_ready(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    xreadgroup: bool,
    key: &[u8],
) -> Result<ReadOutcome, ErrorReply> {
    if !xreadgroup
        && ctx
            .db
            .get(key, ctx.now)
            .is_none_or(|e| as_stream(e).is_err())
    {
        // Keep waiting, with the same request.
        let r = parse_read(&args, false)?;
        return Ok(ReadOutcome::Wait(ReadWait {
            keys: vec![key.to_vec()],
            retry: args.iter().map(<[u8]>::to_vec).collect(),
            timeout_ms: r.block.unwrap_or(0),
        }));
    }
    read_attempt(ctx, args, xreadgroup)
}

fn limit(count: usize) -> usize {
    if count == 0 { usize::MAX } else { count }
}

/// `XCLAIM <key> <group> <consumer> 0 <id> TIME <ms> RETRYCOUNT <n> FORCE JUSTID LASTID <id>`:
/// the deterministic form of a change to one pending entry (Redis's streamPropagateXCLAIM).
fn claim_effect(
    key: &[u8],
    group: &[u8],
    consumer: &[u8],
    id: StreamId,
    time: u64,
    count: u64,
    last: StreamId,
) -> Vec<Vec<u8>> {
    vec![
        b"XCLAIM".to_vec(),
        key.to_vec(),
        group.to_vec(),
        consumer.to_vec(),
        b"0".to_vec(),
        id_bytes(id),
        b"TIME".to_vec(),
        time.to_string().into_bytes(),
        b"RETRYCOUNT".to_vec(),
        count.to_string().into_bytes(),
        b"FORCE".to_vec(),
        b"JUSTID".to_vec(),
        b"LASTID".to_vec(),
        id_bytes(last),
    ]
}

/// `XGROUP SETID <key> <group> <id> ENTRIESREAD <n>`: a group's last delivered id and counter.
fn setid_effect(key: &[u8], group: &[u8], s: &StreamValue) -> Option<Vec<Vec<u8>>> {
    let g = s.group(group)?;
    Some(vec![
        b"XGROUP".to_vec(),
        b"SETID".to_vec(),
        key.to_vec(),
        group.to_vec(),
        id_bytes(g.last_id()),
        b"ENTRIESREAD".to_vec(),
        g.entries_read_raw().to_string().into_bytes(),
    ])
}

/// `xgroup-createconsumer` for a consumer a read or a claim created.
fn announce_consumer(events: Option<&ferrite_storage::notify::KeyEvents>, key: &[u8]) {
    if let Some(ev) = events {
        ev.emit(
            ferrite_storage::notify::class::STREAM,
            "xgroup-createconsumer",
            key,
        );
    }
}

fn createconsumer_effect(key: &[u8], group: &[u8], consumer: &[u8]) -> Vec<Vec<u8>> {
    vec![
        b"XGROUP".to_vec(),
        b"CREATECONSUMER".to_vec(),
        key.to_vec(),
        group.to_vec(),
        consumer.to_vec(),
    ]
}

/// XCLAIM / XAUTOCLAIM's consumer, created (announced, and propagated as XGROUP CREATECONSUMER)
/// or marked seen before anything is claimed, claimed or not, as Redis 7.2 does.
#[allow(clippy::too_many_arguments)]
fn meet_claimer(
    s: &mut StreamValue,
    key: &[u8],
    group: &[u8],
    consumer: &[u8],
    now: u64,
    events: Option<&ferrite_storage::notify::KeyEvents>,
    wants: bool,
    effects: &mut Vec<Vec<Vec<u8>>>,
) {
    if s.create_consumer(group, consumer, now) {
        announce_consumer(events, key);
        if wants {
            effects.push(createconsumer_effect(key, group, consumer));
        }
    } else {
        s.touch_consumer(group, consumer, now);
    }
}

/// An XREADGROUP that reads nothing from `key` (a stream with the group): creates the consumer
/// if missing (announced and propagated as XGROUP CREATECONSUMER), else marks it seen when
/// `touch`.
fn meet_consumer(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    group: &[u8],
    consumer: &[u8],
    touch: bool,
) -> CmdResult {
    let now = ctx.now;
    let seen = read(ctx.db, key, now)?
        .and_then(|s| s.group(group))
        .and_then(|g| g.consumer(consumer))
        .map(|c| c.seen_time());
    let exists = seen.is_some();
    // Seen this millisecond already (a poller's pipeline): nothing to change, and no need to
    // take the entry for writing (which accounts it).
    if exists && (!touch || seen == Some(now)) {
        return Ok(());
    }
    let events = ctx.db.notifying().then(|| ctx.db.key_events().clone());
    let Slot::Occupied(mut o) = ctx.db.entry(key, now) else {
        return Ok(());
    };
    if exists {
        // A poll that finds nothing changes only the seen time: no blocked reader of the key
        // has anything new to read.
        o.unseen_by_waiters();
        as_stream_mut(o.get_mut())?.touch_consumer(group, consumer, now);
        return Ok(());
    }
    let s = as_stream_mut(o.get_mut())?;
    if !s.create_consumer(group, consumer, now) {
        return Ok(());
    }
    drop(o);
    announce_consumer(events.as_deref(), key);
    ctx.db
        .propagate(createconsumer_effect(key, group, consumer));
    Ok(())
}

/// Serves one stream of an XREADGROUP (its key was checked: a stream with the group).
fn serve_group(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    group: &[u8],
    consumer: &[u8],
    from: From,
    count: usize,
    noack: bool,
) -> CmdResult {
    let now = ctx.now;
    let wants = ctx.db.wants_effects();
    let mut effects: Vec<Vec<Vec<u8>>> = Vec::new();
    let events = ctx.db.notifying().then(|| ctx.db.key_events().clone());
    let Slot::Occupied(mut o) = ctx.db.entry(key, now) else {
        ctx.w.array(0);
        return Ok(());
    };
    let s = as_stream_mut(o.get_mut())?;
    if s.create_consumer(group, consumer, now) {
        announce_consumer(events.as_deref(), key);
        effects.push(createconsumer_effect(key, group, consumer));
    } else {
        s.touch_consumer(group, consumer, now);
    }
    match from {
        From::New => {
            let last = s.group(group).map_or(StreamId::MAX, |g| g.last_id());
            let ids: Vec<StreamId> = match last.next() {
                Some(start) => s
                    .range(start, StreamId::MAX)
                    .take(limit(count))
                    .map(|e| e.id())
                    .collect(),
                None => Vec::new(),
            };
            // Redis 7.2: a consumer is active when it is delivered entries to acknowledge.
            if !noack && !ids.is_empty() {
                s.activate_consumer(group, consumer, now);
            }
            for &id in &ids {
                s.advance_group(group, id);
                if !noack {
                    s.set_pending(group, id, consumer, now, 1, now);
                    if wants {
                        let last = s.group(group).map_or(id, |g| g.last_id());
                        effects.push(claim_effect(key, group, consumer, id, now, 1, last));
                    }
                }
            }
            if wants
                && !ids.is_empty()
                && let Some(e) = setid_effect(key, group, s)
            {
                effects.push(e);
            }
            let entries: Vec<EntryRef<'_>> = ids.iter().filter_map(|&id| s.get(id)).collect();
            reply_entries(ctx.w, &entries);
        }
        From::After(after) => {
            // The consumer's own pending entries after `after`.
            let ids: Vec<StreamId> = match after.next() {
                Some(start) => s
                    .group(group)
                    .and_then(|g| g.consumer(consumer))
                    .map(|c| c.pending_from(start).take(limit(count)).collect())
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            let last = s.group(group).map_or(StreamId::MIN, |g| g.last_id());
            for &id in &ids {
                if !s.contains(id) {
                    continue;
                }
                let n = s
                    .group(group)
                    .and_then(|g| g.pending(id))
                    .map_or(1, |p| p.delivery_count() + 1);
                s.set_pending(group, id, consumer, now, n, now);
                if wants {
                    effects.push(claim_effect(key, group, consumer, id, now, n, last));
                }
            }
            ctx.w.array(ids.len());
            for &id in &ids {
                match s.get(id) {
                    Some(e) => reply_entry(ctx.w, &e),
                    None => {
                        // Pending, but deleted from the stream since.
                        ctx.w.array(2);
                        reply_id(ctx.w, id);
                        ctx.w.null_array();
                    }
                }
            }
        }
    }
    drop(o);
    for e in effects {
        ctx.db.propagate(e);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// XGROUP / XSETID

const XGROUP_HELP: &[&str] = &[
    "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CREATE <key> <groupname> <id|$> [option]",
    "    Create a new consumer group. Options are:",
    "    * MKSTREAM",
    "      Create the empty stream if it does not exist.",
    "    * ENTRIESREAD entries_read",
    "      Set the group's entries_read counter (internal use).",
    "CREATECONSUMER <key> <groupname> <consumer>",
    "    Create a new consumer in the specified group.",
    "DELCONSUMER <key> <groupname> <consumer>",
    "    Remove the specified consumer.",
    "DESTROY <key> <groupname>",
    "    Remove the specified group.",
    "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
    "    Set the current group ID and entries_read counter.",
    "HELP",
    "    Prints this help.",
];

/// Subcommands of a container command with their Redis arities (checked first, as Redis's
/// command table does).
fn check_subcommand(
    args: &Args<'_>,
    container: &str,
    table: &[(&str, i32)],
) -> Result<(), ErrorReply> {
    let sub = args.get(1);
    let Some((name, arity)) = table
        .iter()
        .find(|(name, _)| sub.eq_ignore_ascii_case(name.as_bytes()))
    else {
        return Err(ErrorReply::unknown_subcommand(sub, container));
    };
    let argc = args.len();
    let ok = if *arity >= 0 {
        argc == *arity as usize
    } else {
        argc >= (-*arity) as usize
    };
    if !ok {
        return Err(ErrorReply::wrong_arity(&format!("{container}|{name}")));
    }
    Ok(())
}

/// Redis's addReplySubcommandSyntaxError.
fn subcommand_syntax(args: &Args<'_>, container: &str) -> ErrorReply {
    ErrorReply::err(format!(
        "unknown subcommand or wrong number of arguments for '{}'. Try {} HELP.",
        String::from_utf8_lossy(args.get(1)),
        container.to_ascii_uppercase()
    ))
}

fn xgroup(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    check_subcommand(
        &args,
        "xgroup",
        &[
            ("create", -5),
            ("createconsumer", 5),
            ("delconsumer", 5),
            ("destroy", 4),
            ("help", 2),
            ("setid", -5),
        ],
    )?;
    let sub = args.get(1).to_ascii_uppercase();
    if sub == b"HELP" {
        ctx.w.help(XGROUP_HELP);
        return Ok(());
    }
    let argc = args.len();
    let create = sub == b"CREATE";
    let setid = sub == b"SETID";
    let mut mkstream = false;
    let mut entries_read: i64 = -1;
    let mut i = 5;
    while i < argc {
        if create && args.is(i, "MKSTREAM") {
            mkstream = true;
            i += 1;
        } else if (create || setid) && args.is(i, "ENTRIESREAD") && i + 1 < argc {
            entries_read = int_arg(&args, i + 1, None)?;
            if entries_read < 0 && entries_read != -1 {
                return Err(ErrorReply::err(
                    "value for ENTRIESREAD must be positive or -1",
                ));
            }
            i += 2;
        } else {
            return Err(subcommand_syntax(&args, "xgroup"));
        }
    }
    let key = args.get(2);
    let group = args.get(3);
    let now = ctx.now;
    let exists = read(ctx.db, key, ctx.now)?.is_some();
    if !mkstream {
        if !exists {
            return Err(ErrorReply::err(
                "The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.",
            ));
        }
        let has_group = read(ctx.db, key, ctx.now)?.is_some_and(|s| s.group(group).is_some());
        if !has_group
            && matches!(
                sub.as_slice(),
                b"SETID" | b"CREATECONSUMER" | b"DELCONSUMER"
            )
        {
            return Err(no_such_group_for_key(group, key));
        }
    }
    match sub.as_slice() {
        b"CREATE" if argc <= 8 => {
            let id = match args.get(4) {
                b"$" => read(ctx.db, key, ctx.now)?.map_or(StreamId::MIN, |s| s.last_id()),
                a => parse_strict_id(a)?,
            };
            let created = match ctx.db.entry(key, now) {
                Slot::Occupied(mut o) => {
                    as_stream_mut(o.get_mut())?.create_group(group, id, entries_read)
                }
                Slot::Vacant(v) => {
                    let mut s = StreamValue::default();
                    s.create_group(group, id, entries_read);
                    v.insert(Value::Stream(Box::new(s)), None);
                    true
                }
            };
            if !created {
                return Err(ErrorReply::coded(
                    "BUSYGROUP",
                    "Consumer Group name already exists",
                ));
            }
            ctx.w.ok();
        }
        b"SETID" if argc == 5 || argc == 7 => {
            let id = match args.get(4) {
                b"$" => read(ctx.db, key, ctx.now)?.map_or(StreamId::MIN, |s| s.last_id()),
                a => parse_id(a, 0)?,
            };
            if let Slot::Occupied(mut o) = ctx.db.entry(key, now) {
                as_stream_mut(o.get_mut())?.set_group_last(group, id, entries_read);
            }
            ctx.w.ok();
        }
        b"DESTROY" if argc == 4 => {
            let done = match ctx.db.entry(key, now) {
                Slot::Occupied(mut o) => as_stream_mut(o.get_mut())?.destroy_group(group),
                Slot::Vacant(_) => false,
            };
            ctx.w.int(i64::from(done));
        }
        b"CREATECONSUMER" if argc == 5 => {
            let done = match ctx.db.entry(key, now) {
                Slot::Occupied(mut o) => {
                    as_stream_mut(o.get_mut())?.create_consumer(group, args.get(4), now)
                }
                Slot::Vacant(_) => false,
            };
            ctx.w.int(i64::from(done));
        }
        b"DELCONSUMER" if argc == 5 => {
            let pending = match ctx.db.entry(key, now) {
                Slot::Occupied(mut o) => as_stream_mut(o.get_mut())?
                    .delete_consumer(group, args.get(4))
                    .unwrap_or(0),
                Slot::Vacant(_) => 0,
            };
            ctx.w.int(pending as i64);
        }
        _ => return Err(subcommand_syntax(&args, "xgroup")),
    }
    Ok(())
}

fn xsetid(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let id = parse_strict_id(args.get(2))?;
    let mut entries_added: Option<u64> = None;
    let mut max_deleted: Option<StreamId> = None;
    let mut i = 3;
    while i < args.len() {
        let more = args.len() - 1 - i;
        if args.is(i, "ENTRIESADDED") && more > 0 {
            let n = int_arg(&args, i + 1, None)?;
            if n < 0 {
                return Err(ErrorReply::err("entries_added must be positive"));
            }
            entries_added = Some(n as u64);
            i += 2;
        } else if args.is(i, "MAXDELETEDID") && more > 0 {
            let m = parse_strict_id(args.get(i + 1))?;
            if id < m {
                return Err(ErrorReply::err(
                    "The ID specified in XSETID is smaller than the provided max_deleted_entry_id",
                ));
            }
            max_deleted = Some(m);
            i += 2;
        } else {
            return Err(ErrorReply::syntax());
        }
    }
    let Slot::Occupied(mut o) = ctx.db.entry(args.get(1), ctx.now) else {
        return Err(ErrorReply::no_such_key());
    };
    let s = as_stream_mut(o.get_mut())?;
    // Redis 7.2: the last id never goes below an id already deleted.
    if id < s.max_deleted_id() {
        return Err(ErrorReply::err(
            "The ID specified in XSETID is smaller than current max_deleted_entry_id",
        ));
    }
    if let Some(top) = s.last_entry_id() {
        if id < top {
            return Err(ErrorReply::err(
                "The ID specified in XSETID is smaller than the target stream top item",
            ));
        }
        if entries_added.is_some_and(|n| s.len() > n) {
            return Err(ErrorReply::err(
                "The entries_added specified in XSETID is smaller than the target stream length",
            ));
        }
    }
    s.set_meta(id, entries_added, max_deleted.filter(|m| !m.is_zero()));
    drop(o);
    ctx.w.ok();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// XACK / XPENDING

fn xack(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let group = args.get(2);
    let has_group = match read(ctx.db, args.get(1), ctx.now)? {
        Some(s) => s.group(group).is_some(),
        None => false,
    };
    if !has_group {
        ctx.w.int(0);
        return Ok(());
    }
    let ids = args
        .tail(3)
        .iter()
        .map(parse_strict_id)
        .collect::<Result<Vec<_>, _>>()?;
    let mut n = 0;
    if let Slot::Occupied(mut o) = ctx.db.entry(args.get(1), ctx.now) {
        let s = as_stream_mut(o.get_mut())?;
        for id in ids {
            if s.ack(group, id) {
                n += 1;
            }
        }
    }
    ctx.w.int(n);
    Ok(())
}

fn xpending(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let argc = args.len();
    if argc != 3 && !(6..=9).contains(&argc) {
        return Err(ErrorReply::syntax());
    }
    let key = args.get(1);
    let group = args.get(2);
    let mut range = None;
    let mut min_idle: i64 = 0;
    let mut consumer = None;
    if argc >= 6 {
        let mut at = 3;
        if args.is(3, "IDLE") {
            min_idle = int_arg(&args, 4, None)?;
            if argc < 8 {
                return Err(ErrorReply::syntax());
            }
            at += 2;
        }
        let count = int_arg(&args, at + 2, None)?.max(0);
        let start = interval_start(args.get(at))?;
        let end = interval_end(args.get(at + 1))?;
        if at + 3 < argc {
            consumer = Some(args.get(at + 3));
        }
        range = Some((start, end, count as usize));
    }
    let now = ctx.now;
    let Some(s) = read(ctx.db, key, ctx.now)? else {
        return Err(no_such_key_or_group(key, group));
    };
    let Some(g) = s.group(group) else {
        return Err(no_such_key_or_group(key, group));
    };
    let w = &mut *ctx.w;
    let Some((start, end, count)) = range else {
        w.array(4);
        w.int(g.pending_len() as i64);
        match (g.first_pending(), g.last_pending()) {
            (Some(first), Some(last)) => {
                reply_id(w, first);
                reply_id(w, last);
                let owners: Vec<_> = g.consumers().filter(|(_, c)| c.pending_len() > 0).collect();
                w.array(owners.len());
                for (name, c) in owners {
                    w.array(2);
                    w.bulk(name);
                    w.bulk_int(c.pending_len() as i64);
                }
            }
            _ => {
                w.null();
                w.null();
                w.null_array();
            }
        }
        return Ok(());
    };
    let owner = match consumer {
        Some(name) => match g.consumer(name) {
            Some(c) => Some(c),
            None => {
                w.array(0);
                return Ok(());
            }
        },
        None => None,
    };
    let idle = |t: u64| now as i64 - t as i64;
    let mut rows = Vec::new();
    if count > 0 && start <= end {
        let ids: Box<dyn Iterator<Item = StreamId>> = match owner {
            Some(c) => Box::new(c.pending_from(start).take_while(move |id| *id <= end)),
            None => Box::new(g.pending_range(start, end).map(|(id, _)| id)),
        };
        for id in ids {
            let Some(p) = g.pending(id) else { continue };
            if min_idle != 0 && idle(p.delivery_time()) < min_idle {
                continue;
            }
            rows.push((id, p));
            if rows.len() == count {
                break;
            }
        }
    }
    w.array(rows.len());
    for (id, p) in rows {
        w.array(4);
        reply_id(w, id);
        w.bulk(p.consumer());
        w.int(idle(p.delivery_time()).max(0));
        w.int(p.delivery_count() as i64);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// XCLAIM / XAUTOCLAIM

fn xclaim(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let key = args.get(1);
    let group = args.get(2);
    let consumer = args.get(3);
    let now = ctx.now;
    match read(ctx.db, key, ctx.now)? {
        Some(s) if s.group(group).is_some() => {}
        _ => return Err(no_such_key_or_group(key, group)),
    }
    let min_idle = int_arg(&args, 4, Some("Invalid min-idle-time argument for XCLAIM"))?.max(0);
    let mut ids = Vec::new();
    let mut j = 5;
    while j < args.len() {
        match parse_strict_id(args.get(j)) {
            Ok(id) => ids.push(id),
            Err(_) => break,
        }
        j += 1;
    }
    let (mut force, mut justid) = (false, false);
    let mut retry: i64 = -1;
    let mut delivery: Option<i64> = None;
    let mut last_id = StreamId::MIN;
    while j < args.len() {
        let more = args.len() - 1 - j;
        if args.is(j, "FORCE") {
            force = true;
        } else if args.is(j, "JUSTID") {
            justid = true;
        } else if args.is(j, "IDLE") && more > 0 {
            j += 1;
            let n = int_arg(&args, j, Some("Invalid IDLE option argument for XCLAIM"))?;
            delivery = Some((now as i64).wrapping_sub(n));
        } else if args.is(j, "TIME") && more > 0 {
            j += 1;
            delivery = Some(int_arg(
                &args,
                j,
                Some("Invalid TIME option argument for XCLAIM"),
            )?);
        } else if args.is(j, "RETRYCOUNT") && more > 0 {
            j += 1;
            retry = int_arg(
                &args,
                j,
                Some("Invalid RETRYCOUNT option argument for XCLAIM"),
            )?;
        } else if args.is(j, "LASTID") && more > 0 {
            j += 1;
            last_id = parse_strict_id(args.get(j))?;
        } else {
            return Err(ErrorReply::err(format!(
                "Unrecognized XCLAIM option '{}'",
                args.text(j)
            )));
        }
        j += 1;
    }
    // A time in the future or before the epoch becomes now, as in Redis.
    let delivery = match delivery {
        Some(t) if t >= 0 && t <= now as i64 => t as u64,
        _ => now,
    };
    let wants = ctx.db.wants_effects();
    let mut effects: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut claimed: Vec<StreamId> = Vec::new();
    // XREADGROUP, XCLAIM and XAUTOCLAIM announce the consumers they create (Redis 7.0's
    // streamCreateConsumer): emitted at once, as nothing else of theirs is announced.
    let events = ctx.db.notifying().then(|| ctx.db.key_events().clone());
    let Slot::Occupied(mut o) = ctx.db.entry(key, now) else {
        return Err(no_such_key_or_group(key, group));
    };
    let s = as_stream_mut(o.get_mut())?;
    let mut moved_last = false;
    if s.group(group).is_some_and(|g| last_id > g.last_id()) {
        let entries_read = s.group(group).map_or(-1, |g| g.entries_read_raw());
        s.set_group_last(group, last_id, entries_read);
        moved_last = true;
    }
    meet_claimer(
        s,
        key,
        group,
        consumer,
        now,
        events.as_deref(),
        wants,
        &mut effects,
    );
    for id in ids {
        let group_last = s.group(group).map_or(StreamId::MIN, |g| g.last_id());
        let pending = s
            .group(group)
            .and_then(|g| g.pending(id))
            .map(|p| (p.delivery_time(), p.delivery_count(), p.consumer().to_vec()));
        if !s.contains(id) {
            // Pending for an entry that is gone: forget it.
            if let Some((t, n, owner)) = pending {
                s.ack(group, id);
                if wants {
                    effects.push(claim_effect(key, group, &owner, id, t, n, group_last));
                }
                moved_last = false;
            }
            continue;
        }
        let count = match pending {
            Some((t, n, _)) => {
                if min_idle > 0 && (now as i64 - t as i64) < min_idle {
                    continue;
                }
                n
            }
            // FORCE creates the entry (Redis starts its count at 1).
            None if force => 1,
            None => continue,
        };
        let count = if retry >= 0 {
            retry as u64
        } else if justid {
            count
        } else {
            count + 1
        };
        s.set_pending(group, id, consumer, delivery, count, now);
        s.activate_consumer(group, consumer, now);
        claimed.push(id);
        if wants {
            effects.push(claim_effect(
                key, group, consumer, id, delivery, count, group_last,
            ));
        }
        moved_last = false;
    }
    if moved_last
        && wants
        && let Some(e) = setid_effect(key, group, s)
    {
        effects.push(e);
    }
    let w = &mut *ctx.w;
    w.array(claimed.len());
    for id in &claimed {
        if justid {
            reply_id(w, *id);
        } else if let Some(e) = s.get(*id) {
            reply_entry(w, &e);
        } else {
            w.null_array();
        }
    }
    drop(o);
    for e in effects {
        ctx.db.propagate(e);
    }
    Ok(())
}

fn xautoclaim(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let key = args.get(1);
    let group = args.get(2);
    let consumer = args.get(3);
    let now = ctx.now;
    let min_idle = int_arg(
        &args,
        4,
        Some("Invalid min-idle-time argument for XAUTOCLAIM"),
    )?
    .max(0);
    let start = interval_start(args.get(5))?;
    let mut count: i64 = 100;
    let mut justid = false;
    let mut j = 6;
    while j < args.len() {
        let more = args.len() - 1 - j;
        if args.is(j, "COUNT") && more > 0 {
            let max = i64::MAX / 16;
            count = match ferrite_protocol::args::parse_i64(args.get(j + 1)) {
                Some(n) if (1..=max).contains(&n) => n,
                _ => return Err(ErrorReply::err("COUNT must be > 0")),
            };
            j += 1;
        } else if args.is(j, "JUSTID") {
            justid = true;
        } else {
            return Err(ErrorReply::syntax());
        }
        j += 1;
    }
    match read(ctx.db, key, ctx.now)? {
        Some(s) if s.group(group).is_some() => {}
        _ => return Err(no_such_key_or_group(key, group)),
    }
    let wants = ctx.db.wants_effects();
    let mut effects: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut claimed: Vec<StreamId> = Vec::new();
    let mut deleted: Vec<StreamId> = Vec::new();
    // XREADGROUP, XCLAIM and XAUTOCLAIM announce the consumers they create (Redis 7.0's
    // streamCreateConsumer): emitted at once, as nothing else of theirs is announced.
    let events = ctx.db.notifying().then(|| ctx.db.key_events().clone());
    let Slot::Occupied(mut o) = ctx.db.entry(key, now) else {
        return Err(no_such_key_or_group(key, group));
    };
    let s = as_stream_mut(o.get_mut())?;
    let mut attempts = count.saturating_mul(10);
    let mut left = count;
    let mut cursor = Some(start);
    meet_claimer(
        s,
        key,
        group,
        consumer,
        now,
        events.as_deref(),
        wants,
        &mut effects,
    );
    let next_pending = |s: &StreamValue, from: StreamId| {
        s.group(group)
            .and_then(|g| g.pending_range(from, StreamId::MAX).next())
            .map(|(id, p)| {
                (
                    id,
                    p.delivery_time(),
                    p.delivery_count(),
                    p.consumer().to_vec(),
                )
            })
    };
    while attempts > 0 && left > 0 {
        attempts -= 1;
        let Some(from) = cursor else { break };
        let Some((id, t, n, owner)) = next_pending(s, from) else {
            cursor = None;
            break;
        };
        cursor = id.next();
        let group_last = s.group(group).map_or(StreamId::MIN, |g| g.last_id());
        if !s.contains(id) {
            s.ack(group, id);
            if wants {
                effects.push(claim_effect(key, group, &owner, id, t, n, group_last));
            }
            deleted.push(id);
            left -= 1;
            continue;
        }
        if min_idle > 0 && (now as i64 - t as i64) < min_idle {
            continue;
        }
        let n = if justid { n } else { n + 1 };
        s.set_pending(group, id, consumer, now, n, now);
        s.activate_consumer(group, consumer, now);
        claimed.push(id);
        left -= 1;
        if wants {
            effects.push(claim_effect(key, group, consumer, id, now, n, group_last));
        }
    }
    // The cursor is the next pending entry after the last one looked at, 0-0 at the end.
    let next = cursor
        .and_then(|c| next_pending(s, c))
        .map_or(StreamId::MIN, |(id, ..)| id);
    let w = &mut *ctx.w;
    w.array(3);
    reply_id(w, next);
    w.array(claimed.len());
    for id in &claimed {
        if justid {
            reply_id(w, *id);
        } else if let Some(e) = s.get(*id) {
            reply_entry(w, &e);
        } else {
            w.null_array();
        }
    }
    w.array(deleted.len());
    for id in &deleted {
        reply_id(w, *id);
    }
    drop(o);
    for e in effects {
        ctx.db.propagate(e);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// XINFO

const XINFO_HELP: &[&str] = &[
    "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CONSUMERS <key> <groupname>",
    "    Show consumers of <groupname>.",
    "GROUPS <key>",
    "    Show the stream consumer groups.",
    "STREAM <key> [FULL [COUNT <count>]",
    "    Show information about the stream.",
    "HELP",
    "    Prints this help.",
];

fn xinfo(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    check_subcommand(
        &args,
        "xinfo",
        &[("consumers", 4), ("groups", 3), ("help", 2), ("stream", -3)],
    )?;
    if args.is(1, "HELP") {
        ctx.w.help(XINFO_HELP);
        return Ok(());
    }
    let key = args.get(2);
    let now = ctx.now;
    // XINFO STREAM's options are checked before the key is looked at.
    let mut full = None;
    if args.is(1, "STREAM") && args.len() > 3 {
        let optc = args.len() - 3;
        if (optc != 1 && optc != 3) || !args.is(3, "FULL") {
            return Err(subcommand_syntax(&args, "xinfo"));
        }
        let mut count = 10;
        if optc == 3 {
            if !args.is(4, "COUNT") {
                return Err(subcommand_syntax(&args, "xinfo"));
            }
            count = int_arg(&args, 5, None)?;
            if count < 0 {
                count = 10;
            }
        }
        full = Some(count as usize);
    }
    let Some(s) = read(ctx.db, key, ctx.now)? else {
        return Err(ErrorReply::no_such_key());
    };
    let w = &mut *ctx.w;
    if args.is(1, "CONSUMERS") {
        let Some(g) = s.group(args.get(3)) else {
            return Err(no_such_group_for_key(args.get(3), key));
        };
        w.array(g.consumers_len());
        for (name, c) in g.consumers() {
            w.map(4);
            w.bulk(b"name");
            w.bulk(name);
            w.bulk(b"pending");
            w.int(c.pending_len() as i64);
            w.bulk(b"idle");
            w.int((now as i64 - c.seen_time() as i64).max(0));
            // Redis 7.2: ms since the last successful interaction, -1 if none (not clamped,
            // as Redis does not clamp it).
            w.bulk(b"inactive");
            w.int(c.active_time().map_or(-1, |t| now as i64 - t as i64));
        }
    } else if args.is(1, "GROUPS") {
        w.array(s.groups_len());
        for (name, g) in s.groups() {
            w.map(6);
            w.bulk(b"name");
            w.bulk(name);
            w.bulk(b"consumers");
            w.int(g.consumers_len() as i64);
            w.bulk(b"pending");
            w.int(g.pending_len() as i64);
            w.bulk(b"last-delivered-id");
            reply_id(w, g.last_id());
            w.bulk(b"entries-read");
            opt_int(w, g.entries_read());
            w.bulk(b"lag");
            opt_int(w, s.lag(g));
        }
    } else {
        stream_info(w, s, full);
    }
    Ok(())
}

fn opt_int(w: &mut ReplyWriter<'_>, n: Option<u64>) {
    match n {
        Some(n) => w.int(n as i64),
        None => w.null(),
    }
}

/// XINFO STREAM, and with FULL (`Some(count)`, 0 = everything) every entry, group, pending entry
/// and consumer up to `count` of each.
fn stream_info(w: &mut ReplyWriter<'_>, s: &StreamValue, full: Option<usize>) {
    w.map(if full.is_some() { 9 } else { 10 });
    w.bulk(b"length");
    w.int(s.len() as i64);
    // Ferrite keeps blocks in a B-tree rather than a radix tree: its keys are the blocks; there
    // is no count of inner radix nodes to give, so nodes are reported as keys + 1 (the root).
    w.bulk(b"radix-tree-keys");
    w.int(s.blocks() as i64);
    w.bulk(b"radix-tree-nodes");
    w.int(s.blocks() as i64 + 1);
    w.bulk(b"last-generated-id");
    reply_id(w, s.last_id());
    w.bulk(b"max-deleted-entry-id");
    reply_id(w, s.max_deleted_id());
    w.bulk(b"entries-added");
    w.int(s.entries_added() as i64);
    w.bulk(b"recorded-first-entry-id");
    reply_id(w, s.first_id());
    let Some(count) = full else {
        w.bulk(b"groups");
        w.int(s.groups_len() as i64);
        w.bulk(b"first-entry");
        match s.range(StreamId::MIN, StreamId::MAX).next() {
            Some(e) => reply_entry(w, &e),
            None => w.null(),
        }
        w.bulk(b"last-entry");
        match s.range_rev(StreamId::MIN, StreamId::MAX).next() {
            Some(e) => reply_entry(w, &e),
            None => w.null(),
        }
        return;
    };
    let take = limit(count);
    w.bulk(b"entries");
    let entries: Vec<EntryRef<'_>> = s.range(StreamId::MIN, StreamId::MAX).take(take).collect();
    reply_entries(w, &entries);
    w.bulk(b"groups");
    w.array(s.groups_len());
    for (name, g) in s.groups() {
        w.map(7);
        w.bulk(b"name");
        w.bulk(name);
        w.bulk(b"last-delivered-id");
        reply_id(w, g.last_id());
        w.bulk(b"entries-read");
        opt_int(w, g.entries_read());
        w.bulk(b"lag");
        opt_int(w, s.lag(g));
        w.bulk(b"pel-count");
        w.int(g.pending_len() as i64);
        w.bulk(b"pending");
        let pel: Vec<_> = g
            .pending_range(StreamId::MIN, StreamId::MAX)
            .take(take)
            .collect();
        w.array(pel.len());
        for (id, p) in pel {
            w.array(4);
            reply_id(w, id);
            w.bulk(p.consumer());
            w.int(p.delivery_time() as i64);
            w.int(p.delivery_count() as i64);
        }
        w.bulk(b"consumers");
        w.array(g.consumers_len());
        for (cname, c) in g.consumers() {
            w.map(5);
            w.bulk(b"name");
            w.bulk(cname);
            w.bulk(b"seen-time");
            w.int(c.seen_time() as i64);
            w.bulk(b"active-time");
            w.int(c.active_time().map_or(-1, |t| t as i64));
            w.bulk(b"pel-count");
            w.int(c.pending_len() as i64);
            w.bulk(b"pending");
            let mine: Vec<StreamId> = c.pending_from(StreamId::MIN).take(take).collect();
            w.array(mine.len());
            for id in mine {
                w.array(3);
                reply_id(w, id);
                let p = g.pending(id);
                w.int(p.map_or(0, |p| p.delivery_time() as i64));
                w.int(p.map_or(0, |p| p.delivery_count() as i64));
            }
        }
    }
}

#[cfg(test)]
mod tests;
