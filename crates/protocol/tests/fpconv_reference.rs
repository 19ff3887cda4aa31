//! Ferrite's doubles against redis-server 7.2.6's own replies.
//!
//! `fixtures/zscore-7.2.6.txt` holds, per line, a double's bits and the text 7.2.6 answered for
//! it to ZSCORE (the same in RESP2 and RESP3), made by
//! `scripts/fpconv-reference.py <port> 5000 1` against `redis-server` 7.2.6: powers of ten and two
//! with their neighbours, integers around 2^53/2^62/2^63/2^64, subnormals, random bit patterns and
//! decimal-looking numbers, each sign. Set `FERRITE_FPCONV_REFERENCE` to a larger file made the
//! same way to check more (docs/benchmarks.md records a 400,000-double run).

use bytes::BytesMut;
use ferrite_protocol::number::{DoubleText, format_double};
use ferrite_protocol::{Protocol, ReplyWriter};

fn check(name: &str, text: &str) -> usize {
    let mut checked = 0;
    let mut wrong = Vec::new();
    for line in text.lines() {
        let (hex, want) = line.split_once(' ').expect("a `bits text` line");
        let bits = u64::from_str_radix(hex, 16).expect("hex bits");
        let v = f64::from_bits(bits);
        let got = format_double(v);
        if got != want {
            wrong.push(format!("{v:?} ({hex}): 7.2.6 says {want}, Ferrite {got}"));
        }
        // What a reply writes without allocating is the same text.
        assert_eq!(DoubleText::score(v).as_str(), got);
        let mut wire = BytesMut::new();
        ReplyWriter::new(&mut wire, Protocol::Resp3).double(v);
        assert_eq!(
            &wire[..],
            format!(",{want}\r\n").as_bytes(),
            "{v:?} on the wire"
        );
        checked += 1;
    }
    assert!(
        wrong.is_empty(),
        "{name}: {} of {checked} differ, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    checked
}

#[test]
fn scores_are_written_as_redis_7_2_6_writes_them() {
    let n = check("fixture", include_str!("fixtures/zscore-7.2.6.txt"));
    assert!(n > 7000, "the fixture has {n} lines");
}

#[test]
fn a_larger_reference_when_given() {
    if let Ok(path) = std::env::var("FERRITE_FPCONV_REFERENCE") {
        let text = std::fs::read_to_string(&path).expect("FERRITE_FPCONV_REFERENCE file");
        let n = check(&path, &text);
        eprintln!("{n} doubles match {path}");
    }
}
