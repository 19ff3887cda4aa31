//! Bitmap commands: strings addressed bit by bit (SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP) and as
//! packed integers of any width (BITFIELD, BITFIELD_RO). Bit 0 is the most significant bit of the
//! first byte, as in Redis.

use ferrite_protocol::args::parse_i64;
use ferrite_protocol::{Args, ErrorReply};
use ferrite_storage::{Slot, StrValue, Value};

use crate::ctx::Ctx;
use crate::spec::flags::*;
use crate::spec::{CmdResult, CommandSpec, Creates, KEY1};
use crate::util::{as_str, as_str_mut};

crate::command_family!("bitmap");

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "setbit",
        4,
        WRITE | DENYOOM,
        KEY1,
        Creates::FirstKey,
        "Sets or clears the bit at offset of the string value; creates the key if needed.",
        setbit,
    ),
    cmd(
        "getbit",
        3,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Returns a bit value by offset.",
        getbit,
    ),
    cmd(
        "bitcount",
        -2,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Counts the number of set bits (population counting) in a string.",
        bitcount,
    ),
    cmd(
        "bitpos",
        -3,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Finds the first set (1) or clear (0) bit in a string.",
        bitpos,
    ),
    cmd(
        "bitop",
        -4,
        WRITE | DENYOOM,
        (2, -1, 1),
        Creates::FirstKey,
        "Performs bitwise operations on multiple strings, and stores the result.",
        bitop,
    ),
    cmd(
        "bitfield",
        -2,
        WRITE | DENYOOM,
        KEY1,
        Creates::FirstKey,
        "Performs arbitrary bitfield integer operations on strings.",
        bitfield,
    ),
    cmd(
        "bitfield_ro",
        -2,
        READONLY | FAST,
        KEY1,
        Creates::Nothing,
        "Performs arbitrary read-only bitfield integer operations on strings.",
        bitfield_ro,
    ),
];

fn bad_offset() -> ErrorReply {
    ErrorReply::err("bit offset is not an integer or out of range")
}

/// A bit offset as Redis reads it: non-negative, and addressing a byte below the largest string
/// (`proto-max-bulk-len`). With `bits` (BITFIELD), `#n` means the n-th field of that width.
fn parse_bit_offset(arg: &[u8], bits: Option<u32>, max_bulk: usize) -> Result<u64, ErrorReply> {
    let (text, multiplier) = match (arg.strip_prefix(b"#"), bits) {
        (Some(rest), Some(b)) => (rest, i64::from(b)),
        _ => (arg, 1),
    };
    let n = parse_i64(text)
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(bad_offset)?;
    if n < 0 || (n >> 3) as u64 >= max_bulk as u64 {
        return Err(bad_offset());
    }
    Ok(n as u64)
}

/// Counts set bits in a byte slice, eight bytes at a time.
fn popcount(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    let mut n: u64 = chunks
        .by_ref()
        .map(|c| u64::from(u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])).count_ones()))
        .sum();
    n += chunks
        .remainder()
        .iter()
        .map(|b| u64::from(b.count_ones()))
        .sum::<u64>();
    n
}

/// Writes `on` at bit `offset` of a string, growing it with zero bytes as needed; returns the old
/// bit.
fn write_bit(s: &mut StrValue, offset: u64, on: bool) -> bool {
    let byte = (offset >> 3) as usize;
    let mask = 1u8 << (7 - (offset & 7));
    let old = s.as_bytes().get(byte).copied().unwrap_or(0);
    let new = if on { old | mask } else { old & !mask };
    // Growing the string is a change even when the bit stays 0 (Redis pads it too).
    if new != old || byte >= s.len() {
        s.set_range(byte, &[new]);
    }
    old & mask != 0
}

fn setbit(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let offset = parse_bit_offset(args.get(2), None, ctx.max_bulk)?;
    let bad_bit = || ErrorReply::err("bit is not an integer or out of range");
    let on = match parse_i64(args.get(3)) {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(bad_bit()),
    };
    let old = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => write_bit(as_str_mut(o.get_mut())?, offset, on),
        Slot::Vacant(v) => {
            let mut s = StrValue::new(Vec::new());
            write_bit(&mut s, offset, on);
            v.insert(Value::Str(s), None);
            false
        }
    };
    ctx.w.int(i64::from(old));
    Ok(())
}

