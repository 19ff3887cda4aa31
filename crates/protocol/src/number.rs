//! Redis-compatible formatting of doubles.

/// Formats a score or double reply: the shortest text that reads back as the same double (as Redis
/// 7.2+ does), switching to exponent form outside [1e-5, 1e17) like C's `%g`; `inf`/`-inf`.
pub fn format_double(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if (1e-5..1e17).contains(&a) {
        return format!("{v}");
    }
    // Rust gives "1.5e-7"; C's %g gives "1.5e-07".
    let s = format!("{v:e}");
    match s.split_once('e') {
        Some((mant, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mant}e{sign}{digits:0>2}")
        }
        None => s,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles() {
        assert_eq!(format_double(1.0), "1");
        assert_eq!(format_double(1.5), "1.5");
        assert_eq!(format_double(-2.25), "-2.25");
        assert_eq!(format_double(0.1), "0.1");
        assert_eq!(format_double(1e300), "1e+300");
        assert_eq!(format_double(1.5e-7), "1.5e-07");
        assert_eq!(format_double(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_double(-0.0), "0");
        assert_eq!(format_human_double(10.6), "10.6");
        assert_eq!(format_human_double(5000.0), "5000");
    }
}
