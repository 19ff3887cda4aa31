//! Redis's conversion rules between replies and Lua values, both ways.
//!
//! Command reply → Lua (`redisProtocolToLuaType`): integer → number, bulk → string, null bulk
//! or null array → `false`, array → table, status → `{ok=...}`, error → `{err=...}`; with
//! `redis.setresp(3)` also map → `{map={...}}`, set → `{set={m=true}}`, null → `nil`, boolean →
//! boolean, double → `{double=n}`, big number → `{big_number=s}`, verbatim →
//! `{verbatim_string={format=..., string=...}}`.
//!
//! Lua → reply (`luaReplyToRedisReply`): string → bulk, number → integer (truncated toward
//! zero), `true` → 1 and `false` → null (RESP3 booleans after `setresp(3)`), table with `err` →
//! error, `ok` → status, `double`, `big_number`, `verbatim_string`, `map`, `set`, otherwise an
//! array of the elements 1..n up to the first nil; anything else → null.

use std::ffi::c_int;

use bytes::BytesMut;
use ferrite_protocol::number::DoubleText;
use ferrite_protocol::{Protocol, ReplyWriter};
use mlua::{Lua, Table, Value, ffi};

/// Nesting beyond this in a script's reply is an error (a table can contain itself).
pub const MAX_REPLY_DEPTH: usize = 1000;

/// Why a Lua value could not become a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LuaReply {
    TooDeep,
    TooLarge,
    Lua(String),
}

impl From<mlua::Error> for LuaReply {
    fn from(e: mlua::Error) -> Self {
        LuaReply::Lua(e.to_string())
    }
}

/// Writes a script's return value as a reply in the client's protocol. `resp3_script` is the
/// script's `redis.setresp` choice (it decides how booleans convert). Stops with an error once
/// the reply passes `max_bytes`.
pub fn lua_to_reply(
    value: &Value,
    out: &mut BytesMut,
    proto: Protocol,
    resp3_script: bool,
    max_bytes: usize,
) -> Result<(), LuaReply> {
    let start = out.len();
    let mut conv = ToReply {
        proto,
        resp3_script,
        limit: start.saturating_add(max_bytes),
    };
    conv.value(value, out, 0)
}

struct ToReply {
    proto: Protocol,
    resp3_script: bool,
    limit: usize,
}

impl ToReply {
    fn value(&mut self, v: &Value, out: &mut BytesMut, depth: usize) -> Result<(), LuaReply> {
        if depth > MAX_REPLY_DEPTH {
            return Err(LuaReply::TooDeep);
        }
        if out.len() > self.limit {
            return Err(LuaReply::TooLarge);
        }
        let mut w = ReplyWriter::new(out, self.proto);
        match v {
            Value::String(s) => w.bulk(&s.as_bytes()),
            Value::Boolean(b) => {
                if self.resp3_script {
                    w.boolean(*b)
                } else if *b {
                    w.int(1)
                } else {
                    w.null()
                }
            }
            Value::Integer(i) => w.int(*i),
            Value::Number(n) => w.int(truncate(*n)),
            Value::Table(t) => return self.table(t, out, depth),
            _ => w.null(),
        }
        Ok(())
    }

