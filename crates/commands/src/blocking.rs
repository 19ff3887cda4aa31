//! Blocking commands: BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP,
//! and XREAD / XREADGROUP with BLOCK (their attempts are `streams::read_attempt`).
//!
//! Each command is an *attempt* ([`AttemptFn`]): it serves the client now if one of its keys
//! has something, or says which keys to wait for and how long ([`Attempt::Block`]). The
//! server runs the attempt, and when it blocks registers a waiter with the keyspace
//! (`ferrite_storage::blocking`); when a write makes one of the keys ready, the waiter runs the
//! same attempt again under the same lock: a pop restricted to that key, XREAD / XREADGROUP
//! over all their keys (Redis 7.2 re-runs them: `streams::serve_ready`). Inside MULTI and scripts
//! (the data function in the command table) a command that would block answers as if it had
//! timed out, as in Redis.
//!
//! What a served attempt changed is published as the plain command (LPOP, LMOVE, ZPOPMIN...),
//! never as the blocking one, so a log replays it without waiting.

use std::sync::OnceLock;
use std::time::Duration;

use ferrite_protocol::{Args, ErrorReply, OwnedRequest, ReplyWriter};
use ferrite_storage::Slot;

use crate::ctx::Ctx;
use crate::spec::flags::*;
use crate::spec::{CmdResult, CommandSpec, Creates, NO_KEYS};
use crate::util::{as_list, as_zset, as_zset_mut};

crate::command_family!("list");

/// Runs a blocking command once: serves it or says what to wait for. `ready`: the key a write
/// has just made ready (a waiter being served): a pop looks only at that key, XREAD /
/// XREADGROUP at all theirs.
pub type AttemptFn =
    fn(&mut Ctx<'_, '_>, Args<'_>, ready: Option<&[u8]>) -> Result<Attempt, ErrorReply>;

/// What an attempt did.
#[derive(Debug)]
pub enum Attempt {
    /// The reply is written (and the change made and published).
    Served,
    /// Nothing to serve: nothing was written or changed.
    Block(BlockOn),
}

/// What a blocked client waits for.
#[derive(Debug, Clone)]
pub struct BlockOn {
    /// The keys, in the order given (a key named twice is waited for once).
    pub keys: Vec<Box<[u8]>>,
    /// `None`: forever (a timeout of 0).
    pub timeout: Option<Duration>,
    /// The reply when it times out (and inside MULTI).
    pub on_timeout: NullReply,
    /// The request to attempt again when a key is ready, if not the original one (XREAD's `$`
    /// resolved to the last id seen when it blocked, so entries added meanwhile are served).
    pub retry: Option<OwnedRequest>,
    /// Woken however its keys change, deletion and change of type included (Redis 7.2's
    /// `unblock_on_nokey`: XREADGROUP, which then runs again and answers its own error). Only
    /// counted (INFO `total_blocking_keys_on_nokey`): every waiter is offered every change.
    pub unblock_on_nokey: bool,
}

/// The reply of a blocking command that timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullReply {
    /// `*-1` (RESP3 `_`): BLPOP, BRPOP, BLMPOP, BZPOP*, BZMPOP.
    Array,
    /// `$-1` (RESP3 `_`): BLMOVE, BRPOPLPUSH.
    Bulk,
}

impl NullReply {
    pub fn write(self, w: &mut ReplyWriter<'_>) {
        match self {
            NullReply::Array => w.null_array(),
            NullReply::Bulk => w.null(),
        }
    }
}