fn getbit(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let offset = parse_bit_offset(args.get(2), None, ctx.max_bulk)?;
    let bit = match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => {
            let s = as_str(e)?.as_bytes();
            s.get((offset >> 3) as usize)
                .is_some_and(|b| b & (1 << (7 - (offset & 7))) != 0)
        }
        None => false,
    };
    ctx.w.int(i64::from(bit));
    Ok(())
}

/// The `BYTE|BIT` unit word of BITCOUNT and BITPOS.
fn parse_unit(arg: &[u8]) -> Result<bool, ErrorReply> {
    if arg.eq_ignore_ascii_case(b"BIT") {
        Ok(true)
    } else if arg.eq_ignore_ascii_case(b"BYTE") {
        Ok(false)
    } else {
        Err(ErrorReply::syntax())
    }
}

/// A range of whole bytes plus, for BIT ranges, the bits of the first and last byte that lie
/// outside it (Redis's "negative masks").
struct ByteRange {
    start: usize,
    end: usize,
    first_outside: u8,
    last_outside: u8,
}

/// Clamps Redis-style `start`/`end` (negative from the end) over `len` units (bytes, or bits when
/// `bit` is set) into bytes. None when the range is empty.
fn clamp_range(start: i64, end: i64, len_bytes: usize, bit: bool) -> Option<ByteRange> {
    let total = if bit {
        (len_bytes as i64) << 3
    } else {
        len_bytes as i64
    };
    let norm = |i: i64| {
        let i = if i < 0 { total + i } else { i };
        i.max(0)
    };
    let (mut s, mut e) = (norm(start), norm(end));
    if e >= total {
        e = total - 1;
    }
    if s > e || total == 0 {
        return None;
    }
    let (mut first_outside, mut last_outside) = (0u8, 0u8);
    if bit {
        first_outside = !((1u16 << (8 - (s & 7))) - 1) as u8;
        last_outside = ((1u16 << (7 - (e & 7))) - 1) as u8;
        s >>= 3;
        e >>= 3;
    }
    Some(ByteRange {
        start: s as usize,
        end: e as usize,
        first_outside,
        last_outside,
    })
}

fn bitcount(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    // The arguments are checked before the key is read, so a syntax error is one whatever the key.
    let range = match args.len() {
        2 => None,
        4 | 5 => {
            let (start, end) = (args.int(2)?, args.int(3)?);
            let bit = args.len() == 5 && parse_unit(args.get(4))?;
            Some((start, end, bit))
        }
        _ => return Err(ErrorReply::syntax()),
    };
    let Some(e) = ctx.db.get(args.get(1), ctx.now) else {
        ctx.w.int(0);
        return Ok(());
    };
    let s = as_str(e)?.as_bytes();
    let n = match range {
        None => popcount(s),
        // Both from the end and crossed: empty (Redis checks this before clamping).
        Some((start, end, _)) if start < 0 && end < 0 && start > end => 0,
        Some((start, end, bit)) => match clamp_range(start, end, s.len(), bit) {
            None => 0,
            Some(r) => {
                let mut n = popcount(&s[r.start..=r.end]);
                n -= u64::from((s[r.start] & r.first_outside).count_ones());
                n -= u64::from((s[r.end] & r.last_outside).count_ones());
                n
            }
        },
    };
    ctx.w.int(n as i64);
    Ok(())
}

/// Position of the first bit equal to `bit` in `bytes`, or None.
fn first_bit(bytes: &[u8], bit: bool) -> Option<u64> {
    let skip = if bit { 0u8 } else { 0xff };
    let i = bytes.iter().position(|&b| b != skip)?;
    let b = if bit { bytes[i] } else { !bytes[i] };
    Some((i as u64) * 8 + u64::from(b.leading_zeros()))
}

