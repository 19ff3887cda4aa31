//! Request arguments and the Redis rules for reading numbers and option words out of them.

use crate::error::ErrorReply;

/// The arguments of one request, borrowed from the input buffer (no copies on the hot path).
#[derive(Clone, Copy)]
pub struct Args<'a> {
    data: &'a [u8],
    ranges: &'a [(usize, usize)],
}

impl std::fmt::Debug for Args<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

impl<'a> Args<'a> {
    pub fn new(data: &'a [u8], ranges: &'a [(usize, usize)]) -> Self {
        Args { data, ranges }
    }

    /// The bytes the arguments are in, and where each one is in them (what [`Args::new`] was
    /// given): to keep a request's arguments as positions while its bytes stay put.
    pub fn parts(&self) -> (&'a [u8], &'a [(usize, usize)]) {
        (self.data, self.ranges)
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The i-th argument; the caller has checked arity (an out-of-range index yields "").
    pub fn get(&self, i: usize) -> &'a [u8] {
        match self.ranges.get(i) {
            Some(&(s, e)) => &self.data[s..e],
            None => b"",
        }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let data = self.data;
        self.ranges.iter().map(move |&(s, e)| &data[s..e])
    }

    /// The total size of the arguments in bytes.
    pub fn byte_len(&self) -> usize {
        self.ranges.iter().map(|&(s, e)| e - s).sum()
    }

    /// Arguments from index `from` on.
    pub fn tail(&self, from: usize) -> Args<'a> {
        Args {
            data: self.data,
            ranges: self.ranges.get(from..).unwrap_or(&[]),
        }
    }

    /// A sub-range of the arguments.
    pub fn slice(&self, from: usize, to: usize) -> Args<'a> {
        let to = to.min(self.ranges.len());
        let from = from.min(to);
        Args {
            data: self.data,
            ranges: &self.ranges[from..to],
        }
    }

    pub fn int(&self, i: usize) -> Result<i64, ErrorReply> {
        parse_i64(self.get(i)).ok_or_else(ErrorReply::not_integer)
    }

    pub fn float(&self, i: usize) -> Result<f64, ErrorReply> {
        parse_f64(self.get(i)).ok_or_else(ErrorReply::not_float)
    }

    /// True when argument `i` equals `word` ignoring ASCII case.
    pub fn is(&self, i: usize, word: &str) -> bool {
        self.get(i).eq_ignore_ascii_case(word.as_bytes())
    }

    /// The argument as text for error messages.
    pub fn text(&self, i: usize) -> String {
        String::from_utf8_lossy(self.get(i)).into_owned()
    }
}

/// Parses a signed 64-bit integer exactly as Redis's `string2ll`: optional `-`, digits, no `+`, no
/// spaces, no leading zeros (except "0" itself), no overflow.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits[0] == b'0' {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else {
        i64::try_from(v).ok()
    }
}

/// Longest text read as a double: Redis's MAX_LONG_DOUBLE_CHARS (its strtod takes any length;
/// DBL_MAX written out in full is 309 digits plus decimals).
const MAX_FLOAT_CHARS: usize = 5 * 1024;

/// Parses a double the way Redis does (`strtod` on the whole string): decimal or exponent forms,
/// `inf`/`-inf`/`+inf`; no spaces, no NaN.
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    if s.is_empty() || s.len() > MAX_FLOAT_CHARS || s[0].is_ascii_whitespace() {
        return None;
    }
    let t = std::str::from_utf8(s).ok()?;
    let lower = t.to_ascii_lowercase();
    let v = match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => {
            // Rust accepts "nan", "infinity" spellings handled above; refuse anything else odd.
            if lower.contains("nan") || lower.contains("inf") {
                return None;
            }
            match t.parse::<f64>() {
                Ok(v) => v,
                Err(_) => parse_hex_float(&lower)?,
            }
        }
    };
    if v.is_nan() { None } else { Some(v) }
}

/// Parses a byte size the way Redis's configuration does: a plain integer, or one with a unit
/// suffix `k`/`m`/`g` (powers of 1000) or `kb`/`mb`/`gb` (powers of 1024), case-insensitive.
pub fn parse_memory_size(s: &[u8]) -> Option<u64> {
    let t = std::str::from_utf8(s).ok()?.to_ascii_lowercase();
    let (digits, mult) = [
        ("gb", 1u64 << 30),
        ("mb", 1 << 20),
        ("kb", 1 << 10),
        ("g", 1_000_000_000),
        ("m", 1_000_000),
        ("k", 1000),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| t.strip_suffix(suffix).map(|d| (d.to_string(), *m)))
    .unwrap_or((t.clone(), 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// strtod's hexadecimal form (`0x10`, `-0x1.8p3`), which Redis accepts for floats.
fn parse_hex_float(s: &str) -> Option<f64> {
    let (neg, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let rest = rest.strip_prefix("0x")?;
    let (mant, exp) = match rest.split_once('p') {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v = 0f64;
    for c in int.chars() {
        v = v * 16.0 + f64::from(c.to_digit(16)?);
    }
    let mut scale = 1.0 / 16.0;
    for c in frac.chars() {
        v += f64::from(c.to_digit(16)?) * scale;
        scale /= 16.0;
    }
    let v = v * 2f64.powi(exp);
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_floats() {
        assert_eq!(super::parse_f64(b"0x10"), Some(16.0));
        assert_eq!(super::parse_f64(b"-0x1.8p3"), Some(-12.0));
        assert_eq!(super::parse_f64(b"0x"), None);
        assert_eq!(super::parse_f64(b"0xg"), None);
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(super::parse_memory_size(b"100"), Some(100));
        assert_eq!(super::parse_memory_size(b"1kb"), Some(1024));
        assert_eq!(super::parse_memory_size(b"2MB"), Some(2 << 20));
        assert_eq!(super::parse_memory_size(b"3g"), Some(3_000_000_000));
        assert_eq!(super::parse_memory_size(b"-1"), None);
        assert_eq!(super::parse_memory_size(b"mb"), None);
        assert_eq!(super::parse_memory_size(b"1.5mb"), None);
    }

    use super::*;

    #[test]
    fn integers_like_redis() {
        let ok: &[(&str, i64)] = &[
            ("0", 0),
            ("-1", -1),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
            ("42", 42),
        ];
        for (s, v) in ok {
            assert_eq!(parse_i64(s.as_bytes()), Some(*v), "{s}");
        }
        for s in [
            "",
            "+1",
            " 1",
            "1 ",
            "01",
            "-0",
            "9223372036854775808",
            "1.0",
            "abc",
            "-",
        ] {
            assert_eq!(parse_i64(s.as_bytes()), None, "{s:?}");
        }
    }

    #[test]
    fn floats_like_redis() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"+inf"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"1e3"), Some(1000.0));
        assert_eq!(parse_f64(b".5"), Some(0.5));
        for s in ["", "nan", " 1", "1x", "abc"] {
            assert_eq!(parse_f64(s.as_bytes()), None, "{s:?}");
        }
        // DBL_MAX written out (unit/type/zset "zset score double range").
        let dbl_max = format!("{:.17}", f64::MAX);
        assert_eq!(dbl_max.len(), 309 + 18);
        assert_eq!(parse_f64(dbl_max.as_bytes()), Some(f64::MAX));
    }
}