/// Blocking commands wait for keys the server registers from [`BlockOn`]; their key positions
/// are what COMMAND INFO reports (the timeout is the last argument, or the first for *MPOP).
const BLOCKING_KEYS: (i32, i32, i32) = (1, -2, 1);

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "blpop",
        -3,
        WRITE | BLOCKING,
        BLOCKING_KEYS,
        Creates::Nothing,
        "Removes and returns the first element in a list. Blocks until an element is available \
         otherwise. Deletes the list if the last element was popped.",
        blpop,
    ),
    cmd(
        "brpop",
        -3,
        WRITE | BLOCKING,
        BLOCKING_KEYS,
        Creates::Nothing,
        "Removes and returns the last element in a list. Blocks until an element is available \
         otherwise. Deletes the list if the last element was popped.",
        brpop,
    ),
    cmd(
        "blmove",
        6,
        WRITE | DENYOOM | BLOCKING,
        crate::spec::KEYS12,
        Creates::SecondKey,
        "Pops an element from a list, pushes it to another list and returns it. Blocks until an \
         element is available otherwise. Deletes the list if the last element was moved.",
        blmove,
    ),
    cmd(
        "brpoplpush",
        4,
        WRITE | DENYOOM | BLOCKING,
        crate::spec::KEYS12,
        Creates::SecondKey,
        "Pops an element from a list, pushes it to another list and returns it. Block until an \
         element is available otherwise. Deletes the list if the last element was popped.",
        brpoplpush,
    ),
    cmd(
        "blmpop",
        -5,
        WRITE | BLOCKING,
        NO_KEYS,
        Creates::Nothing,
        "Pops the first element from one of multiple lists. Blocks until an element is \
         available otherwise. Deletes the list if the last element was popped.",
        blmpop,
    ),
];

/// The sorted-set blocking pops (group "sorted-set").
pub const ZSET_COMMANDS: &[CommandSpec] = &[
    zcmd(
        "bzpopmin",
        -3,
        BLOCKING_KEYS,
        "Removes and returns the member with the lowest score from one or more sorted sets. \
         Blocks until a member is available otherwise. Deletes the sorted set if the last \
         element was popped.",
        bzpopmin,
    ),
    zcmd(
        "bzpopmax",
        -3,
        BLOCKING_KEYS,
        "Removes and returns the member with the highest score from one or more sorted sets. \
         Blocks until a member available otherwise. Deletes the sorted set if the last element \
         was popped.",
        bzpopmax,
    ),
    zcmd(
        "bzmpop",
        -5,
        NO_KEYS,
        "Removes and returns a member by score from one or more sorted sets. Blocks until a \
         member is available otherwise. Deletes the sorted set if the last element was popped.",
        bzmpop,
    ),
];

