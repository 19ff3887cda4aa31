//! Reply encoding straight into a connection's output buffer.
//!
//! Commands describe their reply with calls like `w.map(2); w.bulk(..); w.int(..)`; the writer emits
//! the RESP3 type or its RESP2 equivalent (maps become flat arrays, doubles become bulk strings,
//! null becomes `$-1` or `*-1`). Building no intermediate frame tree keeps the hot path cheap.
//!
//! A writer may carry a limit on the buffer's length ([`ReplyWriter::limited`]): once the buffer
//! reaches it, every further write is dropped, so no reply (16M random picks of a 900 KB member,
//! MGET of one key a million times) can grow a connection's memory past its output-buffer
//! budget, and loops that could run long ask [`ReplyWriter::is_full`] and stop. The truncated
//! reply is never sent: the connection closes when it sees the limit reached.

use bytes::{BufMut, BytesMut};

use crate::error::ErrorReply;
use crate::number::{DoubleText, exact_integer};

/// The protocol a connection negotiated with HELLO (RESP2 until told otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// Writes replies for one connection.
pub struct ReplyWriter<'a> {
    out: &'a mut BytesMut,
    proto: Protocol,
    /// Length of `out` past which nothing more is written (`usize::MAX`: no limit).
    limit: usize,
}

impl<'a> ReplyWriter<'a> {
    pub fn new(out: &'a mut BytesMut, proto: Protocol) -> Self {
        ReplyWriter {
            out,
            proto,
            limit: usize::MAX,
        }
    }

    /// A writer that stops writing once `out` holds `limit` bytes (see the module docs). One
    /// write may cross the limit; none starts beyond it.
    pub fn limited(out: &'a mut BytesMut, proto: Protocol, limit: usize) -> Self {
        ReplyWriter { out, proto, limit }
    }

