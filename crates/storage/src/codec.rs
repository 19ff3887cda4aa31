//! The logical encoding of values: a value as its elements (bytes, members, fields, scores),
//! independent of how a value is laid out in memory, so that any in-memory encoding can read and
//! write it. Files on disk (persistence) use it; it is the same element layout as the migration
//! wire format's values.
//!
//! ```text
//! value   = string: bytes | list/set: n:varint bytes{n} | hash: n:varint (bytes bytes){n}
//!         | zset: n:varint (bytes score:f64 LE){n}
//!         | stream: n:varint item{n}   (crate::stream::encode_item)
//! bytes   = len:varint data
//! varint  = LEB128, at most 10 bytes
//! ```

use crate::value::{
    HashValue, ListValue, SetValue, StrValue, Value, ValueRef, ValueType, ZSetValue,
};

/// Why bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecError(pub &'static str);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for CodecError {}

pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// Appends a value's elements (`value.view()` for an owned [`Value`]).
pub fn encode_value(buf: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Str(s) => put_bytes(buf, s.as_bytes()),
        ValueRef::List(l) => {
            put_varint(buf, l.len() as u64);
            for e in l.iter() {
                put_bytes(buf, e);
            }
        }
        ValueRef::Hash(h) => {
            put_varint(buf, h.len() as u64);
            for (f, val) in h.iter() {
                put_bytes(buf, f);
                put_bytes(buf, val);
            }
        }
        ValueRef::Set(s) => {
            put_varint(buf, s.len() as u64);
            for m in s.iter() {
                put_bytes(buf, m);
            }
        }
        ValueRef::ZSet(z) => {
            put_varint(buf, z.len() as u64);
            for (m, sc) in z.iter() {
                put_bytes(buf, m);
                buf.extend_from_slice(&sc.to_le_bytes());
            }
        }
        ValueRef::Stream(x) => x.encode_all(buf),
    }
}

const TRUNCATED: CodecError = CodecError("truncated");

/// Reads what the functions above wrote, never trusting a length or count: nothing it reads
/// can make it panic or allocate more than the input's size.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let b = *self.data.get(self.pos).ok_or(TRUNCATED)?;
        self.pos += 1;
        Ok(b)
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).ok_or(TRUNCATED)?;
        let s = self.data.get(self.pos..end).ok_or(TRUNCATED)?;
        self.pos = end;
        Ok(s)
    }

    pub fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError("varint too long"))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| TRUNCATED)?;
        self.take(n)
    }

    /// A count of elements that each take at least one byte: never more than the bytes left,
    /// so a corrupt count cannot make the caller reserve memory for elements that are not there.
    pub fn count(&mut self) -> Result<usize, CodecError> {
        let n = self.varint()?;
        if n > self.remaining() as u64 {
            return Err(TRUNCATED);
        }
        Ok(n as usize)
    }

    pub fn value_type(&mut self) -> Result<ValueType, CodecError> {
        ValueType::from_tag(u64::from(self.u8()?)).ok_or(CodecError("unknown value type"))
    }

    /// A value of type `ty`.
    pub fn value(&mut self, ty: ValueType) -> Result<Value, CodecError> {
        Ok(match ty {
            ValueType::String => Value::Str(StrValue::new(self.bytes()?.to_vec())),
            // Collections are built in one go from their elements (one allocation of the
            // packed form at its final size, not one per element).
            ValueType::List => {
                let n = self.count()?;
                let items = (0..n)
                    .map(|_| self.bytes())
                    .collect::<Result<Vec<_>, _>>()?;
                Value::List(ListValue::from_elements(&items))
            }
            ValueType::Hash => {
                let n = self.count()?;
                let pairs = (0..n)
                    .map(|_| Ok((self.bytes()?, self.bytes()?)))
                    .collect::<Result<Vec<_>, CodecError>>()?;
                Value::Hash(HashValue::from_pairs(&pairs))
            }
            ValueType::Set => {
                let n = self.count()?;
                let members = (0..n)
                    .map(|_| self.bytes())
                    .collect::<Result<Vec<_>, _>>()?;
                Value::Set(SetValue::from_members(&members))
            }
            ValueType::ZSet => {
                let n = self.count()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let m = self.bytes()?;
                    let s = f64::from_bits(self.u64()?);
                    if s.is_nan() {
                        return Err(CodecError("NaN score"));
                    }
                    items.push((m, s));
                }
                Value::ZSet(ZSetValue::from_scored(&items))
            }
            ValueType::Stream => {
                let rest = self.data.get(self.pos..).unwrap_or_default();
                let (x, used) = crate::stream::decode_items(rest).map_err(CodecError)?;
                self.pos += used;
                Value::Stream(Box::new(x))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Value) -> Value {
        let mut buf = Vec::new();
        encode_value(&mut buf, v.view());
        let mut r = Reader::new(&buf);
        let back = r.value(v.value_type()).unwrap();
        assert!(r.is_empty());
        back
    }

    #[test]
    fn every_type_round_trips() {
        let mut l = ListValue::default();
        l.push_back(b"a");
        l.push_back(b"");
        // A long list in many quicklist nodes, built from both ends.
        let mut long = ListValue::default();
        for i in 0..20_000u32 {
            let e = format!("element-{i}");
            if i % 2 == 0 {
                long.push_back(e.as_bytes());
            } else {
                long.push_front(e.as_bytes());
            }
        }
        assert_eq!(long.encoding(), crate::Encoding::Quicklist);
        let back = round_trip(&Value::List(long.clone()));
        assert_eq!(back.digest(), long.digest());
        assert_eq!(back.encoding(), crate::Encoding::Quicklist);
        assert_eq!(back.mem_size(), Value::List(long.clone()).mem_size());
        let ValueRef::List(b) = back.view() else {
            panic!("a list")
        };
        assert!(b.iter().eq(long.iter()));
        let mut h = HashValue::default();
        h.insert(b"f", b"v");
        let mut s = SetValue::default();
        s.insert(b"m");
        let mut z = ZSetValue::default();
        z.insert(b"x", -1.5);
        z.insert(b"y", f64::INFINITY);
        for v in [
            Value::string("hello"),
            Value::List(l),
            Value::Hash(h),
            Value::Set(s),
            Value::ZSet(z),
        ] {
            assert_eq!(round_trip(&v).digest(), v.digest());
        }
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut r = Reader::new(&data);
            if let Ok(ty) = r.value_type() {
                let _ = r.value(ty);
            }
        }
    }
}
