//! Redis-compatible formatting of doubles.

use crate::fpconv;

/// A double as Redis 7.2 writes it, kept on the stack (a reply writes it without allocating).
pub struct DoubleText {
    buf: [u8; fpconv::MAX_LEN],
    len: usize,
}

impl DoubleText {
    /// A score or double reply, as Redis 7.2's `d2string` words it (`addReplyDouble`: ZSCORE,
    /// ZINCRBY, WITHSCORES, RESP3 doubles): `nan`, `inf`/`-inf`, an integer in ±2^62 by its exact
    /// digits, anything else by `fpconv_dtoa` (Grisu2: `0.1`, `1e-7`, `1.5e+300`).
    ///
    /// Zero is `0` whatever its sign: `d2string` would say `-0`, but for a sorted set small
    /// enough for a listpack (nearly all of them) 7.2.6 answers `0` to a score ZADD was given as
    /// `-0`; only a skiplist-encoded set shows `-0` (docs/redis-compat.md, *Doubles as text*).
    pub fn score(v: f64) -> Self {
        // `d2string` tests NaN and zero before the integers; -0.0 is the integer 0 here, and
        // NaN is no integer, so only NaN needs its own word (fpconv would write `-nan` for some).
        if v.is_nan() {
            return Self::from_ascii(b"nan");
        }
        Self::argument(v)
    }

    /// A number as Redis 7.2 turns it into text for a command: a Lua number given to
    /// `redis.call` (`luaArgsToRedisArgv`; Redis's RDB text doubles and AOF use the same rule,
    /// Ferrite's files have no such text): an integer in ±2^62 by its exact digits, anything
    /// else (`-0` included) by `fpconv_dtoa`.
    pub fn argument(v: f64) -> Self {
        let mut out = Self {
            buf: [0; fpconv::MAX_LEN],
            len: 0,
        };
        if let Some(i) = exact_integer(v) {
            let mut b = itoa::Buffer::new();
            let digits = b.format(i).as_bytes();
            out.buf[..digits.len()].copy_from_slice(digits);
            out.len = digits.len();
        } else {
            out.len = fpconv::dtoa(v, &mut out.buf);
        }
        out
    }

