//! Turning replies into text the way redis-cli does: the default form (quoted strings,
//! `(integer) n`, numbered nested arrays, RESP3 maps as `field: value` lines), `--raw` (bare
//! values, one per line) and `--json`.
//!
//! Output is bytes: `--raw` writes values exactly as stored (binary included). The default form
//! escapes every byte that is not printable ASCII. JSON strings must be Unicode, so `--json`
//! shows bytes that are not valid UTF-8 as U+FFFD (lossy, in keys and values alike); use `--raw`
//! to get such values back exactly.

use ferrite_client::{Frame, value};

/// How replies are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// redis-cli's terminal form.
    Pretty,
    /// Bare values, one per line (scripts).
    Raw,
    /// One JSON document per reply.
    Json,
}

/// Renders a reply in `format`, ending with a newline.
pub fn render(f: &Frame, format: Format) -> Vec<u8> {
    match format {
        Format::Pretty => {
            let mut out = String::new();
            pretty(f, "", &mut out);
            out.into_bytes()
        }
        Format::Raw => {
            let mut out = Vec::new();
            raw(f, &mut out);
            out.push(b'\n');
            out
        }
        Format::Json => json_line(&to_json(f)),
    }
}

/// A JSON document on one line.
pub fn json_line(v: &serde_json::Value) -> Vec<u8> {
    let mut out = v.to_string().into_bytes();
    out.push(b'\n');
    out
}

/// Renders a reply that redis-cli always shows raw (INFO, CLIENT LIST...): its lines matter, its
/// quoting would hide them. Non-string replies keep the chosen format.
pub fn render_verbatim(f: &Frame, format: Format) -> Vec<u8> {
    match (f, format) {
        (
            Frame::BlobString { data, .. }
            | Frame::SimpleString { data, .. }
            | Frame::VerbatimString { data, .. },
            Format::Pretty | Format::Raw,
        ) => {
            let mut out = Vec::with_capacity(data.len() + 1);
            let mut rest: &[u8] = data;
            while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
                out.extend_from_slice(&rest[..i]);
                out.push(b'\n');
                rest = &rest[i + 2..];
            }
            out.extend_from_slice(rest);
            if out.last() != Some(&b'\n') {
                out.push(b'\n');
            }
            out
        }
        _ => render(f, format),
    }
}

/// Whether redis-cli would print this command's reply raw even without `--raw`.
pub fn prints_verbatim<A: AsRef<[u8]>>(args: &[A]) -> bool {
    let word = |i: usize| {
        args.get(i)
            .map(|s| String::from_utf8_lossy(s.as_ref()).to_ascii_lowercase())
    };
    match word(0).as_deref() {
        Some("info") | Some("lolwut") => true,
        Some("client") => matches!(word(1).as_deref(), Some("list") | Some("info")),
        Some("memory") => matches!(word(1).as_deref(), Some("doctor") | Some("malloc-stats")),
        _ => false,
    }
}

