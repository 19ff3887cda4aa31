//! Writing RDB values.

use std::io::Write;

use crate::{Result, Value, types};

/// Writes RDB primitives and values to a byte sink.
pub struct Encoder<W> {
    w: W,
}

impl<W: Write> Encoder<W> {
    pub fn new(w: W) -> Self {
        Encoder { w }
    }

    pub fn into_inner(self) -> W {
        self.w
    }

    pub fn write_u8(&mut self, b: u8) -> Result<()> {
        self.w.write_all(&[b])?;
        Ok(())
    }

    /// Writes a length in the shortest of Redis's length encodings.
    pub fn write_length(&mut self, n: u64) -> Result<()> {
        if n < 1 << 6 {
            self.w.write_all(&[n as u8])?;
        } else if n < 1 << 14 {
            self.w.write_all(&[0x40 | (n >> 8) as u8, n as u8])?;
        } else if n <= u64::from(u32::MAX) {
            self.w.write_all(&[0x80])?;
            self.w.write_all(&(n as u32).to_be_bytes())?;
        } else {
            self.w.write_all(&[0x81])?;
            self.w.write_all(&n.to_be_bytes())?;
        }
        Ok(())
    }

    /// Writes a string; short canonical integers are stored as integers, as Redis does.
    pub fn write_string(&mut self, s: &[u8]) -> Result<()> {
        if let Some(n) = small_int(s) {
            if let Ok(v) = i8::try_from(n) {
                self.w.write_all(&[0xC0, v as u8])?;
            } else if let Ok(v) = i16::try_from(n) {
                self.w.write_all(&[0xC1])?;
                self.w.write_all(&v.to_le_bytes())?;
            } else if let Ok(v) = i32::try_from(n) {
                self.w.write_all(&[0xC2])?;
                self.w.write_all(&v.to_le_bytes())?;
            } else {
                return self.write_raw_string(s);
            }
            return Ok(());
        }
        self.write_raw_string(s)
    }

    /// Writes bytes as they are (no length).
    pub(crate) fn write_raw(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b)?;
        Ok(())
    }

    /// Writes a string with its length, never as an integer (what Redis's rdbSaveRawString
    /// writes for ids and names).
    pub(crate) fn write_string_raw(&mut self, s: &[u8]) -> Result<()> {
        self.write_raw_string(s)
    }

    fn write_raw_string(&mut self, s: &[u8]) -> Result<()> {
        self.write_length(s.len() as u64)?;
        self.w.write_all(s)?;
        Ok(())
    }

    /// Writes a value's type byte and body, in encodings every Redis 7.x loads (it converts small
    /// collections to its compact encodings itself).
    pub fn write_value(&mut self, v: &Value) -> Result<()> {
        self.write_u8(value_type(v))?;
        self.write_body(v)
    }

    /// Writes a key of a file: the value's type byte, the key, then the value's body.
    pub fn write_value_with_key(&mut self, key: &[u8], v: &Value) -> Result<()> {
        self.write_u8(value_type(v))?;
        self.write_string(key)?;
        self.write_body(v)
    }

    pub(crate) fn inner(&self) -> &W {
        &self.w
    }

    fn write_body(&mut self, v: &Value) -> Result<()> {
        match v {
            Value::String(s) => self.write_string(s)?,
            Value::List(items) | Value::Set(items) => {
                self.write_length(items.len() as u64)?;
                for e in items {
                    self.write_string(e)?;
                }
            }
            Value::ZSet(items) => {
                self.write_length(items.len() as u64)?;
                for (m, s) in items {
                    self.write_string(m)?;
                    self.w.write_all(&s.to_le_bytes())?;
                }
            }
            Value::Hash(items) => {
                self.write_length(items.len() as u64)?;
                for (f, v) in items {
                    self.write_string(f)?;
                    self.write_string(v)?;
                }
            }
            Value::Stream(s) => crate::stream::write(self, s)?,
        }
        Ok(())
    }
}

/// The type byte a value is written with.
fn value_type(v: &Value) -> u8 {
    match v {
        Value::String(_) => types::STRING,
        Value::List(_) => types::LIST,
        Value::Set(_) => types::SET,
        Value::ZSet(_) => types::ZSET_2,
        Value::Hash(_) => types::HASH,
        Value::Stream(_) => types::STREAM_LISTPACKS_2,
    }
}

/// The integer a string spells canonically (no sign '+', no leading zeros, fits in i64), if its
/// text is at most 11 bytes (Redis tries integer encoding only for such strings).
fn small_int(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 11 {
        return None;
    }
    let n: i64 = std::str::from_utf8(s).ok()?.parse().ok()?;
    (n.to_string().as_bytes() == s).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Decoder;

    fn round_trip(v: &Value) -> Value {
        let mut e = Encoder::new(Vec::new());
        e.write_value(v).unwrap();
        let bytes = e.into_inner();
        let mut d = Decoder::new(bytes.as_slice(), u64::MAX);
        let t = d.read_type().unwrap();
        d.read_value(t).unwrap()
    }

    #[test]
    fn values_round_trip() {
        for v in [
            Value::String(b"hello".to_vec()),
            Value::String(b"12345".to_vec()),
            Value::String(b"-7".to_vec()),
            Value::String(b"007".to_vec()),
            Value::String(vec![b'x'; 20000]),
            Value::List(vec![b"a".to_vec(), b"100000".to_vec()]),
            Value::Set(vec![b"m".to_vec(), b"n".to_vec()]),
            Value::ZSet(vec![(b"a".to_vec(), 1.5), (b"b".to_vec(), f64::INFINITY)]),
            Value::Hash(vec![(b"f".to_vec(), b"v".to_vec())]),
        ] {
            assert_eq!(round_trip(&v), v);
        }
        assert_eq!(small_int(b"007"), None);
        assert_eq!(small_int(b"-0"), None);
        assert_eq!(small_int(b"2147483648"), Some(2147483648));
    }
}