fn bitpos(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let bit = match args.int(2)? {
        0 => false,
        1 => true,
        _ => return Err(ErrorReply::err("The bit argument must be 1 or 0.")),
    };
    if args.len() > 6 {
        return Err(ErrorReply::syntax());
    }
    let start = if args.len() >= 4 {
        Some(args.int(3)?)
    } else {
        None
    };
    let unit_bit = args.len() == 6 && parse_unit(args.get(5))?;
    let end = if args.len() >= 5 {
        Some(args.int(4)?)
    } else {
        None
    };
    // A missing key is an endless run of zeros.
    let Some(e) = ctx.db.get(args.get(1), ctx.now) else {
        ctx.w.int(if bit { -1 } else { 0 });
        return Ok(());
    };
    let s = as_str(e)?.as_bytes();
    let range = match start {
        None => clamp_range(0, -1, s.len(), false),
        Some(start) => {
            let end = end.unwrap_or(if unit_bit {
                ((s.len() as i64) << 3) + 7
            } else {
                s.len() as i64 - 1
            });
            clamp_range(start, end, s.len(), unit_bit)
        }
    };
    let Some(r) = range else {
        ctx.w.int(-1);
        return Ok(());
    };
    // Bits outside the range are forced to the opposite of what is searched for.
    let fix = |i: usize, b: u8| -> u8 {
        let mut outside = 0u8;
        if i == r.start {
            outside |= r.first_outside;
        }
        if i == r.end {
            outside |= r.last_outside;
        }
        if bit { b & !outside } else { b | outside }
    };
    let window = &s[r.start..=r.end];
    let found = if r.first_outside == 0 && r.last_outside == 0 {
        first_bit(window, bit)
    } else {
        window.iter().enumerate().find_map(|(i, &b)| {
            let b = fix(r.start + i, b);
            first_bit(&[b], bit).map(|p| i as u64 * 8 + p)
        })
    };
    let pos = match found {
        Some(p) => p as i64 + ((r.start as i64) << 3),
        // Looking for a clear bit past a string of ones: without an explicit end the string
        // continues with zeros, so the answer is the first bit after the range.
        None if !bit && end.is_none() => ((r.end as i64) + 1) << 3,
        None => -1,
    };
    ctx.w.int(pos);
    Ok(())
}

fn bitop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    #[derive(Clone, Copy, PartialEq)]
    enum Op {
        And,
        Or,
        Xor,
        Not,
    }
    let op = match args.get(1).to_ascii_uppercase().as_slice() {
        b"AND" => Op::And,
        b"OR" => Op::Or,
        b"XOR" => Op::Xor,
        b"NOT" => Op::Not,
        _ => return Err(ErrorReply::syntax()),
    };
    if op == Op::Not && args.len() != 4 {
        return Err(ErrorReply::err(
            "BITOP NOT must be called with a single source key.",
        ));
    }
    let now = ctx.now;
    let mut sources: Vec<&[u8]> = Vec::with_capacity(args.len() - 3);
    // Looked up first, all of them: a wrong type anywhere changes nothing.
    for key in args.tail(3).iter() {
        if let Some(e) = ctx.db.peek(key).filter(|e| !e.is_expired(now)) {
            as_str(e)?;
        }
    }
    for key in args.tail(3).iter() {
        match ctx.db.peek(key).filter(|e| !e.is_expired(now)) {
            Some(e) => sources.push(as_str(e)?.as_bytes()),
            None => sources.push(b""),
        }
    }
    let maxlen = sources.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut res = vec![0u8; maxlen];
    if maxlen > 0 {
        let first = sources[0];
        res[..first.len()].copy_from_slice(first);
        match op {
            Op::Not => res.iter_mut().for_each(|b| *b = !*b),
            _ => {
                for src in &sources[1..] {
                    for (i, r) in res.iter_mut().enumerate() {
                        let b = src.get(i).copied().unwrap_or(0);
                        match op {
                            Op::And => *r &= b,
                            Op::Or => *r |= b,
                            _ => *r ^= b,
                        }
                    }
                }
            }
        }
    }
    let dst = args.get(2);
    if maxlen == 0 {
        if let Some(old) = ctx.db.remove(dst, now) {
            ctx.garbage.defer(old.value().elements(), old);
        }
    } else {
        let value = Value::string(res);
        match ctx.db.entry(dst, now) {
            Slot::Occupied(mut o) => {
                let old = o.swap_value(value);
                o.get_mut().set_expire_at(None);
                ctx.garbage.defer(old.elements(), old);
            }
            Slot::Vacant(v) => v.insert(value, None),
        }
    }
    ctx.w.int(maxlen as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// BITFIELD

#[derive(Debug, Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum FieldOp {
    Get,
    Set(i64),
    IncrBy(i64),
}