/// Quotes bytes as redis-cli does (`sdscatrepr`): printable ASCII as is, common escapes,
/// everything else as `\xHH`.
pub fn quote(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x07 => s.push_str("\\a"),
            0x08 => s.push_str("\\b"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

/// A map key as a field name: bare when it is a plain word, quoted otherwise.
fn key_text(k: &Frame) -> String {
    match k {
        Frame::BlobString { data, .. } | Frame::SimpleString { data, .. }
            if !data.is_empty() && data.iter().all(|b| b.is_ascii_graphic() && *b != b'"') =>
        {
            String::from_utf8_lossy(data).into_owned()
        }
        Frame::BlobString { data, .. } | Frame::SimpleString { data, .. } => quote(data),
        other => {
            let mut s = String::new();
            pretty(other, "", &mut s);
            s.trim_end().to_string()
        }
    }
}

fn is_nonempty_aggregate(f: &Frame) -> bool {
    match f {
        Frame::Array { data, .. } | Frame::Push { data, .. } => !data.is_empty(),
        Frame::Set { data, .. } => !data.is_empty(),
        Frame::Map { data, .. } => !data.is_empty(),
        _ => false,
    }
}

/// redis-cli's terminal form. The caller has already written this value's first-line prefix;
/// `prefix` is what continuation lines start with, so nested arrays line up under their index.
fn pretty(f: &Frame, prefix: &str, out: &mut String) {
    match f {
        Frame::SimpleString { data, .. } => {
            out.push_str(&String::from_utf8_lossy(data));
            out.push('\n');
        }
        Frame::BlobString { data, .. } => {
            out.push_str(&quote(data));
            out.push('\n');
        }
        Frame::VerbatimString { data, .. } => {
            out.push_str(&String::from_utf8_lossy(data));
            out.push('\n');
        }
        Frame::SimpleError { .. } | Frame::BlobError { .. } => {
            out.push_str("(error) ");
            out.push_str(&value::as_string(f).unwrap_or_default());
            out.push('\n');
        }
        Frame::Number { data, .. } => {
            out.push_str(&format!("(integer) {data}\n"));
        }
        Frame::Double { .. } => {
            out.push_str(&format!("(double) {}\n", value::display(f)));
        }
        Frame::BigNumber { data, .. } => {
            out.push_str(&format!("(big number) {}\n", String::from_utf8_lossy(data)));
        }
        Frame::Boolean { data, .. } => {
            out.push_str(if *data { "(true)\n" } else { "(false)\n" });
        }
        Frame::Null => out.push_str("(nil)\n"),
        Frame::Array { data, .. } | Frame::Push { data, .. } => {
            numbered(data.iter(), data.len(), "(empty array)", prefix, out)
        }
        Frame::Set { data, .. } => numbered(data.iter(), data.len(), "(empty set)", prefix, out),
        Frame::Map { data, .. } => {
            if data.is_empty() {
                out.push_str("(empty hash)\n");
                return;
            }
            for (i, (k, v)) in data.iter().enumerate() {
                if i > 0 {
                    out.push_str(prefix);
                }
                out.push_str(&key_text(k));
                out.push(':');
                if is_nonempty_aggregate(v) {
                    // Nested aggregates start on their own line, indented under the field.
                    let inner = format!("{prefix}  ");
                    out.push('\n');
                    out.push_str(&inner);
                    pretty(v, &inner, out);
                } else {
                    out.push(' ');
                    pretty(v, prefix, out);
                }
            }
        }
        other => {
            out.push_str(&value::display(other));
            out.push('\n');
        }
    }
}

fn numbered<'a>(
    items: impl Iterator<Item = &'a Frame>,
    len: usize,
    empty: &str,
    prefix: &str,
    out: &mut String,
) {
    if len == 0 {
        out.push_str(empty);
        out.push('\n');
        return;
    }
    let width = len.to_string().len();
    let inner = format!("{prefix}{}", " ".repeat(width + 2));
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(prefix);
        }
        out.push_str(&format!("{:>width$}) ", i + 1));
        pretty(item, &inner, out);
    }
}

/// A RESP3 reply reshaped as the server sends it in RESP2: maps and sets become flat arrays,
/// doubles and big numbers bulk strings, booleans integers, and `[member, score]` pairs
/// (sorted-set replies WITHSCORES) one flat list. RESP2 replies are left as they are.
///
/// `-2` speaks RESP2, so its replies are RESP2 already; this keeps them so when the user
/// switches the connection with `HELLO 3`.
pub fn as_resp2(f: Frame) -> Frame {
    fn bulk(text: String) -> Frame {
        Frame::BlobString {
            data: text.into_bytes().into(),
            attributes: None,
        }
    }
    fn array(data: Vec<Frame>) -> Frame {
        Frame::Array {
            data,
            attributes: None,
        }
    }
    let scored_pair = |f: &Frame| {
        matches!(f, Frame::Array { data, .. }
            if data.len() == 2 && matches!(data[1], Frame::Double { .. }))
    };
    match f {
        Frame::Double { .. } => bulk(value::display(&f)),
        Frame::BigNumber { data, .. } | Frame::VerbatimString { data, .. } => Frame::BlobString {
            data,
            attributes: None,
        },
        Frame::Boolean { data, .. } => Frame::Number {
            data: i64::from(data),
            attributes: None,
        },
        Frame::Map { data, .. } => array(
            data.into_iter()
                .flat_map(|(k, v)| [as_resp2(k), as_resp2(v)])
                .collect(),
        ),
        Frame::Set { data, .. } => array(data.into_iter().map(as_resp2).collect()),
        Frame::Array { data, .. } if !data.is_empty() && data.iter().all(scored_pair) => array(
            data.into_iter()
                .flat_map(|p| match p {
                    Frame::Array { data, .. } => data,
                    other => vec![other],
                })
                .map(as_resp2)
                .collect(),
        ),
        Frame::Array { data, .. } | Frame::Push { data, .. } => {
            array(data.into_iter().map(as_resp2).collect())
        }
        other => other,
    }
}

