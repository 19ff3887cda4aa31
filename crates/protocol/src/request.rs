//! Client request parsing: RESP multibulk (`*N\r\n$L\r\n...`) and inline (`PING\r\n`).
//!
//! Requests are flat arrays of bulk strings, so this is a small purpose-built parser rather than the
//! general RESP decoder: it can refuse a declared length or argument count the moment its header
//! arrives (before any payload is buffered), and a nested array is a protocol error instead of a
//! recursion. The parser keeps its position in an incomplete request across calls (the argument
//! it is in, how far it has searched for a line end), so a request that arrives one byte at a
//! time costs O(bytes) in all, not O(arguments) per read: a 4M-argument request sent slowly
//! cannot burn a core. Until a connection has authenticated it may only send what Redis allows
//! since CVE-2021-32675: at most [`UNAUTHENTICATED_MAX_ARGS`] arguments of at most
//! [`UNAUTHENTICATED_MAX_BULK`] bytes.

use crate::args::Args;

/// Longest header or inline line accepted without a line ending (Redis: PROTO_INLINE_MAX_SIZE).
pub const MAX_LINE: usize = 64 * 1024;

/// Most arguments in one request of a connection that has not authenticated (Redis: 10).
pub const UNAUTHENTICATED_MAX_ARGS: usize = 10;

/// Largest argument of a connection that has not authenticated (Redis: 16384).
pub const UNAUTHENTICATED_MAX_BULK: usize = 16 * 1024;

/// Size limits applied while parsing; from the server configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string a request may carry (Redis `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Most arguments (including the command name) in one request.
    pub max_args: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_args: 4 * 1024 * 1024,
        }
    }
}

/// A malformed or oversized request. The connection answers `-ERR Protocol error: <msg>` and
/// closes, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(msg: impl Into<String>) -> Self {
        ProtocolError(msg.into())
    }
}

/// One parsed request: its arguments and how many input bytes it used.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub args: Args<'a>,
    pub consumed: usize,
}

/// Result of one parse attempt.
#[derive(Debug)]
pub enum Next<'a> {
    /// More bytes are needed; nothing was consumed.
    Incomplete,
    /// An empty inline line or a `*0`/`*-1` header: consume and ignore, like Redis.
    Skip(usize),
    /// A complete request.
    Request(Parsed<'a>),
}

/// Where the parser stopped in an incomplete request, so that the next call resumes there
/// instead of reading the request again from its start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Resume {
    /// Nothing of the request at the buffer's start has been looked at.
    #[default]
    Start,
    /// The multibulk count line, searched for its end up to `scan`.
    Count { scan: usize },
    /// `count` arguments declared, `ranges` holds the ones parsed; the next argument's `$`
    /// header starts at `pos` and has been searched for its end up to `scan`.
    ArgHeader {
        count: usize,
        pos: usize,
        scan: usize,
    },
    /// An argument of `len` bytes starts at `start`; its bytes and CRLF are awaited.
    ArgBody {
        count: usize,
        start: usize,
        len: usize,
    },
    /// An inline request line, searched for its `\n` up to `scan`.
    Inline { scan: usize },
}

/// A length header's search: found (its value, `None` if it is not a valid length, and the
/// position after its line) or not yet (searched up to the returned position).
enum Header {
    Found(Option<i64>, usize),
    Pending(usize),
}

/// Parses requests out of a connection's input buffer. Holds reusable scratch space so that a
/// steady stream of requests allocates nothing.
///
/// After [`Next::Incomplete`], the next call must be given the same bytes again, with more
/// appended (which is what a connection's input buffer does): the decoder resumes where it
/// stopped.
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: Limits,
    /// The connection has not authenticated: Redis's pre-authentication limits apply.
    unauthenticated: bool,
    /// Argument positions, reused between requests.
    ranges: Vec<(usize, usize)>,
    /// Unescaped bytes of an inline request (quotes and escapes make it differ from the input).
    inline: Vec<u8>,
    resume: Resume,
}