    fn table(&mut self, t: &Table, out: &mut BytesMut, depth: usize) -> Result<(), LuaReply> {
        let mut w = ReplyWriter::new(out, self.proto);
        if let Value::String(e) = t.raw_get::<Value>("err")? {
            w.raw(b"-");
            w.raw(&single_line(&e.as_bytes()));
            w.raw(b"\r\n");
            return Ok(());
        }
        if let Value::String(s) = t.raw_get::<Value>("ok")? {
            w.raw(b"+");
            w.raw(&single_line(&s.as_bytes()));
            w.raw(b"\r\n");
            return Ok(());
        }
        match t.raw_get::<Value>("double")? {
            Value::Number(n) => {
                w.double(n);
                return Ok(());
            }
            Value::Integer(i) => {
                w.double(i as f64);
                return Ok(());
            }
            _ => {}
        }
        if let Value::String(s) = t.raw_get::<Value>("big_number")? {
            let digits = single_line(&s.as_bytes());
            match self.proto {
                Protocol::Resp3 => {
                    w.raw(b"(");
                    w.raw(&digits);
                    w.raw(b"\r\n");
                }
                Protocol::Resp2 => w.bulk(&digits),
            }
            return Ok(());
        }
        if let Value::Table(v) = t.raw_get::<Value>("verbatim_string")?
            && let (Value::String(format), Value::String(text)) =
                (v.raw_get::<Value>("format")?, v.raw_get::<Value>("string")?)
        {
            let text = text.as_bytes();
            match self.proto {
                Protocol::Resp3 => {
                    let format = format.as_bytes();
                    let mut f = [b' '; 3];
                    for (d, s) in f.iter_mut().zip(format.iter()) {
                        *d = *s;
                    }
                    w.raw(format!("={}\r\n", text.len() + 4).as_bytes());
                    w.raw(&f);
                    w.raw(b":");
                    w.raw(&text);
                    w.raw(b"\r\n");
                }
                Protocol::Resp2 => w.bulk(&text),
            }
            return Ok(());
        }
        if let Value::Table(m) = t.raw_get::<Value>("map")? {
            let pairs: Vec<(Value, Value)> = m.pairs::<Value, Value>().collect::<Result<_, _>>()?;
            w.map(pairs.len());
            for (k, v) in &pairs {
                self.value(k, out, depth + 1)?;
                self.value(v, out, depth + 1)?;
            }
            return Ok(());
        }
        if let Value::Table(s) = t.raw_get::<Value>("set")? {
            let members: Vec<Value> = s
                .pairs::<Value, Value>()
                .map(|p| p.map(|(k, _)| k))
                .collect::<Result<_, _>>()?;
            w.set(members.len());
            for m in &members {
                self.value(m, out, depth + 1)?;
            }
            return Ok(());
        }
        // An array: elements 1..n up to the first nil (Redis stops there, holes and all).
        let mut items = Vec::new();
        loop {
            let v: Value = t.raw_get(items.len() + 1)?;
            if v.is_nil() {
                break;
            }
            items.push(v);
        }
        w.array(items.len());
        for v in &items {
            self.value(v, out, depth + 1)?;
        }
        Ok(())
    }
}

/// Lua number → reply integer as Redis's `(long long)` cast does on x86-64: toward zero, and
/// the "integer indefinite" value (i64::MIN) for NaN, infinities and anything out of range.
fn truncate(n: f64) -> i64 {
    if n.is_finite() && n > -9.223_372_036_854_776e18 && n < 9.223_372_036_854_776e18 {
        n as i64
    } else {
        i64::MIN
    }
}

/// Status and error texts are one line: CR and LF become spaces (`sdsmapchars`).
fn single_line(s: &[u8]) -> Vec<u8> {
    s.iter()
        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
        .collect()
}

/// Why a command reply could not become a Lua value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadReply {
    /// Not well-formed RESP (never produced by Ferrite's own writer).
    Malformed,
    /// Nested deeper than the Lua stack can hold.
    TooDeep,
}

/// Pushes a command reply (RESP produced by Ferrite's own writer) onto the Lua stack as the value
/// Redis gives scripts. Returns whether the reply is an error (its `{err=...}` table is then what
/// `redis.call` raises).
///
/// # Safety
///
/// `l` must be a Lua state on which raising an error is allowed: this runs inside a Lua C
/// function (`redis.call`), so an allocation that fails under the heap limit raises Lua's memory
/// error (a `longjmp` to the script's protected call), and so does a nesting that does not fit
/// the stack. Everything here and in the caller's frame is plain data (slices, integers), so
/// such a jump skips no destructor. Only `reply`'s bytes are read; nothing else runs meanwhile
/// (no Lua code: raw sets call no metamethods).
pub unsafe fn push_reply(l: *mut ffi::lua_State, reply: &[u8]) -> Result<bool, BadReply> {
    let mut p = RawParser { buf: reply, pos: 0 };
    let failed = reply.first() == Some(&b'-');
    // SAFETY: as the caller promised.
    unsafe { p.value(l, 0)? };
    Ok(failed)
}