#[derive(Debug, Clone, Copy)]
struct Field {
    op: FieldOp,
    offset: u64,
    bits: u32,
    signed: bool,
    overflow: Overflow,
}

fn parse_field_type(arg: &[u8]) -> Result<(bool, u32), ErrorReply> {
    let bad = || {
        ErrorReply::err(
            "Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.",
        )
    };
    let (signed, rest) = match arg.split_first() {
        Some((b'i', rest)) => (true, rest),
        Some((b'u', rest)) => (false, rest),
        _ => return Err(bad()),
    };
    let bits = parse_i64(rest).ok_or_else(bad)?;
    if bits < 1 || (signed && bits > 64) || (!signed && bits > 63) {
        return Err(bad());
    }
    Ok((signed, bits as u32))
}

/// Parses BITFIELD's subcommands (`read_only` refuses writes with BITFIELD_RO's message after
/// the whole request parsed, as Redis does).
fn parse_fields(args: &Args<'_>, max_bulk: usize) -> Result<Vec<Field>, ErrorReply> {
    let mut fields = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut j = 2;
    while j < args.len() {
        let remaining = args.len() - j - 1;
        let word = args.get(j).to_ascii_uppercase();
        let is_get = match word.as_slice() {
            b"GET" if remaining >= 2 => true,
            b"SET" | b"INCRBY" if remaining >= 3 => false,
            b"OVERFLOW" if remaining >= 1 => {
                overflow = match args.get(j + 1).to_ascii_uppercase().as_slice() {
                    b"WRAP" => Overflow::Wrap,
                    b"SAT" => Overflow::Sat,
                    b"FAIL" => Overflow::Fail,
                    _ => return Err(ErrorReply::err("Invalid OVERFLOW type specified")),
                };
                j += 2;
                continue;
            }
            _ => return Err(ErrorReply::syntax()),
        };
        let (signed, bits) = parse_field_type(args.get(j + 1))?;
        let offset = parse_bit_offset(args.get(j + 2), Some(bits), max_bulk)?;
        let op = if is_get {
            FieldOp::Get
        } else {
            let n = args.int(j + 3)?;
            if word.as_slice() == b"SET" {
                FieldOp::Set(n)
            } else {
                FieldOp::IncrBy(n)
            }
        };
        fields.push(Field {
            op,
            offset,
            bits,
            signed,
            overflow,
        });
        j += if is_get { 3 } else { 4 };
    }
    Ok(fields)
}

/// Reads `bits` bits at bit `offset` as an unsigned number; bits past the end read as zero.
fn read_bits(data: &[u8], offset: u64, bits: u32) -> u64 {
    let mut v = 0u64;
    for i in 0..u64::from(bits) {
        let pos = offset + i;
        let bit = data
            .get((pos >> 3) as usize)
            .is_some_and(|b| b & (1 << (7 - (pos & 7))) != 0);
        v = (v << 1) | u64::from(bit);
    }
    v
}