impl RequestDecoder {
    pub fn new(limits: Limits) -> Self {
        RequestDecoder {
            limits,
            unauthenticated: false,
            ranges: Vec::with_capacity(8),
            inline: Vec::new(),
            resume: Resume::Start,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether the connection has authenticated; until it has, requests are limited to
    /// [`UNAUTHENTICATED_MAX_ARGS`] arguments of [`UNAUTHENTICATED_MAX_BULK`] bytes.
    pub fn set_authenticated(&mut self, authenticated: bool) {
        self.unauthenticated = !authenticated;
    }

    /// Bytes of scratch space held: argument positions, 16 bytes per argument of the longest
    /// request decoded since [`RequestDecoder::shrink`].
    pub fn scratch_bytes(&self) -> usize {
        self.ranges.capacity() * std::mem::size_of::<(usize, usize)>() + self.inline.capacity()
    }

    /// Gives back scratch space larger than `keep` bytes, unless a request is half decoded (its
    /// arguments so far are in it).
    pub fn shrink(&mut self, keep: usize) {
        if matches!(self.resume, Resume::Start) && self.scratch_bytes() > keep {
            self.ranges = Vec::with_capacity(8);
            self.inline = Vec::new();
        }
    }

    /// Forgets an incomplete request (the next call starts at the buffer's start).
    pub fn reset(&mut self) {
        self.resume = Resume::Start;
    }

    /// Parses the first request in `buf`.
    pub fn decode<'a>(&'a mut self, buf: &'a [u8]) -> Result<Next<'a>, ProtocolError> {
        // Each path takes the resume state and puts one back only when it returns Incomplete:
        // after a request, a skip or an error the next call starts afresh.
        match buf.first() {
            None => {
                self.resume = Resume::Start;
                Ok(Next::Incomplete)
            }
            Some(b'*') => self.decode_multibulk(buf),
            Some(_) => self.decode_inline(buf),
        }
    }

    fn decode_multibulk<'a>(&'a mut self, buf: &'a [u8]) -> Result<Next<'a>, ProtocolError> {
        let mut state = std::mem::take(&mut self.resume);
        if matches!(state, Resume::Start | Resume::Inline { .. }) {
            state = Resume::Count { scan: 1 };
        }
        loop {
            match state {
                Resume::Start | Resume::Inline { .. } => unreachable_state(),
                Resume::Count { scan } => {
                    let (count, next) = match find_len(buf, 1, scan) {
                        Header::Found(count, next) => (count, next),
                        Header::Pending(scan) => {
                            if buf.len() > MAX_LINE {
                                return Err(ProtocolError::new("too big mbulk count string"));
                            }
                            self.resume = Resume::Count { scan };
                            return Ok(Next::Incomplete);
                        }
                    };
                    let count =
                        count.ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;
                    if count <= 0 {
                        return Ok(Next::Skip(next));
                    }
                    let count = count as usize;
                    if count > self.limits.max_args {
                        return Err(ProtocolError::new("invalid multibulk length"));
                    }
                    if self.unauthenticated && count > UNAUTHENTICATED_MAX_ARGS {
                        return Err(ProtocolError::new("unauthenticated multibulk length"));
                    }
                    self.ranges.clear();
                    state = Resume::ArgHeader {
                        count,
                        pos: next,
                        scan: next + 1,
                    };
                }
                Resume::ArgHeader { count, pos, scan } => {
                    if self.ranges.len() == count {
                        return Ok(Next::Request(Parsed {
                            args: Args::new(buf, &self.ranges),
                            consumed: pos,
                        }));
                    }
                    match buf.get(pos) {
                        None => {
                            self.resume = state;
                            return Ok(Next::Incomplete);
                        }
                        Some(b'$') => {}
                        Some(&other) => {
                            return Err(ProtocolError(format!(
                                "expected '$', got '{}'",
                                char::from(other).escape_default()
                            )));
                        }
                    }
                    let (len, next) = match find_len(buf, pos + 1, scan) {
                        Header::Found(len, next) => (len, next),
                        Header::Pending(scan) => {
                            if buf.len() - pos > MAX_LINE {
                                return Err(ProtocolError::new("too big bulk count string"));
                            }
                            self.resume = Resume::ArgHeader { count, pos, scan };
                            return Ok(Next::Incomplete);
                        }
                    };
                    let len = len.ok_or_else(|| ProtocolError::new("invalid bulk length"))?;
                    if len < 0 || len as u64 > self.limits.max_bulk_len as u64 {
                        return Err(ProtocolError::new("invalid bulk length"));
                    }
                    if self.unauthenticated && len as u64 > UNAUTHENTICATED_MAX_BULK as u64 {
                        return Err(ProtocolError::new("unauthenticated bulk length"));
                    }
                    state = Resume::ArgBody {
                        count,
                        start: next,
                        len: len as usize,
                    };
                }
                Resume::ArgBody { count, start, len } => {
                    let end = start + len;
                    if buf.len() < end + 2 {
                        self.resume = state;
                        return Ok(Next::Incomplete);
                    }
                    if &buf[end..end + 2] != b"\r\n" {
                        return Err(ProtocolError::new("expected CRLF after bulk string"));
                    }
                    self.ranges.push((start, end));
                    state = Resume::ArgHeader {
                        count,
                        pos: end + 2,
                        scan: end + 3,
                    };
                }
            }
        }
    }

    fn decode_inline<'a>(&'a mut self, buf: &'a [u8]) -> Result<Next<'a>, ProtocolError> {
        let from = match std::mem::take(&mut self.resume) {
            Resume::Inline { scan } => scan.min(buf.len()),
            _ => 0,
        };
        let Some(nl) = buf[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| from + i)
        else {
            if buf.len() > MAX_LINE {
                return Err(ProtocolError::new("too big inline request"));
            }
            self.resume = Resume::Inline { scan: buf.len() };
            return Ok(Next::Incomplete);
        };
        if nl > MAX_LINE {
            return Err(ProtocolError::new("too big inline request"));
        }
        let mut line = &buf[..nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        self.ranges.clear();
        self.inline.clear();
        split_inline(line, &mut self.inline, &mut self.ranges)?;
        if self.ranges.is_empty() {
            return Ok(Next::Skip(nl + 1));
        }
        if self.ranges.len() > self.limits.max_args {
            return Err(ProtocolError::new("invalid multibulk length"));
        }
        Ok(Next::Request(Parsed {
            args: Args::new(&self.inline, &self.ranges),
            consumed: nl + 1,
        }))
    }
}

/// A state the multibulk loop never holds (it starts every request in `Count`).
#[cold]
fn unreachable_state() -> ! {
    unreachable!("the multibulk parser starts in Count")
}

/// Reads the length header line starting at `start`, searching for its end from `scan` (where
/// an earlier call stopped; never before `start`), no further than [`MAX_LINE`] bytes.
#[inline]
fn find_len(buf: &[u8], start: usize, scan: usize) -> Header {
    // The common case, a complete plain length: one pass over a few bytes.
    if scan <= start
        && let Some((n, next)) = quick_len(buf, start)
    {
        return Header::Found(Some(n), next);
    }
    match find_line(buf, start, scan) {
        Ok((line, next)) => Header::Found(parse_len(line), next),
        Err(scan) => Header::Pending(scan),
    }
}

/// Finds the `\r\n`-terminated line starting at `start`, searching from `scan`: the line and
/// the position after it, or how far the search got.
fn find_line(buf: &[u8], start: usize, scan: usize) -> Result<(&[u8], usize), usize> {
    let from = scan.max(start);
    let limit = buf.len().min(start + MAX_LINE + 2);
    if from < limit
        && let Some(cr) = buf[from..limit].windows(2).position(|w| w == b"\r\n")
    {
        return Ok((&buf[start..from + cr], from + cr + 2));
    }
    // The last byte may be the CR of a CRLF whose LF has not arrived.
    Err(buf.len().saturating_sub(1).max(start))
}

/// Finds the `\r\n`-terminated line starting at `start`; returns it and the position after it.
#[cfg(test)]
fn read_line(buf: &[u8], start: usize) -> Option<(&[u8], usize)> {
    find_line(buf, start, start).ok()
}

/// The length in a header line at `start` when the line is what every well-formed client sends:
/// up to 18 digits (no leading zero) and CRLF. Returns the length and the position after the
/// line; `None` sends the caller to the general path ([`read_line`] and [`parse_len`]), which
/// handles incomplete, signed and invalid headers. One pass over a few bytes instead of two.
#[inline]
fn quick_len(buf: &[u8], start: usize) -> Option<(i64, usize)> {
    let rest = buf.get(start..)?;
    let mut v = 0i64;
    let mut i = 0;
    while let Some(&d) = rest.get(i) {
        if !d.is_ascii_digit() || i == 18 {
            break;
        }
        v = v * 10 + i64::from(d - b'0');
        i += 1;
    }
    let leading_zero = i > 1 && rest[0] == b'0';
    if i == 0 || leading_zero || rest.get(i..i + 2) != Some(b"\r\n") {
        return None;
    }
    Some((v, start + i + 2))
}

/// Parses a length header: an optional `-` and decimal digits, nothing else.
fn parse_len(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    // Like Redis's string2ll: no leading zeros ("0" itself is fine).
    if digits.is_empty() || digits.len() > 18 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(d - b'0');
    }
    Some(if neg { -v } else { v })
}

/// Splits a command line into arguments the way Redis's `sdssplitargs` does (inline commands
/// here, typed lines in ferrite-cli, as redis-cli does).
pub fn split_command_line(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut out = Vec::new();
    let mut ranges = Vec::new();
    split_inline(line, &mut out, &mut ranges)?;
    Ok(ranges.iter().map(|&(s, e)| out[s..e].to_vec()).collect())
}

/// Splits an inline command line the way Redis's `sdssplitargs` does: whitespace-separated words,
/// double quotes with C escapes (`\n`, `\xHH`, ...), single quotes with `\'`. A quote may start
/// in the middle of a word; a closing quote must be followed by a blank or the end.
fn split_inline(
    line: &[u8],
    out: &mut Vec<u8>,
    ranges: &mut Vec<(usize, usize)>,
) -> Result<(), ProtocolError> {
    let unbalanced = || ProtocolError::new("unbalanced quotes in request");
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            return Ok(());
        }
        let start = out.len();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                match line.get(i) {
                    None => return Err(unbalanced()),
                    Some(b'\\') if i + 3 < line.len() && line[i + 1] == b'x' => {
                        match (hex(line[i + 2]), hex(line[i + 3])) {
                            (Some(h), Some(l)) => {
                                out.push(h * 16 + l);
                                i += 4;
                            }
                            _ => {
                                out.push(b'x');
                                i += 2;
                            }
                        }
                    }
                    Some(b'\\') if i + 1 < line.len() => {
                        out.push(match line[i + 1] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 2;
                    }
                    Some(b'"') => {
                        // The closing quote must be followed by a space or the end.
                        if line.get(i + 1).is_some_and(|c| !c.is_ascii_whitespace()) {
                            return Err(unbalanced());
                        }
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        out.push(c);
                        i += 1;
                    }
                }
            } else if in_sq {
                match line.get(i) {
                    None => return Err(unbalanced()),
                    Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                        out.push(b'\'');
                        i += 2;
                    }
                    Some(b'\'') => {
                        if line.get(i + 1).is_some_and(|c| !c.is_ascii_whitespace()) {
                            return Err(unbalanced());
                        }
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        out.push(c);
                        i += 1;
                    }
                }
            } else {
                match line.get(i) {
                    None => break,
                    Some(c) if c.is_ascii_whitespace() => break,
                    Some(b'"') => {
                        in_dq = true;
                        i += 1;
                    }
                    Some(b'\'') => {
                        in_sq = true;
                        i += 1;
                    }
                    Some(&c) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
        }
        ranges.push((start, out.len()));
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A request copied out of the input buffer, for commands queued by MULTI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRequest {
    data: Vec<u8>,
    ranges: Vec<(usize, usize)>,
}

impl OwnedRequest {
    pub fn from_args(args: &Args<'_>) -> Self {
        let mut data = Vec::with_capacity(args.iter().map(<[u8]>::len).sum());
        let mut ranges = Vec::with_capacity(args.len());
        for a in args.iter() {
            let start = data.len();
            data.extend_from_slice(a);
            ranges.push((start, data.len()));
        }
        OwnedRequest { data, ranges }
    }

    /// Heap and inline bytes this copy holds.
    pub fn mem_size(&self) -> usize {
        size_of::<Self>()
            + self.data.capacity()
            + self.ranges.capacity() * size_of::<(usize, usize)>()
    }

    /// Builds a request from separate parts (tests, internal callers).
    pub fn from_parts<I, T>(parts: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let mut data = Vec::new();
        let mut ranges = Vec::new();
        for p in parts {
            let start = data.len();
            data.extend_from_slice(p.as_ref());
            ranges.push((start, data.len()));
        }
        OwnedRequest { data, ranges }
    }

    pub fn args(&self) -> Args<'_> {
        Args::new(&self.data, &self.ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut dec = RequestDecoder::new(Limits {
            max_bulk_len: 1024,
            max_args: 16,
        });
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            match dec.decode(&input[pos..])? {
                Next::Incomplete => return Ok(out),
                Next::Skip(n) => pos += n,
                Next::Request(p) => {
                    out.push(p.args.iter().map(<[u8]>::to_vec).collect());
                    pos += p.consumed;
                }
            }
        }
    }

    fn words(ws: &[&str]) -> Vec<Vec<u8>> {
        ws.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    /// The argument positions of a huge request are given back once it is decoded, and kept
    /// while it is half decoded (the next read resumes from them).
    #[test]
    fn scratch_space_is_given_back_after_a_huge_request_only() {
        let n = 10_000;
        let mut wire = format!("*{n}\r\n").into_bytes();
        for _ in 0..n {
            wire.extend_from_slice(b"$1\r\nx\r\n");
        }
        let mut dec = RequestDecoder::new(Limits::default());
        let half = &wire[..wire.len() / 2];
        assert!(matches!(dec.decode(half), Ok(Next::Incomplete)));
        let held = dec.scratch_bytes();
        assert!(held >= n / 2 * 16, "{held}");
        dec.shrink(1024);
        assert_eq!(
            dec.scratch_bytes(),
            held,
            "a half-decoded request keeps its positions"
        );
        match dec.decode(&wire) {
            Ok(Next::Request(p)) => assert_eq!(p.args.len(), n),
            _ => panic!("not decoded"),
        }
        dec.shrink(1024);
        assert!(dec.scratch_bytes() <= 1024, "{}", dec.scratch_bytes());
    }

    #[test]
    fn multibulk_and_pipelining() {
        let got =
            parse_all(b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n").unwrap();
        assert_eq!(got, vec![words(&["PING"]), words(&["SET", "k", ""])]);
    }

    #[test]
    fn incomplete_at_every_split_point() {
        let full = b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n";
        for cut in 0..full.len() {
            assert!(parse_all(&full[..cut]).unwrap().is_empty(), "cut at {cut}");
        }
        assert_eq!(parse_all(full).unwrap().len(), 1);
    }

    #[test]
    fn inline_with_quotes() {
        let got = parse_all(b"SET \"a b\" 'c\\'d' \"\\x41\\n\"\r\nPING\n\r\n").unwrap();
        assert_eq!(
            got,
            vec![
                vec![
                    b"SET".to_vec(),
                    b"a b".to_vec(),
                    b"c'd".to_vec(),
                    b"A\n".to_vec()
                ],
                words(&["PING"])
            ]
        );
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"*abc\r\n", "invalid multibulk length"),
            (b"*17\r\n", "invalid multibulk length"),
            (b"*1\r\n:5\r\n", "expected '$', got ':'"),
            (b"*1\r\n*1\r\n", "expected '$', got '*'"),
            (b"*1\r\n$2000\r\n", "invalid bulk length"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n$1\r\nab\r\n", "expected CRLF after bulk string"),
            (b"*01\r\n$4\r\nPING\r\n", "invalid multibulk length"),
            (b"*1\r\n$04\r\nPING\r\n", "invalid bulk length"),
            (b"SET \"abc\r\n", "unbalanced quotes in request"),
        ];
        for (input, msg) in cases {
            let err = parse_all(input).unwrap_err();
            assert_eq!(err.0, *msg, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn oversized_lines_are_refused_without_waiting() {
        let big = vec![b'a'; MAX_LINE + 10];
        assert_eq!(parse_all(&big).unwrap_err().0, "too big inline request");
        let mut mb = b"*1".to_vec();
        mb.extend(std::iter::repeat_n(b'1', MAX_LINE + 10));
        assert_eq!(parse_all(&mb).unwrap_err().0, "too big mbulk count string");
    }

    /// Feeds `input` the way a connection does: bytes arrive `chunk` at a time, complete
    /// requests are consumed from the front, the rest is handed again with more appended.
    fn parse_incrementally(
        dec: &mut RequestDecoder,
        input: &[u8],
        chunk: usize,
    ) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                match dec.decode(&buf[pos..])? {
                    Next::Incomplete => break,
                    Next::Skip(n) => pos += n,
                    Next::Request(p) => {
                        out.push(p.args.iter().map(<[u8]>::to_vec).collect());
                        pos += p.consumed;
                    }
                }
            }
            buf.drain(..pos);
        }
        Ok(out)
    }

    #[test]
    fn a_huge_request_sent_one_byte_at_a_time_costs_linear_time() {
        // 50k arguments one byte at a time: 350k calls. Re-reading the headers on each call
        // (what the parser did before it kept its position) would be ~10^10 steps.
        let n = 50_000;
        let mut wire = format!("*{n}\r\n").into_bytes();
        for _ in 0..n {
            wire.extend_from_slice(b"$1\r\na\r\n");
        }
        let mut dec = RequestDecoder::new(Limits::default());
        let started = std::time::Instant::now();
        let got = parse_incrementally(&mut dec, &wire, 1).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), n);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        // A long header line arriving byte by byte is not searched again from its start.
        let mut dec = RequestDecoder::new(Limits::default());
        let mut long = b"*1".to_vec();
        long.extend(std::iter::repeat_n(b'1', MAX_LINE + 10));
        let e = parse_incrementally(&mut dec, &long, 1).unwrap_err();
        assert_eq!(e.0, "too big mbulk count string");
    }