const fn zcmd(
    name: &'static str,
    arity: i32,
    keys: (i32, i32, i32),
    summary: &'static str,
    f: fn(&mut Ctx<'_, '_>, Args<'_>) -> CmdResult,
) -> CommandSpec {
    crate::spec::spec(
        name,
        arity,
        WRITE | BLOCKING,
        keys,
        Creates::Nothing,
        "sorted-set",
        summary,
        crate::Handler::Data(f),
    )
}

/// The attempt of each blocking command, by name.
const ATTEMPTS: &[(&str, AttemptFn)] = &[
    ("blpop", attempt_blpop),
    ("brpop", attempt_brpop),
    ("blmove", attempt_blmove),
    ("brpoplpush", attempt_brpoplpush),
    ("blmpop", attempt_blmpop),
    ("bzpopmin", attempt_bzpopmin),
    ("bzpopmax", attempt_bzpopmax),
    ("bzmpop", attempt_bzmpop),
    ("xread", attempt_xread),
    ("xreadgroup", attempt_xreadgroup),
];

/// The attempt of the command at `index` in [`crate::spec::all`] if this request may block:
/// the blocking pops always, XREAD / XREADGROUP only with BLOCK (without it they are plain
/// reads, which the server may run off the I/O threads when long).
pub fn attempt_for(index: usize, args: &Args<'_>) -> Option<AttemptFn> {
    let f = attempt_at(index)?;
    let stream = |xreadgroup| crate::streams::read_blocks(args, xreadgroup);
    match args.get(0) {
        n if n.eq_ignore_ascii_case(b"xread") => stream(false).then_some(f),
        n if n.eq_ignore_ascii_case(b"xreadgroup") => stream(true).then_some(f),
        _ => Some(f),
    }
}

fn attempt_at(index: usize) -> Option<AttemptFn> {
    static BY_INDEX: OnceLock<Vec<Option<AttemptFn>>> = OnceLock::new();
    BY_INDEX
        .get_or_init(|| {
            crate::spec::all()
                .iter()
                .map(|s| ATTEMPTS.iter().find(|(n, _)| *n == s.name).map(|(_, f)| *f))
                .collect()
        })
        .get(index)
        .copied()
        .flatten()
}

/// A blocking command run where it may not block (MULTI, scripts, replay): serves now or
/// answers as if it timed out.
fn without_blocking(ctx: &mut Ctx<'_, '_>, args: Args<'_>, attempt: AttemptFn) -> CmdResult {
    if let Attempt::Block(b) = attempt(ctx, args, None)? {
        b.on_timeout.write(ctx.w);
    }
    Ok(())
}

/// Redis's timeout argument: seconds as a float, rounded up to milliseconds; 0 = forever.
pub fn parse_timeout(arg: &[u8]) -> Result<Option<Duration>, ErrorReply> {
    // Whole seconds (`0`, the usual "forever", or `5`) without the float parser, which copies
    // the text to lower-case it.
    if !arg.is_empty() && arg.len() <= 9 && arg.iter().all(u8::is_ascii_digit) {
        let secs = arg.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        return Ok((secs > 0).then(|| Duration::from_secs(secs)));
    }
    let secs = ferrite_protocol::args::parse_f64(arg)
        .filter(|v| !v.is_nan())
        .ok_or_else(|| ErrorReply::err("timeout is not a float or out of range"))?;
    if secs < 0.0 {
        return Err(ErrorReply::err("timeout is negative"));
    }
    let ms = (secs * 1000.0).ceil();
    // Past about 292 million years an instant overflows: Redis 7.2 refuses these too.
    if ms > (i64::MAX / 2) as f64 {
        return Err(ErrorReply::err("timeout is out of range"));
    }
    Ok((ms > 0.0).then(|| Duration::from_millis(ms as u64)))
}

/// The keys to look at: all of them in order, or only the ready one (if it is one of them).
fn candidates<'a>(keys: Args<'a>, ready: Option<&'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    (0..keys.len())
        .map(move |i| keys.get(i))
        .filter(move |k| ready.is_none_or(|r| *k == r))
        .take(if ready.is_some() { 1 } else { usize::MAX })
}

/// Up to this many keys, a key named twice is found by comparing with those before it; past
/// it, with a set (a request may name a million keys).
const FEW_KEYS: usize = 16;