/// `--raw`: bare values (the exact bytes of strings), aggregates one element per line, map
/// entries as `key value` lines (as `redis-cli -3 --raw` prints them), errors without
/// `(error) `.
fn raw(f: &Frame, out: &mut Vec<u8>) {
    fn lines<'a>(items: impl Iterator<Item = &'a Frame>, out: &mut Vec<u8>) {
        for (i, item) in items.enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            raw(item, out);
        }
    }
    match f {
        Frame::SimpleString { data, .. }
        | Frame::BlobString { data, .. }
        | Frame::VerbatimString { data, .. }
        | Frame::BigNumber { data, .. }
        | Frame::BlobError { data, .. } => out.extend_from_slice(data),
        Frame::SimpleError { data, .. } => out.extend_from_slice(data.as_bytes()),
        Frame::Number { data, .. } => out.extend_from_slice(data.to_string().as_bytes()),
        Frame::Double { .. } => out.extend_from_slice(value::display(f).as_bytes()),
        // As RESP2 sends booleans (`:1`/`:0`), so scripts see the same text on either protocol.
        Frame::Boolean { data, .. } => out.push(if *data { b'1' } else { b'0' }),
        Frame::Null => {}
        Frame::Array { data, .. } | Frame::Push { data, .. } => lines(data.iter(), out),
        Frame::Set { data, .. } => lines(data.iter(), out),
        Frame::Map { data, .. } => {
            for (i, (k, v)) in data.iter().enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                raw(k, out);
                out.push(b' ');
                raw(v, out);
            }
        }
        other => out.extend_from_slice(value::display(other).as_bytes()),
    }
}

/// A reply as JSON: maps become objects (keys as text), sets and arrays become arrays, errors
/// become `{"error": text}`. Bytes that are not UTF-8 become U+FFFD (see the module docs).
pub fn to_json(f: &Frame) -> serde_json::Value {
    use serde_json::Value;
    match f {
        Frame::SimpleString { data, .. }
        | Frame::BlobString { data, .. }
        | Frame::VerbatimString { data, .. } => {
            Value::String(String::from_utf8_lossy(data).into_owned())
        }
        Frame::BigNumber { data, .. } => {
            let s = String::from_utf8_lossy(data).into_owned();
            serde_json::from_str::<serde_json::Number>(&s)
                .map(Value::Number)
                .unwrap_or(Value::String(s))
        }
        Frame::SimpleError { .. } | Frame::BlobError { .. } => {
            let mut m = serde_json::Map::new();
            m.insert(
                "error".into(),
                Value::String(value::as_string(f).unwrap_or_default()),
            );
            Value::Object(m)
        }
        Frame::Number { data, .. } => Value::from(*data),
        // JSON has no NaN or infinities: those stay text ("inf", "nan").
        Frame::Double { data, .. } => serde_json::Number::from_f64(*data)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value::display(f))),
        Frame::Boolean { data, .. } => Value::Bool(*data),
        Frame::Null => Value::Null,
        Frame::Array { data, .. } | Frame::Push { data, .. } => {
            Value::Array(data.iter().map(to_json).collect())
        }
        Frame::Set { data, .. } => Value::Array(data.iter().map(to_json).collect()),
        Frame::Map { data, .. } => Value::Object(
            data.iter()
                .map(|(k, v)| (json_key(k), to_json(v)))
                .collect(),
        ),
        other => Value::String(value::display(other)),
    }
}