/// Pushes `s` as a Lua string.
///
/// # Safety
///
/// As [`push_reply`]; the stack must have room for one more value.
pub(crate) unsafe fn push_bytes(l: *mut ffi::lua_State, s: &[u8]) {
    // SAFETY: a valid pointer and length (an empty slice's dangling pointer is never read).
    unsafe { ffi::lua_pushlstring_(l, s.as_ptr().cast(), s.len()) }
}

/// Sets `t[key] = <top of the stack>` (popping it) in the table just below it.
///
/// # Safety
///
/// As [`push_reply`]; the table at -2, the stack with room for one more value.
unsafe fn set_field(l: *mut ffi::lua_State, key: &[u8]) {
    // SAFETY: as the caller promised; the key goes below the value, then both are set raw.
    unsafe {
        push_bytes(l, key);
        ffi::lua_insert(l, -2);
        ffi::lua_rawset(l, -3);
    }
}

/// A reply's text line as `{field = line}`.
///
/// # Safety
///
/// As [`push_reply`].
unsafe fn push_wrapped_line(l: *mut ffi::lua_State, field: &[u8], line: &[u8]) {
    // SAFETY: as the caller promised.
    unsafe {
        ffi::lua_createtable(l, 0, 1);
        push_bytes(l, line);
        set_field(l, field);
    }
}