    fn from_ascii(text: &[u8]) -> Self {
        let mut buf = [0; fpconv::MAX_LEN];
        buf[..text.len()].copy_from_slice(text);
        Self {
            buf,
            len: text.len(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn as_str(&self) -> &str {
        // Every byte written above is ASCII.
        std::str::from_utf8(self.as_bytes()).unwrap_or("nan")
    }
}

/// Redis's `double2ll`: the integer a double is exactly, if it lies within ±2^62 (C's
/// `(double)(LLONG_MAX/2)`), where Redis prints it with its integer formatter. Above 2^53 these
/// are its exact digits (`4611686018427387904`), not the shortest round-trip text.
pub fn exact_integer(v: f64) -> Option<i64> {
    const LIMIT: f64 = (i64::MAX / 2) as f64;
    if !(-LIMIT..=LIMIT).contains(&v) {
        return None; // NaN too: C's `ll == d` is false for it
    }
    let i = v as i64;
    (i as f64 == v).then_some(i)
}

/// A score or double reply as text (see [`DoubleText::score`]).
pub fn format_double(v: f64) -> String {
    DoubleText::score(v).as_str().to_owned()
}

/// C's `printf("%.17g", n)` (Redis's `%.17Lg` of a double is the same text).
pub fn format_g17(n: f64) -> String {
    if n.is_nan() {
        return if n.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if n.is_infinite() {
        return if n < 0.0 { "-inf" } else { "inf" }.into();
    }
    if n == 0.0 {
        return if n.is_sign_negative() { "-0" } else { "0" }.into();
    }
    const P: i32 = 17;
    // 17 significant digits in scientific form, then %g's choice of style.
    let sci = format!("{:.*e}", (P - 1) as usize, n);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..P).contains(&exp) {
        let m = strip_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (P - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{:.*}", decimals, n)).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Formats the result of INCRBYFLOAT/HINCRBYFLOAT: plain decimal, no exponent, no trailing zeros.
pub fn format_human_double(v: f64) -> String {
    if v.is_infinite() {
        return format_double(v);
    }
    if v == 0.0 {
        return "0".into();
    }
    format!("{v}")
}

/// A decimal number as `mantissa × 10^exp`.
fn parse_decimal(s: &str) -> Option<(i128, i32)> {
    let (neg, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (num, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = int.trim_start_matches('0').len() + frac.len();
    if digits > 36 || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut m: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        m = m.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    let exp = exp.checked_sub(i32::try_from(frac.len()).ok()?)?;
    Some((if neg { -m } else { m }, exp))
}

/// Adds two decimal numbers the way Redis's INCRBYFLOAT reports the result: computed exactly in
/// decimal (so 0.1 + 0.2 is 0.3, as Redis's long double arithmetic gives), rounded to 17 decimal
/// places, without exponent or trailing zeros. `None` when an operand is not a plain decimal
/// that fits (hexadecimal, or more than 36 significant digits apart): callers then use f64.
pub fn decimal_add(a: &str, b: &str) -> Option<String> {
    let (ma, ea) = parse_decimal(a)?;
    let (mb, eb) = parse_decimal(b)?;
    let exp = ea.min(eb);
    let scale = |m: i128, e: i32| -> Option<i128> {
        let d = u32::try_from(e - exp).ok()?;
        if d > 38 {
            return None;
        }
        m.checked_mul(10i128.checked_pow(d)?)
    };
    let mut m = scale(ma, ea)?.checked_add(scale(mb, eb)?)?;
    let mut exp = exp;
    if exp < -17 {
        let d = u32::try_from(-17 - exp).ok()?;
        let div = 10i128.checked_pow(d.min(38))?;
        let (q, r) = (m / div, m % div);
        // Ties go to the even neighbour: Redis rounds a long double, which almost never lies
        // exactly halfway, so a decimal tie is as likely to fall either way there; half-even
        // is what makes 1/41 - 1/41 come back as 0, as Redis's "No negative zero" test wants.
        let twice = r.abs() * 2;
        m = if twice > div || (twice == div && q % 2 != 0) {
            q + m.signum()
        } else {
            q
        };
        exp = -17;
    }
    let neg = m < 0;
    let digits = m.unsigned_abs().to_string();
    let mut text = if exp >= 0 {
        format!("{digits}{}", "0".repeat(exp as usize))
    } else {
        let point = exp.unsigned_abs() as usize;
        let padded = format!("{digits:0>width$}", width = point + 1);
        let (i, f) = padded.split_at(padded.len() - point);
        let f = f.trim_end_matches('0');
        if f.is_empty() {
            i.to_string()
        } else {
            format!("{i}.{f}")
        }
    };
    if neg && text != "0" {
        text.insert(0, '-');
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimal_addition() {
        use super::decimal_add as add;
        assert_eq!(add("0.1", "0.2").as_deref(), Some("0.3"));
        assert_eq!(add("10.5", "0.1").as_deref(), Some("10.6"));
        assert_eq!(add("5.0e3", "2.0e2").as_deref(), Some("5200"));
        assert_eq!(add("1", "-1").as_deref(), Some("0"));
        assert_eq!(add("-0.5", "0.25").as_deref(), Some("-0.25"));
        assert_eq!(add("1", "1e-20").as_deref(), Some("1"));
        assert_eq!(add("0", "3.0000000000000000005").as_deref(), Some("3"));
        assert_eq!(add("0x10", "1"), None);
        assert_eq!(add("1e300", "1"), None);
        // Redis's "No negative zero": 1/41, then -1/41 as Tcl prints them.
        let third = add("0", "0.024390243902439025").unwrap();
        assert_eq!(add(&third, "-0.024390243902439025").as_deref(), Some("0"));
        assert_eq!(add("-0", "0").as_deref(), Some("0"));
        assert_eq!(add("0", "-0").as_deref(), Some("0"));
        assert_eq!(add("-0.000000000000000004", "0").as_deref(), Some("0"));
        assert_eq!(
            add("0.000000000000000015", "0").as_deref(),
            Some("0.00000000000000002")
        );
    }

    use super::*;

    #[test]
    fn doubles() {
        assert_eq!(format_double(1.0), "1");
        assert_eq!(format_double(1.5), "1.5");
        assert_eq!(format_double(-2.25), "-2.25");
        assert_eq!(format_double(0.1), "0.1");
        assert_eq!(format_double(1e300), "1e+300");
        assert_eq!(format_double(1.5e-7), "1.5e-7");
        assert_eq!(format_double(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_double(1.2345678901234568e17), "123456789012345680");
        assert_eq!(format_double(f64::NAN), "nan");
        assert_eq!(format_double(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_double(-0.0), "0");
        assert_eq!(format_human_double(10.6), "10.6");
        assert_eq!(format_human_double(f64::INFINITY), "inf");
        assert_eq!(format_human_double(5000.0), "5000");
    }

    /// `printf("%.17g")` as glibc writes it (what 7.2's ZSCAN of a skiplist answers).
    #[test]
    fn g17_matches_c() {
        for (n, s) in [
            (1.5, "1.5"),
            (0.1, "0.10000000000000001"),
            (-2.25, "-2.25"),
            (1e20, "1e+20"),
            (1.0e-5, "1.0000000000000001e-05"),
            (1e-7, "9.9999999999999995e-08"),
            (123456789.125, "123456789.125"),
            (3.0, "3"),
            (1e17, "1e+17"),
            (-0.0, "-0"),
        ] {
            assert_eq!(format_g17(n), s, "{n}");
        }
    }

    /// `double2ll`: exact integers within ±2^62 only.
    #[test]
    fn exact_integers() {
        assert_eq!(exact_integer(-0.0), Some(0));
        assert_eq!(exact_integer(4_611_686_018_427_387_904.0), Some(1 << 62));
        assert_eq!(
            exact_integer(-4_611_686_018_427_387_904.0),
            Some(-(1 << 62))
        );
        assert_eq!(exact_integer(9_223_372_036_854_775_808.0), None);
        assert_eq!(exact_integer(1.5), None);
        assert_eq!(exact_integer(f64::NAN), None);
        assert_eq!(exact_integer(f64::INFINITY), None);
    }

    proptest::proptest! {
        /// Any 64-bit pattern (NaNs, subnormals, infinities included) is written without a panic,
        /// within `fpconv::MAX_LEN`, and every finite one reads back as the same double (-0 as 0):
        /// Grisu2's digits always round-trip.
        #[test]
        fn every_double_round_trips(bits in proptest::prelude::any::<u64>()) {
            let v = f64::from_bits(bits);
            for text in [DoubleText::score(v), DoubleText::argument(v)] {
                let s = text.as_str();
                proptest::prop_assert!(!s.is_empty() && s.len() <= fpconv::MAX_LEN);
                if v.is_finite() {
                    let back: f64 = s.parse().map_err(|e| {
                        proptest::test_runner::TestCaseError::fail(format!("{s}: {e}"))
                    })?;
                    let want = if v == 0.0 { 0.0 } else { v };
                    proptest::prop_assert_eq!(back.to_bits(), want.to_bits(), "{}", s);
                }
            }
        }
    }
}
