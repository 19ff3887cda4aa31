//! Reading RDB values.

use std::collections::HashSet;
use std::io::Read;

use crate::{RdbError, Result, Value, lzf, packed, types};

/// Bytes read at a time when a string's declared length is large: memory grows only with data
/// that is really there, so a forged length cannot make the reader allocate gigabytes.
const CHUNK: usize = 64 * 1024;

/// Reads RDB primitives and values from a byte source.
pub struct Decoder<R> {
    r: R,
    /// Longest string accepted (after LZF expansion too).
    max_string: u64,
}

/// A length field: a plain length, or the marker of a specially encoded string.
enum Length {
    Plain(u64),
    Encoded(u8),
}

impl<R: Read> Decoder<R> {
    /// A decoder that refuses strings longer than `max_string` bytes.
    pub fn new(r: R, max_string: u64) -> Self {
        Decoder { r, max_string }
    }

    pub fn into_inner(self) -> R {
        self.r
    }

    pub fn read_u8(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => RdbError::Truncated,
            _ => RdbError::Io(e),
        })
    }

    pub(crate) fn read_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.read_exact(&mut b)?;
        Ok(b)
    }

    /// Reads `n` bytes, growing the buffer as data arrives.
    fn read_bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        if n > self.max_string {
            return Err(RdbError::TooLarge(n));
        }
        let n = usize::try_from(n).map_err(|_| RdbError::TooLarge(n))?;
        let mut out = Vec::with_capacity(n.min(CHUNK));
        while out.len() < n {
            let take = (n - out.len()).min(CHUNK);
            let start = out.len();
            out.resize(start + take, 0);
            self.read_exact(&mut out[start..])?;
        }
        Ok(out)
    }

    fn read_length_field(&mut self) -> Result<Length> {
        let first = self.read_u8()?;
        Ok(match first >> 6 {
            0 => Length::Plain(u64::from(first & 0x3f)),
            1 => {
                let next = self.read_u8()?;
                Length::Plain((u64::from(first & 0x3f) << 8) | u64::from(next))
            }
            2 => match first {
                0x80 => Length::Plain(u64::from(u32::from_be_bytes(self.read_array()?))),
                0x81 => Length::Plain(u64::from_be_bytes(self.read_array()?)),
                _ => return Err(RdbError::Malformed("unknown length encoding")),
            },
            _ => Length::Encoded(first & 0x3f),
        })
    }

    /// Reads a length (element counts, ...).
    pub fn read_length(&mut self) -> Result<u64> {
        match self.read_length_field()? {
            Length::Plain(n) => Ok(n),
            Length::Encoded(_) => Err(RdbError::Malformed("encoded value where a length belongs")),
        }
    }

    /// Reads a string in any of its encodings (plain, integer, LZF).
    pub fn read_string(&mut self) -> Result<Vec<u8>> {
        match self.read_length_field()? {
            Length::Plain(n) => self.read_bytes(n),
            Length::Encoded(0) => Ok((self.read_u8()? as i8).to_string().into_bytes()),
            Length::Encoded(1) => Ok(i16::from_le_bytes(self.read_array()?)
                .to_string()
                .into_bytes()),
            Length::Encoded(2) => Ok(i32::from_le_bytes(self.read_array()?)
                .to_string()
                .into_bytes()),
            Length::Encoded(3) => {
                let clen = self.read_length()?;
                let len = self.read_length()?;
                if len > self.max_string {
                    return Err(RdbError::TooLarge(len));
                }
                // LZF expands at most ~132x (a 2-byte back reference copies up to 264 bytes).
                if len > clen.saturating_mul(264) + 32 {
                    return Err(RdbError::Malformed("LZF length out of proportion"));
                }
                let compressed = self.read_bytes(clen)?;
                lzf::decompress(&compressed, len as usize)
            }
            Length::Encoded(_) => Err(RdbError::Malformed("unknown string encoding")),
        }
    }

    /// A score written as text (RDB_TYPE_ZSET): one length byte, or 253/254/255 for
    /// NaN/+inf/-inf.
    fn read_text_double(&mut self) -> Result<f64> {
        let len = self.read_u8()?;
        match len {
            255 => Ok(f64::NEG_INFINITY),
            254 => Ok(f64::INFINITY),
            253 => Ok(f64::NAN),
            n => {
                let mut buf = vec![0u8; usize::from(n)];
                self.read_exact(&mut buf)?;
                parse_score(&buf)
            }
        }
    }

    /// Reads a value type byte.
    pub fn read_type(&mut self) -> Result<u8> {
        self.read_u8()
    }

    /// Reads a value of type `t`.
    pub fn read_value(&mut self, t: u8) -> Result<Value> {
        let v = match t {
            types::STRING => Value::String(self.read_string()?),
            types::LIST => {
                let n = self.read_length()?;
                Value::List(self.read_strings(n)?)
            }
            types::SET => {
                let n = self.read_length()?;
                Value::Set(self.read_strings(n)?)
            }
            types::ZSET | types::ZSET_2 => {
                let n = self.read_length()?;
                let mut items = Vec::with_capacity(capacity(n));
                for _ in 0..n {
                    let m = self.read_string()?;
                    let score = if t == types::ZSET_2 {
                        f64::from_le_bytes(self.read_array()?)
                    } else {
                        self.read_text_double()?
                    };
                    items.push((m, score));
                }
                Value::ZSet(items)
            }
            types::HASH => {
                let n = self.read_length()?;
                let mut items = Vec::with_capacity(capacity(n));
                for _ in 0..n {
                    let f = self.read_string()?;
                    let v = self.read_string()?;
                    items.push((f, v));
                }
                Value::Hash(items)
            }
            types::HASH_ZIPMAP => Value::Hash(packed::zipmap(&self.read_string()?)?),
            types::LIST_ZIPLIST => Value::List(packed::ziplist(&self.read_string()?)?),
            types::SET_INTSET => Value::Set(packed::intset(&self.read_string()?)?),
            types::SET_LISTPACK => Value::Set(packed::listpack(&self.read_string()?)?),
            types::ZSET_ZIPLIST => Value::ZSet(scored(packed::ziplist(&self.read_string()?)?)?),
            types::ZSET_LISTPACK => Value::ZSet(scored(packed::listpack(&self.read_string()?)?)?),
            types::HASH_ZIPLIST => Value::Hash(pairs(packed::ziplist(&self.read_string()?)?)?),
            types::HASH_LISTPACK => Value::Hash(pairs(packed::listpack(&self.read_string()?)?)?),
            types::LIST_QUICKLIST => {
                let nodes = self.read_length()?;
                let mut items = Vec::new();
                for _ in 0..nodes {
                    let node = packed::ziplist(&self.read_string()?)?;
                    if node.is_empty() {
                        return Err(RdbError::Malformed("empty quicklist node"));
                    }
                    items.extend(node);
                }
                Value::List(items)
            }
            types::LIST_QUICKLIST_2 => {
                let nodes = self.read_length()?;
                let mut items = Vec::new();
                for _ in 0..nodes {
                    let container = self.read_length()?;
                    let blob = self.read_string()?;
                    match container {
                        1 => items.push(blob),
                        2 => {
                            let node = packed::listpack(&blob)?;
                            if node.is_empty() {
                                return Err(RdbError::Malformed("empty quicklist node"));
                            }
                            items.extend(node);
                        }
                        _ => return Err(RdbError::Malformed("unknown quicklist container")),
                    }
                }
                Value::List(items)
            }
            types::STREAM_LISTPACKS | types::STREAM_LISTPACKS_2 | types::STREAM_LISTPACKS_3 => {
                Value::Stream(Box::new(crate::stream::read(self, t)?))
            }
            other => return Err(RdbError::Unsupported(other)),
        };
        check(&v)?;
        Ok(v)
    }

    fn read_strings(&mut self, n: u64) -> Result<Vec<Vec<u8>>> {
        let mut items = Vec::with_capacity(capacity(n));
        for _ in 0..n {
            items.push(self.read_string()?);
        }
        Ok(items)
    }
}