    #[test]
    fn unauthenticated_connections_get_redis_limits() {
        let mut dec = RequestDecoder::new(Limits::default());
        dec.set_authenticated(false);
        let e = parse_incrementally(&mut dec, b"*11\r\n", 64).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Protocol error: unauthenticated multibulk length"
        );
        let e = parse_incrementally(&mut dec, b"*2\r\n$4\r\nAUTH\r\n$16385\r\n", 64).unwrap_err();
        assert_eq!(e.to_string(), "Protocol error: unauthenticated bulk length");
        // Within the limits, and once authenticated, requests are as usual.
        let ok = parse_incrementally(&mut dec, b"*2\r\n$4\r\nAUTH\r\n$3\r\npw1\r\n", 3).unwrap();
        assert_eq!(ok, vec![words(&["AUTH", "pw1"])]);
        dec.set_authenticated(true);
        let mut big = b"*11\r\n".to_vec();
        for _ in 0..11 {
            big.extend_from_slice(b"$1\r\nx\r\n");
        }
        assert_eq!(parse_incrementally(&mut dec, &big, 5).unwrap()[0].len(), 11);
        // An invalid length is reported as invalid first, as Redis does.
        dec.set_authenticated(false);
        let e = parse_incrementally(&mut dec, b"*1\r\n$-5\r\n", 64).unwrap_err();
        assert_eq!(e.0, "invalid bulk length");
    }

    #[test]
    fn skips_empty() {
        assert_eq!(
            parse_all(b"*0\r\n\r\n*-1\r\n").unwrap(),
            Vec::<Vec<Vec<u8>>>::new()
        );
    }

    #[test]
    fn quick_len_takes_only_plain_lengths() {
        assert_eq!(quick_len(b"$3\r\nabc", 1), Some((3, 4)));
        assert_eq!(quick_len(b"0\r\n", 0), Some((0, 3)));
        assert_eq!(
            quick_len(b"999999999999999999\r\n", 0),
            Some((999_999_999_999_999_999, 20))
        );
        for general in [
            &b"9999999999999999999\r\n"[..],
            b"00\r\n",
            b"01\r\n",
            b"-1\r\n",
            b"3\r",
            b"3",
            b"3\n",
            b"3 \r\n",
            b"\r\n",
            b"",
        ] {
            assert_eq!(quick_len(general, 0), None, "{general:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_all(&data);
        }

        #[test]
        fn round_trips(argv in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 1..10)) {
            let mut wire = format!("*{}\r\n", argv.len()).into_bytes();
            for a in &argv {
                wire.extend(format!("${}\r\n", a.len()).bytes());
                wire.extend(a);
                wire.extend(b"\r\n");
            }
            let got = parse_all(&wire).unwrap();
            proptest::prop_assert_eq!(got, vec![argv]);
        }

        /// Any stream of requests, cut anywhere and fed a piece at a time, parses to the same
        /// requests as all at once; garbage fails the same way.
        #[test]
        fn incremental_parsing_agrees_with_whole_parsing(
            reqs in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..20), 1..6),
                1..6),
            inline in proptest::bool::ANY,
            garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            chunk in 1usize..23,
        ) {
            let mut wire = Vec::new();
            for argv in &reqs {
                wire.extend(format!("*{}\r\n", argv.len()).bytes());
                for a in argv {
                    wire.extend(format!("${}\r\n", a.len()).bytes());
                    wire.extend(a);
                    wire.extend(b"\r\n");
                }
            }
            if inline {
                wire.extend(b"PING x\r\n");
            }
            wire.extend(&garbage);
            let whole = parse_all(&wire);
            let mut dec = RequestDecoder::new(Limits { max_bulk_len: 1024, max_args: 16 });
            let pieces = parse_incrementally(&mut dec, &wire, chunk);
            proptest::prop_assert_eq!(whole, pieces);
        }

        #[test]
        fn quick_len_agrees_with_the_general_path(
            data in proptest::collection::vec(
                proptest::sample::select(b"0123456789-\r\na".to_vec()), 0..30),
        ) {
            if let Some(quick) = quick_len(&data, 0) {
                let general = read_line(&data, 0).and_then(|(line, next)| Some((parse_len(line)?, next)));
                proptest::prop_assert_eq!(Some(quick), general);
            }
        }
    }
}