fn json_key(k: &Frame) -> String {
    match to_json(k) {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Rows of `width` cells as left-aligned columns two spaces apart, one line per row.
pub fn columns(width: usize, rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..width)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_client::Frame;

    /// Rendered text (the replies in these tests are UTF-8).
    fn render(f: &Frame, format: Format) -> String {
        String::from_utf8(super::render(f, format)).expect("UTF-8")
    }

    fn bulk(s: &str) -> Frame {
        Frame::BlobString {
            data: s.as_bytes().to_vec().into(),
            attributes: None,
        }
    }

    fn int(n: i64) -> Frame {
        Frame::Number {
            data: n,
            attributes: None,
        }
    }

    fn array(v: Vec<Frame>) -> Frame {
        Frame::Array {
            data: v,
            attributes: None,
        }
    }

    fn map(v: Vec<(Frame, Frame)>) -> Frame {
        Frame::Map {
            data: v.into_iter().collect(),
            attributes: None,
        }
    }

    #[test]
    fn pretty_scalars() {
        assert_eq!(
            render(&bulk("a \"b\"\n"), Format::Pretty),
            "\"a \\\"b\\\"\\n\"\n"
        );
        assert_eq!(render(&int(7), Format::Pretty), "(integer) 7\n");
        assert_eq!(render(&Frame::Null, Format::Pretty), "(nil)\n");
        let d = Frame::Double {
            data: 1.5,
            attributes: None,
        };
        assert_eq!(render(&d, Format::Pretty), "(double) 1.5\n");
        assert_eq!(quote(&[0xc3, 0xa9]), "\"\\xc3\\xa9\"");
    }

    #[test]
    fn pretty_nested_arrays_line_up() {
        let items: Vec<Frame> = (0..10).map(int).collect();
        let f = array(vec![
            bulk("a"),
            array(vec![bulk("x"), bulk("y")]),
            array(items),
        ]);
        let text = render(&f, Format::Pretty);
        let expected =
            "1) \"a\"\n2) 1) \"x\"\n   2) \"y\"\n3)  1) (integer) 0\n    2) (integer) 1\n";
        assert!(text.starts_with(expected), "{text}");
        assert!(text.ends_with("   10) (integer) 9\n"), "{text}");
        assert_eq!(render(&array(vec![]), Format::Pretty), "(empty array)\n");
    }

    #[test]
    fn maps_print_as_field_lines() {
        let f = map(vec![
            (bulk("name"), bulk("acme")),
            (bulk("keys"), int(3)),
            (bulk("buckets"), array(vec![int(1), int(2)])),
        ]);
        assert_eq!(
            render(&f, Format::Pretty),
            "name: \"acme\"\nkeys: (integer) 3\nbuckets:\n  1) (integer) 1\n  2) (integer) 2\n"
        );
        let nested = array(vec![map(vec![(bulk("a"), int(1)), (bulk("b"), int(2))])]);
        assert_eq!(
            render(&nested, Format::Pretty),
            "1) a: (integer) 1\n   b: (integer) 2\n"
        );
    }

    #[test]
    fn resp2_shapes() {
        let d = |x: f64| Frame::Double {
            data: x,
            attributes: None,
        };
        let scored = array(vec![
            array(vec![bulk("a"), d(1.5)]),
            array(vec![bulk("b"), d(2.0)]),
        ]);
        assert_eq!(
            render(&as_resp2(scored), Format::Pretty),
            "1) \"a\"\n2) \"1.5\"\n3) \"b\"\n4) \"2\"\n"
        );
        let m = map(vec![
            (bulk("f"), bulk("v")),
            (
                bulk("ok"),
                Frame::Boolean {
                    data: true,
                    attributes: None,
                },
            ),
        ]);
        assert_eq!(
            render(&as_resp2(m), Format::Pretty),
            "1) \"f\"\n2) \"v\"\n3) \"ok\"\n4) (integer) 1\n"
        );
        // Nested arrays that are not score pairs keep their shape.
        let nested = array(vec![array(vec![bulk("x"), bulk("y")])]);
        assert_eq!(as_resp2(nested.clone()), nested);
    }

    #[test]
    fn raw_and_json() {
        let f = map(vec![(bulk("f1"), bulk("v1")), (bulk("f2"), int(2))]);
        // As redis-cli -3 --raw: one `key value` line per entry.
        assert_eq!(render(&f, Format::Raw), "f1 v1\nf2 2\n");
        assert_eq!(render(&f, Format::Json), "{\"f1\":\"v1\",\"f2\":2}\n");
        let a = array(vec![bulk("x"), Frame::Null, int(1)]);
        assert_eq!(render(&a, Format::Raw), "x\n\n1\n");
        assert_eq!(render(&a, Format::Json), "[\"x\",null,1]\n");
        let nan = Frame::Double {
            data: f64::INFINITY,
            attributes: None,
        };
        assert_eq!(render(&nan, Format::Json), "\"inf\"\n");
        let err = Frame::SimpleError {
            data: "ERR no".into(),
            attributes: None,
        };
        assert_eq!(render(&array(vec![err.clone()]), Format::Raw), "ERR no\n");
        assert_eq!(render(&err, Format::Pretty), "(error) ERR no\n");
    }

    #[test]
    fn binary_values() {
        let bin = Frame::BlobString {
            data: b"\xff\x00a\r\n".to_vec().into(),
            attributes: None,
        };
        assert_eq!(super::render(&bin, Format::Raw), b"\xff\x00a\r\n\n");
        assert_eq!(render(&bin, Format::Pretty), "\"\\xff\\x00a\\r\\n\"\n");
        // JSON: lossy, for keys and values alike.
        let m = map(vec![(bin.clone(), bin)]);
        assert_eq!(
            render(&m, Format::Json),
            "{\"\u{fffd}\\u0000a\\r\\n\":\"\u{fffd}\\u0000a\\r\\n\"}\n"
        );
        let info = bulk("# Server\r\nx:1\r\n");
        assert_eq!(render_verbatim(&info, Format::Raw), b"# Server\nx:1\n");
    }
}
