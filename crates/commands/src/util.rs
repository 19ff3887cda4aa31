//! Helpers shared by the command families.

use ferrite_protocol::args::parse_f64;
use ferrite_protocol::{Args, ErrorReply};
use ferrite_storage::{
    Entry, HashRef, HashValue, ListRef, ListValue, SetRef, SetValue, StrRef, StrValue, Value,
    ValueRef, ZSetRef, ZSetValue,
};

/// Normalizes Redis-style inclusive indices (negative counts from the end) against `len`.
/// Returns the inclusive range, or None when it selects nothing.
pub fn index_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if end < 0 { len + end } else { end };
    if s < 0 {
        s = 0;
    }
    if s > e || s >= len {
        return None;
    }
    if e >= len {
        e = len - 1;
    }
    Some((s as usize, e as usize))
}

/// The value as a string (a read-only view), or WRONGTYPE.
pub fn as_str(e: &Entry) -> Result<StrRef<'_>, ErrorReply> {
    match e.value() {
        ValueRef::Str(s) => Ok(s),
        _ => Err(ErrorReply::wrong_type()),
    }
}

pub fn as_str_mut(e: &mut Entry) -> Result<&mut StrValue, ErrorReply> {
    match e.value_mut() {
        Value::Str(s) => Ok(s),
        _ => Err(ErrorReply::wrong_type()),
    }
}

pub fn as_list(e: &Entry) -> Result<ListRef<'_>, ErrorReply> {
    match e.value() {
        ValueRef::List(l) => Ok(l),
        _ => Err(ErrorReply::wrong_type()),
    }
}

pub fn as_list_mut(e: &mut Entry) -> Result<&mut ListValue, ErrorReply> {
    match e.value_mut() {
        Value::List(l) => Ok(l),
        _ => Err(ErrorReply::wrong_type()),
    }
}

pub fn as_hash(e: &Entry) -> Result<HashRef<'_>, ErrorReply> {
    match e.value() {
        ValueRef::Hash(h) => Ok(h),
        _ => Err(ErrorReply::wrong_type()),
    }
}

pub fn as_hash_mut(e: &mut Entry) -> Result<&mut HashValue, ErrorReply> {
    match e.value_mut() {
        Value::Hash(h) => Ok(h),
        _ => Err(ErrorReply::wrong_type()),
    }
}

pub fn as_set(e: &Entry) -> Result<SetRef<'_>, ErrorReply> {
    match e.value() {
        ValueRef::Set(s) => Ok(s),
        _ => Err(ErrorReply::wrong_type()),
    }
}

pub fn as_set_mut(e: &mut Entry) -> Result<&mut SetValue, ErrorReply> {
    match e.value_mut() {
        Value::Set(s) => Ok(s),
        _ => Err(ErrorReply::wrong_type()),
    }
}

pub fn as_zset(e: &Entry) -> Result<ZSetRef<'_>, ErrorReply> {
    match e.value() {
        ValueRef::ZSet(z) => Ok(z),
        _ => Err(ErrorReply::wrong_type()),
    }
}

pub fn as_zset_mut(e: &mut Entry) -> Result<&mut ZSetValue, ErrorReply> {
    match e.value_mut() {
        Value::ZSet(z) => Ok(z),
        _ => Err(ErrorReply::wrong_type()),
    }
}

/// Longest stored number INCRBYFLOAT and HINCRBYFLOAT read back (Redis: MAX_LONG_DOUBLE_CHARS).
pub const MAX_STORED_FLOAT_LEN: usize = 5 * 1024;

/// Reads the number stored in a string or hash field for INCRBYFLOAT / HINCRBYFLOAT.
///
/// Same grammar as request arguments ([`parse_f64`]), but longer text is accepted: these commands
/// write plain decimals without an exponent, so a value of 1e300 is stored as 301 digits and must
/// read back (Redis reads up to 5 KiB here).
pub fn parse_stored_float(s: &[u8]) -> Option<f64> {
    if s.len() <= 256 {
        return parse_f64(s);
    }
    if s.len() > MAX_STORED_FLOAT_LEN
        || !s
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let v: f64 = std::str::from_utf8(s).ok()?.parse().ok()?;
    v.is_finite().then_some(v)
}