fn block_on(keys: Args<'_>, timeout: Option<Duration>, on_timeout: NullReply) -> Attempt {
    let mut v: Vec<Box<[u8]>> = Vec::with_capacity(keys.len());
    if keys.len() <= FEW_KEYS {
        for k in keys.iter() {
            if !v.iter().any(|x| &**x == k) {
                v.push(k.into());
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        for k in keys.iter() {
            if seen.insert(k) {
                v.push(k.into());
            }
        }
    }
    Attempt::Block(BlockOn {
        keys: v,
        timeout,
        on_timeout,
        retry: None,
        unblock_on_nokey: false,
    })
}

/// Runs a plain command's function on this context (its reply goes to the same writer) and
/// records it as the effect.
/// One buffer for the request's bytes, argument positions and the effect's words on the stack
/// (this runs for every served waiter).
fn run_plain(ctx: &mut Ctx<'_, '_>, name: &[u8], parts: &[&[u8]]) -> CmdResult {
    const MAX_WORDS: usize = 5;
    let words = 1 + parts.len();
    if words > MAX_WORDS {
        return Err(ErrorReply::err(
            "internal error: plain command with too many words",
        ));
    }
    let mut argv: [&[u8]; MAX_WORDS] = [&[]; MAX_WORDS];
    argv[0] = name;
    argv[1..words].copy_from_slice(parts);
    let argv = &argv[..words];
    let mut data = Vec::with_capacity(argv.iter().map(|w| w.len()).sum());
    let mut ranges = [(0, 0); MAX_WORDS];
    for (range, word) in ranges.iter_mut().zip(argv) {
        let start = data.len();
        data.extend_from_slice(word);
        *range = (start, data.len());
    }
    let Some(crate::Handler::Data(f)) = crate::lookup(name).map(|s| s.handler) else {
        return Err(ErrorReply::err("internal error: unknown plain command"));
    };
    f(ctx, Args::new(&data, &ranges[..words]))?;
    ctx.propagate(argv);
    Ok(())
}

/// Does `key` hold a non-empty list? WRONGTYPE if it holds something else — except for a
/// waiter being served (`serving`), which keeps waiting, as in Redis.
fn list_ready(ctx: &mut Ctx<'_, '_>, key: &[u8], serving: bool) -> Result<bool, ErrorReply> {
    match ctx.db.get(key, ctx.now).map(as_list) {
        None => Ok(false),
        Some(Ok(l)) => Ok(!l.is_empty()),
        Some(Err(_)) if serving => Ok(false),
        Some(Err(e)) => Err(e),
    }
}

fn zset_ready(ctx: &mut Ctx<'_, '_>, key: &[u8], serving: bool) -> Result<bool, ErrorReply> {
    match ctx.db.get(key, ctx.now).map(as_zset) {
        None => Ok(false),
        Some(Ok(z)) => Ok(!z.is_empty()),
        Some(Err(_)) if serving => Ok(false),
        Some(Err(e)) => Err(e),
    }
}

// -- lists ---------------------------------------------------------------------------------------

fn bpop(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    ready: Option<&[u8]>,
    plain: &[u8],
) -> Result<Attempt, ErrorReply> {
    let timeout = parse_timeout(args.get(args.len() - 1))?;
    let keys = args.slice(1, args.len() - 1);
    for key in candidates(keys, ready) {
        if list_ready(ctx, key, ready.is_some())? {
            ctx.w.array(2);
            ctx.w.bulk(key);
            run_plain(ctx, plain, &[key])?;
            return Ok(Attempt::Served);
        }
    }
    Ok(block_on(keys, timeout, NullReply::Array))
}

fn attempt_blpop(
    ctx: &mut Ctx<'_, '_>,
    a: Args<'_>,
    r: Option<&[u8]>,
) -> Result<Attempt, ErrorReply> {
    bpop(ctx, a, r, b"LPOP")
}

fn attempt_brpop(
    ctx: &mut Ctx<'_, '_>,
    a: Args<'_>,
    r: Option<&[u8]>,
) -> Result<Attempt, ErrorReply> {
    bpop(ctx, a, r, b"RPOP")
}

fn parse_end(arg: &[u8]) -> Result<&'static str, ErrorReply> {
    if arg.eq_ignore_ascii_case(b"LEFT") {
        Ok("LEFT")
    } else if arg.eq_ignore_ascii_case(b"RIGHT") {
        Ok("RIGHT")
    } else {
        Err(ErrorReply::syntax())
    }
}

fn bmove(
    ctx: &mut Ctx<'_, '_>,
    src: &[u8],
    dst: &[u8],
    ends: Option<(&str, &str)>,
    timeout: Option<Duration>,
    ready: Option<&[u8]>,
) -> Result<Attempt, ErrorReply> {
    if ready.is_none_or(|r| r == src) && list_ready(ctx, src, ready.is_some())? {
        // LMOVE checks the destination's type before anything moves.
        match ends {
            Some((from, to)) => {
                run_plain(ctx, b"LMOVE", &[src, dst, from.as_bytes(), to.as_bytes()])?
            }
            None => run_plain(ctx, b"RPOPLPUSH", &[src, dst])?,
        }
        return Ok(Attempt::Served);
    }
    Ok(Attempt::Block(BlockOn {
        keys: vec![src.into()],
        timeout,
        on_timeout: NullReply::Bulk,
        retry: None,
        unblock_on_nokey: false,
    }))
}

/// BLMOVE source destination LEFT|RIGHT LEFT|RIGHT timeout.
fn attempt_blmove(
    ctx: &mut Ctx<'_, '_>,
    a: Args<'_>,
    r: Option<&[u8]>,
) -> Result<Attempt, ErrorReply> {
    let from = parse_end(a.get(3))?;
    let to = parse_end(a.get(4))?;
    let timeout = parse_timeout(a.get(5))?;
    bmove(ctx, a.get(1), a.get(2), Some((from, to)), timeout, r)
}

/// BRPOPLPUSH source destination timeout.
fn attempt_brpoplpush(
    ctx: &mut Ctx<'_, '_>,
    a: Args<'_>,
    r: Option<&[u8]>,
) -> Result<Attempt, ErrorReply> {
    let timeout = parse_timeout(a.get(3))?;
    bmove(ctx, a.get(1), a.get(2), None, timeout, r)
}

/// BLMPOP / BZMPOP timeout numkeys key [key ...] <where> [COUNT count].
fn bmpop(
    ctx: &mut Ctx<'_, '_>,
    a: Args<'_>,
    ready: Option<&[u8]>,
    zset: bool,
) -> Result<Attempt, ErrorReply> {
    let timeout = parse_timeout(a.get(1))?;
    let (keys, word, count) = crate::zset_algebra::parse_mpop(&a, 2)?;
    let (plain, mpop) = if zset {
        if word.eq_ignore_ascii_case(b"MIN") {
            (&b"ZPOPMIN"[..], &b"ZMPOP"[..])
        } else if word.eq_ignore_ascii_case(b"MAX") {
            (&b"ZPOPMAX"[..], &b"ZMPOP"[..])
        } else {
            return Err(ErrorReply::syntax());
        }
    } else if word.eq_ignore_ascii_case(b"LEFT") {
        (&b"LPOP"[..], &b"LMPOP"[..])
    } else if word.eq_ignore_ascii_case(b"RIGHT") {
        (&b"RPOP"[..], &b"LMPOP"[..])
    } else {
        return Err(ErrorReply::syntax());
    };
    for key in candidates(keys, ready) {
        let serving = ready.is_some();
        let has = if zset {
            zset_ready(ctx, key, serving)?
        } else {
            list_ready(ctx, key, serving)?
        };
        if has {
            // The reply is LMPOP's / ZMPOP's for this one key; the effect is the plain pop
            // with its count, as Redis propagates it.
            let n = itoa::Buffer::new().format(count).to_string();
            let mark = ctx.db.write_count();
            let f = match crate::lookup(mpop).map(|s| s.handler) {
                Some(crate::Handler::Data(f)) => f,
                _ => return Err(ErrorReply::err("internal error: unknown plain command")),
            };
            let req = OwnedRequest::from_parts([mpop, b"1", key, word, b"COUNT", n.as_bytes()]);
            f(ctx, req.args())?;
            if ctx.db.write_count() != mark {
                ctx.propagate(&[plain, key, n.as_bytes()]);
            }
            return Ok(Attempt::Served);
        }
    }
    Ok(block_on(keys, timeout, NullReply::Array))
}

fn attempt_blmpop(
    ctx: &mut Ctx<'_, '_>,
    a: Args<'_>,
    r: Option<&[u8]>,
) -> Result<Attempt, ErrorReply> {
    bmpop(ctx, a, r, false)
}

fn attempt_bzmpop(
    ctx: &mut Ctx<'_, '_>,
    a: Args<'_>,
    r: Option<&[u8]>,
) -> Result<Attempt, ErrorReply> {
    bmpop(ctx, a, r, true)
}

// -- sorted sets ---------------------------------------------------------------------------------

/// BZPOPMIN / BZPOPMAX key [key ...] timeout: replies key, member, score.
fn bzpop(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    ready: Option<&[u8]>,
    max: bool,
) -> Result<Attempt, ErrorReply> {
    let timeout = parse_timeout(args.get(args.len() - 1))?;
    let keys = args.slice(1, args.len() - 1);
    let now = ctx.now;
    for key in candidates(keys, ready) {
        if !zset_ready(ctx, key, ready.is_some())? {
            continue;
        }
        let Slot::Occupied(mut o) = ctx.db.entry(key, now) else {
            continue;
        };
        let z = as_zset_mut(o.get_mut())?;
        if z.is_empty() {
            continue;
        }
        // The reply is [key, member, score]: the key, then ZPOPMIN's flat form of one element
        // without its array header (written here as part of the three).
        let w = &mut *ctx.w;
        w.array(3);
        w.bulk(key);
        z.pop_with(max, |m, s| {
            w.bulk(m);
            w.double(s);
        });
        drop(o);
        ctx.propagate(&[if max { b"ZPOPMAX" } else { b"ZPOPMIN" }, key]);
        return Ok(Attempt::Served);
    }
    Ok(block_on(keys, timeout, NullReply::Array))
}

fn attempt_bzpopmin(
    ctx: &mut Ctx<'_, '_>,
    a: Args<'_>,
    r: Option<&[u8]>,
) -> Result<Attempt, ErrorReply> {
    bzpop(ctx, a, r, false)
}

fn attempt_bzpopmax(
    ctx: &mut Ctx<'_, '_>,
    a: Args<'_>,
    r: Option<&[u8]>,
) -> Result<Attempt, ErrorReply> {
    bzpop(ctx, a, r, true)
}

// -- streams -------------------------------------------------------------------------------------

fn stream_attempt(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    ready: Option<&[u8]>,
    xreadgroup: bool,
) -> Result<Attempt, ErrorReply> {
    use crate::streams::{ReadOutcome, read_attempt, serve_ready};
    let outcome = match ready {
        Some(key) => serve_ready(ctx, args, xreadgroup, key)?,
        None => read_attempt(ctx, args, xreadgroup)?,
    };
    Ok(match outcome {
        ReadOutcome::Served => Attempt::Served,
        ReadOutcome::Wait(w) => {
            let mut keys: Vec<Box<[u8]>> = Vec::with_capacity(w.keys.len());
            for k in w.keys {
                if !keys.iter().any(|x| **x == *k) {
                    keys.push(k.into());
                }
            }
            Attempt::Block(BlockOn {
                keys,
                timeout: (w.timeout_ms > 0).then(|| Duration::from_millis(w.timeout_ms)),
                on_timeout: NullReply::Array,
                retry: Some(OwnedRequest::from_parts(w.retry)),
                unblock_on_nokey: xreadgroup,
            })
        }
    })
}

fn attempt_xread(
    ctx: &mut Ctx<'_, '_>,
    a: Args<'_>,
    r: Option<&[u8]>,
) -> Result<Attempt, ErrorReply> {
    stream_attempt(ctx, a, r, false)
}

fn attempt_xreadgroup(
    ctx: &mut Ctx<'_, '_>,
    a: Args<'_>,
    r: Option<&[u8]>,
) -> Result<Attempt, ErrorReply> {
    stream_attempt(ctx, a, r, true)
}

// -- the table's data functions (no blocking) ----------------------------------------------------

fn blpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    without_blocking(ctx, args, attempt_blpop)
}