/// Writes the low `bits` bits of `v` at bit `offset`; `data` is long enough.
fn write_bits(data: &mut [u8], offset: u64, bits: u32, v: u64) {
    for i in 0..u64::from(bits) {
        let pos = offset + i;
        let on = (v >> (u64::from(bits) - 1 - i)) & 1 == 1;
        let mask = 1u8 << (7 - (pos & 7));
        let b = &mut data[(pos >> 3) as usize];
        if on {
            *b |= mask;
        } else {
            *b &= !mask;
        }
    }
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    if bits < 64 && v & (1 << (bits - 1)) != 0 {
        (v | (u64::MAX << bits)) as i64
    } else {
        v as i64
    }
}

/// `value + incr` in a field of `bits` bits under the overflow rule: Some(result), or None when
/// it overflows and the rule is FAIL (Redis's checkUnsignedBitfieldOverflow).
fn add_unsigned(value: u64, incr: i64, bits: u32, overflow: Overflow) -> Option<u64> {
    let max = (1u64 << bits) - 1;
    let sum = i128::from(value) + i128::from(incr);
    if sum >= 0 && sum <= i128::from(max) {
        return Some(sum as u64);
    }
    match overflow {
        Overflow::Fail => None,
        Overflow::Sat => Some(if sum > 0 { max } else { 0 }),
        Overflow::Wrap => Some(value.wrapping_add(incr as u64) & max),
    }
}

/// The signed counterpart of [`add_unsigned`] (Redis's checkSignedBitfieldOverflow).
fn add_signed(value: i64, incr: i64, bits: u32, overflow: Overflow) -> Option<i64> {
    let max = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let sum = i128::from(value) + i128::from(incr);
    if sum >= i128::from(min) && sum <= i128::from(max) {
        return Some(sum as i64);
    }
    match overflow {
        Overflow::Fail => None,
        Overflow::Sat => Some(if sum > 0 { max } else { min }),
        Overflow::Wrap => {
            let c = (value as u64).wrapping_add(incr as u64);
            Some(sign_extend(
                if bits < 64 {
                    c & ((1u64 << bits) - 1)
                } else {
                    c
                },
                bits,
            ))
        }
    }
}

/// Runs one SET or INCRBY on `data`; returns the reply (None = overflow with FAIL).
fn apply_write(data: &mut [u8], f: &Field) -> Option<i64> {
    let raw = read_bits(data, f.offset, f.bits);
    let (reply, new) = if f.signed {
        let old = sign_extend(raw, f.bits);
        match f.op {
            FieldOp::IncrBy(n) => {
                let v = add_signed(old, n, f.bits, f.overflow)?;
                (v, v)
            }
            FieldOp::Set(n) => (old, add_signed(n, 0, f.bits, f.overflow)?),
            FieldOp::Get => (old, old),
        }
    } else {
        match f.op {
            FieldOp::IncrBy(n) => {
                let v = add_unsigned(raw, n, f.bits, f.overflow)? as i64;
                (v, v)
            }
            // A SET value is taken as the unsigned bit pattern of the number given.
            // The value is taken as the unsigned bit pattern of the number given, so a
            // negative one overflows upwards (as in Redis).
            FieldOp::Set(n) => (
                raw as i64,
                add_unsigned(n as u64, 0, f.bits, f.overflow)? as i64,
            ),
            FieldOp::Get => (raw as i64, raw as i64),
        }
    };
    write_bits(data, f.offset, f.bits, new as u64);
    Some(reply)
}