/// Formats an integer as the bytes Redis stores for it.
pub fn int_bytes(n: i64) -> Vec<u8> {
    itoa::Buffer::new().format(n).as_bytes().to_vec()
}

/// Parsed `[MATCH pattern] [COUNT n]` (and optionally `[TYPE t]`, `[NOVALUES]`) of the SCAN family.
#[derive(Debug, Default)]
pub struct ScanOptions<'a> {
    pub pattern: Option<ferrite_storage::glob::Glob>,
    pub count: usize,
    pub type_filter: Option<&'a [u8]>,
    pub novalues: bool,
}

/// The reply of HSCAN/SSCAN/ZSCAN on a missing key: cursor 0 and no elements.
pub fn empty_scan_page(w: &mut ferrite_protocol::ReplyWriter<'_>) {
    w.array(2);
    w.bulk(b"0");
    w.array(0);
}

/// Parses a SCAN cursor (an unsigned 64-bit decimal).
pub fn parse_cursor(arg: &[u8]) -> Result<u64, ErrorReply> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(ErrorReply::invalid_cursor)
}

/// Parses SCAN options starting at argument `from`.
pub fn parse_scan_options<'a>(
    args: &Args<'a>,
    from: usize,
    allow_type: bool,
    allow_novalues: bool,
) -> Result<ScanOptions<'a>, ErrorReply> {
    let mut o = ScanOptions {
        count: 10,
        ..Default::default()
    };
    let mut i = from;
    while i < args.len() {
        if args.is(i, "MATCH") && i + 1 < args.len() {
            o.pattern = Some(ferrite_storage::glob::Glob::new(args.get(i + 1), false));
            i += 2;
        } else if args.is(i, "COUNT") && i + 1 < args.len() {
            let n = args.int(i + 1)?;
            if n < 1 {
                return Err(ErrorReply::syntax());
            }
            o.count = n as usize;
            i += 2;
        } else if allow_type && args.is(i, "TYPE") && i + 1 < args.len() {
            o.type_filter = Some(args.get(i + 1));
            i += 2;
        } else if allow_novalues && args.is(i, "NOVALUES") {
            o.novalues = true;
            i += 1;
        } else {
            return Err(ErrorReply::syntax());
        }
    }
    Ok(o)
}

impl ScanOptions<'_> {
    pub fn matches(&self, item: &[u8]) -> bool {
        self.pattern.as_ref().is_none_or(|g| g.matches(item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_floats_may_be_long() {
        let long = format!("1{}", "0".repeat(300));
        assert_eq!(parse_stored_float(long.as_bytes()), Some(1e300));
        let long_frac = format!("0.{}1", "0".repeat(299));
        assert_eq!(parse_stored_float(long_frac.as_bytes()), Some(1e-300));
        assert_eq!(parse_stored_float(b"1.5"), Some(1.5));
        assert_eq!(parse_stored_float(b"inf"), Some(f64::INFINITY));
        for bad in [
            format!("1{}x", "0".repeat(300)),
            format!(" 1{}", "0".repeat(300)),
            format!("{}nan", "1".repeat(300)),
            "9".repeat(MAX_STORED_FLOAT_LEN + 1),
            "9".repeat(400),
        ] {
            // 400 nines overflow to infinity: not a finite stored value.
            assert_eq!(parse_stored_float(bad.as_bytes()), None, "{}", &bad[..10]);
        }
        assert_eq!(parse_stored_float(b"abc"), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(index_range(0, -1, 5), Some((0, 4)));
        assert_eq!(index_range(-2, -1, 5), Some((3, 4)));
        assert_eq!(index_range(-100, 100, 5), Some((0, 4)));
        assert_eq!(index_range(3, 1, 5), None);
        assert_eq!(index_range(5, 10, 5), None);
        assert_eq!(index_range(0, -1, 0), None);
    }
}