struct RawParser<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl RawParser<'_> {
    fn line(&mut self) -> Result<&[u8], BadReply> {
        let rest = self.buf.get(self.pos..).ok_or(BadReply::Malformed)?;
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(BadReply::Malformed)?;
        self.pos += end + 2;
        rest.get(..end).ok_or(BadReply::Malformed)
    }

    fn int(&mut self) -> Result<i64, BadReply> {
        let l = self.line()?;
        // The usual reply (`:123`) read in place by the protocol's parser; what it refuses
        // (leading zeros, `+`) through Rust's, as before.
        if let Some(n) = ferrite_protocol::args::parse_i64(l) {
            return Ok(n);
        }
        std::str::from_utf8(l)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(BadReply::Malformed)
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], BadReply> {
        let end = self.pos.checked_add(n).ok_or(BadReply::Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(BadReply::Malformed)?;
        if self.buf.get(end..end.saturating_add(2)) != Some(b"\r\n") {
            return Err(BadReply::Malformed);
        }
        self.pos = end + 2;
        Ok(s)
    }

    /// Pushes one value (exactly one more slot on the stack when it returns `Ok`).
    ///
    /// # Safety
    ///
    /// As [`push_reply`].
    unsafe fn value(&mut self, l: *mut ffi::lua_State, depth: usize) -> Result<(), BadReply> {
        let &kind = self.buf.get(self.pos).ok_or(BadReply::Malformed)?;
        self.pos += 1;
        // SAFETY: as the caller promised. A C function starts with LUA_MINSTACK (20) free slots
        // and a level takes at most two while the next is built (a table, a key) and four at
        // its own (a table, a key, a value, a wrapper), so the first levels fit; deeper ones
        // make room first, and a nesting that does not fit is refused before a slot past the
        // stack is written. (Not asked at the first levels: a call with close to LUAI_MAXCSTACK
        // arguments has its LUA_MINSTACK slots but no more.)
        unsafe {
            if depth >= 4 && ffi::lua_checkstack(l, 4) == 0 {
                return Err(BadReply::TooDeep);
            }
            match kind {
                b'+' => {
                    let line = self.line()?;
                    push_wrapped_line(l, b"ok", line);
                }
                b'-' => {
                    let line = self.line()?;
                    push_wrapped_line(l, b"err", trim_crlf(line));
                }
                b':' => ffi::lua_pushnumber(l, self.int()? as f64),
                b'$' => {
                    let n = self.int()?;
                    if n < 0 {
                        ffi::lua_pushboolean(l, 0);
                    } else {
                        let b = self.bytes(usize::try_from(n).map_err(|_| BadReply::Malformed)?)?;
                        push_bytes(l, b);
                    }
                }
                b'*' => {
                    let n = self.int()?;
                    if n < 0 {
                        ffi::lua_pushboolean(l, 0);
                    } else {
                        let n = c_int::try_from(n).map_err(|_| BadReply::Malformed)?;
                        ffi::lua_createtable(l, n.min(1 << 16), 0);
                        for i in 1..=n {
                            self.value(l, depth + 1)?;
                            ffi::lua_rawseti_(l, -2, i);
                        }
                    }
                }
                b'%' => {
                    let n = self.int()?;
                    ffi::lua_createtable(l, 0, 0);
                    for _ in 0..n {
                        self.value(l, depth + 1)?;
                        self.value(l, depth + 1)?;
                        ffi::lua_rawset(l, -3);
                    }
                    self.wrap(l, b"map");
                }
                b'~' => {
                    let n = self.int()?;
                    ffi::lua_createtable(l, 0, 0);
                    for _ in 0..n {
                        self.value(l, depth + 1)?;
                        ffi::lua_pushboolean(l, 1);
                        ffi::lua_rawset(l, -3);
                    }
                    self.wrap(l, b"set");
                }
                b'_' => {
                    self.line()?;
                    ffi::lua_pushnil(l);
                }
                b'#' => {
                    let t = self.line()? == b"t";
                    ffi::lua_pushboolean(l, c_int::from(t));
                }
                b',' => {
                    let d = parse_double(self.line()?).ok_or(BadReply::Malformed)?;
                    ffi::lua_createtable(l, 0, 1);
                    ffi::lua_pushnumber(l, d);
                    set_field(l, b"double");
                }
                b'(' => {
                    let line = self.line()?;
                    push_wrapped_line(l, b"big_number", line);
                }
                b'=' => {
                    let n = self.int()?;
                    let body =
                        self.bytes(usize::try_from(n.max(0)).map_err(|_| BadReply::Malformed)?)?;
                    let (format, text) = if body.len() >= 4 && body[3] == b':' {
                        (&body[..3], &body[4..])
                    } else {
                        (&b"txt"[..], body)
                    };
                    ffi::lua_createtable(l, 0, 2);
                    push_bytes(l, format);
                    set_field(l, b"format");
                    push_bytes(l, text);
                    set_field(l, b"string");
                    self.wrap(l, b"verbatim_string");
                }
                b'>' => {
                    // Push messages are not replies; read and drop them (never produced here).
                    let n = self.int()?;
                    for _ in 0..n {
                        self.value(l, depth + 1)?;
                        ffi::lua_settop(l, -2);
                    }
                    self.value(l, depth + 1)?;
                }
                _ => return Err(BadReply::Malformed),
            }
        }
        Ok(())
    }

    /// Replaces the value on top with `{field = value}`.
    ///
    /// # Safety
    ///
    /// As [`push_reply`].
    unsafe fn wrap(&self, l: *mut ffi::lua_State, field: &[u8]) {
        // SAFETY: as the caller promised: the inner table on top, room made by `value`.
        unsafe {
            ffi::lua_createtable(l, 0, 1);
            ffi::lua_insert(l, -2);
            set_field(l, field);
        }
    }
}

fn parse_double(l: &[u8]) -> Option<f64> {
    match l {
        b"inf" => Some(f64::INFINITY),
        b"-inf" => Some(f64::NEG_INFINITY),
        b"nan" => Some(f64::NAN),
        _ => std::str::from_utf8(l).ok()?.parse().ok(),
    }
}