/// Preallocation for `n` declared elements: never more than a modest amount up front.
fn capacity(n: u64) -> usize {
    n.min(1024) as usize
}

fn parse_score(text: &[u8]) -> Result<f64> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .ok_or(RdbError::Malformed("score is not a number"))
}

fn scored(flat: Vec<Vec<u8>>) -> Result<Vec<(Vec<u8>, f64)>> {
    if !flat.len().is_multiple_of(2) {
        return Err(RdbError::Malformed(
            "sorted set with a member without score",
        ));
    }
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(m), Some(s)) = (it.next(), it.next()) {
        out.push((m, parse_score(&s)?));
    }
    Ok(out)
}

fn pairs(flat: Vec<Vec<u8>>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if !flat.len().is_multiple_of(2) {
        return Err(RdbError::Malformed("hash with a field without value"));
    }
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(f), Some(v)) = (it.next(), it.next()) {
        out.push((f, v));
    }
    Ok(out)
}

/// Refuses what Redis refuses on load: empty collections, duplicate members or fields, NaN
/// scores.
fn check(v: &Value) -> Result<()> {
    fn unique<'a>(items: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> Result<()> {
        let dup = || RdbError::Malformed("duplicate member");
        // Small collections (most keys): pairwise, without allocating a set per key.
        if items.len() <= 16 {
            for (i, a) in items.clone().enumerate() {
                if items.clone().skip(i + 1).any(|b| a == b) {
                    return Err(dup());
                }
            }
            return Ok(());
        }
        let mut seen = HashSet::with_capacity(items.len());
        for m in items {
            if !seen.insert(m) {
                return Err(dup());
            }
        }
        Ok(())
    }
    let empty = match v {
        Value::String(_) => false,
        Value::List(l) => l.is_empty(),
        Value::Set(s) => {
            unique(s.iter().map(Vec::as_slice))?;
            s.is_empty()
        }
        Value::ZSet(z) => {
            if z.iter().any(|(_, s)| s.is_nan()) {
                return Err(RdbError::Malformed("NaN score"));
            }
            unique(z.iter().map(|(m, _)| m.as_slice()))?;
            z.is_empty()
        }
        Value::Hash(h) => {
            unique(h.iter().map(|(f, _)| f.as_slice()))?;
            h.is_empty()
        }
        // A stream may exist without entries; its reader checked it.
        Value::Stream(_) => false,
    };
    if empty {
        return Err(RdbError::EmptyKey);
    }
    Ok(())
}