fn bitfield_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, read_only: bool) -> CmdResult {
    let fields = parse_fields(&args, ctx.max_bulk)?;
    let writes = fields.iter().any(|f| f.op != FieldOp::Get);
    if !writes {
        let data: &[u8] = match ctx.db.get(args.get(1), ctx.now) {
            Some(e) => as_str(e)?.as_bytes(),
            None => b"",
        };
        ctx.w.array(fields.len());
        for f in &fields {
            let raw = read_bits(data, f.offset, f.bits);
            ctx.w.int(if f.signed {
                sign_extend(raw, f.bits)
            } else {
                raw as i64
            });
        }
        return Ok(());
    }
    if read_only {
        return Err(ErrorReply::err(
            "BITFIELD_RO only supports the GET subcommand",
        ));
    }
    // The string grows to hold the farthest field written, as in Redis, even when that write
    // then fails its overflow check.
    let needed = fields
        .iter()
        .filter(|f| f.op != FieldOp::Get)
        .map(|f| ((f.offset + u64::from(f.bits) - 1) >> 3) as usize + 1)
        .max()
        .unwrap_or(0);
    let now = ctx.now;
    let slot = ctx.db.entry(args.get(1), now);
    let mut data = match &slot {
        Slot::Occupied(o) => as_str(o.get())?.as_bytes().to_vec(),
        Slot::Vacant(_) => Vec::new(),
    };
    if data.len() < needed {
        data.resize(needed, 0);
    }
    let mut replies = Vec::with_capacity(fields.len());
    for f in &fields {
        replies.push(match f.op {
            FieldOp::Get => {
                let raw = read_bits(&data, f.offset, f.bits);
                Some(if f.signed {
                    sign_extend(raw, f.bits)
                } else {
                    raw as i64
                })
            }
            _ => apply_write(&mut data, f),
        });
    }
    match slot {
        Slot::Occupied(mut o) => {
            let s = as_str_mut(o.get_mut())?;
            if s.as_bytes() != data.as_slice() {
                s.set(data);
            }
        }
        Slot::Vacant(v) => v.insert(Value::string(data), None),
    }
    ctx.w.array(replies.len());
    for r in replies {
        match r {
            Some(n) => ctx.w.int(n),
            None => ctx.w.null(),
        }
    }
    Ok(())
}

fn bitfield(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    bitfield_generic(ctx, args, false)
}