fn brpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    without_blocking(ctx, args, attempt_brpop)
}

fn blmove(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    without_blocking(ctx, args, attempt_blmove)
}

fn brpoplpush(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    without_blocking(ctx, args, attempt_brpoplpush)
}

fn blmpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    without_blocking(ctx, args, attempt_blmpop)
}

fn bzpopmin(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    without_blocking(ctx, args, attempt_bzpopmin)
}

fn bzpopmax(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    without_blocking(ctx, args, attempt_bzpopmax)
}

fn bzmpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    without_blocking(ctx, args, attempt_bzmpop)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferrite_protocol::Protocol;
    use ferrite_storage::EffectRecorder;

    use super::*;
    use crate::testing::TestDb;

    #[test]
    fn timeouts_are_parsed_as_redis_does() {
        assert_eq!(parse_timeout(b"0").unwrap(), None);
        assert_eq!(parse_timeout(b"0.0").unwrap(), None);
        // Whole seconds take a shorter path: the same answers.
        assert_eq!(parse_timeout(b"5").unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout(b"007").unwrap(), Some(Duration::from_secs(7)));
        assert_eq!(parse_timeout(b"0000000000").unwrap(), None);
        assert_eq!(
            parse_timeout(b"999999999").unwrap(),
            Some(Duration::from_secs(999_999_999))
        );
        assert_eq!(
            parse_timeout(b"1234567890").unwrap(),
            Some(Duration::from_secs(1_234_567_890))
        );
        assert_eq!(
            parse_timeout(b"0.0001").unwrap(),
            Some(Duration::from_millis(1)),
            "rounded up"
        );
        assert_eq!(
            parse_timeout(b"1.5").unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_timeout(b"-1").unwrap_err().to_string(),
            "ERR timeout is negative"
        );
        for bad in [&b"x"[..], b"", b"1x", b"nan"] {
            assert_eq!(
                parse_timeout(bad).unwrap_err().to_string(),
                "ERR timeout is not a float or out of range"
            );
        }
        assert!(parse_timeout(b"1e300").is_err());
    }

    #[test]
    fn served_at_once_or_null_without_blocking() {
        let mut t = TestDb::new();
        t.check(&[
            (&["RPUSH", "l", "a", "b"], ":2\r\n"),
            (&["BLPOP", "none", "l", "0"], "*2\r\n$1\r\nl\r\n$1\r\na\r\n"),
            (&["BRPOP", "l", "0"], "*2\r\n$1\r\nl\r\n$1\r\nb\r\n"),
            (&["EXISTS", "l"], ":0\r\n"),
            // Nothing to pop: as in MULTI, the timeout reply.
            (&["BLPOP", "l", "1"], "*-1\r\n"),
            (&["BLMOVE", "l", "d", "LEFT", "RIGHT", "0"], "$-1\r\n"),
            (&["BRPOPLPUSH", "l", "d", "0"], "$-1\r\n"),
            (&["BLPOP", "l", "-1"], "-ERR timeout is negative\r\n"),
            (
                &["BLPOP", "l", "abc"],
                "-ERR timeout is not a float or out of range\r\n",
            ),
            (&["SET", "s", "x"], "+OK\r\n"),
            (
                &["BLPOP", "l", "s", "0"],
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            ),
            (&["RPUSH", "l", "x", "y", "z"], ":3\r\n"),
            (
                &["BLMPOP", "0", "2", "none", "l", "RIGHT", "COUNT", "2"],
                "*2\r\n$1\r\nl\r\n*2\r\n$1\r\nz\r\n$1\r\ny\r\n",
            ),
            (&["BLMOVE", "l", "d", "LEFT", "RIGHT", "0"], "$1\r\nx\r\n"),
            (
                &["BLMOVE", "l", "d", "UP", "RIGHT", "0"],
                "-ERR syntax error\r\n",
            ),
            (
                &["BLMPOP", "0", "0", "l", "LEFT"],
                "-ERR numkeys should be greater than 0\r\n",
            ),
            (&["BLMPOP", "0", "1", "l", "UP"], "-ERR syntax error\r\n"),
            (&["ZADD", "z", "1", "a", "2", "b", "3", "c"], ":3\r\n"),
            (
                &["BZPOPMIN", "z", "0"],
                "*3\r\n$1\r\nz\r\n$1\r\na\r\n$1\r\n1\r\n",
            ),
            (
                &["BZPOPMAX", "z", "0"],
                "*3\r\n$1\r\nz\r\n$1\r\nc\r\n$1\r\n3\r\n",
            ),
            (
                &["BZMPOP", "0", "1", "z", "MIN"],
                "*2\r\n$1\r\nz\r\n*1\r\n*2\r\n$1\r\nb\r\n$1\r\n2\r\n",
            ),
            (&["BZPOPMIN", "z", "0.01"], "*-1\r\n"),
        ]);
        t.proto = Protocol::Resp3;
        t.check(&[
            (&["BLPOP", "l", "1"], "_\r\n"),
            (&["ZADD", "z", "1.5", "a"], ":1\r\n"),
            (
                &["BZPOPMIN", "z", "0"],
                "*3\r\n$1\r\nz\r\n$1\r\na\r\n,1.5\r\n",
            ),
        ]);
    }

    #[test]
    fn effects_are_the_plain_pops() {
        let mut t = TestDb::new();
        let rec = Arc::new(EffectRecorder::default());
        t.keyspace.lock().subscribe(rec.clone());
        t.run(&["RPUSH", "l", "a", "b", "c"]);
        t.run(&["BLPOP", "l", "0"]);
        t.run(&["BRPOP", "l", "0"]);
        t.run(&["BLMOVE", "l", "d", "LEFT", "RIGHT", "0"]);
        t.run(&["BLMPOP", "0", "1", "d", "LEFT", "COUNT", "5"]);
        t.run(&["ZADD", "z", "1", "a", "2", "b", "3", "c"]);
        t.run(&["BZPOPMIN", "z", "0"]);
        t.run(&["BZMPOP", "0", "1", "z", "MAX", "COUNT", "2"]);
        // Nothing to pop: no effect.
        t.run(&["BLPOP", "l", "0"]);
        let got: Vec<String> = rec
            .take()
            .iter()
            .flat_map(|(_, list)| list.iter())
            .map(|argv| {
                argv.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(
            got,
            [
                "RPUSH l a b c",
                "LPOP l",
                "RPOP l",
                "LMOVE l d LEFT RIGHT",
                "LPOP d 5",
                "ZADD z 1 a 2 b 3 c",
                "ZPOPMIN z",
                "ZPOPMAX z 2",
            ]
        );
    }

    /// A key named twice is waited for once, in the order first named, with few keys and with
    /// many (where a set finds the repeats).
    #[test]
    fn blocked_keys_are_distinct_in_their_first_order() {
        for n in [3usize, FEW_KEYS, FEW_KEYS + 1, 1000] {
            let words: Vec<String> = (0..n)
                .flat_map(|i| [format!("k{i}"), format!("k{}", i / 2)])
                .collect();
            let req = OwnedRequest::from_parts(&words);
            let Attempt::Block(b) = block_on(req.args(), None, NullReply::Array) else {
                panic!("block_on always blocks");
            };
            let mut want: Vec<String> = Vec::new();
            for w in &words {
                if !want.contains(w) {
                    want.push(w.clone());
                }
            }
            let got: Vec<String> = b
                .keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            assert_eq!(got, want, "{n} keys");
        }
    }

    #[test]
    fn a_served_waiter_sees_only_its_ready_key() {
        let mut t = TestDb::new();
        t.run(&["RPUSH", "a", "1"]);
        t.run(&["RPUSH", "b", "2"]);
        let req = OwnedRequest::from_parts(["BLPOP", "a", "b", "0"]);
        let mut db = t.keyspace.lock();
        let mut out = bytes::BytesMut::new();
        let mut w = ReplyWriter::new(&mut out, Protocol::Resp2);
        let mut rng = rand::SeedableRng::seed_from_u64(1);
        let mut garbage = crate::Garbage::default();
        let mut ctx = Ctx {
            db: &mut db,
            w: &mut w,
            now: 1,
            rng: &mut rng,
            max_bulk: 1 << 20,
            garbage: &mut garbage,
            from_script: false,
        };
        let r = attempt_blpop(&mut ctx, req.args(), Some(b"b")).unwrap();
        assert!(matches!(r, Attempt::Served));
        assert_eq!(&out[..], b"*2\r\n$1\r\nb\r\n$1\r\n2\r\n");
    }

    #[test]
    fn xread_blocks_only_with_block() {
        for name in ["xread", "xreadgroup"] {
            let idx = crate::spec::all()
                .iter()
                .position(|s| s.name == name)
                .unwrap();
            let plain = OwnedRequest::from_parts([name, "GROUP", "g", "c", "STREAMS", "s", ">"]);
            assert!(attempt_for(idx, &plain.args()).is_none(), "{name}");
            let blocking = OwnedRequest::from_parts([
                name, "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">",
            ]);
            let blocks = attempt_for(idx, &blocking.args()).is_some();
            // XREAD refuses GROUP: a request the read itself answers with its error.
            assert_eq!(blocks, name == "xreadgroup", "{name}");
        }
        let idx = crate::spec::all()
            .iter()
            .position(|s| s.name == "xread")
            .unwrap();
        let req = OwnedRequest::from_parts(["XREAD", "BLOCK", "10", "STREAMS", "s", "$"]);
        assert!(attempt_for(idx, &req.args()).is_some());
    }

    #[test]
    fn every_blocking_command_has_an_attempt() {
        for (i, s) in crate::spec::all().iter().enumerate() {
            assert_eq!(
                s.has(BLOCKING),
                attempt_at(i).is_some(),
                "{}: the BLOCKING flag and the attempt table disagree",
                s.name
            );
        }
    }
}