    /// The buffer has reached its limit: the reply is being dropped, and a loop producing it
    /// should stop.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.out.len() >= self.limit
    }

    pub fn protocol(&self) -> Protocol {
        self.proto
    }

    pub fn is_resp3(&self) -> bool {
        self.proto == Protocol::Resp3
    }

    /// Bytes written so far into the buffer (for output limits).
    pub fn buffered(&self) -> usize {
        self.out.len()
    }

    fn header(&mut self, prefix: u8, n: i64) {
        if self.is_full() {
            return;
        }
        // Most lengths and counts have one or two digits: a fixed-size write needs neither
        // formatting nor a variable-length copy.
        if (0..10).contains(&n) {
            self.out.put_slice(&[prefix, b'0' + n as u8, b'\r', b'\n']);
            return;
        }
        if (10..100).contains(&n) {
            let (tens, ones) = (n / 10, n % 10);
            self.out
                .put_slice(&[prefix, b'0' + tens as u8, b'0' + ones as u8, b'\r', b'\n']);
            return;
        }
        // Longer ones (a growing list's length, a counter) are assembled on the stack and
        // appended in one copy: three appends cost twice the instructions (callgrind, RPUSH).
        let mut b = itoa::Buffer::new();
        let digits = b.format(n).as_bytes();
        // The prefix, at most 20 characters (i64::MIN) and CRLF.
        let mut line = [0u8; 23];
        let end = digits.len() + 1;
        line[0] = prefix;
        line[1..end].copy_from_slice(digits);
        line[end..end + 2].copy_from_slice(b"\r\n");
        self.out.put_slice(&line[..end + 2]);
    }

    pub fn ok(&mut self) {
        self.put(b"+OK\r\n");
    }

    /// Appends bytes unless the limit is reached.
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if !self.is_full() {
            self.out.put_slice(bytes);
        }
    }

    /// A simple string; `s` must not contain CR or LF.
    pub fn simple(&mut self, s: &str) {
        if self.is_full() {
            return;
        }
        self.out.reserve(s.len() + 3);
        self.out.put_u8(b'+');
        self.out.put_slice(s.as_bytes());
        self.out.put_slice(b"\r\n");
    }

    /// A `HELP` reply: an array of simple-string lines, as Redis sends them.
    pub fn help(&mut self, lines: &[&str]) {
        self.array(lines.len());
        for l in lines {
            self.simple(l);
        }
    }

    pub fn error(&mut self, e: &ErrorReply) {
        if self.is_full() {
            return;
        }
        let t = e.text();
        self.out.reserve(t.len() + 3);
        self.out.put_u8(b'-');
        self.out.put_slice(t.as_bytes());
        self.out.put_slice(b"\r\n");
    }

    pub fn int(&mut self, n: i64) {
        self.header(b':', n);
    }

    pub fn bulk(&mut self, data: &[u8]) {
        if self.is_full() {
            return;
        }
        self.header(b'$', data.len() as i64);
        self.out.reserve(data.len() + 2);
        self.out.put_slice(data);
        self.out.put_slice(b"\r\n");
    }

    pub fn bulk_str(&mut self, s: &str) {
        self.bulk(s.as_bytes());
    }

    /// An integer rendered as a bulk string (e.g. INCRBYFLOAT-style replies carry text).
    pub fn bulk_int(&mut self, n: i64) {
        let mut b = itoa::Buffer::new();
        let s = b.format(n);
        self.bulk(s.as_bytes());
    }

    pub fn opt_bulk(&mut self, data: Option<&[u8]>) {
        match data {
            Some(d) => self.bulk(d),
            None => self.null(),
        }
    }

    /// Null bulk string (`$-1` in RESP2, `_` in RESP3).
    pub fn null(&mut self) {
        match self.proto {
            Protocol::Resp2 => self.put(b"$-1\r\n"),
            Protocol::Resp3 => self.put(b"_\r\n"),
        }
    }

    /// Null array (`*-1` in RESP2, `_` in RESP3), e.g. an aborted EXEC.
    pub fn null_array(&mut self) {
        match self.proto {
            Protocol::Resp2 => self.put(b"*-1\r\n"),
            Protocol::Resp3 => self.put(b"_\r\n"),
        }
    }

    pub fn array(&mut self, n: usize) {
        self.header(b'*', n as i64);
    }

    /// A map of `n` pairs (`%n` in RESP3, a flat array of 2n items in RESP2).
    pub fn map(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => self.header(b'*', 2 * n as i64),
            Protocol::Resp3 => self.header(b'%', n as i64),
        }
    }

    /// A set of `n` items (`~n` in RESP3, an array in RESP2).
    pub fn set(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => self.header(b'*', n as i64),
            Protocol::Resp3 => self.header(b'~', n as i64),
        }
    }

    /// A push message header (RESP3 only; RESP2 gets an array).
    pub fn push(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => self.header(b'*', n as i64),
            Protocol::Resp3 => self.header(b'>', n as i64),
        }
    }

    /// A double (`,` in RESP3, a bulk string in RESP2).
    pub fn double(&mut self, v: f64) {
        // On the stack: whole-number scores (most of them) go straight to `itoa`, the rest to
        // `DoubleText::score` (whose first step is the same integer test).
        let mut int_text = itoa::Buffer::new();
        let other;
        let text = match exact_integer(v) {
            Some(i) => int_text.format(i).as_bytes(),
            None => {
                other = DoubleText::score(v);
                other.as_bytes()
            }
        };
        match self.proto {
            Protocol::Resp2 => self.bulk(text),
            Protocol::Resp3 => {
                if self.is_full() {
                    return;
                }
                self.out.put_u8(b',');
                self.out.put_slice(text);
                self.out.put_slice(b"\r\n");
            }
        }
    }

    /// A boolean (`#t`/`#f` in RESP3, `:1`/`:0` in RESP2).
    pub fn boolean(&mut self, b: bool) {
        match self.proto {
            Protocol::Resp2 => self.int(i64::from(b)),
            Protocol::Resp3 => self.put(if b { b"#t\r\n" } else { b"#f\r\n" }),
        }
    }

    /// Human-readable text (`=` verbatim `txt` in RESP3, a bulk string in RESP2), e.g. INFO.
    pub fn verbatim(&mut self, text: &str) {
        match self.proto {
            Protocol::Resp2 => self.bulk(text.as_bytes()),
            Protocol::Resp3 => {
                if self.is_full() {
                    return;
                }
                self.header(b'=', text.len() as i64 + 4);
                self.out.put_slice(b"txt:");
                self.out.put_slice(text.as_bytes());
                self.out.put_slice(b"\r\n");
            }
        }
    }

    /// Appends pre-encoded RESP bytes (e.g. a reply captured earlier).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.put(bytes);
    }

    /// Convenience: a map of string keys to string values.
    pub fn str_map<K: AsRef<str>, V: AsRef<str>>(&mut self, pairs: &[(K, V)]) {
        self.map(pairs.len());
        for (k, v) in pairs {
            self.bulk_str(k.as_ref());
            self.bulk_str(v.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, decode_reply};

    fn encode(proto: Protocol, f: impl FnOnce(&mut ReplyWriter<'_>)) -> BytesMut {
        let mut out = BytesMut::new();
        f(&mut ReplyWriter::new(&mut out, proto));
        out
    }

    /// Doubles on the wire as redis-server 7.2.6 sends them (ZSCORE in RESP2 and RESP3), at the
    /// edges of the integer form (±2^62) and just past them.
    #[test]
    fn doubles_are_written_as_redis_7_2_writes_them() {
        for (v, text) in [
            (0.0, "0"),
            (-0.0, "0"),
            (12345.0, "12345"),
            (-1.0, "-1"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (1e-7, "1e-7"),
            (123_456_789_012_345_680.0, "123456789012345680"),
            (4_611_686_018_427_387_904.0, "4611686018427387904"),
            (-4_611_686_018_427_387_904.0, "-4611686018427387904"),
            (9_223_372_036_854_775_808.0, "9223372036854776000"),
            (1e23, "99999999999999990000000"),
            (-1.2345678901234567e23, "-123456789012345670000000"),
            (1.5e300, "1.5e+300"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            for proto in [Protocol::Resp2, Protocol::Resp3] {
                let out = encode(proto, |w| w.double(v));
                let want = match proto {
                    Protocol::Resp2 => format!("${}\r\n{text}\r\n", text.len()),
                    Protocol::Resp3 => format!(",{text}\r\n"),
                };
                assert_eq!(&out[..], want.as_bytes(), "{v:?} in {proto:?}");
            }
        }
    }

    #[test]
    fn a_limited_writer_stops_at_its_limit() {
        let mut out = BytesMut::new();
        let mut w = ReplyWriter::limited(&mut out, Protocol::Resp3, 100);
        w.array(1_000_000);
        let mut written = 0;
        for _ in 0..1_000_000 {
            if w.is_full() {
                break;
            }
            w.bulk(&[b'x'; 30]);
            written += 1;
        }
        assert!(w.is_full());
        assert_eq!(written, 3, "the write that crosses the limit is the last");
        // Every kind of write is dropped once full.
        w.int(5);
        w.simple("OK");
        w.error(&ErrorReply::err("x"));
        w.null();
        w.double(1.5);
        w.boolean(true);
        w.verbatim("text");
        w.raw(b"+raw\r\n");
        w.map(3);
        let len = out.len();
        assert!((100..100 + 40).contains(&len), "{len}");
    }

    #[test]
    fn resp2_shapes() {
        let out = encode(Protocol::Resp2, |w| {
            w.map(1);
            w.bulk(b"a");
            w.double(1.5);
            w.null();
            w.boolean(true);
        });
        assert_eq!(&out[..], b"*2\r\n$1\r\na\r\n$3\r\n1.5\r\n$-1\r\n:1\r\n");
    }

    #[test]
    fn headers_of_every_width() {
        for n in [
            0i64,
            1,
            9,
            10,
            42,
            99,
            100,
            12345,
            -1,
            -10,
            i64::MIN,
            i64::MAX,
        ] {
            let out = encode(Protocol::Resp2, |w| w.int(n));
            assert_eq!(&out[..], format!(":{n}\r\n").as_bytes());
        }
        let out = encode(Protocol::Resp2, |w| w.bulk(&[b'x'; 10]));
        assert_eq!(&out[..], b"$10\r\nxxxxxxxxxx\r\n");
    }

    #[test]
    fn resp3_output_decodes_with_redis_protocol() {
        let mut out = encode(Protocol::Resp3, |w| {
            w.map(2);
            w.bulk(b"k");
            w.double(2.5);
            w.bulk(b"s");
            w.set(1);
            w.int(7);
            w.verbatim("hello");
            w.null();
            w.boolean(false);
        });
        let Some(Frame::Map { data, .. }) = decode_reply(&mut out).unwrap() else {
            panic!("expected a map")
        };
        let keys: Vec<_> = data
            .keys()
            .map(|k| crate::frame::frame_text(k).unwrap_or_default())
            .collect();
        assert_eq!(keys, ["k", "s"], "maps keep the server's order");
        assert!(matches!(
            decode_reply(&mut out).unwrap(),
            Some(Frame::VerbatimString { .. })
        ));
        assert!(matches!(decode_reply(&mut out).unwrap(), Some(Frame::Null)));
        assert!(matches!(
            decode_reply(&mut out).unwrap(),
            Some(Frame::Boolean { data: false, .. })
        ));
        assert!(out.is_empty());
    }
}