/// The `{err="CODE message"}` table of an error text, formatted as Redis's
/// `luaPushErrorBuff`: a text starting with `-` takes its first word as the code, otherwise
/// the code is `ERR`; CR/LF at either end are trimmed.
pub fn error_table(lua: &Lua, text: &[u8]) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 1)?;
    t.raw_set("err", lua.create_string(error_text(text))?)?;
    Ok(t)
}

/// The text of an error table for `text` (see [`error_table`]).
pub fn error_text(text: &[u8]) -> Vec<u8> {
    let (code, msg): (&[u8], &[u8]) = match text.strip_prefix(b"-") {
        Some(rest) => match rest.iter().position(|&b| b == b' ') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (b"ERR", rest),
        },
        None => (b"ERR", text),
    };
    let mut v = Vec::with_capacity(code.len() + msg.len() + 1);
    v.extend_from_slice(code);
    v.push(b' ');
    v.extend_from_slice(trim_crlf(msg));
    v
}

fn trim_crlf(s: &[u8]) -> &[u8] {
    let is = |b: &u8| *b == b'\r' || *b == b'\n';
    let start = s.iter().position(|b| !is(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// A Lua number as a command argument, as Redis 7.2 writes it (`luaArgsToRedisArgv`): an integer
/// in ±2^62 by its digits, anything else by `fpconv_dtoa` (Lua's own `%.14g` would lose precision).
pub fn number_arg(n: f64, buf: &mut Vec<u8>) {
    buf.extend_from_slice(DoubleText::argument(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The argument texts redis-server 7.2.6 builds (`EVAL "redis.call('set','k',<n>)
    /// return redis.call('get','k')" 0`).
    #[test]
    fn number_args_as_redis_7_2_writes_them() {
        for (n, s) in [
            (1.5, "1.5"),
            (0.1, "0.1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-2.25, "-2.25"),
            (1e20, "1e+20"),
            (1.0e-5, "0.00001"),
            (1.0e-7, "1e-7"),
            (123456789.125, "123456789.125"),
            (3.0, "3"),
            (1e17, "100000000000000000"),
            (4611686018427387904.0, "4611686018427387904"),
            (9223372036854775808.0, "9223372036854776000"),
            (-0.0, "0"),
            (f64::INFINITY, "inf"),
            (-1.5e300, "-1.5e+300"),
        ] {
            let mut b = Vec::new();
            number_arg(n, &mut b);
            assert_eq!(String::from_utf8(b).unwrap(), s, "{n}");
        }
    }

    #[test]
    fn error_texts() {
        assert_eq!(error_text(b"-XX hey"), b"XX hey");
        assert_eq!(error_text(b"-OOPS"), b"ERR OOPS");
        assert_eq!(error_text(b"x\r\n"), b"ERR x");
        assert_eq!(error_text(b"-MY err\r\n"), b"MY err");
    }

    #[test]
    fn integer_replies_read_in_place_as_rust_parses_them() {
        for line in [
            "0",
            "7",
            "-7",
            "-0",
            "007",
            "123456789012345678",
            "-123456789012345678",
            "1234567890123456789",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "99999999999999999999",
            "+5",
            "",
            "-",
            "1a",
            "a1",
            " 1",
            "1 ",
            "--1",
            "\u{663}",
        ] {
            let buf = format!(":{line}\r\n");
            let mut p = RawParser {
                buf: buf.as_bytes(),
                pos: 1,
            };
            let expected = line.parse::<i64>().map_err(|_| BadReply::Malformed);
            assert_eq!(p.int(), expected, "{line:?}");
        }
    }

    #[test]
    fn truncation_toward_zero() {
        assert_eq!(truncate(2.7), 2);
        assert_eq!(truncate(-2.7), -2);
        assert_eq!(truncate(1e30), i64::MIN);
        assert_eq!(truncate(f64::NAN), i64::MIN);
    }
}