fn bitfield_ro(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    bitfield_generic(ctx, args, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    const WRONGTYPE: &str =
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";

    #[test]
    fn setbit_getbit() {
        let mut t = TestDb::new();
        t.check(&[
            (&["SETBIT", "k", "7", "1"], ":0\r\n"),
            (&["GET", "k"], "$1\r\n\x01\r\n"),
            (&["SETBIT", "k", "7", "0"], ":1\r\n"),
            (&["SETBIT", "k", "0", "1"], ":0\r\n"),
            (&["GETBIT", "k", "0"], ":1\r\n"),
            (&["GETBIT", "k", "1"], ":0\r\n"),
            (&["GETBIT", "k", "100000"], ":0\r\n"),
            (&["GETBIT", "none", "3"], ":0\r\n"),
            (&["SETBIT", "z", "15", "0"], ":0\r\n"),
            (&["STRLEN", "z"], ":2\r\n"),
            (
                &["SETBIT", "k", "-1", "1"],
                "-ERR bit offset is not an integer or out of range\r\n",
            ),
            (
                &["SETBIT", "k", "4294967296", "1"],
                "-ERR bit offset is not an integer or out of range\r\n",
            ),
            (
                &["SETBIT", "k", "1", "2"],
                "-ERR bit is not an integer or out of range\r\n",
            ),
            (
                &["SETBIT", "k", "1", "-1"],
                "-ERR bit is not an integer or out of range\r\n",
            ),
            (
                &["GETBIT", "k", "abc"],
                "-ERR bit offset is not an integer or out of range\r\n",
            ),
            (&["RPUSH", "l", "x"], ":1\r\n"),
            (&["SETBIT", "l", "1", "1"], WRONGTYPE),
            (&["GETBIT", "l", "1"], WRONGTYPE),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn bitcount_ranges() {
        let mut t = TestDb::new();
        t.check(&[
            (&["SET", "k", "foobar"], "+OK\r\n"),
            (&["BITCOUNT", "k"], ":26\r\n"),
            (&["BITCOUNT", "k", "0", "0"], ":4\r\n"),
            (&["BITCOUNT", "k", "1", "1"], ":6\r\n"),
            (&["BITCOUNT", "k", "1", "1", "BYTE"], ":6\r\n"),
            (&["BITCOUNT", "k", "5", "30", "BIT"], ":17\r\n"),
            (&["BITCOUNT", "k", "-1", "-2"], ":0\r\n"),
            (&["BITCOUNT", "k", "0", "-1"], ":26\r\n"),
            (&["BITCOUNT", "k", "0"], "-ERR syntax error\r\n"),
            (&["BITCOUNT", "k", "0", "1", "BOO"], "-ERR syntax error\r\n"),
            (&["BITCOUNT", "none", "0"], "-ERR syntax error\r\n"),
            (&["BITCOUNT", "none"], ":0\r\n"),
            (
                &["BITCOUNT", "k", "a", "1"],
                "-ERR value is not an integer or out of range\r\n",
            ),
        ]);
    }

    #[test]
    fn bitpos_cases() {
        let mut t = TestDb::new();
        t.run_bytes(&[&b"SET"[..], b"a", &[0xff, 0xf0, 0x00]]);
        t.run_bytes(&[&b"SET"[..], b"b", &[0x00, 0xff, 0xf0]]);
        t.run_bytes(&[&b"SET"[..], b"ones", &[0xff, 0xff]]);
        t.check(&[
            (&["BITPOS", "a", "0"], ":12\r\n"),
            (&["BITPOS", "b", "1", "0"], ":8\r\n"),
            (&["BITPOS", "b", "1", "2"], ":16\r\n"),
            (&["BITPOS", "b", "1", "2", "-1", "BYTE"], ":16\r\n"),
            (&["BITPOS", "b", "1", "7", "15", "BIT"], ":8\r\n"),
            (&["BITPOS", "b", "1", "7", "-3", "BIT"], ":8\r\n"),
            (&["BITPOS", "ones", "0"], ":16\r\n"),
            (&["BITPOS", "ones", "0", "0", "-1"], ":-1\r\n"),
            (&["BITPOS", "ones", "1", "1", "0"], ":-1\r\n"),
            (&["BITPOS", "none", "0"], ":0\r\n"),
            (&["BITPOS", "none", "1"], ":-1\r\n"),
            (
                &["BITPOS", "a", "2"],
                "-ERR The bit argument must be 1 or 0.\r\n",
            ),
            (
                &["BITPOS", "a", "1", "0", "1", "X"],
                "-ERR syntax error\r\n",
            ),
        ]);
    }

    #[test]
    fn bitop_ops() {
        let mut t = TestDb::new();
        t.check(&[
            (&["SET", "a", "foobar"], "+OK\r\n"),
            (&["SET", "b", "abcdef"], "+OK\r\n"),
            (&["BITOP", "AND", "d", "a", "b"], ":6\r\n"),
            (&["GET", "d"], "$6\r\n`bc`ab\r\n"),
            (&["BITOP", "OR", "d", "a", "b"], ":6\r\n"),
            (&["GET", "d"], "$6\r\ngoofev\r\n"),
            (&["BITOP", "XOR", "d", "a", "a"], ":6\r\n"),
            (&["BITCOUNT", "d"], ":0\r\n"),
            (&["BITOP", "AND", "d", "a", "nothing"], ":6\r\n"),
            (&["BITCOUNT", "d"], ":0\r\n"),
            (
                &["BITOP", "NOT", "d", "a", "b"],
                "-ERR BITOP NOT must be called with a single source key.\r\n",
            ),
            (&["BITOP", "NAND", "d", "a"], "-ERR syntax error\r\n"),
            (&["BITOP", "OR", "d", "none1", "none2"], ":0\r\n"),
            (&["EXISTS", "d"], ":0\r\n"),
            (&["RPUSH", "l", "x"], ":1\r\n"),
            (&["BITOP", "OR", "d", "a", "l"], WRONGTYPE),
        ]);
        t.run_bytes(&[&b"SET"[..], b"n", &[0x0f]]);
        assert_eq!(t.run_bytes(&["BITOP", "NOT", "d", "n"]), b":1\r\n");
        assert_eq!(t.run_bytes(&["GET", "d"]), b"$1\r\n\xf0\r\n");
        t.assert_digest_consistent();
    }

    #[test]
    fn bitfield_ops() {
        let mut t = TestDb::new();
        t.check(&[
            (&["BITFIELD", "b", "SET", "i8", "0", "100", "GET", "u4", "0"], "*2\r\n:0\r\n:6\r\n"),
            (&["BITFIELD", "b", "INCRBY", "i8", "0", "100"], "*1\r\n:-56\r\n"),
            (&["BITFIELD", "b", "OVERFLOW", "SAT", "INCRBY", "i8", "0", "-100"], "*1\r\n:-128\r\n"),
            (&["BITFIELD", "b", "OVERFLOW", "FAIL", "INCRBY", "i8", "0", "-1"], "*1\r\n$-1\r\n"),
            (&["BITFIELD", "c", "SET", "u8", "#1", "255", "GET", "u8", "8"], "*2\r\n:0\r\n:255\r\n"),
            (&["BITFIELD", "c", "INCRBY", "u2", "100", "1", "OVERFLOW", "SAT", "INCRBY", "u2", "102", "5"], "*2\r\n:1\r\n:3\r\n"),
            (&["BITFIELD", "c", "OVERFLOW", "WRAP", "INCRBY", "u8", "8", "1"], "*1\r\n:0\r\n"),
            (&["BITFIELD", "c", "SET", "u8", "0", "-1"], "*1\r\n:0\r\n"),
            (&["BITFIELD", "c", "GET", "u8", "0"], "*1\r\n:255\r\n"),
            (&["BITFIELD", "c", "OVERFLOW", "SAT", "SET", "u8", "0", "-1"], "*1\r\n:255\r\n"),
            (&["BITFIELD", "c", "GET", "u8", "0"], "*1\r\n:255\r\n"),
            (&["BITFIELD", "n", "GET", "i64", "0"], "*1\r\n:0\r\n"),
            (&["EXISTS", "n"], ":0\r\n"),
            (&["BITFIELD", "n"], "*0\r\n"),
            (&["BITFIELD", "c", "GET", "u64", "0"], "-ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.\r\n"),
            (&["BITFIELD", "c", "GET", "i8"], "-ERR syntax error\r\n"),
            (&["BITFIELD", "c", "OVERFLOW", "BAD"], "-ERR Invalid OVERFLOW type specified\r\n"),
            (&["BITFIELD_RO", "c", "GET", "u8", "0"], "*1\r\n:255\r\n"),
            (&["BITFIELD_RO", "c", "SET", "u8", "0", "1"], "-ERR BITFIELD_RO only supports the GET subcommand\r\n"),
            (&["BITFIELD", "s", "SET", "i64", "0", "-9223372036854775808", "INCRBY", "i64", "0", "-1"], "*2\r\n:0\r\n:9223372036854775807\r\n"),
            (&["BITFIELD", "s", "OVERFLOW", "SAT", "INCRBY", "i64", "0", "1"], "*1\r\n:9223372036854775807\r\n"),
            (&["BITFIELD", "c", "GET", "u8", "-1"], "-ERR bit offset is not an integer or out of range\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn bitfield_matches_a_reference_on_random_ops() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let mut t = TestDb::new();
        let mut model = 0u64; // a single u16 at offset 5 plus its neighbourhood
        for _ in 0..500 {
            let v: u64 = rng.random_range(0..1 << 16);
            let r = t.run(&["BITFIELD", "m", "SET", "u16", "5", &v.to_string()]);
            assert_eq!(r, format!("*1\r\n:{model}\r\n"));
            model = v;
            let r = t.run(&["BITFIELD", "m", "GET", "u16", "5"]);
            assert_eq!(r, format!("*1\r\n:{model}\r\n"));
        }
    }

    #[test]
    fn popcount_matches_naive() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 37 % 251) as u8).collect();
        let naive: u64 = data.iter().map(|b| u64::from(b.count_ones())).sum();
        assert_eq!(popcount(&data), naive);
        assert_eq!(first_bit(&[0, 0, 0x10], true), Some(19));
        assert_eq!(first_bit(&[0xff, 0xfe], false), Some(15));
        assert_eq!(first_bit(&[0xff], false), None);
    }
}
